/* test_forward_golden.c - lt_model_forward against transformers on small random models.
 *
 * tests/data/forward/<case>/ (made by tools/gen_forward_goldens.py) holds Hugging Face folders
 * for configurations the fixtures don't cover — Qwen2 (q/k/v bias, untied head), Llama with
 * llama3 rope scaling and head_dim != hidden/heads, Mistral (one kv head) — with transformers'
 * float32 logits for every position of a 24-token input. We load each folder with our loader
 * (config.json parsing, safetensors) and compare all logits, run as one prefill and again token
 * by token through the KV cache. Tolerance: 1e-5 absolute on logits of magnitude <= 5 (observed
 * ~1e-6: fp32 with different summation orders). A wrong bias, rope or GQA mapping is off by >0.01. */
#include <jansson.h>
#include <math.h>

#include "loratune/export.h"
#include "loratune/model.h"
#include "lt_test.h"

#define TOL 1e-5f

/* max |a - b| over n, its index in *at */
static float maxdiff(const float *a, const float *b, size_t n, size_t *at) {
    float d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > d) d = fabsf(a[i] - b[i]), *at = i;
    return d;
}

/* logits of tok[0..T) with the cache's bf16 products on or off: prefill, or token by token */
static void run_logits(const lt_model *m, int bf16, int stepwise, const int32_t *tok, int T,
                       float *lg) {
    const int V = m->config.vocab_size;
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, T, T, &kv));
    if (!kv) return;
    lt_kv_cache_set_bf16(kv, bf16);
    if (!stepwise) CHECK_OK(lt_model_forward(m, NULL, kv, tok, T, 0, lg, 1));
    for (int t = 0; stepwise && t < T; t++)
        CHECK_OK(lt_model_forward(m, NULL, kv, tok + t, 1, t, lg + (size_t)t * V, 0));
    lt_kv_cache_free(kv);
}

/* bf16 products (lt_kv_cache_set_bf16) against the fp32 path and transformers' fp32 logits:
 * the model as loaded (fp32 weights: a prefill of 24 tokens rounds them a block at a time; one
 * token at a time stays fp32, by design, and must equal the fp32 path), and a bf16 copy
 * (lt_model_save_hf, loaded lazily: multiplied in place by oneDNN's bf16 GEMM, prefill and
 * token by token) against the same copy's fp32 products. x is rounded to bf16 at every product
 * (2^-9 relative per value), so the logits (magnitude <= 5) move by up to a few 1e-2: observed
 * max 0.045 from the fp32 path, 0.06 from transformers (the weights' rounding added), RMS 0.7-
 * 1.3% of the logits' RMS. Tolerances: TOL_BF16 (max, either comparison) and TOL_BF16_RMS (the
 * relative RMS: a wrong bias, rope or GQA mapping is off by tens of percent); the bf16 products
 * must differ from the fp32 ones (the path was taken). */
#define TOL_BF16 0.12f
#define TOL_BF16_RMS 0.025
static double rel_rms(const float *a, const float *b, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += (double)(a[i] - b[i]) * (a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(e / r) : sqrt(e);
}
static void bf16_case(const char *name, const lt_model *m, const int32_t *tok, int T,
                      const float *ref) {
    const size_t n = (size_t)T * m->config.vocab_size;
    float *f32 = malloc(n * 4), *b16 = malloc(n * 4);
    size_t at = 0;
    run_logits(m, 0, 0, tok, T, f32);
    run_logits(m, 1, 0, tok, T, b16);
    float d = maxdiff(b16, f32, n, &at), dh = maxdiff(b16, ref, n, &at);
    double rr = rel_rms(b16, ref, n);
    printf("%-22s bf16 prefill, fp32 weights: vs fp32 path %.3g, vs transformers %.3g (RMS "
           "%.2g)\n",
           name, d, dh, rr);
    CHECK(d > 0 && d <= TOL_BF16 && dh <= TOL_BF16 && rr <= TOL_BF16_RMS,
          "%s: bf16 prefill of fp32 weights: %g from the fp32 path, %g (RMS %g) from "
          "transformers",
          name, d, dh, rr);
    run_logits(m, 1, 1, tok, T, b16);
    d = maxdiff(b16, f32, n, &at);
    CHECK(d <= TOL, "%s: bf16 one token at a time, fp32 weights: %g from the fp32 path", name, d);

    char tmp[] = "/tmp/lt_fwd_bf16_XXXXXX", dir[1100];
    char *src = NULL;
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    snprintf(dir, sizeof dir, "%s/%s", lt_srcpath("tests/data/forward"), name);
    src = dir;
    CHECK_OK(lt_model_save_hf(m, src, tmp, LT_DTYPE_BF16));
    lt_model *mb = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(tmp, &lo, &mb));
    for (int stepwise = 0; mb && stepwise < 2; stepwise++) {
        run_logits(mb, 0, stepwise, tok, T, f32);
        run_logits(mb, 1, stepwise, tok, T, b16);
        d = maxdiff(b16, f32, n, &at);
        dh = maxdiff(b16, ref, n, &at);
        rr = rel_rms(b16, ref, n);
        printf("%-22s bf16 %-8s bf16 weights: vs fp32 products %.3g, vs transformers %.3g (RMS "
               "%.2g)\n",
               name, stepwise ? "stepwise" : "prefill", d, dh, rr);
        CHECK(d > 0 && d <= TOL_BF16 && dh <= TOL_BF16 && rr <= TOL_BF16_RMS,
              "%s: bf16 %s of bf16 weights: %g from their fp32 products, %g (RMS %g) from "
              "transformers",
              name, stepwise ? "stepwise" : "prefill", d, dh, rr);
    }
    lt_model_free(mb);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0, "%s", cmd);
    free(f32);
    free(b16);
}

static void check_case(const char *name) {
    char dir[1024], p[1100];
    snprintf(dir, sizeof dir, "%s/%s", lt_srcpath("tests/data/forward"), name);
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(dir, NULL, &m));
    if (!m) return;
    snprintf(p, sizeof p, "%s/tokens.json", dir);
    json_error_t je;
    json_t *tj = json_load_file(p, 0, &je);
    CHECK(tj && json_is_array(tj), "%s: %s", p, je.text);
    if (!tj) {
        lt_model_free(m);
        return;
    }
    int T = (int)json_array_size(tj), V = m->config.vocab_size;
    int32_t *tok = malloc(T * sizeof *tok);
    for (int i = 0; i < T; i++) tok[i] = (int32_t)json_integer_value(json_array_get(tj, i));
    json_decref(tj);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    lt_mapped_file ref = {0};
    CHECK_OK(lt_file_map(p, &ref));
    CHECK(ref.size == (size_t)T * V * 4, "%s: %zu bytes, wanted %d", p, ref.size, T * V * 4);
    float *lg = malloc((size_t)T * V * sizeof(float));
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, T, T, &kv));
    if (kv && ref.size == (size_t)T * V * 4) {
        const float *r = (const float *)ref.data;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0) {
                CHECK_OK(lt_model_forward(m, NULL, kv, tok, T, 0, lg, 1));
            } else {
                for (int t = 0; t < T; t++)
                    CHECK_OK(lt_model_forward(m, NULL, kv, tok + t, 1, t, lg + (size_t)t * V, 0));
            }
            float maxd = 0;
            size_t at = 0;
            for (size_t i = 0; i < (size_t)T * V; i++) {
                float d = fabsf(lg[i] - r[i]);
                if (d > maxd) maxd = d, at = i;
            }
            printf("%-22s %-8s max |ours - transformers| = %.3g\n", name,
                   pass ? "stepwise" : "prefill", maxd);
            CHECK(maxd <= TOL, "%s (%s): logit diff %g at position %zu token %zu", name,
                  pass ? "stepwise" : "prefill", maxd, at / V, at % V);
        }
    }
    lt_kv_cache_free(kv);
    if (ref.size == (size_t)T * V * 4) bf16_case(name, m, tok, T, (const float *)ref.data);
    lt_file_unmap(&ref);
    free(lg);
    free(tok);
    lt_model_free(m);
}

int main(void) {
    check_case("qwen2_bias_untied");
    check_case("llama3_rope_headdim");
    check_case("mistral_gqa");
    LT_TEST_END();
}
