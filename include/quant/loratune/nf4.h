/* nf4.h - 4-bit NormalFloat (NF4) quantization as bitsandbytes defines it (QLoRA).
 *
 * Layout (bitsandbytes quantize_4bit, quant_type "nf4", blocksize 64):
 *   - x is cut into blocks of 64 elements (the last one may be shorter); absmax[b] = max |x| of
 *     block b; each element becomes the index (0..15) of the nearest of the 16 NF4 code values
 *     to x * (1 / absmax) (a value exactly between two codes takes the lower one), two indices
 *     per byte, the FIRST element in the HIGH nibble; n odd: the last low nibble is 0.
 *   - double quantization (compress_statistics): offset = mean of absmax; (absmax - offset) is
 *     quantized blockwise with 256 per block to 8-bit indices into bitsandbytes' signed dynamic
 *     map (create_dynamic_map), absmax2[c] = max |absmax - offset| of absmax block c.
 *   - dequantization: value = code[idx] * absmax[b]; with double quantization
 *     absmax[b] = dynamic_map[qabsmax[b]] * absmax2[b / 256] + offset (all in float).
 * Checked against bitsandbytes 0.50.2's own quantize_4bit / dequantize_4bit on random tensors
 * (tests/quant/test_nf4.c, goldens by tools/gen_nf4_goldens.py): identical codes and values.
 *
 * Storage is the caller's (the trainer plans it): the sizes come from lt_nf4_sizes. */
#ifndef LORATUNE_NF4_H
#define LORATUNE_NF4_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/hwinfo.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_NF4_BLOCK 64
#define LT_NF4_ABSMAX_BLOCK 256

/* The 16 NF4 code values, ascending (-1 ... 1). */
const float *lt_nf4_code(void);
/* bitsandbytes' 256-value signed dynamic map (create_dynamic_map(signed=True)), ascending. */
const float *lt_nf4_dynamic_map(void);

/* One NF4-quantized tensor of n elements; the pointers are borrowed (caller's storage). */
typedef struct {
    int64_t n;
    int double_quant;
    uint8_t *codes;   /* [(n + 1) / 2] */
    float *absmax;    /* [n_blocks]                  (double_quant == 0) */
    uint8_t *qabsmax; /* [n_blocks]                  (double_quant == 1) */
    float *absmax2;   /* [ceil(n_blocks / 256)]      (double_quant == 1) */
    float offset;     /*                             (double_quant == 1) */
} lt_nf4;

typedef struct {
    int64_t codes_bytes, n_blocks, absmax_bytes, qabsmax_bytes, absmax2_bytes, total_bytes;
} lt_nf4_sizes_t;
void lt_nf4_sizes(int64_t n, int double_quant, lt_nf4_sizes_t *out);

/* Quantizes x[n] into q (q->n, q->double_quant and the storage pointers set by the caller).
 * scratch: n_blocks floats (double_quant only; may be NULL otherwise). LT_ERR_ARG for n < 1,
 * missing storage, or a non-finite input (named by its index). */
lt_status lt_nf4_quantize(const float *x, lt_nf4 *q, float *scratch);
/* bitsandbytes' 8-bit blockwise quantization (quantize_blockwise, dynamic map, 256 per block,
 * CPU index search) of x[n] -- what double quantization applies to the absmax values:
 * out[n] indices, absmax[ceil(n / 256)]. x must be finite. */
lt_status lt_quantize_blockwise8(const float *x, int64_t n, uint8_t *out, float *absmax);
/* absmax of block b (after undoing double quantization). */
float lt_nf4_block_absmax(const lt_nf4 *q, int64_t b);
/* Dequantizes elements [begin, begin + count) into out[count] (any range: a row or a tile). */
void lt_nf4_dequantize(const lt_nf4 *q, int64_t begin, int64_t count, float *out);
/* The level lt_nf4_dequantize's kernel runs (run-time dispatch, hwinfo.h): avx512, avx2 or
 * baseline, all with the same bits. */
lt_cpu_level lt_nf4_kernel_level(void);

#ifdef __cplusplus
}
#endif
#endif
