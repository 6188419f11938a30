"""test_serve_tune.py - tune and compare jobs of `loratune serve` (kind "tune" | "compare") through
the REST API and the web interface's Tune and Compare pages, against the real server on a free
loopback port, on stories260K with a few tiny trials:

- bad jobs are 400s naming the field: an unknown kind, an unknown / mistyped "search" key, a
  search on a train job, a compare job without methods or with an unknown / repeated one, a
  compare job whose options set "method"; GET .../study of a train job or an unknown job is 404;
- a tune job (3 trials, a given space) runs to done; its trial events are those of the study;
  every trial's parameters and final validation loss equal those of `loratune tune` run by the
  test with the same options, data and space (bit for bit: the same code, deterministic), and
  GET .../study and the job's result conform to the OpenAPI document;
- a tune job cancelled while a trial runs ends "cancelled"; resumed, it ends "done" with all its
  trials, whose values equal an uninterrupted `loratune tune`'s;
- a server killed (SIGKILL) while a tune job runs takes its child with it (SIGINT by
  PR_SET_PDEATHSIG); restarted, the job is interrupted, and resumed it ends as an uninterrupted
  `loratune tune`;
- a done tune job offers its best trial's adapter (the study's lowest value): adapter.zip
  streamed, unpacked, its PEFT safetensors read by the `safetensors` package equal to the tensors
  the CLI's same trial wrote, adapter_config.json's r = the trial's lora-rank;
- a compare job (lora, qlora; 1 trial each) gives the rows of `loratune compare --json` (best
  validation loss bit for bit); its best = the CLI's lowest row, whose trial's adapter it serves;
  a compare job does not resume (409);
- in headless Chromium (Debian chromium + chromium-driver, Selenium): the Tune page's form starts a
  job, the trials table and the optimization-history chart end with the study's values, and it
  links the best trial's adapter.zip; the
  Compare page's form starts a job, its comparison table and bar chart show the result's rows;
  no console errors; screenshots to BUILD/web-screenshots/.
"""
import fcntl
import json
import os
import signal
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, conforms, sse_events  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
    from safetensors.numpy import load as st_load
    from safetensors.numpy import load_file as st_load_file
    from selenium.webdriver.common.by import By
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

servekit.chromium_or_skip()

SPEC = servekit.load_spec()
TMP = tempfile.mkdtemp(prefix="lt_serve_tune_")
SHOTS = servekit.screenshots_dir(TMP)
MODEL_PATH = os.path.join(servekit.MODELS, servekit.MODEL)
LONG_REF = None
OPTS = {"iters": 8, "eval-batches": 2, "max-seq-len": 96, "threads": 1}
# trials long enough for a cancel / kill to land inside one; under the sanitizers a step is
# ~10x slower, so fewer steps land there as well (and keep the test inside CTest's 900 s)
LONG_ITERS = 60
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
         "lora-rank": {"type": "int", "low": 2, "high": 16, "log": True}}


def cli_args(opts):
    return [f"--{k}={v}" for k, v in opts.items()]


def cli_tune(data, study, trials, opts=OPTS, space=SPACE):
    sp = os.path.join(TMP, "space-%d.json" % len(os.listdir(TMP)))
    with open(sp, "w") as f:
        json.dump(space, f)
    r = ltcheck.run("tune", "--model", MODEL_PATH, "--data", data, "--study", study, "--trials",
                    str(trials), "--space", sp, "--no-track", "--json", *cli_args(opts), timeout=600)
    check(r.returncode == 0, f"loratune tune: {r.stderr[-800:]}")
    with open(os.path.join(study, "study.json")) as f:
        return json.load(f)


def follow(u, jid, limit_s=300):
    evs = []
    with requests.get(f"{u}/api/jobs/{jid}/events", stream=True, timeout=limit_s) as resp:
        for _, kind, d in sse_events(resp, limit_s=limit_s):
            evs.append((kind, d))
    return evs


def bad(u, body, field, what):
    r = requests.post(u + "/api/jobs", json=body, timeout=30)
    msg = r.json().get("error", {}).get("message", "") if r.headers.get("Content-Type", "").startswith("application/json") else ""
    check(r.status_code == 400 and field in msg, f"{what}: {r.status_code} {r.text[:300]}")


def tensors_equal(a, b):
    return sorted(a) == sorted(b) and all(a[k].shape == b[k].shape and (a[k] == b[k]).all() for k in a)


def best_adapter(u, job, want, cli_study):
    """A done tune job offers its best trial's adapter (the lowest value of `loratune tune`'s
    study): adapter.zip streamed, unpacked and read by safetensors (PEFT's format) and json; the
    tensors equal those the CLI's same trial wrote, the config's r is the trial's lora-rank."""
    bt = min(want["trials"], key=lambda t: t["value"] if t.get("value") is not None else float("inf"))
    check(job.get("best", {}).get("trial") == bt["trial"] and job["best"]["value"] == bt["value"]
          and job["best"].get("dir") == "trials/%04d" % bt["trial"],
          f"tune job's best = the study's lowest trial {bt['trial']}: {job.get('best')}")
    check("adapter_model.safetensors" in job.get("files", []) and "adapter_config.json" in job.get("files", []),
          f"tune job files: {job.get('files')}")
    with requests.get(f"{u}/api/jobs/{job['id']}/adapter/adapter.zip", stream=True, timeout=60) as r:
        check(r.status_code == 200 and r.headers.get("Content-Type") == "application/zip",
              f"tune adapter.zip: {r.status_code} {r.headers.get('Content-Type')}")
        zpath = os.path.join(TMP, "tune-best.zip")
        with open(zpath, "wb") as f:
            for chunk in r.iter_content(1 << 16):
                f.write(chunk)
    with zipfile.ZipFile(zpath) as z:
        check(z.testzip() is None and "adapter_model.safetensors" in z.namelist(), f"zip members: {z.namelist()}")
        got = st_load(z.read("adapter_model.safetensors"))
        cfg = json.loads(z.read("adapter_config.json"))
    ref = st_load_file(os.path.join(cli_study, "trials", "%04d" % bt["trial"], "adapter_model.safetensors"))
    check(tensors_equal(got, ref), "best adapter tensors = the CLI's same trial's")
    check(cfg.get("r") == bt["params"]["lora-rank"], f"adapter r {cfg.get('r')} = trial lora-rank {bt['params']}")
    a = [v for k, v in got.items() if "lora_A" in k]
    check(a and all(x.shape[0] == bt["params"]["lora-rank"] for x in a), "lora_A rows = the trial's rank")
    r = requests.get(f"{u}/api/jobs/{job['id']}/adapter/adapter_config.json", timeout=30)
    check(r.status_code == 200 and r.json() == cfg, "single-file download = the zip's member")


def trials_of(study):
    return [(t["trial"], t["state"], t["params"], t.get("value")) for t in study["trials"]]


def main():
    global LONG_ITERS
    if ltcheck.sanitizer_build():
        LONG_ITERS = 12
    srv = Server(os.path.join(TMP, "work"))
    u = srv.url
    try:
        run(u)
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")
    killed()
    print("screenshots:", SHOTS)


def children_of_job(jid):
    """pids of processes whose command line names the job (its `loratune tune` child)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if jid.encode() in f.read():
                        out.append(int(p))
            except OSError:
                pass
    return out


def lock_free(path):
    """True when no process holds the lock on path (the OFD lock loratune takes conflicts with a
    POSIX record lock: try one, without waiting)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def killed():
    """SIGKILL of the server while a tune job runs: its child goes too (it gets SIGINT); after a
    restart the job is interrupted, and resumed it ends as an uninterrupted `loratune tune`."""
    work = os.path.join(TMP, "work-kill")
    srv = Server(work)
    u = srv.url
    with open(os.path.join(TMP, "train.jsonl"), "rb") as f:
        ds = requests.post(u + "/api/datasets?name=train.jsonl", data=f.read(),
                           headers={"Content-Type": "application/octet-stream"}, timeout=60).json()
    opts = {**OPTS, "iters": LONG_ITERS}
    jid = requests.post(u + "/api/jobs", json={"dataset": ds["id"], "model": servekit.MODEL, "kind": "tune",
                                               "options": opts, "search": {"trials": 3, "space": SPACE}},
                        timeout=30).json()["id"]
    t0 = time.time()
    while time.time() - t0 < 120 and requests.get(f"{u}/api/jobs/{jid}", timeout=10).json().get("progress", {}).get("trial") != 1:
        time.sleep(0.05)
    check(children_of_job(jid), "the job's child runs")
    srv.stop(signal.SIGKILL)
    t0 = time.time()
    while children_of_job(jid) and time.time() - t0 < 30:
        time.sleep(0.1)
    check(not children_of_job(jid), "the child ended with its server (SIGKILL)")
    # a process whose memory is being unmapped at exit has no cmdline any more but still holds
    # its files, the study's lock among them: wait for the kernel to drop it
    lock = os.path.join(work, "jobs", jid, "out", ".loratune.lock")
    while not lock_free(lock) and time.time() - t0 < 30:
        time.sleep(0.1)
    check(lock_free(lock), "the study's lock released after the child ended")
    srv = Server(work)
    u = srv.url
    try:
        j = requests.get(f"{u}/api/jobs/{jid}", timeout=10).json()
        check(j["status"] == "interrupted", f"after the restart: {j['status']}")
        r = requests.post(f"{u}/api/jobs/{jid}/resume", timeout=10)
        check(r.status_code == 202, f"resume after SIGKILL: {r.status_code} {r.text[:200]}")
        evs = follow(u, jid)
        check(evs[-1][1].get("status") == "done", f"resumed after SIGKILL: {evs[-1:]}")
        st = requests.get(f"{u}/api/jobs/{jid}/study", timeout=10).json()["studies"][0]["study"]
        want = LONG_REF or cli_tune(os.path.join(TMP, "train.jsonl"), os.path.join(TMP, "cli-tune-long2"), 3, opts=opts)
        check(trials_of(st) == trials_of(want), f"killed + resumed = uninterrupted: {trials_of(st)} vs {trials_of(want)}")
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


def run(u):
    lines = servekit.wikisql_lines(200)
    data = os.path.join(TMP, "train.jsonl")
    with open(data, "w") as f:
        f.writelines(lines)
    with open(data, "rb") as f:
        ds = requests.post(u + "/api/datasets?name=train.jsonl", data=f.read(),
                           headers={"Content-Type": "application/octet-stream"}, timeout=60).json()
    check(ds["validation"]["ok"], f"dataset valid: {ds}")
    base = {"dataset": ds["id"], "model": servekit.MODEL, "options": OPTS}

    # ---- bad input
    bad(u, {**base, "kind": "search"}, "kind", "unknown kind")
    bad(u, {**base, "kind": "tune", "search": {"trails": 3}}, "trails", "unknown search key")
    bad(u, {**base, "kind": "tune", "search": {"trials": 0}}, "trials", "0 trials")
    bad(u, {**base, "kind": "tune", "search": {"trials": "3"}}, "trials", "trials as a string")
    bad(u, {**base, "kind": "tune", "search": {"sampler": "tpe"}}, "sampler", "sampler tpe")
    bad(u, {**base, "kind": "tune", "search": {"space": []}}, "space", "space not an object")
    bad(u, {**base, "kind": "tune", "search": {"time-budget": "soon"}}, "time-budget", "bad duration")
    bad(u, {**base, "kind": "tune", "search": []}, "search", "search not an object")
    bad(u, {**base, "search": {"trials": 3}}, "search", "search on a train job")
    bad(u, {**base, "kind": "compare", "search": {"trials": 1}}, "methods", "compare without methods")
    bad(u, {**base, "kind": "compare", "search": {"methods": ["lora", "lorax"]}}, "methods[1]", "unknown method")
    bad(u, {**base, "kind": "compare", "search": {"methods": ["lora", "lora"]}}, "twice", "repeated method")
    bad(u, {**base, "kind": "compare", "options": {**OPTS, "method": "dora"}, "search": {"methods": ["lora"]}},
        "method", "compare with options.method")
    bad(u, {**base, "kind": "tune", "options": {"lora-rnk": 4}}, "lora-rnk", "unknown option in a tune job")
    r = requests.get(u + "/api/jobs/job_0123456789abcdef/study", timeout=10)
    check(r.status_code == 404, f"study of an unknown job: {r.status_code}")

    # ---- a tune job = loratune tune
    r = requests.post(u + "/api/jobs", json={**base, "kind": "tune", "name": "api tune",
                                              "search": {"trials": 3, "space": SPACE}}, timeout=30)
    check(r.status_code == 201, f"tune job: {r.status_code} {r.text[:300]}")
    conforms(SPEC, "Job", r.json(), "POST /api/jobs (tune)")
    jid = r.json()["id"]
    evs = follow(u, jid)
    check(evs and evs[-1] == ("job", {"event": "job", "job": jid, "status": "done"}), f"tune job ends done: {evs[-1:]}")
    job = requests.get(f"{u}/api/jobs/{jid}", timeout=10).json()
    conforms(SPEC, "Job", job, "GET /api/jobs/{id} (tune)")
    st = requests.get(f"{u}/api/jobs/{jid}/study", timeout=10).json()
    conforms(SPEC, "JobStudy", st, "GET /api/jobs/{id}/study (tune)")
    want = cli_tune(data, os.path.join(TMP, "cli-tune"), 3)
    got = st["studies"][0]["study"]
    check(trials_of(got) == trials_of(want),
          f"tune job trials = loratune tune's: {trials_of(got)} vs {trials_of(want)}")
    done_evs = [(d["trial"], d["value"]) for k, d in evs if k == "trial" and d["state"] == "complete"]
    check(done_evs == [(t["trial"], t["value"]) for t in want["trials"]], f"trial events: {done_evs}")
    check(all("info" in t and t["info"]["value"] == t["value"] for t in got["trials"]), "each trial's trial.json")
    best = min(t["value"] for t in want["trials"])
    check(job["result"]["best"]["value"] == best and job["result"]["complete"] == 3,
          f"tune result: {json.dumps(job['result'])[:300]}")
    check(TMP not in json.dumps(job) and TMP not in json.dumps(st), "no server path in the job or study")
    best_adapter(u, job, want, os.path.join(TMP, "cli-tune"))
    r = requests.get(u + "/api/runs", timeout=10).json()
    check(any(x.get("run_id", x.get("id")) == job.get("run_id") for x in r.get("runs", [])),
          f"the study's parent run {job.get('run_id')} is in the store")

    # ---- cancel while a trial runs, then resume = an uninterrupted run
    long_opts = {**OPTS, "iters": LONG_ITERS}
    r = requests.post(u + "/api/jobs", json={**base, "kind": "tune", "options": long_opts,
                                              "search": {"trials": 3, "space": SPACE}}, timeout=30)
    cid = r.json()["id"]
    t0 = time.time()
    while time.time() - t0 < 120:
        j = requests.get(f"{u}/api/jobs/{cid}", timeout=10).json()
        if j.get("progress", {}).get("trial") == 1:
            break
        time.sleep(0.05)
    r = requests.post(f"{u}/api/jobs/{cid}/cancel", timeout=10)
    check(r.status_code == 202, f"cancel a running tune job: {r.status_code} {r.text[:200]}")
    evs = follow(u, cid)
    check(evs[-1][1].get("status") == "cancelled", f"cancelled: {evs[-1:]}")
    r = requests.post(f"{u}/api/jobs/{cid}/resume", timeout=10)
    check(r.status_code == 202, f"resume a tune job: {r.status_code} {r.text[:200]}")
    evs = follow(u, cid)
    check(evs[-1][1].get("status") == "done", f"resumed job done: {evs[-1:]}")
    st = requests.get(f"{u}/api/jobs/{cid}/study", timeout=10).json()["studies"][0]["study"]
    want = cli_tune(data, os.path.join(TMP, "cli-tune-long"), 3, opts=long_opts)
    global LONG_REF
    LONG_REF = want
    check(trials_of(st) == trials_of(want), f"cancelled + resumed = uninterrupted: {trials_of(st)} vs {trials_of(want)}")

    # ---- compare = loratune compare --json
    r = requests.post(u + "/api/jobs", json={**base, "kind": "compare",
                                              "search": {"trials": 1, "methods": ["lora", "qlora"]}}, timeout=30)
    check(r.status_code == 201, f"compare job: {r.status_code} {r.text[:300]}")
    mid = r.json()["id"]
    evs = follow(u, mid)
    check(evs[-1][1].get("status") == "done", f"compare done: {evs[-1:]}")
    job = requests.get(f"{u}/api/jobs/{mid}", timeout=10).json()
    conforms(SPEC, "Job", job, "GET /api/jobs/{id} (compare)")
    st = requests.get(f"{u}/api/jobs/{mid}/study", timeout=10).json()
    conforms(SPEC, "JobStudy", st, "GET /api/jobs/{id}/study (compare)")
    check([s["method"] for s in st["studies"]] == ["lora", "qlora"], "one study per method")
    rr = ltcheck.run("compare", "--model", MODEL_PATH, "--data", data, "--study", os.path.join(TMP, "cli-cmp"),
                     "--methods", "lora,qlora", "--trials-per-method", "1", "--no-track", "--json",
                     *cli_args(OPTS), timeout=600)
    check(rr.returncode == 0, f"loratune compare: {rr.stderr[-500:]}")
    want = json.loads(rr.stdout.strip().splitlines()[-1])
    key = lambda rows: [(m["method"], m["complete"], m["best_val_loss"], m.get("trainable_params")) for m in rows]  # noqa: E731
    check(key(job["result"]["methods"]) == key(want["methods"]),
          f"compare rows = loratune compare's: {key(job['result']['methods'])} vs {key(want['methods'])}")
    rows = [m for m in want["methods"] if m["best_val_loss"] is not None]
    wm = min(rows, key=lambda m: m["best_val_loss"])
    check(job.get("best", {}).get("method") == wm["method"] and job["best"]["value"] == wm["best_val_loss"]
          and job["best"]["trial"] == wm["best_trial"],
          f"compare job's best = loratune compare's lowest row {wm['method']} #{wm['best_trial']}: {job.get('best')}")
    r = requests.get(f"{u}/api/jobs/{mid}/adapter/adapter_model.safetensors", timeout=30)
    ref = os.path.join(TMP, "cli-cmp", wm["method"], "trials", "%04d" % wm["best_trial"], "adapter_model.safetensors")
    check(r.status_code == 200 and tensors_equal(st_load(r.content), st_load_file(ref)),
          f"compare's best adapter = loratune compare's {wm['method']} trial: {r.status_code}")
    r = requests.post(f"{u}/api/jobs/{mid}/resume", timeout=10)
    check(r.status_code == 409, f"a compare job does not resume: {r.status_code}")
    train = requests.post(u + "/api/jobs", json={**base, "options": {**OPTS, "iters": 2}}, timeout=30).json()
    r = requests.get(f"{u}/api/jobs/{train['id']}/study", timeout=10)
    check(r.status_code == 404 and "train job" in r.text, f"study of a train job: {r.status_code} {r.text[:200]}")
    follow(u, train["id"])

    browser_pages(u, ds["id"], data)


def wait(d, cond, what, limit=180):
    return servekit.wait_for(d, cond, what, limit)


from selenium.webdriver.support.ui import Select  # noqa: E402


def browser():
    return servekit.browser()


def fill(d, fid, value):
    f = d.find_element(By.ID, fid)
    f.clear()
    f.send_keys(str(value))


def browser_pages(u, ds_id, data):
    d = browser()
    try:
        # ---- Tune: the form starts a job; the table and the history chart end with its study
        d.get(f"{u}/tune?dataset={ds_id}")
        wait(d, lambda: d.find_elements(By.ID, "hpo-space"), "the Tune form", 30)
        unlabeled = d.execute_script(
            "return [...document.querySelectorAll('main input, main select, main textarea')]"
            ".filter((e) => !e.labels || !e.labels.length).map((e) => e.id)")
        check(not unlabeled, f"Tune form fields without a label: {unlabeled}")
        Select(d.find_element(By.ID, "dataset")).select_by_value(ds_id)
        fill(d, "hpo-trials", 3)
        for k, v in OPTS.items():
            fill(d, "opt-" + k, v)
        sp = d.find_element(By.ID, "hpo-space")
        sp.clear()
        sp.send_keys(json.dumps(SPACE))
        d.save_screenshot(os.path.join(SHOTS, "tune-form.png"))
        d.find_element(By.ID, "start").click()
        wait(d, lambda: "job=" in d.current_url, "the tune job's view", 30)
        jid = d.current_url.split("job=")[1]
        wait(d, lambda: d.find_element(By.ID, "job-status").text == "done", "the tune job done", 300)
        wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "#trials-table tbody tr")) == 3 and
             d.find_elements(By.ID, "best"), "3 trial rows and the best trial", 30)
        study = requests.get(f"{u}/api/jobs/{jid}/study", timeout=10).json()["studies"][0]["study"]
        want = cli_tune(data, os.path.join(TMP, "cli-tune-page"), 3)
        check(trials_of(study) == trials_of(want), "the page's tune job = loratune tune")
        pts = d.execute_script("return lt.charts.history.data.datasets[0].data")
        check([(p["x"], p["y"]) for p in pts] == [(t["trial"], t["value"]) for t in want["trials"]],
              f"optimization history points = the study's values: {pts}")
        bestline = d.execute_script("return lt.charts.history.data.datasets[1].data.map((p) => p.y)")
        vals = [t["value"] for t in want["trials"]]
        check(bestline == [min(vals[:i + 1]) for i in range(len(vals))], f"best-so-far line: {bestline}")
        inter = d.execute_script("return lt.charts.intermediate.data.datasets.length")
        check(inter == 3, f"intermediate values: one line per trial ({inter})")
        shown = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#trials-table tbody td.value")]
        check(len(shown) == 3 and all(s for s in shown), f"values in the table: {shown}")
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#best-download a.zip"), "the best adapter's link", 30)
        href = d.execute_script("const a = document.querySelector('#best-download a.zip'); return a ? a.href : ''")
        check(href == f"{u}/api/jobs/{jid}/adapter/adapter.zip", f"the best adapter's link: {href}")
        d.save_screenshot(os.path.join(SHOTS, "tune.png"))
        errs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        check(not errs, f"Tune: console errors {errs[:3]}")

        # ---- Compare: methods lora + qlora, one trial each
        d.get(f"{u}/compare?dataset={ds_id}")
        wait(d, lambda: d.find_elements(By.ID, "hpo-m-lora"), "the Compare form", 30)
        fill(d, "hpo-trials", 1)
        for k, v in OPTS.items():
            fill(d, "opt-" + k, v)
        check(d.find_element(By.ID, "hpo-m-lora").is_selected() and d.find_element(By.ID, "hpo-m-qlora").is_selected(),
              "lora and qlora ticked by default")
        d.find_element(By.ID, "start").click()
        wait(d, lambda: "job=" in d.current_url, "the compare job's view", 30)
        mid = d.current_url.split("job=")[1]
        wait(d, lambda: d.find_element(By.ID, "job-status").text == "done", "the compare job done", 300)
        wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")) == 2, "the comparison table", 30)
        res = requests.get(f"{u}/api/jobs/{mid}", timeout=10).json()["result"]
        rows = [[c.text for c in tr.find_elements(By.TAG_NAME, "td")]
                for tr in d.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")]
        check([r[0] for r in rows] == ["lora", "qlora"], f"comparison rows: {rows}")
        bars = d.execute_script("return [lt.charts.cmpLoss.data.labels, lt.charts.cmpLoss.data.datasets[0].data]")
        check(bars == [["lora", "qlora"], [m["best_val_loss"] for m in res["methods"]]], f"loss bars = the result: {bars}")
        for r, m in zip(rows, res["methods"]):
            check(abs(float(r[2]) - m["best_val_loss"]) < 1e-4, f"{m['method']}: table {r[2]} vs {m['best_val_loss']}")
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(os.path.join(SHOTS, "compare.png"))
        errs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        check(not errs, f"Compare: console errors {errs[:3]}")

        # ---- the queue links each job to its page
        d.get(f"{u}/queue")
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] a"), "the queue", 30)
        href = d.find_element(By.CSS_SELECTOR, f"tr[data-job='{jid}'] a").get_attribute("href")
        check(href.endswith(f"/tune?job={jid}"), f"queue links a tune job to /tune: {href}")
        d.set_window_size(390, 844)
        for page in (f"/tune?job={jid}", f"/compare?job={mid}"):
            d.get(u + page)
            wait(d, lambda: d.find_elements(By.ID, "trials-table"), page, 30)
            w = d.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
            check(w[0] <= w[1], f"{page}: no horizontal scroll at 390 px: {w}")
            d.save_screenshot(os.path.join(SHOTS, "phone-" + page.split("?")[0].strip("/") + ".png"))
    finally:
        d.quit()


if __name__ == "__main__":
    main()
    sys.exit(ltcheck.finish())
