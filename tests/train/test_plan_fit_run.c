/* test_plan_fit_run.c - lt_train_plan_fit_run, the automatic sizes of a whole training run: what
 * the process holds besides the plan (resident set less the model's weights the plan counts) is
 * reserved out of the budget on top of the output-writing estimate; the result's plan plus that
 * reserve fits and one more row / token does not (checked with lt_train_plan_model itself); a
 * budget the reserve leaves too little of is LT_ERR_NOMEM naming both parts. The whole-run
 * check against measured peak RSS is tests/train/test_budget_grid.py. */
#include "loratune/model.h"
#include "loratune/train.h"
#include "lt_test.h"

static int64_t peak(const lt_model *m, const lt_train_config *c, int B, int T) {
    lt_train_config t = *c;
    t.batch_size = B;
    t.seq_len = T;
    lt_train_plan_t p;
    if (lt_train_plan_model(m, &t, &p)) return -1;
    return p.peak_bytes;
}

int main(void) {
    const int64_t MiB = 1 << 20;
    for (int lazy = 0; lazy < 2; lazy++) {
        lt_model_load_opts o = {.config_only = !lazy, .lazy = lazy};
        lt_model *m = NULL;
        CHECK_OK(lt_model_load(lt_fixture("stories260K/stories260K.gguf"), &o, &m));
        if (!m) break;
        for (int method = 0; method < 2; method++) {
            if (lazy && method) continue; /* full fine-tuning loads the model whole */
            lt_train_config c;
            lt_train_config_default(&c);
            c.method = method ? LT_METHOD_FULL : LT_METHOD_LORA;
            c.batch_size = 0;
            c.seq_len = 0;
            lt_train_plan_t p1;
            lt_train_config c1 = c;
            c1.batch_size = 1;
            c1.seq_len = 16;
            CHECK_OK(lt_train_plan_model(m, &c1, &p1));
            const int64_t held = 10 * MiB, resident = p1.model_bytes + held;
            const int64_t budget = p1.peak_bytes + 64 * MiB;
            int B0 = 0, T0 = 0, B = 0, T = 0;
            int64_t r0 = -1, r = -1;
            lt_train_plan_t p0, p;
            CHECK_OK(lt_train_plan_fit_model(m, &c, budget, 64, 512, &B0, &T0, &p0));
            CHECK_OK(lt_train_plan_fit_run(m, &c, budget, resident, 64, 512, &B, &T, &p, &r));
            /* the reserve: the held bytes (the model's weights are the plan's) + the outputs */
            CHECK(r >= held + (4 << 20) && r < held + 64 * MiB,
                  "lazy %d method %d: reserve %lld for %lld held", lazy, method, (long long)r,
                  (long long)held);
            CHECK(p.peak_bytes + r <= budget && peak(m, &c, B, T) == p.peak_bytes,
                  "lazy %d method %d: B %d T %d: plan %lld + reserve %lld vs budget %lld", lazy,
                  method, B, T, (long long)p.peak_bytes, (long long)r, (long long)budget);
            CHECK(B == 64 || peak(m, &c, B + 1, T) + r > budget, "B %d maximal", B);
            CHECK(T == 512 || B > 1 || peak(m, &c, B, T + 1) + r > budget, "T %d maximal", T);
            CHECK((int64_t)B * T <= (int64_t)B0 * T0 && p0.peak_bytes <= budget,
                  "the reserve can only shrink the sizes: %dx%d vs %dx%d without", B, T, B0, T0);
            /* resident below the model's bytes (pages not touched yet): nothing negative */
            CHECK_OK(lt_train_plan_fit_run(m, &c, budget, 0, 64, 512, &B, &T, &p, &r0));
            CHECK(r0 >= (4 << 20) && r0 < r, "reserve %lld with nothing resident", (long long)r0);
            /* too little left after the reserve: the message names the budget and both parts */
            CHECK_ERR(lt_train_plan_fit_run(m, &c, p1.peak_bytes + held / 2, resident, 64, 512, &B,
                                            &T, &p, &r),
                      LT_ERR_NOMEM, "the run holds besides");
            CHECK_ERR(lt_train_plan_fit_run(m, &c, 0, resident, 64, 512, &B, &T, &p, &r),
                      LT_ERR_ARG, "memory budget: expected > 0");
        }
        lt_model_free(m);
    }
    LT_TEST_END();
}
