/* test_faults_run.c - allocation fault injection over a whole training run (tests/lt_fault.h):
 * lt_run_create (options, lazy model, tokenizer, chat template, data, automatic sizes,
 * trainer, batchers), an evaluation, then lt_run_train for 2 steps into a fresh OUT
 * (checkpoint, run_config.yaml, PEFT + mlx-lm + GGUF adapters) and lt_run_free. For
 * N = 1, 2, ... the N-th allocation fails; each run must fail with LT_ERR_NOMEM and a message
 * (no crash, no leak) until N is past the last allocation.
 *
 * stories260K GGUF, 12 wikisql records (4 for validation), LoRA on q,k,v,o,down. Set-up and
 * evaluation (~940 allocations): every N, and the persistent variant (every allocation from N
 * on fails) too; with training and outputs (~1,600 allocations, ~730 output I/O calls, each
 * of which fails with EIO in its turn, almost all after the training): allocations every N to
 * 200, then a stride (350 runs in all); I/O every N to 100, then a stride (130 runs in all:
 * every N of each output's own writes is walked by test_faults_save). Files go to /dev/shm
 * when there is one (lt_fault_tmpdir). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loratune/run.h"
#include "lt_fault.h"
#include "lt_test.h"

typedef struct {
    lt_run_opts o;
    int train; /* also lt_run_train (o.out set) */
} run_case;

static lt_status create_run(void *ctx) {
    const run_case *c = ctx;
    lt_run *r = NULL;
    lt_status st = lt_run_create(&c->o, &r);
    lt_eval_result ev;
    if (!st) st = lt_run_evaluate(r, LT_SPLIT_VALID, 1, &ev);
    lt_run_outcome oc;
    if (!st && c->train) st = lt_run_train(r, &oc);
    lt_run_free(r);
    return st;
}

/* a fresh OUT for every run */
static lt_status clean_out(void *ctx) {
    const run_case *c = ctx;
    lt_fault_rmtree(c->o.out);
    return LT_OK;
}

int main(void) {
    const char *tmp = lt_fault_tmpdir();
    char data[600], p[700];
    snprintf(data, sizeof data, "%s/data", tmp);
    mkdir(data, 0755);
    snprintf(p, sizeof p, "%s/train.jsonl", data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), p, 12);
    snprintf(p, sizeof p, "%s/valid.jsonl", data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/valid.jsonl"), p, 4);

    lt_run_opts o;
    lt_run_opts_default(&o);
    CHECK_OK(lt_run_opts_set(&o, "model", lt_fixture("stories260K/stories260K.gguf")));
    CHECK_OK(lt_run_opts_set(&o, "data", data));
    CHECK_OK(lt_run_opts_set(&o, "batch-size", "2"));
    CHECK_OK(lt_run_opts_set(&o, "max-seq-len", "32"));
    CHECK_OK(lt_run_opts_set(&o, "iters", "2"));
    CHECK_OK(lt_run_opts_set(&o, "lora-targets", "q,k,v,o,down"));
    CHECK_OK(lt_run_opts_set(&o, "threads", "1"));
    run_case c = {o, 0};
    for (int persistent = 0; persistent <= 1; persistent++) {
        lt_fault_plan pl = {LT_FAULT_ALLOC, 0, 0, persistent, 1000000, 1000000};
        lt_fault_ops ops = {NULL, create_run, NULL, NULL};
        lt_fault_walk(persistent ? "run create (persistent)" : "run create", &pl, &ops, &c);
    }
    snprintf(p, sizeof p, "%s/out", tmp);
    CHECK_OK(lt_run_opts_set(&c.o, "out", p));
    c.train = 1;
    lt_fault_plan pl = {LT_FAULT_ALLOC, 0, 0, 0, 200, 350};
    lt_fault_ops ops = {clean_out, create_run, NULL, NULL};
    lt_fault_walk("run create + train + outputs", &pl, &ops, &c);
    lt_fault_plan io = {LT_FAULT_IO, LT_IO_ALL, EIO, 0, 100, 130};
    lt_fault_walk("run create + train + outputs: I/O EIO", &io, &ops, &c);
    lt_fault_rmtree(tmp);
    LT_TEST_END();
}
