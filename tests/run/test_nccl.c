/* test_nccl.c - multi-GPU data parallelism's NCCL path on one GPU, one rank (CTest label cuda;
 * docs/SCALE_OUT.md, "Multi-GPU over NCCL"). Multi-GPU machines are not lent, so what can run
 * is a world of 1: the real libnccl, communicator, stream and all-reduce on a real GPU.
 *
 * Skips (exit 77) with the reason: loratune built without CUDA or without NCCL (no nccl.h at
 * configure time), no GPU, or no libnccl.so.2 found (nccl.h: the loader's path, $LT_NCCL_LIB,
 * the build's wheel, python's site-packages).
 *   (a) collectives: a fresh unique id is not all zero; a communicator sets NCCL_NVLS_ENABLE=0
 *       when it was unset; fp32 all-reduce of a known buffer of 1000003 values (mixed
 *       magnitudes) leaves it bit for bit (the sum over one rank); the bf16 all-reduce leaves
 *       each value rounded to bf16, nearest even, bit for bit as lt_f32_to_bf16 rounds it (and
 *       some values did change: the conversion ran); allgather of 12345 host bytes returns
 *       them; device 99 is refused naming it.
 *   (b) the run: lt_run on the GPU, LoRA on all targets of stories260K (the GGUF), batch 3 x 48,
 *       grad-accum 2, 6 steps, evaluation every 3, no dropout: a plain run against the same
 *       run with the NCCL communicator (lt_run_comm.allreduce: the batched path; the whole
 *       micro-batch as one batch on this rank, the gradient span all-reduced in place):
 *       fp32 all-reduce: losses, gradient norms and validation losses within 1e-4 relative
 *       (the two runs differ only in the GPU's run-to-run rounding: the attention backward's
 *       atomics); bf16 all-reduce: within 2e-2 (the gradients rounded to bf16 once a step);
 *       the start event says "reduce": "allreduce", ranks 1. The same with the all-reduce in
 *       pieces, each queued on NCCL's stream as the backward finishes a layer
 *       (lt_nccl_allreduce_async, lt_nccl_join: the overlapped path), within the same bounds;
 *       and three pieces of the known buffer queued then joined give the bf16 rounding.
 *       ZeRO-1 (lt_run_comm.zero: the span reduce-scattered, AdamW on the rank's shard -- all of
 *       it with one rank -- and the shards all-gathered): fp32 within 1e-4 of the plain run,
 *       bf16 within 2e-2; its final checkpoint (the moments gathered through the device)
 *       verifies and equals the plain run's within 1e-2 of each tensor's largest value. The
 *       collectives alone: reduce-scatter of one rank leaves the buffer (fp32) or its bf16
 *       rounding (bf16), the device all-gather leaves it bit for bit.
 *   (c) the command (when $LORATUNE names the loratune binary; CTest sets it): `loratune train
 *       --device cuda --dist-init file:PATH --dist-reduce fp32` with RANK=0 WORLD_SIZE=1 against
 *       the plain command: the same losses within 1e-4, stderr naming NCCL's version; the same
 *       with --zero 1; and --dist-init without --device cuda refused (exit 2). */
#define _GNU_SOURCE
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loratune/backend.h"
#include "loratune/nccl.h"
#include "loratune/run.h"
#include "loratune/safetensors.h"
#include "ckpt_diff.h"
#include "lt_test.h"

#define MAXEV 64

typedef struct {
    double loss[MAXEV], gn[MAXEV], val[MAXEV];
    int n_step, n_eval, ranks, zero;
    long long opt_bytes; /* the start event's optimizer_bytes */
    char reduce[16];
} collect;

static void sink(void *ctx, const json_t *ev) {
    collect *c = ctx;
    const char *e = json_string_value(json_object_get(ev, "event"));
    if (!e) return;
    if (!strcmp(e, "step") && c->n_step < MAXEV) {
        c->loss[c->n_step] = json_number_value(json_object_get(ev, "loss"));
        c->gn[c->n_step++] = json_number_value(json_object_get(ev, "grad_norm"));
    } else if (!strcmp(e, "eval") && c->n_eval < MAXEV) {
        c->val[c->n_eval++] = json_number_value(json_object_get(ev, "val_loss"));
    } else if (!strcmp(e, "start")) {
        c->ranks = (int)json_integer_value(json_object_get(ev, "ranks"));
        c->zero = (int)json_integer_value(json_object_get(ev, "zero"));
        c->opt_bytes = (long long)json_integer_value(json_object_get(ev, "optimizer_bytes"));
        const char *rd = json_string_value(json_object_get(ev, "reduce"));
        snprintf(c->reduce, sizeof c->reduce, "%s", rd ? rd : "");
    }
}

static int gather(void *ctx, const void *send, void *recv, size_t bytes) {
    return lt_nccl_allgather(ctx, send, recv, bytes) != LT_OK;
}
static int reduce(void *ctx, float *buf, size_t n) {
    return lt_nccl_allreduce(ctx, buf, (int64_t)n) != LT_OK;
}
static int reduce_async(void *ctx, float *buf, size_t n) {
    return lt_nccl_allreduce_async(ctx, buf, (int64_t)n) != LT_OK;
}
static int join(void *ctx) {
    return lt_nccl_join(ctx) != LT_OK;
}
static int reduce_scatter(void *ctx, float *buf, size_t n) {
    return lt_nccl_reduce_scatter(ctx, buf, (int64_t)n) != LT_OK;
}
static int allgather_dev(void *ctx, float *buf, size_t n) {
    return lt_nccl_allgather_dev(ctx, buf, (int64_t)n) != LT_OK;
}

static char g_dir[512], g_data[1024];

static void opts(const char *out, lt_run_opts *o) {
    lt_run_opts_default(o);
    lt_run_opts_set(o, "model", lt_fixture("stories260K/stories260K.gguf"));
    lt_run_opts_set(o, "data", g_data);
    lt_run_opts_set(o, "device", "cuda");
    lt_run_opts_set(o, "iters", "6");
    lt_run_opts_set(o, "eval-every", "3");
    lt_run_opts_set(o, "batch-size", "3");
    lt_run_opts_set(o, "grad-accum", "2");
    lt_run_opts_set(o, "max-seq-len", "48");
    lt_run_opts_set(o, "pack", "true");
    lt_run_opts_set(o, "lora-dropout", "0");
    lt_run_opts_set(o, "lora-targets", "all");
    lt_run_opts_set(o, "lr", "0.005");
    lt_run_opts_set(o, "seed", "7");
    lt_run_opts_set(o, "out", out);
}

/* one run; nc NULL: plain; pieces 1: the all-reduce in pieces during the backward (async);
 * 2: ZeRO-1 (reduce-scatter, the sharded AdamW step, all-gather) */
static lt_status run_one(const char *name, lt_nccl *nc, int pieces, collect *c) {
    char out[1100];
    snprintf(out, sizeof out, "%s/%s", g_dir, name);
    lt_run_opts o;
    opts(out, &o);
    memset(c, 0, sizeof *c);
    lt_run *r = NULL;
    lt_run_comm comm = {.rank = 0, .size = 1, .allgather = gather, .ctx = nc,
                        .allreduce = reduce, .device = 0};
    if (pieces == 1) {
        comm.allreduce = reduce_async;
        comm.allreduce_wait = join;
    } else if (pieces == 2) {
        comm.zero = 1;
        comm.reduce_scatter = reduce_scatter;
        comm.allgather_dev = allgather_dev;
    }
    lt_status st = lt_run_new(&o, &r);
    if (!st) st = lt_run_add_sink(r, sink, c);
    if (!st && nc) st = lt_run_set_comm(r, &comm);
    if (!st) st = lt_run_prepare(r);
    lt_run_outcome oc;
    if (!st) st = lt_run_train(r, &oc);
    if (st) fprintf(stderr, "%s: %s\n", name, lt_errmsg());
    lt_run_free(r);
    return st;
}

/* the largest relative difference of b from a over steps, gradient norms and validation */
static double worst(const collect *a, const collect *b) {
    double w = 0;
    if (a->n_step != b->n_step || a->n_eval != b->n_eval || a->n_step == 0) return INFINITY;
    for (int i = 0; i < a->n_step; i++) {
        w = fmax(w, fabs(b->loss[i] - a->loss[i]) / fabs(a->loss[i]));
        w = fmax(w, fabs(b->gn[i] - a->gn[i]) / fabs(a->gn[i]));
    }
    for (int i = 0; i < a->n_eval; i++)
        w = fmax(w, fabs(b->val[i] - a->val[i]) / fabs(a->val[i]));
    return w;
}

/* the step losses of `loratune train ... --json` (stdout in file) */
static int read_losses(const char *file, double *loss, int max) {
    FILE *f = fopen(file, "r");
    char line[1 << 16];
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *ev = json_loads(line, 0, NULL);
        const char *e = ev ? json_string_value(json_object_get(ev, "event")) : NULL;
        if (e && !strcmp(e, "step") && n < max)
            loss[n++] = json_number_value(json_object_get(ev, "loss"));
        json_decref(ev);
    }
    if (f) fclose(f);
    return n;
}

static void check_cli(const char *bin) {
    char cmd[8192], common[4096];
    snprintf(common, sizeof common,
             "%s train --model %s --data %s --device cuda --iters 4 --batch-size 3 "
             "--grad-accum 2 --max-seq-len 48 --pack --lora-dropout 0 --lora-targets all "
             "--lr 0.005 --seed 7 --eval-every 0 --json --no-track",
             bin, lt_fixture("stories260K/stories260K.gguf"), g_data);
    snprintf(cmd, sizeof cmd, "%s --out %s/cli_plain > %s/cli_plain.jsonl 2> %s/cli_plain.err",
             common, g_dir, g_dir, g_dir);
    int rc = system(cmd);
    CHECK(rc == 0, "plain command: exit %d (%s/cli_plain.err)", rc, g_dir);
    snprintf(cmd, sizeof cmd,
             "RANK=0 WORLD_SIZE=1 %s --out %s/cli_nccl --dist-init file:%s/nccl-id "
             "--dist-reduce fp32 > %s/cli_nccl.jsonl 2> %s/cli_nccl.err",
             common, g_dir, g_dir, g_dir, g_dir);
    rc = system(cmd);
    CHECK(rc == 0, "--dist-init command: exit %d (%s/cli_nccl.err)", rc, g_dir);
    double a[MAXEV], b[MAXEV];
    char f[1200];
    snprintf(f, sizeof f, "%s/cli_plain.jsonl", g_dir);
    int na = read_losses(f, a, MAXEV);
    snprintf(f, sizeof f, "%s/cli_nccl.jsonl", g_dir);
    int nb = read_losses(f, b, MAXEV);
    double w = 0;
    for (int i = 0; i < na && i < nb; i++)
        w = fmax(w, fabs(b[i] - a[i]) / fabs(a[i]));
    printf("command: --dist-init (NCCL, fp32) vs plain: %d / %d steps, losses within %.3g\n", nb,
           na, w);
    CHECK(na == 4 && nb == 4 && w < 1e-4, "command: %d / %d steps, losses within %.3g", nb, na, w);
    char *err = NULL;
    size_t n = 0;
    snprintf(f, sizeof f, "%s/cli_nccl.err", g_dir);
    CHECK(!lt_file_read_all(f, &err, &n) && err && strstr(err, "over NCCL") &&
              strstr(err, "NCCL_NVLS_ENABLE=0"),
          "command: stderr does not name NCCL: %s", err ? err : "(none)");
    free(err);
    snprintf(cmd, sizeof cmd,
             "RANK=0 WORLD_SIZE=1 %s --out %s/cli_zero --dist-init file:%s/nccl-id-z "
             "--dist-reduce fp32 --zero 1 > %s/cli_zero.jsonl 2> %s/cli_zero.err",
             common, g_dir, g_dir, g_dir, g_dir);
    rc = system(cmd);
    CHECK(rc == 0, "--zero 1 command: exit %d (%s/cli_zero.err)", rc, g_dir);
    snprintf(f, sizeof f, "%s/cli_zero.jsonl", g_dir);
    nb = read_losses(f, b, MAXEV);
    w = 0;
    for (int i = 0; i < na && i < nb; i++)
        w = fmax(w, fabs(b[i] - a[i]) / fabs(a[i]));
    printf("command: --zero 1 vs plain: %d / %d steps, losses within %.3g\n", nb, na, w);
    CHECK(nb == 4 && w < 1e-4, "command --zero 1: %d / %d steps, losses within %.3g", nb, na, w);
    snprintf(cmd, sizeof cmd,
             "RANK=0 WORLD_SIZE=1 %s --out %s/cli_cpu --device cpu --dist-init file:%s/x "
             "> /dev/null 2> %s/cli_cpu.err",
             common, g_dir, g_dir, g_dir);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--dist-init with --device cpu: exit %d", rc);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    lt_backend *cuda = NULL;
    if (!lt_backend_cuda_compiled() || lt_backend_cuda_create(0, &cuda)) {
        printf("SKIP: %s\n", lt_backend_cuda_compiled() ? lt_errmsg()
                                                        : "loratune was built without CUDA");
        return 77;
    }
    int ver = 0;
    if (!lt_nccl_compiled() || lt_nccl_open(getenv("LT_NCCL_LIB"), &ver)) {
        printf("SKIP: %s\n", lt_errmsg());
        lt_backend_cuda_free(cuda);
        return 77;
    }
    printf("NCCL %d on %s\n", ver, cuda->desc);

    /* ---- (a) collectives, one rank ---- */
    unsigned char id[LT_NCCL_ID_BYTES] = {0}, zero[LT_NCCL_ID_BYTES] = {0};
    CHECK_OK(lt_nccl_unique_id(id));
    CHECK(memcmp(id, zero, sizeof id) != 0, "unique id is all zero");
    unsetenv("NCCL_NVLS_ENABLE");
    lt_nccl *c32 = NULL, *c16 = NULL, *bad = NULL;
    CHECK_OK(lt_nccl_create(0, id, 0, 1, 0, &c32));
    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    CHECK(nvls && !strcmp(nvls, "0"), "NCCL_NVLS_ENABLE is '%s' after lt_nccl_create",
          nvls ? nvls : "(unset)");
    CHECK_OK(lt_nccl_unique_id(id));
    CHECK_OK(lt_nccl_create(0, id, 0, 1, 1, &c16));
    CHECK_ERR(lt_nccl_create(99, id, 0, 1, 0, &bad), LT_ERR_ARG, "CUDA device 99");
    if (!c32 || !c16) LT_TEST_END();
    CHECK(lt_nccl_rank(c32) == 0 && lt_nccl_size(c32) == 1, "rank %d size %d", lt_nccl_rank(c32),
          lt_nccl_size(c32));

    const int64_t n = 1000003;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(sin((double)i) * pow(10.0, (double)(i % 7) - 3.0));
    float *d = cuda->op->alloc(cuda, (size_t)n * sizeof *d);
    cuda->op->set(cuda, d, x, (size_t)n * sizeof *d);
    CHECK_OK(lt_nccl_allreduce(c32, d, n));
    cuda->op->get(cuda, y, d, (size_t)n * sizeof *d);
    int64_t bad32 = 0;
    for (int64_t i = 0; i < n; i++)
        bad32 += memcmp(&x[i], &y[i], sizeof x[i]) != 0;
    CHECK(bad32 == 0, "fp32 all-reduce of one rank changed %lld of %lld values", (long long)bad32,
          (long long)n);
    cuda->op->set(cuda, d, x, (size_t)n * sizeof *d);
    CHECK_OK(lt_nccl_allreduce(c16, d, n));
    cuda->op->get(cuda, y, d, (size_t)n * sizeof *d);
    int64_t bad16 = 0, changed = 0;
    for (int64_t i = 0; i < n; i++) {
        float want = lt_bf16_to_f32(lt_f32_to_bf16(x[i]));
        bad16 += memcmp(&want, &y[i], sizeof want) != 0;
        changed += x[i] != y[i];
    }
    CHECK(bad16 == 0 && changed > n / 2,
          "bf16 all-reduce of one rank: %lld values are not x rounded to bf16; %lld changed",
          (long long)bad16, (long long)changed);
    /* in flight: three pieces queued, then joined (the staging grows between them) */
    cuda->op->set(cuda, d, x, (size_t)n * sizeof *d);
    const int64_t cut[4] = {0, 1000, 400000, n};
    for (int i = 0; i < 3; i++)
        CHECK_OK(lt_nccl_allreduce_async(c16, d + cut[i], cut[i + 1] - cut[i]));
    CHECK_OK(lt_nccl_join(c16));
    cuda->op->get(cuda, y, d, (size_t)n * sizeof *d);
    int64_t bad16p = 0;
    for (int64_t i = 0; i < n; i++) {
        float want = lt_bf16_to_f32(lt_f32_to_bf16(x[i]));
        bad16p += memcmp(&want, &y[i], sizeof want) != 0;
    }
    CHECK(bad16p == 0, "bf16 all-reduce in 3 pieces: %lld values are not x rounded to bf16",
          (long long)bad16p);
    /* ZeRO-1's collectives over one rank: the shard is everything */
    cuda->op->set(cuda, d, x, (size_t)n * sizeof *d);
    CHECK_OK(lt_nccl_reduce_scatter(c32, d, n));
    cuda->op->get(cuda, y, d, (size_t)n * sizeof *d);
    int64_t badrs = 0, badrs16 = 0, badag = 0;
    for (int64_t i = 0; i < n; i++)
        badrs += memcmp(&x[i], &y[i], sizeof x[i]) != 0;
    cuda->op->set(cuda, d, x, (size_t)n * sizeof *d);
    CHECK_OK(lt_nccl_reduce_scatter(c16, d, n));
    cuda->op->get(cuda, y, d, (size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++) {
        float want = lt_bf16_to_f32(lt_f32_to_bf16(x[i]));
        badrs16 += memcmp(&want, &y[i], sizeof want) != 0;
    }
    cuda->op->set(cuda, d, x, (size_t)n * sizeof *d);
    CHECK_OK(lt_nccl_allgather_dev(c16, d, n)); /* fp32 even on the bf16 communicator */
    cuda->op->get(cuda, y, d, (size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        badag += memcmp(&x[i], &y[i], sizeof x[i]) != 0;
    CHECK(badrs == 0 && badrs16 == 0 && badag == 0,
          "one rank: fp32 reduce-scatter changed %lld values, bf16 reduce-scatter left %lld not "
          "rounded to bf16, all-gather changed %lld",
          (long long)badrs, (long long)badrs16, (long long)badag);
    cuda->op->free(cuda, d);
    unsigned char gs[12345], gr[12345];
    for (size_t i = 0; i < sizeof gs; i++)
        gs[i] = (unsigned char)(i * 7 + 3);
    memset(gr, 0, sizeof gr);
    CHECK_OK(lt_nccl_allgather(c32, gs, gr, sizeof gs));
    CHECK(!memcmp(gs, gr, sizeof gs), "allgather of one rank: bytes differ");
    free(x);
    free(y);

    /* ---- (b) the run: plain vs the NCCL communicator ---- */
    snprintf(g_dir, sizeof g_dir, "%s", lt_tmpdir());
    snprintf(g_data, sizeof g_data, "%s/data", g_dir);
    mkdir(g_data, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/train.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), path, 24);
    snprintf(path, sizeof path, "%s/valid.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/valid.jsonl"), path, 7);
    collect cp, cf, cb;
    collect cfp, cbp, czf, czb;
    CHECK_OK(run_one("plain", NULL, 0, &cp));
    CHECK_OK(run_one("nccl_fp32", c32, 0, &cf));
    CHECK_OK(run_one("nccl_bf16", c16, 0, &cb));
    CHECK_OK(run_one("nccl_fp32_pieces", c32, 1, &cfp));
    CHECK_OK(run_one("nccl_bf16_pieces", c16, 1, &cbp));
    CHECK_OK(run_one("nccl_zero_fp32", c32, 2, &czf));
    CHECK_OK(run_one("nccl_zero_bf16", c16, 2, &czb));
    CHECK(cp.n_step == 6 && cp.n_eval == 3 && cp.loss[5] < cp.loss[0] - 0.1,
          "plain: %d steps, %d evals, losses %.4g -> %.4g", cp.n_step, cp.n_eval, cp.loss[0],
          cp.loss[5]);
    CHECK(cf.ranks == 1 && !strcmp(cf.reduce, "allreduce"), "start event: ranks %d reduce '%s'",
          cf.ranks, cf.reduce);
    double wf = worst(&cp, &cf), wb = worst(&cp, &cb);
    printf("run: NCCL fp32 all-reduce vs plain: within %.3g; bf16: within %.3g (relative; losses "
           "%.6f .. %.6f)\n",
           wf, wb, cp.loss[0], cp.loss[5]);
    CHECK(wf < 1e-4, "fp32 all-reduce vs plain: %.3g relative", wf);
    CHECK(wb < 2e-2, "bf16 all-reduce vs plain: %.3g relative", wb);
    double wfp = worst(&cp, &cfp), wbp = worst(&cp, &cbp);
    printf("run, all-reduce in pieces during the backward: fp32 within %.3g, bf16 within %.3g\n",
           wfp, wbp);
    CHECK(wfp < 1e-4, "fp32 all-reduce in pieces vs plain: %.3g relative", wfp);
    CHECK(wbp < 2e-2, "bf16 all-reduce in pieces vs plain: %.3g relative", wbp);
    /* ZeRO-1 on one rank: the shard is the whole state, so the plain run's numbers (within the
     * same bounds), and the optimizer bytes of the whole (padded) state */
    double wzf = worst(&cp, &czf), wzb = worst(&cp, &czb);
    printf("run, ZeRO-1: fp32 within %.3g, bf16 within %.3g; optimizer %lld bytes (without "
           "ZeRO-1: the plain run's trainer)\n",
           wzf, wzb, czf.opt_bytes);
    CHECK(czf.zero == 1 && czf.opt_bytes > 0 && cf.zero == 0, "ZeRO-1: start zero %d, "
          "optimizer bytes %lld; without: zero %d", czf.zero, czf.opt_bytes, cf.zero);
    CHECK(wzf < 1e-4, "ZeRO-1 fp32 vs plain: %.3g relative", wzf);
    CHECK(wzb < 2e-2, "ZeRO-1 bf16 vs plain: %.3g relative", wzb);
    { /* its checkpoint (the moments gathered from the device) against the plain run's */
        char fa[1200], fb[1200];
        snprintf(fa, sizeof fa, "%s/plain/checkpoints/step-00000006.safetensors", g_dir);
        snprintf(fb, sizeof fb, "%s/nccl_zero_fp32/checkpoints/step-00000006.safetensors", g_dir);
        CHECK_OK(lt_checkpoint_verify(fb));
        int moments = 0;
        const double wc = ckpt_diff(fa, fb, &moments);
        printf("run, ZeRO-1's checkpoint vs the plain run's: within %.3g of each tensor's "
               "largest value (%d moment tensors)\n", wc, moments);
        CHECK(wc < 1e-2 && moments > 0, "ZeRO-1's checkpoint vs plain: %.3g, %d moment tensors",
              wc, moments);
    }

    /* ---- (c) the command ---- */
    const char *bin = getenv("LORATUNE");
    if (bin && *bin)
        check_cli(bin);
    else
        printf("(c) skipped: LORATUNE (the loratune binary) not set\n");

    lt_nccl_free(c32, 0);
    lt_nccl_free(c16, 0);
    lt_backend_cuda_free(cuda);
    char rm[700];
    snprintf(rm, sizeof rm, "rm -rf '%s'", g_dir);
    if (system(rm)) fprintf(stderr, "could not remove %s\n", g_dir);
    LT_TEST_END();
}
