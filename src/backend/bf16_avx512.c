/* bf16_avx512.c - fp32 -> bf16 rounding 16 values at a time (AVX512F + AVX512BW), the same
 * integers as lt_f32_to_bf16 (core.h): nearest even, a NaN kept NaN (quieted), subnormals
 * rounded as any other value (vcvtneps2bf16 would flush them, so it is not used). Compiled with
 * the avx512 level's flags (CMakeLists.txt: files named *_avx512.c); reached only through
 * lt_host_to_bf16_ (gemm_bf16.c) when the dispatch level is avx512. */
#include <immintrin.h>
#include <stdint.h>

#include "backend_internal.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__)
#error                                                                                             \
    "bf16_avx512.c is compiled with -mavx512f -mavx512bw (CMakeLists.txt: files named *_avx512.c)"
#endif

static inline __m256i round16(__m512i u) {
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    __m512i r = _mm512_add_epi32(
        u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

void lt_to_bf16_avx512_(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), round16(_mm512_loadu_si512(src + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, round16(_mm512_maskz_loadu_epi32(m, src + i)));
    }
}
