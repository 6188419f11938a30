/* test_safetensors.c - safetensors reader/writer: the stories260K-hf fixture checked against
 * its config.json, write->read round trip of every dtype, sharded sets, and malformed files
 * (generated here) that must fail with the right code and a message naming the field.
 *
 * Also a peer tool for test_safetensors_peer.py (the PyPI safetensors package on the other
 * side), so no extra program is needed:
 *   test_safetensors --dump PATH [METAKEY...]   prints {"tensors": [{name, dtype, shape, hex}],
 *                                               "metadata": {key: value}} as JSON
 *   test_safetensors --write OUT SPEC.json      writes OUT from {"metadata": {..}, "tensors":
 *                                               [{name, dtype, shape, hex}]} with our writer */
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/safetensors.h"
#include "lt_test.h"

/* ---- peer tool ------------------------------------------------------------------------ */

static int peer_dump(int argc, char **argv) {
    lt_safetensors *st;
    if (lt_safetensors_open(argv[2], &st)) {
        fprintf(stderr, "%s\n", lt_errmsg());
        return 1;
    }
    json_t *root = json_object(), *ts = json_array(), *md = json_object();
    for (size_t i = 0; i < lt_safetensors_count(st); i++) {
        const lt_tensor_view *t = lt_safetensors_tensor(st, i);
        json_t *o = json_object(), *sh = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(sh, json_integer(t->shape[d]));
        char *hex = malloc(t->nbytes * 2 + 1);
        for (size_t b = 0; b < t->nbytes; b++)
            snprintf(hex + 2 * b, 3, "%02x", ((const uint8_t *)t->data)[b]);
        hex[t->nbytes * 2] = 0;
        json_object_set_new(o, "name", json_string(t->name));
        json_object_set_new(o, "dtype", json_string(lt_dtype_name(t->dtype)));
        json_object_set_new(o, "shape", sh);
        json_object_set_new(o, "hex", json_string(hex));
        free(hex);
        json_array_append_new(ts, o);
    }
    for (int i = 3; i < argc; i++) {
        const char *v = lt_safetensors_metadata(st, argv[i]);
        json_object_set_new(md, argv[i], v ? json_string(v) : json_null());
    }
    json_object_set_new(root, "tensors", ts);
    json_object_set_new(root, "metadata", md);
    char *s = json_dumps(root, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(root);
    lt_safetensors_close(st);
    return 0;
}

static int peer_write(const char *out, const char *spec) {
    json_error_t err;
    json_t *root = json_load_file(spec, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        fprintf(stderr, "%s: %s\n", spec, err.text);
        return 1;
    }
    lt_st_writer *w;
    lt_st_writer_create(&w);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(root, "metadata"), k, v)
        lt_st_writer_set_metadata(w, k, json_string_value(v));
    json_t *ts = json_object_get(root, "tensors");
    size_t nt = json_array_size(ts);
    uint8_t **bufs = calloc(nt + 1, sizeof *bufs);
    int rc = 0;
    for (size_t i = 0; i < nt && !rc; i++) {
        json_t *t = json_array_get(ts, i);
        const char *hex = json_string_value(json_object_get(t, "hex"));
        size_t nb = strlen(hex) / 2;
        bufs[i] = malloc(nb + 1);
        for (size_t b = 0; b < nb; b++) {
            unsigned x;
            sscanf(hex + 2 * b, "%2x", &x);
            bufs[i][b] = (uint8_t)x;
        }
        lt_dtype dt;
        lt_dtype_from_name(json_string_value(json_object_get(t, "dtype")), &dt);
        json_t *sh = json_object_get(t, "shape");
        int64_t shape[LT_MAX_DIMS];
        int nd = (int)json_array_size(sh);
        for (int d = 0; d < nd && d < LT_MAX_DIMS; d++)
            shape[d] = json_integer_value(json_array_get(sh, d));
        if (lt_st_writer_add(w, json_string_value(json_object_get(t, "name")), dt, nd, shape,
                             bufs[i], nb)) {
            fprintf(stderr, "%s\n", lt_errmsg());
            rc = 1;
        }
    }
    if (!rc && lt_st_writer_write(w, out)) {
        fprintf(stderr, "%s\n", lt_errmsg());
        rc = 1;
    }
    for (size_t i = 0; i < nt; i++) free(bufs[i]);
    free(bufs);
    lt_st_writer_free(w);
    json_decref(root);
    return rc;
}

/* ---- helpers -------------------------------------------------------------------------- */

static const char *g_dir;

static const char *tpath(const char *name) { return lt_path_join_(g_dir, name); }

static void write_bytes(const char *path, const void *buf, size_t n) {
    unlink(path); /* a fresh file: truncating one makes ext4 flush it (auto_da_alloc), slowly */
    FILE *f = fopen(path, "wb");
    if (n) fwrite(buf, 1, n, f);
    fclose(f);
}

/* A file: 8-byte length (hlen_override if nonzero, else strlen(hdr)), hdr, ndata bytes. */
static const char *mkfile(const char *name, const char *hdr, size_t ndata,
                          uint64_t hlen_override) {
    const char *p = tpath(name);
    size_t hl = strlen(hdr);
    uint64_t n = hlen_override ? hlen_override : hl;
    uint8_t *buf = calloc(1, 8 + hl + ndata + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    for (size_t i = 0; i < ndata; i++) buf[8 + hl + i] = (uint8_t)(i * 7 + 1);
    write_bytes(p, buf, 8 + hl + ndata);
    free(buf);
    return p;
}

static lt_status open_close(const char *path) {
    lt_safetensors *st = NULL;
    lt_status s = lt_safetensors_open(path, &st);
    if (s == LT_OK) lt_safetensors_close(st);
    else if (st) s = LT_ERR_INTERNAL; /* out must be NULL on failure */
    return s;
}

/* ---- fixture -------------------------------------------------------------------------- */

static void check_shape(const lt_safetensors *st, const char *name, int nd, int64_t d0, int64_t d1) {
    const lt_tensor_view *t = lt_safetensors_find(st, name);
    CHECK(t != NULL, "fixture: missing tensor %s", name);
    if (!t) return;
    CHECK(t->ndim == nd && t->shape[0] == d0 && (nd < 2 || t->shape[1] == d1),
          "fixture: %s shape [%lld, %lld] ndim %d, config wants [%lld, %lld] ndim %d", name,
          (long long)t->shape[0], (long long)t->shape[1], t->ndim, (long long)d0, (long long)d1,
          nd);
    CHECK(t->dtype == LT_DTYPE_F32, "fixture: %s dtype %s", name, lt_dtype_name(t->dtype));
}

static void test_fixture(void) {
    const char *path = lt_fixture("stories260K-hf/model.safetensors");
    json_error_t err;
    json_t *cfg = json_load_file(lt_fixture("stories260K-hf/config.json"), 0, &err);
    CHECK(cfg != NULL, "config.json: %s", err.text);
    if (!cfg) return;
    int64_t H = json_integer_value(json_object_get(cfg, "hidden_size"));
    int64_t I = json_integer_value(json_object_get(cfg, "intermediate_size"));
    int64_t L = json_integer_value(json_object_get(cfg, "num_hidden_layers"));
    int64_t NH = json_integer_value(json_object_get(cfg, "num_attention_heads"));
    int64_t NKV = json_integer_value(json_object_get(cfg, "num_key_value_heads"));
    int64_t HD = json_integer_value(json_object_get(cfg, "head_dim"));
    int64_t V = json_integer_value(json_object_get(cfg, "vocab_size"));
    int tied = json_is_true(json_object_get(cfg, "tie_word_embeddings"));
    json_decref(cfg);

    lt_safetensors *st = NULL;
    CHECK_OK(lt_safetensors_open(path, &st));
    if (!st) return;
    size_t want = 2 + (size_t)L * 9 + (tied ? 0 : 1);
    CHECK(lt_safetensors_count(st) == want, "fixture: %zu tensors, config implies %zu",
          lt_safetensors_count(st), want);
    check_shape(st, "model.embed_tokens.weight", 2, V, H);
    check_shape(st, "model.norm.weight", 1, H, 0);
    char nm[256];
    for (int64_t l = 0; l < L; l++) {
#define LAYER(suffix, nd, a, b)                                                              \
    snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, suffix);                   \
    check_shape(st, nm, nd, a, b)
        LAYER("input_layernorm.weight", 1, H, 0);
        LAYER("post_attention_layernorm.weight", 1, H, 0);
        LAYER("self_attn.q_proj.weight", 2, NH * HD, H);
        LAYER("self_attn.k_proj.weight", 2, NKV * HD, H);
        LAYER("self_attn.v_proj.weight", 2, NKV * HD, H);
        LAYER("self_attn.o_proj.weight", 2, H, NH * HD);
        LAYER("mlp.gate_proj.weight", 2, I, H);
        LAYER("mlp.up_proj.weight", 2, I, H);
        LAYER("mlp.down_proj.weight", 2, H, I);
#undef LAYER
    }
    CHECK(lt_safetensors_find(st, "lm_head.weight") == NULL || !tied, "tied: no lm_head");
    CHECK(lt_safetensors_find(st, "no.such.tensor") == NULL, "find of a missing name");
    CHECK(lt_safetensors_tensor(st, want) == NULL, "index past the end");
    /* views point at the bytes stdio reads at the same place; tensors in file order */
    const lt_tensor_view *t0 = lt_safetensors_tensor(st, 0);
    const lt_tensor_view *tl = lt_safetensors_tensor(st, want - 1);
    FILE *f = fopen(path, "rb");
    uint8_t len8[8];
    fread(len8, 1, 8, f);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = (hn << 8) | len8[i];
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    fseek(f, (long)(8 + hn), SEEK_SET);
    uint8_t first[64];
    fread(first, 1, sizeof first, f);
    fclose(f);
    CHECK(t0 && t0->nbytes >= 64 && !memcmp(t0->data, first, 64), "first tensor bytes");
    CHECK(tl && (const uint8_t *)tl->data + tl->nbytes - (const uint8_t *)t0->data ==
                    fsize - 8 - (long)hn,
          "tensors span the data section");
    lt_safetensors_close(st);
    /* the folder form finds model.safetensors */
    CHECK_OK(lt_safetensors_open(lt_fixture("stories260K-hf"), &st));
    CHECK(lt_safetensors_count(st) == want, "folder open");
    lt_safetensors_close(st);
}

/* ---- round trip ----------------------------------------------------------------------- */

static void test_roundtrip(void) {
    static const lt_dtype dts[] = {LT_DTYPE_F32, LT_DTYPE_F16, LT_DTYPE_BF16, LT_DTYPE_F64,
                                   LT_DTYPE_I8,  LT_DTYPE_U8,  LT_DTYPE_I16,  LT_DTYPE_I32,
                                   LT_DTYPE_I64, LT_DTYPE_BOOL};
    enum { ND = sizeof dts / sizeof dts[0] };
    uint8_t *bufs[ND];
    int64_t shapes[ND][4];
    int ndims[ND];
    size_t nbs[ND];
    lt_st_writer *w;
    CHECK_OK(lt_st_writer_create(&w));
    CHECK_OK(lt_st_writer_set_metadata(w, "format", "pt"));
    CHECK_OK(lt_st_writer_set_metadata(w, "note", "replaced"));
    CHECK_OK(lt_st_writer_set_metadata(w, "note", "caf\xc3\xa9 \"quoted\""));
    uint32_t rng = 12345;
    for (int i = 0; i < ND; i++) {
        ndims[i] = i % 5; /* 0..4 dims; ndim 0 is a scalar */
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) {
            shapes[i][d] = 1 + (i + d) % 3;
            numel *= shapes[i][d];
        }
        nbs[i] = (size_t)lt_dtype_nbytes(dts[i], numel);
        bufs[i] = malloc(nbs[i] + 1);
        for (size_t b = 0; b < nbs[i]; b++) {
            rng = rng * 1103515245u + 12345u;
            bufs[i][b] = (uint8_t)(rng >> 16);
            if (dts[i] == LT_DTYPE_BOOL) bufs[i][b] &= 1;
        }
        char name[32];
        snprintf(name, sizeof name, "t%d.%s", ND - i, lt_dtype_name(dts[i]));
        CHECK_OK(lt_st_writer_add(w, name, dts[i], ndims[i], shapes[i], bufs[i], nbs[i]));
    }
    int64_t zshape[2] = {0, 5};
    CHECK_OK(lt_st_writer_add(w, "empty", LT_DTYPE_F32, 2, zshape, NULL, 0));
    /* writer argument errors */
    int64_t s5[5] = {1, 1, 1, 1, 1};
    CHECK_ERR(lt_st_writer_add(w, "x", LT_DTYPE_F32, 5, s5, bufs[0], 4), LT_ERR_ARG, "ndim 5");
    CHECK_ERR(lt_st_writer_add(w, "x", LT_DTYPE_F32, 1, s5, bufs[0], 8), LT_ERR_ARG, "needs 4");
    CHECK_ERR(lt_st_writer_add(w, "x", LT_DTYPE_Q4_0, 1, s5, bufs[0], 18), LT_ERR_ARG, "Q4_0");
    CHECK_ERR(lt_st_writer_add(w, "__metadata__", LT_DTYPE_F32, 1, s5, bufs[0], 4), LT_ERR_ARG,
              "__metadata__");
    const char *out = tpath("rt.safetensors");
    CHECK_OK(lt_st_writer_write(w, out));
    lt_st_writer_free(w);
    lt_st_writer_free(NULL);

    lt_safetensors *st = NULL;
    CHECK_OK(lt_safetensors_open(out, &st));
    if (st) {
        CHECK(lt_safetensors_count(st) == ND + 1, "count %zu", lt_safetensors_count(st));
        for (int i = 0; i < ND; i++) {
            char name[32];
            snprintf(name, sizeof name, "t%d.%s", ND - i, lt_dtype_name(dts[i]));
            const lt_tensor_view *t = lt_safetensors_find(st, name);
            CHECK(t != NULL, "round trip: %s missing", name);
            if (!t) continue;
            CHECK(t->dtype == dts[i] && t->ndim == ndims[i] && t->nbytes == nbs[i],
                  "round trip %s: dtype/ndim/nbytes", name);
            for (int d = 0; d < t->ndim; d++)
                CHECK(t->shape[d] == shapes[i][d], "round trip %s: dim %d", name, d);
            CHECK(!memcmp(t->data, bufs[i], nbs[i]), "round trip %s: data", name);
            /* layout keeps every tensor aligned to its element size (the map is page-aligned) */
            CHECK(((uintptr_t)t->data % (uintptr_t)lt_dtype_block_bytes(t->dtype)) == 0,
                  "round trip %s: data aligned to %lld", name,
                  (long long)lt_dtype_block_bytes(t->dtype));
        }
        const lt_tensor_view *e = lt_safetensors_find(st, "empty");
        CHECK(e && e->nbytes == 0 && e->ndim == 2 && e->shape[0] == 0 && e->shape[1] == 5,
              "empty tensor");
        CHECK(lt_safetensors_metadata(st, "format") && !strcmp(lt_safetensors_metadata(st, "format"), "pt"),
              "metadata format");
        CHECK(lt_safetensors_metadata(st, "note") &&
                  !strcmp(lt_safetensors_metadata(st, "note"), "caf\xc3\xa9 \"quoted\""),
              "metadata replaced value");
        CHECK(lt_safetensors_metadata(st, "nope") == NULL, "missing metadata key");
        lt_safetensors_close(st);
    }
    /* the file's layout: header length a multiple of 8, padded with spaces, metadata first */
    char *raw;
    size_t rl;
    CHECK_OK(lt_file_read_all(out, &raw, &rl));
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = (hn << 8) | (uint8_t)raw[i];
    CHECK(hn % 8 == 0 && 8 + hn <= rl, "header length %llu", (unsigned long long)hn);
    CHECK(!strncmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30), "metadata first");
    CHECK(raw[8 + hn - 1] == '}' || raw[8 + hn - 1] == ' ', "padding");
    free(raw);
    /* no temp files left behind */
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.XXXXXX", out);
    CHECK(!lt_path_exists(tmpname), "temp file left");

    /* duplicate names are refused at write time; the target is untouched */
    CHECK_OK(lt_st_writer_create(&w));
    int64_t one = 1;
    CHECK_OK(lt_st_writer_add(w, "a", LT_DTYPE_U8, 1, &one, bufs[4], 1));
    CHECK_OK(lt_st_writer_add(w, "a", LT_DTYPE_I8, 1, &one, bufs[4], 1));
    CHECK_ERR(lt_st_writer_write(w, out), LT_ERR_ARG, "'a' added twice");
    lt_st_writer_free(w);
    CHECK_OK(open_close(out));
    /* unwritable target */
    CHECK_OK(lt_st_writer_create(&w));
    CHECK_ERR(lt_st_writer_write(w, "/nonexistent-dir/x.safetensors"), LT_ERR_IO, "nonexistent");
    /* an empty writer makes a valid file with no tensors */
    CHECK_OK(lt_st_writer_write(w, tpath("none.safetensors")));
    lt_st_writer_free(w);
    CHECK(open_close(tpath("none.safetensors")) == LT_OK, "empty file set: %s", lt_errmsg());
    for (int i = 0; i < ND; i++) free(bufs[i]);
}

/* ---- sharded -------------------------------------------------------------------------- */

static void write_shard(const char *name, const char *t1, const char *t2, const char *meta) {
    lt_st_writer *w;
    lt_st_writer_create(&w);
    static const float v[4] = {1, 2, 3, 4};
    int64_t s = 2;
    if (meta) lt_st_writer_set_metadata(w, "format", meta);
    if (t1) lt_st_writer_add(w, t1, LT_DTYPE_F32, 1, &s, v, 8);
    if (t2) lt_st_writer_add(w, t2, LT_DTYPE_F32, 1, &s, v + 2, 8);
    lt_st_writer_write(w, tpath(name));
    lt_st_writer_free(w);
}

static const char *write_index(const char *name, const char *weight_map) {
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"metadata\": {\"total_size\": 32}, \"weight_map\": %s}",
             weight_map);
    write_bytes(tpath(name), buf, strlen(buf));
    return tpath(name);
}

static void test_sharded(void) {
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sharded", g_dir);
    mkdir(sub, 0755);
    write_shard("sharded/model-00001-of-00002.safetensors", "a", "b", "pt");
    write_shard("sharded/model-00002-of-00002.safetensors", "c", NULL, "other");
    write_index("sharded/model.safetensors.index.json",
                "{\"a\": \"model-00001-of-00002.safetensors\", \"b\": "
                "\"model-00001-of-00002.safetensors\", \"c\": "
                "\"model-00002-of-00002.safetensors\"}");
    lt_safetensors *st = NULL;
    CHECK_OK(lt_safetensors_open(sub, &st));
    if (st) {
        CHECK(lt_safetensors_count(st) == 3, "sharded count");
        const lt_tensor_view *c = lt_safetensors_find(st, "c");
        CHECK(c && ((const float *)c->data)[1] == 2.0f, "sharded tensor c");
        const lt_tensor_view *b = lt_safetensors_find(st, "b");
        CHECK(b && ((const float *)b->data)[0] == 3.0f, "sharded tensor b");
        CHECK(lt_safetensors_metadata(st, "format") &&
                  !strcmp(lt_safetensors_metadata(st, "format"), "pt"),
              "metadata of the first shard");
        lt_safetensors_close(st);
    }
    CHECK_OK(open_close(tpath("sharded/model.safetensors.index.json")));

    const char *p;
    p = write_index("sharded/missing.index.json",
                    "{\"a\": \"model-00001-of-00002.safetensors\", \"b\": "
                    "\"model-00001-of-00002.safetensors\", \"z\": \"model-00009.safetensors\"}");
    CHECK_ERR(open_close(p), LT_ERR_NOTFOUND, "shard 'model-00009.safetensors' not found");
    mkfile("escape.safetensors", "{}", 0, 0);
    p = write_index("sharded/escape.index.json", "{\"a\": \"../escape.safetensors\"}");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "'../escape.safetensors' must be a relative path");
    p = write_index("sharded/abs.index.json", "{\"a\": \"/etc/passwd\"}");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "'/etc/passwd' must be a relative path");
    p = write_index("sharded/mid.index.json", "{\"a\": \"x/../../y.safetensors\"}");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "must be a relative path");
    /* the same tensor in two shards */
    write_shard("sharded/dup-1.safetensors", "a", "b", NULL);
    write_shard("sharded/dup-2.safetensors", "a", NULL, NULL);
    p = write_index("sharded/dup.index.json",
                    "{\"a\": \"dup-1.safetensors\", \"b\": \"dup-1.safetensors\", \"x\": "
                    "\"dup-2.safetensors\"}");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "tensor 'a' found in shard 'dup-2.safetensors'");
    /* weight_map names a tensor its shard lacks */
    p = write_index("sharded/lack.index.json",
                    "{\"a\": \"dup-1.safetensors\", \"b\": \"dup-1.safetensors\", \"q\": "
                    "\"dup-1.safetensors\"}");
    CHECK_ERR(open_close(p), LT_ERR_NOTFOUND, "tensor 'q' is not in its shard");
    /* a shard holds a tensor weight_map does not list */
    p = write_index("sharded/extra.index.json", "{\"a\": \"dup-1.safetensors\"}");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "tensor 'b' of shard 'dup-1.safetensors' is not in weight_map");
    p = write_index("sharded/nomap.index.json", "[]");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "weight_map");
    p = write_index("sharded/badval.index.json", "{\"a\": 3}");
    CHECK_ERR(open_close(p), LT_ERR_FORMAT, "tensor 'a': expected a shard file name");
    CHECK_ERR(open_close(tpath("sharded/none.index.json")), LT_ERR_IO, "none.index.json");
    char empty[600];
    snprintf(empty, sizeof empty, "%s/emptydir", g_dir);
    mkdir(empty, 0755);
    CHECK_ERR(open_close(empty), LT_ERR_NOTFOUND, "neither model.safetensors");
}

/* ---- malformed files ------------------------------------------------------------------ */

static void test_bad(void) {
    write_bytes(tpath("empty.st"), "", 0);
    CHECK_ERR(open_close(tpath("empty.st")), LT_ERR_FORMAT, "0 bytes, too short");
    write_bytes(tpath("trunc.st"), "\x10\0\0\0\0", 5);
    CHECK_ERR(open_close(tpath("trunc.st")), LT_ERR_FORMAT, "5 bytes, too short");
    CHECK_ERR(open_close(tpath("does-not-exist.st")), LT_ERR_IO, "does-not-exist.st");

    const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    CHECK_OK(open_close(mkfile("ok.st", ok, 16, 0)));
    /* data section cut short */
    CHECK_ERR(open_close(mkfile("truncdata.st", ok, 8, 0)), LT_ERR_FORMAT,
              "tensor 'w': data_offsets [0, 16] reach beyond the end of the file");
    /* header cut short */
    CHECK_ERR(open_close(mkfile("trunchdr.st", ok, 0, strlen(ok) + 40)), LT_ERR_FORMAT,
              "exceeds the file size");
    CHECK_ERR(open_close(mkfile("cap.st", ok, 16, 200000000ull)), LT_ERR_FORMAT,
              "header length 200000000 exceeds the cap");
    CHECK_ERR(open_close(mkfile("huge.st", ok, 16, UINT64_MAX)), LT_ERR_FORMAT, "exceeds the cap");
    CHECK_ERR(open_close(mkfile("notjson.st", "{\"w\": nope}", 0, 0)), LT_ERR_FORMAT,
              "header JSON");
    CHECK_ERR(open_close(mkfile("array.st", "[1, 2]", 0, 0)), LT_ERR_FORMAT,
              "expected a JSON object starting with '{'");
    CHECK_ERR(open_close(mkfile("space.st", " {}", 0, 0)), LT_ERR_FORMAT, "starting with '{'");
    CHECK_ERR(open_close(mkfile("trailing.st", "{} x", 0, 0)), LT_ERR_FORMAT, "header JSON");
    CHECK_ERR(open_close(mkfile("badutf8.st", "{\"\xff\xfe\":1}", 0, 0)), LT_ERR_FORMAT,
              "header JSON");
    CHECK_ERR(open_close(mkfile("dup.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                                8, 0)),
              LT_ERR_FORMAT, "duplicate");
    CHECK_ERR(open_close(mkfile("overlap.st",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                                12, 0)),
              LT_ERR_FORMAT, "tensor 'b': data_offsets [4, 12] overlap tensor 'a'");
    CHECK_ERR(open_close(mkfile("gap.st",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                                12, 0)),
              LT_ERR_FORMAT, "tensor 'b': data_offsets begin at 8, expected 4");
    CHECK_ERR(open_close(mkfile("gap0.st",
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                                8, 0)),
              LT_ERR_FORMAT, "tensor 'a': data_offsets begin at 4, expected 0");
    CHECK_ERR(open_close(mkfile("tail.st", ok, 20, 0)), LT_ERR_FORMAT,
              "cover 16 bytes of the data section but it has 20");
    CHECK_ERR(open_close(mkfile("beyond.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}",
                                16, 0)),
              LT_ERR_FORMAT, "tensor 'w': data_offsets [0, 1000] reach beyond the end");
    CHECK_ERR(open_close(mkfile("mismatch.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}",
                                16, 0)),
              LT_ERR_FORMAT, "tensor 'w': shape [2, 3] x F32 needs 24 bytes");
    CHECK_ERR(open_close(mkfile("backwards.st",
                                "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}",
                                4, 0)),
              LT_ERR_FORMAT, "end before begin");
    CHECK_ERR(open_close(mkfile("f8.st",
                                "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_UNSUPPORTED, "tensor 'w': dtype 'F8_E4M3' is not supported");
    CHECK_ERR(open_close(mkfile("xyz.st",
                                "{\"w\":{\"dtype\":\"XYZ\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_FORMAT, "tensor 'w': unknown dtype 'XYZ'");
    CHECK_ERR(open_close(mkfile("q4.st",
                                "{\"w\":{\"dtype\":\"Q4_0\",\"shape\":[32],\"data_offsets\":[0,18]}}",
                                18, 0)),
              LT_ERR_FORMAT, "unknown dtype 'Q4_0'");
    CHECK_ERR(open_close(mkfile("nodtype.st", "{\"w\":{\"shape\":[4],\"data_offsets\":[0,4]}}", 4, 0)),
              LT_ERR_FORMAT, "tensor 'w': dtype: expected a string");
    CHECK_ERR(open_close(mkfile("overflow.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
                                "\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_FORMAT, "tensor 'w': shape [4294967296, 4294967296, 4] x F32 overflows");
    CHECK_ERR(open_close(mkfile("overflow2.st",
                                "{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
                                "\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_FORMAT, "overflows");
    CHECK_ERR(open_close(mkfile("bigint.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999999],"
                                "\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_FORMAT, "header JSON");
    CHECK_ERR(open_close(mkfile("negative.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_FORMAT, "tensor 'w': shape[0] is -1, expected a non-negative integer");
    CHECK_ERR(open_close(mkfile("negoff.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
                                4, 0)),
              LT_ERR_FORMAT, "data_offsets[0] is -4");
    CHECK_ERR(open_close(mkfile("floatdim.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_FORMAT, "shape[0]: expected a non-negative integer");
    CHECK_ERR(open_close(mkfile("dims.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}",
                                4, 0)),
              LT_ERR_UNSUPPORTED, "tensor 'w': shape has 5 dims, at most 4");
    CHECK_ERR(open_close(mkfile("offs3.st",
                                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
                                4, 0)),
              LT_ERR_FORMAT, "tensor 'w': data_offsets: expected an array [begin, end]");
    CHECK_ERR(open_close(mkfile("entry.st", "{\"w\":3}", 0, 0)), LT_ERR_FORMAT,
              "tensor 'w': expected an object");
    CHECK_ERR(open_close(mkfile("meta.st", "{\"__metadata__\":{\"k\":1}}", 0, 0)), LT_ERR_FORMAT,
              "__metadata__: key 'k': expected a string");
    CHECK_ERR(open_close(mkfile("meta2.st", "{\"__metadata__\":[\"k\"]}", 0, 0)), LT_ERR_FORMAT,
              "__metadata__: expected an object");
    /* null metadata = none (what mlx's save_safetensors writes) */
    CHECK_OK(open_close(mkfile("metanull.st",
                               "{\"__metadata__\":null,\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
                               "\"data_offsets\":[0,4]}}",
                               4, 0)));
    /* hostile shapes stop in the pre-scan instead of reaching the JSON parser */
    {
        size_t n = 200000;
        char *h = malloc(n + 64);
        strcpy(h, "{\"w\":{\"dtype\":\"F32\",\"shape\":[");
        size_t o = strlen(h);
        for (size_t i = 0; i < n / 2; i++) {
            h[o++] = '0';
            h[o++] = ',';
        }
        strcpy(h + o, "0]}}");
        CHECK_ERR(open_close(mkfile("longarr.st", h, 0, 0)), LT_ERR_FORMAT,
                  "array with more than 64 elements");
        memset(h, '[', n);
        h[0] = '{';
        h[n] = 0;
        CHECK_ERR(open_close(mkfile("deep.st", h, 0, 0)), LT_ERR_FORMAT, "nested deeper");
        free(h);
        /* too many tensors, too many metadata keys */
        size_t cap = 1000002 * 16 + 64;
        h = malloc(cap);
        o = 0;
        h[o++] = '{';
        for (int i = 0; i < 1000002; i++) o += (size_t)snprintf(h + o, cap - o, "\"%x\":0,", i);
        strcpy(h + o, "\"x\":0}");
        CHECK_ERR(open_close(mkfile("many.st", h, 0, 0)), LT_ERR_FORMAT,
                  "more than 1000001 entries");
        strcpy(h, "{\"__metadata__\":{");
        o = strlen(h);
        for (int i = 0; i < 70000; i++) o += (size_t)snprintf(h + o, cap - o, "\"%x\":\"\",", i);
        strcpy(h + o, "\"x\":\"\"}}");
        CHECK_ERR(open_close(mkfile("manymeta.st", h, 0, 0)), LT_ERR_FORMAT,
                  "JSON object with more than 65536 keys");
        free(h);
    }
    /* NUL-free garbage: random printable bytes, with and without a plausible length */
    uint32_t rng = 7;
    for (int k = 0; k < 40; k++) {
        uint8_t buf[300];
        size_t n = 1 + (size_t)k * 7;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 1664525u + 1013904223u;
            buf[i] = (uint8_t)(33 + (rng >> 24) % 94);
        }
        if (k % 2 && n > 8) {
            uint64_t hl = (n - 8) / 2;
            for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hl >> (8 * i));
            buf[8] = '{';
        }
        char name[32];
        snprintf(name, sizeof name, "garbage%d.st", k);
        write_bytes(tpath(name), buf, n);
        lt_status s = open_close(tpath(name));
        CHECK(s == LT_ERR_FORMAT && strstr(lt_errmsg(), name), "garbage %d: %s %s", k,
              lt_status_name(s), lt_errmsg());
    }
    /* every truncation of a valid file fails cleanly */
    {
        char *raw;
        size_t rl;
        lt_file_read_all(tpath("rt.safetensors"), &raw, &rl);
        int bad = 0;
        for (size_t n = 0; n < rl; n++) {
            write_bytes(tpath("cut.st"), raw, n);
            if (open_close(tpath("cut.st")) != LT_ERR_FORMAT) bad++;
        }
        CHECK(bad == 0, "%d truncations of rt.safetensors did not fail with a format error", bad);
        free(raw);
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--dump")) return peer_dump(argc, argv);
    if (argc == 4 && !strcmp(argv[1], "--write")) return peer_write(argv[2], argv[3]);
    g_dir = lt_tmpdir();
    CHECK(g_dir != NULL, "tmpdir");
    if (!g_dir) LT_TEST_END();
    test_fixture();
    test_roundtrip();
    test_sharded();
    test_bad();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!lt_t_fail && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    LT_TEST_END();
}
