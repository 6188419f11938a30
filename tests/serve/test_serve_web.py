"""test_serve_web.py - the web interface of `loratune serve` in a real browser: headless Chromium
(Debian chromium + chromium-driver) driven by Selenium, against the real server started on a free
loopback port in a temp work folder.

- the pages and assets are served byte for byte as in web/ (Chart.js as Debian ships it), with a
  Content-Security-Policy, and only to loopback Host names when there is no token;
- POST /api/plan equals `loratune plan --json` (LoRA, full, QLoRA: peak, bytes by category,
  trainable parameters), conforms to the document's Plan schema, and refuses bad input;
- the pages load with no browser console error (the Content-Security-Policy allows what they
  use: Chart.js and the script are served by the server itself, nothing from elsewhere);
- Data: a JSONL file whose line 4 is broken JSON is uploaded through the file input; the page
  shows the error with line 4 (the line Python's json module rejects) and marks line 4 in the
  preview; a valid file shows as valid with its example count (= the file's line count);
- Train: the form is built from GET /api/options (every input has a label); its memory estimate
  (POST /api/plan) equals `loratune plan --json`'s peak for the same options, and a bad value
  shows the plan's error there; a 10-step LoRA job
  on stories260K is started from it; the loss chart grows while the job runs (several redraws
  with more points each) and ends with steps 1..10 whose losses equal those of the job's event
  stream read with requests; the learning-rate chart equals the events' lr;
- the adapter is downloaded by clicking the page's link: a valid zip holding
  adapter_model.safetensors (bytes equal to the single-file download, loadable by safetensors,
  lora rank as set in the form) and adapter_config.json (PEFT config, r as set);
- Queue / Runs / Models pages list the job, its run's curve (10 points) and the adapter;
- a server with --token: the page asks for the token on the API's 401, refuses a wrong one with
  the server's message, works with the right one;
- keyboard: Tab from the top reaches the skip link and then the page links in order;
- screenshots of every page (laptop and phone widths) go to BUILD/web-screenshots/.
"""
import json
import os
import re
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, conforms, sse_events  # noqa: E402

SPEC = servekit.load_spec()

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
    from safetensors.numpy import load as st_load
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

servekit.chromium_or_skip()

TMP = tempfile.mkdtemp(prefix="lt_serve_web_")
DOWNLOADS = os.path.join(TMP, "downloads")
os.makedirs(DOWNLOADS)
SHOTS = servekit.screenshots_dir(TMP)


def browser():
    return servekit.browser(DOWNLOADS)


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def console_errors(d, what):
    servekit.console_errors(d, what)


def wait(d, cond, what, limit=60):
    return servekit.wait_for(d, cond, what, limit)


def write(path, lines):
    with open(path, "w") as f:
        f.writelines(lines)


def main():
    work = os.path.join(TMP, "work")
    # --memory-budget 1: every job is larger than it, so jobs run one at a time (the blocker
    # below keeps the form's job queued)
    srv = Server(work, "--memory-budget", "1")
    u = srv.url
    d = browser()
    try:
        run(d, u)
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")
    tsrv = Server(os.path.join(TMP, "work-token"), "--token", "s3cret-web-token")
    try:
        run_token(d, tsrv.url)
    finally:
        d.quit()
        code, _, err = tsrv.stop()
        check(code == 0, f"token server exit code {code}: {err[-1000:]}")
    print("screenshots:", SHOTS)


def run(d, u):
    # ---- the files as served: compiled in, byte for byte, with their headers
    for path, src in (("/app.js", os.path.join(ltcheck.SOURCE_DIR, "web", "app.js")),
                      ("/app.css", os.path.join(ltcheck.SOURCE_DIR, "web", "app.css")),
                      ("/chart.min.js", "/usr/share/javascript/chart.js/chart.min.js")):
        r = requests.get(u + path)
        with open(src, "rb") as f:
            check(r.status_code == 200 and r.content == f.read(), f"{path} = {src}")
    for page in ("/", "/data", "/train", "/queue", "/tune", "/compare", "/runs", "/models", "/playground",
                 "/deployments"):
        r = requests.get(u + page)
        with open(os.path.join(ltcheck.SOURCE_DIR, "web", "index.html"), "rb") as f:
            check(r.status_code == 200 and r.content == f.read(), f"{page} serves index.html")
        check(r.headers.get("Content-Type", "").startswith("text/html"), f"{page} content type")
        csp = r.headers.get("Content-Security-Policy", "")
        check("script-src 'self'" in csp and "default-src 'none'" in csp, f"{page} CSP: {csp!r}")
    r = requests.get(u + "/", headers={"Host": "evil.example"})
    check(r.status_code == 403, f"a page through a rebinding Host: {r.status_code}")
    r = requests.get(u + "/index.html/..%2f..%2fetc%2fpasswd")
    check(r.status_code == 404, f"traversal through a page path: {r.status_code}")

    # ---- POST /api/plan (the form's estimate) against `loratune plan`, and its bad input
    for method in ("lora", "full", "qlora"):
        cli = ltcheck.run("plan", "--model", os.path.join(servekit.MODELS, servekit.MODEL),
                          "--method", method, "--batch-size", "3", "--max-seq-len", "40",
                          "--lora-rank", "2", "--json")
        r = requests.post(u + "/api/plan", json={"model": servekit.MODEL, "options": {
            "method": method, "batch-size": 3, "max-seq-len": 40, "lora-rank": 2}})
        check(r.status_code == 200 and cli.returncode == 0, f"plan {method}: {r.text[:300]}")
        if r.status_code == 200 and cli.returncode == 0:
            got, want = r.json(), json.loads(cli.stdout)
            conforms(SPEC, "Plan", got, f"plan {method}")
            for k in ("peak_bytes", "steady_bytes", "n_trainable", "bytes", "batch_size",
                      "seq_len", "compute_dtype"):
                check(got[k] == want[k], f"plan {method} {k}: {got[k]} vs loratune plan {want[k]}")
    r = requests.post(u + "/api/plan", json={"model": servekit.MODEL})
    check(r.status_code == 200 and r.json()["auto_batch_size"] and r.json()["notes"]
          and r.json()["peak_bytes"] <= r.json()["budget_bytes"],
          f"plan with automatic sizes: {r.text[:300]}")
    for body, status, what in (
            ({"model": "nothing.gguf"}, 404, "unknown model"),
            ({"model": "../etc/passwd"}, 400, "model path"),
            ({"model": servekit.MODEL, "options": {"lora-rank": 0}}, 400, "bad option value"),
            ({"model": servekit.MODEL, "options": {"nope": 1}}, 400, "unknown option"),
            ({"model": servekit.MODEL, "options": {"data": "/etc/passwd"}}, 400, "path option"),
            ({"model": servekit.MODEL, "extra": 1}, 400, "unknown key"),
            ({}, 400, "no model")):
        r = requests.post(u + "/api/plan", json=body)
        check(r.status_code == status and "error" in r.json(),
              f"plan {what}: {r.status_code} {r.text[:200]}")
    r = requests.post(u + "/api/plan", data="model=x",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    check(r.status_code == 415, f"plan as a form post: {r.status_code}")
    r = requests.post(u + "/api/plan", json={"model": servekit.MODEL},
                      headers={"Origin": "http://evil.example"})
    check(r.status_code == 403, f"plan cross-origin: {r.status_code}")

    # ---- the first page and keyboard order
    d.get(u + "/")
    wait(d, lambda: d.find_elements(By.ID, "file"), "the Data page")
    check(d.title.startswith("loratune"), f"title {d.title!r}")
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    order = []
    for _ in range(10):
        a = d.switch_to.active_element
        order.append(a.text)
        a.send_keys(Keys.TAB)
    check(order == ["Skip to content", "Data", "Train", "Queue", "Tune", "Compare", "Runs", "Models",
                    "Deployments", "Playground"],
          f"focus order from the top: {order}")
    console_errors(d, "/")

    # ---- Data: a broken line 4
    lines = servekit.wikisql_lines(40)
    broken = list(lines[:8])
    broken[3] = broken[3].rstrip("\n")[:-7] + "\n"  # cut off the end of the 4th record
    bad = None
    for i, line in enumerate(broken, 1):
        try:
            json.loads(line)
        except ValueError:
            bad = i
            break
    check(bad == 4, f"the broken file's first bad line (json module): {bad}")
    path = os.path.join(TMP, "broken.jsonl")
    write(path, broken)
    d.find_element(By.ID, "file").send_keys(path)
    d.find_element(By.ID, "upload").click()
    errs = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, ".validation-error"),
                "the validation error")
    if errs:
        check(errs[0].get_attribute("data-line") == "4",
              f"error's line: {errs[0].get_attribute('data-line')!r}")
        check(errs[0].text.startswith("Line 4: "), f"error text: {errs[0].text!r}")
        check("broken.jsonl:4" in errs[0].text, f"error names file:line: {errs[0].text!r}")
        marked = d.find_elements(By.ID, "bad-line")
        check(len(marked) == 1 and marked[0].text.split("\n")[0].strip() == "4",
              f"preview marks line 4: {[m.text[:40] for m in marked]}")
        check(float(d.find_element(By.ID, "upload-progress").get_attribute("value")) == 100,
              "upload progress reached 100")
    shot(d, "data-error")

    good = os.path.join(TMP, "wikisql.jsonl")
    write(good, lines)
    d.find_element(By.ID, "file").send_keys(good)
    d.find_element(By.ID, "upload").click()
    ok = wait(d, lambda: d.find_elements(By.ID, "valid-ok"), "the dataset shown valid")
    if ok:
        nums = [int(x) for x in re.findall(r"(\d+) (?:training|validation) examples", ok[0].text)]
        check(sum(nums) == len(lines), f"examples shown {nums} for a file of {len(lines)} lines: "
              f"{ok[0].text!r}")
    shot(d, "data-ok")
    ds = [x for x in requests.get(u + "/api/datasets").json()["datasets"]
          if x["name"] == "wikisql.jsonl"][0]

    # ---- Train: the form, a 10-step job, the charts
    d.get(u + f"/train?dataset={ds['id']}")
    wait(d, lambda: d.find_elements(By.ID, "start"), "the Train form")
    opts = [o for o in requests.get(u + "/api/options").json()["options"] if not o["server"]]
    missing = [o["name"] for o in opts if not d.find_elements(By.ID, "opt-" + o["name"])]
    check(not missing, f"options without a form field: {missing}")
    unlabeled = d.execute_script(
        "return [...document.querySelectorAll('main input, main select')]"
        ".filter(e => !e.labels || !e.labels.length).map(e => e.id || e.name)")
    check(not unlabeled, f"form fields without a label: {unlabeled}")
    Select(d.find_element(By.ID, "model")).select_by_value(servekit.MODEL)
    check(Select(d.find_element(By.ID, "dataset")).first_selected_option.get_attribute("value")
          == ds["id"], "the dataset of the link is selected")
    d.find_element(By.CSS_SELECTOR, "details > summary").click()
    form = {"iters": "10", "batch-size": "2", "max-seq-len": "48", "lora-rank": "4",
            "lr": "5e-3", "eval-every": "5", "threads": "1", "seed": "3"}
    for k, v in form.items():
        f = d.find_element(By.ID, "opt-" + k)
        f.clear()
        f.send_keys(v)
    # the memory estimate beside the form: `loratune plan`'s peak for the same options
    cli = ltcheck.run("plan", "--model", os.path.join(servekit.MODELS, servekit.MODEL),
                      "--method", "lora", "--batch-size", "2", "--max-seq-len", "48",
                      "--lora-rank", "4", "--json")
    want_peak = str(json.loads(cli.stdout)["peak_bytes"]) if cli.returncode == 0 else None
    check(want_peak, f"loratune plan: {cli.stderr[-300:]}")
    got = wait(d, lambda: d.find_element(By.ID, "plan").get_attribute("data-peak") == want_peak
               and want_peak, "the memory estimate of the form's options")
    check(got == want_peak, f"estimate {d.find_element(By.ID, 'plan').get_attribute('data-peak')}"
          f" vs loratune plan {want_peak}")
    console_errors(d, "train form")
    f = d.find_element(By.ID, "opt-lora-rank")  # a bad value: the plan's error shows there
    f.clear()
    f.send_keys("0")
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#plan .error"), "the estimate's error")
    err = d.find_elements(By.CSS_SELECTOR, "#plan .error")
    check(err and "lora-rank" in err[0].text, f"estimate error: {[e.text for e in err]}")
    f.clear()
    f.send_keys("4")
    wait(d, lambda: d.find_element(By.ID, "plan").get_attribute("data-peak") == want_peak,
         "the estimate back")
    errs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
            and not ("/api/plan" in e["message"] and "status of 400" in e["message"])]
    check(not errs, f"train form: console errors besides the expected 400: {errs[:3]}")
    d.execute_script("document.getElementById('plan').scrollIntoView({block: 'center'})")
    shot(d, "train-form")
    # a long job ahead in the queue keeps the form's job queued until the page follows it, so
    # the chart is seen growing live (10 steps of stories260K take well under a second)
    blocker = requests.post(u + "/api/jobs", json={
        "dataset": ds["id"], "model": servekit.MODEL, "name": "blocker",
        "options": {"iters": 100000, "threads": 1, "max-seq-len": 32}}).json()["id"]
    d.find_element(By.ID, "start").click()
    wait(d, lambda: "job=" in d.current_url and d.find_elements(By.ID, "chart-loss"),
         "the job view")
    jid = d.current_url.split("job=")[1]
    wait(d, lambda: d.find_element(By.ID, "job-status").text == "queued", "the job queued")
    d.get(u + "/queue")
    wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "tr[data-job]")) == 2, "two jobs queued")
    shot(d, "queue-running")
    d.get(u + f"/train?job={jid}")
    wait(d, lambda: d.find_element(By.ID, "job-status").text == "queued", "the job queued")
    time.sleep(0.5)  # the event stream is open
    r = requests.post(u + f"/api/jobs/{blocker}/cancel")
    check(r.status_code == 202, f"cancel the blocker: {r.status_code} {r.text[:200]}")
    st = wait(d, lambda: d.find_element(By.ID, "job-status").text in ("done", "failed") and
              d.find_element(By.ID, "job-status").text, "the job to finish", limit=300)
    check(st == "done", f"job status {st}: {d.find_element(By.ID, 'job-log').text[:500]}")
    time.sleep(0.3)
    drawn = d.execute_script("return lt.drawn")
    pts = d.execute_script("return lt.charts.loss.data.datasets[0].data")
    vpts = d.execute_script("return lt.charts.loss.data.datasets[1].data")
    lrs = d.execute_script("return lt.charts.lr.data.datasets[0].data")
    check(len(drawn) >= 2 and drawn == sorted(drawn) and drawn[-1] == 10 and drawn[0] < 10,
          f"the loss chart grew while the job ran (points at each redraw): {drawn}")
    # the reference: the job's event stream read by an outside client
    with requests.get(u + f"/api/jobs/{jid}/events", stream=True, timeout=60) as r:
        evs = [data for _, kind, data in sse_events(r) if kind != "job"]
    steps = [e for e in evs if e["event"] == "step"]
    evals = [e for e in evs if e["event"] == "eval"]
    check([p["x"] for p in pts] == list(range(1, 11)), f"chart steps {[p['x'] for p in pts]}")
    check([p["y"] for p in pts] == [e["loss"] for e in steps], "chart losses = the events' losses")
    check([p["y"] for p in lrs] == [e["lr"] for e in steps], "chart lr = the events' lr")
    check([(p["x"], p["y"]) for p in vpts] == [(e["step"], e["val_loss"]) for e in evals]
          and len(vpts) >= 1, f"validation loss points {vpts} vs eval events {evals}")
    check(d.find_element(By.ID, "job-step").text == "10 / 10",
          f"step shown {d.find_element(By.ID, 'job-step').text!r}")
    shot(d, "train-live")
    console_errors(d, "train")

    # ---- the adapter, downloaded by the page's link
    d.find_element(By.ID, "download").click()
    want = os.path.join(DOWNLOADS, f"{jid}-adapter.zip")
    wait(d, lambda: os.path.exists(want) and not any(
        n.endswith(".crdownload") for n in os.listdir(DOWNLOADS)), "the adapter download")
    if os.path.exists(want):
        with zipfile.ZipFile(want) as z:
            check(z.testzip() is None, "zip CRCs")
            names = z.namelist()
            for n in ("adapter_model.safetensors", "adapter_config.json", "run_config.yaml"):
                check(n in names, f"{n} in the zip: {names}")
            st_bytes = z.read("adapter_model.safetensors")
            single = requests.get(u + f"/api/jobs/{jid}/adapter/adapter_model.safetensors")
            check(st_bytes == single.content, "zip's safetensors = the single-file download")
            t = st_load(st_bytes)
            a = [v for k, v in t.items() if "lora_A" in k]
            check(a and all(x.shape[0] == 4 for x in a),
                  f"lora_A rank 4 as set in the form: {[x.shape for x in a][:2]}")
            cfg = json.loads(z.read("adapter_config.json"))
            check(cfg.get("r") == 4 and cfg.get("peft_type") == "LORA",
                  f"adapter_config r / peft_type: {cfg.get('r')} {cfg.get('peft_type')}")
    r = requests.get(u + "/api/jobs/job_0000000000000000/adapter/adapter.zip")
    check(r.status_code == 404, f"zip of an unknown job: {r.status_code}")

    # ---- Queue, Runs, Models
    d.get(u + "/queue")
    row = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}']"), "queue row")
    if row:
        check("done" in row[0].text and "10 / 10" in row[0].text, f"queue row: {row[0].text!r}")
    row = d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{blocker}']")
    check(row and "cancelled" in row[0].text, "the blocker shows cancelled")
    shot(d, "queue")
    d.get(u + "/runs")
    n = wait(d, lambda: d.execute_script(
        "const c = lt.charts.runs; return c && c.data.datasets.length && "
        "c.data.datasets[0].data.length"), "the runs chart")
    check(n == 10, f"runs chart: {n} training-loss points")
    shot(d, "runs")
    d.get(u + "/models")
    link = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] a.zip"),
                "the adapter link")
    if link:
        check(link[0].get_attribute("href").endswith(f"/api/jobs/{jid}/adapter/adapter.zip"),
              "Models links the zip")
    shot(d, "models")
    console_errors(d, "queue/runs/models")

    # ---- a phone-sized screen: no horizontal scrolling of the page itself
    d.set_window_size(390, 844)
    for page in ("data", f"train?job={jid}", "queue"):
        d.get(u + "/" + page)
        time.sleep(1.0)
        w = d.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
        check(w[0] <= w[1], f"/{page} on a phone: page {w[0]}px wide in a {w[1]}px window")
        shot(d, "phone-" + page.split("?")[0])


def run_token(d, u):
    """A server with a token: the page loads without it, asks for it on the API's 401, and
    works once it is given (kept for the tab only)."""
    d.set_window_size(1280, 900)
    d.get(u + "/data")
    box = wait(d, lambda: d.find_element(By.ID, "auth").is_displayed() and
               d.find_element(By.ID, "auth"), "the token prompt")
    check(bool(box), "the page asks for the token")
    check(d.switch_to.active_element.get_attribute("id") == "token", "focus on the token field")
    d.get_log("browser")  # the 401s that made it ask are expected
    d.find_element(By.ID, "token").send_keys("wrong")
    d.find_element(By.CSS_SELECTOR, "#auth-form button").click()
    wait(d, lambda: d.find_element(By.ID, "auth").is_displayed() and
         d.find_elements(By.CSS_SELECTOR, "#main .error"), "a wrong token refused")
    err = d.find_elements(By.CSS_SELECTOR, "#main .error")
    check(err and "wrong token" in err[0].text, f"wrong token: {[e.text for e in err]}")
    d.get_log("browser")
    d.find_element(By.ID, "token").clear()
    d.find_element(By.ID, "token").send_keys("s3cret-web-token")
    d.find_element(By.CSS_SELECTOR, "#auth-form button").click()
    ok = wait(d, lambda: "No datasets yet" in d.find_element(By.ID, "datasets").text,
              "the datasets list with the token")
    check(bool(ok) and not d.find_element(By.ID, "auth").is_displayed(), "works with the token")
    check(d.find_element(By.ID, "health").text.startswith("idle"),
          f"health line: {d.find_element(By.ID, 'health').text!r}")
    shot(d, "token")
    console_errors(d, "with the token")


main()
sys.exit(ltcheck.finish())
