/* test_adapter_roundtrip.c - lt_adapter: trainer <-> adapter, the PEFT / mlx-lm / GGUF writers
 * and readers round trip (exactly for f32; f16 GGUF within f16 rounding), and inference
 * without merging (lt_model_forward with lt_adapter_delta_create's delta) against the trainer's own
 * forward of the same adapter (lt_trainer_eval logits; the trainer is checked against PyTorch
 * by tests/train), for LoRA and DoRA, on stories260K (GQA, llama arch: q/k rows permuted in
 * GGUF). PEFT / mlx-lm / llama.cpp themselves are compared in test_adapter_peft_golden.c and
 * test_adapter_mlx_peer.py / test_adapter_llamacpp_peer.py. */
#include <math.h>
#include <stdint.h>

#include "loratune/adapter.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

/* random non-zero A, B (and magnitudes near the true norms for DoRA) */
static void randomize(lt_trainer *tr) {
    for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
        lt_train_tensor t;
        lt_trainer_tensor(tr, i, &t);
        int mag = strstr(t.name, "magnitude") != NULL;
        float *val = lt_tt_get(tr, i, LT_TENSOR_VALUE);
        for (int64_t k = 0; k < t.numel; k++)
            val[k] = mag ? val[k] * (1.0f + 0.3f * frand()) : 0.2f * frand();
        lt_tt_put(tr, i, LT_TENSOR_VALUE, val);
    }
}

static float max_abs_diff(const float *a, const float *b, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

/* max |difference| over every tensor of two adapters with the same structure; -1 if the
 * structure differs */
static float adapter_diff(const lt_adapter *x, const lt_adapter *y) {
    if (x->n_layers != y->n_layers || x->r != y->r || x->method != y->method ||
        x->targets != y->targets || x->layer_begin != y->layer_begin ||
        x->layer_end != y->layer_end)
        return -1.0f;
    if (fabsf(lt_adapter_scale(x) - lt_adapter_scale(y)) > 1e-6f * lt_adapter_scale(x))
        return -1.0f;
    float m = 0.0f;
    for (int i = 0; i < x->n_layers * LT_N_TARGETS; i++) {
        const lt_adapter_lin *a = &x->lin[i], *b = &y->lin[i];
        if (!a->A != !b->A) return -1.0f;
        if (!a->A) continue;
        float d = max_abs_diff(a->A, b->A, (int64_t)x->r * a->in);
        if (d > m) m = d;
        d = max_abs_diff(a->B, b->B, (int64_t)a->out * x->r);
        if (d > m) m = d;
        if (a->mag) {
            d = max_abs_diff(a->mag, b->mag, a->out);
            if (d > m) m = d;
        }
    }
    return m;
}

static void run(lt_train_method method, unsigned targets, int lb, int le, int rslora) {
    const char *name = lt_train_method_name(method);
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &m));
    if (!m) return;
    lt_train_config c;
    lt_train_config_default(&c);
    c.method = method;
    c.lora.r = 4;
    c.lora.alpha = 8;
    c.lora.rslora = rslora;
    c.lora.targets = targets;
    c.lora.layer_begin = lb;
    c.lora.layer_end = le;
    c.seq_len = 12;
    c.keep_logits = 1;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_create(m, &c, &tr));
    if (!tr) {
        lt_model_free(m);
        return;
    }
    randomize(tr);
    lt_adapter *a = NULL;
    CHECK_OK(lt_adapter_from_trainer(tr, "stories260K-hf", &a));
    if (!a) goto out;
    CHECK(a->targets == targets && a->r == 4 && a->method == method, "%s: adapter fields", name);

    /* inference without merging == the trainer's forward with the same adapter */
    int32_t toks[12] = {1, 403, 407, 261, 378, 439, 297, 261, 270, 356, 410, 46};
    int32_t tgts[12];
    for (int i = 0; i < 12; i++)
        tgts[i] = i + 1 < 12 ? toks[i + 1] : -100;
    lt_batch b = {.B = 1, .T = 12, .tokens = toks, .targets = tgts};
    CHECK_OK(lt_trainer_eval(tr, &b, NULL));
    const float *ref = lt_trainer_logits(tr);
    int V = m->config.vocab_size;
    float *lg = malloc(sizeof(float) * 12 * V), *lg0 = malloc(sizeof(float) * 12 * V);
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, 64, 5, &kv)); /* batch 5: chunks of the prompt */
    CHECK_OK(lt_model_forward(m, NULL, kv, toks, 12, 0, lg0, 1));
    lt_model_delta *dl = NULL;
    CHECK_OK(lt_adapter_delta_create(a, m, &dl));
    CHECK_OK(lt_model_forward(m, dl, kv, toks, 12, 0, lg, 1));
    float d = max_abs_diff(lg, ref, 12 * V), moved = max_abs_diff(lg, lg0, 12 * V);
    CHECK(d < 1e-4f, "%s: forward with adapter vs trainer logits: max diff %g", name, d);
    CHECK(moved > 1e-2f, "%s: the adapter moves the logits (max %g)", name, moved);
    /* decode one token at a time (sgemv path) == prefill */
    float *step = malloc(sizeof(float) * V);
    float dd = 0.0f;
    for (int p = 0; p < 12; p++) {
        CHECK_OK(lt_model_forward(m, dl, kv, toks + p, 1, p, step, 0));
        float x = max_abs_diff(step, lg + (int64_t)p * V, V);
        if (x > dd) dd = x;
    }
    CHECK(dd < 1e-4f, "%s: decode vs prefill with adapter: %g", name, dd);
    free(step);
    lt_adapter_delta_free(dl);
    CHECK_OK(lt_model_forward(m, NULL, kv, toks, 12, 0, lg, 1));
    CHECK(max_abs_diff(lg, lg0, 12 * V) == 0.0f, "%s: without the delta, the base", name);

    /* writers / readers */
    const char *dir = lt_tmpdir();
    char path[1024];
    lt_adapter *r = NULL;
    snprintf(path, sizeof path, "%s/peft", dir);
    CHECK_OK(lt_adapter_save_peft(a, path));
    CHECK_OK(lt_adapter_load(path, &m->config, &r));
    if (r) {
        CHECK(adapter_diff(a, r) == 0.0f, "%s: PEFT round trip diff %g", name, adapter_diff(a, r));
        CHECK(!strcmp(r->base_model, "stories260K-hf") && r->rslora == rslora,
              "%s: PEFT base %s rslora %d", name, r->base_model, r->rslora);
    }
    lt_adapter_free(r);
    r = NULL;
    snprintf(path, sizeof path, "%s/mlx", dir);
    lt_status st = lt_adapter_save_mlx(a, &m->config, path);
    if (le > 0 && le < m->config.n_layers) {
        CHECK(st == LT_ERR_UNSUPPORTED && strstr(lt_errmsg(), "last num_layers"),
              "%s: mlx-lm can't say layers not ending at the last: %s", name, lt_errmsg());
    } else {
        CHECK(st == LT_OK, "%s: save mlx: %s", name, lt_errmsg());
        CHECK_OK(lt_adapter_load(path, &m->config, &r));
        if (r) {
            float x = adapter_diff(a, r); /* mlx stores the scale: alpha = scale * r */
            CHECK(x >= 0.0f && x == 0.0f, "%s: mlx round trip diff %g", name, x);
        }
        lt_adapter_free(r);
        r = NULL;
    }
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    st = lt_adapter_save_gguf(a, &m->config, LT_DTYPE_F32, path);
    if (method == LT_METHOD_DORA) {
        CHECK(st == LT_ERR_UNSUPPORTED && strstr(lt_errmsg(), "DoRA"), "dora gguf: %s",
              lt_errmsg());
    } else {
        CHECK(st == LT_OK, "%s: save gguf: %s", name, lt_errmsg());
        CHECK_OK(lt_adapter_load(path, &m->config, &r));
        if (r) {
            float x = adapter_diff(a, r);
            CHECK(x == 0.0f, "%s: GGUF f32 round trip diff %g", name, x);
        }
        lt_adapter_free(r);
        r = NULL;
        CHECK_OK(lt_adapter_save_gguf(a, &m->config, LT_DTYPE_F16, path));
        CHECK_OK(lt_adapter_load(path, &m->config, &r));
        if (r) {
            float x = adapter_diff(a, r); /* |values| <= 0.2: f16 step 2^-13 there */
            CHECK(x >= 0.0f && x <= 1.3e-4f, "%s: GGUF f16 round trip diff %g", name, x);
        }
        lt_adapter_free(r);
        r = NULL;
    }

    /* adapter -> a fresh trainer: same values */
    lt_trainer *tr2 = NULL;
    CHECK_OK(lt_trainer_create(m, &c, &tr2));
    if (tr2) {
        CHECK_OK(lt_adapter_to_trainer(a, tr2));
        float x = 0.0f;
        for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
            lt_train_tensor t1, t2;
            lt_trainer_tensor(tr, i, &t1);
            CHECK_OK(lt_trainer_find(tr2, t1.name, &t2));
            float *v1 = lt_tt_get(tr, t1.index, LT_TENSOR_VALUE);
            float *v2 = lt_tt_get(tr2, t2.index, LT_TENSOR_VALUE);
            float y = max_abs_diff(v1, v2, t1.numel);
            free(v1);
            free(v2);
            if (y > x) x = y;
        }
        CHECK(x == 0.0f, "%s: adapter -> trainer values diff %g", name, x);
        lt_train_config c2 = c;
        c2.lora.r = 8;
        lt_trainer *tr3 = NULL;
        CHECK_OK(lt_trainer_create(m, &c2, &tr3));
        if (tr3) CHECK_ERR(lt_adapter_to_trainer(a, tr3), LT_ERR_ARG, "r: the adapter has 4");
        lt_trainer_free(tr3);
    }
    lt_trainer_free(tr2);
    free(lg);
    free(lg0);
    lt_kv_cache_free(kv);
out:
    lt_adapter_free(a);
    lt_trainer_free(tr);
    lt_model_free(m);
}

int main(void) {
    run(LT_METHOD_LORA, LT_TARGET_ALL, 0, 0, 0);
    run(LT_METHOD_LORA, LT_TARGET_Q | LT_TARGET_K | LT_TARGET_V, 1, 4, 1); /* rslora, a range */
    run(LT_METHOD_DORA, LT_TARGET_ALL, 2, 0, 0);
    run(LT_METHOD_DORA, LT_TARGET_Q | LT_TARGET_DOWN, 0, 0, 0);

    /* full fine-tuning has no adapter */
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &m));
    lt_train_config c;
    lt_train_config_default(&c);
    c.method = LT_METHOD_FULL;
    c.seq_len = 8;
    lt_trainer *tr = NULL;
    lt_adapter *a = NULL;
    CHECK_OK(lt_trainer_create(m, &c, &tr));
    if (tr) CHECK_ERR(lt_adapter_from_trainer(tr, NULL, &a), LT_ERR_ARG, "full");
    lt_trainer_free(tr);
    lt_model_free(m);
    lt_adapter_free(NULL);
    LT_TEST_END();
}
