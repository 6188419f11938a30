/* qdot_avx512.c - the AVX-512 VNNI kernels of qdot.h: one vpdpbusd (u8 x s8, 4 products summed
 * into each int32 lane, 256-bit: AVX512_VNNI + AVX512VL) per block instead of maddubs + madd.
 * Compiled with the avx512 level's flags (CMakeLists.txt: files named *_avx512.c) plus
 * avx512vnni on these functions; reached only through lt_qdot_rows when the level is avx512 and
 * the CPU has avx512_vnni. The loops are qdot_kernels.inc's. */
#include <immintrin.h>
#include <string.h>

#include "qdot.h"

#if !defined(__AVX512F__) || !defined(__AVX512VL__)
#error                                                                                             \
    "qdot_avx512.c is compiled with -mavx512f -mavx512vl (CMakeLists.txt: files named *_avx512.c)"
#endif

#define QFN(name) vnni_##name
#define QATTR __attribute__((target("avx512vnni")))
#define DOT_U8S8(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define QTILE8
#include "qdot_kernels.inc"

const lt_qdot_kernels lt_qdot_avx512 = {"avx512vnni",   vnni_rows_q4_0,  vnni_rows_q4_1,
                                        vnni_rows_q8_0, vnni_tile4_q4_0, vnni_tile4_q4_1,
                                        vnni_tile4_q8_0,
    vnni_rows_q4_k, vnni_tile8_q4_0, vnni_tile8_q4_1, vnni_tile8_q8_0};
