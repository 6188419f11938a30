"""test_serve_concurrency.py - jobs of `loratune serve` run at once as the memory plan allows: the
real server on loopback with --memory-budget B, on the stories260K fixture.

The peaks come from `loratune plan --json` (the command, not the server): A for a small LoRA job,
C for a big one (larger batch, length and rank). B = 2A + (C - A) / 2, so two small jobs fit
together (2A <= B) and a big one does not fit beside a small one (A + C > B). Three jobs are
queued at once, small, small, big:
- each job's planned_peak_bytes equals `loratune plan`'s peak for its options;
- the two small jobs run at the same time: both started before either finished; /api/health,
  polled meanwhile, shows two running jobs with memory_planned_bytes = 2A and the budget B;
- the big job starts only after both small ones finished (it never runs beside one);
- every job has its own run in the tracking store (two recorders starting at once on one
  dataset once lost one: its data versioning raced);
- the two small jobs, trained concurrently in one process, have the step losses of one
  `loratune train --json` with the same options and data (running side by side changes nothing);
- --memory-budget 0 / abc is refused (exit 2).
Prints "N passed, M failed".
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, conforms, sse_events  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

import requests  # noqa: E402

SPEC = servekit.load_spec()
TMP = tempfile.mkdtemp(prefix="lt_serve_conc_")
MODEL_PATH = os.path.join(servekit.MODELS, servekit.MODEL)
SMALL = {"iters": 12, "batch-size": 1, "max-seq-len": 32, "lora-rank": 2, "threads": 1,
         "eval-every": 0, "seed": 5}
BIG = {"iters": 3, "batch-size": 8, "max-seq-len": 256, "lora-rank": 16, "threads": 1,
       "eval-every": 0, "seed": 5}


def plan_peak(opts):
    r = ltcheck.run("plan", "--model", MODEL_PATH, "--method", "lora", "--batch-size",
                    str(opts["batch-size"]), "--max-seq-len", str(opts["max-seq-len"]),
                    "--lora-rank", str(opts["lora-rank"]), "--json")
    check(r.returncode == 0, f"loratune plan: {r.stderr[-300:]}")
    return json.loads(r.stdout)["peak_bytes"]


def cli_losses(data, opts):
    args = ["train", "--json", "--model", MODEL_PATH, "--data", data, "--out",
            os.path.join(TMP, "cli-out"), "--no-track"]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    r = ltcheck.run(*args)
    check(r.returncode == 0, f"loratune train: {r.stderr[-500:]}")
    return [e["loss"] for e in (json.loads(x) for x in r.stdout.splitlines() if x.strip())
            if e.get("event") == "step"]


def job_losses(u, jid):
    with requests.get(f"{u}/api/jobs/{jid}/events", stream=True, timeout=120) as resp:
        return [d["loss"] for _, k, d in sse_events(resp, limit_s=120) if k == "step"]


def main():
    for bad in ("0", "abc"):
        p = subprocess.run([ltcheck.LORATUNE, "serve", "--port", "0", "--workdir", os.path.join(TMP, "w-bad"),
                            "--memory-budget", bad], capture_output=True, text=True, timeout=30)
        check(p.returncode == 2 and "--memory-budget" in p.stderr, f"--memory-budget {bad}: {p.returncode} {p.stderr[-200:]}")

    a, c = plan_peak(SMALL), plan_peak(BIG)
    check(c > a, f"the big job plans more: {c} vs {a}")
    budget = 2 * a + (c - a) // 2
    check(2 * a <= budget < a + c, f"budget {budget}: two small fit ({2 * a}), small + big do not ({a + c})")
    data = os.path.join(TMP, "train.jsonl")
    with open(data, "w") as f:
        f.writelines(servekit.wikisql_lines(40))
    srv = Server(os.path.join(TMP, "work"), "--memory-budget", str(budget))
    u = srv.url
    try:
        with open(data, "rb") as f:
            ds = requests.post(u + "/api/datasets?name=train.jsonl", data=f.read(),
                               headers={"Content-Type": "application/octet-stream"}, timeout=60).json()
        ids = []
        for opts in (SMALL, SMALL, BIG):
            r = requests.post(u + "/api/jobs", json={"dataset": ds["id"], "model": servekit.MODEL, "options": opts},
                              timeout=30)
            check(r.status_code == 201, f"job: {r.status_code} {r.text[:300]}")
            ids.append(r.json()["id"])
        samples = []
        t0 = time.time()
        while time.time() - t0 < 300:
            h = requests.get(u + "/api/health", timeout=10).json()
            samples.append(h)
            if not h["queued"] and not h["running_jobs"]:
                break
            time.sleep(0.01)
        conforms(SPEC, "Health", samples[0], "GET /api/health")
        jobs = [requests.get(f"{u}/api/jobs/{i}", timeout=10).json() for i in ids]
        for j in jobs:
            conforms(SPEC, "Job", j, "GET /api/jobs/{id}")
        check([j["status"] for j in jobs] == ["done"] * 3, f"statuses: {[(j['status'], j.get('error')) for j in jobs]}")
        check([j.get("planned_peak_bytes") for j in jobs] == [a, a, c],
              f"planned peaks {[j.get('planned_peak_bytes') for j in jobs]} = loratune plan's {[a, a, c]}")
        runs = [j.get("run_id") for j in jobs]
        check(all(isinstance(r, int) and r > 0 for r in runs) and len(set(runs)) == 3,
              f"each job has its own run in the store (recorders started side by side): {runs}")
        s1, s2, s3 = (j["started"] for j in jobs)
        f1, f2, f3 = (j["finished"] for j in jobs)
        check(s2 < f1 and s1 < f2, f"the small jobs overlap: started {s1:.3f} {s2:.3f}, finished {f1:.3f} {f2:.3f}")
        check(s3 >= max(f1, f2), f"the big job waits for both: started {s3:.3f}, small ones finished {f1:.3f} {f2:.3f}")
        both = [h for h in samples if set(h["running_jobs"]) == set(ids[:2])]
        check(both and all(h["memory_planned_bytes"] == 2 * a for h in both),
              f"health with both small jobs running: {len(both)} samples, planned {[h['memory_planned_bytes'] for h in both][:3]}")
        check(all(h["memory_budget_bytes"] == budget for h in samples), "health: the budget")
        check(not any(ids[2] in h["running_jobs"] and len(h["running_jobs"]) > 1 for h in samples),
              "the big job never ran beside another")
        check(all(h["memory_planned_bytes"] <= budget for h in samples), "planned never over the budget")
        want = cli_losses(data, SMALL)
        for jid in ids[:2]:
            got = job_losses(u, jid)
            check(got == want and len(got) == SMALL["iters"], f"job {jid} losses = loratune train's: {got[:3]} vs {want[:3]}")
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
