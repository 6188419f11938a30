/* hf_tokenizer.c - loads a Hugging Face tokenizer.json (BPE models) into the hf_tok of
 * hf_tokenizer.h; encode/decode live in hf_pipeline.c, the BPE word model in hf_bpe.c.
 *
 * Supported: model BPE (vocab; merges as "a b" strings or ["a","b"] pairs; unk_token,
 * fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix);
 * normalizers Sequence/Prepend/Replace/NFC/NFD/NFKC/NFKD/Lowercase; pre-tokenizers
 * Sequence/ByteLevel/Split/Digits/Metaspace; decoders Sequence/ByteLevel/Replace/
 * ByteFallback/Fuse/Strip/Metaspace; post-processors TemplateProcessing/RobertaProcessing/
 * BertProcessing/ByteLevel/Sequence; added_tokens with all their flags. Anything else is
 * LT_ERR_UNSUPPORTED naming the type. truncation and padding are ignored (they are settings of a
 * training run, not of the vocabulary). BOS/EOS: tokenizer_config.json next to the file (bos_token
 * / eos_token) if present, else the post-processor's template (special before $A = BOS, after =
 * EOS), else well-known special tokens ("<s>", "<|begin_of_text|>" / "</s>", "<|end_of_text|>",
 * "<|endoftext|>"). */
#include "hf_tokenizer.h"
#include "core/json_file.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

const char hf_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

lt_status hf_regex_compile(const char *src, const char *pat, size_t len, pcre2_code **out) {
    int errc;
    PCRE2_SIZE erro;
    *out = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &errc, &erro, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(errc, msg, sizeof msg);
        return lt_error(LT_ERR_FORMAT, "%s: cannot compile regex '%.*s': %s at offset %zu", src,
                        (int)(len > 200 ? 200 : len), pat, (const char *)msg, (size_t)erro);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back if absent */
    return LT_OK;
}

static char *dupn(const char *s, size_t n) {
    char *p = lt_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static int jbool(json_t *o, const char *k, int dflt) {
    json_t *v = json_object_get(o, k);
    if (json_is_boolean(v)) return json_is_true(v);
    return dflt;
}

static const char *jtype(json_t *o) {
    json_t *t = json_object_get(o, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

/* pattern: {"String": s} or {"Regex": r}; exactly one of *lit / *re is set */
static lt_status parse_pattern(hf_tok *h, json_t *o, const char *what, char **lit, size_t *litlen,
                               pcre2_code **re) {
    json_t *p = json_object_get(o, "pattern");
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    if (json_is_string(s)) {
        *litlen = json_string_length(s);
        *lit = dupn(json_string_value(s), *litlen);
        return *lit ? LT_OK : lt_error(LT_ERR_NOMEM, "out of memory");
    }
    if (json_is_string(r))
        return hf_regex_compile(h->src, json_string_value(r), json_string_length(r), re);
    return lt_error(LT_ERR_FORMAT,
                    "%s: %s: expected \"pattern\": {\"String\": ...} or "
                    "{\"Regex\": ...}",
                    h->src, what);
}

static int prepend_scheme(json_t *o) {
    json_t *ps = json_object_get(o, "prepend_scheme");
    if (json_is_string(ps)) {
        const char *s = json_string_value(ps);
        if (!strcmp(s, "first")) return HF_PREPEND_FIRST;
        if (!strcmp(s, "never")) return HF_PREPEND_NEVER;
        return HF_PREPEND_ALWAYS;
    }
    return jbool(o, "add_prefix_space", 1) ? HF_PREPEND_ALWAYS : HF_PREPEND_NEVER;
}

static lt_status replacement_char(hf_tok *h, json_t *o, const char *what, char *dst, size_t *n) {
    json_t *r = json_object_get(o, "replacement");
    const char *s = json_is_string(r) ? json_string_value(r) : "\xe2\x96\x81";
    size_t l = strlen(s);
    if (l == 0 || l > 4)
        return lt_error(LT_ERR_FORMAT, "%s: %s: \"replacement\" must be one character", h->src,
                        what);
    memcpy(dst, s, l);
    *n = l;
    return LT_OK;
}

/* ---- normalizers --------------------------------------------------------------------- */
static lt_status add_norm(hf_tok *h, json_t *o, int depth) {
    if (json_is_null(o) || !o) return LT_OK;
    const char *t = jtype(o);
    if (!t || depth > 16)
        return lt_error(LT_ERR_FORMAT, "%s: normalizer: expected an object with \"type\"", h->src);
    if (!strcmp(t, "Sequence")) {
        json_t *arr = json_object_get(o, "normalizers");
        if (!json_is_array(arr))
            return lt_error(LT_ERR_FORMAT,
                            "%s: normalizer Sequence: expected \"normalizers\" "
                            "array",
                            h->src);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            lt_status st = add_norm(h, json_array_get(arr, i), depth + 1);
            if (st) return st;
        }
        return LT_OK;
    }
    hf_norm nm = {0};
    if (!strcmp(t, "Prepend")) {
        json_t *p = json_object_get(o, "prepend");
        if (!json_is_string(p))
            return lt_error(LT_ERR_FORMAT, "%s: normalizer Prepend: expected \"prepend\" string",
                            h->src);
        nm.type = HF_NORM_PREPEND;
        nm.alen = json_string_length(p);
        nm.a = dupn(json_string_value(p), nm.alen);
    } else if (!strcmp(t, "Replace")) {
        json_t *c = json_object_get(o, "content");
        if (!json_is_string(c))
            return lt_error(LT_ERR_FORMAT, "%s: normalizer Replace: expected \"content\" string",
                            h->src);
        lt_status st = parse_pattern(h, o, "normalizer Replace", &nm.a, &nm.alen, &nm.re);
        if (st) return st;
        nm.type = nm.re ? HF_NORM_REPLACE_RE : HF_NORM_REPLACE;
        nm.blen = json_string_length(c);
        nm.b = dupn(json_string_value(c), nm.blen);
        if (!nm.b) {
            free(nm.a);
            pcre2_code_free(nm.re);
            return lt_error(LT_ERR_NOMEM, "out of memory");
        }
    } else if (!strcmp(t, "NFC")) {
        nm.type = HF_NORM_NFC;
    } else if (!strcmp(t, "NFD")) {
        nm.type = HF_NORM_NFD;
    } else if (!strcmp(t, "NFKC")) {
        nm.type = HF_NORM_NFKC;
    } else if (!strcmp(t, "NFKD")) {
        nm.type = HF_NORM_NFKD;
    } else if (!strcmp(t, "Lowercase")) {
        nm.type = HF_NORM_LOWERCASE;
    } else {
        return lt_error(LT_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", h->src, t);
    }
    hf_norm *q = lt_realloc(h->norm, sizeof(hf_norm) * (h->n_norm + 1));
    if (!q) {
        free(nm.a);
        free(nm.b);
        pcre2_code_free(nm.re);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    h->norm = q;
    h->norm[h->n_norm++] = nm;
    return LT_OK;
}

/* ---- pre-tokenizers ------------------------------------------------------------------ */
static lt_status push_pre(hf_tok *h, hf_pre *p) {
    hf_pre *q = lt_realloc(h->pre, sizeof(hf_pre) * (h->n_pre + 1));
    if (!q) {
        pcre2_code_free(p->re);
        free(p->lit);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    h->pre = q;
    h->pre[h->n_pre++] = *p;
    return LT_OK;
}

static lt_status add_pre(hf_tok *h, json_t *o, int depth) {
    if (json_is_null(o) || !o) return LT_OK;
    const char *t = jtype(o);
    if (!t || depth > 16)
        return lt_error(LT_ERR_FORMAT, "%s: pre_tokenizer: expected an object with \"type\"",
                        h->src);
    lt_status st;
    hf_pre p = {0};
    if (!strcmp(t, "Sequence")) {
        json_t *arr = json_object_get(o, "pretokenizers");
        if (!json_is_array(arr))
            return lt_error(LT_ERR_FORMAT,
                            "%s: pre_tokenizer Sequence: expected "
                            "\"pretokenizers\" array",
                            h->src);
        for (size_t i = 0; i < json_array_size(arr); i++)
            if ((st = add_pre(h, json_array_get(arr, i), depth + 1))) return st;
        return LT_OK;
    } else if (!strcmp(t, "ByteLevel")) {
        p.type = HF_PRE_BYTELEVEL;
        p.add_prefix_space = jbool(o, "add_prefix_space", 1);
        p.use_regex = jbool(o, "use_regex", 1);
        if (p.use_regex &&
            (st = hf_regex_compile(h->src, hf_gpt2_pattern, strlen(hf_gpt2_pattern), &p.re)))
            return st;
    } else if (!strcmp(t, "Split")) {
        p.type = HF_PRE_SPLIT;
        json_t *b = json_object_get(o, "behavior");
        const char *bs = json_is_string(b) ? json_string_value(b) : "";
        if (!strcmp(bs, "Removed"))
            p.behavior = HF_SPLIT_REMOVED;
        else if (!strcmp(bs, "Isolated"))
            p.behavior = HF_SPLIT_ISOLATED;
        else if (!strcmp(bs, "MergedWithPrevious"))
            p.behavior = HF_SPLIT_MERGED_PREV;
        else if (!strcmp(bs, "MergedWithNext"))
            p.behavior = HF_SPLIT_MERGED_NEXT;
        else if (!strcmp(bs, "Contiguous"))
            p.behavior = HF_SPLIT_CONTIGUOUS;
        else
            return lt_error(LT_ERR_FORMAT, "%s: pre_tokenizer Split: unknown behavior '%s'", h->src,
                            bs);
        p.invert = jbool(o, "invert", 0);
        if ((st = parse_pattern(h, o, "pre_tokenizer Split", &p.lit, &p.litlen, &p.re))) return st;
    } else if (!strcmp(t, "Digits")) {
        /* Rust char::is_numeric == \p{N}; runs of digits are kept together otherwise */
        p.type = HF_PRE_SPLIT;
        p.behavior = HF_SPLIT_ISOLATED;
        const char *pat = jbool(o, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+";
        if ((st = hf_regex_compile(h->src, pat, strlen(pat), &p.re))) return st;
    } else if (!strcmp(t, "Metaspace")) {
        p.type = HF_PRE_METASPACE;
        if ((st = replacement_char(h, o, "pre_tokenizer Metaspace", p.repl, &p.repl_len)))
            return st;
        p.prepend_scheme = prepend_scheme(o);
        p.split = jbool(o, "split", 1);
    } else {
        return lt_error(LT_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", h->src,
                        t);
    }
    return push_pre(h, &p);
}

/* ---- decoders ------------------------------------------------------------------------ */
static lt_status add_dec(hf_tok *h, json_t *o, int depth) {
    if (json_is_null(o) || !o) return LT_OK;
    const char *t = jtype(o);
    if (!t || depth > 16)
        return lt_error(LT_ERR_FORMAT, "%s: decoder: expected an object with \"type\"", h->src);
    h->has_decoder = 1;
    lt_status st;
    hf_dec d = {0};
    if (!strcmp(t, "Sequence")) {
        json_t *arr = json_object_get(o, "decoders");
        if (!json_is_array(arr))
            return lt_error(LT_ERR_FORMAT, "%s: decoder Sequence: expected \"decoders\" array",
                            h->src);
        for (size_t i = 0; i < json_array_size(arr); i++)
            if ((st = add_dec(h, json_array_get(arr, i), depth + 1))) return st;
        return LT_OK;
    } else if (!strcmp(t, "ByteLevel")) {
        d.type = HF_DEC_BYTELEVEL;
    } else if (!strcmp(t, "ByteFallback")) {
        d.type = HF_DEC_BYTEFALLBACK;
    } else if (!strcmp(t, "Fuse")) {
        d.type = HF_DEC_FUSE;
    } else if (!strcmp(t, "Replace")) {
        d.type = HF_DEC_REPLACE;
        pcre2_code *re = NULL;
        json_t *c = json_object_get(o, "content");
        if (!json_is_string(c))
            return lt_error(LT_ERR_FORMAT, "%s: decoder Replace: expected \"content\" string",
                            h->src);
        if ((st = parse_pattern(h, o, "decoder Replace", &d.a, &d.alen, &re))) return st;
        if (re) {
            pcre2_code_free(re);
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: decoder Replace with a Regex pattern is "
                            "not supported",
                            h->src);
        }
        d.blen = json_string_length(c);
        d.b = dupn(json_string_value(c), d.blen);
    } else if (!strcmp(t, "Strip")) {
        d.type = HF_DEC_STRIP;
        json_t *c = json_object_get(o, "content");
        json_t *s0 = json_object_get(o, "start"), *s1 = json_object_get(o, "stop");
        if (!json_is_string(c) || !json_is_integer(s0) || !json_is_integer(s1) ||
            json_integer_value(s0) < 0 || json_integer_value(s1) < 0 ||
            json_integer_value(s0) > 1000000 || json_integer_value(s1) > 1000000)
            return lt_error(LT_ERR_FORMAT,
                            "%s: decoder Strip: expected \"content\" string and "
                            "\"start\"/\"stop\" counts",
                            h->src);
        d.alen = json_string_length(c);
        d.a = dupn(json_string_value(c), d.alen);
        d.start = (int)json_integer_value(s0);
        d.stop = (int)json_integer_value(s1);
    } else if (!strcmp(t, "Metaspace")) {
        d.type = HF_DEC_METASPACE;
        char r[8];
        if ((st = replacement_char(h, o, "decoder Metaspace", r, &d.alen))) return st;
        d.a = dupn(r, d.alen);
        d.prepend_scheme = prepend_scheme(o);
    } else {
        return lt_error(LT_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", h->src, t);
    }
    hf_dec *q = lt_realloc(h->dec, sizeof(hf_dec) * (h->n_dec + 1));
    if (!q) {
        free(d.a);
        free(d.b);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    h->dec = q;
    h->dec[h->n_dec++] = d;
    return LT_OK;
}

/* ---- post-processors ----------------------------------------------------------------- */
static lt_status ids_append(hf_tok *h, int32_t **v, int *n, int32_t id, const char *what) {
    if (id < 0 || id >= h->n_ids)
        return lt_error(LT_ERR_FORMAT, "%s: post_processor %s: token id %d is out of range", h->src,
                        what, (int)id);
    int32_t *q = lt_realloc(*v, sizeof(int32_t) * (*n + 1));
    if (!q) return lt_error(LT_ERR_NOMEM, "out of memory");
    *v = q;
    q[(*n)++] = id;
    return LT_OK;
}

/* Adds one processor around the current template: pre = new_pre + pre, post += new_post. */
static lt_status add_post(hf_tok *h, json_t *o, int depth) {
    if (json_is_null(o) || !o) return LT_OK;
    const char *t = jtype(o);
    if (!t || depth > 16)
        return lt_error(LT_ERR_FORMAT, "%s: post_processor: expected an object with \"type\"",
                        h->src);
    lt_status st = LT_OK;
    int32_t *pre = NULL;
    int npre = 0;
    if (!strcmp(t, "Sequence")) {
        json_t *arr = json_object_get(o, "processors");
        if (!json_is_array(arr))
            return lt_error(LT_ERR_FORMAT,
                            "%s: post_processor Sequence: expected "
                            "\"processors\" array",
                            h->src);
        for (size_t i = 0; i < json_array_size(arr); i++)
            if ((st = add_post(h, json_array_get(arr, i), depth + 1))) return st;
        return LT_OK;
    } else if (!strcmp(t, "ByteLevel")) {
        return LT_OK;
    } else if (!strcmp(t, "TemplateProcessing")) {
        json_t *single = json_object_get(o, "single"), *sp = json_object_get(o, "special_tokens");
        if (!json_is_array(single))
            return lt_error(LT_ERR_FORMAT,
                            "%s: post_processor TemplateProcessing: expected "
                            "\"single\" array",
                            h->src);
        int after = 0;
        for (size_t i = 0; !st && i < json_array_size(single); i++) {
            json_t *it = json_array_get(single, i);
            json_t *stok = json_object_get(it, "SpecialToken");
            if (json_object_get(it, "Sequence")) {
                after = 1;
                continue;
            }
            json_t *name = json_object_get(stok, "id");
            json_t *ent =
                json_object_get(sp, json_string_value(name) ? json_string_value(name) : "");
            json_t *ids = json_object_get(ent, "ids");
            if (!json_is_string(name) || !json_is_array(ids)) {
                st = lt_error(LT_ERR_FORMAT,
                              "%s: post_processor TemplateProcessing: single[%zu]: "
                              "expected a SpecialToken listed in special_tokens with \"ids\"",
                              h->src, i);
                break;
            }
            for (size_t k = 0; !st && k < json_array_size(ids); k++) {
                json_t *x = json_array_get(ids, k);
                int64_t v = json_is_integer(x) ? json_integer_value(x) : -1;
                if (v < 0 || v > INT32_MAX) v = -1;
                st = after ? ids_append(h, &h->post_post, &h->n_post_post, (int32_t)v,
                                        "TemplateProcessing")
                           : ids_append(h, &pre, &npre, (int32_t)v, "TemplateProcessing");
            }
        }
    } else if (!strcmp(t, "RobertaProcessing") || !strcmp(t, "BertProcessing")) {
        json_t *cls = json_array_get(json_object_get(o, "cls"), 1);
        json_t *sep = json_array_get(json_object_get(o, "sep"), 1);
        if (!json_is_integer(cls) || !json_is_integer(sep))
            return lt_error(LT_ERR_FORMAT,
                            "%s: post_processor %s: expected \"cls\" and \"sep\" "
                            "as [token, id]",
                            h->src, t);
        int64_t c = json_integer_value(cls), s = json_integer_value(sep);
        st = ids_append(h, &pre, &npre, c < 0 || c > INT32_MAX ? -1 : (int32_t)c, t);
        if (!st)
            st = ids_append(h, &h->post_post, &h->n_post_post,
                            s < 0 || s > INT32_MAX ? -1 : (int32_t)s, t);
    } else {
        return lt_error(LT_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported", h->src,
                        t);
    }
    h->has_post = 1;
    for (int i = 0; !st && i < h->n_post_pre; i++)
        st = ids_append(h, &pre, &npre, h->post_pre[i], t);
    if (st) {
        free(pre);
        return st;
    }
    free(h->post_pre);
    h->post_pre = pre;
    h->n_post_pre = npre;
    return LT_OK;
}

/* ---- bos / eos ----------------------------------------------------------------------- */
static int32_t config_token(hf_tok *h, json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return hf_strmap_get(&h->vocab, h->pieces, h->piece_len, json_string_value(v),
                         json_string_length(v));
}

static int32_t known_token(hf_tok *h, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int32_t id = hf_strmap_get(&h->vocab, h->pieces, h->piece_len, names[i], strlen(names[i]));
        if (id >= 0) return id;
    }
    return -1;
}

static lt_status find_bos_eos(hf_tok *h, const char *path, int32_t *bos, int32_t *eos) {
    static const char *const kb[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>", NULL};
    static const char *const ke[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", NULL};
    *bos = *eos = -1;
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char *cp = lt_malloc(dl + 32);
    if (!cp) return lt_error(LT_ERR_NOMEM, "out of memory");
    memcpy(cp, path, dl);
    strcpy(cp + dl, "tokenizer_config.json");
    int have_cfg = 0;
    if (lt_path_exists(cp)) {
        json_t *cfg = NULL;
        lt_status st = lt_json_load_file(cp, JSON_DECODE_INT_AS_REAL, &cfg);
        if (st) {
            free(cp);
            return st;
        }
        have_cfg = 1;
        *bos = config_token(h, cfg, "bos_token");
        *eos = config_token(h, cfg, "eos_token");
        json_decref(cfg);
    }
    free(cp);
    if (!have_cfg) {
        if (h->n_post_pre) *bos = h->post_pre[0];
        if (h->n_post_post) *eos = h->post_post[h->n_post_post - 1];
        if (*bos < 0) *bos = known_token(h, kb);
        if (*eos < 0) *eos = known_token(h, ke);
    }
    return LT_OK;
}

/* ---- model --------------------------------------------------------------------------- */
static lt_status load_model(hf_tok *h, json_t *model, json_t *added) {
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    const char *t = jtype(model);
    if (t && strcmp(t, "BPE"))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)",
                        h->src, t);
    if (!json_is_object(vocab))
        return lt_error(LT_ERR_FORMAT, "%s: model.vocab: expected an object of token -> id",
                        h->src);
    if (!json_is_array(merges))
        return lt_error(LT_ERR_FORMAT, "%s: model.merges: expected an array", h->src);
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: model.dropout %g is not supported", h->src,
                        json_number_value(dropout));
    size_t nv = json_object_size(vocab), na = json_array_size(added);
    /* ids may have holes, but not many: bounds memory by the file's own size */
    int64_t limit = 2 * (int64_t)(nv + na) + 256, maxid = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        int64_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= limit)
            return lt_error(LT_ERR_FORMAT, "%s: model.vocab['%s']: expected an id in [0, %lld)",
                            h->src, key, (long long)limit);
        if (id > maxid) maxid = id;
    }
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i), *id = json_object_get(a, "id"),
               *c = json_object_get(a, "content");
        int64_t v = json_is_integer(id) ? json_integer_value(id) : -1;
        if (v < 0 || v >= limit || !json_is_string(c))
            return lt_error(LT_ERR_FORMAT,
                            "%s: added_tokens[%zu]: expected \"id\" in [0, %lld) "
                            "and \"content\" string",
                            h->src, i, (long long)limit);
        if (v > maxid) maxid = v;
    }
    lt_status st = hf_tok_alloc_ids(h, (int32_t)(maxid + 1));
    if (st) return st;
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (h->pieces[id])
            return lt_error(LT_ERR_FORMAT, "%s: model.vocab['%s']: id %d is used twice", h->src,
                            key, (int)id);
        if ((st = hf_tok_set_piece(h, id, key, strlen(key)))) return st;
        h->in_model[id] = 1;
    }
    if ((st = hf_strmap_init(&h->vocab, (uint32_t)(maxid + 1)))) return st;
    for (int32_t i = 0; i <= maxid; i++)
        if (h->in_model[i]) hf_strmap_put(&h->vocab, h->pieces, h->piece_len, i);
    /* added tokens */
    h->added = lt_calloc(na + 1, sizeof(hf_added));
    if (!h->added) return lt_error(LT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < na; i++) {
        json_t *a = json_array_get(added, i), *c = json_object_get(a, "content");
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        hf_added *ad = &h->added[h->n_added++];
        ad->len = json_string_length(c);
        ad->content = dupn(json_string_value(c), ad->len);
        if (!ad->content) return lt_error(LT_ERR_NOMEM, "out of memory");
        ad->id = id;
        ad->special = jbool(a, "special", 0);
        ad->single_word = jbool(a, "single_word", 0);
        ad->lstrip = jbool(a, "lstrip", 0);
        ad->rstrip = jbool(a, "rstrip", 0);
        ad->normalized = jbool(a, "normalized", !ad->special);
        if (!h->pieces[id]) {
            if ((st = hf_tok_set_piece(h, id, ad->content, ad->len))) return st;
            hf_strmap_put(&h->vocab, h->pieces, h->piece_len, id);
        }
        if (ad->special) h->special[id] = 1;
    }
    /* options */
    h->fuse_unk = jbool(model, "fuse_unk", 0);
    h->byte_fallback = jbool(model, "byte_fallback", 0);
    h->ignore_merges = jbool(model, "ignore_merges", 0);
    h->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        h->unk_id = hf_vocab_get(h, json_string_value(unk), json_string_length(unk));
        if (h->unk_id < 0)
            return lt_error(LT_ERR_FORMAT, "%s: model.unk_token '%s' is not in the vocabulary",
                            h->src, json_string_value(unk));
    }
    json_t *cp = json_object_get(model, "continuing_subword_prefix");
    json_t *ew = json_object_get(model, "end_of_word_suffix");
    if (json_is_string(cp) && json_string_length(cp))
        h->cont_prefix = dupn(json_string_value(cp), json_string_length(cp));
    if (json_is_string(ew) && json_string_length(ew))
        h->eow_suffix = dupn(json_string_value(ew), json_string_length(ew));
    hf_tok_finish_bytes(h);
    /* merges */
    size_t nm = json_array_size(merges);
    if ((st = hf_merges_init(h, (uint32_t)nm))) return st;
    for (size_t i = 0; i < nm; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            size_t l = json_string_length(m);
            if (!sp || memchr(sp + 1, ' ', l - (size_t)(sp + 1 - s)))
                return lt_error(LT_ERR_FORMAT,
                                "%s: model.merges[%zu]: expected \"a b\" (two "
                                "tokens separated by one space), got '%s'",
                                h->src, i, s);
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = l - al - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bl = json_string_length(json_array_get(m, 1));
        } else {
            return lt_error(LT_ERR_FORMAT,
                            "%s: model.merges[%zu]: expected \"a b\" or [\"a\", "
                            "\"b\"]",
                            h->src, i);
        }
        if ((st = hf_merge_add(h, a, al, b, bl, (uint32_t)i))) return st;
    }
    return LT_OK;
}

lt_status lt_tokenizer_load_hf(const char *path, lt_tokenizer **out) {
    *out = NULL;
    json_t *root = NULL;
    lt_status st = lt_json_load_file(path, JSON_REJECT_DUPLICATES, &root);
    if (st) return st;
    hf_tok *h = lt_calloc(1, sizeof *h);
    if (!h) {
        json_decref(root);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    h->src = dupn(path, strlen(path));
    json_t *model = json_object_get(root, "model");
    json_t *added = json_object_get(root, "added_tokens");
    if (!h->src)
        st = lt_error(LT_ERR_NOMEM, "out of memory");
    else if (!json_is_object(root))
        st = lt_error(LT_ERR_FORMAT, "%s: expected a JSON object at the top level", path);
    else if (!json_is_object(model))
        st = lt_error(LT_ERR_FORMAT, "%s: missing \"model\" object", path);
    else if (added && !json_is_null(added) && !json_is_array(added))
        st = lt_error(LT_ERR_FORMAT, "%s: \"added_tokens\": expected an array", path);
    if (!st) st = load_model(h, model, added);
    if (!st) st = add_norm(h, json_object_get(root, "normalizer"), 0);
    if (!st) st = add_pre(h, json_object_get(root, "pre_tokenizer"), 0);
    if (!st) st = add_dec(h, json_object_get(root, "decoder"), 0);
    if (!st) st = add_post(h, json_object_get(root, "post_processor"), 0);
    json_decref(root);
    int32_t bos = -1, eos = -1;
    if (!st) st = find_bos_eos(h, path, &bos, &eos);
    if (st) {
        hf_tok_free(h);
        return st;
    }
    return hf_tok_wrap(h, bos, eos, out);
}
