#!/usr/bin/env python3
"""test_tune_cli.py - `loratune tune` and `loratune compare` end to end on a real small model
(stories260K, Llama architecture, 5 layers) and real data (the MLX WikiSQL set), through the
program:

- tune runs N trials; the best trial's options (DIR/best_config.yaml) given to `loratune
  train -c` reproduce its validation loss; the study is a parent run in the tracking store and
  every trial a child run (kind hpo-trial, tags parent_run / trial / trial_state, its params);
- pruning: which trials are stopped, and at which step, is what Optuna's
  SuccessiveHalvingPruner decides on the same intermediate values (the trials' validation
  losses, replayed in order); every pruned trial stopped at its rung and was among the worse at
  that rung; runs too short for pruning say why it is off;
- infeasible configurations (the memory plan over --memory-budget) never start (no run folder
  contents, no training) and are recorded as infeasible;
- SIGKILL in the middle of a trial, then --resume: the study ends with the same trials, the
  same parameters and the same values (bit for bit) as an uninterrupted one;
- compare gives one row per method (text and JSON);
- bad options (a space file's unknown field or option, a value outside the option's range, an
  unknown method, an existing study without --resume) are refused naming what is wrong.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, LORATUNE, check, finish, run  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K-hf")
DATA = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
BASE = ["--model", MODEL, "--data", DATA, "--eval-batches", "2", "--max-seq-len", "96",
        "--threads", "1"]
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
         "lora-rank": {"type": "int", "low": 2, "high": 16, "log": True},
         "lora-targets": {"type": "categorical", "choices": ["attention", "mlp", "all"]}}


def write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def study_json(d):
    with open(os.path.join(d, "study.json")) as f:
        return json.load(f)


def trial_json(d, t):
    with open(os.path.join(d, "trials", "%04d" % t, "trial.json")) as f:
        return json.load(f)


def tune(*args, **kw):
    return run("tune", *BASE, *args, **kw)


tmp = tempfile.mkdtemp(prefix="lt_tune_")
space = write(os.path.join(tmp, "space.json"), SPACE)
store = os.path.join(tmp, "store")

# ---- 1. N trials; the best one reproduced by `loratune train -c` -------------------------
d1 = os.path.join(tmp, "s1")
r = tune("--study", d1, "--trials", "4", "--iters", "12", "--batch-size", "2", "--space", space,
         "--store", store)
check(r.returncode == 0, f"tune: rc {r.returncode}\n{r.stdout}\n{r.stderr}")
check("pruning off: " in r.stdout and "fewer than 10" in r.stdout,
      f"a 12-step trial must say why pruning is off: {r.stdout}")
s1 = study_json(d1)
states = [t["state"] for t in s1["trials"]]
check(states == ["complete"] * 4, f"4 complete trials, got {states}")
best = min(s1["trials"], key=lambda t: t["value"])
with open(os.path.join(d1, "summary.json")) as f:
    summ = json.load(f)
check(summ["best"]["trial"] == best["trial"] and summ["best"]["value"] == best["value"],
      f"summary best {summ['best']} vs study {best['trial']} {best['value']}")
for t in s1["trials"]:  # the study's parameters are what the trial ran with
    with open(os.path.join(d1, "trials", "%04d" % t["trial"], "run_config.yaml")) as f:
        cfg = dict(line.split(": ", 1) for line in f.read().splitlines()
                   if ": " in line and not line.startswith("#"))
    check(float(cfg["lr"]) == t["params"]["lr"] and int(cfg["lora-rank"]) ==
          t["params"]["lora-rank"], f"trial {t['trial']}: run_config {cfg['lr']} "
          f"{cfg['lora-rank']} vs params {t['params']}")
    want = {"attention": "q,k,v,o", "mlp": "gate,up,down", "all": "all"}[t["params"]["lora-targets"]]
    check(cfg["lora-targets"] == want, f"targets {cfg['lora-targets']} vs {want}")
check(not any(os.path.exists(os.path.join(d1, "trials", "%04d" % t["trial"], "checkpoints"))
               for t in s1["trials"]), "finished trials keep no checkpoints")
rep = run("train", "-c", os.path.join(d1, "best_config.yaml"), "--out",
          os.path.join(tmp, "rep"), "--json", "--no-track")
check(rep.returncode == 0, f"train -c best_config.yaml: {rep.stderr}")
done = [json.loads(x) for x in rep.stdout.splitlines() if '"event":"done"' in x]
check(len(done) == 1 and done[0].get("final_val_loss") == best["value"],
      f"re-run of the best trial: {done} vs its value {best['value']!r}")
# the tracking store: a parent run, a child run per trial
r = run("runs", "list", "--store", store, "--json")
check(r.returncode == 0, f"runs list: {r.stderr}")
runs = json.loads(r.stdout)
parents = [x for x in runs if x["kind"] == "hpo-study"]
kids = [x for x in runs if x["kind"] == "hpo-trial"]
check(len(parents) == 1 and len(kids) == 4, f"{len(parents)} studies, {len(kids)} trials")
for k in kids:
    r = run("runs", "show", str(k["id"]), "--store", store, "--json")
    o = json.loads(r.stdout)
    t = s1["trials"][int(o["tags"]["trial"])]
    check(o["tags"]["parent_run"] == str(parents[0]["id"]) and o["tags"]["trial_state"] ==
          "complete", f"child run tags {o['tags']}")
    check(float(o["params"]["lr"]) == t["params"]["lr"], f"child params lr {o['params']['lr']}")
    check(abs(o["metrics"]["val_loss"]["last"] - t["value"]) < 1e-6,
          f"child val_loss curve ends at {o['metrics']['val_loss']} vs {t['value']}")
r = run("runs", "show", str(parents[0]["id"]), "--store", store, "--json")
o = json.loads(r.stdout)
check(o["status"] == "finished" and o["tags"]["best_trial"] == str(best["trial"]),
      f"parent run: {o['status']} {o['tags']}")

# ---- 1b. the step-0 validation: computed by the first trial, reported by the others -------
# The untrained model's validation loss is the same for trials that differ only in lr, rank
# and targets (LoRA's B starts at zero), so tune computes it once. Checked against fresh
# evaluations: `loratune train -c` of each trial that reused it evaluates step 0 itself, and
# must give the same step-0 loss (bit for bit) and the same final value as the trial.
for t in s1["trials"]:
    tj = trial_json(d1, t["trial"])
    check(tj["val_curve"][0][0] == 0 and tj["step0_val_reused"] == (t["trial"] > 0),
          f"trial {t['trial']}: step 0 {tj['val_curve'][:1]}, reused "
          f"{tj.get('step0_val_reused')} (only trial 0 should evaluate it)")
    if t["trial"] == 0:
        continue
    rr = run("train", "-c", os.path.join(d1, "trials", "%04d" % t["trial"], "run_config.yaml"),
             "--out", os.path.join(tmp, "step0-%d" % t["trial"]), "--json", "--no-track")
    check(rr.returncode == 0, f"train -c trial {t['trial']}: {rr.stderr}")
    evs = [json.loads(x) for x in rr.stdout.splitlines() if x.startswith("{")]
    e0 = [e for e in evs if e.get("event") == "eval" and e["step"] == 0]
    done = [e for e in evs if e.get("event") == "done"]
    check(len(e0) == 1 and "reused" not in e0[0] and e0[0]["val_loss"] == tj["val_curve"][0][1],
          f"trial {t['trial']} ({t['params']}): reused step-0 loss {tj['val_curve'][0][1]!r}, "
          f"a fresh run evaluates {e0}")
    check(len(done) == 1 and done[0].get("final_val_loss") == t["value"],
          f"trial {t['trial']}: value {t['value']!r}, train -c {done}")
# options that change the evaluation (here the batch size: 2 batches of 1 or 4 rows) keep
# their own step-0 loss: one evaluation per batch size, the others reuse their group's
d1b = os.path.join(tmp, "s1b")
space_bs = write(os.path.join(tmp, "space_bs.json"),
                 {"lr": SPACE["lr"], "batch-size": {"type": "categorical", "choices": [1, 4]}})
r = tune("--study", d1b, "--trials", "6", "--iters", "4", "--space", space_bs, "--no-track")
check(r.returncode == 0, f"tune (batch-size space): {r.stderr}")
first, losses = {}, {}
for t in study_json(d1b)["trials"]:
    tj = trial_json(d1b, t["trial"])
    bs = t["params"]["batch-size"]
    check(tj["step0_val_reused"] == (bs in first),
          f"trial {t['trial']} (batch-size {bs}): reused {tj['step0_val_reused']}, first of "
          f"its batch size: {bs not in first}")
    first.setdefault(bs, t["trial"])
    losses.setdefault(bs, set()).add(tj["val_curve"][0][1])
check(len(first) == 2 and all(len(v) == 1 for v in losses.values()) and
      losses[1] != losses[4], f"step-0 losses per batch size: {losses} (trials {first})")

# ---- 2. pruning against Optuna's SuccessiveHalvingPruner ---------------------------------
d2 = os.path.join(tmp, "s2")
r = tune("--study", d2, "--trials", "8", "--iters", "90", "--batch-size", "1", "--space", space,
         "--no-track")
check(r.returncode == 0, f"tune (pruning): {r.stderr}")
check("rungs at steps 10, 30" in r.stdout, f"schedule line: {r.stdout[:400]}")
s2 = study_json(d2)
pruned = {t["trial"]: max(s for s, _ in t["intermediate"]) for t in s2["trials"]
          if t["state"] == "pruned"}
check(len(pruned) >= 2, f"expected some pruned trials, got {pruned}")
for t in s2["trials"]:
    steps = [s for s, _ in t["intermediate"]]
    check(steps == list(range(0, 10 * len(steps), 10)),  # the run's step-0 evaluation, then
          f"trial {t['trial']}: evaluations every 10 steps, got {steps}")  # every min_resource
    tj = trial_json(d2, t["trial"])
    if t["state"] == "pruned":
        check(tj["steps"] == tj["pruned_at_step"] and tj["steps"] in (10, 30),
              f"trial {t['trial']} stopped at step {tj['steps']} (pruned at "
              f"{tj.get('pruned_at_step')}): must stop at a rung")
    else:
        check(t["state"] == "complete" and tj["steps"] == 90, f"trial {t['trial']}: {tj}")
try:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ost = optuna.create_study(pruner=optuna.pruners.SuccessiveHalvingPruner(
        min_resource=10, reduction_factor=3))
    for t in s2["trials"]:
        ot = ost.ask()
        decision = None
        for step, v in t["intermediate"]:
            ot.report(v, step)
            if ot.should_prune() and step < 90:
                decision = step
                break
        check(decision == pruned.get(t["trial"]),
              f"trial {t['trial']}: optuna prunes at {decision}, loratune at "
              f"{pruned.get(t['trial'])}")
        if decision is None:
            ost.tell(ot, t["intermediate"][-1][1])
        else:
            ost.tell(ot, state=optuna.trial.TrialState.PRUNED)
except ImportError:
    print("optuna missing: the pruning decisions were not compared")
# by hand: a pruned trial was worse than the best max(1, m // 3) at its rung
for t in s2["trials"]:
    if t["state"] != "pruned":
        continue
    k = len(t["rungs"]) - 1
    peers = sorted(u["rungs"][k] for u in s2["trials"][:t["trial"] + 1] if len(u.get("rungs", [])) > k)
    keep = max(1, len(peers) // 3)
    check(t["rungs"][k] > peers[keep - 1], f"trial {t['trial']} pruned at rung {k} with "
          f"{t['rungs'][k]} among {peers}")

# ---- 3. infeasible configurations never start ---------------------------------------------
d3 = os.path.join(tmp, "s3")
# 32 MiB: batch sizes 1-10 fit this model at T 96, 11-16 do not (loratune plan: 15.5 MiB + 1.57
# a row since the trainer recomputes the cheap activations)
BUDGET = 32
sp3 = write(os.path.join(tmp, "space3.json"),
            {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
             "batch-size": {"type": "int", "low": 1, "high": 16}})
r = tune("--study", d3, "--trials", "5", "--iters", "8", "--space", sp3, "--memory-budget",
         f"{BUDGET}M", "--store", store)
check(r.returncode == 0, f"tune (memory budget): {r.stderr}")
s3 = study_json(d3)
inf = [t for t in s3["trials"] if "infeasible" in t]
ran = [t for t in s3["trials"] if "infeasible" not in t]
check(len(inf) >= 1 and len(ran) == 5 and all(t["state"] == "complete" for t in ran),
      f"{len(inf)} infeasible, {len(ran)} run: {[t['state'] for t in s3['trials']]}")
for t in inf:
    tj = trial_json(d3, t["trial"])
    tdir = os.path.join(d3, "trials", "%04d" % t["trial"])
    check(t["state"] == "failed" and tj["state"] == "infeasible" and
          tj["planned_peak_bytes"] > BUDGET * 2**20, f"infeasible trial {t['trial']}: {tj}")
    check(sorted(os.listdir(tdir)) == ["infeasible", "trial.json"],
          f"an infeasible trial started something: {os.listdir(tdir)}")
for t in ran:
    tj = trial_json(d3, t["trial"])
    check(tj["planned_peak_bytes"] <= BUDGET * 2**20, f"trial {t['trial']} ran over the budget: {tj}")
r = run("runs", "list", "--store", store, "--json")
states = [json.loads(run("runs", "show", str(x["id"]), "--store", store, "--json").stdout)
          ["tags"].get("trial_state") for x in json.loads(r.stdout) if x["kind"] == "hpo-trial"]
check(states.count("infeasible") == len(inf), f"store trial states {states}")

# ---- 4. SIGKILL in a trial, then --resume --------------------------------------------------
args4 = ["--trials", "6", "--iters", "90", "--batch-size", "1", "--space", space, "--no-track"]
ref = os.path.join(tmp, "ref")
r = tune("--study", ref, *args4)
check(r.returncode == 0, f"reference study: {r.stderr}")
store4 = os.path.join(tmp, "store4")


def kill_in_trial(d, sig, min_trial):
    """Starts a study, sends sig once trial >= min_trial has reported a value; returns the
    trial it was in and the exit status."""
    p = subprocess.Popen([LORATUNE, "tune", *BASE, "--study", d, *args4[:-1], "--store", store4],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    caught = None
    watched = False
    t_end = time.time() + 120
    while time.time() < t_end and p.poll() is None:
        try:
            s = study_json(d)
        except (OSError, ValueError):
            s = None
        if s and s["trials"] and not watched:
            # a study a running tune holds can be watched (read without the lock); checked
            # before waiting for the trial to stop in, so the signal follows the sighting at once
            # (trials here last a fraction of a second)
            watched = True
            n0 = len(s["trials"])
            t0 = time.time()
            w = run("study", "show", "--study", d, "--json")
            check(w.returncode == 0 and time.time() - t0 < 10 and
                  len(json.loads(w.stdout)["trials"]) >= n0,
                  f"study show during tune: rc {w.returncode} {w.stderr}")
            continue
        if s and len(s["trials"]) > min_trial and s["trials"][-1]["state"] == "running" and \
                s["trials"][-1]["intermediate"]:
            caught = s["trials"][-1]["trial"]
            p.send_signal(sig)
            break
        time.sleep(0.02)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return caught, p.returncode


for sig, min_trial in ((signal.SIGKILL, 2), (signal.SIGINT, 1)):
    d4 = os.path.join(tmp, "s4-%d" % sig)
    caught, rc = kill_in_trial(d4, sig, min_trial)
    check(caught is not None, f"{sig}: did not catch a running trial (rc {rc})")
    if caught is None:
        continue
    check(rc == (-9 if sig == signal.SIGKILL else 130), f"{sig}: exit status {rc}")
    s = study_json(d4)
    check(s["trials"][caught]["state"] == "running", f"{sig}: the stopped trial stays running")
    r = run("tune", "--study", d4, "--resume")
    check(r.returncode == 0, f"--resume: rc {r.returncode} {r.stderr}")
    check(f"trial {caught:3d}  was running when the study stopped" in r.stdout,
          f"resume output: {r.stdout[:600]}")
    a, b = study_json(ref)["trials"], study_json(d4)["trials"]
    check(len(a) == len(b), f"{len(b)} trials after resume, {len(a)} uninterrupted")
    for x, y in zip(a, b):
        check(x["params"] == y["params"] and x["state"] == y["state"] and x["value"] == y["value"]
              and x["intermediate"] == y["intermediate"],
              f"{sig}: trial {x['trial']}: resumed {y['state']} {y['value']} {y['params']} vs "
              f"uninterrupted {x['state']} {x['value']} {x['params']}")
    # the store: one study run, finished, marked resumed; the stopped trial's run killed and a
    # second run of the same trial with its final state
    runs = json.loads(run("runs", "list", "--store", store4, "--json").stdout)
    shown = [json.loads(run("runs", "show", str(x["id"]), "--store", store4, "--json").stdout)
             for x in runs]
    study_runs = [o for o in shown if o["kind"] == "hpo-study" and o["name"] == d4]
    check(len(study_runs) == 1 and study_runs[0]["status"] == "finished" and
          study_runs[0]["tags"].get("resumed") == "true",
          f"{sig}: study runs {[(o['status'], o['tags']) for o in study_runs]}")
    if not study_runs:
        continue
    mine = [o for o in shown if o["kind"] == "hpo-trial" and
            o["tags"].get("parent_run") == str(study_runs[0]["id"])]
    again = sorted((o["status"], o["tags"].get("trial_state")) for o in mine
                   if o["tags"].get("trial") == str(caught))
    want_state = b[caught]["state"]
    check(again == sorted([("killed", "interrupted" if sig == signal.SIGINT else None),
                           ("finished", want_state)]),
          f"{sig}: runs of trial {caught}: {again}")
    check(len(mine) == len(b) + 1, f"{sig}: {len(mine)} trial runs for {len(b)} trials")

# ---- 5. compare: a row per method ----------------------------------------------------------
d5 = os.path.join(tmp, "cmp")
r = run("compare", *BASE, "--methods", "lora,dora,qlora,full", "--trials-per-method", "2",
        "--iters", "10", "--batch-size", "2", "--study", d5, "--no-track")
check(r.returncode == 0, f"compare: {r.stderr}")
with open(os.path.join(d5, "compare.json")) as f:
    cmp_ = json.load(f)
rows = {x["method"]: x for x in cmp_["methods"]}
check(sorted(rows) == ["dora", "full", "lora", "qlora"], f"rows {sorted(rows)}")
for m, x in rows.items():
    check(x["complete"] == 2 and x["best_val_loss"] > 0 and x["trainable_params"] > 0 and
          x["peak_bytes"] > 0 and x["tokens_per_sec"] > 0, f"row {m}: {x}")
    bdir = os.path.join(d5, m, "trials", "%04d" % x["best_trial"])
    f = "model.safetensors" if m == "full" else "adapter_model.safetensors"
    check(x["saved_bytes"] == os.path.getsize(os.path.join(bdir, f)) and
          x["saved_bytes"] >= 4 * x["trainable_params"] * (0 if m == "full" else 1),
          f"row {m}: saved_bytes {x['saved_bytes']}")
    check(study_json(os.path.join(d5, m))["trials"][x["best_trial"]]["value"] ==
          x["best_val_loss"], f"row {m}: best value differs from its study")
    line = [ln for ln in r.stdout.splitlines() if ln.startswith(m + " ")]
    check(len(line) == 1 and ("%.5f" % x["best_val_loss"]) in line[0], f"table row {m}: {line}")
check(rows["full"]["trainable_params"] > rows["dora"]["trainable_params"] >
      rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"],
      f"trainable params {[(m, x['trainable_params']) for m, x in rows.items()]}")

# the default spaces: LoRA's learning rates a decade above full fine-tuning's (the prior), the
# rank range cut at the model's smallest linear side (config.json)
with open(os.path.join(MODEL, "config.json")) as f:
    mc = json.load(f)
hd = mc["hidden_size"] // mc["num_attention_heads"]
side = min(64, mc["hidden_size"], mc["num_attention_heads"] * hd,
           mc["num_key_value_heads"] * hd, mc["intermediate_size"])
sl, sf = study_json(os.path.join(d5, "lora"))["space"], study_json(os.path.join(d5, "full"))["space"]
check(sl["lora-rank"]["high"] == side and sl["lora-rank"]["log"] is True,
      f"default rank range {sl['lora-rank']}, smallest side {side}")
check(abs(sl["lr"]["low"] / sf["lr"]["low"] - 10) < 1e-9 and
      abs(sl["lr"]["high"] / sf["lr"]["high"] - 10) < 1e-9 and "lora-rank" not in sf,
      f"lr ranges lora {sl['lr']} full {sf['lr']}")

# ---- --time-budget: no trial starts after the budget is spent ------------------------------
d7 = os.path.join(tmp, "s7")
r = tune("--study", d7, "--time-budget", "2s", "--iters", "30", "--batch-size", "2", "--space",
         space, "--no-track", "--json")
check(r.returncode == 0, f"tune --time-budget: {r.stderr}")
s7 = study_json(d7)
times = [trial_json(d7, t["trial"])["time_s"] for t in s7["trials"]]
check(len(times) >= 1 and sum(times[:-1]) < 2.0,
      f"time budget 2 s: trial times {times}")
summ7 = json.loads(r.stdout.strip().splitlines()[-1])
check(summ7["elapsed_s"] >= 2.0, f"stopped before the budget: {summ7}")

# ---- 6. bad options ------------------------------------------------------------------------
def refused(args, *needles, rc=2):
    r = run(*args)
    ok = r.returncode == rc and all(n in r.stderr for n in needles)
    check(ok, f"{args[-6:]}: rc {r.returncode}, stderr {r.stderr!r}, wanted {needles}")
    check("loaded" not in r.stdout, f"{args[-6:]}: refused only after loading the model")


bad = write(os.path.join(tmp, "bad1.json"),
            {"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "step": 2}})
refused(["tune", *BASE, "--study", os.path.join(tmp, "b1"), "--space", bad], "bad1.json",
        "lr", "step")
bad = write(os.path.join(tmp, "bad2.json"), {"lora-rnak": {"type": "int", "low": 2, "high": 8}})
refused(["tune", *BASE, "--study", os.path.join(tmp, "b2"), "--space", bad], "bad2.json",
        "lora-rnak", "did you mean 'lora-rank'")
bad = write(os.path.join(tmp, "bad3.json"),
            {"lora-dropout": {"type": "float", "low": 0.0, "high": 1.5}})
refused(["tune", *BASE, "--study", os.path.join(tmp, "b3"), "--space", bad], "bad3.json",
        "lora-dropout", "high")
bad = write(os.path.join(tmp, "bad4.json"),
            {"lora-targets": {"type": "categorical", "choices": ["attention", "mlpp"]}})
refused(["tune", *BASE, "--study", os.path.join(tmp, "b4"), "--space", bad], "bad4.json",
        "lora-targets", "choices[1]")
bad = write(os.path.join(tmp, "bad5.json"), {"data": {"type": "categorical", "choices": ["x"]}})
refused(["tune", *BASE, "--study", os.path.join(tmp, "b5"), "--space", bad], "bad5.json",
        "data", "not a hyperparameter")
refused(["compare", *BASE, "--methods", "lora,foo", "--study", os.path.join(tmp, "b6")],
        "unknown method 'foo'")
refused(["tune", *BASE, "--study", os.path.join(tmp, "b7"), "--method", "lorax"], "method")
refused(["tune", *BASE, "--study", d1], "already holds a study", "--resume")
refused(["tune", *BASE, "--study", os.path.join(tmp, "b8"), "--time-budget", "soon"],
        "--time-budget")
refused(["tune", "--study", os.path.join(tmp, "nothing"), "--resume"], "tune.json", rc=1)
refused(["tune", "--model", os.path.join(tmp, "nope"), "--data", DATA, "--study",
         os.path.join(tmp, "b9")], "--model", "nope", "no such file")
check(not os.path.exists(os.path.join(tmp, "b1")), "a refused space left a study folder")
sys.exit(finish())
