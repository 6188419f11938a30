"""test_train_mpi.py - data-parallel `loratune train` under OpenMPI's mpirun (docs/SCALE_OUT.md),
on stories260K (tiny, fast), every run with one thread per rank:

- `mpirun -np 2` equals `mpirun -np 1` bit for bit: every step's loss, learning rate and
  gradient norm, every validation loss, and the adapter files, at the same global batch
  (batch 3, so the two ranks hold 1 and 2 rows of each micro-batch; grad-accum 2; packing; LoRA
  dropout 0.1, whose masks are keyed by (micro-batch, row), not by rank);
- one writer: the -np 2 run prints one event stream (rank 0's), records one run in the
  tracking store, and OUT holds what a single process writes;
- a checkpoint written with 2 ranks resumes with 1 rank, and one written with 1 rank resumes
  with 2, giving the uninterrupted run's losses and adapter bit for bit;
- against the plain single process (no mpirun), which sums the rows inside its matrix
  products: step 1 equal within 1e-6 relative (loss, gradient norm) -- the rows are the same
  arithmetic, summed in another order -- and every later loss within 5e-3 relative (AdamW's
  normalisation enlarges rounding differences in small gradients; measured: 9e-4 after 8 steps);
- SIGINT to mpirun (which stops forwarding the ranks' output while it stops them): both ranks
  stop at one step boundary within a bounded time, rank 0 writes the checkpoint and records the
  run as killed, and the checkpoint resumes (with 2 ranks) to the uninterrupted run's losses
  and adapter; SIGUSR1 to mpirun (forwarded as it is) stops the run with every event printed;
- full fine-tuning: -np 2 equals -np 1 bit for bit (steps, validation losses, the saved model,
  the checkpoint's weights and moments), and a 2-rank checkpoint resumes with 1 rank;
- the memory plan counts each rank's exchange buffers: `loratune plan --ranks 2` (from the
  model alone) says as many exchange bytes as the -np 2 run's start event (what it allocated,
  from its trainer's tensors), LoRA and full; without --ranks (or --ranks 1) it has no
  exchange line; a --memory-budget that only the exchange passes is refused under -np 2 before
  any step, naming the data-parallel exchange;
- what is refused with N > 1 ranks, naming the option: automatic batch size.
The single process is the reference (its numbers are checked against PyTorch elsewhere:
test_trainer_golden.c, test_run_eval.c); mpirun is the real launcher. Skips (exit 77) when the
build has no MPI (-DLT_MPI) or mpirun is missing.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

if os.environ.get("LT_MPI") != "1":
    print("skipped: this build has no MPI (cmake -DLT_MPI=ON; Debian: libopenmpi-dev "
          "openmpi-bin)")
    sys.exit(77)
MPIRUN = os.environ.get("LT_MPIEXEC") or shutil.which("mpirun")
if not MPIRUN or not os.path.exists(MPIRUN):
    print("skipped: no mpirun found (Debian: openmpi-bin)")
    sys.exit(77)

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
MODEL_HF = os.path.join(ltcheck.FIXTURES, "stories260K-hf")  # full FT saves an HF folder
WIKISQL = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TMP = tempfile.mkdtemp(prefix="lt_train_mpi_")
DATA = os.path.join(TMP, "data")
STORE = os.path.join(TMP, "store")
ENV = dict(os.environ, LORATUNE_STORE=STORE, LORATUNE_NO_TRACK="1",
           # OpenMPI refuses root without these (CI containers run as root)
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
ENV.pop("LT_FAULT_NAN_STEPS", None)

COMMON = ["--model", MODEL, "--data", DATA, "--batch-size", "3", "--grad-accum", "2",
          "--max-seq-len", "48", "--pack", "--lora-targets", "all", "--lr", "5e-3",
          "--lr-schedule", "cosine", "--warmup", "2", "--iters", "8", "--eval-every", "4",
          "--save-every", "4", "--threads", "1", "--seed", "7", "--device", "cpu", "--json"]
DROPOUT = ["--lora-dropout", "0.1"]


def make_data():
    os.makedirs(DATA)
    for split, n in (("train", 24), ("valid", 6)):
        with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(DATA, split + ".jsonl"), "w") as f:
            f.writelines(lines)


def train(np, *args, env=None):
    """`mpirun -np NP loratune train ARGS` (np 0: loratune alone): (result, events)."""
    cmd = [ltcheck.LORATUNE, "train", *args]
    if np:
        cmd = [MPIRUN, "-np", str(np), "--oversubscribe", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=300)
    evs = []
    for line in r.stdout.splitlines():
        if line.strip().startswith("{"):
            try:
                evs.append(json.loads(line))
            except ValueError:
                check(False, f"np {np}: not a JSON line: {line[:200]}")
    return r, evs


def by(evs, kind):
    return [e for e in evs if e.get("event") == kind]


def series(evs):
    steps = by(evs, "step")
    return ([(e["step"], e["loss"], e["lr"], e["grad_norm"]) for e in steps],
            [(e["step"], e["val_loss"]) for e in by(evs, "eval")])


def same_file(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


def ckpt_state(path):
    """The checkpoint's loratune.state JSON without what names OUT (and its tensor sums)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(n))
    st = json.loads(head["__metadata__"]["loratune.state"])
    st["config"].pop("out", None)
    return st


def ok(r, what):
    check(r.returncode == 0, f"{what}: exit {r.returncode}: {r.stderr[-1500:]}")


def plan(*args):
    """`loratune plan ARGS --json` with COMMON's shape (batch 3, grad-accum 2, length 48)."""
    cmd = [ltcheck.LORATUNE, "plan", "--batch-size", "3", "--grad-accum", "2", "--max-seq-len",
           "48", "--device", "cpu", *args]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=ENV, timeout=60)
    check(r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr[-600:]}")
    t = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)
    return (json.loads(r.stdout) if r.returncode == 0 else {}), t.stdout


def check_plan(start, what, *args):
    """The plan of 2 ranks holds the run's exchange bytes; one process's has none."""
    p2, text2 = plan(*args, "--ranks", "2")
    check(p2.get("ranks") == 2 and p2.get("exchange_bytes") == start.get("exchange_bytes") and
          p2.get("n_trainable") == start.get("trainable_params"),
          f"{what}: plan --ranks 2 says exchange {p2.get('exchange_bytes')} bytes (ranks "
          f"{p2.get('ranks')}), the -np 2 run allocated {start.get('exchange_bytes')}")
    check(re.search(r"^data-parallel exchange +%d " % start.get("exchange_bytes", -1), text2,
                    re.M) is not None, f"{what}: plan --ranks 2: no exchange line:\n{text2}")
    for extra in ((), ("--ranks", "1")):
        p1, text1 = plan(*args, *extra)
        check(p1.get("ranks") == 1 and "exchange_bytes" not in p1 and
              "exchange" not in text1 and p1.get("peak_bytes", 0) + start["exchange_bytes"] <=
              p2.get("peak_bytes", 0),
              f"{what}: plan {' '.join(extra)}: one process has no exchange, and 2 ranks' peak "
              f"{p2.get('peak_bytes')} holds it: {p1}")


def test_equal_ranks():
    o1, o2 = os.path.join(TMP, "np1"), os.path.join(TMP, "np2")
    r1, e1 = train(1, *COMMON, *DROPOUT, "--out", o1)
    ok(r1, "mpirun -np 1")
    env = dict(ENV)
    env.pop("LORATUNE_NO_TRACK")  # the tracking store: rank 0 alone records
    r2, e2 = train(2, *COMMON, *DROPOUT, "--out", o2, env=env)
    ok(r2, "mpirun -np 2")
    s1, v1 = series(e1)
    s2, v2 = series(e2)
    check(len(s1) == 8 and len(v1) == 3, f"-np 1: 8 steps and 3 evals, got {len(s1)}, {len(v1)}")
    check(s1 == s2, f"-np 2 vs -np 1 steps differ:\n{s2}\n{s1}")
    check(v1 == v2, f"-np 2 vs -np 1 val losses differ: {v2} vs {v1}")
    st = by(e2, "start")
    check(len(st) == 1 and st[0].get("ranks") == 2,
          f"-np 2: one start event (rank 0's) saying ranks 2, got {st}")
    check(len(by(e2, "done")) == 1, "-np 2: one done event")
    check(by(e1, "start")[0].get("ranks") == 1, "-np 1: start event says ranks 1")
    # the exchange buffers each rank holds besides the plan: (ranks + 1) x grad_accum x
    # ceil(batch / ranks) row slots of {loss sum, count} doubles + the trainable floats (padded
    # to 8 bytes), and the sum
    for evs, n in ((e1, 1), (e2, 2)):
        s0 = by(evs, "start")[0]
        P = s0.get("trainable_params", 0)
        slot = 16 + (P + P % 2) * 4
        want = (n + 1) * 2 * (-(-3 // n)) * slot + P * 4
        check(P > 0 and s0.get("exchange_bytes") == want,
              f"-np {n}: exchange_bytes {s0.get('exchange_bytes')}, expected {want} (P {P})")
    check_plan(by(e2, "start")[0], "lora", "--model", MODEL, "--method", "lora",
               "--lora-targets", "all")
    for f in ("adapter_model.safetensors", "adapter.gguf", "mlx-lm/adapters.safetensors"):
        a, b = os.path.join(o1, f), os.path.join(o2, f)
        check(os.path.exists(b) and same_file(a, b), f"{f}: -np 2's differs from -np 1's")
    # the checkpoint: every tensor (values, AdamW moments) and the state but OUT's name
    ck = "checkpoints/step-00000004.safetensors"
    t1, t2 = load_file(os.path.join(o1, ck)), load_file(os.path.join(o2, ck))
    check(t1.keys() == t2.keys() and all(np.array_equal(t1[k], t2[k]) for k in t1),
          f"{ck}: tensors differ between -np 2 and -np 1")
    m1, m2 = ckpt_state(os.path.join(o1, ck)), ckpt_state(os.path.join(o2, ck))
    check(m1 == m2, f"{ck}: state differs: {m2} vs {m1}")
    check(sorted(os.listdir(o1)) == sorted(os.listdir(o2)),
          f"OUT: {sorted(os.listdir(o2))} vs {sorted(os.listdir(o1))}")
    rl = subprocess.run([ltcheck.LORATUNE, "runs", "list", "--json", "--store", STORE],
                        capture_output=True, text=True, env=ENV)
    try:
        runs = json.loads(rl.stdout)
        runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
    except ValueError:
        runs = None
    check(isinstance(runs, list) and len(runs) == 1,
          f"tracking store: one run recorded by -np 2, got {rl.stdout[:400]} {rl.stderr[:300]}")
    return o1, e1


def test_resume(ref_out, ref_evs):
    """Checkpoint of step 4 written with N ranks, resumed with M: steps 5..8 as the reference."""
    ref_steps, ref_vals = series(ref_evs)
    for n, m in ((2, 1), (1, 2)):
        out = os.path.join(TMP, f"resume{n}to{m}")
        r, _ = train(n, *COMMON, *DROPOUT, "--out", out)
        ok(r, f"-np {n} (to resume)")
        os.remove(os.path.join(out, "checkpoints", "step-00000008.safetensors"))
        for f in ("adapter_model.safetensors", "adapter_config.json", "adapter.gguf"):
            os.remove(os.path.join(out, f))
        shutil.rmtree(os.path.join(out, "mlx-lm"))
        r, evs = train(m, "--resume", out, "--json")
        ok(r, f"-np {m} --resume (written with -np {n})")
        st = by(evs, "start")
        check(st and st[0].get("resumed_from") == 4, f"{n}->{m}: resumed from step 4: {st}")
        steps, vals = series(evs)
        check(steps == ref_steps[4:], f"{n}->{m}: steps 5..8 differ:\n{steps}\n{ref_steps[4:]}")
        check(vals == ref_vals[-1:], f"{n}->{m}: final val loss {vals} vs {ref_vals[-1:]}")
        check(same_file(os.path.join(ref_out, "adapter_model.safetensors"),
                        os.path.join(out, "adapter_model.safetensors")),
              f"{n}->{m}: the final adapter differs from the uninterrupted run's")


def watchdog(p, seconds, what):
    """Kills p (mpirun) after seconds, so that ranks that never end make the test fail instead
    of hanging in the read of their output; cancel() it once p has ended."""
    def fire():
        print(f"watchdog: {what} still running after {seconds} s: killed", flush=True)
        p.kill()
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def test_sigint():
    """SIGINT to mpirun, as Ctrl-C sends it. OpenMPI then SIGCONTs the ranks, sleeps
    odls_base_sigkill_timeout (T) seconds, SIGTERMs them, sleeps T again and SIGKILLs them,
    forwarding none of their output meanwhile: rank 0 (still training for T seconds) fills
    its stdout and, before the fix, blocked in write() for good while rank 1 waited for it in
    the stop exchange -- no checkpoint, SIGKILL at 2T. Now: every rank stops at one step S,
    rank 0 writes the checkpoint of S, the run is recorded as killed, mpirun ends by ~2T, and
    the checkpoint resumed (with 2 ranks) gives what an uninterrupted run of the same length
    gives, bit for bit. A constant learning rate, so that the reference can be a run of S + 4
    steps from the start (the schedule does not depend on the total)."""
    T = 8  # long enough for rank 0's stdout to fill on the loaded 2-core CI machine too
    run_args = ["--lr-schedule", "constant", "--eval-every", "0", "--save-every", "0"]
    out = os.path.join(TMP, "sigint")
    store = os.path.join(TMP, "sigint_store")
    env = dict(ENV, OMPI_MCA_odls_base_sigkill_timeout=str(T), LORATUNE_STORE=store)
    env.pop("LORATUNE_NO_TRACK")
    cmd = [MPIRUN, "-np", "2", "--oversubscribe", ltcheck.LORATUNE, "train", *COMMON, *DROPOUT,
           *run_args, "--iters", "1000000", "--out", out]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wd = watchdog(p, 240, "the SIGINT run")
    lines, seen, t_sig = [], 0, None
    for line in p.stdout:
        lines.append(line)
        if line.startswith('{"event":"step"'):
            seen += 1
            if seen == 3:
                p.send_signal(signal.SIGINT)
                t_sig = time.monotonic()
    try:
        err = p.communicate(timeout=4 * T + 30)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, f"mpirun -np 2 did not end within {4 * T + 30} s of SIGINT")
        return
    wd.cancel()
    took = time.monotonic() - t_sig if t_sig else -1
    print(f"sigint: mpirun ended {took:.1f} s after SIGINT (T {T} s), exit {p.returncode}")
    check(t_sig is not None and took < 2 * T + 15,
          f"mpirun ended {took:.1f} s after SIGINT (bound: 2 x {T} s + 15)")
    check(p.returncode != 0, "mpirun after SIGINT: a non-zero exit")
    stops = sorted(set(re.findall(r"rank (\d) of 2: stopped at step (\d+)", err)))
    check(len(stops) == 2 and stops[0][0] == "0" and stops[1][0] == "1"
          and stops[0][1] == stops[1][1],
          f"both ranks stop at one step: {stops}; stderr {err[-1500:]}")
    if len(stops) != 2:
        return
    S = int(stops[0][1])
    check(3 <= S < 1000000, f"stopped at step {S}")
    ckdir = os.path.join(out, "checkpoints")
    cks = sorted(os.listdir(ckdir)) if os.path.isdir(ckdir) else []
    check(cks == [f"step-{S:08d}.safetensors"], f"rank 0's checkpoint of step {S}: {cks}")
    # the events: whole JSON lines; a `done` one when mpirun forwarded it, else stderr counts
    # the lines rank 0 could not print once stdout stopped being read
    evs = []
    for i, line in enumerate(lines):
        try:
            evs.append(json.loads(line))
        except ValueError:
            check(i == len(lines) - 1 and "cut short" in err,
                  f"line {i}: not JSON and not the cut-short last one: {line[:200]}")
    steps = [e["step"] for e in by(evs, "step")]
    check(steps and steps == list(range(1, len(steps) + 1)) and steps[-1] <= S,
          f"step events 1..n, n <= {S}: {steps[:3]}..{steps[-3:]}")
    done = by(evs, "done")
    if done:
        check(done[-1].get("outcome") == "interrupted" and done[-1].get("step") == S,
              f"done event: {done[-1]}")
    else:
        check(re.search(r"the last \d+ lines were not printed.*interrupted at step %d" % S, err),
              f"no done event and no count of the lines not printed: {err[-1500:]}")
    print(f"sigint: stopped at step {S}; {len(steps)} step events printed; "
          f"{'a done event' if done else 'no done event (stdout not read)'}")
    rl = subprocess.run([ltcheck.LORATUNE, "runs", "list", "--json", "--store", store],
                        capture_output=True, text=True, env=ENV)
    try:
        runs = json.loads(rl.stdout)
        runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
    except ValueError:
        runs = None
    check(isinstance(runs, list) and len(runs) == 1 and runs[0].get("status") == "killed",
          f"tracking store: one run, status killed: {rl.stdout[:400]} {rl.stderr[:300]}")
    # resumed with 2 ranks to S + 4 steps vs the uninterrupted run of S + 4 steps (1 rank)
    ref = os.path.join(TMP, "sigint_ref")
    r, ref_evs = train(1, *COMMON, *DROPOUT, *run_args, "--iters", str(S + 4), "--out", ref)
    ok(r, f"-np 1, {S + 4} steps")
    r, evs = train(2, "--resume", out, "--iters", str(S + 4), "--json")
    ok(r, "-np 2 --resume after SIGINT")
    st = by(evs, "start")
    check(st and st[0].get("resumed_from") == S, f"resumed from step {S}: {st}")
    got, _ = series(evs)
    want, _ = series(ref_evs)
    check(len(want) == S + 4 and got == want[S:],
          f"after SIGINT at {S}: steps differ:\n{got}\n{want[S:]}")
    check(same_file(os.path.join(ref, "adapter_model.safetensors"),
                    os.path.join(out, "adapter_model.safetensors")),
          "after SIGINT + resume: adapter differs from the uninterrupted run's")


def test_sigusr1():
    """SIGUSR1 to mpirun: forwarded to the ranks as it is (mpirun neither stops the job nor its
    output forwarding), so the run stops as Ctrl-C stops a single process: every event
    printed, `done` interrupted at the step both ranks report, the checkpoint of that step,
    and no time limit on writing it."""
    out = os.path.join(TMP, "sigusr1")
    cmd = [MPIRUN, "-np", "2", "--oversubscribe", ltcheck.LORATUNE, "train", *COMMON, *DROPOUT,
           "--lr-schedule", "constant", "--eval-every", "0", "--save-every", "0",
           "--iters", "1000000", "--out", out]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wd = watchdog(p, 240, "the SIGUSR1 run")
    last, seen, t_sig = None, 0, None
    for line in p.stdout:
        last = json.loads(line)
        if last.get("event") == "step":
            seen += 1
            if seen == 3:
                p.send_signal(signal.SIGUSR1)
                t_sig = time.monotonic()
    try:
        err = p.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, "mpirun -np 2 did not end within 60 s of SIGUSR1")
        return
    wd.cancel()
    check(t_sig is not None and p.returncode != -signal.SIGKILL,
          f"the SIGUSR1 run ended by itself (last event {last}; stderr {err[-800:]})")
    if t_sig is None or p.returncode == -signal.SIGKILL:
        return
    print(f"sigusr1: mpirun ended {time.monotonic() - t_sig:.1f} s after SIGUSR1, "
          f"exit {p.returncode}")
    stops = sorted(set(re.findall(r"rank (\d) of 2: stopped at step (\d+)", err)))
    S = int(stops[0][1]) if stops else -1
    check(len(stops) == 2 and stops[1][1] == str(S), f"both ranks stop at one step: {stops}")
    check(last and last.get("event") == "done" and last.get("outcome") == "interrupted"
          and last.get("step") == S, f"last event {last}, ranks stopped at {S}")
    check(os.path.exists(os.path.join(out, "checkpoints", f"step-{S:08d}.safetensors")),
          f"the checkpoint of step {S}")
    check("not printed" not in err, f"SIGUSR1: no event dropped: {err[-600:]}")


def test_vs_single_process():
    """The plain process (no mpirun, rows summed inside the products), dropout 0."""
    r0, e0 = train(0, *COMMON, "--out", os.path.join(TMP, "plain"))
    ok(r0, "loratune train (no mpirun)")
    r1, e1 = train(2, *COMMON, "--out", os.path.join(TMP, "plain_np2"))
    ok(r1, "mpirun -np 2, dropout 0")
    s0, _ = series(e0)
    s1, _ = series(e1)
    check(len(s0) == len(s1) == 8, "8 steps each")
    if len(s0) != 8 or len(s1) != 8:
        return
    rel = [abs(a[1] - b[1]) / abs(b[1]) for a, b in zip(s1, s0)]
    check(rel[0] < 1e-6, f"step 1 loss: relative difference {rel[0]:.3g} (>= 1e-6)")
    g = abs(s1[0][3] - s0[0][3]) / s0[0][3]
    check(g < 1e-6, f"step 1 grad norm: relative difference {g:.3g} (>= 1e-6)")
    check(max(rel) < 5e-3, f"losses: relative differences {rel} (some >= 5e-3)")
    check([a[2] for a in s1] == [b[2] for b in s0], "learning rates differ")


def test_full():
    """Full fine-tuning (every parameter trained, the HF fixture so that OUT gets the model):
    -np 2 equals -np 1 bit for bit -- steps, validation losses, the saved model.safetensors,
    the checkpoint's tensors (weights and AdamW moments) -- and the checkpoint of step 4 written
    with 2 ranks resumes with 1 to the uninterrupted run's steps and model."""
    args = [*COMMON, "--model", MODEL_HF, "--method", "full", "--lr", "1e-3"]
    o1, o2 = os.path.join(TMP, "full1"), os.path.join(TMP, "full2")
    r1, e1 = train(1, *args, "--out", o1)
    ok(r1, "mpirun -np 1 --method full")
    r2, e2 = train(2, *args, "--out", o2)
    ok(r2, "mpirun -np 2 --method full")
    s1, v1 = series(e1)
    s2, v2 = series(e2)
    check(len(s1) == 8 and s1 == s2 and v1 == v2,
          f"full: -np 2 vs -np 1 steps / evals differ:\n{s2}\n{s1}\n{v2}\n{v1}")
    check_plan(by(e2, "start")[0], "full", "--model", MODEL_HF, "--method", "full")
    m1, m2 = os.path.join(o1, "model.safetensors"), os.path.join(o2, "model.safetensors")
    check(os.path.exists(m1) and os.path.exists(m2) and same_file(m1, m2),
          "full: model.safetensors of -np 2 differs from -np 1's")
    ck = "checkpoints/step-00000004.safetensors"
    t1, t2 = load_file(os.path.join(o1, ck)), load_file(os.path.join(o2, ck))
    check(len(t1) > 10 and t1.keys() == t2.keys() and all(np.array_equal(t1[k], t2[k]) for k in t1),
          f"full: {ck}: tensors differ between -np 2 and -np 1")
    # 2 -> 1: the run of -np 2 rewound to its step-4 checkpoint
    os.remove(os.path.join(o2, "checkpoints", "step-00000008.safetensors"))
    os.remove(m2)
    r, evs = train(1, "--resume", o2, "--json")
    ok(r, "full: -np 1 --resume (written with -np 2)")
    steps, _ = series(evs)
    check(steps == s1[4:], f"full 2->1: steps 5..8 differ:\n{steps}\n{s1[4:]}")
    check(os.path.exists(m2) and same_file(m1, m2),
          "full 2->1: the final model differs from the uninterrupted run's")


def test_refused():
    out = os.path.join(TMP, "refused")
    i = COMMON.index("--batch-size")
    args = COMMON[:i] + ["--batch-size", "auto"] + COMMON[i + 2:]
    r, _ = train(2, *args, "--out", out)
    check(r.returncode != 0 and "batch-size" in r.stderr and "ranks" in r.stderr,
          f"-np 2 --batch-size auto: refused naming the option, got {r.returncode} "
          f"{r.stderr[-600:]}")
    # a budget the run fits without the exchange but not with it: full fine-tuning, 64
    # micro-batches of 3 rows, 2 ranks -> 384 row slots of the model's 1 MB gradient a rank
    p, _ = plan("--model", MODEL_HF, "--method", "full", "--grad-accum", "64", "--ranks", "2")
    p1, _ = plan("--model", MODEL_HF, "--method", "full", "--grad-accum", "64")
    check(p.get("exchange_bytes", 0) > 350 << 20 and p1.get("peak_bytes", 1 << 40) < 100 << 20,
          f"budget case: plan {p.get('exchange_bytes')} exchange bytes, one process "
          f"{p1.get('peak_bytes')}")
    i = COMMON.index("--grad-accum")
    args = COMMON[:i] + ["--grad-accum", "64"] + COMMON[i + 2:]
    r, evs = train(2, *args, "--model", MODEL_HF, "--method", "full", "--memory-budget", "300M",
                   "--out", out + "-budget")
    check(r.returncode != 0 and "memory budget 0.29 GiB" in r.stderr and
          "data-parallel exchange of 2 ranks" in r.stderr and not by(evs, "step"),
          f"-np 2 over --memory-budget with the exchange: refused naming it before any step, "
          f"got {r.returncode} {r.stderr[-800:]}")


def main():
    make_data()
    try:
        ref_out, ref_evs = test_equal_ranks()
        test_resume(ref_out, ref_evs)
        test_sigint()
        test_sigusr1()
        test_vs_single_process()
        test_full()
        test_refused()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
