/* gp.c - Matern-5/2 ARD Gaussian process: marginal likelihood + gradient, fit, posterior;
 * log EI; Sobol points. The formulas are in gp.h; Rasmussen & Williams (2006), eq. 2.25-2.30
 * and 5.9 for the likelihood and its gradient. */
#include "gp.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_multimin.h>
#include <gsl/gsl_qrng.h>
#include <gsl/gsl_rng.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_sf_erf.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#define SQRT5 2.23606797749978969641
#define LOG_2PI 1.83787706640934548356

void lt_gp_bounds(int d, double *lo, double *hi) {
    lo[0] = log(1e-2), hi[0] = log(1e2);             /* signal variance (y standardized) */
    for (int i = 0; i < d; i++) lo[1 + i] = log(5e-3), hi[1 + i] = log(1e2); /* inputs in [0,1] */
    lo[d + 1] = log(1e-6), hi[d + 1] = log(1.0);     /* noise variance */
}

lt_status lt_gp_init(lt_gp *gp, int n, int d, const double *X, const double *y) {
    memset(gp, 0, sizeof *gp);
    gp->n = n, gp->d = d;
    gp->X = lt_malloc(sizeof(double) * (size_t)(n > 0 ? n : 1) * (size_t)d);
    gp->y = lt_malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    gp->theta = lt_calloc((size_t)d + 2, sizeof(double));
    gp->L = lt_malloc(sizeof(double) * (size_t)(n > 0 ? n : 1) * (size_t)(n > 0 ? n : 1));
    gp->alpha = lt_malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!gp->X || !gp->y || !gp->theta || !gp->L || !gp->alpha) {
        lt_gp_free(gp);
        return lt_error(LT_ERR_NOMEM, "gp: out of memory (%d points, %d dims)", n, d);
    }
    memcpy(gp->X, X, sizeof(double) * (size_t)n * (size_t)d);
    memcpy(gp->y, y, sizeof(double) * (size_t)n);
    gp->theta[d + 1] = log(1e-4);
    return LT_OK;
}

void lt_gp_free(lt_gp *gp) {
    lt_free(gp->X);
    lt_free(gp->y);
    lt_free(gp->theta);
    lt_free(gp->L);
    lt_free(gp->alpha);
    memset(gp, 0, sizeof *gp);
}

/* il[i]: the inverse length scale input i sees, sqrt(w[i]) / ls_{ls_of[i]} (gp.h) */
static void inv_ls(const lt_gp *gp, const double *theta, double *il) {
    for (int i = 0; i < gp->d; i++)
        il[i] = exp(-theta[1 + (gp->ls_of ? gp->ls_of[i] : i)]) * (gp->w ? sqrt(gp->w[i]) : 1.0);
}

/* k(a, b) with inverse length scales il; *g (may be NULL) = sv 5/3 (1 + sqrt5 r) e^{-sqrt5 r},
 * the factor of d k / d log ls_i = g * (a_i - b_i)^2 / ls_i^2. */
static double matern(int d, const double *a, const double *b, const double *il, double sv,
                     double *g) {
    double r2 = 0;
    for (int i = 0; i < d; i++) {
        double t = (a[i] - b[i]) * il[i];
        r2 += t * t;
    }
    double r = sqrt(r2), e = exp(-SQRT5 * r);
    if (g) *g = sv * (5.0 / 3.0) * (1 + SQRT5 * r) * e;
    return sv * (1 + SQRT5 * r + (5.0 / 3.0) * r2) * e;
}

/* K (col-major n x n, kernel part only) and optionally G (the g factors). */
static void build_k(const lt_gp *gp, const double *theta, const double *il, double *K,
                    double *G) {
    int n = gp->n, d = gp->d;
    double sv = exp(theta[0]);
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++) {
            double g;
            double k = matern(d, gp->X + (size_t)i * d, gp->X + (size_t)j * d, il, sv, &g);
            K[i + (size_t)j * n] = K[j + (size_t)i * n] = k;
            if (G) G[i + (size_t)j * n] = G[j + (size_t)i * n] = g;
        }
}

lt_status lt_gp_lml(const lt_gp *gp, const double *theta, double *lml, double *grad) {
    int n = gp->n, d = gp->d;
    size_t nn = (size_t)n * (size_t)n;
    double *K = lt_malloc(sizeof(double) * (nn * 3 + (size_t)n + (size_t)d));
    if (!K) return lt_error(LT_ERR_NOMEM, "gp: out of memory (%d points)", n);
    double *L = K + nn, *G = L + nn, *a = G + nn, *il = a + n;
    inv_ls(gp, theta, il);
    double noise = exp(theta[d + 1]);
    build_k(gp, theta, il, K, grad ? G : NULL);
    memcpy(L, K, sizeof(double) * nn);
    for (int i = 0; i < n; i++) L[i + (size_t)i * n] += noise;
    lt_status st = LT_OK;
    if (LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, L, n) != 0) {
        st = lt_error(LT_ERR_ARG, "gp: kernel matrix not positive definite");
        goto done;
    }
    memcpy(a, gp->y, sizeof(double) * (size_t)n);
    LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'L', n, 1, L, n, a, n);
    double v = 0;
    for (int i = 0; i < n; i++) v += -0.5 * gp->y[i] * a[i] - log(L[i + (size_t)i * n]);
    *lml = v - 0.5 * n * LOG_2PI;
    if (!grad) goto done;
    /* W = a a^T - (K + noise I)^-1; dlml/dtheta_p = 1/2 sum_ij W_ij dK_ij/dtheta_p */
    if (LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', n, L, n) != 0) {
        st = lt_error(LT_ERR_ARG, "gp: kernel matrix not invertible");
        goto done;
    }
    for (int p = 0; p < d + 2; p++) grad[p] = 0;
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++) {
            double w = a[i] * a[j] - L[i + (size_t)j * n]; /* lower triangle of the inverse */
            double f = i == j ? 0.5 : 1.0;                 /* off-diagonal pairs count twice */
            size_t ij = i + (size_t)j * n;
            grad[0] += f * w * K[ij];
            if (i == j) grad[d + 1] += 0.5 * w * noise;
            const double *xi = gp->X + (size_t)i * d, *xj = gp->X + (size_t)j * d;
            for (int p = 0; p < d; p++) {
                double t = (xi[p] - xj[p]) * il[p];
                grad[1 + (gp->ls_of ? gp->ls_of[p] : p)] += f * w * G[ij] * t * t;
            }
        }
done:
    lt_free(K);
    return st;
}

double lt_gp_log_prior(int d, const double *theta, double *grad) {
    /* (the shapes of Optuna's GPSampler priors; docs/TUNE.md "The GP") length scales: with
     * u = log ls, -0.2 cosh(2u): flat around ls = 1 (the unit cube's side), a wall below ~0.2
     * and above ~5; signal variance sv ~ Gamma(2, 1) and noise variance ~ Gamma(1.1, 30), as
     * densities in sv and noise (the fit's coordinates are their logs) */
    double lp = 0;
    for (int i = 0; i < d; i++) {
        double u = theta[1 + i];
        lp += -0.2 * cosh(2 * u);
        if (grad) grad[1 + i] += -0.4 * sinh(2 * u);
    }
    double sv = exp(theta[0]), nv = exp(theta[d + 1]);
    lp += theta[0] - sv;
    if (grad) grad[0] += 1 - sv;
    lp += 0.1 * theta[d + 1] - 30 * nv;
    if (grad) grad[d + 1] += 0.1 - 30 * nv;
    return lp;
}

lt_status lt_gp_set_theta(lt_gp *gp, const double *theta) {
    int n = gp->n, d = gp->d;
    size_t nn = (size_t)n * (size_t)n;
    double il[d > 0 ? d : 1];
    inv_ls(gp, theta, il);
    memcpy(gp->theta, theta, sizeof(double) * (size_t)(d + 2));
    build_k(gp, theta, il, gp->L, NULL);
    double noise = exp(theta[d + 1]);
    for (int i = 0; i < n; i++) gp->L[i + (size_t)i * n] += noise;
    (void)nn;
    if (LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, gp->L, n) != 0)
        return lt_error(LT_ERR_ARG, "gp: kernel matrix not positive definite");
    memcpy(gp->alpha, gp->y, sizeof(double) * (size_t)n);
    LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'L', n, 1, gp->L, n, gp->alpha, n);
    return LT_OK;
}

/* ---- fit: minimise -(lml + prior) over u, theta = lo + (hi - lo) sigmoid(u) --------------- */
typedef struct {
    const lt_gp *gp;
    const double *lo, *hi;
    double *theta, *g; /* scratch (d + 2) */
    lt_status err;     /* an allocation failed (not a mere non-factorizable theta) */
} fit_ctx;

static void u_to_theta(const fit_ctx *c, const gsl_vector *u, double *theta, double *ds) {
    for (size_t i = 0; i < u->size; i++) {
        double s = 1 / (1 + exp(-gsl_vector_get(u, i)));
        theta[i] = c->lo[i] + (c->hi[i] - c->lo[i]) * s;
        if (ds) ds[i] = (c->hi[i] - c->lo[i]) * s * (1 - s);
    }
}

static void fit_fdf(const gsl_vector *u, void *p, double *f, gsl_vector *df) {
    fit_ctx *c = p;
    int d = c->gp->d;
    double ds[d + 2];
    u_to_theta(c, u, c->theta, ds);
    double lml;
    lt_status st = lt_gp_lml(c->gp, c->theta, &lml, df ? c->g : NULL);
    if (st != LT_OK) {
        if (st == LT_ERR_NOMEM) c->err = st;
        *f = 1e30;
        if (df) gsl_vector_set_zero(df);
        return;
    }
    if (c->gp->prior) lml += lt_gp_log_prior(d, c->theta, df ? c->g : NULL);
    *f = -lml;
    if (df)
        for (int i = 0; i < d + 2; i++) gsl_vector_set(df, (size_t)i, -c->g[i] * ds[i]);
}
static double fit_f(const gsl_vector *u, void *p) {
    double f;
    fit_fdf(u, p, &f, NULL);
    return f;
}
static void fit_df(const gsl_vector *u, void *p, gsl_vector *df) {
    double f;
    fit_fdf(u, p, &f, df);
}

/* One BFGS run from theta (in place: the end point); returns the objective (lml [+ prior]). */
static double fit_one(fit_ctx *c, double *theta, int max_iter) {
    int d = c->gp->d, m = d + 2;
    gsl_vector *u = gsl_vector_alloc((size_t)m);
    gsl_multimin_fdfminimizer *mz =
        gsl_multimin_fdfminimizer_alloc(gsl_multimin_fdfminimizer_vector_bfgs2, (size_t)m);
    if (!u || !mz) {
        gsl_vector_free(u);
        gsl_multimin_fdfminimizer_free(mz);
        c->err = lt_error(LT_ERR_NOMEM, "gp: out of memory (minimizer)");
        return -INFINITY;
    }
    for (int i = 0; i < m; i++) {
        double s = (theta[i] - c->lo[i]) / (c->hi[i] - c->lo[i]);
        s = s < 1e-6 ? 1e-6 : s > 1 - 1e-6 ? 1 - 1e-6 : s;
        gsl_vector_set(u, (size_t)i, log(s / (1 - s)));
    }
    gsl_multimin_function_fdf fn = {fit_f, fit_df, fit_fdf, (size_t)m, c};
    double best = -INFINITY;
    if (gsl_multimin_fdfminimizer_set(mz, &fn, u, 0.1, 0.1) == GSL_SUCCESS) {
        for (int it = 0; it < max_iter; it++) {
            if (gsl_multimin_fdfminimizer_iterate(mz) != GSL_SUCCESS || c->err) break;
            if (gsl_multimin_test_gradient(mz->gradient, 1e-5) == GSL_SUCCESS) break;
        }
        double f = mz->f;
        if (f < 1e29) {
            best = -f;
            u_to_theta(c, mz->x, theta, NULL);
        }
    }
    gsl_vector_free(u);
    gsl_multimin_fdfminimizer_free(mz);
    return best;
}

lt_status lt_gp_fit(lt_gp *gp, const double *theta0, int n_random, uint64_t seed, int max_iter) {
    int d = gp->d, m = d + 2;
    double lo[m], hi[m], th[m], best_th[m], g[m], cur[m];
    lt_gp_bounds(d, lo, hi);
    fit_ctx c = {gp, lo, hi, cur, g, LT_OK};
    gsl_error_handler_t *old = gsl_set_error_handler_off();
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!rng) {
        gsl_set_error_handler(old);
        return lt_error(LT_ERR_NOMEM, "gp: out of memory");
    }
    gsl_rng_set(rng, (unsigned long)(seed ^ 0x9e3779b97f4a7c15ull));
    double best = -INFINITY;
    int n_starts = (theta0 ? 1 : 0) + 1 + (n_random > 0 ? n_random : 0);
    for (int s = 0; s < n_starts; s++) {
        if (theta0 && s == 0) {
            memcpy(th, theta0, sizeof th);
        } else if (s == (theta0 ? 1 : 0)) { /* default: sv 1, ls sqrt(d) / 2 (with the prior), small noise */
            th[0] = 0;
            for (int i = 0; i < d; i++) th[1 + i] = gp->prior ? log(0.5 * sqrt((double)d)) : log(0.5);
            th[d + 1] = log(1e-4);
        } else {
            for (int i = 0; i < m; i++) th[i] = lo[i] + (hi[i] - lo[i]) * gsl_rng_uniform(rng);
            th[d + 1] = log(1e-4) + gsl_ran_gaussian(rng, 2.0);
        }
        for (int i = 0; i < m; i++) th[i] = th[i] < lo[i] ? lo[i] : th[i] > hi[i] ? hi[i] : th[i];
        double v = fit_one(&c, th, max_iter);
        if (c.err) break;
        if (v > best) {
            best = v;
            memcpy(best_th, th, sizeof th);
        }
    }
    gsl_rng_free(rng);
    gsl_set_error_handler(old);
    if (c.err) return c.err;
    if (best == -INFINITY) {
        /* no start gave a factorizable kernel: fall back to a large noise */
        for (int i = 0; i < m; i++) best_th[i] = 0.5 * (lo[i] + hi[i]);
        best_th[d + 1] = hi[d + 1];
    }
    return lt_gp_set_theta(gp, best_th);
}

lt_status lt_gp_fit_from(lt_gp *gp, const double *theta0, int max_iter) {
    int d = gp->d, m = d + 2;
    double lo[m], hi[m], th[m], g[m], cur[m];
    lt_gp_bounds(d, lo, hi);
    fit_ctx c = {gp, lo, hi, cur, g, LT_OK};
    gsl_error_handler_t *old = gsl_set_error_handler_off();
    for (int i = 0; i < m; i++)
        th[i] = theta0[i] < lo[i] ? lo[i] : theta0[i] > hi[i] ? hi[i] : theta0[i];
    double v = fit_one(&c, th, max_iter);
    gsl_set_error_handler(old);
    if (c.err) return c.err;
    if (v == -INFINITY) return lt_gp_fit(gp, NULL, 1, 0, max_iter);
    return lt_gp_set_theta(gp, th);
}

lt_status lt_gp_predict(const lt_gp *gp, int m, const double *Xs, double *mean, double *var) {
    int n = gp->n, d = gp->d;
    double *V = lt_malloc(sizeof(double) * (size_t)n * (size_t)(m > 0 ? m : 1));
    if (!V) return lt_error(LT_ERR_NOMEM, "gp: out of memory (%d candidates)", m);
    double il[d > 0 ? d : 1], sv = exp(gp->theta[0]);
    inv_ls(gp, gp->theta, il);
    for (int s = 0; s < m; s++) {
        double mu = 0;
        for (int j = 0; j < n; j++) {
            double k = matern(d, Xs + (size_t)s * d, gp->X + (size_t)j * d, il, sv, NULL);
            V[j + (size_t)s * n] = k;
            mu += k * gp->alpha[j];
        }
        mean[s] = mu;
    }
    if (!var) { /* the mean alone (parameter importance) */
        lt_free(V);
        return LT_OK;
    }
    if (n > 0)
        LAPACKE_dtrtrs(LAPACK_COL_MAJOR, 'L', 'N', 'N', n, m, gp->L, n, V, n); /* V = L^-1 Ks */
    for (int s = 0; s < m; s++) {
        double q = 0;
        for (int j = 0; j < n; j++) q += V[j + (size_t)s * n] * V[j + (size_t)s * n];
        double v = sv - q;
        var[s] = v > 0 ? v : 0;
    }
    lt_free(V);
    return LT_OK;
}

/* ---- acquisition ----------------------------------------------------------------------- */
double lt_log_h(double z) {
    if (z > -1) {
        double phi = exp(-0.5 * z * z) / sqrt(2 * M_PI);
        double Phi = 0.5 * erfc(-z / sqrt(2.0));
        return log(phi + z * Phi);
    }
    double t = -z;
    if (t < 1 / sqrt(2.220446049250313e-16)) {
        /* h = phi(t) (1 - t Q(t)/phi(t)); gsl_sf_hazard(t) = phi(t)/Q(t) without underflow */
        return -0.5 * t * t - 0.5 * LOG_2PI + log1p(-t / gsl_sf_hazard(t));
    }
    return -0.5 * t * t - 0.5 * LOG_2PI - 2 * log(t);
}

double lt_log_ei(double mean, double var, double best) {
    double s = sqrt(var > 0 ? var : 0);
    if (s < 1e-12) return best > mean ? log(best - mean) : -INFINITY;
    return log(s) + lt_log_h((best - mean) / s);
}

lt_status lt_sobol_points(int d, int n, double *out) {
    if (d < 1 || d > 40) return lt_error(LT_ERR_ARG, "sobol: %d dimensions (GSL's Sobol has 1..40)", d);
    gsl_qrng *q = gsl_qrng_alloc(gsl_qrng_sobol, (unsigned)d);
    if (!q) return lt_error(LT_ERR_NOMEM, "sobol: out of memory");
    for (int i = 0; i < n; i++) gsl_qrng_get(q, out + (size_t)i * d);
    gsl_qrng_free(q);
    return LT_OK;
}
