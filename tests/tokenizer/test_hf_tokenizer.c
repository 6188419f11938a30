/* test_hf_tokenizer.c - tokenizer.json loader errors and a few encode/decode checks.
 *
 * Malformed files are written to a temp folder; each must fail with the right code and a
 * message naming what is wrong. Encode checks use the SmolLM and GPT-2 fixtures against ids
 * that the `tokenizers` package gives (the full comparison over the datasets is in
 * test_hf_tokenizer_peer.py); the small hand-made BPE checks follow from its merges by hand
 * and, for the Unicode normalizers, from the Unicode definitions of the characters used. */
#include "lt_test.h"

#include <time.h>

#include "loratune/gguf.h"
#include "loratune/tokenizer.h"
#include "tokenizer/hf_tokenizer.h"

static const char *write_tmp(const char *dir, const char *name, const char *text) {
    static char path[8][1024];
    static int k = 0;
    char *p = path[k++ & 7];
    snprintf(p, 1024, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return p;
}

/* a tiny byte-level BPE: vocab a b c ab abc, merges "a b" then "ab c" */
#define TINY_MODEL(extra_model)                                                                    \
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, "        \
    "\"abc\": 4, \"<unk>\": 5}, \"merges\": [\"a b\", [\"ab\", \"c\"]]" extra_model "}"

static int encode_eq(lt_tokenizer *t, const char *text, int add, const int32_t *want, size_t nw) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (lt_tokenizer_encode(t, text, strlen(text), add, 1, &ids, &n) != LT_OK) return 0;
    int ok = n == nw && (nw == 0 || memcmp(ids, want, nw * sizeof(int32_t)) == 0);
    if (!ok) {
        fprintf(stderr, "  encode '%s' gave:", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

int main(void) {
    const char *dir = lt_tmpdir();
    lt_tokenizer *t = NULL;

    /* ---- malformed files ---- */
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "a.json", "not json {"), &t), LT_ERR_FORMAT,
              "line 1");
    CHECK(t == NULL, "no handle on error");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "b.json", "[1, 2]"), &t), LT_ERR_FORMAT,
              "top level");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "c.json", "{\"version\": \"1.0\"}"), &t),
              LT_ERR_FORMAT, "missing \"model\"");
    CHECK_ERR(
        lt_tokenizer_load_hf(
            write_tmp(dir, "d.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}"), &t),
        LT_ERR_UNSUPPORTED, "Unigram");
    CHECK_ERR(lt_tokenizer_load_hf(
                  write_tmp(dir, "e.json",
                            "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                            "\"merges\": [\"a zz\"]}}"),
                  &t),
              LT_ERR_FORMAT, "'zz' is not in the vocabulary");
    CHECK_ERR(lt_tokenizer_load_hf(
                  write_tmp(dir, "f.json",
                            "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                            "\"merges\": [[\"a\", \"b\"]]}}"),
                  &t),
              LT_ERR_FORMAT, "merge of 'a' and 'b' is not in the vocabulary");
    CHECK_ERR(
        lt_tokenizer_load_hf(write_tmp(dir, "g.json",
                                       "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                                       "\"merges\": [\"a\"]}}"),
                             &t),
        LT_ERR_FORMAT, "model.merges[0]");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "h.json",
                                             TINY_MODEL("") ", \"pre_tokenizer\": {\"type\": "
                                                            "\"BertPreTokenizer\"}}"),
                                   &t),
              LT_ERR_UNSUPPORTED, "BertPreTokenizer");
    CHECK_ERR(lt_tokenizer_load_hf(
                  write_tmp(dir, "i.json",
                            TINY_MODEL("") ", \"pre_tokenizer\": {\"type\": \"Split\", "
                                           "\"pattern\": {\"Regex\": \"(?<bad\"}, \"behavior\": "
                                           "\"Isolated\", \"invert\": false}}"),
                  &t),
              LT_ERR_FORMAT, "(?<bad");
    /* an unknown normalizer is named, also after supported ones in a Sequence */
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "j.json",
                                             TINY_MODEL("") ", \"normalizer\": {\"type\": "
                                                            "\"Sequence\", \"normalizers\": "
                                                            "[{\"type\": \"NFC\"}, {\"type\": "
                                                            "\"BertNormalizer\"}]}}"),
                                   &t),
              LT_ERR_UNSUPPORTED, "normalizer type 'BertNormalizer'");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "j2.json",
                                             TINY_MODEL("") ", \"normalizer\": {\"type\": "
                                                            "\"Strip\"}}"),
                                   &t),
              LT_ERR_UNSUPPORTED, "'Strip'");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "k.json",
                                             TINY_MODEL("") ", \"decoder\": {\"type\": "
                                                            "\"WordPiece\"}}"),
                                   &t),
              LT_ERR_UNSUPPORTED, "WordPiece");
    CHECK_ERR(
        lt_tokenizer_load_hf(
            write_tmp(dir, "l.json", "{\"model\": {\"vocab\": {\"a\": 99999999}, \"merges\": []}}"),
            &t),
        LT_ERR_FORMAT, "model.vocab['a']");
    CHECK_ERR(lt_tokenizer_load_hf(
                  write_tmp(dir, "m.json", TINY_MODEL(", \"unk_token\": \"?\"") "}"), &t),
              LT_ERR_FORMAT, "unk_token '?'");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "n.json",
                                             "{\"model\": {\"vocab\": {\"a\": 0, "
                                             "\"a\": 1}, \"merges\": []}}"),
                                   &t),
              LT_ERR_FORMAT, "duplicate");
    CHECK_ERR(lt_tokenizer_load_hf(write_tmp(dir, "o.json", ""), &t), LT_ERR_FORMAT, NULL);
    CHECK(lt_tokenizer_load_hf(lt_fixture("does/not/exist.json"), &t) != LT_OK, "missing file");

    /* ---- tiny model: merges, unk, fuse_unk ---- */
    CHECK_OK(lt_tokenizer_load_hf(
        write_tmp(dir, "tiny.json", TINY_MODEL(", \"unk_token\": \"<unk>\"") "}"), &t));
    if (t) {
        CHECK(encode_eq(t, "abc", 1, (int32_t[]){4}, 1), "abc -> abc");
        CHECK(encode_eq(t, "abab", 1, (int32_t[]){3, 3}, 2), "abab -> ab ab");
        CHECK(encode_eq(t, "cab", 1, (int32_t[]){2, 3}, 2), "cab -> c ab");
        CHECK(encode_eq(t, "axxb", 1, (int32_t[]){0, 5, 5, 1}, 4), "unfused unk");
        CHECK(encode_eq(t, "", 1, NULL, 0), "empty text");
        CHECK(lt_tokenizer_find(t, "abc") == 4, "find");
        CHECK(lt_tokenizer_bos(t) == -1 && lt_tokenizer_eos(t) == -1, "no bos/eos");
        char *s = NULL;
        size_t n = 0;
        CHECK_OK(lt_tokenizer_decode(t, (int32_t[]){4, 2, 999, -1}, 4, 0, &s, &n));
        CHECK(s && !strcmp(s, "abc c"), "decode without decoder joins with spaces: '%s'", s);
        free(s);
        lt_tokenizer_free(t);
    }
    CHECK_OK(lt_tokenizer_load_hf(
        write_tmp(dir, "tiny2.json",
                  TINY_MODEL(", \"unk_token\": \"<unk>\", \"fuse_unk\": true") "}"),
        &t));
    if (t) {
        CHECK(encode_eq(t, "axxb", 1, (int32_t[]){0, 5, 1}, 3), "fused unk");
        lt_tokenizer_free(t);
    }

    /* ---- Unicode normalizers on the tiny model (vocab a b c ab abc <unk>): the expected
     * ids follow from the Unicode definitions; the comparison with tokenizers over many
     * texts is in test_hf_tokenizer_peer.py ---- */
    static const struct {
        const char *norm, *text;
        int32_t want[3];
        size_t nwant;
    } uni[] = {
        {"NFC", "abc", {4}, 1},
        {"NFKC", "\xef\xbd\x81\xef\xbd\x82\xef\xbd\x83", {4}, 1}, /* full-width abc */
        {"NFKD", "\xef\xbd\x81\x62\xef\xbd\x83", {4}, 1},         /* full-width a, c */
        {"NFC", "\xef\xbd\x81\xef\xbd\x82\xef\xbd\x83", {5}, 1},  /* NFC keeps them */
        {"NFD", "\xc3\xa1", {0, 5}, 2},                           /* a + U+0301 (unk, fused) */
        {"NFC", "a\xcc\x81", {5}, 1},                             /* U+00E1: one unk */
        {"Lowercase", "ABC", {4}, 1},
        {"Lowercase", "\xc4\xb0", {5, 5}, 2}, /* U+0130 -> i + U+0307 (two, unfused) */
    };
    for (size_t i = 0; i < sizeof uni / sizeof uni[0]; i++) {
        char json[512], name[32];
        snprintf(json, sizeof json,
                 TINY_MODEL(", \"unk_token\": \"<unk>\", \"fuse_unk\": %s") ", "
                                                                            "\"normalizer\": "
                                                                            "{\"type\": \"%s\"}}",
                 uni[i].nwant == 2 && uni[i].want[0] == 5 ? "false" : "true", uni[i].norm);
        snprintf(name, sizeof name, "uni%zu.json", i);
        CHECK_OK(lt_tokenizer_load_hf(write_tmp(dir, name, json), &t));
        if (t)
            CHECK(encode_eq(t, uni[i].text, 1, uni[i].want, uni[i].nwant), "%s on case %zu",
                  uni[i].norm, i);
        lt_tokenizer_free(t);
        t = NULL;
    }
    /* a normalized added token is matched by its normalized form: "AB" lowercased is "ab" */
    CHECK_OK(lt_tokenizer_load_hf(
        write_tmp(dir, "lower_added.json",
                  TINY_MODEL("") ", \"normalizer\": {\"type\": \"Lowercase\"}, "
                                 "\"added_tokens\": [{\"id\": 6, \"content\": \"CA\", "
                                 "\"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                                 "\"normalized\": true, \"special\": false}]}"),
        &t));
    if (t) CHECK(encode_eq(t, "cabCAB", 1, (int32_t[]){6, 1, 6, 1}, 4), "normalized added token");
    lt_tokenizer_free(t);
    t = NULL;

    /* ---- SmolLM fixture (ids from tokenizers 0.22.1) ---- */
    clock_t c0 = clock();
    CHECK_OK(lt_tokenizer_load(lt_fixture("tokenizers/smollm/tokenizer.json"), &t));
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    printf("smollm tokenizer.json loaded in %.3f s (CPU)\n", secs);
    if (t) {
        CHECK(!strcmp(lt_tokenizer_kind(t), "hf-bpe-bytelevel"), "kind %s", lt_tokenizer_kind(t));
        CHECK(lt_tokenizer_vocab_size(t) == 49153, "vocab size %d", lt_tokenizer_vocab_size(t));
        CHECK(lt_tokenizer_bos(t) == 0 && lt_tokenizer_eos(t) == 0, "bos/eos from config");
        CHECK(lt_tokenizer_is_special(t, 1) && !lt_tokenizer_is_special(t, 100), "is_special");
        CHECK(encode_eq(t, "Hello world! I'M 12345678 <|im_start|>user", 1,
                        (int32_t[]){19556, 905, 17, 339, 23, 61, 216, 33, 34, 35, 36, 37, 38, 39,
                                    40, 216, 1, 4093},
                        18),
              "smollm encode");
        /* invalid UTF-8 is encoded as U+FFFD, never read past the end */
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(lt_tokenizer_encode(t, "a\xff\xc3", 3, 1, 1, &ids, &n));
        char *s = NULL;
        size_t sl = 0;
        CHECK_OK(lt_tokenizer_decode(t, ids, n, 0, &s, &sl));
        CHECK(s && !strcmp(s, "a\xef\xbf\xbd\xef\xbf\xbd"), "lossy UTF-8: '%s'", s);
        free(s);
        free(ids);
        lt_tokenizer_free(t);
    }
    /* ---- GPT-2 fixture: tokenizer.json and the GGUF give the same ids ---- */
    CHECK_OK(lt_tokenizer_load(lt_fixture("tokenizers/gpt2/tokenizer.json"), &t));
    lt_gguf *g = NULL;
    lt_tokenizer *t2 = NULL;
    CHECK_OK(lt_gguf_open(lt_fixture("tokenizers/gpt2/ggml-vocab-gpt-2.gguf"), &g));
    if (g) CHECK_OK(lt_tokenizer_load_gguf_bpe(g, &t2));
    if (t && t2) {
        static const int32_t want[] = {15496, 995, 0,   314, 6,    44, 17031, 2231, 30924,
                                       1279,  91,  320, 62,  9688, 91, 29,    7220};
        const char *txt = "Hello world! I'M 12345678 <|im_start|>user";
        CHECK(encode_eq(t, txt, 1, want, 17), "gpt2 json encode");
        CHECK(encode_eq(t2, txt, 1, want, 17), "gpt2 gguf encode");
        CHECK(lt_tokenizer_bos(t2) == 50256 && lt_tokenizer_eos(t2) == 50256, "gguf bos/eos");
        CHECK(lt_tokenizer_is_special(t2, 50256), "gguf control token is special");
    }
    lt_tokenizer_free(t);
    lt_tokenizer_free(t2);
    lt_gguf_close(g);
    LT_TEST_END();
}
