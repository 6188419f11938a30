/* nf4_avx512.c - lt_nf4_dequantize with AVX-512 (compiled with -mavx512f/bw/vl: nothing here may
 * run before lt_nf4_dequantize chose it). The 16-entry code table fits one register, so a code
 * is one vpermps lane lookup (vpermps reads only the low 4 bits of each index: no mask needed);
 * the same product code x absmax as the scalar loop of nf4.c, so the same bits. 16 values per
 * step from an even index, the rest one by one. */
#include <immintrin.h>
#include <string.h>

#include "quant_internal.h"

#if !defined(__AVX512F__)
#error "nf4_avx512.c is compiled with -mavx512f (CMakeLists.txt: files named *_avx512.c)"
#endif

/* 16 codes from the 8 bytes at p (high nibble first) times a */
static inline void nf4_16(const uint8_t *p, __m512 a, __m512 table, float *out) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m512i x = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b)); /* b0 b0 b1 b1 ... b7 b7 */
    __m512i c =
        _mm512_srlv_epi32(x, _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0));
    _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_permutexvar_ps(c, table), a));
}

void lt_nf4_dequantize_avx512(const lt_nf4 *q, int64_t begin, int64_t count, float *out) {
    const float *code = lt_nf4_code();
    const __m512 table = _mm512_loadu_ps(code);
    int64_t i = begin, end = begin + count;
    while (i < end) {
        int64_t b = i / LT_NF4_BLOCK;
        int64_t be = (b + 1) * LT_NF4_BLOCK < end ? (b + 1) * LT_NF4_BLOCK : end;
        float a = lt_nf4_block_absmax(q, b);
        if (!(i & 1)) {
            const __m512 av = _mm512_set1_ps(a);
            for (; i + 16 <= be; i += 16)
                nf4_16(q->codes + (i >> 1), av, table, out + (i - begin));
        }
        for (; i < be; i++) {
            uint8_t byte = q->codes[i >> 1];
            out[i - begin] = code[(i & 1) ? (byte & 15) : (byte >> 4)] * a;
        }
    }
}
