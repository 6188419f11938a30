/* run_opts.c - the options of a training run: one table (name, argument, help) and one setter
 * used by the command line, the YAML config file, checkpoints (which store the resolved
 * options as strings) and any other front end. Invariant: for every option,
 * lt_run_opts_set(o, name, format(o, name)) leaves o unchanged, so the YAML / JSON dumps
 * reproduce a run. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "loratune/run.h"

typedef enum {
    O_MODEL,
    O_TOKENIZER,
    O_DATA,
    O_DATA_FORMAT,
    O_VALID_FRACTION,
    O_METHOD,
    O_OUT,
    O_RESUME,
    O_ADAPTER,
    O_ITERS,
    O_EPOCHS,
    O_BATCH_SIZE,
    O_GRAD_ACCUM,
    O_MAX_SEQ_LEN,
    O_PACK,
    O_TRAIN_ON_PROMPT,
    O_LR,
    O_LR_SCHEDULE,
    O_WARMUP,
    O_WEIGHT_DECAY,
    O_GRAD_CLIP,
    O_LORA_RANK,
    O_LORA_ALPHA,
    O_LORA_DROPOUT,
    O_LORA_TARGETS,
    O_LORA_LAYERS,
    O_RSLORA,
    O_GRAD_CHECKPOINT,
    O_BASE_DTYPE,
    O_MEMORY_BUDGET,
    O_EVAL_EVERY,
    O_EVAL_BATCHES,
    O_SAVE_EVERY,
    O_KEEP_CHECKPOINTS,
    O_EARLY_STOP,
    O_MAX_NONFINITE,
    O_SEED,
    O_THREADS,
    O_JSON,
    O_COUNT
} opt_id;

static const lt_run_opt_info k_opts[O_COUNT] = {
    [O_MODEL] = {"model", "MODEL",
                 "base model: Hugging Face folder, .gguf, or llama2.c .bin (required)"},
    [O_TOKENIZER] = {"tokenizer", "PATH", "tokenizer, when not with the model (llama2.c .bin)"},
    [O_DATA] = {"data", "DATA",
                "folder with train.jsonl [valid.jsonl test.jsonl], or one file (required)"},
    [O_DATA_FORMAT] = {"data-format", "F",
                       "auto|text|completions|chat|alpaca|sharegpt (default auto)"},
    [O_VALID_FRACTION] = {"valid-fraction", "X",
                          "one-file data: fraction held out for validation (default 0.1)"},
    [O_METHOD] = {"method", "M",
                  "lora|dora|full|qlora (qlora: LoRA over an NF4-quantized base; default lora)"},
    [O_OUT] = {"out", "DIR",
               "output folder: adapter / model, checkpoints/, run_config.yaml (required); "
               "locked while the run lasts (DIR/.loratune.lock)"},
    [O_RESUME] =
        {"resume", "DIR",
         "continue from the newest checkpoint of DIR (a run folder, its checkpoints/ or a file)"},
    [O_ADAPTER] = {"adapter", "PATH",
                   "start from this adapter (PEFT / mlx-lm folder or its .safetensors, or "
                   ".gguf)"},
    [O_ITERS] = {"iters", "N", "optimizer steps (overrides --epochs)"},
    [O_EPOCHS] = {"epochs", "X",
                  "passes over the training data when --iters is not given (default 1)"},
    [O_BATCH_SIZE] = {"batch-size", "N|auto",
                      "rows per micro-batch; auto: the largest that fits --memory-budget "
                      "(default auto)"},
    [O_GRAD_ACCUM] = {"grad-accum", "N", "micro-batches per optimizer step (default 1)"},
    [O_MAX_SEQ_LEN] = {"max-seq-len", "N|auto",
                       "tokens per row; longer examples are truncated; auto: the longest "
                       "example, as far as --memory-budget and the model's context allow "
                       "(default auto)"},
    [O_PACK] = {"pack", NULL, "pack several examples into each row"},
    [O_TRAIN_ON_PROMPT] = {"train-on-prompt", NULL, "loss on prompts / user turns too"},
    [O_LR] = {"lr", "X", "peak learning rate (default 1e-4)"},
    [O_LR_SCHEDULE] = {"lr-schedule", "S", "constant|linear|cosine, after warmup (default linear)"},
    [O_WARMUP] = {"warmup", "N",
                  "linear warmup steps, or a fraction of the steps when < 1 (default 0)"},
    [O_WEIGHT_DECAY] = {"weight-decay", "X", "AdamW decoupled weight decay (default 0.01)"},
    [O_GRAD_CLIP] = {"grad-clip", "X", "global gradient-norm clip, 0 = off (default 1.0)"},
    [O_LORA_RANK] = {"lora-rank", "R", "LoRA / DoRA rank (default 8)"},
    [O_LORA_ALPHA] = {"lora-alpha", "X", "LoRA alpha: scale alpha/r (default 16)"},
    [O_LORA_DROPOUT] = {"lora-dropout", "X", "dropout on the LoRA input, in [0, 1) (default 0)"},
    [O_LORA_TARGETS] = {"lora-targets", "LIST", "q,k,v,o,gate,up,down or all (default q,v)"},
    [O_LORA_LAYERS] = {"lora-layers", "N|A:B|all",
                       "the last N layers, layers [A, B), or all (default all)"},
    [O_RSLORA] = {"rslora", NULL, "rank-stabilised scale alpha/sqrt(r)"},
    [O_GRAD_CHECKPOINT] = {"grad-checkpoint", NULL,
                           "recompute activations in backward (less memory)"},
    [O_BASE_DTYPE] = {"base-dtype", "D",
                      "f32|bf16|f16: precision of the frozen base (default f32)"},
    [O_MEMORY_BUDGET] = {"memory-budget", "SIZE",
                         "peak memory the automatic sizes may plan for, e.g. 6G, 800M or "
                         "bytes; 0 = 80% of the RAM available at start (default 0)"},
    [O_EVAL_EVERY] = {"eval-every", "N",
                      "validation every N steps, 0 = only before and after (default 200)"},
    [O_EVAL_BATCHES] = {"eval-batches", "N",
                        "validation batches per evaluation, 0 = the whole split (default 0)"},
    [O_SAVE_EVERY] = {"save-every", "N",
                      "checkpoint every N steps, 0 = only at the end (default 100)"},
    [O_KEEP_CHECKPOINTS] = {"keep-checkpoints", "N", "checkpoints kept, the newest (default 3)"},
    [O_EARLY_STOP] = {"early-stop", "N",
                      "stop after N evaluations without a better val loss, 0 = off (default 0)"},
    [O_MAX_NONFINITE] =
        {"max-nonfinite", "K",
         "stop after K consecutive steps with NaN/inf loss or gradients (default 5)"},
    [O_SEED] = {"seed", "S", "seed of adapter init, dropout, shuffling and splitting (default 42)"},
    [O_THREADS] = {"threads", "N",
                   "OpenMP / OpenBLAS threads, 0 = as the environment says (default 0)"},
    [O_JSON] = {"json", NULL, "print one JSON object per event on stdout"},
};

int lt_run_opt_count(void) {
    return O_COUNT;
}
const lt_run_opt_info *lt_run_opt_get(int i) {
    return (i >= 0 && i < O_COUNT) ? &k_opts[i] : NULL;
}

const char *lt_lr_schedule_name(lt_lr_schedule s) {
    switch (s) {
    case LT_LR_CONSTANT:
        return "constant";
    case LT_LR_LINEAR:
        return "linear";
    case LT_LR_COSINE:
        return "cosine";
    }
    return "?";
}

void lt_run_opts_default(lt_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->data_format = LT_DATA_AUTO;
    o->valid_fraction = 0.1;
    o->method = LT_METHOD_LORA;
    o->iters = 0;
    o->epochs = 1.0;
    o->batch_size = 0; /* auto */
    o->grad_accum = 1;
    o->max_seq_len = 0; /* auto */
    o->lr = 1e-4;
    o->lr_schedule = LT_LR_LINEAR;
    o->warmup = 0;
    o->weight_decay = 0.01;
    o->grad_clip = 1.0;
    o->lora_rank = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0;
    o->lora_targets = LT_TARGET_Q | LT_TARGET_V;
    o->base_dtype = LT_DTYPE_F32;
    o->eval_every = 200;
    o->eval_batches = 0;
    o->save_every = 100;
    o->keep_checkpoints = 3;
    o->early_stop = 0;
    o->max_nonfinite = 5;
    o->seed = 42;
}

/* "lora_rank" / "--lora-rank" -> "lora-rank" in buf. */
static void norm_key(const char *key, char *buf, size_t n) {
    while (*key == '-')
        key++;
    size_t i = 0;
    for (; key[i] && i + 1 < n; i++)
        buf[i] = key[i] == '_' ? '-' : key[i];
    buf[i] = 0;
}

static int find_opt(const char *key) {
    char k[128];
    norm_key(key, k, sizeof k);
    for (int i = 0; i < O_COUNT; i++)
        if (!strcmp(k_opts[i].name, k)) return i;
    return -1;
}

int lt_run_opt_is_flag(const char *key) {
    int i = find_opt(key);
    return i < 0 ? -1 : k_opts[i].arg == NULL;
}

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

static lt_status unknown_key(const char *key) {
    char k[128];
    norm_key(key, k, sizeof k);
    int best = -1, bd = 99;
    for (int i = 0; i < O_COUNT; i++) {
        int e = edit_distance(k, k_opts[i].name);
        if (e < bd) bd = e, best = i;
    }
    if (best >= 0 && bd <= 3)
        return lt_error(LT_ERR_ARG, "unknown option '%s' (did you mean '%s'?)", k,
                        k_opts[best].name);
    return lt_error(LT_ERR_ARG, "unknown option '%s' (see loratune train --help)", k);
}

static lt_status parse_i64(const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    while (end && isspace((unsigned char)*end))
        end++;
    if (errno || end == v || *end || x < lo || x > hi) {
        if (hi == INT64_MAX)
            return lt_error(LT_ERR_ARG, "%s: expected an integer >= %lld, got '%s'", name,
                            (long long)lo, v);
        return lt_error(LT_ERR_ARG, "%s: expected an integer in [%lld, %lld], got '%s'", name,
                        (long long)lo, (long long)hi, v);
    }
    *out = x;
    return LT_OK;
}

/* lo_open / hi_open: exclusive bounds. */
static lt_status parse_f64(const char *name, const char *v, double lo, int lo_open, double hi,
                           int hi_open, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    while (end && isspace((unsigned char)*end))
        end++;
    int bad = errno || end == v || *end || !isfinite(x) || x < lo || (lo_open && x == lo) ||
              x > hi || (hi_open && x == hi);
    if (bad) {
        if (isinf(hi))
            return lt_error(LT_ERR_ARG, "%s: expected a number %s %g, got '%s'", name,
                            lo_open ? ">" : ">=", lo, v);
        return lt_error(LT_ERR_ARG, "%s: expected a number in %c%g, %g%c, got '%s'", name,
                        lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']', v);
    }
    *out = x;
    return LT_OK;
}

static lt_status parse_bool(const char *name, const char *v, int *out) {
    static const char *yes[] = {"true", "yes", "on", "1", "True", "TRUE", "Yes"};
    static const char *no[] = {"false", "no", "off", "0", "False", "FALSE", "No"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!strcmp(v, yes[i])) return *out = 1, LT_OK;
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (!strcmp(v, no[i])) return *out = 0, LT_OK;
    return lt_error(LT_ERR_ARG, "%s: expected true or false, got '%s'", name, v);
}

static lt_status set_path(const char *name, const char *v, char *dst) {
    size_t n = strlen(v);
    if (n >= LT_RUN_PATH_MAX)
        return lt_error(LT_ERR_ARG, "%s: path longer than %d bytes", name, LT_RUN_PATH_MAX - 1);
    memcpy(dst, v, n + 1);
    return LT_OK;
}

lt_status lt_run_opts_set(lt_run_opts *o, const char *key, const char *value) {
    int id = find_opt(key);
    if (id < 0) return unknown_key(key);
    const char *nm = k_opts[id].name;
    if (!value) return lt_error(LT_ERR_ARG, "%s: missing value", nm);
    int64_t i64;
    double f;
    int b = 0;
    lt_status st = LT_OK;
    switch ((opt_id)id) {
    case O_MODEL:
        return set_path(nm, value, o->model);
    case O_TOKENIZER:
        return set_path(nm, value, o->tokenizer);
    case O_DATA:
        return set_path(nm, value, o->data);
    case O_OUT:
        return set_path(nm, value, o->out);
    case O_RESUME:
        return set_path(nm, value, o->resume);
    case O_ADAPTER:
        return set_path(nm, value, o->adapter);
    case O_DATA_FORMAT:
        if (lt_data_format_parse(value, &o->data_format))
            return lt_error(LT_ERR_ARG,
                            "%s: expected auto, text, completions, chat, alpaca or sharegpt, "
                            "got '%s'",
                            nm, value);
        return LT_OK;
    case O_VALID_FRACTION:
        if ((st = parse_f64(nm, value, 0, 0, 1, 1, &f))) return st;
        o->valid_fraction = f;
        return LT_OK;
    case O_METHOD:
        if (strcmp(value, "lora") && strcmp(value, "dora") && strcmp(value, "full") &&
            strcmp(value, "qlora"))
            return lt_error(LT_ERR_ARG, "%s: expected lora, dora, full or qlora, got '%s'", nm,
                            value);
        return lt_train_method_parse(value, &o->method);
    case O_ITERS:
        if ((st = parse_i64(nm, value, 1, INT64_MAX, &i64))) return st;
        o->iters = i64;
        o->epochs = 0;
        return LT_OK;
    case O_EPOCHS:
        if ((st = parse_f64(nm, value, 0, 1, INFINITY, 0, &f))) return st;
        o->epochs = f;
        o->iters = 0;
        return LT_OK;
    case O_BATCH_SIZE:
        if (!strcmp(value, "auto")) {
            o->batch_size = 0;
            return LT_OK;
        }
        if ((st = parse_i64(nm, value, 1, 1 << 20, &i64)))
            return lt_error(LT_ERR_ARG, "%s: expected auto or an integer in [1, %d], got '%s'", nm,
                            1 << 20, value);
        o->batch_size = (int)i64;
        return LT_OK;
    case O_GRAD_ACCUM:
        if ((st = parse_i64(nm, value, 1, 1 << 20, &i64))) return st;
        o->grad_accum = (int)i64;
        return LT_OK;
    case O_MAX_SEQ_LEN:
        if (!strcmp(value, "auto")) {
            o->max_seq_len = 0;
            return LT_OK;
        }
        if ((st = parse_i64(nm, value, 2, 1 << 24, &i64)))
            return lt_error(LT_ERR_ARG, "%s: expected auto or an integer in [2, %d], got '%s'", nm,
                            1 << 24, value);
        o->max_seq_len = (int)i64;
        return LT_OK;
    case O_PACK:
        if ((st = parse_bool(nm, value, &b))) return st;
        o->pack = b;
        return LT_OK;
    case O_TRAIN_ON_PROMPT:
        if ((st = parse_bool(nm, value, &b))) return st;
        o->train_on_prompt = b;
        return LT_OK;
    case O_RSLORA:
        if ((st = parse_bool(nm, value, &b))) return st;
        o->rslora = b;
        return LT_OK;
    case O_GRAD_CHECKPOINT:
        if ((st = parse_bool(nm, value, &b))) return st;
        o->grad_checkpoint = b;
        return LT_OK;
    case O_JSON:
        if ((st = parse_bool(nm, value, &b))) return st;
        o->json = b;
        return LT_OK;
    case O_LR:
        if ((st = parse_f64(nm, value, 0, 1, INFINITY, 0, &f))) return st;
        o->lr = f;
        return LT_OK;
    case O_LR_SCHEDULE:
        if (!strcmp(value, "constant"))
            o->lr_schedule = LT_LR_CONSTANT;
        else if (!strcmp(value, "linear"))
            o->lr_schedule = LT_LR_LINEAR;
        else if (!strcmp(value, "cosine"))
            o->lr_schedule = LT_LR_COSINE;
        else
            return lt_error(LT_ERR_ARG, "%s: expected constant, linear or cosine, got '%s'", nm,
                            value);
        return LT_OK;
    case O_WARMUP:
        if ((st = parse_f64(nm, value, 0, 0, INFINITY, 0, &f))) return st;
        if (f >= 1 && f != floor(f))
            return lt_error(LT_ERR_ARG,
                            "%s: expected whole steps (>= 1) or a fraction in [0, 1), got '%s'", nm,
                            value);
        o->warmup = f;
        return LT_OK;
    case O_WEIGHT_DECAY:
        if ((st = parse_f64(nm, value, 0, 0, INFINITY, 0, &f))) return st;
        o->weight_decay = f;
        return LT_OK;
    case O_GRAD_CLIP:
        if ((st = parse_f64(nm, value, 0, 0, INFINITY, 0, &f))) return st;
        o->grad_clip = f;
        return LT_OK;
    case O_LORA_RANK:
        if ((st = parse_i64(nm, value, 1, 65536, &i64))) return st;
        o->lora_rank = (int)i64;
        return LT_OK;
    case O_LORA_ALPHA:
        if ((st = parse_f64(nm, value, 0, 1, INFINITY, 0, &f))) return st;
        o->lora_alpha = f;
        return LT_OK;
    case O_LORA_DROPOUT:
        if ((st = parse_f64(nm, value, 0, 0, 1, 1, &f))) return st;
        o->lora_dropout = f;
        return LT_OK;
    case O_LORA_TARGETS: {
        unsigned m;
        if (lt_target_mask_parse(value, &m))
            return lt_error(LT_ERR_ARG,
                            "%s: expected a comma-separated list of q,k,v,o,gate,up,down (or "
                            "their *_proj names) or all, got '%s'",
                            nm, value);
        o->lora_targets = m;
        return LT_OK;
    }
    case O_LORA_LAYERS: {
        int a, c, n = 0;
        if (!strcmp(value, "all") || !strcmp(value, "-1")) {
            o->lora_layer_begin = o->lora_layer_end = o->lora_last_layers = 0;
            return LT_OK;
        }
        if (sscanf(value, "%d:%d%n", &a, &c, &n) == 2 && !value[n] && a >= 0 && c > a) {
            o->lora_layer_begin = a;
            o->lora_layer_end = c;
            o->lora_last_layers = 0;
            return LT_OK;
        }
        if (!parse_i64(nm, value, 1, 1 << 20, &i64)) {
            o->lora_last_layers = (int)i64;
            o->lora_layer_begin = o->lora_layer_end = 0;
            return LT_OK;
        }
        return lt_error(LT_ERR_ARG,
                        "%s: expected N (the last N layers), A:B (layers A..B-1, A < B) or all, "
                        "got '%s'",
                        nm, value);
    }
    case O_BASE_DTYPE:
        if (!strcmp(value, "f32") || !strcmp(value, "fp32") || !strcmp(value, "float32"))
            o->base_dtype = LT_DTYPE_F32;
        else if (!strcmp(value, "bf16") || !strcmp(value, "bfloat16"))
            o->base_dtype = LT_DTYPE_BF16;
        else if (!strcmp(value, "f16") || !strcmp(value, "fp16") || !strcmp(value, "float16"))
            o->base_dtype = LT_DTYPE_F16;
        else
            return lt_error(LT_ERR_ARG, "%s: expected f32, bf16 or f16, got '%s'", nm, value);
        return LT_OK;
    case O_MEMORY_BUDGET: {
        char *end;
        errno = 0;
        double x = strtod(value, &end);
        double mul = 1;
        if (end != value && *end) {
            char u = (char)toupper((unsigned char)*end);
            mul = u == 'K' ? 1024.0 : u == 'M' ? 1048576.0 : u == 'G' ? 1073741824.0
                : u == 'T' ? 1099511627776.0 : 0;
            if (mul > 0) end++;
            if (mul > 0 && (*end == 'i' || *end == 'I')) end++;
            if (mul > 0 && (*end == 'B' || *end == 'b')) end++;
        }
        if (errno || end == value || *end || !(mul > 0) || !(x >= 0) || x * mul > 9e18)
            return lt_error(LT_ERR_ARG,
                            "%s: expected a size such as 6G, 800M, 1.5GiB or bytes (0 = 80%% of "
                            "the available RAM), got '%s'",
                            nm, value);
        o->memory_budget = (int64_t)(x * mul);
        return LT_OK;
    }
    case O_EVAL_EVERY:
        if ((st = parse_i64(nm, value, 0, INT64_MAX, &i64))) return st;
        o->eval_every = i64;
        return LT_OK;
    case O_EVAL_BATCHES:
        if ((st = parse_i64(nm, value, 0, INT64_MAX, &i64))) return st;
        o->eval_batches = i64;
        return LT_OK;
    case O_SAVE_EVERY:
        if ((st = parse_i64(nm, value, 0, INT64_MAX, &i64))) return st;
        o->save_every = i64;
        return LT_OK;
    case O_KEEP_CHECKPOINTS:
        if ((st = parse_i64(nm, value, 1, 1000000, &i64))) return st;
        o->keep_checkpoints = (int)i64;
        return LT_OK;
    case O_EARLY_STOP:
        if ((st = parse_i64(nm, value, 0, 1000000, &i64))) return st;
        o->early_stop = (int)i64;
        return LT_OK;
    case O_MAX_NONFINITE:
        if ((st = parse_i64(nm, value, 1, 1000000, &i64))) return st;
        o->max_nonfinite = (int)i64;
        return LT_OK;
    case O_SEED: {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
            return lt_error(LT_ERR_ARG, "%s: expected an integer >= 0, got '%s'", nm, value);
        o->seed = s;
        return LT_OK;
    }
    case O_THREADS:
        if ((st = parse_i64(nm, value, 0, 4096, &i64))) return st;
        o->threads = (int)i64;
        return LT_OK;
    case O_COUNT:
        break;
    }
    return lt_error(LT_ERR_INTERNAL, "option table out of step");
}

/* Shortest %.Ng text that reads back to exactly x. */
static const char *fmt_double(double x, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtod(buf, NULL) == x) break;
    }
    return buf;
}

/* The value of option id as text lt_run_opts_set reads back; NULL when it should not be
 * written (resume, empty optional paths). Doubles in their shortest exact form. */
static const char *format_opt(const lt_run_opts *o, int id, char *buf, size_t n) {
    switch ((opt_id)id) {
    case O_MODEL:
        return o->model;
    case O_TOKENIZER:
        return o->tokenizer[0] ? o->tokenizer : NULL;
    case O_DATA:
        return o->data;
    case O_OUT:
        return o->out;
    case O_RESUME:
        return NULL;
    case O_ADAPTER:
        return o->adapter[0] ? o->adapter : NULL;
    case O_DATA_FORMAT:
        return lt_data_format_name(o->data_format);
    case O_VALID_FRACTION:
        return fmt_double(o->valid_fraction, buf, n);
    case O_METHOD:
        return lt_train_method_name(o->method);
    case O_ITERS:
        if (!o->iters) return NULL;
        snprintf(buf, n, "%lld", (long long)o->iters);
        return buf;
    case O_EPOCHS:
        if (o->iters) return NULL;
        return fmt_double(o->epochs, buf, n);
    case O_BATCH_SIZE:
        if (!o->batch_size) return "auto";
        snprintf(buf, n, "%d", o->batch_size);
        return buf;
    case O_GRAD_ACCUM:
        snprintf(buf, n, "%d", o->grad_accum);
        return buf;
    case O_MAX_SEQ_LEN:
        if (!o->max_seq_len) return "auto";
        snprintf(buf, n, "%d", o->max_seq_len);
        return buf;
    case O_PACK:
        return o->pack ? "true" : "false";
    case O_TRAIN_ON_PROMPT:
        return o->train_on_prompt ? "true" : "false";
    case O_LR:
        return fmt_double(o->lr, buf, n);
    case O_LR_SCHEDULE:
        return lt_lr_schedule_name(o->lr_schedule);
    case O_WARMUP:
        return fmt_double(o->warmup, buf, n);
    case O_WEIGHT_DECAY:
        return fmt_double(o->weight_decay, buf, n);
    case O_GRAD_CLIP:
        return fmt_double(o->grad_clip, buf, n);
    case O_LORA_RANK:
        snprintf(buf, n, "%d", o->lora_rank);
        return buf;
    case O_LORA_ALPHA:
        return fmt_double(o->lora_alpha, buf, n);
    case O_LORA_DROPOUT:
        return fmt_double(o->lora_dropout, buf, n);
    case O_LORA_TARGETS: {
        if (o->lora_targets == LT_TARGET_ALL) return "all";
        static const char *shorts[LT_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
        buf[0] = 0;
        for (int t = 0; t < LT_N_TARGETS; t++)
            if ((o->lora_targets >> t) & 1) {
                size_t l = strlen(buf);
                snprintf(buf + l, n - l, "%s%s", l ? "," : "", shorts[t]);
            }
        return buf;
    }
    case O_LORA_LAYERS:
        if (o->lora_last_layers > 0)
            snprintf(buf, n, "%d", o->lora_last_layers);
        else if (o->lora_layer_end > 0)
            snprintf(buf, n, "%d:%d", o->lora_layer_begin, o->lora_layer_end);
        else
            snprintf(buf, n, "all");
        return buf;
    case O_RSLORA:
        return o->rslora ? "true" : "false";
    case O_GRAD_CHECKPOINT:
        return o->grad_checkpoint ? "true" : "false";
    case O_BASE_DTYPE:
        return o->base_dtype == LT_DTYPE_BF16  ? "bf16"
               : o->base_dtype == LT_DTYPE_F16 ? "f16"
                                               : "f32";
    case O_MEMORY_BUDGET:
        snprintf(buf, n, "%lld", (long long)o->memory_budget);
        return buf;
    case O_EVAL_EVERY:
        snprintf(buf, n, "%lld", (long long)o->eval_every);
        return buf;
    case O_EVAL_BATCHES:
        snprintf(buf, n, "%lld", (long long)o->eval_batches);
        return buf;
    case O_SAVE_EVERY:
        snprintf(buf, n, "%lld", (long long)o->save_every);
        return buf;
    case O_KEEP_CHECKPOINTS:
        snprintf(buf, n, "%d", o->keep_checkpoints);
        return buf;
    case O_EARLY_STOP:
        snprintf(buf, n, "%d", o->early_stop);
        return buf;
    case O_MAX_NONFINITE:
        snprintf(buf, n, "%d", o->max_nonfinite);
        return buf;
    case O_SEED:
        snprintf(buf, n, "%llu", (unsigned long long)o->seed);
        return buf;
    case O_THREADS:
        snprintf(buf, n, "%d", o->threads);
        return buf;
    case O_JSON:
        return NULL; /* how to print, not what to compute */
    case O_COUNT:
        break;
    }
    return NULL;
}

struct json_t *lt_run_opts_to_json(const lt_run_opts *o) {
    json_t *j = json_object();
    if (!j) return NULL;
    char buf[256];
    for (int i = 0; i < O_COUNT; i++) {
        const char *v = format_opt(o, i, buf, sizeof buf);
        if (v) json_object_set_new(j, k_opts[i].name, json_string(v));
    }
    return j;
}

/* YAML double-quoted scalar: escape backslash, quote and control bytes. */
static void yaml_quote(const char *s, char *out, size_t n) {
    size_t k = 0;
    if (n < 3) return;
    out[k++] = '"';
    for (; *s && k + 8 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, n - k, "\\x%02x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k++] = '"';
    out[k] = 0;
}

lt_status lt_run_opts_to_yaml(const lt_run_opts *o, char **out) {
    size_t cap = 4096 + 4 * 6 * LT_RUN_PATH_MAX, len = 0;
    char *s = lt_malloc(cap);
    if (!s) return lt_error(LT_ERR_NOMEM, "run options: out of memory");
    len += (size_t)snprintf(s, cap,
                            "# loratune train: the resolved options of this run\n"
                            "# (loratune train -c run_config.yaml reproduces it)\n");
    char buf[256], q[4 * LT_RUN_PATH_MAX + 8];
    for (int i = 0; i < O_COUNT; i++) {
        const char *v = format_opt(o, i, buf, sizeof buf);
        if (!v) continue;
        int is_path = i == O_MODEL || i == O_TOKENIZER || i == O_DATA || i == O_OUT ||
                      i == O_ADAPTER || i == O_LORA_LAYERS; /* YAML 1.1 reads 2:5 as 125 */
        if (is_path)
            yaml_quote(v, q, sizeof q);
        else
            snprintf(q, sizeof q, "%s", v);
        len += (size_t)snprintf(s + len, cap - len, "%s: %s\n", k_opts[i].name, q);
    }
    *out = s;
    return LT_OK;
}

lt_status lt_run_opts_validate(const lt_run_opts *o, int need_out) {
    if (!o->model[0]) return lt_error(LT_ERR_ARG, "model: required (a model folder or file)");
    if (!o->data[0]) return lt_error(LT_ERR_ARG, "data: required (a data folder or file)");
    if (need_out && !o->out[0]) return lt_error(LT_ERR_ARG, "out: required (an output folder)");
    if (o->lora_last_layers > 0 && o->lora_layer_end > 0)
        return lt_error(LT_ERR_ARG, "lora-layers: give N or A:B, not both");
    if (o->method == LT_METHOD_FULL && o->adapter[0])
        return lt_error(LT_ERR_ARG, "adapter: only with method lora, dora or qlora");
    return LT_OK;
}

/* ---- YAML config ------------------------------------------------------------------------ */

static const char *yaml_ev_name(yaml_event_type_t t) {
    switch (t) {
    case YAML_SEQUENCE_START_EVENT:
        return "a list";
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_SCALAR_EVENT:
        return "a scalar";
    default:
        return "something else";
    }
}

lt_status lt_run_opts_load_yaml(lt_run_opts *o, const char *path) {
    char *text = NULL;
    size_t len = 0;
    lt_status st = lt_file_read_all(path, &text, &len);
    if (st) return st;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        free(text);
        return lt_error(LT_ERR_NOMEM, "%s: cannot initialise the YAML parser", path);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    yaml_event_t ev;
    int depth = 0; /* 0 outside, 1 in stream, 2 in document, 3 in the top mapping */
    char key[256] = "";
    int have_key = 0, key_line = 0;
    int seen_mapping = 0;
    st = LT_OK;
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            st = lt_error(LT_ERR_FORMAT, "%s:%zu: YAML: %s", path, p.problem_mark.line + 1,
                          p.problem ? p.problem : "syntax error");
            break;
        }
        yaml_event_type_t t = ev.type;
        int line = (int)ev.start_mark.line + 1;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT ||
            t == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        if (!seen_mapping) {
            if (t != YAML_MAPPING_START_EVENT) {
                st = lt_error(LT_ERR_FORMAT, "%s:%d: expected a mapping of option: value, got %s",
                              path, line, yaml_ev_name(t));
                yaml_event_delete(&ev);
                break;
            }
            seen_mapping = 1;
            depth = 3;
            yaml_event_delete(&ev);
            continue;
        }
        if (t == YAML_MAPPING_END_EVENT) {
            depth = 2;
            yaml_event_delete(&ev);
            continue;
        }
        if (depth != 3) {
            st =
                lt_error(LT_ERR_FORMAT, "%s:%d: expected one mapping of option: value", path, line);
            yaml_event_delete(&ev);
            break;
        }
        if (!have_key) {
            if (t != YAML_SCALAR_EVENT) {
                st = lt_error(LT_ERR_FORMAT, "%s:%d: expected an option name, got %s", path, line,
                              yaml_ev_name(t));
                yaml_event_delete(&ev);
                break;
            }
            snprintf(key, sizeof key, "%s", (const char *)ev.data.scalar.value);
            key_line = line;
            have_key = 1;
            if (find_opt(key) < 0 || !strcmp(key, "resume") || !strcmp(key, "config")) {
                if (find_opt(key) < 0)
                    unknown_key(key);
                else
                    lt_error(LT_ERR_ARG, "option '%s' is not allowed in a config file", key);
                char msg[1024];
                snprintf(msg, sizeof msg, "%s:%d: %s", path, key_line, lt_errmsg());
                st = lt_error(LT_ERR_ARG, "%s", msg);
                yaml_event_delete(&ev);
                break;
            }
            yaml_event_delete(&ev);
            continue;
        }
        /* the value */
        char val[4 * LT_RUN_PATH_MAX];
        if (t == YAML_SCALAR_EVENT) {
            snprintf(val, sizeof val, "%s", (const char *)ev.data.scalar.value);
            yaml_event_delete(&ev);
        } else if (t == YAML_SEQUENCE_START_EVENT && find_opt(key) == O_LORA_TARGETS) {
            yaml_event_delete(&ev);
            val[0] = 0;
            for (;;) {
                if (!yaml_parser_parse(&p, &ev)) {
                    st = lt_error(LT_ERR_FORMAT, "%s:%zu: YAML: %s", path, p.problem_mark.line + 1,
                                  p.problem ? p.problem : "syntax error");
                    break;
                }
                if (ev.type == YAML_SEQUENCE_END_EVENT) {
                    yaml_event_delete(&ev);
                    break;
                }
                if (ev.type != YAML_SCALAR_EVENT) {
                    st = lt_error(LT_ERR_FORMAT, "%s:%d: lora-targets: expected a list of names",
                                  path, (int)ev.start_mark.line + 1);
                    yaml_event_delete(&ev);
                    break;
                }
                size_t l = strlen(val);
                snprintf(val + l, sizeof val - l, "%s%s", l ? "," : "",
                         (const char *)ev.data.scalar.value);
                yaml_event_delete(&ev);
            }
            if (st) break;
        } else {
            char nk[128];
            norm_key(key, nk, sizeof nk);
            st = lt_error(LT_ERR_FORMAT, "%s:%d: %s: expected a single value, got %s", path, line,
                          nk, yaml_ev_name(t));
            yaml_event_delete(&ev);
            break;
        }
        have_key = 0;
        if (lt_run_opts_set(o, key, val)) {
            char msg[1200];
            snprintf(msg, sizeof msg, "%s:%d: %s", path, key_line, lt_errmsg());
            st = lt_error(LT_ERR_ARG, "%s", msg);
            break;
        }
    }
    yaml_parser_delete(&p);
    free(text);
    return st;
}
