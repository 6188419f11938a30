/* backend_internal.h - pieces the compiled-in backends share (src/backend/ only). */
#ifndef LT_BACKEND_INTERNAL_H
#define LT_BACKEND_INTERNAL_H

#include "loratune/backend.h"
#include "loratune/quant.h"

/* host memory, for the CPU backends: 64-byte aligned lt_aligned_alloc, memmove, memset */
void *lt_host_alloc_(const lt_backend *be, size_t bytes);
void lt_host_free_(const lt_backend *be, void *p);
void lt_host_copy_(const lt_backend *be, void *dst, const void *src, size_t bytes);
void lt_host_zero_(const lt_backend *be, void *dst, size_t bytes);
void lt_host_sync_(const lt_backend *be);
/* F32, F16, BF16 and the GGUF block types (lt_to_f32 converts them all) */
int lt_host_supports_dtype_(const lt_backend *be, lt_dtype dt);

#endif
