/* backend.c - what every backend shares: op names, lt_backend_supports, lookup by name and the
 * dropout stream (backend.h). */
#include "loratune/backend.h"

#include "backend_internal.h"
#include "loratune/quant.h"

#include <string.h>

/* ---- host memory (both CPU backends) ------------------------------------------------------ */
void *lt_host_alloc_(const lt_backend *be, size_t bytes) {
    size_t sz = (bytes + 63) & ~(size_t)63;
    return lt_aligned_alloc(64, sz ? sz : 64);
}
void lt_host_free_(const lt_backend *be, void *p) {
    lt_free(p);
}
void lt_host_copy_(const lt_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
void lt_host_zero_(const lt_backend *be, void *dst, size_t bytes) {
    if (bytes) memset(dst, 0, bytes);
}
void lt_host_sync_(const lt_backend *be) {
}

int lt_host_supports_dtype_(const lt_backend *be, lt_dtype dt) {
    switch (dt) {
    case LT_DTYPE_F32:
    case LT_DTYPE_F16:
    case LT_DTYPE_BF16:
    case LT_DTYPE_Q4_0:
    case LT_DTYPE_Q4_1:
    case LT_DTYPE_Q5_0:
    case LT_DTYPE_Q5_1:
    case LT_DTYPE_Q8_0:
    case LT_DTYPE_Q2_K:
    case LT_DTYPE_Q3_K:
    case LT_DTYPE_Q4_K:
    case LT_DTYPE_Q5_K:
    case LT_DTYPE_Q6_K:
    case LT_DTYPE_Q8_K: return 1;
    default: return 0;
    }
}

/* Rows [row0, row0 + n) of w as fp32, converted serially (the reference's weight_f32; the CPU
 * backend's block-wise matmul_w calls it from each thread): *out points into fp32 data, else
 * at scratch holding the rows. */
lt_status lt_host_rows_f32_(const lt_backend *be, const lt_weight_view *w, int64_t row0,
                            int64_t n, float *scratch, const float **out) {
    if (w->rows_fn) return w->rows_fn(w->ctx, row0, n, scratch, out);
    const int64_t cols = w->cols;
    if (w->nf4) {
        lt_nf4_dequantize(w->nf4, row0 * cols, n * cols, scratch);
        *out = scratch;
        return LT_OK;
    }
    if (w->dtype == LT_DTYPE_F32) {
        *out = (const float *)w->data + row0 * cols;
        return LT_OK;
    }
    if (!lt_host_supports_dtype_(be, w->dtype))
        return lt_error(LT_ERR_UNSUPPORTED, "%s backend: weights stored as %s", be->name,
                        lt_dtype_name(w->dtype));
    const int64_t rb = lt_dtype_nbytes(w->dtype, cols);
    const char *src = (const char *)w->data + row0 * rb;
    for (int64_t r = 0; r < n; r++)
        lt_to_f32(w->dtype, src + r * rb, scratch + r * cols, cols);
    *out = scratch;
    return LT_OK;
}

/* ---- ops the host backends share (the same loops on both) ---------------------------------- */
void lt_host_dropout_mask_(const lt_backend *be, float *mask, int64_t n, float p, uint64_t seed) {
    for (int64_t i = 0; i < n; i++)
        mask[i] = lt_dropout_mask_value(seed, i, p);
}
void lt_host_adamw_(const lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n,
                    const lt_adamw_cfg *cfg, int64_t step) {
    lt_op_adamw_step(p, g, m, v, n, cfg, step);
}
lt_status lt_host_embedding_fwd_(const lt_backend *be, float *out, const int32_t *tokens,
                                 const float *wte, int N, int C, int V) {
    return lt_op_embedding_fwd(out, tokens, wte, N, C, V);
}
void lt_host_embedding_bwd_(const lt_backend *be, float *dwte, const float *dout,
                            const int32_t *tokens, int N, int C) {
    lt_op_embedding_bwd(dwte, dout, tokens, N, C);
}
void lt_host_scale_(const lt_backend *be, float *x, int64_t n, float s) {
    lt_op_scale(x, n, s);
}

/* matmul_w over any backend's weight_f32 and gemm: each job's rows converted a block at a time
 * (as many rows as scratch holds), then multiplied (the reference and the CUDA backend) */
lt_status lt_backend_matmul_w_blocks_(const lt_backend *be, const lt_matmul_job *jobs, int nj,
                                      const float *x, int N, float *scratch, int64_t n_scratch) {
    if (nj < 1 || nj > 4) return lt_error(LT_ERR_ARG, "matmul_w: %d jobs, expected 1..4", nj);
    for (int j = 0; j < nj; j++) {
        const lt_weight_view *w = jobs[j].w;
        const int C = (int)w->cols, OC = (int)w->rows;
        const int64_t per = n_scratch / C;
        if (per < 1)
            return lt_error(LT_ERR_ARG, "matmul_w: scratch of %lld floats is less than a row of %d",
                            (long long)n_scratch, C);
        for (int64_t r0 = 0; r0 < OC; r0 += per) {
            const int64_t nr = OC - r0 < per ? OC - r0 : per;
            const float *W;
            lt_status st = be->op->weight_f32(be, w, r0, nr, scratch, &W);
            if (st) return st;
            be->op->gemm(be, 0, 1, N, (int)nr, C, 1.0f, x, C, W, C, jobs[j].beta, jobs[j].y + r0,
                         OC);
        }
    }
    return LT_OK;
}

static const char *const op_names[LT_OP_COUNT] = {
    [LT_OP_GEMM] = "gemm",
    [LT_OP_MATMUL] = "matmul",
    [LT_OP_MATMUL_W] = "matmul_w",
    [LT_OP_WEIGHT_F32] = "weight_f32",
    [LT_OP_EMBEDDING] = "embedding",
    [LT_OP_RMSNORM] = "rmsnorm",
    [LT_OP_ROPE] = "rope",
    [LT_OP_ATTENTION] = "attention",
    [LT_OP_SWIGLU] = "swiglu",
    [LT_OP_CROSS_ENTROPY] = "cross_entropy",
    [LT_OP_LORA] = "lora",
    [LT_OP_DORA] = "dora",
    [LT_OP_DROPOUT_MASK] = "dropout_mask",
    [LT_OP_ADAMW] = "adamw",
    [LT_OP_SUMSQ] = "sumsq",
    [LT_OP_ALL_FINITE] = "all_finite",
    [LT_OP_SCALE] = "scale",
    [LT_OP_ADD] = "add",
    [LT_OP_GATHER_ROWS] = "gather_rows",
    [LT_OP_SCATTER_ROWS] = "scatter_rows",
    [LT_OP_ATTENTION_KV] = "attention_kv",
    [LT_OP_ADD_BIAS] = "add_bias",
    [LT_OP_SCALE_ROWS] = "scale_rows",
    [LT_OP_GEMM_BF16] = "gemm_bf16",
    [LT_OP_ATTENTION_BF16] = "attention_bf16",
    [LT_OP_ATTENTION_KV_F16] = "attention_kv_f16",
    [LT_OP_WEIGHT_BF16] = "weight_bf16",
};

const char *lt_op_name(lt_op op) {
    return (unsigned)op < LT_OP_COUNT ? op_names[op] : "?";
}

int lt_backend_supports(const lt_backend *be, lt_op op, lt_dtype dt) {
    const lt_backend_ops *o = be->op;
    switch (op) {
    case LT_OP_GEMM: return o->gemm != NULL;
    case LT_OP_MATMUL: return o->matmul_fwd && o->matmul_bwd;
    case LT_OP_MATMUL_W:
        return o->matmul_w && o->matmul_w_scratch && o->supports_dtype && o->supports_dtype(be, dt);
    case LT_OP_WEIGHT_F32: return o->weight_f32 && o->supports_dtype && o->supports_dtype(be, dt);
    case LT_OP_EMBEDDING: return o->embedding_fwd && o->embedding_bwd;
    case LT_OP_RMSNORM: return o->rmsnorm_fwd && o->rmsnorm_bwd;
    case LT_OP_ROPE: return o->rope_fwd && o->rope_bwd;
    case LT_OP_ATTENTION: return o->attention_fwd && o->attention_bwd;
    case LT_OP_SWIGLU: return o->swiglu_fwd && o->swiglu_bwd;
    case LT_OP_CROSS_ENTROPY: return o->cross_entropy != NULL;
    case LT_OP_LORA: return o->lora_fwd && o->lora_bwd;
    case LT_OP_DORA: return o->dora_fwd && o->dora_bwd;
    case LT_OP_DROPOUT_MASK: return o->dropout_mask != NULL;
    case LT_OP_ADAMW: return o->adamw != NULL;
    case LT_OP_SUMSQ: return o->sumsq != NULL;
    case LT_OP_ALL_FINITE: return o->all_finite != NULL;
    case LT_OP_SCALE: return o->scale != NULL;
    case LT_OP_ADD: return o->add != NULL;
    case LT_OP_GATHER_ROWS: return o->gather_rows != NULL;
    case LT_OP_SCATTER_ROWS: return o->scatter_rows != NULL;
    case LT_OP_ATTENTION_KV: return o->attention_kv && o->attention_kv_scratch;
    case LT_OP_ADD_BIAS: return o->add_bias != NULL;
    case LT_OP_SCALE_ROWS: return o->scale_rows != NULL;
    case LT_OP_GEMM_BF16: return o->to_bf16 && o->gemm_bf16;
    case LT_OP_ATTENTION_BF16: return o->attention_fwd_bf16 && o->attention_bwd_bf16;
    case LT_OP_ATTENTION_KV_F16:
        return o->attention_kv_f16 && o->to_f16 && o->attention_kv_scratch;
    case LT_OP_WEIGHT_BF16:
        return o->weight_bf16 && o->supports_dtype && o->supports_dtype(be, dt);
    default: return 0;
    }
}

const lt_backend *lt_backend_by_name(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "cpu")) return lt_backend_cpu();
    if (!strcmp(name, "ref")) return lt_backend_ref();
    return NULL;
}

/* splitmix64 of a counter: element i of the stream of seed, a 24-bit uniform in [0, 1) */
float lt_dropout_mask_value(uint64_t seed, int64_t i, float p) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float u = (float)(z >> 40) * (1.0f / 16777216.0f);
    return u < p ? 0.0f : 1.0f / (1.0f - p);
}

#if !LT_CUDA
/* built without CUDA (no nvcc, or -DLT_CUDA=OFF): the CUDA backend is absent, and says so */
lt_status lt_backend_cuda_create(int device, lt_backend **out) {
    *out = NULL;
    return lt_error(LT_ERR_UNSUPPORTED, "cuda backend: loratune was built without CUDA "
                                        "(configure with -DLT_CUDA=ON where nvcc is installed)");
}
void lt_backend_cuda_free(lt_backend *be) {
    (void)be;
}
int lt_backend_cuda_compiled(void) {
    return 0;
}
#endif
