/* attention_kv_avx2.c - attention over a KV cache (attention_kv.inc) compiled with -mavx2 -mfma
 * -ffp-contract=off (CMakeLists.txt: files named *_avx2.c): the baseline's operations, 8 lanes
 * wide. Reached only through lt_cpu_attention_kv_ once the dispatch level is avx2 or above. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend_internal.h"

#if !defined(__AVX2__)
#error "attention_kv_avx2.c is compiled with -mavx2 (CMakeLists.txt: files named *_avx2.c)"
#endif

static int max_threads(void) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}
static int thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

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

#define AK_FN lt_attention_kv_avx2_
#define AK_ATTR
#include "attention_kv.inc"
