"""test_event_stream.py - issue 18, a leftover of the kill soak: `train --json` ignored write
errors on stdout, so with a non-blocking stdout events were dropped silently (stdio's write
failed with EAGAIN), and with a closed one the run died of SIGPIPE mid-training, no checkpoint.

What it must do now (docs/RELIABILITY.md, "The event stream"; docs/TRAIN_CLI.md):
  1. stdout a real non-blocking pipe (O_NONBLOCK on the open file description the child
     inherits, one page of buffer) that this test drains slowly: every event arrives, in order,
     and the events equal those of the same run on an ordinary pipe (event names, steps, exact
     losses and validation losses).
  2. stdout a pipe whose reader closes it after step 30 (past the first checkpoint): the run
     reports once on stderr that its output stream broke (Broken pipe), stops as after Ctrl-C
     (a checkpoint, `interrupted; continue with: loratune train --resume OUT`), exits 141; the
     resume then runs to the end with the uninterrupted run's losses.
  3. the same without --json (the progress lines): exit 141 and the one report;
  4. `eval --json` whose reader is gone: exit 141 and the report.
Before the change: 1 lost events (285 `step` events of 300 in one run), 2, 3 and 4 ended by
SIGPIPE (returncode -13) with no report and (2) no checkpoint past step 20.
"""
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, LORATUNE, check  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K", "stories260K.gguf")
WIKISQL = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
F_SETPIPE_SZ = 1031
ITERS = 300


def make_data(d):
    os.makedirs(d)
    for split, n in (("train", 16), ("valid", 4)):
        with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(d, split + ".jsonl"), "w") as f:
            f.writelines(lines)


def args(data, out, *extra):
    return [LORATUNE, "train", "--model", MODEL, "--data", data, "--batch-size", "2",
            "--max-seq-len", "48", "--lora-targets", "q,v", "--lr", "5e-3", "--threads", "1",
            "--seed", "7", "--iters", str(ITERS), "--eval-every", "50", "--save-every", "20",
            "--keep-checkpoints", "3", "--no-track", "--out", out, *extra]


def key(e):
    """What must be equal between two runs of the same options (not times, not paths)."""
    return (e.get("event"), e.get("stage"), e.get("step"), e.get("loss"), e.get("val_loss"),
            e.get("what"), e.get("outcome"))


def parse(text, what):
    evs = []
    for i, line in enumerate(text.splitlines()):
        try:
            evs.append(json.loads(line))
        except ValueError:
            check(False, f"{what}: line {i + 1} is not a JSON event: {line[:200]!r}")
    return evs


def main():
    tmp = tempfile.mkdtemp(prefix="lt_event_stream_")
    try:
        data = os.path.join(tmp, "data")
        make_data(data)
        r = subprocess.run(args(data, os.path.join(tmp, "ref"), "--json"), capture_output=True,
                           text=True, timeout=600)
        check(r.returncode == 0, f"reference run: rc {r.returncode}: {r.stderr[-1000:]}")
        ref = parse(r.stdout, "reference")
        ref_loss = {e["step"]: e["loss"] for e in ref if e.get("event") == "step"}
        check(len(ref_loss) == ITERS, f"reference: {len(ref_loss)} step events")

        # 1. a non-blocking one-page pipe, drained slowly
        rfd, wfd = os.pipe()
        fcntl.fcntl(wfd, F_SETPIPE_SZ, 4096)
        os.set_blocking(wfd, False)  # on the open file description the child inherits
        p = subprocess.Popen(args(data, os.path.join(tmp, "nb"), "--json"), stdout=wfd,
                             stderr=subprocess.PIPE)
        os.close(wfd)
        chunks, t0, stalls = [], time.monotonic(), 0
        while True:
            ready, _, _ = select.select([rfd], [], [], 600)
            if not ready:
                break
            b = os.read(rfd, 256)
            if not b:
                break
            chunks.append(b)
            if len(b) == 256:
                stalls += 1
            time.sleep(0.004)  # ~64 KB/s, slower than the run writes
        os.close(rfd)
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait()
        nb = parse(b"".join(chunks).decode(), "non-blocking pipe")
        print(f"non-blocking pipe: {len(nb)} events in {time.monotonic() - t0:.1f} s, "
              f"{stalls} full reads")
        check(rc == 0, f"non-blocking pipe: rc {rc}: {err[-1000:]}")
        n_steps = sum(1 for e in nb if e.get("event") == "step")
        check(n_steps == ITERS, f"non-blocking pipe: {n_steps} step events of {ITERS} arrived")
        check([key(e) for e in nb] == [key(e) for e in ref],
              "non-blocking pipe: the events differ from the ordinary pipe's (lost, reordered or "
              "changed)")
        check("broke" not in err, f"non-blocking pipe: a break was reported: {err[-500:]}")

        # 2. the reader closes the pipe after step 30
        out = os.path.join(tmp, "closed")
        p = subprocess.Popen(args(data, out, "--json"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        seen = 0
        for line in p.stdout:
            e = json.loads(line)
            if e.get("event") == "step":
                seen = e["step"]
                if seen >= 30:
                    break
        p.stdout.close()
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait(timeout=600)
        check(rc == 141, f"closed pipe: rc {rc} (expected 141): {err[-1000:]}")
        check(err.count("the output stream on stdout broke") == 1 and "Broken pipe" in err,
              f"closed pipe: stderr must report the break once, naming EPIPE: {err[-1000:]}")
        check(f"continue with: loratune train --resume {out}" in err,
              f"closed pipe: stderr must say how to continue: {err[-1000:]}")
        ck = sorted(int(n[5:13]) for n in os.listdir(os.path.join(out, "checkpoints"))
                    if n.startswith("step-") and n.endswith(".safetensors")) \
            if os.path.isdir(os.path.join(out, "checkpoints")) else []
        check(ck and ck[-1] >= 30, f"closed pipe: checkpoints {ck}: expected one at the stop "
              f"(step >= 30)")
        check(not os.path.exists(os.path.join(out, "adapter_model.safetensors")),
              "closed pipe: the stopped run exported its adapter")
        r = subprocess.run(args(data, out, "--json", "--resume", out), capture_output=True,
                           text=True, timeout=600)
        check(r.returncode == 0, f"resume: rc {r.returncode}: {r.stderr[-1000:]}")
        res = parse(r.stdout, "resume")
        steps = {e["step"]: e["loss"] for e in res if e.get("event") == "step"}
        check(steps and max(steps) == ITERS and min(steps) == (ck[-1] if ck else 0) + 1,
              f"resume: steps {min(steps) if steps else None}..{max(steps) if steps else None}")
        check(all(ref_loss.get(s) == v for s, v in steps.items()),
              "resume: the losses differ from the uninterrupted run's")
        check(res and res[-1].get("event") == "done", "resume: no done event at the end")

        # 3. the progress lines (no --json), the reader gone after the first lines
        p = subprocess.Popen(args(data, os.path.join(tmp, "human")), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        for line in p.stdout:  # "loading ...", "training: ...", "step 1/300 ..."
            if line.startswith(b"step"):
                break
        p.stdout.close()
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait(timeout=600)
        check(rc == 141, f"progress lines, closed pipe: rc {rc} (expected 141): {err[-1000:]}")
        check(err.count("the output stream on stdout broke") == 1,
              f"progress lines, closed pipe: stderr must report the break once: {err[-1000:]}")

        # 4. eval --json (one result line): its reader gone before it prints
        p = subprocess.Popen([LORATUNE, "eval", "--model", MODEL, "--data",
                              os.path.join(data, "valid.jsonl"), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait(timeout=300)
        check(rc == 141 and err.count("the output stream on stdout broke") == 1,
              f"eval --json, closed pipe: rc {rc} (expected 141), stderr: {err[-500:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(ltcheck.finish())


if __name__ == "__main__":
    main()
