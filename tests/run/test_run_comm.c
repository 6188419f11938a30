/* test_run_comm.c - data parallelism in the library (run.h's lt_run_comm), without MPI: ranks
 * are threads of this process, each with its own lt_run, and the allgather a barrier over
 * shared memory (what MPI_Allgather does between processes; tests/run/test_train_mpi.py runs
 * the real mpirun). This one also runs in the sanitizer build, which has no MPI.
 *   - 1, 2 (uneven: rows 1 | 2 of 3) and 3 ranks give bit for bit the same losses, learning
 *     rates, gradient norms, validation losses and adapter (LoRA with dropout, grad-accum 2,
 *     packing, evaluation split over ranks), all ranks writing into one OUT, rank 0 alone;
 *   - the ranks other than 0 emit nothing to their sinks' files (no checkpoint, no adapter of
 *     their own: OUT holds rank 0's);
 *   - a failed exchange fails the run with LT_ERR_IO naming the rank;
 *   - a stop request that lands on one rank right after a step's stop-flag exchange (as a
 *     signal forwarded by mpirun can) stops every rank at the next step boundary, the same
 *     step for all, each `interrupted` (it used to stop that rank alone: its partner then
 *     waited in the step's exchange for ever -- what CI's mpirun test once caught);
 *   - full fine-tuning (every parameter's row gradients exchanged): 2 ranks (rows 1 | 2) equal
 *     1 bit for bit, the saved model.safetensors too;
 *   - the memory plan (lt_train_plan with ranks N, from the model's config) counts the
 *     exchange buffers each rank allocates: its exchange_bytes equal the start event's (what
 *     the run allocated, from its trainer's tensors) for 1, 2, 3 ranks and full fine-tuning;
 *     one process (ranks 0) has none; a --memory-budget that only the exchange passes is
 *     refused before training, naming the data-parallel exchange;
 *   - the batched reduction (lt_run_comm.allreduce: what the NCCL ranks use, here a sum over
 *     the threads' gradient spans in CPU memory, added in rank order): 1 rank gives bit for
 *     bit a plain process's numbers (its whole micro-batches as one batch, the same dropout
 *     draws); 2 and 3 ranks (rows 1 | 1 | 1 of 3) equal it within rounding -- step 1's loss
 *     within 1e-6 relative, every loss and validation loss of 6 steps within 2e-3, gradient
 *     norms within 5e-3 (measured: 4e-4 at most; no dropout: ranks other than 0 draw other
 *     masks) -- and the start event says "reduce": "allreduce" with no exchange buffers;
 *     Reduced in pieces as the backward finishes them (allreduce_wait given): the same bits
 *     as the whole span at once, for 1, 2, 3 ranks and for batch 2 over 3 ranks (rank 0
 *     without rows reduces every piece after its empty step); the pieces (lt_trainer_grad_
 *     pieces) tile the gradient span, one per layer from the last down, then the rest
 *     (LoRA; full fine-tuning: embedding, final norm, head);
 *   - refused: automatic sizes with several ranks, a bad rank, set after lt_run_prepare. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/model.h"
#include "loratune/run.h"
#include "lt_test.h"

#define MAXR 3
#define MAXEV 64

/* ---- the in-process communicator -------------------------------------------------------- */
typedef struct {
    int size;
    pthread_barrier_t bar;
    const void *src[MAXR];
    float *rbuf[MAXR]; /* the batched reduction: each rank's gradient span */
    int use_reduce;    /* run_group: give the ranks the allreduce function */
    int fail_rank; /* >= 0: that rank's exchanges fail (and it leaves the group) */
    int stop_rank;  /* >= 0: that rank's run is asked to stop right after ... */
    int stop_after; /* ... its stop_after-th stop-flag exchange (the only 4-byte one) */
} group;
typedef struct {
    group *g;
    int rank;
    lt_run *run;
    int flag_exchanges;
} member;

static int gather(void *ctx, const void *send, void *recv, size_t bytes) {
    member *m = ctx;
    group *g = m->g;
    if (g->fail_rank == m->rank) return 1;
    g->src[m->rank] = send;
    pthread_barrier_wait(&g->bar);
    for (int q = 0; q < g->size; q++)
        memcpy((char *)recv + (size_t)q * bytes, g->src[q], bytes);
    pthread_barrier_wait(&g->bar); /* sources stay valid until every rank has copied */
    if (g->stop_rank == m->rank && bytes == sizeof(int32_t) &&
        ++m->flag_exchanges == g->stop_after)
        lt_run_request_stop(m->run);
    return 0;
}

/* Sums every rank's buf in rank order (the same order, so the same bits, on every rank). */
static int reduce(void *ctx, float *buf, size_t n) {
    member *m = ctx;
    group *g = m->g;
    float *sum = malloc(n * sizeof *sum);
    g->rbuf[m->rank] = buf;
    pthread_barrier_wait(&g->bar);
    for (size_t i = 0; sum && i < n; i++) {
        float v = g->rbuf[0][i];
        for (int q = 1; q < g->size; q++)
            v += g->rbuf[q][i];
        sum[i] = v;
    }
    pthread_barrier_wait(&g->bar); /* every rank has read every buffer */
    if (sum) memcpy(buf, sum, n * sizeof *sum);
    free(sum);
    return sum == NULL;
}

static int reduce_wait(void *ctx) { /* the thread sums are done when reduce returns */
    (void)ctx;
    return 0;
}

/* lt_trainer_set_grad_hook's calls, recorded */
typedef struct {
    const lt_grad_piece *pc;
    int np, calls, in_order, early;
    float *span;
} hook_rec;
static hook_rec g_hook;
static double piece_abs(const float *span, const lt_grad_piece *p) {
    double a = 0;
    for (int64_t i = 0; i < p->n; i++)
        a += fabs(span[p->offset + i]);
    return a;
}
static int hook_fn(void *ctx, float *buf, int64_t n) {
    hook_rec *h = ctx;
    int k = h->calls++;
    if (k == 0) h->in_order = 1;
    if (k >= h->np || buf != h->span + h->pc[k].offset || n != h->pc[k].n) {
        h->in_order = 0;
        return 0;
    }
    /* the next piece of a layer below: not yet computed when this one comes */
    if (h->pc[k].layer > 0 && k + 1 < h->np && h->pc[k + 1].layer == h->pc[k].layer - 1 &&
        piece_abs(h->span, &h->pc[k + 1]) == 0)
        h->early++;
    return 0;
}

/* ---- what a rank reported ---------------------------------------------------------------- */
typedef struct {
    double loss[MAXEV], lr[MAXEV], gn[MAXEV], val[MAXEV];
    int n_step, n_eval, n_events, ranks;
    long long exchange_bytes; /* the start event's: what the run allocated for the exchange */
    char reduce[16];          /* the start event's "reduce" */
} collect;

static void sink(void *ctx, const json_t *ev) {
    collect *c = ctx;
    const char *e = json_string_value(json_object_get(ev, "event"));
    c->n_events++;
    if (!strcmp(e, "step") && c->n_step < MAXEV) {
        c->loss[c->n_step] = json_number_value(json_object_get(ev, "loss"));
        c->lr[c->n_step] = json_number_value(json_object_get(ev, "lr"));
        c->gn[c->n_step++] = json_number_value(json_object_get(ev, "grad_norm"));
    } else if (!strcmp(e, "eval") && c->n_eval < MAXEV) {
        c->val[c->n_eval++] = json_number_value(json_object_get(ev, "val_loss"));
    } else if (!strcmp(e, "start")) {
        c->ranks = (int)json_integer_value(json_object_get(ev, "ranks"));
        c->exchange_bytes = (long long)json_integer_value(json_object_get(ev, "exchange_bytes"));
        const char *rd = json_string_value(json_object_get(ev, "reduce"));
        snprintf(c->reduce, sizeof c->reduce, "%s", rd ? rd : "");
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

static void on_alarm(int sig) {
    (void)sig;
    static const char m[] = "FAIL: ranks parted ways: a run still waits in an exchange after "
                            "120 s\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(1);
}
static int g_full; /* opts(): full fine-tuning of the HF fixture (OUT gets the model) */
static const char *g_extra[6]; /* opts(): more option, value pairs (NULL-ended) */

static void opts(const char *out, lt_run_opts *o) {
    lt_run_opts_default(o);
    lt_run_opts_set(o, "model", lt_fixture("stories260K/stories260K.gguf"));
    lt_run_opts_set(o, "data", g_data);
    lt_run_opts_set(o, "threads", "1");
    lt_run_opts_set(o, "iters", "6");
    lt_run_opts_set(o, "eval-every", "3");
    lt_run_opts_set(o, "save-every", "3");
    lt_run_opts_set(o, "batch-size", "3");
    lt_run_opts_set(o, "grad-accum", "2");
    lt_run_opts_set(o, "max-seq-len", "48");
    lt_run_opts_set(o, "pack", "true");
    lt_run_opts_set(o, "lora-dropout", "0.1");
    lt_run_opts_set(o, "lora-targets", "all");
    lt_run_opts_set(o, "lr", "0.005");
    lt_run_opts_set(o, "seed", "7");
    lt_run_opts_set(o, "out", out);
    if (g_full) {
        lt_run_opts_set(o, "model", lt_fixture("stories260K-hf"));
        lt_run_opts_set(o, "method", "full");
        lt_run_opts_set(o, "lr", "0.001");
    }
    for (int i = 0; g_extra[i]; i += 2)
        lt_run_opts_set(o, g_extra[i], g_extra[i + 1]);
}

/* The memory plan of one of `ranks` ranks (0: one process) of a run with opts(), from the
 * model's config alone (lt_train_plan): not the run's path to its exchange sizes, which sums
 * its trainer's tensors. */
static lt_train_plan_t plan_of(int ranks) {
    lt_run_opts o;
    opts("unused", &o);
    lt_model_load_opts lo = {.config_only = 1};
    lt_model *m = NULL;
    lt_train_config tc;
    lt_train_plan_t p;
    memset(&p, 0, sizeof p);
    CHECK_OK(lt_model_load(o.model, &lo, &m));
    if (!m) return p;
    CHECK_OK(lt_run_opts_train_config(&o, &m->config, &tc, NULL));
    tc.ranks = ranks;
    CHECK_OK(lt_train_plan(&m->config, &tc, &p));
    lt_model_free(m);
    return p;
}

/* the plan of `ranks` ranks counts what the run allocated for its exchange, exactly */
static void check_plan(int ranks, const collect *c, const char *what) {
    lt_train_plan_t p = plan_of(ranks), p0 = plan_of(0);
    CHECK(c->exchange_bytes > 0 && p.exchange_bytes == c->exchange_bytes && p.ranks == ranks,
          "%s, %d ranks: plan's exchange %lld bytes (ranks %d), the run allocated %lld", what,
          ranks, (long long)p.exchange_bytes, p.ranks, c->exchange_bytes);
    CHECK(p0.exchange_bytes == 0 && p0.ranks == 0, "%s: one process plans %lld exchange bytes",
          what, (long long)p0.exchange_bytes);
    CHECK(p.steady_bytes >= p0.steady_bytes + p.exchange_bytes &&
              p.peak_bytes >= p0.peak_bytes + p.exchange_bytes,
          "%s, %d ranks: the exchange is not in the peak (%lld vs one process %lld)", what, ranks,
          (long long)p.peak_bytes, (long long)p0.peak_bytes);
}

typedef struct {
    lt_run_opts o;
    member m;
    collect c;
    lt_status st;
    lt_run_outcome oc;
    long long step; /* where its run ended */
    char msg[512];  /* lt_errmsg() of its thread */
} rank_run;
static char g_msg[512]; /* the first failing rank's message (run_group) */

static void *run_rank(void *arg) {
    rank_run *t = arg;
    lt_run *r = NULL;
    lt_run_comm comm = {.rank = t->m.rank, .size = t->m.g->size, .allgather = gather, .ctx = &t->m};
    if (t->m.g->use_reduce) comm.allreduce = reduce;
    if (t->m.g->use_reduce == 2) comm.allreduce_wait = reduce_wait; /* in pieces */
    t->st = lt_run_new(&t->o, &r);
    if (!t->st && t->m.g->size == 0) { /* a plain process: no communicator */
        t->st = lt_run_add_sink(r, sink, &t->c);
        if (!t->st) t->st = lt_run_prepare(r);
        if (!t->st) t->st = lt_run_train(r, &t->oc);
        if (t->st) snprintf(t->msg, sizeof t->msg, "%s", lt_errmsg());
        lt_run_free(r);
        return NULL;
    }
    t->m.run = r;
    if (!t->st && t->m.rank == 0) t->st = lt_run_add_sink(r, sink, &t->c);
    if (!t->st) t->st = lt_run_set_comm(r, &comm);
    if (!t->st) t->st = lt_run_prepare(r);
    if (!t->st) t->st = lt_run_train(r, &t->oc);
    t->step = r ? (long long)lt_run_step(r) : -1;
    if (t->st) snprintf(t->msg, sizeof t->msg, "%s", lt_errmsg());
    lt_run_free(r);
    return NULL;
}

static rank_run g_ranks[MAXR]; /* the last group's ranks */

/* size ranks into one OUT; rank 0's report in *c0; LT_OK when every rank succeeded.
 * stop_rank >= 0: that rank is asked to stop right after its stop_after-th step's exchange. */
static int g_use_reduce; /* run_group: the batched reduction; size 0: a plain process */
static lt_status run_group(int size, const char *out, int fail_rank, collect *c0, int stop_rank,
                           int stop_after) {
    group g = {.size = size, .fail_rank = fail_rank, .stop_rank = stop_rank,
               .stop_after = stop_after, .use_reduce = g_use_reduce};
    pthread_barrier_init(&g.bar, NULL, (unsigned)(size ? size : 1));
    if (size == 0) size = 1; /* one thread, no communicator */
    rank_run *t = g_ranks;
    pthread_t th[MAXR];
    memset(g_ranks, 0, sizeof g_ranks);
    for (int q = 0; q < size; q++) {
        opts(out, &t[q].o);
        t[q].m = (member){&g, q, NULL, 0};
        pthread_create(&th[q], NULL, run_rank, &t[q]);
    }
    lt_status st = LT_OK;
    for (int q = 0; q < size; q++) {
        pthread_join(th[q], NULL);
        if (t[q].st && !st) {
            st = t[q].st;
            snprintf(g_msg, sizeof g_msg, "%s", t[q].msg);
        }
        if (q > 0) CHECK(t[q].c.n_events == 0, "rank %d reported events", q);
    }
    pthread_barrier_destroy(&g.bar);
    *c0 = t[0].c;
    return st;
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", lt_tmpdir());
    snprintf(g_data, sizeof g_data, "%s/data", g_dir);
    mkdir(g_data, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/train.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), path, 24);
    snprintf(path, sizeof path, "%s/valid.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/valid.jsonl"), path, 7);

    collect c[MAXR + 1];
    char out[MAXR + 1][1100];
    for (int n = 1; n <= MAXR; n++) {
        snprintf(out[n], sizeof out[n], "%s/np%d", g_dir, n);
        lt_status st = run_group(n, out[n], -1, &c[n], -1, 0);
        CHECK(st == LT_OK, "%d ranks: %s: %s", n, lt_status_name(st), g_msg);
        CHECK(c[n].n_step == 6 && c[n].n_eval == 3 && c[n].ranks == n,
              "%d ranks: %d steps, %d evals, start says %d ranks", n, c[n].n_step, c[n].n_eval,
              c[n].ranks);
        check_plan(n, &c[n], "lora");
    }
    for (int n = 2; n <= MAXR; n++) {
        CHECK(same_numbers(&c[1], &c[n]),
              "%d ranks vs 1: numbers differ (first loss %.17g vs %.17g, last %.17g vs %.17g)", n,
              c[n].loss[0], c[1].loss[0], c[n].loss[5], c[1].loss[5]);
        const char *files[] = {"adapter_model.safetensors", "adapter.gguf",
                               "mlx-lm/adapters.safetensors"};
        for (int i = 0; i < 3; i++) {
            char a[1200], b[1200];
            snprintf(a, sizeof a, "%s/%s", out[1], files[i]);
            snprintf(b, sizeof b, "%s/%s", out[n], files[i]);
            CHECK(lt_same_file(a, b), "%d ranks vs 1: %s differs", n, files[i]);
        }
    }
    /* the numbers move: not a run that trained nothing */
    CHECK(c[1].loss[5] < c[1].loss[0] - 0.1, "losses %.4g -> %.4g", c[1].loss[0], c[1].loss[5]);

    /* full fine-tuning: 2 ranks vs 1 */
    {
        g_full = 1;
        collect cfu[3];
        char fo[3][1100];
        for (int n = 1; n <= 2; n++) {
            snprintf(fo[n], sizeof fo[n], "%s/full%d", g_dir, n);
            lt_status st = run_group(n, fo[n], -1, &cfu[n], -1, 0);
            CHECK(st == LT_OK, "full, %d ranks: %s: %s", n, lt_status_name(st), g_msg);
            check_plan(n, &cfu[n], "full");
        }
        CHECK(cfu[1].n_step == 6 && same_numbers(&cfu[1], &cfu[2]),
              "full: 2 ranks vs 1: numbers differ (last loss %.17g vs %.17g)", cfu[2].loss[5],
              cfu[1].loss[5]);
        CHECK(cfu[1].loss[5] < cfu[1].loss[0] - 0.1, "full: losses %.4g -> %.4g", cfu[1].loss[0],
              cfu[1].loss[5]);
        char a[1200], b[1200];
        snprintf(a, sizeof a, "%s/model.safetensors", fo[1]);
        snprintf(b, sizeof b, "%s/model.safetensors", fo[2]);
        CHECK(lt_same_file(a, b), "full: 2 ranks vs 1: model.safetensors differs");

        /* a budget the run fits without the exchange but not with it (64 micro-batches: 384
         * row slots of the model's 1 MB gradient, 400 MB a rank) is refused before training,
         * naming the exchange */
        g_extra[0] = "grad-accum";
        g_extra[1] = "64";
        g_extra[2] = "memory-budget";
        g_extra[3] = "300M";
        lt_train_plan_t p2 = plan_of(2), p0 = plan_of(0);
        CHECK(p0.peak_bytes < (100 << 20) && p2.exchange_bytes > (350 << 20),
              "budget case: one process plans %lld bytes, 2 ranks' exchange %lld",
              (long long)p0.peak_bytes, (long long)p2.exchange_bytes);
        collect cb;
        snprintf(fo[0], sizeof fo[0], "%s/budget", g_dir);
        lt_status st = run_group(2, fo[0], -1, &cb, -1, 0);
        CHECK(st == LT_ERR_NOMEM && strstr(g_msg, "data-parallel exchange of 2 ranks") &&
                  strstr(g_msg, "memory budget 0.29 GiB") && cb.n_step == 0 &&
                  g_ranks[0].step <= 0 && g_ranks[1].step <= 0,
              "budget below the exchange: %s: %s (%d steps)", lt_status_name(st), g_msg,
              cb.n_step);
        g_extra[0] = NULL;
        g_full = 0;
    }

    /* the batched reduction (lt_run_comm.allreduce) against a plain process, no dropout */
    {
        memset(g_extra, 0, sizeof g_extra); /* none of the budget case's options */
        g_extra[0] = "lora-dropout";
        g_extra[1] = "0";
        collect cp, cr[MAXR + 1];
        char o[1100];
        snprintf(o, sizeof o, "%s/plain", g_dir);
        lt_status st = run_group(0, o, -1, &cp, -1, 0);
        CHECK(st == LT_OK && cp.n_step == 6 && cp.n_eval == 3 && cp.ranks == 0,
              "plain process: %s: %s (%d steps)", lt_status_name(st), g_msg, cp.n_step);
        g_use_reduce = 1;
        for (int n = 1; n <= MAXR; n++) {
            snprintf(o, sizeof o, "%s/reduce%d", g_dir, n);
            st = run_group(n, o, -1, &cr[n], -1, 0);
            CHECK(st == LT_OK && cr[n].n_step == 6 && cr[n].n_eval == 3 && cr[n].ranks == n,
                  "allreduce, %d ranks: %s: %s (%d steps)", n, lt_status_name(st), g_msg,
                  cr[n].n_step);
            CHECK(!strcmp(cr[n].reduce, "allreduce") && cr[n].exchange_bytes == 0,
                  "allreduce, %d ranks: start event reduce '%s', exchange_bytes %lld", n,
                  cr[n].reduce, cr[n].exchange_bytes);
            if (n == 1) {
                CHECK(same_numbers(&cp, &cr[1]),
                      "allreduce, 1 rank vs a plain process: numbers differ (first loss %.17g vs "
                      "%.17g, last %.17g vs %.17g)",
                      cr[1].loss[0], cp.loss[0], cr[1].loss[5], cp.loss[5]);
                continue;
            }
            double w0 = fabs(cr[n].loss[0] - cp.loss[0]) / cp.loss[0], wl = 0, wg = 0, wv = 0;
            for (int i = 0; i < cp.n_step && i < cr[n].n_step; i++) {
                wl = fmax(wl, fabs(cr[n].loss[i] - cp.loss[i]) / cp.loss[i]);
                wg = fmax(wg, fabs(cr[n].gn[i] - cp.gn[i]) / cp.gn[i]);
            }
            for (int i = 0; i < cp.n_eval && i < cr[n].n_eval; i++)
                wv = fmax(wv, fabs(cr[n].val[i] - cp.val[i]) / cp.val[i]);
            printf("allreduce, %d ranks vs a plain process: step 1 loss %.3g, losses %.3g, grad "
                   "norms %.3g, validation %.3g (relative)\n",
                   n, w0, wl, wg, wv);
            CHECK(w0 < 1e-6 && wl < 2e-3 && wg < 5e-3 && wv < 2e-3,
                  "allreduce, %d ranks vs a plain process: step 1 loss %.3g, losses %.3g, grad "
                  "norms %.3g, validation %.3g (relative)",
                  n, w0, wl, wg, wv);
        }
        CHECK(cp.loss[5] < cp.loss[0] - 0.1, "plain: losses %.4g -> %.4g", cp.loss[0], cp.loss[5]);
        /* in pieces as the backward finishes them (allreduce_wait): the same sums in the same
         * order, so the same bits as the whole span at once */
        g_use_reduce = 2;
        for (int n = 1; n <= MAXR; n++) {
            collect cq;
            snprintf(o, sizeof o, "%s/pieces%d", g_dir, n);
            st = run_group(n, o, -1, &cq, -1, 0);
            CHECK(st == LT_OK && same_numbers(&cr[n], &cq),
                  "allreduce in pieces, %d ranks: %s: %s; numbers differ from the whole span "
                  "(last loss %.17g vs %.17g)",
                  n, lt_status_name(st), g_msg, cq.loss[5], cr[n].loss[5]);
        }
        /* batch 2 over 3 ranks: rank 0 has no rows (it reduces every piece after the step,
         * the others during their backward), whole span and pieces alike */
        g_extra[2] = "batch-size";
        g_extra[3] = "2";
        collect cp2, cw, cq;
        g_use_reduce = 0;
        snprintf(o, sizeof o, "%s/plain_b2", g_dir);
        st = run_group(0, o, -1, &cp2, -1, 0);
        CHECK(st == LT_OK && cp2.n_step == 6, "plain, batch 2: %s: %s", lt_status_name(st), g_msg);
        g_use_reduce = 1;
        snprintf(o, sizeof o, "%s/whole_b2", g_dir);
        st = run_group(3, o, -1, &cw, -1, 0);
        CHECK(st == LT_OK && cw.n_step == 6, "whole span, batch 2, 3 ranks: %s: %s",
              lt_status_name(st), g_msg);
        g_use_reduce = 2;
        snprintf(o, sizeof o, "%s/pieces_b2", g_dir);
        st = run_group(3, o, -1, &cq, -1, 0);
        CHECK(st == LT_OK && same_numbers(&cw, &cq),
              "pieces, batch 2, 3 ranks (rank 0 without rows): %s: %s; differ from the whole "
              "span (last loss %.17g vs %.17g)",
              lt_status_name(st), g_msg, cq.loss[5], cw.loss[5]);
        double w = 0;
        for (int i = 0; i < 6; i++)
            w = fmax(w, fabs(cq.loss[i] - cp2.loss[i]) / cp2.loss[i]);
        CHECK(w < 2e-3, "pieces, batch 2, 3 ranks vs a plain process: losses within %.3g", w);
        g_use_reduce = 0;
        memset(g_extra, 0, sizeof g_extra);
    }

    /* the pieces of the gradient span: one per layer from the last down, then the rest, every
     * float of the span once */
    {
        lt_run_opts o;
        lt_run *r = NULL;
        char o_out[1100];
        snprintf(o_out, sizeof o_out, "%s/pieces", g_dir);
        for (int full = 0; full < 2; full++) {
            g_full = full;
            opts(o_out, &o);
            lt_run_opts_set(&o, "overwrite", "true");
            CHECK_OK(lt_run_create(&o, &r));
            if (!r) continue;
            lt_trainer *tr = lt_run_trainer(r);
            lt_grad_piece pc[4096];
            int np = lt_trainer_grad_pieces(tr, pc, 4096);
            float *span = NULL;
            int64_t total = 0, at = 0;
            lt_trainer_grad_span(tr, &span, &total);
            int layers = 0, order_ok = 1, cover_ok = 1, last_layer = 1 << 30, rest = 0;
            /* the pieces sorted by offset must tile [0, total) */
            for (int64_t pos = 0; pos < total && cover_ok;) {
                int hit = 0, which = -1;
                for (int i = 0; i < np; i++)
                    if (pc[i].offset == pos && pc[i].n > 0) {
                        which = i;
                        hit++;
                    }
                if (hit != 1) cover_ok = 0;
                if (which >= 0) pos += pc[which].n;
                at = pos;
            }
            for (int i = 0; i < np; i++) {
                if (pc[i].layer >= 0) {
                    layers++;
                    if (rest || pc[i].layer >= last_layer) order_ok = 0;
                    last_layer = pc[i].layer;
                } else {
                    rest++;
                }
            }
            const int L = lt_trainer_model_config(tr)->n_layers;
            /* the hook: every piece once, in order, each while the layers below it have not
             * run their backward yet (their pieces still all zero on this first batch) */
            g_hook = (hook_rec){.pc = pc, .np = np, .span = span};
            int32_t tok[16], tgt[16];
            for (int i = 0; i < 16; i++) {
                tok[i] = 10 + 7 * i;
                tgt[i] = 10 + 7 * (i + 1);
            }
            lt_batch bt = {.B = 1, .T = 16, .tokens = tok, .targets = tgt};
            lt_trainer_zero_grad(tr);
            lt_trainer_set_grad_hook(tr, pc, np, hook_fn, &g_hook);
            CHECK_OK(lt_trainer_accumulate(tr, &bt, 0.0f, NULL));
            lt_trainer_set_grad_hook(tr, NULL, 0, NULL, NULL);
            int after_nonzero = 0;
            for (int i = 0; i < np; i++)
                after_nonzero += pc[i].layer >= 0 && piece_abs(span, &pc[i]) > 0;
            CHECK(g_hook.calls == np && g_hook.in_order && g_hook.early == layers - 1 &&
                      after_nonzero == layers,
                  "%s: hook: %d calls of %d pieces, in order %d, %d of %d layer pieces came while "
                  "the next lower layer's was still zero; %d non-zero after",
                  full ? "full" : "lora", g_hook.calls, np, g_hook.in_order, g_hook.early,
                  layers - 1, after_nonzero);
            lt_trainer_zero_grad(tr);
            CHECK(cover_ok && at == total && layers == L && order_ok && (full ? rest >= 1 : 1),
                  "%s: %d pieces (%d layers of %d, %d rest) cover %lld of %lld floats, order "
                  "%s",
                  full ? "full" : "lora", np, layers, L, rest, (long long)at, (long long)total,
                  order_ok ? "ok" : "wrong");
            lt_run_free(r);
            r = NULL;
        }
        g_full = 0;
    }

    /* a failed exchange: rank 1 fails, rank 0 must not be left waiting (a size-1 group whose
     * only rank fails keeps the test from hanging on a barrier) */
    {
        collect cf;
        char o[1100];
        snprintf(o, sizeof o, "%s/fail", g_dir);
        lt_status st = run_group(1, o, 0, &cf, -1, 0);
        CHECK(st == LT_ERR_IO && strstr(g_msg, "rank 0 of 1") && strstr(g_msg, "exchanging"),
              "failed exchange: %s: %s", lt_status_name(st), g_msg);
    }

    /* a stop request on rank 1 just after step 3's flag exchange (the signal's worst moment):
     * both ranks finish step 3, then stop together at the next boundary; the alarm turns the
     * old failure (rank 0 waiting for ever in step 3's exchange) into a failed test */
    {
        signal(SIGALRM, on_alarm);
        alarm(120);
        collect cs;
        char o[1100];
        snprintf(o, sizeof o, "%s/stop", g_dir);
        lt_status st = run_group(2, o, -1, &cs, 1, 3);
        alarm(0);
        CHECK(st == LT_OK, "stop on one rank: %s: %s", lt_status_name(st), g_msg);
        for (int q = 0; q < 2; q++)
            CHECK(g_ranks[q].oc == LT_RUN_INTERRUPTED && g_ranks[q].step == 3,
                  "stop on rank 1 after step 3's exchange: rank %d ended at step %lld, outcome "
                  "%s (want 3, interrupted)",
                  q, g_ranks[q].step, lt_run_outcome_name(g_ranks[q].oc));
        CHECK(cs.n_step == 3, "rank 0 reported %d steps (want 3)", cs.n_step);
    }

    /* refusals */
    {
        lt_run_opts o;
        lt_run *r = NULL;
        member m = {NULL, 0, NULL, 0};
        lt_run_comm two = {.rank = 0, .size = 2, .allgather = gather, .ctx = &m};
        char o_out[1100];
        snprintf(o_out, sizeof o_out, "%s/refused", g_dir);
        opts(o_out, &o);
        lt_run_opts_set(&o, "batch-size", "auto");
        CHECK_OK(lt_run_new(&o, &r));
        CHECK_ERR(lt_run_set_comm(r, &two), LT_ERR_ARG, "batch-size");
        lt_run_comm one = two;
        one.size = 1;
        CHECK_OK(lt_run_set_comm(r, &one)); /* one rank may size itself */
        lt_run_free(r);
        opts(o_out, &o);
        CHECK_OK(lt_run_new(&o, &r));
        lt_run_comm bad = two;
        bad.rank = 2;
        CHECK_ERR(lt_run_set_comm(r, &bad), LT_ERR_ARG, "rank 2 of 2");
        bad = two;
        bad.allgather = NULL;
        CHECK_ERR(lt_run_set_comm(r, &bad), LT_ERR_ARG, "allgather");
        CHECK_OK(lt_run_prepare(r));
        CHECK_ERR(lt_run_set_comm(r, &one), LT_ERR_ARG, "before lt_run_prepare");
        lt_run_free(r);
    }
    LT_TEST_END();
}
