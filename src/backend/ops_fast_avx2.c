/* ops_fast_avx2.c - the AVX2 + FMA kernels of the fast ops (ops_fast_kernels.h), reached only
 * through lt_fast_kernels_avx2 once the dispatch level is avx2 or above: this file is compiled
 * with -mavx2 -mfma (CMakeLists.txt: files named *_avx2.c), and nothing here may run before.
 *
 * Attention is computed flash-style: for a block of BQ query rows and BK keys, the scores are a
 * small GEMM (query rows times a transposed key block, 2 rows x 4 AVX2 vectors of FMAs in
 * registers), masked, turned into probabilities with a vectorised exp and an online softmax
 * (running max m and sum l per query row), and multiplied into V by a second register-tiled
 * kernel. The T x T probabilities never exist; the backward recomputes a block's P from the
 * saved log-sum-exp exactly as the reference does, and adds dS K, dS^T Q, P^T dO.
 * Invariants: no allocation (block buffers live on the stack, bounded by LT_FAST_MAX_HD);
 * backward ops add into gradients like the reference; results do not depend on the thread
 * count (each output element is owned by one task, reductions run in a fixed order). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "ops_fast_kernels.h"

#if !defined(__AVX2__) || !defined(__FMA__)
#error "ops_fast_avx2.c is compiled with -mavx2 -mfma (CMakeLists.txt: files named *_avx2.c)"
#endif

enum { BQ = 32, BK = 64 };

/* ---- vectorised exp ---------------------------------------------------------------------- */
/* exp(x) for 8 floats: x = n ln2 + r, |r| <= ln2/2, exp(r) by the Cephes degree-5 polynomial,
 * 2^n through the exponent bits. Inputs below -87.3 (and -inf) give 0; above 88 are clamped. */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void expf_array_avx2(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] = x[i] < -87.3f ? 0.0f : expf(x[i]);
}

/* ---- attention ----------------------------------------------------------------------------- */
/* S[i][0..BK) = sum_d A_i[d] Bt[d][0..BK) for i < na; A_i = a + i*as. Bt is [HD][BK]. */
static void scores(float *S, const float *a, int64_t as, int na, const float *Bt, int HD) {
    int i = 0;
    for (; i + 2 <= na; i += 2) {
        const float *a0 = a + i * as, *a1 = a0 + as;
        for (int jh = 0; jh < BK; jh += 32) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
            __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            for (int d = 0; d < HD; d++) {
                const float *b = Bt + d * BK + jh;
                __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8),
                       b2 = _mm256_load_ps(b + 16), b3 = _mm256_load_ps(b + 24);
                __m256 x0 = _mm256_broadcast_ss(a0 + d), x1 = _mm256_broadcast_ss(a1 + d);
                c00 = _mm256_fmadd_ps(x0, b0, c00);
                c01 = _mm256_fmadd_ps(x0, b1, c01);
                c02 = _mm256_fmadd_ps(x0, b2, c02);
                c03 = _mm256_fmadd_ps(x0, b3, c03);
                c10 = _mm256_fmadd_ps(x1, b0, c10);
                c11 = _mm256_fmadd_ps(x1, b1, c11);
                c12 = _mm256_fmadd_ps(x1, b2, c12);
                c13 = _mm256_fmadd_ps(x1, b3, c13);
            }
            float *s0 = S + i * BK + jh, *s1 = s0 + BK;
            _mm256_store_ps(s0, c00);
            _mm256_store_ps(s0 + 8, c01);
            _mm256_store_ps(s0 + 16, c02);
            _mm256_store_ps(s0 + 24, c03);
            _mm256_store_ps(s1, c10);
            _mm256_store_ps(s1 + 8, c11);
            _mm256_store_ps(s1 + 16, c12);
            _mm256_store_ps(s1 + 24, c13);
        }
    }
    for (; i < na; i++) {
        const float *a0 = a + i * as;
        for (int jv = 0; jv < BK; jv += 8) {
            __m256 c = _mm256_setzero_ps();
            for (int d = 0; d < HD; d++)
                c = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + d), _mm256_load_ps(Bt + d * BK + jv),
                                    c);
            _mm256_store_ps(S + i * BK + jv, c);
        }
    }
}

/* out_a[0..HD) += sum_{b < nb} C[a*ca + b*cb] in_b[0..HD) for a < na, with out_a = out + a*os,
 * in_b = in + b*is. Two output rows x 4 vectors in registers. */
static void acc_rows(float *out, int64_t os, int na, const float *C, int ca, int cb,
                     const float *in, int64_t is, int nb, int HD) {
    int a = 0;
    for (; a + 2 <= na; a += 2) {
        float *o0 = out + a * os, *o1 = o0 + os;
        const float *k0 = C + a * ca, *k1 = k0 + ca;
        int d = 0;
        for (; d + 32 <= HD; d += 32) {
            __m256 c00 = _mm256_loadu_ps(o0 + d), c01 = _mm256_loadu_ps(o0 + d + 8),
                   c02 = _mm256_loadu_ps(o0 + d + 16), c03 = _mm256_loadu_ps(o0 + d + 24);
            __m256 c10 = _mm256_loadu_ps(o1 + d), c11 = _mm256_loadu_ps(o1 + d + 8),
                   c12 = _mm256_loadu_ps(o1 + d + 16), c13 = _mm256_loadu_ps(o1 + d + 24);
            for (int b = 0; b < nb; b++) {
                const float *x = in + b * is + d;
                __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8),
                       x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
                __m256 w0 = _mm256_broadcast_ss(k0 + b * cb), w1 = _mm256_broadcast_ss(k1 + b * cb);
                c00 = _mm256_fmadd_ps(w0, x0, c00);
                c01 = _mm256_fmadd_ps(w0, x1, c01);
                c02 = _mm256_fmadd_ps(w0, x2, c02);
                c03 = _mm256_fmadd_ps(w0, x3, c03);
                c10 = _mm256_fmadd_ps(w1, x0, c10);
                c11 = _mm256_fmadd_ps(w1, x1, c11);
                c12 = _mm256_fmadd_ps(w1, x2, c12);
                c13 = _mm256_fmadd_ps(w1, x3, c13);
            }
            _mm256_storeu_ps(o0 + d, c00);
            _mm256_storeu_ps(o0 + d + 8, c01);
            _mm256_storeu_ps(o0 + d + 16, c02);
            _mm256_storeu_ps(o0 + d + 24, c03);
            _mm256_storeu_ps(o1 + d, c10);
            _mm256_storeu_ps(o1 + d + 8, c11);
            _mm256_storeu_ps(o1 + d + 16, c12);
            _mm256_storeu_ps(o1 + d + 24, c13);
        }
        for (; d < HD; d += 8) {
            __m256 c0 = _mm256_loadu_ps(o0 + d), c1 = _mm256_loadu_ps(o1 + d);
            for (int b = 0; b < nb; b++) {
                __m256 x = _mm256_loadu_ps(in + b * is + d);
                c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(k0 + b * cb), x, c0);
                c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(k1 + b * cb), x, c1);
            }
            _mm256_storeu_ps(o0 + d, c0);
            _mm256_storeu_ps(o1 + d, c1);
        }
    }
    for (; a < na; a++) {
        float *o0 = out + a * os;
        const float *k0 = C + a * ca;
        for (int d = 0; d < HD; d += 8) {
            __m256 c0 = _mm256_loadu_ps(o0 + d);
            for (int b = 0; b < nb; b++)
                c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(k0 + b * cb),
                                     _mm256_loadu_ps(in + b * is + d), c0);
            _mm256_storeu_ps(o0 + d, c0);
        }
    }
}

/* Bt[d][j] = rows[j][d] for j < n (row stride rs), 0 for n <= j < BK. */
static void transpose_block(float *Bt, const float *rows, int64_t rs, int n, int HD) {
    for (int j = 0; j < n; j++)
        for (int d = 0; d < HD; d++)
            Bt[d * BK + j] = rows[j * rs + d];
    for (int d = 0; d < HD; d++)
        for (int j = n; j < BK; j++)
            Bt[d * BK + j] = 0.0f;
}

/* Scales the scores by `scale` and sets disallowed (or j >= nk) entries to -inf. Query t sees
 * key s = s0 + j iff s <= t, t - s < window (window > 0) and seq_row[s] == seq_row[t]: the first
 * two leave the range lo <= j < hi, compared 8 lanes at a time; the sequence ids are loaded
 * only for lanes inside the range (a masked load never reads past the row). */
static void mask_scores(float *S, int nq, int nk, int t0, int s0, const int32_t *seq_row,
                        int window, float scale) {
    const __m256 sc = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int i = 0; i < nq; i++) {
        float *srow = S + i * BK;
        const int t = t0 + i;
        int lo = window > 0 && t - window + 1 - s0 > 0 ? t - window + 1 - s0 : 0;
        int hi = t - s0 + 1 < nk ? t - s0 + 1 : nk;
        const __m256i vlo = _mm256_set1_epi32(lo - 1), vhi = _mm256_set1_epi32(hi);
        const __m256i st = _mm256_set1_epi32(seq_row ? seq_row[t] : 0);
        for (int j = 0; j < BK; j += 8) {
            __m256i jj = _mm256_add_epi32(_mm256_set1_epi32(j), lane);
            __m256i in = _mm256_and_si256(_mm256_cmpgt_epi32(jj, vlo), _mm256_cmpgt_epi32(vhi, jj));
            if (seq_row)
                in = _mm256_and_si256(
                    in, _mm256_cmpeq_epi32(_mm256_maskload_epi32(seq_row + s0 + j, in), st));
            __m256 v = _mm256_mul_ps(_mm256_load_ps(srow + j), sc);
            _mm256_store_ps(srow + j, _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(in)));
        }
    }
}

/* HD % 8 == 0, HD <= LT_FAST_MAX_HD (ops_fast.c checked) */
static void attention_fwd_var_avx2(float *out, float *lse, const float *q, const float *k,
                                   const float *v, const int32_t *seq, const int32_t *off, int B,
                                   int T, int NH, int NKV, int HD, int window) {
    if (off) { /* T: the longest row */
        T = 0;
        for (int b = 0; b < B; b++)
            if (lt_fast_row_len(off, b, 0) > T) T = lt_fast_row_len(off, b, 0);
    }
    const float scale = 1.0f / sqrtf((float)HD);
    const int group = NH / NKV, nqb = (T + BQ - 1) / BQ;
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD; /* row strides */
    /* Later query blocks see more keys: interleave the blocks across threads. */
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int qbr = 0; qbr < nqb; qbr++) {
                const int qb = nqb - 1 - qbr; /* biggest first */
                const int Tb = lt_fast_row_len(off, b, T);
                const int64_t rs = lt_fast_row_start(off, b, T);
                const int kh = h / group, t0 = qb * BQ, nq = Tb - t0 < BQ ? Tb - t0 : BQ;
                if (nq <= 0) continue; /* a shorter row */
                const int32_t *seq_row = seq ? seq + rs : NULL;
                const float *qrow = q + (rs + t0) * qs + (int64_t)h * HD;
                const float *kbase = k + rs * ks + (int64_t)kh * HD;
                const float *vbase = v + rs * ks + (int64_t)kh * HD;
                _Alignas(32) float Kt[LT_FAST_MAX_HD * BK];
                _Alignas(32) float S[BQ * BK];
                _Alignas(32) float O[BQ * LT_FAST_MAX_HD];
                float m[BQ], l[BQ];
                for (int i = 0; i < nq; i++) {
                    m[i] = -INFINITY;
                    l[i] = 0.0f;
                }
                memset(O, 0, sizeof(float) * (size_t)nq * HD);
                int s_lo = window > 0 && t0 - window + 1 > 0 ? t0 - window + 1 : 0;
                int s_hi = t0 + nq;
                for (int s0 = s_lo; s0 < s_hi; s0 += BK) {
                    int nk = s_hi - s0 < BK ? s_hi - s0 : BK;
                    transpose_block(Kt, kbase + s0 * ks, ks, nk, HD);
                    scores(S, qrow, qs, nq, Kt, HD);
                    mask_scores(S, nq, nk, t0, s0, seq_row, window, scale);
                    for (int i = 0; i < nq; i++) {
                        float *srow = S + i * BK;
                        __m256 mx = _mm256_set1_ps(-INFINITY);
                        for (int j = 0; j < BK; j += 8)
                            mx = _mm256_max_ps(mx, _mm256_load_ps(srow + j));
                        float bm = hmax8(mx);
                        float mnew = bm > m[i] ? bm : m[i];
                        if (mnew == -INFINITY) { /* nothing allowed in this block yet */
                            memset(srow, 0, sizeof(float) * BK);
                            continue;
                        }
                        float alpha = m[i] == -INFINITY ? 0.0f : expf(m[i] - mnew);
                        __m256 mv = _mm256_set1_ps(mnew), sum = _mm256_setzero_ps();
                        for (int j = 0; j < BK; j += 8) {
                            __m256 p = exp8(_mm256_sub_ps(_mm256_load_ps(srow + j), mv));
                            _mm256_store_ps(srow + j, p);
                            sum = _mm256_add_ps(sum, p);
                        }
                        l[i] = l[i] * alpha + hsum8(sum);
                        m[i] = mnew;
                        if (alpha != 1.0f) {
                            __m256 av = _mm256_set1_ps(alpha);
                            for (int d = 0; d < HD; d += 8)
                                _mm256_storeu_ps(
                                    O + i * HD + d,
                                    _mm256_mul_ps(av, _mm256_loadu_ps(O + i * HD + d)));
                        }
                    }
                    acc_rows(O, HD, nq, S, BK, 1, vbase + s0 * ks, ks, nk, HD);
                }
                for (int i = 0; i < nq; i++) {
                    float inv = 1.0f / l[i];
                    float *orow = out + (rs + t0 + i) * qs + (int64_t)h * HD;
                    for (int d = 0; d < HD; d++)
                        orow[d] = O[i * HD + d] * inv;
                    lse[rs * NH + (int64_t)h * Tb + t0 + i] = m[i] + logf(l[i]);
                }
            }
}

/* HD % 8 == 0, HD <= LT_FAST_MAX_HD, dq, dk and dv given (ops_fast.c checked) */
static void attention_bwd_var_avx2(float *dq, float *dk, float *dv, const float *dout,
                                   const float *q, const float *k, const float *v, const float *out,
                                   const float *lse, const int32_t *seq, const int32_t *off, int B,
                                   int T, int NH, int NKV, int HD, int window) {
    const float scale = 1.0f / sqrtf((float)HD);
    const int group = NH / NKV, T_all = T;
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    /* One task per (b, kv head, key block): it owns dk/dv of its keys. dq rows are shared by
     * the key blocks of a (b, kv head), so the key blocks of one (b, kv head) run in order
     * inside one task when dq is wanted. */
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < NKV; kh++) {
            const int T = lt_fast_row_len(off, b, T_all); /* this row's length */
            const int64_t rs = lt_fast_row_start(off, b, T_all);
            const int nkb = (T + BK - 1) / BK;
            const int32_t *seq_row = seq ? seq + rs : NULL;
            const float *kbase = k + rs * ks + (int64_t)kh * HD;
            const float *vbase = v + rs * ks + (int64_t)kh * HD;
            _Alignas(32) float Kt[LT_FAST_MAX_HD * BK], Vt[LT_FAST_MAX_HD * BK];
            _Alignas(32) float dKb[BK * LT_FAST_MAX_HD], dVb[BK * LT_FAST_MAX_HD];
            _Alignas(32) float S[BQ * BK], dP[BQ * BK];
            float Dr[BQ];
            for (int kb = 0; kb < nkb; kb++) {
                const int s0 = kb * BK, nk = T - s0 < BK ? T - s0 : BK;
                transpose_block(Kt, kbase + s0 * ks, ks, nk, HD);
                transpose_block(Vt, vbase + s0 * ks, ks, nk, HD);
                memset(dKb, 0, sizeof(float) * (size_t)nk * HD);
                memset(dVb, 0, sizeof(float) * (size_t)nk * HD);
                int t_end = T;
                if (window > 0 && s0 + nk - 1 + window < T) t_end = s0 + nk - 1 + window;
                for (int h = kh * group; h < (kh + 1) * group; h++)
                    for (int t0 = s0; t0 < t_end; t0 += BQ) {
                        const int nq = t_end - t0 < BQ ? t_end - t0 : BQ;
                        const int64_t r0 = (rs + t0) * qs + (int64_t)h * HD;
                        const float *lrow = lse + rs * NH + (int64_t)h * T + t0;
                        scores(S, q + r0, qs, nq, Kt, HD);
                        mask_scores(S, nq, nk, t0, s0, seq_row, window, scale);
                        scores(dP, dout + r0, qs, nq, Vt, HD);
                        for (int i = 0; i < nq; i++) {
                            const float *go = dout + r0 + i * qs, *oo = out + r0 + i * qs;
                            __m256 acc = _mm256_setzero_ps();
                            for (int d = 0; d < HD; d += 8)
                                acc = _mm256_fmadd_ps(_mm256_loadu_ps(go + d),
                                                      _mm256_loadu_ps(oo + d), acc);
                            Dr[i] = hsum8(acc);
                        }
                        for (int i = 0; i < nq; i++) {
                            __m256 lv = _mm256_set1_ps(lrow[i]), Dv = _mm256_set1_ps(Dr[i]);
                            __m256 sc = _mm256_set1_ps(scale);
                            float *srow = S + i * BK, *prow = dP + i * BK;
                            for (int j = 0; j < BK; j += 8) {
                                __m256 p = exp8(_mm256_sub_ps(_mm256_load_ps(srow + j), lv));
                                __m256 ds = _mm256_mul_ps(
                                    _mm256_mul_ps(p, _mm256_sub_ps(_mm256_load_ps(prow + j), Dv)),
                                    sc);
                                _mm256_store_ps(srow + j, p);  /* S <- P */
                                _mm256_store_ps(prow + j, ds); /* dP <- dS */
                            }
                        }
                        /* dq_i += sum_j dS_ij k_j ; dk_j += sum_i dS_ij q_i ; dv_j += P_ij dO_i */
                        acc_rows(dq + r0, qs, nq, dP, BK, 1, kbase + s0 * ks, ks, nk, HD);
                        acc_rows(dKb, HD, nk, dP, 1, BK, q + r0, qs, nq, HD);
                        acc_rows(dVb, HD, nk, S, 1, BK, dout + r0, qs, nq, HD);
                    }
                for (int j = 0; j < nk; j++) {
                    float *dkr = dk + (rs + s0 + j) * ks + (int64_t)kh * HD;
                    float *dvr = dv + (rs + s0 + j) * ks + (int64_t)kh * HD;
                    for (int d = 0; d < HD; d++) {
                        dkr[d] += dKb[j * HD + d];
                        dvr[d] += dVb[j * HD + d];
                    }
                }
            }
        }
}

/* ---- cross-entropy -------------------------------------------------------------------------- */
static double cross_entropy_row_avx2(float *d, const float *x, int V, int32_t t, float gs) {
    const float xt = x[t]; /* read before d (which may alias x) is written */
    int i = 0;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= V; i += 8)
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float mx = hmax8(mv);
    for (; i < V; i++)
        if (x[i] > mx) mx = x[i];
    /* e_i = exp(x_i - mx), kept in d when the gradient is wanted; summed in double */
    i = 0;
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    __m256 mxv = _mm256_set1_ps(mx);
    for (; i + 8 <= V; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mxv));
        if (d) _mm256_storeu_ps(d + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double tmp[4];
    _mm256_storeu_pd(tmp, _mm256_add_pd(s0, s1));
    double se = (tmp[0] + tmp[1]) + (tmp[2] + tmp[3]);
    for (; i < V; i++) {
        float e = expf(x[i] - mx);
        if (d) d[i] = e;
        se += e;
    }
    if (d) { /* softmax = e / se */
        const float f = (float)(gs / se);
        for (int j = 0; j < V; j++)
            d[j] *= f;
        d[t] -= gs;
    }
    return (double)mx + log(se) - xt;
}

/* ---- SwiGLU --------------------------------------------------------------------------------- */
static void swiglu_fwd_avx2(float *out, const float *gate, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 s =
            _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, s), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void swiglu_bwd_write_avx2(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), go = _mm256_loadu_ps(dout + i);
        __m256 s =
            _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        /* dgate = dout up s (1 + g (1 - s)), dup = dout g s */
        __m256 t = _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one);
        _mm256_storeu_ps(
            dgate + i,
            _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(go, _mm256_loadu_ps(up + i)), s), t));
        _mm256_storeu_ps(dup + i, _mm256_mul_ps(_mm256_mul_ps(go, g), s));
    }
    for (; i < n; i++) {
        float g = gate[i], sig = 1.0f / (1.0f + expf(-g));
        dgate[i] = dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
        dup[i] = dout[i] * g * sig;
    }
}

const lt_fast_kernels lt_fast_kernels_avx2 = {
    .level = LT_CPU_LEVEL_AVX2,
    .attention_fwd_var = attention_fwd_var_avx2,
    .attention_bwd_var = attention_bwd_var_avx2,
    .cross_entropy_row = cross_entropy_row_avx2,
    .swiglu_fwd = swiglu_fwd_avx2,
    .swiglu_bwd_write = swiglu_bwd_write_avx2,
    .expf_array = expf_array_avx2,
};
