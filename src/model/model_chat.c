/* model_chat.c - finding the chat template that ships with a model (see model.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/chat.h"
#include "loratune/gguf.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"

lt_status lt_model_chat_template(const char *model_path, const lt_tokenizer *tok,
                                 lt_chat_template **out) {
    *out = NULL;
    size_t n = strlen(model_path);
    if (lt_path_is_dir(model_path)) {
        char p[4096], j[4096];
        snprintf(p, sizeof p, "%s/tokenizer_config.json", model_path);
        snprintf(j, sizeof j, "%s/chat_template.jinja", model_path);
        if (!lt_path_exists(p) && !lt_path_exists(j))
            return lt_error(LT_ERR_NOTFOUND, "%s: no tokenizer_config.json or chat_template.jinja",
                            model_path);
        if (lt_path_exists(p)) return lt_chat_template_from_config(p, out);
        char *text = NULL;
        size_t len = 0;
        lt_status st = lt_file_read_all(j, &text, &len);
        if (st) return st;
        st = lt_chat_template_from_string(text, len, out);
        free(text);
        return st;
    }
    if (n > 5 && !strcmp(model_path + n - 5, ".gguf")) {
        lt_gguf *g = NULL;
        lt_status st = lt_gguf_open(model_path, &g);
        if (st) return st;
        const char *s;
        size_t len;
        if (lt_gguf_get_str(g, "tokenizer.chat_template", &s, &len) != LT_OK) {
            lt_gguf_close(g);
            return lt_error(LT_ERR_NOTFOUND, "%s: no tokenizer.chat_template", model_path);
        }
        st = lt_chat_template_from_string(s, len, out);
        lt_gguf_close(g);
        if (st == LT_OK && tok) {
            int32_t b = lt_tokenizer_bos(tok), e = lt_tokenizer_eos(tok);
            st = lt_chat_template_set_special(*out, b >= 0 ? lt_tokenizer_piece(tok, b) : NULL,
                                              e >= 0 ? lt_tokenizer_piece(tok, e) : NULL);
        }
        return st;
    }
    return lt_error(LT_ERR_NOTFOUND, "%s: a llama2.c .bin carries no chat template", model_path);
}
