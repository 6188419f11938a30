/* sampler.c - random, Sobol, GP-BO and TPE (tpe.c) suggestions (see sampler.h; the method: docs/TUNE.md).
 *
 * GP-BO step: values warped (asinh of the robustly scaled values: warp_values) and standardized
 * (mean 0, sd 1), the GP's prior mean one sd above (PRIOR_MEAN_SD); running trials enter
 * as "pessimistic constant liars" (at the worst value seen) so parallel asks spread out,
 * pruned ones at the value their last rung's value maps to (lt_tune_pruned_value); with
 * fewer than two complete trials it models the values at the highest rung two trials reached
 * (suggest_gp); the GP is fitted by marginal likelihood (+ the length-scale prior) from the
 * last fit's hyperparameters and two more starts; log EI is maximised over scrambled Sobol
 * candidates and perturbations of the best trials, then refined by Nelder-Mead from the best
 * candidate and others drawn by EI over the numeric coordinates (every point snapped before
 * the GP sees it: ints rounded, categoricals exact; a categorical's one-hot block has one length
 * scale: Hamming distance), then each categorical's other choices tried one by one. */
#include "sampler.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_multimin.h>
#include <gsl/gsl_qrng.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gp.h"
#include "tpe.h"

#define N_SOBOL_CANDIDATES 1024
#define N_LOCAL_PER_BEST 64
#define N_BEST_LOCAL 5
#define N_REFINE 6        /* candidates refined by Nelder-Mead (3 from REFINE_LESS_FROM on) */
#define REFINE_LESS_FROM 60 /* trials: past it, less refinement keeps the ask near 50 ms */
#define FIT_MAX_ITER 60
#define WARM_MAX_ITER 20
#define REFIT_EVERY 5
#define FULL_FIT_BELOW 40 /* trials: below, every step fits fully (cheap there) */
#define NM_MAX_ITER 200     /* iterations per refinement (120 from REFINE_LESS_FROM on) */
/* The GP's prior mean, in standard deviations of the warped values above their mean: where
 * there are no trials the model expects a worse-than-average value, so EI favours the
 * neighbourhoods of good trials over the unexplored corners (bench/RESULTS.md, "GP sampler,
 * third pass": 0 -> 1 cut the median regret at 30 evaluations on 40 fresh seeds from 20.9 to
 * 13.6 on Levy-10, 0.22 to 0.040 on Hartmann-6, 0.0033 to 0.00078 on the mixed function;
 * 2 helps Levy-10 more but hurts Hartmann-6) */
#define PRIOR_MEAN_SD 1.0

uint64_t lt_tune_stream_seed(uint64_t seed, uint64_t stream) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (stream + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static gsl_rng *rng_for(uint64_t seed, uint64_t stream) {
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    if (r) gsl_rng_set(r, (unsigned long)lt_tune_stream_seed(seed, stream));
    return r;
}

/* The trial-th point of the Sobol sequence in n dims, shifted modulo 1 by a random vector of
 * the seed (Cranley-Patterson rotation: each seed its own sequence, still low-discrepancy). */
static lt_status sobol_point(int n, uint64_t seed, int trial, double *u) {
    if (n > 40) { /* beyond GSL's Sobol: plain random */
        gsl_rng *r = rng_for(seed, (uint64_t)trial);
        if (!r) return lt_error(LT_ERR_NOMEM, "study: out of memory");
        for (int i = 0; i < n; i++) u[i] = gsl_rng_uniform(r);
        gsl_rng_free(r);
        return LT_OK;
    }
    gsl_qrng *q = gsl_qrng_alloc(gsl_qrng_sobol, (unsigned)n);
    gsl_rng *r = rng_for(seed, 0xfffffffffull);
    if (!q || !r) {
        gsl_qrng_free(q);
        gsl_rng_free(r);
        return lt_error(LT_ERR_NOMEM, "study: out of memory");
    }
    for (int k = 0; k <= trial; k++) gsl_qrng_get(q, u);
    for (int i = 0; i < n; i++) u[i] = fmod(u[i] + gsl_rng_uniform(r), 1.0);
    gsl_qrng_free(q);
    gsl_rng_free(r);
    return LT_OK;
}

/* ---- the acquisition and its maximisation ---------------------------------------------- */
typedef struct {
    const lt_space *sp;
    const lt_gp *gp;
    double best;
    double *x;      /* (dims) the point being refined; its numeric coordinates vary */
    const int *num; /* (nnum) model coordinates of the numeric params */
    int nnum;
    int nm_iter;    /* Nelder-Mead iterations per refinement */
    lt_status err;  /* a prediction failed (out of memory) */
} acq_ctx;

static double acq_at(acq_ctx *c, double *x) {
    lt_space_snap(c->sp, x);
    double m, v;
    lt_status st = lt_gp_predict(c->gp, 1, x, &m, &v);
    if (st != LT_OK) {
        c->err = st;
        return -INFINITY;
    }
    return lt_log_ei(m, v, c->best);
}

static double nm_f(const gsl_vector *v, void *p) {
    acq_ctx *c = p;
    for (int i = 0; i < c->nnum; i++) c->x[c->num[i]] = gsl_vector_get(v, (size_t)i);
    double a = acq_at(c, c->x);
    return isfinite(a) ? -a : 1e300;
}

/* Nelder-Mead over the numeric coordinates from x (in place, snapped); returns log EI. */
static double refine(acq_ctx *c, double *x, double a0) {
    if (c->nnum == 0) return a0;
    int dims = c->sp->dims;
    double work[dims];
    memcpy(work, x, sizeof work);
    c->x = work;
    gsl_vector *v = gsl_vector_alloc((size_t)c->nnum), *step = gsl_vector_alloc((size_t)c->nnum);
    gsl_multimin_fminimizer *mz =
        gsl_multimin_fminimizer_alloc(gsl_multimin_fminimizer_nmsimplex2, (size_t)c->nnum);
    double best = a0;
    if (!v || !step || !mz) c->err = lt_error(LT_ERR_NOMEM, "study: out of memory (minimizer)");
    if (v && step && mz) {
        for (int i = 0; i < c->nnum; i++) gsl_vector_set(v, (size_t)i, x[c->num[i]]);
        gsl_vector_set_all(step, 0.05);
        gsl_multimin_function fn = {nm_f, (size_t)c->nnum, c};
        if (gsl_multimin_fminimizer_set(mz, &fn, v, step) == GSL_SUCCESS) {
            for (int it = 0; it < c->nm_iter; it++) {
                if (gsl_multimin_fminimizer_iterate(mz) != GSL_SUCCESS || c->err) break;
                if (gsl_multimin_fminimizer_size(mz) < 1e-4) break;
            }
            for (int i = 0; i < c->nnum; i++) work[c->num[i]] = gsl_vector_get(mz->x, (size_t)i);
            double a = acq_at(c, work);
            if (a > best) {
                best = a;
                memcpy(x, work, sizeof work);
            }
        }
    }
    gsl_vector_free(v);
    gsl_vector_free(step);
    gsl_multimin_fminimizer_free(mz);
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* y -> asinh((y - median) / scale), scale the median absolute deviation (x 1.4826, the sd of a
 * normal sample): values near the median keep their spacing, outliers (a diverged run, the
 * corners of Branin or Levy) are pulled in logarithmically, so that they do not flatten the
 * standardized differences among the good trials the search cares about. The order of the
 * values (and so the best trial) is unchanged. tmp has room for n. */
static void warp_values(int n, double *y, double *tmp, double *med_out, double *mad_out) {
    memcpy(tmp, y, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    double med = n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
    for (int i = 0; i < n; i++) tmp[i] = fabs(y[i] - med);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    double mad = 1.4826 * (n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]));
    if (!(mad > 0)) mad = tmp[n - 1] > 0 ? tmp[n - 1] : 1;
    for (int i = 0; i < n; i++) y[i] = asinh((y[i] - med) / mad);
    *med_out = med;
    *mad_out = mad;
}

lt_status lt_tune_gp_next(const lt_space *sp, int n, const double *X, const double *y, int np,
                          const double *P, const double *py, uint64_t seed, double *theta,
                          double *x) {
    int dims = sp->dims, N = n + np;
    lt_status st = LT_OK;
    double *Xa = lt_malloc(sizeof(double) * (size_t)N * (size_t)dims);
    double *ya = lt_malloc(sizeof(double) * (size_t)N), *tmp = lt_malloc(sizeof(double) * (size_t)N);
    int mc = N_SOBOL_CANDIDATES + N_BEST_LOCAL * N_LOCAL_PER_BEST;
    double *C = lt_malloc(sizeof(double) * (size_t)mc * (size_t)dims);
    double *cm = lt_malloc(sizeof(double) * (size_t)mc), *cv = lt_malloc(sizeof(double) * (size_t)mc);
    double *ca = lt_malloc(sizeof(double) * (size_t)mc);
    int *num = lt_malloc(sizeof(int) * (size_t)(sp->n + 1));
    int *order = lt_malloc(sizeof(int) * (size_t)(n + 1));
    double *u = lt_malloc(sizeof(double) * (size_t)(sp->n + 1));
    double *shift = lt_malloc(sizeof(double) * (size_t)(sp->n + 1));
    double *xb = lt_malloc(sizeof(double) * (size_t)dims), ab = -INFINITY;
    int *ls_of = lt_malloc(sizeof(int) * (size_t)dims);
    double *lsw = lt_malloc(sizeof(double) * (size_t)dims);
    size_t xbytes = sizeof(double) * (size_t)dims;
    gsl_rng *r = rng_for(seed, 0xabcdefull + (uint64_t)N);
    gsl_qrng *q = sp->n <= 40 ? gsl_qrng_alloc(gsl_qrng_sobol, (unsigned)sp->n) : NULL;
    lt_gp gp = {0};
    gsl_error_handler_t *old = gsl_set_error_handler_off();
    if (!Xa || !ya || !tmp || !C || !cm || !cv || !ca || !num || !order || !u || !shift || !xb ||
        !ls_of || !lsw || !r || (sp->n <= 40 && !q)) {
        st = lt_error(LT_ERR_NOMEM, "study: out of memory (GP step, %d trials)", N);
        goto done;
    }
    /* warp (heavy tails tamed, order kept), standardize; liars at the worst value, or at the
     * value py gives them (through the same warp and standardization) */
    for (int i = 0; i < n; i++) ya[i] = y[i];
    double med, mad;
    warp_values(n, ya, tmp, &med, &mad);
    double mean = 0, sd = 0, worst = -INFINITY, best = INFINITY;
    for (int i = 0; i < n; i++) mean += ya[i];
    mean /= n;
    for (int i = 0; i < n; i++) sd += (ya[i] - mean) * (ya[i] - mean);
    sd = sqrt(sd / n);
    if (!(sd > 0)) sd = 1;
    for (int i = 0; i < n; i++) {
        ya[i] = (ya[i] - mean) / sd - PRIOR_MEAN_SD;
        worst = ya[i] > worst ? ya[i] : worst;
        best = ya[i] < best ? ya[i] : best;
    }
    memcpy(Xa, X, sizeof(double) * (size_t)n * (size_t)dims);
    for (int i = 0; i < np; i++) {
        memcpy(Xa + (size_t)(n + i) * dims, P + (size_t)i * dims, sizeof(double) * (size_t)dims);
        double v = py ? py[i] : NAN;
        ya[n + i] = isfinite(v) ? (asinh((v - med) / mad) - mean) / sd - PRIOR_MEAN_SD : worst;
    }
    for (int i = 0; i < N; i++) lt_space_snap(sp, Xa + (size_t)i * dims);
    if ((st = lt_gp_init(&gp, N, dims, Xa, ya))) goto done;
    gp.prior = 1;
    /* a categorical's one-hot coordinates share one length scale, at weight 1/2: two different
     * choices are 1 / ls apart whichever they are (a Hamming distance, as Optuna's GPSampler),
     * one hyperparameter per categorical instead of one per choice (gp.h) */
    int ncat = 0;
    for (int pi = 0; pi < sp->n; pi++) {
        const lt_param *p = &sp->p[pi];
        int cat = p->type == LT_PARAM_CATEGORICAL;
        ncat += cat;
        for (int t = 0; t < (cat ? p->n_choices : 1); t++) {
            ls_of[p->dim + t] = p->dim;
            lsw[p->dim + t] = cat ? 0.5 : 1.0;
        }
    }
    if (ncat) gp.ls_of = ls_of, gp.w = lsw;
    /* A full fit (the last fit's theta, the default start and a random one, FIT_MAX_ITER
     * iterations each) below FULL_FIT_BELOW trials and every REFIT_EVERY-th step after; in
     * between, a short run from the last fit's theta (the data changed by a point or two), so
     * that an ask at 100 trials stays near 50 ms. */
    if (isfinite(theta[0]) && N >= FULL_FIT_BELOW && N % REFIT_EVERY != 0)
        st = lt_gp_fit_from(&gp, theta, WARM_MAX_ITER);
    else
        st = lt_gp_fit(&gp, isfinite(theta[0]) ? theta : NULL, 1, seed, FIT_MAX_ITER);
    if (st) goto done;
    memcpy(theta, gp.theta, sizeof(double) * (size_t)(dims + 2));

    /* candidates: scrambled Sobol points, then perturbations of the best trials */
    int k = 0;
    for (int i = 0; i < sp->n; i++) shift[i] = gsl_rng_uniform(r);
    for (; k < N_SOBOL_CANDIDATES; k++) {
        if (q) {
            gsl_qrng_get(q, u);
            for (int i = 0; i < sp->n; i++) u[i] = fmod(u[i] + shift[i], 1.0);
        } else {
            for (int i = 0; i < sp->n; i++) u[i] = gsl_rng_uniform(r);
        }
        lt_space_unit_to_model(sp, u, C + (size_t)k * dims);
    }
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 0; i < n && i < N_BEST_LOCAL; i++) /* partial selection sort: the best first */
        for (int j = i + 1; j < n; j++)
            if (ya[order[j]] < ya[order[i]]) {
                int t = order[i];
                order[i] = order[j], order[j] = t;
            }
    int nbest = n < N_BEST_LOCAL ? n : N_BEST_LOCAL;
    for (int b = 0; b < nbest; b++)
        for (int j = 0; j < N_LOCAL_PER_BEST; j++, k++) {
            double *c = C + (size_t)k * dims;
            memcpy(c, Xa + (size_t)order[b] * dims, sizeof(double) * (size_t)dims);
            double scale = j < N_LOCAL_PER_BEST / 2 ? 0.02 : 0.1;
            for (int pi = 0; pi < sp->n; pi++) {
                const lt_param *p = &sp->p[pi];
                if (p->type != LT_PARAM_CATEGORICAL) {
                    c[p->dim] += gsl_ran_gaussian(r, scale);
                } else if (gsl_rng_uniform(r) < 1.0 / sp->n) {
                    int ch = (int)gsl_rng_uniform_int(r, (unsigned long)p->n_choices);
                    for (int t = 0; t < p->n_choices; t++) c[p->dim + t] = t == ch;
                }
            }
            lt_space_snap(sp, c);
        }
    if ((st = lt_gp_predict(&gp, k, C, cm, cv))) goto done;
    for (int i = 0; i < k; i++) ca[i] = lt_log_ei(cm[i], cv[i], best);

    /* refine the best few */
    int nn = 0;
    for (int pi = 0; pi < sp->n; pi++)
        if (sp->p[pi].type != LT_PARAM_CATEGORICAL) num[nn++] = sp->p[pi].dim;
    int less = N >= REFINE_LESS_FROM;
    acq_ctx ac = {sp, &gp, best, NULL, num, nn, less ? 120 : NM_MAX_ITER, LT_OK};
    /* the starts: the best candidate, then the others drawn with probability proportional
     * to EI (exp of log EI, without replacement): starts spread over the acquisition's modes
     * instead of crowding the best one's neighbourhood */
    for (int t = 0; t < (less ? 3 : N_REFINE); t++) {
        int bi = -1;
        for (int i = 0; i < k; i++)
            if (bi < 0 || ca[i] > ca[bi]) bi = i;
        if (t > 0 && bi >= 0 && ca[bi] > -INFINITY) {
            double tot = 0, amax = ca[bi];
            for (int i = 0; i < k; i++) tot += exp(ca[i] - amax);
            double uu = gsl_rng_uniform(r) * tot, acc = 0;
            for (int i = 0; i < k; i++) {
                acc += exp(ca[i] - amax);
                if (acc >= uu && ca[i] > -INFINITY) {
                    bi = i;
                    break;
                }
            }
        }
        if (bi < 0 || ca[bi] == -INFINITY) {
            if (t == 0) memcpy(xb, C, xbytes); /* no improvement anywhere: first candidate */
            break;
        }
        double xc[dims];
        memcpy(xc, C + (size_t)bi * dims, sizeof xc);
        double a = refine(&ac, xc, ca[bi]);
        ca[bi] = -INFINITY;
        if (a > ab) ab = a, memcpy(xb, xc, xbytes);
    }
    /* each categorical's other choices, one at a time, kept when better */
    for (int pi = 0; pi < sp->n; pi++) {
        const lt_param *p = &sp->p[pi];
        if (p->type != LT_PARAM_CATEGORICAL) continue;
        for (int ch = 0; ch < p->n_choices; ch++) {
            double xc[dims];
            memcpy(xc, xb, sizeof xc);
            for (int t = 0; t < p->n_choices; t++) xc[p->dim + t] = t == ch;
            double a = acq_at(&ac, xc);
            if (a > ab) ab = a, memcpy(xb, xc, xbytes);
        }
    }
    if (ac.err) {
        st = ac.err;
        goto done;
    }
    memcpy(x, xb, xbytes);
    lt_space_snap(sp, x);
done:
    gsl_set_error_handler(old);
    lt_gp_free(&gp);
    gsl_qrng_free(q);
    gsl_rng_free(r);
    lt_free(Xa);
    lt_free(ya);
    lt_free(tmp);
    lt_free(C);
    lt_free(cm);
    lt_free(cv);
    lt_free(ca);
    lt_free(num);
    lt_free(order);
    lt_free(u);
    lt_free(shift);
    lt_free(xb);
    lt_free(ls_of);
    lt_free(lsw);
    return st;
}

/* ---- pruned trials ------------------------------------------------------------------------ */
double lt_tune_rung_value(const json_t *t, size_t k) {
    const json_t *v = json_array_get(json_object_get(t, "rungs"), k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Why a map of the rung's values and not the worst value (sampler.h; docs/TUNE.md): ASHA
 * prunes a trial for its place at a rung, on the premise that the order there predicts the
 * order at the end; the same premise gives the trial a final value: the complete trials that
 * reached that rung are anchors (their values there, sorted, against their final values,
 * sorted: a monotone map from the rung's scale to the final one), and the pruned trial's
 * rung value is interpolated between them. Better than every anchor's: the best anchor's
 * value, never better (the GP's incumbent stays a complete trial); worse than every anchor's:
 * the anchors' line (final per rung value, at most 1) continued, so a trial far behind at its
 * rung lies far beyond the worst complete one. Until 2026-12-08 the map took ranks instead of
 * values, and a trial twice as far behind as another was only a rank or two worse to the GP
 * (bench/RESULTS.md, "Pruned trials by their rung values"). */
lt_status lt_tune_pruned_value(const json_t *trials, size_t idx, int maximize, double *value) {
    *value = NAN;
    const json_t *tp = json_array_get(trials, idx);
    size_t nr = json_array_size(json_object_get(tp, "rungs"));
    double sign = maximize ? -1 : 1;
    if (nr == 0) return LT_OK;
    size_t k = nr - 1, nt = json_array_size(trials);
    double vp = sign * lt_tune_rung_value(tp, k);
    if (!isfinite(vp)) return LT_OK;
    double *ra = lt_malloc(sizeof(double) * (nt + 1)), *ya = lt_malloc(sizeof(double) * (nt + 1));
    if (!ra || !ya) {
        lt_free(ra), lt_free(ya);
        return lt_error(LT_ERR_NOMEM, "study: out of memory (pruned trials' values)");
    }
    int a = 0;
    for (size_t j = 0; j < nt; j++) { /* the anchors: complete trials with a rung-k value */
        const json_t *t = json_array_get(trials, j);
        const char *st = json_string_value(json_object_get(t, "state"));
        const json_t *jy = json_object_get(t, "value");
        double v = sign * lt_tune_rung_value(t, k);
        double y = json_is_number(jy) ? json_number_value(jy) : NAN;
        if (!st || strcmp(st, "complete") || !isfinite(v) || !isfinite(y)) continue;
        ra[a] = v;
        ya[a++] = sign * y;
    }
    if (a >= 2) {
        qsort(ra, (size_t)a, sizeof(double), cmp_double);
        qsort(ya, (size_t)a, sizeof(double), cmp_double);
        double out;
        if (vp <= ra[0]) {
            out = ya[0];
        } else if (vp >= ra[a - 1]) {
            double slope = ra[a - 1] > ra[0] ? (ya[a - 1] - ya[0]) / (ra[a - 1] - ra[0]) : 0;
            if (slope > 1) slope = 1; /* anchors nearly tied at the rung: no blow-up */
            out = ya[a - 1] + slope * (vp - ra[a - 1]);
        } else {
            int j = 0;
            while (ra[j + 1] < vp) j++; /* ra[j] < vp <= ra[j + 1], so ra[j + 1] > ra[j] */
            out = ya[j] + (ya[j + 1] - ya[j]) * (vp - ra[j]) / (ra[j + 1] - ra[j]);
        }
        *value = out;
    }
    lt_free(ra);
    lt_free(ya);
    return LT_OK;
}

/* The highest rung (0, 1, ...) at which at least two trials recorded a value; -1: none. */
static int rung_with_two(const json_t *trials) {
    size_t nt = json_array_size(trials), kmax = 0;
    for (size_t j = 0; j < nt; j++) {
        size_t nr = json_array_size(json_object_get(json_array_get(trials, j), "rungs"));
        kmax = nr > kmax ? nr : kmax;
    }
    for (size_t k = kmax; k-- > 0;) {
        int m = 0;
        for (size_t j = 0; j < nt; j++)
            m += isfinite(lt_tune_rung_value(json_array_get(trials, j), k));
        if (m >= 2) return (int)k;
    }
    return -1;
}

/* The GP's data. rung < 0: the final values of the complete trials (X, y: n of them), liars
 * (P, py: np) for running, pruned (at their rung value's map: lt_tune_pruned_value) and failed
 * trials with a reason. rung >= 0: the values at that rung of every trial that has one (X, y),
 * liars at the worst value for the others that would be liars above (BOHB's rule: model the
 * largest budget with enough observations; see suggest_gp). */
static lt_status gather(const lt_space *sp, const lt_study_options *opt, const json_t *trials,
                        int rung, double *X, double *y, int *n_out, double *P, double *py,
                        int *np_out) {
    int dims = sp->dims, n = 0, np = 0;
    double sign = opt->maximize ? -1 : 1;
    lt_status st = LT_OK;
    size_t i;
    const json_t *t;
    json_array_foreach((json_t *)trials, i, t) {
        const char *s = json_string_value(json_object_get(t, "state"));
        const json_t *pr = json_object_get(t, "params");
        double rv = rung >= 0 ? lt_tune_rung_value(t, (size_t)rung) : NAN;
        if (rung >= 0 && isfinite(rv)) {
            if ((st = lt_space_params_to_model(sp, pr, "study", X + (size_t)n * dims))) break;
            y[n++] = sign * rv;
        } else if (rung < 0 && s && !strcmp(s, "complete")) {
            if ((st = lt_space_params_to_model(sp, pr, "study", X + (size_t)n * dims))) break;
            y[n++] = sign * json_number_value(json_object_get(t, "value"));
        } else if (s && (!strcmp(s, "running") || !strcmp(s, "pruned") ||
                         (!strcmp(s, "failed") && (json_object_get(t, "infeasible") ||
                                                   json_object_get(t, "error"))))) {
            /* running: a liar so parallel asks spread out; failed with a reason (the memory
             * plan refused it, or the run failed: lt_study_tell_infeasible / _error): a liar
             * at the worst value so the search moves away instead of asking the same point
             * again. Pruned (it ranked low at a rung): a liar too (ignored, a pruned point left
             * the GP as it was, and it asked that point, to be pruned, trial after trial), at
             * the value its last rung's value maps to on the complete trials' values
             * (lt_tune_pruned_value; the worst value without rung values). From aeb5670
             * until 162fcc7 it was the worst value, and a trial pruned in the best region
             * (second of four at the first rung) sent the search away from that region
             * (bench/RESULTS.md, seed 2 of the real-task benchmark). The mapped value is
             * never better than the best complete trial's, and each pruned point is data at a
             * finite value: a point pruned again and again lowers the GP's variance there each
             * time, so EI leaves it (tests/tune/test_study_cli.py, pruned_not_asked_again). */
            if ((st = lt_space_params_to_model(sp, pr, "study", P + (size_t)np * dims))) break;
            py[np] = NAN;
            if (rung < 0 && !strcmp(s, "pruned") &&
                (st = lt_tune_pruned_value(trials, i, opt->maximize, &py[np])))
                break;
            np++;
        }
    }
    *n_out = n;
    *np_out = np;
    return st;
}

static lt_status suggest_gp(const lt_space *sp, const lt_study_options *opt, const json_t *trials,
                            int trial, double *theta, int *used_gp, json_t **params) {
    size_t nt = json_array_size(trials);
    int dims = sp->dims, n = 0, np = 0;
    double *X = lt_malloc(sizeof(double) * (nt + 1) * (size_t)dims);
    double *P = lt_malloc(sizeof(double) * (nt + 1) * (size_t)dims);
    double *y = lt_malloc(sizeof(double) * (nt + 1)), *py = lt_malloc(sizeof(double) * (nt + 1));
    double *x = lt_malloc(sizeof(double) * (size_t)dims);
    lt_status st = LT_OK;
    if (!X || !P || !y || !py || !x) {
        st = lt_error(LT_ERR_NOMEM, "study: out of memory");
        goto done;
    }
    if ((st = gather(sp, opt, trials, -1, X, y, &n, P, py, &np))) goto done;
    /* Fewer than two complete trials (successive halving pruned nearly all at a rung): the GP
     * models the values at the highest rung two trials reached instead of waiting for a second
     * complete trial with quasi-random points (BOHB, Falkner et al. 2018: its model is that of
     * the largest budget with enough observations). Before 2026-12-07 it waited: on seed 2 of
     * the real-task benchmark one trial was complete until trial 10, so trials 7-10 were Sobol
     * points and the GP had 5 asks of 16 (bench/RESULTS.md). Once two trials are complete the
     * GP models the final values again; a study without rung values waits as before. */
    int rung = n < 2 ? rung_with_two(trials) : -1;
    if (rung >= 0 && (st = gather(sp, opt, trials, rung, X, y, &n, P, py, &np))) goto done;
    if (n < 2) { /* nothing to model yet */
        double u[sp->n + 1];
        if ((st = sobol_point(sp->n, opt->seed, trial, u))) goto done;
        *params = lt_space_params_from_unit(sp, u);
    } else {
        st = lt_tune_gp_next(sp, n, X, y, np, P, py,
                             lt_tune_stream_seed(opt->seed, (uint64_t)trial), theta, x);
        if (st) goto done;
        *used_gp = 1;
        *params = lt_space_params_from_model(sp, x);
    }
    if (!*params) st = lt_error(LT_ERR_NOMEM, "study: out of memory");
done:
    lt_free(X);
    lt_free(P);
    lt_free(y);
    lt_free(py);
    lt_free(x);
    return st;
}

lt_status lt_tune_suggest(const lt_space *sp, const lt_study_options *opt, const json_t *trials,
                          int trial, double *theta, int *used_gp, json_t **params) {
    *params = NULL;
    *used_gp = 0;
    double u[sp->n + 1];
    lt_status st;
    switch (opt->sampler) {
    case LT_SAMPLER_RANDOM: {
        gsl_rng *r = rng_for(opt->seed, (uint64_t)trial);
        if (!r) return lt_error(LT_ERR_NOMEM, "study: out of memory");
        for (int i = 0; i < sp->n; i++) u[i] = gsl_rng_uniform(r);
        gsl_rng_free(r);
        break;
    }
    case LT_SAMPLER_SOBOL:
        if ((st = sobol_point(sp->n, opt->seed, trial, u))) return st;
        break;
    case LT_SAMPLER_AUTO:
    case LT_SAMPLER_GP: {
        int n0 = opt->n_startup;
        if (trial >= n0) return suggest_gp(sp, opt, trials, trial, theta, used_gp, params);
        if ((st = sobol_point(sp->n, opt->seed, trial, u))) return st;
        break;
    }
    case LT_SAMPLER_TPE: {
        if (trial >= opt->n_startup) return lt_tune_tpe_suggest(sp, opt, trials, trial, params);
        gsl_rng *r = rng_for(opt->seed, (uint64_t)trial); /* random first, as Optuna's TPE */
        if (!r) return lt_error(LT_ERR_NOMEM, "study: out of memory");
        for (int i = 0; i < sp->n; i++) u[i] = gsl_rng_uniform(r);
        gsl_rng_free(r);
        break;
    }
    default:
        return lt_error(LT_ERR_UNSUPPORTED, "study: sampler %s is not implemented yet",
                        lt_sampler_name(opt->sampler));
    }
    *params = lt_space_params_from_unit(sp, u);
    return *params ? LT_OK : lt_error(LT_ERR_NOMEM, "study: out of memory");
}
