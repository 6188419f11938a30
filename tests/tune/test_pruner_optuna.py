#!/usr/bin/env python3
"""test_pruner_optuna.py - the successive-halving pruner (`loratune study report
--prune-min-resource R`, lt_study_should_prune) against Optuna's SuccessiveHalvingPruner
(optuna pinned in tools/requirements.txt), decision by decision, on the same intermediate
values: random studies with trials run one after another and interleaved (several running at
once, as ASHA sees them), several (min_resource, reduction_factor, min_early_stopping_rate),
both directions, ties included. Then one schedule computed by hand (eta 3, r 10): the
decisions a reader can check on paper.
"""
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import check, finish, run  # noqa: E402

try:
    import optuna
except ImportError:
    print("optuna is not installed (tools/requirements.txt)")
    sys.exit(77)

optuna.logging.set_verbosity(optuna.logging.ERROR)
SPACE = '{"x": {"type": "float", "low": 0, "high": 1}}'


def lt_create(d, direction):
    sp = os.path.join(d, "space.json")
    with open(sp, "w") as f:
        f.write(SPACE)
    r = run("study", "create", "--study", d, "--space", sp, "--direction", direction,
            "--sampler", "random")
    check(r.returncode == 0, f"create: {r.stderr}")


def lt_ask(d):
    r = run("study", "ask", "--study", d, "--json")
    check(r.returncode == 0, f"ask: {r.stderr}")
    import json
    return json.loads(r.stdout)["trial"]


def lt_report(d, trial, step, value, r0, eta, s):
    r = run("study", "report", "--study", d, "--trial", str(trial), "--step", str(step),
            "--value", repr(value), "--prune-min-resource", str(r0), "--reduction-factor",
            str(eta), "--min-early-stopping-rate", str(s))
    check(r.returncode == 0, f"report: {r.stderr}")
    return r.stdout.strip()


def lt_tell(d, trial, *extra):
    r = run("study", "tell", "--study", d, "--trial", str(trial), *extra)
    check(r.returncode == 0, f"tell: {r.stderr}")


def scenario(seed, n_trials, parallel, r0, eta, s, direction, steps):
    """Trials report at every `every` steps until `steps`; up to `parallel` run at once
    (round robin). Returns the number of decisions compared."""
    rng = random.Random(seed)
    every = rng.choice([1, 2, 5])
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=r0, reduction_factor=eta, min_early_stopping_rate=s)
    study = optuna.create_study(direction=direction, pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    compared = 0
    with tempfile.TemporaryDirectory() as d:
        lt_create(d, direction)
        pending = list(range(n_trials))
        running = []  # [optuna trial, lt trial, next step, quality]
        while pending or running:
            while pending and len(running) < parallel:
                pending.pop(0)
                ot = study.ask()
                running.append([ot, lt_ask(d), every, rng.random()])
            cur = running.pop(0)
            ot, lt, step, q = cur
            # a noisy decreasing curve; values rounded to make ties happen
            value = round(q + 2.0 / step + 0.05 * rng.random(), 2)
            ot.report(value, step)
            want = "prune" if ot.should_prune() else "continue"
            got = lt_report(d, lt, step, value, r0, eta, s)
            compared += 1
            check(got == want, f"seed {seed} trial {lt} step {step} value {value}: loratune "
                               f"{got}, optuna {want} (r {r0}, eta {eta}, s {s}, {direction})")
            if got != want:
                return compared
            if want == "prune":
                study.tell(ot, state=optuna.trial.TrialState.PRUNED)
                lt_tell(d, lt, "--state", "pruned")
            elif step + every > steps:
                study.tell(ot, value)
                lt_tell(d, lt, "--value", repr(value))
            else:
                cur[2] = step + every
                running.append(cur)
    return compared


total = 0
cases = [(1, 8, 1, 2, 3, 0, "minimize", 30), (2, 10, 3, 3, 3, 0, "minimize", 40),
         (3, 9, 1, 1, 2, 1, "maximize", 20), (4, 8, 4, 5, 4, 0, "minimize", 60),
         (5, 7, 2, 2, 3, 1, "maximize", 30)]
for c in cases:
    total += scenario(*c)
check(total > 150, f"only {total} decisions compared")
print(f"{total} pruning decisions agree with optuna {optuna.__version__}")

# By hand: eta 3, min resource 10 steps -> rungs at steps 10 and 30; minimize.
# Reports at steps 10, 20, 30, 40. A trial reaching a rung with m values recorded there
# (its own included) continues when among the best max(1, m // 3).
#   trial 0: 10 -> 1.0 (rung 0: {1.0}, best 1 of 1: continue), 30 -> 0.5 (rung 1: continue)
#   trial 1: 10 -> 2.0 (rung 0: {1.0, 2.0}: m // 3 = 0 -> only the best: prune)
#   trial 2: 10 -> 0.8 (rung 0: {1, 2, .8}: best 1: .8 continues), 30 -> 0.6 (rung 1: {.5, .6}:
#            prune)
#   trial 3: 10 -> 0.9 (rung 0: {1, 2, .8, .9}: best 1 of 4: .8 only: prune)
#   trial 4: 10 -> 0.7 (continue), 30 -> 0.4 (rung 1: {.5, .6, .4}: best: continue)
#   trial 5: 10 -> 0.95 (rung 0: {1, 2, .8, .9, .7, .95}: best 6 // 3 = 2: .7, .8: prune)
#   trial 6: 10 -> 0.75 (rung 0: 7 values, best 2: .7, .75: continue), 30 -> 0.45 (rung 1: {.5,
#            .6, .4, .45}: best 1: prune)
hand = [(0, [(10, 1.0, "continue"), (20, 0.9, "continue"), (30, 0.5, "continue"),
             (40, 0.45, "continue")]),
        (1, [(10, 2.0, "prune")]),
        (2, [(10, 0.8, "continue"), (20, 0.7, "continue"), (30, 0.6, "prune")]),
        (3, [(10, 0.9, "prune")]),
        (4, [(10, 0.7, "continue"), (20, 0.6, "continue"), (30, 0.4, "continue"),
             (40, 0.35, "continue")]),
        (5, [(10, 0.95, "prune")]),
        (6, [(10, 0.75, "continue"), (20, 0.6, "continue"), (30, 0.45, "prune")])]
with tempfile.TemporaryDirectory() as d:
    lt_create(d, "minimize")
    for trial, reports in hand:
        t = lt_ask(d)
        check(t == trial, f"ask gave trial {t}")
        for step, value, want in reports:
            got = lt_report(d, t, step, value, 10, 3, 0)
            check(got == want, f"by hand: trial {t} step {step} value {value}: {got}, "
                               f"expected {want}")
        last = reports[-1]
        if last[2] == "prune":
            lt_tell(d, t, "--state", "pruned")
        else:
            lt_tell(d, t, "--value", repr(last[1]))

# bad pruner options are refused
with tempfile.TemporaryDirectory() as d:
    lt_create(d, "minimize")
    t = lt_ask(d)
    r = run("study", "report", "--study", d, "--trial", str(t), "--step", "1", "--value", "1",
            "--prune-min-resource", "0")
    check(r.returncode == 2 and "--prune-min-resource >= 1" in r.stderr,
          f"min resource 0: rc {r.returncode} {r.stderr!r}")
    r = run("study", "report", "--study", d, "--trial", str(t), "--step", "1", "--value", "1",
            "--reduction-factor", "3")
    check(r.returncode == 2 and "go with --prune-min-resource" in r.stderr,
          f"eta without r: rc {r.returncode} {r.stderr!r}")
sys.exit(finish())
