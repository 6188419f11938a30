/* tpe.c - the TPE sampler (see tpe.h; the method: docs/TUNE.md "TPE"). */
#include "tpe.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

#define PRIOR_WEIGHT 1.0
#define RAMP_FROM 25 /* observations: from here on the older ones weigh less */

/* ---- the truncated normal ------------------------------------------------------------------ */
/* log(Phi(b) - Phi(a)), a < b, taken in the tail where it is small */
static double log_mass(double a, double b) {
    if (b <= 0) return log(gsl_cdf_ugaussian_P(b) - gsl_cdf_ugaussian_P(a));
    if (a >= 0) return log(gsl_cdf_ugaussian_Q(a) - gsl_cdf_ugaussian_Q(b));
    return log1p(-(gsl_cdf_ugaussian_P(a) + gsl_cdf_ugaussian_Q(b)));
}

/* a standard normal truncated to [a, b], by the inverse CDF from u in [0, 1) (from the side
 * where the tail is, so that far tails keep their precision) */
static double trunc_std_normal(double a, double b, double u) {
    double z;
    if (a >= 0) {
        const double qa = gsl_cdf_ugaussian_Q(a), qb = gsl_cdf_ugaussian_Q(b);
        z = gsl_cdf_ugaussian_Qinv(qa - u * (qa - qb));
    } else {
        const double pa = gsl_cdf_ugaussian_P(a), pb = gsl_cdf_ugaussian_P(b);
        z = gsl_cdf_ugaussian_Pinv(pa + u * (pb - pa));
    }
    if (!(z >= a)) z = a; /* NaN from Pinv(0) too */
    if (z > b) z = b;
    return z;
}

/* ---- one parameter's estimator ------------------------------------------------------------- */
static int is_num(const lt_param *p) {
    return p->type != LT_PARAM_CATEGORICAL;
}

static double to_space(const lt_param *p, double v) {
    return p->log ? log(v) : v;
}

typedef struct {
    const double *v;
    int i;
} keyed;

static int by_value(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->v[x->i] < y->v[y->i]) return -1;
    if (x->v[x->i] > y->v[y->i]) return 1;
    return (x->i > y->i) - (x->i < y->i); /* stable */
}

void lt_tpe_pe_free(lt_tpe_pe *pe) {
    if (!pe) return;
    lt_free(pe->w);
    lt_free(pe->mu);
    lt_free(pe->sigma);
    lt_free(pe->lnorm);
    lt_free(pe->cw);
    memset(pe, 0, sizeof *pe);
}

lt_status lt_tpe_pe_build(const lt_param *p, const double *obs, int n_obs, lt_tpe_pe *pe) {
    memset(pe, 0, sizeof *pe);
    pe->p = p;
    const int n = n_obs + 1;
    pe->n = n;
    pe->w = lt_malloc(sizeof(double) * (size_t)n);
    if (!pe->w) goto oom;
    /* the observations' weights (Optuna's default_weights), then the prior's */
    for (int i = 0; i < n_obs; i++) pe->w[i] = 1.0;
    if (n_obs >= RAMP_FROM) {
        const int nr = n_obs - RAMP_FROM;
        for (int i = 0; i < nr; i++)
            pe->w[i] = nr == 1 ? 1.0 / n_obs
                               : 1.0 / n_obs + (1.0 - 1.0 / n_obs) * (double)i / (double)(nr - 1);
    }
    pe->w[n_obs] = n_obs ? PRIOR_WEIGHT : 1.0;
    double sw = 0;
    for (int i = 0; i < n; i++) sw += pe->w[i];
    for (int i = 0; i < n; i++) pe->w[i] /= sw;

    if (!is_num(p)) {
        const int k = p->n_choices;
        pe->cw = lt_malloc(sizeof(double) * (size_t)n * (size_t)k);
        if (!pe->cw) goto oom;
        for (int j = 0; j < n * k; j++) pe->cw[j] = n_obs ? PRIOR_WEIGHT / n : 1.0 / k;
        for (int i = 0; i < n_obs; i++) pe->cw[(size_t)i * k + (int)obs[i]] += 1.0;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int c = 0; c < k; c++) s += pe->cw[(size_t)i * k + c];
            for (int c = 0; c < k; c++) pe->cw[(size_t)i * k + c] /= s;
        }
        return LT_OK;
    }
    const double half = p->type == LT_PARAM_INT ? 0.5 : 0.0;
    pe->lo = to_space(p, p->low - half);
    pe->hi = to_space(p, p->high + half);
    const double range = pe->hi - pe->lo;
    pe->mu = lt_malloc(sizeof(double) * (size_t)n);
    pe->sigma = lt_malloc(sizeof(double) * (size_t)n);
    keyed *ord = lt_malloc(sizeof(keyed) * (size_t)(n_obs ? n_obs : 1));
    double *e = lt_malloc(sizeof(double) * (size_t)(n_obs + 2));
    if (!pe->mu || !pe->sigma || !ord || !e) {
        lt_free(ord);
        lt_free(e);
        goto oom;
    }
    for (int i = 0; i < n_obs; i++) pe->mu[i] = to_space(p, obs[i]);
    /* each kernel as wide as the larger gap to its sorted neighbours (the range's ends count
     * as neighbours, except for the first and last of two or more) */
    for (int i = 0; i < n_obs; i++) ord[i] = (keyed){pe->mu, i};
    qsort(ord, (size_t)n_obs, sizeof *ord, by_value);
    e[0] = pe->lo;
    e[n_obs + 1] = pe->hi;
    for (int r = 0; r < n_obs; r++) e[r + 1] = pe->mu[ord[r].i];
    const double minsigma = range / fmin(100.0, 1.0 + n), maxsigma = range;
    for (int r = 0; r < n_obs; r++) {
        double s = fmax(e[r + 1] - e[r], e[r + 2] - e[r + 1]);
        if (n_obs >= 2 && r == 0) s = e[2] - e[1];
        if (n_obs >= 2 && r == n_obs - 1) s = e[n_obs] - e[n_obs - 1];
        pe->sigma[ord[r].i] = fmin(fmax(s, minsigma), maxsigma);
    }
    pe->mu[n_obs] = 0.5 * (pe->lo + pe->hi);
    pe->sigma[n_obs] = range;
    if (!(pe->lnorm = lt_malloc(sizeof(double) * (size_t)n))) {
        lt_free(ord);
        lt_free(e);
        goto oom;
    }
    for (int j = 0; j < n; j++) /* the truncation's normaliser, once per kernel */
        pe->lnorm[j] = log_mass((pe->lo - pe->mu[j]) / pe->sigma[j],
                                (pe->hi - pe->mu[j]) / pe->sigma[j]);
    lt_free(ord);
    lt_free(e);
    return LT_OK;
oom:
    lt_tpe_pe_free(pe);
    return lt_error(LT_ERR_NOMEM, "study: out of memory");
}

/* log of kernel j's density at x */
static double kernel_log(const lt_tpe_pe *pe, int j, double x) {
    const lt_param *p = pe->p;
    if (!is_num(p)) return log(pe->cw[(size_t)j * p->n_choices + (int)x]);
    const double mu = pe->mu[j], s = pe->sigma[j], la = pe->lnorm[j];
    if (p->type == LT_PARAM_INT) {
        const double a = to_space(p, x - 0.5), b = to_space(p, x + 0.5);
        return log_mass((a - mu) / s, (b - mu) / s) - la;
    }
    const double z = (to_space(p, x) - mu) / s;
    return -0.5 * z * z - 0.5 * log(2 * M_PI) - log(s) - la;
}

double lt_tpe_joint_log_pdf(const lt_tpe_pe *pe, int np, const double *x) {
    const int n = pe[0].n;
    double lp[n], mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        double l = log(pe[0].w[j]);
        for (int q = 0; q < np; q++) l += kernel_log(&pe[q], j, x[q]);
        lp[j] = l;
        if (lp[j] > mx) mx = lp[j];
    }
    if (mx == -INFINITY) return -INFINITY;
    double s = 0;
    for (int j = 0; j < n; j++) s += exp(lp[j] - mx);
    return mx + log(s);
}

double lt_tpe_pe_log_pdf(const lt_tpe_pe *pe, double x) {
    return lt_tpe_joint_log_pdf(pe, 1, &x);
}

/* a kernel drawn by the mixture weights */
static int pick_kernel(const lt_tpe_pe *pe, gsl_rng *r) {
    double u = gsl_rng_uniform(r), c = 0;
    int j = 0;
    for (; j < pe->n - 1; j++) {
        c += pe->w[j];
        if (u < c) break;
    }
    return j;
}

/* one value drawn from kernel j (internal representation) */
static double kernel_sample(const lt_tpe_pe *pe, int j, gsl_rng *r) {
    const lt_param *p = pe->p;
    if (!is_num(p)) {
        const int k = p->n_choices;
        double v = gsl_rng_uniform(r), cc = 0;
        for (int i = 0; i < k - 1; i++) {
            cc += pe->cw[(size_t)j * k + i];
            if (v < cc) return i;
        }
        return k - 1;
    }
    const double mu = pe->mu[j], s = pe->sigma[j];
    double t = mu + s * trunc_std_normal((pe->lo - mu) / s, (pe->hi - mu) / s,
                                         gsl_rng_uniform(r));
    double x = p->log ? exp(t) : t;
    if (p->type == LT_PARAM_INT) x = p->low + round(x - p->low);
    return fmin(fmax(x, p->low), p->high);
}

/* ---- the suggestion ---------------------------------------------------------------------- */
typedef struct {
    int idx;      /* position in the trials array */
    double value; /* to minimise */
} done_trial;

static int by_done_value(const void *a, const void *b) {
    const done_trial *x = a, *y = b;
    if (x->value < y->value) return -1;
    if (x->value > y->value) return 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int by_idx(const void *a, const void *b) {
    const int *x = a, *y = b;
    return (*x > *y) - (*x < *y);
}

typedef struct {
    int idx;
    double neg_step; /* minus the last step reported; 1 with no reports */
    double value;    /* that step's value, to minimise; 0 with no reports */
} pruned_trial;

/* Optuna's order of pruned trials: the furthest first, then the better last value, then the
 * older (its sort is stable over trials in order) */
static int by_pruned_score(const void *a, const void *b) {
    const pruned_trial *x = a, *y = b;
    if (x->neg_step != y->neg_step) return x->neg_step < y->neg_step ? -1 : 1;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

lt_status lt_tpe_split(const json_t *trials, int maximize, int *below, int *n_below,
                       int *above, int *n_above) {
    const size_t nt = json_array_size(trials);
    done_trial *done = lt_malloc(sizeof(done_trial) * (nt + 1));
    pruned_trial *pr = lt_malloc(sizeof(pruned_trial) * (nt + 1));
    if (!done || !pr) {
        lt_free(done), lt_free(pr);
        return lt_error(LT_ERR_NOMEM, "study: out of memory");
    }
    int nd = 0, npr = 0, na = 0, nb = 0, nrun = 0;
    size_t i;
    const json_t *t;
    json_array_foreach((json_t *)trials, i, t) {
        const char *s = json_string_value(json_object_get(t, "state"));
        if (!s) continue;
        if (!strcmp(s, "complete")) {
            const double v = json_number_value(json_object_get(t, "value"));
            done[nd++] = (done_trial){(int)i, maximize ? -v : v};
        } else if (!strcmp(s, "pruned")) {
            pruned_trial p = {(int)i, 1, 0};
            size_t k;
            const json_t *e;
            json_array_foreach(json_object_get(t, "intermediate"), k, e) {
                double st = (double)json_integer_value(json_array_get(e, 0));
                double v = json_number_value(json_array_get(e, 1));
                if (p.neg_step == 1 || -st < p.neg_step)
                    p.neg_step = -st, p.value = maximize ? -v : v;
            }
            pr[npr++] = p;
        } else if (!strcmp(s, "failed") && json_object_get(t, "infeasible")) {
            above[na++] = (int)i;
        } else if (!strcmp(s, "running")) {
            above[na++] = (int)i; /* a "constant liar": parallel asks spread out */
            nrun++;
        }
    }
    const int n = nd + npr + na - nrun;
    int want = (int)ceil(0.1 * n);
    if (want > 25) want = 25;
    qsort(done, (size_t)nd, sizeof *done, by_done_value);
    qsort(pr, (size_t)npr, sizeof *pr, by_pruned_score);
    for (int k = 0; k < nd; k++) {
        if (nb < want) below[nb++] = done[k].idx;
        else above[na++] = done[k].idx;
    }
    for (int k = 0; k < npr; k++) {
        if (nb < want) below[nb++] = pr[k].idx;
        else above[na++] = pr[k].idx;
    }
    qsort(below, (size_t)nb, sizeof *below, by_idx);
    qsort(above, (size_t)na, sizeof *above, by_idx);
    *n_below = nb;
    *n_above = na;
    lt_free(done);
    lt_free(pr);
    return LT_OK;
}

/* the internal representation of parameter pi in trial t's params */
static lt_status internal_value(const lt_space *sp, int pi, const json_t *params, double *x,
                                double *out) {
    lt_status st = lt_space_params_to_model(sp, params, "study", x);
    if (st) return st;
    const lt_param *p = &sp->p[pi];
    if (is_num(p)) {
        *out = json_number_value(json_object_get(params, p->name));
        return LT_OK;
    }
    int best = 0;
    for (int c = 1; c < p->n_choices; c++)
        if (x[p->dim + c] > x[p->dim + best]) best = c;
    *out = best;
    return LT_OK;
}

lt_status lt_tune_tpe_suggest(const lt_space *sp, const lt_study_options *opt,
                              const json_t *trials, int trial, json_t **params) {
    *params = NULL;
    const size_t nt = json_array_size(trials);
    int *below = lt_malloc(sizeof(int) * (nt + 1)), *above = lt_malloc(sizeof(int) * (nt + 1));
    double *ob = lt_malloc(sizeof(double) * (nt + 1)), *oa = lt_malloc(sizeof(double) * (nt + 1));
    double *x = lt_malloc(sizeof(double) * (size_t)(sp->dims + 1));
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    json_t *out = json_object();
    lt_status st = LT_OK;
    if (!below || !above || !ob || !oa || !x || !r || !out) {
        st = lt_error(LT_ERR_NOMEM, "study: out of memory");
        goto end;
    }
    gsl_rng_set(r, (unsigned long)lt_tune_stream_seed(opt->seed, 0x7e5000000ull + (uint64_t)trial));
    int nb = 0, na = 0;
    if ((st = lt_tpe_split(trials, opt->maximize, below, &nb, above, &na))) goto end;
    /* every parameter's estimators over the same trials: kernel j is trial j in both */
    const int np = sp->n;
    lt_tpe_pe *l = lt_calloc((size_t)np, sizeof *l), *g = lt_calloc((size_t)np, sizeof *g);
    double *cand = lt_malloc(sizeof(double) * (size_t)np), *best = lt_malloc(sizeof(double) * (size_t)np);
    if (!l || !g || !cand || !best) st = lt_error(LT_ERR_NOMEM, "study: out of memory");
    for (int pi = 0; pi < np && !st; pi++) {
        for (int k = 0; k < nb && !st; k++)
            st = internal_value(sp, pi, json_object_get(json_array_get(trials, (size_t)below[k]),
                                                        "params"), x, &ob[k]);
        for (int k = 0; k < na && !st; k++)
            st = internal_value(sp, pi, json_object_get(json_array_get(trials, (size_t)above[k]),
                                                        "params"), x, &oa[k]);
        if (!st) st = lt_tpe_pe_build(&sp->p[pi], ob, nb, &l[pi]);
        if (!st) st = lt_tpe_pe_build(&sp->p[pi], oa, na, &g[pi]);
    }
    /* LT_TPE_CANDIDATES joint draws from l: the one with the largest log l(x) - log g(x) */
    double best_acq = -INFINITY;
    for (int c = 0; c < LT_TPE_CANDIDATES && !st; c++) {
        const int j = pick_kernel(&l[0], r);
        for (int pi = 0; pi < np; pi++) cand[pi] = kernel_sample(&l[pi], j, r);
        const double acq = lt_tpe_joint_log_pdf(l, np, cand) - lt_tpe_joint_log_pdf(g, np, cand);
        if (c == 0 || acq > best_acq) {
            best_acq = acq;
            memcpy(best, cand, sizeof(double) * (size_t)np);
        }
    }
    for (int pi = 0; pi < np && !st; pi++) {
        const lt_param *p = &sp->p[pi];
        const double v = best[pi];
        json_t *jv = p->type == LT_PARAM_FLOAT ? json_real(v)
                     : p->type == LT_PARAM_INT ? json_integer((json_int_t)v)
                                               : json_incref(json_array_get(p->choices, (size_t)v));
        if (!jv || json_object_set_new(out, p->name, jv))
            st = lt_error(LT_ERR_NOMEM, "study: out of memory");
    }
    for (int pi = 0; l && g && pi < np; pi++) {
        lt_tpe_pe_free(&l[pi]);
        lt_tpe_pe_free(&g[pi]);
    }
    lt_free(l);
    lt_free(g);
    lt_free(cand);
    lt_free(best);
    if (!st) {
        *params = out;
        out = NULL;
    }
end:
    json_decref(out);
    gsl_rng_free(r);
    lt_free(below);
    lt_free(above);
    lt_free(ob);
    lt_free(oa);
    lt_free(x);
    return st;
}
