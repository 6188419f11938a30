/* backend.h - where the training and inference arithmetic runs: memory and an op table per
 * backend, in the manner of ggml-backend.
 *
 * A backend owns memory (alloc / free / set / get / copy / zero / sync) and implements the ops
 * of ops.h through a function table; a NULL entry is an op the backend does not have
 * (lt_backend_supports). Pointers passed to the ops are the backend's memory: host memory for
 * the CPU backends, device memory for a GPU backend; the host reads and writes it only through
 * set / get. The trainer (src/train/) and the model's forward call nothing else.
 *
 * Backends compiled now:
 *   lt_backend_cpu()  the fast CPU ops (OpenMP, BLAS, run-time dispatched SIMD: hwinfo.h)
 *   lt_backend_ref()  the reference: ops.h's plain loops (no BLAS, no threads, no SIMD), the
 *                     oracle every other backend is checked against (tests/backend/)
 * Both are stateless singletons (safe to use from several threads at once).
 *
 * Op semantics are those of ops.h (shapes, "backward ops ADD into gradients", NULL = not
 * wanted) with these differences, which every backend shares:
 *   - attention takes rows of different lengths laid end to end (off, as
 *     lt_fast_attention_fwd_var in the CPU backend); off NULL is the uniform [B][T] layout;
 *   - swiglu_bwd WRITES dgate and dup (fresh buffers per layer); dup may be dout (in place);
 *   - sumsq returns the sum of squares in double (the global norm is its square root, summed
 *     over tensors); all_finite is 1 when no element is NaN or infinite;
 *   - matmul by storage format: weight_f32 gives rows of a weight as fp32 wherever and however
 *     it is stored (lt_weight_view: F32 in place, F16 / BF16 / GGUF blocks / NF4 dequantized
 *     into the caller's scratch, or rows from the owner's function), so dequantization happens
 *     where the weights live; matmul_w multiplies by such weights a block of rows at a time
 *     (the model's forward: generation on a Q4_1 GGUF never makes an fp32 copy). */
#ifndef LORATUNE_BACKEND_H
#define LORATUNE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "loratune/core.h"
#include "loratune/nf4.h"
#include "loratune/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_OP_GEMM = 0,
    LT_OP_MATMUL,
    LT_OP_MATMUL_W,
    LT_OP_WEIGHT_F32,
    LT_OP_EMBEDDING,
    LT_OP_RMSNORM,
    LT_OP_ROPE,
    LT_OP_ATTENTION,
    LT_OP_SWIGLU,
    LT_OP_CROSS_ENTROPY,
    LT_OP_LORA,
    LT_OP_DORA,
    LT_OP_DROPOUT_MASK,
    LT_OP_ADAMW,
    LT_OP_SUMSQ,
    LT_OP_ALL_FINITE,
    LT_OP_SCALE,
    LT_OP_ADD,
    LT_OP_GATHER_ROWS,
    LT_OP_SCATTER_ROWS,
    LT_OP_ATTENTION_KV,
    LT_OP_ADD_BIAS,
    LT_OP_SCALE_ROWS,
    LT_OP_GEMM_BF16,
    LT_OP_ATTENTION_BF16,
    LT_OP_ATTENTION_KV_F16, /* attention_kv_f16 and to_f16 */
    LT_OP_WEIGHT_BF16,      /* weight_bf16 (for the dtype asked, NF4 through F32 + variant) */
    LT_OP_COUNT
} lt_op;
const char *lt_op_name(lt_op op); /* "gemm", "matmul", ... */

/* A weight matrix [rows][cols] as it is stored. Exactly one of:
 *   nf4 != NULL            NF4 (QLoRA), row-major over rows * cols values;
 *   data != NULL           rows of dtype: F32, F16, BF16 or a GGUF block type (each row whole
 *                          blocks), row-major;
 *   rows_fn != NULL        any other storage (interleaved rows, a lazy file): the owner's
 *                          function converts rows [row0, row0 + n) into scratch (or points *out
 *                          into fp32 rows it has) and returns LT_OK. */
typedef struct {
    int64_t rows, cols;
    lt_dtype dtype;
    const void *data;
    const lt_nf4 *nf4;
    lt_status (*rows_fn)(const void *ctx, int64_t row0, int64_t n, float *scratch,
                         const float **out);
    const void *ctx;
} lt_weight_view;

typedef struct lt_backend lt_backend;

/* One product of matmul_w: y[N][w->rows] = x[N][w->cols] W^T (beta 0), or y += x W^T (beta 1).
 * qact 1 lets the backend run the product as the weight's block format is meant to run: x
 * quantized to 8-bit blocks of 32 (one fp32 scale each) and integer dot products against Q4_0,
 * Q4_1, Q8_0 and Q4_K blocks (the CPU backends: src/backend/qdot.h; docs/BACKEND.md "Quantized
 * products"); results then differ from the fp32 product by the activations' rounding (relative
 * error ~1e-2 of a row's |w| . |x|, see tests/backend). 0 (the default of a {w, y, beta}
 * initializer) keeps the fp32 product; other storage formats ignore it. bf16 1 lets a backend
 * with bf16 products (gemm_bf16) run the product as the bf16 compute mode does: x rounded to
 * bf16, a weight stored as bf16 multiplied as stored (another format rounded to bf16 a block of
 * rows at a time, for 8 or more rows of x), fp32 sums (the CPU backend: oneDNN; relative error
 * ~2^-8 of a row's |w| . |x|); qact takes precedence for the block formats it runs. rowwise 1:
 * an fp32 weight in place is multiplied as converted rows are, each dot product summed in one
 * fixed order whatever N (the CPU backend: rows_dot), so a row of x gets the same bits alone or
 * among others; 0: BLAS, whose sums may depend on N (the adapters' low-rank products of a
 * batched forward set it: batched == alone). */
typedef struct {
    const lt_weight_view *w;
    float *y;
    float beta;
    int qact;
    int bf16;
    int rowwise;
} lt_matmul_job;

/* The op table. Every function takes the backend first. */
typedef struct {
    /* ---- memory ---- */
    void *(*alloc)(const lt_backend *be, size_t bytes); /* 64-byte aligned; NULL when out */
    void (*free)(const lt_backend *be, void *p);          /* NULL is fine */
    void (*set)(const lt_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*get)(const lt_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(const lt_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(const lt_backend *be, void *dst, size_t bytes);
    void (*sync)(const lt_backend *be);
    /* around each trainer step (may be NULL): the CPU backend makes OpenBLAS single-threaded
     * so one OpenMP pool splits every GEMM (unless keep_threads), and step_end restores what
     * step_begin returned */
    int (*step_begin)(const lt_backend *be, int keep_threads);
    void (*step_end)(const lt_backend *be, int token);
    /* 1 when the backend supports weights stored as dt (in lt_weight_view.data) */
    int (*supports_dtype)(const lt_backend *be, lt_dtype dt);

    /* ---- linear algebra ---- */
    /* C[M][N] = alpha op(A) op(B) + beta C, row-major, ta / tb 1 = transposed (cblas_sgemm) */
    void (*gemm)(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
    void (*matmul_fwd)(const lt_backend *be, float *out, const float *inp, const float *w,
                       const float *bias, int N, int C, int OC);
    void (*matmul_bwd)(const lt_backend *be, float *dinp, float *dw, float *dbias,
                       const float *dout, const float *inp, const float *w, int N, int C, int OC);
    /* rows [row0, row0 + n) of w as fp32: *out points into w (F32 data) or at scratch
     * (n * cols floats) holding them converted. */
    lt_status (*weight_f32)(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                            int64_t n, float *scratch, const float **out);
    /* The products jobs[0..nj) (nj <= 4), all reading x[N][C] (C = every job's w->cols), with
     * weights in their storage format: one call, so a backend can run q, k and v (gate and up)
     * in one parallel region. A weight not stored as fp32 is converted a block of rows at a
     * time into scratch (n_scratch floats, split between the backend's threads: size it with
     * matmul_w_scratch), so no whole fp32 copy is made. LT_ERR_ARG when scratch is too small,
     * the weight's own error when its rows cannot be read. */
    lt_status (*matmul_w)(const lt_backend *be, const lt_matmul_job *jobs, int nj, const float *x,
                          int N, float *scratch, int64_t n_scratch);
    int64_t (*matmul_w_scratch)(const lt_backend *be, int64_t max_cols);

    /* ---- the model's ops (ops.h) ---- */
    lt_status (*embedding_fwd)(const lt_backend *be, float *out, const int32_t *tokens,
                               const float *wte, int N, int C, int V);
    void (*embedding_bwd)(const lt_backend *be, float *dwte, const float *dout,
                          const int32_t *tokens, int N, int C);
    void (*rmsnorm_fwd)(const lt_backend *be, float *out, float *rstd, const float *inp,
                        const float *w, int N, int C, float eps);
    void (*rmsnorm_bwd)(const lt_backend *be, float *dinp, float *dw, const float *dout,
                        const float *inp, const float *w, const float *rstd, int N, int C);
    void (*rope_fwd)(const lt_backend *be, float *out, const float *inp, const int32_t *pos,
                     const float *cos_t, const float *sin_t, int N, int NH, int HD,
                     int interleaved);
    void (*rope_bwd)(const lt_backend *be, float *dinp, const float *dout, const int32_t *pos,
                     const float *cos_t, const float *sin_t, int N, int NH, int HD,
                     int interleaved);
    void (*attention_fwd)(const lt_backend *be, float *out, float *lse, const float *q,
                          const float *k, const float *v, const int32_t *seq, const int32_t *off,
                          int B, int T, int NH, int NKV, int HD, int window);
    void (*attention_bwd)(const lt_backend *be, float *dq, float *dk, float *dv,
                          const float *dout, const float *q, const float *k, const float *v,
                          const float *out, const float *lse, const int32_t *seq,
                          const int32_t *off, int B, int T, int NH, int NKV, int HD, int window);
    void (*swiglu_fwd)(const lt_backend *be, float *out, const float *gate, const float *up,
                       int64_t n);
    void (*swiglu_bwd)(const lt_backend *be, float *dgate, float *dup, const float *dout,
                       const float *gate, const float *up, int64_t n);
    lt_status (*cross_entropy)(const lt_backend *be, float *dlogits, lt_ce_stats *stats,
                               const float *logits, const int32_t *targets, int N, int V,
                               int ignore_index, float grad_scale);
    void (*lora_fwd)(const lt_backend *be, float *y, float *xa, const float *x, const float *W,
                     const float *bias, const float *A, const float *B, const float *mask, int N,
                     int C, int OC, int r, float scale, float *scratch);
    void (*lora_bwd)(const lt_backend *be, float *dx, float *dA, float *dB, const float *dy,
                     const float *x, const float *W, const float *A, const float *B,
                     const float *xa, const float *mask, int N, int C, int OC, int r, float scale,
                     float *scratch);
    void (*dora_fwd)(const lt_backend *be, float *y, float *wnorm, float *xa, const float *x,
                     const float *W, const float *bias, const float *A, const float *B,
                     const float *mag, const float *mask, int N, int C, int OC, int r,
                     float scale, float *scratch);
    void (*dora_bwd)(const lt_backend *be, float *dx, float *dA, float *dB, float *dmag,
                     const float *dy, const float *x, const float *W, const float *A,
                     const float *B, const float *mag, const float *wnorm, const float *xa,
                     const float *mask, int N, int C, int OC, int r, float scale,
                     float *scratch);
    /* mask[n] = 0 with probability p, else 1 / (1 - p), from a counter-based stream of seed
     * (the same seed gives the same mask on every backend: lt_dropout_mask_value) */
    void (*dropout_mask)(const lt_backend *be, float *mask, int64_t n, float p, uint64_t seed);

    /* ---- optimizer and reductions ---- */
    void (*adamw)(const lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n,
                  const lt_adamw_cfg *cfg, int64_t step);
    double (*sumsq)(const lt_backend *be, const float *x, int64_t n);
    int (*all_finite)(const lt_backend *be, const float *x, int64_t n);
    void (*scale)(const lt_backend *be, float *x, int64_t n, float s);
    /* y[n] = a[n] + b[n] (y may equal a or b) */
    void (*add)(const lt_backend *be, float *y, const float *a, const float *b, int64_t n);
    /* dst[j][D] = src[idx[j]][D] and dst[idx[j]][D] = src[j][D], j < n (idx: backend memory) */
    void (*gather_rows)(const lt_backend *be, float *dst, const float *src, const int32_t *idx,
                        int n, int D);
    void (*scatter_rows)(const lt_backend *be, float *dst, const float *src, const int32_t *idx,
                         int n, int D);

    /* ---- inference ---- */
    /* Attention over a KV cache: the queries q[N][NH][HD] of positions pos0 .. pos0 + N - 1
     * attend the cached keys / values k, v[pos0 + N][NKV][HD] at positions s <= their own
     * (and pos - s < window when window > 0), scores scaled by 1/sqrt(HD); out[N][NH][HD].
     * scratch: attention_kv_scratch(ctx) floats for a cache of ctx positions. */
    void (*attention_kv)(const lt_backend *be, float *out, const float *q, const float *k,
                         const float *v, int N, int pos0, int NH, int NKV, int HD, int window,
                         float *scratch, int64_t n_scratch);
    int64_t (*attention_kv_scratch)(const lt_backend *be, int ctx);
    /* attention_kv over an fp16 cache (IEEE half): the keys / values widened to fp32 (exact),
     * then attention_kv's operations, so the result is bit for bit attention_kv's on the
     * widened cache; scratch as attention_kv's (LT_OP_ATTENTION_KV_F16: both or neither) */
    void (*attention_kv_f16)(const lt_backend *be, float *out, const float *q, const uint16_t *k,
                             const uint16_t *v, int N, int pos0, int NH, int NKV, int HD,
                             int window, float *scratch, int64_t n_scratch);
    /* dst[n] = src[n] rounded to fp16, nearest even (lt_f32_to_f16; NaN stays NaN) */
    void (*to_f16)(const lt_backend *be, uint16_t *dst, const float *src, int64_t n);
    /* y[N][C] += bias[C] (every row) */
    void (*add_bias)(const lt_backend *be, float *y, const float *bias, int N, int C);
    /* y[N][C] *= s[C] (every row) */
    void (*scale_rows)(const lt_backend *be, float *y, const float *s, int N, int C);

    /* ---- bf16 compute (LT_OP_GEMM_BF16: both or neither) ---- */
    /* dst[n] = src[n] rounded to bf16, nearest even (NaN stays NaN): lt_f32_to_bf16 */
    void (*to_bf16)(const lt_backend *be, uint16_t *dst, const float *src, int64_t n);
    /* C[M][N] = alpha op(A) op(B) + beta C (row-major, ta / tb as gemm) with A and B in bf16:
     * every product and sum in fp32 (as PyTorch's bf16 autocast, C stays fp32); beta 0 does
     * not read C. The CPU backend runs it on oneDNN's matmul (AVX512-BF16 / AMX kernels where
     * the CPU has them); the reference backend in plain loops. */
    void (*gemm_bf16)(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                      const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta, float *C,
                      int ldc);
    /* Optional (LT_OP_WEIGHT_BF16): rows [row0, row0 + n) of w straight into bf16 dst, bit for
     * bit what to_bf16 makes of weight_f32's rows, without the fp32 copy (the bf16 mode's
     * frozen weights in NF4 or a block format, dequantized before each product). A format it
     * does not convert: LT_ERR_UNSUPPORTED with no error recorded (the trainer then goes
     * through weight_f32 and to_bf16). */
    lt_status (*weight_bf16)(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                             int64_t n, uint16_t *dst);

    /* attention_fwd / attention_bwd (same arguments and layouts) as the bf16 compute mode runs
     * it on a device, like autocast's SDPA: q, k, v and dO rounded to bf16, the probabilities
     * and the score gradients rounded to bf16 before their products, every product summed in
     * fp32, softmax statistics and outputs fp32 (relative error ~2^-8). Optional
     * (LT_OP_ATTENTION_BF16; the CUDA backend's tensor-core kernels, the CPU backend's
     * AVX512-BF16 kernels where the CPU has them and the fp32 attention elsewhere): without it
     * the bf16 mode runs attention_fwd / attention_bwd in fp32. */
    void (*attention_fwd_bf16)(const lt_backend *be, float *out, float *lse, const float *q,
                               const float *k, const float *v, const int32_t *seq,
                               const int32_t *off, int B, int T, int NH, int NKV, int HD,
                               int window);
    void (*attention_bwd_bf16)(const lt_backend *be, float *dq, float *dk, float *dv,
                               const float *dout, const float *q, const float *k, const float *v,
                               const float *out, const float *lse, const int32_t *seq,
                               const int32_t *off, int B, int T, int NH, int NKV, int HD,
                               int window);

    /* ---- a device's memory (may be NULL: host memory, which lt_hwinfo reports) ---- */
    /* bytes free now and in all (cudaMemGetInfo); 0 on success, -1 when it cannot tell */
    int (*mem_info)(const lt_backend *be, int64_t *free_bytes, int64_t *total_bytes);
} lt_backend_ops;

struct lt_backend {
    const char *name;         /* "cpu", "ref" */
    const lt_backend_ops *op; /* call as be->op->rmsnorm_fwd(be, ...) */
    void *ctx;                /* the backend's own state (none for the CPU backends) */
    int device;               /* 1: its memory is not the host's (a GPU): the host reaches it only
                                 by set / get; 0 (the CPU backends): host memory */
    const char *desc;         /* what it runs on, e.g. "NVIDIA H100 80GB HBM3 (cuda:0, 79.2
                                 GiB)"; NULL for the CPU backends */
};

const lt_backend *lt_backend_cpu(void);
/* The CPU backends' thread count: OpenMP's for the calling thread and OpenBLAS's, which is
 * process-wide (n <= 0: leave as they are). For front ends (apps/, tests, bench): the library
 * itself never calls it; a run's own count (lt_run_opts.threads) is set per thread. */
void lt_set_num_threads(int n);
const lt_backend *lt_backend_ref(void);
/* The kernel oneDNN picks for the CPU backend's gemm_bf16 of x[M][K] W[N][K]^T on this CPU
 * ("brg:avx512_core_bf16", "brg:avx512_core_amx", "ref:any", ...; "none" when oneDNN cannot
 * make one): for info and benchmarks. A static buffer: not for several threads at once. */
const char *lt_cpu_gemm_bf16_impl(int M, int N, int K);
/* What the CPU backend's attention_fwd_bf16 / _bwd_bf16 run for head dim HD here:
 * "avx512_bf16" (vdpbf16ps kernels) or "f32" (the fp32 attention: no avx512_bf16 at the current
 * dispatch level, or a head dim other than 32 / 64 / 128); for info and benchmarks. */
const char *lt_cpu_attention_bf16_impl(int HD);
/* By name ("cpu", "ref"); NULL for a backend not compiled in. */
const lt_backend *lt_backend_by_name(const char *name);

/* The CUDA backend on GPU `device` (built when CMake found nvcc: -DLT_CUDA=AUTO|ON|OFF).
 * LT_ERR_UNSUPPORTED when loratune was built without CUDA or the machine has no GPU, with a
 * message saying which. Free with lt_backend_cuda_free (safe on NULL). */
lt_status lt_backend_cuda_create(int device, lt_backend **out);
void lt_backend_cuda_free(lt_backend *be);
int lt_backend_cuda_compiled(void); /* 1 when built with CUDA */

/* 1 when the backend has op (its table entry is not NULL); for LT_OP_MATMUL_W and
 * LT_OP_WEIGHT_F32, also that it reads weights stored as dt (ignored for other ops). */
int lt_backend_supports(const lt_backend *be, lt_op op, lt_dtype dt);

/* The dropout stream every backend implements: element i of the mask for seed and p. */
float lt_dropout_mask_value(uint64_t seed, int64_t i, float p);

#ifdef __cplusplus
}
#endif
#endif
