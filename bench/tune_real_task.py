#!/usr/bin/env python3
"""tune_real_task.py - issue 15's real-task anchor: `loratune tune` against Optuna on LoRA
fine-tuning of SmolLM2-135M on WikiSQL, equal trial runner, equal search space.

Arms (per seed S, each an independent search):
  tune    `loratune tune --trials T1 --space SPACE --tune-seed S` (its own sampler, `auto`: Sobol
          start then GP-BO, and its successive-halving pruning on the training steps);
  tpe     Optuna TPESampler(seed=S), T2 trials, each one `loratune train` process;
  random  Optuna RandomSampler(seed=S), T3 trials, each one `loratune train` process.
Every trial is the same `loratune train` run: the base options below plus the trial's
parameters (`tune` runs its trials in process, over one mapped model; its docs and tests hold
that a trial equals `loratune train -c trials/N/run_config.yaml`, and this script checks it
once per seed: it reruns tune's best trial with `loratune train -c` and prints both losses).
The objective is the run's final validation loss (`done` event, `final_val_loss`); the compute
of an arm is the optimizer steps its trials took (a pruned trial stops early).

Printed per seed: best validation loss per arm, steps and wall time per arm, and the issue's
ratios: tune best / tpe best (goal <= 1), tune best / random best - 1 (goal <= 1%), tune steps
/ random steps (goal <= 30%). Raw trials go to OUT.json.

Like for like: a trial's loss depends on the build and the CPU (`--compute-dtype auto` trains
in bf16 where the CPU has AVX512-BF16, and kernel changes move fp32 sums too: one configuration
gave 1.67632 at 9b3dc1e and 1.68142 at ae49649 on the same Zen 4), so arms run by different
builds or machines are not comparable. Each run first trains REFERENCE once and records its
loss (and the compute dtype `loratune train` chose) in OUT.json; `--table` merges files only
when their reference losses agree, and otherwise prints which files differ and does not print
the ratios (`--allow-mixed` prints them anyway, marked). Files that all predate the reference
trial merge as before, with a note that nothing checked them.

Not a test (nothing is asserted): a benchmark for bench/RESULTS.md. Needs optuna (pinned in
tools/requirements.txt and tools/bench-requirements.txt). The model: an HF folder or GGUF file;
by default models/SmolLM2-135M-Instruct.Q4_1.gguf (tools/fetch_smollm2.sh) fused once to an
fp32 HF folder in WORKDIR (as bench/run_wikisql.sh does).
    nice -n 19 .venv/bin/python bench/tune_real_task.py --seeds 0 --out /tmp/real.json
Smoke run on the tests' tiny model:
    .venv/bin/python bench/tune_real_task.py --model tests/fixtures/stories260K-hf \
        --tune-trials 4 --tpe-trials 3 --random-trials 3 --iters 20 --max-rank 16 --batch-size 4 --eval-batches 8
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The search space (loratune study / --space format; names are `loratune train` options).
SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "lora-rank": {"type": "int", "low": 4, "high": 64, "log": True},
    "lora-targets": {"type": "categorical", "choices": ["attention", "mlp", "all"]},
    "lora-dropout": {"type": "float", "low": 0.0, "high": 0.1, "log": False},
}


def suggest(trial, space):
    """The same space through Optuna's suggest API."""
    p = {}
    for name, d in space.items():
        if d["type"] == "float":
            p[name] = trial.suggest_float(name, d["low"], d["high"], log=d["log"])
        elif d["type"] == "int":
            p[name] = trial.suggest_int(name, d["low"], d["high"], log=d["log"])
        else:
            p[name] = trial.suggest_categorical(name, d["choices"])
    return p


def base_options(a):
    return ["--model", a.model, "--data", a.data, "--method", "lora", "--iters", str(a.iters),
            "--batch-size", str(a.batch_size), "--max-seq-len", str(a.max_seq_len),
            "--eval-batches", str(a.eval_batches), "--threads", str(a.threads),
            "--compute-dtype", a.compute_dtype, "--seed", str(a.train_seed), "--no-track"]


# One fixed configuration trained once per run: its loss fingerprints the build + CPU.
REFERENCE = {"lr": 1e-3, "lora-rank": 8, "lora-targets": "all", "lora-dropout": 0.0}

# `loratune tune` names these target sets; `loratune train --lora-targets` takes the lists.
TARGET_SETS = {"attention": "q,k,v,o", "mlp": "gate,up,down", "all": "all"}


def param_args(p):
    out = []
    for k, v in p.items():
        if k == "lora-targets":
            v = TARGET_SETS[v]
        out += ["--" + k, repr(v) if isinstance(v, float) else str(v)]
    return out


def run_train(a, args, workdir, info=None):
    """One `loratune train` run; returns (final_val_loss or None, steps, wall seconds); info
    (a dict), when given, gets the step-0 validation loss (`step0_val_loss`)."""
    out = tempfile.mkdtemp(prefix="trial-", dir=workdir)
    cmd = [a.loratune, "train"] + args + ["--out", out, "--json"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    shutil.rmtree(out, ignore_errors=True)
    loss, steps = None, 0
    for line in r.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "step":
            steps = max(steps, int(ev.get("step", 0)))
        elif ev.get("event") == "eval" and ev.get("step") == 0 and info is not None:
            info["step0_val_loss"] = ev.get("val_loss")
        elif ev.get("event") == "stage" and "compute_dtype" in ev and info is not None:
            info["compute_dtype"] = ev.get("compute_dtype")
        elif ev.get("event") == "done":
            steps = int(ev.get("step", steps))
            loss = ev.get("final_val_loss")
    if r.returncode != 0 or loss is None or not math.isfinite(loss):
        sys.stderr.write(f"trial failed (exit {r.returncode}): {' '.join(cmd)}\n"
                         f"{r.stderr[-2000:]}\n")
        loss = None
    return loss, steps, dt


def arm_optuna(a, kind, n, seed, workdir):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=seed) if kind == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    trials = []
    for i in range(n):
        t = study.ask()
        p = suggest(t, SPACE)
        loss, steps, dt = run_train(a, base_options(a) + param_args(p), workdir)
        if loss is None:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(t, loss)
        trials.append({"params": p, "value": loss, "steps": steps, "time_s": dt,
                       "state": "complete" if loss is not None else "failed"})
        print(f"  {kind} seed {seed} trial {i}: {fmt(loss)} ({steps} steps, {dt:.1f} s) {p}",
              flush=True)
    return trials


def arm_tune(a, n, seed, workdir):
    sdir = os.path.join(workdir, f"tune-seed{seed}")
    shutil.rmtree(sdir, ignore_errors=True)
    space = os.path.join(workdir, "space.json")
    with open(space, "w") as f:
        json.dump(SPACE, f)
    cmd = ([a.loratune, "tune", "--study", sdir, "--trials", str(n), "--space", space,
            "--tune-seed", str(seed), "--sampler", a.tune_sampler]
           + (["--min-resource", str(a.min_resource)] if a.min_resource else [])
           + (["--no-prune"] if a.no_prune else []) + base_options(a))
    print("  " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    log = r.stdout + r.stderr
    with open(os.path.join(workdir, f"tune-seed{seed}.log"), "w") as f:
        f.write(log)
    if r.returncode != 0:
        sys.exit(f"loratune tune failed (exit {r.returncode}):\n{log[-3000:]}")
    for line in log.splitlines():
        if "pruning" in line:
            print("  " + line.strip(), flush=True)
            break
    with open(os.path.join(sdir, "study.json")) as f:
        st = json.load(f)
    trials = []
    for t in st["trials"]:
        tj_path = os.path.join(sdir, "trials", "%04d" % t["trial"], "trial.json")
        tj = json.load(open(tj_path)) if os.path.exists(tj_path) else {}
        v = t.get("value") if t["state"] == "complete" else None
        vc = tj.get("val_curve") or [[None, None]]
        trials.append({"params": t.get("params"), "value": v, "state": t["state"],
                       "steps": int(tj.get("steps", 0)), "time_s": float(tj.get("time_s", 0)),
                       "step0_val_loss": vc[0][1] if vc[0][0] == 0 else None,
                       "step0_val_reused": tj.get("step0_val_reused")})
        print(f"  tune seed {seed} trial {t['trial']}: {t['state']} {fmt(v, '')} "
              f"({trials[-1]['steps']} steps, {trials[-1]['time_s']:.1f} s) {t.get('params')}",
              flush=True)
    check = None
    best_cfg = os.path.join(sdir, "best_config.yaml")
    if a.check_best and os.path.exists(best_cfg):
        # the same runner: tune's best trial again as a plain `loratune train -c` process
        info = {}
        loss, steps, dt = run_train(a, ["-c", best_cfg, "--no-track"], workdir, info)
        bt = min((x for x in trials if x["value"] is not None), key=lambda x: x["value"])
        best = bt["value"]
        # tune evaluates step 0 once per study (the other trials reuse it): the rerun's own
        # step-0 evaluation must match what the best trial reported
        check = {"tune_best": best, "train_rerun": loss, "tune_best_step0": bt["step0_val_loss"],
                 "train_rerun_step0": info.get("step0_val_loss")}
        print(f"  tune seed {seed}: best trial {best:.6f}, `loratune train -c best_config.yaml`"
              f" {fmt(loss)}; step 0: {fmt(bt['step0_val_loss'])} (reused: "
              f"{bt['step0_val_reused']}) vs {fmt(info.get('step0_val_loss'))}", flush=True)
    return trials, wall, check


def fmt(v, none="failed"):
    return none if v is None else f"{v:.5f}"


def summary(trials):
    vals = [t["value"] for t in trials if t["value"] is not None]
    return {"best": min(vals) if vals else None, "steps": sum(t["steps"] for t in trials),
            "time_s": sum(t["time_s"] for t in trials), "n": len(trials),
            "complete": sum(t["state"] == "complete" for t in trials),
            "pruned": sum(t["state"] == "pruned" for t in trials),
            "failed": sum(t["state"] == "failed" for t in trials)}


def reference(a):
    """REFERENCE trained once with the base options: {params, value, compute_dtype}."""
    info = {}
    loss, steps, dt = run_train(a, base_options(a) + param_args(REFERENCE), a.workdir, info)
    print(f"reference {REFERENCE}: {fmt(loss)} ({steps} steps, {dt:.1f} s, compute dtype "
          f"{info.get('compute_dtype')})", flush=True)
    return {"params": REFERENCE, "value": loss, "compute_dtype": info.get("compute_dtype")}


def same_numerics(files):
    """files: {path: loaded --out JSON}. True when every file has a reference loss and they
    agree (or none has one); else prints why not."""
    refs = {}
    for path, d in files.items():
        r = d.get("reference") or {}
        refs[path] = r.get("value") if r.get("params") == REFERENCE else None
    vals = set(refs.values())
    if None not in vals and len(vals) == 1:
        return True
    if vals == {None}:  # files from before the reference trial: nothing to check them by
        print("Note: none of the files has a reference trial (runs before 2026-12-07 22:00 "
              "UTC); that they share their training numerics is not checked.")
        return True
    print("Not like for like: the files' reference trials (the same configuration, "
          f"{REFERENCE}) do not agree, so their arms ran with different training numerics "
          "(build, CPU or compute dtype):")
    for path, v in refs.items():
        print(f"  {path}: {fmt(v, 'no reference trial')}")
    return False


def table(res, ratios_ok=True):
    print("\n| seed | arm | trials (complete / pruned / failed) | best val loss | optimizer steps"
          " | trials' wall time |")
    print("|---|---|---|---:|---:|---:|")
    for seed, arms in sorted(res.items(), key=lambda kv: int(kv[0])):
        for name in ("tune", "tpe", "random"):
            if name not in arms:
                continue
            s = arms[name]["summary"]
            print(f"| {seed} | {name} | {s['n']} ({s['complete']} / {s['pruned']} / "
                  f"{s['failed']}) | {fmt(s['best'])} | {s['steps']} | {s['time_s']:.0f} s |")
    if not ratios_ok:
        return
    print("\n| seed | tune / tpe best (goal <= 1) | tune / random best - 1 (goal <= 1%) |"
          " tune steps / random steps (goal <= 30%) |")
    print("|---|---:|---:|---:|")
    ratios = {"r1": [], "r2": [], "r3": []}
    goal = {"r1": lambda x: x <= 1, "r2": lambda x: x <= 1, "r3": lambda x: x <= 30}
    show = {"r1": "{:.4f}", "r2": "{:+.2f}%", "r3": "{:.1f}%"}

    def cell(k, x):
        return show[k].format(x) + (": met" if goal[k](x) else ": **not met**")
    for seed, arms in sorted(res.items(), key=lambda kv: int(kv[0])):
        g = {k: arms[k]["summary"] for k in arms if k in ("tune", "tpe", "random")}
        row = {"r1": "-", "r2": "-", "r3": "-"}
        if "tune" in g and "tpe" in g and g["tune"]["best"] and g["tpe"]["best"]:
            ratios["r1"].append(g["tune"]["best"] / g["tpe"]["best"])
            row["r1"] = cell("r1", ratios["r1"][-1])
        if "tune" in g and "random" in g and g["tune"]["best"] and g["random"]["best"]:
            ratios["r2"].append(100 * (g["tune"]["best"] / g["random"]["best"] - 1))
            ratios["r3"].append(100 * g["tune"]["steps"] / g["random"]["steps"])
            row["r2"], row["r3"] = cell("r2", ratios["r2"][-1]), cell("r3", ratios["r3"][-1])
        print(f"| {seed} | {row['r1']} | {row['r2']} | {row['r3']} |")
    if max(len(v) for v in ratios.values()) > 1:
        for name, f in (("median", statistics.median), ("mean", statistics.mean)):
            print(f"| {name} | " + " | ".join(cell(k, f(ratios[k])) if ratios[k] else "-"
                                              for k in ("r1", "r2", "r3")) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loratune", default=os.path.join(ROOT, "build", "loratune"))
    ap.add_argument("--model", default=None,
                    help="HF folder or GGUF (default: the SmolLM2-135M GGUF fused to fp32)")
    ap.add_argument("--gguf", default=os.path.join(ROOT, "models",
                                                   "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--data", default=os.path.join(ROOT, "tests", "fixtures", "datasets",
                                                   "wikisql-mlx"))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "lt-tune-real"))
    ap.add_argument("--seeds", default="0", help="comma-separated sampler seeds")
    ap.add_argument("--arms", default="tune,tpe,random")
    ap.add_argument("--tune-trials", type=int, default=16)
    ap.add_argument("--tpe-trials", type=int, default=16)
    ap.add_argument("--random-trials", type=int, default=64)
    ap.add_argument("--tune-sampler", default="auto")
    ap.add_argument("--no-prune", action="store_true")
    ap.add_argument("--min-resource", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compute-dtype", default="auto")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--no-check-best", dest="check_best", action="store_false")
    ap.add_argument("--out", default=None, help="JSON of every trial (and --table FILE reads it)")
    ap.add_argument("--table", default=None, help="FILE[,FILE...]: reprint their tables")
    ap.add_argument("--allow-mixed", action="store_true",
                    help="with --table: print the ratios even when the files' reference "
                         "trials differ (marked as not like for like)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference trial (its file then merges with files that "
                         "have one only with --allow-mixed)")
    ap.add_argument("--max-rank", type=int, default=64,
                    help="the rank's upper bound (at most the smallest side of the linears)")
    a = ap.parse_args()
    SPACE["lora-rank"]["high"] = a.max_rank
    if a.table:  # several files: their seeds and arms merged (a later file's arm wins)
        res, files = {}, {}
        for path in a.table.split(","):
            try:
                with open(path) as f:
                    files[path] = json.load(f)
                results = files[path]["results"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                sys.exit(f"{path}: not an --out file of this script ({e!r})")
            for seed, arms in results.items():
                res.setdefault(seed, {}).update(arms)
        same = len(files) == 1 or same_numerics(files)
        if not same and a.allow_mixed:
            print("(ratios printed anyway: --allow-mixed; they mix training numerics)")
        table(res, same or a.allow_mixed)
        return
    os.makedirs(a.workdir, exist_ok=True)
    if a.model is None:
        a.model = os.path.join(a.workdir, "smollm2-135m-instruct-f32")
        if not os.path.exists(os.path.join(a.model, "model.safetensors")):
            print(f"fuse {a.gguf} -> {a.model} (f32)", flush=True)
            subprocess.run([a.loratune, "fuse", "--model", a.gguf, "--out", a.model,
                            "--dtype", "f32"], check=True)
    res = {}
    ref = reference(a) if a.reference else None
    t_all = time.monotonic()
    for seed in [int(s) for s in a.seeds.split(",")]:
        res[str(seed)] = arms = {}
        for arm in a.arms.split(","):
            print(f"seed {seed}, arm {arm}", flush=True)
            t0 = time.monotonic()
            if arm == "tune":
                trials, _, check = arm_tune(a, a.tune_trials, seed, a.workdir)
                arms[arm] = {"trials": trials, "check": check}
            elif arm in ("tpe", "random"):
                n = a.tpe_trials if arm == "tpe" else a.random_trials
                arms[arm] = {"trials": arm_optuna(a, arm, n, seed, a.workdir)}
            else:
                sys.exit(f"unknown arm {arm}")
            arms[arm]["summary"] = summary(arms[arm]["trials"])
            arms[arm]["wall_s"] = time.monotonic() - t0
            if a.out:
                with open(a.out, "w") as f:
                    json.dump({"args": vars(a), "space": SPACE, "reference": ref,
                               "results": res}, f, indent=1)
    print(f"\ntotal wall {time.monotonic() - t_all:.0f} s; base options: "
          + " ".join(base_options(a)))
    table(res)


if __name__ == "__main__":
    main()
