"""test_run_lock.py - one writer per output folder (lt_dir_lock: OUT/.loratune.lock, an OFD
write lock holding the pid), end to end on stories260K:

- deterministic: this test holds the lock itself (fcntl.lockf: POSIX record locks conflict
  with loratune's OFD locks) and writes its pid; `train --out`, `train --resume`,
  `fuse --out DIR` and `fuse --out DIR/x.gguf` then fail at once with a message naming the
  folder and this pid; released, they work and leave no lock file behind; a GGUF into an
  ordinary folder (no lock file) is not blocked;
- a real run: a second `train` and a `fuse` into the folder of a running `train` fail naming
  it and the first one's pid; its checkpoint pruning leaves a foreign temp file alone (checked
  once two more checkpoints were written and pruned: it fails when pruning removes every
  `step-*.tmp.*`, issue 18 finding 5); after
  SIGKILL the kernel has released the lock: a new run into the killed run's folder is refused
  (it holds another run: issue 18 finding 4) naming the folder, --overwrite and --resume; with
  --overwrite it takes the folder (removing the killed writes' temp files and the killed run's
  checkpoints) and leaves whole exports.
"""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
WIKISQL = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx")
TMP = tempfile.mkdtemp(prefix="lt_run_lock_")
DATA = os.path.join(TMP, "data")
os.environ["LORATUNE_STORE"] = os.path.join(TMP, "store")
LOCK = ".loratune.lock"
FAST = 10.0  # seconds: refusals come before any model is loaded (generous: shared machines)

COMMON = ["--model", MODEL, "--data", DATA, "--batch-size", "2", "--max-seq-len", "48",
          "--threads", "1", "--eval-every", "0", "--seed", "7"]


def make_data():
    os.makedirs(DATA)
    for split, n in (("train", 16), ("valid", 4)):
        with open(os.path.join(WIKISQL, split + ".jsonl")) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(DATA, split + ".jsonl"), "w") as f:
            f.writelines(lines)


def timed(*args):
    t = time.monotonic()
    r = ltcheck.run(*args, timeout=300)
    return r, time.monotonic() - t


def refused(what, r, dt, folder, pid):
    want = f"{folder}: in use by another loratune process (pid {pid})"
    check(r.returncode == 1 and want in r.stderr and os.path.join(folder, LOCK) in r.stderr,
          f"{what}: rc {r.returncode}, wanted '{want}' in: {r.stderr[-500:]}")
    check(dt < FAST, f"{what}: refused after {dt:.1f} s")


def hold(folder):
    """Locks folder/.loratune.lock as another writer would, with our pid in it."""
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def ckpts(folder):
    d = os.path.join(folder, "checkpoints")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def deterministic():
    me = os.getpid()
    R = os.path.join(TMP, "R")  # a finished run, to resume
    r = ltcheck.run("train", *COMMON, "--iters", "2", "--out", R)
    check(r.returncode == 0 and not os.path.exists(os.path.join(R, LOCK)),
          f"a finished run leaves no lock file: {r.stderr[-300:]} {os.listdir(R)}")
    fd = hold(R)
    refused("train --out (held)", *timed("train", *COMMON, "--iters", "2", "--out", R), R, me)
    refused("train --resume (held)", *timed("train", "--resume", R, "--iters", "4"), R, me)
    refused("fuse --out DIR (held)", *timed("fuse", "--model", MODEL, "--adapter", R,
                                            "--out", R), R, me)
    refused("fuse --out DIR/x.gguf (held)",
            *timed("fuse", "--model", MODEL, "--out", os.path.join(R, "x.gguf")), R, me)
    check(ckpts(R) == ["step-00000002.safetensors"] and
          not os.path.exists(os.path.join(R, "x.gguf")), f"nothing written: {os.listdir(R)}")
    os.close(fd)  # released; the lock file (with a pid that no longer holds it) stays
    r = ltcheck.run("train", "--resume", R, "--iters", "4")
    check(r.returncode == 0 and ckpts(R)[-1] == "step-00000004.safetensors" and
          not os.path.exists(os.path.join(R, LOCK)),
          f"released: resume takes the folder: {r.stderr[-300:]} {os.listdir(R)}")
    r = ltcheck.run("fuse", "--model", MODEL, "--adapter", R, "--out", os.path.join(R, "x.gguf"))
    check(r.returncode == 0 and not os.path.exists(os.path.join(R, LOCK)),
          f"fuse into a finished run's folder: {r.stderr[-300:]}")
    # a GGUF into a folder no loratune writer holds: no lock taken, no lock file made
    O = os.path.join(TMP, "plain")
    os.makedirs(O)
    r = ltcheck.run("fuse", "--model", MODEL, "--out", os.path.join(O, "m.gguf"))
    check(r.returncode == 0 and os.listdir(O) == ["m.gguf"], f"plain folder: {os.listdir(O)}")
    # a folder created for a run that then fails is removed again
    F = os.path.join(TMP, "failed")
    r = ltcheck.run("train", *COMMON, "--data", os.path.join(TMP, "nope"), "--out", F)
    check(r.returncode == 1 and not os.path.exists(F), f"failed run leaves no folder: {r.stderr}")


def read_until_step(p, k):
    for line in p.stdout:
        ev = json.loads(line)
        if ev.get("event") == "step" and ev["step"] >= k:
            return ev["step"]
    return None


def real_process():
    P = os.path.join(TMP, "P")
    p = subprocess.Popen([ltcheck.LORATUNE, "train", *COMMON, "--iters", "1000000",
                          "--save-every", "1", "--keep-checkpoints", "2", "--out", P, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        check(read_until_step(p, 2) is not None, "first run is training")
        with open(os.path.join(P, LOCK)) as f:
            check(f.read().strip() == str(p.pid), "the lock file holds the first run's pid")
        refused("second train", *timed("train", *COMMON, "--iters", "2", "--out", P), P, p.pid)
        refused("fuse into a running run's folder",
                *timed("fuse", "--model", MODEL, "--out", P), P, p.pid)
        # pruning touches only the run's own files: a foreign in-flight temp file must survive
        # the prunings that follow (the run is ahead of the events we read, so progress is
        # judged from the folder: a checkpoint 3 steps past the newest when the file was made
        # means at least two checkpoints were written and pruned since)
        foreign = os.path.join(P, "checkpoints", "step-00000001.safetensors.tmp.foreign")
        open(foreign, "w").close()
        newest = max(int(c[5:13]) for c in ckpts(P) if c.endswith(".safetensors"))
        deadline = time.monotonic() + 60
        seen = newest
        for _ in p.stdout:  # keep reading: a full stdout pipe would stop the run
            seen = max([int(c[5:13]) for c in ckpts(P) if c.endswith(".safetensors")] + [seen])
            if seen >= newest + 3 or time.monotonic() > deadline:
                break
        check(seen >= newest + 3 and os.path.exists(foreign) and len(ckpts(P)) <= 4,
              f"pruning left a foreign temp file alone (checkpoints {newest} -> {seen}): "
              f"{ckpts(P)}")
    finally:
        p.kill()
        p.communicate()
    check(p.returncode == -signal.SIGKILL, f"first run killed: {p.returncode}")
    killed = [c for c in ckpts(P) if c.endswith(".safetensors")]
    # issue 18 finding 4: a new run into the killed run's folder is refused, naming the folder
    # and the option (its run_config.yaml must not land beside the other run's checkpoints)
    r, dt = timed("train", *COMMON, "--iters", "2", "--save-every", "1", "--keep-checkpoints",
                  "2", "--out", P)
    check(r.returncode == 1 and f"{P}: holds another run (run_config.yaml)" in r.stderr
          and "--overwrite" in r.stderr and f"--resume {P}" in r.stderr and dt < FAST,
          f"a new run into another run's folder is refused: rc {r.returncode}: {r.stderr[-500:]}")
    check([c for c in ckpts(P) if c.endswith(".safetensors")] == killed,
          f"the refused run left the other run's checkpoints alone: {ckpts(P)}")
    r, dt = timed("train", *COMMON, "--iters", "2", "--save-every", "1", "--keep-checkpoints",
                  "2", "--out", P, "--overwrite")
    check(r.returncode == 0, f"after SIGKILL, --overwrite takes the folder: {r.stderr[-500:]}")
    after = ckpts(P)
    check(not os.path.exists(foreign) and not [c for c in after if ".tmp." in c],
          f"leftover temp files removed when the folder is taken: {after}")
    check(after == ["step-00000001.safetensors", "step-00000002.safetensors"],
          f"--overwrite: only the new run's checkpoints are left: {killed} -> {after}")
    check(not os.path.exists(os.path.join(P, ".loratune.incomplete")),
          "--overwrite: the exports are whole after the run (no incomplete marker)")
    check(not os.path.exists(os.path.join(P, LOCK)), "no lock file after the run")


def main():
    make_data()
    deterministic()
    real_process()
    shutil.rmtree(TMP, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
