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

lt_status lt_generate(const lt_model *m, const lt_model_delta *delta, lt_kv_cache *kv,
                      const lt_tokenizer *tok, lt_sampler *s, const int32_t *prompt, int n_prompt,
                      const lt_generate_opts *o, int32_t **out_ids, int *n_out) {
    if (out_ids) *out_ids = NULL;
    if (n_out) *n_out = 0;
    if (n_prompt < 1) return lt_error(LT_ERR_ARG, "generate: empty prompt (add BOS at least)");
    int ctx = lt_kv_cache_ctx(kv);
    if (n_prompt >= ctx)
        return lt_error(LT_ERR_ARG,
                        "generate: prompt of %d tokens leaves no room in a context of %d", n_prompt,
                        ctx);
    int max_new = o->max_tokens;
    if (max_new > ctx - n_prompt) max_new = ctx - n_prompt;
    if (max_new < 0) max_new = 0;
    int V = m->config.vocab_size;
    int tail = n_prompt < PROMPT_TAIL ? n_prompt : PROMPT_TAIL;
    float *logits = lt_malloc(sizeof(float) * (size_t)V);
    int32_t *win = lt_malloc(sizeof(int32_t) * (size_t)(tail + max_new + 1));
    if (!logits || !win) {
        free(logits);
        free(win);
        return lt_error(LT_ERR_NOMEM, "generate: out of memory");
    }
    memcpy(win, prompt + n_prompt - tail, sizeof(int32_t) * (size_t)tail);
    int32_t *gen = win + tail;
    int n_gen = 0;
    size_t printed = 0, stable = 0;
    char *text = NULL;
    size_t tlen = 0;
    lt_status st = LT_OK;
    if (tok) {
        if ((st = lt_tokenizer_decode(tok, win, (size_t)tail, 1, &text, &tlen))) goto done;
        printed = tlen;
        free(text);
        text = NULL;
    }
    if ((st = lt_model_forward(m, delta, kv, prompt, n_prompt, 0, logits, 0))) goto done;
    int stopped = 0;
    while (n_gen < max_new && !stopped) {
        int32_t id = lt_sampler_sample(s, logits);
        gen[n_gen++] = id;
        if (is_stop(m, tok, o, id)) break;
        if (o->on_token) {
            const char *piece = "";
            size_t plen = 0;
            if (tok) {
                if ((st = lt_tokenizer_decode(tok, win, (size_t)(tail + n_gen), 1, &text, &tlen)))
                    goto done;
                stable = stable_len(text, tlen);
                if (stable > printed) {
                    piece = text + printed;
                    plen = stable - printed;
                    printed = stable;
                }
            }
            stopped = o->on_token(o->user, id, piece, plen) != 0;
            free(text);
            text = NULL;
        }
        if (n_gen < max_new && !stopped) {
            int32_t cur = id;
            if ((st = lt_model_forward(m, delta, kv, &cur, 1, n_prompt + n_gen - 1, logits, 0)))
                goto done;
        }
    }
    /* flush any held-back tail */
    if (tok && o->on_token && n_gen > 0) {
        int n_text = n_gen - (is_stop(m, tok, o, gen[n_gen - 1]) ? 1 : 0);
        if ((st = lt_tokenizer_decode(tok, win, (size_t)(tail + n_text), 1, &text, &tlen)))
            goto done;
        if (tlen > printed) o->on_token(o->user, -1, text + printed, tlen - printed);
    }
done:
    free(text);
    free(logits);
    if (st == LT_OK && out_ids) {
        int32_t *ids = lt_malloc(sizeof(int32_t) * (size_t)(n_gen ? n_gen : 1));
        if (!ids) {
            free(win);
            return lt_error(LT_ERR_NOMEM, "generate: out of memory");
        }
        memcpy(ids, gen, sizeof(int32_t) * (size_t)n_gen);
        *out_ids = ids;
    }
    if (st == LT_OK && n_out) *n_out = n_gen;
    free(win);
    return st;
}
