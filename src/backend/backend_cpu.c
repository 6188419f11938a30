/* backend_cpu.c - the CPU backend: host memory and the fast CPU ops (ops_fast.h: OpenMP over
 * one thread pool, BLAS through lt_gemm, SIMD kernels chosen at run time). Stateless. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "loratune/backend.h"
#include "backend_internal.h"
#include "ops_fast.h"

/* one thread pool for the step: OpenBLAS single-threaded, lt_gemm splits over OpenMP */
static int cpu_step_begin(const lt_backend *be, int keep_threads) {
    return keep_threads ? -1 : lt_blas_threads_single();
}
static void cpu_step_end(const lt_backend *be, int token) {
    if (token >= 0) lt_blas_threads_restore(token);
}

/* ---- weights in their storage format ------------------------------------------------------- */
/* Conversions run in blocks over OpenMP threads; each element is a pure function of its block,
 * so the thread count never changes a result. */
static lt_status cpu_weight_f32(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                                int64_t n, float *scratch, const float **out) {
    if (w->rows_fn) return w->rows_fn(w->ctx, row0, n, scratch, out);
    const int64_t cols = w->cols, cnt = n * cols, chunk = 64 * 1024;
    if (w->nf4) { /* 64 weights per NF4 block; any split works */
#pragma omp parallel for schedule(static) if (cnt > 65536)
        for (int64_t s = 0; s < cnt; s += chunk)
            lt_nf4_dequantize(w->nf4, row0 * cols + s, cnt - s < chunk ? cnt - s : chunk,
                              scratch + s);
        *out = scratch;
        return LT_OK;
    }
    if (w->dtype == LT_DTYPE_F32) {
        *out = (const float *)w->data + row0 * cols;
        return LT_OK;
    }
    if (!lt_host_supports_dtype_(be, w->dtype))
        return lt_error(LT_ERR_UNSUPPORTED, "cpu backend: weights stored as %s",
                        lt_dtype_name(w->dtype));
    const lt_dtype dt = w->dtype;
    const char *src = (const char *)w->data + lt_dtype_nbytes(dt, row0 * cols);
    if (lt_dtype_block_elems(dt) == 1) { /* elementwise */
#pragma omp parallel for schedule(static) if (cnt > chunk)
        for (int64_t s = 0; s < cnt; s += chunk)
            lt_to_f32(dt, src + lt_dtype_nbytes(dt, s), scratch + s,
                      cnt - s < chunk ? cnt - s : chunk);
    } else { /* rows of whole blocks */
        const int64_t rb = lt_dtype_nbytes(dt, cols);
#pragma omp parallel for schedule(static) if (cnt > chunk)
        for (int64_t r = 0; r < n; r++)
            lt_to_f32(dt, src + r * rb, scratch + r * cols, cols);
    }
    *out = scratch;
    return LT_OK;
}

/* ---- ops ------------------------------------------------------------------------------------ */
static void cpu_gemm(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
    lt_gemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
            B, ldb, beta, C, ldc);
}
static void cpu_to_bf16(const lt_backend *be, uint16_t *dst, const float *src, int64_t n) {
    lt_host_to_bf16_(dst, src, n);
}
static void cpu_gemm_bf16(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                          const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta,
                          float *C, int ldc) {
    lt_host_gemm_bf16_(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void cpu_matmul_fwd(const lt_backend *be, float *out, const float *inp, const float *w,
                           const float *bias, int N, int C, int OC) {
    lt_fast_matmul_fwd(out, inp, w, bias, N, C, OC);
}
static void cpu_matmul_bwd(const lt_backend *be, float *dinp, float *dw, float *dbias,
                           const float *dout, const float *inp, const float *w, int N, int C,
                           int OC) {
    lt_fast_matmul_bwd(dinp, dw, dbias, dout, inp, w, N, C, OC);
}
static void cpu_rmsnorm_fwd(const lt_backend *be, float *out, float *rstd, const float *inp,
                            const float *w, int N, int C, float eps) {
    lt_fast_rmsnorm_fwd(out, rstd, inp, w, N, C, eps);
}
static void cpu_rmsnorm_bwd(const lt_backend *be, float *dinp, float *dw, const float *dout,
                            const float *inp, const float *w, const float *rstd, int N, int C) {
    lt_fast_rmsnorm_bwd(dinp, dw, dout, inp, w, rstd, N, C);
}
static void cpu_rope_fwd(const lt_backend *be, float *out, const float *inp, const int32_t *pos,
                         const float *cos_t, const float *sin_t, int N, int NH, int HD, int il) {
    lt_fast_rope_fwd(out, inp, pos, cos_t, sin_t, N, NH, HD, il);
}
static void cpu_rope_bwd(const lt_backend *be, float *dinp, const float *dout, const int32_t *pos,
                         const float *cos_t, const float *sin_t, int N, int NH, int HD, int il) {
    lt_fast_rope_bwd(dinp, dout, pos, cos_t, sin_t, N, NH, HD, il);
}
static void cpu_attention_fwd(const lt_backend *be, float *out, float *lse, const float *q,
                              const float *k, const float *v, const int32_t *seq,
                              const int32_t *off, int B, int T, int NH, int NKV, int HD,
                              int window) {
    lt_fast_attention_fwd_var(out, lse, q, k, v, seq, off, B, T, NH, NKV, HD, window);
}
static void cpu_attention_bwd(const lt_backend *be, float *dq, float *dk, float *dv,
                              const float *dout, const float *q, const float *k, const float *v,
                              const float *out, const float *lse, const int32_t *seq,
                              const int32_t *off, int B, int T, int NH, int NKV, int HD,
                              int window) {
    lt_fast_attention_bwd_var(dq, dk, dv, dout, q, k, v, out, lse, seq, off, B, T, NH, NKV, HD,
                              window);
}
static void cpu_attention_fwd_bf16(const lt_backend *be, float *out, float *lse, const float *q,
                                   const float *k, const float *v, const int32_t *seq,
                                   const int32_t *off, int B, int T, int NH, int NKV, int HD,
                                   int window) {
    lt_fast_attention_fwd_bf16(out, lse, q, k, v, seq, off, B, T, NH, NKV, HD, window);
}
static void cpu_attention_bwd_bf16(const lt_backend *be, float *dq, float *dk, float *dv,
                                   const float *dout, const float *q, const float *k,
                                   const float *v, const float *out, const float *lse,
                                   const int32_t *seq, const int32_t *off, int B, int T, int NH,
                                   int NKV, int HD, int window) {
    lt_fast_attention_bwd_bf16(dq, dk, dv, dout, q, k, v, out, lse, seq, off, B, T, NH, NKV, HD,
                               window);
}
const char *lt_cpu_attention_bf16_impl(int HD) {
    return lt_fast_attention_bf16_supported(HD) ? "avx512_bf16" : "f32";
}
static void cpu_swiglu_fwd(const lt_backend *be, float *out, const float *gate, const float *up,
                           int64_t n) {
    lt_fast_swiglu_fwd(out, gate, up, n);
}
static void cpu_swiglu_bwd(const lt_backend *be, float *dgate, float *dup, const float *dout,
                           const float *gate, const float *up, int64_t n) {
    lt_fast_swiglu_bwd_write(dgate, dup, dout, gate, up, n);
}
static lt_status cpu_cross_entropy(const lt_backend *be, float *dlogits, lt_ce_stats *stats,
                                   const float *logits, const int32_t *targets, int N, int V,
                                   int ignore_index, float grad_scale) {
    return lt_fast_cross_entropy(dlogits, stats, logits, targets, N, V, ignore_index, grad_scale);
}
static void cpu_lora_fwd(const lt_backend *be, float *y, float *xa, const float *x, const float *W,
                         const float *bias, const float *A, const float *B, const float *mask,
                         int N, int C, int OC, int r, float scale, float *scratch) {
    lt_fast_lora_fwd(y, xa, x, W, bias, A, B, mask, N, C, OC, r, scale, scratch);
}
static void cpu_lora_bwd(const lt_backend *be, float *dx, float *dA, float *dB, const float *dy,
                         const float *x, const float *W, const float *A, const float *B,
                         const float *xa, const float *mask, int N, int C, int OC, int r,
                         float scale, float *scratch) {
    lt_fast_lora_bwd(dx, dA, dB, dy, x, W, A, B, xa, mask, N, C, OC, r, scale, scratch);
}
static void cpu_dora_fwd(const lt_backend *be, float *y, float *wnorm, float *xa, const float *x,
                         const float *W, const float *bias, const float *A, const float *B,
                         const float *mag, const float *mask, int N, int C, int OC, int r,
                         float scale, float *scratch) {
    lt_fast_dora_fwd(y, wnorm, xa, x, W, bias, A, B, mag, mask, N, C, OC, r, scale, scratch);
}
static void cpu_dora_bwd(const lt_backend *be, float *dx, float *dA, float *dB, float *dmag,
                         const float *dy, const float *x, const float *W, const float *A,
                         const float *B, const float *mag, const float *wnorm, const float *xa,
                         const float *mask, int N, int C, int OC, int r, float scale,
                         float *scratch) {
    lt_fast_dora_bwd(dx, dA, dB, dmag, dy, x, W, A, B, mag, wnorm, xa, mask, N, C, OC, r, scale,
                     scratch);
}
static double cpu_sumsq(const lt_backend *be, const float *x, int64_t n) {
    double s = 0; /* one order, one thread: the same sum on every run */
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}
static int cpu_all_finite(const lt_backend *be, const float *x, int64_t n) {
    uint32_t bad = 0; /* exponent all ones: inf or NaN (integer ops vectorise) */
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}
/* memset over the team for a large buffer (a step's gradient buffers are 1-13 MB: one thread
 * writing them would keep the other waiting) */
static void cpu_zero(const lt_backend *be, void *dst, size_t bytes) {
    const size_t blk = (size_t)1 << 20;
    if (bytes < 4 * blk) {
        lt_host_zero_(be, dst, bytes);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes; i += blk)
        memset((char *)dst + i, 0, bytes - i < blk ? bytes - i : blk);
}
static void cpu_add(const lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}
static void cpu_gather_rows(const lt_backend *be, float *dst, const float *src, const int32_t *idx,
                            int n, int D) {
    for (int j = 0; j < n; j++)
        memcpy(dst + (int64_t)j * D, src + (int64_t)idx[j] * D, sizeof(float) * (size_t)D);
}
static void cpu_scatter_rows(const lt_backend *be, float *dst, const float *src,
                             const int32_t *idx, int n, int D) {
    for (int j = 0; j < n; j++)
        memcpy(dst + (int64_t)idx[j] * D, src + (int64_t)j * D, sizeof(float) * (size_t)D);
}

static const lt_backend_ops cpu_ops = {
    .alloc = lt_host_alloc_,
    .free = lt_host_free_,
    .set = lt_host_copy_,
    .get = lt_host_copy_,
    .copy = lt_host_copy_,
    .zero = cpu_zero,
    .sync = lt_host_sync_,
    .step_begin = cpu_step_begin,
    .step_end = cpu_step_end,
    .supports_dtype = lt_host_supports_dtype_,
    .gemm = cpu_gemm,
    .to_bf16 = cpu_to_bf16,
    .gemm_bf16 = cpu_gemm_bf16,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .weight_f32 = cpu_weight_f32,
    .matmul_w = lt_cpu_matmul_w_,
    .matmul_w_scratch = lt_cpu_matmul_w_scratch_,
    .embedding_fwd = lt_host_embedding_fwd_,
    .embedding_bwd = lt_host_embedding_bwd_,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .attention_fwd_bf16 = cpu_attention_fwd_bf16,
    .attention_bwd_bf16 = cpu_attention_bwd_bf16,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .cross_entropy = cpu_cross_entropy,
    .lora_fwd = cpu_lora_fwd,
    .lora_bwd = cpu_lora_bwd,
    .dora_fwd = cpu_dora_fwd,
    .dora_bwd = cpu_dora_bwd,
    .dropout_mask = lt_host_dropout_mask_,
    .adamw = lt_host_adamw_,
    .sumsq = cpu_sumsq,
    .all_finite = cpu_all_finite,
    .scale = lt_host_scale_,
    .add = cpu_add,
    .gather_rows = cpu_gather_rows,
    .scatter_rows = cpu_scatter_rows,
    .attention_kv = lt_cpu_attention_kv_,
    .attention_kv_scratch = lt_cpu_attention_kv_scratch_,
    .attention_kv_f16 = lt_cpu_attention_kv_f16_,
    .to_f16 = lt_cpu_to_f16_,
    .add_bias = lt_host_add_bias_,
    .scale_rows = lt_host_scale_rows_,
};

void lt_set_num_threads(int n) {
    if (n <= 0) return;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

static const lt_backend cpu_backend = {"cpu", &cpu_ops, NULL, 0, NULL};

const lt_backend *lt_backend_cpu(void) {
    return &cpu_backend;
}
