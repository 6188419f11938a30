#!/usr/bin/env python3
"""test_importance.py - `loratune study importance` (docs/TUNE.md, "Parameter importance"):
each parameter's main-effect share of the objective's variance (fANOVA of the GP mean).

A study driven through `loratune study ask/tell` (random sampler, 40 trials) on an additive
function of a float, a log float, an int, a categorical and a float that does nothing. For an
additive function of independent parameters the functional ANOVA is exact and known in closed
form: the importance of each parameter is the variance of its term over its sampling
distribution, divided by the sum of those variances (computed here by numerical integration,
independently of loratune). loratune's importances must be within 0.05 of these, the inert
parameter below 0.02, and the main effects must explain nearly all the variance. The same
trials given to Optuna 5.1.0's `FanovaImportanceEvaluator` (fANOVA of a random forest: the
same quantity, another model) must be no closer to the exact values (L1) than loratune's. A maximized study gives the same
importances as the minimized one of the negated values; fewer than 3 complete trials is an
error; the text output lists every parameter.
"""
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import check, finish, run  # noqa: E402

import optuna  # noqa: E402

tmp = tempfile.mkdtemp(prefix="lt_imp_")
SPACE = {"a": {"type": "float", "low": 0.0, "high": 1.0},
         "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "k": {"type": "int", "low": 1, "high": 8},
         "c": {"type": "categorical", "choices": ["x", "y", "z"]},
         "idle": {"type": "float", "low": -5.0, "high": 5.0}}
COFF = {"x": 0.0, "y": 1.2, "z": 0.3}


def terms(p):
    return {"a": 4 * (p["a"] - 0.3) ** 2,
            "lr": 0.5 * (math.log10(p["lr"]) + 2.5) ** 2,
            "k": 0.1 * p["k"],
            "c": COFF[p["c"]],
            "idle": 0.0}


def f(p):
    return sum(terms(p).values())


def variance(g, xs):
    m = sum(g(x) for x in xs) / len(xs)
    return sum((g(x) - m) ** 2 for x in xs) / len(xs)


# the exact main-effect variances over each parameter's sampling distribution
N = 20000
grid = [(i + 0.5) / N for i in range(N)]
exact = {"a": variance(lambda u: 4 * (u - 0.3) ** 2, grid),
         "lr": variance(lambda u: 0.5 * ((-4 + 3 * u) + 2.5) ** 2, grid),  # log10 lr uniform
         "k": variance(lambda k: 0.1 * k, range(1, 9)),
         "c": variance(lambda c: COFF[c], list(COFF)),
         "idle": 0.0}
tot = sum(exact.values())
exact = {k: v / tot for k, v in exact.items()}


def study(d, direction, sign, n):
    with open(os.path.join(tmp, "space.json"), "w") as fh:
        json.dump(SPACE, fh)
    r = run("study", "create", "--study", d, "--space", os.path.join(tmp, "space.json"),
            "--sampler", "random", "--seed", "7", "--direction", direction)
    check(r.returncode == 0, r.stderr)
    trials = []
    for _ in range(n):
        a = json.loads(run("study", "ask", "--study", d, "--json").stdout)
        v = sign * f(a["params"])
        run("study", "tell", "--study", d, "--trial", str(a["trial"]), "--value", repr(v))
        trials.append((a["params"], v))
    r = run("study", "importance", "--study", d, "--json")
    check(r.returncode == 0, r.stderr)
    return json.loads(r.stdout), trials


imp, trials = study(os.path.join(tmp, "min"), "minimize", 1, 40)
got = imp["importance"]
check(list(got) == list(SPACE), f"parameters {list(got)}")
check(abs(sum(got.values()) - 1) < 1e-9, f"sum {sum(got.values())}")
for k in SPACE:
    check(abs(got[k] - exact[k]) < 0.05, f"{k}: importance {got[k]:.4f} vs exact {exact[k]:.4f}")
check(got["idle"] < 0.02, f"idle: {got['idle']}")
check(imp["main_effects_fraction"] > 0.9 and imp["n_complete"] == 40, f"{imp}")

# Optuna's default evaluator on the same trials: the same order
dist = {"a": optuna.distributions.FloatDistribution(0, 1),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "k": optuna.distributions.IntDistribution(1, 8),
        "c": optuna.distributions.CategoricalDistribution(["x", "y", "z"]),
        "idle": optuna.distributions.FloatDistribution(-5, 5)}
optuna.logging.set_verbosity(optuna.logging.WARNING)
ost = optuna.create_study()
for p, v in trials:
    ost.add_trial(optuna.trial.create_trial(params=p, distributions=dist, value=v))
# Optuna's fANOVA (a random forest's functional ANOVA: the same quantity, another model) on the
# same trials: loratune's GP-based estimate must be at least as close to the exact values
oimp = optuna.importance.get_param_importances(
    ost, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
err = sum(abs(got[k] - exact[k]) for k in SPACE)
oerr = sum(abs(oimp[k] - exact[k]) for k in SPACE)
check(err <= oerr, f"L1 error vs exact: loratune {err:.4f} > Optuna fANOVA {oerr:.4f}")
print("exact", {k: round(v, 4) for k, v in exact.items()})
print("loratune (GP fANOVA) L1 %.4f" % err, {k: round(v, 4) for k, v in got.items()})
print("optuna FanovaImportanceEvaluator L1 %.4f" % oerr, {k: round(v, 4) for k, v in oimp.items()})
ped = optuna.importance.get_param_importances(ost)  # Optuna's default: PED-ANOVA (top quantile)
print("optuna default (PedAnovaImportanceEvaluator)", {k: round(v, 4) for k, v in ped.items()})

# maximize the negated values: the same importances
imp2, _ = study(os.path.join(tmp, "max"), "maximize", -1, 40)
check(all(abs(imp2["importance"][k] - got[k]) < 1e-9 for k in SPACE),
      f"maximized {imp2['importance']} vs {got}")
t = run("study", "importance", "--study", os.path.join(tmp, "min"))
check(t.returncode == 0 and all(("%-24s %.4f" % (k, got[k])) in t.stdout for k in SPACE) and
      "main effects explain" in t.stdout, t.stdout)

# too few trials
d = os.path.join(tmp, "few")
run("study", "create", "--study", d, "--space", os.path.join(tmp, "space.json"))
for _ in range(2):
    a = json.loads(run("study", "ask", "--study", d, "--json").stdout)
    run("study", "tell", "--study", d, "--trial", str(a["trial"]), "--value", "1")
r = run("study", "importance", "--study", d)
check(r.returncode == 1 and "needs 3 complete trials, the study has 2" in r.stderr, r.stderr)
sys.exit(finish())
