/* test_pack_loss.c - packing changes nothing but the layout: the trainer's loss over an epoch of
 * packed rows (several examples per row, per-example positions and sequence ids) equals the
 * loss over the same examples one per row, and equals the sum over each example evaluated
 * alone. Real model: stories260K (llama2.c) with its 512-token tokenizer; text data. */
#include <math.h>
#include <stdio.h>

#include "loratune/data.h"
#include "loratune/model.h"
#include "loratune/tokenizer.h"
#include "loratune/train.h"
#include "lt_test.h"

static double epoch_loss(lt_trainer *tr, const lt_data *d, const lt_batcher_opts *bo,
                         int64_t *count) {
    lt_batcher *b = NULL;
    CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, bo, &b));
    double sum = 0;
    *count = 0;
    if (!b) return NAN;
    for (int64_t k = 0; k < lt_batcher_epoch_batches(b); k++) {
        lt_batch x;
        lt_loss_stats ls;
        CHECK_OK(lt_batcher_next(b, &x));
        CHECK_OK(lt_trainer_eval(tr, &x, &ls));
        sum += ls.loss_sum;
        *count += ls.count;
    }
    lt_batcher_free(b);
    return sum;
}

int main(void) {
    const char *dir = lt_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    FILE *f = fopen(path, "w");
    static const char *const texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        "She liked to play outside with her dog.",
        "One day, the sun was very hot and they went to the park.",
        "Tom had a big red ball.",
        "The cat sat on the mat and looked at the bird.",
        "They were happy and played all day long. The end.",
        "Mom said, \\\"Be careful!\\\"", /* JSON-escaped quotes */
        "Ben and Sue found a shiny stone near the river, and they wanted to keep it forever.",
        "The little tree was sad.",
        "He ran fast.",
        "Once there was a boy who loved to draw pictures of the sky and the big yellow sun.",
    };
    int n_texts = (int)(sizeof texts / sizeof texts[0]);
    for (int i = 0; i < n_texts; i++)
        fprintf(f, "{\"text\": \"%s\"}\n", texts[i]);
    fclose(f);

    lt_tokenizer *tok = NULL;
    lt_model *m = NULL;
    CHECK_OK(lt_tokenizer_load(lt_fixture("stories260K/tok512.model"), &tok));
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.bin"), NULL, &m));
    if (!tok || !m) LT_TEST_END();
    lt_data_opts o;
    lt_data_opts_default(&o);
    o.max_seq_len = 64;
    lt_data *d = NULL;
    CHECK_OK(lt_data_open(dir, tok, NULL, &o, &d));
    if (!d) LT_TEST_END();

    lt_train_config c;
    lt_train_config_default(&c);
    c.batch_size = 4;
    c.seq_len = 64;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_create(m, &c, &tr));
    if (!tr) LT_TEST_END();

    lt_batcher_opts one = {.batch_size = 1, .seq_len = 64, .pack = 0, .shuffle = 0, .seed = 1};
    lt_batcher_opts unp = {.batch_size = 4, .seq_len = 64, .pack = 0, .shuffle = 1, .seed = 5};
    lt_batcher_opts pk = {.batch_size = 2, .seq_len = 64, .pack = 1, .shuffle = 1, .seed = 5};
    int64_t n1, n2, n3;
    double l1 = epoch_loss(tr, d, &one, &n1); /* each example alone */
    double l2 = epoch_loss(tr, d, &unp, &n2);
    double l3 = epoch_loss(tr, d, &pk, &n3);
    lt_data_summary s;
    CHECK_OK(lt_data_summary_get(d, LT_SPLIT_TRAIN, &s));
    CHECK(n1 == s.n_loss_tokens && n2 == n1 && n3 == n1,
          "counted %lld / %lld / %lld, loss tokens %lld", (long long)n1, (long long)n2,
          (long long)n3, (long long)s.n_loss_tokens);
    CHECK(fabs(l2 - l1) <= 1e-5 * fabs(l1), "padded batches %.6f vs alone %.6f", l2, l1);
    CHECK(fabs(l3 - l1) <= 1e-5 * fabs(l1), "packed rows %.6f vs alone %.6f", l3, l1);
    printf("loss sum alone %.6f, padded %.6f, packed %.6f over %lld tokens\n", l1, l2, l3,
           (long long)n1);

    lt_trainer_free(tr);
    lt_data_free(d);
    lt_model_free(m);
    lt_tokenizer_free(tok);
    LT_TEST_END();
}
