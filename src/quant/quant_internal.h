/* quant_internal.h - inside the quant module. */
#ifndef LT_QUANT_INTERNAL_H
#define LT_QUANT_INTERNAL_H

#include "loratune/quant.h"

/* dequant_simd.c: converts n values (a whole number of blocks, checked by the caller) of t to
 * fp32 with AVX2 kernels bit-identical to the scalar reference; returns 1 when it did, 0 when t
 * has no SIMD kernel (or the build has no AVX2/F16C) and the scalar path must run. */
int lt_to_f32_simd(lt_dtype t, const void *src, float *dst, int64_t n);

#endif
