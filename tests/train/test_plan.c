/* test_plan.c - the memory plan against what lt_trainer_create really allocates.
 *
 * For a grid of (model, method, targets, B, T, checkpointing, base dtype) configs:
 *   - plan.alloc[category] == bytes recorded by the trainer's allocator, and the same number of
 *     allocation calls;
 *   - no allocation happens in accumulate / step / eval: every malloc / calloc / realloc /
 *     aligned allocation of the whole process, in any thread, is counted (tests/alloc_count.h);
 *     the counter itself is checked on planted allocations (this thread, OpenMP workers), and
 *     test_plan_planted builds the library's step with a planted allocation
 *     (LT_TEST_PLANT_STEP_ALLOC) and expects this check to catch it;
 *   - checkpointing shrinks the activations (plan and recorded) when the model has >= 2 layers.
 * Plus: a plan from a folder holding only config.json equals the plan from the full model
 * (loaded whole: lt_train_plan; lazily: lt_train_plan_assumed == lt_train_plan_model, for every
 * method and base dtype);
 * bad config values fail with a message naming the field;
 * a bf16 LoRA base releases the model's fp32 weights (RSS measured, the model refuses to run
 * after), and the plan's two moments (creation, steady) add up;
 * `loratune plan` (the program next to this test binary) prints the same numbers as --json. */
#define _GNU_SOURCE 1 /* dl_iterate_phdr, for alloc_count.h */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc_count.h"
#include "loratune/model.h"
#include "loratune/train.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

/* Built twice: test_plan, where the step must not allocate, and test_plan_planted, whose
 * trainer.c allocates in every step (LT_TEST_PLANT_STEP_ALLOC): there the same count must be
 * non-zero, or the check above could not fail. */
#ifdef LT_TEST_PLANT_STEP_ALLOC
#define STEP_ALLOCS_OK(n) ((n) > 0)
#define STEP_ALLOCS_WANT "> 0 (planted allocation in the step)"
#else
#define STEP_ALLOCS_OK(n) ((n) == 0)
#define STEP_ALLOCS_WANT "0"
#endif

static void fill_batch(int32_t *tok, int32_t *tgt, int N, int V) {
    for (int i = 0; i < N; i++) {
        tok[i] = (i * 7 + 3) % V;
        tgt[i] = i % 5 == 0 ? -100 : (i * 11 + 1) % V;
    }
}

static void grid(const char *model_path) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(model_path, NULL, &m));
    if (!m) return;
    const lt_train_method methods[3] = {LT_METHOD_LORA, LT_METHOD_DORA, LT_METHOD_FULL};
    const unsigned targets[2] = {LT_TARGET_Q | LT_TARGET_V, LT_TARGET_ALL};
    const int Bs[2] = {1, 2}, Ts[2] = {8, 16};
    int ncfg = 0;
    long others[LT_ALLOC_NKIND] = {0};
    for (int mi = 0; mi < 3; mi++)
        for (int ti = 0; ti < 2; ti++)
            for (int bi = 0; bi < 2; bi++)
                for (int dt = 0; dt < 3; dt++) { /* f32, bf16 base, bf16 base + compute */
                    if (methods[mi] == LT_METHOD_FULL && ti == 1) continue;
                    if (dt == 2 && methods[mi] == LT_METHOD_DORA) continue; /* fp32 only */
                    int64_t act[2] = {0, 0}, rec_act[2] = {0, 0};
                    for (int ck = 0; ck <= 1; ck++) {
                        lt_train_config c;
                        lt_train_config_default(&c);
                        c.method = methods[mi];
                        c.lora.r = 4;
                        c.lora.targets = targets[ti];
                        c.lora.dropout = bi ? 0.1f : 0.0f;
                        c.batch_size = Bs[bi];
                        c.seq_len = Ts[bi];
                        c.grad_checkpoint = ck;
                        c.base_dtype = dt ? LT_DTYPE_BF16 : LT_DTYPE_F32;
                        c.compute_dtype = dt == 2 ? LT_DTYPE_BF16 : LT_DTYPE_F32;
                        c.keep_logits = bi;
                        if (methods[mi] == LT_METHOD_FULL && dt) c.full.layer_begin = 1;
                        lt_train_plan_t p;
                        CHECK_OK(lt_train_plan(&m->config, &c, &p));
                        if (m->weights_released) { /* the previous config released them */
                            lt_model_free(m);
                            m = NULL;
                            CHECK_OK(lt_model_load(model_path, NULL, &m));
                            if (!m) return;
                        }
                        lt_trainer *tr = NULL;
                        CHECK_OK(lt_trainer_create(m, &c, &tr));
                        if (!tr) continue;
                        int rel = c.method != LT_METHOD_FULL && dt;
                        CHECK(p.released_base == rel && m->weights_released == rel,
                              "cfg %d: released %d, model released %d, expected %d", ncfg,
                              p.released_base, m->weights_released, rel);
                        int64_t bytes[LT_MEM_COUNT], na = 0;
                        lt_trainer_mem(tr, bytes, &na);
                        for (int k = 0; k < LT_MEM_COUNT; k++)
                            CHECK(bytes[k] == p.alloc[k],
                                  "%s cfg %d: %s planned %lld, allocated %lld", model_path, ncfg,
                                  lt_mem_category_name((lt_mem_category)k), (long long)p.alloc[k],
                                  (long long)bytes[k]);
                        CHECK(na == p.n_allocs, "allocs %lld vs planned %lld", (long long)na,
                              (long long)p.n_allocs);
                        /* independent of the layout code: per-tensor 64-byte padding only */
                        int64_t nt4 = p.n_trainable * 4, pad = 64 * (int64_t)p.n_tensors;
                        CHECK(p.alloc[LT_MEM_GRADS] >= nt4 && p.alloc[LT_MEM_GRADS] < nt4 + pad,
                              "grads %lld for %lld trainable", (long long)p.alloc[LT_MEM_GRADS],
                              (long long)p.n_trainable);
                        CHECK(p.alloc[LT_MEM_OPTIMIZER] >= 2 * nt4 &&
                                  p.alloc[LT_MEM_OPTIMIZER] < 2 * (nt4 + pad),
                              "optimizer %lld", (long long)p.alloc[LT_MEM_OPTIMIZER]);
                        if (c.method == LT_METHOD_FULL)
                            CHECK(p.alloc[LT_MEM_TRAINABLE] == 0, "full FT trains in place");
                        else
                            CHECK(p.alloc[LT_MEM_TRAINABLE] >= nt4 &&
                                      p.alloc[LT_MEM_TRAINABLE] < nt4 + pad,
                                  "trainable %lld", (long long)p.alloc[LT_MEM_TRAINABLE]);
                        if (c.base_dtype == LT_DTYPE_F32)
                            CHECK(p.alloc[LT_MEM_WEIGHTS] == 0, "f32 base: zero copy");
                        else
                            CHECK(p.alloc[LT_MEM_WEIGHTS] > 0, "16-bit copies planned");
                        int64_t sum = p.overhead_bytes;
                        for (int k = 0; k < LT_MEM_COUNT; k++)
                            sum += p.bytes[k];
                        CHECK(p.steady_bytes == sum && sum == (rel ? 0 : p.model_bytes) +
                                                                  p.alloc_total + p.overhead_bytes,
                              "cfg %d: steady %lld, bytes[] + overhead %lld", ncfg,
                              (long long)p.steady_bytes, (long long)sum);
                        if (rel)
                            CHECK(p.create_peak_bytes == p.model_bytes + p.alloc[LT_MEM_WEIGHTS] +
                                                             p.create_touched_bytes +
                                                             p.overhead_bytes &&
                                      p.create_touched_bytes > 0 &&
                                      p.create_touched_bytes < p.alloc[LT_MEM_WORKSPACE] &&
                                      p.bytes[LT_MEM_WEIGHTS] == p.alloc[LT_MEM_WEIGHTS],
                                  "cfg %d: creation peak", ncfg);
                        else
                            CHECK(p.create_peak_bytes == p.steady_bytes,
                                  "cfg %d: no release: one moment", ncfg);
                        CHECK(p.peak_bytes == (p.create_peak_bytes > p.steady_bytes
                                                   ? p.create_peak_bytes
                                                   : p.steady_bytes),
                              "peak = max(creation, steady)");
                        act[ck] = p.alloc[LT_MEM_ACTIVATIONS];
                        rec_act[ck] = bytes[LT_MEM_ACTIVATIONS];
                        /* the hot path does not allocate */
                        int N = c.batch_size * c.seq_len;
                        int32_t tok[64], tgt[64];
                        fill_batch(tok, tgt, N, m->config.vocab_size);
                        lt_batch b = {c.batch_size, c.seq_len, tok, tgt, NULL, NULL};
                        lt_loss_stats ls;
                        if (dt == 2) { /* bf16: oneDNN's primitives are made on first use */
                            CHECK_OK(lt_trainer_accumulate(tr, &b, 0.0f, &ls));
                            CHECK_OK(lt_trainer_eval(tr, &b, &ls));
                            lt_trainer_zero_grad(tr);
                        }
                        lt_alloc_count_begin();
                        for (int s = 0; s < 2; s++) {
                            CHECK_OK(lt_trainer_accumulate(tr, &b, 0.0f, &ls));
                            CHECK_OK(lt_trainer_step(tr, -1.0f, NULL));
                        }
                        CHECK_OK(lt_trainer_eval(tr, &b, &ls));
                        long kinds[LT_ALLOC_NKIND];
                        long nalloc = lt_alloc_count_end(kinds);
                        CHECK(STEP_ALLOCS_OK(nalloc),
                              "cfg %d: %ld allocations by loratune during 2 steps + eval, "
                              "expected " STEP_ALLOCS_WANT, ncfg, nalloc);
                        for (int k = 0; k < LT_ALLOC_NKIND; k++)
                            others[k] += kinds[k];
                        CHECK(isfinite(ls.loss), "loss %g", (double)ls.loss);
                        int64_t na2 = 0;
                        lt_trainer_mem(tr, NULL, &na2);
                        CHECK(na2 == na, "allocations during steps: %lld -> %lld", (long long)na,
                              (long long)na2);
                        lt_trainer_free(tr);
                        ncfg++;
                    }
                    if (m->config.n_layers >= 2) {
                        CHECK(act[1] < act[0], "checkpointing: activations %lld -> %lld",
                              (long long)act[0], (long long)act[1]);
                        CHECK(rec_act[1] < rec_act[0], "recorded activations %lld -> %lld",
                              (long long)rec_act[0], (long long)rec_act[1]);
                    }
                }
    printf("%s: %d configs: plan == allocation; in the steps: %ld allocations by loratune, %ld by "
           "%s, %ld by %s, %ld by %s (their own bookkeeping)\n",
           model_path, ncfg, others[LT_ALLOC_OURS], others[LT_ALLOC_GOMP],
           lt_alloc_kind_name[LT_ALLOC_GOMP], others[LT_ALLOC_BLAS],
           lt_alloc_kind_name[LT_ALLOC_BLAS], others[LT_ALLOC_DNNL],
           lt_alloc_kind_name[LT_ALLOC_DNNL]);
    lt_model_free(m);
}

static void config_only(void) {
    /* a folder with only config.json */
    const char *dir = lt_tmpdir();
    char dst[1024], *buf = NULL;
    size_t len = 0;
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/train/random_qwen2/config.json"), &buf, &len));
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    CHECK_OK(lt_file_write_atomic(dst, buf, len));
    free(buf);
    lt_model_config mc;
    CHECK_OK(lt_model_config_load_hf(dst, &mc));
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_srcpath("tests/data/train/random_qwen2"), NULL, &m));
    if (!m) return;
    lt_train_config c;
    lt_train_config_default(&c);
    c.method = LT_METHOD_DORA;
    c.batch_size = 2;
    c.seq_len = 16;
    lt_train_plan_t a, b;
    CHECK_OK(lt_train_plan(&mc, &c, &a));
    CHECK_OK(lt_train_plan(&m->config, &c, &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0, "config-only plan differs from the loaded model's");
    CHECK(a.n_params == m->n_params, "n_params %lld vs %lld", (long long)a.n_params,
          (long long)m->n_params);
    /* trainable count by hand: q,v of 2 layers, r=8: A[8][32] + B[out][8] + mag[out] */
    int64_t want = 2 * ((8 * 32 + 32 * 8 + 32) + (8 * 32 + 16 * 8 + 16));
    CHECK(a.n_trainable == want, "n_trainable %lld, expected %lld", (long long)a.n_trainable,
          (long long)want);
    remove(dst);
    rmdir(dir);
    lt_model_free(m);

    /* the lazily loaded folder (what `train` plans over) against the files the config
     * describes, assumed: every method, base dtype and checkpointing the same to the byte */
    lt_model_load_opts lo = {.lazy = 1};
    CHECK_OK(lt_model_load(lt_srcpath("tests/data/train/random_qwen2"), &lo, &m));
    if (!m) return;
    CHECK(mc.dtype == LT_DTYPE_F32 && mc.dtype_stated, "random_qwen2: dtype float32 stated");
    const lt_train_method methods[] = {LT_METHOD_LORA, LT_METHOD_DORA, LT_METHOD_QLORA};
    const lt_dtype bases[] = {LT_DTYPE_F32, LT_DTYPE_BF16, LT_DTYPE_F16};
    int n = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int ck = 0; ck < 2; ck++) {
                lt_train_config_default(&c);
                c.method = methods[i];
                c.base_dtype = bases[j];
                c.grad_checkpoint = ck;
                c.lora.targets = LT_TARGET_ALL;
                c.batch_size = 2;
                c.seq_len = 16;
                CHECK_OK(lt_train_plan_assumed(&mc, mc.dtype, &c, &a));
                CHECK_OK(lt_train_plan_model(m, &c, &b));
                CHECK(a.lazy && memcmp(&a, &b, sizeof a) == 0,
                      "%s base %s ckpt %d: assumed files plan %lld (mapped %lld) vs lazy model "
                      "%lld (mapped %lld)",
                      lt_train_method_name(c.method), lt_dtype_name(c.base_dtype), ck,
                      (long long)a.peak_bytes, (long long)a.mapped_bytes, (long long)b.peak_bytes,
                      (long long)b.mapped_bytes);
                n++;
            }
    /* full fine-tuning loads the model whole: the assumed-files plan is lt_train_plan's */
    lt_train_config_default(&c);
    c.method = LT_METHOD_FULL;
    CHECK_OK(lt_train_plan_assumed(&mc, LT_DTYPE_BF16, &c, &a));
    CHECK_OK(lt_train_plan(&mc, &c, &b));
    CHECK(!a.lazy && memcmp(&a, &b, sizeof a) == 0, "full FT: assumed files plan = loaded plan");
    /* 16-bit files halve what is read in place (LoRA, f32 base: every frozen tensor in place) */
    lt_train_config_default(&c);
    CHECK_OK(lt_train_plan_assumed(&mc, LT_DTYPE_F32, &c, &a));
    CHECK_OK(lt_train_plan_assumed(&mc, LT_DTYPE_BF16, &c, &b));
    CHECK(a.mapped_bytes > 0 && b.mapped_bytes * 2 == a.mapped_bytes,
          "mapped bytes f32 %lld, bf16 %lld", (long long)a.mapped_bytes, (long long)b.mapped_bytes);
    CHECK_ERR(lt_train_plan_assumed(&mc, LT_DTYPE_Q4_0, &c, &a), LT_ERR_ARG, "weights dtype");
    printf("assumed weight files: %d configs equal the lazy model's plan\n", n);
    lt_model_free(m);
}

static void bad_values(void) {
    lt_model_config mc;
    CHECK_OK(lt_model_config_load_hf(lt_srcpath("tests/data/train/random_qwen2/config.json"), &mc));
    lt_train_config c;
    lt_train_plan_t p;
    lt_train_config_default(&c);
    c.lora.r = 0;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "lora.r");
    lt_train_config_default(&c);
    c.batch_size = 0;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "batch_size");
    lt_train_config_default(&c);
    c.seq_len = -3;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "seq_len");
    lt_train_config_default(&c);
    c.lora.layer_begin = 1;
    c.lora.layer_end = 5;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "lora.layer_begin");
    lt_train_config_default(&c);
    c.lora.targets = 0;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "lora.targets");
    lt_train_config_default(&c);
    c.lora.dropout = 1.0f;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "lora.dropout");
    lt_train_config_default(&c);
    c.base_dtype = LT_DTYPE_Q4_0;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "base_dtype");
    lt_train_config_default(&c);
    c.method = (lt_train_method)7;
    CHECK_ERR(lt_train_plan(&mc, &c, &p), LT_ERR_ARG, "method: expected lora, dora, full or qlora");
    unsigned mask = 0;
    CHECK_ERR(lt_target_mask_parse("q,x_proj", &mask), LT_ERR_ARG, "unknown target 'x_proj'");
    CHECK_OK(lt_target_mask_parse("q_proj,v", &mask));
    CHECK(mask == (LT_TARGET_Q | LT_TARGET_V), "mask 0x%x", mask);
    CHECK_OK(lt_target_mask_parse("all", &mask));
    CHECK(mask == LT_TARGET_ALL, "mask 0x%x", mask);
    lt_train_method meth;
    CHECK_ERR(lt_train_method_parse("adapter", &meth), LT_ERR_ARG, "method");
    /* a trainer needs weights */
    lt_model *m = NULL;
    lt_model_load_opts o = {.config_only = 1};
    CHECK_OK(lt_model_load(lt_srcpath("tests/data/train/random_qwen2"), &o, &m));
    lt_trainer *tr = NULL;
    lt_train_config_default(&c);
    CHECK_ERR(lt_trainer_create(m, &c, &tr), LT_ERR_ARG, "no weights");
    lt_model_free(m);
    /* batch checks */
    CHECK_OK(lt_model_load(lt_srcpath("tests/data/train/random_qwen2"), NULL, &m));
    c.batch_size = 1;
    c.seq_len = 4;
    CHECK_OK(lt_trainer_create(m, &c, &tr));
    if (tr) {
        int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {2, 3, 4, -100, 6, 7, 8, 9};
        int32_t pos[4] = {0, 1, 2, 4};
        lt_batch b = {2, 4, tok, tgt, NULL, NULL};
        CHECK_ERR(lt_trainer_accumulate(tr, &b, 0, NULL), LT_ERR_ARG, "B: expected 1..1");
        b.B = 1;
        b.pos = pos;
        CHECK_ERR(lt_trainer_accumulate(tr, &b, 0, NULL), LT_ERR_ARG, "pos[3] = 4");
        b.pos = NULL;
        tok[1] = 96;
        CHECK_ERR(lt_trainer_accumulate(tr, &b, 0, NULL), LT_ERR_ARG, "token 96");
        tok[1] = 2;
        tgt[0] = 500;
        CHECK_ERR(lt_trainer_accumulate(tr, &b, 0, NULL), LT_ERR_ARG, "target 500");
        lt_train_tensor t;
        int dirty = 0; /* a rejected batch left the gradients untouched */
        for (int i = 0; i < lt_trainer_n_tensors(tr); i++) {
            lt_trainer_tensor(tr, i, &t);
            float *g = lt_tt_get(tr, i, LT_TENSOR_GRAD);
            for (int64_t k = 0; k < t.numel; k++)
                dirty |= g[k] != 0.0f;
            free(g);
        }
        CHECK(!dirty, "gradients changed by rejected batches");
        CHECK_ERR(lt_trainer_find(tr, "nope", &t), LT_ERR_NOTFOUND, "nope");
        float x[4] = {0};
        CHECK_ERR(lt_trainer_set(
                      tr, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", x, 4),
                  LT_ERR_ARG, "expected 256 values");
    }
    lt_trainer_free(tr);
    lt_model_free(m);
}

/* VmRSS / VmHWM of this process in bytes, -1 if unreadable */
static int64_t proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') v = atoll(line + kl + 1) * 1024;
    fclose(f);
    return v;
}

/* A 16-bit LoRA base releases the model's fp32 weights: measured in RSS, and the model then
 * refuses everything that needs them. Model: SmolLM-like random shape, dim 256, 3 layers,
 * 4 heads (2 kv) of 64, ffn 768, vocab 4096, untied: 4.5M params = 17.8 MB fp32, 8.9 MB bf16.
 * B=2, T=128 makes the other trainer blocks (activations, workspace) larger than the copies, so
 * the creation peak shows whether they were first touched after the release. */
static void released_base(void) {
    lt_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.arch = LT_ARCH_LLAMA;
    mc.dim = 256;
    mc.n_layers = 3;
    mc.n_heads = 4;
    mc.n_kv_heads = 2;
    mc.head_dim = 64;
    mc.ffn_dim = 768;
    mc.vocab_size = 4096;
    mc.max_seq_len = 128;
    mc.norm_eps = 1e-5f;
    mc.rope_theta = 10000.0f;
    mc.bos_id = mc.eos_id = -1;
    mc.dtype = LT_DTYPE_F32;
    lt_model *m = NULL;
    CHECK_OK(lt_model_create(&mc, &m));
    if (!m) return;
    uint32_t x = 12345; /* touch every page: the params mapping starts as zero pages */
    for (int64_t i = 0; i < m->n_params; i++) {
        x = x * 1664525u + 1013904223u;
        m->params[i] = ((float)(x >> 8) / 16777216.0f - 0.5f) * 0.1f;
    }
    for (int64_t i = 0; i < (int64_t)mc.n_layers * mc.dim; i++)
        m->w.attn_norm[i] = m->w.ffn_norm[i] = 1.0f;
    lt_kv_cache *kv = NULL;
    CHECK_OK(lt_kv_cache_create(m, 16, 4, &kv));
    int32_t tok[4] = {1, 2, 3, 4};
    static float logits[4096];
    CHECK_OK(lt_model_forward(m, NULL, kv, tok, 4, 0, logits, 0));

    lt_train_config c;
    lt_train_config_default(&c);
    c.lora.r = 4;
    c.batch_size = 2;
    c.seq_len = 128;
    c.base_dtype = LT_DTYPE_BF16;
    lt_train_plan_t p;
    CHECK_OK(lt_train_plan(&mc, &c, &p));
    CHECK(p.released_base, "bf16 LoRA releases by default");
    int64_t rss0 = proc_status_kb("VmRSS");
    /* "5" resets VmHWM to the current RSS (Linux >= 4.0) */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    int hwm_ok = cr && fputs("5", cr) >= 0;
    if (cr) hwm_ok &= fclose(cr) == 0;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_create(m, &c, &tr));
    int64_t rss1 = proc_status_kb("VmRSS"), hwm = proc_status_kb("VmHWM");
    CHECK(m->weights_released && !m->params && !m->w.wq && !m->w.tok_embd && !m->w.lm_head,
          "model weights released");
    /* what keeping the fp32 model would have cost, minus what we see: ~ model_bytes */
    int64_t saved = rss0 + p.alloc_total - rss1;
    printf("released bf16 base: model %.1f MB fp32, copies %.1f MB, trainer %.1f MB; RSS %+.1f MB "
           "(saved %.1f MB vs keeping the model)\n",
           p.model_bytes / 1e6, p.alloc[LT_MEM_WEIGHTS] / 1e6, p.alloc_total / 1e6,
           (rss1 - rss0) / 1e6, saved / 1e6);
    CHECK(rss0 > 0 && rss1 > 0, "VmRSS unreadable");
    CHECK(saved >= p.model_bytes / 2, "RSS saved %lld bytes, expected about %lld (model fp32)",
          (long long)saved, (long long)p.model_bytes);
    if (hwm_ok && hwm > 0) {
        /* the plan's peak over what was resident before (model + overhead): max(copies +
         * bookkeeping during creation, all blocks - model after). Touching every block before
         * the release would instead rise by alloc_total. Slack: ASan's shadow (1/8 of the
         * blocks) and 4 MiB of allocator / page-granularity noise. */
        int64_t rise = hwm - rss0, want = p.peak_bytes - p.model_bytes - p.overhead_bytes;
        int64_t bound = want + p.alloc_total / 8 + ((int64_t)4 << 20);
        printf("peak RSS rose %.1f MB (plan: %.1f MB; touching all blocks before the release: "
               "%.1f MB)\n",
               rise / 1e6, want / 1e6, p.alloc_total / 1e6);
        CHECK(want ==
                  (p.alloc[LT_MEM_WEIGHTS] + p.create_touched_bytes > p.alloc_total - p.model_bytes
                       ? p.alloc[LT_MEM_WEIGHTS] + p.create_touched_bytes
                       : p.alloc_total - p.model_bytes),
              "plan peak");
        CHECK(bound < p.alloc_total, "test too weak: bound %lld >= all blocks %lld",
              (long long)bound, (long long)p.alloc_total);
        CHECK(rise <= bound, "creation peak rose %lld bytes, expected <= %lld", (long long)rise,
              (long long)bound);
    } else {
        printf("creation peak: /proc/self/clear_refs not writable, not measured\n");
    }
    /* the trainer works from its copies alone */
    int32_t ttok[256], ttgt[256];
    fill_batch(ttok, ttgt, 256, mc.vocab_size);
    lt_batch b = {2, 128, ttok, ttgt, NULL, NULL};
    lt_loss_stats ls;
    CHECK_OK(lt_trainer_accumulate(tr, &b, 0.0f, &ls));
    CHECK_OK(lt_trainer_step(tr, -1.0f, NULL));
    CHECK(isfinite(ls.loss) && ls.loss > 7.0f && ls.loss < 10.0f, "loss %g (ln 4096 = 8.3)",
          (double)ls.loss);
    /* and the model refuses what needs the weights */
    CHECK_ERR(lt_model_check_weights(m, "generate"), LT_ERR_ARG,
              "model weights were released to a trainer holding a 16-bit copy");
    CHECK(lt_model_forward(m, NULL, kv, tok, 4, 0, logits, 0) == LT_ERR_ARG, "forward after release");
    lt_trainer *tr2 = NULL;
    CHECK_ERR(lt_trainer_create(m, &c, &tr2), LT_ERR_ARG, "released to a trainer");
    lt_model_release_weights(m); /* twice: no-op */
    lt_trainer_free(tr);
    lt_kv_cache_free(kv);
    lt_model_free(m);

    /* opt-out, an F32 base and full FT keep the model's weights */
    const lt_train_method meths[3] = {LT_METHOD_DORA, LT_METHOD_LORA, LT_METHOD_FULL};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(lt_model_load(lt_srcpath("tests/data/train/random_qwen2"), NULL, &m));
        if (!m) return;
        lt_train_config_default(&c);
        c.method = meths[k];
        c.base_dtype = k == 1 ? LT_DTYPE_F32 : LT_DTYPE_F16;
        c.release_base_fp32 = k != 0;
        c.seq_len = 8;
        CHECK_OK(lt_train_plan(&m->config, &c, &p));
        CHECK(!p.released_base, "case %d: plan says released", k);
        CHECK_OK(lt_trainer_create(m, &c, &tr));
        CHECK(!m->weights_released && m->params, "case %d: weights kept", k);
        CHECK_OK(lt_model_check_weights(m, "kept"));
        lt_trainer_free(tr);
        lt_model_free(m);
    }
}

/* runs cmd, returns its exit status and output (stdout + stderr) in out */
static int run_cmd(const char *cmd, char *out, size_t n) {
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t k = fread(out, 1, n - 1, f);
    out[k] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void cli(void) {
    char exe[1024];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 16);
    CHECK(k > 0, "readlink /proc/self/exe failed");
    if (k <= 0) return;
    exe[k] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return;
    strcpy(slash + 1, "loratune");
    /* CMake builds the program next to the tests: its absence is a failure, not a skip */
    CHECK(access(exe, X_OK) == 0, "%s not built", exe);
    if (access(exe, X_OK) != 0) return;
    /* a folder holding only config.json */
    const char *dir = lt_tmpdir();
    char cfg[1024], *buf = NULL;
    size_t len = 0;
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/train/random_qwen2/config.json"), &buf, &len));
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    CHECK_OK(lt_file_write_atomic(cfg, buf, len));
    free(buf);
    static char out[65536];
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "'%s' plan --model '%s' --method dora --batch-size 3 --max-seq-len 20 "
             "--grad-checkpoint --lora-rank 4 --lora-targets q,k,down --json 2>&1",
             exe, dir);
    int rc = run_cmd(cmd, out, sizeof out);
    CHECK(rc == 0, "loratune plan exit %d: %s", rc, out);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    CHECK(j != NULL, "plan --json output is not JSON: %s", out);
    lt_model_config mc;
    CHECK_OK(lt_model_config_load_hf(cfg, &mc));
    lt_train_config c;
    lt_train_config_default(&c);
    c.method = LT_METHOD_DORA;
    c.batch_size = 3;
    c.seq_len = 20;
    c.grad_checkpoint = 1;
    c.lora.r = 4;
    c.lora.targets = LT_TARGET_Q | LT_TARGET_K | LT_TARGET_DOWN;
    lt_train_plan_t p;
    /* no weight files: planned over the files the config describes, loaded lazily */
    CHECK_OK(lt_train_plan_assumed(&mc, mc.dtype, &c, &p));
    if (j) {
        json_t *as = json_object_get(j, "assumptions");
        CHECK(json_is_true(json_object_get(j, "lazy")) &&
                  json_is_false(json_object_get(j, "weight_files")) &&
                  json_is_string(json_object_get(j, "weights_dtype")) &&
                  !strcmp(json_string_value(json_object_get(j, "weights_dtype")), "f32") &&
                  json_array_size(as) == 3,
              "config-only: lazy, no weight files, f32 weights, 3 assumptions: %s", out);
        CHECK(json_integer_value(json_object_get(j, "peak_bytes")) == p.peak_bytes, "peak");
        CHECK(json_integer_value(json_object_get(j, "n_trainable")) == p.n_trainable, "trainable");
        json_t *by = json_object_get(j, "bytes");
        for (int i = 0; i < LT_MEM_COUNT; i++)
            CHECK(json_integer_value(
                      json_object_get(by, lt_mem_category_name((lt_mem_category)i))) == p.bytes[i],
                  "bytes.%s", lt_mem_category_name((lt_mem_category)i));
        json_decref(j);
    }
    /* with the files: the lazy model's plan, nothing assumed */
    snprintf(cmd, sizeof cmd,
             "'%s' plan --model '%s' --method dora --batch-size 3 --max-seq-len 20 "
             "--grad-checkpoint --lora-rank 4 --lora-targets q,k,down --json 2>&1",
             exe, lt_srcpath("tests/data/train/random_qwen2"));
    rc = run_cmd(cmd, out, sizeof out);
    j = rc == 0 ? json_loads(out, 0, &jerr) : NULL;
    CHECK(j && json_integer_value(json_object_get(j, "peak_bytes")) == p.peak_bytes &&
              json_is_true(json_object_get(j, "weight_files")) &&
              json_array_size(json_object_get(j, "assumptions")) == 0,
          "with the files: the same peak, no assumptions: exit %d: %s", rc, out);
    json_decref(j);
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s' --method qlora 2>&1", exe, dir);
    rc = run_cmd(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "assumed") && strstr(out, "torch_dtype") &&
              strstr(out, "lazy load"),
          "table lists the assumptions: exit %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s' --method full 2>&1", exe, dir);
    rc = run_cmd(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "predicted peak") && strstr(out, "activations"),
          "table: exit %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s' --method qlora 2>&1", exe, dir);
    rc = run_cmd(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "NF4"), "qlora: exit %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s' --method lora --lora-rank 0 2>&1", exe, dir);
    rc = run_cmd(cmd, out, sizeof out);
    CHECK(rc != 0 && strstr(out, "lora.r"), "rank 0: exit %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s' --method lora --lora-targets q,w 2>&1", exe,
             dir);
    rc = run_cmd(cmd, out, sizeof out);
    CHECK(rc != 0 && strstr(out, "unknown target 'w'"), "bad target: exit %d: %s", rc, out);
    remove(cfg);
    rmdir(dir);
}

/* The counter counts: planted allocations in this thread and in OpenMP workers. */
static void counter_counts(void) {
    lt_alloc_count_begin();
    void *volatile p = malloc(24);
    free(p);
    p = calloc(3, 8);
    p = realloc(p, 4096);
    free(p);
    void *q = NULL;
    CHECK(posix_memalign(&q, 64, 100) == 0 && q, "posix_memalign");
    free(q);
    long n = lt_alloc_count_end(NULL);
    CHECK(n == 4, "counter: %ld allocations counted, 4 planted", n);
    long nt = 0;
    volatile long warm = 0;
#pragma omp parallel num_threads(2) reduction(+ : warm)
    warm += 1; /* the threads are made (libc allocates their stacks) before counting */
    lt_alloc_count_begin();
#pragma omp parallel num_threads(2) reduction(+ : nt)
    {
        void *volatile r = malloc(32);
        free(r);
        nt += 1;
    }
    long kinds[LT_ALLOC_NKIND];
    n = lt_alloc_count_end(kinds);
    CHECK(n == nt && nt >= 1, "counter over %ld OpenMP threads: %ld allocations (%ld libgomp, %ld OpenBLAS)", nt, n, kinds[1], kinds[2]);
    p = malloc(8); /* outside a span: not counted */
    free(p);
    lt_alloc_count_begin();
    CHECK(lt_alloc_count_end(NULL) == 0, "counter: empty span");
    /* an allocation made for us by libc is ours */
    lt_alloc_count_begin();
    char *volatile d = strdup("planted");
    free(d);
    CHECK(lt_alloc_count_end(NULL) == 1, "counter: strdup is counted as ours");
}

int main(void) {
    counter_counts();
    lt_set_num_threads(1); /* tiny matrices: threads only add contention on CI */
    grid(lt_srcpath("tests/data/train/random_qwen2"));
#ifdef LT_TEST_PLANT_STEP_ALLOC
    LT_TEST_END(); /* the planted build checks the allocation count only */
#endif
    grid(lt_fixture("stories260K-hf"));
    config_only();
    bad_values();
    released_base();
    cli();
    LT_TEST_END();
}
