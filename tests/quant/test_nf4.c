/* test_nf4.c - NF4 (QLoRA) quantization against bitsandbytes 0.50.2's own quantize_4bit /
 * dequantize_4bit: identical packed codes, absmax state (plain and double-quantized) and
 * dequantized values on random tensors (goldens: tools/gen_nf4_goldens.py). Plus the code
 * tables, range dequantization and bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/nf4.h"
#include "lt_test.h"

static void *load(const char *name, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/nf4/%s", name);
    char *buf = NULL;
    if (lt_file_read_all(lt_srcpath(rel), &buf, len)) {
        fprintf(stderr, "cannot read %s: %s\n", rel, lt_errmsg());
        return NULL;
    }
    return buf;
}

static int64_t count_diff_u8(const uint8_t *a, const uint8_t *b, int64_t n, const char *what) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i] && bad++ < 3)
            fprintf(stderr, "  %s[%lld]: ours 0x%02x, bitsandbytes 0x%02x\n", what, (long long)i,
                    a[i], b[i]);
    return bad;
}

static int64_t count_diff_f32(const float *a, const float *b, int64_t n, const char *what) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) && bad++ < 3)
            fprintf(stderr, "  %s[%lld]: ours %.9g, bitsandbytes %.9g\n", what, (long long)i,
                    (double)a[i], (double)b[i]);
    return bad;
}

static void check_case(const char *name, int64_t n, int dq, int bf16_out) {
    char fn[128];
    size_t len;
    snprintf(fn, sizeof fn, "%s.in.f32", name);
    float *x = load(fn, &len);
    CHECK(x && (int64_t)len == n * 4, "%s: input size", name);
    if (!x) return;
    lt_nf4_sizes_t sz;
    lt_nf4_sizes(n, dq, &sz);
    lt_nf4 q = {.n = n, .double_quant = dq};
    q.codes = calloc((size_t)sz.codes_bytes, 1);
    q.absmax = dq ? NULL : calloc((size_t)sz.n_blocks, sizeof(float));
    q.qabsmax = dq ? calloc((size_t)sz.n_blocks, 1) : NULL;
    q.absmax2 = dq ? calloc((size_t)sz.absmax2_bytes, 1) : NULL;
    float *scratch = calloc((size_t)sz.n_blocks, sizeof(float));
    CHECK_OK(lt_nf4_quantize(x, &q, scratch));

    snprintf(fn, sizeof fn, "%s.codes.u8", name);
    uint8_t *codes = load(fn, &len);
    CHECK(codes && (int64_t)len == sz.codes_bytes, "%s: codes size %zu vs %lld", name, len,
          (long long)sz.codes_bytes);
    if (codes) CHECK(count_diff_u8(q.codes, codes, sz.codes_bytes, "codes") == 0, "%s: codes identical", name);
    if (dq) {
        snprintf(fn, sizeof fn, "%s.qabsmax.u8", name);
        uint8_t *qa = load(fn, &len);
        CHECK(qa && (int64_t)len == sz.n_blocks, "%s: qabsmax size", name);
        if (qa) CHECK(count_diff_u8(q.qabsmax, qa, sz.n_blocks, "qabsmax") == 0, "%s: 8-bit absmax codes identical", name);
        snprintf(fn, sizeof fn, "%s.absmax2.f32", name);
        float *a2 = load(fn, &len);
        CHECK(a2 && (int64_t)len == sz.absmax2_bytes, "%s: absmax2 size", name);
        if (a2) CHECK(count_diff_f32(q.absmax2, a2, sz.absmax2_bytes / 4, "absmax2") == 0, "%s: absmax2 identical", name);
        snprintf(fn, sizeof fn, "%s.offset.f32", name);
        float *off = load(fn, &len);
        if (off) CHECK(memcmp(&q.offset, off, 4) == 0, "%s: offset ours %.9g bnb %.9g", name, (double)q.offset, (double)off[0]);
        free(qa);
        free(a2);
        free(off);
    } else {
        snprintf(fn, sizeof fn, "%s.absmax.f32", name);
        float *am = load(fn, &len);
        CHECK(am && (int64_t)len == sz.n_blocks * 4, "%s: absmax size", name);
        if (am) CHECK(count_diff_f32(q.absmax, am, sz.n_blocks, "absmax") == 0, "%s: absmax identical", name);
        free(am);
    }
    snprintf(fn, sizeof fn, "%s.out.f32", name);
    float *ref = load(fn, &len);
    float *y = malloc((size_t)n * sizeof(float));
    lt_nf4_dequantize(&q, 0, n, y);
    if (bf16_out) /* bitsandbytes dequantizes a bf16 tensor to bf16 (rounded to nearest even) */
        for (int64_t i = 0; i < n; i++)
            y[i] = lt_bf16_to_f32(lt_f32_to_bf16(y[i]));
    if (ref) CHECK(count_diff_f32(y, ref, n, "dequantized") == 0, "%s: dequantized values identical", name);
    /* a range that starts and ends mid-block gives the same values */
    if (n > 100) {
        float *part = malloc(sizeof(float) * 70);
        lt_nf4_dequantize(&q, 33, 70, part);
        if (bf16_out)
            for (int i = 0; i < 70; i++)
                part[i] = lt_bf16_to_f32(lt_f32_to_bf16(part[i]));
        CHECK(memcmp(part, y + 33, sizeof(float) * 70) == 0, "%s: range dequantization", name);
        free(part);
    }
    free(ref);
    free(y);
    free(codes);
    free(x);
    free(q.codes);
    free(q.absmax);
    free(q.qabsmax);
    free(q.absmax2);
    free(scratch);
}

int main(void) {
    size_t len;
    float *code = load("nf4_code.f32", &len);
    CHECK(code && len == 64 && memcmp(code, lt_nf4_code(), 64) == 0, "NF4 code values = bitsandbytes'");
    free(code);
    float *map = load("dynamic_map.f32", &len);
    CHECK(map && len == 1024, "dynamic map size");
    if (map) CHECK(count_diff_f32(lt_nf4_dynamic_map(), map, 256, "dynamic_map") == 0, "dynamic map = bitsandbytes' create_dynamic_map");
    free(map);

    static const struct { const char *name; int64_t n; int dq, bf16; } cases[] = {
        {"small_f32", 192, 0, 0},        {"small_f32_dq", 192, 1, 0},
        {"ragged_f32", 385, 0, 0},       {"ragged_f32_dq", 385, 1, 0},
        {"weights_bf16_dq", 15360, 1, 1}, {"many_blocks_dq", 38400, 1, 0},
        {"heavy_tail_dq", 12288, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(cases[i].name, cases[i].n, cases[i].dq, cases[i].bf16);

    /* sizes */
    lt_nf4_sizes_t sz;
    lt_nf4_sizes(4096 * 4096, 1, &sz);
    CHECK(sz.codes_bytes == 8388608 && sz.n_blocks == 262144 && sz.absmax2_bytes == 4096 &&
              sz.total_bytes == 8388608 + 262144 + 4096,
          "sizes of a 4096x4096 matrix (0.516 bytes per weight)");

    /* bad input */
    float bad[64] = {0};
    bad[17] = NAN;
    uint8_t codes[32];
    float am[1];
    lt_nf4 q = {.n = 64, .codes = codes, .absmax = am};
    CHECK_ERR(lt_nf4_quantize(bad, &q, NULL), LT_ERR_ARG, "element 17");
    q.n = 0;
    CHECK_ERR(lt_nf4_quantize(bad, &q, NULL), LT_ERR_ARG, "n: expected >= 1");
    q.n = 64;
    q.double_quant = 1;
    CHECK_ERR(lt_nf4_quantize(bad, &q, NULL), LT_ERR_ARG, "storage");
    /* all-zero block: absmax 0, every value dequantizes to 0 */
    float z[64] = {0}, zo[64];
    q.double_quant = 0;
    CHECK_OK(lt_nf4_quantize(z, &q, NULL));
    lt_nf4_dequantize(&q, 0, 64, zo);
    int allz = 1;
    for (int i = 0; i < 64; i++)
        allz &= zo[i] == 0.0f;
    CHECK(allz, "zero block stays zero");
    LT_TEST_END();
}
