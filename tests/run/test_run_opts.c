/* test_run_opts.c - run options (the option table: setter, formatter, defaults, ranges and
 * choices, the iteration API; YAML config, dumps that read back), their error messages, and
 * the learning-rate schedules against transformers' schedulers
 * (tests/data/run/lr_schedules.json from tools/gen_schedule_goldens.py). */
#include <jansson.h>
#include <math.h>

#include "loratune/run.h"
#include "lt_test.h"

static const char *write_tmp(const char *dir, const char *name, const char *text) {
    static char path[8][1024];
    static int k = 0;
    char *p = path[k++ & 7];
    snprintf(p, 1024, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

static int same_opts(const lt_run_opts *a, const lt_run_opts *b) {
    json_t *ja = lt_run_opts_to_json(a), *jb = lt_run_opts_to_json(b);
    int eq = json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return eq;
}

static void test_set(void) {
    lt_run_opts o;
    lt_run_opts_default(&o);
    CHECK(o.method == LT_METHOD_LORA && o.lora_rank == 8 && o.base_dtype == -1 &&
              o.lora_targets == (LT_TARGET_Q | LT_TARGET_V) && o.epochs == 1 && o.iters == 0,
          "defaults");
    CHECK_OK(lt_run_opts_set(&o, "lora-rank", "16"));
    CHECK_OK(lt_run_opts_set(&o, "lora_alpha", "32"));
    CHECK_OK(lt_run_opts_set(&o, "--lora-dropout", "0.05"));
    CHECK_OK(lt_run_opts_set(&o, "lora-targets", "all"));
    CHECK_OK(lt_run_opts_set(&o, "lora-layers", "4"));
    CHECK_OK(lt_run_opts_set(&o, "method", "dora"));
    CHECK_OK(lt_run_opts_set(&o, "pack", "yes"));
    CHECK_OK(lt_run_opts_set(&o, "lr-schedule", "cosine"));
    CHECK_OK(lt_run_opts_set(&o, "warmup", "0.1"));
    CHECK_OK(lt_run_opts_set(&o, "base-dtype", "bf16"));
    CHECK_OK(lt_run_opts_set(&o, "epochs", "2.5"));
    CHECK(o.lora_rank == 16 && o.lora_alpha == 32 && o.lora_dropout == 0.05 &&
              o.lora_targets == LT_TARGET_ALL && o.lora_last_layers == 4 &&
              o.method == LT_METHOD_DORA && o.pack == 1 && o.lr_schedule == LT_LR_COSINE &&
              o.warmup == 0.1 && o.base_dtype == LT_DTYPE_BF16 && o.epochs == 2.5,
          "values set");
    CHECK_OK(lt_run_opts_set(&o, "iters", "300"));
    CHECK(o.iters == 300 && o.epochs == 0, "iters clears epochs");
    CHECK_OK(lt_run_opts_set(&o, "base-dtype", "auto"));
    CHECK(o.base_dtype == -1, "base-dtype auto");
    CHECK_ERR(lt_run_opts_set(&o, "base-dtype", "f8"), LT_ERR_ARG, "base-dtype");
    CHECK_OK(lt_run_opts_set(&o, "lora-layers", "2:5"));
    CHECK(o.lora_layer_begin == 2 && o.lora_layer_end == 5 && o.lora_last_layers == 0, "A:B");
    CHECK(lt_run_opt_is_flag("pack") == 1 && lt_run_opt_is_flag("--lr") == 0 &&
              lt_run_opt_is_flag("nope") == -1,
          "flags");

    /* every issue option name exists */
    static const char *names[] = {"model",
                                  "data",
                                  "data-format",
                                  "method",
                                  "out",
                                  "resume",
                                  "iters",
                                  "epochs",
                                  "batch-size",
                                  "grad-accum",
                                  "max-seq-len",
                                  "pack",
                                  "train-on-prompt",
                                  "lr",
                                  "lr-schedule",
                                  "warmup",
                                  "weight-decay",
                                  "grad-clip",
                                  "lora-rank",
                                  "lora-alpha",
                                  "lora-dropout",
                                  "lora-targets",
                                  "lora-layers",
                                  "rslora",
                                  "grad-checkpoint",
                                  "eval-every",
                                  "save-every",
                                  "seed",
                                  "json",
                                  "base-dtype",
                                  "early-stop",
                                  "eval-batches"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK(lt_run_opt_is_flag(names[i]) >= 0, "option %s missing", names[i]);

    /* errors name the option and what was expected */
    CHECK_ERR(lt_run_opts_set(&o, "lora-rank", "0"), LT_ERR_ARG,
              "lora-rank: expected an integer in [1, 65536], got '0'");
    CHECK_ERR(lt_run_opts_set(&o, "batch-size", "four"), LT_ERR_ARG,
              "batch-size: expected auto or an integer in [1, 1048576], got 'four'");
    CHECK_ERR(lt_run_opts_set(&o, "max-seq-len", "1"), LT_ERR_ARG,
              "max-seq-len: expected auto or an integer in [2, 16777216], got '1'");
    /* automatic sizes: the default, "auto" sets it back; memory budget sizes */
    {
        lt_run_opts d;
        lt_run_opts_default(&d);
        CHECK(d.batch_size == 0 && d.max_seq_len == 0 && d.memory_budget == 0,
              "batch size and sequence length are automatic by default");
        CHECK_OK(lt_run_opts_set(&d, "batch-size", "8"));
        CHECK_OK(lt_run_opts_set(&d, "batch-size", "auto"));
        CHECK(d.batch_size == 0, "batch-size auto");
        CHECK_OK(lt_run_opts_set(&d, "memory-budget", "6G"));
        CHECK(d.memory_budget == 6LL << 30, "6G = 6 GiB");
        CHECK_OK(lt_run_opts_set(&d, "memory-budget", "1.5GiB"));
        CHECK(d.memory_budget == 3LL << 29, "1.5GiB");
        CHECK_OK(lt_run_opts_set(&d, "memory-budget", "800M"));
        CHECK(d.memory_budget == 800LL << 20, "800M");
        CHECK_OK(lt_run_opts_set(&d, "memory-budget", "123456"));
        CHECK(d.memory_budget == 123456, "plain bytes");
        CHECK_ERR(lt_run_opts_set(&d, "memory-budget", "12Q"), LT_ERR_ARG,
                  "memory-budget: expected a size such as 6G");
        CHECK_ERR(lt_run_opts_set(&d, "memory-budget", "-1G"), LT_ERR_ARG, "memory-budget");
    }
    CHECK_ERR(lt_run_opts_set(&o, "lr", "-1"), LT_ERR_ARG, "lr: expected a number > 0, got '-1'");
    CHECK_ERR(lt_run_opts_set(&o, "lora-dropout", "1"), LT_ERR_ARG,
              "lora-dropout: expected a number in [0, 1)");
    CHECK_ERR(lt_run_opts_set(&o, "method", "sft"), LT_ERR_ARG,
              "method: expected lora, dora, full or qlora, got 'sft'");
    CHECK_ERR(lt_run_opts_set(&o, "lr-schedule", "step"), LT_ERR_ARG,
              "lr-schedule: expected constant, linear or cosine");
    CHECK_ERR(lt_run_opts_set(&o, "lora-targets", "q,x"), LT_ERR_ARG, "lora-targets: expected");
    CHECK_ERR(lt_run_opts_set(&o, "lora-layers", "5:2"), LT_ERR_ARG, "lora-layers: expected N");
    CHECK_ERR(lt_run_opts_set(&o, "base-dtype", "q4"), LT_ERR_ARG,
              "base-dtype: expected auto, f32, bf16 or f16, got 'q4'");
    CHECK_ERR(lt_run_opts_set(&o, "pack", "maybe"), LT_ERR_ARG, "pack: expected true or false");
    CHECK_ERR(lt_run_opts_set(&o, "warmup", "2.5"), LT_ERR_ARG, "warmup: expected whole steps");
    CHECK_ERR(lt_run_opts_set(&o, "data-format", "csv"), LT_ERR_ARG, "data-format: expected auto");
    CHECK_ERR(lt_run_opts_set(&o, "lora-rnak", "4"), LT_ERR_ARG,
              "unknown option 'lora-rnak' (did you mean 'lora-rank'?)");
    CHECK_ERR(lt_run_opts_set(&o, "zzzzzzzzzzzz", "4"), LT_ERR_ARG,
              "unknown option 'zzzzzzzzzzzz'");
    lt_run_opts v;
    lt_run_opts_default(&v);
    CHECK_ERR(lt_run_opts_validate(&v, 1), LT_ERR_ARG, "model: required");
}

/* Values to try for option in: bounds, a middle, every choice, the default. */
static int sample_values(const lt_run_opt_info *in, char vals[][64], int max) {
    int n = 0;
#define ADD(...) (n < max ? snprintf(vals[n++], 64, __VA_ARGS__) : 0)
    if (in->def && in->def[0]) ADD("%s", in->def);
    switch (in->type) {
    case LT_OPT_STRING:
        ADD("some dir/with \"quotes\" and \\ and: colons");
        ADD("x");
        break;
    case LT_OPT_BOOL:
        ADD("true");
        ADD("false");
        ADD("yes");
        break;
    case LT_OPT_INT:
    case LT_OPT_SIZE:
        ADD("%.0f", in->min);
        ADD("%.0f", in->min + 1);
        ADD("%.0f", isinf(in->max) ? in->min + 123456789 : in->max);
        if (!isinf(in->max)) ADD("%.0f", floor((in->min + in->max) / 2));
        if (in->type == LT_OPT_SIZE) ADD("1.5G");
        if (in->flags & LT_OPT_AUTO) ADD("auto");
        if (in->tune != LT_TUNE_NO) ADD("%.0f", in->tune_max);
        break;
    case LT_OPT_FLOAT:
        if (!in->min_open) ADD("%.17g", in->min);
        ADD("%.17g", in->min + 0.1);
        ADD("%.17g", in->min + 0.30000000000000004);
        if (isinf(in->max)) ADD("12345");
        if (in->tune != LT_TUNE_NO) ADD("%.17g", (in->tune_min + in->tune_max) / 3);
        break;
    case LT_OPT_ENUM:
        for (int i = 0; in->choices[i]; i++)
            ADD("%s", in->choices[i]);
        break;
    case LT_OPT_LIST:
        for (int i = 0; in->choices[i]; i++)
            ADD("%s", in->choices[i]);
        if (in->choices[0] && in->choices[1]) ADD("%s,%s", in->choices[1], in->choices[0]);
        ADD("all");
        break;
    case LT_OPT_LAYERS:
        ADD("3");
        ADD("2:5");
        ADD("0:1");
        ADD("all");
        break;
    }
#undef ADD
    return n;
}

/* The option table: every option round-trips set -> format -> set; defaults come from it;
 * out-of-range values and bad choices are errors naming the option and what it expects. */
static void test_table(void) {
    int n = lt_run_opt_count();
    CHECK(n >= 39 && lt_run_opt_get(n) == NULL && lt_run_opt_get(-1) == NULL, "count %d", n);
    lt_run_opts d;
    lt_run_opts_default(&d);
    for (int i = 0; i < n; i++) {
        const lt_run_opt_info *in = lt_run_opt_get(i);
        CHECK(lt_run_opt_find(in->name) == i, "%s: find", in->name);
        CHECK((in->arg == NULL) == (in->type == LT_OPT_BOOL) && in->help && in->help[0],
              "%s: arg / help", in->name);
        CHECK(in->offset + in->size <= sizeof(lt_run_opts), "%s: field", in->name);
        CHECK(((in->type == LT_OPT_ENUM || in->type == LT_OPT_LIST) == (in->choices != NULL)),
              "%s: choices", in->name);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(lt_run_opt_get(j)->name, in->name), "%s: twice", in->name);
        /* a tunable option says how to sample it, within what it accepts */
        if (in->tune == LT_TUNE_LINEAR || in->tune == LT_TUNE_LOG)
            CHECK((in->type == LT_OPT_INT || in->type == LT_OPT_FLOAT) &&
                      in->tune_min < in->tune_max && in->tune_min >= in->min &&
                      in->tune_max <= in->max && (in->tune != LT_TUNE_LOG || in->tune_min > 0),
                  "%s: search range [%g, %g] in [%g, %g]", in->name, in->tune_min, in->tune_max,
                  in->min, in->max);
        if (in->tune == LT_TUNE_CHOICE)
            CHECK(in->type == LT_OPT_ENUM || in->type == LT_OPT_LIST || in->type == LT_OPT_BOOL,
                  "%s: choice", in->name);
        /* the default text is what lt_run_opts_default set */
        char buf[LT_RUN_PATH_MAX];
        if (in->def) {
            lt_run_opts e = d;
            CHECK_OK(lt_run_opts_set(&e, in->name, in->def));
            CHECK(!memcmp(&e, &d, sizeof e), "%s: default '%s'", in->name, in->def);
            const char *f = lt_run_opt_format(&d, i, buf, sizeof buf);
            lt_run_opts g = d;
            CHECK(f && !lt_run_opts_set(&g, in->name, f) && !memcmp(&g, &d, sizeof g),
                  "%s: default formats as '%s'", in->name, f ? f : "(null)");
        }
        /* round trip of sample values */
        char vals[16][64];
        int nv = sample_values(in, vals, 16);
        for (int k = 0; k < nv; k++) {
            lt_run_opts a = d;
            lt_status st = lt_run_opts_set(&a, in->name, vals[k]);
            CHECK(st == LT_OK, "%s = '%s': %s", in->name, vals[k], lt_errmsg());
            if (st) continue;
            const char *f = lt_run_opt_format(&a, i, buf, sizeof buf);
            lt_run_opts b = a;
            CHECK(f && !lt_run_opts_set(&b, in->name, f) && !memcmp(&a, &b, sizeof a),
                  "%s: '%s' -> '%s' does not read back", in->name, vals[k], f ? f : "(null)");
        }
        /* what is refused names the option and what it expects */
        char bad[4][64];
        int nb = 0;
        switch (in->type) {
        case LT_OPT_INT:
            snprintf(bad[nb++], 64, "%.0f", in->min - 1);
            if (!isinf(in->max)) snprintf(bad[nb++], 64, "%.0f", in->max + 1);
            snprintf(bad[nb++], 64, "1.5");
            break;
        case LT_OPT_FLOAT:
            snprintf(bad[nb++], 64, "%g", in->min_open ? in->min : in->min - 1);
            if (!isinf(in->max)) snprintf(bad[nb++], 64, "%g", in->max_open ? in->max : in->max + 1);
            snprintf(bad[nb++], 64, "nan");
            break;
        case LT_OPT_ENUM:
        case LT_OPT_LIST:
        case LT_OPT_BOOL:
        case LT_OPT_LAYERS:
        case LT_OPT_SIZE:
            snprintf(bad[nb++], 64, "bogus");
            break;
        case LT_OPT_STRING:
            break;
        }
        for (int k = 0; k < nb; k++) {
            lt_run_opts a = d;
            char want[128];
            snprintf(want, sizeof want, "%s: expected ", in->name);
            CHECK_ERR(lt_run_opts_set(&a, in->name, bad[k]), LT_ERR_ARG, want);
            CHECK(strstr(lt_errmsg(), bad[k]) && !memcmp(&a, &d, sizeof a),
                  "%s = '%s': the message quotes the value, the options are unchanged: %s",
                  in->name, bad[k], lt_errmsg());
            if (in->type == LT_OPT_INT && !isinf(in->max)) {
                char range[96];
                snprintf(range, sizeof range, "[%.0f, %.0f]", in->min, in->max);
                CHECK(strstr(lt_errmsg(), range), "%s: range %s in '%s'", in->name, range,
                      lt_errmsg());
            }
            if (in->type == LT_OPT_ENUM)
                for (int c = 0; in->choices[c]; c++)
                    CHECK(strstr(lt_errmsg(), in->choices[c]), "%s: choice %s in '%s'", in->name,
                          in->choices[c], lt_errmsg());
        }
    }
    /* aliases read as their names */
    lt_run_opts a = d;
    CHECK_OK(lt_run_opts_set(&a, "base-dtype", "bfloat16"));
    CHECK_OK(lt_run_opts_set(&a, "data-format", "messages"));
    CHECK_OK(lt_run_opts_set(&a, "lora-targets", "q_proj,down_proj"));
    CHECK(a.base_dtype == LT_DTYPE_BF16 && a.data_format == LT_DATA_CHAT &&
              a.lora_targets == (LT_TARGET_Q | LT_TARGET_DOWN),
          "aliases");
    CHECK(lt_run_opt_find("--lora_rank") == lt_run_opt_find("lora-rank") &&
              lt_run_opt_find("lora-rank") >= 0 && lt_run_opt_find("nope") == -1,
          "find normalises keys");
    /* what is recorded: not resume / json; the dump of every option reads back */
    CHECK_OK(lt_run_opts_set(&a, "resume", "somewhere"));
    CHECK_OK(lt_run_opts_set(&a, "json", "true"));
    json_t *j = lt_run_opts_to_json(&a);
    CHECK(j && !json_object_get(j, "resume") && !json_object_get(j, "json") &&
              json_object_get(j, "lora-rank") && !json_object_get(j, "iters") &&
              json_object_get(j, "epochs"),
          "recorded options");
    json_decref(j);
    const lt_run_opt_info *lr = lt_run_opt_get(lt_run_opt_find("lr"));
    CHECK(lr->tune == LT_TUNE_LOG && lr->min == 0 && lr->min_open, "lr is a log-scale hyperparameter");
    const lt_run_opt_info *out = lt_run_opt_get(lt_run_opt_find("out"));
    CHECK(out->tune == LT_TUNE_NO, "out is not a hyperparameter");
}

static void test_yaml(const char *dir) {
    lt_run_opts o;
    lt_run_opts_default(&o);
    const char *cfg = write_tmp(dir, "a.yaml",
                                "# a comment\n"
                                "model: m.gguf\n"
                                "data: \"data dir\"\n"
                                "out: out\n"
                                "lora_rank: 4\n"
                                "lora-targets: [q, k, down]\n"
                                "grad-checkpoint: true\n"
                                "iters: 12\n"
                                "lr: 2e-4\n"
                                "lr_schedule: cosine\n");
    CHECK_OK(lt_run_opts_load_yaml(&o, cfg));
    CHECK(!strcmp(o.model, "m.gguf") && !strcmp(o.data, "data dir") && o.lora_rank == 4 &&
              o.lora_targets == (LT_TARGET_Q | LT_TARGET_K | LT_TARGET_DOWN) && o.grad_checkpoint &&
              o.iters == 12 && o.lr == 2e-4 && o.lr_schedule == LT_LR_COSINE,
          "yaml values");

    /* the dump reads back to the same options */
    CHECK_OK(lt_run_opts_set(&o, "valid-fraction", "0.125"));
    CHECK_OK(lt_run_opts_set(&o, "lora-alpha", "0.1"));
    CHECK_OK(lt_run_opts_set(&o, "tokenizer", "weird \"name\"\\x"));
    char *y = NULL;
    CHECK_OK(lt_run_opts_to_yaml(&o, &y));
    const char *back = write_tmp(dir, "back.yaml", y ? y : "");
    lt_run_opts o2;
    lt_run_opts_default(&o2);
    CHECK_OK(lt_run_opts_load_yaml(&o2, back));
    CHECK(same_opts(&o, &o2) && o2.lora_alpha == 0.1 && !strcmp(o2.tokenizer, o.tokenizer),
          "yaml dump reads back to the same options:\n%s", y ? y : "");
    free(y);

    /* errors: FILE:LINE, the key, what was expected */
    lt_run_opts_default(&o);
    const char *bad = write_tmp(dir, "bad.yaml", "model: m\nlora-rank: many\n");
    CHECK_ERR(lt_run_opts_load_yaml(&o, bad), LT_ERR_ARG,
              "bad.yaml:2: lora-rank: expected an integer");
    const char *unk = write_tmp(dir, "unk.yaml", "model: m\n\nlearning_rate: 1e-4\n");
    CHECK_ERR(lt_run_opts_load_yaml(&o, unk), LT_ERR_ARG,
              "unk.yaml:3: unknown option 'learning-rate'");
    const char *res = write_tmp(dir, "res.yaml", "resume: x\n");
    CHECK_ERR(lt_run_opts_load_yaml(&o, res), LT_ERR_ARG,
              "res.yaml:1: option 'resume' is not allowed");
    const char *lst = write_tmp(dir, "lst.yaml", "- model\n- data\n");
    CHECK_ERR(lt_run_opts_load_yaml(&o, lst), LT_ERR_FORMAT, "lst.yaml:1: expected a mapping");
    const char *nest = write_tmp(dir, "nest.yaml", "lr: {a: 1}\n");
    CHECK_ERR(lt_run_opts_load_yaml(&o, nest), LT_ERR_FORMAT,
              "nest.yaml:1: lr: expected a single value");
    const char *syn = write_tmp(dir, "syn.yaml", "lr: 1\nseed: \"42\n");
    CHECK_ERR(lt_run_opts_load_yaml(&o, syn), LT_ERR_FORMAT,
              "syn.yaml:3: YAML: found unexpected end of stream");
    CHECK_ERR(lt_run_opts_load_yaml(&o, "/nonexistent/x.yaml"), LT_ERR_IO, "/nonexistent/x.yaml");
}

static void test_schedules(void) {
    json_error_t je;
    json_t *g = json_load_file(lt_srcpath("tests/data/run/lr_schedules.json"), 0, &je);
    CHECK(g != NULL, "golden: %s", je.text);
    if (!g) return;
    size_t i;
    json_t *c;
    int n_cases = 0;
    json_array_foreach(json_object_get(g, "cases"), i, c) {
        const char *name = json_string_value(json_object_get(c, "schedule"));
        lt_lr_schedule s = !strcmp(name, "constant") ? LT_LR_CONSTANT
                           : !strcmp(name, "linear") ? LT_LR_LINEAR
                                                     : LT_LR_COSINE;
        double lr = json_number_value(json_object_get(c, "lr"));
        int64_t w = json_integer_value(json_object_get(c, "warmup"));
        int64_t tot = json_integer_value(json_object_get(c, "total"));
        json_t *lrs = json_object_get(c, "lrs");
        double worst = 0;
        for (size_t k = 0; k < json_array_size(lrs); k++) {
            double want = json_number_value(json_array_get(lrs, k));
            double got = lr * lt_lr_lambda(s, (int64_t)k, w, tot);
            double d = fabs(got - want) / (lr);
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-15 && json_array_size(lrs) == (size_t)tot,
              "%s lr %g warmup %lld total %lld: max |diff|/lr %g", name, lr, (long long)w,
              (long long)tot, worst);
        n_cases++;
    }
    CHECK(n_cases >= 10, "golden cases: %d", n_cases);
    json_decref(g);
}

/* --base-dtype auto through lt_run_opts_train_config (what a run builds its trainer from): bf16
 * exactly for LoRA with bf16 products over a checkpoint stored in bf16; an asked dtype as
 * asked. The expected values are the rule of docs/TRAIN_CLI.md, not read back from the code. */
static void test_base_auto(void) {
    lt_model_config mc = {.arch = LT_ARCH_LLAMA, .dim = 64, .n_layers = 2, .n_heads = 4,
                          .n_kv_heads = 2, .head_dim = 16, .ffn_dim = 172, .vocab_size = 512,
                          .max_seq_len = 256, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                          .bos_id = -1, .eos_id = -1};
    enum { UNSTATED = -1 };
    static const struct {
        const char *method, *compute, *base;
        int stored; /* the checkpoint's stated dtype */
        lt_dtype want;
    } k[] = {
        {"lora", "bf16", "auto", LT_DTYPE_BF16, LT_DTYPE_BF16},
        {"lora", "bf16", "auto", LT_DTYPE_F32, LT_DTYPE_F32},
        {"lora", "bf16", "auto", LT_DTYPE_Q4_1, LT_DTYPE_F32},
        {"lora", "bf16", "auto", UNSTATED, LT_DTYPE_F32},
        {"lora", "f32", "auto", LT_DTYPE_BF16, LT_DTYPE_F32},
        {"dora", "bf16", "auto", LT_DTYPE_BF16, LT_DTYPE_F32},
        {"full", "bf16", "auto", LT_DTYPE_BF16, LT_DTYPE_F32},
        {"qlora", "bf16", "auto", LT_DTYPE_BF16, LT_DTYPE_F32},
        {"lora", "bf16", "f32", LT_DTYPE_BF16, LT_DTYPE_F32},
        {"lora", "f32", "bf16", LT_DTYPE_F32, LT_DTYPE_BF16},
        {"lora", "bf16", "f16", LT_DTYPE_BF16, LT_DTYPE_F16},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        lt_run_opts o;
        lt_train_config tc;
        lt_run_opts_default(&o);
        mc.dtype_stated = k[i].stored != UNSTATED;
        mc.dtype = mc.dtype_stated ? (lt_dtype)k[i].stored : LT_DTYPE_F32;
        CHECK_OK(lt_run_opts_set(&o, "method", k[i].method));
        CHECK_OK(lt_run_opts_set(&o, "compute-dtype", k[i].compute));
        CHECK_OK(lt_run_opts_set(&o, "base-dtype", k[i].base));
        CHECK_OK(lt_run_opts_train_config(&o, &mc, &tc, NULL));
        CHECK(tc.base_dtype == k[i].want,
              "case %zu: method %s, compute %s, base %s: base dtype %d, want %d", i, k[i].method,
              k[i].compute, k[i].base, (int)tc.base_dtype, (int)k[i].want);
    }
}

int main(void) {
    const char *dir = lt_tmpdir();
    test_base_auto();
    test_set();
    test_table();
    test_yaml(dir);
    test_schedules();
    char file[256];
    CHECK_ERR(lt_checkpoint_resolve(dir, file, sizeof file), LT_ERR_NOTFOUND, "no checkpoint");
    LT_TEST_END();
}
