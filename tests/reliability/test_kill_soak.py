"""test_kill_soak.py - the short kill soak (issue 18) that CTest runs (label reliability):
tests/reliability/kill_soak.py's fixed cases (a run stopped before its first checkpoint, resumed
while alive, then killed; a run killed inside its exports, with killed writers' temp files)
and 8 seeded rounds of random
kills (SIGKILL at random times, while loading, at checkpoints, inside the export phase, during
the graceful stop after SIGINT, during the resumes; a second run into the same --out), and a
SIGINT during the final evaluation (stop_in_final_eval). Each
folder must resume (or, killed before its first checkpoint, be started again as its message
says) to the uninterrupted reference run's exact losses and adapter files. The long version
(200 rounds) is bench/kill_soak.sh; its numbers are in bench/RESULTS.md.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kill_soak  # noqa: E402
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402


def stop_in_final_eval():
    """Ctrl-C during the final evaluation stops the run (checkpoint, `interrupted`, exit 130, no
    exports) and a resume evaluates and exports as the uninterrupted run does; it used to skip
    the evaluation and export with exit 0. The validation split is 1000 examples so that the
    final evaluation lasts long enough for the SIGINT sent on the last step's event."""
    tmp = tempfile.mkdtemp(prefix="lt_stop_eval_")
    os.environ["LORATUNE_STORE"] = os.path.join(tmp, "store")
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    with open(os.path.join(kill_soak.WIKISQL, "train.jsonl")) as f:
        lines = f.readlines()
    with open(os.path.join(data, "train.jsonl"), "w") as f:
        f.writelines(lines[:16])
    with open(os.path.join(data, "valid.jsonl"), "w") as f:
        f.writelines(lines[:1000])
    args = ["train", "--model", kill_soak.MODEL, "--data", data, "--batch-size", "2",
            "--max-seq-len", "48", "--threads", "1", "--seed", "7", "--iters", "6",
            "--eval-every", "0", "--save-every", "0", "--json"]

    def run(out, sigint_at=None, extra=()):
        p = subprocess.Popen([kill_soak.LORATUNE, *(extra or [*args, "--out", out])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        evs = []
        for line in p.stdout:
            evs.append(json.loads(line))
            if sigint_at and evs[-1]["event"] == "step" and evs[-1]["step"] == sigint_at:
                p.send_signal(signal.SIGINT)
        err = p.stderr.read()
        return p.wait(), evs, err

    ref = os.path.join(tmp, "ref")
    rc, ev_ref, err = run(ref)
    check(rc == 0, f"reference: {err[-300:]}")
    final_eval = [e["val_loss"] for e in ev_ref if e["event"] == "eval" and e["step"] == 6]
    out = os.path.join(tmp, "b")
    rc, evs, err = run(out, sigint_at=6)
    names = [e["event"] for e in evs]
    check(rc == 130 and "interrupted" in names and "saved" not in names and
          not any(e["event"] == "eval" and e["step"] == 6 for e in evs) and
          not os.path.exists(os.path.join(out, "adapter_model.safetensors")) and
          os.path.exists(os.path.join(out, "checkpoints", "step-00000006.safetensors")),
          f"SIGINT in the final evaluation: rc {rc}, events {names[-6:]}, {os.listdir(out)}")
    rc, evs, err = run(out, extra=["train", "--resume", out, "--json"])
    got = [e["val_loss"] for e in evs if e["event"] == "eval" and e["step"] == 6]
    check(rc == 0 and final_eval and got == final_eval,
          f"the resume evaluates as the uninterrupted run: rc {rc}, {got} vs {final_eval}: "
          f"{err[-300:]}")
    for f in kill_soak.EXPORTS:
        a, b = os.path.join(ref, f), os.path.join(out, f)
        check(os.path.exists(b) and open(a, "rb").read() == open(b, "rb").read(),
              f"{f}: the resumed run's equals the uninterrupted run's")
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    stop_in_final_eval()
    rounds = int(os.environ.get("LT_KILL_SOAK_ROUNDS", "8"))
    rc = kill_soak.main(["--rounds", str(rounds), "--seed", "18"])
    check(rc == 0, f"kill soak, {rounds} rounds, seed 18: failures (FAIL lines above)")
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
