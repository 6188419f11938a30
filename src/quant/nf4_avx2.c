/* nf4_avx2.c - lt_nf4_dequantize with AVX2 (compiled with -mavx2 -mfma -mf16c: nothing here may
 * run before lt_nf4_dequantize chose it). The same product code x absmax as the scalar loop of
 * nf4.c, so the same bits; 8 values per step from an even index, the rest one by one. */
#include <immintrin.h>
#include <string.h>

#include "quant_internal.h"

#if !defined(__AVX2__)
#error "nf4_avx2.c is compiled with -mavx2 (CMakeLists.txt: files named *_avx2.c)"
#endif

/* 8 codes from the 4 bytes at p (high nibble first) times a: the 16-entry table as two 8-lane
 * permutes, bit 3 of the code picking between them; the same product as the scalar loop */
static inline void nf4_8(const uint8_t *p, __m256 a, __m256 t0, __m256 t1, float *out) {
    uint32_t w;
    memcpy(&w, p, 4);
    __m128i b = _mm_cvtsi32_si128((int)w);
    __m256i x = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b)); /* b0 b0 b1 b1 b2 b2 b3 b3 */
    __m256i c = _mm256_and_si256(_mm256_srlv_epi32(x, _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0)),
                                 _mm256_set1_epi32(15));
    __m256 lo = _mm256_permutevar8x32_ps(t0, c), hi = _mm256_permutevar8x32_ps(t1, c);
    __m256 v = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));
    _mm256_storeu_ps(out, _mm256_mul_ps(v, a));
}

void lt_nf4_dequantize_avx2(const lt_nf4 *q, int64_t begin, int64_t count, float *out) {
    const float *code = lt_nf4_code();
    const __m256 t0 = _mm256_loadu_ps(code), t1 = _mm256_loadu_ps(code + 8);
    int64_t i = begin, end = begin + count;
    while (i < end) {
        int64_t b = i / LT_NF4_BLOCK;
        int64_t be = (b + 1) * LT_NF4_BLOCK < end ? (b + 1) * LT_NF4_BLOCK : end;
        float a = lt_nf4_block_absmax(q, b);
        if (!(i & 1)) {
            const __m256 av = _mm256_set1_ps(a);
            for (; i + 8 <= be; i += 8)
                nf4_8(q->codes + (i >> 1), av, t0, t1, out + (i - begin));
        }
        for (; i < be; i++) {
            uint8_t byte = q->codes[i >> 1];
            out[i - begin] = code[(i & 1) ? (byte & 15) : (byte >> 4)] * a;
        }
    }
}
