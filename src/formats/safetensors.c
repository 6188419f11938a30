/* safetensors.c - safetensors reader (single file or sharded with an index) and writer.
 *
 * File layout: u64 LE header length N, N bytes of JSON header (an object: "__metadata__"
 * -> {string: string}, and per tensor {"dtype", "shape", "data_offsets": [begin, end]}),
 * then the data section. Offsets are relative to the data section.
 *
 * Reader invariants (checked as the reference Rust implementation does, plus a few more):
 * 8 + N <= file size, N <= LT_ST_MAX_HEADER; header starts with '{', is valid UTF-8 JSON
 * without duplicate keys; every tensor's byte range, sorted by offset, follows the previous
 * one with no gap or overlap, starts the data section at 0 and ends exactly at the end of
 * the file; numel x dtype size == end - begin with overflow checks; at most LT_MAX_DIMS
 * dims and LT_ST_MAX_TENSORS tensors. Views point into the read-only maps (zero-copy), so
 * their data may be unaligned for its dtype when a file was written without care.
 * Before jansson sees the header, a lexical pre-scan bounds nesting depth, array length and
 * key counts, and the number of JSON values by the file's size (at most 4 bytes of parse tree
 * per byte of file, or 64 MB), so a legal but hostile header (a million empty tensors) cannot
 * make the parser allocate many times the file.
 *
 * Tensor order of lt_safetensors_tensor(): shards by file name, within a shard by offset.
 *
 * Writer: tensors laid out like the Python package (dtype size descending, then name), so
 * every tensor is aligned to its element size when the header is padded to 8 bytes; the
 * header lists "__metadata__" first (keys sorted) and the tensors in data order. Data is
 * streamed into a temp file next to the target, fsync'd, then renamed over it. */
#include "loratune/safetensors.h"
#include "core/io.h"
#include "core/json_file.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LT_ST_MAX_HEADER 100000000ull /* as the reference: 100 MB */
#define LT_ST_MAX_TENSORS 1000000
#define LT_ST_SCAN_MAX_DEPTH 8
#define LT_ST_SCAN_MAX_ARRAY 64
#define LT_ST_SCAN_MAX_KEYS 65536 /* per nested object (tensor entry, __metadata__) */
/* the header's parse tree may take at most LT_ST_PARSE_PER_FILE_BYTE bytes per byte of the
 * file, or LT_ST_PARSE_FLOOR whatever the file (docs/RELIABILITY.md, finding 7) */
#define LT_ST_JSON_VALUE_BYTES 176ull /* measured: 7 M values, 1.2 GB */
#define LT_ST_PARSE_PER_FILE_BYTE 4
#define LT_ST_PARSE_FLOOR (64ull << 20)

typedef struct {
    char *path;
    lt_mapped_file map;
} st_shard;

struct lt_safetensors {
    st_shard *shards;
    size_t nshards;
    lt_tensor_view *tensors; /* [n], names owned (malloc'd) */
    size_t n, cap;
    const lt_tensor_view **by_name; /* [n] sorted by name, for lookup */
    char **meta_keys, **meta_vals;  /* [nmeta] of the first shard */
    size_t nmeta;
};

/* ---- helpers ------------------------------------------------------------------------- */

static int st_dtype_ok(lt_dtype t) { return (unsigned)t <= LT_DTYPE_BOOL; }

/* safetensors dtypes that exist in the format but that loratune does not handle */
static int st_dtype_known_unsupported(const char *s) {
    static const char *k[] = {"U16",      "U32",      "U64",      "F8_E4M3", "F8_E5M2",
                              "F8_E8M0",  "F4",       "F6_E2M3",  "F6_E3M2", "C64",
                              NULL};
    for (int i = 0; k[i]; i++)
        if (!strcmp(k[i], s)) return 1;
    return 0;
}

static char *st_strdup(const char *s) {
    size_t l = strlen(s) + 1;
    char *p = lt_malloc(l);
    if (p) memcpy(p, s, l);
    return p;
}

static void st_shape_str(const lt_tensor_view *t, char *buf, size_t cap) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < t->ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Lexical pass over the header: strings skipped (with escapes), nesting depth and the
 * element count of every array bounded. Valid headers nest 3 deep and have arrays of at
 * most LT_MAX_DIMS elements. */
static lt_status st_prescan(const char *path, const uint8_t *h, size_t n, size_t fsize) {
    int depth = 0;
    uint64_t values = 1; /* JSON values jansson will allocate: <= commas + containers + 1 */
    uint32_t elems[LT_ST_SCAN_MAX_DEPTH + 1];
    int is_array[LT_ST_SCAN_MAX_DEPTH + 1];
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = h[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (depth >= LT_ST_SCAN_MAX_DEPTH)
                return lt_error(LT_ERR_FORMAT,
                                "%s: header: JSON nested deeper than %d levels at byte %zu "
                                "(expected {name: {dtype, shape, data_offsets}})",
                                path, LT_ST_SCAN_MAX_DEPTH, i + 8);
            depth++;
            elems[depth] = 0;
            is_array[depth] = c == '[';
            values++;
        } else if (c == '}' || c == ']') {
            if (depth > 0) depth--;
        } else if (c == ',' && depth > 0) {
            ++elems[depth];
            values++;
            if (is_array[depth] && elems[depth] >= LT_ST_SCAN_MAX_ARRAY)
                return lt_error(LT_ERR_FORMAT,
                                "%s: header: JSON array with more than %d elements at byte %zu "
                                "(a shape has at most %d dims, data_offsets 2)",
                                path, LT_ST_SCAN_MAX_ARRAY, i + 8, LT_MAX_DIMS);
            if (!is_array[depth] && depth == 1 && elems[depth] > LT_ST_MAX_TENSORS)
                return lt_error(LT_ERR_FORMAT,
                                "%s: header: more than %d entries, over the cap on tensors", path,
                                LT_ST_MAX_TENSORS + 1);
            if (!is_array[depth] && depth > 1 && elems[depth] >= LT_ST_SCAN_MAX_KEYS)
                return lt_error(LT_ERR_FORMAT,
                                "%s: header: JSON object with more than %d keys at byte %zu "
                                "(a tensor entry has 3, __metadata__ is expected to be small)",
                                path, LT_ST_SCAN_MAX_KEYS, i + 8);
        }
    }
    /* Bounded memory per input byte: jansson's tree costs about LT_ST_JSON_VALUE_BYTES per
     * value, so a header of many tiny entries (a million empty tensors: 60 bytes of header
     * each, over a kilobyte of parse tree) would need many times the file. A real model's
     * header is a few hundred bytes per tensor next to that tensor's data. */
    uint64_t need = values * LT_ST_JSON_VALUE_BYTES;
    uint64_t allow = (uint64_t)fsize * LT_ST_PARSE_PER_FILE_BYTE;
    if (allow < LT_ST_PARSE_FLOOR) allow = LT_ST_PARSE_FLOOR;
    if (need > allow)
        return lt_error(LT_ERR_FORMAT,
                        "%s: header: %llu JSON values in a %zu-byte file: parsing them would "
                        "take about %llu MB, more than %d times the file (a model's header "
                        "holds about ten values per tensor beside its data); refusing it",
                        path, (unsigned long long)values, fsize, (unsigned long long)(need >> 20),
                        LT_ST_PARSE_PER_FILE_BYTE);
    return LT_OK;
}

static lt_status st_json_u64(const char *path, const char *tname, const char *field, int idx,
                             json_t *v, int64_t *out) {
    if (!json_is_integer(v))
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': %s[%d]: expected a non-negative integer",
                        path, tname, field, idx);
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': %s[%d] is %lld, expected a non-negative integer", path,
                        tname, field, idx, (long long)x);
    *out = (int64_t)x;
    return LT_OK;
}

typedef struct {
    size_t idx; /* index into st->tensors */
    int64_t begin, end;
} st_range;

static int st_range_cmp(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static lt_status st_push(lt_safetensors *st, const lt_tensor_view *v) {
    if (st->n == st->cap) {
        size_t nc = st->cap ? st->cap * 2 : 64;
        lt_tensor_view *nt = lt_realloc(st->tensors, nc * sizeof *nt);
        if (!nt) return lt_error(LT_ERR_NOMEM, "safetensors: out of memory");
        st->tensors = nt;
        st->cap = nc;
    }
    st->tensors[st->n++] = *v;
    return LT_OK;
}

static lt_status st_parse_metadata(lt_safetensors *st, const char *path, json_t *m,
                                   int keep) {
    /* null is "no metadata" (the format's metadata is optional; mlx's save_safetensors, and so
     * every mlx-lm adapter, writes "__metadata__": null) */
    if (json_is_null(m)) return LT_OK;
    if (!json_is_object(m))
        return lt_error(LT_ERR_FORMAT, "%s: __metadata__: expected an object of strings", path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return lt_error(LT_ERR_FORMAT, "%s: __metadata__: key '%s': expected a string value",
                            path, k);
    }
    if (!keep) return LT_OK;
    size_t n = json_object_size(m);
    st->meta_keys = lt_calloc(n ? n : 1, sizeof(char *));
    st->meta_vals = lt_calloc(n ? n : 1, sizeof(char *));
    if (!st->meta_keys || !st->meta_vals) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    json_object_foreach(m, k, v) {
        st->meta_keys[st->nmeta] = st_strdup(k);
        st->meta_vals[st->nmeta] = st_strdup(json_string_value(v));
        st->nmeta++;
        if (!st->meta_keys[st->nmeta - 1] || !st->meta_vals[st->nmeta - 1])
            return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    }
    return LT_OK;
}

/* Parses one tensor entry of the header into v (name still borrowed from json). */
static lt_status st_parse_entry(const char *path, const char *name, json_t *e, lt_tensor_view *v,
                                int64_t *begin, int64_t *end) {
    if (!json_is_object(e))
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': expected an object {dtype, shape, data_offsets}", path,
                        name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd))
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': dtype: expected a string like \"F32\"",
                        path, name);
    const char *ds = json_string_value(jd);
    lt_dtype dt;
    if (lt_dtype_from_name(ds, &dt) != 0 || !st_dtype_ok(dt)) {
        if (st_dtype_known_unsupported(ds))
            return lt_error(LT_ERR_UNSUPPORTED,
                            "%s: tensor '%s': dtype '%s' is not supported (supported: F32, F16, "
                            "BF16, F64, I8, U8, I16, I32, I64, BOOL)",
                            path, name, ds);
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': unknown dtype '%s' (expected one of F32, F16, BF16, "
                        "F64, I8, U8, I16, I32, I64, BOOL)",
                        path, name, ds);
    }
    if (!json_is_array(js))
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': shape: expected an array of integers",
                        path, name);
    size_t nd = json_array_size(js);
    if (nd > LT_MAX_DIMS)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: tensor '%s': shape has %zu dims, at most %d are "
                                            "supported",
                        path, name, nd, LT_MAX_DIMS);
    memset(v, 0, sizeof *v);
    v->name = name;
    v->dtype = dt;
    v->ndim = (int)nd;
    int64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        lt_status s = st_json_u64(path, name, "shape", (int)i, json_array_get(js, i), &v->shape[i]);
        if (s) return s;
        if (v->shape[i] != 0 && numel > INT64_MAX / v->shape[i]) overflow = 1;
        else numel *= v->shape[i];
    }
    char sh[128];
    st_shape_str(v, sh, sizeof sh);
    int64_t nbytes = overflow ? -1 : lt_dtype_nbytes(dt, numel);
    /* a zero dim anywhere makes numel 0 even if other dims overflow when multiplied first */
    for (int i = 0; i < v->ndim; i++)
        if (v->shape[i] == 0) nbytes = 0;
    if (nbytes < 0)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': shape %s x %s overflows 64-bit byte count",
                        path, name, sh, ds);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets: expected an array [begin, end]", path,
                        name);
    lt_status s = st_json_u64(path, name, "data_offsets", 0, json_array_get(jo, 0), begin);
    if (!s) s = st_json_u64(path, name, "data_offsets", 1, json_array_get(jo, 1), end);
    if (s) return s;
    if (*end < *begin)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld]: end before begin",
                        path, name, (long long)*begin, (long long)*end);
    if (*end - *begin != nbytes)
        return lt_error(LT_ERR_FORMAT,
                        "%s: tensor '%s': shape %s x %s needs %lld bytes but data_offsets "
                        "[%lld, %lld] span %lld",
                        path, name, sh, ds, (long long)nbytes, (long long)*begin, (long long)*end,
                        (long long)(*end - *begin));
    v->nbytes = (size_t)nbytes;
    return LT_OK;
}

/* Maps and validates one file; appends its tensors (in offset order) to st. */
static lt_status st_load_file(lt_safetensors *st, const char *path, int keep_meta) {
    st_shard *ns = lt_realloc(st->shards, (st->nshards + 1) * sizeof *ns);
    if (!ns) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    st->shards = ns;
    st_shard *sh = &st->shards[st->nshards];
    memset(sh, 0, sizeof *sh);
    sh->path = st_strdup(path);
    if (!sh->path) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    st->nshards++;
    lt_status s = lt_file_map(path, &sh->map);
    if (s) return s;
    const uint8_t *d = sh->map.data;
    size_t fsize = sh->map.size;
    if (fsize < 8)
        return lt_error(LT_ERR_FORMAT,
                        "%s: file is %zu bytes, too short for the 8-byte header length", path,
                        fsize);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = (hn << 8) | d[i];
    if (hn > LT_ST_MAX_HEADER)
        return lt_error(LT_ERR_FORMAT,
                        "%s: header length %llu exceeds the cap of %llu bytes", path,
                        (unsigned long long)hn, LT_ST_MAX_HEADER);
    if (hn > fsize - 8)
        return lt_error(LT_ERR_FORMAT,
                        "%s: header length %llu exceeds the file size (%zu bytes after the "
                        "length field)",
                        path, (unsigned long long)hn, fsize - 8);
    const uint8_t *h = d + 8;
    if (hn == 0 || h[0] != '{')
        return lt_error(LT_ERR_FORMAT, "%s: header: expected a JSON object starting with '{'",
                        path);
    s = st_prescan(path, h, (size_t)hn, fsize);
    if (s) return s;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)h, (size_t)hn, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return lt_error(LT_ERR_FORMAT, "%s: header JSON: %s (line %d, column %d)", path,
                        jerr.text, jerr.line, jerr.column);
    st_range *rg = NULL;
    size_t first = st->n;
    if (!json_is_object(root)) {
        s = lt_error(LT_ERR_FORMAT, "%s: header: expected a JSON object", path);
        goto done;
    }
    size_t nent = json_object_size(root);
    if (nent > LT_ST_MAX_TENSORS + 1) {
        s = lt_error(LT_ERR_FORMAT, "%s: header: %zu entries, more than the cap of %d tensors",
                     path, nent, LT_ST_MAX_TENSORS);
        goto done;
    }
    rg = lt_malloc((nent ? nent : 1) * sizeof *rg);
    if (!rg) {
        s = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t nr = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            s = st_parse_metadata(st, path, val, keep_meta);
            if (s) goto done;
            continue;
        }
        lt_tensor_view v;
        int64_t b, e;
        s = st_parse_entry(path, key, val, &v, &b, &e);
        if (s) goto done;
        if ((uint64_t)e > fsize - 8 - hn) {
            s = lt_error(LT_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] reach beyond the end of the "
                         "file (data section is %llu bytes)",
                         path, key, (long long)b, (long long)e,
                         (unsigned long long)(fsize - 8 - hn));
            goto done;
        }
        v.data = h + hn + b;
        v.name = st_strdup(key);
        if (!v.name) {
            s = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        s = st_push(st, &v);
        if (s) {
            free((char *)v.name);
            goto done;
        }
        rg[nr].idx = st->n - 1;
        rg[nr].begin = b;
        rg[nr].end = e;
        nr++;
    }
    qsort(rg, nr, sizeof *rg, st_range_cmp);
    int64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < nr; i++) {
        const char *nm = st->tensors[rg[i].idx].name;
        if (rg[i].begin < pos) {
            s = lt_error(LT_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] overlap tensor '%s' (which "
                         "ends at %lld)",
                         path, nm, (long long)rg[i].begin, (long long)rg[i].end, prev,
                         (long long)pos);
            goto done;
        }
        if (rg[i].begin > pos) {
            s = lt_error(LT_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets begin at %lld, expected %lld (gap of "
                         "%lld bytes after %s%s%s)",
                         path, nm, (long long)rg[i].begin, (long long)pos,
                         (long long)(rg[i].begin - pos), prev ? "tensor '" : "the header",
                         prev ? prev : "", prev ? "'" : "");
            goto done;
        }
        pos = rg[i].end;
        prev = nm;
    }
    if ((uint64_t)pos != fsize - 8 - hn) {
        s = lt_error(LT_ERR_FORMAT,
                     "%s: tensors cover %lld bytes of the data section but it has %llu (expected "
                     "the data_offsets to cover it exactly)",
                     path, (long long)pos, (unsigned long long)(fsize - 8 - hn));
        goto done;
    }
    /* reorder this file's views by offset */
    lt_tensor_view *tmp = lt_malloc((nr ? nr : 1) * sizeof *tmp);
    if (!tmp) {
        s = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < nr; i++) tmp[i] = st->tensors[rg[i].idx];
    if (nr) memcpy(st->tensors + first, tmp, nr * sizeof *tmp);
    free(tmp);
done:
    free(rg);
    json_decref(root);
    return s;
}

static int st_view_ptr_cmp(const void *a, const void *b) {
    const lt_tensor_view *x = *(const lt_tensor_view *const *)a;
    const lt_tensor_view *y = *(const lt_tensor_view *const *)b;
    return strcmp(x->name, y->name);
}

/* Builds the by-name index; a name seen twice is an error (only possible across shards). */
static lt_status st_build_index(lt_safetensors *st, const char *path) {
    st->by_name = lt_malloc((st->n ? st->n : 1) * sizeof *st->by_name);
    if (!st->by_name) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < st->n; i++) st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, st->n, sizeof *st->by_name, st_view_ptr_cmp);
    for (size_t i = 1; i < st->n; i++)
        if (!strcmp(st->by_name[i - 1]->name, st->by_name[i]->name))
            return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' appears in more than one shard", path,
                            st->by_name[i]->name);
    return LT_OK;
}

/* shard file names must stay inside the index's folder */
static int st_shard_name_ok(const char *f) {
    if (!*f || f[0] == '/') return 0;
    const char *p = f;
    while (*p) {
        const char *q = strchr(p, '/');
        size_t l = q ? (size_t)(q - p) : strlen(p);
        if (l == 0 || (l == 2 && p[0] == '.' && p[1] == '.')) return 0;
        if (!q) break;
        p = q + 1;
    }
    return f[strlen(f) - 1] != '/';
}

static int st_cstr_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static lt_status st_load_index(lt_safetensors *st, const char *ipath) {
    json_t *root = NULL;
    lt_status s = lt_json_load_file(ipath, JSON_REJECT_DUPLICATES, &root);
    if (s) return s;
    const char **files = NULL;
    char *dir = NULL, *spath = NULL;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm)) {
        s = lt_error(LT_ERR_FORMAT, "%s: weight_map: expected an object {tensor: shard file}",
                     ipath);
        goto done;
    }
    size_t nw = json_object_size(wm);
    files = lt_malloc((nw ? nw : 1) * sizeof *files);
    const char *slash = strrchr(ipath, '/');
    size_t dl = slash ? (size_t)(slash - ipath) + 1 : 0;
    dir = lt_malloc(dl + 1);
    if (!files || !dir) {
        s = lt_error(LT_ERR_NOMEM, "%s: out of memory", ipath);
        goto done;
    }
    memcpy(dir, ipath, dl);
    dir[dl] = 0;
    size_t nf = 0;
    const char *tn;
    json_t *fv;
    json_object_foreach(wm, tn, fv) {
        if (!json_is_string(fv)) {
            s = lt_error(LT_ERR_FORMAT, "%s: weight_map: tensor '%s': expected a shard file name",
                         ipath, tn);
            goto done;
        }
        const char *f = json_string_value(fv);
        if (!st_shard_name_ok(f)) {
            s = lt_error(LT_ERR_FORMAT,
                         "%s: weight_map: tensor '%s': shard '%s' must be a relative path inside "
                         "the index's folder (no '..', no leading '/')",
                         ipath, tn, f);
            goto done;
        }
        files[nf++] = f;
    }
    qsort(files, nf, sizeof *files, st_cstr_cmp);
    size_t nu = 0;
    for (size_t i = 0; i < nf; i++)
        if (nu == 0 || strcmp(files[nu - 1], files[i])) files[nu++] = files[i];
    for (size_t i = 0; i < nu; i++) {
        size_t pl = dl + strlen(files[i]) + 1;
        free(spath);
        spath = lt_malloc(pl);
        if (!spath) {
            s = lt_error(LT_ERR_NOMEM, "%s: out of memory", ipath);
            goto done;
        }
        snprintf(spath, pl, "%s%s", dir, files[i]);
        if (!lt_path_exists(spath)) {
            s = lt_error(LT_ERR_NOTFOUND, "%s: weight_map: shard '%s' not found (%s)", ipath,
                         files[i], spath);
            goto done;
        }
        size_t first = st->n;
        s = st_load_file(st, spath, i == 0);
        if (s) goto done;
        for (size_t k = first; k < st->n; k++) {
            const char *name = st->tensors[k].name;
            json_t *m = json_object_get(wm, name);
            if (!m) {
                s = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' of shard '%s' is not in weight_map",
                             ipath, name, files[i]);
                goto done;
            }
            if (strcmp(json_string_value(m), files[i])) {
                s = lt_error(LT_ERR_FORMAT,
                             "%s: tensor '%s' found in shard '%s' but weight_map names '%s'",
                             ipath, name, files[i], json_string_value(m));
                goto done;
            }
        }
    }
    s = st_build_index(st, ipath);
    if (s) goto done;
    /* every listed tensor was found (each found one is listed for its own shard) */
    json_object_foreach(wm, tn, fv) {
        if (!lt_safetensors_find(st, tn)) {
            s = lt_error(LT_ERR_NOTFOUND,
                         "%s: weight_map: tensor '%s' is not in its shard '%s'", ipath, tn,
                         json_string_value(fv));
            goto done;
        }
    }
done:
    free(spath);
    free(dir);
    free(files);
    json_decref(root);
    return s;
}

/* ---- reader API ---------------------------------------------------------------------- */

static int st_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

lt_status lt_safetensors_open(const char *path, lt_safetensors **out) {
    *out = NULL;
    if (!path) return lt_error(LT_ERR_ARG, "safetensors: path is NULL");
    lt_safetensors *st = lt_calloc(1, sizeof *st);
    if (!st) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    lt_status s;
    if (lt_path_is_dir(path)) {
        size_t pl = strlen(path) + 64;
        char *p = lt_malloc(pl);
        if (!p) {
            free(st);
            return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
        }
        snprintf(p, pl, "%s/model.safetensors.index.json", path);
        if (lt_path_exists(p)) {
            s = st_load_index(st, p);
        } else {
            snprintf(p, pl, "%s/model.safetensors", path);
            if (lt_path_exists(p)) {
                s = st_load_file(st, p, 1);
                if (!s) s = st_build_index(st, p);
            } else {
                s = lt_error(LT_ERR_NOTFOUND,
                             "%s: folder holds neither model.safetensors nor "
                             "model.safetensors.index.json",
                             path);
            }
        }
        free(p);
    } else if (st_ends_with(path, ".json")) {
        s = st_load_index(st, path);
    } else {
        s = st_load_file(st, path, 1);
        if (!s) s = st_build_index(st, path);
    }
    if (s) {
        lt_safetensors_close(st);
        return s;
    }
    *out = st;
    return LT_OK;
}

void lt_safetensors_close(lt_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) free((char *)st->tensors[i].name);
    for (size_t i = 0; i < st->nshards; i++) {
        lt_file_unmap(&st->shards[i].map);
        free(st->shards[i].path);
    }
    for (size_t i = 0; i < st->nmeta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_vals[i]);
    }
    free(st->meta_keys);
    free(st->meta_vals);
    free(st->shards);
    free(st->tensors);
    free(st->by_name);
    free(st);
}

size_t lt_safetensors_count(const lt_safetensors *st) { return st ? st->n : 0; }

const lt_tensor_view *lt_safetensors_tensor(const lt_safetensors *st, size_t i) {
    return st && i < st->n ? &st->tensors[i] : NULL;
}

const lt_tensor_view *lt_safetensors_find(const lt_safetensors *st, const char *name) {
    if (!st || !name || !st->by_name) return NULL;
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *lt_safetensors_metadata(const lt_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->nmeta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_vals[i];
    return NULL;
}

/* ---- writer -------------------------------------------------------------------------- */

typedef struct {
    char *name;
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_MAX_DIMS];
    const void *data;
    size_t nbytes;
    lt_st_fill_fn fill; /* data produced while writing (lt_st_writer_add_fn), else NULL */
    void *fill_ctx;
} st_wentry;

struct lt_st_writer {
    st_wentry *ents;
    size_t n, cap;
    char **mkeys, **mvals;
    size_t nmeta, mcap;
};

lt_status lt_st_writer_create(lt_st_writer **out) {
    *out = lt_calloc(1, sizeof **out);
    return *out ? LT_OK : lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
}

void lt_st_writer_free(lt_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->ents[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->mkeys[i]);
        free(w->mvals[i]);
    }
    free(w->ents);
    free(w->mkeys);
    free(w->mvals);
    free(w);
}

lt_status lt_st_writer_set_metadata(lt_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return lt_error(LT_ERR_ARG, "safetensors writer: metadata: NULL key or value");
    for (size_t i = 0; i < w->nmeta; i++) {
        if (!strcmp(w->mkeys[i], key)) {
            char *v = st_strdup(value);
            if (!v) return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
            free(w->mvals[i]);
            w->mvals[i] = v;
            return LT_OK;
        }
    }
    if (w->nmeta == w->mcap) {
        size_t nc = w->mcap ? w->mcap * 2 : 8;
        char **nk = lt_realloc(w->mkeys, nc * sizeof *nk);
        if (nk) w->mkeys = nk;
        char **nv = lt_realloc(w->mvals, nc * sizeof *nv);
        if (nv) w->mvals = nv;
        if (!nk || !nv) return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
        w->mcap = nc;
    }
    char *k = st_strdup(key), *v = st_strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->mkeys[w->nmeta] = k;
    w->mvals[w->nmeta] = v;
    w->nmeta++;
    return LT_OK;
}

lt_status lt_st_writer_add(lt_st_writer *w, const char *name, lt_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t nbytes) {
    if (!w || !name) return lt_error(LT_ERR_ARG, "safetensors writer: NULL writer or name");
    if (!strcmp(name, "__metadata__"))
        return lt_error(LT_ERR_ARG, "safetensors writer: '__metadata__' is not a tensor name");
    if (!st_dtype_ok(dtype))
        return lt_error(LT_ERR_ARG, "safetensors writer: tensor '%s': dtype %s cannot be stored "
                                    "in safetensors",
                        name, lt_dtype_name(dtype));
    if (ndim < 0 || ndim > LT_MAX_DIMS || (ndim > 0 && !shape))
        return lt_error(LT_ERR_ARG, "safetensors writer: tensor '%s': ndim %d, expected 0..%d",
                        name, ndim, LT_MAX_DIMS);
    int64_t numel = 1;
    int zero = 0, overflow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return lt_error(LT_ERR_ARG, "safetensors writer: tensor '%s': shape[%d] = %lld < 0",
                            name, i, (long long)shape[i]);
        if (shape[i] == 0) zero = 1;
        else if (numel > INT64_MAX / shape[i]) overflow = 1;
        else numel *= shape[i];
    }
    int64_t want = zero ? 0 : overflow ? -1 : lt_dtype_nbytes(dtype, numel);
    if (want < 0 || (uint64_t)want != nbytes)
        return lt_error(LT_ERR_ARG,
                        "safetensors writer: tensor '%s': shape x %s needs %lld bytes, got %zu",
                        name, lt_dtype_name(dtype), (long long)want, nbytes);
    if (nbytes && !data)
        return lt_error(LT_ERR_ARG, "safetensors writer: tensor '%s': data is NULL", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        st_wentry *ne = lt_realloc(w->ents, nc * sizeof *ne);
        if (!ne) return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
        w->ents = ne;
        w->cap = nc;
    }
    st_wentry *e = &w->ents[w->n];
    memset(e, 0, sizeof *e);
    e->name = st_strdup(name);
    if (!e->name) return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = nbytes;
    w->n++;
    return LT_OK;
}

lt_status lt_st_writer_add_fn(lt_st_writer *w, const char *name, lt_dtype dtype, int ndim,
                              const int64_t *shape, size_t nbytes, lt_st_fill_fn fill,
                              void *ctx) {
    if (!fill) return lt_error(LT_ERR_ARG, "safetensors writer: tensor '%s': no fill function",
                               name ? name : "?");
    static const char none = 0; /* a non-NULL data pointer for the checks; never read */
    lt_status s = lt_st_writer_add(w, name, dtype, ndim, shape, &none, nbytes);
    if (s) return s;
    w->ents[w->n - 1].data = NULL;
    w->ents[w->n - 1].fill = fill;
    w->ents[w->n - 1].fill_ctx = ctx;
    return LT_OK;
}

/* bytes of an entry into fd: borrowed data at once, produced data through buf (cap bytes) */
#define ST_FILL_CHUNK ((size_t)1 << 20)
static lt_status st_write_entry(int fd, const st_wentry *e, char *buf, const char *tmp) {
    if (!e->fill) return lt_io_write_all(fd, e->data, e->nbytes, tmp);
    lt_status s = LT_OK;
    for (size_t off = 0; off < e->nbytes && !s; off += ST_FILL_CHUNK) {
        size_t n = e->nbytes - off < ST_FILL_CHUNK ? e->nbytes - off : ST_FILL_CHUNK;
        s = e->fill(e->fill_ctx, off, buf, n);
        if (!s) s = lt_io_write_all(fd, buf, n, tmp);
    }
    return s;
}

/* The Python package orders by dtype (declaration order of its Rust enum, reversed), then
 * name: I64, F64, F32, I32, BF16, F16, I16, I8, U8, BOOL. */
static int st_dtype_rank(lt_dtype t) {
    switch (t) {
    case LT_DTYPE_I64: return 9;
    case LT_DTYPE_F64: return 8;
    case LT_DTYPE_F32: return 7;
    case LT_DTYPE_I32: return 6;
    case LT_DTYPE_BF16: return 5;
    case LT_DTYPE_F16: return 4;
    case LT_DTYPE_I16: return 3;
    case LT_DTYPE_I8: return 2;
    case LT_DTYPE_U8: return 1;
    default: return 0;
    }
}

static int st_went_name_cmp(const void *a, const void *b) {
    const st_wentry *x = *(const st_wentry *const *)a, *y = *(const st_wentry *const *)b;
    return strcmp(x->name, y->name);
}
static int st_went_layout_cmp(const void *a, const void *b) {
    const st_wentry *x = *(const st_wentry *const *)a, *y = *(const st_wentry *const *)b;
    int rx = st_dtype_rank(x->dtype), ry = st_dtype_rank(y->dtype);
    if (rx != ry) return ry - rx;
    return strcmp(x->name, y->name);
}

/* Builds the header JSON (unpadded, malloc'd) for entries in data order. */
static lt_status st_header_json(lt_st_writer *w, st_wentry **ord, char **out) {
    *out = NULL;
    json_t *root = json_object();
    if (!root) return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
    lt_status s = LT_OK;
    if (w->nmeta) {
        size_t *mi = lt_malloc(w->nmeta * sizeof *mi);
        json_t *m = json_object();
        int bad = !mi || !m;
        if (bad)
            json_decref(m); /* NULL-safe; set_new below takes m even when it fails */
        else
            bad = json_object_set_new(root, "__metadata__", m) != 0;
        if (bad) {
            free(mi);
            json_decref(root);
            return lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
        }
        /* keys sorted so the header is deterministic */
        for (size_t i = 0; i < w->nmeta; i++) mi[i] = i;
        for (size_t i = 1; i < w->nmeta; i++)
            for (size_t j = i; j > 0 && strcmp(w->mkeys[mi[j - 1]], w->mkeys[mi[j]]) > 0; j--) {
                size_t t = mi[j];
                mi[j] = mi[j - 1];
                mi[j - 1] = t;
            }
        for (size_t i = 0; i < w->nmeta && !s; i++) {
            json_t *v = json_string(w->mvals[mi[i]]);
            if (!v || json_object_set_new(m, w->mkeys[mi[i]], v))
                s = lt_error(LT_ERR_ARG, "safetensors writer: metadata '%s': not valid UTF-8",
                             w->mkeys[mi[i]]);
        }
        free(mi);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n && !s; i++) {
        st_wentry *e = ord[i];
        json_t *t = json_object(), *sh = json_array(), *of = json_array();
        if (!t || !sh || !of) {
            json_decref(t);
            json_decref(sh);
            json_decref(of);
            s = lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
            break;
        }
        for (int d = 0; d < e->ndim; d++) json_array_append_new(sh, json_integer(e->shape[d]));
        json_array_append_new(of, json_integer((json_int_t)off));
        off += e->nbytes;
        json_array_append_new(of, json_integer((json_int_t)off));
        json_object_set_new(t, "dtype", json_string(lt_dtype_name(e->dtype)));
        json_object_set_new(t, "shape", sh);
        json_object_set_new(t, "data_offsets", of);
        if (json_object_set_new(root, e->name, t))
            s = lt_error(LT_ERR_ARG, "safetensors writer: tensor name '%s': not valid UTF-8",
                         e->name);
    }
    if (!s) {
        *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!*out) s = lt_error(LT_ERR_NOMEM, "safetensors writer: out of memory");
    }
    json_decref(root);
    return s;
}

lt_status lt_st_writer_write(lt_st_writer *w, const char *path) {
    if (!w || !path) return lt_error(LT_ERR_ARG, "safetensors writer: NULL writer or path");
    st_wentry **ord = lt_malloc((w->n ? w->n : 1) * sizeof *ord);
    if (!ord) return lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < w->n; i++) ord[i] = &w->ents[i];
    qsort(ord, w->n, sizeof *ord, st_went_name_cmp);
    for (size_t i = 1; i < w->n; i++) {
        if (!strcmp(ord[i - 1]->name, ord[i]->name)) {
            lt_status e = lt_error(LT_ERR_ARG, "%s: tensor '%s' added twice", path, ord[i]->name);
            free(ord);
            return e;
        }
    }
    qsort(ord, w->n, sizeof *ord, st_went_layout_cmp);
    char *hdr = NULL, *tmp = NULL;
    int fd = -1;
    lt_status s = st_header_json(w, ord, &hdr);
    if (s) goto done;
    size_t hl = strlen(hdr), pad = (8 - hl % 8) % 8;
    if (hl + pad > LT_ST_MAX_HEADER) {
        s = lt_error(LT_ERR_ARG, "%s: header would be %zu bytes, over the cap of %llu", path,
                     hl + pad, LT_ST_MAX_HEADER);
        goto done;
    }
    size_t pl = strlen(path);
    tmp = lt_malloc(pl + 16);
    if (!tmp) {
        s = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    fd = lt_io_mkstemp(tmp);
    if (fd < 0) {
        s = lt_error(LT_ERR_IO, "%s: cannot create temp file: %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    fchmod(fd, 0644);
    uint8_t lenb[8];
    uint64_t n = hl + pad;
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(n >> (8 * i));
    s = lt_io_write_all(fd, lenb, 8, tmp);
    if (!s) s = lt_io_write_all(fd, hdr, hl, tmp);
    if (!s && pad) s = lt_io_write_all(fd, "        ", pad, tmp);
    char *fbuf = NULL;
    for (size_t i = 0; i < w->n && !s && !fbuf; i++)
        if (ord[i]->fill && !(fbuf = lt_malloc(ST_FILL_CHUNK)))
            s = lt_error(LT_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < w->n && !s; i++)
        s = st_write_entry(fd, ord[i], fbuf, tmp);
    free(fbuf);
    if (!s && lt_io_fsync(fd) != 0)
        s = lt_error(LT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (lt_io_close(fd) != 0 && !s)
        s = lt_error(LT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    fd = -1;
    if (!s && lt_io_rename(tmp, path) != 0)
        s = lt_error(LT_ERR_IO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (s) {
        unlink(tmp);
        goto done;
    }
    lt_io_sync_parent(path); /* make the rename durable */
done:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(tmp);
    free(hdr);
    free(ord);
    return s;
}
