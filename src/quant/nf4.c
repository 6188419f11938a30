/* nf4.c - NF4 quantization / dequantization (see include/quant/loratune/nf4.h for the layout).
 *
 * Bit-exactness with bitsandbytes comes from doing each step in the same float arithmetic:
 *   4-bit: scaled = x * (1 / absmax) for full blocks, x / absmax for the last partial block
 *   (bitsandbytes' default quantize_4bit does exactly this), clamped to [-1, 1], then the index
 *   of the first midpoint >= scaled (torch.bucketize, right=False).
 *   8-bit absmax: normed = v / absmax2, binary search for the last map entry <= normed with
 *   map[0] taken as -1 (as bitsandbytes' quantize_cpu does), then the right neighbour when it
 *   is strictly closer. The mean of absmax is summed in double and rounded once.
 * lt_nf4_dequantize runs the twin of nf4_avx2.c / nf4_avx512.c that the dispatch level allows
 * (the same products: same bits). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/hwinfo.h"
#include "loratune/nf4.h"
#include "quant_internal.h"

static const float NF4_CODE[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

static float nf4_mid[15];
static float dyn_map[256];

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.linspace(start, end, steps) in float32 as ATen computes it: start + step * i for the
 * first half, end - step * (steps - 1 - i) for the rest, each a fused multiply-add (ATen's
 * CPU kernels for AVX2 / AVX-512 are compiled with FMA contraction). */
static void linspace_f32(float start, float end, int steps, float *out) {
    float step = (end - start) / (float)(steps - 1);
    int half = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

/* bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8). */
static void build_dynamic_map(float *map) {
    int k = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        float b[65];
        linspace_f32(0.1f, 1.0f, items, b);
        /* 10 ** (i - 6) as Python computes it (a double), used by torch as a float scalar */
        float pf = (float)pow(10.0, (double)(i - 6));
        for (int j = 0; j + 1 < items; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            map[k++] = pf * mean;
            map[k++] = -pf * mean;
        }
    }
    map[k++] = 0.0f;
    map[k++] = 1.0f;
    qsort(map, 256, sizeof(float), cmp_float);
}

static void build_lut8(const float *map);

static void build_tables(void) {
    for (int i = 0; i < 15; i++)
        nf4_mid[i] = (NF4_CODE[i] + NF4_CODE[i + 1]) / 2.0f;
    build_dynamic_map(dyn_map);
    build_lut8(dyn_map);
}

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void init_tables(void) {
    pthread_once(&tables_once, build_tables);
}

const float *lt_nf4_code(void) {
    return NF4_CODE;
}

const float *lt_nf4_dynamic_map(void) {
    init_tables();
    return dyn_map;
}

void lt_nf4_sizes(int64_t n, int double_quant, lt_nf4_sizes_t *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return;
    out->codes_bytes = (n + 1) / 2;
    out->n_blocks = (n + LT_NF4_BLOCK - 1) / LT_NF4_BLOCK;
    if (double_quant) {
        out->qabsmax_bytes = out->n_blocks;
        out->absmax2_bytes =
            (int64_t)sizeof(float) * ((out->n_blocks + LT_NF4_ABSMAX_BLOCK - 1) / LT_NF4_ABSMAX_BLOCK);
    } else {
        out->absmax_bytes = (int64_t)sizeof(float) * out->n_blocks;
    }
    out->total_bytes = out->codes_bytes + out->absmax_bytes + out->qabsmax_bytes + out->absmax2_bytes;
}

static uint8_t nf4_index(float scaled) {
    /* first midpoint >= scaled (bucketize, right=False) */
    int i = 0;
    while (i < 15 && scaled > nf4_mid[i])
        i++;
    return (uint8_t)i;
}

/* The 8-bit index bitsandbytes' CPU quantize_blockwise (0.50) gives: a 65536-entry table over
 * [-1, 1] (entry i stands for -1 + 2i / 65535 and holds the first map index whose midpoint
 * with the next one is not below it), looked up at trunc(((v + 1) * 0.5) * 65535 + 0.5) with
 * v = x * (1 / absmax) clamped to [-1, 1]. Not always the nearest map value (the table's
 * resolution decides near-midpoint values), so it is replicated rather than approximated. */
#define LUT8_SIZE 65536
static uint8_t lut8[LUT8_SIZE];

static void build_lut8(const float *map) {
    float mid[255];
    for (int i = 0; i < 255; i++)
        mid[i] = 0.5f * (map[i] + map[i + 1]);
    int c = 0;
    for (int i = 0; i < LUT8_SIZE; i++) {
        float v = -1.0f + (2.0f * (float)i) / (float)(LUT8_SIZE - 1);
        while (c < 255 && mid[c] < v)
            c++;
        lut8[i] = (uint8_t)c;
    }
}

static uint8_t dyn_index(float v) {
    v = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
    float t = ((v + 1.0f) * 0.5f) * (float)(LUT8_SIZE - 1);
    return lut8[(uint16_t)(t + 0.5f)];
}

/* absmax.mean() as PyTorch's CPU kernel computes it in float on an AVX2 machine
 * (SumKernel.cpp: vectorized_inner_sum / row_sum / multi_row_sum with 8-lane vectors, 4
 * accumulators, a 4-level cascade every 16 rows; then the scalar tail, then the lanes in
 * order; then sum / n; below 8 values its scalar version). Exact for up to 32768 blocks (2M weights per tensor): above that
 * torch splits the sum across its threads (and an AVX-512 build uses 16 lanes), so the offset
 * can differ from bitsandbytes' by an ulp there -- its own result depends on the machine. */
static float torch_mean_f32(const float *x, int64_t n) {
    enum { W = 8, ILP = 4, LEVELS = 4 };
    if (n < W) { /* scalar_inner_sum: 4 accumulators, tail into the first, then combined */
        float a[ILP] = {0};
        int64_t r = n / ILP;
        for (int64_t i = 0; i < r; i++)
            for (int k = 0; k < ILP; k++)
                a[k] += x[i * ILP + k];
        for (int64_t i = r * ILP; i < n; i++)
            a[0] += x[i];
        for (int k = 1; k < ILP; k++)
            a[0] += a[k];
        return a[0] / (float)n;
    }
    const int64_t nvec = n / W, rows = nvec / ILP;
    int64_t ceil_log2 = 0;
    while (((int64_t)1 << ceil_log2) < rows)
        ceil_log2++;
    const int64_t lp = ceil_log2 / LEVELS > 4 ? ceil_log2 / LEVELS : 4;
    const int64_t step = (int64_t)1 << lp, lmask = step - 1;
    float acc[LEVELS][ILP][W];
    memset(acc, 0, sizeof acc);
    int64_t i = 0;
    for (; i + step <= rows;) {
        for (int64_t j = 0; j < step; ++j, ++i)
            for (int k = 0; k < ILP; k++)
                for (int w = 0; w < W; w++)
                    acc[0][k][w] += x[(i * ILP + k) * W + w];
        for (int j = 1; j < LEVELS; ++j) {
            for (int k = 0; k < ILP; k++)
                for (int w = 0; w < W; w++) {
                    acc[j][k][w] += acc[j - 1][k][w];
                    acc[j - 1][k][w] = 0.0f;
                }
            if ((i & (lmask << (j * lp))) != 0) break;
        }
    }
    for (; i < rows; ++i)
        for (int k = 0; k < ILP; k++)
            for (int w = 0; w < W; w++)
                acc[0][k][w] += x[(i * ILP + k) * W + w];
    for (int j = 1; j < LEVELS; ++j)
        for (int k = 0; k < ILP; k++)
            for (int w = 0; w < W; w++)
                acc[0][k][w] += acc[j][k][w];
    float part[W];
    memcpy(part, acc[0][0], sizeof part);
    for (int64_t v = rows * ILP; v < nvec; ++v) /* vectors left over from the rows of 4 */
        for (int w = 0; w < W; w++)
            part[w] += x[v * W + w];
    for (int k = 1; k < ILP; k++)
        for (int w = 0; w < W; w++)
            part[w] += acc[0][k][w];
    float total = 0.0f;
    for (int64_t k = nvec * W; k < n; ++k)
        total += x[k];
    for (int w = 0; w < W; w++)
        total += part[w];
    return total / (float)n;
}

lt_status lt_nf4_quantize(const float *x, lt_nf4 *q, float *scratch) {
    init_tables();
    const int64_t n = q->n;
    if (n < 1) return lt_error(LT_ERR_ARG, "nf4 quantize: n: expected >= 1, got %lld", (long long)n);
    if (!x || !q->codes || (q->double_quant ? !q->qabsmax || !q->absmax2 || !scratch : !q->absmax))
        return lt_error(LT_ERR_ARG, "nf4 quantize: missing input or storage");
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return lt_error(LT_ERR_ARG, "nf4 quantize: element %lld is not finite (%g)",
                            (long long)i, (double)x[i]);
    const int64_t nb = (n + LT_NF4_BLOCK - 1) / LT_NF4_BLOCK;
    float *am = q->double_quant ? scratch : q->absmax;
    memset(q->codes, 0, (size_t)((n + 1) / 2));
    if (n & 1) q->codes[n >> 1] = 7; /* bitsandbytes pads with 0.0, whose NF4 index is 7 */
    for (int64_t b = 0; b < nb; b++) {
        int64_t s = b * LT_NF4_BLOCK, e = s + LT_NF4_BLOCK < n ? s + LT_NF4_BLOCK : n;
        float m = 0.0f;
        for (int64_t i = s; i < e; i++)
            m = fmaxf(m, fabsf(x[i]));
        am[b] = m;
        float mc = m > 1e-38f ? m : 1e-38f; /* absmax.clamp(min=1e-38) */
        int full = e - s == LT_NF4_BLOCK;
        float inv = 1.0f / mc;
        for (int64_t i = s; i < e; i++) {
            float v = full ? x[i] * inv : x[i] / mc;
            v = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
            uint8_t c = nf4_index(v);
            q->codes[i >> 1] |= (uint8_t)((i & 1) ? c : c << 4);
        }
    }
    if (!q->double_quant) return LT_OK;
    float offset = torch_mean_f32(am, nb);
    q->offset = offset;
    for (int64_t b = 0; b < nb; b++)
        am[b] = am[b] - offset;
    return lt_quantize_blockwise8(am, nb, q->qabsmax, q->absmax2);
}

lt_status lt_quantize_blockwise8(const float *x, int64_t n, uint8_t *out, float *absmax) {
    init_tables();
    const int64_t nc = (n + LT_NF4_ABSMAX_BLOCK - 1) / LT_NF4_ABSMAX_BLOCK;
    for (int64_t c = 0; c < nc; c++) {
        int64_t s = c * LT_NF4_ABSMAX_BLOCK;
        int64_t e = s + LT_NF4_ABSMAX_BLOCK < n ? s + LT_NF4_ABSMAX_BLOCK : n;
        float m = 0.0f;
        for (int64_t b = s; b < e; b++)
            m = fmaxf(m, fabsf(x[b]));
        absmax[c] = m;
        float inv = 1.0f / m;
        for (int64_t b = s; b < e; b++) /* m == 0: index 0, as bitsandbytes writes */
            out[b] = m > 0 ? dyn_index(x[b] * inv) : 0;
    }
    return LT_OK;
}

float lt_nf4_block_absmax(const lt_nf4 *q, int64_t b) {
    if (!q->double_quant) return q->absmax[b];
    init_tables();
    return dyn_map[q->qabsmax[b]] * q->absmax2[b / LT_NF4_ABSMAX_BLOCK] + q->offset;
}

lt_cpu_level lt_nf4_kernel_level(void) {
#if LT_X86_KERNELS
    return lt_cpu_level_for(LT_CPU_LEVEL_AVX512);
#else
    return LT_CPU_LEVEL_BASELINE;
#endif
}

void lt_nf4_dequantize(const lt_nf4 *q, int64_t begin, int64_t count, float *out) {
#if LT_X86_KERNELS
    switch (lt_nf4_kernel_level()) {
    case LT_CPU_LEVEL_AVX512: lt_nf4_dequantize_avx512(q, begin, count, out); return;
    case LT_CPU_LEVEL_AVX2: lt_nf4_dequantize_avx2(q, begin, count, out); return;
    case LT_CPU_LEVEL_BASELINE: break;
    }
#endif
    int64_t i = begin, end = begin + count;
    while (i < end) {
        int64_t b = i / LT_NF4_BLOCK;
        int64_t be = (b + 1) * LT_NF4_BLOCK < end ? (b + 1) * LT_NF4_BLOCK : end;
        float a = lt_nf4_block_absmax(q, b);
        for (; i < be; i++) {
            uint8_t byte = q->codes[i >> 1];
            out[i - begin] = NF4_CODE[(i & 1) ? (byte & 15) : (byte >> 4)] * a;
        }
    }
}
