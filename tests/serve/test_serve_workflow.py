"""test_serve_workflow.py - the whole workflow of issue 16's "done when", in a browser, on the real
SmolLM2-135M-Instruct (Q4_1 GGUF): `loratune serve --model SMOL --models DIR` started as the README
says, then headless Chromium (Selenium) does data -> train -> watch -> try -> download:

- Data: the file is uploaded through the page's file input and shown valid (its example count);
- Train: the form (model smol.gguf, 3 steps, rank 8) starts the job; the job view follows it to
  done, showing an ETA while it runs (0s at the end); its loss, tokens/s and memory charts'
  points equal the job's SSE step events (read with requests);
- Playground: "Serve its adapter" loads the finished job's adapter (POST /v1/adapters {job});
  one greedy message (temperature 0, 16 tokens) is answered by the base (Model A) and the
  fine-tuned adapter (Model B) side by side, each equal to `loratune generate --chat Q --temp 0`
  without / with `--adapter WORK/jobs/ID/out` (an independent path);
- Models: the page's adapter.zip link gives a valid zip whose adapter_model.safetensors equals the
  single-file download, and the merged model button makes the merged model and links it;
- no console errors; screenshots workflow-*.png.
Skipped (77) without the SmolLM2 GGUF, Selenium or Chromium.
"""
import io
import os
import re
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
import oaikit  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

SMOL = oaikit.SMOL
if not os.path.exists(SMOL):
    print(f"skipped: {SMOL} missing (tools/fetch_smollm2.sh)")
    sys.exit(77)
TMP = tempfile.mkdtemp(prefix="lt_serve_workflow_")
Q = "Write a SQL query that counts the rows of table t."
N = 16
PANES = """return ['left', 'right'].map((s) => {
  const log = document.getElementById('play-log-' + s);
  const a = log.querySelectorAll('.msg.assistant');
  const last = a.length ? a[a.length - 1] : null;
  return [last ? last.querySelector('.text').textContent : null, log.dataset.done === '1'];
});"""


def set_field(d, fid, value):
    f = d.find_element("id", fid)
    f.clear()
    f.send_keys(str(value))


def run(u, work, d):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    shots = servekit.screenshots_dir(TMP)
    wait = servekit.wait_for

    # ---- data
    path = os.path.join(TMP, "sql.jsonl")
    lines = servekit.wikisql_lines(24)
    open(path, "w").write("".join(lines))
    d.get(u + "/data")
    wait(d, lambda: d.find_elements(By.ID, "file"), "the Data page")
    d.find_element(By.ID, "file").send_keys(path)
    d.find_element(By.ID, "upload").click()
    ok = wait(d, lambda: d.find_elements(By.ID, "valid-ok"), "the dataset shown valid")
    nums = [int(x) for x in re.findall(r"(\d+) (?:training|validation) examples", ok[0].text)] if ok else []
    check(sum(nums) == len(lines), f"valid with {nums} examples for {len(lines)} lines")
    ds = [x for x in requests.get(u + "/api/datasets").json()["datasets"] if x["name"] == "sql.jsonl"]
    check(len(ds) == 1, "the upload is listed")
    d.save_screenshot(os.path.join(shots, "workflow-data.png"))

    # ---- train and watch
    d.get(u + f"/train?dataset={ds[0]['id']}")
    wait(d, lambda: d.find_elements(By.ID, "start"), "the Train form")
    Select(d.find_element(By.ID, "model")).select_by_value("smol.gguf")
    d.find_element(By.CSS_SELECTOR, "details > summary").click()
    for k, v in {"iters": 3, "batch-size": 1, "max-seq-len": 48, "lora-rank": 8, "lr": "1e-2",
                 "eval-every": 0, "threads": 2, "seed": 4}.items():
        set_field(d, "opt-" + k, v)
    d.find_element(By.ID, "start").click()
    wait(d, lambda: "job=" in d.current_url and d.find_elements(By.ID, "chart-loss"), "the job view")
    jid = d.current_url.split("job=")[1]
    etas, st, t0 = [], None, time.time()
    while time.time() - t0 < 600:  # watch: the ETA shown while it runs
        st, eta = d.execute_script("return [document.getElementById('job-status').textContent,"
                                   " document.getElementById('job-eta').textContent]")
        if st in ("done", "failed"):
            break
        if eta and (not etas or etas[-1] != eta):
            etas.append(eta)
        time.sleep(0.05)
    check(etas and d.find_element(By.ID, "job-eta").text == "0s", f"ETA shown while running {etas}, then 0s")
    check(st == "done", f"job {jid}: {st} {d.find_element(By.ID, 'job-log').text[:400]}")
    if st != "done":
        return
    time.sleep(0.3)
    pts = d.execute_script("return lt.charts.loss.data.datasets[0].data")
    with requests.get(u + f"/api/jobs/{jid}/events", stream=True, timeout=60) as r:
        evs = [data for _, kind, data in servekit.sse_events(r) if kind != "job"]
    steps = [e for e in evs if e["event"] == "step"]
    check([p["x"] for p in pts] == [1, 2, 3] and [p["y"] for p in pts] == [e["loss"] for e in steps],
          f"loss chart {pts} vs the events {[(e['step'], e['loss']) for e in steps]}")
    tps = d.execute_script("return lt.charts.tps.data.datasets[0].data.map((p) => p.y)")
    mem = d.execute_script("return lt.charts.mem.data.datasets[0].data.map((p) => p.y)")
    check(tps == [e["tokens_per_sec"] for e in steps] and mem == [e["peak_rss_bytes"] / 1048576 for e in steps],
          f"tokens/s {tps} and memory {mem} charts = the events'")
    d.save_screenshot(os.path.join(shots, "workflow-train.png"))

    # ---- try: base vs the fine-tuned adapter, side by side
    want_base = oaikit.generate("--chat", Q, "--max-tokens", str(N))
    want_ft = oaikit.generate("--chat", Q, "--max-tokens", str(N), "--adapter", os.path.join(work, "jobs", jid, "out"))
    check(want_ft != want_base, "the 3 training steps change the greedy answer: the comparison means something")
    d.get(u + "/playground")
    wait(d, lambda: d.find_elements(By.ID, "play-load"), "the Playground's job adapter loader")
    Select(d.find_element(By.ID, "play-job")).select_by_value(jid)
    d.find_element(By.ID, "play-load").click()
    wait(d, lambda: "loaded" in d.find_element(By.ID, "play-msg").text, "the adapter loaded")
    check(Select(d.find_element(By.ID, "play-model-right")).first_selected_option.get_attribute("value") == jid,
          "Model B is the job's adapter")
    set_field(d, "play-temperature", 0)
    set_field(d, "play-max-tokens", N)
    set_field(d, "play-input", Q)
    d.find_element(By.ID, "play-send").click()
    got = wait(d, lambda: (lambda s: s if s[0][1] and s[1][1] else None)(d.execute_script(PANES)),
               "both answers", limit=300)
    if got:
        check(got[0][0] == want_base, f"base answer {got[0][0]!r} != loratune generate {want_base!r}")
        check(got[1][0] == want_ft, f"fine-tuned answer {got[1][0]!r} != loratune generate --adapter {want_ft!r}")
    d.save_screenshot(os.path.join(shots, "workflow-playground.png"))
    servekit.console_errors(d, "workflow up to the Playground")

    # ---- download
    d.get(u + "/models")
    a = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] a.zip"), "the adapter.zip link")
    if a:
        z = zipfile.ZipFile(io.BytesIO(requests.get(a[0].get_attribute("href")).content))
        check(z.testzip() is None, "adapter.zip is intact")
        single = requests.get(u + f"/api/jobs/{jid}/adapter/adapter_model.safetensors").content
        check(z.read("adapter_model.safetensors") == single, "adapter.zip's safetensors = the single file")
    b = d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] button.merged")
    if b:
        b[0].click()
        m = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] a.merged-link"),
                 "the merged model made", limit=600)
        if m:
            info = requests.post(u + f"/api/jobs/{jid}/merged?format=hf&dtype=f32").json()
            check(info["state"] == "ready" and info["size"] > 100 << 20, f"merged: {info}")
    d.save_screenshot(os.path.join(shots, "workflow-models.png"))
    servekit.console_errors(d, "Models page")


def main():
    servekit.chromium_or_skip()
    work, models = os.path.join(TMP, "work"), os.path.join(TMP, "models")
    os.makedirs(models)
    os.symlink(SMOL, os.path.join(models, "smol.gguf"))
    srv = servekit.Server(work, "--model", SMOL, "--models", models, "--threads", "1")
    d = None
    try:
        requests.get(srv.url + "/ready", timeout=5)
        t0 = time.time()
        while requests.get(srv.url + "/ready", timeout=5).status_code != 200 and time.time() - t0 < 300:
            time.sleep(0.5)
        d = servekit.browser()
        run(srv.url, work, d)
    finally:
        if d:
            d.quit()
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
