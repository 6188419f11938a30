/* tokenizer.c - the public tokenizer calls: dispatch by file kind, then through ops. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "loratune/gguf.h"

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

lt_status lt_tokenizer_load(const char *path, lt_tokenizer **out) {
    *out = NULL;
    if (lt_path_is_dir(path)) {
        size_t n = strlen(path) + 32;
        char *p = lt_malloc(n);
        if (!p) return lt_error(LT_ERR_NOMEM, "out of memory");
        lt_status st;
        snprintf(p, n, "%s/tokenizer.json", path);
        if (lt_path_exists(p)) {
            st = lt_tokenizer_load_hf(p, out);
        } else {
            snprintf(p, n, "%s/tokenizer.model", path);
            if (lt_path_exists(p))
                st = lt_tokenizer_load_spm(p, out);
            else
                st = lt_error(LT_ERR_NOTFOUND,
                              "%s: no tokenizer.json or tokenizer.model in this folder", path);
        }
        free(p);
        return st;
    }
    if (ends_with(path, ".json")) return lt_tokenizer_load_hf(path, out);
    if (ends_with(path, ".model")) return lt_tokenizer_load_spm(path, out);
    if (ends_with(path, ".gguf")) {
        lt_gguf *g = NULL;
        lt_status st = lt_gguf_open(path, &g);
        if (st != LT_OK) return st;
        st = lt_tokenizer_load_gguf(g, out);
        lt_gguf_close(g);
        return st;
    }
    if (ends_with(path, ".bin")) return lt_tokenizer_load_llama2c(path, out);
    return lt_error(LT_ERR_ARG,
                    "%s: unknown tokenizer file (expected tokenizer.json, tokenizer.model, "
                    "a llama2.c tokenizer .bin, a .gguf, or a model folder)",
                    path);
}

void lt_tokenizer_free(lt_tokenizer *t) {
    if (!t) return;
    if (t->ops && t->ops->free_impl) t->ops->free_impl(t->impl);
    free(t);
}

lt_status lt_tokenizer_encode(const lt_tokenizer *t, const char *text, size_t len,
                              int add_special, int parse_special, int32_t **ids, size_t *n) {
    return t->ops->encode(t, text, len, add_special, parse_special, ids, n);
}

lt_status lt_tokenizer_decode(const lt_tokenizer *t, const int32_t *ids, size_t n,
                              int skip_special, char **text, size_t *len) {
    return t->ops->decode(t, ids, n, skip_special, text, len);
}

const char *lt_tokenizer_piece(const lt_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size) return NULL;
    return t->ops->piece(t, id);
}
int32_t lt_tokenizer_vocab_size(const lt_tokenizer *t) { return t->vocab_size; }
int32_t lt_tokenizer_bos(const lt_tokenizer *t) { return t->bos_id; }
int32_t lt_tokenizer_eos(const lt_tokenizer *t) { return t->eos_id; }
int lt_tokenizer_is_special(const lt_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size) return 0;
    return t->ops->is_special ? t->ops->is_special(t, id) : 0;
}
int32_t lt_tokenizer_find(const lt_tokenizer *t, const char *piece) {
    return t->ops->find ? t->ops->find(t, piece) : -1;
}
const char *lt_tokenizer_kind(const lt_tokenizer *t) { return t->ops->kind; }
