/* test_stories260K.c - the pretrained stories260K model in its three forms (llama2.c .bin,
 * GGUF, Hugging Face folder) against reference_greedy.json: step-0 logits within 1e-5 and
 * the 256 greedy ids exactly (the reference was produced outside this project and
 * cross-checked against llama2.c's run.c); the decoded text against the JSON's "text";
 * batched prefill == token-by-token decoding through the KV cache. */
#include <jansson.h>

#include "loratune/model.h"
#include "loratune/sampler.h"
#include "loratune/tokenizer.h"
#include "lt_test.h"

static int32_t ref_ids[257];
static float ref_logits[512];
static char *ref_text;

static int load_reference(void) {
    json_error_t err;
    json_t *j = json_load_file(lt_fixture("stories260K/reference_greedy.json"), 0, &err);
    if (!j) return -1;
    json_t *ids = json_object_get(j, "ids"), *lg = json_object_get(j, "logits_step0_after_bos");
    if (json_array_size(ids) != 257 || json_array_size(lg) != 512) return -1;
    for (int i = 0; i < 257; i++)
        ref_ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
    for (int i = 0; i < 512; i++)
        ref_logits[i] = (float)json_number_value(json_array_get(lg, i));
    ref_text = strdup(json_string_value(json_object_get(j, "text")));
    json_decref(j);
    return 0;
}

static void check_form(const char *path, float *first_logits_out) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(path, NULL, &m));
    if (!m) return;
    const lt_model_config *c = &m->config;
    CHECK(c->dim == 64 && c->n_layers == 5 && c->n_heads == 8 && c->n_kv_heads == 4 &&
              c->ffn_dim == 172 && c->vocab_size == 512 && c->head_dim == 8,
          "%s: config %d %d %d %d %d %d", path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads,
          c->ffn_dim, c->vocab_size);
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, 512, 16, &kv));
    float logits[512];
    CHECK_OK(lt_model_forward(m, NULL, kv, &ref_ids[0], 1, 0, logits, 0));
    float maxd = 0;
    for (int i = 0; i < 512; i++) {
        float d = fabsf(logits[i] - ref_logits[i]);
        if (d > maxd) maxd = d;
    }
    CHECK(maxd <= 1e-5f, "%s: step-0 logits differ from the reference by %g", path, maxd);
    memcpy(first_logits_out, logits, sizeof logits);
    /* greedy: argmax of each step's logits, fed back */
    int mismatch = -1;
    for (int t = 1; t <= 256; t++) {
        int best = 0;
        for (int i = 1; i < 512; i++)
            if (logits[i] > logits[best]) best = i;
        if (best != ref_ids[t]) {
            mismatch = t;
            break;
        }
        if (t < 256) CHECK_OK(lt_model_forward(m, NULL, kv, &ref_ids[t], 1, t, logits, 0));
    }
    CHECK(mismatch < 0, "%s: greedy id %d differs from the reference", path, mismatch);
    lt_kv_cache_free(kv);
    lt_model_free(m);
}

/* The same ids through lt_generate with a greedy sampler. */
static void check_generate(const char *path, const char *tok_path) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(path, NULL, &m));
    if (!m) return;
    lt_kv_cache *kv = NULL;
    lt_sampler *s = NULL;
    lt_sampler_params sp = {0};
    CHECK_OK(lt_kv_cache_create(m, 0, 0, &kv));
    CHECK_OK(lt_sampler_create(&sp, 512, &s));
    lt_generate_opts o = {.max_tokens = 256, .stop_at_eos = 1};
    int32_t *ids = NULL;
    int n = 0;
    CHECK_OK(lt_generate(m, NULL, kv, NULL, s, ref_ids, 1, &o, &ids, &n));
    CHECK(n == 256 && ids && !memcmp(ids, ref_ids + 1, 256 * sizeof(int32_t)),
          "lt_generate greedy: %d ids, differ from the reference", n);
    lt_tokenizer *tok = NULL;
    lt_status st = lt_tokenizer_load(tok_path, &tok);
    CHECK(st == LT_OK, "tokenizer %s: %s", tok_path, lt_errmsg());
    if (st == LT_OK && ids) {
        char *text = NULL;
        size_t len = 0;
        CHECK_OK(lt_tokenizer_decode(tok, ids, (size_t)n, 1, &text, &len));
        CHECK(text && !strcmp(text, ref_text), "decoded text differs:\n%s\n---\n%s", text,
              ref_text);
        free(text);
    }
    lt_tokenizer_free(tok);
    free(ids);
    lt_sampler_free(s);
    lt_kv_cache_free(kv);
    lt_model_free(m);
}

/* Prefill of n tokens in one call (and in chunks smaller than n) equals n single steps. */
static void check_prefill(const char *path) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(path, NULL, &m));
    if (!m) return;
    enum { N = 40, V = 512 };
    static float batch[N * V], chunked[N * V], step[N * V];
    lt_kv_cache *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(lt_kv_cache_create(m, 128, 64, &a));
    CHECK_OK(lt_kv_cache_create(m, 128, 7, &b));
    CHECK_OK(lt_kv_cache_create(m, 128, 1, &c));
    CHECK_OK(lt_model_forward(m, NULL, a, ref_ids, N, 0, batch, 1));
    CHECK_OK(lt_model_forward(m, NULL, b, ref_ids, 25, 0, chunked, 1));
    CHECK_OK(lt_model_forward(m, NULL, b, ref_ids + 25, N - 25, 25, chunked + 25 * V, 1));
    for (int t = 0; t < N; t++)
        CHECK_OK(lt_model_forward(m, NULL, c, ref_ids + t, 1, t, step + t * V, 0));
    float d1 = 0, d2 = 0;
    for (int i = 0; i < N * V; i++) {
        d1 = fmaxf(d1, fabsf(batch[i] - step[i]));
        d2 = fmaxf(d2, fabsf(chunked[i] - step[i]));
    }
    CHECK(d1 <= 5e-5f, "batched prefill differs from single steps by %g", d1);
    CHECK(d2 <= 5e-5f, "chunked prefill differs from single steps by %g", d2);
    /* last-only logits == last row of all logits */
    float last[V];
    lt_kv_cache *d = NULL;
    CHECK_OK(lt_kv_cache_create(m, 128, 16, &d));
    CHECK_OK(lt_model_forward(m, NULL, d, ref_ids, N, 0, last, 0));
    float d3 = 0;
    for (int i = 0; i < V; i++)
        d3 = fmaxf(d3, fabsf(last[i] - batch[(N - 1) * V + i]));
    CHECK(d3 <= 5e-5f, "last-only logits differ by %g", d3);
    /* argument checks */
    int32_t bad = 512;
    CHECK_ERR(lt_model_forward(m, NULL, d, &bad, 1, 0, last, 0), LT_ERR_ARG, "outside the vocabulary");
    CHECK_ERR(lt_model_forward(m, NULL, d, ref_ids, 2, 127, last, 0), LT_ERR_ARG, "context");
    lt_kv_cache_free(a);
    lt_kv_cache_free(b);
    lt_kv_cache_free(c);
    lt_kv_cache_free(d);
    lt_model_free(m);
}

int main(void) {
    CHECK(load_reference() == 0, "cannot read reference_greedy.json");
    if (lt_t_fail) LT_TEST_END();
    static float l_bin[512], l_gguf[512], l_hf[512];
    check_form(lt_fixture("stories260K/stories260K.bin"), l_bin);
    check_form(lt_fixture("stories260K/stories260K.gguf"), l_gguf);
    check_form(lt_fixture("stories260K-hf"), l_hf);
    float d = 0;
    for (int i = 0; i < 512; i++)
        d = fmaxf(d, fmaxf(fabsf(l_bin[i] - l_gguf[i]), fabsf(l_bin[i] - l_hf[i])));
    CHECK(d <= 1e-5f, "the three forms' step-0 logits differ by %g", d);
    /* un-permuting the .bin and the .gguf must give the HF fixture's weights bit for bit */
    lt_model *mb = NULL, *mg = NULL, *mh = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.bin"), NULL, &mb));
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), NULL, &mg));
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &mh));
    if (mb && mg && mh) {
        size_t nb = sizeof(float) * (size_t)mb->n_params;
        CHECK(mh->n_params == mb->n_params && !memcmp(mb->params, mh->params, nb),
              ".bin weights == HF weights");
        CHECK(mg->n_params == mb->n_params + 512 * 64 && !memcmp(mb->params, mg->params, nb) &&
                  !memcmp(mg->w.lm_head, mb->w.tok_embd, sizeof(float) * 512 * 64),
              ".gguf weights == HF weights (+ its explicit output.weight)");
    }
    lt_model_free(mb);
    lt_model_free(mg);
    lt_model_free(mh);
    check_generate(lt_fixture("stories260K/stories260K.bin"),
                   lt_fixture("stories260K/tok512.model"));
    check_prefill(lt_fixture("stories260K/stories260K.bin"));
    free(ref_text);
    LT_TEST_END();
}
