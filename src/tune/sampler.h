/* sampler.h - the samplers of a study (internal to src/tune): what the next trial's parameters
 * are, given the space and the trials so far. Deterministic in (seed, trial number, trials). */
#ifndef LT_TUNE_SAMPLER_H
#define LT_TUNE_SAMPLER_H

#include <jansson.h>

#include "loratune/tune.h"
#include "space.h"

/* A generator seeded from (seed, stream): splitmix64 of both, so trials draw independent
 * streams and a resumed study draws what the killed one would have. */
uint64_t lt_tune_stream_seed(uint64_t seed, uint64_t stream);

/* Parameters for trial number `trial` (a new params object in *params). trials is the study's
 * trial array (objects with "state", "params", "value"); the trial being asked is not in it.
 * theta (dims + 2) holds the GP's last hyperparameters (NaN in theta[0]: none) and is updated
 * when the GP runs; *used_gp says whether it did. auto / gp: Sobol points before trial
 * n_startup, then the GP once two trials are complete (their final values) or, before that,
 * once two trials have a value at one rung (the values at the highest such rung); Sobol
 * points while neither holds. */
lt_status lt_tune_suggest(const lt_space *sp, const lt_study_options *opt, const json_t *trials,
                          int trial, double *theta, int *used_gp, json_t **params);

/* The GP-BO step alone (exposed for tests and the benchmark): X (n, dims) snapped inputs of the
 * complete trials, y (n) their values to minimise, P (np, dims) the liars' inputs (running,
 * pruned, failed with a reason) and py (np; NULL: all NaN) their values on y's scale, NaN for
 * "at the worst value of y" (the constant liar); writes the chosen point (dims, snapped) into
 * x. */
lt_status lt_tune_gp_next(const lt_space *sp, int n, const double *X, const double *y, int np,
                          const double *P, const double *py, uint64_t seed, double *theta,
                          double *x);

/* The value trial t recorded when it reached rung k (its "rungs"; NaN: it has not). */
double lt_tune_rung_value(const json_t *t, size_t k);

/* The value the GP gives pruned trial number idx of trials (*value, to minimise: negated when
 * maximize), from its value at the last rung it reached (its "rungs"), mapped onto the final
 * values by the complete trials that reached that rung: their rung values sorted against their
 * final values sorted, interpolated, and beyond the worst of them their line continued with a
 * slope of at most 1 (docs/TUNE.md, "Pruned trials in the GP"). NaN when it has no rung value or
 * fewer than two complete trials reached that rung: the caller puts it at the worst value. */
lt_status lt_tune_pruned_value(const json_t *trials, size_t idx, int maximize, double *value);

/* Parameter importance by a functional ANOVA of the GP mean fitted to the complete trials
 * (importance.c): imp[sp->n] sums to 1; *main_fraction (may be NULL) the share of the mean's
 * variance the main effects explain (1: no interactions); *n_used the complete trials.
 * LT_ERR_ARG with fewer than 3 complete trials. */
lt_status lt_tune_importance(const lt_space *sp, const json_t *trials, int maximize,
                             double *imp, double *main_fraction, int *n_used);

#endif
