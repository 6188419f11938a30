/* backend_ref.c - the reference backend: ops.h's plain loops (ops_cpu.c; matrix products by
 * lt_op_gemm, no BLAS, no OpenMP, no SIMD kernels of its own), one thread. The oracle the
 * other backends are checked against (tests/backend/test_backend_ops.c); not for speed. */
#include <math.h>
#include <string.h>

#include "backend_internal.h"
#include "qdot.h"


static void ref_matmul_fwd(const lt_backend *be, float *out, const float *inp, const float *w,
                           const float *bias, int N, int C, int OC) {
    lt_op_matmul_fwd(out, inp, w, bias, N, C, OC);
}

static int64_t ref_matmul_w_scratch(const lt_backend *be, int64_t max_cols) {
    return max_cols > 65536 ? max_cols : 65536;
}

/* matmul_w: a job with qact on Q4_0 / Q4_1 / Q8_0 / Q4_K blocks runs qdot.c's scalar twins (each
 * token's x quantized into scratch, then row by row), any other the blocks of backend.c */
static lt_status ref_matmul_w(const lt_backend *be, const lt_matmul_job *jobs, int nj,
                              const float *x, int N, float *scratch, int64_t n_scratch) {
    if (nj < 1 || nj > 4) return lt_error(LT_ERR_ARG, "matmul_w: %d jobs, expected 1..4", nj);
    for (int j = 0; j < nj; j++) {
        const lt_weight_view *w = jobs[j].w;
        const int C = (int)w->cols, nb = C / LT_QK;
        if (!(jobs[j].qact && !w->rows_fn && !w->nf4 && w->data && lt_qdot_supports(w->dtype) &&
              C % LT_QK == 0 && (int64_t)nb * (int64_t)sizeof(lt_q8a) <= n_scratch * 4)) {
            lt_status st = lt_backend_matmul_w_blocks_(be, &jobs[j], 1, x, N, scratch, n_scratch);
            if (st) return st;
            continue;
        }
        const lt_qdot_rows_fn fn = w->dtype == LT_DTYPE_Q4_0   ? lt_qdot_scalar.q4_0
                                   : w->dtype == LT_DTYPE_Q4_1 ? lt_qdot_scalar.q4_1
                                   : w->dtype == LT_DTYPE_Q4_K ? lt_qdot_scalar.q4_k
                                                               : lt_qdot_scalar.q8_0;
        lt_q8a *xq = (lt_q8a *)scratch;
        for (int t = 0; t < N; t++) {
            lt_qdot_quantize(x + (int64_t)t * C, xq, C);
            fn(jobs[j].y + (int64_t)t * w->rows, 1, w->data, (int)w->rows, xq, nb, jobs[j].beta);
        }
    }
    return LT_OK;
}

/* the textbook loop: scores in double, softmax, weighted sum of values; the cache in fp32 (kf,
 * vf) or fp16 (kh, vh) */
#define REF_KV(f, h, at) ((f) ? (double)(f)[at] : (double)lt_f16_to_f32((h)[at]))
static void ref_attention_kv_any(float *out, const float *q, const float *kf, const uint16_t *kh,
                                 const float *vf, const uint16_t *vh, int N, int pos0, int H,
                                 int KV, int hd, int window, float *scratch, int64_t n_scratch) {
    const int QD = H * hd, KD = KV * hd, group = H / KV;
    const double scale = 1.0 / sqrt((double)hd);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            const int pos = pos0 + t, kvh = h / group;
            const int start = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
            const float *qh = q + (int64_t)t * QD + (int64_t)h * hd;
            double mx = -INFINITY, sum = 0;
            for (int j = start; j <= pos; j++) {
                double s = 0;
                for (int i = 0; i < hd; i++)
                    s += (double)qh[i] * REF_KV(kf, kh, (int64_t)j * KD + (int64_t)kvh * hd + i);
                scratch[j] = (float)(s * scale);
                if (scratch[j] > mx) mx = scratch[j];
            }
            for (int j = start; j <= pos; j++)
                sum += exp(scratch[j] - mx);
            float *o = out + (int64_t)t * QD + (int64_t)h * hd;
            for (int i = 0; i < hd; i++) {
                double acc = 0;
                for (int j = start; j <= pos; j++)
                    acc += exp(scratch[j] - mx) / sum *
                           REF_KV(vf, vh, (int64_t)j * KD + (int64_t)kvh * hd + i);
                o[i] = (float)acc;
            }
        }
}

static void ref_attention_kv(const lt_backend *be, float *out, const float *q, const float *k,
                             const float *v, int N, int pos0, int H, int KV, int hd, int window,
                             float *scratch, int64_t n_scratch) {
    ref_attention_kv_any(out, q, k, NULL, v, NULL, N, pos0, H, KV, hd, window, scratch,
                         n_scratch);
}
static void ref_attention_kv_f16(const lt_backend *be, float *out, const float *q,
                                 const uint16_t *k, const uint16_t *v, int N, int pos0, int H,
                                 int KV, int hd, int window, float *scratch, int64_t n_scratch) {
    ref_attention_kv_any(out, q, NULL, k, NULL, v, N, pos0, H, KV, hd, window, scratch,
                         n_scratch);
}
static void ref_to_f16(const lt_backend *be, uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = lt_f32_to_f16(src[i]);
}
static int64_t ref_attention_kv_scratch(const lt_backend *be, int ctx) {
    return ctx;
}

static void ref_gemm(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
    lt_op_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void ref_to_bf16(const lt_backend *be, uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = lt_f32_to_bf16(src[i]);
}
static void ref_gemm_bf16(const lt_backend *be, int ta, int tb, int M, int N, int K, float alpha,
                          const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta,
                          float *C, int ldc) {
    lt_host_gemm_bf16_loops_(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void ref_matmul_bwd(const lt_backend *be, float *dinp, float *dw, float *dbias,
                           const float *dout, const float *inp, const float *w, int N, int C,
                           int OC) {
    lt_op_matmul_bwd(dinp, dw, dbias, dout, inp, w, N, C, OC);
}
static void ref_rmsnorm_fwd(const lt_backend *be, float *out, float *rstd, const float *inp,
                            const float *w, int N, int C, float eps) {
    lt_op_rmsnorm_fwd(out, rstd, inp, w, N, C, eps);
}
static void ref_rmsnorm_bwd(const lt_backend *be, float *dinp, float *dw, const float *dout,
                            const float *inp, const float *w, const float *rstd, int N, int C) {
    lt_op_rmsnorm_bwd(dinp, dw, dout, inp, w, rstd, N, C);
}
static void ref_rope_fwd(const lt_backend *be, float *out, const float *inp, const int32_t *pos,
                         const float *cos_t, const float *sin_t, int N, int NH, int HD, int il) {
    lt_op_rope_fwd(out, inp, pos, cos_t, sin_t, N, NH, HD, il);
}
static void ref_rope_bwd(const lt_backend *be, float *dinp, const float *dout, const int32_t *pos,
                         const float *cos_t, const float *sin_t, int N, int NH, int HD, int il) {
    lt_op_rope_bwd(dinp, dout, pos, cos_t, sin_t, N, NH, HD, il);
}
/* row b of the packed layout: [off[b], off[b+1]) (off NULL: [b*T, (b+1)*T)) */
static int row_span(const int32_t *off, int b, int T, int64_t *start) {
    *start = off ? off[b] : (int64_t)b * T;
    return off ? off[b + 1] - off[b] : T;
}
static void ref_attention_fwd(const lt_backend *be, float *out, float *lse, const float *q,
                              const float *k, const float *v, const int32_t *seq,
                              const int32_t *off, int B, int T, int NH, int NKV, int HD,
                              int window) {
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    for (int b = 0; b < B; b++) {
        int64_t r;
        int len = row_span(off, b, T, &r);
        if (len > 0)
            lt_op_attention_fwd(out + r * qs, lse + r * NH, q + r * qs, k + r * ks, v + r * ks,
                                seq ? seq + r : NULL, 1, len, NH, NKV, HD, window);
    }
}
static void ref_attention_bwd(const lt_backend *be, float *dq, float *dk, float *dv,
                              const float *dout, const float *q, const float *k, const float *v,
                              const float *out, const float *lse, const int32_t *seq,
                              const int32_t *off, int B, int T, int NH, int NKV, int HD,
                              int window) {
    const int64_t qs = (int64_t)NH * HD, ks = (int64_t)NKV * HD;
    for (int b = 0; b < B; b++) {
        int64_t r;
        int len = row_span(off, b, T, &r);
        if (len > 0)
            lt_op_attention_bwd(dq + r * qs, dk + r * ks, dv + r * ks, dout + r * qs, q + r * qs,
                                k + r * ks, v + r * ks, out + r * qs, lse + r * NH,
                                seq ? seq + r : NULL, 1, len, NH, NKV, HD, window);
    }
}
static void ref_swiglu_fwd(const lt_backend *be, float *out, const float *gate, const float *up,
                           int64_t n) {
    lt_op_swiglu_fwd(out, gate, up, n);
}
static void ref_swiglu_bwd(const lt_backend *be, float *dgate, float *dup, const float *dout,
                           const float *gate, const float *up, int64_t n) {
    /* the backend op writes, and dup may be dout: lt_op_swiglu_bwd (which adds) one element
     * at a time into zeros, dout's element read before dup's is written */
    for (int64_t i = 0; i < n; i++) {
        float dg = 0, du = 0, d = dout[i];
        lt_op_swiglu_bwd(&dg, &du, &d, gate + i, up + i, 1);
        dgate[i] = dg, dup[i] = du;
    }
}
static lt_status ref_cross_entropy(const lt_backend *be, float *dlogits, lt_ce_stats *stats,
                                   const float *logits, const int32_t *targets, int N, int V,
                                   int ignore_index, float grad_scale) {
    return lt_op_cross_entropy(dlogits, stats, logits, targets, N, V, ignore_index, grad_scale);
}
static void ref_lora_fwd(const lt_backend *be, float *y, float *xa, const float *x, const float *W,
                         const float *bias, const float *A, const float *B, const float *mask,
                         int N, int C, int OC, int r, float scale, float *scratch) {
    lt_op_lora_fwd(y, xa, x, W, bias, A, B, mask, N, C, OC, r, scale, scratch);
}
static void ref_lora_bwd(const lt_backend *be, float *dx, float *dA, float *dB, const float *dy,
                         const float *x, const float *W, const float *A, const float *B,
                         const float *xa, const float *mask, int N, int C, int OC, int r,
                         float scale, float *scratch) {
    lt_op_lora_bwd(dx, dA, dB, dy, x, W, A, B, xa, mask, N, C, OC, r, scale, scratch);
}
static void ref_dora_fwd(const lt_backend *be, float *y, float *wnorm, float *xa, const float *x,
                         const float *W, const float *bias, const float *A, const float *B,
                         const float *mag, const float *mask, int N, int C, int OC, int r,
                         float scale, float *scratch) {
    lt_op_dora_fwd(y, wnorm, xa, x, W, bias, A, B, mag, mask, N, C, OC, r, scale, scratch);
}
static void ref_dora_bwd(const lt_backend *be, float *dx, float *dA, float *dB, float *dmag,
                         const float *dy, const float *x, const float *W, const float *A,
                         const float *B, const float *mag, const float *wnorm, const float *xa,
                         const float *mask, int N, int C, int OC, int r, float scale,
                         float *scratch) {
    lt_op_dora_bwd(dx, dA, dB, dmag, dy, x, W, A, B, mag, wnorm, xa, mask, N, C, OC, r, scale,
                   scratch);
}
static double ref_sumsq(const lt_backend *be, const float *x, int64_t n) {
    const float *bufs[1] = {x};
    double nr = lt_op_global_norm(bufs, &n, 1);
    return nr * nr;
}
static int ref_all_finite(const lt_backend *be, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}
static void ref_add(const lt_backend *be, float *y, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}
static void ref_gather_rows(const lt_backend *be, float *dst, const float *src, const int32_t *idx,
                            int n, int D) {
    for (int j = 0; j < n; j++)
        for (int c = 0; c < D; c++)
            dst[(int64_t)j * D + c] = src[(int64_t)idx[j] * D + c];
}
static void ref_scatter_rows(const lt_backend *be, float *dst, const float *src,
                             const int32_t *idx, int n, int D) {
    for (int j = 0; j < n; j++)
        for (int c = 0; c < D; c++)
            dst[(int64_t)idx[j] * D + c] = src[(int64_t)j * D + c];
}

static const lt_backend_ops ref_ops = {
    .alloc = lt_host_alloc_,
    .free = lt_host_free_,
    .set = lt_host_copy_,
    .get = lt_host_copy_,
    .copy = lt_host_copy_,
    .zero = lt_host_zero_,
    .sync = lt_host_sync_,
    .supports_dtype = lt_host_supports_dtype_,
    .gemm = ref_gemm,
    .to_bf16 = ref_to_bf16,
    .gemm_bf16 = ref_gemm_bf16,
    .matmul_fwd = ref_matmul_fwd,
    .matmul_bwd = ref_matmul_bwd,
    .weight_f32 = lt_host_rows_f32_,
    .matmul_w = ref_matmul_w,
    .matmul_w_scratch = ref_matmul_w_scratch,
    .embedding_fwd = lt_host_embedding_fwd_,
    .embedding_bwd = lt_host_embedding_bwd_,
    .rmsnorm_fwd = ref_rmsnorm_fwd,
    .rmsnorm_bwd = ref_rmsnorm_bwd,
    .rope_fwd = ref_rope_fwd,
    .rope_bwd = ref_rope_bwd,
    .attention_fwd = ref_attention_fwd,
    .attention_bwd = ref_attention_bwd,
    .swiglu_fwd = ref_swiglu_fwd,
    .swiglu_bwd = ref_swiglu_bwd,
    .cross_entropy = ref_cross_entropy,
    .lora_fwd = ref_lora_fwd,
    .lora_bwd = ref_lora_bwd,
    .dora_fwd = ref_dora_fwd,
    .dora_bwd = ref_dora_bwd,
    .dropout_mask = lt_host_dropout_mask_,
    .adamw = lt_host_adamw_,
    .sumsq = ref_sumsq,
    .all_finite = ref_all_finite,
    .scale = lt_host_scale_,
    .add = ref_add,
    .gather_rows = ref_gather_rows,
    .scatter_rows = ref_scatter_rows,
    .attention_kv = ref_attention_kv,
    .attention_kv_scratch = ref_attention_kv_scratch,
    .attention_kv_f16 = ref_attention_kv_f16,
    .to_f16 = ref_to_f16,
    .add_bias = lt_host_add_bias_,
    .scale_rows = lt_host_scale_rows_,
};

static const lt_backend ref_backend = {"ref", &ref_ops, NULL, 0, NULL};

const lt_backend *lt_backend_ref(void) {
    return &ref_backend;
}
