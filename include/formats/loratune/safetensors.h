/* safetensors.h - safetensors reader (single file or sharded) and writer.
 *
 * The reader memory-maps each shard and validates its header as the reference
 * implementation does: 8-byte header length within bounds, header JSON well-formed
 * and free of duplicate keys, dtypes known, shape x dtype size == byte range, byte ranges
 * contiguous, non-overlapping, covering the data section and inside the file, and a cap
 * on the tensor count. Views point into the maps (zero-copy). */
#ifndef LORATUNE_SAFETENSORS_H
#define LORATUNE_SAFETENSORS_H

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_safetensors lt_safetensors;

/* path: a .safetensors file, a model.safetensors.index.json, or a folder holding
 * model.safetensors or model.safetensors.index.json. */
lt_status lt_safetensors_open(const char *path, lt_safetensors **out);
void lt_safetensors_close(lt_safetensors *st); /* safe on NULL */
size_t lt_safetensors_count(const lt_safetensors *st);
const lt_tensor_view *lt_safetensors_tensor(const lt_safetensors *st, size_t i);
const lt_tensor_view *lt_safetensors_find(const lt_safetensors *st, const char *name);
/* "__metadata__" string value of the (first) file, or NULL. */
const char *lt_safetensors_metadata(const lt_safetensors *st, const char *key);

typedef struct lt_st_writer lt_st_writer;
lt_status lt_st_writer_create(lt_st_writer **out);
void lt_st_writer_free(lt_st_writer *w); /* safe on NULL */
lt_status lt_st_writer_set_metadata(lt_st_writer *w, const char *key, const char *value);
/* data is borrowed until lt_st_writer_write; shape outermost-first. */
lt_status lt_st_writer_add(lt_st_writer *w, const char *name, lt_dtype dtype, int ndim,
                           const int64_t *shape, const void *data, size_t nbytes);
/* A tensor whose bytes are produced while writing: fill(ctx, offset, dst, n) writes bytes
 * [offset, offset + n) of it into dst (the writer streams through a bounded buffer, so the
 * tensor never needs a whole host copy: trainer tensors on a device, say). */
typedef lt_status (*lt_st_fill_fn)(void *ctx, size_t offset, void *dst, size_t n);
lt_status lt_st_writer_add_fn(lt_st_writer *w, const char *name, lt_dtype dtype, int ndim,
                              const int64_t *shape, size_t nbytes, lt_st_fill_fn fill,
                              void *ctx);
/* Writes atomically (temp file, fsync, rename). Tensors sorted by name like the reference. */
lt_status lt_st_writer_write(lt_st_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
