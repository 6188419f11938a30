#!/usr/bin/env python3
"""test_tune_parallel.py - `loratune tune --parallel K` (docs/TUNE.md, "Parallel trials"):

- 6 trials, --parallel 2, over the one loaded stories260K: every trial completes; at least two
  ran at the same time (their started_at / ended_at windows in trial.json overlap) and never
  more than two; each trial's final validation loss equals, bit for bit, a separate
  `loratune train -c trials/NNNN/run_config.yaml` of the same options (trials on threads do not
  disturb each other: same numbers as alone);
- a memory budget that holds one trial but not two (from the plans' own numbers): the trials
  never overlap and none is refused as infeasible;
- with tracking, every trial is a finished child run in the store (none "not tracked");
- Ctrl-C (SIGINT) while two trials are in flight: the command ends with status 130, both
  trials stay "running" in study.json (no value, no trial.json of an end) and each has an
  "interrupted" (killed) run in the store (unless it was stopped before its training began); `--resume` runs them again and ends with exactly the
  trials of an uninterrupted study (numbers 0..N-1 once each, same parameters, states and
  values: the Sobol sampler makes a trial's parameters a function of its number, so the end
  does not depend on which trial finished first), every trial's folder with one trial.json,
  and in the store one finished run per trial plus one killed run per interrupted trial;
- --parallel 0 is refused.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, LORATUNE, check, finish, run  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K-hf")
DATA = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
BASE = ["--model", MODEL, "--data", DATA, "--iters", "30", "--batch-size", "2", "--max-seq-len",
        "96", "--eval-batches", "2", "--no-track", "--threads", "1"]
tmp = tempfile.mkdtemp(prefix="lt_par_")


def trials(d):
    out = []
    for name in sorted(os.listdir(os.path.join(d, "trials"))):
        with open(os.path.join(d, "trials", name, "trial.json")) as f:
            out.append(json.load(f))
    return out


def max_overlap(ts):
    ev = sorted([(t["started_at"], 1) for t in ts] + [(t["ended_at"], -1) for t in ts],
                key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


d = os.path.join(tmp, "p2")
r = run("tune", "--study", d, "--trials", "6", "--parallel", "2", *BASE)
check(r.returncode == 0, f"tune --parallel 2: {r.stderr[-1500:]}")
ts = trials(d)
check(len(ts) == 6 and all(t["state"] == "complete" for t in ts),
      f"states {[t['state'] for t in ts]}")
check(max_overlap(ts) == 2, f"trials at once: {max_overlap(ts)} (expected 2)")
for t in ts[:3]:
    cfg = os.path.join(d, "trials", "%04d" % t["trial"], "run_config.yaml")
    rep = run("train", "-c", cfg, "--out", os.path.join(tmp, "rep%d" % t["trial"]), "--json",
              "--no-track")
    done = [json.loads(x) for x in rep.stdout.splitlines() if '"event":"done"' in x]
    check(rep.returncode == 0 and len(done) == 1 and done[0].get("final_val_loss") == t["value"],
          f"trial {t['trial']}: alone {done} vs in parallel {t['value']!r} {rep.stderr[-300:]}")

# a budget for one trial at a time: a fixed space whose configurations plan alike (rank 8,
# every linear; only the learning rate varies), a probe trial's planned peak, and a budget just
# above it: one trial fits, two beside each other (the base counted once) do not
d1 = os.path.join(tmp, "budget")
with open(os.path.join(tmp, "space.json"), "w") as f:
    json.dump({"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}, f)
r = run("tune", "--study", os.path.join(tmp, "probe"), "--trials", "1", "--space",
        os.path.join(tmp, "space.json"), "--lora-rank", "8", "--lora-targets", "all", *BASE)
check(r.returncode == 0, r.stderr)
p1 = trials(os.path.join(tmp, "probe"))[0]["planned_peak_bytes"]
r = run("tune", "--study", d1, "--trials", "4", "--parallel", "2", "--memory-budget",
        str(p1 + 4096), "--space", os.path.join(tmp, "space.json"), "--lora-rank", "8",
        "--lora-targets", "all", *BASE)
check(r.returncode == 0 and "infeasible (not run): " not in r.stdout, f"budget for one: {r.stdout[-800:]}")
ts = trials(d1)
check(len(ts) == 4 and all(t["state"] == "complete" for t in ts) and max_overlap(ts) == 1,
      f"budget for one: states {[t['state'] for t in ts]}, at once {max_overlap(ts)}")

# tracked: every trial a child run of the study in the store, none "not tracked" (the
# trials' recorders start one at a time: they version the same data into the store's cache)
store = os.path.join(tmp, "store")
r = run("tune", "--study", os.path.join(tmp, "tracked"), "--trials", "5", "--parallel", "3",
        "--store", store, *[x for x in BASE if x != "--no-track"])
runs = json.loads(run("runs", "list", "--store", store, "--json").stdout)
check(r.returncode == 0 and "not tracked" not in r.stderr and
      sorted(x["name"] for x in runs if x["kind"] == "hpo-trial") ==
      ["trial-%d" % i for i in range(5)] and
      all(x["status"] == "finished" for x in runs), f"tracked: {r.stderr[-600:]} {runs}")

# ---- Ctrl-C with two trials in flight, then --resume ---------------------------------------------
ARGS = ["--trials", "6", "--parallel", "2", "--sampler", "sobol", "--no-prune", "--iters", "120",
        *[x for x in BASE if x not in ("--no-track", "--iters", "30")]]
ref = os.path.join(tmp, "int-ref")
r = run("tune", "--study", ref, *ARGS, "--no-track")
check(r.returncode == 0, f"uninterrupted: {r.stderr[-800:]}")
dint = os.path.join(tmp, "int")
istore = os.path.join(tmp, "istore")
p = subprocess.Popen([LORATUNE, "tune", "--study", dint, *ARGS, "--store", istore],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
caught = None
t_end = time.time() + 180
while time.time() < t_end and p.poll() is None:
    try:
        with open(os.path.join(dint, "study.json")) as f:
            s = json.load(f)
    except (OSError, ValueError):
        s = None
    running = [t["trial"] for t in s["trials"] if t["state"] == "running"] if s else []
    # two in flight, after at least one ended (the study is under way, not starting)
    if len(running) == 2 and len(s["trials"]) >= 3:
        caught = running
        p.send_signal(signal.SIGINT)
        break
    time.sleep(0.01)
try:
    out, err = p.communicate(timeout=120)
except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
    check(False, "SIGINT: tune did not end within 120 s")
check(caught is not None, f"never saw two trials in flight (rc {p.returncode}) {err[-600:]}")
if caught is not None:
    check(p.returncode == 130, f"SIGINT: exit status {p.returncode}\n{err[-800:]}")
    with open(os.path.join(dint, "study.json")) as f:
        s = json.load(f)
    left = [t["trial"] for t in s["trials"] if t["state"] == "running"]
    check(sorted(left) == sorted(caught) or (set(caught) <= set(left) and len(left) <= 3),
          f"SIGINT: trials left running {left}, in flight when signalled {caught}")
    for t in caught:
        tj = os.path.join(dint, "trials", "%04d" % t, "trial.json")
        state = json.load(open(tj)).get("state") if os.path.exists(tj) else None
        check(state in (None, "running"), f"SIGINT: trial {t}'s trial.json says {state}")
    r = run("tune", "--study", dint, "--resume")
    check(r.returncode == 0, f"--resume after SIGINT: rc {r.returncode} {r.stderr[-800:]}")
    for t in left:
        check(f"trial {t:3d}  was running when the study stopped" in r.stdout,
              f"resume does not rerun trial {t}: {r.stdout[:800]}")
    a = json.load(open(os.path.join(ref, "study.json")))["trials"]
    b = json.load(open(os.path.join(dint, "study.json")))["trials"]
    check([t["trial"] for t in b] == list(range(6)),
          f"trial numbers after resume {[t['trial'] for t in b]}")
    for x, y in zip(a, b):
        check(x["params"] == y["params"] and x["state"] == y["state"] == "complete" and
              x["value"] == y["value"],
              f"trial {x['trial']}: resumed {y['state']} {y['value']} {y['params']} vs "
              f"uninterrupted {x['state']} {x['value']} {x['params']}")
    check(sorted(os.listdir(os.path.join(dint, "trials"))) == ["%04d" % i for i in range(6)],
          f"trial folders {os.listdir(os.path.join(dint, 'trials'))}")
    for i in range(6):
        tj = json.load(open(os.path.join(dint, "trials", "%04d" % i, "trial.json")))
        check(tj["state"] == "complete" and tj["value"] == a[i]["value"], f"trial.json {i}: {tj}")
    runs = json.loads(run("runs", "list", "--store", istore, "--json").stdout)
    shown = [json.loads(run("runs", "show", str(x["id"]), "--store", istore, "--json").stdout)
             for x in runs if x["kind"] == "hpo-trial"]
    got = sorted((int(o["tags"]["trial"]), o["status"], o["tags"].get("trial_state"))
                 for o in shown)
    # a trial stopped before its training began (still preparing) has no run to mark killed
    killed = [x for x in got if x[1] != "finished"]
    check([x for x in got if x[1] == "finished"] == [(i, "finished", "complete")
                                                      for i in range(6)] and
          all(x[1:] == ("killed", "interrupted") and x[0] in left for x in killed) and
          len(set(killed)) == len(killed) and killed,
          f"store trial runs {got}, interrupted trials {left}")
    study_runs = [x for x in runs if x["kind"] == "hpo-study"]
    check(len(study_runs) == 1 and study_runs[0]["status"] == "finished",
          f"study runs {study_runs}")

r = run("tune", "--study", os.path.join(tmp, "zero"), "--parallel", "0", *BASE)
check(r.returncode == 2 and "--parallel: expected 1..64" in r.stderr, r.stderr)
shutil.rmtree(tmp, ignore_errors=True)
sys.exit(finish())
