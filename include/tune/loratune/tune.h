/* tune.h - hyperparameter search as an ask/tell study: a search space, a study persisted in a
 * folder, and its samplers (random, Sobol, Gaussian-process Bayesian optimization).
 *
 * A study lives in a folder DIR as DIR/study.json (space, direction, sampler, seed, trials with
 * params, state, value and intermediate values, the GP's last fitted hyperparameters). Every
 * change is written atomically (temp file, fsync, rename: lt_file_write_atomic), so a process
 * killed at any moment, SIGKILL included, leaves either the state before or after its change,
 * never a torn file. An open study holds the folder's lock (lt_dir_lock), so two processes never
 * interleave their changes: the second gets LT_ERR_BUSY (the CLI waits and retries).
 *
 * Driving it (what `loratune study` and a tuner do):
 *     lt_study_create(dir, space_json, &opt, &s)  or  lt_study_open(dir, &s)
 *     loop: lt_study_ask(s, &trial)            -> parameters (lt_study_trial_params_json,
 *                                                 lt_study_param_number / _choice)
 *           run it; lt_study_report(s, trial, step, value) for intermediate values
 *           lt_study_tell(s, trial, LT_TRIAL_COMPLETE, value)   (or FAILED / PRUNED)
 *     lt_study_close(s)
 * Trials are numbered 0, 1, 2, ... in the order they were asked. Each ask is deterministic in
 * (seed, trial number, the trials told so far), so a resumed study continues as the killed one
 * would have.
 *
 * Space JSON (the CLI's SPACE.json): an object mapping each parameter name to
 *     {"type": "float", "low": a, "high": b, "log": false}
 *     {"type": "int", "low": a, "high": b, "log": false}
 *     {"type": "categorical", "choices": [...]}        (strings, numbers, booleans or null)
 * low < high (int: low <= high; integers), log needs low > 0. Method: docs/TUNE.md.
 *
 * Ownership: strings passed in are borrowed for the call; char ** results are malloc'd and the
 * caller frees them; an lt_study is used by one thread at a time. */
#ifndef LORATUNE_TUNE_H
#define LORATUNE_TUNE_H

#include <stdint.h>

#include "loratune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_STUDY_FILE "study.json"

typedef enum {
    LT_SAMPLER_AUTO = 0, /* Sobol for the first n_startup trials, then GP */
    LT_SAMPLER_GP,       /* GP-BO (its first trials are Sobol too: a GP needs data) */
    LT_SAMPLER_RANDOM,   /* independent uniform draws (log-uniform for log params) */
    LT_SAMPLER_SOBOL,    /* scrambled Sobol points only */
    LT_SAMPLER_TPE,      /* random for the first n_startup (default 10), then TPE (tpe.c) */
} lt_sampler_kind;
const char *lt_sampler_name(lt_sampler_kind k); /* "auto", "gp", "random", "sobol", "tpe" */
int lt_sampler_from_name(const char *name, lt_sampler_kind *out); /* 0 ok, -1 unknown */

typedef enum {
    LT_TRIAL_RUNNING = 0, /* asked, not told yet */
    LT_TRIAL_COMPLETE,
    LT_TRIAL_FAILED,
    LT_TRIAL_PRUNED,
} lt_trial_state;
const char *lt_trial_state_name(lt_trial_state s); /* "running", "complete", "failed", "pruned" */

typedef struct {
    int maximize;            /* 0: minimize the value (default), 1: maximize */
    lt_sampler_kind sampler; /* default LT_SAMPLER_AUTO */
    uint64_t seed;           /* default 0 */
    int n_startup;           /* Sobol trials before the GP; <= 0: clamp(dims + 1, 5, 10) */
} lt_study_options;

typedef struct lt_study lt_study;

/* Makes folder dir (parents too) and a new study in it. space_json is the space's JSON text;
 * errors name the parameter and field ("space: lr: low: expected a number"). LT_ERR_ARG when
 * dir already holds a study. opt NULL = defaults. On success *out is the caller's (locked). */
lt_status lt_study_create(const char *dir, const char *space_json, const lt_study_options *opt,
                          lt_study **out);
/* Opens the study in dir, locking the folder. LT_ERR_NOTFOUND when dir has no study.json,
 * LT_ERR_FORMAT naming the file and field when it is malformed, LT_ERR_BUSY when another
 * process holds it. */
lt_status lt_study_open(const char *dir, lt_study **out);
/* The study as it is on disk now, without the lock (study.json is replaced atomically, so a
 * reader sees a whole version): for watching a study another process holds (`loratune study
 * show` while `loratune tune` runs). Every change is refused (LT_ERR_ARG). */
lt_status lt_study_open_readonly(const char *dir, lt_study **out);
void lt_study_close(lt_study *s); /* releases the lock; NULL ok */

/* A new trial: its parameters are sampled and the trial is stored as running before this
 * returns. *trial = its number. */
lt_status lt_study_ask(lt_study *s, int *trial);
/* lt_study_ask, unless the study already holds max_trials trials (running ones included; not
 * those told infeasible): then *trial = -1 and nothing is asked. max_trials <= 0: no limit.
 * On a PostgreSQL study the count and the ask are one transaction, so workers sharing the
 * study stop at max_trials together, none over. */
lt_status lt_study_ask_within(lt_study *s, int max_trials, int *trial);
/* A PostgreSQL study: reads what the other workers told since this one last changed it (the
 * views below show the study as of the last change or refresh). A folder study: nothing. */
lt_status lt_study_refresh(lt_study *s);
/* Ends a running trial: LT_TRIAL_COMPLETE with its value (finite), or LT_TRIAL_FAILED /
 * LT_TRIAL_PRUNED (value ignored). LT_ERR_NOTFOUND for an unknown trial, LT_ERR_ARG for one
 * already told ("trial 3 was already told (complete, value 0.25)") or a non-finite value. */
lt_status lt_study_tell(lt_study *s, int trial, lt_trial_state state, double value);
/* Records an intermediate value (e.g. validation loss at a training step) of a running trial;
 * a step reported again replaces its value (a trial re-run after a kill). */
lt_status lt_study_report(lt_study *s, int trial, int64_t step, double value);

/* Ends a running trial as failed because its configuration cannot run (the memory plan does
 * not fit the budget); study.json keeps the reason ("infeasible": reason). The GP sees it as
 * a point at the worst value so far (as a running trial's "constant liar"), so the search
 * moves away from the region instead of asking it again. */
lt_status lt_study_tell_infeasible(lt_study *s, int trial, const char *reason);
/* The same for a trial whose run failed (an error, a diverged run): "error": reason, and the
 * GP avoids the point the same way. A plain lt_study_tell(LT_TRIAL_FAILED) drops the trial
 * from the model instead. */
lt_status lt_study_tell_error(lt_study *s, int trial, const char *reason);

/* A running trial starts over (its process was killed and it is run again from the start):
 * its intermediate values and rungs are dropped; its parameters stay. */
lt_status lt_study_restart(lt_study *s, int trial);

/* Studies shared by workers (PostgreSQL): a worker keeps its running trials alive with
 * heartbeats ("heartbeat_at", seconds since the epoch; set when asked too); *running (may be
 * NULL) is 0 when the trial was told meanwhile (then nothing is written). A trial whose last
 * heartbeat is more than stale_s seconds old lost its worker: lt_study_claim_stale takes the
 * first such one (not one of skip[n_skip], this worker's own), starts it over as
 * lt_study_restart does, counts it in "restarts" and gives its number (-1: none), all in one
 * transaction, so two workers never claim the same trial. */
lt_status lt_study_heartbeat(lt_study *s, int trial, int *running);
lt_status lt_study_claim_stale(lt_study *s, int stale_s, const int *skip, int n_skip, int *trial);

/* ---- pruning: successive halving on training steps ---------------------------------------
 * Asynchronous successive halving (ASHA with one bracket), the rule of Optuna's
 * SuccessiveHalvingPruner (bootstrap_count 0): rung k is reached at step
 * min_resource * reduction_factor^(min_early_stopping_rate + k). Called after each
 * lt_study_report, it takes the trial's last reported step and value; for every rung that step
 * has reached and the trial has not yet passed, it records the value as the trial's value at
 * that rung (study.json: "rungs") and compares it with the values every trial recorded at that
 * rung (this one included, m of them): the trial continues when its value is among the best
 * max(1, floor(m / reduction_factor)); else *prune = 1 (stop it and tell LT_TRIAL_PRUNED).
 * *rung (may be NULL) = the rungs it has passed or failed. */
typedef struct {
    int64_t min_resource;        /* steps to the first rung, >= 1 */
    int reduction_factor;        /* eta >= 2 (Optuna's default 4; loratune tune's 3) */
    int min_early_stopping_rate; /* s >= 0 */
} lt_prune_opts;
lt_status lt_study_should_prune(lt_study *s, int trial, const lt_prune_opts *p, int *prune,
                                int *rung);

int lt_study_n_trials(const lt_study *s);
int lt_study_n_params(const lt_study *s);
const char *lt_study_param_name(const lt_study *s, int i);
lt_status lt_study_trial_state(const lt_study *s, int trial, lt_trial_state *state, double *value);
/* Value of a float / int parameter of a trial (ints are exact in a double). */
lt_status lt_study_param_number(const lt_study *s, int trial, const char *name, double *out);
/* The chosen category of a categorical parameter as JSON text ("\"mlp\"", "16", "true");
 * malloc'd. */
lt_status lt_study_param_choice_json(const lt_study *s, int trial, const char *name, char **out);
/* {"trial": N, "params": {...}} (the CLI's `ask --json` line); malloc'd. */
lt_status lt_study_trial_json(const lt_study *s, int trial, char **out);
/* {"direction", "sampler", "seed", "space", "n_trials", "n_complete", "trials": [...],
 *  "best": {trial, value, params} or null}; malloc'd. *best_trial = -1 when none complete. */
lt_status lt_study_summary_json(const lt_study *s, char **out, int *best_trial);

/* Warm start: the complete trials of the study in other_dir (opened read-only) whose
 * parameters fit this study's space (every parameter present, within its bounds or among its
 * choices) become prior observations of the GP sampler: they enter the model as complete
 * trials before this study's own, and the sampler counts them as asked trials (the
 * quasi-random start is shorter by as many and continues the Sobol sequence after them; the
 * random sampler's streams move on by as many; these two ignore the values). They are kept
 * in study.json ("warm_start": {"source", "trials": [{trial, state, params, value}]}) and are
 * not trials of this study (not counted, not shown as its trials, never its best). Only
 * before the first ask; the directions must agree.
 * *n_used / *n_skipped (may be NULL): trials taken / complete trials that did not fit. */
lt_status lt_study_warm_start(lt_study *s, const char *other_dir, int *n_used, int *n_skipped);

/* Parameter importance: a functional ANOVA (fANOVA) of the GP's posterior mean fitted to the
 * complete trials, each parameter's main-effect variance over its sampling distribution
 * (docs/TUNE.md, "Parameter importance"). imp[lt_study_n_params(s)] sums to 1 (0 for every
 * parameter when all values are equal); *main_fraction (may be NULL) is the share of the
 * mean's variance the main effects explain (1 - interactions); *n_used (may be NULL) the
 * complete trials used. LT_ERR_ARG with fewer than 3 complete trials. */
lt_status lt_study_param_importance(const lt_study *s, double *imp, double *main_fraction,
                                    int *n_used);

#ifdef __cplusplus
}
#endif
#endif
