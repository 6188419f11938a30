/* backend_internal.h - pieces the compiled-in backends share (src/backend/ only). */
#ifndef LT_BACKEND_INTERNAL_H
#define LT_BACKEND_INTERNAL_H

#ifdef _OPENMP
#include <omp.h>
#endif
/* the OpenMP team's size and this thread's number (1 and 0 without OpenMP) */
static inline int lt_be_max_threads(void) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}
static inline int lt_be_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#include "loratune/backend.h"
#include "loratune/quant.h"

#ifdef __cplusplus
extern "C" {
#endif
/* matmul_w over be's own weight_f32 and gemm, a block of rows at a time (backend.c) */
lt_status lt_backend_matmul_w_blocks_(const lt_backend *be, const lt_matmul_job *jobs, int nj,
                                      const float *x, int N, float *scratch, int64_t n_scratch);
#ifdef __cplusplus
}
#endif

/* host memory, for the CPU backends: 64-byte aligned lt_aligned_alloc, memmove, memset */
void *lt_host_alloc_(const lt_backend *be, size_t bytes);
void lt_host_free_(const lt_backend *be, void *p);
void lt_host_copy_(const lt_backend *be, void *dst, const void *src, size_t bytes);
void lt_host_zero_(const lt_backend *be, void *dst, size_t bytes);
void lt_host_sync_(const lt_backend *be);
/* F32, F16, BF16 and the GGUF block types (lt_to_f32 converts them all) */
int lt_host_supports_dtype_(const lt_backend *be, lt_dtype dt);

/* inference ops (backend_cpu_infer.c); add_bias / scale_rows are plain loops both CPU
 * backends share */
lt_status lt_cpu_matmul_w_(const lt_backend *be, const lt_matmul_job *jobs, int nj,
                           const float *x, int n, float *scratch, int64_t n_scratch);
int64_t lt_cpu_matmul_w_scratch_(const lt_backend *be, int64_t max_cols);
void lt_cpu_attention_kv_(const lt_backend *be, float *out, const float *q, const float *k,
                          const float *v, int n, int pos0, int H, int KV, int hd, int window,
                          float *scratch, int64_t n_scratch);
int64_t lt_cpu_attention_kv_scratch_(const lt_backend *be, int ctx);
/* lt_cpu_attention_kv_'s AVX2 level (attention_kv_avx2.c): the same bits, 8 lanes wide. */
void lt_attention_kv_avx2_(float *out, const float *q, const float *k, const float *v, int n,
                           int pos0, int H, int KV, int hd, int window, float *scratch,
                           int64_t n_scratch);
/* attention_kv over an fp16 cache (keys / values widened exactly), and fp32 -> fp16 rounding
 * (nearest even, as lt_f32_to_f16), with their AVX2 + F16C levels: the same bits */
void lt_cpu_attention_kv_f16_(const lt_backend *be, float *out, const float *q, const uint16_t *k,
                              const uint16_t *v, int n, int pos0, int H, int KV, int hd,
                              int window, float *scratch, int64_t n_scratch);
void lt_attention_kv_f16_avx2_(float *out, const float *q, const uint16_t *k, const uint16_t *v,
                               int n, int pos0, int H, int KV, int hd, int window, float *scratch,
                               int64_t n_scratch);
void lt_cpu_to_f16_(const lt_backend *be, uint16_t *dst, const float *src, int64_t n);
void lt_to_f16_avx2_(uint16_t *dst, const float *src, int64_t n);
void lt_host_add_bias_(const lt_backend *be, float *y, const float *bias, int n, int C);
void lt_host_scale_rows_(const lt_backend *be, float *y, const float *s, int n, int C);

/* the same loops in both host backends (backend.c) */
lt_status lt_host_rows_f32_(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                            int64_t n, float *scratch, const float **out);
void lt_host_dropout_mask_(const lt_backend *be, float *mask, int64_t n, float p, uint64_t seed);
void lt_host_adamw_(const lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n,
                    const lt_adamw_cfg *cfg, int64_t step);
lt_status lt_host_embedding_fwd_(const lt_backend *be, float *out, const int32_t *tokens,
                                 const float *wte, int N, int C, int V);
void lt_host_embedding_bwd_(const lt_backend *be, float *dwte, const float *dout,
                            const int32_t *tokens, int N, int C);
void lt_host_scale_(const lt_backend *be, float *x, int64_t n, float s);

/* bf16 compute (gemm_bf16.c): the rounding, oneDNN's product (falling back to the loops when
 * oneDNN cannot run it) and the plain loops (the reference backend) */
void lt_host_to_bf16_(uint16_t *dst, const float *src, int64_t n);
void lt_to_bf16_avx512_(uint16_t *dst, const float *src, int64_t n); /* bf16_avx512.c */
void lt_host_gemm_bf16_(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                        int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);
void lt_host_gemm_bf16_loops_(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                              int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);

#endif
