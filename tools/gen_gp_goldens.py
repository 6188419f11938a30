"""gen_gp_goldens.py - reference values for tests/tune/test_gp.c, from outside implementations:

  - scikit-learn's GaussianProcessRegressor with ConstantKernel * Matern(nu=2.5, ARD length
    scales) + WhiteKernel: the log marginal likelihood and its gradient in the log
    hyperparameters at FIXED hyperparameters (theta = [log c, log ls_1..d, log noise], the same
    order as src/tune/gp.h), and the best value its own optimizer (L-BFGS-B, 20 restarts) finds
    within the same bounds as lt_gp_bounds;
  - the posterior mean and variance of the latent function at fixed hyperparameters
    (ConstantKernel * Matern with alpha = the noise variance, so that predict() leaves the
    noise out, as lt_gp_predict does);
  - log h(z) = log(phi(z) + z Phi(z)) (log EI = log sigma + log h((best - mean) / sigma)) from
    its integral definition h(z) = int_{-inf}^{z} Phi(t) dt, by scipy.integrate.quad over
    scipy.special.log_ndtr: a different formula from the closed form the C code uses;
  - a mixed case ("gp_tied"): 2 floats and a 4-way categorical in one-hot coordinates whose
    four length scales src/tune/gp.h ties into one, at weight 1/2 (two different choices are
    1 / ls apart: a Hamming distance). scikit-learn has no tying; the reference is its ARD
    Matern on the one-hot coordinates divided by sqrt(2), with the categorical's length scale
    repeated 4 times: the lml, the posterior, and the gradient in the tied log length scale as
    the sum of scikit-learn's gradients in the 4 copies (the chain rule);
  - Sobol points of scipy.stats.qmc.Sobol (unscrambled; Joe-Kuo direction numbers) in 1 and 2
    dimensions, where GSL's gsl_qrng_sobol (Bratley-Fox direction numbers) gives the same
    points; from the third dimension on the two sequences use different direction numbers.

Run with the project venv (numpy, scipy, scikit-learn are pinned in tools/requirements.txt):
    .venv/bin/python tools/gen_gp_goldens.py tests/data/tune/gp_goldens.json
"""
import json
import math
import sys

import numpy as np
import scipy
import sklearn
from scipy import integrate, special
from scipy.stats import qmc
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

# lt_gp_bounds (src/tune/gp.c)
SV_BOUNDS = (1e-2, 1e2)
LS_BOUNDS = (5e-3, 1e2)
NOISE_BOUNDS = (1e-6, 1.0)

CASES = [  # (n, d, seed, signal variance, length scales, noise)
    (6, 1, 1, 1.0, [0.3], 1e-4),
    (10, 2, 2, 1.7, [0.2, 0.9], 1e-3),
    (20, 3, 3, 0.6, [0.5, 0.15, 2.0], 0.05),
    (30, 6, 4, 1.2, [0.4, 0.3, 0.8, 0.25, 1.5, 0.6], 1e-5),
]


def objective(X, rng):
    """A smooth test function plus a little noise (values only feed the GP)."""
    y = np.sin(6 * X[:, 0]) + X.sum(axis=1) ** 2 - np.cos(3 * X[:, -1])
    return y + 0.01 * rng.standard_normal(len(y))


def kernel(sv, ls, noise, fixed):
    b = "fixed" if fixed else None
    k = (ConstantKernel(sv, constant_value_bounds=b or SV_BOUNDS) *
         Matern(length_scale=np.array(ls, float), nu=2.5, length_scale_bounds=b or LS_BOUNDS))
    if noise is None:
        return k
    return k + WhiteKernel(noise, noise_level_bounds=b or NOISE_BOUNDS)


def gp_case(n, d, seed, sv, ls, noise):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = objective(X, rng)
    Xs = rng.random((7, d))
    theta = np.log(np.array([sv, *ls, noise]))
    # likelihood and gradient at theta (the kernel's own hyperparameters are not used)
    g = GaussianProcessRegressor(kernel(sv, ls, noise, False), alpha=0.0, optimizer=None)
    g.fit(X, y)
    assert np.allclose(g.kernel_.theta, theta)
    lml, grad = g.log_marginal_likelihood(theta, eval_gradient=True)
    # posterior of the latent f at fixed hyperparameters
    p = GaussianProcessRegressor(kernel(sv, ls, None, True), alpha=noise, optimizer=None)
    p.fit(X, y)
    mean, std = p.predict(Xs, return_std=True)
    # scikit-learn's own maximum of the likelihood within the bounds
    f = GaussianProcessRegressor(kernel(1.0, [0.5] * d, 1e-4, False), alpha=0.0,
                                 n_restarts_optimizer=20, random_state=seed)
    f.fit(X, y)
    return {"n": n, "d": d, "X": X.tolist(), "y": y.tolist(), "theta": theta.tolist(),
            "lml": float(lml), "grad": grad.tolist(), "Xs": Xs.tolist(),
            "mean": mean.tolist(), "var": (std ** 2).tolist(),
            "fit_lml": float(f.log_marginal_likelihood_value_),
            "fit_theta": f.kernel_.theta.tolist()}


def tied_case(n=14, seed=5, sv=1.3, ls=(0.4, 0.7), ls_cat=0.8, noise=1e-3, k=4):
    rng = np.random.default_rng(seed)
    def points(m):
        F = rng.random((m, len(ls)))
        C = np.eye(k)[rng.integers(0, k, m)]
        return np.hstack([F, C])
    X = points(n)
    y = np.sin(5 * X[:, 0]) + X[:, 1] ** 2 + X[:, len(ls):] @ np.array([0.0, 1.0, 0.5, 2.0])[:k]
    y = y + 0.01 * rng.standard_normal(n)
    Xs = points(7)
    scale = np.r_[np.ones(len(ls)), np.full(k, 1 / math.sqrt(2))]
    full_ls = [*ls, *[ls_cat] * k]
    theta = np.log(np.array([sv, *full_ls, noise]))
    g = GaussianProcessRegressor(kernel(sv, full_ls, noise, False), alpha=0.0, optimizer=None)
    g.fit(X * scale, y)
    lml, grad = g.log_marginal_likelihood(theta, eval_gradient=True)
    p = GaussianProcessRegressor(kernel(sv, full_ls, None, True), alpha=noise, optimizer=None)
    p.fit(X * scale, y)
    mean, std = p.predict(Xs * scale, return_std=True)
    d = len(ls) + k
    # theta of src/tune/gp.c: d + 2 numbers, the categorical's length scale at its first
    # coordinate (the other three are unused: any value, gradient 0)
    th = np.r_[math.log(sv), np.log(ls), [math.log(ls_cat)] + [0.0] * (k - 1), math.log(noise)]
    gr = np.r_[grad[0], grad[1:1 + len(ls)], [grad[1 + len(ls):1 + d].sum()] + [0.0] * (k - 1),
               grad[-1]]
    return {"n": n, "d": d, "ls_of": [*range(len(ls)), *[len(ls)] * k],
            "w": [1.0] * len(ls) + [0.5] * k, "X": X.tolist(), "y": y.tolist(),
            "theta": th.tolist(), "lml": float(lml), "grad": gr.tolist(), "Xs": Xs.tolist(),
            "mean": mean.tolist(), "var": (std ** 2).tolist()}


def log_h_integral(z):
    """log int_{-inf}^{z} Phi(t) dt, as log Phi(z) + log int exp(log Phi(t) - log Phi(z)) dt."""
    lz = special.log_ndtr(z)
    val, _ = integrate.quad(lambda t: math.exp(special.log_ndtr(t) - lz), -np.inf, z,
                            epsabs=0, epsrel=1e-13, limit=500)
    return float(lz + math.log(val))


def main(out):
    zs = [6.0, 3.0, 1.0, 0.5, 0.0, -0.5, -0.999, -1.0, -1.5, -2.0, -3.0, -5.0, -8.0, -12.0,
          -20.0, -30.0]
    logh = [{"z": z, "log_h": log_h_integral(z)} for z in zs]
    # log EI at (mean, var, best): log sigma + log h((best - mean) / sigma)
    ei = []
    for mean, var, best in [(0.3, 0.04, 0.1), (-1.0, 2.0, 0.5), (0.0, 1e-3, -0.5),
                            (1.2, 0.5, 1.2), (2.0, 1e-2, -1.0)]:
        s = math.sqrt(var)
        ei.append({"mean": mean, "var": var, "best": best,
                   "log_ei": math.log(s) + log_h_integral((best - mean) / s)})
    sobol = {}
    for d in (1, 2):
        pts = qmc.Sobol(d, scramble=False).random(65)
        sobol[str(d)] = pts[1:].tolist()  # GSL's sequence starts after the all-zero point
    data = {"generator": "tools/gen_gp_goldens.py",
            "versions": {"scikit-learn": sklearn.__version__, "scipy": scipy.__version__,
                         "numpy": np.__version__},
            "bounds": {"sv": SV_BOUNDS, "ls": LS_BOUNDS, "noise": NOISE_BOUNDS},
            "gp": [gp_case(*c) for c in CASES], "gp_tied": tied_case(), "log_h": logh, "log_ei": ei, "sobol": sobol}
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/tune/gp_goldens.json")
