/* test_forward_lazy.c - lt_model_forward on lazy models (weights as stored in the mapped file,
 * read through the weight provider) against the same file loaded whole (fp32).
 *
 * Forms: stories260K as GGUF (F32, q/k rows interleaved: converted row blocks) and as the HF
 * folder (F32: zero-copy pointers into the file), the same model written here as a BF16 HF
 * folder and a Q8_0 GGUF (lt_model_save_hf / _gguf; w_down, 172 columns, stays F16), and
 * SmolLM2-135M-Instruct Q4_1 (models/, as test_smollm2_golden). For each: all-position logits
 * of a prefill in chunks, then decode steps, with no adapter and with the PEFT LoRA / DoRA
 * adapters of tests/data/adapter (SmolLM2: smol_dora); greedy ids through lt_generate equal.
 *
 * Tolerance: both sides multiply the very same float weights (whole loading converts with the
 * same dequantizer, and the lazy path converts the same rows); only the summation order of the
 * dot products differs (BLAS on the whole matrix vs the provider path's 8-lane row kernel), so
 * the logits agree to float rounding: TOL_REL * max(1, |logit|) (observed on x86-64 with
 * OpenBLAS: up to 4e-5 on stories260K, 8e-5 on SmolLM2's 30 layers; a wrong row, rotary order
 * or dequantization moves logits by > 0.1). Where both sides are zero-copy F32 (the HF
 * fixture) the computation is the same and the logits must be bit-identical. */
#include <math.h>
#include <stdint.h>

#include "loratune/adapter.h"
#include "loratune/export.h"
#include "loratune/model.h"
#include "loratune/sampler.h"
#include "lt_test.h"

#define TOL_REL 5e-4f

static const int32_t toks[24] = {1,   403, 407, 261, 378, 439, 297, 261, 270, 356, 410, 46,
                                 365, 261, 299, 402, 270, 285, 382, 263, 334, 46,  412, 407};

/* max |a - b| / max(1, |b|) */
static float rel_diff(const float *a, const float *b, int64_t n) {
    float d = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float x = fabsf(a[i] - b[i]) / fmaxf(1.0f, fabsf(b[i]));
        if (!(x <= d)) d = x;
    }
    return d;
}

/* logits [nt][V] of toks[0..nt): a prefill of the first np in chunks of 5, then single steps */
static lt_status run(const lt_model *m, const lt_model_delta *d, const int32_t *ids, int nt, int np,
                     float *lg) {
    lt_kv_cache *kv = NULL;
    int V = m->config.vocab_size;
    lt_status st = lt_kv_cache_create(m, 64, 5, &kv);
    if (!st) st = lt_model_forward(m, d, kv, ids, np, 0, lg, 1);
    for (int t = np; !st && t < nt; t++)
        st = lt_model_forward(m, d, kv, ids + t, 1, t, lg + (int64_t)t * V, 0);
    lt_kv_cache_free(kv);
    return st;
}

/* greedy ids of lt_generate from toks[0..np) */
static int32_t *greedy(const lt_model *m, const lt_model_delta *d, int np, int n_new) {
    lt_kv_cache *kv = NULL;
    lt_sampler *s = NULL;
    lt_sampler_params sp = {0};
    int32_t *ids = NULL;
    int n = 0;
    lt_generate_opts o = {.max_tokens = n_new};
    if (!lt_kv_cache_create(m, 128, 0, &kv) && !lt_sampler_create(&sp, m->config.vocab_size, &s))
        CHECK_OK(lt_generate(m, d, kv, NULL, s, toks, np, &o, &ids, &n));
    CHECK(n == n_new, "generated %d ids, wanted %d", n, n_new);
    lt_sampler_free(s);
    lt_kv_cache_free(kv);
    return ids;
}

/* lazy vs whole for one model file, without and with each adapter given (NULL-terminated) */
static void compare(const char *what, const char *path, const char *const *adapters, int nt,
                    int exact) {
    lt_model *whole = NULL, *lazy = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(path, NULL, &whole));
    CHECK_OK(lt_model_load(path, &lo, &lazy));
    if (!whole || !lazy) goto out;
    CHECK(lt_model_is_lazy(lazy) && lazy->params == NULL, "%s: lazy without fp32 weights", what);
    const int V = whole->config.vocab_size;
    float *a = malloc(sizeof(float) * (size_t)nt * V), *b = malloc(sizeof(float) * (size_t)nt * V);
    for (int k = -1; a && b && (k < 0 || adapters[k]); k++) {
        lt_adapter *ad = NULL;
        lt_model_delta *dw = NULL, *dl = NULL;
        const char *an = k < 0 ? "base" : adapters[k];
        if (k >= 0) {
            CHECK_OK(lt_adapter_load(lt_srcpath(adapters[k]), &whole->config, &ad));
            if (!ad) continue;
            CHECK_OK(lt_adapter_delta_create(ad, whole, &dw));
            CHECK_OK(lt_adapter_delta_create(ad, lazy, &dl));
            if (!dw || !dl) goto next;
        }
        CHECK_OK(run(whole, dw, toks, nt, nt - 4, a));
        CHECK_OK(run(lazy, dl, toks, nt, nt - 4, b));
        float d = rel_diff(b, a, (int64_t)nt * V);
        printf("%s, %s: lazy vs whole logits: max rel diff %.3g\n", what, an, d);
        if (exact)
            CHECK(d == 0.0f, "%s, %s: lazy logits differ from whole by %g (expected identical)",
                  what, an, d);
        else
            CHECK(d <= TOL_REL, "%s, %s: lazy logits differ from whole by %g", what, an, d);
        int32_t *gw = greedy(whole, dw, 6, 24), *gl = greedy(lazy, dl, 6, 24);
        CHECK(gw && gl && !memcmp(gw, gl, 24 * sizeof(int32_t)),
              "%s, %s: greedy ids differ lazy vs whole", what, an);
        free(gw);
        free(gl);
    next:
        lt_adapter_delta_free(dw);
        lt_adapter_delta_free(dl);
        lt_adapter_free(ad);
    }
    free(a);
    free(b);
out:
    lt_model_free(whole);
    lt_model_free(lazy);
}

/* the provider itself: pointers vs converted rows, errors */
static void check_provider(void) {
    lt_model *whole = NULL, *lazy = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), NULL, &whole));
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), &lo, &lazy));
    if (!whole || !lazy) goto out;
    float scratch[64 * 172];
    const float *p = NULL, *q = NULL;
    /* loaded: a pointer into the fp32 block */
    CHECK(lt_model_weight_is_f32(whole, LT_W_WQ, 2), "loaded wq is fp32");
    CHECK_OK(lt_model_weight_f32(whole, LT_W_WQ, 2, 3, 5, scratch, &p));
    CHECK(p == whole->w.wq + (2 * 64 + 3) * 64, "loaded: pointer into the weights");
    /* lazy GGUF: wq interleaved -> converted; wv F32 in order -> zero-copy into the file */
    CHECK(!lt_model_weight_is_f32(lazy, LT_W_WQ, 2), "lazy interleaved wq is converted");
    CHECK_OK(lt_model_weight_f32(lazy, LT_W_WQ, 2, 3, 5, scratch, &q));
    CHECK(q == scratch && p && !memcmp(p, q, sizeof(float) * 5 * 64),
          "lazy wq rows == loaded rows (un-interleaved)");
    CHECK(lt_model_weight_is_f32(lazy, LT_W_WV, 1), "lazy F32 wv is zero-copy");
    CHECK_OK(lt_model_weight_f32(lazy, LT_W_WV, 1, 0, 32, scratch, &q));
    CHECK(q != scratch && q == (const float *)lt_model_weight_view(lazy, LT_W_WV, 1)->data,
          "lazy wv: pointer into the mapped file");
    CHECK_OK(lt_model_weight_f32(whole, LT_W_WV, 1, 0, 32, scratch, &p));
    CHECK(p && q && !memcmp(p, q, sizeof(float) * 32 * 64), "lazy wv == loaded wv");
    /* errors */
    CHECK_ERR(lt_model_weight_f32(lazy, LT_W_WQ, 5, 0, 1, scratch, &q), LT_ERR_ARG, "layer 5");
    CHECK(q == NULL, "NULL on error");
    CHECK_ERR(lt_model_weight_f32(lazy, LT_W_DOWN, 0, 60, 5, scratch, &q), LT_ERR_ARG,
              "rows [60, 65)");
    CHECK_ERR(lt_model_weight_f32(whole, LT_W_BQ, 0, 0, 1, scratch, &q), LT_ERR_ARG,
              "no such weight"); /* no qkv_bias */
    CHECK_OK(lt_model_check_readable(lazy, "test"));
    CHECK(lt_model_lin_weight(6) == LT_W_DOWN && lt_model_lin_weight(7) == LT_W_COUNT,
          "linear -> weight id");
    /* a config-only model has nothing to read */
    lt_model *co = NULL;
    lt_model_load_opts oc = {.config_only = 1};
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), &oc, &co));
    if (co) CHECK_ERR(lt_model_check_readable(co, "forward"), LT_ERR_ARG, "config-only");
    lt_model_free(co);
out:
    lt_model_free(whole);
    lt_model_free(lazy);
}

/* lt_generate on the lazy GGUF gives the reference's 256 greedy ids (as test_stories260K for
 * the whole model) */
static void check_reference_ids(void) {
    int32_t ref[257];
    char *js = NULL;
    size_t n = 0;
    CHECK_OK(lt_file_read_all(lt_fixture("stories260K/reference_greedy.json"), &js, &n));
    const char *p = js ? strstr(js, "\"ids\"") : NULL;
    int k = 0;
    if (p) p = strchr(p, '[');
    while (p && k < 257) {
        char *e;
        long v = strtol(p + 1, &e, 10);
        if (e == p + 1) break;
        ref[k++] = (int32_t)v;
        p = strpbrk(e, ",]");
        if (!p || *p == ']') break;
    }
    free(js);
    CHECK(k == 257, "reference ids: read %d", k);
    if (k != 257) return;
    lt_model *m = NULL;
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), &lo, &m));
    lt_kv_cache *kv = NULL;
    lt_sampler *s = NULL;
    lt_sampler_params sp = {0};
    int32_t *ids = NULL;
    int ng = 0;
    lt_generate_opts o = {.max_tokens = 256, .stop_at_eos = 1};
    if (m && !lt_kv_cache_create(m, 0, 0, &kv) && !lt_sampler_create(&sp, 512, &s))
        CHECK_OK(lt_generate(m, NULL, kv, NULL, s, ref, 1, &o, &ids, &ng));
    CHECK(ng == 256 && ids && !memcmp(ids, ref + 1, 256 * sizeof(int32_t)),
          "lazy GGUF: lt_generate greedy ids differ from the reference");
    free(ids);
    lt_sampler_free(s);
    lt_kv_cache_free(kv);
    lt_model_free(m);
}

int main(void) {
    static const char *const stories_adapters[] = {"tests/data/adapter/lora",
                                                   "tests/data/adapter/dora", NULL};
    static const char *const smol_adapters[] = {"tests/data/adapter/smol_dora", NULL};
    check_provider();
    check_reference_ids();
    compare("stories260K.gguf (F32, interleaved)", lt_fixture("stories260K/stories260K.gguf"),
            stories_adapters, 24, 0);
    compare("stories260K-hf (F32)", lt_fixture("stories260K-hf"), stories_adapters, 24, 1);

    /* the same model stored as BF16 safetensors and as a Q8_0 GGUF */
    const char *tmp = lt_tmpdir();
    char hf[600], gg[600];
    snprintf(hf, sizeof hf, "%s/bf16", tmp);
    snprintf(gg, sizeof gg, "%s/q8_0.gguf", tmp);
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &m));
    if (m) {
        CHECK_OK(lt_model_save_hf(m, NULL, hf, LT_DTYPE_BF16));
        CHECK_OK(lt_model_save_gguf(m, NULL, gg, LT_DTYPE_Q8_0));
    }
    lt_model_free(m);
    compare("stories260K BF16 HF", hf, stories_adapters, 24, 0);
    compare("stories260K Q8_0 GGUF", gg, stories_adapters, 24, 0);

    char smol[4096];
    const char *env = getenv("LT_MODELS");
    snprintf(smol, sizeof smol, "%s/SmolLM2-135M-Instruct.Q4_1.gguf",
             env ? env : lt_srcpath("models"));
    if (!lt_path_exists(smol))
        CHECK(0, "%s missing: run `make models` (tools/fetch_smollm2.sh)", smol);
    else
        compare("SmolLM2-135M-Instruct Q4_1", smol, smol_adapters, 12, 0);
    LT_TEST_END();
}
