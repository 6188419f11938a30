/* gp.h - the Gaussian process of the GP-BO sampler (internal to src/tune), and its acquisition.
 *
 * Model: y = f(x) + e, f ~ GP(0, k), e ~ N(0, noise), with the Matern-5/2 ARD kernel
 *     k(x, x') = sv * (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r),  r^2 = sum_i ((x_i - x'_i) / ls_i)^2
 * Hyperparameters as theta = [log sv, log ls_1 .. log ls_d, log noise] (d + 2 numbers; the
 * order and meaning of scikit-learn's ConstantKernel * Matern(nu=2.5) + WhiteKernel, whose
 * values the tests compare against). Inputs are what the caller passes (the sampler snaps them
 * first: space.h); y is used as given (the sampler standardizes it).
 * Linear algebra: K + noise I = L L^T by LAPACK dpotrf; solves by dpotrs / dtrtrs.
 * Fitting: maximum of the log marginal likelihood (+ optional log-normal priors, lt_gp_log_prior)
 * over box bounds, by GSL's BFGS (vector_bfgs2) on a sigmoid map of each bound
 * interval, from several starts; the analytic gradient is used. */
#ifndef LT_TUNE_GP_H
#define LT_TUNE_GP_H

#include <stdint.h>

#include "loratune/core.h"

typedef struct {
    int n, d;
    double *X;     /* (n, d) row-major, copied */
    double *y;     /* (n) */
    double *theta; /* (d + 2) current hyperparameters */
    double *L;     /* (n, n) column-major lower Cholesky factor of K + noise I */
    double *alpha; /* (n) (K + noise I)^-1 y */
    int prior;     /* 1: the fit adds lt_gp_log_prior (the sampler); 0: plain likelihood */
    /* Optional tying of inputs to length scales (NULL: input i has its own, ls_i, weight 1):
     * input i enters r^2 as w[i] ((x_i - x'_i) / ls_{ls_of[i]})^2. The sampler ties the one-hot
     * coordinates of a categorical to one length scale with weight 1/2, so that two different
     * choices are at distance 1 / ls (a Hamming distance, as Optuna's GPSampler); the length
     * scales no input uses keep theta's layout (d + 2) and only feel the prior. Not owned. */
    const int *ls_of;
    const double *w;
} lt_gp;

/* Copies X (n, d) and y (n); theta starts at log sv 0, log ls 0, log noise log(1e-4). */
lt_status lt_gp_init(lt_gp *gp, int n, int d, const double *X, const double *y);
void lt_gp_free(lt_gp *gp); /* zeroed ok */
/* Box bounds of theta (d + 2 each). */
void lt_gp_bounds(int d, double *lo, double *hi);
/* log p(y | X, theta) and, when grad != NULL, its gradient in theta (d + 2). LT_ERR_ARG when
 * K + noise I is not positive definite at theta. */
lt_status lt_gp_lml(const lt_gp *gp, const double *theta, double *lml, double *grad);
/* log prior density of theta (up to a constant), its gradient added into grad (may be NULL):
 * -0.2 cosh(2 log ls_i) per length scale (flat near 1, walls below ~0.2 and above ~5),
 * sv ~ Gamma(2, 1), noise ~ Gamma(1.1, 30) (the shapes of Optuna's GPSampler priors).
 * Without a prior, 10-30 points often fit one tiny length scale ("all noise" along that axis)
 * and the search wanders to the corners; see docs/TUNE.md. */
double lt_gp_log_prior(int d, const double *theta, double *grad);
/* Sets theta (factorizes). */
lt_status lt_gp_set_theta(lt_gp *gp, const double *theta);
/* Fits theta (bounded maximum of lml [+ prior]) from the starts: theta0 (may be NULL), the
 * bounds' centre-ish default, and n_random draws from the seed; keeps the best, factorizes. */
lt_status lt_gp_fit(lt_gp *gp, const double *theta0, int n_random, uint64_t seed, int max_iter);
/* One run from theta0 (the last fit, after a point was added); falls back to lt_gp_fit when the
 * kernel does not factorize there. */
lt_status lt_gp_fit_from(lt_gp *gp, const double *theta0, int max_iter);
/* Posterior of the latent f at m points Xs (m, d): mean (m) and variance (m, >= 0; var NULL:
 * the mean only). */
lt_status lt_gp_predict(const lt_gp *gp, int m, const double *Xs, double *mean, double *var);

/* log h(z), h(z) = phi(z) + z Phi(z), accurate for all z (Ament et al. 2023, "Unexpected
 * Improvements to Expected Improvement"): direct for z > -1, Mills ratio in between, the
 * asymptote below -1/sqrt(eps). */
double lt_log_h(double z);
/* log EI of minimising: log E[max(best - f, 0)] for f ~ N(mean, var). */
double lt_log_ei(double mean, double var, double best);

/* The first n points of GSL's d-dimensional Sobol sequence (gsl_qrng_sobol, d <= 40) into out
 * (n, d). */
lt_status lt_sobol_points(int d, int n, double *out);

#endif
