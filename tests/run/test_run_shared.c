/* test_run_shared.c - the run's seams for a server and a hyperparameter search:
 *   - runs made from one lt_run_shared (one lazily mapped model, tokenizer and tokenized data),
 *     trained one after the other and then concurrently on two threads, give bit for bit the
 *     losses, gradient norms, learning rates, validation losses and adapter files of
 *     independent lt_run_create runs with the same options (one run shares the tokenized data,
 *     one has another max-seq-len and tokenizes its own copy);
 *   - lt_run_get_result against the events;
 *   - lt_run_new / add_sink / prepare: the stage events, in order; a stop request while
 *     tokenizing or between stages cancels lt_run_prepare (LT_ERR_CANCELLED);
 *   - options that must match the shared object, and full fine-tuning, are refused by name;
 *   - threads: a run's OpenMP thread count applies to the thread that runs it, is restored
 *     afterwards, and does not change another thread's.
 * stories260K, a few examples of wikisql. */
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/model.h"
#include "loratune/run.h"
#include "lt_test.h"

/* What a run reported: every step / eval number, the stage names, the OpenMP threads the
 * sink's thread had at the first step. */
#define MAXEV 64
typedef struct {
    double loss[MAXEV], lr[MAXEV], gn[MAXEV], val[MAXEV];
    int n_step, n_eval;
    char stages[16][32];
    int n_stage;
    int tok_shared, tok_done;
    int omp_at_step;
    lt_run *stop_run; /* request a stop when stop_at is seen */
    const char *stop_at;
} collect;

static void sink(void *ctx, const json_t *ev) {
    collect *c = ctx;
    const char *e = json_string_value(json_object_get(ev, "event"));
    if (!strcmp(e, "step") && c->n_step < MAXEV) {
        if (c->n_step == 0) c->omp_at_step = omp_get_max_threads();
        c->loss[c->n_step] = json_number_value(json_object_get(ev, "loss"));
        c->lr[c->n_step] = json_number_value(json_object_get(ev, "lr"));
        c->gn[c->n_step++] = json_number_value(json_object_get(ev, "grad_norm"));
    } else if (!strcmp(e, "eval") && c->n_eval < MAXEV) {
        c->val[c->n_eval++] = json_number_value(json_object_get(ev, "val_loss"));
    } else if (!strcmp(e, "stage")) {
        const char *st = json_string_value(json_object_get(ev, "stage"));
        if (c->n_stage < 16 && (c->n_stage == 0 || strcmp(c->stages[c->n_stage - 1], st)))
            snprintf(c->stages[c->n_stage++], 32, "%s", st);
        if (!strcmp(st, "tokenizing") && json_is_true(json_object_get(ev, "done"))) {
            c->tok_done = 1;
            c->tok_shared = json_is_true(json_object_get(ev, "shared"));
        }
        if (c->stop_run && c->stop_at && !strcmp(st, c->stop_at)) lt_run_request_stop(c->stop_run);
    }
}

static int same_numbers(const collect *a, const collect *b) {
    if (a->n_step != b->n_step || a->n_eval != b->n_eval || a->n_step == 0) return 0;
    for (int i = 0; i < a->n_step; i++)
        if (a->loss[i] != b->loss[i] || a->lr[i] != b->lr[i] || a->gn[i] != b->gn[i]) return 0;
    for (int i = 0; i < a->n_eval; i++)
        if (a->val[i] != b->val[i]) return 0;
    return 1;
}

static char g_dir[512], g_data[1024];

static void *read_omp_threads(void *arg) {
    *(int *)arg = omp_get_max_threads();
    return NULL;
}

/* Options of trial k (0: shares the tokenized data; 1: another length, pack, DoRA) into out. */
static void trial_opts(int k, const char *out, lt_run_opts *o) {
    lt_run_opts_default(o);
    lt_run_opts_set(o, "model", lt_fixture("stories260K/stories260K.gguf"));
    lt_run_opts_set(o, "data", g_data);
    lt_run_opts_set(o, "threads", "1");
    lt_run_opts_set(o, "iters", "6");
    lt_run_opts_set(o, "eval-every", "3");
    lt_run_opts_set(o, "batch-size", "3");
    lt_run_opts_set(o, "out", out);
    if (k == 0) {
        lt_run_opts_set(o, "max-seq-len", "48");
        lt_run_opts_set(o, "lr", "0.01");
        lt_run_opts_set(o, "lora-rank", "4");
        lt_run_opts_set(o, "lora-targets", "q,k,v,o,down");
        lt_run_opts_set(o, "lora-dropout", "0.1");
    } else {
        lt_run_opts_set(o, "max-seq-len", "32");
        lt_run_opts_set(o, "pack", "true");
        lt_run_opts_set(o, "method", "dora");
        lt_run_opts_set(o, "lr", "0.003");
        lt_run_opts_set(o, "lora-targets", "all");
        lt_run_opts_set(o, "lr-schedule", "cosine");
        lt_run_opts_set(o, "seed", "7");
    }
}

static const char *out_dir(const char *tag, int k) {
    static char b[8][1100];
    static int i = 0;
    char *p = b[i++ & 7];
    snprintf(p, 1100, "%s/%s%d", g_dir, tag, k);
    return p;
}

/* One trial: create (from sh, or alone), train, result. */
typedef struct {
    const lt_run_shared *sh;
    lt_run_opts o;
    collect c;
    lt_status st;
    lt_run_result res;
    char res_peft[1100], res_gguf[1100];
} trial;

static void *run_trial(void *arg) {
    trial *t = arg;
    lt_run *r = NULL;
    t->st = t->sh ? lt_run_new_from(t->sh, &t->o, &r) : lt_run_new(&t->o, &r);
    if (!t->st) t->st = lt_run_add_sink(r, sink, &t->c);
    if (!t->st) t->st = lt_run_prepare(r);
    lt_run_outcome oc;
    if (!t->st) t->st = lt_run_train(r, &oc);
    lt_run_get_result(r, &t->res);
    snprintf(t->res_peft, sizeof t->res_peft, "%s", t->res.peft ? t->res.peft : "");
    snprintf(t->res_gguf, sizeof t->res_gguf, "%s", t->res.gguf ? t->res.gguf : "");
    lt_run_free(r);
    return NULL;
}

static void check_same(const trial *ref, const trial *t, const char *what, int k) {
    CHECK(t->st == LT_OK, "%s %d: %s", what, k, lt_status_name(t->st));
    CHECK(same_numbers(&ref->c, &t->c),
          "%s %d: losses differ from the independent run (%d vs %d steps; first loss %.17g vs "
          "%.17g)",
          what, k, t->c.n_step, ref->c.n_step, t->c.loss[0], ref->c.loss[0]);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/adapter_model.safetensors", ref->o.out);
    snprintf(b, sizeof b, "%s/adapter_model.safetensors", t->o.out);
    CHECK(lt_same_file(a, b), "%s %d: adapter tensors differ (%s, %s)", what, k, a, b);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", lt_tmpdir());
    snprintf(g_data, sizeof g_data, "%s/data", g_dir);
    mkdir(g_data, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/train.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), path, 24);
    snprintf(path, sizeof path, "%s/valid.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/valid.jsonl"), path, 9);

    /* OpenMP: a run's threads apply to its own thread only (checked below) */
    int global0 = omp_get_max_threads();
    int mine = global0 + 1;
    omp_set_num_threads(mine);
    {
        int other = -1;
        pthread_t t;
        pthread_create(&t, NULL, read_omp_threads, &other);
        pthread_join(t, NULL);
        CHECK(omp_get_max_threads() == mine && other == global0,
              "omp_set_num_threads is per thread: this thread %d, another %d (expected %d, %d)",
              omp_get_max_threads(), other, mine, global0);
    }

    /* ---- independent runs: the reference ------------------------------------------------ */
    trial ref[2];
    memset(ref, 0, sizeof ref);
    for (int k = 0; k < 2; k++) {
        trial_opts(k, out_dir("ref", k), &ref[k].o);
        run_trial(&ref[k]);
        CHECK(ref[k].st == LT_OK && ref[k].c.n_step == 6 && ref[k].c.n_eval == 3,
              "reference %d: %s, %d steps, %d evals: %s", k, lt_status_name(ref[k].st),
              ref[k].c.n_step, ref[k].c.n_eval, lt_errmsg());
        static const char *want[] = {"loading_model", "tokenizing", "planning", "creating_trainer",
                                     "ready"};
        int in_order = ref[k].c.n_stage == 5;
        for (int i = 0; in_order && i < 5; i++)
            in_order = !strcmp(ref[k].c.stages[i], want[i]);
        CHECK(in_order && ref[k].c.tok_done && !ref[k].c.tok_shared,
              "reference %d: stage events %d: %s %s %s ...", k, ref[k].c.n_stage,
              ref[k].c.stages[0], ref[k].c.stages[1], ref[k].c.stages[2]);
        CHECK(ref[k].c.omp_at_step == 1, "run %d: OpenMP threads at a step %d, expected 1", k,
              ref[k].c.omp_at_step);
    }
    CHECK(omp_get_max_threads() == mine, "the caller's OpenMP threads restored: %d, expected %d",
          omp_get_max_threads(), mine);

    /* ---- the result struct, against the events ----------------------------------------- */
    {
        const lt_run_result *res = &ref[0].res;
        const collect *c = &ref[0].c;
        double best = INFINITY;
        for (int i = 0; i < c->n_eval; i++)
            best = c->val[i] < best ? c->val[i] : best;
        CHECK(res->finished && res->status == LT_OK && res->outcome == LT_RUN_DONE &&
                  res->steps == 6 && res->total_steps == 6 && res->tokens > 0 &&
                  res->train_loss == c->loss[c->n_step - 1] &&
                  res->last_val_loss == c->val[c->n_eval - 1] && res->last_val_step == 6 &&
                  res->best_val_loss == best && res->tokens_per_sec > 0 && res->train_s > 0 &&
                  res->elapsed_s >= res->train_s && res->peak_rss_bytes > 0,
              "result: finished %d status %d outcome %d steps %lld tokens %lld loss %g val %g "
              "best %g tok/s %g",
              res->finished, res->status, res->outcome, (long long)res->steps,
              (long long)res->tokens, res->train_loss, res->last_val_loss, res->best_val_loss,
              res->tokens_per_sec);
        CHECK(!strcmp(ref[0].res_peft, ref[0].o.out) && strstr(ref[0].res_gguf, "adapter.gguf"),
              "result outputs: peft '%s', gguf '%s'", ref[0].res_peft, ref[0].res_gguf);
        CHECK(ref[1].res_gguf[0] == 0, "DoRA: no gguf in the result ('%s')", ref[1].res_gguf);
    }

    /* ---- runs from one shared object, in sequence ------------------------------------ */
    lt_run_opts so;
    trial_opts(0, "", &so);
    collect sc = {0};
    lt_run_shared *sh = NULL;
    CHECK_OK(lt_run_shared_load(&so, sink, &sc, &sh));
    if (!sh) LT_TEST_END();
    CHECK(sc.n_stage == 2 && !strcmp(sc.stages[0], "loading_model") && sc.tok_done &&
              lt_data_count(lt_run_shared_data(sh), LT_SPLIT_TRAIN) == 24,
          "shared load: %d stage events", sc.n_stage);
    trial seq[2];
    memset(seq, 0, sizeof seq);
    for (int k = 0; k < 2; k++) {
        seq[k].sh = sh;
        trial_opts(k, out_dir("seq", k), &seq[k].o);
        run_trial(&seq[k]);
        check_same(&ref[k], &seq[k], "shared, in sequence", k);
        CHECK(seq[k].c.tok_shared == (k == 0), "trial %d: tokenized data %s", k,
              seq[k].c.tok_shared ? "shared" : "its own");
    }

    /* ---- concurrently, on two threads --------------------------------------------------- */
    trial par[2];
    memset(par, 0, sizeof par);
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        par[k].sh = sh;
        trial_opts(k, out_dir("par", k), &par[k].o);
        pthread_create(&th[k], NULL, run_trial, &par[k]);
    }
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        check_same(&ref[k], &par[k], "shared, concurrent", k);
        CHECK(par[k].c.omp_at_step == 1, "concurrent run %d: OpenMP threads %d", k,
              par[k].c.omp_at_step);
    }
    CHECK(omp_get_max_threads() == mine, "the main thread's OpenMP threads unchanged");

    /* ---- options the shared object decides ------------------------------------------- */
    lt_run *r = NULL;
    lt_run_opts bad;
    trial_opts(0, out_dir("bad", 0), &bad);
    lt_run_opts_set(&bad, "data-format", "text");
    CHECK_ERR(lt_run_create_from(sh, &bad, &r), LT_ERR_ARG, "data-format: the run's value differs");
    trial_opts(0, out_dir("bad", 0), &bad);
    lt_run_opts_set(&bad, "model", lt_fixture("stories260K/stories260K.bin"));
    CHECK_ERR(lt_run_create_from(sh, &bad, &r), LT_ERR_ARG, "model: the run's value differs");
    trial_opts(0, out_dir("bad", 0), &bad);
    lt_run_opts_set(&bad, "method", "full");
    CHECK_ERR(lt_run_create_from(sh, &bad, &r), LT_ERR_ARG, "full fine-tuning");
    CHECK_ERR(lt_run_shared_load(&bad, NULL, NULL, &(lt_run_shared *){NULL}), LT_ERR_ARG,
              "full fine-tuning");
    CHECK(r == NULL, "no run on errors");
    lt_run_shared_free(sh);

    /* ---- cancelling the preparation ----------------------------------------------------- */
    static const char *stop_at[] = {"tokenizing", "planning", "creating_trainer"};
    static const char *said[] = {"while tokenizing", "before creating the trainer", "before"};
    for (int i = 0; i < 3; i++) {
        lt_run_opts o;
        trial_opts(0, out_dir("stop", i), &o);
        collect c = {0};
        CHECK_OK(lt_run_new(&o, &r));
        if (!r) continue;
        c.stop_run = r;
        c.stop_at = stop_at[i];
        CHECK_OK(lt_run_add_sink(r, sink, &c));
        CHECK_ERR(lt_run_prepare(r), LT_ERR_CANCELLED, said[i]);
        CHECK(!strcmp(c.stages[c.n_stage - 1], stop_at[i]), "stopped at %s: last stage %s",
              stop_at[i], c.stages[c.n_stage - 1]);
        lt_run_outcome oc;
        CHECK_ERR(lt_run_train(r, &oc), LT_ERR_ARG, "not prepared");
        CHECK_ERR(lt_run_prepare(r), LT_ERR_ARG, "once");
        lt_run_free(r);
        r = NULL;
    }
    LT_TEST_END();
}
