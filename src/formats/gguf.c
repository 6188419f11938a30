/* gguf.c - GGUF v2/v3 reader (memory-mapped, fully validated) and streaming writer.
 *
 * File layout (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x { u64 key_len, key bytes, u32 type, value },
 *   n_tensors x { u64 name_len, name, u32 n_dims, n_dims x i64 ne, u32 ggml_type, u64 offset },
 *   padding to `alignment` (general.alignment, default 32), then the data section; each
 *   tensor's offset is relative to the data section and a multiple of the alignment.
 *
 * Invariants after lt_gguf_open returns LT_OK: every kv and tensor lies inside the file,
 * keys and tensor names are unique, non-empty and NUL-free, every tensor has 1..4 dims,
 * all ne > 0, numel and byte size do not overflow, ne[0] is a multiple of the block size,
 * offsets are aligned and tensors do not overlap. Allocations are bounded by the file size
 * (counts are checked against the bytes left before anything is allocated from them).
 * Pointers handed out point into the map and are NOT necessarily aligned (kv arrays).
 * The host is assumed little-endian (x86-64, aarch64); numeric array data is returned raw. */
#include "loratune/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/io.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c hands out raw little-endian array data: big-endian hosts are not supported"
#endif

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_N_TYPES 13

/* ---- ggml type table ------------------------------------------------------------------ */
/* ggml type ids as in gguf-py's GGMLQuantizationType (ggml.h enum ggml_type). */
static const struct {
    uint32_t ggml;
    int lt; /* lt_dtype, or -1 when known to ggml but not supported here */
    const char *name;
} k_ggml_types[] = {
    {0, LT_DTYPE_F32, "F32"},    {1, LT_DTYPE_F16, "F16"},
    {2, LT_DTYPE_Q4_0, "Q4_0"},  {3, LT_DTYPE_Q4_1, "Q4_1"},
    {6, LT_DTYPE_Q5_0, "Q5_0"},  {7, LT_DTYPE_Q5_1, "Q5_1"},
    {8, LT_DTYPE_Q8_0, "Q8_0"},  {9, -1, "Q8_1"},
    {10, LT_DTYPE_Q2_K, "Q2_K"}, {11, LT_DTYPE_Q3_K, "Q3_K"},
    {12, LT_DTYPE_Q4_K, "Q4_K"}, {13, LT_DTYPE_Q5_K, "Q5_K"},
    {14, LT_DTYPE_Q6_K, "Q6_K"}, {15, LT_DTYPE_Q8_K, "Q8_K"},
    {16, -1, "IQ2_XXS"},         {17, -1, "IQ2_XS"},
    {18, -1, "IQ3_XXS"},         {19, -1, "IQ1_S"},
    {20, -1, "IQ4_NL"},          {21, -1, "IQ3_S"},
    {22, -1, "IQ2_S"},           {23, -1, "IQ4_XS"},
    {24, LT_DTYPE_I8, "I8"},     {25, LT_DTYPE_I16, "I16"},
    {26, LT_DTYPE_I32, "I32"},   {27, LT_DTYPE_I64, "I64"},
    {28, LT_DTYPE_F64, "F64"},   {29, -1, "IQ1_M"},
    {30, LT_DTYPE_BF16, "BF16"}, {34, -1, "TQ1_0"},
    {35, -1, "TQ2_0"},           {39, -1, "MXFP4"},
};
#define N_GGML_TYPES (sizeof k_ggml_types / sizeof k_ggml_types[0])

int lt_gguf_dtype_from_ggml(uint32_t ggml_type, lt_dtype *out) {
    for (size_t i = 0; i < N_GGML_TYPES; i++) {
        if (k_ggml_types[i].ggml == ggml_type && k_ggml_types[i].lt >= 0) {
            *out = (lt_dtype)k_ggml_types[i].lt;
            return 0;
        }
    }
    return -1;
}

int lt_gguf_dtype_to_ggml(lt_dtype t, uint32_t *out) {
    for (size_t i = 0; i < N_GGML_TYPES; i++) {
        if (k_ggml_types[i].lt >= 0 && (lt_dtype)k_ggml_types[i].lt == t) {
            *out = k_ggml_types[i].ggml;
            return 0;
        }
    }
    return -1;
}

const char *lt_gguf_ggml_type_name(uint32_t ggml_type) {
    for (size_t i = 0; i < N_GGML_TYPES; i++)
        if (k_ggml_types[i].ggml == ggml_type) return k_ggml_types[i].name;
    return NULL;
}

static const char *const k_type_names[GGUF_N_TYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *lt_gguf_type_name(lt_gguf_type t) {
    return (unsigned)t < GGUF_N_TYPES ? k_type_names[t] : "?";
}

/* Bytes of a fixed-size value type; 0 for string/array/unknown. */
static size_t type_size(uint32_t t) {
    switch (t) {
    case LT_GGUF_UINT8:
    case LT_GGUF_INT8:
    case LT_GGUF_BOOL:
        return 1;
    case LT_GGUF_UINT16:
    case LT_GGUF_INT16:
        return 2;
    case LT_GGUF_UINT32:
    case LT_GGUF_INT32:
    case LT_GGUF_FLOAT32:
        return 4;
    case LT_GGUF_UINT64:
    case LT_GGUF_INT64:
    case LT_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static uint16_t le16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) {
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

/* ---- reader --------------------------------------------------------------------------- */
typedef struct {
    char *key; /* NUL-terminated copy */
    lt_gguf_type type;
    lt_gguf_type elem_type; /* arrays only */
    uint64_t n;             /* array element count; string byte length for STRING */
    const uint8_t *data;    /* scalar value, string bytes or first array element */
    uint64_t *str_offs;     /* string arrays: offset of element i's u64 length from data */
} gguf_kv;

struct lt_gguf {
    char *path;
    lt_mapped_file map; /* zeroed when opened from memory */
    const uint8_t *base;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    size_t n_kv;
    gguf_kv *kv;
    size_t *kv_sorted; /* indices of kv sorted by key, for bsearch */
    size_t n_tensors;
    lt_tensor_view *tensors;
    uint64_t *offsets;     /* relative to data_start */
    size_t *tensor_sorted; /* indices sorted by name */
    size_t data_start;
};

typedef struct {
    const uint8_t *p;
    size_t pos, size;
    const char *path;
} cursor;

static size_t left(const cursor *c) {
    return c->size - c->pos;
}

static lt_status trunc_err(const cursor *c, const char *what, size_t need) {
    return lt_error(LT_ERR_FORMAT,
                    "%s: truncated at offset %zu: %s needs %zu bytes, only %zu left in the file",
                    c->path, c->pos, what, need, left(c));
}

static lt_status rd_u32(cursor *c, const char *what, uint32_t *v) {
    if (left(c) < 4) return trunc_err(c, what, 4);
    *v = le32(c->p + c->pos);
    c->pos += 4;
    return LT_OK;
}
static lt_status rd_u64(cursor *c, const char *what, uint64_t *v) {
    if (left(c) < 8) return trunc_err(c, what, 8);
    *v = le64(c->p + c->pos);
    c->pos += 8;
    return LT_OK;
}

/* A u64-length-prefixed string inside the file; *s points into the map. */
static lt_status rd_str(cursor *c, const char *what, const uint8_t **s, uint64_t *len) {
    size_t at = c->pos;
    lt_status st = rd_u64(c, what, len);
    if (st) return st;
    if (*len > left(c))
        return lt_error(LT_ERR_FORMAT,
                        "%s: offset %zu: %s length %" PRIu64
                        " exceeds the %zu bytes left in the file",
                        c->path, at, what, *len, left(c));
    *s = c->p + c->pos;
    c->pos += (size_t)*len;
    return LT_OK;
}

/* A key or tensor name: non-empty, no NUL byte; returns a malloc'd NUL-terminated copy. */
static lt_status rd_name(cursor *c, const char *what, char **out) {
    const uint8_t *s = NULL;
    uint64_t len = 0;
    size_t at = c->pos;
    lt_status st = rd_str(c, what, &s, &len);
    if (st) return st;
    if (len == 0) return lt_error(LT_ERR_FORMAT, "%s: offset %zu: empty %s", c->path, at, what);
    if (memchr(s, 0, (size_t)len))
        return lt_error(LT_ERR_FORMAT, "%s: offset %zu: %s contains a NUL byte", c->path, at, what);
    char *k = lt_malloc((size_t)len + 1);
    if (!k) return lt_error(LT_ERR_NOMEM, "%s: out of memory reading %s", c->path, what);
    memcpy(k, s, (size_t)len);
    k[len] = 0;
    *out = k;
    return LT_OK;
}

static lt_status check_bools(cursor *c, const uint8_t *p, uint64_t n, const char *key) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return lt_error(LT_ERR_FORMAT,
                            "%s: kv '%s': bool value %u at element %" PRIu64 ", expected 0 or 1",
                            c->path, key, p[i], i);
    return LT_OK;
}

static lt_status parse_kv(cursor *c, size_t idx, gguf_kv *kv) {
    char what[64];
    snprintf(what, sizeof what, "kv #%zu key", idx);
    lt_status st = rd_name(c, what, &kv->key);
    if (st) return st;
    const char *key = kv->key;
    char w1[300], w2[300];
    snprintf(w1, sizeof w1, "kv '%.200s' value", key);
    uint32_t t = 0;
    if ((st = rd_u32(c, w1, &t))) return st;
    if (t >= GGUF_N_TYPES)
        return lt_error(LT_ERR_FORMAT, "%s: kv '%s': unknown value type %u (expected 0..12)",
                        c->path, key, t);
    kv->type = (lt_gguf_type)t;
    kv->n = 1;
    if (t == LT_GGUF_STRING) return rd_str(c, w1, &kv->data, &kv->n);
    if (t != LT_GGUF_ARRAY) {
        size_t sz = type_size(t);
        if (left(c) < sz) return trunc_err(c, w1, sz);
        kv->data = c->p + c->pos;
        c->pos += sz;
        if (t == LT_GGUF_BOOL) return check_bools(c, kv->data, 1, key);
        return LT_OK;
    }
    uint32_t et = 0;
    uint64_t n = 0;
    if ((st = rd_u32(c, w1, &et))) return st;
    if (et == LT_GGUF_ARRAY)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: kv '%s': arrays of arrays are not supported",
                        c->path, key);
    if (et >= GGUF_N_TYPES)
        return lt_error(LT_ERR_FORMAT,
                        "%s: kv '%s': unknown array element type %u (expected 0..8 or 10..12)",
                        c->path, key, et);
    size_t at = c->pos;
    if ((st = rd_u64(c, w1, &n))) return st;
    kv->elem_type = (lt_gguf_type)et;
    kv->n = n;
    kv->data = c->p + c->pos;
    if (et != LT_GGUF_STRING) {
        size_t sz = type_size(et);
        if (n > left(c) / sz)
            return lt_error(LT_ERR_FORMAT,
                            "%s: offset %zu: kv '%s': array of %" PRIu64
                            " %s needs more than the %zu bytes left in the file",
                            c->path, at, key, n, k_type_names[et], left(c));
        c->pos += (size_t)n * sz;
        if (et == LT_GGUF_BOOL) return check_bools(c, kv->data, n, key);
        return LT_OK;
    }
    /* each string takes at least its 8-byte length: bounds the offset table by the file */
    if (n > left(c) / 8)
        return lt_error(LT_ERR_FORMAT,
                        "%s: offset %zu: kv '%s': array of %" PRIu64
                        " strings needs more than the %zu bytes left in the file",
                        c->path, at, key, n, left(c));
    kv->str_offs = lt_malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (!kv->str_offs) return lt_error(LT_ERR_NOMEM, "%s: kv '%s': out of memory", c->path, key);
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *s = NULL;
        uint64_t len = 0;
        kv->str_offs[i] = (uint64_t)(c->p + c->pos - kv->data);
        snprintf(w2, sizeof w2, "kv '%.200s' string #%" PRIu64, key, i);
        if ((st = rd_str(c, w2, &s, &len))) return st;
    }
    return LT_OK;
}

/* C11 qsort has no context argument: index arrays are sorted with a small merge sort that
 * takes one (O(n log n), so duplicate checks stay fast on hostile counts). */
typedef int (*idx_cmp)(const void *ctx, size_t a, size_t b);

static void sort_idx(size_t *v, size_t *tmp, size_t n, idx_cmp cmp, const void *ctx) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_idx(v, tmp, h, cmp, ctx);
    sort_idx(v + h, tmp, n - h, cmp, ctx);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = cmp(ctx, v[j], v[i]) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int cmp_kv(const void *ctx, size_t a, size_t b) {
    const lt_gguf *g = ctx;
    return strcmp(g->kv[a].key, g->kv[b].key);
}
static int cmp_tname(const void *ctx, size_t a, size_t b) {
    const lt_gguf *g = ctx;
    return strcmp(g->tensors[a].name, g->tensors[b].name);
}
static int cmp_toff(const void *ctx, size_t a, size_t b) {
    const lt_gguf *g = ctx;
    return g->offsets[a] < g->offsets[b] ? -1 : g->offsets[a] > g->offsets[b];
}

static size_t *sorted_index(const lt_gguf *g, size_t n, idx_cmp cmp) {
    size_t *v = lt_malloc((n ? n : 1) * sizeof *v), *tmp = lt_malloc((n ? n : 1) * sizeof *tmp);
    if (!v || !tmp) {
        free(v);
        free(tmp);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = i;
    sort_idx(v, tmp, n, cmp, g);
    free(tmp);
    return v;
}

static lt_status parse_tensor(lt_gguf *g, cursor *c, size_t idx) {
    lt_tensor_view *t = &g->tensors[idx];
    char what[64];
    snprintf(what, sizeof what, "tensor #%zu name", idx);
    char *name = NULL;
    lt_status st = rd_name(c, what, &name);
    if (st) return st;
    t->name = name;
    char w1[300];
    snprintf(w1, sizeof w1, "tensor '%.200s' info", name);
    uint32_t nd = 0;
    if ((st = rd_u32(c, w1, &nd))) return st;
    if (nd < 1 || nd > LT_MAX_DIMS)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': n_dims %u, expected 1..%d", c->path, name,
                        nd, LT_MAX_DIMS);
    int64_t ne[LT_MAX_DIMS];
    int64_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v = 0;
        if ((st = rd_u64(c, w1, &v))) return st;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return lt_error(LT_ERR_FORMAT,
                            "%s: tensor '%s': ne[%u] = %" PRIu64 ", expected 1..2^63-1", c->path,
                            name, d, v);
        ne[d] = (int64_t)v;
        if (numel > INT64_MAX / ne[d])
            return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': element count overflows int64",
                            c->path, name);
        numel *= ne[d];
    }
    uint32_t gt = 0;
    if ((st = rd_u32(c, w1, &gt))) return st;
    lt_dtype dt;
    if (lt_gguf_dtype_from_ggml(gt, &dt) != 0) {
        const char *tn = lt_gguf_ggml_type_name(gt);
        if (tn)
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: tensor '%s': ggml type %u (%s) is not supported", c->path, name,
                            gt, tn);
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': unknown ggml type %u", c->path, name, gt);
    }
    int64_t be = lt_dtype_block_elems(dt);
    if (ne[0] % be != 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': ne[0] = %" PRId64
                        " is not a multiple of the %s block size %" PRId64,
                        c->path, name, ne[0], lt_dtype_name(dt), be);
    int64_t nb = lt_dtype_nbytes(dt, numel);
    if (nb < 0 || (uint64_t)nb > SIZE_MAX)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': byte size overflows", c->path, name);
    uint64_t off = 0;
    if ((st = rd_u64(c, w1, &off))) return st;
    if (off % g->alignment != 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %u",
                        c->path, name, off, g->alignment);
    t->dtype = dt;
    t->ndim = (int)nd;
    for (uint32_t d = 0; d < nd; d++)
        t->shape[d] = ne[nd - 1 - d]; /* outermost first */
    t->nbytes = (size_t)nb;
    g->offsets[idx] = off;
    return LT_OK;
}

/* Doubles *cap (at most to max) and reallocs *p; 0 on allocation failure. */
static int grow(void **p, size_t *cap, size_t elem, size_t max) {
    size_t nc = *cap ? *cap * 2 : 16;
    if (nc > max) nc = max;
    void *np = lt_realloc(*p, nc * elem);
    if (!np) return 0;
    *p = np;
    *cap = nc;
    return 1;
}

/* Minimal encoded sizes, used to bound counts before allocating from them. */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)             /* key len, 1-byte key, type, u8 value */
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8) /* name len, name, n_dims, ne, type, offset */
#define MAX_KV 65536

static lt_status parse(lt_gguf *g) {
    cursor c = {g->base, 0, g->size, g->path};
    lt_status st;
    if (g->size < 4 || memcmp(g->base, GGUF_MAGIC, 4) != 0)
        return lt_error(LT_ERR_FORMAT, "%s: not a GGUF file (expected magic \"GGUF\" at offset 0)",
                        g->path);
    c.pos = 4;
    if ((st = rd_u32(&c, "version", &g->version))) return st;
    if (g->version == 1)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: GGUF version 1 is not supported (expected version 2 or 3)", g->path);
    if ((g->version & 0xffff) == 0 && g->version != 0)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "%s: big-endian GGUF (version field 0x%08x) is not supported", g->path,
                        g->version);
    if (g->version != 2 && g->version != 3)
        return lt_error(LT_ERR_FORMAT, "%s: unknown GGUF version %u (expected 2 or 3)", g->path,
                        g->version);
    uint64_t n_tensors = 0, n_kv = 0;
    if ((st = rd_u64(&c, "n_tensors", &n_tensors))) return st;
    if ((st = rd_u64(&c, "n_kv", &n_kv))) return st;
    /* Bounded memory per input byte: an entry costs ~100 bytes here (its record, key copy,
     * sort index) against 14 in the file at least, so the count is capped too: metadata is
     * tens to hundreds of keys (a vocabulary is one array key). */
    if (n_kv > MAX_KV)
        return lt_error(LT_ERR_FORMAT,
                        "%s: header: n_kv %" PRIu64 " is more than the cap of %d metadata keys "
                        "(a model has tens to hundreds; a vocabulary is one array key)",
                        g->path, n_kv, MAX_KV);
    if (n_kv > left(&c) / MIN_KV_BYTES)
        return lt_error(LT_ERR_FORMAT,
                        "%s: header: n_kv %" PRIu64 " is more than the %zu bytes left can hold",
                        g->path, n_kv, left(&c));
    if (n_tensors > left(&c) / MIN_TENSOR_BYTES)
        return lt_error(LT_ERR_FORMAT,
                        "%s: header: n_tensors %" PRIu64
                        " is more than the %zu bytes left can hold",
                        g->path, n_tensors, left(&c));

    /* arrays grow with the entries actually parsed, so a count that the file does not back
     * up costs no more memory than the entries that are really there */
    size_t cap = 0;
    for (size_t i = 0; i < (size_t)n_kv; i++) {
        if (i == cap && !grow((void **)&g->kv, &cap, sizeof *g->kv, (size_t)n_kv))
            return lt_error(LT_ERR_NOMEM, "%s: out of memory", g->path);
        memset(&g->kv[i], 0, sizeof g->kv[i]);
        g->n_kv = i + 1; /* so close() frees the partial entry */
        if ((st = parse_kv(&c, i, &g->kv[i]))) return st;
    }
    g->n_kv = (size_t)n_kv;
    if (!(g->kv_sorted = sorted_index(g, g->n_kv, cmp_kv)))
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", g->path);
    for (size_t i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv[g->kv_sorted[i - 1]].key, g->kv[g->kv_sorted[i]].key) == 0)
            return lt_error(LT_ERR_FORMAT, "%s: duplicate key '%s'", g->path,
                            g->kv[g->kv_sorted[i]].key);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = lt_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        const gguf_kv *kv = &g->kv[ai];
        if (kv->type != LT_GGUF_UINT32)
            return lt_error(LT_ERR_FORMAT, "%s: kv 'general.alignment' has type %s, expected u32",
                            g->path, k_type_names[kv->type]);
        uint32_t a = le32(kv->data);
        if (a == 0 || (a & (a - 1)) != 0)
            return lt_error(LT_ERR_FORMAT,
                            "%s: kv 'general.alignment' = %u, expected a non-zero power of two",
                            g->path, a);
        g->alignment = a;
    }

    if (n_tensors > left(&c) / MIN_TENSOR_BYTES)
        return lt_error(LT_ERR_FORMAT,
                        "%s: n_tensors %" PRIu64 " is more than the %zu bytes left can hold",
                        g->path, n_tensors, left(&c));
    size_t nt = (size_t)n_tensors;
    size_t cap_t = 0, cap_o = 0;
    for (size_t i = 0; i < nt; i++) {
        if (i == cap_t && (!grow((void **)&g->tensors, &cap_t, sizeof *g->tensors, nt) ||
                           !grow((void **)&g->offsets, &cap_o, sizeof *g->offsets, nt)))
            return lt_error(LT_ERR_NOMEM, "%s: out of memory", g->path);
        memset(&g->tensors[i], 0, sizeof g->tensors[i]);
        g->n_tensors = i + 1;
        if ((st = parse_tensor(g, &c, i))) return st;
    }
    g->n_tensors = nt;
    if (!(g->tensor_sorted = sorted_index(g, nt, cmp_tname)))
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", g->path);
    for (size_t i = 1; i < nt; i++)
        if (strcmp(g->tensors[g->tensor_sorted[i - 1]].name,
                   g->tensors[g->tensor_sorted[i]].name) == 0)
            return lt_error(LT_ERR_FORMAT, "%s: duplicate tensor name '%s'", g->path,
                            g->tensors[g->tensor_sorted[i]].name);

    /* data section: starts at the next multiple of the alignment */
    size_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_start = c.pos + pad;
    if (nt == 0) return LT_OK;
    if (pad > left(&c))
        return lt_error(
            LT_ERR_FORMAT,
            "%s: truncated: data section should start at offset %zu, file has %zu bytes", g->path,
            c.pos + pad, g->size);
    size_t data_size = g->size - g->data_start;
    for (size_t i = 0; i < nt; i++) {
        lt_tensor_view *t = &g->tensors[i];
        if (g->offsets[i] > data_size || t->nbytes > data_size - g->offsets[i])
            return lt_error(LT_ERR_FORMAT,
                            "%s: tensor '%s': data [%" PRIu64 ", +%zu) lies beyond the end of the "
                            "data section (%zu bytes)",
                            g->path, t->name, g->offsets[i], t->nbytes, data_size);
        t->data = g->base + g->data_start + g->offsets[i];
    }
    size_t *by_off = sorted_index(g, nt, cmp_toff);
    if (!by_off) return lt_error(LT_ERR_NOMEM, "%s: out of memory", g->path);
    for (size_t i = 1; i < nt; i++) {
        size_t a = by_off[i - 1], b = by_off[i];
        if (g->offsets[a] + g->tensors[a].nbytes > g->offsets[b]) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section",
                          g->path, g->tensors[a].name, g->tensors[b].name);
            free(by_off);
            return st;
        }
    }
    free(by_off);
    return LT_OK;
}

static lt_status open_common(lt_gguf *g, lt_gguf **out) {
    lt_status st = parse(g);
    if (st) {
        lt_gguf_close(g);
        return st;
    }
    *out = g;
    return LT_OK;
}

lt_status lt_gguf_open(const char *path, lt_gguf **out) {
    *out = NULL;
    lt_gguf *g = lt_calloc(1, sizeof *g);
    if (!g || !(g->path = lt_strdup(path))) {
        free(g);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    }
    lt_status st = lt_file_map(path, &g->map);
    if (st) {
        lt_gguf_close(g);
        return st;
    }
    g->base = g->map.data;
    g->size = g->map.size;
    return open_common(g, out);
}

lt_status lt_gguf_open_mem(const void *data, size_t size, const char *name, lt_gguf **out) {
    *out = NULL;
    lt_gguf *g = lt_calloc(1, sizeof *g);
    if (!g || !(g->path = lt_strdup(name ? name : "<memory>"))) {
        free(g);
        return lt_error(LT_ERR_NOMEM, "%s: out of memory", name ? name : "<memory>");
    }
    g->base = data;
    g->size = data ? size : 0;
    return open_common(g, out);
}

void lt_gguf_close(lt_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str_offs);
    }
    free(g->kv);
    free(g->kv_sorted);
    for (size_t i = 0; i < g->n_tensors; i++)
        free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->offsets);
    free(g->tensor_sorted);
    lt_file_unmap(&g->map);
    free(g->path);
    free(g);
}

const char *lt_gguf_path(const lt_gguf *g) {
    return g->path;
}
uint32_t lt_gguf_version(const lt_gguf *g) {
    return g->version;
}
uint32_t lt_gguf_alignment(const lt_gguf *g) {
    return g->alignment;
}

size_t lt_gguf_n_kv(const lt_gguf *g) {
    return g->n_kv;
}
const char *lt_gguf_kv_key(const lt_gguf *g, size_t i) {
    return i < g->n_kv ? g->kv[i].key : NULL;
}
lt_gguf_type lt_gguf_kv_type(const lt_gguf *g, size_t i) {
    return i < g->n_kv ? g->kv[i].type : (lt_gguf_type)-1;
}

int64_t lt_gguf_find_key(const lt_gguf *g, const char *key) {
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[g->kv_sorted[mid]].key, key);
        if (c == 0) return (int64_t)g->kv_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static lt_status find_kv(const lt_gguf *g, const char *key, const gguf_kv **kv) {
    int64_t i = lt_gguf_find_key(g, key);
    if (i < 0) return lt_error(LT_ERR_NOTFOUND, "%s: key '%s' not found", g->path, key);
    *kv = &g->kv[i];
    return LT_OK;
}

static lt_status wrong_type(const lt_gguf *g, const gguf_kv *kv, const char *expected) {
    return lt_error(LT_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", g->path, kv->key,
                    k_type_names[kv->type], expected);
}

/* Integer value as sign + magnitude; -1 if not an integer type. */
static int kv_int(const gguf_kv *kv, int *neg, uint64_t *mag) {
    const uint8_t *p = kv->data;
    int64_t s;
    *neg = 0;
    switch (kv->type) {
    case LT_GGUF_UINT8:
        *mag = p[0];
        return 0;
    case LT_GGUF_UINT16:
        *mag = le16(p);
        return 0;
    case LT_GGUF_UINT32:
        *mag = le32(p);
        return 0;
    case LT_GGUF_UINT64:
        *mag = le64(p);
        return 0;
    case LT_GGUF_INT8:
        s = (int8_t)p[0];
        break;
    case LT_GGUF_INT16:
        s = (int16_t)le16(p);
        break;
    case LT_GGUF_INT32:
        s = (int32_t)le32(p);
        break;
    case LT_GGUF_INT64:
        s = (int64_t)le64(p);
        break;
    default:
        return -1;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return 0;
}

static lt_status get_int(const lt_gguf *g, const char *key, int *neg, uint64_t *mag) {
    const gguf_kv *kv = NULL;
    lt_status st = find_kv(g, key, &kv);
    if (st) return st;
    if (kv_int(kv, neg, mag) != 0) return wrong_type(g, kv, "an integer");
    return LT_OK;
}

lt_status lt_gguf_get_u32(const lt_gguf *g, const char *key, uint32_t *out) {
    int neg;
    uint64_t m;
    lt_status st = get_int(g, key, &neg, &m);
    if (st) return st;
    if (neg || m > UINT32_MAX)
        return lt_error(LT_ERR_FORMAT, "%s: key '%s' = %s%" PRIu64 " does not fit in u32", g->path,
                        key, neg ? "-" : "", m);
    *out = (uint32_t)m;
    return LT_OK;
}

lt_status lt_gguf_get_u64(const lt_gguf *g, const char *key, uint64_t *out) {
    int neg;
    uint64_t m;
    lt_status st = get_int(g, key, &neg, &m);
    if (st) return st;
    if (neg)
        return lt_error(LT_ERR_FORMAT, "%s: key '%s' = -%" PRIu64 " does not fit in u64", g->path,
                        key, m);
    *out = m;
    return LT_OK;
}

lt_status lt_gguf_get_i64(const lt_gguf *g, const char *key, int64_t *out) {
    int neg;
    uint64_t m;
    lt_status st = get_int(g, key, &neg, &m);
    if (st) return st;
    if (!neg && m > (uint64_t)INT64_MAX)
        return lt_error(LT_ERR_FORMAT, "%s: key '%s' = %" PRIu64 " does not fit in i64", g->path,
                        key, m);
    *out = neg ? (m == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
    return LT_OK;
}

lt_status lt_gguf_get_f64(const lt_gguf *g, const char *key, double *out) {
    const gguf_kv *kv = NULL;
    lt_status st = find_kv(g, key, &kv);
    if (st) return st;
    if (kv->type == LT_GGUF_FLOAT32) {
        uint32_t u = le32(kv->data);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
    } else if (kv->type == LT_GGUF_FLOAT64) {
        uint64_t u = le64(kv->data);
        memcpy(out, &u, 8);
    } else {
        return wrong_type(g, kv, "f32 or f64");
    }
    return LT_OK;
}

lt_status lt_gguf_get_f32(const lt_gguf *g, const char *key, float *out) {
    double d;
    lt_status st = lt_gguf_get_f64(g, key, &d);
    if (st) return st;
    *out = (float)d;
    return LT_OK;
}

lt_status lt_gguf_get_bool(const lt_gguf *g, const char *key, int *out) {
    const gguf_kv *kv = NULL;
    lt_status st = find_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != LT_GGUF_BOOL) return wrong_type(g, kv, "bool");
    *out = kv->data[0] != 0;
    return LT_OK;
}

lt_status lt_gguf_get_str(const lt_gguf *g, const char *key, const char **s, size_t *len) {
    const gguf_kv *kv = NULL;
    lt_status st = find_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != LT_GGUF_STRING) return wrong_type(g, kv, "string");
    *s = (const char *)kv->data;
    *len = (size_t)kv->n;
    return LT_OK;
}

lt_status lt_gguf_get_arr(const lt_gguf *g, const char *key, lt_gguf_type *elem_type, uint64_t *n,
                          const void **data) {
    const gguf_kv *kv = NULL;
    lt_status st = find_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != LT_GGUF_ARRAY) return wrong_type(g, kv, "array");
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    if (data) *data = kv->elem_type == LT_GGUF_STRING ? NULL : kv->data;
    return LT_OK;
}

lt_status lt_gguf_get_arr_str(const lt_gguf *g, const char *key, uint64_t i, const char **s,
                              size_t *len) {
    const gguf_kv *kv = NULL;
    lt_status st = find_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != LT_GGUF_ARRAY || kv->elem_type != LT_GGUF_STRING)
        return lt_error(LT_ERR_FORMAT, "%s: key '%s' is not an array of strings", g->path, key);
    if (i >= kv->n)
        return lt_error(LT_ERR_ARG,
                        "%s: key '%s': index %" PRIu64 " out of range (%" PRIu64 " strings)",
                        g->path, key, i, kv->n);
    const uint8_t *p = kv->data + kv->str_offs[i];
    *len = (size_t)le64(p);
    *s = (const char *)p + 8;
    return LT_OK;
}

size_t lt_gguf_n_tensors(const lt_gguf *g) {
    return g->n_tensors;
}
const lt_tensor_view *lt_gguf_tensor(const lt_gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}
uint64_t lt_gguf_tensor_offset(const lt_gguf *g, size_t i) {
    return i < g->n_tensors ? g->data_start + g->offsets[i] : 0;
}

const lt_tensor_view *lt_gguf_find_tensor(const lt_gguf *g, const char *name) {
    size_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const lt_tensor_view *t = &g->tensors[g->tensor_sorted[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- writer --------------------------------------------------------------------------- */
typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val; /* serialized value as it appears after the type field */
    size_t val_len;
} wkv;

typedef struct {
    char *name;
    uint32_t ggml_type;
    int ndim;
    int64_t shape[LT_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wtensor;

struct lt_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
};

lt_status lt_gguf_writer_create(lt_gguf_writer **out) {
    *out = lt_calloc(1, sizeof **out);
    if (!*out) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return LT_OK;
}

void lt_gguf_writer_free(lt_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Appends a kv whose serialized value (after the type) is val[0..len): takes val. */
static lt_status add_kv(lt_gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
                        size_t len) {
    lt_status st = LT_OK;
    if (!key || !*key) {
        st = lt_error(LT_ERR_ARG, "gguf writer: empty key");
        goto fail;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            st = lt_error(LT_ERR_ARG, "gguf writer: duplicate key '%s'", key);
            goto fail;
        }
    if (strcmp(key, "general.alignment") == 0) {
        uint32_t a = type == LT_GGUF_UINT32 ? le32(val) : 0;
        if (type != LT_GGUF_UINT32 || a == 0 || (a & (a - 1)) != 0) {
            st = lt_error(LT_ERR_ARG,
                          "gguf writer: general.alignment must be a u32 non-zero power of two");
            goto fail;
        }
        w->alignment = a;
    }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *nk = lt_realloc(w->kv, nc * sizeof *nk);
        if (!nk) {
            st = lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
            goto fail;
        }
        w->kv = nk;
        w->cap_kv = nc;
    }
    char *k = lt_strdup(key);
    if (!k) {
        st = lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
        goto fail;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, len};
    return LT_OK;
fail:
    free(val);
    return st;
}

lt_status lt_gguf_writer_set_scalar(lt_gguf_writer *w, const char *key, lt_gguf_type type,
                                    const void *v) {
    size_t sz = type_size((uint32_t)type);
    if (sz == 0)
        return lt_error(LT_ERR_ARG, "gguf writer: key '%s': type %d is not a scalar type",
                        key ? key : "", (int)type);
    uint8_t *b = lt_malloc(sz);
    if (!b) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
    memcpy(b, v, sz);
    if (type == LT_GGUF_BOOL) b[0] = b[0] != 0;
    return add_kv(w, key, (uint32_t)type, b, sz);
}

lt_status lt_gguf_writer_set_u32(lt_gguf_writer *w, const char *key, uint32_t v) {
    return lt_gguf_writer_set_scalar(w, key, LT_GGUF_UINT32, &v);
}
lt_status lt_gguf_writer_set_i32(lt_gguf_writer *w, const char *key, int32_t v) {
    return lt_gguf_writer_set_scalar(w, key, LT_GGUF_INT32, &v);
}
lt_status lt_gguf_writer_set_u64(lt_gguf_writer *w, const char *key, uint64_t v) {
    return lt_gguf_writer_set_scalar(w, key, LT_GGUF_UINT64, &v);
}
lt_status lt_gguf_writer_set_f32(lt_gguf_writer *w, const char *key, float v) {
    return lt_gguf_writer_set_scalar(w, key, LT_GGUF_FLOAT32, &v);
}
lt_status lt_gguf_writer_set_bool(lt_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return lt_gguf_writer_set_scalar(w, key, LT_GGUF_BOOL, &b);
}

lt_status lt_gguf_writer_set_str(lt_gguf_writer *w, const char *key, const char *v) {
    size_t n = strlen(v);
    uint8_t *b = lt_malloc(8 + n);
    if (!b) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
    put64(b, n);
    memcpy(b + 8, v, n);
    return add_kv(w, key, LT_GGUF_STRING, b, 8 + n);
}

lt_status lt_gguf_writer_set_arr(lt_gguf_writer *w, const char *key, lt_gguf_type elem_type,
                                 const void *data, uint64_t n) {
    size_t sz = type_size((uint32_t)elem_type);
    if (sz == 0)
        return lt_error(LT_ERR_ARG,
                        "gguf writer: key '%s': array element type %d is not numeric (use "
                        "lt_gguf_writer_set_arr_str for strings)",
                        key ? key : "", (int)elem_type);
    if (n > (SIZE_MAX - 12) / sz) return lt_error(LT_ERR_ARG, "gguf writer: array too long");
    uint8_t *b = lt_malloc(12 + (size_t)n * sz);
    if (!b) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
    put32(b, (uint32_t)elem_type);
    put64(b + 4, n);
    if (n) memcpy(b + 12, data, (size_t)n * sz);
    if (elem_type == LT_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            b[12 + i] = b[12 + i] != 0;
    return add_kv(w, key, LT_GGUF_ARRAY, b, 12 + (size_t)n * sz);
}

lt_status lt_gguf_writer_set_arr_str(lt_gguf_writer *w, const char *key, const char *const *strs,
                                     uint64_t n) {
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++)
        total += 8 + strlen(strs[i]);
    uint8_t *b = lt_malloc(total);
    if (!b) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
    put32(b, LT_GGUF_STRING);
    put64(b + 4, n);
    size_t o = 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = strlen(strs[i]);
        put64(b + o, l);
        memcpy(b + o + 8, strs[i], l);
        o += 8 + l;
    }
    return add_kv(w, key, LT_GGUF_ARRAY, b, total);
}

lt_status lt_gguf_writer_add_tensor(lt_gguf_writer *w, const char *name, lt_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes) {
    if (!name || !*name) return lt_error(LT_ERR_ARG, "gguf writer: empty tensor name");
    if (!data && nbytes > 0)
        return lt_error(LT_ERR_ARG, "gguf writer: tensor '%s': data is NULL", name);
    uint32_t gt = 0;
    if (lt_gguf_dtype_to_ggml(dtype, &gt) != 0)
        return lt_error(LT_ERR_ARG, "gguf writer: tensor '%s': dtype %s has no ggml type", name,
                        lt_dtype_name(dtype));
    if (ndim < 1 || ndim > LT_MAX_DIMS)
        return lt_error(LT_ERR_ARG, "gguf writer: tensor '%s': ndim %d, expected 1..%d", name, ndim,
                        LT_MAX_DIMS);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0 || numel > INT64_MAX / shape[d])
            return lt_error(LT_ERR_ARG, "gguf writer: tensor '%s': bad shape[%d] = %" PRId64, name,
                            d, shape[d]);
        numel *= shape[d];
    }
    if (shape[ndim - 1] % lt_dtype_block_elems(dtype) != 0)
        return lt_error(LT_ERR_ARG,
                        "gguf writer: tensor '%s': innermost dim %" PRId64
                        " is not a multiple of the %s block size %" PRId64,
                        name, shape[ndim - 1], lt_dtype_name(dtype), lt_dtype_block_elems(dtype));
    int64_t nb = lt_dtype_nbytes(dtype, numel);
    if (nb < 0 || (uint64_t)nb != nbytes)
        return lt_error(LT_ERR_ARG, "gguf writer: tensor '%s': nbytes %zu, expected %" PRId64, name,
                        nbytes, nb);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return lt_error(LT_ERR_ARG, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *nt = lt_realloc(w->t, nc * sizeof *nt);
        if (!nt) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
        w->t = nt;
        w->cap_t = nc;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = lt_strdup(name))) return lt_error(LT_ERR_NOMEM, "gguf writer: out of memory");
    t->ggml_type = gt;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->data = data;
    t->nbytes = nbytes;
    w->n_t++;
    return LT_OK;
}

typedef struct {
    FILE *f;
    const char *path;
    uint64_t pos;
    lt_status st;
} wstream;

static void ws_put(wstream *s, const void *p, size_t n) {
    if (s->st || n == 0) return;
    if (lt_io_fwrite(p, 1, n, s->f) != n)
        s->st = lt_error(LT_ERR_IO, "%s: write failed: %s", s->path, strerror(errno));
    s->pos += n;
}
static void ws_u32(wstream *s, uint32_t v) {
    uint8_t b[4];
    put32(b, v);
    ws_put(s, b, 4);
}
static void ws_u64(wstream *s, uint64_t v) {
    uint8_t b[8];
    put64(b, v);
    ws_put(s, b, 8);
}
static void ws_pad(wstream *s, uint32_t align) {
    static const uint8_t zeros[64];
    size_t pad = (size_t)((align - s->pos % align) % align);
    while (pad > 0) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        ws_put(s, zeros, k);
        pad -= k;
    }
}

lt_status lt_gguf_writer_write(lt_gguf_writer *w, const char *path) {
    size_t pl = strlen(path);
    char *tmp = lt_malloc(pl + 32);
    if (!tmp) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    wstream s = {lt_io_fopen(tmp, "wb"), tmp, 0, LT_OK};
    if (!s.f) {
        lt_status st = lt_error(LT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    uint32_t al = w->alignment;
    ws_put(&s, GGUF_MAGIC, 4);
    ws_u32(&s, 3);
    ws_u64(&s, w->n_t);
    ws_u64(&s, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        size_t kl = strlen(w->kv[i].key);
        ws_u64(&s, kl);
        ws_put(&s, w->kv[i].key, kl);
        ws_u32(&s, w->kv[i].type);
        ws_put(&s, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        ws_u64(&s, nl);
        ws_put(&s, t->name, nl);
        ws_u32(&s, (uint32_t)t->ndim);
        for (int d = t->ndim - 1; d >= 0; d--)
            ws_u64(&s, (uint64_t)t->shape[d]); /* ne[] */
        ws_u32(&s, t->ggml_type);
        ws_u64(&s, off);
        off += t->nbytes + (al - t->nbytes % al) % al;
    }
    ws_pad(&s, al);
    for (size_t i = 0; i < w->n_t; i++) {
        ws_put(&s, w->t[i].data, w->t[i].nbytes);
        ws_pad(&s, al);
    }
    if (!s.st && lt_io_fflush(s.f) != 0)
        s.st = lt_error(LT_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (!s.st && lt_io_fsync(fileno(s.f)) != 0)
        s.st = lt_error(LT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (lt_io_fclose(s.f) != 0 && !s.st)
        s.st = lt_error(LT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!s.st && lt_io_rename(tmp, path) != 0)
        s.st = lt_error(LT_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    if (s.st) {
        unlink(tmp);
        free(tmp);
        return s.st;
    }
    free(tmp);
    lt_io_sync_parent(path); /* make the rename durable */
    return LT_OK;
}
