"""test_budget_grid.py - issue 5: "never an out-of-memory crash where the plan said it fits",
verified over a grid of memory budgets x methods on the real model (SmolLM2-135M-Instruct Q4_1
GGUF) and the WikiSQL fixture.

Every grid point is one `loratune train --iters N --batch-size auto --max-seq-len auto
--memory-budget X --json` child process. Checks per point:
  - the run succeeds and its start event reports the chosen batch size B and sequence length T
    (auto flags, the budget, the planned peak <= X);
  - the peak RSS the run reports in its step events AND the child's ru_maxrss from os.wait4 (the
    kernel's high-water mark of the whole process, outside the program's own accounting: model
    load, tokenizer, data, evaluation, checkpoint and output writing included) are <= X;
  - the choice is maximal: `loratune plan --json` (the planner printed on its own) gives the
    planned peak the run reported at (B, T), and a peak above X at (B + 1, T) (unless B hit the
    cap of 64 / the training examples) and at (B, T + 1) when T is below the longest example.
And one budget below the smallest plan: a non-zero exit (not a signal) whose message names the
budget and the predicted peak that would be needed.
The grid picks several different (B, T): sequence-bound (B = 1, T below the longest example)
and batch-bound (T = the longest example, B > 1) points.

Under a sanitizer build (loratune info --json: build.sanitizers) the RSS comparisons are
meaningless (shadow memory, quarantine) and the runs ~20x slower: only the budget-too-small
error and one LoRA point (a larger budget: the shadow memory is held too) run then.
~60-90 s on the 2-core machine: two full fine-tuning points dominate (2 GB of optimizer state;
the run's final checkpoint writes 1.6 GB), they run one optimizer step (every buffer is
allocated by lt_trainer_create and touched by the first step: the peak does not grow later;
the LoRA points run two to show that).
Skips (exit 0, with a message) only when the model file is missing: `make test` fetches it
(the Makefile's `models` target, tools/fetch_smollm2.sh).
Prints "N passed, M failed".
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
MiB = 1 << 20

# (method, grad_checkpoint, budget MiB, iters). Budgets sit between the plans of neighbouring
# sizes, so small planner errors show; the comments say what was picked when written (the
# checks do not depend on it; only "several different (B, T)" does).
GRID = [  # (method, grad checkpoint, budget MiB, iters, compute dtype): several (B, T) picked
    # fp32 compute (the budgets were placed between fp32 plans)
    ("lora", False, 340, 2, "f32"),
    ("lora", False, 800, 2, "f32"),
    ("lora", True, 310, 2, "f32"),
    ("qlora", False, 320, 2, "f32"),
    ("qlora", True, 310, 2, "f32"),
    ("full", False, 2180, 1, "f32"),
    ("full", True, 2190, 1, "f32"),  # 2160 until the overhead recalibration of session 9
    # bf16 compute (its bf16 copies of the inputs, the head's bf16 copy for full FT, oneDNN)
    ("lora", False, 800, 2, "bf16"),
    ("full", True, 2300, 1, "bf16"),
]
# below the smallest plan alone (batch 1 x 16 tokens: 141 MiB for LoRA q,v on SmolLM2-135M
# with the head in vocabulary blocks), so nothing can fit whatever the reserve
TOO_SMALL = ("lora", False, 120)
# sanitizer build: ASan's shadow memory is part of what the run holds (its reserve), so the
# budgets are larger; one run through every code path, RSS not compared
SAN_GRID = [("lora", False, 800, 1, "f32")]


def plan(method, ck, B, T, cd):
    """`loratune plan --json` for these sizes; None (and a failed check) if it fails."""
    args = ["plan", "--model", MODEL, "--method", method, "--batch-size", str(B),
            "--max-seq-len", str(T), "--compute-dtype", cd, "--json"]
    if ck:
        args.append("--grad-checkpoint")
    r = ltcheck.run(*args)
    check(r.returncode == 0, f"loratune {' '.join(args)}: {r.stderr[-300:]}")
    try:
        return json.loads(r.stdout) if r.returncode == 0 else None
    except ValueError:
        check(False, f"loratune plan --json: not JSON: {r.stdout[:300]}")
        return None


def train(method, ck, budget, iters, tmp, cd="f32"):
    """Runs one child; returns (exit status, events, stderr, ru_maxrss bytes, seconds)."""
    out = os.path.join(tmp, "out")
    args = [ltcheck.LORATUNE, "train", "--model", MODEL, "--data", DATA, "--out", out,
            "--method", method, "--iters", str(iters), "--batch-size", "auto",
            "--max-seq-len", "auto", "--memory-budget", str(budget), "--eval-batches", "1",
            "--threads", "2", "--compute-dtype", cd, "--json"]
    if ck:
        args.append("--grad-checkpoint")
    t0 = time.time()
    # passive OpenMP waiting: much faster on a machine shared with other tests
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    with open(os.path.join(tmp, "stdout"), "w+") as fo, open(os.path.join(tmp, "stderr"), "w+") as fe:
        p = subprocess.Popen(args, stdout=fo, stderr=fe, env=env)
        # reap it ourselves: wait4 gives this child's own rusage (ru_maxrss in KiB on Linux)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
    evs = []
    for line in stdout.splitlines():
        if line.strip():
            try:
                evs.append(json.loads(line))
            except ValueError:
                check(False, f"{method} {budget}: stdout line is not JSON: {line[:200]}")
    shutil.rmtree(out, ignore_errors=True)  # full FT writes ~2 GB
    return p.returncode, evs, stderr, ru.ru_maxrss * 1024, time.time() - t0


def longest_example():
    """The longest tokenized example of the train / valid splits (the cap of an automatic T)."""
    r = ltcheck.run("data", "check", DATA, "--model", MODEL, "--json")
    try:
        sp = json.loads(r.stdout)["splits"]
        return max(sp[k]["max_len"] for k in ("train", "valid"))
    except (ValueError, KeyError, TypeError):
        check(False, f"loratune data check --json: {r.stdout[:300]} {r.stderr[-300:]}")
        return None


def main():
    if not os.path.exists(MODEL):
        print(f"SKIP: {MODEL} is missing (`make models` / tools/fetch_smollm2.sh fetch it; "
              f"`make test` does that first)")
        return 0
    san = ltcheck.sanitizer_build()
    tmp = tempfile.mkdtemp(prefix="lt_budget_grid_")
    os.environ["LORATUNE_STORE"] = os.path.join(tmp, "store")
    t_all = time.time()
    rows = []
    picked = set()
    longest = longest_example()
    grid = SAN_GRID if san else GRID
    for method, ck, budget_mib, iters, cd in grid:
        X = budget_mib * MiB
        name = f"{method}{' +ckpt' if ck else ''} {cd} @ {budget_mib} MiB"
        rc, evs, err, maxrss, secs = train(method, ck, X, 1 if san else iters, tmp, cd)
        starts = [e for e in evs if e.get("event") == "start"]
        steps = [e for e in evs if e.get("event") == "step"]
        done = [e for e in evs if e.get("event") == "done"]
        check(rc == 0 and done and done[-1].get("outcome") == "done",
              f"{name}: exit {rc}, expected a finished run; stderr: {err[-500:]}")
        if not starts:
            check(False, f"{name}: no start event")
            continue
        st = starts[0]
        cfg = st.get("config", {})
        try:
            B, T = int(cfg.get("batch-size")), int(cfg.get("max-seq-len"))
        except (TypeError, ValueError):
            check(False, f"{name}: chosen sizes not reported: {cfg}")
            continue
        planned = st.get("planned_peak_bytes", -1)
        reserved = st.get("reserved_bytes", -1)
        check(st.get("auto_batch_size") is True and st.get("auto_max_seq_len") is True and
              st.get("memory_budget_bytes") == X and B >= 1 and T >= 1,
              f"{name}: start event: auto flags / budget / sizes: {json.dumps(st)[:400]}")
        check(0 < planned <= X and 0 < reserved < planned,
              f"{name}: planned peak {planned} (reserved {reserved}) vs budget {X}")
        # the reserve (tokenizer, data, output writing: ~20 MiB + 12 MiB for LoRA, + 52 MiB for a
        # full fine-tune's HF export here) must not grow into a blanket margin that hides
        # planner errors and shrinks every choice
        if not san:
            # (88: 80 until session 9, when the program began to map libpq and OpenMPI)
            check(reserved <= 88 * MiB, f"{name}: reserve {reserved / MiB:.1f} MiB > 88 MiB")
        reported = max((e.get("peak_rss_bytes", 0) for e in steps), default=0)
        check(len(steps) == (1 if san else iters) and reported > 0,
              f"{name}: {len(steps)} step events with peak_rss_bytes")
        if not san:
            check(reported <= X, f"{name}: reported peak RSS {reported / MiB:.1f} MiB > budget "
                  f"{budget_mib} MiB (B {B}, T {T}, planned {planned / MiB:.1f} MiB)")
            check(maxrss <= X, f"{name}: the child's ru_maxrss {maxrss / MiB:.1f} MiB > budget "
                  f"{budget_mib} MiB (B {B}, T {T}, planned {planned / MiB:.1f} MiB)")
        # maximal: the planner printed by `loratune plan` agrees, and one more row / token does
        # not fit
        p = plan(method, ck, B, T, cd)
        check(p is not None and p["peak_bytes"] + reserved == planned,
              f"{name}: loratune plan at B {B} T {T}: peak {p and p['peak_bytes']} + the run's "
              f"reserve {reserved} vs the run's planned peak {planned}")
        ntrain = st.get("train_examples", 0)
        if B < min(64, ntrain):
            q = plan(method, ck, B + 1, T, cd)
            check(q is not None and q["peak_bytes"] + reserved > X,
                  f"{name}: B {B} is not maximal: the plan at B {B + 1} T {T} is "
                  f"{q and q['peak_bytes']} + {reserved} <= {X}")
        check(longest is None or T <= longest, f"{name}: T {T} > the longest example {longest}")
        rows.append((name, B, T, planned, reported, maxrss, X, secs, reserved))
        picked.add((B, T))
    # sequence-bound points: T + 1 must not fit (T was searched first, at B = 1)
    for name, B, T, planned, reported, maxrss, X, secs, reserved in rows:
        if longest and T < longest:
            method, ck = name.split(" @ ")[0].split(" ")[0], "+ckpt" in name
            q = plan(method, ck, B, T + 1, cd)
            check(q is not None and q["peak_bytes"] + reserved > X,
                  f"{name}: T {T} is not maximal: the plan at B {B} T {T + 1} is "
                  f"{q and q['peak_bytes']} + {reserved} <= {X}")
    if not san:
        check(len(picked) >= 4, f"the grid picked only {sorted(picked)}: expected several (B, T)")
        check(longest is not None and any(T < longest for _, _, T, *_ in rows) and
              any(B > 1 for _, B, *_ in rows), "both sequence- and batch-bound points")

    # a budget below the smallest plan: a clear error, not a crash
    method, ck, budget_mib = TOO_SMALL
    rc, evs, err, maxrss, secs = train(method, ck, budget_mib * MiB, 1, tmp)
    check(rc > 0, f"budget {budget_mib} MiB: expected a non-zero exit (not a signal), got {rc}")
    check(not [e for e in evs if e.get("event") == "step"], "budget too small: no step ran")
    check(f"{budget_mib / 1024:.2f} GiB" in err and "memory budget" in err and "predicted peak" in err and
          "GiB predicted" in err,
          f"budget too small: the message names the budget and the peak needed: {err[-400:]}")

    print("| point | B | T | planned MiB (reserved) | reported peak MiB | ru_maxrss MiB | "
          "budget MiB | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, B, T, planned, reported, maxrss, X, secs, reserved in rows:
        print(f"| {name} | {B} | {T} | {planned / MiB:.1f} ({reserved / MiB:.1f}) | "
              f"{reported / MiB:.1f} | {maxrss / MiB:.1f} | {X / MiB:.0f} | {secs:.1f} |")
    print(f"total {time.time() - t_all:.1f} s{' (sanitizer build: RSS not compared)' if san else ''}")
    shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
