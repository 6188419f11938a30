/* qdot_avx512.c - the AVX-512 VNNI kernels of qdot.h: one vpdpbusd (u8 x s8, 4 products summed
 * into each int32 lane, 256-bit: AVX512_VNNI + AVX512VL) per block instead of maddubs + madd.
 * Compiled with the avx512 level's flags (CMakeLists.txt: files named *_avx512.c) plus
 * avx512vnni on these functions; reached only through lt_qdot_rows when the level is avx512 and
 * the CPU has avx512_vnni. The loops are qdot_kernels.inc's. */
#include <immintrin.h>
#include <string.h>

#include "qdot.h"

#if !defined(__AVX512F__) || !defined(__AVX512VL__)
#error                                                                                             \
    "qdot_avx512.c is compiled with -mavx512f -mavx512vl (CMakeLists.txt: files named *_avx512.c)"
#endif

#define QFN(name) vnni_##name
#define QATTR __attribute__((target("avx512vnni")))
#define DOT_U8S8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define QTILE8
#include "qdot_kernels.inc"

/* Q4_1, 8 tokens, two tokens per 512-bit register: lanes 0..7 are token 2p's 8 lanes of the
 * 256-bit tile (tile8_q4_1), lanes 8..15 token 2p + 1's, so every lane does the operation it
 * does there (the same integer block sum, the same scale d * dx, the same fma into the same
 * accumulator, the same final sums): the same bits as rows_q4_1 per token, with half the
 * instructions (dpbusd, cvt and fma once per token pair). The tokens' blocks are first copied
 * pairwise next to each other (xp[b][p]: token 2p's 32 bytes, then 2p + 1's) so that one load
 * takes both. */
#define ZT_MAXNB 64 /* blocks (2048 columns); wider rows: the 256-bit tile */
QATTR static void vnni_tile8z_q4_1(float *y, int64_t ldy, const void *W, int nr, const lt_q8a *x,
                                   int nb, float beta) {
    if (nb > ZT_MAXNB) {
        vnni_tile8_q4_1(y, ldy, W, nr, x, nb, beta);
        return;
    }
    typedef float v8 __attribute__((vector_size(32)));
    __m512i xp[ZT_MAXNB][4];
    v8 xd[ZT_MAXNB], xs[ZT_MAXNB];
    for (int b = 0; b < nb; b++) {
        for (int t = 0; t < 8; t++) {
            xd[b][t] = x[(int64_t)t * nb + b].d;
            xs[b][t] = x[(int64_t)t * nb + b].s;
        }
        for (int p = 0; p < 4; p++)
            xp[b][p] = _mm512_inserti64x4(
                _mm512_castsi256_si512(
                    _mm256_loadu_si256((const __m256i *)x[(int64_t)(2 * p) * nb + b].q)),
                _mm256_loadu_si256((const __m256i *)x[(int64_t)(2 * p + 1) * nb + b].q), 1);
    }
    __m512i idx[4]; /* lanes 0..7: token 2p's scale, 8..15: token 2p + 1's */
    for (int p = 0; p < 4; p++)
        idx[p] = _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1);
    const uint8_t *w = W;
    for (int r = 0; r < nr; r++) {
        __m512 a0[4], a1[4];
        v8 off = {0};
        for (int p = 0; p < 4; p++)
            a0[p] = a1[p] = _mm512_setzero_ps();
        int b = 0;
        for (; b + 1 < nb; b += 2, w += 40) {
            const float d0 = vnni_h16(w), d1 = vnni_h16(w + 20);
            const float m0 = vnni_h16(w + 2), m1 = vnni_h16(w + 22);
            const __m512i u0 = _mm512_broadcast_i64x4(vnni_nibbles(w + 4));
            const __m512i u1 = _mm512_broadcast_i64x4(vnni_nibbles(w + 24));
            const v8 s0v = d0 * xd[b], s1v = d1 * xd[b + 1];
            __m256 s0h, s1h;
            memcpy(&s0h, &s0v, sizeof s0h);
            memcpy(&s1h, &s1v, sizeof s1h);
            const __m512 s0z = _mm512_castps256_ps512(s0h), s1z = _mm512_castps256_ps512(s1h);
            off += m0 * xs[b] + m1 * xs[b + 1];
            for (int p = 0; p < 4; p++) {
                const __m512i q0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, xp[b][p]);
                const __m512i q1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u1, xp[b + 1][p]);
                a0[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], s0z),
                                        _mm512_cvtepi32_ps(q0), a0[p]);
                a1[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], s1z),
                                        _mm512_cvtepi32_ps(q1), a1[p]);
            }
        }
        for (; b < nb; b++, w += 20) {
            const float d0 = vnni_h16(w);
            const __m512i u0 = _mm512_broadcast_i64x4(vnni_nibbles(w + 4));
            const v8 s0v = d0 * xd[b];
            __m256 s0h;
            memcpy(&s0h, &s0v, sizeof s0h);
            const __m512 s0z = _mm512_castps256_ps512(s0h);
            off += vnni_h16(w + 2) * xs[b];
            for (int p = 0; p < 4; p++) {
                const __m512i q0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, xp[b][p]);
                a0[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], s0z),
                                        _mm512_cvtepi32_ps(q0), a0[p]);
            }
        }
        for (int p = 0; p < 4; p++) {
            const __m512 s = _mm512_add_ps(a0[p], a1[p]);
            for (int h = 0; h < 2; h++) {
                const int t = 2 * p + h;
                const __m256 sh = h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))
                                     : _mm512_castps512_ps256(s);
                const float v = vnni_hsum(sh) + off[t];
                y[t * ldy + r] = beta == 0.0f ? v : y[t * ldy + r] + v;
            }
        }
    }
}

/* Q8_0 the same way (the head of a tied model, 8 requests' rows): rows_q8_0's |w| x sign(x, w)
 * per lane, the sign done as 0 - x where w < 0 (AVX-512 has no 512-bit sign_epi8; where w = 0
 * the product is 0 either way, and x is never -128: the same exact integer sums). */
QATTR static void vnni_tile8z_q8_0(float *y, int64_t ldy, const void *W, int nr, const lt_q8a *x,
                                   int nb, float beta) {
    if (nb > ZT_MAXNB) {
        vnni_tile8_q8_0(y, ldy, W, nr, x, nb, beta);
        return;
    }
    typedef float v8 __attribute__((vector_size(32)));
    __m512i xp[ZT_MAXNB][4];
    v8 xd[ZT_MAXNB];
    for (int b = 0; b < nb; b++) {
        for (int t = 0; t < 8; t++)
            xd[b][t] = x[(int64_t)t * nb + b].d;
        for (int p = 0; p < 4; p++)
            xp[b][p] = _mm512_inserti64x4(
                _mm512_castsi256_si512(
                    _mm256_loadu_si256((const __m256i *)x[(int64_t)(2 * p) * nb + b].q)),
                _mm256_loadu_si256((const __m256i *)x[(int64_t)(2 * p + 1) * nb + b].q), 1);
    }
    __m512i idx[4];
    for (int p = 0; p < 4; p++)
        idx[p] = _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1);
    const __m512i zero = _mm512_setzero_si512();
    const uint8_t *w = W;
    for (int r = 0; r < nr; r++) {
        __m512 a0[4], a1[4];
        for (int p = 0; p < 4; p++)
            a0[p] = a1[p] = _mm512_setzero_ps();
        int b = 0;
        for (; b + 1 < nb; b += 2, w += 68) {
            const float d0 = vnni_h16(w), d1 = vnni_h16(w + 34);
            const __m512i w0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 2)));
            const __m512i w1 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 36)));
            const __m512i u0 = _mm512_abs_epi8(w0), u1 = _mm512_abs_epi8(w1);
            const __mmask64 n0 = _mm512_movepi8_mask(w0), n1 = _mm512_movepi8_mask(w1);
            const v8 s0v = d0 * xd[b], s1v = d1 * xd[b + 1];
            __m256 s0h, s1h;
            memcpy(&s0h, &s0v, sizeof s0h);
            memcpy(&s1h, &s1v, sizeof s1h);
            const __m512 s0z = _mm512_castps256_ps512(s0h), s1z = _mm512_castps256_ps512(s1h);
            for (int p = 0; p < 4; p++) {
                const __m512i x0 = _mm512_mask_sub_epi8(xp[b][p], n0, zero, xp[b][p]);
                const __m512i x1 = _mm512_mask_sub_epi8(xp[b + 1][p], n1, zero, xp[b + 1][p]);
                const __m512i q0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, x0);
                const __m512i q1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u1, x1);
                a0[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], s0z),
                                        _mm512_cvtepi32_ps(q0), a0[p]);
                a1[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], s1z),
                                        _mm512_cvtepi32_ps(q1), a1[p]);
            }
        }
        for (; b < nb; b++, w += 34) {
            const float d0 = vnni_h16(w);
            const __m512i w0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 2)));
            const __m512i u0 = _mm512_abs_epi8(w0);
            const __mmask64 n0 = _mm512_movepi8_mask(w0);
            const v8 s0v = d0 * xd[b];
            __m256 s0h;
            memcpy(&s0h, &s0v, sizeof s0h);
            const __m512 s0z = _mm512_castps256_ps512(s0h);
            for (int p = 0; p < 4; p++) {
                const __m512i x0 = _mm512_mask_sub_epi8(xp[b][p], n0, zero, xp[b][p]);
                const __m512i q0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, x0);
                a0[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], s0z),
                                        _mm512_cvtepi32_ps(q0), a0[p]);
            }
        }
        for (int p = 0; p < 4; p++) {
            const __m512 s = _mm512_add_ps(a0[p], a1[p]);
            for (int h = 0; h < 2; h++) {
                const int t = 2 * p + h;
                const __m256 sh = h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))
                                    : _mm512_castps512_ps256(s);
                const float v = vnni_hsum(sh) + 0.0f;
                y[t * ldy + r] = beta == 0.0f ? v : y[t * ldy + r] + v;
            }
        }
    }
}
#undef ZT_MAXNB

const lt_qdot_kernels lt_qdot_avx512 = {"avx512vnni",   vnni_rows_q4_0,  vnni_rows_q4_1,
                                        vnni_rows_q8_0, vnni_tile4_q4_0, vnni_tile4_q4_1,
                                        vnni_tile4_q8_0,
    vnni_rows_q4_k, vnni_tile8_q4_0, vnni_tile8z_q4_1, vnni_tile8z_q8_0};
