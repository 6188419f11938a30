/* bench_train_step.c - times optimizer steps of the CPU training engine and checks the memory
 * plan against the process's real peak RSS. Prints ONE JSON line on stdout (progress on stderr).
 *
 *   bench_train_step [--shape smollm2-135m|smollm2-360m|llama3.2-1b|llama3-8b|small|tiny
 *                     | --model PATH]
 *                    [--method lora|dora|full|qlora] [--targets q,v|all] [--rank R] [--alpha A]
 *                    [--batch B] [--seq T] [--accum K] [--grad-checkpoint]
 *                    [--base-dtype auto|f32|bf16|f16] [--compute-dtype f32|bf16]
 *                    [--warmup W] [--steps N] [--threads N] [--seed S] [--whole]
 *                    [--device cpu|cuda]
 *
 * --base-dtype auto (the default) picks as `loratune train` does (lt_run_pick_base_dtype): bf16
 * for LoRA with bf16 compute over a bf16 checkpoint, else f32. The named SmolLM2 and Llama-3.2
 * shapes count as bf16 checkpoints, as their published weights are.
 *
 * --device cuda trains on the CUDA backend (lt_trainer_create_on; each timed step ends with
 * the backend's sync); the memory numbers stay the host's.
 *
 * --model PATH trains lazily like `loratune train` (the weights stay in the mapped file; the
 * trainer copies / quantizes tensor by tensor or uses them in place) unless --whole or full FT.
 * A named shape gets random weights (seeded ~normal(0, 0.02) as transformers' initializer_range,
 * norm weights 1), so no file is needed; every page of the weights is written, so the model's
 * fp32 weights are really resident like a loaded model's. Tokens are uniform random in [0, V),
 * every target counted (no -100), one sequence per row. One optimizer step = K micro-batches of
 * B x T (lt_trainer_accumulate each) + lt_trainer_step.
 *
 * FLOPs (model FLOPs, the MFU convention: recomputation by gradient checkpointing NOT counted;
 * "hw_flops_per_step" adds it). A matmul of a [C -> OC] linear costs 2*C*OC per token forward,
 * the same again for the input gradient and again for the weight gradient. With
 *   P_mm = weights of every matmul = L*(D*QD + 2*D*KVD + QD*D + 3*D*F) + V*D (LM head; the
 *          embedding lookup is free), tok = B*T*K tokens per step,
 *   ATT  = forward attention matmuls = L * 2 (QK^T, PV) * 2 (mul+add) * B*K * NH * HD *
 *          T*(T+1)/2 (causal pairs only), its backward (dQ, dK, dV, dP) = 2*ATT,
 * full FT:   6*P_mm*tok + 3*ATT                              (fwd + dX + dW for every matmul)
 * LoRA/DoRA: 4*P_mm*tok + 3*ATT + 6*r*(C+OC)*tok per adapted linear
 *            (fwd + dX through the frozen weights; no dW GEMM for frozen weights, i.e. 6*N*tok
 *            minus 2*N*tok; the adapter's own A/B matmuls are the last term). This counts dX
 *            through every layer even below the lowest adapted layer, and ignores DoRA's per-
 *            step weight-norm work (OC*C*(2r+2)): both are small for these runs.
 * Elementwise ops (norms, rope, softmax, SwiGLU, CE, AdamW) are not counted.
 *
 * Memory: predicted = lt_train_plan's peak_bytes; measured = max(ru_maxrss, VmHWM) at the end
 * (both are the same high-water mark of resident memory; both reported). Also reported: VmRSS
 * at start (binary + libraries), after the model and after lt_trainer_create, to show what
 * the plan's overhead term has to cover. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "loratune/core.h"
#include "loratune/hwinfo.h"
#include "loratune/model.h"
#include "loratune/run.h"
#include "loratune/train.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* "VmHWM:" / "VmRSS:" of /proc/self/status in bytes, -1 if unreadable. */
static int64_t proc_status_bytes(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) {
            v = strtoll(line + kl, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

/* splitmix64 + Box-Muller: deterministic, fast enough for 360M floats. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53; }
/* Normal(0, stdv) values: Box-Muller is too slow for 360M floats on a busy 2-core machine, so
 * draw from a 64K-entry table of Box-Muller samples with a splitmix index stream (seeded). */
static void fill_normal(float *p, int64_t n, float stdv, uint64_t *s) {
    enum { NT = 1 << 16 };
    static float table[NT];
    for (int i = 0; i < NT; i += 2) {
        double u1 = rng_unif(s), u2 = rng_unif(s), r = sqrt(-2.0 * log(u1));
        table[i] = (float)(stdv * r * cos(6.283185307179586 * u2));
        table[i + 1] = (float)(stdv * r * sin(6.283185307179586 * u2));
    }
    for (int64_t i = 0; i < n; i += 4) {
        uint64_t z = rng_next(s);
        for (int j = 0; j < 4 && i + j < n; j++) p[i + j] = table[(z >> (16 * j)) & (NT - 1)];
    }
}
static void fill_const(float *p, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++) p[i] = v;
}

static int shape_config(const char *name, lt_model_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = LT_ARCH_LLAMA;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->max_seq_len = 8192;
    c->tied_embeddings = 1;
    c->bos_id = 1;
    c->eos_id = 2;
    c->dtype = LT_DTYPE_F32;
    if (!strncmp(name, "smollm2-", 8) || !strncmp(name, "llama3", 6)) {
        c->dtype = LT_DTYPE_BF16; /* as their checkpoints are stored (base-dtype auto reads it) */
        c->dtype_stated = 1;
    }
    if (!strcmp(name, "smollm2-135m")) {
        c->dim = 576, c->n_layers = 30, c->n_heads = 9, c->n_kv_heads = 3, c->head_dim = 64;
        c->ffn_dim = 1536, c->vocab_size = 49152, c->rope_theta = 100000.0f;
    } else if (!strcmp(name, "smollm2-360m")) {
        c->dim = 960, c->n_layers = 32, c->n_heads = 15, c->n_kv_heads = 5, c->head_dim = 64;
        c->ffn_dim = 2560, c->vocab_size = 49152, c->rope_theta = 100000.0f;
    } else if (!strcmp(name, "llama3.2-1b")) { /* Llama-3.2-1B's shape (the GPU rows) */
        c->dim = 2048, c->n_layers = 16, c->n_heads = 32, c->n_kv_heads = 8, c->head_dim = 64;
        c->ffn_dim = 8192, c->vocab_size = 128256, c->rope_theta = 500000.0f;
    } else if (!strcmp(name, "llama3-8b")) { /* Llama-3-8B's shape: untied head, head dim 128 */
        c->dim = 4096, c->n_layers = 32, c->n_heads = 32, c->n_kv_heads = 8, c->head_dim = 128;
        c->ffn_dim = 14336, c->vocab_size = 128256, c->rope_theta = 500000.0f;
        c->tied_embeddings = 0;
    } else if (!strcmp(name, "small")) { /* ~10M params: a quick second point for the grid */
        c->dim = 256, c->n_layers = 8, c->n_heads = 8, c->n_kv_heads = 4, c->head_dim = 32;
        c->ffn_dim = 704, c->vocab_size = 8192;
    } else if (!strcmp(name, "tiny")) { /* smoke runs */
        c->dim = 64, c->n_layers = 2, c->n_heads = 4, c->n_kv_heads = 2, c->head_dim = 16;
        c->ffn_dim = 172, c->vocab_size = 512;
    } else {
        return -1;
    }
    return 0;
}

static void randomize(lt_model *m, uint64_t seed) {
    const lt_model_config *c = &m->config;
    int64_t D = c->dim, L = c->n_layers;
    uint64_t s = seed;
    fill_normal(m->params, m->n_params, 0.02f, &s);
    fill_const(m->w.attn_norm, L * D, 1.0f);
    fill_const(m->w.ffn_norm, L * D, 1.0f);
    fill_const(m->w.out_norm, D, 1.0f);
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    if (m->w.bq) fill_const(m->w.bq, L * QD, 0.0f);
    if (m->w.bk) fill_const(m->w.bk, L * KD, 0.0f);
    if (m->w.bv) fill_const(m->w.bv, L * KD, 0.0f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_train_step\n"
            "  [--shape smollm2-135m|smollm2-360m|llama3.2-1b|llama3-8b|small|tiny\n"
            "   | --model PATH]\n"
            "  [--method lora|dora|full|qlora] [--targets q,v|all] [--rank R] [--alpha A]\n"
            "  [--batch B] [--seq T] [--accum K] [--grad-checkpoint]\n"
            "  [--base-dtype auto|f32|bf16|f16] [--compute-dtype f32|bf16] [--attention-f32]\n"
            "  [--ce-chunk-rows R]\n"
            "  [--warmup W] [--steps N] [--threads N] [--seed S] [--plan-only] [--whole]\n"
            "  --whole: load --model whole (fp32) instead of lazily (adapters only)\n"
            "  --attention-f32: the bf16 compute mode without the backend's bf16 attention (A/B)\n"
            "  --ce-chunk-rows R: rows of logits per LM-head product (default: the trainer's)\n"
            "  LORATUNE_CPU=baseline|avx2|avx512 caps the SIMD kernels' level, as for loratune\n");
}

static int die(const char *what, lt_status st) {
    fprintf(stderr, "bench_train_step: %s: %s (status %d)\n", what, lt_errmsg(), (int)st);
    return 1;
}

int main(int argc, char **argv) {
    int64_t rss_start = proc_status_bytes("VmRSS:");
    lt_status st;
    const char *shape = "tiny", *model_path = NULL, *method = "lora", *targets = "q,v";
    const char *base = "auto", *compute = "f32", *device = "cpu";
    int rank = 8, batch = 4, seq = 512, accum = 1, ckpt = 0, warmup = 1, steps = 3, threads = 0;
    int plan_only = 0, whole = 0, attn_f32 = 0, ce_chunk = 0;
    double alpha = -1;
    uint64_t seed = 1234;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && (i++, 1))
        if (OPT("--shape")) shape = v;
        else if (OPT("--model")) model_path = v;
        else if (OPT("--method")) method = v;
        else if (OPT("--targets")) targets = v;
        else if (OPT("--rank")) rank = atoi(v);
        else if (OPT("--alpha")) alpha = atof(v);
        else if (OPT("--batch")) batch = atoi(v);
        else if (OPT("--seq")) seq = atoi(v);
        else if (OPT("--accum")) accum = atoi(v);
        else if (OPT("--base-dtype")) base = v;
        else if (OPT("--compute-dtype")) compute = v;
        else if (OPT("--device")) device = v;
        else if (OPT("--warmup")) warmup = atoi(v);
        else if (OPT("--steps")) steps = atoi(v);
        else if (OPT("--threads")) threads = atoi(v);
        else if (OPT("--seed")) seed = strtoull(v, NULL, 10);
        else if (OPT("--ce-chunk-rows")) ce_chunk = atoi(v);
        else if (!strcmp(a, "--grad-checkpoint")) ckpt = 1;
        else if (!strcmp(a, "--whole")) whole = 1;
        else if (!strcmp(a, "--attention-f32")) attn_f32 = 1;
        else if (!strcmp(a, "--plan-only")) plan_only = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_train_step: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef OPT
    }
    if (steps < 1 || warmup < 0 || accum < 1) {
        fprintf(stderr, "bench_train_step: need --steps >= 1, --warmup >= 0, --accum >= 1\n");
        return 2;
    }

    const char *cpu = getenv("LORATUNE_CPU");
    if (cpu && *cpu) {
        lt_cpu_level max;
        if ((st = lt_cpu_level_parse(cpu, &max))) return die("LORATUNE_CPU", st);
        lt_cpu_set_max_level(max);
    }
    lt_hwinfo hw;
    lt_hwinfo_detect(&hw);
    if (threads <= 0) threads = hw.threads;
    lt_set_num_threads(threads);
    lt_hwinfo_detect(&hw); /* again: report the thread counts now in effect */

    lt_model_config mc;
    if (model_path) {
        lt_model_load_opts lo = {0};
        lo.config_only = 1;
        lt_model *probe = NULL;
        if ((st = lt_model_load(model_path, &lo, &probe))) return die(model_path, st);
        mc = probe->config;
        lt_model_free(probe);
    } else if (shape_config(shape, &mc)) {
        fprintf(stderr, "bench_train_step: unknown --shape '%s'\n", shape);
        return 2;
    }

    lt_train_config tc;
    lt_train_config_default(&tc);
    if ((st = lt_train_method_parse(method, &tc.method))) return die("--method", st);
    if (tc.method != LT_METHOD_FULL) {
        if ((st = lt_target_mask_parse(targets, &tc.lora.targets))) return die("--targets", st);
        tc.lora.r = rank;
        tc.lora.alpha = alpha > 0 ? (float)alpha : 2.0f * (float)rank;
    }
    if (!strcmp(compute, "f32")) tc.compute_dtype = LT_DTYPE_F32;
    else if (!strcmp(compute, "bf16")) tc.compute_dtype = LT_DTYPE_BF16;
    else {
        fprintf(stderr, "bench_train_step: --compute-dtype: expected f32 or bf16\n");
        return 2;
    }
    if (!strcmp(base, "auto")) /* as `loratune train` picks it (lt_run_pick_base_dtype) */
        tc.base_dtype = lt_run_pick_base_dtype(-1, tc.method, tc.compute_dtype, &mc);
    else if (!strcmp(base, "f32")) tc.base_dtype = LT_DTYPE_F32;
    else if (!strcmp(base, "bf16")) tc.base_dtype = LT_DTYPE_BF16;
    else if (!strcmp(base, "f16")) tc.base_dtype = LT_DTYPE_F16;
    else {
        fprintf(stderr, "bench_train_step: --base-dtype: expected auto, f32, bf16 or f16\n");
        return 2;
    }
    base = tc.base_dtype == LT_DTYPE_BF16 ? "bf16" : tc.base_dtype == LT_DTYPE_F16 ? "f16" : "f32";
    tc.batch_size = batch;
    tc.seq_len = seq;
    tc.grad_checkpoint = ckpt;
    tc.grad_accum = accum;
    tc.seed = seed;
    tc.ce_chunk_rows = ce_chunk;
    tc.keep_blas_threads = getenv("LT_TWO_POOLS") != NULL; /* A/B: OpenBLAS's own threads too */
    if (seq > mc.max_seq_len) mc.max_seq_len = seq;

    /* a model file trains lazily (as `loratune train` does) unless full FT or --whole: the
     * plan then depends on the file's dtypes */
    lt_model *m = NULL;
    double t0 = now_s();
    if (model_path && tc.method != LT_METHOD_FULL && !whole) {
        lt_model_load_opts lo = {.lazy = 1};
        if ((st = lt_model_load(model_path, &lo, &m))) return die(model_path, st);
        if (seq > m->config.max_seq_len) m->config.max_seq_len = seq;
    }
    lt_train_plan_t plan;
    if ((st = m ? lt_train_plan_model(m, &tc, &plan) : lt_train_plan(&mc, &tc, &plan)))
        return die("lt_train_plan", st);

    /* FLOPs per optimizer step (see the top of the file) */
    int64_t D = mc.dim, L = mc.n_layers, F = mc.ffn_dim, V = mc.vocab_size;
    int64_t QD = (int64_t)mc.n_heads * mc.head_dim, KD = (int64_t)mc.n_kv_heads * mc.head_dim;
    int64_t lin_C[LT_N_TARGETS] = {D, D, D, QD, D, D, F};
    int64_t lin_OC[LT_N_TARGETS] = {QD, KD, KD, D, F, F, D};
    double P_mm = (double)L * (double)(D * QD + 2 * D * KD + QD * D + 3 * D * F) + (double)V * D;
    double tok = (double)batch * seq * accum;
    double att = (double)L * 4.0 * batch * accum * mc.n_heads * mc.head_dim *
                 ((double)seq * (seq + 1) / 2.0);
    double flops, recompute;
    double p_layer = (double)(D * QD + 2 * D * KD + QD * D + 3 * D * F);
    if (tc.method == LT_METHOD_FULL) {
        flops = 6.0 * P_mm * tok + 3.0 * att;
        recompute = ckpt ? 2.0 * p_layer * L * tok + att : 0.0;
    } else {
        int lb = tc.lora.layer_begin, le = tc.lora.layer_end <= 0 ? (int)L : tc.lora.layer_end;
        double adapter = 0, adapter_fwd = 0;
        for (int t = 0; t < LT_N_TARGETS; t++)
            if (tc.lora.targets & (1u << t)) {
                adapter += 6.0 * rank * (double)(lin_C[t] + lin_OC[t]) * tok * (le - lb);
                adapter_fwd += 2.0 * rank * (double)(lin_C[t] + lin_OC[t]) * tok * (le - lb);
            }
        flops = 4.0 * P_mm * tok + 3.0 * att + adapter;
        recompute = ckpt ? 2.0 * p_layer * L * tok + att + adapter_fwd : 0.0;
    }

    if (plan_only) {
        printf("{\"plan_only\":true,\"peak_predicted\":%lld", (long long)plan.peak_bytes);
        for (int k = 0; k < LT_MEM_COUNT; k++)
            printf(",\"%s\":%lld", lt_mem_category_name((lt_mem_category)k),
                   (long long)plan.bytes[k]);
        printf("}\n");
        return 0;
    }

    if (m) {
        /* lazy: loaded above */
    } else if (model_path) {
        if ((st = lt_model_load(model_path, NULL, &m))) return die(model_path, st);
    } else {
        if ((st = lt_model_create(&mc, &m))) return die("lt_model_create", st);
        randomize(m, seed);
    }
    double t_model = now_s() - t0;
    int64_t rss_model = proc_status_bytes("VmRSS:");

    lt_trainer *tr = NULL;
    t0 = now_s();
    const lt_backend *be = lt_backend_cpu();
    lt_backend *cuda = NULL;
    if (!strcmp(device, "cuda")) {
        if ((st = lt_backend_cuda_create(0, &cuda))) return die("--device cuda", st);
        be = cuda;
    } else if (strcmp(device, "cpu")) {
        fprintf(stderr, "bench_train_step: --device: expected cpu or cuda\n");
        return 2;
    }
    /* --attention-f32: the same backend with its optional bf16 attention ops taken out */
    static lt_backend_ops no_attn16;
    static lt_backend be_f32attn;
    if (attn_f32) {
        no_attn16 = *be->op;
        no_attn16.attention_fwd_bf16 = NULL;
        no_attn16.attention_bwd_bf16 = NULL;
        be_f32attn = *be;
        be_f32attn.op = &no_attn16;
        be = &be_f32attn;
    }
    /* on a device: what the plan says it needs there, and what cudaMemGetInfo sees taken by
     * the trainer (after create) and by the steps (the lowest free figure after any step) */
    int64_t dev_free0 = -1, dev_total = -1, dev_free_create = -1, dev_free_min = -1;
    lt_train_plan_t dplan = {0};
    if (be->device) {
        if ((st = lt_train_plan_device(m, &tc, be, &dplan))) return die("lt_train_plan_device", st);
        if (be->op->mem_info) be->op->mem_info(be, &dev_free0, &dev_total);
    }
    if ((st = lt_trainer_create_on(m, &tc, be, &tr))) return die("lt_trainer_create", st);
    if (be->device && be->op->mem_info) be->op->mem_info(be, &dev_free_create, &dev_total);
    dev_free_min = dev_free_create;
    double t_create = now_s() - t0;
    int64_t rss_create = proc_status_bytes("VmRSS:");
    int64_t allocs_create = 0;
    lt_trainer_mem(tr, NULL, &allocs_create);

    int64_t N = (int64_t)batch * seq;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(N + 1));
    int32_t *tgts = malloc(sizeof(int32_t) * (size_t)N);
    double *step_s = malloc(sizeof(double) * (size_t)steps);
    if (!tokens || !tgts || !step_s) {
        fprintf(stderr, "bench_train_step: out of memory\n");
        return 1;
    }
    uint64_t ts = seed ^ 0x5eedull;
    double loss_first = NAN, loss_last = NAN, gnorm_last = NAN;
    double wall_timed = 0, cpu_timed = 0;
    for (int s = 0; s < warmup + steps; s++) {
        double c0 = cpu_s(), w0 = now_s();
        for (int k = 0; k < accum; k++) {
            /* fresh random rows every micro-batch: targets are the next token of the stream */
            for (int64_t i = 0; i <= N; i++) tokens[i] = (int32_t)(rng_next(&ts) % (uint64_t)V);
            for (int64_t i = 0; i < N; i++) tgts[i] = tokens[i + 1];
            lt_batch b = {batch, seq, tokens, tgts, NULL, NULL};
            lt_loss_stats ls;
            if ((st = lt_trainer_accumulate(tr, &b, 1.0f / (float)(N * accum), &ls)))
                return die("lt_trainer_accumulate", st);
            if (s == 0 && k == 0) loss_first = ls.loss;
            loss_last = ls.loss;
        }
        float gn = 0;
        if ((st = lt_trainer_step(tr, -1.0f, &gn))) return die("lt_trainer_step", st);
        be->op->sync(be);
        int64_t fr = -1, to = -1;
        if (be->device && be->op->mem_info && !be->op->mem_info(be, &fr, &to) && fr < dev_free_min)
            dev_free_min = fr;
        gnorm_last = gn;
        double w = now_s() - w0, c = cpu_s() - c0;
        fprintf(stderr, "bench_train_step: %s step %d: %.3f s (cpu %.2fx) loss %.4f\n",
                s < warmup ? "warm-up" : "timed", s < warmup ? s : s - warmup, w, c / w,
                loss_last);
        if (s >= warmup) {
            step_s[s - warmup] = w;
            wall_timed += w;
            cpu_timed += c;
        }
    }
    int64_t allocs_end = 0;
    lt_trainer_mem(tr, NULL, &allocs_end);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t maxrss = (int64_t)ru.ru_maxrss * 1024; /* Linux: KiB */
    int64_t hwm = proc_status_bytes("VmHWM:");
    int64_t measured = maxrss > hwm ? maxrss : hwm;
    qsort(step_s, (size_t)steps, sizeof(double), cmp_double);
    double median = steps % 2 ? step_s[steps / 2] : 0.5 * (step_s[steps / 2 - 1] + step_s[steps / 2]);
    double sps = wall_timed / steps;
    double la[3] = {-1, -1, -1};
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3) la[0] = -1;
        fclose(lf);
    }

    printf("{\"bench\":\"loratune\",\"shape\":\"%s\",\"method\":\"%s\",", model_path ? model_path : shape,
           lt_train_method_name(tc.method));
    if (tc.method != LT_METHOD_FULL)
        printf("\"targets\":\"%s\",\"rank\":%d,\"alpha\":%g,", targets, rank, (double)tc.lora.alpha);
    printf("\"batch\":%d,\"seq\":%d,\"accum\":%d,\"grad_checkpoint\":%d,\"base_dtype\":\"%s\",",
           batch, seq, accum, ckpt, base);
    printf("\"compute_dtype\":\"%s\",", compute);
    printf("\"device\":\"%s\",\"device_name\":\"%s\",", be->name, be->desc ? be->desc : "cpu");
    printf("\"warmup\":%d,\"steps\":%d,\"threads\":%d,\"blas_threads\":%d,", warmup, steps, threads,
           hw.blas_threads);
    printf("\"kernel_level\":\"%s\",\"compiled_features\":%u,", hw.kernel_level,
           (unsigned)hw.compiled_features);
    printf("\"tokens_per_s\":%.2f,\"s_per_step\":%.4f,\"s_per_step_min\":%.4f,"
           "\"s_per_step_median\":%.4f,\"cpu_util\":%.2f,",
           tok * steps / wall_timed, sps, step_s[0], median, cpu_timed / wall_timed);
    printf("\"n_params\":%lld,\"n_trainable\":%lld,\"flops_per_step\":%.4e,"
           "\"hw_flops_per_step\":%.4e,\"gflops_per_s\":%.2f,",
           (long long)plan.n_params, (long long)plan.n_trainable, flops, flops + recompute,
           flops / sps * 1e-9);
    printf("\"loss_first\":%.5f,\"loss_last\":%.5f,\"grad_norm_last\":%.5g,", loss_first,
           loss_last, gnorm_last);
    if (be->device)
        printf("\"device_plan_bytes\":%lld,\"device_total\":%lld,\"device_free_before\":%lld,"
               "\"device_used_create\":%lld,\"device_used_steps\":%lld,",
               (long long)dplan.device_bytes, (long long)dev_total, (long long)dev_free0,
               (long long)(dev_free0 - dev_free_create), (long long)(dev_free0 - dev_free_min));
    printf("\"plan\":{");
    for (int k = 0; k < LT_MEM_COUNT; k++)
        printf("\"%s\":%lld,", lt_mem_category_name((lt_mem_category)k), (long long)plan.bytes[k]);
    printf("\"alloc_total\":%lld,\"model_bytes\":%lld,\"overhead\":%lld,\"peak\":%lld},",
           (long long)plan.alloc_total, (long long)plan.model_bytes,
           (long long)plan.overhead_bytes, (long long)plan.peak_bytes);
    printf("\"rss_start\":%lld,\"rss_after_model\":%lld,\"rss_after_create\":%lld,",
           (long long)rss_start, (long long)rss_model, (long long)rss_create);
    printf("\"ru_maxrss\":%lld,\"vm_hwm\":%lld,\"peak_measured\":%lld,\"peak_predicted\":%lld,"
           "\"measured_over_predicted\":%.4f,",
           (long long)maxrss, (long long)hwm, (long long)measured, (long long)plan.peak_bytes,
           (double)measured / (double)plan.peak_bytes);
    printf("\"allocs_create\":%lld,\"allocs_after_steps\":%lld,\"t_model_s\":%.2f,"
           "\"t_create_s\":%.3f,\"loadavg\":%.2f}\n",
           (long long)allocs_create, (long long)allocs_end, t_model, t_create, la[0]);
    fflush(stdout);

    free(tokens);
    free(tgts);
    free(step_s);
    lt_trainer_free(tr);
    lt_backend_cuda_free(cuda);
    lt_model_free(m);
    return 0;
}
