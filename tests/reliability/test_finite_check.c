/* test_finite_check.c - issue 18 finding 2, the pieces under the CLI test (test_nonfinite.py):
 *   - lt_check_finite on quantized blocks reads only the blocks' scales; for every quant type
 *     its answer (and count) must equal a scan of lt_to_f32's dequantized values (the ggml
 *     bit-exact reference), for random blocks with finite scales, and with one scale made
 *     NaN / inf at a time (every scale field of the block, found by trying every 2-byte
 *     position: a position that makes the dequantized block non-finite is a scale);
 *   - F16 / BF16 / F32 bits, message pieces (count, first index as [row][col]);
 *   - a llama2.c model with a NaN weight is refused naming the tensor and the place;
 *   - every adapter writer (PEFT, mlx-lm, GGUF) refuses an adapter with a NaN in lora_B, names
 *     the tensor, and leaves no file behind. */
#include <stdio.h>
#include <sys/stat.h>

#include "loratune/adapter.h"
#include "loratune/model.h"
#include "loratune/quant.h"
#include "lt_test.h"

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)g_rng;
}

/* number of non-finite values in the dequantized blocks: the reference */
static int64_t ref_bad(lt_dtype t, const uint8_t *b, int64_t n) {
    static float out[4096];
    lt_to_f32(t, b, out, n);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        k += !isfinite(out[i]);
    return k;
}

static int64_t got_bad(lt_dtype t, const uint8_t *b, int64_t n) {
    lt_status st = lt_check_finite(t, b, n, 0, "x", NULL);
    if (!st) return 0;
    long long k = -1;
    sscanf(lt_errmsg(), "x: %lld of", &k);
    return k;
}

static void quant_types(void) {
    const lt_dtype types[] = {LT_DTYPE_Q4_0, LT_DTYPE_Q4_1, LT_DTYPE_Q5_0, LT_DTYPE_Q5_1,
                              LT_DTYPE_Q8_0, LT_DTYPE_Q2_K, LT_DTYPE_Q3_K, LT_DTYPE_Q4_K,
                              LT_DTYPE_Q5_K, LT_DTYPE_Q6_K, LT_DTYPE_Q8_K};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        lt_dtype t = types[ti];
        int64_t be = lt_dtype_block_elems(t), bb = lt_dtype_block_bytes(t);
        int64_t nblk = 4096 / be, n = nblk * be;
        uint8_t *blk = calloc((size_t)(nblk * bb), 1);
        /* random blocks; every 2-byte field that decodes as a non-finite f16 is made 0x3c00
         * (1.0) so that the start is finite whatever the layout (f32 d of Q8_K: 1.0f) */
        for (int64_t i = 0; i < nblk * bb; i++)
            blk[i] = (uint8_t)rnd();
        for (int64_t b = 0; b < nblk; b++)
            for (int64_t o = 0; o + 1 < bb; o++) {
                uint8_t *p = blk + b * bb + o;
                if ((p[1] & 0x7c) == 0x7c) p[1] &= 0x3f;
            }
        if (t == LT_DTYPE_Q8_K)
            for (int64_t b = 0; b < nblk; b++) {
                float one = 1.0f;
                memcpy(blk + b * bb, &one, 4);
            }
        CHECK(ref_bad(t, blk, n) == 0, "%s: the random blocks dequantize finite", lt_dtype_name(t));
        CHECK_OK(lt_check_finite(t, blk, n, 0, "x", NULL));
        /* every byte pair of block 1 made NaN, then +inf: the check agrees with the reference */
        int scales = 0, agree = 1;
        for (int64_t o = 0; o + 1 < bb && agree; o++)
            for (int v = 0; v < 2; v++) {
                uint8_t *p = blk + bb + o, save[4];
                memcpy(save, p, o + 3 < bb ? 4 : 2);
                if (t == LT_DTYPE_Q8_K) {
                    if (o + 3 >= bb) continue;
                    uint32_t u = v ? 0x7f800000u : 0x7fc00000u;
                    memcpy(p, &u, 4);
                } else {
                    uint16_t h = v ? 0x7c00 : 0x7e00;
                    memcpy(p, &h, 2);
                }
                int64_t r = ref_bad(t, blk, n), g = got_bad(t, blk, n);
                if (r != g) {
                    agree = 0;
                    CHECK(0,
                          "%s: scale-like bytes at %lld = %s: reference %lld non-finite, "
                          "check %lld",
                          lt_dtype_name(t), (long long)o, v ? "inf" : "nan", (long long)r,
                          (long long)g);
                }
                if (r) scales++;
                memcpy(p, save, o + 3 < bb ? 4 : 2);
            }
        CHECK(agree && scales > 0,
              "%s: the check agrees with the dequantized values at every "
              "byte position (%d positions are scales)",
              lt_dtype_name(t), scales);
        free(blk);
    }
}

static void float_types(void) {
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)i - 5.5f;
    CHECK_OK(lt_check_finite(LT_DTYPE_F32, x, 12, 4, "w", NULL));
    x[6] = INFINITY;
    x[9] = NAN;
    CHECK_ERR(lt_check_finite(LT_DTYPE_F32, x, 12, 4, "file: tensor w", "why"), LT_ERR_FORMAT,
              "file: tensor w: 2 of 12 values are not finite (first: inf at [1][2]): why");
    uint16_t h[3] = {0x3c00, 0xfc00, 0x0001}; /* 1, -inf, a subnormal */
    CHECK_ERR(lt_check_finite(LT_DTYPE_F16, h, 3, 0, "h", NULL), LT_ERR_FORMAT,
              "1 of 3 values are not finite (first: -inf at [1])");
    uint16_t bf[2] = {0x3f80, 0x7fc0}; /* 1, nan */
    CHECK_ERR(lt_check_finite(LT_DTYPE_BF16, bf, 2, 0, "b", NULL), LT_ERR_FORMAT, "nan at [1]");
    int32_t ints[2] = {-1, 0x7fffffff};
    CHECK_OK(lt_check_finite(LT_DTYPE_I32, ints, 2, 0, "i", NULL));
}

static void adapter_writers(void) {
    const char *dir = lt_tmpdir();
    lt_model_load_opts o = {0};
    o.config_only = 1;
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), &o, &m));
    lt_adapter *a = NULL;
    if (m) CHECK_OK(lt_adapter_load(lt_srcpath("tests/data/adapter/lora"), &m->config, &a));
    if (!a) {
        lt_model_free(m);
        return;
    }
    char p[700];
    snprintf(p, sizeof p, "%s/ok_peft", dir);
    CHECK_OK(lt_adapter_save_peft(a, p)); /* the control */
    lt_adapter_lin *L = &a->lin[1 * LT_N_TARGETS + 0];
    CHECK(L->B != NULL, "layer 1 q_proj is adapted");
    if (L->B) L->B[2 * a->r + 1] = NAN;
    struct stat sb;
    snprintf(p, sizeof p, "%s/peft", dir);
    CHECK_ERR(lt_adapter_save_peft(a, p), LT_ERR_FORMAT, "layers.1.self_attn.q_proj.lora_B: 1 of");
    CHECK(strstr(lt_errmsg(), "nan at [2][1]") != NULL, "first bad value placed: %s", lt_errmsg());
    CHECK(stat(p, &sb) != 0, "PEFT: nothing written at %s", p);
    snprintf(p, sizeof p, "%s/mlx", dir);
    CHECK_ERR(lt_adapter_save_mlx(a, &m->config, p), LT_ERR_FORMAT,
              "layers.1.self_attn.q_proj.lora_B");
    CHECK(stat(p, &sb) != 0, "mlx-lm: nothing written at %s", p);
    snprintf(p, sizeof p, "%s/a.gguf", dir);
    CHECK_ERR(lt_adapter_save_gguf(a, &m->config, LT_DTYPE_F16, p), LT_ERR_FORMAT,
              "layers.1.self_attn.q_proj.lora_B");
    CHECK(stat(p, &sb) != 0, "GGUF: nothing written at %s", p);
    lt_adapter_free(a);
    lt_model_free(m);
}

/* llama2.c: a NaN in the token embedding (the first floats after the 28-byte header) */
static void llama2c_model(void) {
    const char *dir = lt_tmpdir();
    char *buf = NULL;
    size_t n = 0;
    CHECK_OK(lt_file_read_all(lt_fixture("stories260K/stories260K.bin"), &buf, &n));
    if (!buf || n < 28 + 64 * 4) return;
    lt_model *m = NULL;
    char p[700];
    snprintf(p, sizeof p, "%s/ok.bin", dir);
    FILE *f = fopen(p, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    CHECK_OK(lt_model_load(p, NULL, &m)); /* the control */
    lt_model_free(m);
    m = NULL;
    float nan = NAN;
    memcpy(buf + 28 + (64 + 3) * 4, &nan, 4); /* row 1, column 3 of tok_embd [512][64] */
    snprintf(p, sizeof p, "%s/nan.bin", dir);
    f = fopen(p, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    CHECK_ERR(lt_model_load(p, NULL, &m), LT_ERR_FORMAT, "nan.bin: tok_embd: 1 of");
    CHECK(strstr(lt_errmsg(), "nan at [1][3]") != NULL, "placed: %s", lt_errmsg());
    lt_model_free(m);
    free(buf);
}

int main(void) {
    llama2c_model();
    quant_types();
    float_types();
    adapter_writers();
    LT_TEST_END();
}
