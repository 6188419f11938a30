/* gemm_atb_avx512.c - C = alpha A^T B + beta C for a tall A [K][M] and a skinny B [K][N]
 * (N <= 64), fp32: the LoRA adapters' dB = scale dy^T xa of the bf16 step ([OC][r] summed over
 * the step's rows). OpenBLAS spends most of such a product packing A^T (a transposing copy of
 * the whole dy); here 32 columns of A are two vectors read row by row as stored, each row's
 * 8 values of B broadcast against them, 16 sums in registers. Each output is one fp32 FMA
 * chain over k in order: the same numbers whatever the thread count (tasks are 32-column
 * blocks of C's rows). Compiled with the avx512 level's flags (CMakeLists.txt: files named
 * *_avx512.c); reached only through the CPU backend's gemm when the dispatch level is avx512. */
#include <immintrin.h>
#include <stdint.h>

#include "backend_internal.h"

#if !defined(__AVX512F__)
#error "gemm_atb_avx512.c is compiled with -mavx512f (CMakeLists.txt: files named *_avx512.c)"
#endif

/* t[j][i] = sum_k A[k][i0 + i] B[k][j0 + j] for i < 32 (masks m0, m1), j < nj (<= 8) */
static inline __attribute__((always_inline)) void block(float (*t)[32], const float *A, int lda,
                                                        const float *B, int ldb, int K, int i0,
                                                        int j0, __mmask16 m0, __mmask16 m1,
                                                        const int nj) {
    __m512 c0[8], c1[8];
    for (int j = 0; j < nj; j++)
        c0[j] = c1[j] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const float *a = A + (int64_t)k * lda + i0, *b = B + (int64_t)k * ldb + j0;
        const __m512 a0 = _mm512_maskz_loadu_ps(m0, a), a1 = _mm512_maskz_loadu_ps(m1, a + 16);
        for (int j = 0; j < nj; j++) {
            const __m512 bj = _mm512_set1_ps(b[j]);
            c0[j] = _mm512_fmadd_ps(a0, bj, c0[j]);
            c1[j] = _mm512_fmadd_ps(a1, bj, c1[j]);
        }
    }
    for (int j = 0; j < nj; j++) {
        _mm512_storeu_ps(t[j], c0[j]);
        _mm512_storeu_ps(t[j] + 16, c1[j]);
    }
}

void lt_gemm_atb_avx512_(int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                         int ldb, float beta, float *C, int ldc) {
    const int nb = (M + 31) / 32;
#pragma omp parallel for schedule(static) if ((int64_t)M * N * K >= (1 << 20))
    for (int ib = 0; ib < nb; ib++) {
        const int i0 = ib * 32, ni = M - i0 < 32 ? M - i0 : 32;
        const __mmask16 m0 = ni >= 16 ? 0xffff : (__mmask16)((1u << ni) - 1);
        const __mmask16 m1 = ni >= 32 ? 0xffff : ni <= 16 ? 0 : (__mmask16)((1u << (ni - 16)) - 1);
        for (int j0 = 0; j0 < N; j0 += 8) {
            const int nj = N - j0 < 8 ? N - j0 : 8;
            _Alignas(64) float t[8][32];
            if (nj == 8)
                block(t, A, lda, B, ldb, K, i0, j0, m0, m1, 8);
            else
                for (int j = 0; j < nj; j++) /* a tail column at a time */
                    block(t + j, A, lda, B, ldb, K, i0, j0 + j, m0, m1, 1);
            for (int i = 0; i < ni; i++) {
                float *c = C + (int64_t)(i0 + i) * ldc + j0;
                for (int j = 0; j < nj; j++)
                    c[j] = alpha * t[j][i] + (beta != 0.0f ? beta * c[j] : 0.0f);
            }
        }
    }
}
