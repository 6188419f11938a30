"""test_serve_resume.py - `loratune serve --resume-interrupted`: jobs the previous server left
interrupted continue by themselves at start, from their newest checkpoint (stories260K, the real
server binary, requests for the API and its SSE streams):

- a LoRA job saving a checkpoint every 10 steps; the server is SIGKILLed after step 25; started
  again with --resume-interrupted, the job is queued / running at once (no POST .../resume), its
  events say "resuming from checkpoint", its run restarts from step 20 (the `start` event's
  resumed_from) and ends done; the losses of the resumed steps equal those of one uninterrupted
  `loratune train --json` with the same options (dropout on: the RNG state is restored);
- a job killed before its first checkpoint stays interrupted after a restart with the flag, with
  an event saying it has no checkpoint to resume from; without the flag a checkpointed job stays
  interrupted (the default is unchanged).
"""
import json
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, sse_events  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_resume_")
OPTS = {"iters": 60, "batch-size": 1, "max-seq-len": 32, "threads": 1, "eval-every": 0,
        "save-every": 10, "seed": 5, "lora-dropout": 0.1}
ONE = ("--memory-budget", "1")


def cli_losses(lines, opts):
    d = tempfile.mkdtemp(dir=TMP)
    data = os.path.join(d, "data.jsonl")
    open(data, "w").writelines(lines)
    args = ["train", "--json", "--model", os.path.join(servekit.MODELS, servekit.MODEL), "--data", data,
            "--out", os.path.join(d, "out"), "--no-track"]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    r = ltcheck.run(*args)
    check(r.returncode == 0, f"loratune train: {r.stderr[-500:]}")
    return {e["step"]: e["loss"] for e in (json.loads(x) for x in r.stdout.splitlines() if x.strip())
            if e.get("event") == "step"}


def follow_to(u, jid, step):
    with requests.get(u + f"/api/jobs/{jid}/events", stream=True, timeout=300) as resp:
        list(sse_events(resp, stop=lambda k, d: k == "step" and d["step"] >= step, limit_s=300))


def main():
    work = os.path.join(TMP, "work")
    lines = servekit.wikisql_lines(40)
    srv = Server(work, *ONE)
    u = srv.url
    ds = requests.post(u + "/api/datasets?name=sql.jsonl", data="".join(lines).encode(),
                       headers={"Content-Type": "application/octet-stream"}).json()["id"]
    jk = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL, "options": OPTS}).json()["id"]
    follow_to(u, jk, 25)
    srv.stop(signal.SIGKILL)

    # ---- the default: it waits
    srv = Server(work, *ONE)
    try:
        s = requests.get(srv.url + f"/api/jobs/{jk}").json()["status"]
        check(s == "interrupted", f"without the flag: {s}")
    finally:
        srv.stop()

    # ---- --resume-interrupted: it continues by itself
    srv = Server(work, *ONE, "--resume-interrupted")
    u = srv.url
    try:
        s = requests.get(u + f"/api/jobs/{jk}").json()["status"]
        check(s in ("queued", "running"), f"at start with the flag: {s}")
        with requests.get(u + f"/api/jobs/{jk}/events", stream=True, timeout=300) as resp:
            evs = [(k, d) for _, k, d in sse_events(resp, limit_s=300)]
        check(evs and evs[-1][1].get("status") == "done", f"resumed job ends with {evs[-1:]}")
        check(any(k == "job" and d.get("status") == "queued" and "resuming from checkpoint" in d.get("message", "") for k, d in evs),
              "a 'resuming from checkpoint' event")
        starts = [d for k, d in evs if k == "start"]
        check(len(starts) == 2 and starts[1].get("resumed_from") == 20, f"start events {starts}")
        i = max(n for n, (k, _) in enumerate(evs) if k == "start")
        steps = [d for k, d in evs[i:] if k == "step"]
        check([d["step"] for d in steps] == list(range(21, OPTS["iters"] + 1)), f"resumed steps {[d['step'] for d in steps][:5]}...")
        want = cli_losses(lines, OPTS)
        check([d["loss"] for d in steps] == [want.get(d["step"]) for d in steps],
              "resumed losses equal an uninterrupted `loratune train`")
        # ---- a job killed before any checkpoint
        jn = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL,
                                                  "options": {**OPTS, "iters": 100000, "save-every": 100000}}).json()["id"]
        follow_to(u, jn, 2)
    finally:
        srv.stop(signal.SIGKILL)
    srv = Server(work, *ONE, "--resume-interrupted")
    try:
        j = requests.get(srv.url + f"/api/jobs/{jn}").json()
        check(j["status"] == "interrupted", f"no checkpoint: {j['status']}")
        with requests.get(srv.url + f"/api/jobs/{jn}/events", stream=True, timeout=60) as resp:
            evs = [(k, d) for _, k, d in sse_events(resp, limit_s=10)]
        check(any("no checkpoint to resume from" in d.get("message", "") for _, d in evs),
              f"an event says why: {evs[-2:]}")
        check(requests.get(srv.url + f"/api/jobs/{jk}").json()["status"] == "done", "the done job stays done")
    finally:
        rc, _, err = srv.stop()
    check(rc == 0, f"exit {rc}: {err[-500:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
