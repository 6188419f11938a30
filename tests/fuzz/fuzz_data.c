/* fuzz_data.c - training data records (lt_data_open on one .jsonl / .json file: format
 * detection, each record's JSON, UTF-8, fields, roles, tools, duplicate keys), twice: a
 * structure-only check (no tokenizer, what `data check` does without --model) and with
 * stories260K's sentencepiece tokenizer and the ChatML template (tokenizing, loss masks,
 * truncation at a small max_seq_len), then the batcher over what was read. Seeds: the
 * record files of tests/data/datasets and a few lines of each fixture dataset. */
#include "fuzz_util.h"
#include "loratune/chat.h"
#include "loratune/data.h"
#include "loratune/tokenizer.h"

static lt_tokenizer *tok;
static lt_chat_template *tpl;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char *j = NULL;
    size_t n = 0;
    if (lt_tokenizer_load_spm(fz_fixture("stories260K/tok512.model"), &tok) ||
        lt_file_read_all(LT_SOURCE_DIR "/tests/data/chat_templates/chatml.jinja", &j, &n) ||
        lt_chat_template_from_string(j, n, &tpl) ||
        lt_chat_template_set_special(tpl, "<s>", "</s>")) {
        fprintf(stderr, "fuzz_data: %s\n", lt_errmsg());
        abort();
    }
    free(j);
    return 0;
}

static void open_and_batch(const char *path, const lt_tokenizer *t) {
    lt_data_opts o;
    lt_data_opts_default(&o);
    o.max_seq_len = 64;
    lt_data *d = NULL;
    lt_status s = lt_data_open(path, t, tpl, &o, &d);
    if (s) {
        fz_refused(s, "lt_data_open");
        FZ_CHECK(d == NULL, "no data after an error");
        return;
    }
    lt_data_summary sum;
    for (int sp = 0; sp < LT_SPLIT_COUNT; sp++)
        if (lt_data_summary_get(d, (lt_split)sp, &sum) == LT_OK)
            FZ_CHECK(sum.n_examples >= 0 && sum.n_tokens >= 0, "a summary's counts");
    if (t) {
        lt_batcher_opts bo = {0};
        bo.batch_size = 2;
        bo.seq_len = 64;
        lt_batcher *b = NULL;
        if (lt_batcher_create(d, LT_SPLIT_TRAIN, &bo, &b) == LT_OK) {
            lt_batch batch;
            for (int i = 0; i < 4 && lt_batcher_next(b, &batch) == LT_OK; i++) {
            }
            lt_batcher_free(b);
        }
    }
    lt_data_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r'))
        i++;
    /* a JSON list is read from a .json file, records from .jsonl */
    const char *path =
        fz_write(i < size && data[i] == '[' ? "train.json" : "train.jsonl", data, size);
    open_and_batch(path, NULL);
    open_and_batch(path, tok);
    return 0;
}
