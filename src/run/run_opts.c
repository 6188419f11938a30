/* run_opts.c - the options of a training run: one declarative table (name, type, the
 * lt_run_opts field, default, range or choices, tunability, help) from which everything else
 * is derived: the defaults, the setter used by the command line, the YAML config file and
 * checkpoints (which store the resolved options as strings), the formatter behind the YAML /
 * JSON dumps, `--help`, and the public iteration API (lt_run_opt_get) for forms and search
 * spaces. Invariant: for every option, lt_run_opts_set(o, name, format(o, name)) leaves o
 * unchanged, so the dumps reproduce a run. Adding an option is adding a row (and a field). */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "loratune/run.h"

/* Internal flags of a row (beside the public LT_OPT_* flags). */
enum {
    R_OMIT_EMPTY = 1u << 8,    /* STRING: not recorded when empty (optional paths) */
    R_OMIT_ZERO = 1u << 9,     /* not recorded when 0 (iters: epochs decide) */
    R_YIELD = 1u << 10,        /* not recorded when the exclusive partner is non-zero (epochs) */
    R_UNSIGNED = 1u << 11,     /* INT: a uint64_t field (seed) */
    R_WHOLE_ABOVE1 = 1u << 12, /* FLOAT: whole numbers when >= 1 (warmup: steps or a fraction) */
    R_EXCL = 1u << 13,         /* setting it zeroes the option .excl (iters <-> epochs) */
};

typedef struct {
    lt_run_opt_info in;
    int excl;                   /* R_EXCL: setting this option zeroes that one (iters <-> epochs) */
    const int *values;          /* ENUM: the value of each choice; NULL: the index */
    const char *const *aliases; /* ENUM / LIST: "alias", "name" pairs, NULL-terminated */
    const char *note;           /* added to the "expected" of an error */
} opt_row;

#define FIELD(f) offsetof(lt_run_opts, f), sizeof(((lt_run_opts *)0)->f)
#define NOMAX INFINITY

static const char *const k_format_names[] = {"auto",   "text",     "completions", "chat",
                                             "alpaca", "sharegpt", NULL};
static const int k_format_values[] = {LT_DATA_AUTO, LT_DATA_TEXT,   LT_DATA_COMPLETIONS,
                                      LT_DATA_CHAT, LT_DATA_ALPACA, LT_DATA_SHAREGPT};
static const char *const k_format_aliases[] = {
    "prompt-completion", "completions", "completion", "completions", "messages", "chat", NULL};
static const char *const k_method_names[] = {"lora", "dora", "full", "qlora", NULL};
static const int k_method_values[] = {LT_METHOD_LORA, LT_METHOD_DORA, LT_METHOD_FULL,
                                      LT_METHOD_QLORA};
static const char *const k_schedule_names[] = {"constant", "linear", "cosine", NULL};
static const char *const k_device_names[] = {"auto", "cpu", "cuda", NULL};
static const int k_device_values[] = {LT_DEVICE_AUTO, LT_DEVICE_CPU, LT_DEVICE_CUDA};
static const int k_schedule_values[] = {LT_LR_CONSTANT, LT_LR_LINEAR, LT_LR_COSINE};
static const char *const k_base_names[] = {"auto", "f32", "bf16", "f16", NULL};
static const int k_base_values[] = {-1, LT_DTYPE_F32, LT_DTYPE_BF16, LT_DTYPE_F16};
static const char *const k_compute_names[] = {"auto", "f32", "bf16", NULL};
static const int k_compute_values[] = {-1, LT_DTYPE_F32, LT_DTYPE_BF16};
static const char *const k_compute_aliases[] = {"fp32", "f32", "float32", "f32", "bfloat16", "bf16",
                                                NULL};
static const char *const k_dtype_aliases[] = {"fp32", "f32", "float32", "f32", "bfloat16", "bf16",
                                              "fp16", "f16", "float16", "f16", NULL};
/* bit i of lt_run_opts.lora_targets = LT_TARGET_* in this order */
static const char *const k_target_names[] = {"q", "k", "v", "o", "gate", "up", "down", NULL};
static const char *const k_target_aliases[] = {
    "q_proj",    "q",    "k_proj",  "k",  "v_proj",    "v",    "o_proj", "o",
    "gate_proj", "gate", "up_proj", "up", "down_proj", "down", NULL};

enum { O_ITERS = 9, O_EPOCHS = 10 }; /* rows that refer to each other (test_run_opts checks) */

static const opt_row k_rows[] = {
    /* what and where */
    {.in = {"model", "MODEL", "base model: Hugging Face folder, .gguf, or llama2.c .bin (required)",
            LT_OPT_STRING, FIELD(model), .def = ""}},
    {.in = {"tokenizer", "PATH", "tokenizer, when not with the model (llama2.c .bin)",
            LT_OPT_STRING, FIELD(tokenizer), .def = "", .flags = R_OMIT_EMPTY}},
    {.in = {"data", "DATA",
            "folder with train.jsonl [valid.jsonl test.jsonl], or one file (required)",
            LT_OPT_STRING, FIELD(data), .def = ""}},
    {.in = {"data-format", "F", "the records' shape: auto|text|completions|chat|alpaca|sharegpt",
            LT_OPT_ENUM, FIELD(data_format), .choices = k_format_names, .def = "auto"},
     .values = k_format_values,
     .aliases = k_format_aliases},
    {.in = {"valid-fraction", "X", "one-file data: fraction held out for validation", LT_OPT_FLOAT,
            FIELD(valid_fraction), 0, 1, 0, 1, .def = "0.1"}},
    {.in = {"method", "M", "lora|dora|full|qlora (qlora: LoRA over an NF4-quantized base)",
            LT_OPT_ENUM, FIELD(method), .choices = k_method_names, .def = "lora"},
     .values = k_method_values},
    {.in =
         {"out", "DIR",
          "output folder: adapter / model, checkpoints/, run_config.yaml (required); locked while "
          "the run lasts (DIR/.loratune.lock)",
          LT_OPT_STRING, FIELD(out), .def = ""}},
    {.in = {"resume", "DIR",
            "continue from the newest checkpoint of DIR (a run folder, its checkpoints/ or a file)",
            LT_OPT_STRING, FIELD(resume), .def = "", .flags = LT_OPT_NO_CONFIG | LT_OPT_NO_RECORD}},
    {.in = {"adapter", "PATH",
            "start from this adapter (PEFT / mlx-lm folder or its .safetensors, or .gguf)",
            LT_OPT_STRING, FIELD(adapter), .def = "", .flags = R_OMIT_EMPTY}},
    /* length of the run */
    [O_ITERS] = {.in = {"iters", "N", "optimizer steps (overrides --epochs)", LT_OPT_INT,
                        FIELD(iters), 1, NOMAX, .flags = R_OMIT_ZERO | R_EXCL},
                 .excl = O_EPOCHS},
    [O_EPOCHS] = {.in = {"epochs", "X", "passes over the training data when --iters is not given",
                         LT_OPT_FLOAT, FIELD(epochs), 0, NOMAX, 1, .def = "1",
                         .flags = R_YIELD | R_EXCL},
                  .excl = O_ITERS},
    /* batches */
    {.in = {"batch-size", "N|auto",
            "rows per micro-batch; auto: the largest that fits --memory-budget", LT_OPT_INT,
            FIELD(batch_size), 1, 1 << 20, .def = "auto", .flags = LT_OPT_AUTO, .tune = LT_TUNE_LOG,
            .tune_min = 1, .tune_max = 32}},
    {.in = {"grad-accum", "N", "micro-batches per optimizer step", LT_OPT_INT, FIELD(grad_accum), 1,
            1 << 20, .def = "1", .tune = LT_TUNE_LOG, .tune_min = 1, .tune_max = 16}},
    {.in = {"max-seq-len", "N|auto",
            "tokens per row; longer examples are truncated; auto: the longest example, as far as "
            "--memory-budget and the model's context allow",
            LT_OPT_INT, FIELD(max_seq_len), 2, 1 << 24, .def = "auto", .flags = LT_OPT_AUTO}},
    {.in = {"pack", NULL, "pack several examples into each row", LT_OPT_BOOL, FIELD(pack),
            .def = "false"}},
    {.in = {"train-on-prompt", NULL, "loss on prompts / user turns too", LT_OPT_BOOL,
            FIELD(train_on_prompt), .def = "false"}},
    /* optimizer and schedule */
    {.in = {"lr", "X", "peak learning rate", LT_OPT_FLOAT, FIELD(lr), 0, NOMAX, 1, .def = "1e-4",
            .tune = LT_TUNE_LOG, .tune_min = 1e-5, .tune_max = 1e-2}},
    {.in = {"lr-schedule", "S", "constant|linear|cosine, after warmup", LT_OPT_ENUM,
            FIELD(lr_schedule), .choices = k_schedule_names, .def = "linear",
            .tune = LT_TUNE_CHOICE},
     .values = k_schedule_values},
    {.in = {"warmup", "N", "linear warmup steps, or a fraction of the steps when < 1", LT_OPT_FLOAT,
            FIELD(warmup), 0, NOMAX, .def = "0", .flags = R_WHOLE_ABOVE1, .tune = LT_TUNE_LINEAR,
            .tune_min = 0, .tune_max = 0.1}},
    {.in = {"weight-decay", "X", "AdamW decoupled weight decay", LT_OPT_FLOAT, FIELD(weight_decay),
            0, NOMAX, .def = "0.01", .tune = LT_TUNE_LINEAR, .tune_min = 0, .tune_max = 0.1}},
    {.in = {"grad-clip", "X", "global gradient-norm clip, 0 = off", LT_OPT_FLOAT, FIELD(grad_clip),
            0, NOMAX, .def = "1.0", .tune = LT_TUNE_LINEAR, .tune_min = 0.25, .tune_max = 2}},
    /* adapter */
    {.in = {"lora-rank", "R", "LoRA / DoRA rank", LT_OPT_INT, FIELD(lora_rank), 1, 65536,
            .def = "8", .tune = LT_TUNE_LOG, .tune_min = 4, .tune_max = 64}},
    {.in = {"lora-alpha", "X", "LoRA alpha: scale alpha/r", LT_OPT_FLOAT, FIELD(lora_alpha), 0,
            NOMAX, 1, .def = "16", .tune = LT_TUNE_LOG, .tune_min = 4, .tune_max = 64}},
    {.in = {"lora-dropout", "X", "dropout on the LoRA input, in [0, 1)", LT_OPT_FLOAT,
            FIELD(lora_dropout), 0, 1, 0, 1, .def = "0", .tune = LT_TUNE_LINEAR, .tune_min = 0,
            .tune_max = 0.2}},
    {.in = {"lora-targets", "LIST", "q,k,v,o,gate,up,down or all", LT_OPT_LIST, FIELD(lora_targets),
            .choices = k_target_names, .def = "q,v", .tune = LT_TUNE_CHOICE},
     .aliases = k_target_aliases,
     .note = "or their *_proj names"},
    {.in = {"lora-layers", "N|A:B|all", "the last N layers, layers [A, B), or all", LT_OPT_LAYERS,
            offsetof(lt_run_opts, lora_layer_begin), 3 * sizeof(int), .def = "all"}},
    {.in = {"rslora", NULL, "rank-stabilised scale alpha/sqrt(r)", LT_OPT_BOOL, FIELD(rslora),
            .def = "false", .tune = LT_TUNE_CHOICE}},
    {.in = {"grad-checkpoint", NULL, "recompute activations in backward (less memory)", LT_OPT_BOOL,
            FIELD(grad_checkpoint), .def = "false"}},
    {.in = {"base-dtype", "D", "auto|f32|bf16|f16: precision of the frozen base", LT_OPT_ENUM,
            FIELD(base_dtype), .choices = k_base_names, .def = "auto"},
     .values = k_base_values,
     .aliases = k_dtype_aliases,
     .note = "auto = bf16 for LoRA with bf16 products (compute-dtype), else f32"},
    {.in = {"compute-dtype", "D",
            "auto|f32|bf16: precision of the matrix products (bf16: fp32 sums, fp32 LoRA and "
            "optimizer)",
            LT_OPT_ENUM, FIELD(compute_dtype), .choices = k_compute_names, .def = "auto"},
     .values = k_compute_values,
     .aliases = k_compute_aliases,
     .note = "auto = bf16 where the CPU has avx512_bf16 or amx_bf16 (not for DoRA)"},
    {.in = {"memory-budget", "SIZE",
            "peak memory the automatic sizes may plan for, e.g. 6G, 800M or bytes; 0 = 80% of the "
            "RAM "
            "available at start",
            LT_OPT_SIZE, FIELD(memory_budget), 0, 9e18, .def = "0"},
     .note = "0 = 80% of the available RAM"},
    /* evaluation and saving */
    {.in = {"eval-every", "N", "validation every N steps, 0 = only before and after", LT_OPT_INT,
            FIELD(eval_every), 0, NOMAX, .def = "200"}},
    {.in = {"eval-batches", "N", "validation batches per evaluation, 0 = the whole split",
            LT_OPT_INT, FIELD(eval_batches), 0, NOMAX, .def = "0"}},
    {.in = {"save-every", "N", "checkpoint every N steps, 0 = only at the end", LT_OPT_INT,
            FIELD(save_every), 0, NOMAX, .def = "100"}},
    {.in = {"keep-checkpoints", "N", "checkpoints kept, the newest", LT_OPT_INT,
            FIELD(keep_checkpoints), 1, 1000000, .def = "3"}},
    {.in = {"early-stop", "N", "stop after N evaluations without a better val loss, 0 = off",
            LT_OPT_INT, FIELD(early_stop), 0, 1000000, .def = "0"}},
    {.in = {"max-nonfinite", "K", "stop after K consecutive steps with NaN/inf loss or gradients",
            LT_OPT_INT, FIELD(max_nonfinite), 1, 1000000, .def = "5"}},
    /* misc */
    {.in = {"seed", "S", "seed of adapter init, dropout, shuffling and splitting", LT_OPT_INT,
            FIELD(seed), 0, NOMAX, .def = "42", .flags = R_UNSIGNED}},
    {.in = {"device", "D",
            "where to train: cpu|cuda|auto (auto: the first CUDA GPU when built with CUDA and one "
            "is present, else the CPU)",
            LT_OPT_ENUM, FIELD(device), .choices = k_device_names, .def = "auto"},
     .values = k_device_values},
    {.in = {"threads", "N", "OpenMP / OpenBLAS threads, 0 = as the environment says", LT_OPT_INT,
            FIELD(threads), 0, 4096, .def = "0"}},
    {.in = {"overwrite", NULL,
            "replace the run that --out holds (its run_config.yaml, checkpoints and exports); "
            "without it such a folder is refused, unless --resume continues that run",
            LT_OPT_BOOL, FIELD(overwrite), .def = "false",
            .flags = LT_OPT_NO_CONFIG | LT_OPT_NO_RECORD}},
    {.in = {"json", NULL, "print one JSON object per event on stdout", LT_OPT_BOOL, FIELD(json),
            .def = "false", .flags = LT_OPT_NO_RECORD}},
};
#define N_OPTS ((int)(sizeof k_rows / sizeof *k_rows))

_Static_assert(sizeof(lt_data_format) == sizeof(int) && sizeof(lt_train_method) == sizeof(int) &&
                   sizeof(lt_lr_schedule) == sizeof(int) && sizeof(lt_dtype) == sizeof(int) &&
                   sizeof(lt_device) == sizeof(int),
               "ENUM options are stored as int");
_Static_assert(offsetof(lt_run_opts, lora_layer_end) ==
                       offsetof(lt_run_opts, lora_layer_begin) + sizeof(int) &&
                   offsetof(lt_run_opts, lora_last_layers) ==
                       offsetof(lt_run_opts, lora_layer_begin) + 2 * sizeof(int),
               "LAYERS: three consecutive ints");

int lt_run_opt_count(void) {
    return N_OPTS;
}
const lt_run_opt_info *lt_run_opt_get(int i) {
    return (i >= 0 && i < N_OPTS) ? &k_rows[i].in : NULL;
}

const char *lt_lr_schedule_name(lt_lr_schedule s) {
    for (int i = 0; k_schedule_names[i]; i++)
        if (k_schedule_values[i] == (int)s) return k_schedule_names[i];
    return "?";
}

/* ---- field access ---------------------------------------------------------------------- */

static void *field(lt_run_opts *o, const opt_row *r) {
    return (char *)o + r->in.offset;
}
static const void *cfield(const lt_run_opts *o, const opt_row *r) {
    return (const char *)o + r->in.offset;
}

static int64_t get_int(const lt_run_opts *o, const opt_row *r) {
    const void *p = cfield(o, r);
    if (r->in.size == sizeof(int32_t)) {
        int32_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    int64_t v;
    memcpy(&v, p, sizeof v); /* int64_t, or uint64_t read back by the caller */
    return v;
}

static void put_int(lt_run_opts *o, const opt_row *r, int64_t v) {
    void *p = field(o, r);
    if (r->in.size == sizeof(int32_t)) {
        int32_t x = (int32_t)v;
        memcpy(p, &x, sizeof x);
    } else {
        memcpy(p, &v, sizeof v);
    }
}

/* Zeroes an option's field (the exclusive partner of iters / epochs). */
static void zero_field(lt_run_opts *o, const opt_row *r) {
    memset(field(o, r), 0, r->in.size);
}

/* ---- keys ------------------------------------------------------------------------------- */

/* "lora_rank" / "--lora-rank" -> "lora-rank" in buf. */
static void norm_key(const char *key, char *buf, size_t n) {
    while (*key == '-')
        key++;
    size_t i = 0;
    for (; key[i] && i + 1 < n; i++)
        buf[i] = key[i] == '_' ? '-' : key[i];
    buf[i] = 0;
}

int lt_run_opt_find(const char *key) {
    if (!key) return -1;
    char k[128];
    norm_key(key, k, sizeof k);
    for (int i = 0; i < N_OPTS; i++)
        if (!strcmp(k_rows[i].in.name, k)) return i;
    return -1;
}

int lt_run_opt_is_flag(const char *key) {
    int i = lt_run_opt_find(key);
    return i < 0 ? -1 : k_rows[i].in.type == LT_OPT_BOOL;
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
    for (int i = 0; i < N_OPTS; i++) {
        int e = edit_distance(k, k_rows[i].in.name);
        if (e < bd) bd = e, best = i;
    }
    if (best >= 0 && bd <= 3)
        return lt_error(LT_ERR_ARG, "unknown option '%s' (did you mean '%s'?)", k,
                        k_rows[best].in.name);
    return lt_error(LT_ERR_ARG, "unknown option '%s' (see loratune train --help)", k);
}

/* ---- parsing by type -------------------------------------------------------------------- */

/* "a, b or c" from a NULL-terminated list (sep between all but the last two). */
static void join_choices(const char *const *c, const char *sep, const char *last, char *buf,
                         size_t n) {
    size_t k = 0;
    int cnt = 0;
    while (c[cnt])
        cnt++;
    buf[0] = 0;
    for (int i = 0; i < cnt && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%s",
                              i == 0         ? ""
                              : i == cnt - 1 ? last
                                             : sep,
                              c[i]);
}

static lt_status bad_int(const opt_row *r, const char *v) {
    const lt_run_opt_info *in = &r->in;
    const char *au = in->flags & LT_OPT_AUTO ? "auto or " : "";
    if (isinf(in->max))
        return lt_error(LT_ERR_ARG, "%s: expected %san integer >= %lld, got '%s'", in->name, au,
                        (long long)in->min, v);
    return lt_error(LT_ERR_ARG, "%s: expected %san integer in [%lld, %lld], got '%s'", in->name, au,
                    (long long)in->min, (long long)in->max, v);
}

static lt_status parse_int(lt_run_opts *o, const opt_row *r, const char *v) {
    const lt_run_opt_info *in = &r->in;
    if ((in->flags & LT_OPT_AUTO) && !strcmp(v, "auto")) {
        put_int(o, r, 0);
        return LT_OK;
    }
    char *end;
    errno = 0;
    if (r->in.flags & R_UNSIGNED) { /* the whole uint64_t range */
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-') return bad_int(r, v);
        uint64_t u = x;
        memcpy(field(o, r), &u, sizeof u);
        return LT_OK;
    }
    long long x = strtoll(v, &end, 10);
    while (end && isspace((unsigned char)*end))
        end++;
    int64_t hi = isinf(in->max) ? INT64_MAX : (int64_t)in->max;
    if (errno || end == v || *end || x < (int64_t)in->min || x > hi) return bad_int(r, v);
    put_int(o, r, x);
    return LT_OK;
}

static lt_status parse_float(lt_run_opts *o, const opt_row *r, const char *v) {
    const lt_run_opt_info *in = &r->in;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    while (end && isspace((unsigned char)*end))
        end++;
    double lo = in->min, hi = in->max;
    int bad = errno || end == v || *end || !isfinite(x) || x < lo || (in->min_open && x == lo) ||
              x > hi || (in->max_open && x == hi);
    if (bad) {
        if (isinf(hi))
            return lt_error(LT_ERR_ARG, "%s: expected a number %s %g, got '%s'", in->name,
                            in->min_open ? ">" : ">=", lo, v);
        return lt_error(LT_ERR_ARG, "%s: expected a number in %c%g, %g%c, got '%s'", in->name,
                        in->min_open ? '(' : '[', lo, hi, in->max_open ? ')' : ']', v);
    }
    if ((r->in.flags & R_WHOLE_ABOVE1) && x >= 1 && x != floor(x))
        return lt_error(LT_ERR_ARG,
                        "%s: expected whole steps (>= 1) or a fraction in [0, 1), got '%s'",
                        in->name, v);
    memcpy(field(o, r), &x, sizeof x);
    return LT_OK;
}

static lt_status parse_bool(lt_run_opts *o, const opt_row *r, const char *v) {
    static const char *yes[] = {"true", "yes", "on", "1", "True", "TRUE", "Yes"};
    static const char *no[] = {"false", "no", "off", "0", "False", "FALSE", "No"};
    int b = -1;
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!strcmp(v, yes[i])) b = 1;
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (!strcmp(v, no[i])) b = 0;
    if (b < 0) return lt_error(LT_ERR_ARG, "%s: expected true or false, got '%s'", r->in.name, v);
    put_int(o, r, b);
    return LT_OK;
}

static lt_status parse_string(lt_run_opts *o, const opt_row *r, const char *v) {
    size_t n = strlen(v);
    if (n >= r->in.size)
        return lt_error(LT_ERR_ARG, "%s: path longer than %zu bytes", r->in.name, r->in.size - 1);
    memcpy(field(o, r), v, n + 1);
    return LT_OK;
}

/* Index of name among choices (or through an alias); -1 when none. len: bytes of name. */
static int choice_index(const opt_row *r, const char *name, size_t len) {
    for (int k = 0; k < 2; k++) {
        for (int i = 0; r->in.choices[i]; i++)
            if (strlen(r->in.choices[i]) == len && !strncmp(r->in.choices[i], name, len)) return i;
        if (!r->aliases) return -1;
        for (int i = 0; r->aliases[i]; i += 2) /* an alias resolves to its name, once */
            if (strlen(r->aliases[i]) == len && !strncmp(r->aliases[i], name, len)) {
                name = r->aliases[i + 1];
                len = strlen(name);
                break;
            }
    }
    return -1;
}

static lt_status parse_enum(lt_run_opts *o, const opt_row *r, const char *v) {
    int i = choice_index(r, v, strlen(v));
    if (i < 0) {
        char names[256];
        join_choices(r->in.choices, ", ", " or ", names, sizeof names);
        return lt_error(LT_ERR_ARG, "%s: expected %s, got '%s'", r->in.name, names, v);
    }
    put_int(o, r, r->values ? r->values[i] : i);
    return LT_OK;
}

static unsigned list_all(const opt_row *r) {
    unsigned m = 0;
    for (int i = 0; r->in.choices[i]; i++)
        m |= 1u << i;
    return m;
}

static lt_status parse_list(lt_run_opts *o, const opt_row *r, const char *v) {
    unsigned mask = 0;
    if (!strcmp(v, "all") || !strcmp(v, "all-linear")) {
        mask = list_all(r);
    } else {
        const char *p = v;
        if (!*p) goto bad;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            int i = choice_index(r, p, len);
            if (i < 0) goto bad;
            mask |= 1u << i;
            p += len;
            if (*p == ',') p++;
        }
    }
    memcpy(field(o, r), &mask, sizeof mask);
    return LT_OK;
bad:;
    char names[256];
    join_choices(r->in.choices, ",", ",", names, sizeof names);
    return lt_error(LT_ERR_ARG, "%s: expected a comma-separated list of %s%s%s%s or all, got '%s'",
                    r->in.name, names, r->note ? " (" : "", r->note ? r->note : "",
                    r->note ? ")" : "", v);
}

static lt_status parse_size(lt_run_opts *o, const opt_row *r, const char *v) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double mul = 1;
    if (end != v && *end) {
        char u = (char)toupper((unsigned char)*end);
        mul = u == 'K'   ? 1024.0
              : u == 'M' ? 1048576.0
              : u == 'G' ? 1073741824.0
              : u == 'T' ? 1099511627776.0
                         : 0;
        if (mul > 0) end++;
        if (mul > 0 && (*end == 'i' || *end == 'I')) end++;
        if (mul > 0 && (*end == 'B' || *end == 'b')) end++;
    }
    if (errno || end == v || *end || !(mul > 0) || !(x >= r->in.min) || x * mul > r->in.max)
        return lt_error(
            LT_ERR_ARG, "%s: expected a size such as 6G, 800M, 1.5GiB or bytes%s%s%s, got '%s'",
            r->in.name, r->note ? " (" : "", r->note ? r->note : "", r->note ? ")" : "", v);
    put_int(o, r, (int64_t)(x * mul));
    return LT_OK;
}

/* lora-layers: fields begin, end, last (three ints from the row's offset). */
static lt_status parse_layers(lt_run_opts *o, const opt_row *r, const char *v) {
    int *f = field(o, r);
    int a, c, n = 0;
    if (!strcmp(v, "all") || !strcmp(v, "-1")) {
        f[0] = f[1] = f[2] = 0;
        return LT_OK;
    }
    if (sscanf(v, "%d:%d%n", &a, &c, &n) == 2 && !v[n] && a >= 0 && c > a) {
        f[0] = a;
        f[1] = c;
        f[2] = 0;
        return LT_OK;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    while (end && isspace((unsigned char)*end))
        end++;
    if (!errno && end != v && !*end && x >= 1 && x <= (1 << 20)) {
        f[0] = f[1] = 0;
        f[2] = (int)x;
        return LT_OK;
    }
    return lt_error(LT_ERR_ARG,
                    "%s: expected N (the last N layers), A:B (layers A..B-1, A < B) or all, got "
                    "'%s'",
                    r->in.name, v);
}

static lt_status set_row(lt_run_opts *o, const opt_row *r, const char *v) {
    switch (r->in.type) {
    case LT_OPT_STRING:
        return parse_string(o, r, v);
    case LT_OPT_BOOL:
        return parse_bool(o, r, v);
    case LT_OPT_INT:
        return parse_int(o, r, v);
    case LT_OPT_FLOAT:
        return parse_float(o, r, v);
    case LT_OPT_ENUM:
        return parse_enum(o, r, v);
    case LT_OPT_SIZE:
        return parse_size(o, r, v);
    case LT_OPT_LIST:
        return parse_list(o, r, v);
    case LT_OPT_LAYERS:
        return parse_layers(o, r, v);
    }
    return lt_error(LT_ERR_INTERNAL, "%s: option of unknown type", r->in.name);
}

lt_status lt_run_opts_set(lt_run_opts *o, const char *key, const char *value) {
    int id = lt_run_opt_find(key);
    if (id < 0) return unknown_key(key);
    const opt_row *r = &k_rows[id];
    if (!value) return lt_error(LT_ERR_ARG, "%s: missing value", r->in.name);
    lt_status st = set_row(o, r, value);
    if (!st && (r->in.flags & R_EXCL))
        zero_field(o, &k_rows[r->excl]); /* iters clears epochs, and back */
    return st;
}

void lt_run_opts_default(lt_run_opts *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < N_OPTS; i++) /* the table's defaults are valid values (test_run_opts) */
        if (k_rows[i].in.def && k_rows[i].in.def[0]) set_row(o, &k_rows[i], k_rows[i].in.def);
}

/* ---- formatting ------------------------------------------------------------------------- */

/* Shortest %.Ng text that reads back to exactly x. */
static const char *fmt_double(double x, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtod(buf, NULL) == x) break;
    }
    return buf;
}

static const char *format_row(const lt_run_opts *o, const opt_row *r, char *buf, size_t n) {
    const void *p = cfield(o, r);
    switch (r->in.type) {
    case LT_OPT_STRING:
        return (const char *)p;
    case LT_OPT_BOOL:
        return get_int(o, r) ? "true" : "false";
    case LT_OPT_INT: {
        int64_t v = get_int(o, r);
        if ((r->in.flags & LT_OPT_AUTO) && v == 0) return "auto";
        if (r->in.flags & R_UNSIGNED)
            snprintf(buf, n, "%llu", (unsigned long long)(uint64_t)v);
        else
            snprintf(buf, n, "%lld", (long long)v);
        return buf;
    }
    case LT_OPT_SIZE:
        snprintf(buf, n, "%lld", (long long)get_int(o, r));
        return buf;
    case LT_OPT_FLOAT: {
        double x;
        memcpy(&x, p, sizeof x);
        return fmt_double(x, buf, n);
    }
    case LT_OPT_ENUM: {
        int v = (int)get_int(o, r);
        for (int i = 0; r->in.choices[i]; i++)
            if ((r->values ? r->values[i] : i) == v) return r->in.choices[i];
        return "?";
    }
    case LT_OPT_LIST: {
        unsigned m;
        memcpy(&m, p, sizeof m);
        if (m == list_all(r)) return "all";
        buf[0] = 0;
        for (int i = 0; r->in.choices[i]; i++)
            if ((m >> i) & 1) {
                size_t l = strlen(buf);
                snprintf(buf + l, n - l, "%s%s", l ? "," : "", r->in.choices[i]);
            }
        return buf;
    }
    case LT_OPT_LAYERS: {
        const int *f = p;
        if (f[2] > 0)
            snprintf(buf, n, "%d", f[2]);
        else if (f[1] > 0)
            snprintf(buf, n, "%d:%d", f[0], f[1]);
        else
            snprintf(buf, n, "all");
        return buf;
    }
    }
    return "?";
}

const char *lt_run_opt_format(const lt_run_opts *o, int i, char *buf, size_t n) {
    if (i < 0 || i >= N_OPTS || !buf || n == 0) return NULL;
    return format_row(o, &k_rows[i], buf, n);
}

/* The value of option i as recorded in the resolved options (run_config.yaml, checkpoints,
 * the start event); NULL when it is not recorded: resume and json, empty optional paths, and
 * whichever of iters / epochs is not in use. */
static const char *recorded(const lt_run_opts *o, int i, char *buf, size_t n) {
    const opt_row *r = &k_rows[i];
    unsigned f = r->in.flags;
    if (f & LT_OPT_NO_RECORD) return NULL;
    if ((f & R_OMIT_EMPTY) && !*(const char *)cfield(o, r)) return NULL;
    if ((f & R_OMIT_ZERO) && get_int(o, r) == 0) return NULL;
    if ((f & R_YIELD) && get_int(o, &k_rows[r->excl]) != 0) return NULL;
    return format_row(o, r, buf, n);
}

struct json_t *lt_run_opts_to_json(const lt_run_opts *o) {
    json_t *j = json_object();
    if (!j) return NULL;
    char buf[256];
    for (int i = 0; i < N_OPTS; i++) {
        const char *v = recorded(o, i, buf, sizeof buf);
        if (v) json_object_set_new(j, k_rows[i].in.name, json_string(v));
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
    for (int i = 0; i < N_OPTS; i++) {
        const char *v = recorded(o, i, buf, sizeof buf);
        if (!v) continue;
        lt_run_opt_type t = k_rows[i].in.type;
        if (t == LT_OPT_STRING || t == LT_OPT_LAYERS) /* paths; YAML 1.1 reads 2:5 as 125 */
            yaml_quote(v, q, sizeof q);
        else
            snprintf(q, sizeof q, "%s", v);
        len += (size_t)snprintf(s + len, cap - len, "%s: %s\n", k_rows[i].in.name, q);
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
    /* First pass: the whole text must be valid YAML, so that a syntax error (an unclosed '[')
     * is reported as such and not as the shape of the half-read value before it. */
    for (;;) {
        if (!yaml_parser_parse(&p, &ev)) {
            char ctx[160] = "";
            if (p.context) /* e.g. "while parsing a flow sequence": where that began */
                snprintf(ctx, sizeof ctx, " %s started on line %zu", p.context,
                         p.context_mark.line + 1);
            st = lt_error(LT_ERR_FORMAT, "%s:%zu: YAML: %s%s", path, p.problem_mark.line + 1,
                          p.problem ? p.problem : "syntax error", ctx);
            yaml_parser_delete(&p);
            free(text);
            return st;
        }
        int end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end) break;
    }
    yaml_parser_delete(&p);
    if (!yaml_parser_initialize(&p)) {
        free(text);
        return lt_error(LT_ERR_NOMEM, "%s: cannot initialise the YAML parser", path);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int depth = 0; /* 0 outside, 1 in stream, 2 in document, 3 in the top mapping */
    char key[256] = "";
    int have_key = 0, key_line = 0;
    int seen_mapping = 0;
    int seen_line[N_OPTS]; /* line of each option already set by this file, 0: not yet */
    memset(seen_line, 0, sizeof seen_line);
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
            int id = lt_run_opt_find(key);
            if (id < 0 || (k_rows[id].in.flags & LT_OPT_NO_CONFIG)) {
                if (id < 0)
                    unknown_key(key);
                else
                    lt_error(LT_ERR_ARG, "option '%s' is not allowed in a config file",
                             k_rows[id].in.name);
                char msg[1024];
                snprintf(msg, sizeof msg, "%s:%d: %s", path, key_line, lt_errmsg());
                st = lt_error(LT_ERR_ARG, "%s", msg);
                yaml_event_delete(&ev);
                break;
            }
            if (seen_line[id]) {
                char nk[128];
                norm_key(key, nk, sizeof nk);
                st = lt_error(LT_ERR_ARG,
                              "%s:%d: %s: set twice (first on line %d): expected each option "
                              "once",
                              path, key_line, nk, seen_line[id]);
                yaml_event_delete(&ev);
                break;
            }
            seen_line[id] = key_line;
            yaml_event_delete(&ev);
            continue;
        }
        /* the value */
        char val[4 * LT_RUN_PATH_MAX];
        if (t == YAML_SCALAR_EVENT) {
            snprintf(val, sizeof val, "%s", (const char *)ev.data.scalar.value);
            yaml_event_delete(&ev);
        } else if (t == YAML_SEQUENCE_START_EVENT &&
                   k_rows[lt_run_opt_find(key)].in.type == LT_OPT_LIST) {
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
                    st =
                        lt_error(LT_ERR_FORMAT, "%s:%d: %s: expected a list of names", path,
                                 (int)ev.start_mark.line + 1, k_rows[lt_run_opt_find(key)].in.name);
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
