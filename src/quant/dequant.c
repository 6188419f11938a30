/* dequant.c - scalar reference (de)quantization of ggml block formats, and lt_to_f32 (which
 * runs the AVX2 twins of dequant_avx2.c where they exist and the dispatch level allows:
 * same bits).
 *
 * Block layouts (bytes, little-endian f16 fields) as in ggml-common.h:
 *   Q4_0 (32 elems, 18 B): f16 d, u8 qs[16]               y = d * (q - 8)
 *   Q4_1 (32, 20):  f16 d, f16 m, u8 qs[16]               y = d * q + m
 *   Q5_0 (32, 22):  f16 d, u32 qh, u8 qs[16]              y = d * (q - 16)
 *   Q5_1 (32, 24):  f16 d, f16 m, u32 qh, u8 qs[16]       y = d * q + m
 *   Q8_0 (32, 34):  f16 d, i8 qs[32]                      y = d * q
 *   Q2_K (256, 84): u8 scales[16], u8 qs[64], f16 d, f16 dmin
 *   Q3_K (256,110): u8 hmask[32], u8 qs[64], u8 scales[12], f16 d
 *   Q4_K (256,144): f16 d, f16 dmin, u8 scales[12], u8 qs[128]
 *   Q5_K (256,176): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
 *   Q6_K (256,210): u8 ql[128], u8 qh[64], i8 scales[16], f16 d
 *   Q8_K (256,292): f32 d, i8 qs[256], i16 bsums[16]       y = d * q
 * The float expressions keep ggml's evaluation order (e.g. (d * sc) * q - dmin * m) so that
 * results are bit-exact; the build uses ISO C mode, where GCC does not contract a*b+c into
 * an FMA (which would change the rounding). Everything reads bytes, so src may be unaligned. */
#include "loratune/hwinfo.h"
#include "loratune/quant.h"
#include "quant_internal.h"

#include <math.h>
#include <string.h>

#define QK 32
#define QK_K 256

static float f16at(const uint8_t *p) {
    return lt_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}
static uint32_t u32at(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void lt_dequant_row_q4_0(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += 18, y += QK) {
        const float d = f16at(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < QK / 2; j++) {
            const int x0 = (qs[j] & 0x0F) - 8;
            const int x1 = (qs[j] >> 4) - 8;
            y[j] = (float)x0 * d;
            y[j + QK / 2] = (float)x1 * d;
        }
    }
}

void lt_dequant_row_q4_1(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += 20, y += QK) {
        const float d = f16at(b), m = f16at(b + 2);
        const uint8_t *qs = b + 4;
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (float)(qs[j] & 0x0F) * d + m;
            y[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

void lt_dequant_row_q5_0(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += 22, y += QK) {
        const float d = f16at(b);
        const uint32_t qh = u32at(b + 2);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < QK / 2; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)(((qs[j] & 0x0F) | h0) - 16) * d;
            y[j + QK / 2] = (float)(((qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

void lt_dequant_row_q5_1(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += 24, y += QK) {
        const float d = f16at(b), m = f16at(b + 2);
        const uint32_t qh = u32at(b + 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < QK / 2; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)((qs[j] & 0x0F) | h0) * d + m;
            y[j + QK / 2] = (float)((qs[j] >> 4) | h1) * d + m;
        }
    }
}

void lt_dequant_row_q8_0(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += 34, y += QK) {
        const float d = f16at(b);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

void lt_dequant_row_q2_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 84) {
        const uint8_t *scales = b, *q = b + 16;
        const float d = f16at(b + 80), dmin = f16at(b + 82);
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++) {
                    const uint8_t sc = scales[is++];
                    const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[16 * k + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

void lt_dequant_row_q3_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 110) {
        const uint8_t *hm = b, *q = b + 32, *s = b + 96;
        const float d_all = f16at(b + 108);
        int8_t scales[16];
        /* 16 6-bit scales: low 4 bits in s[0..7] (two nibbles), high 2 bits in s[8..11] */
        for (int k = 0; k < 16; k++) {
            const int lo = k < 8 ? (s[k] & 0xF) : (s[k - 8] >> 4);
            const int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
            scales[k] = (int8_t)((lo | (hi << 4)) - 32);
        }
        int is = 0;
        uint8_t m = 1;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
                for (int k = 0; k < 2; k++) {
                    const float dl = d_all * (float)scales[is++];
                    for (int l = 16 * k; l < 16 * k + 16; l++) {
                        const int qv = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
                        *y++ = dl * (float)qv;
                    }
                }
            }
        }
    }
}

/* 8 (scale, min) pairs of 6 bits packed in 12 bytes (Q4_K, Q5_K). */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void lt_dequant_row_q4_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 144) {
        const float d = f16at(b), dmin = f16at(b + 2);
        const uint8_t *scales = b + 4, *q = b + 16;
        for (int is = 0; is < 8; is += 2, q += 32) {
            uint8_t sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

void lt_dequant_row_q5_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 176) {
        const float d = f16at(b), dmin = f16at(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8;
             is += 2, ql += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
            uint8_t sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
    }
}

void lt_dequant_row_q6_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = f16at(b + 208);
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

void lt_dequant_row_q8_k(const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += 292, y += QK_K) {
        float d;
        memcpy(&d, b, 4);
        for (int j = 0; j < QK_K; j++)
            y[j] = d * (float)(int8_t)b[4 + j];
    }
}

/* ---- quantize (reference) ------------------------------------------------------------- */
static void put_f16(uint8_t *p, float f) {
    uint16_t h = lt_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

void lt_quant_row_q8_0(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK; i++, b += 34, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, d);
        for (int j = 0; j < QK; j++) {
            const float x0 = x[j] * id;
            b[2 + j] = (uint8_t)(int8_t)roundf(x0);
        }
    }
}

void lt_quant_row_q4_0(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK; i++, b += 18, x += QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, d);
        for (int j = 0; j < QK / 2; j++) {
            const float x0 = x[j] * id, x1 = x[QK / 2 + j] * id;
            int q0 = (int)(int8_t)(x0 + 8.5f), q1 = (int)(int8_t)(x1 + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void lt_quant_row_q4_1(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK; i++, b += 20, x += QK) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < QK; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(b, d);
        put_f16(b + 2, min);
        for (int j = 0; j < QK / 2; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[QK / 2 + j] - min) * id;
            int q0 = (int)(int8_t)(x0 + 0.5f), q1 = (int)(int8_t)(x1 + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b[4 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

lt_status lt_quantize(lt_dtype t, const float *src, void *dst, int64_t n) {
    if (n < 0 || n % QK != 0)
        return lt_error(LT_ERR_ARG, "quantize %s: n = %lld is not a multiple of %d",
                        lt_dtype_name(t), (long long)n, QK);
    switch (t) {
    case LT_DTYPE_Q8_0:
        lt_quant_row_q8_0(src, dst, n);
        return LT_OK;
    case LT_DTYPE_Q4_0:
        lt_quant_row_q4_0(src, dst, n);
        return LT_OK;
    case LT_DTYPE_Q4_1:
        lt_quant_row_q4_1(src, dst, n);
        return LT_OK;
    default:
        return lt_error(LT_ERR_UNSUPPORTED, "quantize: no quantizer for %s", lt_dtype_name(t));
    }
}

/* ---- lt_to_f32 ------------------------------------------------------------------------ */
lt_cpu_level lt_quant_kernel_level(void) {
#if LT_X86_KERNELS
    return lt_cpu_level_for(LT_CPU_LEVEL_AVX2);
#else
    return LT_CPU_LEVEL_BASELINE;
#endif
}

lt_status lt_to_f32(lt_dtype t, const void *src, float *dst, int64_t n) {
    if ((unsigned)t >= LT_DTYPE_COUNT)
        return lt_error(LT_ERR_ARG, "lt_to_f32: unknown dtype %d", (int)t);
    int64_t be = lt_dtype_block_elems(t);
    if (n < 0 || n % be != 0)
        return lt_error(LT_ERR_ARG,
                        "lt_to_f32 %s: n = %lld is not a multiple of the block size %lld",
                        lt_dtype_name(t), (long long)n, (long long)be);
#if LT_X86_KERNELS
    if (lt_quant_kernel_level() >= LT_CPU_LEVEL_AVX2 && lt_to_f32_avx2(t, src, dst, n))
        return LT_OK;
#endif
    const uint8_t *p = src;
    switch (t) {
    case LT_DTYPE_F32:
        if (n) memcpy(dst, src, (size_t)n * 4);
        break;
    case LT_DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = f16at(p + 2 * i);
        break;
    case LT_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = lt_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case LT_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case LT_DTYPE_I8:
        for (int64_t i = 0; i < n; i++)
            dst[i] = (float)(int8_t)p[i];
        break;
    case LT_DTYPE_U8:
        for (int64_t i = 0; i < n; i++)
            dst[i] = (float)p[i];
        break;
    case LT_DTYPE_BOOL:
        for (int64_t i = 0; i < n; i++)
            dst[i] = p[i] ? 1.0f : 0.0f;
        break;
    case LT_DTYPE_I16:
        for (int64_t i = 0; i < n; i++) {
            int16_t v;
            memcpy(&v, p + 2 * i, 2);
            dst[i] = (float)v;
        }
        break;
    case LT_DTYPE_I32:
        for (int64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = (float)v;
        }
        break;
    case LT_DTYPE_I64:
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case LT_DTYPE_Q4_0:
        lt_dequant_row_q4_0(src, dst, n);
        break;
    case LT_DTYPE_Q4_1:
        lt_dequant_row_q4_1(src, dst, n);
        break;
    case LT_DTYPE_Q5_0:
        lt_dequant_row_q5_0(src, dst, n);
        break;
    case LT_DTYPE_Q5_1:
        lt_dequant_row_q5_1(src, dst, n);
        break;
    case LT_DTYPE_Q8_0:
        lt_dequant_row_q8_0(src, dst, n);
        break;
    case LT_DTYPE_Q2_K:
        lt_dequant_row_q2_k(src, dst, n);
        break;
    case LT_DTYPE_Q3_K:
        lt_dequant_row_q3_k(src, dst, n);
        break;
    case LT_DTYPE_Q4_K:
        lt_dequant_row_q4_k(src, dst, n);
        break;
    case LT_DTYPE_Q5_K:
        lt_dequant_row_q5_k(src, dst, n);
        break;
    case LT_DTYPE_Q6_K:
        lt_dequant_row_q6_k(src, dst, n);
        break;
    case LT_DTYPE_Q8_K:
        lt_dequant_row_q8_k(src, dst, n);
        break;
    case LT_DTYPE_COUNT:
        break;
    }
    return LT_OK;
}
