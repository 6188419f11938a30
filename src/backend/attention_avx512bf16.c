/* attention_avx512bf16.c - the bf16 compute mode's attention (backend.h attention_fwd_bf16 /
 * attention_bwd_bf16) on CPUs with AVX512-BF16 (Zen 4 and later, Cooper Lake, Sapphire Rapids):
 * every product is vdpbf16ps (two bf16 products summed into an fp32 lane: twice the fp32 FMA
 * rate), as PyTorch's CPU flash attention under bf16 autocast runs it: q, k, v, dO rounded to
 * bf16, the probabilities P and the score gradients dS rounded to bf16 before their products,
 * softmax statistics, sums and outputs in fp32. Compiled with the avx512 level's flags plus
 * -mavx512bf16 (CMakeLists.txt: files named *_avx512bf16.c); entered only through ops_fast.c's
 * lt_fast_attention_*_bf16 once the dispatch level is avx512 and the CPU has AVX512-BF16.
 *
 * Layouts. vdpbf16ps multiplies 32-bit words holding two bf16 (a "pair", the lower index in the
 * low half) lane by lane, so both operands of C[m][n] = sum_p a(m, p) . b(p, n) are pairs over
 * the summed index: A broadcast one word a time, B loaded 16 words (16 lanes of n) a time
 * (mm_pairs). The pairs come from three packings, all from fp32 rows: natural rows (cvt_rows:
 * pairs over the row's own index), two rows interleaved (interleave_rows, zip_bf16: pairs over
 * the row index), and natural rows transposed (transpose_pairs: pairs over the row's index,
 * lanes over rows; 16 x 16 words at a time in registers). The forward computes S^T = K Q^T
 * (lanes: the block's 32 queries), so its one transpose is per query block and the softmax runs
 * down the columns; one task holds a query block of every head of a kv head's group (up to
 * GMAX), which share its K and V packing and its mask. The backward computes S = Q K^T and
 * dP = dO V^T (lanes: keys), its transposes per key block, and dK / dV per key block ([BK][HD]:
 * dK += dS^T Q, lanes over the head dim), added into dk / dv once per key block; P and dS are
 * rounded to bf16 straight into the layouts their products read. The softmax runs in base 2
 * (exp2_16: scores times scale log2 e), the same function in both directions. A block whose
 * keys every query sees skips the mask.
 * Invariants as ops_fast_avx2.c: no allocation (block buffers on the stack), backward adds into
 * the gradients, results do not depend on the thread count (the same tasks: one output element,
 * one task; sums in a fixed order). Rounding: vcvtne2ps2bf16 (nearest even; it flushes fp32
 * subnormals, which vdpbf16ps would read as zero anyway). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "ops_fast_kernels.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512BF16__)
#error "attention_avx512bf16.c is compiled with -mavx512f -mavx512bw -mavx512bf16 (CMakeLists.txt)"
#endif

enum { BQ = 32, BK = 64, MAXHD = LT_FAST_MAX_HD };
typedef uint32_t pair; /* two bf16: index 2p in the low half, 2p + 1 in the high half */

/* ---- vectorised 2^y (16 lanes) ------------------------------------------------------------ */
/* 2^y = 2^n 2^f, n = round(y), |f| <= 1/2, 2^f by its degree-5 Taylor polynomial in f ln 2
 * (relative error <= 2.4e-6: far below the 2^-9 of the bf16 rounding every probability gets
 * before its product), 2^n applied by vscalefps; y below -200 (the masked scores' -inf too)
 * gives exactly 0. The softmax runs in base 2 (scores times log2 e): the forward's sums and the
 * backward's recomputed probabilities use this one function, so they agree. */
static inline __m512 exp2_16(__m512 y) {
    y = _mm512_max_ps(y, _mm512_set1_ps(-200.0f));
    const __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(y, n);
    __m512 p = _mm512_set1_ps(1.3333558e-3f); /* ln2^5 / 5! */
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#define LOG2E 1.44269504088896341f

/* ---- packing ------------------------------------------------------------------------------- */
/* 32 floats (a[0..16) and b = a + 16's) rounded to bf16, in order */
static inline __m512i cvt32(const float *a) {
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + 16), _mm512_loadu_ps(a));
}

/* dst[i][0..W) = src row i (stride lds) in bf16 for i < n; W % 32 == 0. As pairs: row i's
 * words are pairs over the row's index. */
static void cvt_rows(uint16_t *dst, const float *src, int64_t lds, int n, int W) {
    for (int i = 0; i < n; i++)
        for (int d = 0; d < W; d += 32)
            _mm512_storeu_si512(dst + (int64_t)i * W + d, cvt32(src + i * lds + d));
}

/* (a[i], b[i]) for i < 16 rounded to bf16: 16 pairs, a's in the low halves */
static inline __m512i zip_bf16(__m512 a, __m512 b) {
    static const uint16_t k_idx[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                       21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                       11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(k_idx), (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

/* dst[p][d] = (src[2p][d], src[2p + 1][d]) for p < ceil(n / 2), d < W (W % 16 == 0); the row
 * past an odd n is zero. */
static void interleave_rows(pair *dst, const float *src, int64_t lds, int n, int W) {
    for (int p = 0; 2 * p < n; p++) {
        const float *r0 = src + 2 * p * lds, *r1 = r0 + lds;
        const int has1 = 2 * p + 1 < n;
        for (int d = 0; d < W; d += 16)
            _mm512_storeu_si512(dst + (int64_t)p * W + d,
                                zip_bf16(_mm512_loadu_ps(r0 + d),
                                         has1 ? _mm512_loadu_ps(r1 + d) : _mm512_setzero_ps()));
    }
}

/* r[k][i] <- r[i][k] for 16 vectors of 16 32-bit words: words within 128-bit lanes (two unpack
 * stages), then the 4 x 4 grid of lanes (two 128-bit shuffle stages) */
static inline void transpose16(__m512i r[16]) {
    __m512i a[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + c]'s lane L: rows 4i .. 4i + 3 of column 4L + c */
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        const __m512i t0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44);
        const __m512i t1 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xee);
        const __m512i t2 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
        const __m512i t3 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xee);
        a[c] = _mm512_shuffle_i32x4(t0, t2, 0x88);      /* column c */
        a[4 + c] = _mm512_shuffle_i32x4(t0, t2, 0xdd);  /* column 4 + c */
        a[8 + c] = _mm512_shuffle_i32x4(t1, t3, 0x88);  /* column 8 + c */
        a[12 + c] = _mm512_shuffle_i32x4(t1, t3, 0xdd); /* column 12 + c */
    }
    for (int i = 0; i < 16; i++)
        r[i] = a[i];
}

/* dst[p][j] = (src[j][2p], src[j][2p + 1]) for p < W / 2, j < n; zero for n <= j < ld.
 * W % 32 == 0, ld % 16 == 0: 16 rows x 16 pairs at a time, transposed in registers. */
static void transpose_pairs(pair *dst, int ld, const float *src, int64_t lds, int n, int W) {
    const __m512i zero = _mm512_setzero_si512();
    int j0 = 0;
    for (; j0 < n; j0 += 16)
        for (int p0 = 0; p0 < W / 2; p0 += 16) {
            __m512i r[16];
            for (int i = 0; i < 16; i++)
                r[i] = j0 + i < n ? cvt32(src + (j0 + i) * lds + 2 * p0) : zero;
            transpose16(r);
            for (int k = 0; k < 16; k++)
                _mm512_storeu_si512(dst + (p0 + k) * ld + j0, r[k]);
        }
    for (; j0 < ld; j0 += 16)
        for (int p = 0; p < W / 2; p++)
            _mm512_storeu_si512(dst + p * ld + j0, zero);
}

/* ---- products ------------------------------------------------------------------------------ */
/* R rows x Z vectors of C (16 lanes each) at once; R and Z are constants after inlining */
static inline __attribute__((always_inline)) void mm_tile(float *C, int64_t ldc, const pair *A,
                                                          int64_t lda, int64_t aps, const pair *B,
                                                          int64_t ldb, int P, int R, int Z,
                                                          int acc) {
    __m512 c[4][4];
    for (int r = 0; r < R; r++)
        for (int z = 0; z < Z; z++)
            c[r][z] = acc ? _mm512_loadu_ps(C + r * ldc + 16 * z) : _mm512_setzero_ps();
    for (int p = 0; p < P; p++) {
        __m512bh b[4];
        for (int z = 0; z < Z; z++)
            b[z] = (__m512bh)_mm512_loadu_si512(B + p * ldb + 16 * z);
        for (int r = 0; r < R; r++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r * lda + p * aps]);
            for (int z = 0; z < Z; z++)
                c[r][z] = _mm512_dpbf16_ps(c[r][z], a, b[z]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int z = 0; z < Z; z++)
            _mm512_storeu_ps(C + r * ldc + 16 * z, c[r][z]);
}

/* C[m][n] = (acc ? C[m][n] : 0) + sum_{p < P} A[m * lda + p * aps] . B[p * ldb + n] for m < M,
 * n < N (N % 32 == 0), every pair product summed in fp32 */
static void mm_pairs(float *C, int64_t ldc, int M, int N, const pair *A, int64_t lda, int64_t aps,
                     const pair *B, int64_t ldb, int P, int acc) {
    for (int n0 = 0; n0 < N; n0 += 64) {
        float *Cn = C + n0;
        const pair *Bn = B + n0;
        int m = 0;
        if (N - n0 >= 64) {
            for (; m + 2 <= M; m += 2)
                mm_tile(Cn + m * ldc, ldc, A + m * lda, lda, aps, Bn, ldb, P, 2, 4, acc);
            for (; m < M; m++)
                mm_tile(Cn + m * ldc, ldc, A + m * lda, lda, aps, Bn, ldb, P, 1, 4, acc);
        } else { /* 32 lanes left */
            for (; m + 4 <= M; m += 4)
                mm_tile(Cn + m * ldc, ldc, A + m * lda, lda, aps, Bn, ldb, P, 4, 2, acc);
            for (; m < M; m++)
                mm_tile(Cn + m * ldc, ldc, A + m * lda, lda, aps, Bn, ldb, P, 1, 2, acc);
        }
    }
}

static inline float hsum16(__m512 v) {
    return _mm512_reduce_add_ps(v);
}

/* ---- forward ------------------------------------------------------------------------------- */
/* One task per (row, kv head, query block): the heads of the kv head's group (up to GMAX at a
 * time) share the task's K and V packing and its mask, each head keeping its own softmax state
 * and output block. */
enum { GMAX = 4 };

void lt_attention_fwd_bf16_avx512bf16_(float *out, float *lse, const float *q, const float *k,
                                       const float *v, const int32_t *seq, const int32_t *off,
                                       int B, int T, int NH, int NKV, int HD, int window) {
    if (off) { /* T: the longest row */
        T = 0;
        for (int b = 0; b < B; b++)
            if (lt_fast_row_len(off, b, 0) > T) T = lt_fast_row_len(off, b, 0);
    }
    const float scale = 1.0f / sqrtf((float)HD);
    const int group = NH / NKV, nqb = (T + BQ - 1) / BQ, HP = HD / 2;
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < NKV; kh++)
            for (int qbr = 0; qbr < nqb; qbr++) {
                const int qb = nqb - 1 - qbr; /* biggest first */
                const int Tb = lt_fast_row_len(off, b, T);
                const int64_t rs = lt_fast_row_start(off, b, T);
                const int t0 = qb * BQ, nq = Tb - t0 < BQ ? Tb - t0 : BQ;
                if (nq <= 0) continue;
                const int32_t *seq_row = seq ? seq + rs : NULL;
                const float *kbase = k + rs * ks + (int64_t)kh * HD;
                const float *vbase = v + rs * ks + (int64_t)kh * HD;
                _Alignas(64) pair Qt[GMAX][MAXHD / 2 * BQ]; /* [HP][BQ] a head */
                _Alignas(64) uint16_t Kn[BK * MAXHD];       /* [nk][HD] */
                _Alignas(64) pair Vj[BK / 2 * MAXHD];       /* [BK/2][HD] */
                _Alignas(64) float ST[BK * BQ];             /* [BK][BQ]: S^T */
                _Alignas(64) pair PP[BK / 2 * BQ];          /* [BK/2][BQ] */
                _Alignas(64) float O[GMAX][BQ * MAXHD];     /* [BQ][HD] a head */
                _Alignas(64) float al[BQ];
                __mmask16 msk[BK][2];
                const __m512i lane =
                    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
                __m512i tv[2];
                __m512i st[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
                __mmask16 valid[2];
                for (int z = 0; z < 2; z++) {
                    tv[z] = _mm512_add_epi32(_mm512_set1_epi32(t0 + 16 * z), lane);
                    int cnt = nq - 16 * z;
                    valid[z] = cnt >= 16 ? 0xffff : cnt <= 0 ? 0 : (__mmask16)((1u << cnt) - 1);
                    if (seq_row) st[z] = _mm512_maskz_loadu_epi32(valid[z], seq_row + t0 + 16 * z);
                }
                const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
                const __m512 scl = _mm512_set1_ps(scale * LOG2E), l2e = _mm512_set1_ps(LOG2E);
                const int s_lo = window > 0 && t0 - window + 1 > 0 ? t0 - window + 1 : 0;
                const int s_hi = t0 + nq;
                for (int h0 = kh * group; h0 < (kh + 1) * group; h0 += GMAX) {
                    const int G = (kh + 1) * group - h0 < GMAX ? (kh + 1) * group - h0 : GMAX;
                    __m512 m[GMAX][2], l[GMAX][2];
                    for (int g = 0; g < G; g++) {
                        transpose_pairs(Qt[g], BQ, q + (rs + t0) * qs + (int64_t)(h0 + g) * HD, qs,
                                        nq, HD);
                        memset(O[g], 0, sizeof(float) * (size_t)nq * HD);
                        for (int z = 0; z < 2; z++) {
                            m[g][z] = ninf;
                            l[g][z] = _mm512_setzero_ps();
                        }
                    }
                    for (int s0 = s_lo / BK * BK; s0 < s_hi; s0 += BK) {
                        const int nk = s_hi - s0 < BK ? s_hi - s0 : BK;
                        cvt_rows(Kn, kbase + s0 * ks, ks, nk, HD);
                        interleave_rows(Vj, vbase + s0 * ks, ks, nk, HD);
                        /* the mask (query t = t0 + lane sees key s iff s <= t, t - s < window,
                         * same document), once for the group; none when every query of the
                         * block sees every key */
                        const int full = !seq_row && window <= 0 && s0 + nk - 1 <= t0;
                        if (!full)
                            for (int j = 0; j < nk; j++) {
                                const int s = s0 + j;
                                const __m512i sv = _mm512_set1_epi32(s);
                                for (int z = 0; z < 2; z++) {
                                    __mmask16 in =
                                        _mm512_mask_cmpge_epi32_mask(valid[z], tv[z], sv);
                                    if (window > 0)
                                        in = _mm512_mask_cmplt_epi32_mask(
                                            in, tv[z], _mm512_set1_epi32(s + window));
                                    if (seq_row)
                                        in = _mm512_mask_cmpeq_epi32_mask(
                                            in, st[z], _mm512_set1_epi32(seq_row[s]));
                                    msk[j][z] = in;
                                }
                            }
                        for (int g = 0; g < G; g++) {
                            mm_pairs(ST, BQ, nk, BQ, (const pair *)Kn, HP, 1, Qt[g], BQ, HP, 0);
                            /* the block's column maxima of the unscaled scores (masked: -inf) */
                            __m512 bm[2] = {ninf, ninf};
                            if (full) {
                                for (int j = 0; j < nk; j++)
                                    for (int z = 0; z < 2; z++)
                                        bm[z] = _mm512_max_ps(
                                            bm[z], _mm512_loadu_ps(ST + j * BQ + 16 * z));
                            } else {
                                for (int j = 0; j < nk; j++)
                                    for (int z = 0; z < 2; z++) {
                                        __m512 x = _mm512_mask_mov_ps(
                                            ninf, msk[j][z], _mm512_loadu_ps(ST + j * BQ + 16 * z));
                                        _mm512_storeu_ps(ST + j * BQ + 16 * z, x);
                                        bm[z] = _mm512_max_ps(bm[z], x);
                                    }
                            }
                            /* online softmax down the columns: P^T = exp(scale S^T - m),
                             * l = l alpha + sum; P written as bf16 pairs over keys (two rows
                             * of P^T interleaved: O += P V's operand), summed in fp32 in key
                             * order */
                            int rescale = 0;
                            for (int z = 0; z < 2; z++) {
                                __m512 mnew = _mm512_max_ps(m[g][z], _mm512_mul_ps(bm[z], sc));
                                /* columns with nothing allowed yet keep m = -inf: exp against 0 */
                                __mmask16 none = _mm512_cmp_ps_mask(mnew, ninf, _CMP_EQ_OQ);
                                __m512 msafe = _mm512_mask_mov_ps(mnew, none, _mm512_setzero_ps());
                                __m512 alpha =
                                    exp2_16(_mm512_mul_ps(_mm512_sub_ps(m[g][z], msafe), l2e));
                                const __m512 ms2 = _mm512_mul_ps(msafe, l2e);
                                __m512 sum = _mm512_setzero_ps();
                                for (int j = 0; j < nk; j += 2) {
                                    __m512 p0 = exp2_16(_mm512_fmsub_ps(
                                        _mm512_loadu_ps(ST + j * BQ + 16 * z), scl, ms2));
                                    __m512 p1 = _mm512_setzero_ps();
                                    sum = _mm512_add_ps(sum, p0);
                                    if (j + 1 < nk) {
                                        p1 = exp2_16(_mm512_fmsub_ps(
                                            _mm512_loadu_ps(ST + (j + 1) * BQ + 16 * z), scl, ms2));
                                        sum = _mm512_add_ps(sum, p1);
                                    }
                                    _mm512_storeu_si512(PP + (j / 2) * BQ + 16 * z,
                                                        zip_bf16(p0, p1));
                                }
                                l[g][z] = _mm512_fmadd_ps(l[g][z], alpha, sum);
                                m[g][z] = mnew;
                                _mm512_storeu_ps(al + 16 * z, alpha);
                                if (_mm512_mask_cmp_ps_mask(valid[z], alpha, _mm512_set1_ps(1.0f),
                                                            _CMP_NEQ_UQ))
                                    rescale = 1;
                            }
                            float *Og = O[g];
                            if (rescale)
                                for (int i = 0; i < nq; i++)
                                    if (al[i] != 1.0f) {
                                        const __m512 av = _mm512_set1_ps(al[i]);
                                        for (int d = 0; d < HD; d += 16)
                                            _mm512_storeu_ps(
                                                Og + i * HD + d,
                                                _mm512_mul_ps(av,
                                                              _mm512_loadu_ps(Og + i * HD + d)));
                                    }
                            /* O += P V (V's pairs over keys too) */
                            mm_pairs(Og, HD, nq, HD, PP, 1, BQ, Vj, HD, (nk + 1) / 2, 1);
                        }
                    }
                    for (int g = 0; g < G; g++) {
                        const int h = h0 + g;
                        _Alignas(64) float mv[BQ], lv[BQ];
                        _mm512_storeu_ps(mv, m[g][0]);
                        _mm512_storeu_ps(mv + 16, m[g][1]);
                        _mm512_storeu_ps(lv, l[g][0]);
                        _mm512_storeu_ps(lv + 16, l[g][1]);
                        for (int i = 0; i < nq; i++) {
                            const __m512 inv = _mm512_set1_ps(1.0f / lv[i]);
                            float *orow = out + (rs + t0 + i) * qs + (int64_t)h * HD;
                            for (int d = 0; d < HD; d += 16)
                                _mm512_storeu_ps(
                                    orow + d,
                                    _mm512_mul_ps(_mm512_loadu_ps(O[g] + i * HD + d), inv));
                            lse[rs * NH + (int64_t)h * Tb + t0 + i] = mv[i] + logf(lv[i]);
                        }
                    }
                }
            }
}

/* ---- backward ------------------------------------------------------------------------------ */
/* S[i][j] = -inf where query t0 + i does not see key s0 + j (or j >= nk); lanes over keys */
static void mask_rows(float *S, int nq, int nk, int t0, int s0, const int32_t *seq_row,
                      int window) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int i = 0; i < nq; i++) {
        const int t = t0 + i;
        const int lo = window > 0 && t - window + 1 - s0 > 0 ? t - window + 1 - s0 : 0;
        const int hi = t - s0 + 1 < nk ? t - s0 + 1 : nk;
        const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
        const __m512i stv = _mm512_set1_epi32(seq_row ? seq_row[t] : 0);
        for (int j = 0; j < BK; j += 16) {
            const __m512i jj = _mm512_add_epi32(_mm512_set1_epi32(j), lane);
            __mmask16 in = _mm512_cmpge_epi32_mask(jj, vlo) & _mm512_cmplt_epi32_mask(jj, vhi);
            if (seq_row)
                in = _mm512_mask_cmpeq_epi32_mask(
                    in, _mm512_maskz_loadu_epi32(in, seq_row + s0 + j), stv);
            _mm512_storeu_ps(S + i * BK + j,
                             _mm512_mask_mov_ps(ninf, in, _mm512_loadu_ps(S + i * BK + j)));
        }
    }
}

/* D[i] = sum_d a[i][d] b[i][d] for i < n (rows of stride ld), fp32 in one fixed order */
static void row_dots(float *D, const float *a, const float *b, int64_t ld, int n, int HD) {
    for (int i = 0; i < n; i++) {
        __m512 acc = _mm512_setzero_ps();
        for (int d = 0; d < HD; d += 16)
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i * ld + d), _mm512_loadu_ps(b + i * ld + d),
                                  acc);
        D[i] = hsum16(acc);
    }
}

enum { DMAX = 8192 };

void lt_attention_bwd_bf16_avx512bf16_(float *dq, float *dk, float *dv, const float *dout,
                                       const float *q, const float *k, const float *v,
                                       const float *out, const float *lse, const int32_t *seq,
                                       const int32_t *off, int B, int T, int NH, int NKV, int HD,
                                       int window) {
    const float scale = 1.0f / sqrtf((float)HD);
    const int group = NH / NKV, T_all = T, HP = HD / 2;
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    /* one task per (b, kv head), its key blocks in order (it owns their dk / dv and, across its
     * key blocks, the dq rows of its heads) */
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < NKV; kh++) {
            const int T = lt_fast_row_len(off, b, T_all);
            const int64_t rs = lt_fast_row_start(off, b, T_all);
            const int nkb = (T + BK - 1) / BK;
            const int32_t *seq_row = seq ? seq + rs : NULL;
            const float *kbase = k + rs * ks + (int64_t)kh * HD;
            const float *vbase = v + rs * ks + (int64_t)kh * HD;
            _Alignas(64) pair Kt[MAXHD / 2 * BK], Vt[MAXHD / 2 * BK];  /* [HP][BK] */
            _Alignas(64) pair Kj[BK / 2 * MAXHD];                      /* [BK/2][HD] */
            _Alignas(64) float dKb[BK * MAXHD], dVb[BK * MAXHD];       /* [BK][HD] */
            _Alignas(64) float S[BQ * BK], dP[BQ * BK];                /* [BQ][BK] */
            _Alignas(64) uint16_t Qn[BQ * MAXHD], dOn[BQ * MAXHD];     /* [nq][HD] */
            _Alignas(64) uint16_t dSn[BQ * BK];                        /* [nq][BK] */
            _Alignas(64) pair Qi[BQ / 2 * MAXHD], dOi[BQ / 2 * MAXHD]; /* [BQ/2][HD] */
            _Alignas(64) pair dSi[BQ / 2 * BK], Pi[BQ / 2 * BK];       /* [BQ/2][BK] */
            /* D_t = dO_t . O_t of the group's rows, once per task where they fit (else per
             * query block, in the same order: the same values) */
            float Dloc[BQ], Dall[DMAX];
            const int hoist = group * T <= DMAX;
            if (hoist)
                for (int g = 0; g < group; g++) {
                    const int64_t r0 = rs * qs + (int64_t)(kh * group + g) * HD;
                    row_dots(Dall + (int64_t)g * T, dout + r0, out + r0, qs, T, HD);
                }
            for (int kb = 0; kb < nkb; kb++) {
                const int s0 = kb * BK, nk = T - s0 < BK ? T - s0 : BK;
                transpose_pairs(Kt, BK, kbase + s0 * ks, ks, nk, HD);
                transpose_pairs(Vt, BK, vbase + s0 * ks, ks, nk, HD);
                interleave_rows(Kj, kbase + s0 * ks, ks, nk, HD);
                memset(dKb, 0, sizeof(float) * (size_t)nk * HD);
                memset(dVb, 0, sizeof(float) * (size_t)nk * HD);
                int t_end = T;
                if (window > 0 && s0 + nk - 1 + window < T) t_end = s0 + nk - 1 + window;
                for (int h = kh * group; h < (kh + 1) * group; h++)
                    for (int t0 = s0; t0 < t_end; t0 += BQ) {
                        const int nq = t_end - t0 < BQ ? t_end - t0 : BQ, np = (nq + 1) / 2;
                        const int64_t r0 = (rs + t0) * qs + (int64_t)h * HD;
                        const float *lrow = lse + rs * NH + (int64_t)h * T + t0;
                        cvt_rows(Qn, q + r0, qs, nq, HD);
                        cvt_rows(dOn, dout + r0, qs, nq, HD);
                        mm_pairs(S, BK, nq, BK, (const pair *)Qn, HP, 1, Kt, BK, HP, 0);
                        /* a block whose keys every query sees needs no mask */
                        if (seq_row || window > 0 || nk < BK || s0 + nk - 1 > t0)
                            mask_rows(S, nq, nk, t0, s0, seq_row, window);
                        mm_pairs(dP, BK, nq, BK, (const pair *)dOn, HP, 1, Vt, BK, HP, 0);
                        const float *Dr = Dall + (int64_t)(h - kh * group) * T + t0;
                        if (!hoist) {
                            row_dots(Dloc, dout + r0, out + r0, qs, nq, HD);
                            Dr = Dloc;
                        }
                        /* P = exp(scale S - lse), dS = scale P (dP - D), each rounded to bf16
                         * once into the layouts the products read: dS's natural rows (dq's
                         * operand), P's and dS's rows i, i + 1 interleaved (pairs over queries:
                         * dK's and dV's); the row past an odd nq is zero */
                        const __m512 sc = _mm512_set1_ps(scale), zero = _mm512_setzero_ps();
                        const __m512 scl = _mm512_set1_ps(scale * LOG2E);
                        for (int i = 0; i < nq; i += 2) {
                            const int two = i + 1 < nq;
                            const __m512 lv0 = _mm512_set1_ps(lrow[i] * LOG2E);
                            const __m512 Dv0 = _mm512_set1_ps(Dr[i]);
                            const __m512 lv1 = _mm512_set1_ps(two ? lrow[i + 1] * LOG2E : 0.0f);
                            const __m512 Dv1 = _mm512_set1_ps(two ? Dr[i + 1] : 0.0f);
                            const float *s0r = S + i * BK, *d0r = dP + i * BK;
                            const float *s1r = s0r + BK, *d1r = d0r + BK;
                            for (int j = 0; j < BK; j += 16) {
                                __m512 p0 =
                                    exp2_16(_mm512_fmsub_ps(_mm512_loadu_ps(s0r + j), scl, lv0));
                                __m512 ds0 = _mm512_mul_ps(
                                    _mm512_mul_ps(p0, _mm512_sub_ps(_mm512_loadu_ps(d0r + j), Dv0)),
                                    sc);
                                __m512 p1 = zero, ds1 = zero;
                                if (two) {
                                    p1 = exp2_16(
                                        _mm512_fmsub_ps(_mm512_loadu_ps(s1r + j), scl, lv1));
                                    ds1 = _mm512_mul_ps(
                                        _mm512_mul_ps(p1,
                                                      _mm512_sub_ps(_mm512_loadu_ps(d1r + j), Dv1)),
                                        sc);
                                }
                                _mm512_storeu_si512(Pi + (i / 2) * BK + j, zip_bf16(p0, p1));
                                _mm512_storeu_si512(dSi + (i / 2) * BK + j, zip_bf16(ds0, ds1));
                                _mm256_storeu_si256((__m256i *)(dSn + i * BK + j),
                                                    (__m256i)_mm512_cvtneps_pbh(ds0));
                                if (two)
                                    _mm256_storeu_si256((__m256i *)(dSn + (i + 1) * BK + j),
                                                        (__m256i)_mm512_cvtneps_pbh(ds1));
                            }
                        }
                        /* dq_i += sum_j dS_ij k_j (pairs over keys) */
                        mm_pairs(dq + r0, qs, nq, HD, (const pair *)dSn, BK / 2, 1, Kj, HD,
                                 (nk + 1) / 2, 1);
                        /* dk_j += sum_i dS_ij q_i, dv_j += sum_i P_ij dO_i (pairs over
                         * queries: dS^T's and P^T's rows broadcast, q's and dO's in lanes) */
                        interleave_rows(Qi, q + r0, qs, nq, HD);
                        interleave_rows(dOi, dout + r0, qs, nq, HD);
                        mm_pairs(dKb, HD, nk, HD, dSi, 1, BK, Qi, HD, np, 1);
                        mm_pairs(dVb, HD, nk, HD, Pi, 1, BK, dOi, HD, np, 1);
                    }
                for (int j = 0; j < nk; j++) {
                    float *dkr = dk + (rs + s0 + j) * ks + (int64_t)kh * HD;
                    float *dvr = dv + (rs + s0 + j) * ks + (int64_t)kh * HD;
                    for (int d = 0; d < HD; d += 16) {
                        _mm512_storeu_ps(dkr + d, _mm512_add_ps(_mm512_loadu_ps(dkr + d),
                                                                _mm512_loadu_ps(dKb + j * HD + d)));
                        _mm512_storeu_ps(dvr + d, _mm512_add_ps(_mm512_loadu_ps(dvr + d),
                                                                _mm512_loadu_ps(dVb + j * HD + d)));
                    }
                }
            }
        }
}
