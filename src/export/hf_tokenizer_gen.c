/* hf_tokenizer_gen.c - a Hugging Face tokenizer.json + tokenizer_config.json generated from a
 * GGUF's byte-level BPE vocabulary (tokenizer.ggml.model "gpt2"), so that transformers'
 * AutoTokenizer on the exported folder gives the ids loratune's GGUF tokenizer gives
 * (src/tokenizer/hf_gguf_bpe.c reads the same keys; this is its inverse).
 *
 * vocab = tokenizer.ggml.tokens (id = index), merges = tokenizer.ggml.merges ("a b", rank =
 * index, written as pairs), token_type 3 (control) -> special added token, 4 (user-defined)
 * -> non-special added token. The pre-tokenizer is the one tokenizer.ggml.pre names, as the
 * model's original tokenizer.json has it: gpt-2 / default: ByteLevel with its regex;
 * smollm: Digits(individual) + ByteLevel; llama-bpe / llama3: Split(Llama 3 regex) +
 * ByteLevel without regex, ignore_merges; qwen2: NFC normalizer, Split(Qwen2 regex) +
 * ByteLevel. BOS is prepended by a TemplateProcessing post-processor when
 * tokenizer.ggml.add_bos_token is true. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_internal.h"

static const char k_llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int gstr_eq(const lt_gguf *g, const char *key, const char *want) {
    const char *s;
    size_t n;
    if (lt_gguf_get_str(g, key, &s, &n)) return 0;
    return n == strlen(want) && !memcmp(s, want, n);
}

/* tokenizer.ggml.pre as a C string ("default" when absent). */
static void pre_name(const lt_gguf *g, char *buf, size_t cap) {
    const char *s;
    size_t n;
    if (lt_gguf_get_str(g, "tokenizer.ggml.pre", &s, &n)) {
        snprintf(buf, cap, "default");
        return;
    }
    if (n >= cap) n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
}

static int known_pre(const char *p) {
    static const char *const k[] = {"gpt-2",     "gpt2",   "default", "smollm",
                                    "llama-bpe", "llama3", "qwen2"};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (!strcmp(p, k[i])) return 1;
    return 0;
}

lt_status lt_export_check_gguf_vocab(const lt_gguf *g) {
    const char *path = lt_gguf_path(g);
    if (lt_gguf_find_key(g, "tokenizer.ggml.model") < 0)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: no tokenizer.ggml.model: the GGUF carries no "
                        "vocabulary to write as tokenizer.json",
                        path);
    if (!gstr_eq(g, "tokenizer.ggml.model", "gpt2"))
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model is not \"gpt2\": only byte-level BPE "
                        "vocabularies can be written as tokenizer.json (fuse from the model's "
                        "Hugging Face folder instead)",
                        path);
    char pre[64];
    pre_name(g, pre, sizeof pre);
    if (!known_pre(pre))
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.pre '%s' is not supported (known: "
                        "gpt-2, default, smollm, llama-bpe, llama3, qwen2)",
                        path, pre);
    return LT_OK;
}

static json_t *bytelevel(int use_regex) {
    json_t *b = json_object();
    json_object_set_new(b, "type", json_string("ByteLevel"));
    json_object_set_new(b, "add_prefix_space", json_false());
    json_object_set_new(b, "trim_offsets", json_true());
    json_object_set_new(b, "use_regex", json_boolean(use_regex));
    return b;
}

static json_t *split(const char *pattern) {
    json_t *s = json_object(), *pat = json_object();
    json_object_set_new(s, "type", json_string("Split"));
    json_object_set_new(pat, "Regex", json_string(pattern));
    json_object_set_new(s, "pattern", pat);
    json_object_set_new(s, "behavior", json_string("Isolated"));
    json_object_set_new(s, "invert", json_false());
    return s;
}

static json_t *sequence(json_t *a, json_t *b) {
    json_t *s = json_object(), *l = json_array();
    json_object_set_new(s, "type", json_string("Sequence"));
    json_array_append_new(l, a);
    json_array_append_new(l, b);
    json_object_set_new(s, "pretokenizers", l);
    return s;
}

/* A GGUF string as a new json string; NULL when it is not valid UTF-8. */
static json_t *jstr(const char *s, size_t n) {
    return json_stringn(s, n);
}

static json_t *added_token(int id, json_t *content, int special) {
    json_t *a = json_object();
    json_object_set_new(a, "id", json_integer(id));
    json_object_set_new(a, "content", content);
    json_object_set_new(a, "single_word", json_false());
    json_object_set_new(a, "lstrip", json_false());
    json_object_set_new(a, "rstrip", json_false());
    json_object_set_new(a, "normalized", json_boolean(!special));
    json_object_set_new(a, "special", json_boolean(special));
    return a;
}

static int get_id(const lt_gguf *g, const char *key, int64_t n) {
    int64_t v;
    if (lt_gguf_get_i64(g, key, &v) || v < 0 || v >= n) return -1;
    return (int)v;
}

lt_status lt_export_hf_tokenizer_from_gguf(const lt_gguf *g, const char *dir, int ctx) {
    const char *path = lt_gguf_path(g);
    lt_status st = lt_export_check_gguf_vocab(g);
    if (st) return st;
    lt_gguf_type et;
    uint64_t nt = 0, ntt = 0, nm = 0;
    const void *data, *tt = NULL;
    if ((st = lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nt, &data)))
        return lt_error_wrap(st, path);
    if (et != LT_GGUF_STRING || nt == 0 || nt > INT32_MAX)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tokenizer.ggml.tokens: expected a non-empty array of "
                        "strings",
                        path);
    if (lt_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        if ((st = lt_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &ntt, &tt)))
            return lt_error_wrap(st, path);
        if ((et != LT_GGUF_INT32 && et != LT_GGUF_UINT32) || ntt != nt)
            return lt_error(LT_ERR_FORMAT,
                            "%s: tokenizer.ggml.token_type: expected %llu int32 "
                            "values",
                            path, (unsigned long long)nt);
    }
    if (lt_gguf_find_key(g, "tokenizer.ggml.merges") >= 0) {
        if ((st = lt_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &data)))
            return lt_error_wrap(st, path);
        if (et != LT_GGUF_STRING)
            return lt_error(LT_ERR_FORMAT, "%s: tokenizer.ggml.merges: expected strings", path);
    }
    char pre[64];
    pre_name(g, pre, sizeof pre);
    int bos = get_id(g, "tokenizer.ggml.bos_token_id", (int64_t)nt);
    int eos = get_id(g, "tokenizer.ggml.eos_token_id", (int64_t)nt);
    int unk = get_id(g, "tokenizer.ggml.unknown_token_id", (int64_t)nt);
    int pad = get_id(g, "tokenizer.ggml.padding_token_id", (int64_t)nt);
    int add_bos = 0, add_eos = 0;
    if (lt_gguf_find_key(g, "tokenizer.ggml.add_bos_token") >= 0)
        lt_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);
    if (lt_gguf_find_key(g, "tokenizer.ggml.add_eos_token") >= 0)
        lt_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos);

    json_t *tj = json_object(), *cfg = json_object();
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    json_t *added_dec = json_object();
    json_t **tok = lt_calloc((size_t)nt, sizeof *tok); /* borrowed from vocab's keys */
    if (!tok) {
        st = lt_error(LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < nt; i++) {
        const char *s;
        size_t n;
        if ((st = lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &n))) goto done;
        json_t *js = jstr(s, n);
        if (!js || memchr(s, 0, n)) {
            json_decref(js);
            st = lt_error(LT_ERR_FORMAT, "%s: tokenizer.ggml.tokens[%llu]: not valid UTF-8 text",
                          path, (unsigned long long)i);
            goto done;
        }
        tok[i] = js;
        json_object_setn_new(vocab, s, n, json_integer((json_int_t)i));
        int32_t ty = 1;
        if (tt) memcpy(&ty, (const char *)tt + 4 * i, 4);
        if ((ty == 3 || ty == 4) && n > 0) {
            json_array_append_new(added, added_token((int)i, json_copy(js), ty == 3));
            json_t *d = added_token((int)i, json_copy(js), ty == 3);
            json_object_del(d, "id");
            char ik[24];
            snprintf(ik, sizeof ik, "%llu", (unsigned long long)i);
            json_object_set_new(added_dec, ik, d);
        }
    }
    for (uint64_t i = 0; i < nm; i++) {
        const char *s;
        size_t n;
        if ((st = lt_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &n))) goto done;
        const char *sp = memchr(s, ' ', n);
        json_t *a = sp ? jstr(s, (size_t)(sp - s)) : NULL;
        json_t *b = sp ? jstr(sp + 1, n - (size_t)(sp - s) - 1) : NULL;
        if (!a || !b || sp == s || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1)) {
            json_decref(a);
            json_decref(b);
            st = lt_error(LT_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu]: expected \"a b\"", path,
                          (unsigned long long)i);
            goto done;
        }
        json_t *pair = json_array();
        json_array_append_new(pair, a);
        json_array_append_new(pair, b);
        json_array_append_new(merges, pair);
    }

    /* tokenizer.json */
    json_object_set_new(tj, "version", json_string("1.0"));
    json_object_set_new(tj, "truncation", json_null());
    json_object_set_new(tj, "padding", json_null());
    json_object_set_new(tj, "added_tokens", added);
    added = NULL;
    int ignore_merges = 0;
    json_t *norm = json_null(), *pt;
    if (!strcmp(pre, "smollm")) {
        json_t *d = json_object();
        json_object_set_new(d, "type", json_string("Digits"));
        json_object_set_new(d, "individual_digits", json_true());
        pt = sequence(d, bytelevel(1));
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) {
        ignore_merges = 1;
        pt = sequence(split(k_llama3_pattern), bytelevel(0));
    } else if (!strcmp(pre, "qwen2")) {
        json_decref(norm);
        norm = json_object();
        json_object_set_new(norm, "type", json_string("NFC"));
        pt = sequence(split(k_qwen2_pattern), bytelevel(0));
    } else {
        pt = bytelevel(1);
    }
    json_object_set_new(tj, "normalizer", norm);
    json_object_set_new(tj, "pre_tokenizer", pt);
    if ((add_bos && bos >= 0) || (add_eos && eos >= 0)) {
        /* TemplateProcessing: [BOS] $A [EOS] as the GGUF flags say */
        json_t *pp = json_object(), *single = json_array(), *pair = json_array(),
               *specials = json_object();
        json_object_set_new(pp, "type", json_string("TemplateProcessing"));
        for (int part = 0; part < 2; part++) {
            json_t *arr = part ? pair : single;
            for (int k = 0; k < (part ? 2 : 1); k++) {
                const char *seq = k ? "B" : "A";
                json_t *e;
                if (add_bos && bos >= 0) {
                    e = json_pack("{s:{s:s%,s:i}}", "SpecialToken", "id",
                                  json_string_value(tok[bos]), json_string_length(tok[bos]),
                                  "type_id", k);
                    json_array_append_new(arr, e);
                }
                e = json_pack("{s:{s:s,s:i}}", "Sequence", "id", seq, "type_id", k);
                json_array_append_new(arr, e);
                if (add_eos && eos >= 0) {
                    e = json_pack("{s:{s:s%,s:i}}", "SpecialToken", "id",
                                  json_string_value(tok[eos]), json_string_length(tok[eos]),
                                  "type_id", k);
                    json_array_append_new(arr, e);
                }
            }
        }
        json_object_set_new(pp, "single", single);
        json_object_set_new(pp, "pair", pair);
        int ids[2] = {add_bos ? bos : -1, add_eos ? eos : -1};
        for (int k = 0; k < 2; k++) {
            if (ids[k] < 0) continue;
            json_t *sp = json_pack("{s:O,s:[i],s:[O]}", "id", tok[ids[k]], "ids", ids[k], "tokens",
                                   tok[ids[k]]);
            json_object_set_new(specials, json_string_value(tok[ids[k]]), sp);
        }
        json_object_set_new(pp, "special_tokens", specials);
        json_object_set_new(tj, "post_processor", pp);
    } else {
        json_object_set_new(tj, "post_processor", json_null());
    }
    json_t *dec = bytelevel(1);
    json_object_set_new(dec, "add_prefix_space", json_true());
    json_object_set_new(tj, "decoder", dec);
    json_t *model = json_object();
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "dropout", json_null());
    json_object_set_new(model, "unk_token", json_null());
    json_object_set_new(model, "continuing_subword_prefix", json_null());
    json_object_set_new(model, "end_of_word_suffix", json_null());
    json_object_set_new(model, "fuse_unk", json_false());
    json_object_set_new(model, "byte_fallback", json_false());
    json_object_set_new(model, "ignore_merges", json_boolean(ignore_merges));
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", merges);
    vocab = merges = NULL;
    json_object_set_new(tj, "model", model);
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if ((st = lt_export_write_json(p, tj))) goto done;

    /* tokenizer_config.json */
    json_object_set_new(cfg, "add_bos_token", json_boolean(add_bos));
    json_object_set_new(cfg, "add_eos_token", json_boolean(add_eos));
    json_object_set_new(cfg, "add_prefix_space", json_false());
    json_object_set_new(cfg, "added_tokens_decoder", added_dec);
    added_dec = NULL;
    if (bos >= 0) json_object_set(cfg, "bos_token", tok[bos]);
    if (eos >= 0) json_object_set(cfg, "eos_token", tok[eos]);
    if (unk >= 0) json_object_set(cfg, "unk_token", tok[unk]);
    if (pad >= 0) json_object_set(cfg, "pad_token", tok[pad]);
    const char *ct;
    size_t ctl;
    if (lt_gguf_get_str(g, "tokenizer.chat_template", &ct, &ctl) == LT_OK) {
        json_t *cj = jstr(ct, ctl);
        if (!cj) {
            st = lt_error(LT_ERR_FORMAT, "%s: tokenizer.chat_template: not valid UTF-8", path);
            goto done;
        }
        json_object_set_new(cfg, "chat_template", cj);
    }
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(cfg, "model_max_length", json_integer(ctx));
    json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    st = lt_export_write_json(p, cfg);
done:
    if (tok)
        for (uint64_t i = 0; i < nt; i++)
            json_decref(tok[i]);
    free(tok);
    json_decref(vocab);
    json_decref(merges);
    json_decref(added);
    json_decref(added_dec);
    json_decref(tj);
    json_decref(cfg);
    return st;
}
