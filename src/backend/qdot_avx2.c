/* qdot_avx2.c - the AVX2 kernels of qdot.h (maddubs + madd for the 8-bit products), reached only
 * through lt_qdot_rows once the dispatch level is avx2 or above: compiled with -mavx2 -mfma
 * -mf16c (CMakeLists.txt: files named *_avx2.c). The loops are qdot_kernels.inc's. */
#include <immintrin.h>
#include <string.h>

#include "qdot.h"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "qdot_avx2.c is compiled with -mavx2 -mfma -mf16c (CMakeLists.txt: files named *_avx2.c)"
#endif

#define QFN(name) avx2_##name
#define QATTR
#define DOT_U8S8(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#include "qdot_kernels.inc"

const lt_qdot_kernels lt_qdot_avx2 = {"avx2",         avx2_rows_q4_0,  avx2_rows_q4_1,
                                      avx2_rows_q8_0, avx2_tile4_q4_0, avx2_tile4_q4_1,
                                      avx2_tile4_q8_0,
    avx2_rows_q4_k, NULL, NULL, NULL};
