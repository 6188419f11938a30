/* test_export.c - lt_adapter_merge and the whole-model writers (lt_model_save_hf /
 * lt_model_save_gguf).
 *
 * Without arguments (ctest):
 *   - merge: LoRA and DoRA on stories260K-hf with a random adapter, against a double-precision
 *     loop of PEFT's formulas written out here; errors for a shape mismatch, a wrong layer
 *     count, a DoRA adapter without magnitudes, released weights; a failed merge leaves the
 *     weights untouched.
 *   - HF folder f32 / bf16 / f16 and GGUF f32 / f16 / q8_0 read back by the loaders
 *     (load_hf.c, load_gguf.c, which undo the llama q/k permutation independently of the
 *     writer): weights equal (f32) or within the dtype's rounding, logits within tolerance.
 *   - bad dtypes, qwen2 without biases.
 * As a tool for tests/export/test_fuse_peer.py and tools/check_fuse.py:
 *   test_export --fuse MODEL OUT hf|gguf DTYPE SEED lora|dora|none ADAPTER.safetensors
 *                      LOGITS.f32 ID...
 *     loads MODEL, merges a random adapter (seeded; every target of every layer, r = 4,
 *     alpha = 8) in memory, writes it to OUT, the adapter to ADAPTER.safetensors (tensors
 *     "L.TARGET.A" [r][in], "L.TARGET.B" [out][r], "L.TARGET.mag" [out]; metadata r, alpha)
 *     and the merged model's logits for the ids ([n][V] float32) to LOGITS.f32.
 *   test_export --logits MODEL LOGITS.f32 ID...   logits of MODEL as it is. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/adapter.h"
#include "loratune/export.h"
#include "loratune/gguf.h"
#include "loratune/model.h"
#include "loratune/safetensors.h"
#include "lt_test.h"

static uint64_t rng_state;
static float urand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void dims(const lt_model_config *c, int t, int *out, int *in) {
    int D = c->dim, F = c->ffn_dim, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    static const int o_[7] = {0, 1, 1, 2, 3, 3, 2}, i_[7] = {2, 2, 2, 0, 2, 2, 3};
    int v[4] = {QD, KD, D, F};
    *out = v[o_[t]];
    *in = v[i_[t]];
}

static float *weight_of(const lt_model *m, int l, int t) {
    const lt_model_config *c = &m->config;
    int out, in;
    dims(c, t, &out, &in);
    float *base[7] = {m->w.wq, m->w.wk, m->w.wv, m->w.wo, m->w.w_gate, m->w.w_up, m->w.w_down};
    return base[t] + (int64_t)l * out * in;
}

/* A random adapter on every target of every layer. DoRA magnitudes: the row norms of W
 * perturbed by up to 10%. */
static lt_adapter *random_adapter(const lt_model *m, uint64_t seed, lt_train_method method, int r,
                                  float alpha) {
    const lt_model_config *c = &m->config;
    rng_state = seed * 2654435761u + 88172645463325252ull;
    lt_adapter *a = calloc(1, sizeof *a);
    a->method = method;
    a->r = r;
    a->alpha = alpha;
    a->targets = LT_TARGET_ALL;
    a->n_layers = c->n_layers;
    a->layer_end = c->n_layers;
    a->lin = calloc((size_t)c->n_layers * LT_N_TARGETS, sizeof *a->lin);
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            dims(c, t, &li->out, &li->in);
            li->A = malloc(sizeof(float) * (size_t)r * li->in);
            li->B = malloc(sizeof(float) * (size_t)li->out * r);
            for (int64_t k = 0; k < (int64_t)r * li->in; k++)
                li->A[k] = 0.05f * urand();
            for (int64_t k = 0; k < (int64_t)r * li->out; k++)
                li->B[k] = 0.05f * urand();
            if (method == LT_METHOD_DORA) {
                li->mag = malloc(sizeof(float) * (size_t)li->out);
                const float *W = weight_of(m, l, t);
                for (int o = 0; o < li->out; o++) {
                    double ss = 0;
                    for (int i = 0; i < li->in; i++)
                        ss += (double)W[(int64_t)o * li->in + i] * W[(int64_t)o * li->in + i];
                    li->mag[o] = (float)sqrt(ss) * (1.0f + 0.1f * urand());
                }
            }
        }
    return a;
}

static void free_adapter(lt_adapter *a) {
    if (!a) return;
    for (int k = 0; a->lin && k < a->n_layers * LT_N_TARGETS; k++) {
        free(a->lin[k].A);
        free(a->lin[k].B);
        free(a->lin[k].mag);
    }
    free(a->lin);
    free(a);
}

/* PEFT's merge written out in double: W + s B A, DoRA: mag / ||.||_row * (.). */
static void reference_merge(const float *W, const lt_adapter_lin *li, int r, double s, int dora,
                            double *out) {
    for (int o = 0; o < li->out; o++) {
        double ss = 0;
        for (int i = 0; i < li->in; i++) {
            double d = 0;
            for (int k = 0; k < r; k++)
                d += (double)li->B[o * r + k] * li->A[(int64_t)k * li->in + i];
            double v = W[(int64_t)o * li->in + i] + s * d;
            out[(int64_t)o * li->in + i] = v;
            ss += v * v;
        }
        if (dora)
            for (int i = 0; i < li->in; i++)
                out[(int64_t)o * li->in + i] *= li->mag[o] / sqrt(ss);
    }
}

static const char *HF;
static char tmpdir[256];

static void test_merge(lt_train_method method) {
    lt_model *m = NULL, *base = NULL;
    CHECK_OK(lt_model_load(HF, NULL, &m));
    CHECK_OK(lt_model_load(HF, NULL, &base));
    if (!m || !base) return;
    lt_adapter *a = random_adapter(m, 7, method, 4, 8.0f);
    CHECK_OK(lt_adapter_merge(m, a));
    double maxerr = 0, maxdelta = 0;
    for (int l = 0; l < m->config.n_layers; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            double *ref = malloc(sizeof(double) * (size_t)li->out * li->in);
            reference_merge(weight_of(base, l, t), li, 4, 2.0, method == LT_METHOD_DORA, ref);
            const float *got = weight_of(m, l, t), *w0 = weight_of(base, l, t);
            for (int64_t k = 0; k < (int64_t)li->out * li->in; k++) {
                double e = fabs(got[k] - ref[k]) / (1e-3 + fabs(ref[k]));
                if (e > maxerr) maxerr = e;
                if (fabs(ref[k] - w0[k]) > maxdelta) maxdelta = fabs(ref[k] - w0[k]);
            }
            free(ref);
        }
    CHECK(maxerr < 1e-4, "%s merge: max relative error %g vs the double reference",
          lt_train_method_name(method), maxerr);
    CHECK(maxdelta > 1e-3, "the random adapter must change the weights (max delta %g)", maxdelta);
    /* untouched: norms, embeddings */
    CHECK(!memcmp(m->w.tok_embd, base->w.tok_embd,
                  sizeof(float) * (size_t)m->config.vocab_size * m->config.dim),
          "embeddings unchanged");
    free_adapter(a);
    lt_model_free(m);
    lt_model_free(base);
}

static void test_merge_errors(void) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(HF, NULL, &m));
    if (!m) return;
    float *copy = malloc(sizeof(float) * (size_t)m->n_params);
    memcpy(copy, m->params, sizeof(float) * (size_t)m->n_params);
    lt_adapter *a = random_adapter(m, 3, LT_METHOD_LORA, 4, 8.0f);
    a->lin[2 * LT_N_TARGETS + 4].in += 1; /* layer 2 gate_proj: wrong in */
    CHECK_ERR(lt_adapter_merge(m, a), LT_ERR_ARG, "layer 2 gate_proj");
    CHECK(!memcmp(copy, m->params, sizeof(float) * (size_t)m->n_params),
          "a failed merge leaves the weights untouched");
    a->lin[2 * LT_N_TARGETS + 4].in -= 1;
    a->n_layers = 4;
    CHECK_ERR(lt_adapter_merge(m, a), LT_ERR_ARG, "4 layers, the model has 5");
    a->n_layers = 5;
    a->method = LT_METHOD_DORA;
    CHECK_ERR(lt_adapter_merge(m, a), LT_ERR_ARG,
              "layer 0 q_proj: DoRA adapter without a magnitude");
    a->method = LT_METHOD_FULL;
    CHECK_ERR(lt_adapter_merge(m, a), LT_ERR_ARG, "'full' cannot be merged");
    a->method = LT_METHOD_LORA;
    lt_model_release_weights(m);
    CHECK_ERR(lt_adapter_merge(m, a), LT_ERR_ARG, "released");
    CHECK_ERR(lt_model_save_hf(m, HF, tmpdir, LT_DTYPE_F32), LT_ERR_ARG, "released");
    free_adapter(a);
    free(copy);
    lt_model_free(m);
}

static int64_t count_over(const float *a, const float *b, int64_t n, double rel, double abs_tol) {
    int64_t bad = 0;
    for (int64_t k = 0; k < n; k++)
        if (fabs((double)a[k] - b[k]) > abs_tol + rel * fabs((double)b[k])) bad++;
    return bad;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double mx = 0;
    for (int64_t k = 0; k < n; k++)
        if (fabs((double)a[k] - b[k]) > mx) mx = fabs((double)a[k] - b[k]);
    return mx;
}

static float *logits_of(const lt_model *m, const int32_t *ids, int n) {
    lt_kv_cache *kv = NULL;
    float *lg = malloc(sizeof(float) * (size_t)n * m->config.vocab_size);
    if (lt_kv_cache_create(m, n, n, &kv) || lt_model_forward(m, NULL, kv, ids, n, 0, lg, 1)) {
        free(lg);
        lg = NULL;
    }
    lt_kv_cache_free(kv);
    return lg;
}

/* Writes m in every form, reads it back with our loaders, compares. */
static void test_roundtrip(void) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(HF, NULL, &m));
    if (!m) return;
    lt_adapter *a = random_adapter(m, 11, LT_METHOD_LORA, 4, 8.0f);
    CHECK_OK(lt_adapter_merge(m, a));
    free_adapter(a);
    const int32_t ids[] = {1, 403, 407, 261, 378, 426, 260, 500, 23, 7};
    int n = 10, V = m->config.vocab_size;
    float *ref = logits_of(m, ids, n);
    struct {
        int gguf;
        lt_dtype t;
        double wrel, wabs; /* per-weight tolerance */
        double lmax;       /* max |logit difference| */
    } cases[] = {
        {0, LT_DTYPE_F32, 0, 0, 0},
        {0, LT_DTYPE_BF16, 1.0 / 256, 1e-30, 0.25},
        {0, LT_DTYPE_F16, 1.0 / 2048, 1e-7, 0.02},
        {1, LT_DTYPE_F32, 0, 0, 0},
        {1, LT_DTYPE_F16, 1.0 / 2048, 1e-7, 0.02},
        {1, LT_DTYPE_Q8_0, 0, 0, 0.5}, /* q8_0: checked per block below */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char out[512];
        snprintf(out, sizeof out, "%s/rt_%zu%s", tmpdir, k, cases[k].gguf ? ".gguf" : "");
        if (cases[k].gguf)
            CHECK_OK(lt_model_save_gguf(m, HF, out, cases[k].t));
        else
            CHECK_OK(lt_model_save_hf(m, HF, out, cases[k].t));
        lt_model *b = NULL;
        CHECK_OK(lt_model_load(out, NULL, &b));
        if (!b) continue;
        const char *what = lt_dtype_name(cases[k].t);
        CHECK(b->config.tied_embeddings == m->config.tied_embeddings &&
                  b->config.n_kv_heads == m->config.n_kv_heads && b->config.dim == m->config.dim &&
                  b->config.norm_eps == m->config.norm_eps && b->config.bos_id == m->config.bos_id,
              "%s %s: config read back", cases[k].gguf ? "gguf" : "hf", what);
        CHECK(b->n_params == m->n_params, "%s: parameter count", what);
        if (b->n_params != m->n_params) {
            lt_model_free(b);
            continue;
        }
        if (cases[k].t == LT_DTYPE_Q8_0) {
            /* q8_0 per 32-block: |err| <= d/2 + 127 |d - f16(d)| <= 0.57 d, d = amax/127;
             * 1-D tensors stay exact */
            int64_t bad = 0;
            const float *x = m->w.wq, *y = b->w.wq;
            int64_t ne = (int64_t)m->config.n_layers * m->config.n_heads * m->config.head_dim *
                         m->config.dim;
            for (int64_t s = 0; s < ne; s += 32) {
                float amax = 0;
                for (int i = 0; i < 32; i++)
                    amax = fmaxf(amax, fabsf(x[s + i]));
                for (int i = 0; i < 32; i++)
                    if (fabsf(x[s + i] - y[s + i]) > amax / 127.0f * 0.57f + 1e-7f) bad++;
            }
            CHECK(bad == 0, "q8_0 attn_q: %lld values beyond half a quantization step",
                  (long long)bad);
            CHECK(!memcmp(m->w.attn_norm, b->w.attn_norm, sizeof(float) * (size_t)m->config.dim),
                  "q8_0: norms stay f32");
        } else {
            int64_t bad =
                count_over(b->params, m->params, m->n_params, cases[k].wrel, cases[k].wabs);
            CHECK(bad == 0, "%s %s: %lld weights beyond rounding", cases[k].gguf ? "gguf" : "hf",
                  what, (long long)bad);
        }
        float *lg = logits_of(b, ids, n);
        double d = lg && ref ? max_abs_diff(lg, ref, (int64_t)n * V) : 1e9;
        CHECK(d <= cases[k].lmax, "%s %s: max logit difference %g > %g",
              cases[k].gguf ? "gguf" : "hf", what, d, cases[k].lmax);
        printf("roundtrip %-4s %-5s max |logit diff| %.3g\n", cases[k].gguf ? "gguf" : "hf", what,
               d);
        free(lg);
        lt_model_free(b);
    }
    /* the HF folder got the tokenizer files; the GGUF a sentencepiece vocabulary */
    char p[600];
    snprintf(p, sizeof p, "%s/rt_0/tokenizer.model", tmpdir);
    CHECK(lt_path_exists(p), "tokenizer.model copied");
    snprintf(p, sizeof p, "%s/rt_0/tokenizer_config.json", tmpdir);
    CHECK(lt_path_exists(p), "tokenizer_config.json copied");
    snprintf(p, sizeof p, "%s/rt_3.gguf", tmpdir);
    lt_gguf *g = NULL;
    CHECK_OK(lt_gguf_open(p, &g));
    if (g) {
        uint64_t nt = 0;
        lt_gguf_type et;
        const void *d;
        CHECK_OK(lt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nt, &d));
        CHECK(nt == 512, "gguf vocabulary of 512 pieces, got %llu", (unsigned long long)nt);
        const char *s;
        size_t l;
        CHECK(lt_gguf_get_str(g, "tokenizer.ggml.model", &s, &l) == LT_OK && l == 5 &&
                  !memcmp(s, "llama", 5),
              "tokenizer.ggml.model llama");
        lt_gguf_close(g);
    }
    /* bad arguments */
    CHECK_ERR(lt_model_save_hf(m, HF, tmpdir, LT_DTYPE_Q8_0), LT_ERR_ARG,
              "expected f32, bf16 or f16");
    CHECK_ERR(lt_model_save_gguf(m, HF, p, LT_DTYPE_BF16), LT_ERR_ARG, "expected f32, f16 or q8_0");
    m->config.arch = LT_ARCH_QWEN2;
    CHECK_ERR(lt_model_save_hf(m, HF, tmpdir, LT_DTYPE_F32), LT_ERR_UNSUPPORTED,
              "without q/k/v biases");
    m->config.arch = LT_ARCH_LLAMA;
    /* a sentencepiece GGUF has no tokenizer.json form: refused before anything is written */
    snprintf(p, sizeof p, "%s/from_spm_gguf", tmpdir);
    CHECK_ERR(lt_model_save_hf(m, lt_fixture("stories260K/stories260K.gguf"), p, LT_DTYPE_F32),
              LT_ERR_UNSUPPORTED, "tokenizer.ggml.model is not \"gpt2\"");
    CHECK(!lt_path_exists(p), "nothing written on a refused export");
    free(ref);
    lt_model_free(m);
}

/* Synthetic qwen2 / llama-with-biases models (no fixtures of those): HF and GGUF f32 round trips
 * through our loaders must give back every weight bit for bit (qwen2: no q/k permutation, biases;
 * llama with biases: permuted biases, a zero o_proj.bias that the loader ignores). */
static void test_synthetic(lt_arch arch) {
    lt_model_config c = {0};
    c.arch = arch;
    c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16, c.ffn_dim = 96;
    c.vocab_size = 128, c.max_seq_len = 64, c.norm_eps = 1e-6f, c.rope_theta = 1e6f;
    c.qkv_bias = 1, c.tied_embeddings = 0, c.bos_id = 1, c.eos_id = 2, c.n_eos_ids = 1;
    c.eos_ids[0] = 2;
    lt_model *m = NULL;
    CHECK_OK(lt_model_create(&c, &m));
    if (!m) return;
    rng_state = 99;
    for (int64_t k = 0; k < m->n_params; k++)
        m->params[k] = 0.2f * urand();
    for (int f = 0; f < 2; f++) {
        char out[512];
        snprintf(out, sizeof out, "%s/syn_%s%s", tmpdir, lt_arch_name(arch), f ? ".gguf" : "");
        CHECK_OK(f ? lt_model_save_gguf(m, NULL, out, LT_DTYPE_F32)
                   : lt_model_save_hf(m, NULL, out, LT_DTYPE_F32));
        lt_model *b = NULL;
        CHECK_OK(lt_model_load(out, NULL, &b));
        if (!b) continue;
        CHECK(b->config.arch == arch && b->config.qkv_bias && !b->config.tied_embeddings &&
                  b->config.rope_theta == c.rope_theta && b->config.head_dim == 16,
              "%s %s: config read back", lt_arch_name(arch), f ? "gguf" : "hf");
        CHECK(b->n_params == m->n_params &&
                  !memcmp(b->params, m->params, sizeof(float) * (size_t)m->n_params),
              "%s %s: weights bit for bit", lt_arch_name(arch), f ? "gguf" : "hf");
        lt_model_free(b);
    }
    lt_model_free(m);
}

/* ---- tool mode ----------------------------------------------------------------------- */
static int write_logits(const lt_model *m, const char *path, int n, char **idv) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        ids[i] = atoi(idv[i]);
    float *lg = logits_of(m, ids, n);
    free(ids);
    if (!lg) {
        fprintf(stderr, "forward failed: %s\n", lt_errmsg());
        return 1;
    }
    FILE *f = fopen(path, "wb");
    size_t want = (size_t)n * m->config.vocab_size;
    int ok = f && fwrite(lg, sizeof(float), want, f) == want;
    if (f) fclose(f);
    free(lg);
    if (!ok) fprintf(stderr, "%s: cannot write\n", path);
    return !ok;
}

static int save_adapter(const lt_adapter *a, const char *path) {
    lt_st_writer *w = NULL;
    if (lt_st_writer_create(&w)) return 1;
    char names[3 * 7 * 64][48];
    int k = 0;
    char rs[32], as[32];
    snprintf(rs, sizeof rs, "%d", a->r);
    snprintf(as, sizeof as, "%g", (double)a->alpha);
    lt_st_writer_set_metadata(w, "r", rs);
    lt_st_writer_set_metadata(w, "alpha", as);
    lt_st_writer_set_metadata(w, "method", lt_train_method_name(a->method));
    for (int l = 0; l < a->n_layers && l < 64; l++)
        for (int t = 0; t < LT_N_TARGETS; t++) {
            const lt_adapter_lin *li = &a->lin[l * LT_N_TARGETS + t];
            int64_t sa[2] = {a->r, li->in}, sb[2] = {li->out, a->r}, sm[1] = {li->out};
            snprintf(names[k], 48, "%d.%s.A", l, lt_target_name(t));
            lt_st_writer_add(w, names[k++], LT_DTYPE_F32, 2, sa, li->A,
                             sizeof(float) * (size_t)(sa[0] * sa[1]));
            snprintf(names[k], 48, "%d.%s.B", l, lt_target_name(t));
            lt_st_writer_add(w, names[k++], LT_DTYPE_F32, 2, sb, li->B,
                             sizeof(float) * (size_t)(sb[0] * sb[1]));
            if (li->mag) {
                snprintf(names[k], 48, "%d.%s.mag", l, lt_target_name(t));
                lt_st_writer_add(w, names[k++], LT_DTYPE_F32, 1, sm, li->mag,
                                 sizeof(float) * (size_t)sm[0]);
            }
        }
    lt_status st = lt_st_writer_write(w, path);
    lt_st_writer_free(w);
    if (st) fprintf(stderr, "%s\n", lt_errmsg());
    return st != LT_OK;
}

static int tool_fuse(int argc, char **argv) {
    if (argc < 11) {
        fprintf(stderr, "usage: test_export --fuse MODEL OUT hf|gguf DTYPE SEED lora|dora|none "
                        "ADAPTER.safetensors LOGITS.f32 ID...\n");
        return 2;
    }
    const char *model = argv[2], *out = argv[3], *fmt = argv[4], *dts = argv[5];
    uint64_t seed = strtoull(argv[6], NULL, 10);
    const char *meth = argv[7];
    lt_dtype dt = !strcmp(dts, "f32")    ? LT_DTYPE_F32
                  : !strcmp(dts, "f16")  ? LT_DTYPE_F16
                  : !strcmp(dts, "bf16") ? LT_DTYPE_BF16
                                         : LT_DTYPE_Q8_0;
    lt_model *m = NULL;
    if (lt_model_load(model, NULL, &m)) {
        fprintf(stderr, "%s\n", lt_errmsg());
        return 1;
    }
    int rc = 0;
    if (strcmp(meth, "none")) {
        lt_adapter *a = random_adapter(
            m, seed, !strcmp(meth, "dora") ? LT_METHOD_DORA : LT_METHOD_LORA, 4, 8.0f);
        rc = save_adapter(a, argv[8]);
        if (!rc && lt_adapter_merge(m, a)) {
            fprintf(stderr, "%s\n", lt_errmsg());
            rc = 1;
        }
        free_adapter(a);
    }
    if (!rc) {
        lt_status st = !strcmp(fmt, "gguf") ? lt_model_save_gguf(m, model, out, dt)
                                            : lt_model_save_hf(m, model, out, dt);
        if (st) {
            fprintf(stderr, "%s\n", lt_errmsg());
            rc = 1;
        }
    }
    if (!rc) rc = write_logits(m, argv[9], argc - 10, argv + 10);
    lt_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--fuse")) return tool_fuse(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "--logits")) {
        if (argc < 5) {
            fprintf(stderr, "usage: test_export --logits MODEL LOGITS.f32 ID...\n");
            return 2;
        }
        lt_model *m = NULL;
        if (lt_model_load(argv[2], NULL, &m)) {
            fprintf(stderr, "%s\n", lt_errmsg());
            return 1;
        }
        int rc = write_logits(m, argv[3], argc - 4, argv + 4);
        lt_model_free(m);
        return rc;
    }
    HF = lt_fixture("stories260K-hf");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lt_test_export_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_merge(LT_METHOD_LORA);
    test_merge(LT_METHOD_DORA);
    test_merge_errors();
    test_roundtrip();
    test_synthetic(LT_ARCH_QWEN2);
    test_synthetic(LT_ARCH_LLAMA);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    LT_TEST_END();
}
