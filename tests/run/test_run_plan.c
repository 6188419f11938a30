/* test_run_plan.c - lt_run_plan, the memory plan `loratune tune` checks before it starts a
 * trial, against the plan the trainer of a real run with the same options was built from
 * (lt_trainer_plan; equal to its allocations, tests/train/test_plan.c): LoRA, DoRA and QLoRA
 * runs from one lt_run_shared with several batch sizes, lengths, ranks, targets and
 * checkpointing, max-seq-len auto (planned at the longest example: what the run picks when
 * memory allows), full fine-tuning (a run that loads its own model); and its refusals (batch
 * size auto, a rank the training configuration refuses). stories260K (HF folder), 40 WikiSQL
 * examples. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/run.h"
#include "lt_test.h"

static char g_data[600];

static void base(lt_run_opts *o) {
    lt_run_opts_default(o);
    lt_run_opts_set(o, "model", lt_fixture("stories260K-hf"));
    lt_run_opts_set(o, "data", g_data);
    lt_run_opts_set(o, "threads", "1");
    lt_run_opts_set(o, "iters", "1");
}

/* the plan the real run's trainer was built from */
static int64_t run_peak(const lt_run_shared *sh, const lt_run_opts *o, int *seq) {
    lt_run *r = NULL;
    lt_status s =
        o->method == LT_METHOD_FULL ? lt_run_create(o, &r) : lt_run_create_from(sh, o, &r);
    if (s) {
        fprintf(stderr, "run: %s\n", lt_errmsg());
        lt_run_free(r);
        return -1;
    }
    int64_t p = lt_trainer_plan(lt_run_trainer(r))->peak_bytes;
    *seq = lt_run_options(r)->max_seq_len;
    lt_run_free(r);
    return p;
}

int main(void) {
    const char *tmp = lt_tmpdir();
    snprintf(g_data, sizeof g_data, "%s/data", tmp);
    mkdir(g_data, 0777);
    char f[700];
    snprintf(f, sizeof f, "%s/train.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), f, 30);
    snprintf(f, sizeof f, "%s/valid.jsonl", g_data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/valid.jsonl"), f, 10);

    lt_run_opts o;
    base(&o);
    lt_run_shared *sh = NULL;
    CHECK_OK(lt_run_shared_load(&o, NULL, NULL, &sh));
    if (!sh) LT_TEST_END();

    struct {
        const char *method, *batch, *seq, *rank, *targets;
        int ckpt;
    } cases[] = {
        {"lora", "1", "64", "4", "q,v", 0},
        {"lora", "4", "128", "16", "all", 0},
        {"lora", "2", "auto", "8", "gate,up,down", 0},
        {"dora", "3", "96", "8", "q,k,v,o", 0},
        {"dora", "2", "auto", "4", "all", 1},
        {"qlora", "2", "64", "8", "all", 0},
        {"qlora", "5", "auto", "2", "q,v", 1},
        {"full", "2", "64", "8", "q,v", 0},
        {"full", "1", "auto", "8", "q,v", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lt_run_opts c;
        base(&c);
        lt_run_opts_set(&c, "method", cases[i].method);
        lt_run_opts_set(&c, "batch-size", cases[i].batch);
        lt_run_opts_set(&c, "max-seq-len", cases[i].seq);
        lt_run_opts_set(&c, "lora-rank", cases[i].rank);
        lt_run_opts_set(&c, "lora-targets", cases[i].targets);
        c.grad_checkpoint = cases[i].ckpt;
        lt_train_plan_t plan;
        CHECK_OK(lt_run_plan(sh, &c, &plan));
        int seq = 0;
        int64_t want = run_peak(sh, &c, &seq);
        CHECK(want > 0 && plan.peak_bytes == want,
              "case %zu (%s B%s T%s r%s %s): lt_run_plan %lld, the run's trainer %lld (T %d)", i,
              cases[i].method, cases[i].batch, cases[i].seq, cases[i].rank, cases[i].targets,
              (long long)plan.peak_bytes, (long long)want, seq);
    }
    /* a longer length plans more */
    lt_run_opts a, b;
    base(&a);
    base(&b);
    lt_run_opts_set(&a, "batch-size", "2");
    lt_run_opts_set(&a, "max-seq-len", "32");
    b = a;
    lt_run_opts_set(&b, "max-seq-len", "256");
    lt_train_plan_t pa, pb;
    CHECK_OK(lt_run_plan(sh, &a, &pa));
    CHECK_OK(lt_run_plan(sh, &b, &pb));
    CHECK(pb.peak_bytes > pa.peak_bytes, "T 256 %lld vs T 32 %lld", (long long)pb.peak_bytes,
          (long long)pa.peak_bytes);
    /* refusals */
    lt_run_opts bad;
    base(&bad);
    CHECK_ERR(lt_run_plan(sh, &bad, &pa), LT_ERR_ARG, "batch-size must be given");
    lt_run_opts_set(&bad, "batch-size", "2");
    lt_run_opts_set(&bad, "lora-layers", "9");
    CHECK_ERR(lt_run_plan(sh, &bad, &pa), LT_ERR_ARG, "lora-layers");
    CHECK_ERR(lt_run_plan(NULL, &a, &pa), LT_ERR_ARG, "shared");
    lt_run_shared_free(sh);
    LT_TEST_END();
}
