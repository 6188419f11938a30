/* tpe.h - the TPE sampler (internal to src/tune): a Tree-structured Parzen Estimator
 * (Bergstra et al. 2011) with the defaults of Optuna 5.1's TPESampler (whose
 * estimator tests/tune/test_tpe.c checks ours against: docs/TUNE.md "TPE").
 *
 * The trials that finished (complete and pruned) are split into the best gamma(n) =
 * min(ceil(n / 10), 25), "below", and the rest, "above" (running trials and those the memory
 * plan refused join "above"; running ones: Optuna's constant liar): complete trials by value
 * first, then, when fewer than gamma(n) are complete, pruned ones as Optuna orders them (the
 * furthest first, then the better last intermediate value); each group gives a Parzen estimator,
 * multivariate as Optuna's default for one objective: a mixture of one product kernel per trial
 * (newest weighted most once there are 25 or more) plus a prior kernel of weight 1, each a
 * product over the parameters. Numerical
 * parameters get normal kernels truncated to the range (in log space for log parameters; ints
 * as the probability of their unit cell), each as wide as the larger gap to its neighbours,
 * clipped to [range / min(100, kernels + 1), range]; categorical parameters get a kernel that
 * puts 1 on the trial's choice plus prior_weight / kernels on every choice. 24 candidates are
 * drawn jointly from "below" and the one with the largest log l(x) - log g(x) is asked. */
#ifndef LT_TUNE_TPE_H
#define LT_TUNE_TPE_H

#include <jansson.h>

#include "loratune/tune.h"
#include "space.h"

#define LT_TPE_CANDIDATES 24
#define LT_TPE_STARTUP 10 /* random trials first (Optuna's n_startup_trials) */

/* One parameter's Parzen estimator. Values are in the parameter's internal representation:
 * the number itself for floats and ints, the choice's index for categoricals. */
typedef struct {
    const lt_param *p;
    int n;           /* kernels: the observations plus the prior */
    double *w;       /* (n) mixture weights, summing to 1 */
    double *mu;      /* (n) numerical: centres in the transformed space (log for log params) */
    double *sigma;   /* (n) numerical: widths */
    double *lnorm;   /* (n) numerical: log of each kernel's mass inside [lo, hi] */
    double lo, hi;   /* numerical: the range in the transformed space (ints: +- half a step) */
    double *cw;      /* (n x n_choices) categorical: each kernel's probabilities */
} lt_tpe_pe;

/* The estimator of obs (n_obs values) for parameter p, with Optuna's default weights
 * (1 each below 25 observations, else a ramp from 1/n up to 1 for all but the newest 25) and
 * a prior of weight 1. obs are in trial order (oldest first). */
lt_status lt_tpe_pe_build(const lt_param *p, const double *obs, int n_obs, lt_tpe_pe *pe);
void lt_tpe_pe_free(lt_tpe_pe *pe);
/* log density of value x (internal representation): floats per unit of the transformed
 * space, ints and categoricals as a probability */
double lt_tpe_pe_log_pdf(const lt_tpe_pe *pe, double x);
/* The joint density of the np estimators built over the same observations (kernel j = the
 * j-th observation in each, the same weights): log sum_j w_j prod_q kernel_qj(x[q]). */
double lt_tpe_joint_log_pdf(const lt_tpe_pe *pe, int np, const double *x);

/* The split above of a study's trials (objects with "state", "value", "intermediate"):
 * below[*n_below] and above[*n_above], each in trial order, get indices into trials; both
 * arrays have room for json_array_size(trials). */
lt_status lt_tpe_split(const json_t *trials, int maximize, int *below, int *n_below,
                       int *above, int *n_above);

/* The TPE suggestion for trial number `trial` (after the startup trials), deterministic in
 * (opt->seed, trial, trials). */
lt_status lt_tune_tpe_suggest(const lt_space *sp, const lt_study_options *opt,
                              const json_t *trials, int trial, json_t **params);

#endif
