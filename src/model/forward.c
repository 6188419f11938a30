/* forward.c - the forward pass of a Llama-family decoder with a KV cache, for generation,
 * over the weight provider and the backend (backend.h): every op runs through the cache's
 * backend (rmsnorm, rope, attention over the cache, SwiGLU, products), every weight is read as
 * a view of the provider (lt_model_weight_bview), so the same code runs a model loaded whole
 * (fp32, multiplied in place) or lazily (the weights as stored in the mapped file: 16-bit, GGUF
 * blocks -- converted a block of rows at a time by the backend's matmul_w, never as a whole
 * fp32 copy).
 *
 * Per layer, for a batch of B consecutive positions:
 *   xb = rmsnorm(x) * attn_norm;  q,k,v = xb Wq^T (+bq), xb Wk^T (+bk), xb Wv^T (+bv)
 *   rotary on q,k (HF half-split: x*cos + rotate_half(x)*sin); k,v written into the cache
 *   causal GQA attention over cached positions (query head h reads kv head h / (H/KV))
 *   x += att Wo^T;  xb = rmsnorm(x) * ffn_norm;  x += (silu(xb Wg^T) * (xb Wu^T)) Wd^T
 * then logits = rmsnorm(x) * out_norm  lm_head^T.
 * With a delta (an adapter, lt_model_delta), every adapted linear adds its low-rank product,
 * and for DoRA rescales the rows (see linears()).
 * Every buffer lives in lt_kv_cache and is allocated once in lt_kv_cache_create.
 *
 * On a device backend (a cache from lt_kv_cache_create_dev) the same code runs with every buffer
 * in the device's memory and every weight a view of the lt_model_dev copy (model_dev.c) instead
 * of the provider; the host computes only the rotary cos / sin rows of a chunk (set to the
 * device) and gets back only the logits asked for, through the cache's device logits buffer.
 * The host path (dev NULL) is the CPU path as it was, op for op. */
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model_internal.h"

#define OP(name, ...) kv->be->op->name(kv->be, __VA_ARGS__)

static size_t page_size(void) {
    const long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

struct lt_kv_cache {
    const lt_backend *be;    /* where the ops run (the CPU backend, or dev's) */
    const lt_model_dev *dev; /* NULL: host memory, weights from the provider; else the device
                                copy of the weights, and every buffer below in be's memory */
    float *hcos, *hsin;      /* (B, hd/2) the host's rotary rows: cosb / sinb, or a host buffer
                                set to them (dev) */
    float *dlogits;          /* dev: (B, V) logits on the device, before they are got */
    int ctx, max_batch;
    int qact; /* 1: matmul_w may quantize activations (lt_kv_cache_set_qact) */
    int bf16; /* 1: matmul_w may run bf16 products (lt_kv_cache_set_bf16) */
    int n_layers, kv_dim, dim, q_dim, ffn_dim, half;
    lt_kv_type type;    /* LT_KV_F32: k, v; LT_KV_F16: hk, hv (the others NULL) */
    float *k, *v;       /* (L, ctx, KD) */
    uint16_t *hk, *hv;  /* (L, ctx, KD) fp16 */
    float *x, *xb;      /* (B, D) residual stream, normed input */
    float *q, *att;     /* (B, QD) */
    float *hg, *hu;     /* (B, F) */
    float *cosb, *sinb; /* (B, hd/2) */
    float *scores;      /* (n_scores) attention scratch of the backend */
    int64_t n_scores;
    float *rstd;        /* (B) */
    int32_t *iota;      /* (B) 0, 1, ..., B - 1: the rows' index into cosb / sinb */
    float *ad_u, *ad_y; /* (B, maxd) adapter scratch: x A^T, and a DoRA output summed into x */
    int maxd;           /* max(D, QD, KD, F): any linear's in / out, and any adapter rank */
    float *wbuf;        /* (n_wbuf) matmul_w scratch: weight rows converted by the backend */
    int64_t n_wbuf;
    float *wvec;    /* (maxd) a converted norm weight or bias */
    float *ilv;     /* (B, QD + KD) q and k in the file's interleaved row order (qact) */
    float *kb, *vb; /* (B, KD) k, v of a batch step's rows before they go to their caches */
    float *block;   /* the one allocation */
};

lt_status lt_kv_cache_create(const lt_model *m, int ctx_len, int max_batch, lt_kv_cache **out) {
    return lt_kv_cache_create_typed(m, ctx_len, max_batch, LT_KV_F32, out);
}

int64_t lt_kv_cache_bytes(const lt_model *m, int ctx_len, lt_kv_type type) {
    const lt_model_config *c = &m->config;
    if (ctx_len <= 0) ctx_len = c->max_seq_len;
    return 2 * (int64_t)c->n_layers * ctx_len * c->n_kv_heads * c->head_dim *
           (type == LT_KV_F16 ? 2 : 4);
}

lt_status lt_kv_cache_create_typed(const lt_model *m, int ctx_len, int max_batch, lt_kv_type type,
                                   lt_kv_cache **out) {
    return lt_kv_cache_create_dev(m, NULL, ctx_len, max_batch, type, out);
}

lt_status lt_kv_cache_create_dev(const lt_model *m, const lt_model_dev *dev, int ctx_len,
                                 int max_batch, lt_kv_type type, lt_kv_cache **out) {
    *out = NULL;
    if (dev && lt_model_dev_model_(dev) != m)
        return lt_error(LT_ERR_ARG, "kv cache: the device weights were made for another model");
    const lt_model_config *c = &m->config;
    if (type != LT_KV_F32 && type != LT_KV_F16)
        return lt_error(LT_ERR_ARG, "kv cache: unknown cache type %d", (int)type);
    if (ctx_len <= 0) ctx_len = c->max_seq_len;
    if (ctx_len > LT_MAX_SEQ)
        return lt_error(LT_ERR_ARG, "kv cache: context %d too large (max %d)", ctx_len, LT_MAX_SEQ);
    if (max_batch <= 0) max_batch = 64;
    if (max_batch > ctx_len) max_batch = ctx_len;
    lt_kv_cache *kv = lt_calloc(1, sizeof *kv);
    if (!kv) return lt_error(LT_ERR_NOMEM, "kv cache: out of memory");
    kv->be = dev ? lt_model_dev_backend(dev) : lt_backend_cpu();
    kv->dev = dev;
    kv->ctx = ctx_len;
    kv->max_batch = max_batch;
    kv->type = type;
    kv->n_layers = c->n_layers;
    kv->dim = c->dim;
    kv->kv_dim = c->n_kv_heads * c->head_dim;
    kv->q_dim = c->n_heads * c->head_dim;
    kv->ffn_dim = c->ffn_dim;
    kv->half = c->head_dim / 2;
    int64_t B = max_batch;
    kv->maxd = kv->dim;
    if (kv->q_dim > kv->maxd) kv->maxd = kv->q_dim;
    if (kv->kv_dim > kv->maxd) kv->maxd = kv->kv_dim;
    if (kv->ffn_dim > kv->maxd) kv->maxd = kv->ffn_dim;
    kv->n_wbuf = kv->be->op->matmul_w_scratch(kv->be, kv->maxd);
    kv->n_scores = kv->be->op->attention_kv_scratch(kv->be, ctx_len);
    const int64_t cache = (int64_t)c->n_layers * ctx_len * kv->kv_dim; /* elements */
    /* the caches first (page-aligned: lt_kv_cache_release gives whole pages back), in float
     * slots: an fp16 cache takes half of them, rounded up to a multiple of 16 (64 bytes) */
    const int64_t cache_f = type == LT_KV_F16 ? (cache + 31) / 32 * 16 : cache;
    int64_t total = 2 * cache_f + 2 * B * kv->dim + 2 * B * kv->q_dim + 2 * B * kv->ffn_dim +
                    2 * B * kv->half + kv->n_scores + 2 * B * kv->maxd + kv->n_wbuf + kv->maxd +
                    B * (kv->q_dim + kv->kv_dim) + 2 * B * kv->kv_dim + 2 * B;
    if (dev) { /* the device's: the logits of a chunk; the host's: its rotary rows */
        total += B * c->vocab_size;
        if (!(kv->hcos = lt_malloc(sizeof(float) * (size_t)(2 * B * kv->half + B + 1)))) {
            free(kv);
            return lt_error(LT_ERR_NOMEM, "kv cache: out of host memory");
        }
        kv->hsin = kv->hcos + B * kv->half;
    }
    if ((uint64_t)total > SIZE_MAX / sizeof(float) ||
        !(kv->block = dev ? kv->be->op->alloc(kv->be, (size_t)total * sizeof(float))
                          : lt_aligned_alloc(page_size(),
                                             ((size_t)total * sizeof(float) + page_size() - 1) &
                                                 ~(page_size() - 1)))) {
        free(kv->hcos);
        free(kv);
        return lt_error(LT_ERR_NOMEM, "kv cache: out of %s memory for %lld floats (context %d)",
                        dev ? kv->be->name : "host", (long long)total, ctx_len);
    }
    float *p = kv->block;
    if (type == LT_KV_F16) {
        kv->hk = (uint16_t *)p;
        kv->hv = (uint16_t *)(p + cache_f);
    } else {
        kv->k = p;
        kv->v = p + cache_f;
    }
    p += 2 * cache_f;
    kv->x = p;
    p += B * kv->dim;
    kv->xb = p;
    p += B * kv->dim;
    kv->q = p;
    p += B * kv->q_dim;
    kv->att = p;
    p += B * kv->q_dim;
    kv->hg = p;
    p += B * kv->ffn_dim;
    kv->hu = p;
    p += B * kv->ffn_dim;
    kv->cosb = p;
    p += B * kv->half;
    kv->sinb = p;
    p += B * kv->half;
    kv->scores = p;
    p += kv->n_scores;
    kv->ad_u = p;
    p += B * kv->maxd;
    kv->ad_y = p;
    p += B * kv->maxd;
    kv->wbuf = p;
    p += kv->n_wbuf;
    kv->wvec = p;
    p += kv->maxd;
    kv->ilv = p;
    p += B * (kv->q_dim + kv->kv_dim);
    kv->kb = p;
    p += B * kv->kv_dim;
    kv->vb = p;
    p += B * kv->kv_dim;
    kv->rstd = p;
    p += B;
    kv->iota = (int32_t *)p; /* int32 in a float-sized slot */
    p += B;
    if (dev) {
        kv->dlogits = p;
        int32_t *h = (int32_t *)(kv->hsin + B * kv->half);
        for (int i = 0; i < B; i++)
            h[i] = i;
        kv->be->op->set(kv->be, kv->iota, h, sizeof(int32_t) * (size_t)B);
        kv->be->op->sync(kv->be);
    } else {
        for (int i = 0; i < B; i++)
            kv->iota[i] = i;
        kv->hcos = kv->cosb;
        kv->hsin = kv->sinb;
    }
    *out = kv;
    return LT_OK;
}

void lt_kv_cache_free(lt_kv_cache *kv) {
    if (!kv) return;
    if (kv->dev) {
        kv->be->op->free(kv->be, kv->block);
        free(kv->hcos);
    } else {
        lt_free(kv->block);
    }
    free(kv);
}

int lt_kv_cache_ctx(const lt_kv_cache *kv) {
    return kv->ctx;
}

lt_kv_type lt_kv_cache_type(const lt_kv_cache *kv) {
    return kv->type;
}

/* [a, a + n) shrunk to whole pages, given back: the next write maps a zeroed page */
static void release_bytes(char *a, int64_t n) {
    const uintptr_t ps = (uintptr_t)page_size();
    uintptr_t lo = ((uintptr_t)a + ps - 1) & ~(ps - 1), hi = ((uintptr_t)a + n) & ~(ps - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void lt_kv_cache_release(lt_kv_cache *kv, int pos) {
    if (!kv || kv->dev || pos >= kv->ctx) return;
    if (pos < 0) pos = 0;
    const int64_t es = kv->type == LT_KV_F16 ? 2 : 4, row = (int64_t)kv->kv_dim * es;
    char *k = kv->type == LT_KV_F16 ? (char *)kv->hk : (char *)kv->k;
    char *v = kv->type == LT_KV_F16 ? (char *)kv->hv : (char *)kv->v;
    if (pos == 0) { /* every layer: the two tensors whole */
        const int64_t n = (int64_t)kv->n_layers * kv->ctx * row;
        release_bytes(k, n);
        release_bytes(v, n);
        return;
    }
    for (int l = 0; l < kv->n_layers; l++) {
        const int64_t at = ((int64_t)l * kv->ctx + pos) * row, n = (int64_t)(kv->ctx - pos) * row;
        release_bytes(k + at, n);
        release_bytes(v + at, n);
    }
}

void lt_kv_cache_set_qact(lt_kv_cache *kv, int on) {
    kv->qact = on != 0;
}

void lt_kv_cache_set_bf16(lt_kv_cache *kv, int on) {
    kv->bf16 = on != 0;
}

/* y[n][rows] in the model's row order from f[n][rows] in the file's interleaved q/k order
 * (heads of hd rows; model row h hd + i is file row h hd + 2 (i mod hd/2) + i div (hd/2)) */
static void unfile_rows(float *y, const float *f, int n, int rows, int hd) {
    const int half = hd / 2;
    for (int t = 0; t < n; t++, y += rows, f += rows)
        for (int h = 0; h < rows; h += hd)
            for (int i = 0; i < half; i++) {
                y[h + i] = f[h + 2 * i];
                y[h + half + i] = f[h + 2 * i + 1];
            }
}

/* bf16 products (kv->bf16): a lazy model's bf16 weight as it lies in the file, for matmul_w's
 * bf16 GEMM (not q / k rows stored interleaved: those go through the provider); 1 when made */
static int bf16_view(const lt_model *m, lt_weight_id id, int l, int64_t rows, int64_t cols,
                     lt_weight_view *out) {
    if (!lt_model_is_lazy(m) || lt_model_weight_interleaved(m, id)) return 0;
    const lt_tensor_view *v = lt_model_weight_view(m, id, l);
    if (!v || !v->data || v->dtype != LT_DTYPE_BF16) return 0;
    memset(out, 0, sizeof *out);
    *out = (lt_weight_view){.rows = rows, .cols = cols, .dtype = LT_DTYPE_BF16, .data = v->data};
    return 1;
}

/* Weight id of layer l [rows][cols] as the cache's backend reads it: the device copy's view
 * (*rowwise: multiply it rowwise, as the CPU path multiplies the provider's converted rows), or
 * the provider's (lt_model_weight_bview; *rowwise 0). src must outlive the view. */
static void weight_view(const lt_model *m, const lt_kv_cache *kv, lt_weight_id id, int l,
                        int64_t rows, int64_t cols, lt_weight_src *src, lt_weight_view *out,
                        int *rowwise) {
    *rowwise = 0;
    if (kv->dev)
        *out = *lt_model_dev_view_(kv->dev, id, l, rowwise);
    else
        lt_model_weight_bview(m, id, l, rows, cols, src, out);
}

/* The LM head [V][D] as the cache multiplies it: the device copy's view; on the host, the blocks
 * as stored for the integer kernels (qact), else a bf16 view (bf16), else the provider's. */
static void head_view(const lt_model *m, const lt_kv_cache *kv, lt_weight_id head, int64_t V,
                      int64_t D, lt_weight_src *src, lt_weight_view *out, int *rowwise) {
    *rowwise = 0;
    if (kv->dev)
        weight_view(m, kv, head, 0, V, D, src, out, rowwise);
    else if ((!kv->qact || lt_model_weight_stored_(m, head, 0, V, D, out) != 1) &&
             !(kv->bf16 && bf16_view(m, head, 0, V, D, out)))
        lt_model_weight_bview(m, head, 0, V, D, src, out);
}

/* A norm weight or bias (1-D) as fp32 in the backend's memory: the device copy's, or the
 * provider's (converted into kv->wvec when it must be). */
static lt_status vec_f32(const lt_model *m, lt_kv_cache *kv, lt_weight_id id, int l,
                         const float **out) {
    if (kv->dev) {
        *out = lt_model_dev_view_(kv->dev, id, l, NULL)->data;
        return LT_OK;
    }
    return lt_model_weight_f32(m, id, l, 0, 1, kv->wvec, out);
}

/* The rotary rows the host wrote to hcos / hsin (n rows), into the device's cosb / sinb */
static void rope_rows_to_backend(lt_kv_cache *kv, int n) {
    if (!kv->dev) return; /* hcos / hsin are cosb / sinb */
    const size_t bytes = sizeof(float) * (size_t)n * (size_t)kv->half;
    kv->be->op->set(kv->be, kv->cosb, kv->hcos, bytes);
    kv->be->op->set(kv->be, kv->sinb, kv->hsin, bytes);
}

/* Rows [r0, r0 + n) of a linear's input that share one adapter (NULL: none). A chunk of one
 * sequence is one run; a batch step has a run per adapter (its rows adjacent). */
typedef struct {
    const lt_model_delta *delta;
    int r0, n;
} drun;

/* Linears t0 .. t0 + nt - 1 (0..6: q k v o gate up down; nt <= 3) of layer l, all reading
 * x[n][in]: ys[j][n][outs[j]] = x W^T (+ bias, q/k/v with qkv_bias), or with beta 1 (o, down:
 * nt 1) y += x W^T into the residual. The base product is one matmul_w over all n rows (the
 * weights are read once for every run); then each run's adapter, once per run (the Punica /
 * S-LoRA grouping): LoRA adds scale (x A^T) B^T; DoRA computes d * (x W^T + scale (x A^T) B^T)
 * with the rows' factors d the delta carries, then adds the bias (PEFT does not rescale it).
 * Every row gets the arithmetic it gets alone (a DoRA row's base product goes through ad_y as
 * a lone DoRA row's does; the others add it to y as matmul_w's beta 1 does). Uses kv->ad_u /
 * ad_y; allocates nothing. */
static lt_status linears(const lt_model *m, const drun *runs, int nruns, lt_kv_cache *kv, int l,
                         int t0, int nt, float *const *ys, const int *outs, const float *x, int n,
                         int in, float beta) {
    lt_matmul_job jobs[3];
    lt_weight_view views[3];
    lt_weight_src srcs[3];
    float *dsts[3];     /* where job j's product lands in the model's row order */
    int filed[3] = {0}; /* 1: job j wrote its rows in the file's interleaved order to kv->ilv */
    float *ilv = kv->ilv;
    for (int j = 0; j < nt; j++) {
        int dora = 0; /* some run has DoRA on this linear */
        for (int k = 0; k < nruns; k++) {
            const lt_model_delta *d = runs[k].delta;
            const lt_model_delta_lin *L = d ? &d->lin[l * LT_MODEL_N_LIN + t0 + j] : NULL;
            dora |= L && L->A && L->d;
        }
        const lt_weight_id id = lt_model_lin_weight(t0 + j);
        dsts[j] = dora && beta != 0.0f ? kv->ad_y : ys[j];
        float *y = dsts[j];
        if (kv->dev) { /* the device copy: rows in the model's order, no stored / bf16 views */
            int rw;
            views[j] = *lt_model_dev_view_(kv->dev, id, l, &rw);
            jobs[j] = (lt_matmul_job){&views[j], y,        dsts[j] == ys[j] ? beta : 0.0f,
                                      kv->qact,  kv->bf16, rw};
            continue;
        }
        /* with qact: the blocks as stored, for the backend's integer kernels; q / k rows
         * interleaved in the file come out in its order and are put back below */
        const int stored = kv->qact ? lt_model_weight_stored_(m, id, l, outs[j], in, &views[j]) : 0;
        if (!stored && !(kv->bf16 && bf16_view(m, id, l, outs[j], in, &views[j])))
            lt_model_weight_bview(m, id, l, outs[j], in, &srcs[j], &views[j]);
        if (stored == 2 && beta == 0.0f) {
            filed[j] = 1;
            y = ilv;
            ilv += (int64_t)n * outs[j];
        } else if (stored == 2) { /* not a shape the forward makes (q, k have beta 0) */
            lt_model_weight_bview(m, id, l, outs[j], in, &srcs[j], &views[j]);
        }
        jobs[j] = (lt_matmul_job){&views[j], y, dsts[j] == ys[j] ? beta : 0.0f, kv->qact,
                                  kv->bf16, 0};
    }
    lt_status st = OP(matmul_w, jobs, nt, x, n, kv->wbuf, kv->n_wbuf);
    if (st) return lt_error_wrap(st, "forward");
    for (int j = 0; j < nt; j++)
        if (filed[j]) unfile_rows(dsts[j], jobs[j].y, n, outs[j], m->config.head_dim);
    for (int j = 0; j < nt; j++) {
        const int t = t0 + j, out = outs[j];
        for (int k = 0; k < nruns; k++) {
            const drun *R = &runs[k];
            const lt_model_delta *delta = R->delta;
            const lt_model_delta_lin *L = delta ? &delta->lin[l * LT_MODEL_N_LIN + t] : NULL;
            float *y = ys[j] + (int64_t)R->r0 * out, *dst = dsts[j] + (int64_t)R->r0 * out;
            const float *xr = x + (int64_t)R->r0 * in;
            const int dora = L && L->A && L->d;
            if (dst != y && !dora) /* a row batched with DoRA rows: y += x W^T as matmul_w's */
                OP(add, y, y, dst, (int64_t)R->n * out);
            if (L && L->A) {
                float *into = dora ? dst : y;
                int r = delta->r;
                /* x A^T, then into += (scale u) B^T: row-wise products (each row's sums in one
                 * order whatever the run's length: a row gets the same bits alone, in a
                 * batch, or in any chunk of its prompt; BLAS's may differ with the rows) */
                const lt_weight_view va = {.rows = r, .cols = in, .dtype = LT_DTYPE_F32,
                                           .data = L->A},
                                     vb = {.rows = out, .cols = r, .dtype = LT_DTYPE_F32,
                                           .data = L->B};
                const lt_matmul_job ja = {&va, kv->ad_u, 0.0f, 0, 0, 1},
                                    jb = {&vb, into, 1.0f, 0, 0, 1};
                if ((st = OP(matmul_w, &ja, 1, xr, R->n, kv->wbuf, kv->n_wbuf)))
                    return lt_error_wrap(st, "forward: adapter");
                OP(scale, kv->ad_u, (int64_t)R->n * r, delta->scale);
                if ((st = OP(matmul_w, &jb, 1, kv->ad_u, R->n, kv->wbuf, kv->n_wbuf)))
                    return lt_error_wrap(st, "forward: adapter");
                if (dora) {
                    OP(scale_rows, into, L->d, R->n, out);
                    if (into != y) OP(add, y, y, into, (int64_t)R->n * out);
                }
            }
        }
        if (t <= 2 && m->config.qkv_bias) { /* LT_W_BQ, BK, BV follow one another */
            const float *bias;
            if ((st = vec_f32(m, kv, (lt_weight_id)(LT_W_BQ + t), l, &bias))) return st;
            OP(add_bias, ys[j], bias, n, out);
        }
    }
    return LT_OK;
}

/* x[n][D] of the chunk's tokens through every layer, then xb = the final norm of x. */
static lt_status forward_chunk(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv,
                               const int32_t *tokens, int n, int pos0) {
    const lt_model_config *c = &m->config;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim;
    int QD = kv->q_dim, KD = kv->kv_dim, half = kv->half, ctx = kv->ctx;
    const float *nw;
    lt_status st;
    const drun one = {delta, 0, n};

    lt_weight_src esrc;
    lt_weight_view emb;
    int erw;
    weight_view(m, kv, LT_W_TOK_EMBD, 0, c->vocab_size, D, &esrc, &emb, &erw);
    for (int t = 0; t < n; t++) {
        float *xt = kv->x + (int64_t)t * D;
        if ((st = OP(weight_f32, &emb, tokens[t], 1, xt, &nw))) return st;
        if (nw != xt) OP(copy, xt, nw, sizeof(float) * (size_t)D);
    }
    /* cos/sin as transformers: freqs = float(pos) * inv_freq in float32, then cos/sin; row t
     * of the tables is position pos0 + t (the rope op reads row iota[t] = t) */
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            float f = (float)(pos0 + t) * m->inv_freq[i];
            kv->hcos[(int64_t)t * half + i] = cosf(f);
            kv->hsin[(int64_t)t * half + i] = sinf(f);
        }
    rope_rows_to_backend(kv, n);

    for (int l = 0; l < c->n_layers; l++) {
        /* rows pos0.. of this layer (an fp16 cache: k, v go through kb / vb, then rounded) */
        const int f16 = kv->type == LT_KV_F16;
        float *kc = f16 ? kv->kb : kv->k + ((int64_t)l * ctx + pos0) * KD;
        float *vc = f16 ? kv->vb : kv->v + ((int64_t)l * ctx + pos0) * KD;
        if ((st = vec_f32(m, kv, LT_W_ATTN_NORM, l, &nw))) return st;
        OP(rmsnorm_fwd, kv->xb, kv->rstd, kv->x, nw, n, D, c->norm_eps);
        float *qkv[3] = {kv->q, kc, vc};
        const int qkv_out[3] = {QD, KD, KD};
        if ((st = linears(m, &one, 1, kv, l, 0, 3, qkv, qkv_out, kv->xb, n, D, 0.0f))) return st;
        OP(rope_fwd, kv->q, kv->q, kv->iota, kv->cosb, kv->sinb, n, H, hd, 0);
        OP(rope_fwd, kc, kc, kv->iota, kv->cosb, kv->sinb, n, KV, hd, 0);
        if (f16) {
            const int64_t at = ((int64_t)l * ctx + pos0) * KD;
            OP(to_f16, kv->hk + at, kc, (int64_t)n * KD);
            OP(to_f16, kv->hv + at, vc, (int64_t)n * KD);
            OP(attention_kv_f16, kv->att, kv->q, kv->hk + (int64_t)l * ctx * KD,
               kv->hv + (int64_t)l * ctx * KD, n, pos0, H, KV, hd, c->sliding_window, kv->scores,
               kv->n_scores);
        } else {
            OP(attention_kv, kv->att, kv->q, kv->k + (int64_t)l * ctx * KD,
               kv->v + (int64_t)l * ctx * KD, n, pos0, H, KV, hd, c->sliding_window, kv->scores,
               kv->n_scores);
        }
        /* x += att Wo^T (beta = 1 accumulates into the residual) */
        if ((st = linears(m, &one, 1, kv, l, 3, 1, &kv->x, &D, kv->att, n, QD, 1.0f))) return st;

        if ((st = vec_f32(m, kv, LT_W_FFN_NORM, l, &nw))) return st;
        OP(rmsnorm_fwd, kv->xb, kv->rstd, kv->x, nw, n, D, c->norm_eps);
        float *gu[2] = {kv->hg, kv->hu};
        const int gu_out[2] = {F, F};
        if ((st = linears(m, &one, 1, kv, l, 4, 2, gu, gu_out, kv->xb, n, D, 0.0f))) return st;
        OP(swiglu_fwd, kv->hg, kv->hg, kv->hu, (int64_t)n * F);
        if ((st = linears(m, &one, 1, kv, l, 6, 1, &kv->x, &D, kv->hg, n, F, 1.0f))) return st;
    }
    if ((st = vec_f32(m, kv, LT_W_OUT_NORM, 0, &nw))) return st;
    OP(rmsnorm_fwd, kv->xb, kv->rstd, kv->x, nw, n, D, c->norm_eps);
    return LT_OK;
}

/* Checks a delta against the model and the cache's scratch. */
static lt_status check_delta(const lt_model *m, const lt_model_delta *delta,
                             const lt_kv_cache *kv) {
    if (!delta) return LT_OK;
    if (delta->n_layers != m->config.n_layers || !delta->lin)
        return lt_error(LT_ERR_ARG, "forward: the adapter is for %d layers, the model has %d",
                        delta->n_layers, m->config.n_layers);
    if (delta->r < 1 || delta->r > kv->maxd)
        return lt_error(LT_ERR_ARG, "forward: adapter rank %d outside [1, %d]", delta->r, kv->maxd);
    if (delta->be != (kv->dev ? kv->be : NULL))
        return lt_error(LT_ERR_ARG,
                        "forward: the adapter lives in %s memory, the cache in %s memory "
                        "(lt_model_delta_to_backend)",
                        delta->be ? delta->be->name : "host", kv->dev ? kv->be->name : "host");
    return LT_OK;
}

lt_status lt_model_forward(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv,
                           const int32_t *tokens, int n, int pos0, float *logits, int all_logits) {
    const lt_model_config *c = &m->config;
    lt_status st = lt_model_check_readable(m, "forward"); /* config-only or released */
    if (st) return st;
    if (n < 1 || pos0 < 0 || (int64_t)pos0 + n > kv->ctx)
        return lt_error(LT_ERR_ARG, "forward: positions %d..%lld do not fit the context of %d",
                        pos0, (long long)pos0 + n - 1, kv->ctx);
    if (kv->dim != c->dim || kv->kv_dim != c->n_kv_heads * c->head_dim ||
        kv->n_layers != c->n_layers || kv->ffn_dim != c->ffn_dim)
        return lt_error(LT_ERR_ARG, "forward: kv cache was made for another model");
    if (kv->dev && lt_model_dev_model_(kv->dev) != m)
        return lt_error(LT_ERR_ARG, "forward: the cache's device weights were made for another "
                                    "model");
    if ((st = check_delta(m, delta, kv))) return st;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return lt_error(LT_ERR_ARG, "forward: token %d at index %d outside the vocabulary (%d)",
                            tokens[t], t, c->vocab_size);
    const int D = c->dim, V = c->vocab_size;
    const lt_weight_id head = c->tied_embeddings ? LT_W_TOK_EMBD : LT_W_LM_HEAD;
    lt_weight_src hsrc;
    lt_weight_view hv;
    int hrw; /* the head's rowwise flag (the device copy's; 0 on the host path) */
    head_view(m, kv, head, V, D, &hsrc, &hv, &hrw);
    for (int done = 0; done < n;) {
        int b = n - done < kv->max_batch ? n - done : kv->max_batch;
        if ((st = forward_chunk(m, delta, kv, tokens + done, b, pos0 + done))) return st;
        /* on a device the logits land in dlogits, then only they come back to the host */
        if (logits && all_logits) {
            float *y = kv->dev ? kv->dlogits : logits + (int64_t)done * V;
            lt_matmul_job jb = {&hv, y, 0.0f, kv->qact, kv->bf16, hrw};
            st = OP(matmul_w, &jb, 1, kv->xb, b, kv->wbuf, kv->n_wbuf);
            if (!st && kv->dev)
                kv->be->op->get(kv->be, logits + (int64_t)done * V, y,
                                sizeof(float) * (size_t)b * (size_t)V);
        } else if (logits && done + b == n) {
            float *y = kv->dev ? kv->dlogits : logits;
            lt_matmul_job jb = {&hv, y, 0.0f, kv->qact, kv->bf16, hrw};
            st = OP(matmul_w, &jb, 1, kv->xb + (int64_t)(b - 1) * D, 1, kv->wbuf, kv->n_wbuf);
            if (!st && kv->dev) kv->be->op->get(kv->be, logits, y, sizeof(float) * (size_t)V);
        }
        if (st) return st;
        done += b;
    }
    return LT_OK;
}

/* ---- one step of many sequences ------------------------------------------------------------ */
#define LT_BATCH_MAX_RUNS 256 /* runs of entries with one adapter in a step */

static inline int entry_rows(const lt_batch_row *r) {
    return r->n > 1 ? r->n : 1;
}
static inline int32_t entry_token(const lt_batch_row *r, int j) {
    return r->n > 1 ? r->tokens[j] : r->token;
}

/* x[T][D] of the entries' rows (entry e's tokens at rows off_e .. off_e + n_e - 1, its own cache
 * and positions) through every layer, then xb = the final norm of x; the activations live in ws.
 * The same ops as forward_chunk, row for row, but k / v go through ws->kb / vb to each entry's
 * cache, and attention runs per entry (a chunk: causally over its cache and itself, as
 * forward_chunk's). */
static lt_status forward_rows(const lt_model *m, lt_kv_cache *ws, const lt_batch_row *rows, int n,
                              int T, const drun *runs, int nruns) {
    const lt_model_config *c = &m->config;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim;
    int QD = ws->q_dim, KD = ws->kv_dim, half = ws->half;
    const float *nw;
    lt_status st;
    lt_kv_cache *kv = ws; /* for OP() */

    lt_weight_src esrc;
    lt_weight_view emb;
    int erw;
    weight_view(m, kv, LT_W_TOK_EMBD, 0, c->vocab_size, D, &esrc, &emb, &erw);
    for (int e = 0, t = 0; e < n; e++)
        for (int j = 0; j < entry_rows(&rows[e]); j++, t++) {
            float *xt = ws->x + (int64_t)t * D;
            if ((st = OP(weight_f32, &emb, entry_token(&rows[e], j), 1, xt, &nw))) return st;
            if (nw != xt) OP(copy, xt, nw, sizeof(float) * (size_t)D);
            for (int i = 0; i < half; i++) { /* row t of the tables: its own position */
                float f = (float)(rows[e].pos + j) * m->inv_freq[i];
                ws->hcos[(int64_t)t * half + i] = cosf(f);
                ws->hsin[(int64_t)t * half + i] = sinf(f);
            }
        }
    rope_rows_to_backend(ws, T);
    for (int l = 0; l < c->n_layers; l++) {
        if ((st = vec_f32(m, ws, LT_W_ATTN_NORM, l, &nw))) return st;
        OP(rmsnorm_fwd, ws->xb, ws->rstd, ws->x, nw, T, D, c->norm_eps);
        float *qkv[3] = {ws->q, ws->kb, ws->vb};
        const int qkv_out[3] = {QD, KD, KD};
        if ((st = linears(m, runs, nruns, ws, l, 0, 3, qkv, qkv_out, ws->xb, T, D, 0.0f)))
            return st;
        OP(rope_fwd, ws->q, ws->q, ws->iota, ws->cosb, ws->sinb, T, H, hd, 0);
        OP(rope_fwd, ws->kb, ws->kb, ws->iota, ws->cosb, ws->sinb, T, KV, hd, 0);
        for (int e = 0, t = 0; e < n; t += entry_rows(&rows[e]), e++) {
            lt_kv_cache *rk = rows[e].kv;
            const int ne = entry_rows(&rows[e]);
            const int64_t at = ((int64_t)l * rk->ctx + rows[e].pos) * KD,
                          lay = (int64_t)l * rk->ctx * KD;
            const float *kt = ws->kb + (int64_t)t * KD, *vt = ws->vb + (int64_t)t * KD;
            if (rk->type == LT_KV_F16) { /* rounded as forward_chunk rounds them */
                OP(to_f16, rk->hk + at, kt, (int64_t)ne * KD);
                OP(to_f16, rk->hv + at, vt, (int64_t)ne * KD);
                OP(attention_kv_f16, ws->att + (int64_t)t * QD, ws->q + (int64_t)t * QD,
                   rk->hk + lay, rk->hv + lay, ne, rows[e].pos, H, KV, hd, c->sliding_window,
                   ws->scores, ws->n_scores);
                continue;
            }
            OP(copy, rk->k + at, kt, sizeof(float) * (size_t)ne * KD);
            OP(copy, rk->v + at, vt, sizeof(float) * (size_t)ne * KD);
            OP(attention_kv, ws->att + (int64_t)t * QD, ws->q + (int64_t)t * QD, rk->k + lay,
               rk->v + lay, ne, rows[e].pos, H, KV, hd, c->sliding_window, ws->scores,
               ws->n_scores);
        }
        if ((st = linears(m, runs, nruns, ws, l, 3, 1, &ws->x, &D, ws->att, T, QD, 1.0f)))
            return st;
        if ((st = vec_f32(m, ws, LT_W_FFN_NORM, l, &nw))) return st;
        OP(rmsnorm_fwd, ws->xb, ws->rstd, ws->x, nw, T, D, c->norm_eps);
        float *gu[2] = {ws->hg, ws->hu};
        const int gu_out[2] = {F, F};
        if ((st = linears(m, runs, nruns, ws, l, 4, 2, gu, gu_out, ws->xb, T, D, 0.0f))) return st;
        OP(swiglu_fwd, ws->hg, ws->hg, ws->hu, (int64_t)T * F);
        if ((st = linears(m, runs, nruns, ws, l, 6, 1, &ws->x, &D, ws->hg, T, F, 1.0f))) return st;
    }
    if ((st = vec_f32(m, ws, LT_W_OUT_NORM, 0, &nw))) return st;
    OP(rmsnorm_fwd, ws->xb, ws->rstd, ws->x, nw, T, D, c->norm_eps);
    return LT_OK;
}

static int same_shape(const lt_kv_cache *a, const lt_model_config *c) {
    return a->dim == c->dim && a->kv_dim == c->n_kv_heads * c->head_dim &&
           a->n_layers == c->n_layers && a->ffn_dim == c->ffn_dim;
}

lt_status lt_model_forward_batch(const lt_model *m, lt_kv_cache *ws, const lt_batch_row *rows,
                                 int n, float *logits) {
    const lt_model_config *c = &m->config;
    lt_status st = lt_model_check_readable(m, "forward_batch");
    if (st) return st;
    if (n < 1 || n > ws->max_batch)
        return lt_error(LT_ERR_ARG, "forward_batch: %d rows, the workspace takes 1..%d", n,
                        ws->max_batch);
    if (!same_shape(ws, c))
        return lt_error(LT_ERR_ARG, "forward_batch: the workspace was made for another model");
    if (ws->dev && lt_model_dev_model_(ws->dev) != m)
        return lt_error(LT_ERR_ARG, "forward_batch: the workspace's device weights were made for "
                                    "another model");
    drun runs[LT_BATCH_MAX_RUNS];
    int nruns = 0;
    int64_t T = 0; /* the step's rows */
    for (int t = 0; t < n; t++) {
        const lt_batch_row *r = &rows[t];
        const int ne = entry_rows(r);
        if (!r->kv || !same_shape(r->kv, c))
            return lt_error(LT_ERR_ARG, "forward_batch: row %d's cache was made for another model",
                            t);
        if (r->kv->dev != ws->dev)
            return lt_error(LT_ERR_ARG,
                            "forward_batch: row %d's cache and the workspace are on different "
                            "backends (or device weights)",
                            t);
        if (r->n > 1 && !r->tokens)
            return lt_error(LT_ERR_ARG, "forward_batch: row %d: n = %d tokens but no tokens", t,
                            r->n);
        if (r->pos < 0 || (int64_t)r->pos + ne > r->kv->ctx) {
            if (ne == 1)
                return lt_error(LT_ERR_ARG,
                                "forward_batch: row %d: position %d outside its context of %d", t,
                                r->pos, r->kv->ctx);
            return lt_error(LT_ERR_ARG,
                            "forward_batch: row %d: positions %d..%lld outside its context of %d",
                            t, r->pos, (long long)r->pos + ne - 1, r->kv->ctx);
        }
        if (r->kv->ctx > ws->ctx)
            return lt_error(LT_ERR_ARG,
                            "forward_batch: row %d's context %d exceeds the workspace's %d", t,
                            r->kv->ctx, ws->ctx);
        if (r->kv->qact != ws->qact || r->kv->bf16 != ws->bf16)
            return lt_error(LT_ERR_ARG,
                            "forward_batch: row %d's cache and the workspace differ in "
                            "lt_kv_cache_set_%s",
                            t, r->kv->qact != ws->qact ? "qact" : "bf16");
        for (int j = 0; j < ne; j++) {
            const int32_t id = entry_token(r, j);
            if (id < 0 || id >= c->vocab_size) {
                if (ne == 1)
                    return lt_error(LT_ERR_ARG,
                                    "forward_batch: row %d: token %d outside the vocabulary (%d)",
                                    t, id, c->vocab_size);
                return lt_error(LT_ERR_ARG,
                                "forward_batch: row %d: token %d at index %d outside the "
                                "vocabulary (%d)",
                                t, id, j, c->vocab_size);
            }
        }
        for (int u = 0; u < t; u++)
            if (rows[u].kv == r->kv)
                return lt_error(LT_ERR_ARG, "forward_batch: rows %d and %d share a cache", u, t);
        const int r0 = (int)T;
        T += ne;
        if (T > ws->max_batch)
            return lt_error(LT_ERR_ARG,
                            "forward_batch: %lld rows (tokens) or more in %d entries, the "
                            "workspace takes 1..%d",
                            (long long)T, t + 1, ws->max_batch);
        if (nruns && runs[nruns - 1].delta == r->delta) {
            runs[nruns - 1].n += ne;
            continue;
        }
        if ((st = check_delta(m, r->delta, ws))) return st;
        if (nruns == LT_BATCH_MAX_RUNS)
            return lt_error(LT_ERR_ARG,
                            "forward_batch: more than %d runs of adapters (put the rows of one "
                            "adapter next to each other)",
                            LT_BATCH_MAX_RUNS);
        runs[nruns++] = (drun){r->delta, r0, ne};
    }
    if ((st = forward_rows(m, ws, rows, n, (int)T, runs, nruns))) return st;
    if (!logits) return LT_OK;
    const int D = c->dim, V = c->vocab_size;
    /* the last row of each entry that wants logits, moved to the front of xb in entry order
     * (row k <= the row it comes from: a forward copy is safe) */
    int k = 0;
    for (int e = 0, t = 0; e < n; e++) {
        t += entry_rows(&rows[e]);
        if (rows[e].no_logits) continue;
        if (k != t - 1) /* distinct rows: no overlap */
            ws->be->op->copy(ws->be, ws->xb + (int64_t)k * D, ws->xb + (int64_t)(t - 1) * D,
                             sizeof(float) * D);
        k++;
    }
    if (!k) return LT_OK;
    const lt_weight_id head = c->tied_embeddings ? LT_W_TOK_EMBD : LT_W_LM_HEAD;
    lt_weight_src hsrc;
    lt_weight_view hv;
    int hrw;
    head_view(m, ws, head, V, D, &hsrc, &hv, &hrw);
    lt_matmul_job jb = {&hv, ws->dev ? ws->dlogits : logits, 0.0f, ws->qact, ws->bf16, hrw};
    lt_kv_cache *kv = ws;
    st = OP(matmul_w, &jb, 1, ws->xb, k, ws->wbuf, ws->n_wbuf);
    if (!st && ws->dev)
        ws->be->op->get(ws->be, logits, ws->dlogits, sizeof(float) * (size_t)k * (size_t)V);
    return st;
}
