/* test_run_zero.c - ZeRO-1 (lt_run_comm.zero, docs/SCALE_OUT.md) without GPUs: ranks are
 * threads of this process, each with its own lt_run, and the collectives sums / copies over
 * their buffers in CPU memory (what NCCL's reduce-scatter and all-gather do on GPUs; the sums
 * added in rank order, as the batched reduction's allreduce of test_run_comm.c does).
 *   - ZeRO-1 with 1, 2 and 3 ranks against the batched reduction without it (the same ranks,
 *     the same sums): losses, gradient norms and validation losses within 1e-6 relative, the
 *     trained weights within 1e-6 of the largest weight (the norm is summed shard by shard
 *     instead of tensor by tensor: rounding of a double, so measured 0 or a few 1e-16), and
 *     every rank's weights the same bits as rank 0's (the all-gather); with 1 rank the same
 *     bits as a plain process (what the one-GPU test_nccl case checks on a GPU);
 *   - grad-clip active (0.05: every step clipped) so the global norm's exchange matters;
 *   - each rank's AdamW state is its shard: the optimizer bytes it allocated (the start event,
 *     lt_trainer_mem) are 2 x 4 x ceil(span / (16 N)) x 16 -- 1/N of the whole state up to
 *     the padding -- and equal the memory plan's for zero_ranks N (lt_train_plan);
 *   - checkpoints: the one ZeRO-1 on 2 ranks writes holds the whole state, equal (1e-6) to
 *     the one the same run without ZeRO-1 writes, tensor by tensor, moments included; it
 *     resumes with ZeRO-1 on 2 ranks to the uninterrupted run's bits, with 3 ranks (ZeRO-1
 *     and not: within 1e-6 of each other, 2e-3 of the 2-rank run, the batched reduction's
 *     tolerance), and in a plain process (no communicator);
 *   - full fine-tuning (values in the model, not laid out like the span: copied tensor by
 *     tensor) on 2 ranks: the same bounds against the batched reduction, the optimizer 1/2;
 *   - a NaN gradient (fault injection on a value only rank 0's shard holds) is skipped by
 *     every rank alike;
 *   - refused, naming the field: zero 2, zero 1 without reduce_scatter / allgather_dev, zero 1
 *     on the row-exact exchange (no allreduce); lt_trainer_step on a ZeRO-1 trainer, moments
 *     outside the shard. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/model.h"
#include "loratune/run.h"
#include "loratune/safetensors.h"
#include "ckpt_diff.h"
#include "lt_test.h"

#define MAXR 3
#define MAXEV 64

typedef struct {
    int size;
    pthread_barrier_t bar;
    const void *src[MAXR];
    float *rbuf[MAXR];
    int zero; /* give the ranks ZeRO-1 */
} group;
typedef struct {
    group *g;
    int rank;
} member;

static int gather(void *ctx, const void *send, void *recv, size_t bytes) {
    member *m = ctx;
    group *g = m->g;
    g->src[m->rank] = send;
    pthread_barrier_wait(&g->bar);
    for (int q = 0; q < g->size; q++)
        memcpy((char *)recv + (size_t)q * bytes, g->src[q], bytes);
    pthread_barrier_wait(&g->bar);
    return 0;
}

/* the sum of every rank's buf[lo, lo + n), added in rank order, into out */
static void sum_range(group *g, float *out, size_t lo, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = g->rbuf[0][lo + i];
        for (int q = 1; q < g->size; q++)
            v += g->rbuf[q][lo + i];
        out[i] = v;
    }
}

static int reduce(void *ctx, float *buf, size_t n) {
    member *m = ctx;
    group *g = m->g;
    float *sum = malloc(n * sizeof *sum + 1);
    g->rbuf[m->rank] = buf;
    pthread_barrier_wait(&g->bar);
    if (sum) sum_range(g, sum, 0, n);
    pthread_barrier_wait(&g->bar);
    if (sum) memcpy(buf, sum, n * sizeof *sum);
    free(sum);
    return sum == NULL;
}

/* rank q gets the sum of shard q (n floats at buf + q n); the rest of its buf is poisoned
 * (NaN), as "left undefined" allows: nothing may read it */
static int reduce_scatter(void *ctx, float *buf, size_t n) {
    member *m = ctx;
    group *g = m->g;
    float *sum = malloc(n * sizeof *sum + 1);
    g->rbuf[m->rank] = buf;
    pthread_barrier_wait(&g->bar);
    if (sum) sum_range(g, sum, (size_t)m->rank * n, n);
    pthread_barrier_wait(&g->bar);
    if (sum) {
        for (size_t i = 0; i < (size_t)g->size * n; i++)
            buf[i] = NAN;
        memcpy(buf + (size_t)m->rank * n, sum, n * sizeof *sum);
    }
    free(sum);
    return sum == NULL;
}

/* every rank's shard into every rank's buf (each reads the others' own shards, which nobody
 * writes) */
static int allgather_dev(void *ctx, float *buf, size_t n) {
    member *m = ctx;
    group *g = m->g;
    g->rbuf[m->rank] = buf;
    pthread_barrier_wait(&g->bar);
    for (int q = 0; q < g->size; q++)
        if (q != m->rank) memcpy(buf + (size_t)q * n, g->rbuf[q] + (size_t)q * n, n * sizeof *buf);
    pthread_barrier_wait(&g->bar);
    return 0;
}

typedef struct {
    double loss[MAXEV], gn[MAXEV], val[MAXEV];
    int n_step, n_eval, zero, skip_step;
    long long opt_bytes;
    char skip_reason[32];
} collect;

static void sink(void *ctx, const json_t *ev) {
    collect *c = ctx;
    const char *e = json_string_value(json_object_get(ev, "event"));
    if (!strcmp(e, "step") && c->n_step < MAXEV) {
        c->loss[c->n_step] = json_number_value(json_object_get(ev, "loss"));
        c->gn[c->n_step++] = json_number_value(json_object_get(ev, "grad_norm"));
    } else if (!strcmp(e, "eval") && c->n_eval < MAXEV) {
        c->val[c->n_eval++] = json_number_value(json_object_get(ev, "val_loss"));
    } else if (!strcmp(e, "skip")) {
        c->skip_step = (int)json_integer_value(json_object_get(ev, "step"));
        snprintf(c->skip_reason, sizeof c->skip_reason, "%s",
                 json_string_value(json_object_get(ev, "reason")));
    } else if (!strcmp(e, "start")) {
        c->zero = (int)json_integer_value(json_object_get(ev, "zero"));
        c->opt_bytes = (long long)json_integer_value(json_object_get(ev, "optimizer_bytes"));
    }
}

static char g_dir[512], g_data[1024];
static const char *g_extra[8]; /* more option, value pairs (NULL-ended) */
static const char *g_fault = ""; /* lt_run_opts.fault_nan_steps (not an option of the table) */

static void opts(const char *out, lt_run_opts *o) {
    lt_run_opts_default(o);
    lt_run_opts_set(o, "model", lt_fixture("stories260K/stories260K.gguf"));
    lt_run_opts_set(o, "data", g_data);
    lt_run_opts_set(o, "threads", "1");
    lt_run_opts_set(o, "iters", "6");
    lt_run_opts_set(o, "eval-every", "3");
    lt_run_opts_set(o, "save-every", "3");
    lt_run_opts_set(o, "keep-checkpoints", "4");
    lt_run_opts_set(o, "batch-size", "3");
    lt_run_opts_set(o, "grad-accum", "2");
    lt_run_opts_set(o, "max-seq-len", "48");
    lt_run_opts_set(o, "pack", "true");
    lt_run_opts_set(o, "lora-targets", "all");
    lt_run_opts_set(o, "lr", "0.005");
    lt_run_opts_set(o, "grad-clip", "0.05");
    lt_run_opts_set(o, "seed", "7");
    lt_run_opts_set(o, "out", out);
    for (int i = 0; g_extra[i]; i += 2)
        lt_run_opts_set(o, g_extra[i], g_extra[i + 1]);
    snprintf(o->fault_nan_steps, sizeof o->fault_nan_steps, "%s", g_fault);
}

typedef struct {
    lt_run_opts o;
    member m;
    collect c;
    lt_status st;
    char msg[512];
    float *w;      /* every trainable value at the end, tensor after tensor */
    int64_t nw;
    int64_t span;  /* the gradient span (padded under ZeRO-1) */
    long long opt_bytes; /* what its trainer allocated for AdamW (lt_trainer_mem) */
} rank_run;

static void *run_rank(void *arg) {
    rank_run *t = arg;
    lt_run *r = NULL;
    group *g = t->m.g;
    lt_run_comm comm = {.rank = t->m.rank, .size = g->size, .allgather = gather, .ctx = &t->m,
                        .allreduce = reduce};
    if (g->zero) {
        comm.zero = 1;
        comm.reduce_scatter = reduce_scatter;
        comm.allgather_dev = allgather_dev;
    }
    t->st = lt_run_new(&t->o, &r);
    if (!t->st) t->st = lt_run_add_sink(r, sink, &t->c);
    if (!t->st && g->size) t->st = lt_run_set_comm(r, &comm);
    if (!t->st) t->st = lt_run_prepare(r);
    lt_run_outcome oc;
    if (!t->st) t->st = lt_run_train(r, &oc);
    if (t->st) snprintf(t->msg, sizeof t->msg, "%s", lt_errmsg());
    if (!t->st) {
        lt_trainer *tr = lt_run_trainer(r);
        float *span = NULL;
        lt_trainer_grad_span(tr, &span, &t->span);
        int64_t mem[LT_MEM_COUNT];
        lt_trainer_mem(tr, mem, NULL);
        t->opt_bytes = mem[LT_MEM_OPTIMIZER];
        int nt = lt_trainer_n_tensors(tr);
        t->nw = 0;
        for (int i = 0; i < nt; i++) {
            lt_train_tensor tt;
            if (!lt_trainer_tensor(tr, i, &tt)) t->nw += tt.numel;
        }
        t->w = malloc((size_t)t->nw * sizeof(float) + 1);
        int64_t at = 0;
        for (int i = 0; i < nt && t->w; i++) {
            lt_train_tensor tt;
            if (lt_trainer_tensor(tr, i, &tt)) continue;
            lt_trainer_read(tr, i, LT_TENSOR_VALUE, 0, t->w + at, tt.numel);
            at += tt.numel;
        }
    }
    lt_run_free(r);
    return NULL;
}

typedef struct {
    collect c;          /* rank 0's events */
    float *w;           /* rank 0's weights (owned) */
    int64_t nw, span;
    long long opt_bytes[MAXR]; /* every rank's AdamW bytes (lt_trainer_mem) */
    int ranks_agree;    /* every rank's weights the same bits as rank 0's */
    char out[1100];
} result;

/* size ranks (0: a plain process, no communicator) into OUT dir/name */
static lt_status run_group(int size, int zero, const char *name, const char *resume,
                           result *res) {
    group g = {.size = size, .zero = zero};
    pthread_barrier_init(&g.bar, NULL, (unsigned)(size ? size : 1));
    int n = size ? size : 1;
    rank_run t[MAXR];
    pthread_t th[MAXR];
    memset(t, 0, sizeof t);
    memset(res, 0, sizeof *res);
    snprintf(res->out, sizeof res->out, "%s/%s", g_dir, name);
    for (int q = 0; q < n; q++) {
        opts(res->out, &t[q].o);
        if (resume) lt_run_opts_set(&t[q].o, "resume", resume);
        t[q].m = (member){&g, q};
        pthread_create(&th[q], NULL, run_rank, &t[q]);
    }
    lt_status st = LT_OK;
    for (int q = 0; q < n; q++) {
        pthread_join(th[q], NULL);
        if (t[q].st && !st) {
            st = t[q].st;
            fprintf(stderr, "%s: rank %d: %s\n", name, q, t[q].msg);
        }
    }
    pthread_barrier_destroy(&g.bar);
    res->c = t[0].c;
    res->w = t[0].w;
    res->nw = t[0].nw;
    res->span = t[0].span;
    for (int q = 0; q < n; q++)
        res->opt_bytes[q] = t[q].opt_bytes;
    res->ranks_agree = !st;
    for (int q = 1; q < n; q++) {
        if (!t[q].w || t[q].nw != res->nw || !res->w ||
            memcmp(t[q].w, res->w, (size_t)res->nw * sizeof(float)))
            res->ranks_agree = 0;
        free(t[q].w);
    }
    return st;
}

/* the largest relative difference of losses, gradient norms (from step `from` of a) and
 * validation losses */
static double worst(const collect *a, const collect *b, int from) {
    double w = 0;
    if (b->n_step != a->n_step - from || b->n_step == 0) return INFINITY;
    for (int i = 0; i < b->n_step; i++) {
        w = fmax(w, fabs(a->loss[from + i] - b->loss[i]) / fabs(a->loss[from + i]));
        w = fmax(w, fabs(a->gn[from + i] - b->gn[i]) / fabs(a->gn[from + i]));
    }
    if (!from) {
        if (a->n_eval != b->n_eval) return INFINITY;
        for (int i = 0; i < a->n_eval; i++)
            w = fmax(w, fabs(a->val[i] - b->val[i]) / a->val[i]);
    }
    return w;
}

static int same_bits(const collect *a, const collect *b, int from) {
    if (b->n_step != a->n_step - from || b->n_step == 0) return 0;
    for (int i = 0; i < b->n_step; i++)
        if (a->loss[from + i] != b->loss[i] || a->gn[from + i] != b->gn[i]) return 0;
    return 1;
}

/* the largest difference of two weight sets, over the largest |weight| */
static double weight_diff(const result *a, const result *b) {
    if (!a->w || !b->w || a->nw != b->nw || a->nw == 0) return INFINITY;
    double d = 0, m = 0;
    for (int64_t i = 0; i < a->nw; i++) {
        d = fmax(d, fabs((double)a->w[i] - b->w[i]));
        m = fmax(m, fabs((double)a->w[i]));
    }
    return m > 0 ? d / m : INFINITY;
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

    /* a plain process, then the batched reduction with and without ZeRO-1 on 1-3 ranks */
    result plain, red[MAXR + 1], zr[MAXR + 1];
    CHECK_OK(run_group(0, 0, "plain", NULL, &plain));
    CHECK(plain.c.n_step == 6 && plain.c.loss[5] < plain.c.loss[0] - 0.1,
          "plain: %d steps, losses %.4g -> %.4g", plain.c.n_step, plain.c.loss[0],
          plain.c.loss[5]);
    long long whole_opt = plain.opt_bytes[0]; /* one process: the whole state */
    for (int n = 1; n <= MAXR; n++) {
        char name[32];
        snprintf(name, sizeof name, "reduce%d", n);
        CHECK_OK(run_group(n, 0, name, NULL, &red[n]));
        snprintf(name, sizeof name, "zero%d", n);
        CHECK_OK(run_group(n, 1, name, NULL, &zr[n]));
        CHECK(zr[n].c.zero == 1 && red[n].c.zero == 0 && zr[n].c.n_step == 6 &&
                  zr[n].c.n_eval == 3,
              "%d ranks: start zero %d / %d, %d steps, %d evals", n, zr[n].c.zero,
              red[n].c.zero, zr[n].c.n_step, zr[n].c.n_eval);
        double wl = worst(&red[n].c, &zr[n].c, 0), ww = weight_diff(&red[n], &zr[n]);
        printf("ZeRO-1, %d ranks vs the batched reduction: losses / norms / validation %.3g, "
               "weights %.3g (relative)\n",
               n, wl, ww);
        CHECK(wl < 1e-6 && ww < 1e-6, "ZeRO-1, %d ranks vs without: numbers %.3g, weights %.3g",
              n, wl, ww);
        CHECK(zr[n].ranks_agree && red[n].ranks_agree,
              "%d ranks: the ranks' weights differ after the all-gather (zero %d, plain %d)", n,
              zr[n].ranks_agree, red[n].ranks_agree);
        /* each rank's optimizer state: its shard, 1/N of the (padded) span */
        const long long S = zr[n].span / n, want = 2LL * 4 * S;
        int every = 1;
        for (int q = 0; q < n; q++)
            every &= zr[n].opt_bytes[q] == want;
        CHECK(zr[n].span % (16 * n) == 0 && zr[n].span >= zr[n].nw && every &&
                  zr[n].c.opt_bytes == want && red[n].c.opt_bytes == whole_opt &&
                  zr[n].c.opt_bytes * n <= whole_opt + 2LL * 4 * 16 * n,
              "%d ranks: optimizer bytes %lld (want 2 x 4 x %lld, span %lld of %lld values); "
              "without ZeRO-1 %lld, a plain process %lld",
              n, zr[n].c.opt_bytes, S, (long long)zr[n].span, (long long)zr[n].nw,
              red[n].c.opt_bytes, whole_opt);
        /* the plan of one ZeRO-1 rank counts what it allocated */
        lt_run_opts o;
        opts("unused", &o);
        lt_model_load_opts lo = {.config_only = 1};
        lt_model *m = NULL;
        lt_train_config tc;
        lt_train_plan_t p;
        CHECK_OK(lt_model_load(o.model, &lo, &m));
        if (m) {
            CHECK_OK(lt_run_opts_train_config(&o, &m->config, &tc, NULL));
            tc.zero_ranks = n;
            tc.zero_rank = n - 1;
            CHECK_OK(lt_train_plan(&m->config, &tc, &p));
            CHECK(p.bytes[LT_MEM_OPTIMIZER] == zr[n].c.opt_bytes,
                  "%d ranks: the plan's optimizer bytes %lld, allocated %lld", n,
                  (long long)p.bytes[LT_MEM_OPTIMIZER], zr[n].c.opt_bytes);
            tc.zero_rank = n;
            CHECK_ERR(lt_train_plan(&m->config, &tc, &p), LT_ERR_ARG, "zero_rank");
            lt_model_free(m);
        }
    }
    CHECK(same_bits(&plain.c, &zr[1].c, 0) && weight_diff(&plain, &zr[1]) == 0,
          "ZeRO-1 on 1 rank vs a plain process: not the same bits (last loss %.17g vs %.17g)",
          zr[1].c.loss[5], plain.c.loss[5]);
    for (int n = 2; n <= MAXR; n++) { /* the batched reduction's own tolerance to one process */
        double w = worst(&plain.c, &zr[n].c, 0);
        CHECK(w < 5e-3, "ZeRO-1, %d ranks vs a plain process: %.3g", n, w);
    }

    /* checkpoints: ZeRO-1's holds the whole state, as without it */
    char ck_z[1300], ck_r[1300];
    snprintf(ck_z, sizeof ck_z, "%s/checkpoints/step-00000003.safetensors", zr[2].out);
    snprintf(ck_r, sizeof ck_r, "%s/checkpoints/step-00000003.safetensors", red[2].out);
    int moments = 0;
    double cd = ckpt_diff(ck_r, ck_z, &moments);
    CHECK(cd < 1e-6 && moments > 0, "step 3's checkpoint, ZeRO-1 vs without (2 ranks): %.3g, "
          "%d non-zero moment tensors", cd, moments);
    CHECK_OK(lt_checkpoint_verify(ck_z));

    /* resumes from ZeRO-1's step 3 on 2 ranks */
    result rz2, rz3, rr3, rp;
    CHECK_OK(run_group(2, 1, "resume_z2", ck_z, &rz2));
    CHECK(same_bits(&zr[2].c, &rz2.c, 3) && weight_diff(&zr[2], &rz2) == 0,
          "ZeRO-1 2 ranks -> 2 ranks: not the uninterrupted run's bits (%d steps)", rz2.c.n_step);
    CHECK_OK(run_group(3, 1, "resume_z3", ck_z, &rz3));
    CHECK_OK(run_group(3, 0, "resume_r3", ck_z, &rr3));
    CHECK_OK(run_group(0, 0, "resume_plain", ck_z, &rp));
    double w33 = worst(&rr3.c, &rz3.c, 0), w23 = worst(&zr[2].c, &rz3.c, 3);
    double w2p = worst(&zr[2].c, &rp.c, 3);
    printf("resumed from ZeRO-1 x 2: ZeRO-1 x 3 vs 3 ranks without %.3g; vs the 2-rank run "
           "%.3g; a plain process vs the 2-rank run %.3g\n",
           w33, w23, w2p);
    CHECK(rz3.c.n_step == 3 && w33 < 1e-6 && w23 < 5e-3 && weight_diff(&rr3, &rz3) < 1e-6,
          "ZeRO-1 2 -> 3 ranks: %d steps, %.3g vs without, %.3g vs the 2-rank run", rz3.c.n_step,
          w33, w23);
    CHECK(rp.c.n_step == 3 && w2p < 5e-3 && weight_diff(&zr[2], &rp) < 1e-3,
          "ZeRO-1 2 ranks -> a plain process: %d steps, %.3g, weights %.3g", rp.c.n_step, w2p,
          weight_diff(&zr[2], &rp));
    /* and a plain checkpoint resumed with ZeRO-1 */
    char ck_p[1300];
    snprintf(ck_p, sizeof ck_p, "%s/checkpoints/step-00000003.safetensors", plain.out);
    result pz;
    CHECK_OK(run_group(2, 1, "plain_to_z2", ck_p, &pz));
    CHECK(pz.c.n_step == 3 && worst(&plain.c, &pz.c, 3) < 5e-3,
          "a plain process -> ZeRO-1 on 2 ranks: %d steps, %.3g", pz.c.n_step,
          worst(&plain.c, &pz.c, 3));

    /* full fine-tuning (values in the model, tensor by tensor; embedding, norms, head) */
    {
        g_extra[0] = "model";
        g_extra[1] = lt_fixture("stories260K-hf");
        g_extra[2] = "method";
        g_extra[3] = "full";
        g_extra[4] = "lr";
        g_extra[5] = "0.001";
        result fr, fz;
        CHECK_OK(run_group(2, 0, "full_reduce2", NULL, &fr));
        CHECK_OK(run_group(2, 1, "full_zero2", NULL, &fz));
        g_extra[0] = NULL;
        double wl = worst(&fr.c, &fz.c, 0), ww = weight_diff(&fr, &fz);
        printf("full fine-tuning, ZeRO-1 on 2 ranks vs without: %.3g, weights %.3g\n", wl, ww);
        CHECK(fz.c.n_step == 6 && fz.c.loss[5] < fz.c.loss[0] - 0.1 && wl < 1e-6 && ww < 1e-6 &&
                  fz.ranks_agree && fz.opt_bytes[0] * 2 <= fr.opt_bytes[0] + 2 * 4 * 16 * 2,
              "full, ZeRO-1 2 ranks: %d steps (%.4g -> %.4g), %.3g vs without, weights %.3g, "
              "ranks agree %d, optimizer %lld vs %lld bytes",
              fz.c.n_step, fz.c.loss[0], fz.c.loss[5], wl, ww, fz.ranks_agree, fz.opt_bytes[0],
              fr.opt_bytes[0]);
        free(fr.w);
        free(fz.w);
    }

    /* a NaN gradient where only rank 0's shard sees it: every rank skips that step */
    {
        g_fault = "2";
        result f;
        lt_status st = run_group(2, 1, "nan", NULL, &f);
        g_fault = "";
        CHECK(st == LT_OK && f.c.skip_step == 2 && !strcmp(f.c.skip_reason, "nonfinite_grad") &&
                  f.c.n_step == 5 && f.ranks_agree,
              "NaN at step 2: %s, skip step %d (%s), %d steps, ranks agree %d",
              lt_status_name(st), f.c.skip_step, f.c.skip_reason, f.c.n_step, f.ranks_agree);
        free(f.w);
    }

    /* refusals */
    {
        lt_run_opts o;
        lt_run *r = NULL;
        member m = {NULL, 0};
        char o_out[1100];
        snprintf(o_out, sizeof o_out, "%s/refused", g_dir);
        opts(o_out, &o);
        CHECK_OK(lt_run_new(&o, &r));
        lt_run_comm c = {.rank = 0, .size = 2, .allgather = gather, .ctx = &m,
                         .allreduce = reduce, .reduce_scatter = reduce_scatter,
                         .allgather_dev = allgather_dev, .zero = 2};
        CHECK_ERR(lt_run_set_comm(r, &c), LT_ERR_ARG, "zero: expected 0 (off) or 1");
        c.zero = -1;
        CHECK_ERR(lt_run_set_comm(r, &c), LT_ERR_ARG, "got -1");
        c.zero = 1;
        c.reduce_scatter = NULL;
        CHECK_ERR(lt_run_set_comm(r, &c), LT_ERR_ARG, "no reduce_scatter");
        c.reduce_scatter = reduce_scatter;
        c.allgather_dev = NULL;
        CHECK_ERR(lt_run_set_comm(r, &c), LT_ERR_ARG, "no allgather_dev");
        c.allgather_dev = allgather_dev;
        c.allreduce = NULL; /* the row-exact exchange */
        CHECK_ERR(lt_run_set_comm(r, &c), LT_ERR_ARG, "no allreduce");
        lt_run_free(r);

        /* a ZeRO-1 trainer: no whole step, no moments outside its shard */
        lt_model_load_opts lo = {0};
        lt_model *mdl = NULL;
        CHECK_OK(lt_model_load(o.model, &lo, &mdl));
        lt_train_config tc;
        CHECK_OK(lt_run_opts_train_config(&o, &mdl->config, &tc, NULL));
        tc.zero_ranks = 2;
        tc.zero_rank = 1;
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_create(mdl, &tc, &tr));
        if (tr) {
            CHECK_ERR(lt_trainer_step(tr, 1e-3f, NULL), LT_ERR_ARG, "lt_trainer_step_shard");
            lt_train_tensor t0;
            CHECK_OK(lt_trainer_tensor(tr, 0, &t0));
            float v = 0;
            CHECK_ERR(lt_trainer_read(tr, 0, LT_TENSOR_ADAM_M, 0, &v, 1), LT_ERR_ARG,
                      "rank 1 of 2");
            int64_t off = 0, n = 0, span = 0;
            lt_trainer_zero_shard(tr, &off, &n, &span);
            CHECK(off == n && span == 2 * n && n % 16 == 0, "shard [%lld, +%lld) of %lld",
                  (long long)off, (long long)n, (long long)span);
            lt_trainer_free(tr);
        }
        lt_model_free(mdl);
    }
    free(plain.w);
    for (int n = 1; n <= MAXR; n++) {
        free(red[n].w);
        free(zr[n].w);
    }
    free(rz2.w);
    free(rz3.w);
    free(rr3.w);
    free(rp.w);
    free(pz.w);
    LT_TEST_END();
}
