/* test_gguf.c - GGUF reader/writer: fixtures, writer round trip, malformed files.
 *
 * Outside references: the stories260K GGUF is checked against the llama2.c .bin export of
 * the same model (byte-equal weights) and known facts of the vocab files; the PyPI `gguf`
 * package is the peer in tests/formats/test_gguf_peer.py, which drives two extra modes:
 *   test_gguf --dump FILE        prints JSON (kv values, tensors with raw bytes and
 *                                lt_to_f32 output, hex-encoded) for comparison with GGUFReader
 *   test_gguf --write SPEC OUT   builds OUT with lt_gguf_writer from a JSON spec
 * Value encoding in both JSON forms: integers as numbers (u64 as a decimal string), f32/f64
 * and strings as hex of their little-endian bytes, bools as true/false. */
#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>

#include "loratune/gguf.h"
#include "loratune/quant.h"
#include "lt_test.h"

/* ---- hex helpers ---------------------------------------------------------------------- */
static char *hex_of(const void *p, size_t n) {
    static const char d[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = d[b[i] >> 4];
        s[2 * i + 1] = d[b[i] & 15];
    }
    s[2 * n] = 0;
    return s;
}
static json_t *json_hex(const void *p, size_t n) {
    char *s = hex_of(p, n);
    json_t *j = json_string(s);
    free(s);
    return j;
}
static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}
/* Decodes hex into a malloc'd buffer with a NUL after the n bytes. */
static uint8_t *unhex(const char *s, size_t *n) {
    size_t l = strlen(s);
    uint8_t *b = malloc(l / 2 + 1);
    for (size_t i = 0; i + 1 < l; i += 2)
        b[i / 2] = (uint8_t)(hexval(s[i]) * 16 + hexval(s[i + 1]));
    b[l / 2] = 0;
    *n = l / 2;
    return b;
}

/* ---- --dump ---------------------------------------------------------------------------- */
static json_t *dump_scalar(lt_gguf_type t, const uint8_t *p) {
    int64_t v;
    switch (t) {
    case LT_GGUF_UINT8:
        return json_integer(p[0]);
    case LT_GGUF_INT8:
        return json_integer((int8_t)p[0]);
    case LT_GGUF_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        return json_integer(x);
    }
    case LT_GGUF_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        return json_integer(x);
    }
    case LT_GGUF_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        return json_integer(x);
    }
    case LT_GGUF_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        return json_integer(x);
    }
    case LT_GGUF_INT64:
        memcpy(&v, p, 8);
        return json_integer(v);
    case LT_GGUF_UINT64: {
        uint64_t x;
        char s[32];
        memcpy(&x, p, 8);
        snprintf(s, sizeof s, "%" PRIu64, x);
        return json_string(s);
    }
    case LT_GGUF_FLOAT32:
        return json_hex(p, 4);
    case LT_GGUF_FLOAT64:
        return json_hex(p, 8);
    case LT_GGUF_BOOL:
        return json_boolean(p[0]);
    default:
        return json_null();
    }
}

/* Scalars go through the typed getters (so --dump exercises them), arrays through get_arr. */
static json_t *dump_value(const lt_gguf *g, const char *key, lt_gguf_type t) {
    uint8_t b[8] = {0};
    switch (t) {
    case LT_GGUF_STRING: {
        const char *s;
        size_t n;
        if (lt_gguf_get_str(g, key, &s, &n)) return NULL;
        return json_hex(s, n);
    }
    case LT_GGUF_BOOL: {
        int v;
        if (lt_gguf_get_bool(g, key, &v)) return NULL;
        return json_boolean(v);
    }
    case LT_GGUF_FLOAT32: {
        float f;
        if (lt_gguf_get_f32(g, key, &f)) return NULL;
        return json_hex(&f, 4);
    }
    case LT_GGUF_FLOAT64: {
        double f;
        if (lt_gguf_get_f64(g, key, &f)) return NULL;
        return json_hex(&f, 8);
    }
    case LT_GGUF_UINT64: {
        uint64_t v;
        if (lt_gguf_get_u64(g, key, &v)) return NULL;
        memcpy(b, &v, 8);
        return dump_scalar(t, b);
    }
    case LT_GGUF_ARRAY: {
        lt_gguf_type et;
        uint64_t n;
        const void *data;
        if (lt_gguf_get_arr(g, key, &et, &n, &data)) return NULL;
        json_t *a = json_array();
        size_t es = et == LT_GGUF_UINT8 || et == LT_GGUF_INT8 || et == LT_GGUF_BOOL        ? 1
                    : et == LT_GGUF_UINT16 || et == LT_GGUF_INT16                          ? 2
                    : et == LT_GGUF_UINT64 || et == LT_GGUF_INT64 || et == LT_GGUF_FLOAT64 ? 8
                                                                                           : 4;
        for (uint64_t i = 0; i < n; i++) {
            if (et == LT_GGUF_STRING) {
                const char *s;
                size_t l;
                if (lt_gguf_get_arr_str(g, key, i, &s, &l)) {
                    json_decref(a);
                    return NULL;
                }
                json_array_append_new(a, json_hex(s, l));
            } else {
                json_array_append_new(a, dump_scalar(et, (const uint8_t *)data + i * es));
            }
        }
        return a;
    }
    default: { /* all other integers through get_i64 */
        int64_t v;
        if (lt_gguf_get_i64(g, key, &v)) return NULL;
        return json_integer(v);
    }
    }
}

static int cmd_dump(const char *path) {
    lt_gguf *g;
    if (lt_gguf_open(path, &g)) {
        fprintf(stderr, "%s\n", lt_errmsg());
        return 1;
    }
    json_t *root = json_object(), *kvs = json_array(), *ts = json_array();
    json_object_set_new(root, "version", json_integer(lt_gguf_version(g)));
    json_object_set_new(root, "alignment", json_integer(lt_gguf_alignment(g)));
    for (size_t i = 0; i < lt_gguf_n_kv(g); i++) {
        const char *key = lt_gguf_kv_key(g, i);
        lt_gguf_type t = lt_gguf_kv_type(g, i);
        json_t *v = dump_value(g, key, t);
        if (!v) {
            fprintf(stderr, "%s\n", lt_errmsg());
            return 1;
        }
        json_t *o = json_object();
        json_object_set_new(o, "key", json_string(key));
        json_object_set_new(o, "type", json_integer(t));
        if (t == LT_GGUF_ARRAY) {
            lt_gguf_type et;
            lt_gguf_get_arr(g, key, &et, NULL, NULL);
            json_object_set_new(o, "elem_type", json_integer(et));
        }
        json_object_set_new(o, "value", v);
        json_array_append_new(kvs, o);
    }
    for (size_t i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_view *t = lt_gguf_tensor(g, i);
        json_t *o = json_object(), *shape = json_array();
        uint32_t gt = 0;
        lt_gguf_dtype_to_ggml(t->dtype, &gt);
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(o, "name", json_string(t->name));
        json_object_set_new(o, "ggml_type", json_integer(gt));
        json_object_set_new(o, "shape", shape);
        json_object_set_new(o, "offset", json_integer((json_int_t)lt_gguf_tensor_offset(g, i)));
        json_object_set_new(o, "data", json_hex(t->data, t->nbytes));
        int64_t n = lt_tensor_numel(t);
        float *f = malloc((size_t)n * 4);
        if (lt_to_f32(t->dtype, t->data, f, n)) {
            fprintf(stderr, "%s\n", lt_errmsg());
            return 1;
        }
        json_object_set_new(o, "f32", json_hex(f, (size_t)n * 4));
        free(f);
        json_array_append_new(ts, o);
    }
    json_object_set_new(root, "kv", kvs);
    json_object_set_new(root, "tensors", ts);
    json_dumpf(root, stdout, JSON_COMPACT);
    json_decref(root);
    lt_gguf_close(g);
    return 0;
}

/* ---- --write --------------------------------------------------------------------------- */
static int scalar_from_json(lt_gguf_type t, json_t *v, uint8_t out[8]) {
    memset(out, 0, 8);
    if (t == LT_GGUF_FLOAT32 || t == LT_GGUF_FLOAT64) {
        size_t n;
        uint8_t *b = unhex(json_string_value(v), &n);
        memcpy(out, b, n <= 8 ? n : 8);
        free(b);
    } else if (t == LT_GGUF_BOOL) {
        out[0] = json_is_true(v);
    } else if (t == LT_GGUF_UINT64) {
        uint64_t x = strtoull(json_string_value(v), NULL, 10);
        memcpy(out, &x, 8);
    } else {
        int64_t x = json_integer_value(v);
        memcpy(out, &x, 8); /* little-endian: the low bytes are the narrower type */
    }
    return 0;
}

static size_t scalar_size(lt_gguf_type t) {
    switch (t) {
    case LT_GGUF_UINT8:
    case LT_GGUF_INT8:
    case LT_GGUF_BOOL:
        return 1;
    case LT_GGUF_UINT16:
    case LT_GGUF_INT16:
        return 2;
    case LT_GGUF_UINT64:
    case LT_GGUF_INT64:
    case LT_GGUF_FLOAT64:
        return 8;
    default:
        return 4;
    }
}

static int cmd_write(const char *spec_path, const char *out_path) {
    json_error_t je;
    json_t *spec = json_load_file(spec_path, JSON_REJECT_DUPLICATES, &je);
    if (!spec) {
        fprintf(stderr, "%s: %s\n", spec_path, je.text);
        return 1;
    }
    lt_gguf_writer *w;
    lt_gguf_writer_create(&w);
    lt_status st = LT_OK;
    size_t i;
    json_t *kv, *tj;
    void **keep = calloc(json_array_size(json_object_get(spec, "tensors")) + 1, sizeof *keep);
    json_array_foreach(json_object_get(spec, "kv"), i, kv) {
        const char *key = json_string_value(json_object_get(kv, "key"));
        lt_gguf_type t = (lt_gguf_type)json_integer_value(json_object_get(kv, "type"));
        json_t *v = json_object_get(kv, "value");
        uint8_t b[8];
        if (t == LT_GGUF_STRING) {
            size_t n;
            uint8_t *s = unhex(json_string_value(v), &n);
            st = lt_gguf_writer_set_str(w, key, (const char *)s);
            free(s);
        } else if (t == LT_GGUF_ARRAY) {
            lt_gguf_type et = (lt_gguf_type)json_integer_value(json_object_get(kv, "elem_type"));
            size_t n = json_array_size(v), j;
            json_t *e;
            if (et == LT_GGUF_STRING) {
                char **strs = calloc(n + 1, sizeof *strs);
                size_t l;
                json_array_foreach(v, j, e) strs[j] = (char *)unhex(json_string_value(e), &l);
                st = lt_gguf_writer_set_arr_str(w, key, (const char *const *)strs, n);
                for (j = 0; j < n; j++)
                    free(strs[j]);
                free(strs);
            } else {
                size_t es = scalar_size(et);
                uint8_t *data = malloc(n * es + 1);
                json_array_foreach(v, j, e) {
                    scalar_from_json(et, e, b);
                    memcpy(data + j * es, b, es);
                }
                st = lt_gguf_writer_set_arr(w, key, et, data, n);
                free(data);
            }
        } else {
            scalar_from_json(t, v, b);
            st = lt_gguf_writer_set_scalar(w, key, t, b);
        }
        if (st) goto fail;
    }
    json_array_foreach(json_object_get(spec, "tensors"), i, tj) {
        lt_dtype dt;
        if (lt_dtype_from_name(json_string_value(json_object_get(tj, "dtype")), &dt) != 0) {
            st = lt_error(LT_ERR_ARG, "bad dtype in spec");
            goto fail;
        }
        int64_t shape[LT_MAX_DIMS];
        json_t *sh = json_object_get(tj, "shape"), *e;
        size_t j;
        json_array_foreach(sh, j, e) if (j < LT_MAX_DIMS) shape[j] = json_integer_value(e);
        size_t n;
        keep[i] = unhex(json_string_value(json_object_get(tj, "data")), &n);
        st = lt_gguf_writer_add_tensor(w, json_string_value(json_object_get(tj, "name")), dt,
                                       (int)json_array_size(sh), shape, keep[i], n);
        if (st) goto fail;
    }
    st = lt_gguf_writer_write(w, out_path);
fail:
    if (st) fprintf(stderr, "%s\n", lt_errmsg());
    for (i = 0; keep[i]; i++)
        free(keep[i]);
    free(keep);
    lt_gguf_writer_free(w);
    json_decref(spec);
    return st ? 1 : 0;
}

/* ---- fixtures -------------------------------------------------------------------------- */
static int str_is(const char *s, size_t n, const char *want) {
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

static void check_u32(const lt_gguf *g, const char *key, uint32_t want) {
    uint32_t v = 0;
    CHECK_OK(lt_gguf_get_u32(g, key, &v));
    CHECK(v == want, "%s = %u, want %u", key, v, want);
}

static void check_str(const lt_gguf *g, const char *key, const char *want) {
    const char *s = NULL;
    size_t n = 0;
    CHECK_OK(lt_gguf_get_str(g, key, &s, &n));
    CHECK(s && str_is(s, n, want), "%s = '%.*s', want '%s'", key, (int)n, s ? s : "", want);
}

static void check_arr_str(const lt_gguf *g, const char *key, uint64_t i, const char *want) {
    const char *s = NULL;
    size_t n = 0;
    CHECK_OK(lt_gguf_get_arr_str(g, key, i, &s, &n));
    CHECK(s && str_is(s, n, want), "%s[%" PRIu64 "] = '%.*s', want '%s'", key, i, (int)n,
          s ? s : "", want);
}

/* A tensor equal (byte for byte) to count floats of the llama2.c .bin at float offset off. */
static void check_same_as_bin(const lt_gguf *g, const char *name, const float *bin, size_t nbin,
                              size_t off, int64_t d0, int64_t d1) {
    const lt_tensor_view *t = lt_gguf_find_tensor(g, name);
    CHECK(t != NULL, "tensor %s missing", name);
    if (!t) return;
    int nd = d1 ? 2 : 1;
    CHECK(t->dtype == LT_DTYPE_F32 && t->ndim == nd && t->shape[0] == d0 &&
              (nd == 1 || t->shape[1] == d1),
          "%s: dtype %s ndim %d shape {%lld, %lld}, want F32 {%lld, %lld}", name,
          lt_dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
          (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)d0, (long long)d1);
    size_t count = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    CHECK(off + count <= nbin && t->nbytes == count * 4 &&
              memcmp(t->data, bin + off, count * 4) == 0,
          "%s: data differs from stories260K.bin at float offset %zu", name, off);
}

static void test_stories(void) {
    const char *path = lt_fixture("stories260K/stories260K.gguf");
    lt_gguf *g = NULL;
    CHECK_OK(lt_gguf_open(path, &g));
    if (!g) return;
    CHECK(strcmp(lt_gguf_path(g), path) == 0, "path");
    CHECK(lt_gguf_version(g) == 3 && lt_gguf_alignment(g) == 32, "version/alignment");
    check_str(g, "general.architecture", "llama");
    check_str(g, "tokenizer.ggml.model", "llama");
    check_u32(g, "llama.block_count", 5);
    check_u32(g, "llama.embedding_length", 64);
    check_u32(g, "llama.feed_forward_length", 172);
    check_u32(g, "llama.attention.head_count", 8);
    check_u32(g, "llama.attention.head_count_kv", 4);
    check_u32(g, "llama.rope.dimension_count", 8);
    float eps = 0;
    CHECK_OK(lt_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps));
    CHECK(eps == 1e-5f, "rms eps %g", eps);
    int64_t i64 = 0;
    CHECK_OK(lt_gguf_get_i64(g, "llama.block_count", &i64));
    CHECK(i64 == 5, "block_count as i64");
    CHECK(lt_gguf_find_key(g, "no.such.key") == -1, "absent key");
    CHECK(lt_gguf_find_key(g, "llama.block_count") >= 0, "present key");
    uint32_t u;
    CHECK_ERR(lt_gguf_get_u32(g, "no.such.key", &u), LT_ERR_NOTFOUND, "no.such.key");
    CHECK_ERR(lt_gguf_get_u32(g, "general.architecture", &u), LT_ERR_FORMAT,
              "general.architecture");
    CHECK_ERR(lt_gguf_get_f32(g, "llama.block_count", &eps), LT_ERR_FORMAT, "f32");
    int b;
    CHECK_ERR(lt_gguf_get_bool(g, "llama.block_count", &b), LT_ERR_FORMAT, "bool");
    lt_gguf_type et;
    uint64_t n = 0;
    const void *data = NULL;
    CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data));
    CHECK(et == LT_GGUF_STRING && n == 512 && data == NULL, "tokens: type %d n %" PRIu64, et, n);
    CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data));
    CHECK(et == LT_GGUF_FLOAT32 && n == 512 && data != NULL, "scores");
    CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data));
    CHECK(et == LT_GGUF_INT32 && n == 512, "token_type");
    const char *s;
    size_t sl;
    CHECK_ERR(lt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 512, &s, &sl), LT_ERR_ARG, "512");
    CHECK_ERR(lt_gguf_get_arr_str(g, "tokenizer.ggml.scores", 0, &s, &sl), LT_ERR_FORMAT,
              "strings");
    CHECK_ERR(lt_gguf_get_arr(g, "llama.block_count", &et, &n, &data), LT_ERR_FORMAT, "array");

    /* 3 global tensors + 9 per layer; every key listed by index is findable */
    CHECK(lt_gguf_n_tensors(g) == 3 + 5 * 9, "n_tensors %zu", lt_gguf_n_tensors(g));
    CHECK(lt_gguf_n_kv(g) == 19, "n_kv %zu", lt_gguf_n_kv(g));
    for (size_t i = 0; i < lt_gguf_n_kv(g); i++)
        CHECK(lt_gguf_find_key(g, lt_gguf_kv_key(g, i)) == (int64_t)i, "find_key #%zu", i);
    for (size_t i = 0; i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_view *t = lt_gguf_tensor(g, i);
        CHECK(lt_gguf_find_tensor(g, t->name) == t, "find_tensor %s", t->name);
        CHECK(((uintptr_t)t->data & 31) == 0, "%s data aligned", t->name);
    }
    CHECK(lt_gguf_find_tensor(g, "nope") == NULL, "absent tensor");
    CHECK(lt_gguf_tensor(g, 1000) == NULL, "tensor index out of range");

    /* weights equal to the llama2.c export of the same model (layout in SOURCE.md) */
    char *binbuf = NULL;
    size_t binlen = 0;
    CHECK_OK(lt_file_read_all(lt_fixture("stories260K/stories260K.bin"), &binbuf, &binlen));
    if (binbuf) {
        const float *w = (const float *)(binbuf + 28);
        size_t nw = (binlen - 28) / 4, off = 0;
        const int L = 5, D = 64, KV = 32, H = 172, V = 512;
        check_same_as_bin(g, "token_embd.weight", w, nw, off, V, D);
        check_same_as_bin(g, "output.weight", w, nw, off, V, D); /* shared classifier */
        off += (size_t)V * D;
        char nm[64];
        for (int l = 0; l < L; l++) {
            snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
            check_same_as_bin(g, nm, w, nw, off + (size_t)l * D, D, 0);
        }
        off += (size_t)L * D;
        /* q/k too: llama2.c and GGUF llama both use interleaved-pair rope, so the
         * converter applied no row permutation to this model (it does for HF models) */
        for (int l = 0; l < L; l++) {
            snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
            check_same_as_bin(g, nm, w, nw, off + (size_t)l * D * D, D, D);
        }
        off += (size_t)L * D * D;
        for (int l = 0; l < L; l++) {
            snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l);
            check_same_as_bin(g, nm, w, nw, off + (size_t)l * KV * D, KV, D);
        }
        off += (size_t)L * KV * D;
        for (int l = 0; l < L; l++) {
            snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
            check_same_as_bin(g, nm, w, nw, off + (size_t)l * KV * D, KV, D);
        }
        off += (size_t)L * KV * D;
        for (int l = 0; l < L; l++) {
            snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", l);
            check_same_as_bin(g, nm, w, nw, off + (size_t)l * D * D, D, D);
        }
        off += (size_t)L * D * D;
        for (int l = 0; l < L; l++) {
            snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
            check_same_as_bin(g, nm, w, nw, off + (size_t)l * D, D, 0);
        }
        off += (size_t)L * D;
        const char *ffn[3] = {"ffn_gate", "ffn_down", "ffn_up"};
        for (int k = 0; k < 3; k++) {
            for (int l = 0; l < L; l++) {
                snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, ffn[k]);
                int64_t r = k == 1 ? D : H, c = k == 1 ? H : D;
                check_same_as_bin(g, nm, w, nw, off + (size_t)l * H * D, r, c);
            }
            off += (size_t)L * H * D;
        }
        check_same_as_bin(g, "output_norm.weight", w, nw, off, D, 0);
        free(binbuf);
    }
    lt_gguf_close(g);
}

static void test_vocab_files(void) {
    lt_gguf *g = NULL;
    CHECK_OK(lt_gguf_open(lt_fixture("tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf"), &g));
    if (g) {
        lt_gguf_type et;
        uint64_t n = 0;
        const void *data;
        CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data));
        CHECK(et == LT_GGUF_STRING && n == 32000, "spm tokens %" PRIu64, n);
        check_arr_str(g, "tokenizer.ggml.tokens", 0, "<unk>");
        check_arr_str(g, "tokenizer.ggml.tokens", 1, "<s>");
        check_arr_str(g, "tokenizer.ggml.tokens", 2, "</s>");
        check_arr_str(g, "tokenizer.ggml.tokens", 3, "<0x00>");
        CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data));
        CHECK(et == LT_GGUF_FLOAT32 && n == 32000, "spm scores");
        CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data));
        CHECK(et == LT_GGUF_INT32 && n == 32000, "spm token types");
        if (et == LT_GGUF_INT32 && n == 32000) {
            int32_t tt[4];
            memcpy(tt, data, sizeof tt);
            /* llama.cpp token types: 1 normal, 2 unknown, 3 control, 6 byte */
            CHECK(tt[0] == 2 && tt[1] == 3 && tt[2] == 3 && tt[3] == 6, "token types %d %d %d %d",
                  tt[0], tt[1], tt[2], tt[3]);
        }
        int add_bos = 0;
        CHECK_OK(lt_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos));
        CHECK(add_bos == 1, "add_bos_token");
        check_u32(g, "tokenizer.ggml.bos_token_id", 1);
        check_u32(g, "llama.vocab_size", 32000);
        CHECK(lt_gguf_n_tensors(g) == 0, "vocab has no tensors");
        lt_gguf_close(g);
    }
    g = NULL;
    CHECK_OK(lt_gguf_open(lt_fixture("tokenizers/gpt2/ggml-vocab-gpt-2.gguf"), &g));
    if (g) {
        lt_gguf_type et;
        uint64_t n = 0;
        CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL));
        CHECK(et == LT_GGUF_STRING && n == 50257, "gpt2 tokens %" PRIu64, n);
        CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n, NULL));
        CHECK(et == LT_GGUF_STRING && n == 50000, "gpt2 merges %" PRIu64, n);
        check_arr_str(g, "tokenizer.ggml.tokens", 0, "!");
        check_arr_str(g, "tokenizer.ggml.tokens", 50256, "<|endoftext|>");
        check_arr_str(g, "tokenizer.ggml.merges", 0, "\xc4\xa0 t"); /* "Ġ t" */
        check_str(g, "tokenizer.ggml.model", "gpt2");
        check_u32(g, "tokenizer.ggml.eos_token_id", 50256);
        lt_gguf_close(g);
    }
    CHECK_ERR(lt_gguf_open("/nonexistent/x.gguf", &g), LT_ERR_IO, "/nonexistent/x.gguf");
    CHECK(g == NULL, "out is NULL on failure");
}

/* ---- writer round trip ----------------------------------------------------------------- */
static void test_roundtrip(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/rt.gguf", dir);
    lt_gguf_writer *w = NULL;
    CHECK_OK(lt_gguf_writer_create(&w));
    if (!w) return;
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = INT64_MIN + 7;
    double f64 = -1.0 / 3.0;
    CHECK_OK(lt_gguf_writer_set_str(w, "general.architecture", "llama"));
    CHECK_OK(lt_gguf_writer_set_u32(w, "general.alignment", 64));
    CHECK_OK(lt_gguf_writer_set_scalar(w, "t.u8", LT_GGUF_UINT8, &u8));
    CHECK_OK(lt_gguf_writer_set_scalar(w, "t.i8", LT_GGUF_INT8, &i8));
    CHECK_OK(lt_gguf_writer_set_scalar(w, "t.u16", LT_GGUF_UINT16, &u16));
    CHECK_OK(lt_gguf_writer_set_scalar(w, "t.i16", LT_GGUF_INT16, &i16));
    CHECK_OK(lt_gguf_writer_set_u32(w, "t.u32", 4000000000u));
    CHECK_OK(lt_gguf_writer_set_i32(w, "t.i32", -2000000000));
    CHECK_OK(lt_gguf_writer_set_u64(w, "t.u64", UINT64_MAX));
    CHECK_OK(lt_gguf_writer_set_scalar(w, "t.i64", LT_GGUF_INT64, &i64));
    CHECK_OK(lt_gguf_writer_set_f32(w, "t.f32", 1.25e-5f));
    CHECK_OK(lt_gguf_writer_set_scalar(w, "t.f64", LT_GGUF_FLOAT64, &f64));
    CHECK_OK(lt_gguf_writer_set_bool(w, "t.bool", 7));
    CHECK_OK(lt_gguf_writer_set_str(w, "t.str", "h\xc3\xa9llo"));
    CHECK_OK(lt_gguf_writer_set_str(w, "t.empty", ""));
    const int32_t ai[5] = {1, -2, 3, -4, 5};
    const float af[3] = {0.5f, -1e30f, 3.0f};
    const uint8_t ab[3] = {1, 0, 1};
    const uint64_t au[2] = {0, UINT64_MAX};
    const char *as[4] = {"<unk>", "", "\xe2\x96\x81the", "x y"};
    CHECK_OK(lt_gguf_writer_set_arr(w, "a.i32", LT_GGUF_INT32, ai, 5));
    CHECK_OK(lt_gguf_writer_set_arr(w, "a.f32", LT_GGUF_FLOAT32, af, 3));
    CHECK_OK(lt_gguf_writer_set_arr(w, "a.bool", LT_GGUF_BOOL, ab, 3));
    CHECK_OK(lt_gguf_writer_set_arr(w, "a.u64", LT_GGUF_UINT64, au, 2));
    CHECK_OK(lt_gguf_writer_set_arr(w, "a.empty", LT_GGUF_UINT8, NULL, 0));
    CHECK_OK(lt_gguf_writer_set_arr_str(w, "a.str", as, 4));
    CHECK_ERR(lt_gguf_writer_set_u32(w, "t.u32", 1), LT_ERR_ARG, "duplicate key 't.u32'");
    CHECK_ERR(lt_gguf_writer_set_arr(w, "a.bad", LT_GGUF_STRING, as, 1), LT_ERR_ARG, "a.bad");
    CHECK_ERR(lt_gguf_writer_set_arr(w, "a.bad", LT_GGUF_ARRAY, ai, 1), LT_ERR_ARG, "a.bad");

    /* tensors: F32 [3][5][7] no - innermost must fit blocks only for quants */
    float f32[3 * 5 * 7];
    for (int i = 0; i < 105; i++)
        f32[i] = (float)i * 0.25f - 3.0f;
    uint16_t f16[2 * 8], bf16[2 * 8];
    for (int i = 0; i < 16; i++) {
        f16[i] = lt_f32_to_f16((float)i - 4.5f);
        bf16[i] = lt_f32_to_bf16((float)i * 1.5f);
    }
    float src[64];
    for (int i = 0; i < 64; i++)
        src[i] = sinf((float)i) * 3.0f;
    uint8_t q8[2 * 34], q4k[144];
    CHECK_OK(lt_quantize(LT_DTYPE_Q8_0, src, q8, 64));
    for (int i = 0; i < 144; i++)
        q4k[i] = (uint8_t)(i * 37 + 11);
    q4k[0] = 0x00, q4k[1] = 0x3c; /* d = 1.0 */
    q4k[2] = 0x00, q4k[3] = 0x38; /* dmin = 0.5 */
    int32_t i32[6] = {1, 2, 3, -4, 5, 6};
    const int64_t s3[3] = {3, 5, 7}, s2[2] = {2, 8}, sq8[2] = {2, 32}, sq4k[1] = {256},
                  s4[4] = {1, 2, 1, 3};
    CHECK_OK(lt_gguf_writer_add_tensor(w, "f32", LT_DTYPE_F32, 3, s3, f32, sizeof f32));
    CHECK_OK(lt_gguf_writer_add_tensor(w, "f16", LT_DTYPE_F16, 2, s2, f16, sizeof f16));
    CHECK_OK(lt_gguf_writer_add_tensor(w, "bf16", LT_DTYPE_BF16, 2, s2, bf16, sizeof bf16));
    CHECK_OK(lt_gguf_writer_add_tensor(w, "q8", LT_DTYPE_Q8_0, 2, sq8, q8, sizeof q8));
    CHECK_OK(lt_gguf_writer_add_tensor(w, "q4k", LT_DTYPE_Q4_K, 1, sq4k, q4k, sizeof q4k));
    CHECK_OK(lt_gguf_writer_add_tensor(w, "i32", LT_DTYPE_I32, 4, s4, i32, sizeof i32));
    CHECK_ERR(lt_gguf_writer_add_tensor(w, "f16", LT_DTYPE_F16, 2, s2, f16, sizeof f16), LT_ERR_ARG,
              "duplicate tensor name 'f16'");
    CHECK_ERR(lt_gguf_writer_add_tensor(w, "x", LT_DTYPE_Q8_0, 1, s2 + 1, q8, 8), LT_ERR_ARG,
              "block size");
    CHECK_ERR(lt_gguf_writer_add_tensor(w, "x", LT_DTYPE_F32, 1, s2 + 1, f32, 31), LT_ERR_ARG,
              "nbytes");
    CHECK_ERR(lt_gguf_writer_add_tensor(w, "x", LT_DTYPE_U8, 1, s2 + 1, f32, 8), LT_ERR_ARG,
              "ggml");
    CHECK_ERR(lt_gguf_writer_add_tensor(w, "x", LT_DTYPE_F32, 5, s4, f32, 8), LT_ERR_ARG, "ndim");
    CHECK_OK(lt_gguf_writer_write(w, path));
    lt_gguf_writer_free(w);

    lt_gguf *g = NULL;
    CHECK_OK(lt_gguf_open(path, &g));
    if (!g) return;
    CHECK(lt_gguf_alignment(g) == 64, "alignment %u", lt_gguf_alignment(g));
    CHECK(lt_gguf_n_kv(g) == 21, "n_kv %zu", lt_gguf_n_kv(g));
    const char *order[] = {"general.architecture", "general.alignment", "t.u8", "t.i8", "t.u16"};
    for (size_t i = 0; i < 5; i++)
        CHECK(strcmp(lt_gguf_kv_key(g, i), order[i]) == 0, "kv order %zu: %s", i,
              lt_gguf_kv_key(g, i));
    int64_t v = 0;
    uint64_t uv = 0;
    uint32_t u32 = 0;
    CHECK_OK(lt_gguf_get_i64(g, "t.u8", &v));
    CHECK(v == 200, "u8");
    CHECK_OK(lt_gguf_get_i64(g, "t.i8", &v));
    CHECK(v == -100, "i8");
    CHECK_OK(lt_gguf_get_i64(g, "t.u16", &v));
    CHECK(v == 60000, "u16");
    CHECK_OK(lt_gguf_get_i64(g, "t.i16", &v));
    CHECK(v == -30000, "i16");
    CHECK_OK(lt_gguf_get_u32(g, "t.u32", &u32));
    CHECK(u32 == 4000000000u, "u32");
    CHECK_OK(lt_gguf_get_i64(g, "t.i32", &v));
    CHECK(v == -2000000000, "i32");
    CHECK_ERR(lt_gguf_get_u32(g, "t.i32", &u32), LT_ERR_FORMAT, "t.i32");
    CHECK_ERR(lt_gguf_get_u64(g, "t.i32", &uv), LT_ERR_FORMAT, "t.i32");
    CHECK_OK(lt_gguf_get_u64(g, "t.u64", &uv));
    CHECK(uv == UINT64_MAX, "u64");
    CHECK_ERR(lt_gguf_get_i64(g, "t.u64", &v), LT_ERR_FORMAT, "i64");
    CHECK_ERR(lt_gguf_get_u32(g, "t.u64", &u32), LT_ERR_FORMAT, "u32");
    CHECK_OK(lt_gguf_get_i64(g, "t.i64", &v));
    CHECK(v == INT64_MIN + 7, "i64");
    float f = 0;
    double d = 0;
    CHECK_OK(lt_gguf_get_f32(g, "t.f32", &f));
    CHECK(f == 1.25e-5f, "f32");
    CHECK_OK(lt_gguf_get_f64(g, "t.f64", &d));
    CHECK(d == -1.0 / 3.0, "f64");
    CHECK_OK(lt_gguf_get_f32(g, "t.f64", &f));
    CHECK(f == (float)(-1.0 / 3.0), "f64 as f32");
    int bo = 0;
    CHECK_OK(lt_gguf_get_bool(g, "t.bool", &bo));
    CHECK(bo == 1, "bool");
    check_str(g, "t.str", "h\xc3\xa9llo");
    check_str(g, "t.empty", "");
    lt_gguf_type et;
    uint64_t n;
    const void *data;
    CHECK_OK(lt_gguf_get_arr(g, "a.i32", &et, &n, &data));
    CHECK(et == LT_GGUF_INT32 && n == 5 && memcmp(data, ai, sizeof ai) == 0, "a.i32");
    CHECK_OK(lt_gguf_get_arr(g, "a.f32", &et, &n, &data));
    CHECK(et == LT_GGUF_FLOAT32 && n == 3 && memcmp(data, af, sizeof af) == 0, "a.f32");
    CHECK_OK(lt_gguf_get_arr(g, "a.bool", &et, &n, &data));
    CHECK(et == LT_GGUF_BOOL && n == 3 && memcmp(data, ab, sizeof ab) == 0, "a.bool");
    CHECK_OK(lt_gguf_get_arr(g, "a.u64", &et, &n, &data));
    CHECK(et == LT_GGUF_UINT64 && n == 2 && memcmp(data, au, sizeof au) == 0, "a.u64");
    CHECK_OK(lt_gguf_get_arr(g, "a.empty", &et, &n, &data));
    CHECK(et == LT_GGUF_UINT8 && n == 0, "a.empty");
    CHECK_OK(lt_gguf_get_arr(g, "a.str", &et, &n, &data));
    CHECK(et == LT_GGUF_STRING && n == 4, "a.str");
    for (int i = 0; i < 4; i++)
        check_arr_str(g, "a.str", (uint64_t)i, as[i]);

    struct {
        const char *name;
        lt_dtype dt;
        int nd;
        const int64_t *shape;
        const void *data;
        size_t nb;
    } want[] = {
        {"f32", LT_DTYPE_F32, 3, s3, f32, sizeof f32},
        {"f16", LT_DTYPE_F16, 2, s2, f16, sizeof f16},
        {"bf16", LT_DTYPE_BF16, 2, s2, bf16, sizeof bf16},
        {"q8", LT_DTYPE_Q8_0, 2, sq8, q8, sizeof q8},
        {"q4k", LT_DTYPE_Q4_K, 1, sq4k, q4k, sizeof q4k},
        {"i32", LT_DTYPE_I32, 4, s4, i32, sizeof i32},
    };
    CHECK(lt_gguf_n_tensors(g) == 6, "n_tensors");
    for (size_t i = 0; i < 6 && i < lt_gguf_n_tensors(g); i++) {
        const lt_tensor_view *t = lt_gguf_tensor(g, i);
        int ok = strcmp(t->name, want[i].name) == 0 && t->dtype == want[i].dt &&
                 t->ndim == want[i].nd && t->nbytes == want[i].nb &&
                 memcmp(t->shape, want[i].shape, (size_t)t->ndim * 8) == 0 &&
                 memcmp(t->data, want[i].data, t->nbytes) == 0;
        CHECK(ok, "tensor %zu (%s) differs after round trip", i, want[i].name);
        CHECK(lt_gguf_tensor_offset(g, i) % 64 == 0, "offset aligned to 64");
    }
    lt_gguf_close(g);

    /* atomic write: a failing write leaves no file and no temp file behind */
    lt_gguf_writer_create(&w);
    char bad[700];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.gguf", dir);
    CHECK_ERR(lt_gguf_writer_write(w, bad), LT_ERR_IO, "no/such/dir");
    CHECK_ERR(lt_gguf_writer_set_u32(w, "general.alignment", 3), LT_ERR_ARG, "power of two");
    CHECK_ERR(lt_gguf_writer_set_i32(w, "general.alignment", 64), LT_ERR_ARG, "u32");
    /* empty file: header only */
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    CHECK_OK(lt_gguf_writer_write(w, path));
    lt_gguf_writer_free(w);
    CHECK_OK(lt_gguf_open(path, &g));
    CHECK(g && lt_gguf_n_kv(g) == 0 && lt_gguf_n_tensors(g) == 0, "empty file");
    lt_gguf_close(g);
    lt_gguf_writer_free(NULL);
    lt_gguf_close(NULL);
}

/* ---- malformed files ------------------------------------------------------------------- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void p32(buf *b, uint32_t v) {
    put(b, &v, 4);
}
static void p64(buf *b, uint64_t v) {
    put(b, &v, 8);
}
static void pstr(buf *b, const char *s) {
    p64(b, strlen(s));
    put(b, s, strlen(s));
}

/* What to break in the small hand-built file; zero = valid. */
typedef struct {
    const char *magic;
    uint32_t version;
    uint64_t n_tensors, n_kv; /* overrides when non-zero */
    uint64_t str_len;         /* length field of the "general.architecture" value */
    uint64_t arr_len;         /* length field of the "a.arr" array */
    uint32_t kv_type;         /* type of "a.u32" (+1 to distinguish from 0) */
    int nested;               /* element type of "a.arr" = ARRAY */
    uint32_t ggml_type;       /* type of t1 (+1) */
    uint32_t n_dims;          /* n_dims of t1 (+1) */
    int ne_mode;              /* 1: ne0 = 0, 2: ne product overflows, 3: ne0 = 31 (Q8_0),
                                 4: nbytes overflow, 5: ne0 negative */
    uint64_t t1_off;          /* offset of t1 (+1) */
    int alignment;            /* 1: add general.alignment = align_val; 2: as i32 */
    uint32_t align_val;
    int dup_key, dup_tensor, bad_bool;
} breakage;

/* kvs: general.architecture="llama", a.u32=7, a.arr=[1,2,3] (i32), a.strs=["x","yz"],
 * a.flag=true, [general.alignment]; tensors: t0 F32 {8} at 0 (32 B), t1 Q8_0 {2 x 32} at 32
 * (68 B). The file ends exactly at the end of t1's data, so every proper prefix is invalid. */
static void build(buf *b, const breakage *k) {
    b->n = 0;
    put(b, k->magic ? k->magic : "GGUF", 4);
    p32(b, k->version ? k->version : 3);
    p64(b, k->n_tensors ? k->n_tensors : 2);
    p64(b, k->n_kv ? k->n_kv : 5 + (k->alignment ? 1 : 0));
    pstr(b, "general.architecture");
    p32(b, LT_GGUF_STRING);
    if (k->str_len) {
        p64(b, k->str_len);
        put(b, "llama", 5);
    } else {
        pstr(b, "llama");
    }
    pstr(b, k->dup_key ? "general.architecture" : "a.u32");
    p32(b, k->kv_type ? k->kv_type - 1 : LT_GGUF_UINT32);
    p32(b, 7);
    pstr(b, "a.arr");
    p32(b, LT_GGUF_ARRAY);
    p32(b, k->nested ? LT_GGUF_ARRAY : LT_GGUF_INT32);
    p64(b, k->arr_len ? k->arr_len : 3);
    p32(b, 1), p32(b, 2), p32(b, 3);
    pstr(b, "a.strs");
    p32(b, LT_GGUF_ARRAY);
    p32(b, LT_GGUF_STRING);
    p64(b, 2);
    pstr(b, "x");
    pstr(b, "yz");
    pstr(b, "a.flag");
    p32(b, LT_GGUF_BOOL);
    uint8_t flag = k->bad_bool ? 2 : 1;
    put(b, &flag, 1);
    uint32_t align = 32;
    if (k->alignment) {
        pstr(b, "general.alignment");
        p32(b, k->alignment == 2 ? LT_GGUF_INT32 : LT_GGUF_UINT32);
        p32(b, k->align_val);
        if (k->align_val && !(k->align_val & (k->align_val - 1))) align = k->align_val;
    }
    /* t0 */
    pstr(b, "t0");
    p32(b, 1);
    p64(b, 8);
    p32(b, 0);
    p64(b, 0);
    /* t1 */
    pstr(b, k->dup_tensor ? "t0" : "t1");
    uint32_t nd = k->n_dims ? k->n_dims - 1 : 2;
    p32(b, nd);
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne = d == 0 ? 32 : 2;
        if (k->ne_mode == 1 && d == 0) ne = 0;
        if (k->ne_mode == 2) ne = (uint64_t)1 << 40;
        if (k->ne_mode == 3 && d == 0) ne = 31;
        if (k->ne_mode == 4 && d == 0) ne = (uint64_t)1 << 62;
        if (k->ne_mode == 5 && d == 0) ne = (uint64_t)-32;
        p64(b, ne);
    }
    p32(b, k->ggml_type ? k->ggml_type - 1 : 8);
    uint64_t t1off = align > 32 ? align : 32;
    p64(b, k->t1_off ? k->t1_off - 1 : t1off);
    while (b->n % align) {
        uint8_t z = 0;
        put(b, &z, 1);
    }
    float t0[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    put(b, t0, sizeof t0);
    while (b->n % align) {
        uint8_t z = 0;
        put(b, &z, 1);
    }
    uint8_t q[68];
    for (int i = 0; i < 68; i++)
        q[i] = (uint8_t)i;
    q[0] = 0, q[1] = 0x3c, q[34] = 0, q[35] = 0x3c;
    put(b, q, sizeof q);
}

static lt_status open_buf(const buf *b, lt_gguf **g) {
    return lt_gguf_open_mem(b->p, b->n, "bad.gguf", g);
}

#define EXPECT_BAD(code, sub, ...)                                                                 \
    do {                                                                                           \
        breakage k_ = {__VA_ARGS__};                                                               \
        build(&b, &k_);                                                                            \
        lt_gguf *g_ = NULL;                                                                        \
        CHECK_ERR(open_buf(&b, &g_), code, sub);                                                   \
        CHECK(g_ == NULL, "handle on failure");                                                    \
        CHECK(strstr(lt_errmsg(), "bad.gguf") != NULL, "message names the file: %s", lt_errmsg()); \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_malformed(void) {
    buf b = {0};
    breakage ok = {0};
    build(&b, &ok);
    lt_gguf *g = NULL;
    CHECK_OK(open_buf(&b, &g));
    if (g) {
        CHECK(lt_gguf_n_kv(g) == 5 && lt_gguf_n_tensors(g) == 2, "valid small file");
        const lt_tensor_view *t1 = lt_gguf_find_tensor(g, "t1");
        CHECK(t1 && t1->ndim == 2 && t1->shape[0] == 2 && t1->shape[1] == 32 && t1->nbytes == 68 &&
                  (const uint8_t *)t1->data + 68 == b.p + b.n,
              "t1 view");
        lt_gguf_close(g);
    }
    /* every proper prefix fails cleanly */
    size_t full = b.n;
    int all_fail = 1;
    for (size_t len = 0; len < full; len++) {
        g = NULL;
        lt_status st = lt_gguf_open_mem(b.p, len, "prefix.gguf", &g);
        if (st == LT_OK || g != NULL || !strstr(lt_errmsg(), "prefix.gguf")) {
            all_fail = 0;
            CHECK(0, "prefix of %zu/%zu bytes: %s", len, full, lt_errmsg());
            lt_gguf_close(g);
            break;
        }
    }
    CHECK(all_fail, "all %zu prefixes rejected", full);

    EXPECT_BAD(LT_ERR_FORMAT, "magic", .magic = "GGUX");
    EXPECT_BAD(LT_ERR_UNSUPPORTED, "version 1", .version = 1);
    EXPECT_BAD(LT_ERR_FORMAT, "version 99", .version = 99);
    EXPECT_BAD(LT_ERR_UNSUPPORTED, "big-endian", .version = 0x03000000);
    EXPECT_BAD(LT_ERR_FORMAT, "n_kv", .n_kv = UINT64_MAX);
    EXPECT_BAD(LT_ERR_FORMAT, "n_kv", .n_kv = (uint64_t)1 << 40);
    EXPECT_BAD(LT_ERR_FORMAT, "n_tensors", .n_tensors = UINT64_MAX);
    EXPECT_BAD(LT_ERR_FORMAT, "n_tensors", .n_tensors = 1000);
    EXPECT_BAD(LT_ERR_FORMAT, "general.architecture", .str_len = UINT64_MAX);
    EXPECT_BAD(LT_ERR_FORMAT, "general.architecture", .str_len = 1u << 20);
    EXPECT_BAD(LT_ERR_FORMAT, "'a.arr'", .arr_len = UINT64_MAX);
    EXPECT_BAD(LT_ERR_FORMAT, "'a.arr'", .arr_len = (uint64_t)1 << 61);
    EXPECT_BAD(LT_ERR_FORMAT, "'a.arr'", .arr_len = 100000);
    EXPECT_BAD(LT_ERR_FORMAT, "unknown value type 13", .kv_type = 14);
    EXPECT_BAD(LT_ERR_FORMAT, "unknown value type", .kv_type = 0x80000000u);
    EXPECT_BAD(LT_ERR_UNSUPPORTED, "arrays of arrays", .nested = 1);
    EXPECT_BAD(LT_ERR_FORMAT, "unknown ggml type 77", .ggml_type = 78);
    EXPECT_BAD(LT_ERR_UNSUPPORTED, "Q8_1", .ggml_type = 10);
    EXPECT_BAD(LT_ERR_UNSUPPORTED, "IQ2_XXS", .ggml_type = 17);
    EXPECT_BAD(LT_ERR_FORMAT, "n_dims 0", .n_dims = 1);
    EXPECT_BAD(LT_ERR_FORMAT, "n_dims 5", .n_dims = 6);
    EXPECT_BAD(LT_ERR_FORMAT, "ne[0] = 0", .ne_mode = 1);
    EXPECT_BAD(LT_ERR_FORMAT, "overflows", .ne_mode = 2);
    EXPECT_BAD(LT_ERR_FORMAT, "block size 32", .ne_mode = 3);
    EXPECT_BAD(LT_ERR_FORMAT, "overflows", .ne_mode = 4);
    EXPECT_BAD(LT_ERR_FORMAT, "ne[0]", .ne_mode = 5);
    EXPECT_BAD(LT_ERR_FORMAT, "not a multiple of the alignment", .t1_off = 1 + 36);
    EXPECT_BAD(LT_ERR_FORMAT, "overlap", .t1_off = 1 + 0);
    EXPECT_BAD(LT_ERR_FORMAT, "beyond the end", .t1_off = 1 + 64);
    EXPECT_BAD(LT_ERR_FORMAT, "beyond the end", .t1_off = 1 + (UINT64_MAX - 31));
    EXPECT_BAD(LT_ERR_FORMAT, "power of two", .alignment = 1, .align_val = 0);
    EXPECT_BAD(LT_ERR_FORMAT, "power of two", .alignment = 1, .align_val = 3);
    EXPECT_BAD(LT_ERR_FORMAT, "expected u32", .alignment = 2, .align_val = 64);
    EXPECT_BAD(LT_ERR_FORMAT, "duplicate key 'general.architecture'", .dup_key = 1);
    EXPECT_BAD(LT_ERR_FORMAT, "duplicate tensor name 't0'", .dup_tensor = 1);
    EXPECT_BAD(LT_ERR_FORMAT, "expected 0 or 1", .bad_bool = 1);
    /* a valid non-default alignment: t1 moves to offset 64 */
    {
        breakage k = {.alignment = 1, .align_val = 64};
        build(&b, &k);
        CHECK_OK(open_buf(&b, &g));
        CHECK(g && lt_gguf_alignment(g) == 64 && lt_gguf_tensor_offset(g, 1) % 64 == 0,
              "alignment 64");
        lt_gguf_close(g);
    }
    /* empty and tiny inputs */
    CHECK_ERR(lt_gguf_open_mem(NULL, 0, "null.gguf", &g), LT_ERR_FORMAT, "null.gguf");

    /* random garbage and random corruptions of the valid file: never crash; when accepted,
     * every tensor lies inside the buffer */
    build(&b, &ok);
    uint8_t *mut = malloc(b.n);
    int accepted = 0;
    for (int it = 0; it < 3000; it++) {
        size_t len = b.n;
        memcpy(mut, b.p, b.n);
        if (it < 300) { /* pure garbage behind a valid magic and version (sometimes) */
            len = rnd() % b.n;
            for (size_t i = 0; i < len; i++)
                mut[i] = (uint8_t)rnd();
            if (it % 2 && len >= 8) memcpy(mut, "GGUF\3\0\0\0", 8);
        } else {
            int flips = 1 + (int)(rnd() % 4);
            for (int f = 0; f < flips; f++) {
                size_t at = rnd() % b.n;
                mut[at] = rnd() % 3 == 0 ? 0xff : (uint8_t)rnd();
            }
        }
        g = NULL;
        if (lt_gguf_open_mem(mut, len, "fuzz.gguf", &g) == LT_OK) {
            accepted++;
            for (size_t i = 0; i < lt_gguf_n_tensors(g); i++) {
                const lt_tensor_view *t = lt_gguf_tensor(g, i);
                const uint8_t *d = t->data;
                CHECK(d >= mut && d + t->nbytes <= mut + len, "fuzz: tensor inside buffer");
            }
            lt_gguf_close(g);
        } else {
            CHECK(g == NULL && lt_errmsg()[0], "fuzz: error has a message");
        }
    }
    CHECK(accepted < 3000, "fuzz: some inputs rejected (%d accepted)", accepted);
    free(mut);
    free(b.p);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--dump") == 0) return cmd_dump(argv[2]);
    if (argc == 4 && strcmp(argv[1], "--write") == 0) return cmd_write(argv[2], argv[3]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_gguf [--dump FILE | --write SPEC.json OUT.gguf]\n");
        return 2;
    }
    const char *dir = lt_tmpdir();
    test_stories();
    test_vocab_files();
    test_roundtrip(dir);
    test_malformed();
    LT_TEST_END();
}
