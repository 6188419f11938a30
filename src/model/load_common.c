/* load_common.c - what the loaders of named-tensor files (GGUF, HF safetensors) share: taking
 * every tensor the config asks for, in lt_model_weights' order, under the file's own names.
 *
 * Invariant: the shapes asked for here are the ones lt_model_wire lays out (outermost-first,
 * per layer l): tok_embd (V, D), attn_norm (D), wq (QD, D), wk/wv (KD, D), bq (QD), bk/bv
 * (KD), wo (D, QD), ffn_norm (D), w_gate/w_up (F, D), w_down (D, F), out_norm (D), lm_head
 * (V, D) when untied; with QD = n_heads*head_dim, KD = n_kv_heads*head_dim. */
#include <stdio.h>

#include "model_internal.h"

/* In config-only mode the weight pointers are NULL; OFF() keeps the destination NULL. */
#define OFF(base, off) ((base) ? (base) + (off) : NULL)

lt_status lt_model_take_named(lt_model *m, const char *src, const lt_model_tensor_names *n,
                              const void *file) {
    const lt_model_config *c = &m->config;
    int64_t D = c->dim, L = c->n_layers, F = c->ffn_dim, V = c->vocab_size;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    lt_model_weights *w = &m->w;
    lt_status st;
    char name[256];
    int64_t l = 0; /* the layer TAKE_ID records views under */
#define TAKE_ID(id, nm, nd, a, b, dst)                                                             \
    do {                                                                                           \
        const lt_tensor_view *v_ = n->find(file, (nm));                                            \
        if ((st = lt_model_take(m, src, (nm), v_, (nd), (a), (b), (dst)))) return st;              \
        if (m->src) m->src->views[(int64_t)(id) * L + l] = v_;                                    \
    } while (0)
    TAKE_ID(LT_W_TOK_EMBD, n->tok_embd, 2, V, D, w->tok_embd);
    for (l = 0; l < L; l++) {
#define LAYER(id, suffix, nd, a, b, dst)                                                           \
    do {                                                                                           \
        snprintf(name, sizeof name, n->layer_fmt, (long long)l, (suffix));                         \
        TAKE_ID(id, name, nd, a, b, dst);                                                          \
    } while (0)
        LAYER(LT_W_ATTN_NORM, n->attn_norm, 1, D, 0, OFF(w->attn_norm, l * D));
        LAYER(LT_W_WQ, n->wq, 2, QD, D, OFF(w->wq, l * QD * D));
        LAYER(LT_W_WK, n->wk, 2, KD, D, OFF(w->wk, l * KD * D));
        LAYER(LT_W_WV, n->wv, 2, KD, D, OFF(w->wv, l * KD * D));
        if (c->qkv_bias) {
            LAYER(LT_W_BQ, n->bq, 1, QD, 0, OFF(w->bq, l * QD));
            LAYER(LT_W_BK, n->bk, 1, KD, 0, OFF(w->bk, l * KD));
            LAYER(LT_W_BV, n->bv, 1, KD, 0, OFF(w->bv, l * KD));
        }
        LAYER(LT_W_WO, n->wo, 2, D, QD, OFF(w->wo, l * D * QD));
        LAYER(LT_W_FFN_NORM, n->ffn_norm, 1, D, 0, OFF(w->ffn_norm, l * D));
        LAYER(LT_W_GATE, n->w_gate, 2, F, D, OFF(w->w_gate, l * F * D));
        LAYER(LT_W_UP, n->w_up, 2, F, D, OFF(w->w_up, l * F * D));
        LAYER(LT_W_DOWN, n->w_down, 2, D, F, OFF(w->w_down, l * D * F));
#undef LAYER
    }
    l = 0;
    TAKE_ID(LT_W_OUT_NORM, n->out_norm, 1, D, 0, w->out_norm);
    if (!c->tied_embeddings) {
        if (n->untied_why && !n->find(file, n->lm_head))
            return lt_error(LT_ERR_NOTFOUND, "%s: missing tensor %s (%s)", src, n->lm_head,
                            n->untied_why);
        TAKE_ID(LT_W_LM_HEAD, n->lm_head, 2, V, D, w->lm_head);
    }
#undef TAKE_ID
    return LT_OK;
}
