/* trainer.c - model-level forward with saved activations, hand-written backward, AdamW step.
 *
 * Per layer l (x = xs[l], the residual stream entering the layer):
 *   xn1 = rmsnorm(x); q,k,v = lin(xn1) (+LoRA/DoRA); rope(q,k); att = attention(q,k,v)
 *   xmid = x + lin_o(att); xn2 = rmsnorm(xmid); gate,up = lin(xn2); h = silu(gate)*up
 *   xs[l+1] = xmid + lin_down(h)
 * then xf = rmsnorm(xs[L]); logits = xf head^T in row chunks, cross-entropy writing dlogits
 * in place, dxf accumulated chunk by chunk. Backward runs the layers in reverse with dres the
 * gradient of the residual stream. With grad_checkpoint only xs[] is kept and a layer's
 * forward is recomputed into the single activation set right before its backward (same code,
 * same inputs: the recomputed values are bit-identical).
 * Invariants: no allocation after lt_trainer_create (every buffer comes from the layout);
 * gradients accumulate across micro-batches until lt_trainer_step / lt_trainer_zero_grad.
 * A device backend (lt_backend.device, CUDA): the same code; the host keeps the bookkeeping and
 * twins of the per-batch index arrays (staged with set each micro-batch), and creation makes
 * the weight copies in a host staging block that move_to_device uploads (docs/BACKEND.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/backend.h"
#include "trainer_internal.h"

/* every op of a step goes through the trainer's backend (backend.h) */
#define OP(name, ...) tr->be->op->name(tr->be, __VA_ARGS__)

/* ---- the recording allocator: every byte the trainer owns goes through here ------------- */
/* Not zeroed here: lt_trainer_create zeroes each block when it first writes it, so that with a
 * released base the blocks other than WEIGHTS are not touched (not resident) while the fp32
 * model still exists. */
static void *rec_alloc(const lt_backend *be, int64_t *bytes, int64_t *n_allocs, int cat,
                       int64_t n) {
    size_t sz = (size_t)((n + 63) & ~(int64_t)63);
    void *p = be->op->alloc(be, sz ? sz : 64);
    if (!p) return NULL;
    bytes[cat] += (int64_t)sz;
    (*n_allocs)++;
    return p;
}

/* Rows of a lazy model's weight as fp32 through the model's weight provider (converted in
 * parallel row blocks, each a pure function of the file). Errors were ruled out by
 * lt_trainer_create (it reads a row of every such weight and every dtype here converts any
 * whole-block row). */
typedef struct {
    const lt_model *m;
    lt_weight_id id;
    int layer;
} lazy_src;
static lt_status lazy_rows(const void *ctx, int64_t row0, int64_t n, float *scratch,
                           const float **out) {
    const lazy_src *ls = ctx;
    return lt_model_weight_f32(ls->m, ls->id, ls->layer, row0, n, scratch, out);
}

/* A frozen or trained matrix as stored (fp32, 16-bit copy, NF4, or rows of the mapped file),
 * for the backend's weight_f32 / matmul_w. ls: storage for a lazy source (must outlive w). */
static void lin_view(const lt_trainer *tr, const lt_lin *li, lazy_src *ls, lt_weight_view *w) {
    memset(w, 0, sizeof *w);
    w->rows = li->OC;
    w->cols = li->C;
    if (li->rsrc) {
        *ls = (lazy_src){li->rsrc, li->wid, li->layer};
        w->rows_fn = lazy_rows;
        w->ctx = ls;
    } else if (li->q4) {
        w->nf4 = li->q4;
    } else if (li->Wq) {
        w->dtype = li->Wq_dt;
        w->data = li->Wq;
    } else if (li->W16) {
        w->dtype = tr->c.base_dtype == LT_DTYPE_BF16 ? LT_DTYPE_BF16 : LT_DTYPE_F16;
        w->data = li->W16;
    } else {
        w->dtype = LT_DTYPE_F32;
        w->data = li->W;
    }
}

/* The whole matrix as fp32: the weight itself, or converted into wdeq by the backend. */
static const float *weight(lt_trainer *tr, const lt_lin *li) {
    lazy_src ls;
    lt_weight_view w;
    lin_view(tr, li, &ls, &w);
    const float *out = NULL;
    OP(weight_f32, &w, 0, w.rows, tr->wdeq, &out);
    return out;
}

/* head rows [v0, v0 + n) as fp32 (in wdeq unless the head is fp32 already) */
static const float *head_rows(lt_trainer *tr, int64_t v0, int64_t n) {
    const int64_t D = tr->mc.dim;
    lt_lin li;
    memset(&li, 0, sizeof li);
    li.OC = (int)n;
    li.C = (int)D;
    if (tr->head_src) {
        lazy_src ls = {tr->head_src, tr->head_wid, 0};
        lt_weight_view w = {.rows = tr->mc.vocab_size, .cols = D, .rows_fn = lazy_rows, .ctx = &ls};
        const float *out = NULL;
        OP(weight_f32, &w, v0, n, tr->wdeq, &out);
        return out;
    }
    if (tr->headq) {
        lt_weight_view w = {.rows = tr->mc.vocab_size, .cols = D, .dtype = tr->headq_dt,
                            .data = tr->headq};
        const float *out = NULL;
        OP(weight_f32, &w, v0, n, tr->wdeq, &out);
        return out;
    }
    if (tr->head16) li.W16 = tr->head16 + v0 * D;
    else li.W = (float *)(uintptr_t)(tr->head + v0 * D);
    return weight(tr, &li);
}

static const float *head_weight(lt_trainer *tr) {
    return head_rows(tr, 0, tr->mc.vocab_size);
}

/* The head a vocabulary block at a time (tr->head_vb > 0): logits[nc][V] = x @ H^T, and
 * dx[nc][D] += dlogits @ H; each block of H dequantized once per call. */
static void head_fwd_blocked(lt_trainer *tr, float *logits, const float *x, int nc) {
    const int D = tr->mc.dim, V = tr->mc.vocab_size;
    for (int v0 = 0; v0 < V; v0 += tr->head_vb) {
        int n = V - v0 < tr->head_vb ? V - v0 : tr->head_vb;
        const float *Hb = head_rows(tr, v0, n);
        OP(gemm, 0, 1, nc, n, D, 1.0f, x, D, Hb, D, 0.0f, logits + v0, V);
    }
}
static void head_dx_blocked(lt_trainer *tr, float *dx, const float *dlogits, int nc) {
    const int D = tr->mc.dim, V = tr->mc.vocab_size;
    for (int v0 = 0; v0 < V; v0 += tr->head_vb) {
        int n = V - v0 < tr->head_vb ? V - v0 : tr->head_vb;
        const float *Hb = head_rows(tr, v0, n);
        OP(gemm, 0, 0, nc, D, n, 1.0f, dlogits + v0, V, Hb, D, 1.0f, dx, D);
    }
}

/* Deterministic dropout mask for (micro-batch, layer, target): the forward and the
 * recompute / backward regenerate the same mask, so it is never stored. */
static const float *dropout_mask(lt_trainer *tr, int l, int t, int64_t n) {
    float p = tr->c.lora.dropout;
    if (!(p > 0) || !tr->training) return NULL; /* evaluation runs without dropout */
    uint64_t s = tr->c.seed ^ (tr->micro * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(l * 8 + t) << 48);
    OP(dropout_mask, tr->mask, n, p, s);
    return tr->mask;
}

/* bf16 compute: the weight as bf16 -- its 16-bit copy when that is bf16, else converted
 * (through fp32: NF4, a trained fp32 weight, rows of a lazy file) into wb16 */
static const uint16_t *weight16(lt_trainer *tr, const lt_lin *li) {
    if (!li->rsrc && li->W16 && tr->c.base_dtype == LT_DTYPE_BF16) return li->W16;
    if (tr->be->op->weight_bf16) { /* straight to bf16 where the backend converts the format */
        lazy_src ls;
        lt_weight_view v;
        lin_view(tr, li, &ls, &v);
        if (OP(weight_bf16, &v, 0, v.rows, tr->wb16) == LT_OK) return tr->wb16;
    }
    const float *w = weight(tr, li);
    OP(to_bf16, tr->wb16, w, (int64_t)li->OC * li->C);
    return tr->wb16;
}

/* y = x W^T (+ bias) + the adapter's term. xb: x rounded to bf16 (bf16 compute, shared by the
 * products reading the same x) or NULL (fp32). DoRA always runs in fp32 (validated). */
static void lin_fwd(lt_trainer *tr, int l, int t, float *y, const float *x, const uint16_t *xb,
                    float *xa, int N) {
    lt_lin *li = &tr->lin[l * LT_N_TARGETS + t];
    if (xb) {
        OP(gemm_bf16, 0, 1, N, li->OC, li->C, 1.0f, xb, li->C, weight16(tr, li), li->C, 0.0f, y,
                      li->OC);
        if (li->bias) OP(add_bias, y, li->bias, N, li->OC);
        if (li->A)
            OP(lora_fwd, y, xa, x, NULL, NULL, li->A, li->B,
                         dropout_mask(tr, l, t, (int64_t)N * li->C), N, li->C, li->OC, tr->r,
                         tr->scale, tr->scratch);
        return;
    }
    const float *W = weight(tr, li);
    if (!li->A) {
        OP(matmul_fwd, y, x, W, li->bias, N, li->C, li->OC);
        return;
    }
    const float *mask = dropout_mask(tr, l, t, (int64_t)N * li->C);
    if (li->mag)
        OP(dora_fwd, y, li->wnorm, xa, x, W, li->bias, li->A, li->B, li->mag, mask, N, li->C,
                       li->OC, tr->r, tr->scale, tr->scratch);
    else
        OP(lora_fwd, y, xa, x, W, li->bias, li->A, li->B, mask, N, li->C, li->OC, tr->r,
                       tr->scale, tr->scratch);
}

/* dx's accumulation: *fresh says dx holds nothing yet (its first writer sets it, beta 0, where a
 * zeroed dx would be read and added to: the same numbers, a pass over dx fewer); the beta of the
 * next bf16 product into dx, or dx zeroed for a writer that only adds */
static float dx_beta(int *fresh) {
    const float beta = *fresh ? 0.0f : 1.0f;
    *fresh = 0;
    return beta;
}
static void dx_zero(lt_trainer *tr, float *dx, int64_t n, int *fresh) {
    if (dx && *fresh) OP(zero, dx, sizeof(float) * (size_t)n);
    *fresh = 0;
}

/* bf16 compute: dx += dy W with dy rounded to bf16 (in xb16), then a trained weight's dW += dy^T x
 * with x rounded to bf16 too (in xb16b; fp32 sums: autocast's weight gradient), or the fp32
 * rest: the adapter's gradients and its share of dx, a bias's gradient */
static void lin_bwd16(lt_trainer *tr, int l, int t, float *dx, const float *dy, const float *x,
                      const float *xa, int N, int *fresh) {
    lt_lin *li = &tr->lin[l * LT_N_TARGETS + t];
    if (dx) {
        OP(to_bf16, tr->xb16, dy, (int64_t)N * li->OC);
        OP(gemm_bf16, 0, 0, N, li->C, li->OC, 1.0f, tr->xb16, li->OC, weight16(tr, li), li->C,
                      dx_beta(fresh), dx, li->C);
    }
    if (!li->A) {
        float *dW = li->dW;
        if (dW && tr->xb16b) {
            if (!dx) OP(to_bf16, tr->xb16, dy, (int64_t)N * li->OC);
            OP(to_bf16, tr->xb16b, x, (int64_t)N * li->C);
            OP(gemm_bf16, 1, 0, li->OC, li->C, N, 1.0f, tr->xb16, li->OC, tr->xb16b, li->C, 1.0f,
                          dW, li->C);
            dW = NULL;
        }
        if (dW || li->dbias) OP(matmul_bwd, NULL, dW, li->dbias, dy, x, NULL, N, li->C, li->OC);
        return;
    }
    OP(lora_bwd, dx, li->dA, li->dB, dy, x, NULL, li->A, li->B, xa,
                 dropout_mask(tr, l, t, (int64_t)N * li->C), N, li->C, li->OC, tr->r, tr->scale,
                 tr->scratch);
}

static void lin_bwd(lt_trainer *tr, int l, int t, float *dx, const float *dy, const float *x,
                    const float *xa, int N, int *fresh) {
    lt_lin *li = &tr->lin[l * LT_N_TARGETS + t];
    if (!li->A && !dx && !li->dW && !li->dbias) return;
    if (tr->bf16) {
        lin_bwd16(tr, l, t, dx, dy, x, xa, N, fresh);
        return;
    }
    dx_zero(tr, dx, (int64_t)N * li->C, fresh);
    const float *W = weight(tr, li);
    if (!li->A) {
        OP(matmul_bwd, dx, li->dW, li->dbias, dy, x, W, N, li->C, li->OC);
        return;
    }
    const float *mask = dropout_mask(tr, l, t, (int64_t)N * li->C);
    if (li->mag)
        OP(dora_bwd, dx, li->dA, li->dB, li->dmag, dy, x, W, li->A, li->B, li->mag, li->wnorm, xa,
                       mask, N, li->C, li->OC, tr->r, tr->scale, tr->scratch);
    else
        OP(lora_bwd, dx, li->dA, li->dB, dy, x, W, li->A, li->B, xa, mask, N, li->C, li->OC,
                       tr->r, tr->scale, tr->scratch);
}

/* bf16 compute, LoRA: the adapters as autocast runs them, and grouped. Targets t0 .. t0 + nt - 1
 * read the same x (q, k, v; gate, up; o and down alone), so the adapters among them multiply x
 * as one: XA = xb [A_i; A_j; ...]^T, one bf16 GEMM that reads the rounded x once instead of one
 * rank-r fp32 GEMM each; in backward dA and the adapters' share of dx likewise (dXA^T x and
 * dXA [A_i; ...]: one pass over x and one over dx for the group). XA lives where the
 * adapted targets' xa were carved, one after another: xa of the group's k-th adapter is column
 * block k of an [N][g r] matrix, so the products reading it stride g r. The products run in
 * bf16 with fp32 sums, as PyTorch's autocast runs them (x A^T, xa B^T, dy B, and the
 * backward's dA = dxa^T x and dx += dxa A), their results fp32; dB = dy^T xa stays fp32 (in
 * bf16 it took the PEFT golden qwen2_lora_bf16's weights after the step to 1.4x autocast's
 * error, over the 1.25x allowed; fp32 keeps every case within autocast's). Taken for
 * plain LoRA adapters (no DoRA, no dropout, frozen base), on any backend (its ops only: the
 * CUDA backend's cuBLAS bf16 GEMMs too); otherwise each target runs alone (lin_fwd / lin_bwd:
 * fp32 adapter products). */
/* trainer_layout.c carves no per-target LoRA scratch (tr->scratch NULL) when every adapter is
 * grouped here: bf16, LoRA (not DoRA, not full), no dropout. Keep the two conditions together. */
static int group_of(lt_trainer *tr, int l, int t0, int nt, float *const *xas, int N, int *idx) {
    if (!tr->bf16 || !tr->grp_ab) return 0;
    if (tr->c.lora.dropout > 0 && tr->training) return 0;
    const lt_lin *L0 = &tr->lin[l * LT_N_TARGETS + t0];
    int g = 0;
    for (int j = 0; j < nt; j++)
        if (xas[j] && L0[j].A) {
            const lt_lin *li = L0 + j;
            if (li->mag || li->dW || li->dbias || li->C != L0->C) return 0;
            idx[g++] = j;
        }
    if (g < 2) return g;
    const ptrdiff_t d = xas[idx[1]] - xas[idx[0]];
    for (int k = 0; k < g; k++)
        if (xas[idx[k]] != xas[idx[0]] + k * d) return 0;
    return d >= (ptrdiff_t)N * tr->r ? g : 0;
}

/* ys[j] = x W_j^T (+ bias) (+ scale (x A_j^T) B_j^T) for the targets t0 .. t0 + nt - 1 */
static void lin_fwd_group(lt_trainer *tr, int l, int t0, int nt, float *const *ys, const float *x,
                          const uint16_t *xb, float *const *xas, int N) {
    int idx[LT_N_TARGETS] = {0}, in[LT_N_TARGETS] = {0};
    const int g = group_of(tr, l, t0, nt, xas, N, idx);
    const lt_lin *L0 = &tr->lin[l * LT_N_TARGETS + t0];
    const int r = tr->r, C = L0->C, R = g * r;
    float *XA = g ? xas[idx[0]] : NULL;
    for (int k = 0; k < g; k++) {
        in[idx[k]] = k + 1;
        OP(to_bf16, tr->grp_ab + (int64_t)k * r * C, L0[idx[k]].A, (int64_t)r * C);
    }
    if (g) {
        OP(gemm_bf16, 0, 1, N, R, C, 1.0f, xb, C, tr->grp_ab, C, 0.0f, XA, R);
        OP(to_bf16, tr->grp_xab, XA, (int64_t)N * R);
    }
    for (int j = 0; j < nt; j++) {
        const lt_lin *li = L0 + j;
        if (!in[j]) {
            lin_fwd(tr, l, t0 + j, ys[j], x, xb, xas[j], N);
            continue;
        }
        /* the adapter's term first, written (not added: no read of ys[j]), then the base's
         * product adds it in its epilogue, where the compute-bound GEMM hides the read: the
         * same two fp32 numbers summed as the other way round, a pass over ys[j] fewer */
        OP(to_bf16, tr->grp_bb, li->B, (int64_t)li->OC * r);
        OP(gemm_bf16, 0, 1, N, li->OC, r, tr->scale, tr->grp_xab + (in[j] - 1) * r, R, tr->grp_bb,
           r, 0.0f, ys[j], li->OC);
        OP(gemm_bf16, 0, 1, N, li->OC, C, 1.0f, xb, C, weight16(tr, li), C, 1.0f, ys[j], li->OC);
        if (li->bias) OP(add_bias, ys[j], li->bias, N, li->OC);
    }
}

/* dx = sum_j dy_j (W_j + scale B_j A_j) (when dx: written whole, its contents on entry not
 * read) and the adapters' gradients, for the targets t0 .. t0 + nt - 1 */
static void lin_bwd_group(lt_trainer *tr, int l, int t0, int nt, float *dx, float *const *dys,
                          const float *x, float *const *xas, int N) {
    int idx[LT_N_TARGETS] = {0}, in[LT_N_TARGETS] = {0};
    const int g = group_of(tr, l, t0, nt, xas, N, idx);
    const lt_lin *L0 = &tr->lin[l * LT_N_TARGETS + t0];
    int fresh = dx != NULL;
    for (int k = 0; k < g; k++)
        in[idx[k]] = 1;
    for (int j = 0; j < nt; j++)
        if (!in[j]) lin_bwd(tr, l, t0 + j, dx, dys[j], x, xas[j], N, &fresh);
    if (!g) {
        dx_zero(tr, dx, (int64_t)N * L0->C, &fresh); /* no product wrote it */
        return;
    }
    const int r = tr->r, C = L0->C, R = g * r;
    const float *XA = xas[idx[0]];
    float *dXA = tr->grp_dxa; /* [N][R] */
    int any_dA = 0;
    for (int k = 0; k < g; k++) {
        const lt_lin *li = L0 + idx[k];
        const float *dy = dys[idx[k]];
        const int OC = li->OC;
        OP(to_bf16, tr->xb16, dy, (int64_t)N * OC);
        if (dx)
            OP(gemm_bf16, 0, 0, N, C, OC, 1.0f, tr->xb16, OC, weight16(tr, li), C,
                          dx_beta(&fresh), dx, C);
        /* dxa = scale dy B, column block k of dXA */
        OP(to_bf16, tr->grp_bb, li->B, (int64_t)OC * r);
        OP(gemm_bf16, 0, 0, N, r, OC, tr->scale, tr->xb16, OC, tr->grp_bb, r, 0.0f, dXA + k * r, R);
        if (li->dB) /* dB += scale dy^T xa (fp32: above) */
            OP(gemm, 1, 0, OC, r, N, tr->scale, dy, OC, XA + k * r, R, 1.0f, li->dB, r);
        any_dA |= li->dA != NULL;
    }
    /* dxa in bf16 (over xa's, done with): the operand of dA and of dx's share, both bf16
     * products with fp32 sums as autocast runs them */
    if (any_dA || dx) OP(to_bf16, tr->grp_xab, dXA, (int64_t)N * R);
    if (any_dA) { /* dA += dxa^T x: one product for the group, then added per target */
        OP(to_bf16, tr->xb16, x, (int64_t)N * C); /* dy's bf16 copy is done with */
        OP(gemm_bf16, 1, 0, R, C, N, 1.0f, tr->grp_xab, R, tr->xb16, C, 0.0f, tr->grp_da, C);
        for (int k = 0; k < g; k++) {
            float *dA = L0[idx[k]].dA;
            if (dA) OP(add, dA, dA, tr->grp_da + (int64_t)k * r * C, (int64_t)r * C);
        }
    }
    if (dx) { /* dx += dXA [A_i; ...] */
        const int64_t rc = (int64_t)r * C;
        for (int k = 0; k < g; k++)
            OP(to_bf16, tr->grp_ab + k * rc, L0[idx[k]].A, rc);
        OP(gemm_bf16, 0, 0, N, C, R, 1.0f, tr->grp_xab, R, tr->grp_ab, C, dx_beta(&fresh), dx,
                      C);
    }
}

/* whether the backward of targets t0 .. t0 + nt - 1 reads their input x (an adapter's or a
 * trained weight's gradient; dx alone does not) */
static int reads_x(const lt_trainer *tr, int l, int t0, int nt) {
    for (int j = 0; j < nt; j++) {
        const lt_lin *li = &tr->lin[l * LT_N_TARGETS + t0 + j];
        if (li->A || li->dW || li->dbias) return 1;
    }
    return 0;
}

static lt_layer_acts *acts_of(lt_trainer *tr, int l) {
    return tr->c.grad_checkpoint ? &tr->acts[0] : &tr->acts[l];
}

/* The step's positions: N of them, in B rows of T (off == NULL) or rows of different lengths
 * laid end to end (off, see lt_fast_attention_fwd_var). Everything but attention is per
 * position. */
typedef struct {
    const int32_t *pos, *seq, *off;
    int B, T, N;
} step_rows;

/* bf16 compute: x[n] rounded into xb16 (NULL in fp32 mode) */
static const uint16_t *bf16_of(lt_trainer *tr, const float *x, int64_t n) {
    if (!tr->bf16) return NULL;
    OP(to_bf16, tr->xb16, x, n);
    return tr->xb16;
}

static void layer_fwd(lt_trainer *tr, int l, const step_rows *sr) {
    const lt_model_config *mc = &tr->mc;
    const int N = sr->N, D = mc->dim;
    const int32_t *pos = sr->pos;
    lt_layer_acts *a = acts_of(tr, l);
    const float *x = tr->xs + (int64_t)l * N * D;
    float *xo = tr->xs + (int64_t)(l + 1) * N * D;
    OP(rmsnorm_fwd, a->xn1, a->rstd1, x, tr->attn_norm[l], N, D, mc->norm_eps);
    const uint16_t *xb = bf16_of(tr, a->xn1, (int64_t)N * D); /* q, k and v read the same */
    lin_fwd_group(tr, l, 0, 3, (float *const[]){a->q, a->k, a->v}, a->xn1, xb, a->xa, N);
    OP(rope_fwd, a->q, a->q, pos, tr->cos_t, tr->sin_t, N, mc->n_heads, mc->head_dim, 0);
    OP(rope_fwd, a->k, a->k, pos, tr->cos_t, tr->sin_t, N, mc->n_kv_heads, mc->head_dim, 0);
    (tr->bf16 && tr->be->op->attention_fwd_bf16 ? tr->be->op->attention_fwd_bf16
                                                : tr->be->op->attention_fwd)(
        tr->be, a->att, a->lse, a->q, a->k, a->v, sr->seq, sr->off, sr->B, sr->T, mc->n_heads,
        mc->n_kv_heads, mc->head_dim, mc->sliding_window);
    lin_fwd_group(tr, l, 3, 1, &tr->tmp, a->att,
                  bf16_of(tr, a->att, (int64_t)N * mc->n_heads * mc->head_dim), a->xa + 3, N);
    OP(add, a->xmid, x, tr->tmp, (int64_t)N * D);
    OP(rmsnorm_fwd, a->xn2, a->rstd2, a->xmid, tr->ffn_norm[l], N, D, mc->norm_eps);
    xb = bf16_of(tr, a->xn2, (int64_t)N * D); /* gate and up read the same */
    lin_fwd_group(tr, l, 4, 2, (float *const[]){a->gate, a->up}, a->xn2, xb, a->xa + 4, N);
    OP(swiglu_fwd, a->h, a->gate, a->up, (int64_t)N * mc->ffn_dim);
    lin_fwd_group(tr, l, 6, 1, &tr->tmp, a->h, bf16_of(tr, a->h, (int64_t)N * mc->ffn_dim),
                  a->xa + 6, N);
    OP(add, xo, a->xmid, tr->tmp, (int64_t)N * D);
}

/* dres holds d(xs[l+1]) on entry and d(xs[l]) on exit (when need_dx). */
static void layer_bwd(lt_trainer *tr, int l, const step_rows *sr, int need_dx) {
    const lt_model_config *mc = &tr->mc;
    const int N = sr->N, D = mc->dim, F = mc->ffn_dim;
    const int32_t *pos = sr->pos;
    const int QD = mc->n_heads * mc->head_dim, KVD = mc->n_kv_heads * mc->head_dim;
    lt_layer_acts *a = acts_of(tr, l);
    const float *x = tr->xs + (int64_t)l * N * D;
    /* MLP: xs[l+1] = xmid + down(h). h, xn2 and xn1 are recomputed where a product reads them
     * (trainer_layout.c: h into dgate, which swiglu_bwd then overwrites; the norms into tmp),
     * by the forward's ops on the same inputs: the same numbers */
    if (reads_x(tr, l, 6, 1)) OP(swiglu_fwd, a->h, a->gate, a->up, (int64_t)N * F);
    lin_bwd_group(tr, l, 6, 1, tr->dh, &tr->dres, a->h, a->xa + 6, N);
    OP(swiglu_bwd, tr->dgate, tr->dh, tr->dh, a->gate, a->up, (int64_t)N * F); /* dup over dh */
    if (reads_x(tr, l, 4, 2))
        OP(rmsnorm_fwd, a->xn2, a->rstd2, a->xmid, tr->ffn_norm[l], N, D, mc->norm_eps);
    lin_bwd_group(tr, l, 4, 2, tr->dxn, (float *const[]){tr->dgate, tr->dh}, a->xn2, a->xa + 4, N);
    OP(rmsnorm_bwd, tr->dres, tr->dffn_norm[l], tr->dxn, a->xmid, tr->ffn_norm[l], a->rstd2, N,
                      D);
    /* attention: xmid = x + o(att) */
    lin_bwd_group(tr, l, 3, 1, tr->datt, &tr->dres, a->att, a->xa + 3, N);
    OP(zero, tr->dq, sizeof(float) * (size_t)N * QD);
    OP(zero, tr->dk, sizeof(float) * (size_t)N * KVD);
    OP(zero, tr->dv, sizeof(float) * (size_t)N * KVD);
    (tr->bf16 && tr->be->op->attention_bwd_bf16 ? tr->be->op->attention_bwd_bf16
                                                : tr->be->op->attention_bwd)(
        tr->be, tr->dq, tr->dk, tr->dv, tr->datt, a->q, a->k, a->v, a->att, a->lse, sr->seq,
        sr->off, sr->B, sr->T, mc->n_heads, mc->n_kv_heads, mc->head_dim, mc->sliding_window);
    OP(rope_bwd, tr->dq, tr->dq, pos, tr->cos_t, tr->sin_t, N, mc->n_heads, mc->head_dim, 0);
    OP(rope_bwd, tr->dk, tr->dk, pos, tr->cos_t, tr->sin_t, N, mc->n_kv_heads, mc->head_dim, 0);
    int want_dxn = need_dx || tr->dattn_norm[l];
    float *dxn = want_dxn ? tr->dxn : NULL;
    if (reads_x(tr, l, 0, 3))
        OP(rmsnorm_fwd, a->xn1, a->rstd1, x, tr->attn_norm[l], N, D, mc->norm_eps);
    lin_bwd_group(tr, l, 0, 3, dxn, (float *const[]){tr->dq, tr->dk, tr->dv}, a->xn1, a->xa, N);
    if (want_dxn)
        OP(rmsnorm_bwd, need_dx ? tr->dres : NULL, tr->dattn_norm[l], tr->dxn, x,
                          tr->attn_norm[l], a->rstd1, N, D);
}

/* host -> backend for an index array (nothing when they are one array: a host backend) */
static void stage(lt_trainer *tr, int32_t *dst, const int32_t *src, int64_t n) {
    if (dst != src && n > 0) OP(set, dst, src, sizeof(int32_t) * (size_t)n);
}

static lt_status check_batch(lt_trainer *tr, const lt_batch *b, const int32_t **pos) {
    if (!b || !b->tokens || !b->targets)
        return lt_error(LT_ERR_ARG, "train batch: tokens and targets are required");
    if (b->B < 1 || b->B > tr->c.batch_size)
        return lt_error(LT_ERR_ARG,
                        "train batch: B: expected 1..%d (the config's batch_size), got %d",
                        tr->c.batch_size, b->B);
    if (b->T < 1 || b->T > tr->c.seq_len)
        return lt_error(LT_ERR_ARG, "train batch: T: expected 1..%d (the config's seq_len), got %d",
                        tr->c.seq_len, b->T);
    int64_t N = (int64_t)b->B * b->T;
    /* checked up front so a bad batch never leaves half-accumulated gradients */
    const int V = tr->mc.vocab_size;
    for (int64_t i = 0; i < N; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= V)
            return lt_error(LT_ERR_ARG, "train batch: token %d at position %lld is outside [0, %d)",
                            (int)b->tokens[i], (long long)i, V);
        if (b->targets[i] != LT_IGNORE_INDEX && (b->targets[i] < 0 || b->targets[i] >= V))
            return lt_error(
                LT_ERR_ARG,
                "train batch: target %d at position %lld is neither -100 nor in [0, %d)",
                (int)b->targets[i], (long long)i, V);
    }
    if (b->pos) {
        for (int64_t i = 0; i < N; i++)
            if (b->pos[i] < 0 || b->pos[i] >= tr->c.seq_len)
                return lt_error(
                    LT_ERR_ARG,
                    "train batch: pos[%lld] = %d: expected [0, %d) (the config's seq_len)",
                    (long long)i, (int)b->pos[i], tr->c.seq_len);
        *pos = b->pos;
    } else {
        for (int64_t i = 0; i < N; i++)
            tr->h_pos[i] = (int32_t)(i % b->T);
        *pos = tr->h_pos;
    }
    return LT_OK;
}

/* The N gathered rows in tmp (stored as dt, end to end) converted into xs by the backend: one
 * call for a device-resident table's rows and a host-kept table's alike (the same values). */
static lt_status embed_rows_to_xs(lt_trainer *tr, lt_dtype dt, int N) {
    const int D = tr->mc.dim;
    lt_weight_view g = {.rows = N, .cols = D, .dtype = dt, .data = tr->tmp};
    const float *got = NULL;
    lt_status st = OP(weight_f32, &g, 0, N, tr->xs, &got);
    if (!st && got != tr->xs) OP(copy, tr->xs, got, sizeof(float) * (size_t)N * D);
    return st;
}

/* A device trainer's embedding in host memory (embd_host): the step's rows gathered on the
 * host and sent up in one copy. Rows as stored go into tmp ([N][D] floats, free until the first
 * layer) and the device converts them, as it converts a device-resident table's gathered rows
 * (embed_fwd below): the same bytes, the same values. fp32 rows (an fp32 tensor, or rows the
 * model's provider converts) go straight into xs. */
static lt_status embed_fwd_host(lt_trainer *tr, const int32_t *htok, int N) {
    const int D = tr->mc.dim;
    char *rows = tr->embd_rows;
    if (!tr->embd_host) {
        for (int n = 0; n < N; n++) {
            lt_status st = lt_model_weight_rows(tr->embd_host_src, LT_W_TOK_EMBD, 0, htok[n], 1,
                                                (float *)rows + (int64_t)n * D);
            if (st) return st;
        }
        OP(set, tr->xs, rows, sizeof(float) * (size_t)N * D);
        return LT_OK;
    }
    const size_t rb = (size_t)lt_dtype_nbytes(tr->embd_host_dt, D);
    const char *tab = tr->embd_host;
    /* the GPU waits for these rows: every thread gathers (4096 rows of 8 KB from a 1 GB table
     * at Llama-3-8B's B2 x T2048) */
#pragma omp parallel for schedule(static) if (N >= 256)
    for (int n = 0; n < N; n++)
        memcpy(rows + rb * (size_t)n, tab + rb * (size_t)htok[n], rb);
    if (tr->embd_host_dt == LT_DTYPE_F32) {
        OP(set, tr->xs, rows, rb * (size_t)N);
        return LT_OK;
    }
    OP(set, tr->tmp, rows, rb * (size_t)N);
    return embed_rows_to_xs(tr, tr->embd_host_dt, N);
}

/* tokens: backend memory; htok: the same on the host */
static lt_status embed_fwd(lt_trainer *tr, const int32_t *tokens, const int32_t *htok, int N) {
    const int D = tr->mc.dim, V = tr->mc.vocab_size;
    if (tr->embd_rows) return embed_fwd_host(tr, htok, N);
    if (!tr->embd16 && !tr->embd_src && !tr->embdq)
        return OP(embedding_fwd, tr->xs, tokens, tr->embd, N, D, V);
    /* a 16-bit copy, or rows of the mapped file (block-quantized GGUF embeddings): each token's
     * row converted by the backend (tokens were checked by check_batch) */
    lazy_src ls = {tr->embd_src, LT_W_TOK_EMBD, 0};
    lt_weight_view w = {.rows = V, .cols = D};
    if (tr->embd_src) {
        w.rows_fn = lazy_rows;
        w.ctx = &ls;
    } else if (tr->embdq) {
        w.dtype = tr->embdq_dt;
        w.data = tr->embdq;
    } else {
        w.dtype = tr->c.base_dtype == LT_DTYPE_BF16 ? LT_DTYPE_BF16 : LT_DTYPE_F16;
        w.data = tr->embd16;
    }
    /* a table in device-resident 16-bit or block-quantized rows: the tokens' rows gathered whole
     * as 32-bit words into tmp ([N][D] floats, free until the first layer), then converted by one
     * call (a call per token costs a kernel launch each on a GPU). The same bytes converted the
     * same way as row by row. */
    const int64_t rb = w.data ? lt_dtype_nbytes(w.dtype, D) : 0;
    if (w.data && rb % 4 == 0 && rb <= (int64_t)sizeof(float) * D && tr->tmp &&
        tr->be->op->gather_rows) {
        OP(gather_rows, tr->tmp, (const float *)w.data, tokens, N, (int)(rb / 4));
        return embed_rows_to_xs(tr, w.dtype, N);
    }
    for (int n = 0; n < N; n++) {
        float *row = tr->xs + (int64_t)n * D;
        const float *got = NULL;
        lt_status st = OP(weight_f32, &w, htok[n], 1, row, &got);
        if (st) return st;
        if (got != row) OP(copy, row, got, sizeof(float) * (size_t)D);
    }
    return LT_OK;
}

/* Forward (all layers, saving for backward unless checkpointing) then, when train, the head,
 * loss and the whole backward. */
static void emit_pieces(lt_trainer *tr, int l); /* lt_trainer_set_grad_hook */

static lt_status run_step(lt_trainer *tr, const lt_batch *b, float grad_scale,
                          lt_loss_stats *out, int train) {
    const int32_t *pos = NULL;
    lt_status st = check_batch(tr, b, &pos);
    if (st) return st;
    const lt_model_config *mc = &tr->mc;
    const int B = b->B, T = b->T, D = mc->dim, V = mc->vocab_size, L = mc->n_layers;
    step_rows sr = {pos, b->seq, NULL, B, T, B * T};
    /* tokens, targets, sr: backend memory; htok, htgt: the host's view of the same */
    const int32_t *tokens = b->tokens, *targets = b->targets;
    const int32_t *htok = b->tokens, *htgt = b->targets;
    int staged = 0;
    /* Positions after a row's last counted target feed no loss and, attention being causal,
     * nothing that does: they are dropped and the rows laid end to end (padding, a trailing
     * prompt without its completion). Same sums for every kept position; kept logits need the
     * whole batch. */
    if (!tr->logits_keep) {
        int32_t *off = tr->h_off;
        off[0] = 0;
        for (int r = 0; r < B; r++) {
            int len = T;
            while (len > 0 && targets[(int64_t)r * T + len - 1] == LT_IGNORE_INDEX)
                len--;
            off[r + 1] = off[r] + len;
        }
        const int n = off[B];
        if (n > 0 && n < B * T) { /* something to drop: copy the kept rows */
            for (int r = 0; r < B; r++) {
                const int64_t src = (int64_t)r * T, at = off[r];
                const size_t len = sizeof(int32_t) * (size_t)(off[r + 1] - at);
                OP(set, tr->c_tok + at, tokens + src, len);
                OP(set, tr->c_tgt + at, targets + src, len);
                OP(set, tr->c_pos + at, pos + src, len);
                if (b->seq) OP(set, tr->c_seq + at, b->seq + src, len);
                if (tr->h_tok != tr->c_tok) { /* a device backend: the host's copies too */
                    memcpy(tr->h_tok + at, tokens + src, len);
                    memcpy(tr->h_tgt + at, targets + src, len);
                }
            }
            stage(tr, tr->c_off, off, B + 1);
            sr = (step_rows){tr->c_pos, b->seq ? tr->c_seq : NULL, tr->c_off, B, T, n};
            tokens = tr->c_tok;
            targets = tr->c_tgt;
            htok = tr->h_tok;
            htgt = tr->h_tgt;
            staged = 1;
        }
    }
    if (!staged && tr->be->device) { /* the batch as it is, into backend memory */
        const int64_t n = (int64_t)B * T;
        stage(tr, tr->c_tok, tokens, n);
        stage(tr, tr->c_tgt, targets, n);
        stage(tr, tr->c_pos, pos, n);
        if (b->seq) stage(tr, tr->c_seq, b->seq, n);
        sr.pos = tr->c_pos;
        sr.seq = b->seq ? tr->c_seq : NULL;
        tokens = tr->c_tok;
        targets = tr->c_tgt;
    }
    const int N = sr.N;
    if (train) tr->micro++;
    tr->training = train;
    st = embed_fwd(tr, tokens, htok, N);
    if (st) return st;
    for (int l = 0; l < L; l++)
        layer_fwd(tr, l, &sr);
    const float *xL = tr->xs + (int64_t)L * N * D;
    OP(rmsnorm_fwd, tr->xf, tr->rstdf, xL, tr->out_norm, N, D, mc->norm_eps);

    int64_t count = lt_batch_count(b);
    float gs = grad_scale != 0.0f ? grad_scale : (count ? 1.0f / (float)count : 0.0f);
    int do_bwd = train && gs != 0.0f;
    /* bf16 compute with a bf16 head (frozen): its products run on it as stored */
    if (tr->headb && tr->dhead) /* a trained head: its values of this step, rounded */
        OP(to_bf16, tr->headb, head_weight(tr), (int64_t)V * D);
    const uint16_t *Hb = !tr->bf16 || tr->head_vb ? NULL
                         : tr->headb              ? tr->headb
                         : tr->head16 && tr->c.base_dtype == LT_DTYPE_BF16 ? tr->head16
                                                                           : NULL;
    const int h16 = Hb != NULL;
    const float *H = tr->head_vb || h16 ? NULL : head_weight(tr);
    if (do_bwd) OP(zero, tr->dxn, sizeof(float) * (size_t)N * D);
    /* The head and the loss run only where a target counts: prompt tokens (masked), padding
     * and packing boundaries are -100 and contribute neither loss nor gradient, so their rows
     * are skipped -- gathered into tmp, their input gradients (in dres, free until the
     * backward) scattered back into dxn. Kept logits need every row. */
    const float *xh = tr->xf;
    const int32_t *th = targets;
    float *dxh = tr->dxn;
    int nh = N;
    if (!tr->logits_keep) {
        int k = 0;
        for (int i = 0; i < N; i++)
            if (htgt[i] != LT_IGNORE_INDEX) {
                tr->h_hidx[k] = i;
                tr->h_htgt[k++] = htgt[i];
            }
        if (k < N) {
            nh = k;
            stage(tr, tr->head_idx, tr->h_hidx, k);
            stage(tr, tr->head_tgt, tr->h_htgt, k);
            OP(gather_rows, tr->tmp, tr->xf, tr->head_idx, nh, D);
            xh = tr->tmp;
            th = tr->head_tgt;
            dxh = tr->dres;
            if (do_bwd) OP(zero, dxh, sizeof(float) * (size_t)nh * D);
        }
    }
    double sum = 0;
    for (int n0 = 0; n0 < nh; n0 += tr->chunk) {
        int nc = nh - n0 < tr->chunk ? nh - n0 : tr->chunk;
        const float *xf = xh + (int64_t)n0 * D;
        if (tr->head_vb) {
            head_fwd_blocked(tr, tr->logits, xf, nc);
        } else if (h16) {
            OP(to_bf16, tr->hb16, xf, (int64_t)nc * D);
            OP(gemm_bf16, 0, 1, nc, V, D, 1.0f, tr->hb16, D, Hb, D, 0.0f, tr->logits, V);
        } else {
            OP(matmul_fwd, tr->logits, xf, H, NULL, nc, D, V);
        }
        if (tr->logits_keep)
            OP(copy, tr->logits_keep + (int64_t)n0 * V, tr->logits, sizeof(float) * (size_t)nc * V);
        /* gs is never 0 here when do_bwd; with !do_bwd dlogits are not wanted. The bf16 head
         * rounds dlogits a few rows at a time, right after the loss wrote them (about 8 MB:
         * still in the cache, where a whole chunk's would be read back from memory). */
        const int sc = !(do_bwd && h16) ? nc : V < (1 << 21) ? (1 << 21) / V : 1;
        for (int s0 = 0; s0 < nc; s0 += sc) {
            const int ns = nc - s0 < sc ? nc - s0 : sc;
            float *lg = tr->logits + (int64_t)s0 * V;
            lt_ce_stats cs;
            st = OP(cross_entropy, do_bwd ? lg : NULL, &cs, lg, th + n0 + s0, ns, V,
                                   LT_IGNORE_INDEX, do_bwd ? gs : 1.0f);
            if (st) return st;
            sum += cs.sum;
            if (do_bwd && h16) OP(to_bf16, tr->hb16 + (int64_t)s0 * V, lg, (int64_t)ns * V);
        }
        if (do_bwd && tr->head_vb) {
            head_dx_blocked(tr, dxh + (int64_t)n0 * D, tr->logits, nc);
        } else if (do_bwd && h16) {
            OP(gemm_bf16, 0, 0, nc, D, V, 1.0f, tr->hb16, V, Hb, D, 1.0f,
                          dxh + (int64_t)n0 * D, D);
            if (tr->dhead) { /* dH += dlogits^T x, both bf16 (xb16 is free here), fp32 sums */
                OP(to_bf16, tr->xb16, xf, (int64_t)nc * D);
                OP(gemm_bf16, 1, 0, V, D, nc, 1.0f, tr->hb16, V, tr->xb16, D, 1.0f, tr->dhead, D);
            }
        } else if (do_bwd)
            OP(matmul_bwd, dxh + (int64_t)n0 * D, tr->dhead, NULL, tr->logits, xf, H, nc, D, V);
    }
    if (do_bwd && dxh != tr->dxn)
        OP(scatter_rows, tr->dxn, dxh, tr->head_idx, nh, D);
    if (tr->logits_keep) {
        tr->logits_B = B;
        tr->logits_T = T;
    }
    if (out) {
        out->loss_sum = sum;
        out->count = count;
        out->loss = count ? (float)(sum / (double)count) : NAN;
        out->positions = N;
    }
    if (!do_bwd) return LT_OK;

    OP(zero, tr->dres, sizeof(float) * (size_t)N * D);
    OP(rmsnorm_bwd, tr->dres, tr->dout_norm, tr->dxn, xL, tr->out_norm, tr->rstdf, N, D);
    int need_embed = tr->dembd != NULL;
    for (int l = L - 1; l >= tr->bwd_stop; l--) {
        if (tr->c.grad_checkpoint) layer_fwd(tr, l, &sr);
        layer_bwd(tr, l, &sr, l > tr->bwd_stop || need_embed);
        emit_pieces(tr, l); /* layer l's gradients are final: a data-parallel run's hook */
    }
    if (need_embed) OP(embedding_bwd, tr->dembd, tr->dres, tokens, N, D);
    emit_pieces(tr, -1);
    if (tr->hook_failed) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lt_errmsg());
        return lt_error(LT_ERR_IO, "trainer: the gradient hook failed: %s", msg);
    }
    return LT_OK;
}

/* One thread pool for the step: OpenBLAS single-threaded and every GEMM split over OpenMP by
 * lt_gemm (two pools on the same cores spin against each other; bench/RESULTS.md). */
static lt_status run(lt_trainer *tr, const lt_batch *b, float grad_scale, lt_loss_stats *out,
                     int train) {
    int token = tr->be->op->step_begin ? OP(step_begin, tr->c.keep_blas_threads) : 0;
#ifdef LT_TEST_PLANT_STEP_ALLOC
    /* A planted defect, compiled only into tests/train/test_plan_planted: one allocation per
     * OpenMP thread in every step, which test_plan's allocation count must catch. */
#pragma omp parallel
    {
        void *volatile planted = lt_malloc(64);
        free(planted);
    }
#endif
    lt_status st = run_step(tr, b, grad_scale, out, train);
    if (tr->be->op->step_end) OP(step_end, token);
    return st;
}

lt_status lt_trainer_accumulate(lt_trainer *tr, const lt_batch *b, float grad_scale,
                                lt_loss_stats *out) {
    return run(tr, b, grad_scale, out, 1);
}

lt_status lt_trainer_eval(lt_trainer *tr, const lt_batch *b, lt_loss_stats *out) {
    return run(tr, b, 0.0f, out, 0);
}

void lt_trainer_zero_grad(lt_trainer *tr) {
    if (tr->c.zero_ranks > 0 && tr->n_tt > 0) { /* the whole span, gaps and padding too */
        OP(zero, tr->tt[0].grad, sizeof(float) * (size_t)tr->zero_span);
        return;
    }
    for (int i = 0; i < tr->n_tt; i++)
        OP(zero, tr->tt[i].grad, sizeof(float) * (size_t)tr->tt[i].numel);
}

/* sum of squares over all gradients: they are carved consecutively, but go tensor by tensor so
 * the alignment padding does not matter */
static double grad_sumsq(const lt_trainer *tr) {
    double ss = 0;
    for (int i = 0; i < tr->n_tt; i++)
        ss += OP(sumsq, tr->tt[i].grad, tr->tt[i].numel);
    return ss;
}

double lt_trainer_grad_norm(const lt_trainer *tr) {
    return sqrt(grad_sumsq(tr));
}

void lt_trainer_grad_span(lt_trainer *tr, float **buf, int64_t *n) {
    *buf = NULL;
    *n = 0;
    if (tr->n_tt < 1) return;
    /* add_tensor_ carves the gradients one after another in LT_MEM_GRADS */
    const lt_tt *last = &tr->tt[tr->n_tt - 1];
    *buf = tr->tt[0].grad;
    *n = (int64_t)(last->grad - tr->tt[0].grad) + last->numel;
    if (tr->c.zero_ranks > 0) *n = tr->zero_span; /* with the zero padding of the shards */
}

/* the layer of a trainable tensor from its name ("...layers.<l>."), -1 for the others */
static int tensor_layer(const char *name) {
    const char *p = strstr(name, "layers.");
    return p ? atoi(p + 7) : -1;
}

int lt_trainer_grad_pieces(const lt_trainer *tr, lt_grad_piece *out, int max) {
    float *span = NULL;
    int64_t total = 0;
    lt_trainer_grad_span((lt_trainer *)tr, &span, &total);
    if (!span || max < 1) return 0;
    const int L = tr->mc.n_layers, nt = tr->n_tt;
    /* the end of tensor i's piece: where the next tensor's gradient starts */
#define PIECE_END(i) ((i) + 1 < nt ? tr->tt[(i) + 1].grad - span : total)
    int n = 0, ok = 1;
    for (int l = L - 1; l >= 0 && ok; l--) {
        int first = -1, last = -1, count = 0;
        for (int i = 0; i < nt; i++)
            if (tensor_layer(tr->tt[i].name) == l) {
                if (first < 0) first = i;
                last = i;
                count++;
            }
        if (!count) continue;
        if (last - first + 1 != count || n >= max) {
            ok = 0;
            break;
        }
        const int64_t off = tr->tt[first].grad - span;
        out[n++] = (lt_grad_piece){l, off, PIECE_END(last) - off};
    }
    if (!ok) {
        out[0] = (lt_grad_piece){-1, 0, total};
        return 1;
    }
    /* the rest: the gaps between the layers' pieces, in offset order */
    int nl = n;
    int64_t at = 0;
    while (at < total) {
        int64_t next = total; /* the start of the first layer piece at or after `at` */
        int64_t skip_to = -1;
        for (int k = 0; k < nl; k++) {
            if (out[k].offset == at) skip_to = at + out[k].n;
            if (out[k].offset >= at && out[k].offset < next) next = out[k].offset;
        }
        if (skip_to >= 0) {
            at = skip_to;
            continue;
        }
        if (n >= max) {
            out[0] = (lt_grad_piece){-1, 0, total};
            return 1;
        }
        out[n++] = (lt_grad_piece){-1, at, next - at};
        at = next;
    }
#undef PIECE_END
    return n;
}

void lt_trainer_set_grad_hook(lt_trainer *tr, const lt_grad_piece *pieces, int n, lt_grad_hook fn,
                              void *ctx) {
    tr->hook = fn;
    tr->hook_ctx = ctx;
    tr->hook_pieces = fn ? pieces : NULL;
    tr->hook_n = fn ? n : 0;
    tr->hook_next = 0;
    tr->hook_failed = 0;
}

/* the hook's pieces finished by the backward of layer l (-1: the end of the backward: all
 * that are left) */
static void emit_pieces(lt_trainer *tr, int l) {
    if (!tr->hook) return;
    float *span = NULL;
    int64_t total = 0;
    lt_trainer_grad_span(tr, &span, &total);
    while (tr->hook_next < tr->hook_n && !tr->hook_failed &&
           (l < 0 || tr->hook_pieces[tr->hook_next].layer == l)) {
        const lt_grad_piece *p = &tr->hook_pieces[tr->hook_next++];
        if (tr->hook(tr->hook_ctx, span + p->offset, p->n)) tr->hook_failed = 1;
    }
}

int lt_trainer_grads_finite(const lt_trainer *tr) {
    for (int i = 0; i < tr->n_tt; i++)
        if (!OP(all_finite, tr->tt[i].grad, tr->tt[i].numel)) return 0;
    return 1;
}

lt_status lt_trainer_step(lt_trainer *tr, float lr, float *grad_norm) {
    if (tr->c.zero_ranks > 0)
        return lt_error(LT_ERR_ARG, "trainer: ZeRO-1 (%d ranks) keeps one shard of the AdamW "
                        "state: step with lt_trainer_step_shard", tr->c.zero_ranks);
    double norm = sqrt(grad_sumsq(tr));
    if (grad_norm) *grad_norm = (float)norm;
    if (tr->c.grad_clip > 0) {
        float coef = lt_op_clip_coef(norm, tr->c.grad_clip);
        if (coef < 1.0f)
            for (int i = 0; i < tr->n_tt; i++)
                OP(scale, tr->tt[i].grad, tr->tt[i].numel, coef);
    }
    lt_adamw_cfg ac = {lr < 0 ? tr->c.lr : lr, tr->c.beta1, tr->c.beta2, tr->c.eps,
                       tr->c.weight_decay};
    tr->step++;
    for (int i = 0; i < tr->n_tt; i++)
        OP(adamw, tr->tt[i].value, tr->tt[i].grad, tr->tt[i].m, tr->tt[i].v, tr->tt[i].numel, &ac,
           tr->step);
    lt_trainer_zero_grad(tr);
    return LT_OK;
}

/* ---- ZeRO-1 ------------------------------------------------------------------------------- */
void lt_trainer_zero_shard(const lt_trainer *tr, int64_t *offset, int64_t *n, int64_t *span) {
    const int on = tr->c.zero_ranks > 0 && tr->n_tt > 0;
    if (offset) *offset = on ? tr->zero_off : 0;
    if (n) *n = on ? tr->zero_n : 0;
    if (span) *span = on ? tr->zero_span : 0;
}

double lt_trainer_shard_sumsq(const lt_trainer *tr) {
    if (tr->c.zero_ranks < 1 || tr->n_tt < 1) return 0;
    return OP(sumsq, tr->tt[0].grad + tr->zero_off, tr->zero_n);
}

lt_status lt_trainer_step_shard(lt_trainer *tr, float lr, double grad_norm) {
    if (tr->c.zero_ranks < 1)
        return lt_error(LT_ERR_ARG, "trainer: lt_trainer_step_shard without ZeRO-1 (zero_ranks 0)");
    if (tr->n_tt < 1) {
        tr->step++;
        return LT_OK;
    }
    float *span = tr->tt[0].grad;
    const int64_t lo = tr->zero_off, hi = tr->zero_off + tr->zero_n;
    if (tr->c.grad_clip > 0) { /* as lt_trainer_step, the norm being every rank's */
        float coef = lt_op_clip_coef(grad_norm, tr->c.grad_clip);
        if (coef < 1.0f) OP(scale, span + lo, tr->zero_n, coef);
    }
    lt_adamw_cfg ac = {lr < 0 ? tr->c.lr : lr, tr->c.beta1, tr->c.beta2, tr->c.eps,
                       tr->c.weight_decay};
    tr->step++;
    for (int i = 0; i < tr->n_tt; i++) {
        const lt_tt *t = &tr->tt[i];
        const int64_t g0 = t->grad - span;
        const int64_t a = g0 > lo ? g0 : lo, b = g0 + t->numel < hi ? g0 + t->numel : hi;
        if (a >= b) continue;
        OP(adamw, t->value + (a - g0), span + a, tr->zero_m + (a - lo), tr->zero_v + (a - lo),
           b - a, &ac, tr->step);
        /* the updated values where the gradients were: what the all-gather sends */
        OP(copy, span + a, t->value + (a - g0), sizeof(float) * (size_t)(b - a));
    }
    return LT_OK;
}

lt_status lt_trainer_load_span(lt_trainer *tr) {
    if (tr->c.zero_ranks < 1)
        return lt_error(LT_ERR_ARG, "trainer: lt_trainer_load_span without ZeRO-1 (zero_ranks 0)");
    if (tr->n_tt < 1) return LT_OK;
    float *span = tr->tt[0].grad;
    /* adapters' values are carved like their gradients (the same sizes and alignment, one
     * block): one copy of the span then, gaps included (zero in both); else tensor by tensor */
    int flat = 1;
    for (int i = 1; i < tr->n_tt && flat; i++)
        flat = tr->tt[i].value - tr->tt[0].value == tr->tt[i].grad - span;
    if (flat) {
        const lt_tt *last = &tr->tt[tr->n_tt - 1];
        OP(copy, tr->tt[0].value, span,
           sizeof(float) * (size_t)(last->grad - span + last->numel));
    } else {
        for (int i = 0; i < tr->n_tt; i++)
            OP(copy, tr->tt[i].value, tr->tt[i].grad, sizeof(float) * (size_t)tr->tt[i].numel);
    }
    OP(zero, span, sizeof(float) * (size_t)tr->zero_span); /* gradients and gaps: zero again */
    return LT_OK;
}

lt_status lt_trainer_shard_to_span(lt_trainer *tr, lt_tensor_part part) {
    if (tr->c.zero_ranks < 1 || (part != LT_TENSOR_ADAM_M && part != LT_TENSOR_ADAM_V))
        return lt_error(LT_ERR_ARG, "trainer: lt_trainer_shard_to_span: ZeRO-1 and adam_m / "
                        "adam_v only");
    if (tr->n_tt < 1) return LT_OK;
    OP(copy, tr->tt[0].grad + tr->zero_off, part == LT_TENSOR_ADAM_M ? tr->zero_m : tr->zero_v,
       sizeof(float) * (size_t)tr->zero_n);
    return LT_OK;
}

void lt_trainer_get_counters(const lt_trainer *tr, int64_t *step, uint64_t *micro) {
    if (step) *step = tr->step;
    if (micro) *micro = tr->micro;
}

void lt_trainer_set_counters(lt_trainer *tr, int64_t step, uint64_t micro) {
    tr->step = step;
    tr->micro = micro;
}

int64_t lt_trainer_step_count(const lt_trainer *tr) {
    return tr->step;
}
const float *lt_trainer_logits(const lt_trainer *tr) {
    return tr->logits_keep;
}
const lt_train_plan_t *lt_trainer_plan(const lt_trainer *tr) {
    return &tr->plan;
}
const lt_train_config *lt_trainer_config(const lt_trainer *tr) {
    return &tr->c;
}
const lt_model_config *lt_trainer_model_config(const lt_trainer *tr) {
    return &tr->mc;
}
void lt_trainer_mem(const lt_trainer *tr, int64_t *bytes, int64_t *n_allocs) {
    if (bytes) memcpy(bytes, tr->mem_bytes, sizeof tr->mem_bytes);
    if (n_allocs) *n_allocs = tr->n_allocs;
}

int lt_trainer_n_tensors(const lt_trainer *tr) {
    return tr->n_tt;
}

lt_status lt_trainer_tensor(const lt_trainer *tr, int i, lt_train_tensor *out) {
    if (i < 0 || i >= tr->n_tt)
        return lt_error(LT_ERR_ARG, "trainer tensor index %d: expected [0, %d)", i, tr->n_tt);
    const lt_tt *t = &tr->tt[i];
    out->index = i;
    out->name = t->name;
    out->ndim = t->ndim;
    out->shape[0] = t->shape[0];
    out->shape[1] = t->shape[1];
    out->numel = t->numel;
    out->span_offset = t->grad - tr->tt[0].grad;
    return LT_OK;
}

lt_status lt_trainer_find(const lt_trainer *tr, const char *name, lt_train_tensor *out) {
    for (int i = 0; i < tr->n_tt; i++) {
        const char *n = tr->tt[i].name;
        size_t ln = strlen(n);
        /* accept "<magnitude>.weight" too (PEFT versions differ in this key) */
        if (!strcmp(n, name) || (!strncmp(n, name, ln) && !strcmp(name + ln, ".weight") &&
                                 strstr(n, "lora_magnitude_vector")))
            return lt_trainer_tensor(tr, i, out);
    }
    return lt_error(LT_ERR_NOTFOUND, "trainer: no trainable tensor named '%s'", name);
}

const char *lt_tensor_part_name(lt_tensor_part part) {
    static const char *const names[] = {"value", "grad", "adam_m", "adam_v"};
    return (unsigned)part < 4 ? names[part] : "?";
}

/* the backend buffer of part of tensor i, after checking i, part and n */
static lt_status part_of(const lt_trainer *tr, int i, lt_tensor_part part, int64_t offset,
                         int64_t n, float **buf) {
    if (i < 0 || i >= tr->n_tt)
        return lt_error(LT_ERR_ARG, "trainer tensor index %d: expected [0, %d)", i, tr->n_tt);
    const lt_tt *t = &tr->tt[i];
    switch (part) {
    case LT_TENSOR_VALUE: *buf = t->value; break;
    case LT_TENSOR_GRAD: *buf = t->grad; break;
    case LT_TENSOR_ADAM_M: *buf = t->m; break;
    case LT_TENSOR_ADAM_V: *buf = t->v; break;
    default: return lt_error(LT_ERR_ARG, "trainer tensor '%s': unknown part %d", t->name, (int)part);
    }
    if (offset < 0 || n < 0 || offset > t->numel || n > t->numel - offset)
        return lt_error(LT_ERR_ARG,
                        "trainer tensor '%s' %s: values [%lld, %lld) are outside its %lld",
                        t->name, lt_tensor_part_name(part), (long long)offset,
                        (long long)(offset + n), (long long)t->numel);
    *buf += offset;
    return LT_OK;
}

/* ZeRO-1: the moments of tensor i's values [offset, offset + n) that lie in the rank's shard:
 * *m (zero_m or zero_v at the first of them), *skip values before it, *len of them */
static lt_status shard_part(const lt_trainer *tr, int i, lt_tensor_part part, int64_t offset,
                            int64_t n, float **m, int64_t *skip, int64_t *len) {
    float *whole = NULL;
    lt_status st = part_of(tr, i, LT_TENSOR_GRAD, offset, n, &whole); /* checks i and range */
    if (st) return st;
    const int64_t g0 = tr->tt[i].grad - tr->tt[0].grad + offset;
    const int64_t lo = tr->zero_off, hi = tr->zero_off + tr->zero_n;
    const int64_t a = g0 > lo ? g0 : lo, b = g0 + n < hi ? g0 + n : hi;
    *skip = a - g0;
    *len = b > a ? b - a : 0;
    *m = (part == LT_TENSOR_ADAM_M ? tr->zero_m : tr->zero_v) + (a - lo);
    return LT_OK;
}
#define IS_MOMENT(part) ((part) == LT_TENSOR_ADAM_M || (part) == LT_TENSOR_ADAM_V)

lt_status lt_trainer_read(const lt_trainer *tr, int i, lt_tensor_part part, int64_t offset,
                          float *dst, int64_t n) {
    if (tr->c.zero_ranks > 0 && IS_MOMENT(part)) {
        float *m = NULL;
        int64_t skip = 0, len = 0;
        lt_status st = shard_part(tr, i, part, offset, n, &m, &skip, &len);
        if (st) return st;
        if (len != n)
            return lt_error(LT_ERR_ARG,
                            "trainer tensor '%s' %s: values [%lld, %lld) are not all in this "
                            "rank's ZeRO-1 shard (rank %d of %d holds span floats [%lld, %lld))",
                            tr->tt[i].name, lt_tensor_part_name(part), (long long)offset,
                            (long long)(offset + n), tr->c.zero_rank, tr->c.zero_ranks,
                            (long long)tr->zero_off, (long long)(tr->zero_off + tr->zero_n));
        if (n > 0) OP(get, dst, m, sizeof(float) * (size_t)n);
        return LT_OK;
    }
    float *buf = NULL;
    lt_status st = part_of(tr, i, part, offset, n, &buf);
    if (st) return st;
    OP(get, dst, buf, sizeof(float) * (size_t)n);
    return LT_OK;
}

lt_status lt_trainer_write(lt_trainer *tr, int i, lt_tensor_part part, int64_t offset,
                           const float *src, int64_t n) {
    if (tr->c.zero_ranks > 0 && IS_MOMENT(part)) { /* the shard's part; the rest is dropped */
        float *m = NULL;
        int64_t skip = 0, len = 0;
        lt_status st = shard_part(tr, i, part, offset, n, &m, &skip, &len);
        if (st) return st;
        if (len > 0) OP(set, m, src + skip, sizeof(float) * (size_t)len);
        return LT_OK;
    }
    float *buf = NULL;
    lt_status st = part_of(tr, i, part, offset, n, &buf);
    if (st) return st;
    OP(set, buf, src, sizeof(float) * (size_t)n);
    return LT_OK;
}

lt_status lt_trainer_set(lt_trainer *tr, const char *name, const float *data, int64_t n) {
    lt_train_tensor t;
    lt_status st = lt_trainer_find(tr, name, &t);
    if (st) return st;
    if (n != t.numel)
        return lt_error(LT_ERR_ARG, "trainer set '%s': expected %lld values, got %lld", name,
                        (long long)t.numel, (long long)n);
    return lt_trainer_write(tr, t.index, LT_TENSOR_VALUE, 0, data, n);
}

/* ---- create / free ------------------------------------------------------------------------ */
/* With a released base nothing may point into the model: every frozen matrix, the embedding
 * and the head must have their 16-bit copy (norms / biases point at rounded copies in WEIGHTS,
 * set by the layout). Checked before releasing, so a layout bug cannot become a dangling read. */
static lt_status detach_base(lt_trainer *tr) {
    const int L = tr->mc.n_layers;
    for (int i = 0; i < L * LT_N_TARGETS; i++) {
        if (!tr->lin[i].W16 && !tr->lin[i].q4)
            return lt_error(LT_ERR_INTERNAL, "trainer: layer %d %s has no 16-bit copy",
                            i / LT_N_TARGETS, lt_target_name(i % LT_N_TARGETS));
        tr->lin[i].W = NULL;
    }
    if (!tr->embd16 || !tr->head16 || tr->dembd || tr->dhead)
        return lt_error(LT_ERR_INTERNAL, "trainer: embedding / head not copied to 16-bit");
    tr->embd = NULL;
    tr->head = NULL;
    return LT_OK;
}

/* ---- a lazy model: the trainer's copies are filled from the mapped file, one tensor at a
 * time, each tensor's pages dropped from the resident set once copied ---- */
static int own_weight(const lt_trainer *tr, const void *p) {
    const char *b = (const char *)tr->block[LT_MEM_WEIGHTS];
    const int64_t n = tr->mem_bytes[LT_MEM_WEIGHTS] + tr->weights_host_tail;
    return p && b && (const char *)p >= b && (const char *)p < b + n;
}

/* a vector (norm, bias) copy: fp32, rounded through the 16-bit base when half */
static lt_status fill_vec(lt_trainer *tr, lt_weight_id id, int l, const float *dst, int64_t n) {
    float *d = (float *)(uintptr_t)dst;
    lt_status st = lt_model_weight_rows(tr->m, id, l, 0, 1, d);
    for (int64_t i = 0; !st && tr->half && i < n; i++)
        d[i] = lt_round16_(d[i], tr->c.base_dtype);
    return st;
}

/* a matrix copy: rows x cols into an fp32 (W32) or 16-bit (W16) copy, staged through wdeq in
 * row chunks (or one row in a small buffer when wdeq is smaller) */
static lt_status fill_mat(lt_trainer *tr, lt_weight_id id, int l, int64_t rows, int64_t cols,
                          float *W32, uint16_t *W16) {
    lt_status st = LT_OK;
    if (W32) {
        st = lt_model_weight_rows(tr->m, id, l, 0, rows, W32);
    } else {
        float *stage = tr->wdeq;
        int64_t per = tr->wdeq_n / cols;
        if (per < 1) {
            stage = lt_malloc(sizeof(float) * (size_t)cols);
            if (!stage) return lt_error(LT_ERR_NOMEM, "trainer: out of memory");
            per = 1;
        }
        for (int64_t r = 0; r < rows && !st; r += per) {
            int64_t n = rows - r < per ? rows - r : per;
            st = lt_model_weight_rows(tr->m, id, l, r, n, stage);
            if (!st) lt_to16_(W16 + r * cols, stage, n * cols, tr->c.base_dtype);
        }
        if (stage != tr->wdeq) free(stage);
    }
    lt_model_weight_evict(tr->m, id, l);
    return st;
}

static lt_status fill_from_file(lt_trainer *tr) {
    const int L = tr->mc.n_layers, D = tr->mc.dim, V = tr->mc.vocab_size;
    const lt_weight_id bids[3] = {LT_W_BQ, LT_W_BK, LT_W_BV};
    const lt_weight_id *wids = lt_target_wids_;
    lt_status st = LT_OK;
    char what[128];
    for (int l = 0; l < L && !st; l++) {
        snprintf(what, sizeof what, "trainer: layer %d norms", l);
        if ((st = fill_vec(tr, LT_W_ATTN_NORM, l, tr->attn_norm[l], D)) ||
            (st = fill_vec(tr, LT_W_FFN_NORM, l, tr->ffn_norm[l], D)))
            break;
        for (int t = 0; t < LT_N_TARGETS && !st; t++) {
            lt_lin *li = &tr->lin[l * LT_N_TARGETS + t];
            snprintf(what, sizeof what, "trainer: layer %d %s", l, lt_target_name(t));
            if (t < 3 && li->bias && (st = fill_vec(tr, bids[t], l, li->bias, li->OC))) break;
            if (li->rsrc) { /* read per use: make sure its rows convert */
                st = lt_model_weight_rows(tr->m, li->wid, l, 0, 1, tr->wdeq);
            } else if (li->q4) {
                st = lt_model_weight_rows(tr->m, wids[t], l, 0, li->OC, tr->wdeq);
                if (!st) st = lt_nf4_quantize(tr->wdeq, li->q4, tr->nf4_scr);
                lt_model_weight_evict(tr->m, wids[t], l);
            } else if (own_weight(tr, li->W16)) {
                st = fill_mat(tr, wids[t], l, li->OC, li->C, NULL, li->W16);
            } else if (own_weight(tr, li->W)) {
                st = fill_mat(tr, wids[t], l, li->OC, li->C, li->W, NULL);
            }
        }
    }
    if (!st) {
        snprintf(what, sizeof what, "trainer: final norm");
        st = fill_vec(tr, LT_W_OUT_NORM, 0, tr->out_norm, D);
    }
    if (!st) {
        snprintf(what, sizeof what, "trainer: token embedding");
        if (tr->embd_src) st = lt_model_weight_rows(tr->m, LT_W_TOK_EMBD, 0, 0, 1, tr->wdeq);
        else if (own_weight(tr, tr->embd16)) st = fill_mat(tr, LT_W_TOK_EMBD, 0, V, D, NULL, tr->embd16);
        else if (own_weight(tr, tr->embd)) st = fill_mat(tr, LT_W_TOK_EMBD, 0, V, D, (float *)(uintptr_t)tr->embd, NULL);
    }
    if (!st && !tr->mc.tied_embeddings) {
        snprintf(what, sizeof what, "trainer: lm_head");
        if (tr->head_src) st = lt_model_weight_rows(tr->m, LT_W_LM_HEAD, 0, 0, 1, tr->wdeq);
        else if (own_weight(tr, tr->head16)) st = fill_mat(tr, LT_W_LM_HEAD, 0, V, D, NULL, tr->head16);
        else if (own_weight(tr, tr->head)) st = fill_mat(tr, LT_W_LM_HEAD, 0, V, D, (float *)(uintptr_t)tr->head, NULL);
    }
    return st ? lt_error_wrap(st, what) : LT_OK;
}

lt_status lt_trainer_create(lt_model *m, const lt_train_config *cin, lt_trainer **out) {
    return lt_trainer_create_on(m, cin, lt_backend_cpu(), out);
}

/* The values a trainer starts from, computed on the host and written with be's set (tr->be
 * reads the weights: the CPU backend while a device trainer's weights are still staged): rope
 * tables; LoRA init (A Kaiming-uniform, B zero) and DoRA magnitude = row norms of the base
 * weight (what the model uses: the rounded copy for 16-bit bases) since B A = 0 at init. */
static lt_status init_values(lt_trainer *tr, const lt_backend *be, const lt_model *m) {
    const lt_train_config *c = &tr->c;
    const int HD = m->config.head_dim;
    int64_t nmax = (int64_t)c->seq_len * (HD / 2);
    for (int i = 0; i < m->config.n_layers * LT_N_TARGETS; i++) {
        const lt_lin *li = &tr->lin[i];
        if (li->A && (int64_t)c->lora.r * (li->C + li->OC) > nmax)
            nmax = (int64_t)c->lora.r * (li->C + li->OC);
        if (li->mag && li->OC > nmax) nmax = li->OC;
    }
    float *h = lt_malloc(sizeof(float) * (size_t)(2 * nmax));
    if (!h) return lt_error(LT_ERR_NOMEM, "trainer: out of memory");
    const size_t nr = sizeof(float) * (size_t)c->seq_len * (HD / 2);
    lt_rope_tables(h, h + nmax, m->inv_freq, c->seq_len, HD);
    be->op->set(be, tr->cos_t, h, nr);
    be->op->set(be, tr->sin_t, h + nmax, nr);
    for (int i = 0; i < m->config.n_layers * LT_N_TARGETS; i++) {
        lt_lin *li = &tr->lin[i];
        if (!li->A) continue;
        const int r = c->lora.r;
        uint64_t seed = c->seed * 0x100000001B3ull + (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
        lt_lora_init(h, h + (int64_t)r * li->C, r, li->C, li->OC, seed);
        be->op->set(be, li->A, h, sizeof(float) * (size_t)r * li->C);
        be->op->set(be, li->B, h + (int64_t)r * li->C, sizeof(float) * (size_t)li->OC * r);
        if (li->mag) {
            const float *W = weight(tr, li);
            for (int o = 0; o < li->OC; o++) {
                double s = 0;
                for (int k = 0; k < li->C; k++)
                    s += (double)W[(int64_t)o * li->C + k] * W[(int64_t)o * li->C + k];
                h[o] = (float)sqrt(s);
            }
            be->op->set(be, li->mag, h, sizeof(float) * (size_t)li->OC);
        }
    }
    free(h);
    return LT_OK;
}

/* ---- a device backend: what the host prepared, moved into backend memory ---------------- */
/* p (bytes of host memory) as backend memory: inside the staged WEIGHTS block, the same offset
 * of the backend's block; anything else (the lt_model's weights, the mapped file) a device copy
 * made once per source pointer (tied embeddings, full FT's tensors and lin weights share it). */
static lt_status to_dev(lt_trainer *tr, const void *stage, int64_t wbytes, const void *p,
                        size_t bytes, void **out) {
    const lt_backend *be = tr->be;
    *out = NULL;
    if (!p) return LT_OK;
    const char *c = (const char *)p, *s0 = (const char *)stage;
    if (stage && c >= s0 && c < s0 + wbytes) {
        *out = (char *)tr->block[LT_MEM_WEIGHTS] + (c - s0);
        return LT_OK;
    }
    for (int i = 0; i < tr->n_dev_copy; i++)
        if (tr->dev_copy_src[i] == p) {
            *out = tr->dev_copy[i];
            return LT_OK;
        }
    if (tr->n_dev_copy == tr->cap_dev_copy) {
        int cap = tr->cap_dev_copy ? 2 * tr->cap_dev_copy : 64;
        void **d = lt_realloc(tr->dev_copy, sizeof(void *) * (size_t)cap);
        if (d) tr->dev_copy = d;
        const void **sv = d ? lt_realloc(tr->dev_copy_src, sizeof(void *) * (size_t)cap) : NULL;
        if (!d || !sv) return lt_error(LT_ERR_NOMEM, "trainer: out of memory");
        tr->dev_copy_src = sv;
        tr->cap_dev_copy = cap;
    }
    void *d = be->op->alloc(be, bytes);
    if (!d)
        return lt_error(LT_ERR_NOMEM, "trainer: %s: out of device memory for a %lld-byte weight",
                        be->name, (long long)bytes);
    be->op->set(be, d, p, bytes);
    tr->dev_copy[tr->n_dev_copy] = d;
    tr->dev_copy_src[tr->n_dev_copy++] = p;
    *out = d;
    tr->mem_bytes[LT_MEM_WEIGHTS] += (int64_t)((bytes + 63) & ~(size_t)63);
    tr->n_allocs++;
    return LT_OK;
}
#define TO_DEV(field, bytes)                                                                       \
    do {                                                                                           \
        void *d_;                                                                                  \
        if ((st = to_dev(tr, stage, wbytes, (field), (size_t)(bytes), &d_))) return st;            \
        (field) = d_; /* void * converts to the field's pointer type */                           \
    } while (0)

/* A weight the mapped file gives only through the model's provider (a GGUF block type,
 * interleaved q/k rows, an unaligned or other dtype): kept in its block type when the backend
 * reads it and its rows are in the model's order, else converted to fp32 once. */
static lt_status lazy_to_dev(lt_trainer *tr, const lt_model *src, lt_weight_id id, int layer,
                             int64_t rows, int64_t cols, const void **q, lt_dtype *qdt,
                             const float **w32) {
    const lt_backend *be = tr->be;
    const lt_tensor_view *v = lt_model_weight_view(src, id, layer);
    lt_status st;
    if (v && v->data && !lt_model_weight_interleaved(src, id) && v->dtype != LT_DTYPE_F32 &&
        be->op->supports_dtype && be->op->supports_dtype(be, v->dtype)) {
        void *d;
        if ((st = to_dev(tr, NULL, 0, v->data, v->nbytes, &d))) return st;
        *q = d;
        *qdt = v->dtype;
        return LT_OK;
    }
    float *h = lt_malloc(sizeof(float) * (size_t)(rows * cols));
    if (!h) return lt_error(LT_ERR_NOMEM, "trainer: out of memory converting %s",
                            lt_weight_id_name(id));
    st = lt_model_weight_rows(src, id, layer, 0, rows, h);
    void *d = NULL;
    /* the host buffer is freed below: a fresh source pointer, never looked up again */
    if (!st) st = to_dev(tr, NULL, 0, h, sizeof(float) * (size_t)(rows * cols), &d);
    if (!st) tr->dev_copy_src[tr->n_dev_copy - 1] = NULL;
    free(h);
    *w32 = d;
    return st;
}

/* Points every weight the step reads at backend memory: the staged WEIGHTS block goes up in
 * one set, host weights outside it (fp32 model weights, the mapped file's tensors used in
 * place) as device copies, NF4 descriptors stay on the host with device arrays. */
/* The token embedding a device trainer keeps in host memory (lt_train_embd_host_): the 16-bit
 * copy carved at the end of the staged WEIGHTS block (moved into its own allocation), or the
 * mapped file's tensor as stored where the device converts its dtype, else the model's rows
 * converted on the host. */
static lt_status embd_to_host(lt_trainer *tr, const char *stage, int64_t wbytes) {
    const lt_backend *be = tr->be;
    const int64_t D = tr->mc.dim, V = tr->mc.vocab_size;
    const int64_t NB = (int64_t)tr->c.batch_size * tr->c.seq_len;
    const lt_dtype d16 = tr->c.base_dtype == LT_DTYPE_BF16 ? LT_DTYPE_BF16 : LT_DTYPE_F16;
    tr->embd_rows = lt_malloc(sizeof(float) * (size_t)(NB * D));
    if (!tr->embd_rows) return lt_error(LT_ERR_NOMEM, "trainer: out of host memory");
    const char *e16 = (const char *)tr->embd16;
    if (e16 && stage && e16 >= stage && e16 < stage + wbytes) {
        tr->embd_host_own = lt_malloc((size_t)(V * D * 2));
        if (!tr->embd_host_own) return lt_error(LT_ERR_NOMEM, "trainer: out of host memory");
        memcpy(tr->embd_host_own, e16, (size_t)(V * D * 2));
        tr->embd_host = tr->embd_host_own;
        tr->embd_host_dt = d16;
    } else if (e16) {
        tr->embd_host = e16;
        tr->embd_host_dt = d16;
    } else if (tr->embd_src) {
        const lt_model *src = tr->embd_src;
        const lt_tensor_view *v = lt_model_weight_view(src, LT_W_TOK_EMBD, 0);
        if (v && v->data && !lt_model_weight_interleaved(src, LT_W_TOK_EMBD) &&
            (v->dtype == LT_DTYPE_F32 ||
             (be->op->supports_dtype && be->op->supports_dtype(be, v->dtype)))) {
            tr->embd_host = v->data;
            tr->embd_host_dt = v->dtype;
        } else {
            tr->embd_host_src = src;
        }
    } else {
        tr->embd_host = tr->embd; /* fp32 in the mapped file */
        tr->embd_host_dt = LT_DTYPE_F32;
    }
    tr->embd16 = NULL;
    tr->embd = NULL;
    tr->embd_src = NULL;
    return LT_OK;
}

static lt_status move_to_device(lt_trainer *tr, const void *stage, int64_t wbytes,
                                int64_t host_tail) {
    const lt_backend *be = tr->be;
    const int L = tr->mc.n_layers, D = tr->mc.dim;
    const int64_t V = tr->mc.vocab_size;
    lt_status st;
    if (stage && wbytes > host_tail)
        be->op->set(be, tr->block[LT_MEM_WEIGHTS], stage, (size_t)(wbytes - host_tail));
    if (lt_train_embd_host_(&tr->mc, &tr->c) &&
        (st = embd_to_host(tr, (const char *)stage, wbytes)))
        return st;
    for (int i = 0; i < L * LT_N_TARGETS; i++) {
        lt_lin *li = &tr->lin[i];
        const int64_t n = (int64_t)li->OC * li->C;
        TO_DEV(li->W, n * 4);
        TO_DEV(li->W16, n * 2);
        TO_DEV(li->bias, li->OC * 4);
        if (li->q4) {
            lt_nf4 *q = &tr->q4_host[i];
            *q = *li->q4;
            lt_nf4_sizes_t qs;
            lt_nf4_sizes(q->n, q->double_quant, &qs);
            TO_DEV(q->codes, qs.codes_bytes);
            TO_DEV(q->absmax, qs.absmax_bytes);
            TO_DEV(q->qabsmax, qs.qabsmax_bytes);
            TO_DEV(q->absmax2, qs.absmax2_bytes);
            li->q4 = q;
        }
        if (li->rsrc) {
            const float *w32 = NULL;
            if ((st = lazy_to_dev(tr, li->rsrc, li->wid, li->layer, li->OC, li->C, &li->Wq,
                                  &li->Wq_dt, &w32)))
                return st;
            li->W = (float *)(uintptr_t)w32;
            li->rsrc = NULL;
        }
    }
    for (int l = 0; l < L; l++) {
        TO_DEV(tr->attn_norm[l], D * 4);
        TO_DEV(tr->ffn_norm[l], D * 4);
    }
    TO_DEV(tr->out_norm, D * 4);
    const int tied = tr->mc.tied_embeddings;
    TO_DEV(tr->embd, V * D * 4);
    TO_DEV(tr->embd16, V * D * 2);
    TO_DEV(tr->head, V * D * 4);
    TO_DEV(tr->head16, V * D * 2);
    TO_DEV(tr->headb, V * D * 2); /* bf16 compute's head copy: carved in WEIGHTS, filled later */
    if (tr->embd_src) {
        if ((st = lazy_to_dev(tr, tr->embd_src, LT_W_TOK_EMBD, 0, V, D, &tr->embdq,
                              &tr->embdq_dt, &tr->embd)))
            return st;
        tr->embd_src = NULL;
    }
    if (tied && tr->head_src) {
        tr->headq = tr->embdq;
        tr->headq_dt = tr->embdq_dt;
        tr->head = tr->embd;
        tr->head_src = NULL;
    } else if (tr->head_src) {
        if ((st = lazy_to_dev(tr, tr->head_src, tr->head_wid, 0, V, D, &tr->headq,
                              &tr->headq_dt, &tr->head)))
            return st;
        tr->head_src = NULL;
    }
    tr->nf4_scr = NULL; /* creation's quantization scratch: staged, no longer needed */
    /* full FT: the trained tensors are the model's weights; train their device copies */
    const char *tb = (const char *)tr->block[LT_MEM_TRAINABLE];
    for (int i = 0; i < tr->n_tt; i++) {
        lt_tt *t = &tr->tt[i];
        const char *v = (const char *)t->value;
        if (tb && v >= tb && v < tb + tr->mem_bytes[LT_MEM_TRAINABLE]) continue;
        t->model_value = t->value;
        TO_DEV(t->value, t->numel * 4);
    }
    return LT_OK;
}
#undef TO_DEV

lt_status lt_trainer_create_on(lt_model *m, const lt_train_config *cin, const lt_backend *be,
                               lt_trainer **out) {
    *out = NULL;
    if (!be) be = lt_backend_cpu();
    lt_train_config cn = *cin;
    lt_train_config_normalize_(&cn);
    const lt_train_config *c = &cn;
    if (c->compute_dtype == LT_DTYPE_BF16 && !lt_backend_supports(be, LT_OP_GEMM_BF16, 0))
        return lt_error(LT_ERR_UNSUPPORTED,
                        "trainer: compute_dtype BF16: the %s backend has no bf16 products "
                        "(gemm_bf16); use F32",
                        be->name);
    const int lazy = lt_model_is_lazy(m);
    lt_status st = lazy ? LT_OK : lt_model_check_weights(m, "trainer");
    if (st) return st;
    lt_train_plan_t plan;
    st = lt_train_plan_model(m, c, &plan);
    if (st) return st;
    const lt_base_files files = {.lazy = m}, *src = lazy ? &files : NULL;
    int64_t bytes[LT_MEM_COUNT] = {0}, nalloc = 0;
    /* the struct is host memory (counted as workspace); the blocks are the backend's */
    const lt_backend *host = lt_backend_cpu();
    lt_trainer *tr = rec_alloc(host, bytes, &nalloc, LT_MEM_WORKSPACE, (int64_t)sizeof(lt_trainer));
    if (!tr) return lt_error(LT_ERR_NOMEM, "trainer: out of memory");
    memset(tr, 0, sizeof *tr);
    int64_t lay[LT_MEM_COUNT], ws_head = 0;
    lt_layout_src_info si;
    st = lt_trainer_layout_(NULL, &m->config, src, c, lay, NULL, NULL, &ws_head, &si);
    if (st) {
        host->op->free(host, tr);
        return st;
    }
    tr->be = be;
    /* a device leaves out the end of WEIGHTS that stays on the host (embd_to_host) */
    const int64_t host_tail = be->device ? si.host_embd_bytes : 0;
    for (int k = 0; k < LT_MEM_COUNT; k++) {
        const int64_t nb = lay[k] - (k == LT_MEM_WEIGHTS ? host_tail : 0);
        if (nb <= 0) continue;
        tr->block[k] = rec_alloc(be, bytes, &nalloc, k, nb);
        if (!tr->block[k]) {
            lt_trainer_free(tr);
            return lt_error(LT_ERR_NOMEM, "trainer: %s: out of memory allocating %lld bytes of %s",
                            be->name, (long long)nb, lt_mem_category_name((lt_mem_category)k));
        }
    }
    tr->weights_host_tail = host_tail;
    tr->m = m;
    tr->mc = m->config;
    tr->c = *c;
    tr->plan = plan;
    memcpy(tr->mem_bytes, bytes, sizeof bytes);
    tr->n_allocs = nalloc;
    /* A device backend: the layout carves the workspace's head in host memory and the WEIGHTS
     * block into a host staging copy (the 16-bit / NF4 copies are made there), which
     * move_to_device uploads; the index arrays get host twins. */
    const int dev = be->device;
    void *stage = NULL;
    const int64_t NB = (int64_t)c->batch_size * c->seq_len;
    if (dev) {
        tr->ws_head = ws_head;
        tr->ws_host = lt_malloc((size_t)(ws_head ? ws_head : 64));
        tr->h_idx = lt_malloc(sizeof(int32_t) * (size_t)(5 * NB + c->batch_size + 1));
        tr->q4_host = lt_calloc((size_t)m->config.n_layers * LT_N_TARGETS, sizeof(lt_nf4));
        stage = lay[LT_MEM_WEIGHTS] ? lt_malloc((size_t)lay[LT_MEM_WEIGHTS]) : NULL;
        if (!tr->ws_host || !tr->h_idx || !tr->q4_host || (lay[LT_MEM_WEIGHTS] && !stage)) {
            free(stage);
            lt_trainer_free(tr);
            return lt_error(LT_ERR_NOMEM, "trainer: out of host memory");
        }
        for (int k = 0; k < LT_MEM_COUNT; k++)
            if (tr->block[k] && k != LT_MEM_WEIGHTS) be->op->zero(be, tr->block[k], (size_t)lay[k]);
    }
    void *dev_weights = dev ? tr->block[LT_MEM_WEIGHTS] : NULL;
    if (dev) tr->block[LT_MEM_WEIGHTS] = stage; /* until move_to_device */
    /* the carving pass writes only WEIGHTS and the head of WORKSPACE (trainer_internal.h) */
    if (tr->block[LT_MEM_WEIGHTS])
        memset(tr->block[LT_MEM_WEIGHTS], 0, (size_t)lay[LT_MEM_WEIGHTS]);
    memset(dev ? tr->ws_host : tr->block[LT_MEM_WORKSPACE], 0, (size_t)ws_head);
    int64_t carved[LT_MEM_COUNT];
    st = lt_trainer_layout_(tr, &m->config, src, c, carved, NULL, NULL, NULL, NULL);
    if (!st && memcmp(carved, lay, sizeof lay))
        st = lt_error(LT_ERR_INTERNAL, "trainer: the carving pass differs from the plan");
    if (dev) {
        int32_t *h = tr->h_idx;
        tr->h_tok = h;
        tr->h_tgt = h + NB;
        tr->h_pos = h + 2 * NB;
        tr->h_hidx = h + 3 * NB;
        tr->h_htgt = h + 4 * NB;
        tr->h_off = h + 5 * NB;
    } else {
        tr->h_tok = tr->c_tok;
        tr->h_tgt = tr->c_tgt;
        tr->h_pos = tr->pos_buf;
        tr->h_hidx = tr->head_idx;
        tr->h_htgt = tr->head_tgt;
        tr->h_off = tr->c_off;
    }
    /* Until move_to_device, a device trainer's weights are host memory: what reads them
     * (filling copies from the file, DoRA's magnitudes) runs on the CPU backend, with a host
     * conversion buffer in place of wdeq. */
    float *wdeq_be = tr->wdeq, *wdeq_host = NULL;
    if (!st && dev && tr->wdeq_n > 0) {
        wdeq_host = lt_malloc(sizeof(float) * (size_t)tr->wdeq_n);
        if (!wdeq_host) st = lt_error(LT_ERR_NOMEM, "trainer: out of host memory");
    }
    if (dev) {
        tr->be = host;
        tr->wdeq = wdeq_host;
    }
    if (!st && lazy) st = fill_from_file(tr);
    if (!st && plan.released_base) st = detach_base(tr);
    if (!st) {
        /* From here on the trainer reads only its own copies: give the fp32 weights back
         * before touching the other blocks, so the two never need to be resident together. */
        if (plan.released_base) lt_model_release_weights(m);
        for (int k = 0; !dev && k < LT_MEM_COUNT; k++) {
            if (!tr->block[k] || k == LT_MEM_WEIGHTS) continue;
            int64_t from = k == LT_MEM_WORKSPACE ? ws_head : 0;
            memset((char *)tr->block[k] + from, 0, (size_t)(lay[k] - from));
        }
        tr->scale = c->method == LT_METHOD_FULL
                        ? 0.0f
                        : lt_lora_scale(c->lora.alpha, c->lora.r, c->lora.rslora);
        st = init_values(tr, be, m);
    }
    if (dev) {
        tr->be = be;
        tr->wdeq = wdeq_be;
        free(wdeq_host);
        tr->block[LT_MEM_WEIGHTS] = dev_weights;
        if (!st) st = move_to_device(tr, stage, lay[LT_MEM_WEIGHTS], host_tail);
        free(stage);
    }
    if (st) {
        lt_trainer_free(tr);
        return st;
    }
    if (tr->headb && !tr->dhead) /* bf16 compute, a frozen fp32 head: rounded once */
        OP(to_bf16, tr->headb, head_weight(tr), (int64_t)m->config.vocab_size * m->config.dim);
    *out = tr;
    return LT_OK;
}

lt_status lt_trainer_logits_read(const lt_trainer *tr, float *dst, int64_t n) {
    if (!tr->logits_keep)
        return lt_error(LT_ERR_ARG, "trainer logits: the trainer keeps none (keep_logits 0)");
    const int64_t have = (int64_t)tr->logits_B * tr->logits_T * tr->mc.vocab_size;
    if (n < 0 || n > have)
        return lt_error(LT_ERR_ARG, "trainer logits: %lld values asked, the last batch has %lld",
                        (long long)n, (long long)have);
    OP(get, dst, tr->logits_keep, sizeof(float) * (size_t)n);
    return LT_OK;
}

lt_status lt_trainer_sync_model(lt_trainer *tr) {
    for (int i = 0; i < tr->n_tt; i++)
        if (tr->tt[i].model_value)
            OP(get, tr->tt[i].model_value, tr->tt[i].value, sizeof(float) * (size_t)tr->tt[i].numel);
    return LT_OK;
}

void lt_trainer_free(lt_trainer *tr) {
    if (!tr) return;
    for (int k = 0; k < LT_MEM_COUNT; k++)
        tr->be->op->free(tr->be, tr->block[k]);
    for (int i = 0; i < tr->n_dev_copy; i++)
        tr->be->op->free(tr->be, tr->dev_copy[i]);
    free(tr->dev_copy);
    free(tr->dev_copy_src);
    free(tr->ws_host);
    free(tr->h_idx);
    free(tr->q4_host);
    free(tr->embd_host_own);
    free(tr->embd_rows);
    lt_free(tr);
}
