/* gguf_tokenizer.c - the tokenizer.* keys of an exported GGUF, as llama.cpp's
 * convert_hf_to_gguf.py writes them.
 *
 *   GGUF source: every tokenizer.* key copied as it is (same type, same order).
 *   HF folder with tokenizer.json (byte-level BPE): tokenizer.ggml.model "gpt2", .pre named
 *     after the pre-tokenizer (gpt-2: ByteLevel with its regex; smollm: Digits + ByteLevel;
 *     llama-bpe / qwen2: Split with the Llama 3 / Qwen2 regex + ByteLevel), .tokens (vocab +
 *     added tokens by id), .token_type (1 normal, 3 control = special added, 4 user-defined),
 *     .merges ("a b"), bos/eos/unk/padding ids and add_bos/add_eos from tokenizer_config.json.
 *   HF folder with tokenizer.model only (sentencepiece): model "llama", pre "default",
 *     tokens, scores and types from the ModelProto, its unk/bos/eos/pad ids.
 *   chat template: tokenizer_config.json's chat_template (or chat_template.jinja). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_file.h"
#include "export_internal.h"
#include "loratune/tokenizer.h"

static lt_status copy_kv(lt_gguf_writer *w, const lt_gguf *g, size_t i) {
    const char *key = lt_gguf_kv_key(g, i);
    lt_gguf_type t = lt_gguf_kv_type(g, i);
    lt_status st;
    if (t == LT_GGUF_STRING) {
        const char *s;
        size_t n;
        if ((st = lt_gguf_get_str(g, key, &s, &n))) return st;
        char *c = lt_malloc(n + 1);
        if (!c) return lt_error(LT_ERR_NOMEM, "out of memory");
        memcpy(c, s, n);
        c[n] = 0;
        st = lt_gguf_writer_set_str(w, key, c);
        free(c);
        return st;
    }
    if (t == LT_GGUF_ARRAY) {
        lt_gguf_type et;
        uint64_t n;
        const void *data;
        if ((st = lt_gguf_get_arr(g, key, &et, &n, &data))) return st;
        if (et != LT_GGUF_STRING) return lt_gguf_writer_set_arr(w, key, et, data, n);
        char **strs = lt_calloc(n ? n : 1, sizeof *strs);
        if (!strs) return lt_error(LT_ERR_NOMEM, "out of memory");
        for (uint64_t k = 0; k < n && !st; k++) {
            const char *s;
            size_t l;
            if ((st = lt_gguf_get_arr_str(g, key, k, &s, &l))) break;
            if (!(strs[k] = lt_malloc(l + 1))) {
                st = lt_error(LT_ERR_NOMEM, "out of memory");
                break;
            }
            memcpy(strs[k], s, l);
            strs[k][l] = 0;
        }
        if (!st) st = lt_gguf_writer_set_arr_str(w, key, (const char *const *)strs, n);
        for (uint64_t k = 0; k < n; k++)
            free(strs[k]);
        free(strs);
        return st;
    }
    /* fixed-size scalars: read the value as its C type */
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        float f32;
        uint32_t u32;
        int32_t i32;
        uint8_t u8;
    } v;
    memset(&v, 0, sizeof v);
    switch (t) {
    case LT_GGUF_FLOAT32:
        st = lt_gguf_get_f32(g, key, &v.f32);
        break;
    case LT_GGUF_FLOAT64:
        st = lt_gguf_get_f64(g, key, &v.f64);
        break;
    case LT_GGUF_BOOL: {
        int b;
        st = lt_gguf_get_bool(g, key, &b);
        v.u8 = (uint8_t)b;
        break;
    }
    case LT_GGUF_UINT64:
        st = lt_gguf_get_u64(g, key, &v.u64);
        break;
    case LT_GGUF_INT64:
        st = lt_gguf_get_i64(g, key, &v.i64);
        break;
    default: {
        int64_t x;
        st = lt_gguf_get_i64(g, key, &x);
        if (t == LT_GGUF_UINT32)
            v.u32 = (uint32_t)x;
        else if (t == LT_GGUF_INT32)
            v.i32 = (int32_t)x;
        else if (t == LT_GGUF_UINT16 || t == LT_GGUF_INT16) {
            uint16_t h = (uint16_t)x;
            memcpy(&v, &h, 2);
        } else
            v.u8 = (uint8_t)x;
    }
    }
    if (st) return st;
    return lt_gguf_writer_set_scalar(w, key, t, &v);
}

static lt_status from_gguf(lt_gguf_writer *w, const char *path) {
    lt_gguf *g = NULL;
    lt_status st = lt_gguf_open(path, &g);
    if (st) return st;
    for (size_t i = 0; i < lt_gguf_n_kv(g) && !st; i++)
        if (!strncmp(lt_gguf_kv_key(g, i), "tokenizer.", 10)) st = copy_kv(w, g, i);
    lt_gguf_close(g);
    return st;
}

/* tokenizer_config.json's bos_token etc.: a string or {"content": ...}; NULL if absent. */
static const char *special_str(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int json_bool(json_t *cfg, const char *key, int def) {
    json_t *v = json_object_get(cfg, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int same_regex(json_t *pt, const char *pattern) {
    json_t *p = json_object_get(json_object_get(pt, "pattern"), "Regex");
    return json_is_string(p) && !strcmp(json_string_value(p), pattern);
}

/* The llama.cpp pre-tokenizer name for tokenizer.json's pre_tokenizer (NULL if none fits). */
static const char *pre_from_json(json_t *pre) {
    static const char llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
                                 "{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                                 "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static const char qwen2[] =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
        "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return NULL;
    if (!strcmp(type, "ByteLevel")) return json_bool(pre, "use_regex", 1) ? "gpt-2" : NULL;
    if (strcmp(type, "Sequence")) return NULL;
    json_t *l = json_object_get(pre, "pretokenizers");
    if (json_array_size(l) != 2) return NULL;
    json_t *a = json_array_get(l, 0), *b = json_array_get(l, 1);
    const char *ta = json_string_value(json_object_get(a, "type"));
    const char *tb = json_string_value(json_object_get(b, "type"));
    if (!ta || !tb || strcmp(tb, "ByteLevel")) return NULL;
    if (!strcmp(ta, "Digits") && json_bool(a, "individual_digits", 0) &&
        json_bool(b, "use_regex", 1))
        return "smollm";
    if (!strcmp(ta, "Split") && !json_bool(b, "use_regex", 1)) {
        if (same_regex(a, llama3)) return "llama-bpe";
        if (same_regex(a, qwen2)) return "qwen2";
    }
    return NULL;
}

static lt_status from_tokenizer_json(lt_gguf_writer *w, const char *path, json_t *cfg) {
    json_t *tj = NULL;
    lt_status st = lt_json_load_file(path, 0, &tj);
    if (st) return st;
    char **tokens = NULL;
    int32_t *types = NULL;
    char **merges = NULL;
    size_t n = 0, nm = 0;
    json_t *model = json_object_get(tj, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *mj = json_object_get(model, "merges");
    json_t *added = json_object_get(tj, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype || strcmp(mtype, "BPE") || !json_is_object(vocab)) {
        st =
            lt_error(LT_ERR_UNSUPPORTED, "%s: model.type: expected a BPE model with a vocab", path);
        goto done;
    }
    if (json_is_true(json_object_get(model, "byte_fallback"))) {
        st = lt_error(LT_ERR_UNSUPPORTED,
                      "%s: model.byte_fallback = true (a sentencepiece-style "
                      "BPE): only byte-level BPE tokenizer.json files become GGUF vocabularies",
                      path);
        goto done;
    }
    const char *pre = pre_from_json(json_object_get(tj, "pre_tokenizer"));
    if (!pre) {
        st = lt_error(LT_ERR_UNSUPPORTED,
                      "%s: pre_tokenizer: not one llama.cpp knows by name "
                      "(expected ByteLevel, Digits+ByteLevel, or the Llama 3 / Qwen2 Split)",
                      path);
        goto done;
    }
    /* size = 1 + the largest id */
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= (1 << 22)) {
            st = lt_error(LT_ERR_FORMAT, "%s: model.vocab[\"%s\"]: expected an id in [0, 2^22)",
                          path, k);
            goto done;
        }
        if ((size_t)id + 1 > n) n = (size_t)id + 1;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id < 0 || id >= (1 << 22) || !json_is_string(json_object_get(v, "content"))) {
            st = lt_error(LT_ERR_FORMAT, "%s: added_tokens[%zu]: expected id and content", path, i);
            goto done;
        }
        if ((size_t)id + 1 > n) n = (size_t)id + 1;
    }
    tokens = lt_calloc(n, sizeof *tokens);
    types = lt_calloc(n, sizeof *types);
    if (!tokens || !types) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    json_object_foreach(vocab, k, v) {
        size_t id = (size_t)json_integer_value(v);
        free(tokens[id]);
        if (!(tokens[id] = lt_strdup(k))) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        types[id] = 1;
    }
    json_array_foreach(added, i, v) {
        size_t id = (size_t)json_integer_value(json_object_get(v, "id"));
        free(tokens[id]);
        if (!(tokens[id] = lt_strdup(json_string_value(json_object_get(v, "content"))))) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
        types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    for (i = 0; i < n; i++) {
        if (!tokens[i]) { /* a hole in the ids: llama.cpp's converter pads with [PADi] */
            char b[32];
            snprintf(b, sizeof b, "[PAD%zu]", i);
            tokens[i] = lt_strdup(b);
            types[i] = 5;
        }
        if (!tokens[i]) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    nm = json_array_size(mj);
    merges = lt_calloc(nm ? nm : 1, sizeof *merges);
    if (!merges) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    json_array_foreach(mj, i, v) {
        if (json_is_string(v)) {
            merges[i] = lt_strdup(json_string_value(v));
        } else if (json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                   json_is_string(json_array_get(v, 1))) {
            const char *a = json_string_value(json_array_get(v, 0));
            const char *b = json_string_value(json_array_get(v, 1));
            size_t la = strlen(a), lb = strlen(b);
            if ((merges[i] = lt_malloc(la + lb + 2))) {
                memcpy(merges[i], a, la);
                merges[i][la] = ' ';
                memcpy(merges[i] + la + 1, b, lb + 1);
            }
        } else {
            st = lt_error(LT_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\" or [a, b]", path,
                          i);
            goto done;
        }
        if (!merges[i]) {
            st = lt_error(LT_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    if ((st = lt_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"))) goto done;
    if ((st = lt_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre))) goto done;
    if ((st = lt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens,
                                         n)))
        goto done;
    if ((st = lt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", LT_GGUF_INT32, types, n)))
        goto done;
    if ((st = lt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges,
                                         nm)))
        goto done;
    static const char *const ids[][2] = {{"bos_token", "tokenizer.ggml.bos_token_id"},
                                         {"eos_token", "tokenizer.ggml.eos_token_id"},
                                         {"unk_token", "tokenizer.ggml.unknown_token_id"},
                                         {"pad_token", "tokenizer.ggml.padding_token_id"}};
    for (int q = 0; q < 4; q++) {
        const char *s = special_str(cfg, ids[q][0]);
        if (!s) continue;
        for (i = 0; i < n; i++) {
            if (strcmp(tokens[i], s)) continue;
            if ((st = lt_gguf_writer_set_u32(w, ids[q][1], (uint32_t)i))) goto done;
            break;
        }
    }
    if ((st = lt_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token",
                                      json_bool(cfg, "add_bos_token", 0))))
        goto done;
    if (json_object_get(cfg, "add_eos_token"))
        st = lt_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token",
                                     json_bool(cfg, "add_eos_token", 0));
done:
    for (i = 0; tokens && i < n; i++)
        free(tokens[i]);
    for (i = 0; merges && i < nm; i++)
        free(merges[i]);
    free(tokens);
    free(types);
    free(merges);
    json_decref(tj);
    return st;
}

static lt_status from_spm(lt_gguf_writer *w, const char *path) {
    lt_spm_vocab v;
    lt_status st = lt_spm_vocab_load(path, &v);
    if (!st) st = lt_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    if (!st) st = lt_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    if (!st)
        st = lt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.pieces,
                                        (uint64_t)v.n);
    if (!st)
        st = lt_gguf_writer_set_arr(w, "tokenizer.ggml.scores", LT_GGUF_FLOAT32, v.scores,
                                    (uint64_t)v.n);
    if (!st)
        st = lt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", LT_GGUF_INT32, v.types,
                                    (uint64_t)v.n);
    if (!st && v.bos_id >= 0)
        st = lt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v.bos_id);
    if (!st && v.eos_id >= 0)
        st = lt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v.eos_id);
    if (!st && v.unk_id >= 0)
        st = lt_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v.unk_id);
    if (!st && v.pad_id >= 0)
        st = lt_gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v.pad_id);
    if (!st) st = lt_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    if (!st) st = lt_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    lt_spm_vocab_free(&v);
    return st;
}

lt_status lt_export_gguf_tokenizer(lt_gguf_writer *w, const char *src) {
    if (!src) return LT_OK;
    size_t sl = strlen(src);
    if (!lt_path_is_dir(src)) {
        if (sl >= 5 && !strcmp(src + sl - 5, ".gguf")) return from_gguf(w, src);
        return LT_OK; /* llama2.c .bin: no vocabulary to carry */
    }
    char p[4096];
    json_t *cfg = NULL;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", src);
    lt_status st = LT_OK;
    if (lt_path_exists(p) && (st = lt_json_load_file(p, 0, &cfg))) return st;
    if (!cfg) cfg = json_object();
    /* a sentencepiece model wins when both are there, as in the converter (Llama 2 /
     * Mistral folders ship both; byte-level BPE models have no tokenizer.model) */
    snprintf(p, sizeof p, "%s/tokenizer.model", src);
    if (lt_path_exists(p)) {
        st = from_spm(w, p);
    } else {
        snprintf(p, sizeof p, "%s/tokenizer.json", src);
        if (lt_path_exists(p))
            st = from_tokenizer_json(w, p, cfg);
        else
            st = lt_error(LT_ERR_NOTFOUND,
                          "%s: no tokenizer.json or tokenizer.model to carry "
                          "into the GGUF",
                          src);
    }
    if (st) goto done;
    /* chat template */
    json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) {
        st = lt_gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(ct));
    } else {
        snprintf(p, sizeof p, "%s/chat_template.jinja", src);
        char *s = NULL;
        size_t n;
        if (lt_path_exists(p) && !(st = lt_file_read_all(p, &s, &n)))
            st = lt_gguf_writer_set_str(w, "tokenizer.chat_template", s);
        free(s);
    }
done:
    json_decref(cfg);
    return st;
}
