/* ops_fast.h - fast CPU twins of some reference training ops (ops.h, ops_cpu.c).
 *
 * Same signatures and semantics as the lt_op_* they shadow (docs/OPS.md); results agree with
 * the reference within float rounding (tests/train/test_ops_fast.c states the tolerance per
 * op). Where the fast path does not apply (dispatch level below avx2: lt_ops_fast_kernel_level,
 * head_dim not a multiple of 8 or above LT_FAST_MAX_HD) the reference op runs. Internal to the
 * library: the trainer calls these, tests compare them with the reference at every level. */
#ifndef LT_OPS_FAST_H
#define LT_OPS_FAST_H

#include "loratune/ops.h"

#include <cblas.h>

#define LT_FAST_MAX_HD 128

/* C = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm. When OpenBLAS runs single-threaded
 * (the trainer sets that for the length of a step: one thread pool, no OpenBLAS threads spinning
 * against OpenMP's) and OpenMP has several threads and the product is big enough, the larger of
 * M and N is split across OpenMP threads, each calling the single-threaded BLAS on its slice
 * (each element is still computed by one BLAS call over the whole K: the same sums). Otherwise
 * it is cblas_sgemm itself. */
void lt_gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Linear, LoRA and DoRA forward/backward over lt_gemm (ops_fast_linear.c): same signatures and
 * semantics as lt_op_matmul_* / lt_op_lora_* / lt_op_dora_* (ops.h), whose reference runs the
 * same composition over a plain-loop GEMM. */
void lt_fast_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int N,
                        int C, int OC);
void lt_fast_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                        const float *w, int N, int C, int OC);
void lt_fast_lora_fwd(float *y, float *xa, const float *x, const float *W, const float *bias,
                      const float *A, const float *B, const float *mask, int N, int C, int OC,
                      int r, float scale, float *scratch);
void lt_fast_lora_bwd(float *dx, float *dA, float *dB, const float *dy, const float *x,
                      const float *W, const float *A, const float *B, const float *xa,
                      const float *mask, int N, int C, int OC, int r, float scale, float *scratch);
void lt_fast_dora_fwd(float *y, float *wnorm, float *xa, const float *x, const float *W,
                      const float *bias, const float *A, const float *B, const float *mag,
                      const float *mask, int N, int C, int OC, int r, float scale, float *scratch);
void lt_fast_dora_bwd(float *dx, float *dA, float *dB, float *dmag, const float *dy,
                      const float *x, const float *W, const float *A, const float *B,
                      const float *mag, const float *wnorm, const float *xa, const float *mask,
                      int N, int C, int OC, int r, float scale, float *scratch);

/* Makes OpenBLAS single-threaded (so lt_gemm splits work over OpenMP) when OpenMP has more than
 * one thread; returns the previous OpenBLAS thread count for lt_blas_threads_restore. */
int lt_blas_threads_single(void);
void lt_blas_threads_restore(int n);

/* 1 when the attention fast path runs for this head dim (dispatch level avx2 or above,
 * HD % 8 == 0, HD <= LT_FAST_MAX_HD); 0 when the calls below fall back to the reference. */
int lt_fast_attention_supported(int HD);

/* Flash-style attention: query blocks x key blocks, scores by small register-tiled kernels,
 * online softmax with a vectorised exp; the backward recomputes P from lse per block. Forward
 * OpenMP-parallel over (b, head, query block), backward over (b, kv head) like the reference. */
void lt_fast_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window);
void lt_fast_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse,
                           const int32_t *seq, int B, int T, int NH, int NKV, int HD, int window);

/* The same over rows of different lengths laid end to end: row b is positions [off[b],
 * off[b+1]) (off[0] = 0; an empty row is allowed), seq (when given) indexed by position like
 * q; lse holds row b's [NH][len] block from off[b] * NH. off == NULL is the uniform [B][T]
 * layout (T is then the row length; with off it is not used). Without the fast path, the
 * reference op runs row by row. */
void lt_fast_attention_fwd_var(float *out, float *lse, const float *q, const float *k,
                               const float *v, const int32_t *seq, const int32_t *off, int B, int T,
                               int NH, int NKV, int HD, int window);
void lt_fast_attention_bwd_var(float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               const int32_t *seq, const int32_t *off, int B, int T, int NH,
                               int NKV, int HD, int window);

/* The bf16 compute mode's attention (backend.h attention_fwd_bf16 / _bwd_bf16): on a CPU with
 * AVX512-BF16 at dispatch level avx512 and HD % 32 == 0 (lt_fast_attention_bf16_supported),
 * q, k, v, dO, P and dS rounded to bf16 and multiplied by vdpbf16ps (attention_avx512bf16.c);
 * elsewhere the fp32 attention above (nothing gets slower on a CPU without bf16). */
int lt_fast_attention_bf16_supported(int HD);
void lt_fast_attention_fwd_bf16(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int32_t *seq, const int32_t *off, int B,
                                int T, int NH, int NKV, int HD, int window);
void lt_fast_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                const float *k, const float *v, const float *out, const float *lse,
                                const int32_t *seq, const int32_t *off, int B, int T, int NH,
                                int NKV, int HD, int window);

/* Cross-entropy with a vectorised float exp, OpenMP over rows (per-row sums in double). */
lt_status lt_fast_cross_entropy(float *dlogits, lt_ce_stats *stats, const float *logits,
                                const int32_t *targets, int N, int V, int ignore_index,
                                float grad_scale);

/* Elementwise / per-row ops, OpenMP-parallel (rows independent: same result for any thread
 * count), vectorised exp in SwiGLU. */
void lt_fast_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n);
/* Writes (not adds) dgate and dup: the trainer's buffers are fresh per layer. */
void lt_fast_swiglu_bwd_write(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, int64_t n);
void lt_fast_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                         float eps);
void lt_fast_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                         const float *w, const float *rstd, int N, int C);

/* Rotary embedding, rows in parallel (the reference's arithmetic: identical results). */
void lt_fast_rope_fwd(float *out, const float *inp, const int32_t *pos, const float *cos_t,
                      const float *sin_t, int N, int NH, int HD, int interleaved);
void lt_fast_rope_bwd(float *dinp, const float *dout, const int32_t *pos, const float *cos_t,
                      const float *sin_t, int N, int NH, int HD, int interleaved);

/* exp of 8 floats / of a float array (relative error <= 2 ulp; 0 below -87.3). For tests. */
void lt_fast_expf_array(float *y, const float *x, int64_t n);

#endif
