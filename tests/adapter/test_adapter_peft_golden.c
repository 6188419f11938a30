/* test_adapter_peft_golden.c - our adapters against Hugging Face PEFT 0.17.1.
 *
 * tools/gen_adapter_goldens.py runs this program with --emit DIR: it builds two adapters
 * deterministically (random non-zero A / B / magnitudes set into a trainer, taken out with
 * lt_adapter_from_trainer) and writes them with lt_adapter_save_peft. The script then loads
 * each folder with peft.PeftModel.from_pretrained on transformers' stories260K, records PEFT's
 * logits, and re-saves the adapter with PEFT's save_pretrained. Committed under
 * tests/data/adapter/: <name>/ (our folder, as PEFT read it), <name>_peft_saved/ (PEFT's),
 * <name>_logits.f32 ([T][V] float32 of PEFT's forward).
 *
 * Checks (CI, no PEFT needed):
 *   - lt_adapter_load of our folder and of PEFT's re-saved folder give the same values as the
 *     adapter rebuilt here (so the committed files are what the writer writes, and our reader
 *     reads PEFT's writer);
 *   - the writer's adapter_model.safetensors is byte-identical to the committed one;
 *   - lt_model_forward with the adapter's delta (no merging) matches PEFT's logits:
 *     max |diff| <= 1e-4 (fp32; logits are O(10));
 *   - the same on SmolLM2-135M-Instruct Q4_1 (models/, as test_smollm2_golden) with smol_dora,
 *     tolerance 2e-3 (test_smollm2_golden's: the base alone agrees to ~6e-5). */
#include <math.h>
#include <stdint.h>

#include "adapter/adapter_internal.h"
#include "loratune/adapter.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

#define T_TOK 12
static const int32_t toks[T_TOK] = {1, 403, 407, 261, 378, 439, 297, 261, 270, 356, 410, 46};

static uint64_t rng;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

typedef struct {
    const char *name;
    lt_train_method method;
    int r;
    float alpha;
    int rslora;
    unsigned targets;
    int lb, le;
} spec;

static const spec specs[] = {
    {"lora", LT_METHOD_LORA, 4, 8.0f, 0, LT_TARGET_ALL, 0, 0},
    {"dora", LT_METHOD_DORA, 4, 6.0f, 1,
     LT_TARGET_Q | LT_TARGET_V | LT_TARGET_O | LT_TARGET_GATE | LT_TARGET_DOWN, 1, 5},
};

static lt_adapter *make(lt_model *m, const spec *s) {
    lt_train_config c;
    lt_train_config_default(&c);
    c.method = s->method;
    c.lora.r = s->r;
    c.lora.alpha = s->alpha;
    c.lora.rslora = s->rslora;
    c.lora.targets = s->targets;
    c.lora.layer_begin = s->lb;
    c.lora.layer_end = s->le;
    c.seq_len = 16;
    lt_trainer *tr = NULL;
    lt_adapter *a = NULL;
    if (lt_trainer_create(m, &c, &tr)) return NULL;
    rng = 0x5EEDull + (uint64_t)s->method;
    for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
        lt_train_tensor t;
        lt_trainer_tensor(tr, i, &t);
        int mag = strstr(t.name, "magnitude") != NULL;
        float *val = lt_tt_get(tr, i, LT_TENSOR_VALUE);
        for (int64_t k = 0; k < t.numel; k++)
            val[k] = mag ? val[k] * (1.0f + 0.3f * frand()) : 0.2f * frand();
        lt_tt_put(tr, i, LT_TENSOR_VALUE, val);
    }
    if (lt_adapter_from_trainer(tr, "stories260K-hf", &a)) a = NULL;
    lt_trainer_free(tr);
    return a;
}

/* SmolLM2-135M-Instruct (Q4_1 GGUF: 9 / 3 heads, head_dim 64, tied embeddings): a DoRA r 1
 * on all 7 linears of the last layer, magnitudes near the weights' row norms. */
#define SMOL_T 8
static const int32_t smol_toks[SMOL_T] = {1, 504, 3458, 314, 260, 1345, 282, 253};
#define SMOL_V 2048 /* logits kept: the first SMOL_V of the vocabulary, every position */
static const char *smol_path(void) {
    static char b[4096];
    const char *env = getenv("LT_MODELS");
    snprintf(b, sizeof b, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", env ? env : lt_srcpath("models"));
    return b;
}
static lt_adapter *make_smol(const lt_model *m) {
    lt_adapter *a = NULL;
    int l = m->config.n_layers - 1;
    if (lt_adapter_new_(LT_METHOD_DORA, 1, 2.0f, 0, m->config.n_layers, &a)) return NULL;
    snprintf(a->base_model, sizeof a->base_model, "HuggingFaceTB/SmolLM2-135M-Instruct");
    rng = 0x5A011ull;
    const lt_model_config *c = &m->config;
    int64_t D = c->dim, QD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    const float *W[LT_N_TARGETS] = {m->w.wq + l * QD * D,    m->w.wk + l * KD * D,
                                    m->w.wv + l * KD * D,    m->w.wo + l * D * QD,
                                    m->w.w_gate + l * F * D, m->w.w_up + l * F * D,
                                    m->w.w_down + l * D * F};
    for (int t = 0; t < LT_N_TARGETS; t++) {
        if (lt_adapter_alloc_lin_(a, c, l, t)) {
            lt_adapter_free(a);
            return NULL;
        }
        lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
        for (int k = 0; k < L->in; k++)
            L->A[k] = 0.1f * frand();
        for (int o = 0; o < L->out; o++) {
            L->B[o] = 0.1f * frand();
            double ss = 0.0;
            for (int k = 0; k < L->in; k++)
                ss += (double)W[t][(int64_t)o * L->in + k] * W[t][(int64_t)o * L->in + k];
            L->mag[o] = (float)sqrt(ss) * (1.0f + 0.3f * frand());
        }
    }
    lt_adapter_refresh_(a);
    return a;
}

static float adiff(const lt_adapter *x, const lt_adapter *y) {
    if (x->n_layers != y->n_layers || x->r != y->r || x->method != y->method ||
        x->targets != y->targets || x->layer_begin != y->layer_begin ||
        x->layer_end != y->layer_end || lt_adapter_scale(x) != lt_adapter_scale(y))
        return INFINITY;
    float m = 0.0f;
    for (int i = 0; i < x->n_layers * LT_N_TARGETS; i++) {
        const lt_adapter_lin *a = &x->lin[i], *b = &y->lin[i];
        if (!a->A != !b->A) return INFINITY;
        if (!a->A) continue;
        int64_t n[3] = {(int64_t)x->r * a->in, (int64_t)a->out * x->r, a->mag ? a->out : 0};
        const float *p[3] = {a->A, a->B, a->mag}, *q[3] = {b->A, b->B, b->mag};
        for (int k = 0; k < 3; k++)
            for (int64_t j = 0; j < n[k]; j++) {
                float d = fabsf(p[k][j] - q[k][j]);
                if (!(d <= m)) m = d;
            }
    }
    return m;
}

int main(int argc, char **argv) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &m));
    if (!m) LT_TEST_END();
    char path[2048], p2[2048];
    if (argc == 3 && !strcmp(argv[1], "--emit")) {
        for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
            lt_adapter *a = make(m, &specs[i]);
            CHECK(a != NULL, "make %s: %s", specs[i].name, lt_errmsg());
            snprintf(path, sizeof path, "%s/%s", argv[2], specs[i].name);
            if (a) CHECK_OK(lt_adapter_save_peft(a, path));
            lt_adapter_free(a);
        }
        lt_model *sm = NULL;
        CHECK_OK(lt_model_load(smol_path(), NULL, &sm));
        lt_adapter *a = sm ? make_smol(sm) : NULL;
        snprintf(path, sizeof path, "%s/smol_dora", argv[2]);
        if (a) CHECK_OK(lt_adapter_save_peft(a, path));
        lt_adapter_free(a);
        lt_model_free(sm);
        lt_model_free(m);
        LT_TEST_END();
    }
    if (argc == 3 && !strcmp(argv[1], "--emit-peers")) {
        /* for tests/adapter/test_adapter_*_peer.py: the same adapters in every format */
        for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
            const char *nm = specs[i].name;
            lt_adapter *a = make(m, &specs[i]);
            CHECK(a != NULL, "make %s: %s", nm, lt_errmsg());
            if (!a) continue;
            snprintf(path, sizeof path, "%s/%s_peft", argv[2], nm);
            CHECK_OK(lt_adapter_save_peft(a, path));
            snprintf(path, sizeof path, "%s/%s_mlx", argv[2], nm);
            CHECK_OK(lt_adapter_save_mlx(a, &m->config, path));
            if (a->method == LT_METHOD_LORA) {
                snprintf(path, sizeof path, "%s/%s_f32.gguf", argv[2], nm);
                CHECK_OK(lt_adapter_save_gguf(a, &m->config, LT_DTYPE_F32, path));
                snprintf(path, sizeof path, "%s/%s_f16.gguf", argv[2], nm);
                CHECK_OK(lt_adapter_save_gguf(a, &m->config, LT_DTYPE_F16, path));
            }
            lt_adapter_free(a);
        }
        lt_model_free(m);
        LT_TEST_END();
    }
    if (argc == 4 && !strcmp(argv[1], "--emit-random")) {
        /* --emit-random MODEL OUT.gguf: a random LoRA (r 8, alpha 16, q and k of every layer:
         * the permuted ones) for MODEL's config, for the llama.cpp peer test on a real model */
        lt_model *big = NULL;
        lt_model_load_opts o = {.config_only = 1};
        CHECK_OK(lt_model_load(argv[2], &o, &big));
        lt_adapter *a = NULL;
        if (big) CHECK_OK(lt_adapter_new_(LT_METHOD_LORA, 8, 16.0f, 0, big->config.n_layers, &a));
        if (a) {
            rng = 0xA11CEull;
            unsigned tg = LT_TARGET_Q | LT_TARGET_K;
            for (int l = 0; l < a->n_layers; l++)
                for (int t = 0; t < LT_N_TARGETS; t++) {
                    if (!((tg >> t) & 1)) continue;
                    CHECK_OK(lt_adapter_alloc_lin_(a, &big->config, l, t));
                    lt_adapter_lin *L = &a->lin[l * LT_N_TARGETS + t];
                    for (int64_t k = 0; k < (int64_t)a->r * L->in; k++)
                        L->A[k] = 0.15f * frand();
                    for (int64_t k = 0; k < (int64_t)a->r * L->out; k++)
                        L->B[k] = 0.15f * frand();
                }
            lt_adapter_refresh_(a);
            CHECK_OK(lt_adapter_save_gguf(a, &big->config, LT_DTYPE_F32, argv[3]));
        }
        lt_adapter_free(a);
        lt_model_free(big);
        lt_model_free(m);
        LT_TEST_END();
    }
    int V = m->config.vocab_size;
    float *lg = malloc(sizeof(float) * T_TOK * V);
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, 32, 0, &kv));
    const char *tmp = lt_tmpdir();
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        const char *nm = specs[i].name;
        lt_adapter *a = make(m, &specs[i]), *ours = NULL, *theirs = NULL;
        CHECK(a != NULL, "make %s: %s", nm, lt_errmsg());
        snprintf(path, sizeof path, "tests/data/adapter/%s", nm);
        CHECK_OK(lt_adapter_load(lt_srcpath(path), &m->config, &ours));
        snprintf(path, sizeof path, "tests/data/adapter/%s_peft_saved", nm);
        CHECK_OK(lt_adapter_load(lt_srcpath(path), &m->config, &theirs));
        if (!a || !ours || !theirs) goto next;
        CHECK(adiff(a, ours) == 0.0f, "%s: committed folder vs rebuilt adapter: %g", nm,
              adiff(a, ours));
        CHECK(adiff(a, theirs) == 0.0f, "%s: PEFT's re-saved folder vs ours: %g", nm,
              adiff(a, theirs));
        snprintf(path, sizeof path, "%s/%s", tmp, nm);
        CHECK_OK(lt_adapter_save_peft(a, path));
        snprintf(path, sizeof path, "%s/%s/adapter_model.safetensors", tmp, nm);
        snprintf(p2, sizeof p2, "tests/data/adapter/%s/adapter_model.safetensors", nm);
        CHECK(lt_same_file(path, lt_srcpath(p2)),
              "%s: writer output differs from the committed "
              "file PEFT read (rerun tools/gen_adapter_goldens.py)",
              nm);

        /* PEFT's logits */
        snprintf(path, sizeof path, "tests/data/adapter/%s_logits.f32", nm);
        char *ref = NULL;
        size_t n = 0;
        CHECK_OK(lt_file_read_all(lt_srcpath(path), &ref, &n));
        CHECK(n == sizeof(float) * T_TOK * V, "%s: %zu bytes of logits", nm, n);
        if (n == sizeof(float) * T_TOK * V) {
            float base_move = 0.0f, d = 0.0f;
            CHECK_OK(lt_model_forward(m, NULL, kv, toks, T_TOK, 0, lg, 1));
            for (int64_t j = 0; j < (int64_t)T_TOK * V; j++) {
                float x = fabsf(lg[j] - ((float *)ref)[j]);
                if (x > base_move) base_move = x;
            }
            lt_model_delta *dl = NULL;
            CHECK_OK(lt_adapter_delta_create(ours, m, &dl));
            CHECK_OK(lt_model_forward(m, dl, kv, toks, T_TOK, 0, lg, 1));
            int shown = 0;
            for (int64_t j = 0; j < (int64_t)T_TOK * V; j++) {
                float x = fabsf(lg[j] - ((float *)ref)[j]);
                if (!(x <= 1e-4f) && shown++ < 5)
                    fprintf(stderr, "  %s: pos %lld token %lld: ours %.6f PEFT %.6f\n", nm,
                            (long long)(j / V), (long long)(j % V), lg[j], ((float *)ref)[j]);
                if (!(x <= d)) d = x;
            }
            CHECK(d <= 1e-4f, "%s: logits vs PEFT: max |diff| %g", nm, d);
            CHECK(base_move > 0.05f, "%s: the adapter moves PEFT's logits by %g (non-trivial)", nm,
                  base_move);
            printf("%s: max |ours - PEFT| %.3g (the adapter moves the logits by up to %.3g)\n", nm,
                   d, base_move);
            lt_adapter_delta_free(dl);
        }
        free(ref);
    next:
        lt_adapter_free(a);
        lt_adapter_free(ours);
        lt_adapter_free(theirs);
    }
    free(lg);
    lt_kv_cache_free(kv);
    lt_model_free(m);

    /* SmolLM2: a real model's shapes (GQA 9 / 3, head_dim 64). Our fp32 forward of the Q4_1
     * base agrees with transformers to ~1e-4 (tests/model/test_smollm2_golden.c allows 2e-3):
     * the same tolerance here. */
    if (!lt_path_exists(smol_path())) {
        CHECK(0, "%s missing: run tools/fetch_smollm2.sh", smol_path());
        LT_TEST_END();
    }
    lt_model *sm = NULL;
    CHECK_OK(lt_model_load(smol_path(), NULL, &sm));
    if (!sm) LT_TEST_END();
    lt_adapter *sa = make_smol(sm), *sl = NULL;
    CHECK_OK(lt_adapter_load(lt_srcpath("tests/data/adapter/smol_dora"), &sm->config, &sl));
    CHECK(sa && sl && adiff(sa, sl) == 0.0f, "smol_dora: committed folder vs rebuilt adapter");
    char *ref = NULL, *ref0 = NULL;
    size_t n = 0, n0 = 0;
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/adapter/smol_dora_logits.f32"), &ref, &n));
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/adapter/smol_base_logits.f32"), &ref0, &n0));
    int SV = sm->config.vocab_size;
    float *sg = malloc(sizeof(float) * SMOL_T * SV);
    lt_kv_cache *skv = NULL;
    CHECK_OK(lt_kv_cache_create(sm, 16, 0, &skv));
    if (sl && skv && sg && n == sizeof(float) * SMOL_T * SMOL_V && n0 == n) {
        const float *r = (const float *)ref, *r0 = (const float *)ref0;
        float d = 0.0f, d0 = 0.0f, moved = 0.0f;
        CHECK_OK(lt_model_forward(sm, NULL, skv, smol_toks, SMOL_T, 0, sg, 1));
        for (int t = 0; t < SMOL_T; t++)
            for (int v = 0; v < SMOL_V; v++) {
                float x = fabsf(sg[(int64_t)t * SV + v] - r0[t * SMOL_V + v]);
                if (!(x <= d0)) d0 = x;
                x = fabsf(r[t * SMOL_V + v] - r0[t * SMOL_V + v]);
                if (x > moved) moved = x;
            }
        lt_model_delta *sd = NULL;
        CHECK_OK(lt_adapter_delta_create(sl, sm, &sd));
        CHECK_OK(lt_model_forward(sm, sd, skv, smol_toks, SMOL_T, 0, sg, 1));
        lt_adapter_delta_free(sd);
        for (int t = 0; t < SMOL_T; t++)
            for (int v = 0; v < SMOL_V; v++) {
                float x = fabsf(sg[(int64_t)t * SV + v] - r[t * SMOL_V + v]);
                if (!(x <= d)) d = x;
            }
        printf("smol_dora: max |ours - PEFT| %.3g (base alone %.3g; the adapter moves the "
               "logits by up to %.3g)\n",
               d, d0, moved);
        CHECK(d <= 2e-3f, "smol_dora: logits vs PEFT: max |diff| %g", d);
        CHECK(moved > 0.05f, "smol_dora: the adapter moves PEFT's logits by %g", moved);
    } else {
        CHECK(0, "smol_dora: logits files %zu / %zu bytes, expected %zu", n, n0,
              sizeof(float) * SMOL_T * SMOL_V);
    }
    free(ref);
    free(ref0);
    free(sg);
    lt_kv_cache_free(skv);
    lt_adapter_free(sa);
    lt_adapter_free(sl);
    lt_model_free(sm);
    LT_TEST_END();
}
