/* generate.c - the generation loop: batched prefill, then one token at a time, with stop ids
 * and streamed text.
 *
 * Streaming: the text of the generated tokens is obtained by decoding a window (the last few
 * prompt tokens + all generated ids) and emitting what goes past the text printed so far, so
 * that a sentencepiece leading space or a UTF-8 character split across byte tokens comes out
 * right; an incomplete UTF-8 tail (or up to 3 trailing U+FFFD from undecodable bytes) is held
 * back until a later token completes it, and flushed at the end. */
#include "loratune/sampler.h"

#include <stdlib.h>
#include <string.h>

#include "loratune/model.h"
#include "loratune/tokenizer.h"

#define PROMPT_TAIL 4

/* Length of the prefix of s that ends on a complete UTF-8 character and not on U+FFFD. */
static size_t stable_len(const char *s, size_t n) {
    /* decoders replace each byte of an incomplete sequence by U+FFFD (HF ByteFallback) or the
     * maximal subpart by one: hold back up to 3 of them */
    for (int k = 0; k < 3 && n >= 3 && (unsigned char)s[n - 3] == 0xEF &&
                    (unsigned char)s[n - 2] == 0xBF && (unsigned char)s[n - 1] == 0xBD;
         k++)
        n -= 3;
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte */
        size_t need = c < 0x80             ? 1
                      : (c & 0xE0) == 0xC0 ? 2
                      : (c & 0xF0) == 0xE0 ? 3
                      : (c & 0xF8) == 0xF0 ? 4
                                           : 1;
        return back < need ? n - back : n;
    }
    return n;
}

static int is_stop(const lt_model *m, const lt_tokenizer *tok, const lt_generate_opts *o,
                   int32_t id) {
    for (int i = 0; i < o->n_stop_ids; i++)
        if (o->stop_ids[i] == id) return 1;
    if (!o->stop_at_eos) return 0;
    const lt_model_config *c = &m->config;
    if (id == c->eos_id) return 1;
    for (int i = 0; i < c->n_eos_ids && i < 8; i++)
        if (c->eos_ids[i] == id) return 1;
    return tok && lt_tokenizer_eos(tok) == id;
}

struct lt_generation {
    const lt_model *m;
    const lt_tokenizer *tok;
    lt_generate_opts o;
    int n_prompt, max_new, tail, n_gen, done;
    int32_t *win; /* (tail + max_new + 1) the prompt's last tokens, then the generated ids */
    size_t printed;
};

lt_status lt_generation_create(const lt_model *m, const lt_tokenizer *tok, int ctx,
                               const int32_t *prompt, int n_prompt, const lt_generate_opts *o,
                               lt_generation **out) {
    *out = NULL;
    if (n_prompt < 1) return lt_error(LT_ERR_ARG, "generate: empty prompt (add BOS at least)");
    if (n_prompt >= ctx)
        return lt_error(LT_ERR_ARG,
                        "generate: prompt of %d tokens leaves no room in a context of %d", n_prompt,
                        ctx);
    lt_generation *g = lt_calloc(1, sizeof *g);
    if (!g) return lt_error(LT_ERR_NOMEM, "generate: out of memory");
    g->m = m;
    g->tok = tok;
    g->o = *o;
    g->n_prompt = n_prompt;
    g->max_new = o->max_tokens;
    if (g->max_new > ctx - n_prompt) g->max_new = ctx - n_prompt;
    if (g->max_new < 0) g->max_new = 0;
    g->tail = n_prompt < PROMPT_TAIL ? n_prompt : PROMPT_TAIL;
    if (!(g->win = lt_malloc(sizeof(int32_t) * (size_t)(g->tail + g->max_new + 1)))) {
        free(g);
        return lt_error(LT_ERR_NOMEM, "generate: out of memory");
    }
    memcpy(g->win, prompt + n_prompt - g->tail, sizeof(int32_t) * (size_t)g->tail);
    if (tok) {
        char *text = NULL;
        size_t tlen = 0;
        lt_status st = lt_tokenizer_decode(tok, g->win, (size_t)g->tail, 1, &text, &tlen);
        free(text);
        if (st) {
            lt_generation_free(g);
            return st;
        }
        g->printed = tlen;
    }
    *out = g;
    return LT_OK;
}

void lt_generation_free(lt_generation *g) {
    if (!g) return;
    free(g->win);
    free(g);
}

int lt_generation_count(const lt_generation *g) {
    return g->n_gen;
}

lt_status lt_generation_step(lt_generation *g, lt_sampler *s, const float *logits, int32_t *next,
                             int *pos, int *more) {
    *more = 0;
    if (g->done || g->n_gen >= g->max_new) {
        g->done = 1;
        return LT_OK;
    }
    int32_t *gen = g->win + g->tail;
    int32_t id = lt_sampler_sample(s, logits);
    gen[g->n_gen++] = id;
    if (is_stop(g->m, g->tok, &g->o, id)) {
        g->done = 1;
        return LT_OK;
    }
    int stopped = 0;
    if (g->o.on_token) {
        const char *piece = "";
        size_t plen = 0;
        char *text = NULL;
        size_t tlen = 0;
        if (g->tok) {
            lt_status st =
                lt_tokenizer_decode(g->tok, g->win, (size_t)(g->tail + g->n_gen), 1, &text, &tlen);
            if (st) return st;
            size_t stable = stable_len(text, tlen);
            if (stable > g->printed) {
                piece = text + g->printed;
                plen = stable - g->printed;
                g->printed = stable;
            }
        }
        stopped = g->o.on_token(g->o.user, id, piece, plen) != 0;
        free(text);
    }
    if (g->n_gen < g->max_new && !stopped) {
        *next = id;
        *pos = g->n_prompt + g->n_gen - 1;
        *more = 1;
    } else {
        g->done = 1;
    }
    return LT_OK;
}

lt_status lt_generation_finish(lt_generation *g, int32_t **out_ids, int *n_out) {
    if (out_ids) *out_ids = NULL;
    if (n_out) *n_out = 0;
    const int32_t *gen = g->win + g->tail;
    if (g->tok && g->o.on_token && g->n_gen > 0) { /* flush any held-back tail */
        int n_text = g->n_gen - (is_stop(g->m, g->tok, &g->o, gen[g->n_gen - 1]) ? 1 : 0);
        char *text = NULL;
        size_t tlen = 0;
        lt_status st =
            lt_tokenizer_decode(g->tok, g->win, (size_t)(g->tail + n_text), 1, &text, &tlen);
        if (st) return st;
        if (tlen > g->printed) g->o.on_token(g->o.user, -1, text + g->printed, tlen - g->printed);
        if (tlen > g->printed) g->printed = tlen;
        free(text);
    }
    if (out_ids) {
        int32_t *ids = lt_malloc(sizeof(int32_t) * (size_t)(g->n_gen ? g->n_gen : 1));
        if (!ids) return lt_error(LT_ERR_NOMEM, "generate: out of memory");
        memcpy(ids, gen, sizeof(int32_t) * (size_t)g->n_gen);
        *out_ids = ids;
    }
    if (n_out) *n_out = g->n_gen;
    return LT_OK;
}

lt_status lt_generate(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv,
                      const lt_tokenizer *tok, lt_sampler *s, const int32_t *prompt, int n_prompt,
                      const lt_generate_opts *o, int32_t **out_ids, int *n_out) {
    if (out_ids) *out_ids = NULL;
    if (n_out) *n_out = 0;
    lt_generation *g = NULL;
    lt_status st = lt_generation_create(m, tok, lt_kv_cache_ctx(kv), prompt, n_prompt, o, &g);
    if (st) return st;
    float *logits = lt_malloc(sizeof(float) * (size_t)m->config.vocab_size);
    if (!logits) {
        lt_generation_free(g);
        return lt_error(LT_ERR_NOMEM, "generate: out of memory");
    }
    st = lt_model_forward(m, delta, kv, prompt, n_prompt, 0, logits, 0);
    int more = !st;
    while (more) {
        int32_t next;
        int pos;
        if ((st = lt_generation_step(g, s, logits, &next, &pos, &more)) || !more) break;
        st = lt_model_forward(m, delta, kv, &next, 1, pos, logits, 0);
        more = !st;
    }
    if (!st) st = lt_generation_finish(g, out_ids, n_out);
    free(logits);
    lt_generation_free(g);
    return st;
}
