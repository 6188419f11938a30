/* test_sampler.c - sampling: seeded reproducibility, greedy equivalences (temperature 0,
 * top-k 1, tiny top-p), and the sampled frequencies against the distribution transformers'
 * warpers define (softmax(logits / T), top-k with ties kept, top-p on the ascending cumulative
 * sum), with a chi-square bound; fixed seeds keep it deterministic. */
#include "loratune/sampler.h"
#include "lt_test.h"

static double chi2(const int *counts, const double *p, int n, int total) {
    double x = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] == 0) {
            x += counts[i] ? 1e9 : 0;
            continue;
        }
        double e = p[i] * total, d = counts[i] - e;
        x += d * d / e;
    }
    return x;
}

static void sample_counts(const lt_sampler_params *sp, const float *logits, int n, int total,
                          int *counts) {
    lt_sampler *s = NULL;
    CHECK_OK(lt_sampler_create(sp, n, &s));
    float buf[64];
    memset(counts, 0, sizeof(int) * n);
    for (int k = 0; k < total && s; k++) {
        memcpy(buf, logits, sizeof(float) * n);
        int32_t id = lt_sampler_sample(s, buf);
        if (id >= 0 && id < n) counts[id]++;
    }
    lt_sampler_free(s);
}

int main(void) {
    enum { V = 40 };
    float logits[V], buf[V];
    uint64_t x = 99;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ULL + 1;
        logits[i] = (float)((x >> 40) % 1000) / 100.0f - 5.0f;
    }
    /* same seed -> same ids; another seed -> another sequence */
    lt_sampler_params sp = {.temperature = 1.0f, .seed = 42};
    int32_t a[300], b[300], c[300];
    lt_sampler *s = NULL;
    for (int run = 0; run < 3; run++) {
        sp.seed = run == 2 ? 43 : 42;
        CHECK_OK(lt_sampler_create(&sp, V, &s));
        for (int k = 0; k < 300 && s; k++) {
            memcpy(buf, logits, sizeof buf);
            (run == 0 ? a : run == 1 ? b : c)[k] = lt_sampler_sample(s, buf);
        }
        lt_sampler_free(s);
    }
    CHECK(!memcmp(a, b, sizeof a), "same seed, same ids");
    CHECK(memcmp(a, c, sizeof a) != 0, "another seed, other ids");

    /* greedy equivalences on many random logit vectors */
    int greedy_ok = 1;
    lt_sampler *g0 = NULL, *gk = NULL, *gp = NULL;
    lt_sampler_params p0 = {.temperature = 0}, pk = {.temperature = 1.3f, .top_k = 1, .seed = 1},
                      pp = {.temperature = 0.8f, .top_p = 1e-6f, .seed = 2};
    CHECK_OK(lt_sampler_create(&p0, V, &g0));
    CHECK_OK(lt_sampler_create(&pk, V, &gk));
    CHECK_OK(lt_sampler_create(&pp, V, &gp));
    for (int r = 0; r < 200 && g0 && gk && gp; r++) {
        float l[V], l1[V], l2[V], l3[V];
        int best = 0;
        for (int i = 0; i < V; i++) {
            x = x * 6364136223846793005ULL + 1;
            l[i] = (float)((x >> 33) % 100000) / 7919.0f;
            if (l[i] > l[best]) best = i;
        }
        memcpy(l1, l, sizeof l);
        memcpy(l2, l, sizeof l);
        memcpy(l3, l, sizeof l);
        if (lt_sampler_sample(g0, l1) != best || lt_sampler_sample(gk, l2) != best ||
            lt_sampler_sample(gp, l3) != best)
            greedy_ok = 0;
    }
    CHECK(greedy_ok, "temperature 0, top-k 1 and top-p 1e-6 all pick the argmax");
    float tie[V] = {0.5f, 2.0f, 2.0f, 1.0f};
    CHECK(lt_sampler_sample(g0, tie) == 1, "greedy takes the first of tied maxima");
    lt_sampler_free(g0);
    lt_sampler_free(gk);
    lt_sampler_free(gp);

    /* temperature: frequencies follow softmax(logits / T). 7 degrees of freedom: the 0.9999
     * quantile of chi2(7) is 29.9. */
    float l8[8] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -2.0f, 0.7f};
    double p[8], sum = 0;
    float T = 0.7f;
    for (int i = 0; i < 8; i++)
        sum += p[i] = exp(l8[i] / T);
    for (int i = 0; i < 8; i++)
        p[i] /= sum;
    int counts[8];
    lt_sampler_params st = {.temperature = T, .seed = 7};
    sample_counts(&st, l8, 8, 40000, counts);
    double x2 = chi2(counts, p, 8, 40000);
    CHECK(x2 < 29.9, "temperature sampling chi2 = %g", x2);
    /* and a wrong distribution (T = 1) must be rejected by the same bound */
    double q[8];
    sum = 0;
    for (int i = 0; i < 8; i++)
        sum += q[i] = exp(l8[i]);
    for (int i = 0; i < 8; i++)
        q[i] /= sum;
    CHECK(chi2(counts, q, 8, 40000) > 100, "the test can tell T=0.7 from T=1");

    /* top-k 3: only the three largest, renormalised */
    lt_sampler_params tk = {.temperature = 1.0f, .top_k = 3, .seed = 8};
    sample_counts(&tk, l8, 8, 30000, counts);
    double pk3[8] = {0};
    double z = exp(2.0) + exp(1.5) + exp(1.0);
    pk3[3] = exp(2.0) / z;
    pk3[5] = exp(1.5) / z;
    pk3[0] = exp(1.0) / z;
    x2 = chi2(counts, pk3, 8, 30000);
    CHECK(x2 < 1e8 && x2 < 29.9, "top-k 3 chi2 = %g", x2);
    /* top-k keeps ties with the k-th value (transformers: scores < kth are removed) */
    float l4[4] = {1.0f, 1.0f, 1.0f, 0.0f};
    lt_sampler_params t1 = {.temperature = 1.0f, .top_k = 1, .seed = 9};
    sample_counts(&t1, l4, 4, 3000, counts);
    CHECK(counts[0] > 800 && counts[1] > 800 && counts[2] > 800 && counts[3] == 0,
          "top-k ties kept: %d %d %d %d", counts[0], counts[1], counts[2], counts[3]);

    /* top-p 0.75 on probabilities {0.5, 0.3, 0.15, 0.05}: ascending cumsum 0.05, 0.2, 0.5, 1
     * -> drop cum <= 0.25 -> keep {0.5, 0.3} renormalised */
    float lp[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    lt_sampler_params tp = {.temperature = 1.0f, .top_p = 0.75f, .seed = 10};
    sample_counts(&tp, lp, 4, 20000, counts);
    double pp2[4] = {0, 0.5 / 0.8, 0, 0.3 / 0.8};
    x2 = chi2(counts, pp2, 4, 20000);
    CHECK(x2 < 21.1, "top-p chi2 = %g (counts %d %d %d %d)", x2, counts[0], counts[1], counts[2],
          counts[3]);
    /* top-p 0.9: drop cum <= 0.1 -> only the 0.05 token goes */
    tp.top_p = 0.9f;
    sample_counts(&tp, lp, 4, 20000, counts);
    double pp3[4] = {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95};
    x2 = chi2(counts, pp3, 4, 20000);
    CHECK(x2 < 21.1, "top-p 0.9 chi2 = %g", x2);

    /* a tiny temperature behaves like greedy instead of overflowing */
    lt_sampler_params tiny = {.temperature = 1e-30f, .top_p = 0.9f, .seed = 12};
    CHECK_OK(lt_sampler_create(&tiny, 8, &s));
    if (s) {
        memcpy(buf, l8, sizeof l8);
        CHECK(lt_sampler_sample(s, buf) == 3, "temperature 1e-30 picks the argmax");
        tiny.top_p = 0;
        lt_sampler_free(s);
        CHECK_OK(lt_sampler_create(&tiny, 8, &s));
        memcpy(buf, l8, sizeof l8);
        CHECK(s && lt_sampler_sample(s, buf) == 3, "temperature 1e-30 without top-p too");
    }
    lt_sampler_free(s);

    /* uniform doubles in [0, 1) */
    lt_sampler_params su = {.temperature = 1, .seed = 11};
    CHECK_OK(lt_sampler_create(&su, 2, &s));
    double mean = 0, lo = 1, hi = 0;
    for (int k = 0; k < 100000 && s; k++) {
        double u = lt_sampler_uniform(s);
        mean += u;
        lo = fmin(lo, u);
        hi = fmax(hi, u);
    }
    mean /= 100000;
    CHECK(lo >= 0 && hi < 1 && fabs(mean - 0.5) < 0.005, "uniform: [%g, %g] mean %g", lo, hi, mean);
    lt_sampler_free(s);
    lt_sampler_params bad = {.temperature = NAN};
    CHECK_ERR(lt_sampler_create(&bad, 4, &s), LT_ERR_ARG, "temperature");
    LT_TEST_END();
}
