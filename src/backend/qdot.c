/* qdot.c - activation quantization, the scalar reference kernels of qdot.h and their run-time
 * dispatch. The scalar twins are the oracle of the SIMD ones (tests/backend/test_backend_ops.c:
 * the reference backend, capped at the baseline, runs these). */
#include "qdot.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "loratune/quant.h"

static float f16at(const uint8_t *p) {
    return lt_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

/* round to nearest, ties to even, for |v| <= 2^22 (what cvtps2dq does in the default rounding
 * mode): adding 1.5 * 2^23 leaves no fraction bits, so the float add rounds */
static inline int round_even(float v) {
    return (int)((v + 12582912.0f) - 12582912.0f);
}

void lt_qdot_quantize(const float *x, lt_q8a *out, int64_t n) {
    for (int64_t b = 0; b < n / LT_QK; b++, x += LT_QK) {
        float amax = 0.0f;
        for (int i = 0; i < LT_QK; i++) {
            const float a = fabsf(x[i]);
            amax = !(a <= amax) ? a : amax; /* a NaN wins */
        }
        if (!(amax <= FLT_MAX)) { /* NaN or inf: the block's products are NaN, as in fp32 */
            memset(out[b].q, 0, LT_QK);
            out[b].d = out[b].s = NAN;
            continue;
        }
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < LT_QK; i++) {
            const int q = round_even(x[i] * id);
            out[b].q[i] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
    }
}

/* ---- scalar kernels ------------------------------------------------------------------------- */
/* Q4 nibbles: byte j holds element j (low) and j + 16 (high). */
static inline int dot_q4(const uint8_t *qs, const int8_t *q) {
    int s = 0;
    for (int j = 0; j < LT_QK / 2; j++)
        s += (qs[j] & 0x0F) * q[j] + (qs[j] >> 4) * q[j + LT_QK / 2];
    return s;
}

static void rows_q4_0(float *y, int64_t ys, const void *W, int nr, const lt_q8a *x, int nb,
                      float beta) {
    const uint8_t *w = W;
    for (int r = 0; r < nr; r++) {
        float acc = 0.0f;
        for (int b = 0; b < nb; b++, w += 18) {
            const float dw = f16at(w);
            acc += dw * (x[b].d * (float)dot_q4(w + 2, x[b].q) - 8.0f * x[b].s);
        }
        y[r * ys] = beta == 0.0f ? acc : y[r * ys] + acc;
    }
}

static void rows_q4_1(float *y, int64_t ys, const void *W, int nr, const lt_q8a *x, int nb,
                      float beta) {
    const uint8_t *w = W;
    for (int r = 0; r < nr; r++) {
        float acc = 0.0f;
        for (int b = 0; b < nb; b++, w += 20) {
            const float dw = f16at(w), m = f16at(w + 2);
            acc += dw * x[b].d * (float)dot_q4(w + 4, x[b].q) + m * x[b].s;
        }
        y[r * ys] = beta == 0.0f ? acc : y[r * ys] + acc;
    }
}

static void rows_q8_0(float *y, int64_t ys, const void *W, int nr, const lt_q8a *x, int nb,
                      float beta) {
    const uint8_t *w = W;
    for (int r = 0; r < nr; r++) {
        float acc = 0.0f;
        for (int b = 0; b < nb; b++, w += 34) {
            const int8_t *qw = (const int8_t *)(w + 2);
            int s = 0;
            for (int j = 0; j < LT_QK; j++)
                s += qw[j] * x[b].q[j];
            acc += f16at(w) * x[b].d * (float)s;
        }
        y[r * ys] = beta == 0.0f ? acc : y[r * ys] + acc;
    }
}

/* Q4_K: per super-block of 256 (144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales / mins,
 * 128 bytes of nibbles: 32 bytes per pair of sub-blocks, low nibbles the first) */
static void rows_q4_k(float *y, int64_t ys, const void *W, int nr, const lt_q8a *x, int nb,
                      float beta) {
    const uint8_t *w = W;
    for (int r = 0; r < nr; r++) {
        float acc = 0.0f;
        for (int sb = 0; sb < nb / 8; sb++, w += 144) {
            const float d = f16at(w), dmin = f16at(w + 2);
            const lt_q8a *xb = x + sb * 8;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                lt_qdot_scale_min_k4(j, w + 4, &sc, &m);
                const uint8_t *q = w + 16 + 32 * (j / 2);
                const int shift = (j & 1) * 4;
                int s = 0;
                for (int l = 0; l < LT_QK; l++)
                    s += ((q[l] >> shift) & 0x0F) * xb[j].q[l];
                acc += d * (float)sc * xb[j].d * (float)s - dmin * (float)m * xb[j].s;
            }
        }
        y[r * ys] = beta == 0.0f ? acc : y[r * ys] + acc;
    }
}

const lt_qdot_kernels lt_qdot_scalar = {"scalar", rows_q4_0, rows_q4_1, rows_q8_0,
                                        NULL,     NULL,      NULL,      rows_q4_k, NULL, NULL, NULL};

/* ---- dispatch ------------------------------------------------------------------------------- */
int lt_qdot_supports(lt_dtype t) {
    return t == LT_DTYPE_Q4_0 || t == LT_DTYPE_Q4_1 || t == LT_DTYPE_Q8_0 || t == LT_DTYPE_Q4_K;
}

static const lt_qdot_kernels *kernels(void) {
#if LT_X86_KERNELS
    const lt_cpu_level l = lt_cpu_level_active();
    if (l >= LT_CPU_LEVEL_AVX512 && __builtin_cpu_supports("avx512vnni")) return &lt_qdot_avx512;
    if (l >= LT_CPU_LEVEL_AVX2) return &lt_qdot_avx2;
#endif
    return &lt_qdot_scalar;
}

lt_qdot_rows_fn lt_qdot_rows(lt_dtype t) {
    const lt_qdot_kernels *k = kernels();
    switch (t) {
    case LT_DTYPE_Q4_0:
        return k->q4_0;
    case LT_DTYPE_Q4_1:
        return k->q4_1;
    case LT_DTYPE_Q8_0:
        return k->q8_0;
    case LT_DTYPE_Q4_K:
        return k->q4_k;
    default:
        return NULL;
    }
}

lt_qdot_tile_fn lt_qdot_tile(lt_dtype t) {
    const lt_qdot_kernels *k = kernels();
    switch (t) {
    case LT_DTYPE_Q4_0:
        return k->t4_0;
    case LT_DTYPE_Q4_1:
        return k->t4_1;
    case LT_DTYPE_Q8_0:
        return k->t8_0;
    default:
        return NULL;
    }
}

lt_qdot_tile_fn lt_qdot_tile8(lt_dtype t) {
    const lt_qdot_kernels *k = kernels();
    switch (t) {
    case LT_DTYPE_Q4_0:
        return k->e4_0;
    case LT_DTYPE_Q4_1:
        return k->e4_1;
    case LT_DTYPE_Q8_0:
        return k->e8_0;
    default:
        return NULL;
    }
}

const char *lt_qdot_kernel_name(void) {
    return kernels()->name;
}
