/* cmd_plan.c - `loratune plan`: the memory budget of a training run, as a table or --json.
 * The numbers are lt_train_plan*'s: exactly what the trainer allocates per category, plus what
 * the model holds (fp32 weights of a whole-loaded model, or the mapped tensors a lazy one reads
 * in place) and an overhead estimate. Adapters are planned over the lazily loaded model, as
 * `loratune train` loads it; a Hugging Face folder with only config.json (weights not
 * downloaded yet) is planned over the files that config describes (lt_train_plan_assumed),
 * and the output lists what was assumed. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/backend.h"
#include "loratune/model.h"
#include "loratune/run.h"
#include "loratune/train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loratune plan --model MODEL --method lora|dora|full|qlora [options]\n\n"
            "Prints the bytes a training step needs by category and the predicted peak memory\n"
            "of `loratune train` with the same options. MODEL may be a Hugging Face folder with\n"
            "only config.json (weights not downloaded yet): the plan then assumes the weight\n"
            "files that config describes (stored as its torch_dtype, loaded lazily as train\n"
            "does) and lists its assumptions.\n"
            "  --batch-size B        micro-batch rows (default 1)\n"
            "  --max-seq-len T       tokens per row (default 512)\n"
            "  --grad-accum G        micro-batches per optimizer step (default 1; with --ranks)\n"
            "  --ranks N             plan one of N data-parallel ranks (`mpirun -np N loratune\n"
            "                        train`): adds each rank's gradient exchange buffers\n"
            "                        (default 1: one process, no exchange)\n"
            "  --zero N              1: ZeRO-1 over the --ranks GPUs (`train --zero 1`, NCCL):\n"
            "                        AdamW's state of one rank's 1/N shard, no row exchange;\n"
            "                        0: off (default)\n"
            "  --grad-checkpoint     keep only each layer's input; recompute in backward\n"
            "  --lora-rank R         LoRA / DoRA rank (default 8)\n"
            "  --lora-targets LIST   q,k,v,o,gate,up,down (comma-separated) or all (default q,v)\n"
            "  --lora-layers A:B     adapt layers [A, B) (default all)\n"
            "  --base-dtype D        auto|f32|bf16|f16: dtype of the frozen weights (default\n"
            "                        auto: bf16 for LoRA, bf16 products, a bf16 checkpoint)\n"
            "  --compute-dtype D     auto|f32|bf16: precision of the products, as `train` picks it\n"
            "                        (default auto)\n"
            "  --keep-logits         also plan the full [B][T][V] logits buffer\n"
            "  --keep-base-fp32      bf16/f16 LoRA/DoRA: keep the model's fp32 weights (by\n"
            "                        default the trainer releases them after copying)\n"
            "  --device D            auto|cpu|cuda: plan for this device, as `train` picks it\n"
            "                        (default auto: a GPU when built with CUDA and one is there);\n"
            "                        on a GPU the plan adds the bytes in device memory, its free\n"
            "                        memory now and the automatic sizes that fit it\n"
            "  --json                print one JSON object\n");
}

static lt_status load_config(const char *path, lt_model_config *out) {
    if (lt_path_is_dir(path)) {
        char cfg[4096];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        lt_status st = lt_model_config_load_hf(cfg, out);
        if (st) return st;
        return lt_model_config_validate(out, cfg);
    }
    lt_model_load_opts o = {.config_only = 1};
    lt_model *m = NULL;
    lt_status st = lt_model_load(path, &o, &m);
    if (st) return st;
    *out = m->config;
    lt_model_free(m);
    return LT_OK;
}

/* 1 when the folder holds a *.safetensors file (the weights, or some shards of them) */
static int has_weight_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        found = n > 12 && !strcmp(e->d_name + n - 12, ".safetensors");
    }
    closedir(d);
    return found;
}

static const char *dtype_short(lt_dtype t) {
    return t == LT_DTYPE_BF16 ? "bf16" : t == LT_DTYPE_F16 ? "f16" : "f32";
}

static void targets_str(unsigned mask, char *buf, size_t n) {
    buf[0] = 0;
    if (mask == LT_TARGET_ALL) {
        snprintf(buf, n, "all");
        return;
    }
    for (int t = 0; t < LT_N_TARGETS; t++)
        if ((mask >> t) & 1) {
            size_t l = strlen(buf);
            snprintf(buf + l, n - l, "%s%s", l ? "," : "", lt_target_name(t));
        }
}

static double mib(int64_t b) {
    return (double)b / (1024.0 * 1024.0);
}

int cmd_plan(int argc, char **argv) {
    const char *model = NULL, *method = NULL;
    int json = 0;
    lt_train_config c;
    lt_train_config_default(&c);
    int compute = -1; /* --compute-dtype auto */
    int base = -1;    /* --base-dtype auto */
    const char *device = "auto";
    int zero = 0; /* --zero 1: ZeRO-1 */
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--grad-checkpoint")) {
            c.grad_checkpoint = 1;
        } else if (!strcmp(a, "--keep-base-fp32")) {
            c.release_base_fp32 = 0;
        } else if (!strcmp(a, "--keep-logits")) {
            c.keep_logits = 1;
        } else if (!strcmp(a, "--device") && v) {
            if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "loratune plan: --device: expected auto, cpu or cuda, got '%s'\n",
                        v);
                return 2;
            }
            device = v;
            i++;
        } else if (!strcmp(a, "--model") && v) {
            model = v;
            i++;
        } else if (!strcmp(a, "--method") && v) {
            method = v;
            i++;
        } else if (!strcmp(a, "--batch-size") && v) {
            if (lt_cli_parse_int("plan", a, v, &n)) return 2;
            c.batch_size = (int)n;
            i++;
        } else if (!strcmp(a, "--max-seq-len") && v) {
            if (lt_cli_parse_int("plan", a, v, &n)) return 2;
            c.seq_len = (int)n;
            i++;
        } else if (!strcmp(a, "--grad-accum") && v) {
            if (lt_cli_parse_int("plan", a, v, &n)) return 2;
            c.grad_accum = (int)n;
            i++;
        } else if (!strcmp(a, "--ranks") && v) {
            if (lt_cli_parse_int("plan", a, v, &n)) return 2;
            if (n < 1) {
                fprintf(stderr, "loratune plan: --ranks: expected >= 1, got %ld\n", n);
                return 2;
            }
            c.ranks = n > 1 ? (int)n : 0; /* 1: the plain process (no communicator) */
            i++;
        } else if (!strcmp(a, "--zero") && v) {
            if (strcmp(v, "0") && strcmp(v, "1")) {
                fprintf(stderr, "loratune plan: --zero: expected 0 (off) or 1 (ZeRO-1), got '%s'\n",
                        v);
                return 2;
            }
            zero = v[0] == '1';
            i++;
        } else if (!strcmp(a, "--lora-rank") && v) {
            if (lt_cli_parse_int("plan", a, v, &n)) return 2;
            c.lora.r = (int)n;
            i++;
        } else if (!strcmp(a, "--lora-targets") && v) {
            if (lt_target_mask_parse(v, &c.lora.targets)) {
                fprintf(stderr, "loratune plan: --lora-targets: %s\n", lt_errmsg());
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--lora-layers") && v) {
            if (sscanf(v, "%d:%d", &c.lora.layer_begin, &c.lora.layer_end) != 2) {
                fprintf(stderr, "loratune plan: --lora-layers: expected A:B, got '%s'\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--base-dtype") && v) {
            if (!strcmp(v, "auto"))
                base = -1;
            else if (!strcmp(v, "f32"))
                base = LT_DTYPE_F32;
            else if (!strcmp(v, "bf16"))
                base = LT_DTYPE_BF16;
            else if (!strcmp(v, "f16"))
                base = LT_DTYPE_F16;
            else {
                fprintf(stderr,
                        "loratune plan: --base-dtype: expected auto, f32, bf16 or f16, got '%s'\n",
                        v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--compute-dtype") && v) {
            if (!strcmp(v, "auto"))
                compute = -1;
            else if (!strcmp(v, "f32"))
                compute = LT_DTYPE_F32;
            else if (!strcmp(v, "bf16"))
                compute = LT_DTYPE_BF16;
            else {
                fprintf(stderr,
                        "loratune plan: --compute-dtype: expected auto, f32 or bf16, got '%s'\n",
                        v);
                return 2;
            }
            i++;
        } else if (a[0] != '-' && !model) {
            model = a;
        } else {
            fprintf(stderr, "loratune plan: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    /* ZeRO-1 runs on the NCCL ranks' batched reduction: no row exchange, 1/N of AdamW */
    const int ranks = c.ranks > 1 ? c.ranks : 1;
    if (zero) {
        c.zero_ranks = ranks;
        c.zero_rank = 0;
        c.ranks = 0;
    }
    if (!model || !method) {
        fprintf(stderr, "loratune plan: --model and --method are required\n\n");
        usage(stderr);
        return 2;
    }
    if (lt_train_method_parse(method, &c.method)) {
        fprintf(stderr, "loratune plan: --method: %s\n", lt_errmsg());
        return 2;
    }
    if (c.method == LT_METHOD_FULL) c.full.layer_begin = 0;
    /* the device as `train --device` picks it: cuda fails here when there is none */
    lt_backend *gpu = NULL;
    if (strcmp(device, "cpu") && lt_cli_open_gpu("plan", !strcmp(device, "cuda"), &gpu)) return 1;
    const char *compute_why = "";
    c.compute_dtype = lt_run_pick_compute_dtype(compute, c.method, &compute_why);
    const lt_dtype cpu_compute = c.compute_dtype; /* the base's pick follows it, as in train */
    if (gpu && compute < 0 && c.method != LT_METHOD_DORA) { /* as train's auto on a GPU */
        const int has = lt_backend_supports(gpu, LT_OP_GEMM_BF16, LT_DTYPE_F32);
        c.compute_dtype = has ? LT_DTYPE_BF16 : LT_DTYPE_F32;
        compute_why = has ? "auto: the GPU has bf16 products (cuBLAS, fp32 accumulation)"
                          : "auto: this GPU has no bf16 products (compute capability < 8.0)";
    }
    lt_model_config mc;
    /* adapters train over the lazily loaded model (`loratune train` does the same): its
     * tensors' dtypes decide what is used in place. A folder without weight files is planned
     * over the files its config.json describes; full FT loads the model whole as fp32, so its
     * config is all the plan needs */
    const int files = !lt_path_is_dir(model) || has_weight_files(model);
    lt_model *lazy = NULL;
    if (c.method != LT_METHOD_FULL && files) {
        lt_model_load_opts lo = {.lazy = 1};
        if (lt_model_load(model, &lo, &lazy)) {
            fprintf(stderr, "loratune plan: %s\n", lt_errmsg());
            return 1;
        }
        mc = lazy->config;
    } else if (load_config(model, &mc)) {
        fprintf(stderr, "loratune plan: %s\n", lt_errmsg());
        return 1;
    }
    c.base_dtype = lt_run_pick_base_dtype(base, c.method, cpu_compute, &mc);
    lt_train_plan_t p;
    lt_status pst = lazy && gpu ? lt_train_plan_device(lazy, &c, gpu, &p)
                    : lazy      ? lt_train_plan_model(lazy, &c, &p)
                    : !files    ? lt_train_plan_assumed(&mc, mc.dtype, &c, &p)
                                : lt_train_plan(&mc, &c, &p);
    /* on a GPU: its free memory now, what the backend needs beside the trainer, and the sizes
     * `train` would pick there with --batch-size / --max-seq-len left automatic (lazy models:
     * the fit needs the tensors' dtypes) */
    int64_t dev_free = 0, dev_total = 0, dev_reserve = 0;
    int fit_b = 0, fit_t = 0, have_fit = 0;
    char fit_err[512] = "";
    if (!pst && gpu) {
        if (gpu->op->mem_info && !gpu->op->mem_info(gpu, &dev_free, &dev_total) && dev_free > 0) {
            dev_reserve = LT_DEVICE_RESERVE_BYTES + dev_free / 50;
            if (lazy) {
                lt_train_config a = c;
                a.batch_size = 0;
                a.seq_len = 0;
                if (lt_train_plan_fit_device(lazy, &a, gpu, dev_free, 64, c.seq_len, &fit_b,
                                             &fit_t, NULL, NULL))
                    snprintf(fit_err, sizeof fit_err, "%s", lt_errmsg());
                else
                    have_fit = 1;
            }
        }
    }
    lt_model_free(lazy);
    if (pst) {
        fprintf(stderr, "loratune plan: %s\n", lt_errmsg());
        lt_backend_cuda_free(gpu);
        return 1;
    }
    /* what a plan without the weight files takes for granted (said in both outputs) */
    char as[3][640];
    int n_as = 0;
    if (!files) {
        snprintf(as[n_as++], sizeof as[0],
                 "no weight files (*.safetensors) in %s: planned from config.json as `loratune "
                 "train` would load the files it describes",
                 model);
        if (c.method == LT_METHOD_FULL) {
            snprintf(as[n_as++], sizeof as[0],
                     "full fine-tuning loads the whole model as fp32, whatever dtype the files "
                     "hold (config.json: %s)",
                     mc.dtype_stated ? dtype_short(mc.dtype) : "no torch_dtype");
        } else {
            if (mc.dtype_stated)
                snprintf(as[n_as++], sizeof as[0],
                         "weights stored as %s (config.json torch_dtype), every tensor in that "
                         "dtype, in Hugging Face row order",
                         dtype_short(mc.dtype));
            else
                snprintf(as[n_as++], sizeof as[0],
                         "weights stored as f32: config.json states no torch_dtype (float32 "
                         "assumed; a 16-bit checkpoint needs about half the in-place bytes)");
            char conv[160] = "";
            if (p.create_touched_bytes > 0)
                snprintf(conv, sizeof conv,
                         ", the rest copied tensor by tensor%s (the largest file tensor, %.2f "
                         "MiB, resident while converted)",
                         c.method == LT_METHOD_QLORA ? ", linears to NF4" : "",
                         mib(p.create_touched_bytes));
            snprintf(as[n_as++], sizeof as[0],
                     "lazy load, as train does: %.2f MiB of frozen tensors read in place from "
                     "the mapped files%s",
                     mib(p.mapped_bytes), conv);
        }
    }
    char tg[128];
    targets_str(c.lora.targets, tg, sizeof tg);
    const char *bd = c.base_dtype == LT_DTYPE_BF16  ? "bf16"
                     : c.base_dtype == LT_DTYPE_F16 ? "f16"
                                                    : "f32";
    if (json) {
        json_t *o = json_object(), *by = json_object(), *al = json_object();
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "arch", json_string(lt_arch_name(mc.arch)));
        json_object_set_new(o, "method", json_string(lt_train_method_name(c.method)));
        if (c.method != LT_METHOD_FULL) {
            json_object_set_new(o, "lora_rank", json_integer(c.lora.r));
            json_object_set_new(o, "lora_targets", json_string(tg));
        }
        json_object_set_new(o, "batch_size", json_integer(c.batch_size));
        json_object_set_new(o, "seq_len", json_integer(c.seq_len));
        json_object_set_new(o, "grad_accum", json_integer(c.grad_accum));
        json_object_set_new(o, "ranks", json_integer(ranks));
        json_object_set_new(o, "zero", json_integer(zero));
        json_object_set_new(o, "grad_checkpoint", json_boolean(c.grad_checkpoint));
        json_object_set_new(o, "base_dtype", json_string(bd));
        json_object_set_new(o, "compute_dtype",
                            json_string(c.compute_dtype == LT_DTYPE_BF16 ? "bf16" : "f32"));
        json_object_set_new(o, "compute_dtype_reason", json_string(compute_why));
        json_object_set_new(o, "n_params", json_integer(p.n_params));
        json_object_set_new(o, "n_trainable", json_integer(p.n_trainable));
        json_object_set_new(o, "n_tensors", json_integer(p.n_tensors));
        for (int k = 0; k < LT_MEM_COUNT; k++) {
            json_object_set_new(by, lt_mem_category_name((lt_mem_category)k),
                                json_integer(p.bytes[k]));
            json_object_set_new(al, lt_mem_category_name((lt_mem_category)k),
                                json_integer(p.alloc[k]));
        }
        json_object_set_new(o, "bytes", by);
        json_object_set_new(o, "allocated_by_trainer", al);
        json_object_set_new(o, "model_bytes", json_integer(p.model_bytes));
        if (p.exchange_bytes) /* data parallelism: each rank's exchange (in the peak) */
            json_object_set_new(o, "exchange_bytes", json_integer(p.exchange_bytes));
        json_object_set_new(o, "overhead_bytes", json_integer(p.overhead_bytes));
        json_object_set_new(o, "peak_bytes", json_integer(p.peak_bytes));
        json_object_set_new(o, "released_base", json_boolean(p.released_base));
        json_object_set_new(o, "steady_bytes", json_integer(p.steady_bytes));
        json_object_set_new(o, "create_peak_bytes", json_integer(p.create_peak_bytes));
        json_object_set_new(o, "lazy", json_boolean(p.lazy));
        json_object_set_new(o, "mapped_bytes", json_integer(p.mapped_bytes));
        json_object_set_new(o, "weight_files", json_boolean(files));
        if (!files && c.method != LT_METHOD_FULL)
            json_object_set_new(o, "weights_dtype", json_string(dtype_short(mc.dtype)));
        json_t *aj = json_array();
        for (int i = 0; i < n_as; i++)
            json_array_append_new(aj, json_string(as[i]));
        json_object_set_new(o, "assumptions", aj);
        json_object_set_new(o, "device", json_string(gpu ? "cuda" : "cpu"));
        if (gpu) {
            json_object_set_new(o, "device_name", json_string(gpu->desc ? gpu->desc : "cuda"));
            json_object_set_new(o, "device_bytes", json_integer(p.device_bytes));
            json_object_set_new(o, "device_host_bytes", json_integer(p.device_host_bytes));
            json_object_set_new(o, "device_reserve_bytes", json_integer(dev_reserve));
            json_object_set_new(o, "device_free_bytes", json_integer(dev_free));
            json_object_set_new(o, "device_total_bytes", json_integer(dev_total));
            if (have_fit) {
                json_object_set_new(o, "device_fit_batch_size", json_integer(fit_b));
                json_object_set_new(o, "device_fit_max_seq_len", json_integer(fit_t));
            } else if (fit_err[0]) {
                json_object_set_new(o, "device_fit_error", json_string(fit_err));
            }
        }
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        lt_backend_cuda_free(gpu);
        return 0;
    }
    printf("model        %s (%s, %d layers, dim %d, vocab %d, %.2fM params)\n", model,
           lt_arch_name(mc.arch), mc.n_layers, mc.dim, mc.vocab_size, (double)p.n_params / 1e6);
    if (c.method == LT_METHOD_FULL)
        printf("method       full fine-tuning (%.2fM trainable params, %d tensors)\n",
               (double)p.n_trainable / 1e6, p.n_tensors);
    else
        printf("method       %s r=%d on %s (%.3fM trainable params, %d tensors)\n",
               lt_train_method_name(c.method), c.lora.r, tg, (double)p.n_trainable / 1e6,
               p.n_tensors);
    if (ranks > 1 || zero)
        printf("ranks        %d (data parallel: the plan of each rank, whose memory it is)%s\n",
               ranks, zero ? "; ZeRO-1: AdamW's state sharded" : "");
    if (c.method == LT_METHOD_QLORA)
        printf("batch        %d x %d tokens, gradient checkpointing %s, frozen linears NF4 "
               "(double-quantized), embedding and norms %s\n\n",
               c.batch_size, c.seq_len, c.grad_checkpoint ? "on" : "off",
               c.base_dtype == LT_DTYPE_F16 ? "f16" : "bf16");
    else
        printf("batch        %d x %d tokens, gradient checkpointing %s, frozen weights %s\n\n",
               c.batch_size, c.seq_len, c.grad_checkpoint ? "on" : "off", bd);
    for (int i = 0; i < n_as; i++)
        printf("%-12s %s\n", i ? "" : "assumed", as[i]);
    if (n_as) printf("\n");
    printf("%-16s %16s %12s\n", "category", "bytes", "MiB");
    char lazy_note[160];
    snprintf(lazy_note, sizeof lazy_note,
             "frozen base: %.2f MiB read in place from the mapped file + copies",
             mib(p.mapped_bytes));
    const char *notes[LT_MEM_COUNT] = {
        p.lazy ? lazy_note
        : c.method == LT_METHOD_QLORA
            ? "frozen base: NF4 linears + 16-bit embedding (the fp32 weights are released)"
        : p.released_base ? "frozen base: 16-bit copy (the model's fp32 weights are released)"
        : c.base_dtype == LT_DTYPE_F32 ? "frozen base: the model's fp32 weights"
                                       : "frozen base: the model's fp32 + 16-bit copies",
        "trainable parameters (fp32)",
        "fp32 gradients",
        zero ? "AdamW m and v (fp32) of this rank's shard (ZeRO-1)" : "AdamW m and v (fp32)",
        "saved for backward",
        "scratch, logits chunk, rope tables"};
    for (int k = 0; k < LT_MEM_COUNT; k++)
        printf("%-16s %16lld %12.2f  %s\n", lt_mem_category_name((lt_mem_category)k),
               (long long)p.bytes[k], mib(p.bytes[k]), notes[k]);
    lt_train_exchange ex; /* the plan's own sizes, for the line's note */
    if (p.exchange_bytes &&
        !lt_train_exchange_size(p.n_trainable, c.batch_size, c.grad_accum, p.ranks, &ex)) {
        char xn[96];
        snprintf(xn, sizeof xn, "row gradients: (%d ranks + 1) x %d x %d rows, + the sum",
                 p.ranks, c.grad_accum, ex.rows);
        printf("%s %10lld %12.2f  %s\n", "data-parallel exchange", (long long)p.exchange_bytes,
               mib(p.exchange_bytes), xn);
    }
    printf("%-16s %16lld %12.2f  %s\n", "overhead (est.)", (long long)p.overhead_bytes,
           mib(p.overhead_bytes), "binary, libraries, BLAS/OpenMP buffers");
    printf("%-16s %16lld %12.2f\n", "predicted peak", (long long)p.peak_bytes, mib(p.peak_bytes));
    if (p.lazy)
        printf("  (the model stays in its file; training %.2f MiB, + %.2f MiB of the largest "
               "tensor being converted while the trainer is created)\n",
               mib(p.steady_bytes), mib(p.create_touched_bytes));
    if (p.released_base)
        printf("  (max of: creating the trainer, fp32 model + %s copy %.2f MiB; training "
               "%.2f MiB)\n",
               c.method == LT_METHOD_QLORA ? "NF4" : "16-bit", mib(p.create_peak_bytes),
               mib(p.steady_bytes));
    if (gpu) {
        printf("\ndevice       %s\n", gpu->desc ? gpu->desc : "cuda");
        printf("%-16s %16lld %12.2f  %s\n", "on the device", (long long)p.device_bytes,
               mib(p.device_bytes), "every block + device copies of the weights it reads");
        if (p.device_host_bytes > 0)
            printf("%-16s %16lld %12.2f  %s\n", "kept on the host", (long long)p.device_host_bytes,
                   mib(p.device_host_bytes), "the token embedding (QLoRA, untied): rows sent up");
        if (dev_free > 0) {
            printf("%-16s %16lld %12.2f  %s\n", "reserve", (long long)dev_reserve,
                   mib(dev_reserve), "cuBLAS workspaces, attention scratch (256 MiB + 2%)");
            printf("%-16s %16lld %12.2f  of %.2f GiB\n", "free now", (long long)dev_free,
                   mib(dev_free), (double)dev_total / (1024.0 * 1024.0 * 1024.0));
            if (have_fit)
                printf("  (automatic sizes on this device: batch %d x %d tokens)\n", fit_b, fit_t);
            else if (fit_err[0])
                printf("  (does not fit: %s)\n", fit_err);
        }
    }
    lt_backend_cuda_free(gpu);
    return 0;
}
