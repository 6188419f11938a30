#!/usr/bin/env python3
"""importance_vs_optuna.py - parameter importance of `loratune study importance` (fANOVA of the
GP mean) against Optuna's evaluators on the same trials, on an additive function whose fANOVA
importances are known exactly (tests/tune/test_importance.py's function: a float, a log float,
an int, a 3-way categorical and an inert float). Not a test: a table for bench/RESULTS.md.

    python bench/importance_vs_optuna.py --loratune build/loratune --seeds 10 --trials 40

Per seed: a study with the random sampler (seed s) driven through `loratune study ask/tell`,
then `loratune study importance --json`; the same trials given to Optuna's
FanovaImportanceEvaluator(seed=s) and to its default (PedAnovaImportanceEvaluator). Prints the
median and 25th-75th percentile of the L1 distance to the exact importances, and how often the
inert parameter is ranked last."""
import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile

import optuna

SPACE = {"a": {"type": "float", "low": 0.0, "high": 1.0},
         "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "k": {"type": "int", "low": 1, "high": 8},
         "c": {"type": "categorical", "choices": ["x", "y", "z"]},
         "idle": {"type": "float", "low": -5.0, "high": 5.0}}
COFF = {"x": 0.0, "y": 1.2, "z": 0.3}


def f(p):
    return 4 * (p["a"] - 0.3) ** 2 + 0.5 * (math.log10(p["lr"]) + 2.5) ** 2 + 0.1 * p["k"] + \
        COFF[p["c"]]


def variance(g, xs):
    m = sum(g(x) for x in xs) / len(xs)
    return sum((g(x) - m) ** 2 for x in xs) / len(xs)


N = 20000
grid = [(i + 0.5) / N for i in range(N)]
EXACT = {"a": variance(lambda u: 4 * (u - 0.3) ** 2, grid),
         "lr": variance(lambda u: 0.5 * ((-4 + 3 * u) + 2.5) ** 2, grid),
         "k": variance(lambda k: 0.1 * k, range(1, 9)),
         "c": variance(lambda c: COFF[c], list(COFF)), "idle": 0.0}
T = sum(EXACT.values())
EXACT = {k: v / T for k, v in EXACT.items()}
DIST = {"a": optuna.distributions.FloatDistribution(0, 1),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "k": optuna.distributions.IntDistribution(1, 8),
        "c": optuna.distributions.CategoricalDistribution(["x", "y", "z"]),
        "idle": optuna.distributions.FloatDistribution(-5, 5)}


def l1(imp):
    return sum(abs(imp[k] - EXACT[k]) for k in SPACE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loratune", default="build/loratune")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=40)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="imp_bench_")
    sp = os.path.join(tmp, "space.json")
    json.dump(SPACE, open(sp, "w"))
    res = {"loratune": [], "optuna-fanova": [], "optuna-default": []}
    last = {k: 0 for k in res}
    for s in range(a.seeds):
        d = os.path.join(tmp, "s%d" % s)
        subprocess.run([a.loratune, "study", "create", "--study", d, "--space", sp, "--sampler",
                        "random", "--seed", str(s)], check=True, capture_output=True)
        ost = optuna.create_study()
        for _ in range(a.trials):
            q = json.loads(subprocess.run([a.loratune, "study", "ask", "--study", d, "--json"],
                                          check=True, capture_output=True, text=True).stdout)
            v = f(q["params"])
            subprocess.run([a.loratune, "study", "tell", "--study", d, "--trial", str(q["trial"]),
                            "--value", repr(v)], check=True, capture_output=True)
            ost.add_trial(optuna.trial.create_trial(params=q["params"], distributions=DIST,
                                                    value=v))
        imps = {"loratune": json.loads(subprocess.run(
                    [a.loratune, "study", "importance", "--study", d, "--json"], check=True,
                    capture_output=True, text=True).stdout)["importance"],
                "optuna-fanova": optuna.importance.get_param_importances(
                    ost, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=s)),
                "optuna-default": optuna.importance.get_param_importances(ost)}
        for k, imp in imps.items():
            res[k].append(l1(imp))
            last[k] += min(imp, key=imp.get) == "idle"
    print("exact:", {k: round(v, 4) for k, v in EXACT.items()})
    print("| evaluator | median L1 to exact [25th, 75th] | inert parameter ranked last |")
    print("| --- | ---: | ---: |")
    for k, v in res.items():
        q = statistics.quantiles(v, n=4)
        print(f"| {k} | {statistics.median(v):.3f} [{q[0]:.3f}, {q[2]:.3f}] | "
              f"{last[k]} of {a.seeds} |")


if __name__ == "__main__":
    main()
