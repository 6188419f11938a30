/* test_batcher.c - lt_batcher and the single-file split, checked against the examples they are
 * made from (an independent reconstruction here):
 *  - unpacked: rows are the examples in order, targets shifted (targets[t] = tokens[t+1] where
 *    mask[t+1], else -100), padding to the batch's longest row with target -100, pos/seq NULL,
 *    the epoch's last batch smaller;
 *  - shuffled: every example exactly once per epoch; the order a pure function of (seed, epoch):
 *    two batchers agree, epochs differ, seeds differ; set_state resumes mid-epoch exactly;
 *  - packed: rows <= seq_len, positions restart at 0 for every example, seq ids per example,
 *    no target crosses an example, every example once, the same loss-token count as unpacked;
 *  - split: the valid share is round(fraction * n), disjoint from train, covers the file,
 *    seeded. */
#include <stdint.h>
#include <stdio.h>

#include "loratune/chat.h"
#include "loratune/data.h"
#include "loratune/ops.h"
#include "loratune/tokenizer.h"
#include "lt_test.h"

#define N_REC 23

static const char *write_data(const char *dir) {
    static char path[600];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    FILE *f = fopen(path, "w");
    const char *words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"};
    for (int i = 0; i < N_REC; i++) {
        fprintf(f, "{\"prompt\": \"Question %d:", i);
        for (int k = 0; k < (i * 7) % 11; k++)
            fprintf(f, " %s", words[(i + k) % 7]);
        fprintf(f, "\", \"completion\": \"Answer %d", i);
        for (int k = 0; k < (i * 5) % 13; k++)
            fprintf(f, " %s", words[(i * 3 + k) % 7]);
        fprintf(f, "\"}\n");
    }
    fclose(f);
    return path;
}

/* Which example row segment [tok, tok + L) is: the example whose first L tokens match. */
static int64_t find_example(const lt_data *d, const int32_t *tok, int L) {
    int64_t found = -1;
    for (int64_t i = 0; i < lt_data_count(d, LT_SPLIT_TRAIN); i++) {
        const lt_example *e = lt_data_example(d, LT_SPLIT_TRAIN, i);
        int Le = e->n - 1;
        if (Le != L) continue;
        if (!memcmp(e->tokens, tok, (size_t)L * sizeof *tok)) {
            if (found >= 0) return -2; /* ambiguous */
            found = i;
        }
    }
    return found;
}

/* Checks one segment (example e at row offset t0, L positions) of a batch row. */
static int segment_ok(const lt_example *e, const lt_batch *b, size_t base, int L) {
    for (int t = 0; t < L; t++) {
        int32_t want = e->mask[t + 1] ? e->tokens[t + 1] : LT_IGNORE_INDEX;
        if (b->tokens[base + t] != e->tokens[t] || b->targets[base + t] != want) return 0;
    }
    return 1;
}

static uint64_t batch_hash(const lt_batch *b) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)b->B * 31 ^ (uint64_t)b->T;
    for (int i = 0; i < b->B * b->T; i++) {
        h = (h ^ (uint32_t)b->tokens[i]) * 1099511628211ull;
        h = (h ^ (uint32_t)b->targets[i]) * 1099511628211ull;
        if (b->pos) h = (h ^ (uint32_t)b->pos[i]) * 1099511628211ull;
        if (b->seq) h = (h ^ (uint32_t)b->seq[i]) * 1099511628211ull;
    }
    return h;
}

int main(void) {
    const char *dir = lt_tmpdir();
    const char *file = write_data(dir);
    lt_tokenizer *tok = NULL;
    lt_chat_template *tpl = NULL;
    char *jinja = NULL;
    size_t jlen = 0;
    CHECK_OK(lt_tokenizer_load(lt_fixture("tokenizers/smollm/tokenizer.json"), &tok));
    CHECK_OK(lt_file_read_all(lt_srcpath("tests/data/chat_templates/smollm2-instruct.jinja"),
                              &jinja, &jlen));
    CHECK_OK(lt_chat_template_from_string(jinja, jlen, &tpl));
    if (!tok || !tpl) LT_TEST_END();

    lt_data_opts o;
    lt_data_opts_default(&o);
    o.max_seq_len = 40; /* some examples are truncated */
    lt_data *d = NULL;
    CHECK_OK(lt_data_open(dir, tok, tpl, &o, &d));
    if (!d) LT_TEST_END();
    int64_t n = lt_data_count(d, LT_SPLIT_TRAIN);
    CHECK(n == N_REC, "%lld examples", (long long)n);
    CHECK(lt_data_count(d, LT_SPLIT_VALID) == 0, "a folder without valid.jsonl has no valid");
    lt_data_summary sm;
    CHECK_OK(lt_data_summary_get(d, LT_SPLIT_TRAIN, &sm));
    CHECK(sm.n_truncated > 0 && sm.n_truncated < n, "some truncated: %lld",
          (long long)sm.n_truncated);
    int64_t loss_tokens = 0;
    for (int64_t i = 0; i < n; i++) {
        const lt_example *e = lt_data_example(d, LT_SPLIT_TRAIN, i);
        CHECK(e->n <= 40 && e->n >= 2 && e->mask[0] == 0, "example %lld: n %d", (long long)i, e->n);
        CHECK(e->line == i + 1, "example %lld line %lld", (long long)i, (long long)e->line);
        for (int t = 0; t < e->n; t++)
            loss_tokens += e->mask[t];
    }
    CHECK(loss_tokens == sm.n_loss_tokens, "summary loss tokens %lld vs %lld",
          (long long)sm.n_loss_tokens, (long long)loss_tokens);

    /* 1. unpacked, file order */
    {
        lt_batcher_opts bo = {.batch_size = 4, .seq_len = 64, .pack = 0, .shuffle = 0, .seed = 1};
        lt_batcher *b = NULL;
        CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, &bo, &b));
        CHECK(lt_batcher_epoch_batches(b) == (N_REC + 3) / 4, "epoch batches %lld",
              (long long)lt_batcher_epoch_batches(b));
        int64_t ex = 0, counted = 0;
        for (int64_t k = 0; k < lt_batcher_epoch_batches(b); k++) {
            lt_batch bt;
            CHECK_OK(lt_batcher_next(b, &bt));
            int wantB = k == lt_batcher_epoch_batches(b) - 1 ? N_REC - 4 * (int)k : 4;
            CHECK(bt.B == wantB && !bt.pos && !bt.seq, "batch %lld: B %d", (long long)k, bt.B);
            int maxL = 0;
            for (int r = 0; r < bt.B; r++) {
                const lt_example *e = lt_data_example(d, LT_SPLIT_TRAIN, ex + r);
                if (e->n - 1 > maxL) maxL = e->n - 1;
            }
            CHECK(bt.T == maxL, "batch %lld: T %d, longest row %d", (long long)k, bt.T, maxL);
            for (int r = 0; r < bt.B; r++, ex++) {
                const lt_example *e = lt_data_example(d, LT_SPLIT_TRAIN, ex);
                size_t base = (size_t)r * bt.T;
                CHECK(segment_ok(e, &bt, base, e->n - 1), "batch %lld row %d: shifted targets",
                      (long long)k, r);
                for (int t = e->n - 1; t < bt.T; t++)
                    CHECK(bt.targets[base + t] == LT_IGNORE_INDEX, "padding target");
            }
            counted += lt_batch_count(&bt);
        }
        CHECK(counted == loss_tokens, "targets counted %lld, loss tokens %lld", (long long)counted,
              (long long)loss_tokens);
        lt_batch bt;
        int64_t ep, idx;
        CHECK_OK(lt_batcher_next(b, &bt));
        lt_batcher_get_state(b, &ep, &idx);
        CHECK(ep == 1 && idx == 1, "rolled over to epoch 1: %lld %lld", (long long)ep,
              (long long)idx);
        lt_batcher_free(b);
    }

    /* 2. shuffled: once per epoch, pure function of (seed, epoch), resume */
    {
        lt_batcher_opts bo = {.batch_size = 3, .seq_len = 64, .pack = 0, .shuffle = 1, .seed = 7};
        lt_batcher *a = NULL, *c = NULL;
        CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, &bo, &a));
        CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, &bo, &c));
        int64_t nb = lt_batcher_epoch_batches(a);
        uint64_t h[3][16] = {{0}};
        int64_t first_ex[3] = {-1, -1, -1};
        for (int ep = 0; ep < 3; ep++) {
            int seen[N_REC] = {0};
            for (int64_t k = 0; k < nb; k++) {
                lt_batch x, y;
                CHECK_OK(lt_batcher_next(a, &x));
                h[ep][k] = batch_hash(&x);
                CHECK_OK(lt_batcher_next(c, &y));
                CHECK(batch_hash(&y) == h[ep][k], "same seed, same batches (epoch %d batch %lld)",
                      ep, (long long)k);
                for (int r = 0; r < x.B; r++) {
                    /* the row is the one example of length n - 1 whose tokens it holds */
                    int64_t e = -1;
                    for (int LL = x.T; LL >= 1 && e < 0; LL--) {
                        e = find_example(d, x.tokens + (size_t)r * x.T, LL);
                        if (e >= 0 && !segment_ok(lt_data_example(d, LT_SPLIT_TRAIN, e), &x,
                                                  (size_t)r * x.T, LL))
                            e = -1;
                    }
                    CHECK(e >= 0, "epoch %d batch %lld row %d: an example", ep, (long long)k, r);
                    if (e >= 0) seen[e]++;
                    if (k == 0 && r == 0) first_ex[ep] = e;
                }
            }
            int once = 1;
            for (int i = 0; i < N_REC; i++)
                once &= seen[i] == 1;
            CHECK(once, "epoch %d: every example exactly once", ep);
        }
        CHECK(h[0][0] != h[1][0] || h[0][1] != h[1][1] || h[1][0] != h[2][0],
              "epochs are reshuffled");
        CHECK(first_ex[0] >= 0, "first example found");
        /* resume at (1, 2) */
        lt_batcher *r = NULL;
        CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, &bo, &r));
        CHECK_OK(lt_batcher_set_state(r, 1, 2));
        for (int64_t k = 2; k < nb; k++) {
            lt_batch x;
            CHECK_OK(lt_batcher_next(r, &x));
            CHECK(batch_hash(&x) == h[1][k], "resumed batch (1, %lld)", (long long)k);
        }
        lt_batch x;
        CHECK_OK(lt_batcher_next(r, &x));
        CHECK(batch_hash(&x) == h[2][0], "resumed run rolls into epoch 2");
        CHECK_ERR(lt_batcher_set_state(r, 0, nb + 1), LT_ERR_ARG, "index");
        /* another seed, another order */
        lt_batcher_opts bo2 = bo;
        bo2.seed = 8;
        lt_batcher *s = NULL;
        CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, &bo2, &s));
        int differ = 0;
        for (int64_t k = 0; k < nb; k++) {
            CHECK_OK(lt_batcher_next(s, &x));
            differ |= batch_hash(&x) != h[0][k];
        }
        CHECK(differ, "seed 8 gives another order than seed 7");
        lt_batcher_free(a);
        lt_batcher_free(c);
        lt_batcher_free(r);
        lt_batcher_free(s);
    }

    /* 3. packed */
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        lt_batcher_opts bo = {
            .batch_size = 2, .seq_len = 100, .pack = 1, .shuffle = shuffle, .seed = 3};
        lt_batcher *b = NULL;
        CHECK_OK(lt_batcher_create(d, LT_SPLIT_TRAIN, &bo, &b));
        int seen[N_REC] = {0};
        int64_t counted = 0, rows = 0, segs = 0;
        int64_t nb = lt_batcher_epoch_batches(b);
        for (int64_t k = 0; k < nb; k++) {
            lt_batch x;
            CHECK_OK(lt_batcher_next(b, &x));
            CHECK(x.pos && x.seq && x.T <= 100 && x.B >= 1 && x.B <= 2, "packed batch shape");
            counted += lt_batch_count(&x);
            for (int r = 0; r < x.B; r++, rows++) {
                size_t base = (size_t)r * x.T;
                int t = 0;
                while (t < x.T) {
                    /* one segment: same seq id, positions 0, 1, ... */
                    int s0 = x.seq[base + t], L = 0;
                    while (t + L < x.T && x.seq[base + t + L] == s0) {
                        CHECK(x.pos[base + t + L] == L, "positions restart per example");
                        L++;
                    }
                    int64_t e = find_example(d, x.tokens + base + t, L);
                    if (e >= 0 &&
                        segment_ok(lt_data_example(d, LT_SPLIT_TRAIN, e), &x, base + t, L)) {
                        seen[e]++;
                        segs++;
                    } else {
                        /* padding: only at the end of the row, ignored */
                        CHECK(t + L == x.T, "batch %lld row %d: segment at %d is no example",
                              (long long)k, r, t);
                        for (int j = 0; j < L; j++)
                            CHECK(x.targets[base + t + j] == LT_IGNORE_INDEX, "padding target");
                    }
                    if (t > 0) CHECK(s0 > x.seq[base + t - 1], "seq ids increase along a row");
                    t += L;
                }
            }
        }
        int once = 1;
        for (int i = 0; i < N_REC; i++)
            once &= seen[i] == 1;
        CHECK(once, "packed (shuffle %d): every example exactly once", shuffle);
        CHECK(rows < N_REC && segs == N_REC, "packing put %lld examples in %lld rows",
              (long long)segs, (long long)rows);
        CHECK(counted == loss_tokens, "packed targets %lld vs %lld", (long long)counted,
              (long long)loss_tokens);
        lt_batcher_free(b);
    }

    /* 4. a single file: seeded split */
    {
        lt_data_opts so = o;
        so.valid_fraction = 0.2;
        lt_data *s1 = NULL, *s2 = NULL, *s3 = NULL;
        CHECK_OK(lt_data_open(file, tok, tpl, &so, &s1));
        CHECK_OK(lt_data_open(file, tok, tpl, &so, &s2));
        so.seed = 43;
        CHECK_OK(lt_data_open(file, tok, tpl, &so, &s3));
        if (s1 && s2 && s3) {
            int64_t nv = lt_data_count(s1, LT_SPLIT_VALID), nt = lt_data_count(s1, LT_SPLIT_TRAIN);
            CHECK(nv == 5 && nt == N_REC - 5, "split %lld / %lld (round(0.2 * 23) = 5)",
                  (long long)nt, (long long)nv);
            int lines[N_REC + 1] = {0}, same = 1, differ = 0;
            for (int64_t i = 0; i < nt; i++)
                lines[lt_data_example(s1, LT_SPLIT_TRAIN, i)->line]++;
            for (int64_t i = 0; i < nv; i++) {
                int64_t l = lt_data_example(s1, LT_SPLIT_VALID, i)->line;
                lines[l]++;
                same &= l == lt_data_example(s2, LT_SPLIT_VALID, i)->line;
                differ |= l != lt_data_example(s3, LT_SPLIT_VALID, i)->line;
                if (i) CHECK(l > lt_data_example(s1, LT_SPLIT_VALID, i - 1)->line, "file order");
            }
            int cover = 1;
            for (int l = 1; l <= N_REC; l++)
                cover &= lines[l] == 1;
            CHECK(cover, "train + valid = every line once");
            CHECK(same, "same seed, same split");
            CHECK(differ, "another seed, another split");
            lt_data_summary vs;
            CHECK_OK(lt_data_summary_get(s1, LT_SPLIT_VALID, &vs));
            CHECK(strstr(vs.source, "split") != NULL, "valid source says split: %s", vs.source);
        }
        lt_data_free(s1);
        lt_data_free(s2);
        lt_data_free(s3);
    }

    lt_data_free(d);
    lt_chat_template_free(tpl);
    lt_tokenizer_free(tok);
    free(jinja);
    LT_TEST_END();
}
