/* rank_hint.c - the rank suggested from the data (rank_hint.h). */
#include "loratune/rank_hint.h"

#include <stdio.h>
#include <string.h>

/* 12,345,678 -> "12.3M"; below 10k as is */
static const char *human(double v, char *b, size_t n) {
    if (v >= 1e9)
        snprintf(b, n, "%.1fG", v / 1e9);
    else if (v >= 1e6)
        snprintf(b, n, "%.1fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(b, n, "%.0fk", v / 1e3);
    else
        snprintf(b, n, "%.0f", v);
    return b;
}

void lt_rank_hint_compute(const lt_model_config *mc, int64_t loss_tokens, int64_t examples,
                          lt_rank_hint *h) {
    memset(h, 0, sizeof *h);
    int q = mc->n_heads * mc->head_dim, kv = mc->n_kv_heads * mc->head_dim;
    /* (in + out) of q, k, v, o, gate, up, down */
    int64_t per_layer = (int64_t)(mc->dim + q) + (mc->dim + kv) + (mc->dim + kv) + (q + mc->dim) +
                        3 * (int64_t)(mc->dim + mc->ffn_dim);
    h->params_per_rank = per_layer * mc->n_layers;
    h->loss_tokens = loss_tokens;
    h->examples = examples;
    h->cap = 64;
    int sides[] = {mc->dim, q, kv, mc->ffn_dim};
    for (int i = 0; i < 4; i++)
        if (sides[i] > 0 && sides[i] < h->cap) h->cap = sides[i];
    int r = h->cap < 4 ? 1 : 4;
    while (r < h->cap && 2.0 * (double)r * (double)h->params_per_rank < (double)loss_tokens)
        r = 2 * r <= h->cap ? 2 * r : h->cap;
    h->rank = r;
    double bits = 2.0 * (double)r * (double)h->params_per_rank;
    h->short_of_data = bits < (double)loss_tokens;
    char a[32], b[32], c[32];
    if (h->short_of_data)
        snprintf(h->reason, sizeof h->reason,
                 "the train split's %lld examples have %s loss tokens (up to ~1 bit each); even "
                 "rank %d on every linear (%s parameters, ~2 bits each) holds only %s bits: the "
                 "data may carry more than a LoRA of this model can store, so full fine-tuning "
                 "(or the highest rank) is the safer choice",
                 (long long)examples, human((double)loss_tokens, a, sizeof a), r,
                 human((double)r * h->params_per_rank, b, sizeof b), human(bits, c, sizeof c));
    else
        snprintf(h->reason, sizeof h->reason,
                 "the train split's %lld examples have %s loss tokens (up to ~1 bit each); rank "
                 "%d on every linear has %s parameters (~2 bits each: %s bits, %.1fx the data)%s; "
                 "a higher rank adds capacity the data cannot fill",
                 (long long)examples, human((double)loss_tokens, a, sizeof a), r,
                 human((double)r * h->params_per_rank, b, sizeof b), human(bits, c, sizeof c),
                 loss_tokens > 0 ? bits / (double)loss_tokens : 0.0,
                 r > 4 ? ", the smallest power of two that holds it"
                       : " (the smallest rank tried)");
}
