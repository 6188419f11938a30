/* test_spm_llama2.c - the Llama 2 vocabulary against llama.cpp's tokenizer test vectors.
 *
 * Fixture tokenizers/llama2-spm: ggml-vocab-llama-spm.gguf.inp holds 46 texts, each ended
 * by the line "__ggml_vocab_test__" (the "\n" before the marker line belongs to the
 * marker, so a text is exactly the bytes between "\n__ggml_vocab_test__\n" separators);
 * .out holds one line of expected ids per text. The rule llama.cpp's test-tokenizer-0
 * uses: add_special = false (no BOS; .out has none), no special-token parsing (none of the
 * texts has one), and the text is passed as is - the leading "▁" comes from the
 * tokenizer's own dummy prefix (add_space_prefix / add_dummy_prefix), not from the test.
 * All 46 must match with the vocabulary read three ways: sentencepiece tokenizer.model,
 * the GGUF vocab, and llama2.c tokenizer.bin. Decoding the expected ids must give back the
 * input text (Llama 2 keeps all whitespace, so sentencepiece round-trips exactly), and
 * add_special must put BOS <s> = 1 first (SOURCE.md) and no EOS. */
#include "lt_test.h"

#include "loratune/gguf.h"
#include "loratune/tokenizer.h"

#define SEP "\n__ggml_vocab_test__\n"
#define MAXCASES 64

typedef struct {
    const char *text;
    size_t len;
    int32_t ids[512];
    size_t n;
} tcase;

static tcase cases[MAXCASES];
static int ncases;
static char *inp, *out; /* fixture texts; cases point into inp */

static int load_cases(void) {
    size_t inlen, outlen;
    if (lt_file_read_all(lt_fixture("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf.inp"), &inp,
                         &inlen) != LT_OK ||
        lt_file_read_all(lt_fixture("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf.out"), &out,
                         &outlen) != LT_OK) {
        fprintf(stderr, "cannot read fixtures: %s\n", lt_errmsg());
        return -1;
    }
    /* texts (inp stays allocated: cases point into it) */
    size_t pos = 0;
    while (pos < inlen && ncases < MAXCASES) {
        char *e = strstr(inp + pos, SEP);
        if (!e) break;
        cases[ncases].text = inp + pos;
        cases[ncases].len = (size_t)(e - (inp + pos));
        ncases++;
        pos = (size_t)(e - inp) + strlen(SEP);
    }
    /* ids */
    char *line = out;
    for (int i = 0; i < ncases; i++) {
        char *nl = strchr(line, '\n');
        if (!nl) return -1;
        *nl = 0;
        char *p = line;
        for (;;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            if (cases[i].n < 512) cases[i].ids[cases[i].n++] = (int32_t)v;
            p = end;
        }
        line = nl + 1;
    }
    return 0;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static void run_vectors(const char *name, const lt_tokenizer *t) {
    int match = 0, dmatch = 0;
    for (int i = 0; i < ncases; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        lt_status st = lt_tokenizer_encode(t, cases[i].text, cases[i].len, 0, 0, &ids, &n);
        if (st == LT_OK && n == cases[i].n && memcmp(ids, cases[i].ids, n * 4) == 0) {
            match++;
        } else {
            fprintf(stderr, "%s: case %d '%.*s' differs (%s)\n", name, i, (int)cases[i].len,
                    cases[i].text, st == LT_OK ? "ok" : lt_errmsg());
            print_ids("want", cases[i].ids, cases[i].n);
            if (st == LT_OK) print_ids("got ", ids, n);
        }
        free(ids);
        char *text = NULL;
        size_t tl = 0;
        st = lt_tokenizer_decode(t, cases[i].ids, cases[i].n, 1, &text, &tl);
        if (st == LT_OK && tl == cases[i].len && memcmp(text, cases[i].text, tl) == 0)
            dmatch++;
        else
            fprintf(stderr, "%s: decode of case %d gave '%s' (%s)\n", name, i, text ? text : "",
                    st == LT_OK ? "ok" : lt_errmsg());
        free(text);
    }
    printf("%s: %d/%d encodings match llama.cpp, %d/%d decodings give the input back\n", name,
           match, ncases, dmatch, ncases);
    CHECK(match == ncases, "%s: %d of %d encodings match", name, match, ncases);
    CHECK(dmatch == ncases, "%s: %d of %d decodings match", name, dmatch, ncases);

    /* add_special: BOS first, no EOS */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(lt_tokenizer_encode(t, "Hello world", 11, 1, 0, &ids, &n));
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186,
          "%s: add_special gave %zu ids", name, n);
    free(ids);
    CHECK(lt_tokenizer_bos(t) == 1 && lt_tokenizer_eos(t) == 2, "%s: bos %d eos %d", name,
          lt_tokenizer_bos(t), lt_tokenizer_eos(t));
    CHECK(lt_tokenizer_vocab_size(t) == 32000, "%s: vocab %d", name, lt_tokenizer_vocab_size(t));
    CHECK(lt_tokenizer_find(t, "<0x0A>") == 13, "%s: <0x0A> -> %d", name,
          lt_tokenizer_find(t, "<0x0A>"));
    CHECK(lt_tokenizer_is_special(t, 1) && !lt_tokenizer_is_special(t, 15043), "%s: is_special",
          name);
}

int main(void) {
    CHECK(load_cases() == 0 && ncases == 46, "expected 46 test texts, read %d", ncases);

    lt_tokenizer *t = NULL;
    CHECK_OK(lt_tokenizer_load_spm(lt_fixture("tokenizers/llama2-spm/tokenizer.model"), &t));
    if (t) {
        CHECK(strcmp(lt_tokenizer_kind(t), "spm") == 0, "kind %s", lt_tokenizer_kind(t));
        run_vectors("tokenizer.model", t);
        /* parse_special: "<s>" in the text becomes BOS; the text after it gets the dummy
         * prefix again (llama.cpp); without parse_special it is plain text */
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(lt_tokenizer_encode(t, "<s>Hello", 8, 0, 1, &ids, &n));
        CHECK(n == 2 && ids[0] == 1 && ids[1] == 15043, "parse_special: %zu ids", n);
        free(ids);
        CHECK_OK(lt_tokenizer_encode(t, "<s>Hello", 8, 0, 0, &ids, &n));
        CHECK(n > 2 && ids[0] != 1, "no parse_special: %zu ids, first %d", n, n ? ids[0] : -1);
        free(ids);
        /* skip_special=0 writes control pieces; skip_special=1 hides them */
        int32_t d[] = {1, 15043, 2};
        char *s = NULL;
        size_t sl;
        CHECK_OK(lt_tokenizer_decode(t, d, 3, 0, &s, &sl));
        CHECK(s && strcmp(s, "<s> Hello</s>") == 0, "decode keep specials: '%s'", s ? s : "");
        free(s);
        CHECK_OK(lt_tokenizer_decode(t, d, 3, 1, &s, &sl));
        CHECK(s && strcmp(s, "Hello") == 0, "decode skip specials: '%s'", s ? s : "");
        free(s);
        int32_t bad = 32000;
        CHECK_ERR(lt_tokenizer_decode(t, &bad, 1, 1, &s, &sl), LT_ERR_ARG, "outside");
        lt_tokenizer_free(t);
    }

    t = NULL;
    lt_gguf *g = NULL;
    CHECK_OK(lt_gguf_open(lt_fixture("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf"), &g));
    if (g) {
        CHECK_OK(lt_tokenizer_load_gguf(g, &t));
        lt_gguf_close(g);
    }
    if (t) {
        CHECK(strcmp(lt_tokenizer_kind(t), "gguf-spm") == 0, "kind %s", lt_tokenizer_kind(t));
        run_vectors("ggml-vocab-llama-spm.gguf", t);
        lt_tokenizer_free(t);
    }
    /* and through the path dispatcher */
    t = NULL;
    CHECK_OK(lt_tokenizer_load(lt_fixture("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf"), &t));
    lt_tokenizer_free(t);
    /* a "gpt2" GGUF vocabulary goes to the byte-level BPE tokenizer, not to this one */
    t = NULL;
    CHECK_OK(lt_tokenizer_load(lt_fixture("tokenizers/gpt2/ggml-vocab-gpt-2.gguf"), &t));
    CHECK(t && strcmp(lt_tokenizer_kind(t), "gguf-spm") != 0, "gpt2 GGUF kind %s",
          t ? lt_tokenizer_kind(t) : "-");
    lt_tokenizer_free(t);

    t = NULL;
    CHECK_OK(lt_tokenizer_load_llama2c(lt_fixture("tokenizers/llama2-spm/tokenizer.bin"), &t));
    if (t) {
        CHECK(strcmp(lt_tokenizer_kind(t), "llama2c") == 0, "kind %s", lt_tokenizer_kind(t));
        run_vectors("tokenizer.bin", t);
        lt_tokenizer_free(t);
    }
    free(inp);
    free(out);
    LT_TEST_END();
}
