/* test_dequant.c - lt_to_f32 / quantizers against goldens from gguf-py.
 *
 * tests/data/quant/<TYPE>.bin holds raw blocks, <TYPE>.f32 the float32 output of
 * gguf.quants.dequantize (numpy for Q8_K and the scalar types), written by
 * tools/gen_quant_goldens.py. Comparison is bit-exact (memcmp); the first mismatch is
 * printed. Quantizer goldens: <TYPE>.qin.f32 -> <TYPE>.qout.bin from gguf.quants.quantize. */
#include <stdint.h>

#include "loratune/quant.h"
#include "lt_test.h"

static void *load(const char *name, const char *ext, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/quant/%s%s", name, ext);
    char *buf = NULL;
    lt_status st = lt_file_read_all(lt_srcpath(rel), &buf, len);
    CHECK(st == LT_OK, "%s", lt_errmsg());
    return st == LT_OK ? buf : NULL;
}

/* Index of the first differing float (bitwise), or -1. */
static int64_t first_mismatch(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0) return i;
    return -1;
}

static void check_type(lt_dtype t) {
    const char *name = lt_dtype_name(t);
    size_t nraw = 0, nref = 0;
    uint8_t *raw = load(name, ".bin", &nraw);
    float *ref = load(name, ".f32", &nref);
    if (!raw || !ref) goto done;
    int64_t n = (int64_t)(nref / 4);
    CHECK(lt_dtype_nbytes(t, n) == (int64_t)nraw, "%s: %zu raw bytes for %lld values", name, nraw,
          (long long)n);
    if (lt_dtype_nbytes(t, n) != (int64_t)nraw) goto done;
    float *out = malloc((size_t)n * 4);
    /* unaligned source: copy behind one byte */
    uint8_t *un = malloc(nraw + 1);
    memcpy(un + 1, raw, nraw);
    for (int pass = 0; pass < 2; pass++) {
        memset(out, 0xff, (size_t)n * 4);
        CHECK_OK(lt_to_f32(t, pass ? (const void *)(un + 1) : raw, out, n));
        int64_t k = first_mismatch(out, ref, n);
        CHECK(k < 0, "%s%s: first mismatch at %lld of %lld: got %.9g (0x%08x), want %.9g (0x%08x)",
              name, pass ? " (unaligned)" : "", (long long)k, (long long)n, k < 0 ? 0 : out[k],
              k < 0 ? 0u : *(uint32_t *)&out[k], k < 0 ? 0 : ref[k],
              k < 0 ? 0u : *(uint32_t *)&ref[k]);
    }
    /* n not a multiple of the block size is an argument error */
    if (lt_dtype_block_elems(t) > 1) CHECK_ERR(lt_to_f32(t, raw, out, 17), LT_ERR_ARG, name);
    free(un);
    free(out);
done:
    free(raw);
    free(ref);
}

static void check_quantizer(lt_dtype t) {
    const char *name = lt_dtype_name(t);
    size_t nin = 0, nout = 0;
    float *in = load(name, ".qin.f32", &nin);
    uint8_t *ref = load(name, ".qout.bin", &nout);
    if (!in || !ref) goto done;
    int64_t n = (int64_t)(nin / 4);
    CHECK(lt_dtype_nbytes(t, n) == (int64_t)nout, "%s quant golden sizes", name);
    if (lt_dtype_nbytes(t, n) != (int64_t)nout) goto done;
    uint8_t *q = calloc(1, nout);
    CHECK_OK(lt_quantize(t, in, q, n));
    size_t k = 0;
    while (k < nout && q[k] == ref[k])
        k++;
    CHECK(k == nout,
          "%s quantize: first differing byte %zu of %zu (block %zu): got 0x%02x want 0x%02x", name,
          k, nout, k / (size_t)lt_dtype_block_bytes(t), k < nout ? q[k] : 0, k < nout ? ref[k] : 0);
    /* round trip: dequantized values within half a step of the input */
    float *back = malloc((size_t)n * 4);
    CHECK_OK(lt_to_f32(t, q, back, n));
    double worst = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        float lo = in[b * 32], hi = in[b * 32];
        for (int j = 0; j < 32; j++) {
            lo = fminf(lo, in[b * 32 + j]);
            hi = fmaxf(hi, in[b * 32 + j]);
        }
        double range = fmax(fabs(lo), fabs(hi)) * 2 + 1e-30;
        for (int j = 0; j < 32; j++) {
            double e = fabs(back[b * 32 + j] - in[b * 32 + j]) / range;
            if (e > worst) worst = e;
        }
    }
    double tol = t == LT_DTYPE_Q8_0 ? 1.0 / 254 + 1e-3 : 1.0 / 15 + 1e-3;
    CHECK(worst <= tol, "%s round trip: worst relative error %g > %g", name, worst, tol);
    free(back);
    free(q);
done:
    free(in);
    free(ref);
}

int main(void) {
    const lt_dtype types[] = {
        LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1, LT_DTYPE_Q8_0, LT_DTYPE_Q2_K,
        LT_DTYPE_Q3_K, LT_DTYPE_Q4_K, LT_DTYPE_Q5_K, LT_DTYPE_Q6_K, LT_DTYPE_Q8_K, LT_DTYPE_F16,
        LT_DTYPE_BF16, LT_DTYPE_F64,  LT_DTYPE_I8,   LT_DTYPE_I16,  LT_DTYPE_I32,  LT_DTYPE_I64,
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        check_type(types[i]);
    check_quantizer(LT_DTYPE_Q8_0);
    check_quantizer(LT_DTYPE_Q4_0);
    check_quantizer(LT_DTYPE_Q4_1);
    CHECK_ERR(lt_quantize(LT_DTYPE_Q4_K, NULL, NULL, 256), LT_ERR_UNSUPPORTED, "Q4_K");

    /* F32 passes through; U8/BOOL convert by value */
    const float f[3] = {1.5f, -0.0f, 3e38f};
    float o[3];
    CHECK_OK(lt_to_f32(LT_DTYPE_F32, f, o, 3));
    CHECK(memcmp(f, o, sizeof f) == 0, "F32 copy");
    const uint8_t u[3] = {0, 200, 1};
    CHECK_OK(lt_to_f32(LT_DTYPE_U8, u, o, 3));
    CHECK(o[0] == 0 && o[1] == 200 && o[2] == 1, "U8");
    CHECK_OK(lt_to_f32(LT_DTYPE_BOOL, u, o, 3));
    CHECK(o[0] == 0 && o[1] == 1 && o[2] == 1, "BOOL");
    CHECK_ERR(lt_to_f32((lt_dtype)999, u, o, 3), LT_ERR_ARG, "dtype");
    LT_TEST_END();
}
