/* cmd_generate.c - `loratune generate`: load a model and its tokenizer, encode a prompt (or a
 * chat message through the model's chat template), sample, and stream the text to stdout.
 * The model is loaded lazily (HF folders and GGUFs: the weights stay as stored in the mapped
 * file, no fp32 copy); an adapter is applied without merging (lt_adapter_delta_create).
 * --device cuda (or auto with a GPU): the weights are copied once into the GPU's memory
 * (lt_model_dev: as stored where the backend converts the format, else fp32), the KV cache and
 * every op of the forward live there, and only the last position's logits come back to the
 * host for sampling (model.h, lt_kv_cache_create_dev).
 * Timing goes to stderr so stdout holds only the generated text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "loratune/adapter.h"
#include "loratune/chat.h"
#include "loratune/model.h"
#include "loratune/run.h"
#include "loratune/sampler.h"
#include "loratune/tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: loratune generate --model MODEL [--tokenizer FILE] [--prompt TEXT | --chat TEXT]\n"
        "                         [--system TEXT] [--max-tokens N] [--temp T] [--top-k K]\n"
        "                         [--top-p P] [--seed S] [--threads N] [--ctx N] [--quiet]\n"
        "                         [--adapter PATH] [--prompt-ids IDS] [--logits-out FILE]\n"
        "                         [--exact] [--kv-cache f16|f32] [--compute-dtype f32|bf16|auto]\n"
        "                         [--device cpu|cuda|auto]\n\n"
        "  --model MODEL      Hugging Face folder, .gguf, or llama2.c .bin (needs --tokenizer)\n"
        "  --tokenizer FILE   tokenizer.json / tokenizer.model / llama2.c tokenizer .bin / .gguf\n"
        "  --prompt TEXT      plain text continued by the model (default: empty, i.e. BOS only)\n"
        "  --chat TEXT        a user message, rendered with the model's chat template\n"
        "                     (add_generation_prompt); stops at EOS or the end-of-turn token\n"
        "  --system TEXT      a system message for --chat\n"
        "  --max-tokens N     new tokens at most (default 256)\n"
        "  --temp T           temperature, 0 = greedy (default 0.8)\n"
        "  --top-k K          keep the K most likely tokens (default 0 = off)\n"
        "  --top-p P          nucleus sampling (default 0.95; 1 = off)\n"
        "  --seed S           random seed (default: from the clock)\n"
        "  --threads N        OpenMP / OpenBLAS threads (default: as the environment says)\n"
        "  --ctx N            context length (default: the model's, at most 4096)\n"
        "  --quiet            no timing line on stderr\n"
        "  --exact            fp32 products for Q4_0 / Q4_1 / Q8_0 / Q4_K weights and an fp32\n"
        "                     KV cache (default: as llama.cpp, 8-bit activations and integer\n"
        "                     dot products, keys and values cached in fp16: faster)\n"
        "  --kv-cache f16|f32 what the KV cache stores keys and values as (default f16; f32\n"
        "                     with --exact)\n"
        "  --compute-dtype D  f32 (default): fp32 products; bf16: the base weights' products in\n"
        "                     bf16 with fp32 sums (oneDNN), as `train --compute-dtype bf16`: a\n"
        "                     bf16 model multiplied as stored, f32 / f16 rounded per block for\n"
        "                     prompts; auto: bf16 where the CPU has avx512_bf16 / amx_bf16\n"
        "  --device D         where the forward runs: cpu (default), cuda (the first GPU; an\n"
        "                     error without one), auto (cuda when built with CUDA and a GPU is\n"
        "                     present, else cpu). On cuda the products are fp32 (--exact's and\n"
        "                     --compute-dtype bf16's CPU kernels do not apply); the KV cache is\n"
        "                     as --kv-cache says\n"
        "  --adapter PATH     apply a LoRA / DoRA adapter without merging: a PEFT folder\n"
        "                     (adapter_config.json + adapter_model.safetensors), an mlx-lm\n"
        "                     folder (adapters.safetensors), either folder's .safetensors\n"
        "                     file, or a llama.cpp adapter .gguf\n"
        "  --prompt-ids IDS   the prompt as comma-separated token ids (instead of --prompt)\n"
        "  --logits-out FILE  write the float32 logits of every prompt position ([n][vocab],\n"
        "                     little endian) to FILE and stop without generating (for tests)\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* user: a double, set to the time of the first token (the end of the prefill) */
static int on_token(void *user, int32_t id, const char *text, size_t len) {
    double *t_first = user;
    if (id >= 0 && *t_first == 0) *t_first = now_s();
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *chat = NULL, *system = NULL;
    const char *adapter_path = NULL, *prompt_ids = NULL, *logits_out = NULL;
    long max_tokens = 256, top_k = 0, threads = 0, ctx = 0;
    double temp = 0.8, top_p = 0.95;
    long long seed = -1;
    int quiet = 0, exact = 0, bf16 = 0, kv_type = -1; /* -1: f32 with --exact, else f16 */
    lt_device device = LT_DEVICE_CPU;
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long lv;
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!strcmp(a, "--exact")) {
            exact = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "loratune generate: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--tokenizer"))
            tok_path = v;
        else if (!strcmp(a, "--prompt"))
            prompt = v;
        else if (!strcmp(a, "--chat"))
            chat = v;
        else if (!strcmp(a, "--system"))
            system = v;
        else if (!strcmp(a, "--adapter"))
            adapter_path = v;
        else if (!strcmp(a, "--prompt-ids"))
            prompt_ids = v;
        else if (!strcmp(a, "--logits-out"))
            logits_out = v;
        else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cpu"))
                device = LT_DEVICE_CPU;
            else if (!strcmp(v, "cuda"))
                device = LT_DEVICE_CUDA;
            else if (!strcmp(v, "auto"))
                device = LT_DEVICE_AUTO;
            else {
                fprintf(stderr,
                        "loratune generate: --device: expected cpu, cuda or auto, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--kv-cache")) {
            if (strcmp(v, "f16") && strcmp(v, "f32")) {
                fprintf(stderr, "loratune generate: --kv-cache: expected f16 or f32, got '%s'\n",
                        v);
                return 2;
            }
            kv_type = !strcmp(v, "f16") ? LT_KV_F16 : LT_KV_F32;
        }
        else if (!strcmp(a, "--compute-dtype")) {
            const char *why = NULL;
            if (!strcmp(v, "bf16"))
                bf16 = 1;
            else if (!strcmp(v, "auto"))
                bf16 = lt_run_pick_compute_dtype(-1, LT_METHOD_LORA, &why) == LT_DTYPE_BF16;
            else if (strcmp(v, "f32")) {
                fprintf(stderr,
                        "loratune generate: --compute-dtype: expected f32, bf16 or auto, got "
                        "'%s'\n",
                        v);
                return 2;
            }
        } else if (!strcmp(a, "--max-tokens")) {
            if (lt_cli_parse_int("generate", a, v, &max_tokens) || max_tokens < 0) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (lt_cli_parse_int("generate", a, v, &top_k) || top_k < 0) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (lt_cli_parse_int("generate", a, v, &threads)) return 2;
        } else if (!strcmp(a, "--ctx")) {
            if (lt_cli_parse_int("generate", a, v, &ctx) || ctx < 0) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (lt_cli_parse_int("generate", a, v, &lv)) return 2;
            seed = lv;
        } else if (!strcmp(a, "--temp")) {
            if (lt_cli_parse_float("generate", a, v, &temp) || temp < 0) return 2;
        } else if (!strcmp(a, "--top-p")) {
            if (lt_cli_parse_float("generate", a, v, &top_p) || top_p <= 0 || top_p > 1) {
                fprintf(stderr, "loratune generate: --top-p: expected a number in (0, 1]\n");
                return 2;
            }
        } else {
            fprintf(stderr, "loratune generate: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "loratune generate: --model is required\n\n");
        usage(stderr);
        return 2;
    }
    if (prompt_ids && (prompt || chat)) {
        fprintf(stderr, "loratune generate: give --prompt-ids or --prompt / --chat, not both\n");
        return 2;
    }
    if (prompt && chat) {
        fprintf(stderr, "loratune generate: give --prompt or --chat, not both\n");
        return 2;
    }
    if (system && !chat) {
        fprintf(stderr, "loratune generate: --system needs --chat\n");
        return 2;
    }
    lt_set_num_threads((int)threads);
    /* one thread pool: OpenBLAS single-threaded, the backend splits products over OpenMP (two
     * pools on two cores wait for each other's cores) */
    const lt_backend *be = lt_backend_cpu();
    if (be->op->step_begin) be->op->step_begin(be, 0);

    int rc = 1;
    lt_model *m = NULL;
    lt_tokenizer *tok = NULL;
    lt_chat_template *ct = NULL;
    lt_kv_cache *kv = NULL;
    lt_sampler *s = NULL;
    lt_adapter *ad = NULL;
    lt_model_delta *delta = NULL, *ddelta = NULL; /* ddelta: delta's copy on the GPU */
    lt_backend *cuda = NULL;
    lt_model_dev *dev = NULL;
    float *logits = NULL;
    char *rendered = NULL;
    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0;
    int n_out = 0;
    size_t plen = strlen(model_path);
    int is_bin = plen > 4 && !strcmp(model_path + plen - 4, ".bin") && !lt_path_is_dir(model_path);
    if (is_bin && !tok_path) {
        fprintf(stderr,
                "loratune generate: %s is a llama2.c checkpoint: pass --tokenizer "
                "(tokenizer.bin or tokenizer.model)\n",
                model_path);
        return 2;
    }
    lt_model_load_opts lo = {.lazy = 1}; /* ignored for a llama2.c .bin (loaded whole) */
    if (lt_model_load(model_path, &lo, &m)) goto fail;
    lt_cli_model_warn(m, "generate");
    if (adapter_path) {
        if (lt_adapter_load(adapter_path, &m->config, &ad)) goto fail;
        if (lt_adapter_delta_create(ad, m, &delta)) goto fail;
        if (!quiet)
            fprintf(stderr, "[adapter %s: %s r=%d scale %g, %d layers]\n", adapter_path,
                    lt_train_method_name(ad->method), ad->r, (double)lt_adapter_scale(ad),
                    ad->layer_end - ad->layer_begin);
    }
    if (device != LT_DEVICE_CPU) { /* the GPU, or for auto the CPU when there is none */
        if (lt_cli_open_gpu("generate", device == LT_DEVICE_CUDA, &cuda)) goto done;
        if (cuda) {
            if (lt_model_dev_create(m, cuda, &dev)) goto fail;
            if (delta && lt_model_delta_to_backend(m, delta, cuda, &ddelta)) goto fail;
            int64_t f32 = 0, bytes = lt_model_dev_bytes(dev, &f32);
            if (!quiet)
                fprintf(stderr, "[device %s: weights %.1f MiB there, %.1f MiB of them as fp32]\n",
                        cuda->desc ? cuda->desc : cuda->name, bytes / 1048576.0, f32 / 1048576.0);
        } else if (!quiet) {
            fprintf(stderr, "[device auto: no GPU, the CPU]\n");
        }
    }
    const lt_model_delta *fdelta = ddelta ? ddelta : delta; /* the one the forward reads */
    if (prompt_ids) { /* ids given: the tokenizer is only needed to print generated text */
        const char *p = prompt_ids;
        size_t cap = strlen(p) / 2 + 2;
        ids = malloc(sizeof(int32_t) * cap);
        if (!ids) goto done;
        while (*p) {
            char *e;
            long id = strtol(p, &e, 10);
            if (e == p || id < 0 || id >= m->config.vocab_size || (*e && *e != ',') ||
                n_ids >= cap) {
                fprintf(stderr,
                        "loratune generate: --prompt-ids: expected comma-separated ids "
                        "in [0, %d) at '%s'\n",
                        m->config.vocab_size, p);
                goto done;
            }
            ids[n_ids++] = (int32_t)id;
            p = *e ? e + 1 : e;
        }
        if (!n_ids) {
            fprintf(stderr, "loratune generate: --prompt-ids: no ids\n");
            goto done;
        }
    }
    if (logits_out) {
        if (!prompt_ids) {
            fprintf(stderr, "loratune generate: --logits-out needs --prompt-ids\n");
            goto done;
        }
        size_t V = (size_t)m->config.vocab_size;
        if (kv_type < 0) kv_type = exact ? LT_KV_F32 : LT_KV_F16;
        if (lt_kv_cache_create_dev(m, dev, (int)n_ids, 0, (lt_kv_type)kv_type, &kv)) goto fail;
        lt_kv_cache_set_qact(kv, !exact);
        lt_kv_cache_set_bf16(kv, bf16);
        if (!(logits = malloc(sizeof(float) * V * n_ids))) goto done;
        if (lt_model_forward(m, fdelta, kv, ids, (int)n_ids, 0, logits, 1)) goto fail;
        FILE *f = fopen(logits_out, "wb");
        if (!f || fwrite(logits, sizeof(float), V * n_ids, f) != V * n_ids || fclose(f)) {
            fprintf(stderr, "loratune generate: %s: cannot write\n", logits_out);
            goto done;
        }
        rc = 0;
        goto done;
    }
    if (lt_tokenizer_load(tok_path ? tok_path : model_path, &tok)) goto fail;
    if (lt_tokenizer_vocab_size(tok) > m->config.vocab_size) {
        fprintf(stderr, "loratune generate: the tokenizer has %d tokens, the model only %d\n",
                lt_tokenizer_vocab_size(tok), m->config.vocab_size);
        goto done;
    }

    int32_t stop[8];
    int n_stop = 0;
    if (chat) {
        lt_status st = lt_model_chat_template(
            tok_path && lt_path_is_dir(tok_path) ? tok_path : model_path, tok, &ct);
        if (st == LT_ERR_NOTFOUND) {
            fprintf(stderr, "loratune generate: %s has no chat template; use --prompt\n",
                    model_path);
            goto done;
        }
        if (st) goto fail;
        if (!lt_chat_template_is_recognised(ct))
            fprintf(stderr,
                    "loratune generate: warning: the chat template of %s is not one loratune "
                    "recognises (it never runs Jinja): the conversation is rendered as generic "
                    "ChatML (<|im_start|>ROLE ... <|im_end|>), which may not be the format the "
                    "model was trained on\n",
                    model_path);
        lt_chat_message msgs[2];
        size_t nm = 0;
        if (system) msgs[nm++] = (lt_chat_message){"system", system};
        msgs[nm++] = (lt_chat_message){"user", chat};
        if (lt_chat_render(ct, msgs, nm, 1, &rendered)) goto fail;
        /* the template's text already holds BOS where the model wants it: no add_special */
        if (lt_tokenizer_encode(tok, rendered, strlen(rendered), 0, 1, &ids, &n_ids)) goto fail;
        static const char *eot[] = {"<|im_end|>",    "<|eot_id|>", "<|end_of_text|>",
                                    "<|endoftext|>", "<|end|>",    "</s>"};
        for (size_t i = 0; i < sizeof eot / sizeof eot[0] && n_stop < 8; i++) {
            int32_t id = lt_tokenizer_find(tok, eot[i]);
            if (id >= 0) stop[n_stop++] = id;
        }
    } else if (!prompt_ids) {
        const char *text = prompt ? prompt : "";
        if (lt_tokenizer_encode(tok, text, strlen(text), 1, 1, &ids, &n_ids)) goto fail;
        if (n_ids == 0) { /* an empty prompt: start from BOS */
            int32_t bos = lt_tokenizer_bos(tok) >= 0 ? lt_tokenizer_bos(tok) : m->config.bos_id;
            if (bos < 0) {
                fprintf(stderr,
                        "loratune generate: empty prompt and no BOS token: give --prompt\n");
                goto done;
            }
            free(ids);
            ids = malloc(sizeof(int32_t));
            if (!ids) goto done;
            ids[0] = bos;
            n_ids = 1;
        }
    }
    if (ctx == 0) ctx = m->config.max_seq_len < 4096 ? m->config.max_seq_len : 4096;
    if ((long)n_ids >= ctx) {
        fprintf(stderr, "loratune generate: the prompt has %zu tokens, the context only %ld\n",
                n_ids, ctx);
        goto done;
    }
    if (kv_type < 0) kv_type = exact ? LT_KV_F32 : LT_KV_F16;
    if (lt_kv_cache_create_dev(m, dev, (int)ctx, 256, (lt_kv_type)kv_type, &kv)) goto fail;
    lt_kv_cache_set_qact(kv, !exact);
    lt_kv_cache_set_bf16(kv, bf16);
    lt_sampler_params sp = {.temperature = (float)temp,
                            .top_k = (int)top_k,
                            .top_p = (float)top_p,
                            .seed = seed >= 0 ? (uint64_t)seed : (uint64_t)time(NULL)};
    if (lt_sampler_create(&sp, m->config.vocab_size, &s)) goto fail;
    lt_generate_opts go = {.max_tokens = (int)max_tokens,
                           .stop_ids = stop,
                           .n_stop_ids = n_stop,
                           .stop_at_eos = 1,
                           .on_token = on_token};
    double t_first = 0;
    go.user = &t_first;
    double t0 = now_s();
    if (lt_generate(m, fdelta, kv, tok, s, ids, (int)n_ids, &go, &out, &n_out)) goto fail;
    double t1 = now_s(), dt = t1 - t0;
    printf("\n");
    fflush(stdout);
    if (!quiet) /* prompt: the prefill (and the first token's sampling); decode: the n_out - 1
                 * forwards after the first token */
        fprintf(stderr,
                "[%zu prompt tokens, %d generated, %.1f tokens/s; prompt %.1f tokens/s; decode "
                "%.1f tokens/s]\n",
                n_ids, n_out, dt > 0 ? (n_ids + n_out) / dt : 0.0,
                t_first > t0 ? n_ids / (t_first - t0) : 0.0,
                n_out > 1 && t1 > t_first && t_first > 0 ? (n_out - 1) / (t1 - t_first) : 0.0);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "loratune generate: %s\n", lt_errmsg());
done:
    free(out);
    free(ids);
    free(logits);
    free(rendered);
    lt_sampler_free(s);
    lt_kv_cache_free(kv);
    lt_model_delta_backend_free(ddelta);
    lt_model_dev_free(dev);
    lt_backend_cuda_free(cuda);
    lt_chat_template_free(ct);
    lt_tokenizer_free(tok);
    lt_adapter_delta_free(delta); /* before the adapter it borrows from */
    lt_adapter_free(ad);
    lt_model_free(m);
    return rc;
}
