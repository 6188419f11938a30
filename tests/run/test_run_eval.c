/* test_run_eval.c - the run's evaluation (lt_run_evaluate: batched, padded or packed rows
 * through the trainer's forward) against an independent computation: every example alone
 * through the inference forward (lt_model_forward, src/model/, checked against transformers
 * elsewhere) with the cross-entropy summed here in double. Also with a trained adapter, loaded
 * back from the PEFT folder the run wrote (lt_adapter_delta_create on the inference side,
 * --adapter on the run side). stories260K, a few examples of wikisql. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "loratune/adapter.h"
#include "loratune/model.h"
#include "loratune/run.h"
#include "loratune/tokenizer.h"
#include "lt_test.h"

/* Sum of -log p(target) over the loss tokens of split s, each example alone. */
static void reference(const lt_model *m, const lt_model_delta *delta, const lt_data *d, lt_split s,
                      double *sum, int64_t *count) {
    *sum = 0;
    *count = 0;
    int V = m->config.vocab_size;
    for (int64_t i = 0; i < lt_data_count(d, s); i++) {
        const lt_example *ex = lt_data_example(d, s, i);
        lt_kv_cache *kv = NULL;
        float *logits = malloc((size_t)ex->n * V * sizeof(float));
        CHECK_OK(lt_kv_cache_create(m, ex->n, ex->n, &kv));
        CHECK_OK(lt_model_forward(m, delta, kv, ex->tokens, ex->n, 0, logits, 1));
        for (int t = 1; t < ex->n; t++) {
            if (!ex->mask[t]) continue;
            const float *l = logits + (size_t)(t - 1) * V;
            double mx = l[0];
            for (int v = 1; v < V; v++)
                mx = l[v] > mx ? l[v] : mx;
            double z = 0;
            for (int v = 0; v < V; v++)
                z += exp((double)l[v] - mx);
            *sum += mx + log(z) - (double)l[ex->tokens[t]];
            (*count)++;
        }
        free(logits);
        lt_kv_cache_free(kv);
    }
}

int main(void) {
    const char *dir = lt_tmpdir();
    char data[1024], path[1100], out[1100];
    snprintf(data, sizeof data, "%s/data", dir);
    mkdir(data, 0755);
    snprintf(path, sizeof path, "%s/train.jsonl", data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/train.jsonl"), path, 24);
    snprintf(path, sizeof path, "%s/valid.jsonl", data);
    lt_head_lines(lt_fixture("datasets/wikisql-mlx/valid.jsonl"), path, 9);
    snprintf(out, sizeof out, "%s/out", dir);

    lt_model *m = NULL;
    CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), NULL, &m));
    if (!m) LT_TEST_END();

    for (int pack = 0; pack <= 1; pack++) {
        lt_run_opts o;
        lt_run_opts_default(&o);
        CHECK_OK(lt_run_opts_set(&o, "model", lt_fixture("stories260K/stories260K.gguf")));
        CHECK_OK(lt_run_opts_set(&o, "data", data));
        CHECK_OK(lt_run_opts_set(&o, "batch-size", "3"));
        CHECK_OK(lt_run_opts_set(&o, "max-seq-len", "48")); /* truncates most examples */
        CHECK_OK(lt_run_opts_set(&o, "pack", pack ? "true" : "false"));
        CHECK_OK(lt_run_opts_set(&o, "threads", "1"));
        /* the references are the fp32 forward: the run computes in fp32 too (bf16 compute is
         * checked against PyTorch autocast in test_trainer_golden) */
        CHECK_OK(lt_run_opts_set(&o, "compute-dtype", "f32"));
        lt_run *r = NULL;
        CHECK_OK(lt_run_create(&o, &r));
        if (!r) break;
        lt_eval_result ev;
        CHECK_OK(lt_run_evaluate(r, LT_SPLIT_VALID, 0, &ev));
        double ref;
        int64_t cnt;
        reference(m, NULL, lt_run_data(r), LT_SPLIT_VALID, &ref, &cnt);
        CHECK(ev.tokens == cnt && cnt > 100, "pack %d: tokens %lld, reference %lld", pack,
              (long long)ev.tokens, (long long)cnt);
        CHECK(fabs(ev.loss_sum - ref) <= 1e-5 * ref, "pack %d: loss sum %.9g, reference %.9g", pack,
              ev.loss_sum, ref);
        CHECK(fabs(ev.ppl - exp(ref / cnt)) <= 1e-5 * ev.ppl, "pack %d: ppl", pack);
        printf("pack %d: val loss %.7f (reference %.7f, %lld tokens)\n", pack, ev.loss, ref / cnt,
               (long long)cnt);
        /* --eval-batches: the first batches only */
        lt_eval_result e1;
        CHECK_OK(lt_run_evaluate(r, LT_SPLIT_VALID, 1, &e1));
        CHECK(e1.batches == 1 && e1.tokens < ev.tokens, "eval-batches 1");

        if (!pack) { /* train a little, then compare with the saved adapter applied */
            CHECK_OK(lt_run_opts_set(&o, "out", out));
            CHECK_OK(lt_run_opts_set(&o, "iters", "6"));
            CHECK_OK(lt_run_opts_set(&o, "lr", "0.01"));
            CHECK_OK(lt_run_opts_set(&o, "lora-targets", "q,k,v,o,down"));
            CHECK_OK(lt_run_opts_set(&o, "eval-every", "0"));
            lt_run_free(r);
            r = NULL;
            CHECK_OK(lt_run_create(&o, &r));
            lt_run_outcome oc;
            if (r) CHECK_OK(lt_run_train(r, &oc));
            lt_eval_result trained;
            if (r) CHECK_OK(lt_run_evaluate(r, LT_SPLIT_VALID, 0, &trained));
            lt_run_free(r);
            r = NULL;
            CHECK(trained.loss < ev.loss - 0.05, "training lowered val loss: %g -> %g", ev.loss,
                  trained.loss);

            lt_run_opts oa;
            lt_run_opts_default(&oa);
            CHECK_OK(lt_run_opts_set(&oa, "model", lt_fixture("stories260K/stories260K.gguf")));
            CHECK_OK(lt_run_opts_set(&oa, "data", data));
            CHECK_OK(lt_run_opts_set(&oa, "adapter", out));
            CHECK_OK(lt_run_opts_set(&oa, "compute-dtype", "f32"));
            CHECK_OK(lt_run_opts_set(&oa, "batch-size", "2"));
            CHECK_OK(lt_run_opts_set(&oa, "max-seq-len", "48"));
            CHECK_OK(lt_run_opts_set(&oa, "threads", "1"));
            CHECK_OK(lt_run_create(&oa, &r));
            lt_eval_result ea;
            if (r) CHECK_OK(lt_run_evaluate(r, LT_SPLIT_VALID, 0, &ea));
            lt_adapter *a = NULL;
            CHECK_OK(lt_adapter_load(out, &m->config, &a));
            lt_model_delta *dl = NULL;
            CHECK_OK(lt_adapter_delta_create(a, m, &dl));
            double refa = 0;
            int64_t cnta = 0;
            if (r) reference(m, dl, lt_run_data(r), LT_SPLIT_VALID, &refa, &cnta);
            lt_adapter_delta_free(dl);
            lt_adapter_free(a);
            CHECK(r && ea.tokens == cnta && fabs(ea.loss_sum - refa) <= 1e-5 * refa &&
                      fabs(ea.loss - trained.loss) <= 1e-5 * trained.loss,
                  "adapter: loss %.9g, reference %.9g, in-run %.9g", ea.loss, refa / cnta,
                  trained.loss);
            printf("adapter: val loss %.7f (reference %.7f, in-run %.7f)\n", ea.loss, refa / cnta,
                   trained.loss);
        }
        lt_run_free(r);
    }
    lt_model_free(m);
    LT_TEST_END();
}
