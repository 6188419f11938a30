"""test_export_temps.py - issue 18, a leftover of the kill soak: a `fuse --out DIR` killed while
it writes leaves temp files (NAME.tmp.*) in DIR; the next export that takes DIR under its lock
must remove those of its own output names, and nothing else.

How the kill lands inside the write phase without a hook in the product: `fuse` prints nothing
while it writes, so the test watches the output folder (a tight os.listdir loop) and sends
SIGKILL the moment a `*.tmp.*` name (other than the marker's) appears (each file is written to a temp name, fsynced and
renamed, so the temp files live for about the fsync's time). A kill that comes too late (the
rename won the race) is retried; the test requires a kill that left a temp file behind. Then a
second fuse into the same folder (beside a user's own `notes.tmp.1`) must complete, leave no
temp file and no marker, leave the user's file alone, and write the same model.safetensors as
a fuse into a fresh folder (the reference). The same for a GGUF written into a run folder (a
folder holding a loratune lock file, which lt_export_lock then takes).
Study folders too (`study create` / `ask` and `tune` take the study's lock): temp files of
study.json and of tune's tune.json / summary.json / best_config.yaml, planted as a killed writer
leaves them, are gone after the command, a user's notes.tmp.1 stays.
Before the fix the second fuse left the killed one's temp file(s) in place, and the study
commands left the planted ones.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, LORATUNE, SOURCE_DIR, check  # noqa: E402

HF = os.path.join(FIXTURES, "stories260K-hf")
LORA = os.path.join(SOURCE_DIR, "tests", "data", "adapter", "lora")
TRIES = 200


def temps(d):
    return sorted(n for n in os.listdir(d) if ".tmp." in n) if os.path.isdir(d) else []


def kill_in_write(out, watch, *extra):
    """Runs `fuse ... --out out` and SIGKILLs it once a temp file shows in watch; returns the
    temp files left after the kill (empty when the kill missed)."""
    p = subprocess.Popen([LORATUNE, "fuse", "--model", HF, "--adapter", LORA, "--out", out,
                          *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t_end = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < t_end:
        try:
            names = os.listdir(watch)
        except FileNotFoundError:
            continue
        # not the marker's own temp (the first write, made before anything is loaded from
        # the output): a data file's, e.g. the safetensors writer's mkstemp name
        if any(".tmp." in n and n != "notes.tmp.1" and not n.startswith(".loratune")
               for n in names):
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    return [n for n in temps(watch) if n != "notes.tmp.1"]


def read(p):
    with open(p, "rb") as f:
        return f.read()


def main():
    tmp = tempfile.mkdtemp(prefix="lt_export_temps_")
    try:
        ref = os.path.join(tmp, "ref")
        r = ltcheck.run("fuse", "--model", HF, "--adapter", LORA, "--out", ref, timeout=300)
        check(r.returncode == 0, f"reference fuse: rc {r.returncode}: {r.stderr[-500:]}")
        r = ltcheck.run("fuse", "--model", HF, "--adapter", LORA, "--out",
                        os.path.join(tmp, "ref.gguf"), timeout=300)
        check(r.returncode == 0, f"reference gguf fuse: rc {r.returncode}: {r.stderr[-500:]}")

        # 1. a Hugging Face folder (the folder is the export's own)
        out = os.path.join(tmp, "out")
        left, tries = [], 0
        while not left and tries < TRIES:
            tries += 1
            shutil.rmtree(out, ignore_errors=True)
            left = kill_in_write(out, out)
        check(bool(left), f"no kill of {tries} landed while a temp file existed")
        print(f"hf: kill {tries} left {left}")
        with open(os.path.join(out, "notes.tmp.1"), "w") as f:
            f.write("the user's own file\n")
        r = ltcheck.run("fuse", "--model", HF, "--adapter", LORA, "--out", out, timeout=300)
        check(r.returncode == 0, f"fuse after the kill: rc {r.returncode}: {r.stderr[-500:]}")
        check(temps(out) == ["notes.tmp.1"],
              f"after the second fuse the folder holds temp files {temps(out)} "
              f"(the killed fuse left {left}; only the user's notes.tmp.1 may stay)")
        check(not os.path.exists(os.path.join(out, ".loratune.incomplete")),
              "the completion marker is still there")
        check(read(os.path.join(out, "model.safetensors")) ==
              read(os.path.join(ref, "model.safetensors")),
              "model.safetensors differs from the reference fuse's")
        r = ltcheck.run("inspect", out, timeout=120)
        check(r.returncode == 0, f"inspect of the folder: rc {r.returncode}: {r.stderr[-500:]}")

        # 2. a GGUF in a run folder (a folder with a loratune lock file: the export takes it)
        run = os.path.join(tmp, "run")
        gguf = os.path.join(run, "merged.gguf")
        left, tries = [], 0
        while not left and tries < TRIES:
            tries += 1
            shutil.rmtree(run, ignore_errors=True)
            os.makedirs(run)
            open(os.path.join(run, ".loratune.lock"), "w").close()
            with open(os.path.join(run, "notes.tmp.1"), "w") as f:
                f.write("the user's own file\n")
            left = kill_in_write(gguf, run)
        check(bool(left), f"gguf: no kill of {tries} landed while a temp file existed")
        print(f"gguf: kill {tries} left {left}")
        open(os.path.join(run, ".loratune.lock"), "w").close()  # as a killed holder leaves it
        r = ltcheck.run("fuse", "--model", HF, "--adapter", LORA, "--out", gguf, timeout=300)
        check(r.returncode == 0, f"gguf fuse after the kill: rc {r.returncode}: {r.stderr[-500:]}")
        check(temps(run) == ["notes.tmp.1"],
              f"after the second gguf fuse the run folder holds temp files {temps(run)}")
        check(read(gguf) == read(os.path.join(tmp, "ref.gguf")),
              "the GGUF differs from the reference fuse's")

        # 3. a study folder: study.json (the library's) and tune's own files, the temp files a
        # killed writer leaves planted here (lt_file_write_atomic names them NAME.tmp.PID)
        space = os.path.join(tmp, "space.json")
        with open(space, "w") as f:
            f.write('{"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true}}')
        sd = os.path.join(tmp, "study")
        os.makedirs(sd)
        for n in ("study.json.tmp.4242", "notes.tmp.1"):
            open(os.path.join(sd, n), "w").close()
        r = ltcheck.run("study", "create", "--study", sd, "--space", space, timeout=120)
        check(r.returncode == 0 and temps(sd) == ["notes.tmp.1"],
              f"study create: rc {r.returncode}, temp files {temps(sd)}: {r.stderr[-300:]}")
        open(os.path.join(sd, "study.json.tmp.4243"), "w").close()
        r = ltcheck.run("study", "ask", "--study", sd, timeout=120)
        check(r.returncode == 0 and temps(sd) == ["notes.tmp.1"],
              f"study ask: rc {r.returncode}, temp files {temps(sd)}: {r.stderr[-300:]}")
        td = os.path.join(tmp, "tune")
        os.makedirs(td)
        for n in ("study.json.tmp.4242", "tune.json.tmp.4242", "summary.json.tmp.4242",
                  "best_config.yaml.tmp.4242", "notes.tmp.1"):
            open(os.path.join(td, n), "w").close()
        r = ltcheck.run("tune", "--model", HF, "--data",
                        os.path.join(FIXTURES, "datasets", "wikisql-mlx"), "--eval-batches", "2",
                        "--max-seq-len", "48", "--threads", "1", "--study", td, "--trials", "1",
                        "--iters", "3", "--no-track", timeout=300)
        check(r.returncode == 0 and temps(td) == ["notes.tmp.1"],
              f"tune: rc {r.returncode}, temp files {temps(td)}: {r.stderr[-300:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(ltcheck.finish())


if __name__ == "__main__":
    main()
