/* tokenizer_impl.h - the ops table each tokenizer kind fills in (internal). */
#ifndef LT_TOKENIZER_IMPL_H
#define LT_TOKENIZER_IMPL_H

#include "loratune/tokenizer.h"

typedef struct {
    const char *kind;
    lt_status (*encode)(const lt_tokenizer *t, const char *text, size_t len, int add_special,
                        int parse_special, int32_t **ids, size_t *n);
    lt_status (*decode)(const lt_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                        char **text, size_t *len);
    const char *(*piece)(const lt_tokenizer *t, int32_t id);
    int32_t (*find)(const lt_tokenizer *t, const char *piece);
    int (*is_special)(const lt_tokenizer *t, int32_t id);
    void (*free_impl)(void *impl);
} lt_tokenizer_ops;

struct lt_tokenizer {
    const lt_tokenizer_ops *ops;
    void *impl;
    int32_t vocab_size;
    int32_t bos_id, eos_id; /* -1 if none */
};

#endif
