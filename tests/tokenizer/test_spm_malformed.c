/* test_spm_malformed.c - bad tokenizer.model / tokenizer.bin / GGUF vocabularies give a
 * clear error, never a crash, hang or oversized allocation (run under ASan+UBSan).
 *
 * Covers: the sentencepiece protobuf cut at every prefix length (tok512.model entirely,
 * Llama 2's tokenizer.model at ~120 lengths), hand-built protobufs with varint overflow,
 * lengths past the buffer, bad wire types, bad piece types, duplicates, unsupported model
 * types; llama2.c .bin files cut at every length, with negative/huge/over-max lengths;
 * empty files and pseudo-random garbage for both; GGUF vocabularies with bad token types,
 * mismatched array lengths and unknown tokenizer.ggml.model. */
#include <dirent.h>
#include <unistd.h>

#include "lt_test.h"

#include "loratune/gguf.h"
#include "loratune/tokenizer.h"
#include "tokenizer/spm_internal.h"

/* ---- a tiny protobuf writer for hand-made models ---- */
typedef struct {
    uint8_t b[4096];
    size_t n;
} pbw;

static void w_byte(pbw *w, uint8_t x) {
    if (w->n < sizeof w->b) w->b[w->n++] = x;
}
static void w_varint(pbw *w, uint64_t v) {
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        w_byte(w, c | (v ? 0x80 : 0));
    } while (v);
}
static void w_key(pbw *w, uint32_t field, int wire) {
    w_varint(w, (uint64_t)field << 3 | wire);
}
static void w_bytes(pbw *w, uint32_t field, const void *p, size_t len) {
    w_key(w, field, 2);
    w_varint(w, len);
    for (size_t i = 0; i < len; i++)
        w_byte(w, ((const uint8_t *)p)[i]);
}
static void w_sub(pbw *w, uint32_t field, const pbw *sub) {
    w_bytes(w, field, sub->b, sub->n);
}
static void w_float(pbw *w, uint32_t field, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    w_key(w, field, 5);
    for (int i = 0; i < 4; i++)
        w_byte(w, (uint8_t)(u >> (8 * i)));
}
static void w_piece(pbw *w, const char *text, float score, int type) {
    pbw p = {{0}, 0};
    w_bytes(&p, 1, text, strlen(text));
    w_float(&p, 2, score);
    if (type) {
        w_key(&p, 3, 0);
        w_varint(&p, (uint64_t)(int64_t)type);
    }
    w_sub(w, 1, &p);
}
/* trainer_spec with model_type (no byte_fallback); normalizer "identity" */
static void w_specs(pbw *w, int model_type) {
    pbw t = {{0}, 0}, n = {{0}, 0};
    w_key(&t, 3, 0);
    w_varint(&t, (uint64_t)model_type);
    w_sub(w, 2, &t);
    w_bytes(&n, 1, "identity", 8);
    w_sub(w, 3, &n);
}
/* a valid small BPE model: <unk> <s> </s> a b ab */
static void w_model(pbw *w) {
    w_piece(w, "<unk>", 0, 2);
    w_piece(w, "<s>", 0, 3);
    w_piece(w, "</s>", 0, 3);
    w_piece(w, "\xE2\x96\x81", -1, 1);
    w_piece(w, "a", -2, 1);
    w_piece(w, "b", -3, 1);
    w_piece(w, "ab", -4, 1);
}

static lt_status parse_buf(const void *buf, size_t n) {
    spm_model m;
    spm_model_init(&m, "mem.model", "spm");
    lt_status st = spm_proto_parse(&m, buf, n);
    if (st == LT_OK) st = spm_model_finish(&m, 1);
    spm_model_clear(&m);
    return st;
}

static const char *write_tmp(const char *dir, const char *name, const void *buf, size_t n) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    if (n) fwrite(buf, 1, n, f);
    fclose(f);
    return path;
}

/* removes the files of a test's temp folder, then the folder */
static void remove_dir(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static uint32_t rng = 12345;
static uint32_t next_rand(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

static void test_proto_prefixes(const char *fixture, size_t step_target) {
    char *buf;
    size_t len;
    if (lt_file_read_all(lt_fixture(fixture), &buf, &len) != LT_OK) {
        CHECK(0, "read %s: %s", fixture, lt_errmsg());
        return;
    }
    size_t step = len / step_target ? len / step_target : 1;
    int ok = 0, bad = 0, bad_msg = 0;
    for (size_t k = 0; k < len; k += (k < 64 ? 1 : step)) {
        /* copy so ASan sees reads past the prefix */
        uint8_t *cp = malloc(k ? k : 1);
        memcpy(cp, buf, k);
        lt_status st = parse_buf(cp, k);
        free(cp);
        if (st == LT_OK) {
            ok++;
        } else if ((st == LT_ERR_FORMAT || st == LT_ERR_UNSUPPORTED) &&
                   strstr(lt_errmsg(), "mem.model")) {
            bad++;
        } else {
            bad_msg++;
            fprintf(stderr, "prefix %zu: %s: %s\n", k, lt_status_name(st), lt_errmsg());
        }
    }
    printf("%s prefixes: %d rejected with a message, %d parsed (field boundary), %d other\n",
           fixture, bad, ok, bad_msg);
    /* a prefix can only parse when it ends on a top-level field boundary after the
     * trainer_spec: both fixtures end with trainer_spec + normalizer_spec, so at most one */
    CHECK(bad_msg == 0 && ok <= 1 && bad > 0, "%s: %d ok %d other", fixture, ok, bad_msg);
    CHECK_OK(parse_buf(buf, len));
    free(buf);
}

static void test_proto_handmade(void) {
    pbw w = {{0}, 0};
    w_model(&w);
    w_specs(&w, 2);
    CHECK_OK(parse_buf(w.b, w.n));

    /* unigram / word / missing trainer spec */
    pbw u = {{0}, 0};
    w_model(&u);
    w_specs(&u, 1);
    CHECK_ERR(parse_buf(u.b, u.n), LT_ERR_UNSUPPORTED, "UNIGRAM");
    pbw nt = {{0}, 0};
    w_model(&nt);
    CHECK_ERR(parse_buf(nt.b, nt.n), LT_ERR_FORMAT, "trainer_spec");

    /* empty input, garbage */
    CHECK_ERR(parse_buf("", 0), LT_ERR_FORMAT, "empty");
    /* varint overflow: 10th byte carries more than the top bit; 11-byte varint */
    uint8_t ov1[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    CHECK_ERR(parse_buf(ov1, sizeof ov1), LT_ERR_FORMAT, "overflows");
    uint8_t ov2[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    CHECK_ERR(parse_buf(ov2, sizeof ov2), LT_ERR_FORMAT, "varint");
    uint8_t ovk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    CHECK_ERR(parse_buf(ovk, sizeof ovk), LT_ERR_FORMAT, "overflows");
    /* length beyond the buffer, at top level and inside a piece */
    uint8_t lb[] = {0x0a, 0x05, 'a'};
    CHECK_ERR(parse_buf(lb, sizeof lb), LT_ERR_FORMAT, "only 1 bytes are left");
    uint8_t lb2[] = {0x0a, 0x04, 0x0a, 0x7f, 'a', 'b'};
    CHECK_ERR(parse_buf(lb2, sizeof lb2), LT_ERR_FORMAT, "ModelProto.pieces");
    uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    CHECK_ERR(parse_buf(huge, sizeof huge), LT_ERR_FORMAT, "length");
    /* group wire types, field number 0, fixed64 cut off */
    uint8_t grp[] = {0x0b, 0x0c};
    CHECK_ERR(parse_buf(grp, sizeof grp), LT_ERR_FORMAT, "wire type 3");
    uint8_t f0[] = {0x00, 0x00};
    CHECK_ERR(parse_buf(f0, sizeof f0), LT_ERR_FORMAT, "field number 0");
    uint8_t fx[] = {0x49, 1, 2, 3};
    CHECK_ERR(parse_buf(fx, sizeof fx), LT_ERR_FORMAT, "needs 8 bytes");
    /* wrong wire type for a known field */
    uint8_t ww[] = {0x08, 0x01};
    CHECK_ERR(parse_buf(ww, sizeof ww), LT_ERR_FORMAT, "pieces (field 1): wire type 0");

    /* bad pieces */
    pbw bt = {{0}, 0};
    w_piece(&bt, "<unk>", 0, 2);
    w_piece(&bt, "x", 0, 7);
    w_specs(&bt, 2);
    CHECK_ERR(parse_buf(bt.b, bt.n), LT_ERR_FORMAT, "piece 1: type 7");
    pbw nt2 = {{0}, 0};
    w_piece(&nt2, "<unk>", 0, -1);
    w_specs(&nt2, 2);
    CHECK_ERR(parse_buf(nt2.b, nt2.n), LT_ERR_FORMAT, "type");
    pbw em = {{0}, 0};
    w_piece(&em, "", 0, 1);
    w_specs(&em, 2);
    CHECK_ERR(parse_buf(em.b, em.n), LT_ERR_FORMAT, "empty piece");
    pbw du = {{0}, 0};
    w_model(&du);
    w_piece(&du, "ab", -5, 1);
    w_specs(&du, 2);
    CHECK_ERR(parse_buf(du.b, du.n), LT_ERR_FORMAT, "repeats piece 6");
    pbw by = {{0}, 0};
    w_model(&by);
    w_piece(&by, "<0xZZ>", 0, 6);
    w_specs(&by, 2);
    CHECK_ERR(parse_buf(by.b, by.n), LT_ERR_FORMAT, "<0xHH>");
    pbw un = {{0}, 0};
    w_model(&un);
    w_piece(&un, "<unk2>", 0, 2);
    w_specs(&un, 2);
    CHECK_ERR(parse_buf(un.b, un.n), LT_ERR_FORMAT, "UNKNOWN");
    /* bos_id outside the vocabulary */
    pbw bo = {{0}, 0}, t = {{0}, 0};
    w_model(&bo);
    w_key(&t, 3, 0);
    w_varint(&t, 2);
    w_key(&t, 41, 0);
    w_varint(&t, 99);
    w_sub(&bo, 2, &t);
    CHECK_ERR(parse_buf(bo.b, bo.n), LT_ERR_FORMAT, "bos_id = 99");
    /* a precompiled normalization we do not implement */
    pbw cm = {{0}, 0}, n = {{0}, 0};
    w_model(&cm);
    w_specs(&cm, 2);
    w_bytes(&n, 1, "nmt_nfkc", 8);
    w_bytes(&n, 2, "xyz", 3);
    w_sub(&cm, 3, &n);
    CHECK_ERR(parse_buf(cm.b, cm.n), LT_ERR_UNSUPPORTED, "precompiled_charsmap");

    /* garbage */
    for (int r = 0; r < 2000; r++) {
        uint8_t g[64];
        size_t gl = next_rand() % sizeof g;
        for (size_t i = 0; i < gl; i++)
            g[i] = (uint8_t)next_rand();
        if (r & 1) g[0] = 0x0a; /* start like a piece */
        (void)parse_buf(g, gl); /* must not crash; success is possible */
    }
    CHECK(1, "protobuf garbage survived");

    /* the hand-made model works end to end through the file loader */
    const char *dir = lt_tmpdir();
    lt_tokenizer *tk = NULL;
    CHECK_OK(lt_tokenizer_load_spm(write_tmp(dir, "ok.model", w.b, w.n), &tk));
    if (tk) {
        int32_t *ids = NULL;
        size_t nid = 0;
        /* "ab ab": "▁ab▁ab" -> ▁ ab ▁ ab (no "▁a" piece); "c" unknown -> one <unk> for a run
         * (no byte pieces here, so the run "cc" is one unk as sentencepiece merges them) */
        CHECK_OK(lt_tokenizer_encode(tk, "ab abcc", 7, 1, 0, &ids, &nid));
        int32_t want[] = {1, 3, 6, 3, 6, 0};
        CHECK(nid == 6 && memcmp(ids, want, sizeof want) == 0, "hand-made encode: %zu ids", nid);
        free(ids);
        lt_tokenizer_free(tk);
    }
    CHECK_ERR(lt_tokenizer_load_spm(write_tmp(dir, "empty.model", "", 0), &tk), LT_ERR_FORMAT,
              "empty.model");
    CHECK_ERR(lt_tokenizer_load_spm(write_tmp(dir, "cut.model", w.b, w.n / 2), &tk), LT_ERR_FORMAT,
              "cut.model");
    remove_dir(dir);
}

static void put_i32(uint8_t *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static void test_llama2c(void) {
    const char *dir = lt_tmpdir();
    lt_tokenizer *tk = NULL;
    CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "empty.bin", "", 0), &tk), LT_ERR_FORMAT,
              "too short");
    uint8_t b[64];
    memset(b, 0, sizeof b);
    CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "h3.bin", b, 3), &tk), LT_ERR_FORMAT,
              "too short");
    put_i32(b, 4);
    CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "h4.bin", b, 4), &tk), LT_ERR_FORMAT,
              "no tokens");
    put_i32(b, -5);
    CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "neg.bin", b, 20), &tk), LT_ERR_FORMAT,
              "max_token_length -5");
    put_i32(b, 1 << 30);
    CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "huge.bin", b, 20), &tk), LT_ERR_FORMAT,
              "max_token_length");
    /* one good token "a", then a record with a negative / huge / over-max length */
    int32_t lens[] = {-1, INT32_MIN, 0x7fffffff, 5, 9};
    for (int i = 0; i < 5; i++) {
        memset(b, 0, sizeof b);
        put_i32(b, 8);
        put_i32(b + 8, 1);
        b[12] = 'a';
        put_i32(b + 17, lens[i]);
        memcpy(b + 21, "bcdefghijk", 10);
        size_t n = i == 3 ? 23 : 31; /* len 5 with 2 bytes left; len 9 > max 8 */
        CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "len.bin", b, n), &tk), LT_ERR_FORMAT,
                  "token 1 at offset 13: length");
    }
    /* a record cut inside score/length */
    memset(b, 0, sizeof b);
    put_i32(b, 8);
    put_i32(b + 8, 1);
    b[12] = 'a';
    CHECK_ERR(lt_tokenizer_load_llama2c(write_tmp(dir, "cut.bin", b, 18), &tk), LT_ERR_FORMAT,
              "need 8");
    CHECK_OK(lt_tokenizer_load_llama2c(write_tmp(dir, "one.bin", b, 13), &tk));
    if (tk) {
        CHECK(lt_tokenizer_vocab_size(tk) == 1, "one token, got %d", lt_tokenizer_vocab_size(tk));
        int32_t *ids = NULL;
        size_t n = 0;
        /* no <unk> and no byte pieces: unknown text is an error, not a crash */
        CHECK_ERR(lt_tokenizer_encode(tk, "zz", 2, 0, 0, &ids, &n), LT_ERR_FORMAT, "unknown");
        lt_tokenizer_free(tk);
        tk = NULL;
    }

    /* tok512.bin cut at every length up to 400 bytes, then every 7th: an error, or (at a
     * record boundary) fewer tokens */
    char *buf;
    size_t len;
    if (lt_file_read_all(lt_fixture("stories260K/tok512.bin"), &buf, &len) == LT_OK) {
        int errs = 0, fewer = 0, other = 0;
        for (size_t k = 0; k < len; k += k < 400 ? 1 : 7) {
            const char *p = write_tmp(dir, "prefix.bin", buf, k);
            lt_status st = lt_tokenizer_load_llama2c(p, &tk);
            if (st == LT_OK) {
                if (lt_tokenizer_vocab_size(tk) < 512)
                    fewer++;
                else
                    other++;
                lt_tokenizer_free(tk);
                tk = NULL;
            } else if (st == LT_ERR_FORMAT && strstr(lt_errmsg(), "prefix.bin")) {
                errs++;
            } else {
                other++;
            }
        }
        printf("tok512.bin prefixes: %d rejected, %d loaded with fewer tokens, %d other\n", errs,
               fewer, other);
        CHECK(other == 0 && errs > 0 && fewer <= 511, "prefixes: %d other", other);
        free(buf);
    }
    /* garbage */
    for (int r = 0; r < 300; r++) {
        uint8_t g[48];
        size_t gl = next_rand() % sizeof g;
        for (size_t i = 0; i < gl; i++)
            g[i] = (uint8_t)next_rand();
        if (gl >= 4 && (r & 1)) put_i32(g, 6);
        lt_status st = lt_tokenizer_load_llama2c(write_tmp(dir, "garbage.bin", g, gl), &tk);
        if (st == LT_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (lt_tokenizer_encode(tk, "hello world", 11, 1, 1, &ids, &n) == LT_OK) free(ids);
            lt_tokenizer_free(tk);
            tk = NULL;
        }
    }
    CHECK(1, "garbage survived");
    remove_dir(dir);
}

static void test_gguf(void) {
    const char *dir = lt_tmpdir();
    const char *toks[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "ab"};
    float scores[] = {0, 0, 0, -1, -2, -3, -4};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1};
    struct {
        const char *model;
        int ntypes, nscores, bad_type;
        lt_status want;
        const char *msg;
    } cases[] = {
        {"llama", 7, 7, 0, LT_OK, NULL},
        {"llama", 7, 7, 1, LT_ERR_FORMAT, "token_type[4] = 9"},
        {"llama", 6, 7, 0, LT_ERR_FORMAT, "token_type"},
        {"llama", 7, 5, 0, LT_ERR_FORMAT, "scores"},
        {"t5", 7, 7, 0, LT_ERR_UNSUPPORTED, "'t5'"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lt_gguf_writer *w = NULL;
        CHECK_OK(lt_gguf_writer_create(&w));
        if (!w) return;
        int32_t ty[7];
        memcpy(ty, types, sizeof ty);
        if (cases[c].bad_type) ty[4] = 9;
        lt_gguf_writer_set_str(w, "tokenizer.ggml.model", cases[c].model);
        lt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 7);
        lt_gguf_writer_set_arr(w, "tokenizer.ggml.scores", LT_GGUF_FLOAT32, scores,
                               (uint64_t)cases[c].nscores);
        lt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", LT_GGUF_INT32, ty,
                               (uint64_t)cases[c].ntypes);
        lt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
        lt_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 1);
        char path[1024];
        snprintf(path, sizeof path, "%s/v%zu.gguf", dir, c);
        CHECK_OK(lt_gguf_writer_write(w, path));
        lt_gguf_writer_free(w);
        lt_tokenizer *tk = NULL;
        lt_status st = lt_tokenizer_load(path, &tk);
        CHECK(st == cases[c].want && (!cases[c].msg || strstr(lt_errmsg(), cases[c].msg)),
              "gguf case %zu: %s: %s", c, lt_status_name(st), lt_errmsg());
        if (tk) {
            int32_t *ids = NULL;
            size_t n = 0;
            CHECK_OK(lt_tokenizer_encode(tk, "ab", 2, 1, 0, &ids, &n));
            CHECK(n == 4 && ids[0] == 1 && ids[1] == 3 && ids[2] == 6 && ids[3] == 2,
                  "gguf add_bos/add_eos: %zu ids", n);
            free(ids);
            lt_tokenizer_free(tk);
        }
    }
    remove_dir(dir);
}

int main(void) {
    test_proto_prefixes("stories260K/tok512.model", 100000);
    test_proto_prefixes("tokenizers/llama2-spm/tokenizer.model", 60);
    test_proto_handmade();
    test_llama2c();
    test_gguf();
    LT_TEST_END();
}
