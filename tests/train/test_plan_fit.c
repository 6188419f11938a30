/* test_plan_fit.c - automatic batch size / sequence length (lt_train_plan_fit): the result's
 * plan fits the budget and one more row or token does not (checked with lt_train_plan itself,
 * which tests/train/test_plan*.c check against the trainer's allocation and bench/ against
 * measured peak RSS); given sizes are kept; a budget below the smallest plan is a clear error. */
#include "loratune/train.h"
#include "lt_test.h"

static int64_t peak(const lt_model_config *mc, const lt_train_config *c, int B, int T) {
    lt_train_config t = *c;
    t.batch_size = B;
    t.seq_len = T;
    lt_train_plan_t p;
    if (lt_train_plan(mc, &t, &p)) return -1;
    return p.peak_bytes;
}

int main(void) {
    lt_model_config mc;
    CHECK_OK(lt_model_config_load_hf(lt_fixture("stories260K-hf/config.json"), &mc));
    /* SmolLM2-135M's shape, from its published configuration */
    lt_model_config sm = mc;
    sm.dim = 576, sm.ffn_dim = 1536, sm.n_layers = 30, sm.n_heads = 9, sm.n_kv_heads = 3;
    sm.head_dim = 64, sm.vocab_size = 49152, sm.max_seq_len = 8192, sm.tied_embeddings = 1;
    CHECK_OK(lt_model_config_validate(&sm, "SmolLM2-135M shape"));

    const lt_model_config *models[2] = {&mc, &sm};
    const int64_t budgets[3] = {300LL << 20, 2LL << 30, 8LL << 30};
    for (int mi = 0; mi < 2; mi++) {
        for (int bi = 0; bi < 3; bi++) {
            for (int ck = 0; ck < 2; ck++) {
                lt_train_config c;
                lt_train_config_default(&c);
                c.grad_checkpoint = ck;
                c.lora.targets = LT_TARGET_ALL;
                c.batch_size = 0;
                c.seq_len = 0;
                int B = 0, T = 0;
                lt_train_plan_t p;
                lt_status s = lt_train_plan_fit(models[mi], &c, budgets[bi], 64, 2048, &B, &T, &p);
                if (s) {
                    CHECK(s == LT_ERR_NOMEM && peak(models[mi], &c, 1, 16) > budgets[bi],
                          "model %d budget %d: refused only when the smallest plan does not fit",
                          mi, bi);
                    continue;
                }
                CHECK(p.peak_bytes <= budgets[bi] && p.peak_bytes == peak(models[mi], &c, B, T),
                      "model %d budget %d ck %d: B=%d T=%d plan %lld fits", mi, bi, ck, B, T,
                      (long long)p.peak_bytes);
                CHECK(T == 2048 || peak(models[mi], &c, 1, T + 1) > budgets[bi],
                      "model %d budget %d ck %d: T=%d is the largest at batch 1", mi, bi, ck, T);
                CHECK(B == 64 || peak(models[mi], &c, B + 1, T) > budgets[bi],
                      "model %d budget %d ck %d: B=%d is the largest at T=%d", mi, bi, ck, B, T);
            }
        }
    }
    /* given sizes are kept; only the other one is searched */
    lt_train_config c;
    lt_train_config_default(&c);
    c.batch_size = 3;
    c.seq_len = 0;
    int B = 0, T = 0;
    CHECK_OK(lt_train_plan_fit(&sm, &c, 2LL << 30, 64, 4096, &B, &T, NULL));
    CHECK(B == 3 && T >= 16 && peak(&sm, &c, 3, T) <= (2LL << 30) &&
              (T == 4096 || peak(&sm, &c, 3, T + 1) > (2LL << 30)),
          "batch 3 given: T=%d searched at batch 3", T);
    c.batch_size = 0;
    c.seq_len = 256;
    CHECK_OK(lt_train_plan_fit(&sm, &c, 2LL << 30, 64, 4096, &B, &T, NULL));
    CHECK(T == 256 && B >= 1, "seq 256 given: B=%d", B);
    /* a budget below the smallest plan */
    c.seq_len = 0;
    CHECK_ERR(lt_train_plan_fit(&sm, &c, 1 << 20, 64, 4096, &B, &T, NULL), LT_ERR_NOMEM,
              "below the smallest plan (batch 1, sequence 16)");
    CHECK_ERR(lt_train_plan_fit(&sm, &c, 0, 64, 4096, &B, &T, NULL), LT_ERR_ARG,
              "memory budget: expected > 0");
    LT_TEST_END();
}
