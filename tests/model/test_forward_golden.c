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

#include "lt_test.h"
#include "loratune/model.h"

#define TOL 1e-5f

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
