/* forward.c - CPU forward pass of a Llama-family decoder with a KV cache, over the weight
 * provider (lt_model_weight_f32): the same code runs a model loaded whole (fp32) or lazily
 * (weights as stored in the mapped file, converted a block of rows at a time).
 *
 * Per layer, for a batch of B consecutive positions:
 *   xb = rmsnorm(x) * attn_norm;  q,k,v = xb Wq^T (+bq), xb Wk^T (+bk), xb Wv^T (+bv)
 *   rotary on q,k (HF half-split: x*cos + rotate_half(x)*sin); k,v written into the cache
 *   causal GQA attention over cached positions (query head h reads kv head h / (H/KV))
 *   x += att Wo^T;  xb = rmsnorm(x) * ffn_norm;  x += (silu(xb Wg^T) * (xb Wu^T)) Wd^T
 * then logits = rmsnorm(x) * out_norm  lm_head^T.
 * Matmuls (wmatmul): a weight the provider has as fp32 (a loaded model, F32 in the file) is
 * multiplied whole through BLAS (sgemm for a prefill, sgemv for one token; below SMALL_MATMUL
 * multiply-adds a plain loop); any other is cut into blocks of rows of at most WBLOCK floats,
 * each converted into a per-thread scratch and multiplied there (rows_dot), OpenMP over the
 * blocks of q, k and v together (and of gate and up): no conversion of a whole weight, and
 * four fork / joins per layer.
 * With a delta (an adapter, lt_model_delta), every adapted linear adds its low-rank product,
 * and for DoRA rescales the rows (see linears()).
 * Every buffer lives in lt_kv_cache and is allocated once in lt_kv_cache_create. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "model_internal.h"

/* Floats of weight rows one thread converts and multiplies at a time (256 KiB: stays in L2),
 * or one row when a row is longer (kv->wblock). */
#define WBLOCK (64 * 1024)

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
    int64_t wblock;     /* max(WBLOCK, maxd) */
    float *wbuf;        /* (n_threads, wblock) weight rows converted by the provider */
    float *wvec;        /* (maxd) a converted norm weight or bias */
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
    kv->wblock = kv->maxd > WBLOCK ? kv->maxd : WBLOCK;
    int64_t cache = (int64_t)c->n_layers * ctx_len * kv->kv_dim;
    int64_t total = 2 * cache + 2 * B * kv->dim + 2 * B * kv->q_dim + 2 * B * kv->ffn_dim +
                    2 * B * kv->half + (int64_t)kv->n_threads * ctx_len + 2 * B * kv->maxd +
                    (int64_t)kv->n_threads * kv->wblock + kv->maxd;
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
    p += B * kv->maxd;
    kv->wbuf = p;
    p += (int64_t)kv->n_threads * kv->wblock;
    kv->wvec = p;
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

/* 8 floats as one value (GCC / Clang vector extension: one AVX register, or two SSE ones);
 * LOAD8 reads one from any float address. Lane k of an accumulator sums the products at
 * i = k mod 8. Passed by pointer: a vector argument's ABI differs with and without AVX. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_any __attribute__((vector_size(32), aligned(4), may_alias));
#define LOAD8(p) (*(const v8f_any *)(p))

/* sum of the 8 lanes of *a, pairwise, then the tail i in [in8, in) of w . x */
static inline float lanes_sum(const v8f *a, const float *w, const float *x, int in8, int in) {
    const v8f v = *a;
    float s = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    for (int i = in8; i < in; i++)
        s += w[i] * x[i];
    return s;
}

/* y[t][o] = (beta 0) or += (beta 1) dot(x[t], W[o]) for t < n, o < nr; y rows ldy apart. Each
 * dot is summed in 8 lanes (lane k takes the i = k mod 8; products rounded, then added), the
 * lanes added pairwise, then the tail: the same order for every row and token whatever the
 * blocking or the threads. Four rows at a time (a group's rows past nr repeat its first row and
 * are dropped), every token against them while they are in L1 (wider tiles, 4 rows x 2 tokens
 * or 8 rows, measured no faster on Zen 4). */
static void rows_dot(float *y, int64_t ldy, const float *x, const float *W, int n, int nr, int in,
                     float beta) {
    const int in8 = in & ~7;
    for (int o = 0; o < nr; o += 4) {
        const int g = nr - o < 4 ? nr - o : 4;
        const float *w0 = W + (int64_t)o * in;
        const float *w1 = g > 1 ? w0 + in : w0, *w2 = g > 2 ? w0 + 2 * in : w0,
                    *w3 = g > 3 ? w0 + 3 * in : w0;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (int64_t)t * in;
            v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int i = 0; i < in8; i += 8) {
                const v8f xv = LOAD8(xt + i);
                a0 += LOAD8(w0 + i) * xv;
                a1 += LOAD8(w1 + i) * xv;
                a2 += LOAD8(w2 + i) * xv;
                a3 += LOAD8(w3 + i) * xv;
            }
            const float r[4] = {lanes_sum(&a0, w0, xt, in8, in), lanes_sum(&a1, w1, xt, in8, in),
                                lanes_sum(&a2, w2, xt, in8, in), lanes_sum(&a3, w3, xt, in8, in)};
            float *yt = y + (int64_t)t * ldy + o;
            for (int j = 0; j < g; j++)
                yt[j] = beta == 0.0f ? r[j] : yt[j] + r[j];
        }
    }
}

/* One product of a batch that reads the same x: y[n][out] = x W^T (beta 0) or y += (beta 1). */
typedef struct {
    lt_weight_id id;
    float *y;
    int out;
    float beta;
} wjob;

/* The jobs (at most 3, all reading x[n][in]) of layer l. A weight the provider has as fp32 (a
 * loaded model, F32 in the file) is multiplied whole through BLAS, one after another. The
 * others' rows are cut into blocks of at most kv->wblock floats (a multiple of 4 rows when
 * there are 4), every job's blocks in one parallel loop (one fork / join for q, k and v), each
 * block converted and multiplied by one thread in its slice of wbuf. */
static lt_status wmatmul(const lt_model *m, lt_kv_cache *kv, int l, const wjob *jobs, int nj,
                         const float *x, int n, int in) {
    int64_t per = kv->wblock / in;
    if (per > 4) per &= ~(int64_t)3;
    if (per < 1) per = 1;
    int64_t first[4], nblk = 0, work = 0; /* job j's blocks are [first[j], first[j + 1]) */
    for (int j = 0; j < nj; j++) {
        first[j] = nblk;
        if (lt_model_weight_is_f32(m, jobs[j].id, l)) {
            const float *W;
            lt_status st = lt_model_weight_f32(m, jobs[j].id, l, 0, jobs[j].out, NULL, &W);
            if (st) return st;
            matmul_beta(jobs[j].y, x, W, n, jobs[j].out, in, jobs[j].beta);
            continue;
        }
        nblk += (jobs[j].out + per - 1) / per;
        work += (int64_t)n * jobs[j].out * in;
    }
    first[nj] = nblk;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1)                                                      \
    num_threads(kv->n_threads) if (nblk > 1 && work >= SMALL_MATMUL)
    for (int64_t b = 0; b < nblk; b++) {
        int j = 0;
        while (b >= first[j + 1])
            j++;
        const wjob *jb = &jobs[j];
        const int64_t r0 = (b - first[j]) * per, nr = jb->out - r0 < per ? jb->out - r0 : per;
        const float *W;
        if (lt_model_weight_f32(m, jb->id, l, r0, nr, kv->wbuf + omp_get_thread_num() * kv->wblock,
                                &W)) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        rows_dot(jb->y + r0, jb->out, x, W, n, (int)nr, in, jb->beta);
    }
    for (int j = 0; failed && j < nj; j++) { /* again here, for the message (thread-local) */
        const float *W;
        lt_status st = lt_model_weight_f32(m, jobs[j].id, l, 0,
                                           per < jobs[j].out ? per : jobs[j].out, kv->wbuf, &W);
        if (st) return st;
    }
    return failed ? lt_error(LT_ERR_INTERNAL, "forward: layer %d: a weight is unreadable", l)
                  : LT_OK;
}

/* Linears t0 .. t0 + nt - 1 (0..6: q k v o gate up down; nt <= 3) of layer l, all reading
 * x[n][in]: ys[j][n][outs[j]] = x W^T (+ bias, q/k/v with qkv_bias), or with beta 1 (o, down:
 * nt 1) y += x W^T into the residual. With a delta that adapts one: LoRA adds
 * scale (x A^T) B^T; DoRA computes d * (x W^T + scale (x A^T) B^T) with the rows' factors d the
 * delta carries, then adds the bias (PEFT does not rescale it). Uses kv->ad_u / ad_y;
 * allocates nothing. */
static lt_status linears(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv, int l,
                         int t0, int nt, float *const *ys, const int *outs, const float *x, int n,
                         int in, float beta) {
    wjob jobs[3];
    for (int j = 0; j < nt; j++) {
        const lt_model_delta_lin *L = delta ? &delta->lin[l * LT_MODEL_N_LIN + t0 + j] : NULL;
        const int dora = L && L->A && L->d;
        jobs[j] = (wjob){lt_model_lin_weight(t0 + j), dora && beta != 0.0f ? kv->ad_y : ys[j],
                         outs[j], dora ? 0.0f : beta};
    }
    lt_status st = wmatmul(m, kv, l, jobs, nt, x, n, in);
    if (st) return st;
    for (int j = 0; j < nt; j++) {
        const int t = t0 + j, out = outs[j];
        float *y = ys[j], *dst = jobs[j].y;
        const lt_model_delta_lin *L = delta ? &delta->lin[l * LT_MODEL_N_LIN + t] : NULL;
        if (L && L->A) {
            int r = delta->r;
            float s = delta->scale;
            matmul_beta(kv->ad_u, x, L->A, n, r, in, 0.0f);
            for (int64_t i = 0; i < (int64_t)n * r; i++)
                kv->ad_u[i] *= s;
            matmul_beta(dst, kv->ad_u, L->B, n, out, r, 1.0f);
            if (L->d) {
                for (int i = 0; i < n; i++)
                    for (int o = 0; o < out; o++)
                        dst[(int64_t)i * out + o] *= L->d[o];
                if (dst != y)
                    for (int64_t i = 0; i < (int64_t)n * out; i++)
                        y[i] += dst[i];
            }
        }
        if (t <= 2 && m->config.qkv_bias) { /* LT_W_BQ, BK, BV follow one another */
            const float *bias;
            if ((st =
                     lt_model_weight_f32(m, (lt_weight_id)(LT_W_BQ + t), l, 0, 1, kv->wvec, &bias)))
                return st;
            for (int i = 0; i < n; i++)
                for (int o = 0; o < out; o++)
                    y[(int64_t)i * out + o] += bias[o];
        }
    }
    return LT_OK;
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

/* x[n][D] of the chunk's tokens through every layer, then xb = the final norm of x. */
static lt_status forward_chunk(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv,
                               const int32_t *tokens, int n, int pos0) {
    const lt_model_config *c = &m->config;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim;
    int QD = kv->q_dim, KD = kv->kv_dim, half = kv->half, ctx = kv->ctx;
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    const float *nw;
    lt_status st;

    for (int t = 0; t < n; t++) {
        float *xt = kv->x + (int64_t)t * D;
        if ((st = lt_model_weight_f32(m, LT_W_TOK_EMBD, 0, tokens[t], 1, xt, &nw))) return st;
        if (nw != xt) memcpy(xt, nw, sizeof(float) * D);
    }
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
        if ((st = lt_model_weight_f32(m, LT_W_ATTN_NORM, l, 0, 1, kv->wvec, &nw))) return st;
        rmsnorm(kv->xb, kv->x, nw, n, D, c->norm_eps);
        float *qkv[3] = {kv->q, kc, vc};
        const int qkv_out[3] = {QD, KD, KD};
        if ((st = linears(m, delta, kv, l, 0, 3, qkv, qkv_out, kv->xb, n, D, 0.0f))) return st;
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
        if ((st = linears(m, delta, kv, l, 3, 1, &kv->x, &D, kv->att, n, QD, 1.0f))) return st;

        if ((st = lt_model_weight_f32(m, LT_W_FFN_NORM, l, 0, 1, kv->wvec, &nw))) return st;
        rmsnorm(kv->xb, kv->x, nw, n, D, c->norm_eps);
        float *gu[2] = {kv->hg, kv->hu};
        const int gu_out[2] = {F, F};
        if ((st = linears(m, delta, kv, l, 4, 2, gu, gu_out, kv->xb, n, D, 0.0f))) return st;
        for (int64_t i = 0; i < (int64_t)n * F; i++) {
            float g = kv->hg[i];
            kv->hg[i] = g / (1.0f + expf(-g)) * kv->hu[i];
        }
        if ((st = linears(m, delta, kv, l, 6, 1, &kv->x, &D, kv->hg, n, F, 1.0f))) return st;
    }
    if ((st = lt_model_weight_f32(m, LT_W_OUT_NORM, 0, 0, 1, kv->wvec, &nw))) return st;
    rmsnorm(kv->xb, kv->x, nw, n, D, c->norm_eps);
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
    if ((st = check_delta(m, delta, kv))) return st;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return lt_error(LT_ERR_ARG, "forward: token %d at index %d outside the vocabulary (%d)",
                            tokens[t], t, c->vocab_size);
    const int D = c->dim, V = c->vocab_size;
    const lt_weight_id head = c->tied_embeddings ? LT_W_TOK_EMBD : LT_W_LM_HEAD;
    for (int done = 0; done < n;) {
        int b = n - done < kv->max_batch ? n - done : kv->max_batch;
        if ((st = forward_chunk(m, delta, kv, tokens + done, b, pos0 + done))) return st;
        if (logits && all_logits) {
            wjob jb = {head, logits + (int64_t)done * V, V, 0.0f};
            st = wmatmul(m, kv, 0, &jb, 1, kv->xb, b, D);
        } else if (logits && done + b == n) {
            wjob jb = {head, logits, V, 0.0f};
            st = wmatmul(m, kv, 0, &jb, 1, kv->xb + (int64_t)(b - 1) * D, 1, D);
        }
        if (st) return st;
        done += b;
    }
    return LT_OK;
}
