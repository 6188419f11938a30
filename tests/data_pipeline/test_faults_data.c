/* test_faults_data.c - allocation fault injection over data loading (tests/lt_fault.h): for
 * N = 1, 2, ... the N-th allocation fails while lt_data_open reads, validates, renders and
 * tokenizes a data set and lt_batcher_create / lt_batcher_next cut it into micro-batches; each
 * failure must come back as LT_ERR_NOMEM with a message, with no crash and no leak
 * (LeakSanitizer in the ASan build), until N is past the last allocation and it all succeeds
 * with the same examples as a run without faults.
 *
 * Data (SmolLM's tokenizer.json cut to 256 merges, loaded afresh before every run so that no
 * tokenizer cache carries over, and the SmolLM2 chat template; neither is walked here):
 *   - wikisql-mlx valid.jsonl (100 text records, one file: split train / valid), batched padded
 *     and packed: ~5,000 allocations; every N to 200, then a stride (600 runs in all);
 *   - a folder of chat records (system, multi-turn) with train.jsonl + valid.jsonl, and one
 *     small file of each other format (completions, Alpaca as a JSON list, ShareGPT): every N
 *     (350-550 allocations).
 * Then the persistent variant (every allocation from N on fails) of the chat folder, every N. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/chat.h"
#include "loratune/data.h"
#include "loratune/tokenizer.h"
#include "lt_fault.h"
#include "lt_test.h"

typedef struct {
    const char *name;
    char path[1024];
    const char *tok_path;
    lt_tokenizer *tok; /* loaded by setup, freed by teardown */
    const lt_chat_template *tpl;
    int max_seq_len;
    int64_t n_tokens; /* of every split, from the run without faults (0: not known yet) */
} data_case;

static int64_t total_tokens(const lt_data *d) {
    int64_t n = 0;
    for (int s = 0; s < LT_SPLIT_COUNT; s++)
        for (int64_t i = 0; i < lt_data_count(d, (lt_split)s); i++)
            n += lt_data_example(d, (lt_split)s, i)->n;
    return n;
}

static lt_status setup(void *ctx) {
    data_case *c = ctx;
    return lt_tokenizer_load(c->tok_path, &c->tok);
}
static void teardown(void *ctx) {
    data_case *c = ctx;
    lt_tokenizer_free(c->tok);
    c->tok = NULL;
}

static lt_status open_and_batch(void *ctx) {
    data_case *c = ctx;
    lt_data_opts o;
    lt_data_opts_default(&o);
    o.max_seq_len = c->max_seq_len;
    o.valid_fraction = 0.2;
    lt_data *d = NULL;
    lt_status st = lt_data_open(c->path, c->tok, c->tpl, &o, &d);
    for (int s = 0; !st && s < LT_SPLIT_COUNT; s++) {
        if (lt_data_count(d, (lt_split)s) == 0) continue;
        lt_batcher_opts bo = {3, c->max_seq_len, s == LT_SPLIT_VALID, s == LT_SPLIT_TRAIN, 7};
        lt_batcher *b = NULL;
        if ((st = lt_batcher_create(d, (lt_split)s, &bo, &b))) break;
        for (int64_t i = 0, n = lt_batcher_epoch_batches(b); !st && i < n; i++) {
            lt_batch mb;
            st = lt_batcher_next(b, &mb);
        }
        lt_batcher_free(b);
    }
    if (!st) {
        int64_t n = total_tokens(d);
        if (c->n_tokens && n != c->n_tokens)
            st = lt_error(LT_ERR_INTERNAL, "%lld tokens, %lld without faults", (long long)n,
                          (long long)c->n_tokens);
        c->n_tokens = n;
    }
    lt_data_free(d);
    return st;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "%s: cannot write", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static const char *k_chat =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"You answer in SQL.\"}, {\"role\": "
    "\"user\", \"content\": \"How many players are there?\"}, {\"role\": \"assistant\", "
    "\"content\": \"SELECT COUNT(*) FROM players\"}]}\n"
    "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
    "\"content\": \"Hello! How can I help?\"}, {\"role\": \"user\", \"content\": \"Name a "
    "colour.\"}, {\"role\": \"assistant\", \"content\": \"Blue.\"}]}\n"
    "{\"messages\": [{\"role\": \"user\", \"content\": \"Caf\\u00e9 or tea? \\ud83d\\ude00\"}, "
    "{\"role\": \"assistant\", \"content\": \"Tea, thank you.\"}]}\n";
static const char *k_chat_valid =
    "{\"messages\": [{\"role\": \"user\", \"content\": \"2 + 2?\"}, {\"role\": \"assistant\", "
    "\"content\": \"4\"}]}\n";
static const char *k_completions =
    "{\"prompt\": \"The capital of France is\", \"completion\": \" Paris.\"}\n"
    "{\"prompt\": \"One, two,\", \"completion\": \" three.\"}\n"
    "{\"prompt\": \"Red, green,\", \"completion\": \" blue.\"}\n";
static const char *k_alpaca =
    "[{\"instruction\": \"Add the numbers.\", \"input\": \"2 and 3\", \"output\": \"5\"},\n"
    " {\"instruction\": \"Say hello.\", \"output\": \"Hello.\", \"system\": \"Be brief.\"},\n"
    " {\"instruction\": \"Name a fruit.\", \"input\": \"\", \"output\": \"An apple.\"}]\n";
static const char *k_sharegpt =
    "{\"conversations\": [{\"from\": \"human\", \"value\": \"Hi there\"}, {\"from\": \"gpt\", "
    "\"value\": \"Hello!\"}]}\n"
    "{\"conversations\": [{\"from\": \"system\", \"value\": \"Be terse.\"}, {\"from\": "
    "\"human\", \"value\": \"Why?\"}, {\"from\": \"gpt\", \"value\": \"Because.\"}]}\n"
    "{\"conversations\": [{\"from\": \"human\", \"value\": \"Count to 3\"}, {\"from\": \"gpt\", "
    "\"value\": \"1 2 3\"}]}\n";

int main(void) {
    const char *dir = lt_fault_tmpdir();
    lt_chat_template *tpl = NULL;
    char *jinja = NULL;
    size_t jlen = 0;
    char tok[1200];
    snprintf(tok, sizeof tok, "%s/smollm-cut.json", dir);
    lt_fault_cut_tokenizer(lt_fixture("tokenizers/smollm/tokenizer.json"), tok, 256);
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/chat_templates/smollm2-instruct.jinja"),
                              &jinja, &jlen));
    CHECK_OK(lt_chat_template_from_string(jinja, jlen, &tpl));
    free(jinja);
    if (!tpl) LT_TEST_END();

    char p[1200];
    snprintf(p, sizeof p, "%s/chat", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/chat/train.jsonl", dir);
    write_file(p, k_chat);
    snprintf(p, sizeof p, "%s/chat/valid.jsonl", dir);
    write_file(p, k_chat_valid);
    snprintf(p, sizeof p, "%s/completions.jsonl", dir);
    write_file(p, k_completions);
    snprintf(p, sizeof p, "%s/alpaca.json", dir);
    write_file(p, k_alpaca);
    snprintf(p, sizeof p, "%s/sharegpt.jsonl", dir);
    write_file(p, k_sharegpt);

    data_case cases[] = {
        {"wikisql valid.jsonl", "", tok, NULL, tpl, 64, 0},
        {"chat folder", "", tok, NULL, tpl, 24, 0}, /* 24: some turns are truncated */
        {"completions", "", tok, NULL, tpl, 64, 0},
        {"alpaca (JSON list)", "", tok, NULL, tpl, 64, 0},
        {"sharegpt", "", tok, NULL, tpl, 64, 0},
    };
    snprintf(cases[0].path, sizeof cases[0].path, "%s",
             lt_fixture("datasets/wikisql-mlx/valid.jsonl"));
    snprintf(cases[1].path, sizeof cases[1].path, "%s/chat", dir);
    snprintf(cases[2].path, sizeof cases[2].path, "%s/completions.jsonl", dir);
    snprintf(cases[3].path, sizeof cases[3].path, "%s/alpaca.json", dir);
    snprintf(cases[4].path, sizeof cases[4].path, "%s/sharegpt.jsonl", dir);

    for (int persistent = 0; persistent <= 1; persistent++) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            if (persistent && i != 1) continue; /* the chat folder only */
            lt_fault_plan pl = {LT_FAULT_ALLOC,        0, 0, persistent, i == 0 ? 200 : 1000000,
                                i == 0 ? 600 : 1000000};
            char name[96];
            snprintf(name, sizeof name, "data %s%s", cases[i].name,
                     persistent ? " (persistent)" : "");
            lt_fault_ops ops = {setup, open_and_batch, NULL, teardown};
            lt_fault_walk(name, &pl, &ops, &cases[i]);
        }
    }
    lt_chat_template_free(tpl);
    lt_fault_rmtree(dir);
    LT_TEST_END();
}
