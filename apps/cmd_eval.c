/* cmd_eval.c - `loratune eval`: loss and perplexity of a model (optionally with an adapter) on a
 * data split, through the same lt_run code the training loop validates with (same batches,
 * same trainer forward, no dropout). Without --adapter the trainer carries a LoRA whose B is
 * zero, so the numbers are the base model's exactly. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/model.h"
#include "loratune/run.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: loratune eval --model MODEL --data FILE|DIR [--adapter PATH] [options]\n\n"
            "Mean token loss and perplexity over a data split (loss tokens as in training:\n"
            "completions / assistant turns unless --train-on-prompt).\n"
            "  --model MODEL          Hugging Face folder, .gguf, or llama2.c .bin\n"
            "  --tokenizer PATH       tokenizer, when not with the model\n"
            "  --adapter PATH         a LoRA / DoRA adapter: a PEFT or mlx-lm folder (or its\n"
            "                         .safetensors file), or a llama.cpp adapter .gguf\n"
            "  --data FILE|DIR        a data file, or a folder with train/valid/test.jsonl\n"
            "  --split S              train|valid|test (default: a folder's test split, else\n"
            "                         valid; all of a single file)\n"
            "  --data-format F        auto|text|completions|chat|alpaca|sharegpt\n"
            "  --batch-size N|auto    rows per batch (default auto: the largest whose memory plan\n"
            "                         fits --memory-budget, at most 64 and at most the examples\n"
            "                         of the train split (of the file, for a single file))\n"
            "  --max-seq-len N|auto   tokens per row, longer examples truncated (default auto:\n"
            "                         the longest train / valid example, capped by the model's\n"
            "                         context and by --memory-budget)\n"
            "  --memory-budget SIZE   what the automatic sizes may plan for (6G, 800M, bytes;\n"
            "                         default 80%% of the RAM available at start)\n"
            "  --pack                 pack examples into rows (same loss, fewer padded tokens)\n"
            "  --train-on-prompt      count prompt tokens too\n"
            "  --eval-batches N       only the first N batches (default all)\n"
            "  --base-dtype D         f32|bf16|f16 (default f32)\n"
            "  --compute-dtype D      auto|f32|bf16: precision of the products (default auto:\n"
            "                         bf16 on CPUs with avx512_bf16 / amx_bf16)\n"
            "  --threads N            OpenMP / OpenBLAS threads\n"
            "  --json                 print one JSON object\n");
}

int cmd_eval(int argc, char **argv) {
    if (lt_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    static const char *allowed[] = {
        "model",       "tokenizer", "adapter",         "data",         "data-format", "batch-size",
        "max-seq-len", "pack",      "train-on-prompt", "eval-batches", "base-dtype",  "threads",
        "json",        "seed",      "memory-budget",   "compute-dtype", "device"};
    lt_run_opts o;
    lt_run_opts_default(&o);
    const char *split = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--split")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loratune eval: --split: missing value\n");
                return 2;
            }
            split = argv[++i];
            if (strcmp(split, "train") && strcmp(split, "valid") && strcmp(split, "test")) {
                fprintf(stderr, "loratune eval: --split: expected train, valid or test, got '%s'\n",
                        split);
                return 2;
            }
            continue;
        }
        int ok = 0;
        for (size_t k = 0; k < sizeof allowed / sizeof *allowed; k++)
            if (!strncmp(a, "--", 2) && !strcmp(a + 2, allowed[k])) ok = 1;
        if (!ok) {
            fprintf(stderr, "loratune eval: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = "true";
        if (!lt_run_opt_is_flag(a)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loratune eval: %s: missing value\n", a);
                return 2;
            }
            v = argv[++i];
        }
        if (lt_run_opts_set(&o, a, v)) {
            fprintf(stderr, "loratune eval: --%s\n", lt_errmsg());
            return 2;
        }
    }
    if (!o.model[0] || !o.data[0]) {
        fprintf(stderr, "loratune eval: --model and --data are required\n\n");
        usage(stderr);
        return 2;
    }
    int single_file = !lt_path_is_dir(o.data);
    if (single_file) o.valid_fraction = 0; /* evaluate the whole file */
    o.eval_every = 0;
    o.keep_blas_threads = getenv("LT_TWO_POOLS") != NULL; /* A/B measurements (docs/OPS.md) */
    if (o.threads > 0) lt_set_num_threads(o.threads);     /* OpenBLAS's count is process-wide */
    lt_run *r = NULL;
    if (lt_run_create(&o, &r)) {
        fprintf(stderr, "loratune eval: %s\n", lt_errmsg());
        return 1;
    }
    lt_split sp;
    if (split)
        sp = !strcmp(split, "train")   ? LT_SPLIT_TRAIN
             : !strcmp(split, "valid") ? LT_SPLIT_VALID
                                       : LT_SPLIT_TEST;
    else if (single_file)
        sp = LT_SPLIT_TRAIN;
    else
        sp = lt_data_count(lt_run_data(r), LT_SPLIT_TEST) > 0 ? LT_SPLIT_TEST : LT_SPLIT_VALID;
    if (single_file && split && sp != LT_SPLIT_TRAIN) {
        fprintf(stderr, "loratune eval: --split: a single file is evaluated whole; drop --split\n");
        lt_run_free(r);
        return 2;
    }
    lt_eval_result ev;
    int rc = 0;
    if (lt_run_evaluate(r, sp, o.eval_batches, &ev)) {
        fprintf(stderr, "loratune eval: %s\n", lt_errmsg());
        rc = 1;
    } else {
        const char *sname = single_file ? "all" : lt_split_name(sp);
        int64_t nex = lt_data_count(lt_run_data(r), sp);
        if (o.json) {
            json_t *j =
                json_pack("{s:s, s:s, s:f, s:f, s:f, s:I, s:I, s:I, s:s}", "event", "eval", "split",
                          sname, "loss", ev.loss, "ppl", ev.ppl, "loss_sum", ev.loss_sum, "tokens",
                          (json_int_t)ev.tokens, "batches", (json_int_t)ev.batches, "examples",
                          (json_int_t)nex, "data", o.data);
            if (o.adapter[0]) json_object_set_new(j, "adapter", json_string(o.adapter));
            lt_cli_stream out;
            lt_cli_stream_init(&out, "eval");
            if (lt_cli_stream_json(&out, j)) rc = LT_CLI_EXIT_STREAM_BROKE;
            json_decref(j);
        } else {
            printf("%s (%s, %lld examples, %lld loss tokens): loss %.4f  ppl %.3f\n", o.data, sname,
                   (long long)nex, (long long)ev.tokens, ev.loss, ev.ppl);
        }
    }
    lt_run_free(r);
    return rc;
}
