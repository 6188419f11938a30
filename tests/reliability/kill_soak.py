"""kill_soak.py - the kill soak of issue 18: many runs of `loratune train` on stories260K,
each killed (SIGKILL) at a random moment, then recovered the way a user would; after each,
the run folder must either resume to a result bit-identical to an uninterrupted reference
run, or say clearly what it holds and then be completed.

Usage: kill_soak.py [--rounds N] [--seed S] [--json FILE]   (LORATUNE, LT_FIXTURES from the
environment, as CTest passes them; tests/reliability/test_kill_soak.py runs a short version,
bench/kill_soak.sh the long one). Exit 0 when every round passed.

Each round starts a fresh `train --json` into its own folder and kills it in one of these
ways (chosen with a seeded random.Random, so a seed and a round count fix the soak):
- random:     SIGKILL at a time drawn uniformly over the reference run's wall time;
- loading:    stalled at a random `stage` event (or `start`, run_config.yaml written) and killed;
- checkpoint: SIGKILL a random 0..2x(checkpoint write time) after a step that is followed by
              a checkpoint (lands inside the temp-file write, the rename or the pruning);
- export:     inside the final export phase (PEFT, then mlx-lm, then adapter.gguf, under the
              completion marker OUT/.loratune.incomplete): either stalled at one of the
              events that separate its files (final `checkpoint`, `saved` peft / mlx / gguf)
              or killed a random time into the phase;
- sigint:     SIGINT at a random time while training, then SIGKILL a random 0..2x(checkpoint
              write time) later, during the graceful stop (its checkpoint write);
- same_out:   while the run is stalled mid-training (holding OUT's lock), a second `train
              --out OUT` and a `train --resume OUT` are refused by the lock naming its pid, and
              a foreign `checkpoints/step-N.safetensors.tmp.*` is put beside the run's own
              (issue 18 finding 5); the first run then goes on undisturbed: whole, bit-identical
              to the reference, and its pruning leaves the foreign file alone.
Some recoveries (`--resume`) are themselves SIGKILLed at a random time and resumed again.

"Stalled": the child's stdout is a pipe of one page (F_SETPIPE_SZ) whose write end this script
also holds; filling it makes the child's next event write block, so the child stops at a known
event boundary -- inside the export phase, between two of its files -- with no hook in the
product. The events are printed and flushed one per line by `train --json`.

Before the rounds, three cases the rounds meet only by chance are made to happen every time
(each failed before its fix in src/run/checkpoint.c): a run stopped before its first
checkpoint (the pipe filled before it starts but for its stage events, so it blocks writing
`start`, after run_config.yaml), resumed while alive (the lock's message, naming its pid) and
then killed (the messages and command below); a run killed inside its exports with killed
writers' temp files in OUT and OUT/mlx-lm beside a user's own `notes.tmp.1` (the resume
removes the former and keeps the latter).

Recovery, from what the folder holds after the kill:
- the completion marker (OUT or OUT/mlx-lm): the readers refuse it (`fuse --adapter` naming
  the marker), then `--resume OUT` completes it;
- a run_config.yaml but no checkpoint (killed before its first): `--resume OUT` and a plain
  rerun are refused with messages that say so, and the command they name (`train -c
  OUT/run_config.yaml --out OUT --overwrite`) completes it;
- nothing of a run (killed while loading): the same command again completes it;
- checkpoints: `--resume OUT`.
Then: the losses of every step and evaluation printed by every process of the round equal the
reference's (exact doubles); the PEFT, mlx-lm and GGUF adapters' tensors are byte-identical to
the reference's (read with the safetensors and gguf packages) and so are the whole files; the
final checkpoint's tensors too; no marker, lock or temp file is left. At the end the tracking
store (killed as often as the runs) passes SQLite's integrity_check and `runs list` works.
"""
import argparse
import fcntl
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
LORATUNE = os.environ.get("LORATUNE", "loratune")
FIXTURES = os.environ.get("LT_FIXTURES", os.path.join(ROOT, "tests", "fixtures"))
MODEL = os.path.join(FIXTURES, "stories260K", "stories260K.gguf")
WIKISQL = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), spelt out for Pythons that lack the name
MARKER = ".loratune.incomplete"
LOCK = ".loratune.lock"
EXPORTS = ("adapter_model.safetensors", "adapter_config.json", "adapter.gguf",
           "mlx-lm/adapters.safetensors", "mlx-lm/adapter_config.json")
KINDS = (("random", 30), ("loading", 8), ("checkpoint", 15), ("export", 25), ("sigint", 15),
         ("same_out", 7))


class Child:
    """A `loratune ARGS` whose stdout is a one-page pipe this script can stall (above)."""

    def __init__(self, args, workdir, room=None):
        """room: the pipe is filled before the child starts but for this many bytes, so that
        the child's first write past them blocks (for an exact stop in its first events)."""
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
        if room is not None:
            os.write(w, b"\n" * (4096 - room))
        self.err_path = os.path.join(workdir, f"stderr.{time.monotonic_ns()}")
        with open(self.err_path, "w") as err:
            self.p = subprocess.Popen([LORATUNE, *args], stdout=w, stderr=err)
        self.r, self.w = r, w
        self.args = args
        os.set_blocking(r, False)
        self.t0 = time.monotonic()
        self.buf = b""
        self.events = []  # (seconds since start, event)
        self.nbytes = []  # each event's line length
        self.stalled = False
        self.sigint = False

    def _read(self, timeout):
        """Reads what is there (waiting up to timeout); returns the new events."""
        new = []
        if select.select([self.r], [], [], timeout)[0]:
            try:
                while True:
                    chunk = os.read(self.r, 65536)
                    if not chunk:
                        break
                    self.buf += chunk
            except BlockingIOError:
                pass
        *lines, self.buf = self.buf.split(b"\n")
        t = time.monotonic() - self.t0
        for line in lines:
            if line.strip():
                self.nbytes.append(len(line.lstrip(b"\n")) + 1)
                ev = (t, json.loads(line))
                self.events.append(ev)
                new.append(ev[1])
        return new

    def pump_until(self, pred=None, deadline=None):
        """Reads events until pred(event) holds (returns that event), the deadline (seconds since
        start) passes or the child exits (returns None)."""
        while True:
            left = 0.02 if deadline is None else min(0.02, deadline - (time.monotonic() - self.t0))
            if left <= 0:
                return None
            for ev in self._read(left):
                if pred and pred(ev):
                    return ev
            if self.p.poll() is not None:
                for ev in self._read(0):
                    if pred and pred(ev):
                        return ev
                return None

    def stall(self):
        """Fills the pipe: the child's next event write blocks until we read again."""
        # O_NONBLOCK on our own open file description of the pipe (via /proc): setting it on
        # self.w would set it on the child's stdout too (the same description), and the child
        # would then lose events (EAGAIN) instead of blocking
        fd = os.open(f"/proc/self/fd/{self.w}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(fd, b"\n" * 4096)
        except BlockingIOError:
            pass
        try:  # a page may take less than 4096 at the end
            while True:
                os.write(fd, b"\n")
        except BlockingIOError:
            pass
        os.close(fd)
        self.stalled = True

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def finish(self, timeout=120):
        """Reads to the end (unstalling), reaps; returns (returncode, stderr)."""
        deadline = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < deadline:
            self._read(0.02)
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self._read(0)
        os.close(self.r)
        os.close(self.w)
        with open(self.err_path) as f:
            err = f.read()
        os.unlink(self.err_path)
        return self.p.returncode, err

    def evs(self, kind=None):
        return [e for _, e in self.events if kind is None or e.get("event") == kind]


def tensors_st(path):
    t = load_file(path)
    return {k: (str(v.dtype), v.shape, v.tobytes()) for k, v in t.items()}


def tensors_gguf(path):
    rd = GGUFReader(path)
    return {t.name: (int(t.tensor_type), tuple(int(x) for x in t.shape),
                     np.asarray(t.data).tobytes()) for t in rd.tensors}


class Soak:
    def __init__(self, rounds, seed, tmp, only=None):
        self.only = only
        self.rounds, self.seed, self.tmp = rounds, seed, tmp
        self.rng = random.Random(seed)
        self.data = os.path.join(tmp, "data")
        self.failures = []
        self.kills = {}  # where the first kill landed -> count
        self.outcomes = {}  # how the folder was recovered -> count
        self.resume_kills = 0
        os.environ["LORATUNE_STORE"] = os.path.join(tmp, "store")
        self.iters, self.save_every, self.keep = 300, 20, 3
        self.common = ["--model", MODEL, "--data", self.data, "--batch-size", "2",
                       "--max-seq-len", "48", "--lora-targets", "q,v", "--lr", "5e-3",
                       "--threads", "1", "--seed", "7", "--iters", str(self.iters),
                       "--eval-every", "50", "--save-every", str(self.save_every),
                       "--keep-checkpoints", str(self.keep), "--json"]

    def fail(self, rnd, msg):
        self.failures.append(f"round {rnd}: {msg}")
        print(f"FAIL: round {rnd}: {msg}", file=sys.stderr)

    def make_data(self):
        os.makedirs(self.data)
        for split, n in (("train", 16), ("valid", 4)):
            with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
                lines = f.readlines()[:n]
            with open(os.path.join(self.data, split + ".jsonl"), "w") as f:
                f.writelines(lines)

    # ---- the reference --------------------------------------------------------------------
    def reference(self):
        self.ref = os.path.join(self.tmp, "ref")
        c = Child(["train", *self.common, "--out", self.ref], self.tmp)
        rc, err = c.finish()
        if rc != 0:
            raise SystemExit(f"reference run failed (rc {rc}): {err[-2000:]}")
        self.ref_loss = {e["step"]: e["loss"] for e in c.evs("step")}
        self.ref_eval = {e["step"]: e["val_loss"] for e in c.evs("eval")}
        t = {e.get("event") + str(e.get("step", e.get("what", ""))): s for s, e in c.events}
        self.t_start = t["start-1"] if "start-1" in t else next(
            s for s, e in c.events if e["event"] == "start")
        self.t_done = next(s for s, e in c.events if e["event"] == "done")
        final = [s for s, e in c.events if e["event"] == "checkpoint" and e["step"] == self.iters]
        self.t_export = final[0]
        last = next(s for s, e in c.events if e["event"] == "step" and e["step"] == self.iters)
        self.t_tail = self.t_done - last  # the last step to done: eval, checkpoint, exports
        # a checkpoint's write time: from the step event before it to its checkpoint event
        steps = {e["step"]: s for s, e in c.events if e["event"] == "step"}
        d = [s - steps[e["step"]] for s, e in c.events
             if e["event"] == "checkpoint" and e["step"] < self.iters]
        self.t_ckpt = max(sorted(d)[len(d) // 2], 0.002)
        self.ref_files = {f: open(os.path.join(self.ref, f), "rb").read() for f in EXPORTS}
        self.ref_t = {"peft": tensors_st(os.path.join(self.ref, EXPORTS[0])),
                      "mlx": tensors_st(os.path.join(self.ref, EXPORTS[3])),
                      "gguf": tensors_gguf(os.path.join(self.ref, EXPORTS[2])),
                      "ckpt": tensors_st(self.final_ckpt(self.ref))}
        # the run is deterministic: a second uninterrupted run gives the same files (else the
        # comparisons below could not mean anything)
        again = os.path.join(self.tmp, "ref2")
        c = Child(["train", *self.common, "--out", again], self.tmp)
        rc, err = c.finish()
        if rc != 0 or any(open(os.path.join(again, f), "rb").read() != self.ref_files[f]
                          for f in EXPORTS):
            raise SystemExit(f"two uninterrupted runs differ (rc {rc}): {err[-500:]}")
        shutil.rmtree(again)
        print(f"reference: {self.iters} steps, start {self.t_start:.2f} s, final checkpoint "
              f"{self.t_export:.2f} s, done {self.t_done:.2f} s, checkpoint write "
              f"{1000 * self.t_ckpt:.1f} ms, last step to done {1000 * self.t_tail:.0f} ms")

    def final_ckpt(self, out):
        return os.path.join(out, "checkpoints", f"step-{self.iters:08d}.safetensors")

    # ---- one round ------------------------------------------------------------------------
    def first_kill(self, rnd, kind, out):
        """Starts the round's run and kills it as kind says; returns (child, kind as it was
        done: e.g. export@peft)."""
        rng = self.rng
        c = Child(["train", *self.common, "--out", out], self.tmp)
        where = kind
        if kind == "random":
            c.pump_until(deadline=rng.uniform(0, self.t_done))
        elif kind == "loading":
            stages = [e for _, e in self.ref_child_events if e["event"] in ("stage", "start")]
            k = rng.randrange(len(stages))
            seen = [0]

            def nth(ev):
                if ev["event"] in ("stage", "start"):
                    seen[0] += 1
                return seen[0] > k
            if c.pump_until(nth):
                c.stall()
                c.pump_until(deadline=(time.monotonic() - c.t0) + rng.uniform(0, 0.02))
        elif kind == "checkpoint":
            k = self.save_every * rng.randrange(1, self.iters // self.save_every)
            if c.pump_until(lambda e: e["event"] == "step" and e["step"] == k):
                c.pump_until(deadline=(time.monotonic() - c.t0) + rng.uniform(0, 2 * self.t_ckpt))
        elif kind == "export":
            if rng.random() < 0.5:  # stalled at an event between two files of the phase
                at = rng.choice(["checkpoint", "peft", "mlx", "gguf"])
                where = f"export@{at}"
                pred = ((lambda e: e["event"] == "checkpoint" and e["step"] == self.iters)
                        if at == "checkpoint" else
                        (lambda e: e["event"] == "saved" and e["what"] == at))
                if c.pump_until(pred):
                    c.stall()
                    time.sleep(rng.uniform(0, 0.01))
            else:  # a random time after the last step: final eval, checkpoint, exports
                where = "export@random"
                if c.pump_until(lambda e: e["event"] == "step" and e["step"] == self.iters):
                    now = time.monotonic() - c.t0
                    c.pump_until(deadline=now + rng.uniform(0, 1.2 * self.t_tail))
        elif kind == "sigint":
            if c.pump_until(lambda e: e["event"] == "start"):  # its handler is installed
                now = time.monotonic() - c.t0
                c.pump_until(deadline=now + rng.uniform(0, self.t_export - self.t_start))
            c.signal(signal.SIGINT)
            c.sigint = True
            c.pump_until(deadline=(time.monotonic() - c.t0) + rng.uniform(0, 2 * self.t_ckpt))
        c.signal(signal.SIGKILL)
        return c, where

    def same_out(self, rnd, out):
        """Finding 5: a second writer is refused, the first is undisturbed."""
        rng = self.rng
        k = rng.randrange(2, self.iters - self.save_every)
        c = Child(["train", *self.common, "--out", out], self.tmp)
        if not c.pump_until(lambda e: e["event"] == "step" and e["step"] >= k):
            rc, err = c.finish()
            self.fail(rnd, f"same_out: the first run ended before step {k}: rc {rc} {err[-300:]}")
            return c, None
        c.stall()
        want = f"{out}: in use by another loratune process (pid {c.p.pid})"
        for args in (["train", *self.common, "--out", out], ["train", "--resume", out]):
            r = subprocess.run([LORATUNE, *args], capture_output=True, text=True, timeout=60)
            if r.returncode != 1 or want not in r.stderr:
                self.fail(rnd, f"same_out: {args[:2]} not refused by the lock: rc "
                               f"{r.returncode}: {r.stderr[-300:]}")
        # a foreign in-flight temp file named like one of the run's own soon-pruned checkpoints
        ck = os.path.join(out, "checkpoints")
        os.makedirs(ck, exist_ok=True)
        first = (k // self.save_every + 1) * self.save_every
        foreign = os.path.join(ck, f"step-{first:08d}.safetensors.tmp.foreign")
        with open(foreign, "wb") as f:
            f.write(b"another process's write in flight")
        return c, foreign

    def recover(self, rnd, out, procs, kill_recovery=True):
        """Brings the killed run's folder to a finished run; returns how."""
        rng = self.rng
        has_marker = [d for d in (out, os.path.join(out, "mlx-lm"))
                      if os.path.exists(os.path.join(d, MARKER))]
        ck = os.path.join(out, "checkpoints")
        ckpts = sorted(f for f in os.listdir(ck) if f.endswith(".safetensors")) \
            if os.path.isdir(ck) else []
        has_cfg = os.path.exists(os.path.join(out, "run_config.yaml"))
        for d in has_marker:  # readers refuse a marked folder, naming the marker
            x = os.path.join(self.tmp, "fused.gguf")
            r = subprocess.run([LORATUNE, "fuse", "--model", MODEL, "--adapter", d, "--out", x],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 1 or "an incomplete output" not in r.stderr or \
                    os.path.join(d, MARKER) not in r.stderr or os.path.exists(x):
                self.fail(rnd, f"a marked folder {d} was not refused by fuse: rc {r.returncode}"
                               f": {r.stderr[-300:]}")
        if has_marker and not ckpts and "replaced by --overwrite" not in \
                open(os.path.join(has_marker[0], MARKER)).read():
            # (a `train --overwrite` killed before its first checkpoint marks OUT: the
            # replaced run's exports; anything else marked has a checkpoint to resume from)
            self.fail(rnd, f"a marked folder without a checkpoint: {os.listdir(out)}")
        if ckpts:
            how = "resume (marked)" if has_marker else "resume"
            args = ["train", "--resume", out, "--json"]
        elif has_cfg:
            how = "no checkpoint: rerun -c run_config.yaml --overwrite"
            r = subprocess.run([LORATUNE, "train", "--resume", out], capture_output=True,
                               text=True, timeout=60)
            cmd = f"-c {out}/run_config.yaml --out {out} --overwrite"
            if r.returncode != 1 or "stopped before its first checkpoint" not in r.stderr or \
                    cmd not in r.stderr:
                self.fail(rnd, f"--resume of a run without a checkpoint: rc {r.returncode}: "
                               f"{r.stderr[-400:]}")
            r = subprocess.run([LORATUNE, "train", *self.common, "--out", out],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 1 or "stopped before its first checkpoint" not in r.stderr or \
                    cmd not in r.stderr:
                self.fail(rnd, f"a rerun into a run without a checkpoint: rc {r.returncode}: "
                               f"{r.stderr[-400:]}")
            args = ["train", "-c", f"{out}/run_config.yaml", "--out", out, "--overwrite",
                    "--json"]
        else:
            how = "nothing of a run: rerun"
            args = ["train", *self.common, "--out", out]
        for attempt in range(4):
            c = Child(args, self.tmp)
            killed = kill_recovery and attempt < 3 and rng.random() < 0.3
            if killed:  # SIGKILL during the recovery too
                c.pump_until(deadline=rng.uniform(0, self.t_done))
                c.signal(signal.SIGKILL)
            rc, err = c.finish()
            procs.append(c)
            if rc == -signal.SIGKILL:
                self.resume_kills += 1
                if args[1] != "--resume":  # what the folder holds now decides again
                    return how + " (killed)", self.recover(rnd, out, procs, kill_recovery)[1]
                continue
            if rc != 0:
                self.fail(rnd, f"recovery {' '.join(args[:3])} failed: rc {rc}: {err[-600:]}")
                return how, None
            return how, c
        return how, None

    def compare(self, rnd, out, procs):
        for c in procs:
            for e in c.evs("step"):
                if self.ref_loss.get(e["step"]) != e["loss"]:
                    self.fail(rnd, f"step {e['step']}: loss {e['loss']} vs the reference's "
                                   f"{self.ref_loss.get(e['step'])}")
                    break
            for e in c.evs("eval"):
                if self.ref_eval.get(e["step"]) != e["val_loss"]:
                    self.fail(rnd, f"eval at step {e['step']}: {e['val_loss']} vs "
                                   f"{self.ref_eval.get(e['step'])}")
                    break
        last = procs[-1]
        done = last.evs("done")
        if not done or done[-1]["outcome"] != "done" or done[-1]["step"] != self.iters:
            self.fail(rnd, f"the last process did not finish the run: {done}")
        got_steps = {e["step"] for c in procs for e in c.evs("step")}
        missing = set(range(self.iters - self.save_every + 1, self.iters + 1)) - got_steps
        if missing:
            hist = [(c.args[:3], c.p.returncode, [e.get("resumed_from") for e in c.evs("start")],
                     [e["step"] for e in c.evs("step")][-1:], [e["step"] for e in
                                                              c.evs("checkpoint")][-2:])
                    for c in procs]
            self.fail(rnd, f"steps {sorted(missing)[:5]} were never printed by any process: "
                           f"{hist}")
        try:
            got = {"peft": tensors_st(os.path.join(out, EXPORTS[0])),
                   "mlx": tensors_st(os.path.join(out, EXPORTS[3])),
                   "gguf": tensors_gguf(os.path.join(out, EXPORTS[2])),
                   "ckpt": tensors_st(self.final_ckpt(out))}
        except Exception as ex:  # noqa: BLE001 (any reader error is a failure to report)
            self.fail(rnd, f"reading the outputs: {ex}")
            return
        for k, v in got.items():
            if v != self.ref_t[k]:
                bad = sorted(n for n in set(v) | set(self.ref_t[k])
                             if v.get(n) != self.ref_t[k].get(n))
                self.fail(rnd, f"{k} tensors differ from the reference's: {bad[:3]}")
        for f in EXPORTS:
            if open(os.path.join(out, f), "rb").read() != self.ref_files[f]:
                self.fail(rnd, f"{f} differs from the reference's file")
        left = []
        for d, _, files in os.walk(out):
            left += [os.path.join(d, f) for f in files if f in (MARKER, LOCK) or ".tmp." in f]
        if left:
            self.fail(rnd, f"left behind: {left}")

    def landed(self, c, out):
        """Where the kill landed, from the events the killed process printed and its folder."""
        evs = c.evs()
        names = [e["event"] for e in evs]
        marked = os.path.exists(os.path.join(out, MARKER))
        if "done" in names:
            return f"after done ({c.evs('done')[-1]['outcome']})"
        saved = [e["what"] for e in evs if e["event"] == "saved"]
        if saved:
            return f"export, after {saved[-1]}" + (" (marked)" if marked else "")
        if any(e["event"] == "checkpoint" and e["step"] == self.iters for e in evs):
            return "export, before peft" + (" (marked)" if marked else "")
        if any(e["event"] == "step" and e["step"] == self.iters for e in evs):
            return "end of training (final eval, checkpoint)"
        if names and names[-1] == "checkpoint":
            return "training, after a checkpoint"
        if "interrupted" in names:
            return "graceful stop, after its checkpoint"
        if "start" not in names:
            return "loading (before start)"
        if c.sigint:
            return "graceful stop"
        steps = [e["step"] for e in evs if e["event"] == "step"]
        if steps and (steps[-1] % self.save_every == 0 or steps[-1] == self.iters) and \
                names[-1] == "step":
            return "training, at a checkpoint"
        return "training"

    def round(self, rnd):
        kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        if self.only and kind not in self.only:
            kind = self.rng.choice(self.only)
        out = os.path.join(self.tmp, f"r{rnd:04d}")
        procs = []
        foreign = None
        if kind == "same_out":
            c, foreign = self.same_out(rnd, out)
            rc, err = c.finish()
            procs.append(c)
            where = "same_out"
            if rc != 0:
                self.fail(rnd, f"same_out: the first run was disturbed: rc {rc}: {err[-600:]}")
            if foreign and not os.path.exists(foreign):
                self.fail(rnd, "same_out: pruning removed another process's temp file")
            if foreign and os.path.exists(foreign):
                os.unlink(foreign)
            how = "undisturbed"
        else:
            c, kind_at = self.first_kill(rnd, kind, out)
            rc, err = c.finish()
            procs.append(c)
            where = f"{kind_at:14s} -> {self.landed(c, out)}"
            last = c.evs()[-1]["event"] if c.evs() else "nothing"
            if rc == 0:
                where += " (finished first)"
            elif rc == 130:
                where += " (stopped gracefully)"
            elif rc == -signal.SIGINT and c.sigint and c.evs("done"):
                where += " (SIGINT after done)"  # the handler is gone once the run ended
            elif rc != -signal.SIGKILL:
                self.fail(rnd, f"{kind}: rc {rc} (last event {last}): {err[-600:]}")
            if rc == 0 or rc == -signal.SIGINT and c.evs("done") and \
                    c.evs("done")[-1]["outcome"] == "done":
                how = "finished"
            else:
                how, last_c = self.recover(rnd, out, procs)
                if last_c is None:
                    self.kills[where] = self.kills.get(where, 0) + 1
                    self.outcomes["failed"] = self.outcomes.get("failed", 0) + 1
                    return
        self.kills[where] = self.kills.get(where, 0) + 1
        self.outcomes[how] = self.outcomes.get(how, 0) + 1
        self.compare(rnd, out, procs)
        shutil.rmtree(out, ignore_errors=True)

    def fixed_cases(self):
        """The two things the soak found, each made to happen every time (the rounds land on
        them by chance): a run killed before its first checkpoint, and a run killed inside
        its exports with a killed writer's temp files in OUT and OUT/mlx-lm."""
        # 1. the pipe has room for the stage events and not for `start` (over 1 KB: the
        # config), which the child writes after run_config.yaml: it blocks there
        out = os.path.join(self.tmp, "fixed_nockpt")
        evs = [e["event"] for _, e in self.ref_child_events]
        room = sum(self.ref_child_nbytes[:evs.index("start")]) + 200
        c = Child(["train", *self.common, "--out", out], self.tmp, room=room)
        time.sleep(0.5)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(out, "run_config.yaml")) and \
                time.monotonic() < deadline and c.p.poll() is None:
            time.sleep(0.05)
        # alive and holding OUT before its first checkpoint: a resume names the lock's holder
        # (not "stopped before its first checkpoint": it has not stopped)
        r = subprocess.run([LORATUNE, "train", "--resume", out], capture_output=True,
                           text=True, timeout=60)
        want = f"{out}: in use by another loratune process (pid {c.p.pid})"
        if r.returncode != 1 or want not in r.stderr:
            self.fail("fixed", f"--resume of a live run before its first checkpoint: rc "
                               f"{r.returncode}: {r.stderr[-300:]}")
        c.signal(signal.SIGKILL)
        rc, _ = c.finish()
        procs = [c]
        if rc != -signal.SIGKILL or not os.path.exists(os.path.join(out, "run_config.yaml")) \
                or os.path.isdir(os.path.join(out, "checkpoints")) and \
                os.listdir(os.path.join(out, "checkpoints")):
            self.fail("fixed", f"stalled at ready: rc {rc}, {os.listdir(out)}")
        how, last = self.recover("fixed-nockpt", out, procs, kill_recovery=False)
        if last is None or not how.startswith("no checkpoint"):
            self.fail("fixed", f"a run killed before its first checkpoint: recovered by {how}")
        else:
            self.compare("fixed-nockpt", out, procs)
        # 2. stalled at `saved peft` (the PEFT files written, OUT and OUT/mlx-lm marked), and
        # the temp files that killed writers leave (named as lt_file_write_atomic, the
        # safetensors and GGUF writers name them), beside a user's own file
        out = os.path.join(self.tmp, "fixed_export")
        for attempt in range(5):  # on a loaded machine the child may get past the stall
            shutil.rmtree(out, ignore_errors=True)
            c = Child(["train", *self.common, "--out", out], self.tmp)
            if c.pump_until(lambda e: e["event"] == "saved" and e["what"] == "peft"):
                c.stall()
            c.signal(signal.SIGKILL)
            rc, _ = c.finish()
            if os.path.exists(os.path.join(out, MARKER)):
                break
        procs = [c]
        temps = [os.path.join(out, "mlx-lm", "adapters.safetensors.tmp.Xq3kPz"),
                 os.path.join(out, "mlx-lm", "adapter_config.json.tmp.4242"),
                 os.path.join(out, "adapter.gguf.tmp.4242"),
                 os.path.join(out, "adapter_model.safetensors.tmp.Ab12Cd")]
        mine = os.path.join(out, "notes.tmp.1")
        for f in temps + [mine]:
            with open(f, "wb") as fh:
                fh.write(b"half a file")
        if rc != -signal.SIGKILL or not os.path.exists(os.path.join(out, MARKER)):
            self.fail("fixed", f"stalled at saved peft: rc {rc}, {os.listdir(out)}")
        how, last = self.recover("fixed-export", out, procs, kill_recovery=False)
        if last is None or how != "resume (marked)":
            self.fail("fixed", f"a run killed inside its exports: recovered by {how}")
        if not os.path.exists(mine):
            self.fail("fixed", "the resume removed a file of the user's (notes.tmp.1)")
        else:
            os.unlink(mine)
        self.compare("fixed-export", out, procs)  # no temp file left
        for d in ("fixed_nockpt", "fixed_export"):
            shutil.rmtree(os.path.join(self.tmp, d), ignore_errors=True)

    def run(self):
        t0 = time.monotonic()
        self.make_data()
        # the order of the stage events, for "loading" kills
        c = Child(["train", *self.common, "--iters", "1", "--out", os.path.join(self.tmp, "s")],
                  self.tmp)
        c.finish()
        self.ref_child_events = c.events
        self.ref_child_nbytes = c.nbytes
        shutil.rmtree(os.path.join(self.tmp, "s"))
        self.reference()
        self.fixed_cases()
        for rnd in range(self.rounds):
            n = len(self.failures)
            self.round(rnd)
            if len(self.failures) > n and len(self.failures) > 20:
                break
        store = os.path.join(os.environ["LORATUNE_STORE"], "store.db")
        if os.path.exists(store):
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                ic = db.execute("PRAGMA integrity_check").fetchall()
            if ic != [("ok",)]:
                self.failures.append(f"the tracking store fails integrity_check: {ic[:3]}")
        r = subprocess.run([LORATUNE, "runs", "list"], capture_output=True, text=True)
        if r.returncode != 0:
            self.failures.append(f"runs list after the soak: {r.stderr[-300:]}")
        self.wall = time.monotonic() - t0
        return self.failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--json", help="write the summary here as JSON")
    ap.add_argument("--kinds", help="only these kinds of kill (comma-separated; debugging)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="lt_kill_soak_")
    s = Soak(a.rounds, a.seed, tmp, a.kinds.split(",") if a.kinds else None)
    failures = s.run()
    summary = {"rounds": a.rounds, "seed": a.seed, "kills": s.kills, "outcomes": s.outcomes,
               "recoveries_killed": s.resume_kills, "failures": len(failures),
               "wall_s": round(s.wall, 1)}
    print("kills by where they landed:")
    for k, v in sorted(s.kills.items()):
        print(f"  {k:40s} {v}")
    print("recovered by:")
    for k, v in sorted(s.outcomes.items()):
        print(f"  {k:52s} {v}")
    print(f"recoveries SIGKILLed themselves: {s.resume_kills}")
    print(f"{a.rounds} rounds, seed {a.seed}, {len(failures)} failures, {s.wall:.1f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept", tmp)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
