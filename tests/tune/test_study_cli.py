#!/usr/bin/env python3
"""test_study_cli.py - `loratune study create|ask|tell|report|show` through the real program:
the command-line contract of issue 15 (one JSON object per `ask --json`, values within the
space and of the right types), best-trial bookkeeping checked against the values this test
told, the error messages for bad input, two asks at once, and resume after SIGKILL: processes
killed at random moments of their ask / tell leave study.json intact (it parses, no told trial
is lost, the killed change is either all there or not at all), and the study then goes on to
ask exactly what an uninterrupted study with the same seed asks.
"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import LORATUNE, check, finish, run  # noqa: E402

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "rank": {"type": "int", "low": 2, "high": 64, "log": True},
    "warmup": {"type": "int", "low": 0, "high": 10},
    "targets": {"type": "categorical", "choices": ["attention", "mlp", "all"]},
    "packed": {"type": "categorical", "choices": [True, False]},
}


def objective(p):
    """A smooth function of all parameters, minimum near lr 1e-3, rank 16, mlp, packed."""
    v = (math.log10(p["lr"]) + 3) ** 2 + (p["dropout"] - 0.1) ** 2
    v += 0.1 * (math.log2(p["rank"]) - 4) ** 2 + 0.01 * (p["warmup"] - 3) ** 2
    v += {"attention": 0.5, "mlp": 0.0, "all": 0.2}[p["targets"]] + (0 if p["packed"] else 0.3)
    return v


def valid(p):
    ok = set(p) == set(SPACE)
    ok = ok and isinstance(p["lr"], float) and 1e-5 <= p["lr"] <= 1e-2
    ok = ok and isinstance(p["dropout"], float) and 0 <= p["dropout"] <= 0.3
    ok = ok and type(p["rank"]) is int and 2 <= p["rank"] <= 64
    ok = ok and type(p["warmup"]) is int and 0 <= p["warmup"] <= 10
    return ok and p["targets"] in SPACE["targets"]["choices"] and p["packed"] in (True, False)


def ask(d):
    r = run("study", "ask", "--study", d, "--json")
    lines = r.stdout.strip().split("\n")
    check(r.returncode == 0 and len(lines) == 1, f"ask: rc {r.returncode}, {r.stdout!r} {r.stderr}")
    o = json.loads(lines[0])
    check(set(o) == {"trial", "params"}, f"ask --json keys: {sorted(o)}")
    return o


def tell(d, trial, *extra):
    return run("study", "tell", "--study", d, "--trial", str(trial), *extra)


def show(d):
    r = run("study", "show", "--study", d, "--json")
    check(r.returncode == 0, f"show: {r.stderr}")
    return json.loads(r.stdout)


def create(d, space_path, *extra):
    return run("study", "create", "--study", d, "--space", space_path, *extra)


def contract_and_bookkeeping(tmp, space_path):
    d = os.path.join(tmp, "s1")
    r = create(d, space_path, "--seed", "11")
    check(r.returncode == 0, f"create: {r.stderr}")
    told = {}
    for i in range(30):
        o = ask(d)
        check(o["trial"] == i, f"trial numbers count up: got {o['trial']}, wanted {i}")
        check(valid(o["params"]), f"trial {i}: params outside the space: {o['params']}")
        if i == 3:
            check(tell(d, i, "--state", "failed").returncode == 0, "tell --state failed")
        elif i == 5:
            check(tell(d, i, "--state", "pruned").returncode == 0, "tell --state pruned")
        else:
            v = objective(o["params"])
            r = tell(d, i, "--value", repr(v))
            check(r.returncode == 0, f"tell {i}: {r.stderr}")
            told[i] = v
    s = show(d)
    check(s["n_trials"] == 30 and s["n_complete"] == len(told), f"show counts: {s['n_trials']}, "
          f"{s['n_complete']}")
    states = [t["state"] for t in s["trials"]]
    check(states[3] == "failed" and states[5] == "pruned" and states.count("complete") == 28,
          f"states: {states}")
    for i, v in told.items():
        check(s["trials"][i]["value"] == v, f"trial {i}: value {s['trials'][i]['value']} != {v}")
    best = min(told, key=told.get)
    check(s["best"]["trial"] == best and s["best"]["value"] == told[best],
          f"best {s['best']}, wanted trial {best} value {told[best]}")
    # the GP phase (20 trials) should at least halve the best of the Sobol start (10 trials) on
    # this smooth function (the benchmark, bench/study_vs_optuna.py, measures it properly)
    n0 = s["n_startup"]
    sob = min(v for i, v in told.items() if i < n0)
    gp = min(v for i, v in told.items() if i >= n0)
    check(n0 == 10 and gp < 0.5 * sob, f"GP trials did not halve the best of the first {n0} "
          f"(Sobol) ones: {sob} -> {gp}")
    # errors
    r = tell(d, 4, "--value", "1.0")
    check(r.returncode == 1 and "trial 4 was already told (complete" in r.stderr,
          f"telling twice: {r.returncode} {r.stderr}")
    r = tell(d, 99, "--value", "1.0")
    check(r.returncode == 1 and "no trial 99" in r.stderr, f"unknown trial: {r.stderr}")
    r = tell(d, 2, "--value", "abc")
    check(r.returncode == 2 and "--value: expected a number" in r.stderr, f"bad value: {r.stderr}")
    r = tell(d, 2, "--value", "1", "--state", "failed")
    check(r.returncode == 2, f"--value with --state failed: {r.stderr}")
    r = tell(d, 2, "--state", "done")
    check(r.returncode == 2 and "--state: expected failed, pruned" in r.stderr, r.stderr)
    o = ask(d)
    r = tell(d, o["trial"], "--value", "nan")
    check(r.returncode == 1 and "not a finite number" in r.stderr, f"nan value: {r.stderr}")
    r = run("study", "report", "--study", d, "--trial", str(o["trial"]), "--step", "100",
            "--value", "2.5")
    check(r.returncode == 0, f"report: {r.stderr}")
    s = show(d)
    check(s["trials"][o["trial"]]["intermediate"] == [[100, 2.5]],
          f"intermediate values: {s['trials'][o['trial']]}")
    r = create(d, space_path)
    check(r.returncode == 1 and "already holds a study" in r.stderr, f"create twice: {r.stderr}")
    # text output of show names the best trial
    r = run("study", "show", "--study", d)
    check(r.returncode == 0 and f"best: trial {best}," in r.stdout, f"show text: {r.stdout[-300:]}")


def bad_input(tmp, space_path):
    def bad_space(text, want, name):
        p = os.path.join(tmp, name + ".json")
        with open(p, "w") as f:
            f.write(text)
        r = create(os.path.join(tmp, "bad-" + name), p)
        check(r.returncode == 1 and want in r.stderr, f"{name}: wanted '{want}' in {r.stderr!r}")
        check(not os.path.exists(os.path.join(tmp, "bad-" + name, "study.json")),
              f"{name}: a study was written")

    bad_space('{"lr": {"type": "float", "low": 0.1}}', "space: lr: high: expected a number", "nohigh")
    bad_space('{"lr": {"type": "float", "low": 0.1, "high": 0.01}}', "lr: expected low < high", "order")
    bad_space('{"r": {"type": "int", "low": 1.5, "high": 4}}', "r: low: expected an integer", "intlow")
    bad_space('{"c": {"type": "categorical", "choices": []}}', "c: choices: expected a non-empty", "nochoice")
    bad_space('{"x": {"type": "uniform", "low": 0, "high": 1}}', 'x: type: expected "float"', "type")
    bad_space('{"x": {"type": "float", "low": 0, "high": 1, "step": 2}}', 'unknown field "step"', "field")
    bad_space('{"x": {"type": "float", "low": 0, "high": 1}', "line 1", "json")
    bad_space('{"x": {"type": "float", "low": 0, "high": 1, "log": true}}', "x: log: needs low > 0", "log0")
    r = create(os.path.join(tmp, "u"), space_path, "--sampler", "cmaes")
    check(r.returncode == 2 and "--sampler: expected gp, tpe" in r.stderr, r.stderr)
    # tpe through the contract: 10 random trials, then TPE's (with a pruned and a failed one
    # among them); every ask inside the space (its estimator: tests/tune/test_tpe.c)
    d = os.path.join(tmp, "t")
    r = create(d, space_path, "--sampler", "tpe", "--seed", "5")
    check(r.returncode == 0, f"create --sampler tpe: {r.stderr}")
    for k in range(14):
        o = ask(d)
        check(valid(o["params"]), f"tpe trial {k}: {o['params']}")
        extra = (["--state", "pruned"] if k == 11 else ["--state", "failed"] if k == 12
                 else ["--value", repr(objective(o["params"]))])
        check(tell(d, o["trial"], *extra).returncode == 0, f"tell tpe trial {k}")
    sh = show(d)
    check(sh["sampler"] == "tpe" and sh["n_startup"] == 10 and sh["n_trials"] == 14,
          f"tpe study: sampler {sh['sampler']}, n_startup {sh['n_startup']}, {sh['n_trials']} "
          "trials")
    r = create(os.path.join(tmp, "dd"), space_path, "--direction", "up")
    check(r.returncode == 2 and "--direction: expected minimize or maximize" in r.stderr, r.stderr)
    r = run("study", "ask", "--study", os.path.join(tmp, "nothing"), "--json")
    check(r.returncode == 1 and "no study here" in r.stderr, f"ask without a study: {r.stderr}")
    r = run("study", "ask", "--study", os.path.join(tmp, "nothing"), "--value", "1")
    check(r.returncode == 2 and "--value is not an option of ask" in r.stderr, r.stderr)
    # a study file broken by hand is refused naming the file and field
    d = os.path.join(tmp, "broken")
    check(create(d, space_path).returncode == 0, "create broken")
    path = os.path.join(d, "study.json")
    with open(path) as f:
        st = json.load(f)
    st["trials"] = [{"trial": 0, "state": "complete", "params": {"lr": 5.0}, "value": 1,
                     "intermediate": []}]
    with open(path, "w") as f:
        json.dump(st, f)
    r = run("study", "show", "--study", d, "--json")
    check(r.returncode == 1 and "study.json: trials[0]: params:" in r.stderr,
          f"broken study file: {r.stderr}")
    with open(path, "w") as f:
        f.write('{"format": "loratune-study", ')
    r = run("study", "ask", "--study", d)
    check(r.returncode == 1 and "invalid JSON" in r.stderr, f"torn file: {r.stderr}")


def maximize_and_parallel(tmp, space_path):
    d = os.path.join(tmp, "max")
    check(create(d, space_path, "--direction", "maximize", "--sampler", "random").returncode == 0,
          "create maximize")
    vals = {}
    for _ in range(6):
        o = ask(d)
        vals[o["trial"]] = objective(o["params"])
        tell(d, o["trial"], "--value", repr(vals[o["trial"]]))
    s = show(d)
    best = max(vals, key=vals.get)
    check(s["direction"] == "maximize" and s["best"]["trial"] == best, f"maximize best: {s['best']}")
    # two asks at once: both get a trial, different numbers (the second waits for the lock)
    ps = [subprocess.Popen([LORATUNE, "study", "ask", "--study", d, "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in ps]
    ok = all(p.returncode == 0 for p in ps)
    check(ok, f"parallel asks: {[o[1] for o in outs]}")
    if ok:
        trials = sorted(json.loads(o[0])["trial"] for o in outs)
        check(trials == [6, 7, 8], f"parallel asks got trials {trials}")


def sigkill_resume(tmp, space_path):
    n_trials = 22
    # the reference: the same study, never interrupted
    ref = os.path.join(tmp, "ref")
    check(create(ref, space_path, "--seed", "5", "--n-startup", "6").returncode == 0, "create ref")
    ref_params = []
    for _ in range(n_trials):
        o = ask(ref)
        ref_params.append(o["params"])
        tell(ref, o["trial"], "--value", repr(objective(o["params"])))
    d = os.path.join(tmp, "killed")
    check(create(d, space_path, "--seed", "5", "--n-startup", "6").returncode == 0, "create killed")
    path = os.path.join(d, "study.json")
    rng = random.Random(1)
    kills = interrupted = 0

    def killed_at_random(args):
        """Starts `loratune study ARGS`, SIGKILLs it after a random delay; True when the
        kill came before it finished."""
        nonlocal kills
        p = subprocess.Popen([LORATUNE, "study", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        delay = rng.uniform(0, 0.03 if args[0] == "tell" else 0.15)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        kills += 1
        return p.returncode == -signal.SIGKILL

    before = None
    while True:
        with open(path) as f:
            st = json.load(f)  # must parse after every kill
        trials = st["trials"]
        if before is not None:  # nothing told before the kill is lost or changed
            for i, t in enumerate(before):
                if t["state"] != "running":
                    check(trials[i]["state"] == t["state"] and trials[i].get("value") == t.get("value"),
                          f"trial {i} changed by a kill: {t} -> {trials[i]}")
        before = trials
        running = [t for t in trials if t["state"] == "running"]
        if running:  # tell it: first a killed attempt, then (if it did not land) for real
            t = running[0]
            v = repr(objective(t["params"]))
            if killed_at_random(["tell", "--study", d, "--trial", str(t["trial"]), "--value", v]):
                interrupted += 1
            with open(path) as f:
                st2 = json.load(f)
            s2 = st2["trials"][t["trial"]]["state"]
            check(s2 in ("running", "complete"), f"state after a killed tell: {s2}")
            if s2 == "running":
                r = tell(d, t["trial"], "--value", v)
                check(r.returncode == 0, f"tell after a kill: {r.stderr}")
            continue
        if len(trials) >= n_trials:
            break
        if killed_at_random(["ask", "--study", d, "--json"]):
            interrupted += 1
        with open(path) as f:
            n_after = len(json.load(f)["trials"])
        check(n_after in (len(trials), len(trials) + 1), f"a killed ask left {n_after} trials")
        if n_after == len(trials):
            ask(d)
    s = show(d)
    got = [t["params"] for t in s["trials"]]
    check(len(got) == n_trials and all(t["state"] == "complete" for t in s["trials"]),
          f"resumed study: {len(got)} trials, states {[t['state'] for t in s['trials']]}")
    same = sum(a == b for a, b in zip(got, ref_params))
    check(same == n_trials, f"resumed study asked {n_trials - same} of {n_trials} trials "
          f"differently from the uninterrupted one")
    check(interrupted >= 10, f"only {interrupted} of {kills} kills came before the process ended")
    print(f"sigkill: {kills} processes killed, {interrupted} of them before they ended; the study ended as the uninterrupted one "
          f"({same}/{n_trials} trials equal)")


def pruned_not_asked_again(tmp, with_rungs):
    """A pruned trial enters the GP as a liar: the next asks move away. With pruned trials left
    out, the GP's data stayed the same after each pruned trial and it asked the same point (to
    1e-4 of lr) trial after trial (the SmolLM2 / WikiSQL benchmark, 8 pruned repeats). Without
    rung values (`tell --state pruned` alone) the liar is at the worst value; with them
    (with_rungs: every trial reports at step 10 through the pruner, the pruned ones just outside
    the best third there) it is at the value its rank at the rung maps to, near the best
    complete ones: the asks must still not repeat a point."""
    d = os.path.join(tmp, "pruned-rungs" if with_rungs else "pruned")
    sp = os.path.join(tmp, "space2.json")
    with open(sp, "w") as f:
        json.dump({"x": {"type": "float", "low": 0.0, "high": 1.0},
                   "y": {"type": "float", "low": 0.0, "high": 1.0}}, f)
    check(create(d, sp, "--sampler", "gp", "--seed", "3").returncode == 0, "create pruned study")
    rungs = []

    def report(trial, value):
        r = run("study", "report", "--study", d, "--trial", str(trial), "--step", "10",
                "--value", repr(value), "--prune-min-resource", "10")
        check(r.returncode == 0, f"report: {r.stderr}")
        rungs.append(value)
        return r.stdout.strip()

    for _ in range(8):  # Sobol start (5) and GP trials, all told complete
        o = ask(d)
        p = o["params"]
        v = (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2
        if with_rungs:
            report(o["trial"], v + 0.5)
        check(tell(d, o["trial"], "--value", repr(v)).returncode == 0, "tell")
    pts = []
    for _ in range(4):  # every next one pruned
        o = ask(d)
        pts.append((o["params"]["x"], o["params"]["y"]))
        if with_rungs:  # between the best third's last value and the next one: pruned
            srt = sorted(rungs)
            k = (len(srt) + 1) // 3 - 1
            said = report(o["trial"], 0.5 * (srt[k] + srt[k + 1]))
            check(said == "prune", f"report: {said!r}, wanted prune")
        check(tell(d, o["trial"], "--state", "pruned").returncode == 0, "tell pruned")
    near = min(math.dist(a, b) for i, a in enumerate(pts) for b in pts[i + 1:])
    check(near > 0.01, f"asks after pruned trials: nearest two {near:.2e} apart: {pts}")
    print(f"pruned trials ({'with' if with_rungs else 'without'} rung values): the next 4 asks "
          f"at least {near:.3f} apart")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        space_path = os.path.join(tmp, "space.json")
        with open(space_path, "w") as f:
            json.dump(SPACE, f)
        contract_and_bookkeeping(tmp, space_path)
        bad_input(tmp, space_path)
        maximize_and_parallel(tmp, space_path)
        sigkill_resume(tmp, space_path)
        pruned_not_asked_again(tmp, False)
        pruned_not_asked_again(tmp, True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
