#!/usr/bin/env python3
"""test_tune_pg.py - `loratune tune` over a study in PostgreSQL (docs/TUNE.md, "Studies shared
through PostgreSQL"): a real server started by the test (pgserver.py) and two `loratune tune`
workers at once on one study, one of them in a network namespace of its own (another "host")
where namespaces can be made.

Checks:
  - both workers end normally; the first makes the study, the other joins it;
  - --trials 8 counts the study's trials, not each worker's: the study holds trials 0..7, each
    exactly once, all complete -- none lost, none run twice, none over the limit;
  - every trial's run is in the --workdir of exactly one worker (trials/NNNN/trial.json), with
    the value the study holds for it, and each worker ran at least one;
  - each worker's summary.json counts the whole study as it stood when the worker ended (the
    last one: 8 complete, and the study's best);
  - a worker continued with --resume (its --workdir) and --trials 10 runs trials 8 and 9;
  - a worker killed (SIGKILL) mid-trial: its trial, left running, gets no more heartbeats
    (--heartbeat 1); a worker that asks 3 s later claims it and runs it again, and the study
    ends with every trial complete, the claimed one counted in "restarts";
  - a PostgreSQL study without --workdir, and --workdir or --heartbeat with a folder study,
    are refused.
The numbers themselves (validation losses) are `loratune train`'s, checked elsewhere.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ltcheck import FIXTURES, LORATUNE, check, finish, run  # noqa: E402
from pgserver import start  # noqa: E402

MODEL = os.path.join(FIXTURES, "stories260K-hf")
DATA = os.path.join(FIXTURES, "datasets", "wikisql-mlx")
BASE = ["--model", MODEL, "--data", DATA, "--iters", "20", "--batch-size", "2", "--max-seq-len",
        "96", "--eval-batches", "2", "--no-track", "--threads", "1"]
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "lora-rank": {"type": "int", "low": 2, "high": 16, "log": True}}
N = 8


def main():
    if not shutil.which("pg_config") or not shutil.which("psql"):
        check(False, "PostgreSQL is not installed (tools/setup.sh installs postgresql, libpq-dev)")
        return finish()
    tmp = tempfile.mkdtemp(prefix="lt-tunepg-")
    os.chmod(tmp, 0o755)
    space = os.path.join(tmp, "space.json")
    with open(space, "w") as f:
        json.dump(SPACE, f)
    srv = hosts = None
    try:
        srv, hosts = start(tmp, 1)
        url_here = srv.url("127.0.0.1", "tune1")
        url_there = srv.url(hosts.server_addr(1), "tune1") if hosts else url_here
        prefix = hosts.prefix(1) if hosts else []

        r = run("tune", "--study", url_here, "--trials", "2", *BASE)
        check(r.returncode == 2 and "needs --workdir" in r.stderr, f"no --workdir: {r.stderr}")
        r = run("tune", "--study", os.path.join(tmp, "f"), "--workdir", tmp, *BASE)
        check(r.returncode == 2 and "--workdir is for a PostgreSQL" in r.stderr,
              f"--workdir with a folder study: {r.stderr}")

        r = run("tune", "--study", os.path.join(tmp, "f"), "--heartbeat", "5", *BASE)
        check(r.returncode == 2 and "--heartbeat is for a PostgreSQL" in r.stderr,
              f"--heartbeat with a folder study: {r.stderr}")

        # a worker killed mid-trial: its trial is claimed by the next worker after 3 heartbeats
        url2 = srv.url("127.0.0.1", "tune2")
        long_base = [x if x != "20" else "100000" for x in BASE]  # --iters: still running
        wk, wy = os.path.join(tmp, "wk"), os.path.join(tmp, "wy")
        killed = subprocess.Popen([LORATUNE, "tune", "--study", url2, "--workdir", wk, "--trials",
                                   "3", "--space", space, "--tune-seed", "7", "--heartbeat", "1",
                                   *long_base], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        state0, t0 = None, time.time()
        while time.time() - t0 < 60 and state0 != "running":
            time.sleep(0.5)
            r = run("study", "show", "--study", url2, "--json")
            tr = json.loads(r.stdout)["trials"] if r.returncode == 0 else []
            state0 = tr[0]["state"] if tr else None
        time.sleep(2.5)  # heartbeats under way
        r = run("study", "show", "--study", url2, "--json")
        tr = json.loads(r.stdout)["trials"] if r.returncode == 0 else []
        check(tr and tr[0].get("heartbeat_at", 0) >= tr[0].get("asked_at", 1e18) + 1,
              f"a live worker's trial gets heartbeats: {tr[:1]}")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        check(state0 == "running", f"the first worker's trial 0 is running: {state0}")
        r = run("tune", "--study", url2, "--workdir", wy, "--trials", "3", "--space", space,
                "--tune-seed", "7", "--heartbeat", "1", *BASE, timeout=600)
        check(r.returncode == 0, f"the second worker: exit {r.returncode}: {r.stderr[-1200:]}")
        check("trial   0  lost its worker (no heartbeat for 3 s): runs again here" in r.stdout,
              f"the second worker claims trial 0: {r.stdout[-1500:]}")
        r = run("study", "show", "--study", url2, "--json")
        tr = json.loads(r.stdout)["trials"] if r.returncode == 0 else []
        check([(t["trial"], t["state"]) for t in tr] == [(0, "complete"), (1, "complete"),
                                                        (2, "complete")],
              f"after the claim: {[(t['trial'], t['state']) for t in tr]}")
        check(all(os.path.exists(os.path.join(wy, "trials", "%04d" % i, "trial.json"))
                  for i in range(3)), "the second worker ran all three (trial 0 again)")
        check(tr and tr[0].get("restarts") == 1 and all("restarts" not in t for t in tr[1:]),
              f"restarts: {[t.get('restarts') for t in tr]}")

        work = [os.path.join(tmp, "w0"), os.path.join(tmp, "w1")]
        procs = []
        for k, (pre, url) in enumerate((([], url_here), (prefix, url_there))):
            cmd = pre + [LORATUNE, "tune", "--study", url, "--workdir", work[k], "--trials",
                         str(N), "--space", space, "--tune-seed", "5", *BASE]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        outs = [p.communicate(timeout=600) for p in procs]
        for k, (p, (o, e)) in enumerate(zip(procs, outs)):
            check(p.returncode == 0, f"worker {k}: exit {p.returncode}: {e[-1500:]}")
        joined = sum("joined" in o for o, _ in outs)
        check(joined == 1, f"one worker makes the study, the other joins it: {joined} joined")

        r = run("study", "show", "--study", url_here, "--json")
        check(r.returncode == 0, f"study show: {r.stderr}")
        shown = json.loads(r.stdout) if r.returncode == 0 else {"trials": [], "best": None}
        trials = shown["trials"]
        check([t["trial"] for t in trials] == list(range(N)),
              f"trial numbers {[t['trial'] for t in trials]} (expected 0..{N - 1} once each)")
        check(all(t["state"] == "complete" for t in trials),
              f"states {[t['state'] for t in trials]}")
        ran = [[], []]
        for t in trials:
            where = [k for k in (0, 1) if os.path.exists(
                os.path.join(work[k], "trials", "%04d" % t["trial"], "trial.json"))]
            check(len(where) == 1, f"trial {t['trial']}: run by workers {where} (expected one)")
            if len(where) != 1:
                continue
            ran[where[0]].append(t["trial"])
            with open(os.path.join(work[where[0]], "trials", "%04d" % t["trial"],
                                   "trial.json")) as f:
                tj = json.load(f)
            check(tj["state"] == "complete" and tj["value"] == t["value"],
                  f"trial {t['trial']}: trial.json {tj.get('state')} {tj.get('value')} vs the "
                  f"study's {t['value']}")
        check(all(ran), f"each worker ran trials: {ran}")
        # each summary: the study as it stood when that worker ended (the other may still
        # have been running its last trial); the one that ended last saw all N
        best = min(t["value"] for t in trials) if trials else None
        seen = []
        for k in (0, 1):
            try:
                with open(os.path.join(work[k], "summary.json")) as f:
                    sm = json.load(f)
            except (OSError, ValueError) as e:
                check(False, f"worker {k}: summary.json: {e}")
                continue
            seen.append(sm["complete"])
            check(len(ran[k]) <= sm["complete"] <= N, f"worker {k}: {sm['complete']} complete")
            if sm["complete"] == N:
                check(sm.get("best", {}).get("value") == best,
                      f"worker {k}: best {sm.get('best')} vs the study's {best}")
        check(seen and max(seen) == N, f"the last worker's summary counts {N}: {seen}")
        # a worker continued (--resume, its --workdir) with a larger total: N + 2 trials
        r = run("tune", "--study", url_here, "--workdir", work[0], "--resume", "--trials",
                str(N + 2))
        check(r.returncode == 0, f"--resume: exit {r.returncode}: {r.stderr[-800:]}")
        r = run("study", "show", "--study", url_here, "--json")
        more = json.loads(r.stdout)["trials"] if r.returncode == 0 else []
        check([t["trial"] for t in more] == list(range(N + 2)) and
              all(t["state"] == "complete" for t in more) and
              all(os.path.exists(os.path.join(work[0], "trials", "%04d" % i, "trial.json"))
                  for i in (N, N + 1)),
              f"--resume --trials {N + 2}: {[(t['trial'], t['state']) for t in more]}")
        print(f"{N} trials by two workers ({'one in a network namespace' if hosts else 'both on this host'}):"
              f" {ran[0]} and {ran[1]}")
    finally:
        if srv:
            srv.stop()
        if hosts:
            hosts.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
