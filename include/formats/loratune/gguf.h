/* gguf.h - GGUF v3 reader and writer (llama.cpp's model file format).
 *
 * The reader memory-maps the file and validates everything before returning: magic,
 * version, counts against the file size, every string and array length, tensor dims,
 * types, offsets (aligned, inside the file, non-overlapping). Tensor views have shape
 * outermost-first (the reverse of ggml's ne[]), data pointing into the map. */
#ifndef LORATUNE_GGUF_H
#define LORATUNE_GGUF_H

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_GGUF_UINT8 = 0,
    LT_GGUF_INT8 = 1,
    LT_GGUF_UINT16 = 2,
    LT_GGUF_INT16 = 3,
    LT_GGUF_UINT32 = 4,
    LT_GGUF_INT32 = 5,
    LT_GGUF_FLOAT32 = 6,
    LT_GGUF_BOOL = 7,
    LT_GGUF_STRING = 8,
    LT_GGUF_ARRAY = 9,
    LT_GGUF_UINT64 = 10,
    LT_GGUF_INT64 = 11,
    LT_GGUF_FLOAT64 = 12,
} lt_gguf_type;

typedef struct lt_gguf lt_gguf;

lt_status lt_gguf_open(const char *path, lt_gguf **out);
void lt_gguf_close(lt_gguf *g); /* safe on NULL */
const char *lt_gguf_path(const lt_gguf *g);

/* metadata */
size_t lt_gguf_n_kv(const lt_gguf *g);
const char *lt_gguf_kv_key(const lt_gguf *g, size_t i); /* NUL-terminated copy */
lt_gguf_type lt_gguf_kv_type(const lt_gguf *g, size_t i);
int64_t lt_gguf_find_key(const lt_gguf *g, const char *key); /* -1 if absent */
/* Typed getters: LT_ERR_NOTFOUND if absent, LT_ERR_FORMAT (message names the key) if the
 * stored type does not convert. Integer getters accept any integer type whose value fits. */
lt_status lt_gguf_get_u32(const lt_gguf *g, const char *key, uint32_t *out);
lt_status lt_gguf_get_i64(const lt_gguf *g, const char *key, int64_t *out);
lt_status lt_gguf_get_f32(const lt_gguf *g, const char *key, float *out); /* f32/f64 */
lt_status lt_gguf_get_bool(const lt_gguf *g, const char *key, int *out);
/* String value: pointer into the map, NOT NUL-terminated; len in bytes. */
lt_status lt_gguf_get_str(const lt_gguf *g, const char *key, const char **s, size_t *len);
/* Array: element type and count; for numeric element types *data points to the
 * little-endian packed elements in the map; for strings use lt_gguf_get_arr_str. */
lt_status lt_gguf_get_arr(const lt_gguf *g, const char *key, lt_gguf_type *elem_type,
                          uint64_t *n, const void **data);
lt_status lt_gguf_get_arr_str(const lt_gguf *g, const char *key, uint64_t i, const char **s,
                              size_t *len);

/* tensors */
size_t lt_gguf_n_tensors(const lt_gguf *g);
const lt_tensor_view *lt_gguf_tensor(const lt_gguf *g, size_t i);
const lt_tensor_view *lt_gguf_find_tensor(const lt_gguf *g, const char *name); /* NULL if absent */

/* ggml type id <-> lt_dtype (0 ok, -1 unknown) */
int lt_gguf_dtype_from_ggml(uint32_t ggml_type, lt_dtype *out);
int lt_gguf_dtype_to_ggml(lt_dtype t, uint32_t *out);

/* ---- writer -------------------------------------------------------------------------- */
typedef struct lt_gguf_writer lt_gguf_writer;

lt_status lt_gguf_writer_create(lt_gguf_writer **out);
void lt_gguf_writer_free(lt_gguf_writer *w); /* safe on NULL */
/* Metadata, written in the order set; keys and strings are copied. */
lt_status lt_gguf_writer_set_u32(lt_gguf_writer *w, const char *key, uint32_t v);
lt_status lt_gguf_writer_set_i32(lt_gguf_writer *w, const char *key, int32_t v);
lt_status lt_gguf_writer_set_u64(lt_gguf_writer *w, const char *key, uint64_t v);
lt_status lt_gguf_writer_set_f32(lt_gguf_writer *w, const char *key, float v);
lt_status lt_gguf_writer_set_bool(lt_gguf_writer *w, const char *key, int v);
lt_status lt_gguf_writer_set_str(lt_gguf_writer *w, const char *key, const char *v);
lt_status lt_gguf_writer_set_arr(lt_gguf_writer *w, const char *key, lt_gguf_type elem_type,
                                 const void *data, uint64_t n); /* numeric elements, copied */
lt_status lt_gguf_writer_set_arr_str(lt_gguf_writer *w, const char *key,
                                     const char *const *strs, uint64_t n); /* copied */
/* Tensor: shape outermost-first; data is borrowed and must stay valid until write. */
lt_status lt_gguf_writer_add_tensor(lt_gguf_writer *w, const char *name, lt_dtype dtype,
                                    int ndim, const int64_t *shape, const void *data,
                                    size_t nbytes);
/* Writes the file atomically (temp file, fsync, rename). Alignment 32 unless
 * general.alignment was set. */
lt_status lt_gguf_writer_write(lt_gguf_writer *w, const char *path);

/* ---- additions (gguf owner) ---------------------------------------------------------- */
/* Opens a GGUF image held in memory (borrowed: must outlive the handle); name is used in
 * error messages. Same validation as lt_gguf_open. */
lt_status lt_gguf_open_mem(const void *data, size_t size, const char *name, lt_gguf **out);
uint32_t lt_gguf_version(const lt_gguf *g);   /* 2 or 3 */
uint32_t lt_gguf_alignment(const lt_gguf *g); /* general.alignment or 32 */
/* Absolute file offset of tensor i's data. */
uint64_t lt_gguf_tensor_offset(const lt_gguf *g, size_t i);
lt_status lt_gguf_get_u64(const lt_gguf *g, const char *key, uint64_t *out); /* ints >= 0 */
lt_status lt_gguf_get_f64(const lt_gguf *g, const char *key, double *out);   /* f32/f64 */
/* "u8", "string", ... ("?" if unknown) and ggml type names ("Q4_K"; NULL if unknown). */
const char *lt_gguf_type_name(lt_gguf_type t);
const char *lt_gguf_ggml_type_name(uint32_t ggml_type);
/* Any fixed-size scalar type (u8..i64, f32, f64, bool); *v is read as that C type. */
lt_status lt_gguf_writer_set_scalar(lt_gguf_writer *w, const char *key, lt_gguf_type type,
                                    const void *v);

#ifdef __cplusplus
}
#endif
#endif
