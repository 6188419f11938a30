/* hf_gguf_bpe.c - builds the Hugging Face style byte-level BPE tokenizer from a GGUF
 * vocabulary with tokenizer.ggml.model == "gpt2" (llama.cpp's name for byte-level BPE).
 *
 * Keys read: tokenizer.ggml.tokens (strings), .token_type (int32, optional: 3 = control
 * -> special added token, 4 = user-defined -> non-special added token), .merges ("a b"
 * strings, rank = index), .bos_token_id / .eos_token_id, .add_bos_token / .add_eos_token
 * (default false, as GPT-2), .pre (pre-tokenizer regex set, see hf_tokenizer.h; llama-bpe
 * also turns on ignore_merges as Llama 3's tokenizer.json does, qwen2 adds its NFC). The
 * decoder is ByteLevel. Everything is validated against the counts before use. */
#include "hf_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "loratune/gguf.h"

static const char k_llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static lt_status push_pre(hf_tok *h, const hf_pre *p) {
    hf_pre *q = lt_realloc(h->pre, sizeof(hf_pre) * (h->n_pre + 1));
    if (!q) return lt_error(LT_ERR_NOMEM, "out of memory");
    h->pre = q;
    h->pre[h->n_pre++] = *p;
    return LT_OK;
}

static lt_status add_split(hf_tok *h, const char *pat) {
    hf_pre p = {0};
    p.type = HF_PRE_SPLIT;
    p.behavior = HF_SPLIT_ISOLATED;
    lt_status st = hf_regex_compile(h->src, pat, strlen(pat), &p.re);
    if (!st && (st = push_pre(h, &p))) pcre2_code_free(p.re);
    return st;
}

static lt_status add_bytelevel(hf_tok *h, int use_regex) {
    hf_pre p = {0};
    p.type = HF_PRE_BYTELEVEL;
    p.use_regex = use_regex;
    lt_status st = LT_OK;
    if (use_regex) st = hf_regex_compile(h->src, hf_gpt2_pattern, strlen(hf_gpt2_pattern), &p.re);
    if (!st && (st = push_pre(h, &p))) pcre2_code_free(p.re);
    return st;
}

static lt_status set_pre(hf_tok *h, const char *pre, size_t n) {
    char name[64];
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, pre, n);
    name[n] = 0;
    if (!strcmp(name, "gpt-2") || !strcmp(name, "default") || !strcmp(name, "gpt2"))
        return add_bytelevel(h, 1);
    if (!strcmp(name, "smollm")) {
        lt_status st = add_split(h, "\\p{N}");
        return st ? st : add_bytelevel(h, 1);
    }
    if (!strcmp(name, "llama-bpe") || !strcmp(name, "llama3")) {
        h->ignore_merges = 1; /* Llama 3's tokenizer.json says so (llama.cpp does the same) */
        lt_status st = add_split(h, k_llama3_pattern);
        return st ? st : add_bytelevel(h, 0);
    }
    if (!strcmp(name, "qwen2")) {
        /* Qwen2's tokenizer.json normalizes to NFC; llama.cpp does not, but the model was
         * trained on HF's ids, so they are what fine-tuning must reproduce. */
        hf_norm *nm = lt_calloc(1, sizeof *nm);
        if (!nm) return lt_error(LT_ERR_NOMEM, "out of memory");
        nm->type = HF_NORM_NFC;
        h->norm = nm;
        h->n_norm = 1;
        lt_status st = add_split(h, k_qwen2_pattern);
        return st ? st : add_bytelevel(h, 0);
    }
    return lt_error(LT_ERR_UNSUPPORTED,
                    "%s: tokenizer.ggml.pre '%s' is not supported (known: gpt-2, default, "
                    "smollm, llama-bpe, llama3, qwen2)",
                    h->src, name);
}

/* A special token id: absent -> -1; present, it must be an integer inside the vocabulary (an
 * id outside it used to become "none" without a word). */
static lt_status get_id(const lt_gguf *g, const char *src, const char *key, int32_t n,
                        int32_t *out) {
    *out = -1;
    if (lt_gguf_find_key(g, key) < 0) return LT_OK;
    int64_t v;
    lt_status st = lt_gguf_get_i64(g, key, &v);
    if (st) return lt_error_wrap(st, src);
    if (v < 0 || v >= n)
        return lt_error(LT_ERR_FORMAT,
                        "%s: %s = %lld is outside the vocabulary (%d tokens, ids 0..%d)", src, key,
                        (long long)v, n, n - 1);
    *out = (int32_t)v;
    return LT_OK;
}

static lt_status build(const lt_gguf *g, hf_tok *h, int32_t *bos, int32_t *eos) {
    lt_status st;
    lt_gguf_type et;
    uint64_t nt;
    const void *data;
    if ((st = lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nt, &data)))
        return lt_error_wrap(st, h->src);
    if (et != LT_GGUF_STRING || nt == 0 || nt > INT32_MAX)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tokenizer.ggml.tokens: expected a non-empty array "
                        "of strings",
                        h->src);
    int32_t n = (int32_t)nt;
    if ((st = hf_tok_alloc_ids(h, n))) return st;
    for (int32_t i = 0; i < n; i++) {
        const char *s;
        size_t l;
        if ((st = lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s, &l)))
            return lt_error_wrap(st, h->src);
        if ((st = hf_tok_set_piece(h, i, s, l))) return st;
        h->in_model[i] = 1;
    }
    if ((st = hf_strmap_init(&h->vocab, (uint32_t)n))) return st;
    for (int32_t i = 0; i < n; i++)
        hf_strmap_put(&h->vocab, h->pieces, h->piece_len, i);
    /* token types -> added tokens */
    uint64_t ntt = 0;
    const void *tt = NULL;
    if (lt_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        if ((st = lt_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &ntt, &tt)))
            return lt_error_wrap(st, h->src);
        if ((et != LT_GGUF_INT32 && et != LT_GGUF_UINT32) || ntt != nt)
            return lt_error(LT_ERR_FORMAT,
                            "%s: tokenizer.ggml.token_type: expected %d int32 "
                            "values",
                            h->src, (int)n);
    }
    h->added = lt_calloc(1, sizeof(hf_added));
    if (!h->added) return lt_error(LT_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; tt && i < n; i++) {
        int32_t ty;
        memcpy(&ty, (const char *)tt + 4 * (size_t)i, 4);
        if (ty != 3 && ty != 4) continue;
        if (h->piece_len[i] == 0) continue;
        hf_added *q = lt_realloc(h->added, sizeof(hf_added) * (h->n_added + 1));
        if (!q) return lt_error(LT_ERR_NOMEM, "out of memory");
        h->added = q;
        hf_added *a = &h->added[h->n_added++];
        memset(a, 0, sizeof *a);
        a->len = h->piece_len[i];
        a->content = lt_malloc(a->len + 1);
        if (!a->content) return lt_error(LT_ERR_NOMEM, "out of memory");
        memcpy(a->content, h->pieces[i], a->len + 1);
        a->id = i;
        a->special = ty == 3;
        h->special[i] = (uint8_t)a->special;
    }
    h->unk_id = -1;
    hf_tok_finish_bytes(h);
    /* merges */
    uint64_t nm = 0;
    if (lt_gguf_find_key(g, "tokenizer.ggml.merges") >= 0) {
        if ((st = lt_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &data)))
            return lt_error_wrap(st, h->src);
        if (et != LT_GGUF_STRING || nm > (1u << 28))
            return lt_error(LT_ERR_FORMAT,
                            "%s: tokenizer.ggml.merges: expected an array of "
                            "strings",
                            h->src);
    }
    if (nm == 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tokenizer.ggml.model is \"gpt2\" (byte-level BPE) but there is no "
                        "tokenizer.ggml.merges: expected the merges of a BPE vocabulary (a "
                        "SentencePiece vocabulary is tokenizer.ggml.model \"llama\")",
                        h->src);
    if ((st = hf_merges_init(h, (uint32_t)nm))) return st;
    for (uint64_t i = 0; i < nm; i++) {
        const char *s;
        size_t l;
        if ((st = lt_gguf_get_arr_str(g, "tokenizer.ggml.merges", i, &s, &l)))
            return lt_error_wrap(st, h->src);
        const char *sp = memchr(s, ' ', l);
        if (!sp || sp == s || memchr(sp + 1, ' ', l - (size_t)(sp + 1 - s)))
            return lt_error(LT_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu]: expected \"a b\"",
                            h->src, (unsigned long long)i);
        if ((st = hf_merge_add(h, s, (size_t)(sp - s), sp + 1, l - (size_t)(sp - s) - 1,
                               (uint32_t)i)))
            return st;
    }
    /* pre-tokenizer, decoder */
    const char *pre = "default";
    size_t pl = 7;
    if (lt_gguf_find_key(g, "tokenizer.ggml.pre") >= 0 &&
        (st = lt_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pl)))
        return lt_error_wrap(st, h->src);
    if ((st = set_pre(h, pre, pl))) return st;
    h->dec = lt_calloc(1, sizeof(hf_dec));
    if (!h->dec) return lt_error(LT_ERR_NOMEM, "out of memory");
    h->dec[0].type = HF_DEC_BYTELEVEL;
    h->n_dec = 1;
    h->has_decoder = 1;
    /* bos / eos and whether encode adds them */
    if ((st = get_id(g, h->src, "tokenizer.ggml.bos_token_id", n, bos)) ||
        (st = get_id(g, h->src, "tokenizer.ggml.eos_token_id", n, eos)))
        return st;
    int add_bos = 0, add_eos = 0;
    if (lt_gguf_find_key(g, "tokenizer.ggml.add_bos_token") >= 0)
        lt_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos);
    if (lt_gguf_find_key(g, "tokenizer.ggml.add_eos_token") >= 0)
        lt_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos);
    if (add_bos && *bos >= 0) {
        h->post_pre = lt_malloc(sizeof(int32_t));
        if (!h->post_pre) return lt_error(LT_ERR_NOMEM, "out of memory");
        h->post_pre[0] = *bos;
        h->n_post_pre = 1;
        h->has_post = 1;
    }
    if (add_eos && *eos >= 0) {
        h->post_post = lt_malloc(sizeof(int32_t));
        if (!h->post_post) return lt_error(LT_ERR_NOMEM, "out of memory");
        h->post_post[0] = *eos;
        h->n_post_post = 1;
        h->has_post = 1;
    }
    return LT_OK;
}

lt_status lt_tokenizer_load_gguf_bpe(const lt_gguf *g, lt_tokenizer **out) {
    *out = NULL;
    hf_tok *h = lt_calloc(1, sizeof *h);
    if (!h) return lt_error(LT_ERR_NOMEM, "out of memory");
    const char *p = lt_gguf_path(g);
    size_t pl = p ? strlen(p) : 4;
    char *src = lt_malloc(pl + 1);
    if (!src) {
        free(h);
        return lt_error(LT_ERR_NOMEM, "out of memory");
    }
    memcpy(src, p ? p : "gguf", pl + 1);
    h->src = src;
    int32_t bos = -1, eos = -1;
    lt_status st = build(g, h, &bos, &eos);
    if (st) {
        hf_tok_free(h);
        return st;
    }
    return hf_tok_wrap(h, bos, eos, out);
}
