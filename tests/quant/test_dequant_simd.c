/* test_dequant_simd.c - lt_to_f32 (the AVX2 kernels at dispatch level avx2 and above) against
 * the scalar reference converters of dequant.c, which test_dequant.c holds to gguf-py's goldens
 * bit for bit; and lt_nf4_dequantize (scalar, AVX2, AVX-512) over arbitrary ranges against code
 * value x block absmax. Everything runs at every dispatch level this CPU has
 * (lt_cpu_set_max_level), so an AVX-512 machine checks all three variants.
 *
 * The goldens are a few blocks each; here every ggml type gets 2000 blocks of random bytes
 * (random scales too: the odd inf / NaN scale must come out the same way), read from an
 * unaligned address, and F16 / BF16 every one of the 65536 bit patterns. Equality is bitwise,
 * except that two NaNs are equal (F16C quiets a signalling NaN, the scalar keeps its payload). */
#include <stdint.h>

#include "loratune/nf4.h"
#include "loratune/quant.h"
#include "lt_test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static const char *level_name(void) { return lt_cpu_level_name(lt_cpu_level_active()); }

static int same(float a, float b) {
    if (a != a && b != b) return 1;
    return memcmp(&a, &b, 4) == 0;
}

static int64_t first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!same(a[i], b[i])) return i;
    return -1;
}

typedef void (*row_fn)(const void *, float *, int64_t);

static void check_blocks(lt_dtype t, row_fn ref) {
    const int64_t nblk = 2000, be = lt_dtype_block_elems(t), bb = lt_dtype_block_bytes(t);
    const int64_t n = nblk * be;
    uint8_t *raw = malloc((size_t)(nblk * bb + 1));
    float *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    for (int64_t i = 0; i < nblk * bb + 1; i++)
        raw[i] = (uint8_t)next_u32();
    const uint8_t *src = raw + 1; /* unaligned */
    ref(src, want, n);
    memset(got, 0xff, (size_t)n * 4);
    CHECK_OK(lt_to_f32(t, src, got, n));
    int64_t k = first_diff(got, want, n);
    CHECK(k < 0, "[%s] %s: value %lld (block %lld): got %.9g (0x%08x), scalar %.9g (0x%08x)",
          level_name(), lt_dtype_name(t), (long long)k, (long long)(k / be), k < 0 ? 0 : got[k],
          k < 0 ? 0u : *(uint32_t *)&got[k], k < 0 ? 0 : want[k],
          k < 0 ? 0u : *(uint32_t *)&want[k]);
    /* one block alone, and a run ending in the last block: no kernel reads or writes past n */
    float one[256 + 8];
    for (int i = 0; i < 256 + 8; i++)
        one[i] = -7.0f;
    CHECK_OK(lt_to_f32(t, src + (nblk - 1) * bb, one, be));
    CHECK(first_diff(one, want + (nblk - 1) * be, be) < 0 && one[be] == -7.0f,
          "[%s] %s: the last block alone", level_name(), lt_dtype_name(t));
    free(raw);
    free(want);
    free(got);
}

static void check_16bit(lt_dtype t) {
    const int64_t n = 65536 + 5; /* every pattern, then a tail shorter than a vector */
    uint8_t *raw = malloc((size_t)(2 * n + 1));
    float *got = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(i < 65536 ? i : next_u32());
        raw[1 + 2 * i] = (uint8_t)(h & 0xff);
        raw[2 + 2 * i] = (uint8_t)(h >> 8);
    }
    CHECK_OK(lt_to_f32(t, raw + 1, got, n));
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        uint16_t h = (uint16_t)(raw[1 + 2 * i] | (raw[2 + 2 * i] << 8));
        float w = t == LT_DTYPE_F16 ? lt_f16_to_f32(h) : lt_bf16_to_f32(h);
        if (!same(got[i], w)) bad = i;
    }
    CHECK(bad < 0, "[%s] %s: value %lld differs from the scalar conversion", level_name(),
          lt_dtype_name(t), (long long)bad);
    free(raw);
    free(got);
}

static void check_nf4(int double_quant) {
    const int64_t n = 64 * 300 + 37; /* a partial last block */
    float *x = malloc((size_t)n * 4), *got = malloc((size_t)(n + 1) * 4);
    for (int64_t i = 0; i < n; i++)
        x[i] = ((float)(next_u32() % 20001) - 10000.0f) / 777.0f;
    lt_nf4_sizes_t sz;
    lt_nf4_sizes(n, double_quant, &sz);
    lt_nf4 q = {.n = n, .double_quant = double_quant};
    q.codes = malloc((size_t)sz.codes_bytes);
    q.absmax = malloc((size_t)sz.n_blocks * 4);
    q.qabsmax = malloc((size_t)sz.n_blocks);
    q.absmax2 = malloc((size_t)(sz.n_blocks / 256 + 1) * 4);
    float *scratch = malloc((size_t)sz.n_blocks * 4);
    CHECK_OK(lt_nf4_quantize(x, &q, scratch));
    const float *code = lt_nf4_code();
    /* ranges: whole, odd starts, short, crossing blocks, ending at n */
    const int64_t ranges[][2] = {{0, n}, {1, n - 1}, {3, 13}, {63, 2}, {64, 64}, {100, 1000},
                                 {n - 37, 37}, {n - 1, 1}, {7, 8}, {8, 7}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        const int64_t b0 = ranges[r][0], c = ranges[r][1];
        got[c] = -7.0f;
        lt_nf4_dequantize(&q, b0, c, got);
        int64_t bad = -1;
        for (int64_t i = 0; i < c && bad < 0; i++) {
            const int64_t e = b0 + i;
            const uint8_t byte = q.codes[e >> 1];
            const float w = code[(e & 1) ? (byte & 15) : (byte >> 4)] *
                            lt_nf4_block_absmax(&q, e / LT_NF4_BLOCK);
            if (!same(got[i], w)) bad = i;
        }
        CHECK(bad < 0 && got[c] == -7.0f,
              "[%s] nf4 (double quant %d) [%lld, +%lld): element %lld", level_name(), double_quant, (long long)b0, (long long)c, (long long)bad);
    }
    free(x);
    free(got);
    free(q.codes);
    free(q.absmax);
    free(q.qabsmax);
    free(q.absmax2);
    free(scratch);
}

static void run_all(void) {
    check_blocks(LT_DTYPE_Q4_0, lt_dequant_row_q4_0);
    check_blocks(LT_DTYPE_Q4_1, lt_dequant_row_q4_1);
    check_blocks(LT_DTYPE_Q5_0, lt_dequant_row_q5_0);
    check_blocks(LT_DTYPE_Q5_1, lt_dequant_row_q5_1);
    check_blocks(LT_DTYPE_Q8_0, lt_dequant_row_q8_0);
    check_blocks(LT_DTYPE_Q2_K, lt_dequant_row_q2_k);
    check_blocks(LT_DTYPE_Q3_K, lt_dequant_row_q3_k);
    check_blocks(LT_DTYPE_Q4_K, lt_dequant_row_q4_k);
    check_blocks(LT_DTYPE_Q5_K, lt_dequant_row_q5_k);
    check_blocks(LT_DTYPE_Q6_K, lt_dequant_row_q6_k);
    check_blocks(LT_DTYPE_Q8_K, lt_dequant_row_q8_k);
    check_16bit(LT_DTYPE_F16);
    check_16bit(LT_DTYPE_BF16);
    check_nf4(0);
    check_nf4(1);
}

static lt_cpu_level min_level(int a, lt_cpu_level b) { return a < (int)b ? (lt_cpu_level)a : b; }

int main(void) {
    /* every cap, those above the CPU's level too (which must change nothing: run on an AVX2
     * machine, the avx512 cap runs the avx2 kernels again, as the uncapped program does) */
    const int top = (int)lt_cpu_level_detected();
    for (int cap = LT_CPU_LEVEL_BASELINE; cap < LT_CPU_LEVEL_COUNT; cap++) {
        CHECK_OK(lt_cpu_set_max_level((lt_cpu_level)cap));
        const int l = cap < top ? cap : top;
        CHECK(lt_cpu_level_active() == (lt_cpu_level)l &&
                  lt_quant_kernel_level() == min_level(l, LT_CPU_LEVEL_AVX2) &&
                  lt_nf4_kernel_level() == min_level(l, LT_CPU_LEVEL_AVX512),
              "cap %s: dequantization %s, nf4 %s", lt_cpu_level_name((lt_cpu_level)cap),
              lt_cpu_level_name(lt_quant_kernel_level()), lt_cpu_level_name(lt_nf4_kernel_level()));
        printf("cap %s, level %s: dequantization %s, nf4 %s\n",
               lt_cpu_level_name((lt_cpu_level)cap), level_name(),
               lt_cpu_level_name(lt_quant_kernel_level()), lt_cpu_level_name(lt_nf4_kernel_level()));
        run_all();
    }
    LT_TEST_END();
}
