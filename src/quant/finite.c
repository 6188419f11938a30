/* finite.c - lt_check_finite: does a tensor hold NaN or inf? The loaders run it once over
 * every tensor they take (a damaged file is refused, naming the tensor), the exporters over
 * everything they write (nothing non-finite leaves loratune with exit 0).
 *
 * Float types are tested on their bits (exponent all ones), so the cost is one read of the
 * data. A quantized value is finite exactly when its block's scales are (d, and dmin / m where
 * the type has one: a finite f16 scale times a small integer quant stays finite in f32), so
 * only those few bytes per block are read (ggml-common.h's layouts; k_scales below). Any other
 * block type is dequantized CHUNK_FLOATS at a time into a stack buffer. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "loratune/quant.h"

#define CHUNK_FLOATS 4096 /* a multiple of every block size (32, 256) */

/* Index of the first non-finite value in x[0..n) and the count of them (in *bad). */
static int64_t scan_f32(const float *x, int64_t n, int64_t *bad) {
    int64_t first = -1, k = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        if ((u & 0x7f800000u) == 0x7f800000u) {
            if (first < 0) first = i;
            k++;
        }
    }
    *bad = k;
    return first;
}

static int64_t scan_u16(const uint16_t *x, int64_t n, uint16_t exp_mask, int64_t *bad) {
    int64_t first = -1, k = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t u;
        memcpy(&u, x + i, 2);
        if ((u & exp_mask) == exp_mask) {
            if (first < 0) first = i;
            k++;
        }
    }
    *bad = k;
    return first;
}

/* Byte offsets of the f16 scales in one block of each quant type (-1: none more); Q8_K's d is
 * an f32 (f32_at). */
typedef struct {
    int f16_at[2];
    int f32_at;
} scale_pos;

static int scales_of(lt_dtype t, scale_pos *p) {
    *p = (scale_pos){{-1, -1}, -1};
    switch (t) {
    case LT_DTYPE_Q4_0:
    case LT_DTYPE_Q5_0:
    case LT_DTYPE_Q8_0:
        p->f16_at[0] = 0;
        return 1;
    case LT_DTYPE_Q4_1:
    case LT_DTYPE_Q5_1:
    case LT_DTYPE_Q4_K:
    case LT_DTYPE_Q5_K:
        p->f16_at[0] = 0, p->f16_at[1] = 2;
        return 1;
    case LT_DTYPE_Q2_K:
        p->f16_at[0] = 80, p->f16_at[1] = 82;
        return 1;
    case LT_DTYPE_Q3_K:
        p->f16_at[0] = 108;
        return 1;
    case LT_DTYPE_Q6_K:
        p->f16_at[0] = 208;
        return 1;
    case LT_DTYPE_Q8_K:
        p->f32_at = 0;
        return 1;
    default:
        return 0;
    }
}

static int block_bad(const uint8_t *b, const scale_pos *p) {
    for (int k = 0; k < 2; k++)
        if (p->f16_at[k] >= 0) {
            uint16_t h;
            memcpy(&h, b + p->f16_at[k], 2);
            if ((h & 0x7c00) == 0x7c00) return 1;
        }
    if (p->f32_at >= 0) {
        uint32_t u;
        memcpy(&u, b + p->f32_at, 4);
        if ((u & 0x7f800000u) == 0x7f800000u) return 1;
    }
    return 0;
}

lt_status lt_check_finite(lt_dtype t, const void *data, int64_t n, int64_t cols, const char *where,
                          const char *why) {
    if (n <= 0 || !data) return LT_OK;
    int64_t first = -1, bad = 0;
    float firstv = NAN;
    switch (t) {
    case LT_DTYPE_F32:
        first = scan_f32(data, n, &bad);
        if (first >= 0) memcpy(&firstv, (const float *)data + first, 4);
        break;
    case LT_DTYPE_F16:
    case LT_DTYPE_BF16:
        first = scan_u16(data, n, t == LT_DTYPE_F16 ? 0x7c00 : 0x7f80, &bad);
        if (first >= 0) lt_to_f32(t, (const uint16_t *)data + first, &firstv, 1);
        break;
    case LT_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const double *)data + i, 8);
            if (!isfinite(d)) {
                if (first < 0) first = i, firstv = (float)d;
                bad++;
            }
        }
        break;
    default: {
        int64_t be = lt_dtype_block_elems(t), bb = lt_dtype_block_bytes(t);
        if (be <= 1) return LT_OK; /* integers */
        scale_pos sp;
        if (scales_of(t, &sp)) {
            const uint8_t *p = data;
            for (int64_t b = 0; b < n / be; b++)
                if (block_bad(p + b * bb, &sp)) {
                    if (first < 0) {
                        float buf[256];
                        first = b * be;
                        lt_status st = lt_to_f32(t, p + b * bb, buf, be);
                        if (st) return st;
                        firstv = buf[0];
                        for (int64_t i = 0; i < be && isfinite(firstv); i++)
                            firstv = buf[i];
                    }
                    bad += be;
                }
            break;
        }
        float buf[CHUNK_FLOATS];
        const uint8_t *p = data;
        for (int64_t i = 0; i < n; i += CHUNK_FLOATS) {
            int64_t m = n - i < CHUNK_FLOATS ? n - i : CHUNK_FLOATS;
            m -= m % be;
            if (m <= 0) break;
            lt_status st = lt_to_f32(t, p + (i / be) * bb, buf, m);
            if (st) return st;
            int64_t b = 0, f = scan_f32(buf, m, &b);
            if (f >= 0 && first < 0) first = i + f, firstv = buf[f];
            bad += b;
        }
    }
    }
    if (!bad) return LT_OK;
    char at[64];
    if (cols > 0)
        snprintf(at, sizeof at, "[%lld][%lld]", (long long)(first / cols),
                 (long long)(first % cols));
    else
        snprintf(at, sizeof at, "[%lld]", (long long)first);
    return lt_error(LT_ERR_FORMAT, "%s: %lld of %lld values are not finite (first: %s at %s)%s%s",
                    where, (long long)bad, (long long)n,
                    isnan(firstv) ? "nan"
                    : firstv > 0  ? "inf"
                                  : "-inf",
                    at, why ? ": " : "", why ? why : "");
}
