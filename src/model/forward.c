/* forward.c - CPU fp32 forward pass of a Llama-family decoder with a KV cache.
 *
 * Per layer, for a batch of B consecutive positions (prefill uses sgemm over the batch, a
 * single decode step sgemv):
 *   xb = rmsnorm(x) * attn_norm;  q,k,v = xb Wq^T (+bq), xb Wk^T (+bk), xb Wv^T (+bv)
 *   rotary on q,k (HF half-split: x*cos + rotate_half(x)*sin); k,v written into the cache
 *   causal GQA attention over cached positions (query head h reads kv head h / (H/KV))
 *   x += att Wo^T;  xb = rmsnorm(x) * ffn_norm;  x += (silu(xb Wg^T) * (xb Wu^T)) Wd^T
 * then logits = rmsnorm(x) * out_norm  lm_head^T.
 * Matmuls below SMALL_MATMUL multiply-adds run as plain loops (see there).
 * With an adapter attached (lt_model_set_adapter), every adapted linear adds its low-rank
 * product, and for DoRA rescales the rows (see linear() and src/adapter/adapter_apply.c).
 * Every buffer lives in lt_kv_cache and is allocated once in lt_kv_cache_create. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "loratune/adapter.h"
#include "model_internal.h"

struct lt_kv_cache {
    int ctx, max_batch, n_threads;
    int n_layers, kv_dim, dim, q_dim, ffn_dim, half;
    float *k, *v;       /* (L, ctx, KD) */
    float *x, *xb;      /* (B, D) residual stream, normed input */
    float *q, *att;     /* (B, QD) */
    float *hg, *hu;     /* (B, F) */
    float *cosb, *sinb; /* (B, hd/2) */
    float *scores;      /* (n_threads, ctx) */
    float *ad_u, *ad_y; /* (B, maxd) adapter scratch: x A^T, and a DoRA output summed into x */
    int maxd;           /* max(D, QD, KD, F): any linear's in / out, and any adapter rank */
    float *block;       /* the one allocation */
};

lt_status lt_kv_cache_create(const lt_model *m, int ctx_len, int max_batch, lt_kv_cache **out) {
    *out = NULL;
    const lt_model_config *c = &m->config;
    if (ctx_len <= 0) ctx_len = c->max_seq_len;
    if (ctx_len > LT_MAX_SEQ)
        return lt_error(LT_ERR_ARG, "kv cache: context %d too large (max %d)", ctx_len, LT_MAX_SEQ);
    if (max_batch <= 0) max_batch = 64;
    if (max_batch > ctx_len) max_batch = ctx_len;
    lt_kv_cache *kv = lt_calloc(1, sizeof *kv);
    if (!kv) return lt_error(LT_ERR_NOMEM, "kv cache: out of memory");
    kv->ctx = ctx_len;
    kv->max_batch = max_batch;
    kv->n_threads = omp_get_max_threads();
    if (kv->n_threads < 1) kv->n_threads = 1;
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
    int64_t cache = (int64_t)c->n_layers * ctx_len * kv->kv_dim;
    int64_t total = 2 * cache + 2 * B * kv->dim + 2 * B * kv->q_dim + 2 * B * kv->ffn_dim +
                    2 * B * kv->half + (int64_t)kv->n_threads * ctx_len + 2 * B * kv->maxd;
    if ((uint64_t)total > SIZE_MAX / sizeof(float) ||
        !(kv->block = lt_malloc((size_t)total * sizeof(float)))) {
        free(kv);
        return lt_error(LT_ERR_NOMEM, "kv cache: out of memory for %lld floats (context %d)",
                        (long long)total, ctx_len);
    }
    float *p = kv->block;
    kv->k = p;
    p += cache;
    kv->v = p;
    p += cache;
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
    p += (int64_t)kv->n_threads * ctx_len;
    kv->ad_u = p;
    p += B * kv->maxd;
    kv->ad_y = p;
    *out = kv;
    return LT_OK;
}

void lt_kv_cache_free(lt_kv_cache *kv) {
    if (!kv) return;
    free(kv->block);
    free(kv);
}

int lt_kv_cache_ctx(const lt_kv_cache *kv) {
    return kv->ctx;
}

/* out[n][D] = x[n][D] / sqrt(mean(x^2) + eps) * w[D] (HF LlamaRMSNorm, float32) */
static void rmsnorm(float *out, const float *x, const float *w, int n, int D, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (int64_t)t * D;
        float *o = out + (int64_t)t * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++)
            ss += (double)xr[i] * xr[i];
        float inv = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int i = 0; i < D; i++)
            o[i] = w[i] * (xr[i] * inv);
    }
}

/* Below this many multiply-adds a call is done in a plain loop: waking OpenBLAS's threads
 * costs more than the work (it made stories260K decoding 10x slower on 2 cores). */
#define SMALL_MATMUL (1 << 16)

/* y[n][out] = x[n][in] W[out][in]^T (+ bias[out]); beta 0 overwrites y, 1 accumulates */
static void matmul_beta(float *y, const float *x, const float *W, int n, int out, int in,
                        float beta) {
    if ((int64_t)n * out * in < SMALL_MATMUL) {
        for (int t = 0; t < n; t++)
            for (int o = 0; o < out; o++) {
                const float *wr = W + (int64_t)o * in, *xr = x + (int64_t)t * in;
                float acc = 0.0f;
                for (int i = 0; i < in; i++)
                    acc += wr[i] * xr[i];
                float *yo = y + (int64_t)t * out + o;
                *yo = beta == 0.0f ? acc : *yo + acc;
            }
    } else if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, in, x, 1, beta, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, W, in, beta,
                    y, out);
    }
}

static void matmul(float *y, const float *x, const float *W, const float *bias, int n, int out,
                   int in) {
    matmul_beta(y, x, W, n, out, in, 0.0f);
    if (bias)
        for (int t = 0; t < n; t++)
            for (int o = 0; o < out; o++)
                y[(int64_t)t * out + o] += bias[o];
}

/* Linear t (0..6: q k v o gate up down) of layer l: y[n][out] = x[n][in] W^T (+ bias), or with
 * beta 1 y += x W^T (the residual adds of o and down). With an adapter attached that adapts it:
 * LoRA adds scale (x A^T) B^T; DoRA computes d * (x W^T + scale (x A^T) B^T) with the rows'
 * factors d precomputed by lt_model_set_adapter, then adds the bias (PEFT does not rescale
 * it). Uses kv->ad_u / ad_y; allocates nothing. */
static void linear(const lt_model *m, lt_kv_cache *kv, int l, int t, float *y, const float *x,
                   const float *W, const float *bias, int n, int out, int in, float beta) {
    const lt_adapter *a = m->adapter;
    const lt_adapter_lin *L = a ? &a->lin[l * LT_N_TARGETS + t] : NULL;
    if (!L || !L->A) {
        matmul_beta(y, x, W, n, out, in, beta);
        if (bias)
            for (int i = 0; i < n; i++)
                for (int o = 0; o < out; o++)
                    y[(int64_t)i * out + o] += bias[o];
        return;
    }
    const float *d = m->adapter_dora_scale ? m->adapter_dora_scale[l * LT_N_TARGETS + t] : NULL;
    float *dst = d && beta != 0.0f ? kv->ad_y : y;
    int r = a->r;
    float s = lt_adapter_scale(a);
    matmul_beta(dst, x, W, n, out, in, d ? 0.0f : beta);
    matmul_beta(kv->ad_u, x, L->A, n, r, in, 0.0f);
    for (int64_t i = 0; i < (int64_t)n * r; i++)
        kv->ad_u[i] *= s;
    matmul_beta(dst, kv->ad_u, L->B, n, out, r, 1.0f);
    if (d) {
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++)
                dst[(int64_t)i * out + o] *= d[o];
        if (dst != y)
            for (int64_t i = 0; i < (int64_t)n * out; i++)
                y[i] += dst[i];
    }
    if (bias)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++)
                y[(int64_t)i * out + o] += bias[o];
}

/* Rotates n_heads heads of each of n rows (row stride `stride`) by cos/sin of its position. */
static void rope(float *x, int n, int stride, int n_heads, int hd, const float *cosb,
                 const float *sinb) {
    int half = hd / 2;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (int64_t)t * stride + (int64_t)h * hd;
            const float *cs = cosb + (int64_t)t * half, *sn = sinb + (int64_t)t * half;
            for (int i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * cs[i] - x2 * sn[i];
                v[i + half] = x2 * cs[i] + x1 * sn[i];
            }
        }
}

static void forward_chunk(const lt_model *m, lt_kv_cache *kv, const int32_t *tokens, int n,
                          int pos0) {
    const lt_model_config *c = &m->config;
    const lt_model_weights *w = &m->w;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim;
    int QD = kv->q_dim, KD = kv->kv_dim, half = kv->half, ctx = kv->ctx;
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);

    for (int t = 0; t < n; t++)
        memcpy(kv->x + (int64_t)t * D, w->tok_embd + (int64_t)tokens[t] * D, sizeof(float) * D);
    /* cos/sin as transformers: freqs = float(pos) * inv_freq in float32, then cos/sin */
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            float f = (float)(pos0 + t) * m->inv_freq[i];
            kv->cosb[(int64_t)t * half + i] = cosf(f);
            kv->sinb[(int64_t)t * half + i] = sinf(f);
        }

    for (int l = 0; l < c->n_layers; l++) {
        float *kc = kv->k + ((int64_t)l * ctx + pos0) * KD; /* rows pos0.. of this layer */
        float *vc = kv->v + ((int64_t)l * ctx + pos0) * KD;
        rmsnorm(kv->xb, kv->x, w->attn_norm + (int64_t)l * D, n, D, c->norm_eps);
        linear(m, kv, l, 0, kv->q, kv->xb, w->wq + (int64_t)l * QD * D,
               w->bq ? w->bq + (int64_t)l * QD : NULL, n, QD, D, 0.0f);
        linear(m, kv, l, 1, kc, kv->xb, w->wk + (int64_t)l * KD * D,
               w->bk ? w->bk + (int64_t)l * KD : NULL, n, KD, D, 0.0f);
        linear(m, kv, l, 2, vc, kv->xb, w->wv + (int64_t)l * KD * D,
               w->bv ? w->bv + (int64_t)l * KD : NULL, n, KD, D, 0.0f);
        rope(kv->q, n, QD, H, hd, kv->cosb, kv->sinb);
        rope(kc, n, KD, KV, hd, kv->cosb, kv->sinb);

        const float *K = kv->k + (int64_t)l * ctx * KD, *Vv = kv->v + (int64_t)l * ctx * KD;
        /* threads only when there is enough work to pay for waking them */
        int64_t work = (int64_t)n * H * (pos0 + n) * hd;
#pragma omp parallel for collapse(2) schedule(static) num_threads(kv->n_threads) if (work > 65536)
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                float *sc = kv->scores + (int64_t)omp_get_thread_num() * ctx;
                int pos = pos0 + t;
                int start = 0;
                if (c->sliding_window > 0 && pos - c->sliding_window + 1 > 0)
                    start = pos - c->sliding_window + 1;
                const float *qh = kv->q + (int64_t)t * QD + (int64_t)h * hd;
                int kvh = h / group;
                float mx = -INFINITY;
                for (int j = start; j <= pos; j++) {
                    const float *kj = K + (int64_t)j * KD + (int64_t)kvh * hd;
                    float s = 0.0f;
                    for (int i = 0; i < hd; i++)
                        s += qh[i] * kj[i];
                    s *= scale;
                    sc[j] = s;
                    if (s > mx) mx = s;
                }
                float sum = 0.0f;
                for (int j = start; j <= pos; j++) {
                    sc[j] = expf(sc[j] - mx);
                    sum += sc[j];
                }
                float inv = 1.0f / sum;
                float *o = kv->att + (int64_t)t * QD + (int64_t)h * hd;
                for (int i = 0; i < hd; i++)
                    o[i] = 0.0f;
                for (int j = start; j <= pos; j++) {
                    const float *vj = Vv + (int64_t)j * KD + (int64_t)kvh * hd;
                    float p = sc[j] * inv;
                    for (int i = 0; i < hd; i++)
                        o[i] += p * vj[i];
                }
            }
        /* x += att Wo^T (beta = 1 accumulates into the residual) */
        linear(m, kv, l, 3, kv->x, kv->att, w->wo + (int64_t)l * D * QD, NULL, n, D, QD, 1.0f);

        rmsnorm(kv->xb, kv->x, w->ffn_norm + (int64_t)l * D, n, D, c->norm_eps);
        linear(m, kv, l, 4, kv->hg, kv->xb, w->w_gate + (int64_t)l * F * D, NULL, n, F, D, 0.0f);
        linear(m, kv, l, 5, kv->hu, kv->xb, w->w_up + (int64_t)l * F * D, NULL, n, F, D, 0.0f);
        for (int64_t i = 0; i < (int64_t)n * F; i++) {
            float g = kv->hg[i];
            kv->hg[i] = g / (1.0f + expf(-g)) * kv->hu[i];
        }
        linear(m, kv, l, 6, kv->x, kv->hg, w->w_down + (int64_t)l * D * F, NULL, n, D, F, 1.0f);
    }
    rmsnorm(kv->xb, kv->x, w->out_norm, n, D, c->norm_eps);
}

lt_status lt_model_forward(const lt_model *m, lt_kv_cache *kv, const int32_t *tokens, int n,
                           int pos0, float *logits, int all_logits) {
    const lt_model_config *c = &m->config;
    lt_status st = lt_model_check_weights(m, "forward"); /* config-only or released */
    if (st) return st;
    if (n < 1 || pos0 < 0 || (int64_t)pos0 + n > kv->ctx)
        return lt_error(LT_ERR_ARG, "forward: positions %d..%lld do not fit the context of %d",
                        pos0, (long long)pos0 + n - 1, kv->ctx);
    if (kv->dim != c->dim || kv->kv_dim != c->n_kv_heads * c->head_dim ||
        kv->n_layers != c->n_layers || kv->ffn_dim != c->ffn_dim)
        return lt_error(LT_ERR_ARG, "forward: kv cache was made for another model");
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return lt_error(LT_ERR_ARG, "forward: token %d at index %d outside the vocabulary (%d)",
                            tokens[t], t, c->vocab_size);
    int D = c->dim, V = c->vocab_size;
    for (int done = 0; done < n;) {
        int b = n - done < kv->max_batch ? n - done : kv->max_batch;
        forward_chunk(m, kv, tokens + done, b, pos0 + done);
        if (logits && all_logits) {
            matmul(logits + (int64_t)done * V, kv->xb, m->w.lm_head, NULL, b, V, D);
        } else if (logits && done + b == n) {
            matmul(logits, kv->xb + (int64_t)(b - 1) * D, m->w.lm_head, NULL, 1, V, D);
        }
        done += b;
    }
    return LT_OK;
}
