/* test_tpe.c - the TPE sampler (src/tune/tpe.c) against Optuna's: the log density of each
 * parameter's Parzen estimator (tests/data/tune/tpe_goldens.json, written by
 * tools/gen_tpe_goldens.py from optuna's _ParzenEstimator with TPESampler's defaults) for a
 * float, a log float, an int, a log int and a categorical with 0, 1, 2, 7 and 40 observations,
 * and of the multivariate (joint) estimator of all five with 0, 3 and 30; the split of the
 * trials into "below" and "above" (tpe_split_goldens.json, tools/gen_tpe_split_goldens.py:
 * optuna's _split_trials, pruned trials filling "below" when too few are complete);
 * then the sampler itself through a study: deterministic in the seed, every value inside the
 * space, and on (x - 7.3)^2 plus 4 unless a categorical is "b", its best value after 40 trials,
 * over 8 seeds, is less than half random search's and better on at least 6 of them. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loratune/tune.h"
#include "lt_test.h"
#include "tune/space.h"
#include "tune/tpe.h"

static void golden_case(const json_t *c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    json_t *sj = json_pack("{s:O}", name, json_object_get(c, "space"));
    lt_space sp;
    memset(&sp, 0, sizeof sp);
    CHECK_OK(lt_space_parse(sj, "space", &sp));
    json_decref(sj);
    const json_t *jo = json_object_get(c, "obs"), *jx = json_object_get(c, "x"),
                 *jl = json_object_get(c, "log_pdf");
    const int n = (int)json_array_size(jo);
    double obs[n + 1];
    for (int i = 0; i < n; i++) obs[i] = json_number_value(json_array_get(jo, (size_t)i));
    lt_tpe_pe pe;
    CHECK_OK(lt_tpe_pe_build(&sp.p[0], obs, n, &pe));
    double worst = 0;
    for (size_t i = 0; i < json_array_size(jx); i++) {
        const double x = json_number_value(json_array_get(jx, i));
        const double want = json_number_value(json_array_get(jl, i));
        const double got = lt_tpe_pe_log_pdf(&pe, x);
        const double e = fabs(got - want);
        if (!(e <= worst)) worst = e;
        CHECK(e <= 1e-9 * (1 + fabs(want)), "%s with %d observations: log pdf(%.17g) = %.17g, "
              "optuna %.17g", name, n, x, got, want);
    }
    printf("%-3s %2d observations: worst |log pdf - optuna's| %.2e\n", name, n, worst);
    lt_tpe_pe_free(&pe);
    lt_space_free(&sp);
}

/* the joint estimator of all five parameters (kernel j = observation j in each) */
static void joint_case(const json_t *space, const json_t *c) {
    lt_space sp;
    memset(&sp, 0, sizeof sp);
    CHECK_OK(lt_space_parse(space, "space", &sp));
    const json_t *jo = json_object_get(c, "obs"), *jx = json_object_get(c, "x");
    const int n = (int)json_array_size(json_object_get(jo, sp.p[0].name));
    lt_tpe_pe pe[sp.n];
    for (int q = 0; q < sp.n; q++) {
        const json_t *a = json_object_get(jo, sp.p[q].name);
        double obs[n + 1];
        for (int i = 0; i < n; i++) obs[i] = json_number_value(json_array_get(a, (size_t)i));
        CHECK_OK(lt_tpe_pe_build(&sp.p[q], obs, n, &pe[q]));
    }
    const json_t *jl = json_object_get(c, "log_pdf");
    double worst = 0;
    for (size_t i = 0; i < json_array_size(jl); i++) {
        double x[sp.n];
        for (int q = 0; q < sp.n; q++)
            x[q] = json_number_value(json_array_get(json_object_get(jx, sp.p[q].name), i));
        const double want = json_number_value(json_array_get(jl, i));
        const double got = lt_tpe_joint_log_pdf(pe, sp.n, x);
        const double e = fabs(got - want);
        if (!(e <= worst)) worst = e;
        CHECK(e <= 1e-9 * (1 + fabs(want)), "joint, %d observations, point %zu: log pdf %.17g, "
              "optuna %.17g", n, i, got, want);
    }
    printf("joint (%d parameters) %2d observations: worst |log pdf - optuna's| %.2e\n", sp.n, n,
           worst);
    for (int q = 0; q < sp.n; q++) lt_tpe_pe_free(&pe[q]);
    lt_space_free(&sp);
}

static double f1(double x) {
    return (x - 7.3) * (x - 7.3);
}

/* a study of `trials` trials with sampler k on f1 over x in [-10, 20] plus a categorical that
 * matters (choice "b" adds 0, the others 4); the asked xs go to xs; returns the best value */
static double run_study(const char *dir, lt_sampler_kind k, uint64_t seed, int trials,
                        double *xs) {
    lt_study_options o = {0};
    o.sampler = k;
    o.seed = seed;
    lt_study *s = NULL;
    CHECK_OK(lt_study_create(dir,
                             "{\"x\": {\"type\": \"float\", \"low\": -10, \"high\": 20}, "
                             "\"c\": {\"type\": \"categorical\", \"choices\": [\"a\", \"b\", "
                             "\"c\"]}}",
                             &o, &s));
    double best = INFINITY;
    for (int t = 0; s && t < trials; t++) {
        int num = -1;
        double x = NAN;
        char *c = NULL;
        CHECK_OK(lt_study_ask(s, &num));
        CHECK_OK(lt_study_param_number(s, num, "x", &x));
        CHECK_OK(lt_study_param_choice_json(s, num, "c", &c));
        CHECK(x >= -10 && x <= 20 && c, "trial %d: x %g outside [-10, 20] or no choice", t, x);
        const double v = f1(x) + (c && !strcmp(c, "\"b\"") ? 0 : 4);
        free(c);
        xs[t] = x;
        if (v < best) best = v;
        CHECK_OK(lt_study_tell(s, num, LT_TRIAL_COMPLETE, v));
    }
    lt_study_close(s);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "%s", cmd);
    return best;
}

/* The split into "below" and "above" against Optuna's _split_trials (tpe_split_goldens.json,
 * from tools/gen_tpe_split_goldens.py): the same trial numbers on each side. */
static int split_case(const json_t *c) {
    const json_t *trials = json_object_get(c, "trials");
    const int maximize = !strcmp(json_string_value(json_object_get(c, "direction")), "maximize");
    const size_t nt = json_array_size(trials);
    int below[nt + 1], above[nt + 1], nb = -1, na = -1, pruned_below = 0;
    CHECK_OK(lt_tpe_split(trials, maximize, below, &nb, above, &na));
    const json_t *sides[2] = {json_object_get(c, "below"), json_object_get(c, "above")};
    const int *got[2] = {below, above}, ngot[2] = {nb, na};
    for (int k = 0; k < 2; k++) {
        int same = (size_t)ngot[k] == json_array_size(sides[k]);
        for (int j = 0; same && j < ngot[k]; j++)
            same = got[k][j] == (int)json_integer_value(json_array_get(sides[k], (size_t)j));
        CHECK(same, "%zu trials, %s: %s has %d trials, Optuna's %zu (or other ones)", nt,
              maximize ? "maximize" : "minimize", k ? "above" : "below", ngot[k],
              json_array_size(sides[k]));
    }
    for (int j = 0; j < nb; j++)
        pruned_below += !strcmp(json_string_value(json_object_get(
                                    json_array_get(trials, (size_t)below[j]), "state")),
                                "pruned");
    return pruned_below;
}

int main(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/tune/tpe_goldens.json", LT_SOURCE_DIR);
    json_error_t err;
    json_t *g = json_load_file(path, 0, &err);
    CHECK(g != NULL, "%s: %s", path, err.text);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(g, "cases"), i, c) golden_case(c);
    json_array_foreach(json_object_get(g, "joint"), i, c) joint_case(json_object_get(g, "space"), c);
    json_decref(g);
    snprintf(path, sizeof path, "%s/tests/data/tune/tpe_split_goldens.json", LT_SOURCE_DIR);
    g = json_load_file(path, 0, &err);
    CHECK(g != NULL, "%s: %s", path, err.text);
    int pruned_below = 0;
    json_array_foreach(json_object_get(g, "cases"), i, c) pruned_below += split_case(c);
    CHECK(pruned_below > 0, "no split case puts a pruned trial below");
    printf("below / above: %zu studies as Optuna %s splits them (%d pruned trials below)\n",
           json_array_size(json_object_get(g, "cases")),
           json_string_value(json_object_get(g, "optuna")), pruned_below);
    json_decref(g);

    enum { N = 40, SEEDS = 8 };
    double a[N], b[N];
    char d[] = "/tmp/lt_tpe_XXXXXX";
    CHECK(mkdtemp(d) != NULL, "mkdtemp");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/s", d);
    const double v1 = run_study(dir, LT_SAMPLER_TPE, 11, N, a);
    const double v2 = run_study(dir, LT_SAMPLER_TPE, 11, N, b);
    CHECK(!memcmp(a, b, sizeof a) && v1 == v2, "the same seed asked other points");
    /* over seeds, TPE's best after N trials beats random search's (the same first 10) */
    double tpe = 0, rnd = 0;
    int wins = 0;
    for (int sd = 1; sd <= SEEDS; sd++) {
        const double t = run_study(dir, LT_SAMPLER_TPE, (uint64_t)sd, N, a);
        const double r = run_study(dir, LT_SAMPLER_RANDOM, (uint64_t)sd, N, b);
        tpe += t / SEEDS;
        rnd += r / SEEDS;
        wins += t < r;
    }
    printf("best of %d trials, mean over %d seeds: TPE %.3f, random %.3f (TPE better on %d)\n", N,
           SEEDS, tpe, rnd, wins);
    CHECK(tpe < 0.5 * rnd && wins >= SEEDS - 2, "TPE %.3f vs random %.3f, better on %d of %d",
          tpe, rnd, wins, SEEDS);
    rmdir(d);
    LT_TEST_END();
}
