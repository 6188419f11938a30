"""test_serve_train.py - a train job through `loratune serve`, end to end with a real HTTP client:

- upload a slice of the wikisql fixture, queue a 10-step LoRA job on stories260K, follow its
  Server-Sent Events to the end: queued, running, the run's stage / start / step 1..10 / eval /
  checkpoint / saved / done events, and the job's terminal event, ids 1, 2, 3, ...;
- the losses equal, bit for bit, those of `loratune train --json` run by hand with the same
  options on the same file (the server drives the same library calls as the command line);
- the tracking store's metric series (GET /api/runs/{id}/metrics) hold the same losses;
- events, job records and runs name the server's folders WORK/ and MODELS/, never their paths;
- the adapter download is the file the run wrote, its sha256 the one the store recorded, and it
  loads with the safetensors library (lora_A / lora_B of the asked rank);
- a finished stream replays from the start, and from Last-Event-ID;
- restart: with one job running and one queued, the server is SIGKILLed; the restarted server
  lists the running one as interrupted and keeps the queued one (same id, options), which then
  runs; cancelling it while it runs ends it as cancelled with a checkpoint; SIGTERM mid-run
  leaves the job interrupted, and POST .../resume after a restart continues it from its
  checkpoint: steps 1..N once each, losses equal to an uninterrupted `loratune train` run.
"""
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, conforms, sse_events  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_train_")
SPEC = servekit.load_spec()
RESUME_OPTS = {"iters": 600, "batch-size": 1, "max-seq-len": 32, "threads": 1, "eval-every": 0,
               "save-every": 100000, "seed": 5, "lora-dropout": 0.1}
OPTS = {"iters": 10, "batch-size": 2, "max-seq-len": 48, "lora-rank": 4, "lr": 5e-3,
        "eval-every": 5, "threads": 1, "seed": 3, "lora-targets": "all"}


def wait_status(u, jid, want, limit=120):
    t0 = time.time()
    s = None
    while time.time() - t0 < limit:
        s = requests.get(u + f"/api/jobs/{jid}").json()["status"]
        if s in want:
            return s
        time.sleep(0.1)
    return s


def ds_lines():
    return servekit.wikisql_lines(40)


def cli_losses(lines, opts):
    """The step losses of `loratune train --json` with opts on a file of lines."""
    d = tempfile.mkdtemp(dir=TMP)
    data = os.path.join(d, "data.jsonl")
    with open(data, "w") as f:
        f.writelines(lines)
    args = ["train", "--json", "--model", os.path.join(servekit.MODELS, servekit.MODEL), "--data",
            data, "--out", os.path.join(d, "out"), "--no-track"]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    r = ltcheck.run(*args)
    check(r.returncode == 0, f"loratune train: {r.stderr[-500:]}")
    return [e["loss"] for e in (json.loads(l) for l in r.stdout.splitlines() if l.strip())
            if e["event"] == "step"]


def upload(u, lines, name="wikisql.jsonl"):
    r = requests.post(u + "/api/datasets", params={"name": name}, data="".join(lines).encode(),
                      headers={"Content-Type": "application/octet-stream"})
    check(r.status_code == 201, f"upload: {r.status_code} {r.text[:300]}")
    return r.json()["id"]


def train_job(srv, work):
    u = srv.url
    lines = ds_lines()
    ds = upload(u, lines)
    r = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL,
                                             "options": OPTS, "name": "ten steps"})
    check(r.status_code == 201, f"create job: {r.status_code} {r.text[:300]}")
    job = r.json()
    conforms(SPEC, "Job", job, "new job")
    jid = job["id"]
    check(job["status"] in ("queued", "running"), f"new job status {job['status']}")

    with requests.get(u + f"/api/jobs/{jid}/events", stream=True, timeout=120) as resp:
        check(resp.status_code == 200 and
              resp.headers.get("Content-Type", "").startswith("text/event-stream"),
              f"events: {resp.status_code} {resp.headers.get('Content-Type')}")
        evs = list(sse_events(resp, limit_s=240))
    kinds = [k for _, k, _ in evs]
    ids = [i for i, _, _ in evs]
    check(ids == list(range(1, len(evs) + 1)), f"event ids {ids[:20]}")
    check(all(k == d.get("event") for _, k, d in evs), "SSE event field != the JSON's event")
    jobev = [d["status"] for _, k, d in evs if k == "job"]
    check(jobev == ["queued", "running", "done"], f"job events {jobev}")
    check(kinds[-1] == "job" and kinds[-2] == "done", f"stream end {kinds[-4:]}")
    stages = [d["stage"] for _, k, d in evs if k == "stage"]
    check(stages and stages[0] == "loading_model" and stages[-1] == "ready", f"stages {stages}")
    start = [d for _, k, d in evs if k == "start"]
    check(len(start) == 1 and start[0]["steps"] == 10, f"start {start}")
    steps = [d for _, k, d in evs if k == "step"]
    check([d["step"] for d in steps] == list(range(1, 11)), f"steps {[d['step'] for d in steps]}")
    check(any(k == "eval" for k in kinds) and any(k == "checkpoint" for k in kinds),
          "no eval / checkpoint events")
    saved = [d["what"] for _, k, d in evs if k == "saved"]
    check("peft" in saved, f"saved {saved}")
    done = [d for _, k, d in evs if k == "done"]
    check(done and done[0]["outcome"] == "done" and done[0]["step"] == 10, f"done {done}")

    job = requests.get(u + f"/api/jobs/{jid}").json()
    conforms(SPEC, "Job", job, "finished job")
    check(job["status"] == "done" and job["result"]["steps"] == 10, f"job: {job}")
    check("adapter_model.safetensors" in job.get("files", []), f"files {job.get('files')}")

    # the command line, same options, same file: the same losses bit for bit
    data = os.path.join(TMP, "cli.jsonl")
    with open(data, "w") as f:
        f.writelines(lines)
    args = ["train", "--json", "--model", os.path.join(servekit.MODELS, servekit.MODEL), "--data",
            data, "--out", os.path.join(TMP, "cli-out"), "--no-track"]
    for k, v in OPTS.items():
        args += [f"--{k}", str(v)]
    r = ltcheck.run(*args)
    check(r.returncode == 0, f"loratune train: {r.stderr[-500:]}")
    cli = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    cli_losses_ = [e["loss"] for e in cli if e["event"] == "step"]
    srv_losses = [d["loss"] for d in steps]
    check(len(cli_losses_) == 10 and cli_losses_ == srv_losses,
          f"losses differ from the CLI's:\n {srv_losses}\n {cli_losses_}")
    cli_val = [e["val_loss"] for e in cli if e["event"] == "eval"]
    srv_val = [d["val_loss"] for _, k, d in evs if k == "eval"]
    check(cli_val == srv_val, f"val losses {srv_val} vs CLI {cli_val}")

    # the tracking store: the same series
    run_id = job.get("run_id")
    check(isinstance(run_id, int), f"run_id {run_id}")
    r = requests.get(u + "/api/runs")
    check([x["id"] for x in r.json()["runs"]] == [run_id], f"runs {r.text[:300]}")
    m = requests.get(u + f"/api/runs/{run_id}/metrics").json()
    conforms(SPEC, "Metrics", m, "metrics")
    hist = m.get("history", {}).get("train_loss", [])
    check([p[0] for p in hist] == list(range(1, 11)), f"train_loss steps {[p[0] for p in hist]}")
    check([p[1] for p in hist] == srv_losses, "store train_loss differs from the step events")
    run = requests.get(u + f"/api/runs/{run_id}").json()
    conforms(SPEC, "Run", run, "run")
    check(run.get("status") == "finished" and run.get("name") == jid, f"run {run.get('status')}")

    # clients see WORK/... and MODELS/..., never the server's own folders
    blob = json.dumps([d for _, _, d in evs]) + json.dumps(job) + json.dumps(run) + json.dumps(m)
    for secret in (os.path.realpath(work), os.path.realpath(servekit.MODELS)):
        check(secret not in blob, f"the server's path {secret} reaches clients")
    peft = [d["path"] for _, k, d in evs if k == "saved" and d["what"] == "peft"]
    check(peft == [f"WORK/jobs/{jid}/out"], f"saved peft path {peft}")
    loading = [d for _, k, d in evs if k == "stage" and d["stage"] == "loading_model"]
    check(loading and loading[0].get("model") == "MODELS/" + servekit.MODEL,
          f"loading_model {loading[:1]}")

    # the adapter download
    r = requests.get(u + f"/api/jobs/{jid}/adapter/adapter_model.safetensors")
    check(r.status_code == 200, f"download {r.status_code}")
    path = os.path.join(work, "jobs", jid, "out", "adapter_model.safetensors")
    with open(path, "rb") as f:
        on_disk = f.read()
    check(r.content == on_disk, "download differs from the file the run wrote")
    art = [a for a in run.get("artifacts", []) if a["path"].endswith("adapter_model.safetensors")]
    check(art and art[0]["sha256"] == hashlib.sha256(r.content).hexdigest(),
          f"download sha256 differs from the store's record: {art}")
    dl = os.path.join(TMP, "dl.safetensors")
    with open(dl, "wb") as f:
        f.write(r.content)
    t = load_file(dl)
    a = [k for k in t if "lora_A" in k]
    check(a and all(t[k].shape[0] == 4 for k in a), f"lora_A shapes {[t[k].shape for k in a][:3]}")
    check(any("lora_B" in k for k in t), "no lora_B")
    r = requests.get(u + f"/api/jobs/{jid}/adapter/adapter_config.json")
    check(r.status_code == 200 and r.json().get("r") == 4, f"adapter_config {r.text[:200]}")

    # replay, and Last-Event-ID
    with requests.get(u + f"/api/jobs/{jid}/events", stream=True, timeout=60) as resp:
        again = list(sse_events(resp, limit_s=60))
    check([d for _, _, d in again] == [d for _, _, d in evs], "replay differs")
    with requests.get(u + f"/api/jobs/{jid}/events", stream=True, timeout=60,
                      headers={"Last-Event-ID": "20"}) as resp:
        tail = list(sse_events(resp, limit_s=60))
    check([i for i, _, _ in tail] == ids[20:], f"Last-Event-ID 20: ids {[i for i, _, _ in tail][:5]}")
    return ds


# a budget of 1 byte: every job is larger than it, so each runs alone (the queue of one job at
# a time that these checks want: a second job stays queued while the first runs)
ONE_AT_A_TIME = ("--memory-budget", "1")


def restart_checks(work, ds):
    srv = Server(work, *ONE_AT_A_TIME)
    u = srv.url
    long_opts = {"iters": 1000000, "batch-size": 1, "max-seq-len": 32, "threads": 1,
                 "save-every": 1000000, "eval-every": 0}
    r = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL,
                                             "options": long_opts})
    j1 = r.json()["id"]
    # wait for its first step over SSE
    with requests.get(u + f"/api/jobs/{j1}/events", stream=True, timeout=120) as resp:
        first = [d for _, k, d in sse_events(resp, stop=lambda k, d: k == "step", limit_s=120)]
    check(first and first[-1].get("event") == "step", "long job never stepped")
    r = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL,
                                             "options": long_opts, "name": "waiting"})
    j2 = r.json()["id"]
    check(requests.get(u + f"/api/jobs/{j2}").json()["status"] == "queued", "second not queued")
    srv.stop(signal.SIGKILL)

    srv = Server(work, *ONE_AT_A_TIME)
    u = srv.url
    try:
        jobs = {j["id"]: j for j in requests.get(u + "/api/jobs").json()["jobs"]}
        check(jobs.get(j1, {}).get("status") == "interrupted", f"j1 after kill: {jobs.get(j1)}")
        check(j2 in jobs and jobs[j2]["name"] == "waiting" and
              jobs[j2]["options"] == {k: str(v) for k, v in long_opts.items()},
              f"queued job lost or changed: {jobs.get(j2)}")
        old = [j for j in jobs.values() if j["status"] == "done"]
        check(len(old) == 1, "the finished job is not listed after restart")
        with requests.get(u + f"/api/jobs/{j1}/events", stream=True, timeout=60) as resp:
            tail = [d for _, k, d in sse_events(resp, limit_s=60) if k == "job"]
        check(tail and tail[-1]["status"] == "interrupted", f"j1's last event {tail[-1:]}")
        check(wait_status(u, j2, ("running",)) == "running", "queued job did not start")
        with requests.get(u + f"/api/jobs/{j2}/events", stream=True, timeout=120) as resp:
            list(sse_events(resp, stop=lambda k, d: k == "step", limit_s=120))
        r = requests.post(u + f"/api/jobs/{j2}/cancel")
        check(r.status_code == 202, f"cancel running: {r.status_code} {r.text[:200]}")
        check(wait_status(u, j2, ("cancelled", "failed", "done")) == "cancelled", "not cancelled")
        with requests.get(u + f"/api/jobs/{j2}/events", stream=True, timeout=60) as resp:
            evs = [(k, d) for _, k, d in sse_events(resp, limit_s=60)]
        check(any(k == "interrupted" for k, _ in evs), "no interrupted run event on cancel")
        check(evs and evs[-1][0] == "job" and evs[-1][1]["status"] == "cancelled" and
              evs[-1][1]["job"] == j2 and "stopped on request" in evs[-1][1].get("message", ""),
              f"last event {evs[-1:]}")
        ck = os.path.join(work, "jobs", j2, "out", "checkpoints")
        check(os.path.isdir(ck) and os.listdir(ck), "cancel left no checkpoint")
        # SIGTERM while a job runs: it checkpoints and is interrupted; resumed after a restart,
        # it continues from the checkpoint with the losses of an uninterrupted run
        r = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL,
                                                 "options": RESUME_OPTS})
        j3 = r.json()["id"]
        with requests.get(u + f"/api/jobs/{j3}/events", stream=True, timeout=120) as resp:
            list(sse_events(resp, stop=lambda k, d: k == "step" and d["step"] >= 20, limit_s=120))
    finally:
        rc, out, err = srv.stop(signal.SIGTERM)
    check(rc == 0, f"SIGTERM exit {rc}: {err[-500:]}")
    with open(os.path.join(work, "jobs", j3, "job.json")) as f:
        j3rec = json.load(f)
    check(j3rec["status"] == "interrupted", f"j3 after SIGTERM: {j3rec['status']}")
    ck = os.path.join(work, "jobs", j3, "out", "checkpoints")
    check(os.path.isdir(ck) and os.listdir(ck), "SIGTERM left no checkpoint")

    srv = Server(work, *ONE_AT_A_TIME)
    u = srv.url
    try:
        r = requests.post(u + f"/api/jobs/{j3}/resume")
        check(r.status_code == 202 and r.json()["status"] == "queued", f"resume: {r.text[:300]}")
        with requests.get(u + f"/api/jobs/{j3}/events", stream=True, timeout=300) as resp:
            evs = [(k, d) for _, k, d in sse_events(resp, limit_s=300)]
        check(evs and evs[-1][1].get("status") == "done", f"resumed job ends with {evs[-1:]}")
        steps = [d for k, d in evs if k == "step"]
        check([d["step"] for d in steps] == list(range(1, RESUME_OPTS["iters"] + 1)),
              "steps of the two sessions are not 1..N once each")
        starts = [d for k, d in evs if k == "start"]
        check(len(starts) == 2 and starts[1]["resumed_from"] >= 20, f"start events {starts}")
        expect = cli_losses(ds_lines(), RESUME_OPTS)
        check([d["loss"] for d in steps] == expect,
              "interrupted + resumed losses differ from an uninterrupted `loratune train` run")
        expect_code = requests.post(u + f"/api/jobs/{j3}/resume").status_code
        check(expect_code == 409, f"resume of a done job: {expect_code}")
    finally:
        rc, _, err = srv.stop()
    check(rc == 0, f"exit {rc}: {err[-500:]}")


def main():
    work = os.path.join(TMP, "work")
    srv = Server(work, *ONE_AT_A_TIME)
    try:
        ds = train_job(srv, work)
    finally:
        rc, _, err = srv.stop()
        check(rc == 0, f"server exit {rc}: {err[-500:]}")
    restart_checks(work, ds)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
