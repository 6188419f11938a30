/* dequant_avx2.c - AVX2 twins of the row converters in dequant.c, used by lt_to_f32 when the
 * dispatch level is avx2 or above (compiled with -mavx2 -mfma -mf16c: nothing here may run
 * before lt_to_f32 chose it).
 *
 * A trainer over a lazy model converts every frozen 16-bit or ggml-quantized weight to fp32
 * before each matmul (forward, backward, checkpoint recompute), so these loops run over the
 * whole model two or three times a step. Each kernel computes exactly the scalar reference's
 * float expression, operation by operation (a product then a sum, never an FMA; the scale
 * products such as d * sc in scalar float first), so results are bit-identical to dequant.c,
 * which tests/quant/test_dequant.c checks against gguf-py. The one exception is a NaN f16:
 * F16C returns it quieted where the scalar keeps the payload (both are NaN).
 * Sources may be unaligned (loadu everywhere); n is a whole number of blocks (lt_to_f32
 * checked it). */
#include <immintrin.h>
#include <string.h>

#include "loratune/quant.h"
#include "quant_internal.h"

#if !defined(__AVX2__) || !defined(__F16C__)
#error "dequant_avx2.c is compiled with -mavx2 -mf16c (CMakeLists.txt: files named *_avx2.c)"
#endif

static inline float f16le(const uint8_t *p) {
    return lt_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

/* 8 bytes at p (unsigned) -> 8 int32 lanes */
static inline __m256i u8x8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

/* lanes of a 16-byte vector: [lo, lo + 8) -> 8 int32 */
static inline __m256i lo8(__m128i v) { return _mm256_cvtepu8_epi32(v); }
static inline __m256i hi8(__m128i v) { return _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)); }

static inline __m128i nib_lo(__m128i v) { return _mm_and_si128(v, _mm_set1_epi8(0x0F)); }
static inline __m128i nib_hi(__m128i v) {
    return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
}

/* y = (float)q * d */
static inline void st_mul(float *y, __m256i q, __m256 d) {
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
}
/* y = (float)q * d + m */
static inline void st_mul_add(float *y, __m256i q, __m256 d, __m256 m) {
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), d), m));
}
/* y = d * (float)q - m */
static inline void st_mul_sub(float *y, __m256i q, __m256 d, __m256 m) {
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q)), m));
}

/* bit j of qh (j = first + lane) as 16 or 0, for 8 lanes */
static inline __m256i high_bit16(uint32_t qh, int first) {
    const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                        _mm256_set1_epi32(first));
    __m256i b = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)qh), sh),
                                 _mm256_set1_epi32(1));
    return _mm256_slli_epi32(b, 4);
}

static void q4_0(const uint8_t *b, float *y, int64_t nb) {
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const __m256 d = _mm256_set1_ps(f16le(b));
        const __m128i q = _mm_loadu_si128((const __m128i *)(b + 2));
        const __m128i lo = nib_lo(q), hi = nib_hi(q);
        st_mul(y + 0, _mm256_sub_epi32(lo8(lo), eight), d);
        st_mul(y + 8, _mm256_sub_epi32(hi8(lo), eight), d);
        st_mul(y + 16, _mm256_sub_epi32(lo8(hi), eight), d);
        st_mul(y + 24, _mm256_sub_epi32(hi8(hi), eight), d);
    }
}

static void q4_1(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        const __m256 d = _mm256_set1_ps(f16le(b)), m = _mm256_set1_ps(f16le(b + 2));
        const __m128i q = _mm_loadu_si128((const __m128i *)(b + 4));
        const __m128i lo = nib_lo(q), hi = nib_hi(q);
        st_mul_add(y + 0, lo8(lo), d, m);
        st_mul_add(y + 8, hi8(lo), d, m);
        st_mul_add(y + 16, lo8(hi), d, m);
        st_mul_add(y + 24, hi8(hi), d, m);
    }
}

static void q5(const uint8_t *b, float *y, int64_t nb, int has_min) {
    const int64_t bs = has_min ? 24 : 22;
    const __m256i sixteen = _mm256_set1_epi32(16);
    for (int64_t i = 0; i < nb; i++, b += bs, y += 32) {
        const __m256 d = _mm256_set1_ps(f16le(b));
        const __m256 m = _mm256_set1_ps(has_min ? f16le(b + 2) : 0.0f);
        const uint8_t *p = b + (has_min ? 4 : 2);
        uint32_t qh;
        memcpy(&qh, p, 4); /* little-endian machine (x86) */
        const __m128i q = _mm_loadu_si128((const __m128i *)(p + 4));
        const __m128i lo = nib_lo(q), hi = nib_hi(q);
        __m256i v[4] = {lo8(lo), hi8(lo), lo8(hi), hi8(hi)};
        for (int k = 0; k < 4; k++) {
            /* lanes 8k..8k+7: bit (k & 1) * 8 + lane of the low half, + 16 for the high half */
            __m256i x = _mm256_or_si256(v[k], high_bit16(qh, (k & 1) * 8 + (k >> 1) * 16));
            if (has_min)
                st_mul_add(y + 8 * k, x, d, m);
            else
                st_mul(y + 8 * k, _mm256_sub_epi32(x, sixteen), d);
        }
    }
}

static void q8_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const __m256 d = _mm256_set1_ps(f16le(b));
        for (int k = 0; k < 4; k++)
            st_mul(y + 8 * k,
                   _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k))), d);
    }
}

static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K (qh == NULL) and Q5_K: 4 groups of 64 = 32 low nibbles (d1, m1), 32 high (d2, m2) */
static void qk45(const uint8_t *b, float *y, int64_t nb, int five) {
    const int64_t bs = five ? 176 : 144;
    for (int64_t i = 0; i < nb; i++, b += bs) {
        const float d = f16le(b), dmin = f16le(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *q = b + (five ? 48 : 16);
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * (float)sc), m1 = _mm256_set1_ps(dmin * (float)m);
            scale_min_k4(is + 1, scales, &sc, &m);
            const __m256 d2 = _mm256_set1_ps(d * (float)sc), m2 = _mm256_set1_ps(dmin * (float)m);
            for (int l = 0; l < 32; l += 8) {
                __m256i x = u8x8(q + l);
                __m256i lo = _mm256_and_si256(x, _mm256_set1_epi32(0xF));
                __m256i hi = _mm256_srli_epi32(x, 4);
                if (five) { /* bits is and is + 1 of qh[l] add 16 */
                    __m256i h = u8x8(qh + l);
                    const __m256i one = _mm256_set1_epi32(1);
                    lo = _mm256_add_epi32(lo, _mm256_slli_epi32(
                                                  _mm256_and_si256(_mm256_srli_epi32(h, is), one), 4));
                    hi = _mm256_add_epi32(
                        hi, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, is + 1), one), 4));
                }
                st_mul_sub(y + l, lo, d1, m1);
                st_mul_sub(y + 32 + l, hi, d2, m2);
            }
        }
    }
}

static void q6_k(const uint8_t *b, float *y, int64_t nb) {
    const __m256i f = _mm256_set1_epi32(0xF), three = _mm256_set1_epi32(3),
                  t2 = _mm256_set1_epi32(32);
    for (int64_t i = 0; i < nb; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = f16le(b + 208);
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l += 8) {
                const int is = l / 16;
                const __m256i a = u8x8(ql + l), c = u8x8(ql + l + 32), hh = u8x8(qh + l);
                __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, f),
                                             _mm256_slli_epi32(_mm256_and_si256(hh, three), 4));
                __m256i q2 = _mm256_or_si256(
                    _mm256_and_si256(c, f),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 2), three), 4));
                __m256i q3 = _mm256_or_si256(
                    _mm256_srli_epi32(a, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 4), three), 4));
                __m256i q4 = _mm256_or_si256(
                    _mm256_srli_epi32(c, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 6), three), 4));
                /* scalar: d * (float)sc * (float)q, i.e. (d * sc) * q */
                st_mul(y + l, _mm256_sub_epi32(q1, t2), _mm256_set1_ps(d * (float)sc[is + 0]));
                st_mul(y + l + 32, _mm256_sub_epi32(q2, t2), _mm256_set1_ps(d * (float)sc[is + 2]));
                st_mul(y + l + 64, _mm256_sub_epi32(q3, t2), _mm256_set1_ps(d * (float)sc[is + 4]));
                st_mul(y + l + 96, _mm256_sub_epi32(q4, t2), _mm256_set1_ps(d * (float)sc[is + 6]));
            }
        }
    }
}

static void f16(const uint8_t *p, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
    for (; i < n; i++)
        y[i] = f16le(p + 2 * i);
}

static void bf16(const uint8_t *p, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i)));
        _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; i++)
        y[i] = lt_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}

int lt_to_f32_avx2(lt_dtype t, const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    switch (t) {
    case LT_DTYPE_F16: f16(p, dst, n); return 1;
    case LT_DTYPE_BF16: bf16(p, dst, n); return 1;
    case LT_DTYPE_Q4_0: q4_0(p, dst, n / 32); return 1;
    case LT_DTYPE_Q4_1: q4_1(p, dst, n / 32); return 1;
    case LT_DTYPE_Q5_0: q5(p, dst, n / 32, 0); return 1;
    case LT_DTYPE_Q5_1: q5(p, dst, n / 32, 1); return 1;
    case LT_DTYPE_Q8_0: q8_0(p, dst, n / 32); return 1;
    case LT_DTYPE_Q4_K: qk45(p, dst, n / 256, 0); return 1;
    case LT_DTYPE_Q5_K: qk45(p, dst, n / 256, 1); return 1;
    case LT_DTYPE_Q6_K: q6_k(p, dst, n / 256); return 1;
    default: return 0;
    }
}
