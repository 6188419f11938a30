/* quant_internal.h - inside the quant module: the per-level kernels behind lt_to_f32 and
 * lt_nf4_dequantize (run-time dispatch, docs/OPS.md "CPU dispatch"). Each lives in a file
 * compiled for its instruction set (*_avx2.c, *_avx512.c) and may be called only when
 * lt_cpu_level_for() gave that level or above. */
#ifndef LT_QUANT_INTERNAL_H
#define LT_QUANT_INTERNAL_H

#include "loratune/nf4.h"
#include "loratune/quant.h"

/* dequant_avx2.c: converts n values (a whole number of blocks, checked by the caller) of t to
 * fp32 with AVX2 kernels bit-identical to the scalar reference; returns 1 when it did, 0 when t
 * has no AVX2 kernel and the scalar path must run. */
int lt_to_f32_avx2(lt_dtype t, const void *src, float *dst, int64_t n);

/* nf4_avx2.c, nf4_avx512.c: lt_nf4_dequantize (same arguments, same bits). */
void lt_nf4_dequantize_avx2(const lt_nf4 *q, int64_t begin, int64_t count, float *out);
void lt_nf4_dequantize_avx512(const lt_nf4 *q, int64_t begin, int64_t count, float *out);

#endif
