/* attention_kv_avx2.c - attention over a KV cache (attention_kv.inc) compiled with -mavx2 -mfma
 * -mf16c -ffp-contract=off (CMakeLists.txt: files named *_avx2.c): the baseline's operations, 8
 * lanes wide, over an fp32 or an fp16 cache; and fp32 -> fp16 rounding with F16C. Reached only
 * through lt_cpu_attention_kv_ / _f16_ / lt_cpu_to_f16_ once the dispatch level is avx2 or
 * above. */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend_internal.h"

#if !defined(__AVX2__)
#error "attention_kv_avx2.c is compiled with -mavx2 (CMakeLists.txt: files named *_avx2.c)"
#endif


/* as backend_cpu_infer.c's */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_any __attribute__((vector_size(32), aligned(4), may_alias));
#define LOAD8(p) (*(const v8f_any *)(p))

static inline float lanes_sum(const v8f *a, const float *w, const float *x, int in8, int in) {
    const v8f v = *a;
    float s = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    for (int i = in8; i < in; i++)
        s += w[i] * x[i];
    return s;
}

/* out[u] = lanes_sum(a[u]) for 8 accumulators (no tail): hadd pairs lanes (0+1, 2+3, ...),
 * a second hadd makes (0+1)+(2+3) and (4+5)+(6+7) in the two halves, and adding the halves
 * gives ((0+1)+(2+3))+((4+5)+(6+7)): lanes_sum's tree, operation for operation. */
static inline void sum8(float *out, const v8f *a) {
    __m256 h[8];
    memcpy(h, a, sizeof h);
    const __m256 h01 = _mm256_hadd_ps(h[0], h[1]), h23 = _mm256_hadd_ps(h[2], h[3]);
    const __m256 h45 = _mm256_hadd_ps(h[4], h[5]), h67 = _mm256_hadd_ps(h[6], h[7]);
    const __m256 q0 = _mm256_hadd_ps(h01, h23), q1 = _mm256_hadd_ps(h45, h67);
    const __m256 lo = _mm256_permute2f128_ps(q0, q1, 0x20),
                 hi = _mm256_permute2f128_ps(q0, q1, 0x31);
    _mm256_storeu_ps(out, _mm256_add_ps(lo, hi));
}
#define AK_SUM8(out, a) sum8(out, a)

#define AK_ATTR
#define AK_FN lt_attention_kv_avx2_
#define AK_AV64 ak_av64
#define AK_KT float
#define AK_LOADKV(p) LOAD8(p)
#define AK_KV1(p, i) ((p)[i])
#include "attention_kv.inc"
#undef AK_FN
#undef AK_AV64
#undef AK_KT
#undef AK_LOADKV
#undef AK_KV1

/* 8 fp16 cache elements widened with F16C (exact) */
static inline v8f load8_f16(const uint16_t *p) {
    const __m256 r = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    v8f o;
    memcpy(&o, &r, sizeof o);
    return o;
}
#define AK_FN lt_attention_kv_f16_avx2_
#define AK_AV64 ak_av64_f16
#define AK_KT uint16_t
#define AK_LOADKV(p) load8_f16(p)
#define AK_KV1(p, i) _cvtsh_ss((p)[i])
#include "attention_kv.inc"

/* dst[n] = src[n] rounded to fp16, nearest even (lt_f32_to_f16's rounding, 8 at a time) */
void lt_to_f16_avx2_(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = lt_f32_to_f16(src[i]);
}
