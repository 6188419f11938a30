/* ops_fast_linear.c - fast twins of the linear, LoRA and DoRA ops: the compositions of
 * ops_linear.inc over lt_gemm (OpenBLAS, split over OpenMP inside a step), where the reference
 * (ops_cpu.c) runs the same compositions over a plain-loop GEMM. The trainer calls these. */
#include "ops_fast.h"

static inline void fast_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                             int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    lt_gemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
            B, ldb, beta, C, ldc);
}

#define LT_LIN(name) lt_fast_##name
#define LT_LIN_GEMM fast_gemm
#include "ops_linear.inc"
