"""gen_tpe_goldens.py - reference values for tests/tune/test_tpe.c, from Optuna's TPE sampler:
the log density of its Parzen estimator (optuna.samplers._tpe.parzen_estimator._ParzenEstimator
with TPESampler's default parameters: prior_weight 1, magic clip on, endpoints off,
default_weights, univariate) for observations of a float, a log float, an int, a log int and a
categorical parameter, at points across each range; with 0, 1, 2, 7 and 40 observations (40:
the older 15 are weighted by the ramp). Numerical observations are drawn without ties (with
ties and the ramp, which tied observation gets which width follows numpy's unstable argsort).
And the multivariate estimator (TPESampler's default for one objective) over all five
parameters with 0, 3 and 30 observations, at points drawn across the space.

Run with the project venv (optuna is pinned in tools/requirements.txt):
    .venv/bin/python tools/gen_tpe_goldens.py tests/data/tune/tpe_goldens.json
"""
import json
import sys

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights

PARAMS = [  # name, space JSON (as `loratune study create` reads it), Optuna's distribution
    ("x", {"type": "float", "low": -5.0, "high": 10.0}, FloatDistribution(-5.0, 10.0)),
    ("lr", {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
     FloatDistribution(1e-5, 1e-2, log=True)),
    ("n", {"type": "int", "low": 1, "high": 100}, IntDistribution(1, 100)),
    ("r", {"type": "int", "low": 2, "high": 256, "log": True}, IntDistribution(2, 256, log=True)),
    ("c", {"type": "categorical", "choices": ["a", "b", "c", "d"]},
     CategoricalDistribution(["a", "b", "c", "d"])),
]
N_OBS = [0, 1, 2, 7, 40]


def draw(rng, dist, n):
    """n distinct values in dist's internal representation"""
    if isinstance(dist, CategoricalDistribution):
        return [float(v) for v in rng.integers(0, len(dist.choices), n)]
    if isinstance(dist, IntDistribution):
        k = dist.high - dist.low + 1
        vals = rng.choice(k, size=min(n, k), replace=False) + dist.low
        if n > k:  # more observations than integers: repeats, in a fixed order
            vals = np.concatenate([vals, rng.integers(dist.low, dist.high + 1, n - k)])
        return [float(v) for v in vals]
    lo, hi = (np.log(dist.low), np.log(dist.high)) if dist.log else (dist.low, dist.high)
    t = rng.uniform(lo, hi, n)
    return [float(np.exp(v) if dist.log else v) for v in t]


def points(dist):
    if isinstance(dist, CategoricalDistribution):
        return [float(i) for i in range(len(dist.choices))]
    if isinstance(dist, IntDistribution):
        return [float(v) for v in sorted(set(np.linspace(dist.low, dist.high, 9).round()))]
    if dist.log:
        return [float(v) for v in np.exp(np.linspace(np.log(dist.low), np.log(dist.high), 9))]
    return [float(v) for v in np.linspace(dist.low, dist.high, 9)]


def main():
    out = sys.argv[1]
    params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True,
                                        consider_endpoints=False, weights=default_weights,
                                        multivariate=False)
    rng = np.random.default_rng(20261206)
    cases = []
    for name, space, dist in PARAMS:
        for n in N_OBS:
            obs = draw(rng, dist, n)
            pe = _ParzenEstimator({name: np.asarray(obs, dtype=float)}, {name: dist}, params)
            xs = points(dist)
            lp = pe.log_pdf({name: np.asarray(xs, dtype=float)})
            cases.append({"name": name, "space": space, "obs": obs, "x": xs,
                          "log_pdf": [float(v) for v in lp]})
    # the multivariate estimator (Optuna's default for one objective): all five parameters,
    # kernel j = observation j in each; points drawn across the space
    joint = []
    space = {name: dist for name, _, dist in PARAMS}
    for n in (0, 3, 30):
        obs = {name: np.asarray(draw(rng, dist, n), dtype=float) for name, _, dist in PARAMS}
        pe = _ParzenEstimator(obs, space, params)
        pts = {name: np.asarray(draw(rng, dist, 9), dtype=float) for name, _, dist in PARAMS}
        lp = pe.log_pdf(pts)
        joint.append({"obs": {k: [float(v) for v in a] for k, a in obs.items()},
                      "x": {k: [float(v) for v in a] for k, a in pts.items()},
                      "log_pdf": [float(v) for v in lp]})
    with open(out, "w") as f:
        json.dump({"source": f"optuna {optuna.__version__} _ParzenEstimator, TPESampler defaults",
                   "space": {name: sp for name, sp, _ in PARAMS},
                   "cases": cases, "joint": joint}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
