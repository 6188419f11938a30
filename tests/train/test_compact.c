/* test_compact.c - the trainer drops the positions after each row's last counted target.
 *
 * Such positions (padding, a prompt whose completion was cut off) feed no loss, and attention
 * is causal, so nothing that does depends on them: the step computes the rows cut there and
 * laid end to end. Two references for the same batch, by other code paths:
 *   1. the same trainer config with keep_logits (the whole B x T batch is computed: kept
 *      logits need every row);
 *   2. each row alone as a B = 1 batch of exactly its useful length (nothing to drop), with
 *      grad_scale = 1 / (the whole batch's count) so the rows' gradients add up to the batch's.
 * Loss sums and every gradient must agree to float rounding (the GEMMs see other row counts).
 * Cases: LoRA on all linears, DoRA, full fine-tuning, packed rows (seq ids, own positions),
 * gradient checkpointing; plus a batch with nothing to drop (computed whole) and an
 * evaluation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loratune/ops.h"
#include "loratune/train.h"
#include "lt_test.h"
#include "lt_trainer_test.h"

enum { B = 3, T = 40 };
static const int useful[B] = {40, 25, 13}; /* last counted target + 1, per row */

typedef struct {
    double loss_sum;
    int64_t count, positions;
    float *grads;
    int64_t ngrads;
} result;

static void grads_of(lt_trainer *tr, result *r) {
    int n = lt_trainer_n_tensors(tr);
    r->ngrads = 0;
    for (int i = 0; i < n; i++) {
        lt_train_tensor t;
        lt_trainer_tensor(tr, i, &t);
        r->ngrads += t.numel;
    }
    r->grads = malloc(sizeof(float) * (size_t)r->ngrads);
    int64_t k = 0;
    for (int i = 0; i < n; i++) {
        lt_train_tensor t;
        lt_trainer_tensor(tr, i, &t);
        CHECK_OK(lt_trainer_read(tr, i, LT_TENSOR_GRAD, 0, r->grads + k, t.numel));
        k += t.numel;
    }
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double mx = 0, sc = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= mx)) mx = d;
        if (fabs(b[i]) > sc) sc = fabs(b[i]);
    }
    return mx / sc;
}

typedef struct {
    int32_t tok[B * T], tgt[B * T], pos[B * T], seq[B * T];
} batch_data;

/* Random tokens; row r counts targets on [2, useful[r]) except every 5th (a masked prompt
 * token), and nothing after; packed: sequences of 11 positions, positions restarting. */
static void make_batch(batch_data *d, int V, int packed) {
    uint64_t s = 777;
    for (int i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        d->tok[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    for (int r = 0; r < B; r++)
        for (int t = 0; t < T; t++) {
            const int i = r * T + t;
            const int counted = t >= 2 && t < useful[r] && (t % 5 != 0 || t == useful[r] - 1);
            d->tgt[i] = counted ? d->tok[(i + 1) % (B * T)] : LT_IGNORE_INDEX;
            if (t >= useful[r] + 3) d->tok[i] = 0; /* padding after a few prompt-like tokens */
            d->seq[i] = t / 11;
            d->pos[i] = packed ? t % 11 : t;
        }
}

static lt_status run_batch(lt_model *m, const lt_train_config *c, const lt_batch *b, int eval,
                           result *r) {
    lt_trainer *tr = NULL;
    lt_status st = lt_trainer_create(m, c, &tr);
    if (st) return st;
    lt_loss_stats ls;
    st = eval ? lt_trainer_eval(tr, b, &ls) : lt_trainer_accumulate(tr, b, 0.0f, &ls);
    if (!st) {
        r->loss_sum = ls.loss_sum;
        r->count = ls.count;
        r->positions = ls.positions;
        grads_of(tr, r);
    }
    lt_trainer_free(tr);
    return st;
}

/* reference 2: row by row, each exactly its useful length */
static lt_status run_rows(lt_model *m, const lt_train_config *c, const batch_data *d, int packed,
                          result *r) {
    lt_trainer *tr = NULL;
    lt_status st = lt_trainer_create(m, c, &tr);
    if (st) return st;
    int64_t total = 0;
    for (int i = 0; i < B * T; i++)
        total += d->tgt[i] != LT_IGNORE_INDEX;
    r->loss_sum = 0;
    r->count = 0;
    r->positions = 0;
    for (int row = 0; row < B && !st; row++) {
        const int64_t o = (int64_t)row * T;
        lt_batch one = {.B = 1, .T = useful[row], .tokens = d->tok + o, .targets = d->tgt + o,
                        .pos = packed ? d->pos + o : NULL, .seq = packed ? d->seq + o : NULL};
        lt_loss_stats ls;
        st = lt_trainer_accumulate(tr, &one, 1.0f / (float)total, &ls);
        r->loss_sum += ls.loss_sum;
        r->count += ls.count;
        r->positions += ls.positions;
    }
    if (!st) grads_of(tr, r);
    lt_trainer_free(tr);
    return st;
}

static void check_case(const char *what, lt_model *m, lt_train_config c, int packed) {
    batch_data d;
    make_batch(&d, m->config.vocab_size, packed);
    lt_batch b = {.B = B, .T = T, .tokens = d.tok, .targets = d.tgt, .pos = packed ? d.pos : NULL,
                  .seq = packed ? d.seq : NULL};
    c.batch_size = B;
    c.seq_len = T;
    result cut = {0}, whole = {0}, rows = {0};
    lt_train_config ck = c;
    ck.keep_logits = 1;
    CHECK_OK(run_batch(m, &c, &b, 0, &cut));
    CHECK_OK(run_batch(m, &ck, &b, 0, &whole));
    CHECK_OK(run_rows(m, &c, &d, packed, &rows));
    const int64_t kept = useful[0] + useful[1] + useful[2];
    CHECK(cut.positions == kept && whole.positions == B * T && rows.positions == kept,
          "%s: positions computed %lld (want %lld), keep_logits %lld, rows %lld", what,
          (long long)cut.positions, (long long)kept, (long long)whole.positions,
          (long long)rows.positions);
    CHECK(cut.count == whole.count && cut.count == rows.count && cut.count > 0,
          "%s: counts %lld %lld %lld", what, (long long)cut.count, (long long)whole.count,
          (long long)rows.count);
    CHECK(fabs(cut.loss_sum - whole.loss_sum) <= 1e-5 * fabs(whole.loss_sum) &&
              fabs(cut.loss_sum - rows.loss_sum) <= 1e-5 * fabs(rows.loss_sum),
          "%s: loss sums %.9g (cut) %.9g (whole) %.9g (rows)", what, cut.loss_sum,
          whole.loss_sum, rows.loss_sum);
    if (cut.grads && whole.grads && rows.grads && cut.ngrads == whole.ngrads &&
        cut.ngrads == rows.ngrads) {
        double e1 = max_rel(cut.grads, whole.grads, cut.ngrads);
        double e2 = max_rel(cut.grads, rows.grads, cut.ngrads);
        CHECK(e1 <= 1e-4 && e2 <= 1e-4, "%s: gradients vs whole batch %.3g, vs rows %.3g", what,
              e1, e2);
    } else {
        CHECK(0, "%s: gradient sets differ", what);
    }
    free(cut.grads), free(whole.grads), free(rows.grads);

    /* evaluation: same loss, same cut */
    result ev = {0}, evw = {0};
    CHECK_OK(run_batch(m, &c, &b, 1, &ev));
    CHECK_OK(run_batch(m, &ck, &b, 1, &evw));
    CHECK(ev.positions == kept && fabs(ev.loss_sum - evw.loss_sum) <= 1e-5 * fabs(evw.loss_sum),
          "%s eval: %lld positions, loss sum %.9g vs %.9g", what, (long long)ev.positions,
          ev.loss_sum, evw.loss_sum);
    free(ev.grads), free(evw.grads);
}

int main(void) {
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K-hf"), NULL, &m));
    if (!m) LT_TEST_END();
    lt_train_config c;
    lt_train_config_default(&c);
    c.lora.targets = LT_TARGET_ALL;
    check_case("lora all", m, c, 0);
    check_case("lora all packed", m, c, 1);
    c.grad_checkpoint = 1;
    check_case("lora all packed checkpointing", m, c, 1);
    lt_train_config_default(&c);
    c.method = LT_METHOD_DORA;
    check_case("dora q,v", m, c, 0);
    lt_train_config_default(&c);
    c.method = LT_METHOD_FULL;
    check_case("full", m, c, 1);

    /* nothing to drop: every row's last position counts -> computed whole */
    {
        batch_data d;
        make_batch(&d, m->config.vocab_size, 0);
        for (int r = 0; r < B; r++)
            d.tgt[r * T + T - 1] = 1;
        lt_batch b = {.B = B, .T = T, .tokens = d.tok, .targets = d.tgt};
        lt_train_config_default(&c);
        c.batch_size = B;
        c.seq_len = T;
        result r = {0};
        CHECK_OK(run_batch(m, &c, &b, 0, &r));
        CHECK(r.positions == B * T, "full rows: %lld positions computed", (long long)r.positions);
        free(r.grads);
    }
    lt_model_free(m);
    LT_TEST_END();
}
