/* load_common.c - what the loaders of named-tensor files (GGUF, HF safetensors) share: taking
 * every tensor the config asks for, in lt_model_weights' order, under the file's own names.
 *
 * Invariant: the shapes asked for here are the ones lt_model_wire lays out (outermost-first,
 * per layer l): tok_embd (V, D), attn_norm (D), wq (QD, D), wk/wv (KD, D), bq (QD), bk/bv
 * (KD), wo (D, QD), ffn_norm (D), w_gate/w_up (F, D), w_down (D, F), out_norm (D), lm_head
 * (V, D) when untied; with QD = n_heads*head_dim, KD = n_kv_heads*head_dim. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        if (m->src) { /* the finite check paged it in: let it go until it is used */               \
            m->src->views[(int64_t)(id)*L + l] = v_;                                               \
            lt_model_weight_evict(m, (id), (int)l);                                                \
        }                                                                                          \
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

void lt_model_warn_(lt_model *m, const char *fmt, ...) {
    size_t k = strlen(m->warnings);
    if (k + 2 >= sizeof m->warnings) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->warnings + k, sizeof m->warnings - k - 1, fmt, ap);
    va_end(ap);
    k = strlen(m->warnings);
    m->warnings[k] = '\n';
    m->warnings[k + 1] = 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* name == n->layer_fmt with some layer and suffix: *layer and *suffix set, 1. */
static int split_layer(const lt_model_tensor_names *n, const char *name, long long *layer,
                       const char **suffix) {
    const char *pct = strstr(n->layer_fmt, "%lld");
    size_t pre = (size_t)(pct - n->layer_fmt);
    if (strncmp(name, n->layer_fmt, pre)) return 0;
    const char *p = name + pre;
    if (*p < '0' || *p > '9') return 0;
    char *end;
    *layer = strtoll(p, &end, 10);
    if (*end != '.') return 0;
    *suffix = end + 1;
    return 1;
}

lt_status lt_model_check_unused(lt_model *m, const char *src, const lt_model_tensor_names *n,
                                const void *file) {
    const lt_model_config *c = &m->config;
    const char *suffixes[] = {n->attn_norm, n->wq,   n->wk,     n->wv, n->wo, n->ffn_norm,
                              n->w_gate,    n->w_up, n->w_down, n->bq, n->bk, n->bv};
    int n_suffixes = c->qkv_bias ? 12 : 9;
    size_t nt = n->count(file), unused = 0;
    char first[3][160];
    long long max_layer = -1;
    const char *max_name = NULL;
    for (size_t i = 0; i < nt; i++) {
        const char *name = n->name_at(file, i);
        if (!name) continue;
        long long l;
        const char *suf;
        int used = 0;
        if (!strcmp(name, n->tok_embd) || !strcmp(name, n->out_norm) ||
            (!c->tied_embeddings && !strcmp(name, n->lm_head)) ||
            (n->extra_used && !strcmp(name, n->extra_used)))
            used = 1;
        else if (split_layer(n, name, &l, &suf)) {
            if (l >= c->n_layers) {
                if (l > max_layer) max_layer = l, max_name = name;
                continue;
            }
            for (int k = 0; k < n_suffixes && !used; k++)
                used = !strcmp(suf, suffixes[k]);
        }
        if (used || ends_with(name, "rotary_emb.inv_freq")) continue;
        if (unused < 3) snprintf(first[unused], sizeof first[unused], "%s", name);
        unused++;
    }
    if (max_layer >= 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: holds tensors of layer %lld (%s) but %s says %d layers (0..%d): the "
                        "config and the weights disagree on the layer count",
                        src, max_layer, max_name, n->layers_key, c->n_layers, c->n_layers - 1);
    if (unused)
        lt_model_warn_(m, "%s: ignored %zu tensor%s the model does not use (%s%s%s%s%s%s)", src,
                       unused, unused == 1 ? "" : "s", first[0], unused > 1 ? ", " : "",
                       unused > 1 ? first[1] : "", unused > 2 ? ", " : "",
                       unused > 2 ? first[2] : "", unused > 3 ? ", ..." : "");
    return LT_OK;
}
