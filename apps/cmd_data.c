/* cmd_data.c - `loratune data SUBCOMMAND`: work on fine-tuning data.
 *
 * Subcommands come from the k_data_commands table below: to add one (e.g. `data add`), write
 * `static int data_xxx(int argc, char **argv)` (argv starts at the subcommand's name) or
 * declare one from another file in commands.h, and add one line to the table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "loratune/chat.h"
#include "loratune/data.h"
#include "loratune/model.h"
#include "loratune/rank_hint.h"
#include "loratune/tokenizer.h"

static void check_usage(FILE *f) {
    fprintf(
        f, "usage: loratune data check DATA [--model MODEL] [--tokenizer FILE]\n"
           "                           [--data-format F] [--max-seq-len N] [--train-on-prompt]\n"
           "                           [--valid-fraction X] [--seed S] [--json] [--tokens]\n\n"
           "Reads and validates DATA (a folder with train.jsonl and optional valid.jsonl /\n"
           "test.jsonl, or one .jsonl / .json file split into train / valid), and prints a\n"
           "summary per split: examples, tokens, tokens in the loss, length histogram,\n"
           "examples that will be truncated. Errors name FILE:LINE and the field.\n\n"
           "  --model MODEL        tokenize with MODEL's tokenizer and chat template (a Hugging\n"
           "                       Face folder or .gguf); without it, structure only (lengths\n"
           "                       in characters)\n"
           "  --tokenizer FILE     another tokenizer (tokenizer.json, .model, .gguf)\n"
           "  --data-format F      auto (default), text, completions, chat, alpaca, sharegpt\n"
           "  --max-seq-len N      truncate examples to N tokens (default 2048)\n"
           "  --train-on-prompt    loss on every token, not only the completion / assistant turns\n"
           "  --valid-fraction X   single file: fraction held out for validation (default 0.1)\n"
           "  --seed S             single file: seed of the split (default 42)\n"
           "  --json               the summary as one JSON object\n"
           "  --tokens             with --json: also every example's tokens and loss mask\n");
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void print_json(const lt_data *d, const lt_chat_template *tpl, int with_tokens,
                       int max_seq_len, const lt_rank_hint *rh) {
    printf("{\"format\": \"%s\", \"max_seq_len\": %d, \"chat_template\": ",
           lt_data_format_name(lt_data_get_format(d)), max_seq_len);
    if (tpl)
        json_str(stdout, lt_chat_template_name(tpl));
    else
        printf("null");
    printf(", \"splits\": {");
    int first = 1;
    for (int s = 0; s < LT_SPLIT_COUNT; s++) {
        lt_data_summary m;
        if (lt_data_summary_get(d, (lt_split)s, &m)) continue;
        printf("%s\"%s\": {\"source\": ", first ? "" : ", ", lt_split_name((lt_split)s));
        first = 0;
        json_str(stdout, m.source);
        printf(", \"examples\": %lld, \"unit\": \"%s\", \"min_len\": %d, \"mean_len\": %.3f, "
               "\"max_len\": %d",
               (long long)m.n_examples, m.counts_tokens ? "tokens" : "characters", m.min_len,
               m.mean_len, m.max_len);
        if (m.counts_tokens)
            printf(", \"tokens\": %lld, \"loss_tokens\": %lld, \"truncated\": %lld, "
                   "\"no_loss\": %lld, \"mask_fallback\": %lld",
                   (long long)m.n_tokens, (long long)m.n_loss_tokens, (long long)m.n_truncated,
                   (long long)m.n_no_loss, (long long)m.n_mask_fallback);
        printf(", \"histogram\": [");
        for (int b = 0; b < m.n_buckets; b++)
            printf("%s{\"from\": %d, \"to\": %d, \"examples\": %lld}", b ? ", " : "",
                   m.hist_edges[b], m.hist_edges[b + 1], (long long)m.hist[b]);
        printf("]");
        if (with_tokens && m.counts_tokens) {
            printf(", \"examples_detail\": [");
            for (int64_t i = 0; i < lt_data_count(d, (lt_split)s); i++) {
                const lt_example *e = lt_data_example(d, (lt_split)s, i);
                printf("%s{\"line\": %lld, \"n_orig\": %d, \"tokens\": [", i ? ", " : "",
                       (long long)e->line, e->n_orig);
                for (int t = 0; t < e->n; t++)
                    printf("%s%d", t ? "," : "", e->tokens[t]);
                printf("], \"mask\": [");
                for (int t = 0; t < e->n; t++)
                    printf("%s%d", t ? "," : "", e->mask[t]);
                printf("]}");
            }
            printf("]");
        }
        printf("}");
    }
    printf("}");
    if (rh) {
        printf(", \"rank_suggestion\": {\"rank\": %d, \"cap\": %d, \"params_per_rank\": %lld, "
               "\"loss_tokens\": %lld, \"examples\": %lld, \"short_of_data\": %s, \"reason\": ",
               rh->rank, rh->cap, (long long)rh->params_per_rank, (long long)rh->loss_tokens,
               (long long)rh->examples, rh->short_of_data ? "true" : "false");
        json_str(stdout, rh->reason);
        printf("}");
    }
    printf("}\n");
}

static int data_check(int argc, char **argv) {
    const char *data = NULL, *model = NULL, *tok_path = NULL;
    int json = 0, with_tokens = 0;
    lt_data_opts o;
    lt_data_opts_default(&o);
    if (lt_cli_wants_help(argc, argv)) {
        check_usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--tokens")) {
            with_tokens = 1;
            continue;
        }
        if (!strcmp(a, "--train-on-prompt")) {
            o.train_on_prompt = 1;
            continue;
        }
        if (a[0] != '-') {
            if (data) {
                fprintf(stderr, "loratune data check: one DATA path only (got '%s' and '%s')\n",
                        data, a);
                return 2;
            }
            data = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "loratune data check: unknown or incomplete option '%s'\n\n", a);
            check_usage(stderr);
            return 2;
        }
        i++;
        long lv;
        double dv;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--tokenizer"))
            tok_path = v;
        else if (!strcmp(a, "--data-format")) {
            if (lt_data_format_parse(v, &o.format)) {
                fprintf(stderr, "loratune data check: --data-format: %s\n", lt_errmsg());
                return 2;
            }
        } else if (!strcmp(a, "--max-seq-len")) {
            if (lt_cli_parse_int("data check", a, v, &lv)) return 2;
            if (lv < 2 || lv > 1 << 24) {
                fprintf(stderr, "loratune data check: --max-seq-len: expected 2..16777216\n");
                return 2;
            }
            o.max_seq_len = (int)lv;
        } else if (!strcmp(a, "--valid-fraction")) {
            if (lt_cli_parse_float("data check", a, v, &dv)) return 2;
            if (!(dv >= 0 && dv < 1)) {
                fprintf(stderr, "loratune data check: --valid-fraction: expected [0, 1)\n");
                return 2;
            }
            o.valid_fraction = dv;
        } else if (!strcmp(a, "--seed")) {
            if (lt_cli_parse_int("data check", a, v, &lv)) return 2;
            o.seed = (uint64_t)lv;
        } else {
            fprintf(stderr, "loratune data check: unknown option '%s'\n\n", a);
            check_usage(stderr);
            return 2;
        }
    }
    if (!data) {
        fprintf(stderr, "loratune data check: DATA is required\n\n");
        check_usage(stderr);
        return 2;
    }
    if (tok_path && !model) model = NULL; /* a tokenizer alone: no chat template */
    int rc = 1;
    lt_tokenizer *tok = NULL;
    lt_chat_template *tpl = NULL;
    lt_data *d = NULL;
    if (model || tok_path) {
        if (lt_tokenizer_load(tok_path ? tok_path : model, &tok)) goto fail;
        if (model) {
            lt_status st = lt_model_chat_template(model, tok, &tpl);
            if (st && st != LT_ERR_NOTFOUND) goto fail;
        }
    }
    if (lt_data_open(data, tok, tpl, &o, &d)) goto fail;
    /* with a model: the LoRA rank its train split suggests (rank_hint.h) */
    lt_rank_hint rh, *rhp = NULL;
    lt_data_summary tr;
    if (model && tok && lt_data_summary_get(d, LT_SPLIT_TRAIN, &tr) == LT_OK) {
        lt_model *m = NULL;
        lt_model_load_opts lo = {.lazy = 1};
        if (lt_model_load(model, &lo, &m) == LT_OK) { /* not a tokenizer-only folder */
            lt_rank_hint_compute(&m->config, tr.n_loss_tokens, tr.n_examples, &rh);
            rhp = &rh;
        }
        lt_model_free(m);
    }
    if (json)
        print_json(d, tpl, with_tokens, o.max_seq_len, rhp);
    else {
        if (!tok) printf("structure only (no --model): lengths are in characters\n");
        if (tpl && lt_data_get_format(d) != LT_DATA_TEXT)
            printf("chat template: %s (%s)\n", lt_chat_template_name(tpl),
                   lt_chat_template_is_exact(tpl)        ? "exact match"
                   : lt_chat_template_is_recognised(tpl) ? "family guess: check the rendering"
                                                         : "unrecognised: generic ChatML");
        lt_data_summary_print(d, stdout);
        if (rhp) printf("rank suggestion (LoRA): %d: %s\n", rhp->rank, rhp->reason);
        printf("ok\n");
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "loratune data check: %s\n", lt_errmsg());
done:
    lt_data_free(d);
    lt_chat_template_free(tpl);
    lt_tokenizer_free(tok);
    return rc;
}

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} data_command;

/* One line per subcommand. */
static const data_command k_data_commands[] = {
    {"check", data_check, "validate DATA and print its summary (examples, tokens, lengths)"},
    {"add", data_add, "version FILE|DIR in the DVC cache and write FILE.dvc (as dvc add)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: loratune data SUBCOMMAND [options]   (loratune data SUBCOMMAND --help)\n\n"
               "subcommands:\n");
    for (size_t i = 0; i < sizeof k_data_commands / sizeof k_data_commands[0]; i++)
        fprintf(f, "  %-8s %s\n", k_data_commands[i].name, k_data_commands[i].help);
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_data_commands / sizeof k_data_commands[0]; i++)
        if (!strcmp(argv[1], k_data_commands[i].name))
            return k_data_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "loratune data: unknown subcommand '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
