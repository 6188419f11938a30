/* quant.h - ggml block-quantized formats: scalar reference dequantize and quantize.
 *
 * Layouts and arithmetic follow ggml (ggml-common.h, ggml-quants.c); the dequantizers are
 * bit-exact with ggml's dequantize_row_* and with gguf-py's gguf.quants.dequantize
 * (tests/quant/test_dequant.c checks committed goldens produced by the latter).
 * Every row function takes n elements, n a multiple of the type's block size (32 for
 * Q4_0..Q8_0, 256 for the K-quants); src holds n / block_elems blocks, packed, any alignment.
 * lt_to_f32 (below) dispatches to these for every lt_dtype. */
#ifndef LORATUNE_QUANT_H
#define LORATUNE_QUANT_H

#include "loratune/core.h"
#include "loratune/hwinfo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Converts n elements of src (dtype t) to float32. Handles F32/F16/BF16/F64/ints and all
 * quantized types. n must be a multiple of the block size. */
lt_status lt_to_f32(lt_dtype t, const void *src, float *dst, int64_t n);

void lt_dequant_row_q4_0(const void *src, float *dst, int64_t n);
void lt_dequant_row_q4_1(const void *src, float *dst, int64_t n);
void lt_dequant_row_q5_0(const void *src, float *dst, int64_t n);
void lt_dequant_row_q5_1(const void *src, float *dst, int64_t n);
void lt_dequant_row_q8_0(const void *src, float *dst, int64_t n);
void lt_dequant_row_q2_k(const void *src, float *dst, int64_t n);
void lt_dequant_row_q3_k(const void *src, float *dst, int64_t n);
void lt_dequant_row_q4_k(const void *src, float *dst, int64_t n);
void lt_dequant_row_q5_k(const void *src, float *dst, int64_t n);
void lt_dequant_row_q6_k(const void *src, float *dst, int64_t n);
void lt_dequant_row_q8_k(const void *src, float *dst, int64_t n);

/* Reference quantizers, same rounding as ggml's quantize_row_*_ref (no FMA contraction):
 * Q8_0: d = amax/127, q = roundf(x/d); Q4_0: d = max/-8 (max = signed value of largest
 * magnitude), q = min(15, (int)(x/d + 8.5)); Q4_1: d = (max-min)/15, m = min,
 * q = min(15, (int)((x-min)/d + 0.5)). dst receives n / 32 blocks. */
void lt_quant_row_q8_0(const float *src, void *dst, int64_t n);
void lt_quant_row_q4_0(const float *src, void *dst, int64_t n);
void lt_quant_row_q4_1(const float *src, void *dst, int64_t n);

/* The level lt_to_f32's kernels run (run-time dispatch, hwinfo.h): avx2 (F16, BF16, Q4_0..Q8_0,
 * Q4_K..Q6_K; bit-identical to the scalar reference) or baseline. */
lt_cpu_level lt_quant_kernel_level(void);

/* Quantizes n floats (n a multiple of 32) to Q8_0, Q4_0 or Q4_1; LT_ERR_UNSUPPORTED for
 * other types, LT_ERR_ARG if n is not a multiple of the block size. */
lt_status lt_quantize(lt_dtype t, const float *src, void *dst, int64_t n);

/* Non-finite values (NaN, +-inf) in n values of dtype t at data (any float type; a quantized
 * type is dequantized a few blocks at a time, n a multiple of its block size; integer types
 * have none). LT_OK when there are none; else LT_ERR_FORMAT
 * "WHERE: K of N values are not finite (first: nan at [row][col]): WHY", with [row][col] from
 * cols (cols <= 0: the flat index). where and why are the caller's words ("model.safetensors:
 * tensor model.layers.0.mlp.up_proj.weight", "the file is damaged"). One pass, no allocation. */
lt_status lt_check_finite(lt_dtype t, const void *data, int64_t n, int64_t cols, const char *where,
                          const char *why);

#ifdef __cplusplus
}
#endif
#endif
