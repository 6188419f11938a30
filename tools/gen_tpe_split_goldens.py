"""gen_tpe_split_goldens.py - reference splits for tests/tune/test_tpe.c: which trials Optuna's
TPESampler puts "below" and "above" (optuna.samplers._tpe.sampler._split_trials with the
default gamma, min(ceil(n / 10), 25) of the n finished trials, and constant_liar's running
trials) for studies of complete, pruned and running trials, minimize and maximize. Values and
intermediate values are drawn on a coarse grid so that ties occur (Optuna's sorts are stable:
ties go by trial number); pruned trials have 0 to 3 intermediate values at steps 10, 30, 90,
so that Optuna's order of pruned trials (the furthest first, then the better last value, those
without reports last) decides which of them fill "below" when too few trials are complete.

Run with the project venv (optuna is pinned in tools/requirements.txt):
    .venv/bin/python tools/gen_tpe_split_goldens.py tests/data/tune/tpe_split_goldens.json
"""
import json
import sys

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers._tpe.sampler import _split_trials, default_gamma
from optuna.trial import TrialState, create_trial

STATES = ["complete", "pruned", "running"]
OPTUNA_STATE = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                "running": TrialState.RUNNING}


def case(rng, n, p_complete, direction):
    study = optuna.create_study(direction=direction)
    dist = {"x": FloatDistribution(0.0, 1.0)}
    trials = []
    for i in range(n):
        u = rng.uniform()
        state = ("complete" if u < p_complete else
                 "pruned" if u < 1 - 0.1 else "running")
        t = {"state": state, "intermediate": []}
        if state == "complete":
            t["value"] = float(rng.integers(0, 8)) / 4
        if state in ("complete", "pruned"):
            steps = sorted(rng.choice([10, 30, 90], size=int(rng.integers(0, 4)), replace=False))
            t["intermediate"] = [[int(s), float(rng.integers(0, 8)) / 4] for s in steps]
        trials.append(t)
        study.add_trial(create_trial(
            state=OPTUNA_STATE[state], value=t.get("value"), params={"x": 0.5},
            distributions=dist,
            intermediate_values={s: v for s, v in t["intermediate"]}))
    frozen = study.get_trials(deepcopy=False)
    n_fin = sum(t.state != TrialState.RUNNING for t in frozen)
    below, above = _split_trials(study, frozen, default_gamma(n_fin))
    return {"direction": direction, "trials": trials,
            "below": [t.number for t in below], "above": [t.number for t in above]}


def main():
    rng = np.random.default_rng(15)
    cases = []
    for n in (3, 8, 15, 24, 40, 70, 120):
        for p_complete in (0.02, 0.1, 0.5):
            for direction in ("minimize", "maximize"):
                cases.append(case(rng, n, p_complete, direction))
    out = {"optuna": optuna.__version__, "cases": cases}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()
