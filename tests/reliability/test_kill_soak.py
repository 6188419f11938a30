"""test_kill_soak.py - the short kill soak (issue 18) that CTest runs (label reliability):
tests/reliability/kill_soak.py's fixed cases (a run stopped before its first checkpoint, resumed
while alive, then killed; a run killed inside its exports, with killed writers' temp files)
and 8 seeded rounds of random
kills (SIGKILL at random times, while loading, at checkpoints, inside the export phase, during
the graceful stop after SIGINT, during the resumes; a second run into the same --out). Each
folder must resume (or, killed before its first checkpoint, be started again as its message
says) to the uninterrupted reference run's exact losses and adapter files. The long version
(200 rounds) is bench/kill_soak.sh; its numbers are in bench/RESULTS.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kill_soak  # noqa: E402
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402


def main():
    rounds = int(os.environ.get("LT_KILL_SOAK_ROUNDS", "8"))
    rc = kill_soak.main(["--rounds", str(rounds), "--seed", "18"])
    check(rc == 0, f"kill soak, {rounds} rounds, seed 18: failures (FAIL lines above)")
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
