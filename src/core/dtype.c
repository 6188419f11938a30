/* dtype.c - dtype names and sizes, f16/bf16 conversions, tensor views. */
#include "loratune/core.h"

#include <math.h>
#include <string.h>

typedef struct {
    const char *name;
    int64_t block_elems;
    int64_t block_bytes;
} dtype_info;

/* Block sizes and byte counts of the ggml quant types follow ggml-common.h. */
static const dtype_info k_dtypes[LT_DTYPE_COUNT] = {
    [LT_DTYPE_F32] = {"F32", 1, 4},       [LT_DTYPE_F16] = {"F16", 1, 2},
    [LT_DTYPE_BF16] = {"BF16", 1, 2},     [LT_DTYPE_F64] = {"F64", 1, 8},
    [LT_DTYPE_I8] = {"I8", 1, 1},         [LT_DTYPE_U8] = {"U8", 1, 1},
    [LT_DTYPE_I16] = {"I16", 1, 2},       [LT_DTYPE_I32] = {"I32", 1, 4},
    [LT_DTYPE_I64] = {"I64", 1, 8},       [LT_DTYPE_BOOL] = {"BOOL", 1, 1},
    [LT_DTYPE_Q4_0] = {"Q4_0", 32, 18},   [LT_DTYPE_Q4_1] = {"Q4_1", 32, 20},
    [LT_DTYPE_Q5_0] = {"Q5_0", 32, 22},   [LT_DTYPE_Q5_1] = {"Q5_1", 32, 24},
    [LT_DTYPE_Q8_0] = {"Q8_0", 32, 34},   [LT_DTYPE_Q2_K] = {"Q2_K", 256, 84},
    [LT_DTYPE_Q3_K] = {"Q3_K", 256, 110}, [LT_DTYPE_Q4_K] = {"Q4_K", 256, 144},
    [LT_DTYPE_Q5_K] = {"Q5_K", 256, 176}, [LT_DTYPE_Q6_K] = {"Q6_K", 256, 210},
    [LT_DTYPE_Q8_K] = {"Q8_K", 256, 292},
};

const char *lt_dtype_name(lt_dtype t) {
    if ((unsigned)t >= LT_DTYPE_COUNT) return "?";
    return k_dtypes[t].name;
}

int lt_dtype_from_name(const char *name, lt_dtype *out) {
    for (int i = 0; i < LT_DTYPE_COUNT; i++) {
        if (strcmp(k_dtypes[i].name, name) == 0) {
            *out = (lt_dtype)i;
            return 0;
        }
    }
    return -1;
}

int64_t lt_dtype_block_elems(lt_dtype t) {
    return (unsigned)t < LT_DTYPE_COUNT ? k_dtypes[t].block_elems : 0;
}
int64_t lt_dtype_block_bytes(lt_dtype t) {
    return (unsigned)t < LT_DTYPE_COUNT ? k_dtypes[t].block_bytes : 0;
}

int64_t lt_dtype_nbytes(lt_dtype t, int64_t n) {
    if ((unsigned)t >= LT_DTYPE_COUNT || n < 0) return -1;
    int64_t be = k_dtypes[t].block_elems, bb = k_dtypes[t].block_bytes;
    if (n % be != 0) return -1;
    int64_t blocks = n / be;
    if (blocks > INT64_MAX / bb) return -1;
    return blocks * bb;
}

int64_t lt_tensor_numel(const lt_tensor_view *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float lt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t lt_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {
        /* result is subnormal or zero: value / 2^-24 rounded to nearest even */
        float a = bits_f32(ax);
        float q = a * 16777216.0f; /* exact scaling by 2^24 */
        uint32_t m = (uint32_t)nearbyintf(q);
        return (uint16_t)(sign | m);
    }
    uint32_t mant = ax & 0x7fffffu;
    uint32_t exp = (ax >> 23) - 112;
    uint32_t r = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

/* lt_bf16_to_f32 / lt_f32_to_bf16: inline in core.h */
