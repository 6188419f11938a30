/* test_spm_llama2c.c - llama2.c tokenizer.bin files encode exactly as the sentencepiece
 * tokenizer.model they were exported from, on the text of the fixture datasets.
 *
 * Pairs: tokenizers/llama2-spm tokenizer.bin / tokenizer.model and stories260K
 * tok512.bin / tok512.model (SOURCE.md: each .bin is the byte-exact export of its .model).
 * Texts: every string value of every JSON line of the datasets listed below (a subset,
 * to stay fast under ASan; test_spm_peer.py covers all datasets against sentencepiece).
 * A .bin carries no normalizer settings; it is read with llama2.c's (dummy prefix, no
 * whitespace removal). Llama 2's .model has remove_extra_whitespaces=false, so every text
 * must encode identically. tok512.model has remove_extra_whitespaces=true (the
 * sentencepiece default); the .bin cannot know that, so for it the check is
 * encode_bin(collapse(text)) == encode_model(text), where collapse drops leading and
 * trailing spaces and shrinks runs of spaces to one - and texts that collapse leaves
 * unchanged must match directly. Decoding the model's ids with the .bin must give the
 * same text as decoding them with the .model.
 * Third pair: stories260K.gguf's embedded vocabulary (SOURCE.md: equal to tok512) against
 * tok512.bin - both read with llama.cpp's / llama2.c's normalization, so identical on every
 * text with no collapsing. */
#include <jansson.h>

#include "lt_test.h"

#include "loratune/tokenizer.h"

static const char *datasets[] = {
    "datasets/wikisql-mlx/train.jsonl",          "datasets/wikisql-mlx/valid.jsonl",
    "datasets/wikisql-mlx/test.jsonl",           "datasets/gsm8k/test.jsonl",
    "datasets/llamafactory-demo/identity.jsonl",
};

typedef struct {
    const char *name;
    lt_tokenizer *model, *bin;
    int collapse; /* the model removes extra whitespace */
    long texts, same, collapsed, fail;
} pair;

static char *collapse(const char *s, size_t len, size_t *outlen) {
    char *o = malloc(len + 1);
    size_t n = 0;
    int prev_space = 1; /* drops leading spaces */
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ' && prev_space) continue;
        prev_space = s[i] == ' ';
        o[n++] = s[i];
    }
    while (n && o[n - 1] == ' ')
        n--;
    o[n] = 0;
    *outlen = n;
    return o;
}

static void check_text(pair *p, const char *s, size_t len) {
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    size_t cl;
    char *c = collapse(s, len, &cl);
    int changed = cl != len || memcmp(c, s, len) != 0;
    const char *bs = p->collapse ? c : s;
    size_t bl = p->collapse ? cl : len;
    lt_status sa = lt_tokenizer_encode(p->model, s, len, 0, 0, &a, &na);
    lt_status sb = lt_tokenizer_encode(p->bin, bs, bl, 0, 0, &b, &nb);
    int ok = sa == LT_OK && sb == LT_OK && na == nb && memcmp(a, b, na * 4) == 0;
    if (ok) {
        char *da = NULL, *db = NULL;
        size_t la, lb;
        sa = lt_tokenizer_decode(p->model, a, na, 1, &da, &la);
        sb = lt_tokenizer_decode(p->bin, a, na, 1, &db, &lb);
        ok = sa == LT_OK && sb == LT_OK && la == lb && memcmp(da, db, la) == 0;
        free(da);
        free(db);
    }
    p->texts++;
    if (ok && (!changed || !p->collapse))
        p->same++;
    else if (ok)
        p->collapsed++;
    else if (p->fail++ < 5)
        fprintf(stderr, "%s: text differs: '%.80s'\n", p->name, s);
    free(a);
    free(b);
    free(c);
}

static void walk(pair *p, json_t *v) {
    if (json_is_string(v)) {
        check_text(p, json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) walk(p, x);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) walk(p, x);
    }
}

static void run_pair(pair *p) {
    for (size_t d = 0; d < sizeof datasets / sizeof *datasets; d++) {
        char *buf;
        size_t len;
        if (lt_file_read_all(lt_fixture(datasets[d]), &buf, &len) != LT_OK) {
            CHECK(0, "read %s: %s", datasets[d], lt_errmsg());
            continue;
        }
        char *line = buf;
        while (*line) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            if (*line) {
                json_error_t e;
                json_t *v = json_loads(line, 0, &e);
                CHECK(v != NULL, "%s: bad JSON line: %s", datasets[d], e.text);
                if (v) walk(p, v);
                json_decref(v);
            }
            if (!nl) break;
            line = nl + 1;
        }
        free(buf);
    }
    printf("%s: %ld texts: %ld identical, %ld identical after collapsing spaces, %ld differ\n",
           p->name, p->texts, p->same, p->collapsed, p->fail);
    CHECK(p->fail == 0 && p->texts > 1000, "%s: %ld of %ld texts differ", p->name, p->fail,
          p->texts);
}

int main(void) {
    pair pairs[3] = {{"llama2-spm", NULL, NULL, 0, 0, 0, 0, 0},
                     {"tok512", NULL, NULL, 1, 0, 0, 0, 0},
                     {"stories260K.gguf vs tok512.bin", NULL, NULL, 0, 0, 0, 0, 0}};
    CHECK_OK(lt_tokenizer_load_spm(lt_fixture("tokenizers/llama2-spm/tokenizer.model"),
                                   &pairs[0].model));
    CHECK_OK(lt_tokenizer_load_llama2c(lt_fixture("tokenizers/llama2-spm/tokenizer.bin"),
                                       &pairs[0].bin));
    CHECK_OK(lt_tokenizer_load_spm(lt_fixture("stories260K/tok512.model"), &pairs[1].model));
    CHECK_OK(lt_tokenizer_load_llama2c(lt_fixture("stories260K/tok512.bin"), &pairs[1].bin));
    CHECK_OK(lt_tokenizer_load(lt_fixture("stories260K/stories260K.gguf"), &pairs[2].model));
    CHECK_OK(lt_tokenizer_load_llama2c(lt_fixture("stories260K/tok512.bin"), &pairs[2].bin));
    for (int i = 0; i < 3; i++) {
        pair *p = &pairs[i];
        if (!p->model || !p->bin) continue;
        CHECK(lt_tokenizer_vocab_size(p->model) == lt_tokenizer_vocab_size(p->bin),
              "%s: vocab %d vs %d", p->name, lt_tokenizer_vocab_size(p->model),
              lt_tokenizer_vocab_size(p->bin));
        CHECK(lt_tokenizer_bos(p->bin) == 1 && lt_tokenizer_eos(p->bin) == 2, "%s: bos/eos",
              p->name);
        /* every piece the same text (the .bin's ' ' and "\n<s>\n" mapped back) */
        int same = 1;
        for (int32_t id = 0; id < lt_tokenizer_vocab_size(p->model); id++)
            if (strcmp(lt_tokenizer_piece(p->model, id), lt_tokenizer_piece(p->bin, id)) != 0)
                same = 0;
        CHECK(same, "%s: pieces differ", p->name);
        run_pair(p);
    }
    CHECK(pairs[1].collapsed > 0, "tok512: expected some texts with extra spaces");
    for (int i = 0; i < 3; i++) {
        lt_tokenizer_free(pairs[i].model);
        lt_tokenizer_free(pairs[i].bin);
    }
    LT_TEST_END();
}
