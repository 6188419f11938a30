/* importance.c - parameter importance of a study: a functional ANOVA (Hooker 2007; Hutter et
 * al. 2014's fANOVA) of the GP's posterior mean fitted to the complete trials.
 *
 * The objective is modelled as f(u) = the GP mean at the configuration of sampling coordinates
 * u in [0,1)^n (space.h: what random search draws; floats uniform, log floats log-uniform,
 * categoricals each choice 1/k). The main effect of parameter j is
 *     f_j(u_j) = E_{u_-j}[f(u)],     V_j = Var_{u_j}[f_j(u_j)]
 * and its importance is V_j / sum_k V_k (so the importances sum to 1, as Optuna's
 * get_param_importances normalizes them). Estimated on a grid: 32 midpoints of [0,1) for a
 * float or int (the sampling distribution's quantiles), each choice of a categorical; the
 * expectation over the other parameters on 512 points of a Sobol sequence (the same background
 * points for every grid value, so the differences between them are not sampling noise).
 * Values are standardized, not warped (the sampler's asinh warp would change the decomposition):
 * this is the variance of the objective itself, as the GP sees it. Interactions are not split
 * out: sum_k V_k is below Var f when parameters interact; total_fraction says by how much. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gp.h"
#include "sampler.h"

#define IMP_GRID 32
#define IMP_BACKGROUND 512

lt_status lt_tune_importance(const lt_space *sp, const json_t *trials, int maximize, double *imp,
                             double *main_fraction, int *n_used) {
    int n = 0, d = sp->dims, np = sp->n;
    size_t nt = json_array_size(trials);
    for (int j = 0; j < np; j++)
        imp[j] = NAN;
    if (main_fraction) *main_fraction = NAN;
    if (n_used) *n_used = 0;
    if (np > 40) return lt_error(LT_ERR_UNSUPPORTED, "importance: more than 40 parameters");
    double *X = lt_malloc(sizeof(double) * (nt + 1) * (size_t)d);
    double *y = lt_malloc(sizeof(double) * (nt + 1));
    double *U = lt_malloc(sizeof(double) * IMP_BACKGROUND * (size_t)np);
    double *Xs = lt_malloc(sizeof(double) * IMP_BACKGROUND * (size_t)d);
    double *mu = lt_malloc(sizeof(double) * IMP_BACKGROUND);
    double *u = lt_malloc(sizeof(double) * (size_t)np);
    lt_gp gp = {0};
    lt_status st = LT_OK;
    if (!X || !y || !U || !Xs || !mu || !u) {
        st = lt_error(LT_ERR_NOMEM, "importance: out of memory");
        goto done;
    }
    size_t i;
    const json_t *t;
    json_array_foreach((json_t *)trials, i, t) {
        const char *s = json_string_value(json_object_get(t, "state"));
        if (!s || strcmp(s, "complete")) continue;
        if ((st = lt_space_params_to_model(sp, json_object_get(t, "params"), "study",
                                           X + (size_t)n * d)))
            goto done;
        double v = json_number_value(json_object_get(t, "value"));
        y[n++] = maximize ? -v : v;
    }
    if (n_used) *n_used = n;
    if (n < 3) {
        st = lt_error(LT_ERR_ARG, "importance: needs 3 complete trials, the study has %d", n);
        goto done;
    }
    double mean = 0, sd = 0;
    for (int k = 0; k < n; k++)
        mean += y[k];
    mean /= n;
    for (int k = 0; k < n; k++)
        sd += (y[k] - mean) * (y[k] - mean);
    sd = sqrt(sd / n);
    if (!(sd > 0)) { /* every value equal: nothing explains anything */
        for (int j = 0; j < np; j++)
            imp[j] = 0;
        if (main_fraction) *main_fraction = 0;
        goto done;
    }
    for (int k = 0; k < n; k++)
        y[k] = (y[k] - mean) / sd;
    if ((st = lt_gp_init(&gp, n, d, X, y))) goto done;
    gp.prior = 1;
    if ((st = lt_gp_fit(&gp, NULL, 2, 0x1a2b3c, 100))) goto done;
    if ((st = lt_sobol_points(np, IMP_BACKGROUND, U))) goto done;
    /* the total variance of the mean over the background points */
    for (int b = 0; b < IMP_BACKGROUND; b++)
        lt_space_unit_to_model(sp, U + (size_t)b * np, Xs + (size_t)b * d);
    if ((st = lt_gp_predict(&gp, IMP_BACKGROUND, Xs, mu, NULL))) goto done;
    double m0 = 0, vt = 0, vsum = 0;
    for (int b = 0; b < IMP_BACKGROUND; b++)
        m0 += mu[b];
    m0 /= IMP_BACKGROUND;
    for (int b = 0; b < IMP_BACKGROUND; b++)
        vt += (mu[b] - m0) * (mu[b] - m0);
    vt /= IMP_BACKGROUND;
    for (int j = 0; j < np; j++) {
        int G = sp->p[j].type == LT_PARAM_CATEGORICAL ? sp->p[j].n_choices : IMP_GRID;
        double s1 = 0, s2 = 0;
        for (int g = 0; g < G; g++) {
            for (int b = 0; b < IMP_BACKGROUND; b++) {
                memcpy(u, U + (size_t)b * np, sizeof(double) * (size_t)np);
                u[j] = (g + 0.5) / G;
                lt_space_unit_to_model(sp, u, Xs + (size_t)b * d);
            }
            if ((st = lt_gp_predict(&gp, IMP_BACKGROUND, Xs, mu, NULL))) goto done;
            double fj = 0;
            for (int b = 0; b < IMP_BACKGROUND; b++)
                fj += mu[b];
            fj /= IMP_BACKGROUND;
            s1 += fj, s2 += fj * fj;
        }
        double vj = s2 / G - (s1 / G) * (s1 / G);
        imp[j] = vj > 0 ? vj : 0;
        vsum += imp[j];
    }
    for (int j = 0; j < np; j++)
        imp[j] = vsum > 0 ? imp[j] / vsum : 0;
    if (main_fraction) *main_fraction = vt > 0 ? (vsum < vt ? vsum / vt : 1) : 0;
done:
    lt_gp_free(&gp);
    lt_free(X);
    lt_free(y);
    lt_free(U);
    lt_free(Xs);
    lt_free(mu);
    lt_free(u);
    return st;
}
