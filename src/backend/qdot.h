/* qdot.h - integer dot products of GGUF block weights against 8-bit quantized activations, the
 * way the block formats are meant to run (src/backend/ only).
 *
 * An activation row x[n] (n a multiple of 32) is quantized once per product into n / 32 blocks
 * lt_q8a: d = amax / 127, q[i] = round-to-nearest-even(x[i] / d) computed as x[i] * (1 / d), and
 * s = d * sum(q). A weight row of Q4_0 / Q4_1 / Q8_0 blocks (quant.h layouts) is then multiplied
 * block by block with an exact integer sum per block:
 *   Q8_0  (y = dw q)         dw dx sum(qw qx)
 *   Q4_0  (y = dw (q - 8))   dw (dx sum(qw qx) - 8 s)
 *   Q4_1  (y = dw q + m)     dw dx sum(qw qx) + m s
 * and the per-block results are summed in fp32. Q4_K (y = d sc_j q - dmin m_j in sub-block j of
 * 32) is Q4_1 with dw = d sc_j and m = -dmin m_j per sub-block.
 * Every level (scalar, AVX2, AVX-512 VNNI) gives the
 * same integer block sums; only the order of the fp32 block sum differs (tests/backend compare
 * the kernels with the scalar twin, and the scalar twin with fp32, each with its tolerance).
 * Invariants: no allocation, no threads (the caller splits rows), weights read unaligned. */
#ifndef LT_QDOT_H
#define LT_QDOT_H

#include <stdint.h>

#include "loratune/core.h"
#include "loratune/hwinfo.h"

#define LT_QK 32

/* One quantized block of 32 activations (40 bytes). */
typedef struct {
    float d; /* scale: x ~ d * q */
    float s; /* d * sum(q), for the Q4_0 offset and the Q4_1 minimum */
    int8_t q[LT_QK];
} lt_q8a;

/* y[r] = dot(row r of W, x) for r < nr rows of nb blocks each (row stride: nb blocks of the
 * weight type), x given as nb lt_q8a blocks; y written (beta 0) or added to (beta 1), ys apart. */
typedef void (*lt_qdot_rows_fn)(float *y, int64_t ys, const void *W, int nr, const lt_q8a *x,
                                int nb, float beta);

/* The same for 4 activation rows at once (a prefill): y[t * ldy + r] for t < 4, r < nr, token t
 * at x + t * nb; each weight block is decoded once for the 4 tokens. */
typedef void (*lt_qdot_tile_fn)(float *y, int64_t ldy, const void *W, int nr, const lt_q8a *x,
                                int nb, float beta);

/* Kernels of one level for the types qdot runs; NULL where the level has none (the scalar level
 * has no tiles: 4 calls of the rows function are its tile). */
typedef struct {
    const char *name; /* "scalar", "avx2", "avx512vnni" */
    lt_qdot_rows_fn q4_0, q4_1, q8_0;
    lt_qdot_tile_fn t4_0, t4_1, t8_0;
    lt_qdot_rows_fn q4_k; /* Q4_K (super-blocks of 256: 8 sub-blocks of 32 as 8 x blocks) */
    lt_qdot_tile_fn e4_0, e4_1, e8_0; /* 8 tokens at once (NULL: the level has none) */
} lt_qdot_kernels;

/* Q4_K's 6-bit scale and min of sub-block j < 8 from the 12 packed bytes q (ggml's
 * get_scale_min_k4): sub-block j's values are d * sc * q - dmin * m. */
static inline void lt_qdot_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* 1 when W's dtype has integer kernels (Q4_0, Q4_1, Q8_0, Q4_K). */
int lt_qdot_supports(lt_dtype t);
/* Quantizes x[n] (n a multiple of 32) into n / 32 blocks (the same for every level). */
void lt_qdot_quantize(const float *x, lt_q8a *out, int64_t n);
/* The rows function for t at the dispatch level (hwinfo.h's lt_cpu_level_active and, for VNNI,
 * the CPU's avx512_vnni bit); NULL when t is not supported. */
lt_qdot_rows_fn lt_qdot_rows(lt_dtype t);
/* The 4-token tile for t at the dispatch level; NULL when the level has none. */
lt_qdot_tile_fn lt_qdot_tile(lt_dtype t);
/* The same for 8 tokens at once (the AVX-512 level: 16 accumulators fit its registers). */
lt_qdot_tile_fn lt_qdot_tile8(lt_dtype t);
/* The name of the kernels lt_qdot_rows picks now ("scalar", "avx2", "avx512vnni"). */
const char *lt_qdot_kernel_name(void);

/* The tables (scalar always; the others where compiled: LT_X86_KERNELS). */
extern const lt_qdot_kernels lt_qdot_scalar;
extern const lt_qdot_kernels lt_qdot_avx2;
extern const lt_qdot_kernels lt_qdot_avx512;

#endif
