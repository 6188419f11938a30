"""test_serve_registry_web.py - the model registry and deployments of `loratune serve` through the
REST API and in a real browser (headless Chromium + chromium-driver, driven by Selenium), against
the real server serving the stories260K fixture (--model) in a temp work folder:

- API: POST /api/registry registers a done train job's run as versions 1, 2 of a name (the
  store's rows, read with Python's sqlite3, hold the job's run and the adapter folder); bad input
  (unknown key, bad name, unknown job, stage not a stage, unknown version / model) is a 400 / 404
  naming the field; every answer conforms to the document's schemas;
- Models page: a finished job is registered from its row (Register), version 1 is set to
  production from the page's stage control, then version 2: the page shows the new stages, and
  the store (sqlite3) has version 2 in production and version 1 archived (archive_others), as
  `loratune models promote` does;
- Deployments page: version 1 deployed from the form (stable), version 2 as a 25% canary: the
  row shows both and the share; 8 requests to `model: sql` through /v1/completions are answered
  by sql.v2 exactly 2 times (the split floor((k+1)/4) > floor(k/4)); "Roll back canary" drops
  it (GET /api/deployments: no canary; the store: version 2 archived); no console errors;
- neither page scrolls sideways on a phone (390 px); screenshots of both (laptop and phone) go
  to BUILD/web-screenshots/.
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server, conforms  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

servekit.chromium_or_skip()

SPEC = servekit.load_spec()
TMP = tempfile.mkdtemp(prefix="lt_serve_registry_")
SHOTS = servekit.screenshots_dir(TMP)
OPTS = {"iters": 4, "batch-size": 2, "max-seq-len": 64, "lora-rank": 4, "threads": 1,
        "eval-every": 0, "seed": 3}


def browser():
    return servekit.browser()


def wait(d, cond, what, limit=60):
    return servekit.wait_for(d, cond, what, limit)


def console_errors(d, what):
    servekit.console_errors(d, what)


def store_stages(work):
    db = sqlite3.connect(os.path.join(work, "store", "store.db"))
    try:
        rows = db.execute("SELECT v.version, v.stage, v.run_id, v.adapter_path FROM model_versions v"
                          " JOIN models m ON m.id = v.model_id WHERE m.name = 'sql'"
                          " ORDER BY v.version").fetchall()
    finally:
        db.close()
    return {v: (stage, run, path) for v, stage, run, path in rows}


def train_job(u, ds):
    r = requests.post(u + "/api/jobs", json={"dataset": ds, "model": servekit.MODEL, "options": OPTS})
    check(r.status_code == 201, f"job: {r.text[:300]}")
    jid = r.json()["id"]
    t0 = time.time()
    while time.time() - t0 < 120:
        j = requests.get(f"{u}/api/jobs/{jid}").json()
        if j["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    check(j["status"] == "done", f"job {jid}: {j.get('status')} {j.get('error')}")
    return j


def text_of(d, css):
    """The text of the first element css selects, None when none (one script call)."""
    return d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)


def stage_cell(d, version):
    """The stage shown for a version (read in one script call: the table is redrawn under us)."""
    return d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                            f"section[data-model='sql'] tr[data-version='{version}'] .stage")


def main():
    work = os.path.join(TMP, "work")
    srv = Server(work, "--model", os.path.join(servekit.MODELS, servekit.MODEL))
    d = None
    try:
        d = browser()
        run(d, srv.url, work)
    finally:
        if d:
            d.quit()
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


def run(d, u, work):
    up = requests.post(u + "/api/datasets?name=sql.jsonl", data="".join(servekit.wikisql_lines(40)),
                       headers={"Content-Type": "application/octet-stream"})
    check(up.status_code == 201, f"upload: {up.text[:300]}")
    ds = up.json()["id"]
    job = train_job(u, ds)

    # ---- the API: empty registry, bad input
    r = requests.get(u + "/api/registry")
    check(r.status_code == 200 and r.json() == {"models": []}, f"empty registry: {r.text[:200]}")
    for body, status, what in (
            ({"job": job["id"], "name": "sql", "x": 1}, 400, "unknown key"),
            ({"job": job["id"], "name": "a/b"}, 400, "name with a slash"),
            ({"job": job["id"], "name": ".hidden"}, 400, "name with a leading dot"),
            ({"job": job["id"]}, 400, "no name"),
            ({"job": 3, "name": "sql"}, 400, "job not a string"),
            ({"job": "job_0123456789abcdef", "name": "sql"}, 404, "unknown job")):
        r = requests.post(u + "/api/registry", json=body)
        check(r.status_code == status and "error" in r.json(), f"register {what}: {r.status_code} {r.text[:200]}")
    r = requests.post(u + "/api/registry/sql/stage", json={"version": 1, "stage": "production"})
    check(r.status_code == 404, f"stage of an unregistered model: {r.status_code} {r.text[:200]}")

    # ---- Models page: register from the job's row
    d.get(u + "/models")
    row = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{job['id']}']"), "the job's row")
    if not row:
        return
    row[0].find_element(By.CSS_SELECTOR, "input.reg-name").send_keys("sql")
    row[0].find_element(By.CSS_SELECTOR, "button.register").click()
    wait(d, lambda: "Registered as sql version 1" in d.execute_script(
        "return document.querySelector(arguments[0]).textContent", f"tr[data-job='{job['id']}']"),
         "the registration message")
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "section[data-model='sql'] tr[data-version='1']"), "version 1 in the registry")
    # version 2 through the API (same run: a second version of the name)
    r = requests.post(u + "/api/registry", json={"job": job["id"], "name": "sql", "description": "SQL"})
    check(r.status_code == 201 and r.json().get("version") == 2, f"register v2: {r.status_code} {r.text[:200]}")
    if r.status_code == 201:
        conforms(SPEC, "RegisteredModel", r.json(), "POST /api/registry")
        check(r.json()["versions"][0]["adapter_path"] == f"WORK/jobs/{job['id']}/out",
              f"adapter path shown as WORK/...: {r.json()['versions'][0]['adapter_path']}")
    rows = store_stages(work)
    check(sorted(rows) == [1, 2] and all(v[1] == job["run_id"] for v in rows.values())
          and all(v[2] == os.path.join(os.path.realpath(work), "jobs", job["id"], "out") for v in rows.values()),
          f"store rows: {rows} (run {job['run_id']})")
    for body, status, what in (({"version": 1, "stage": "prod"}, 400, "not a stage"),
                               ({"version": 0, "stage": "staging"}, 400, "version 0"),
                               ({"version": 9, "stage": "staging"}, 404, "unknown version"),
                               ({"version": 1, "stage": "staging", "x": 1}, 400, "unknown key")):
        r = requests.post(u + "/api/registry/sql/stage", json=body)
        check(r.status_code == status and "error" in r.json(), f"stage {what}: {r.status_code} {r.text[:200]}")

    d.get(u + "/models")
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "section[data-model='sql'] tr[data-version='2']"), "version 2 on the page")
    for v in (1, 2):
        tr = d.find_element(By.CSS_SELECTOR, f"section[data-model='sql'] tr[data-version='{v}']")
        Select(tr.find_element(By.CSS_SELECTOR, "select.stage-select")).select_by_value("production")
        tr.find_element(By.CSS_SELECTOR, "button.set-stage").click()
        wait(d, lambda: stage_cell(d, v) == "production", f"version {v} shown in production")
    wait(d, lambda: stage_cell(d, 1) == "archived", "version 1 shown archived")
    rows = store_stages(work)
    check(rows.get(1, ("?",))[0] == "archived" and rows.get(2, ("?",))[0] == "production",
          f"store stages after promoting 1 then 2: {rows}")
    reg = requests.get(u + "/api/registry").json()
    conforms(SPEC, "RegistryList", reg, "GET /api/registry")
    check(reg["models"][0]["stages"] == {"production": 2, "archived": 1} or
          reg["models"][0]["stages"].get("production") == 2, f"stages: {reg['models'][0].get('stages')}")
    d.save_screenshot(os.path.join(SHOTS, "models-registry.png"))
    console_errors(d, "/models")

    # ---- Deployments page: v1 stable, v2 as a 25% canary, rollback
    t0 = time.time()
    while time.time() - t0 < 60 and requests.get(u + "/ready").status_code != 200:
        time.sleep(0.2)
    d.get(u + "/deployments?model=sql&version=1")
    wait(d, lambda: d.find_elements(By.ID, "deploy"), "the deploy form")
    check(Select(d.find_element(By.ID, "dep-version")).first_selected_option.get_attribute("value") == "1",
          "the version from the link is preselected")
    d.find_element(By.ID, "deploy").click()
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "tr[data-deployment='sql'] td.stable b"), "the deployment row", 120)
    check(text_of(d, "tr[data-deployment='sql'] td.stable b") == "v1", "stable v1 shown")
    Select(d.find_element(By.ID, "dep-version")).select_by_value("2")
    share = d.find_element(By.ID, "dep-canary")
    share.clear()
    share.send_keys("0.25")
    d.find_element(By.ID, "deploy").click()
    wait(d, lambda: text_of(d, "tr[data-deployment='sql'] td.share") == "25%",
         "the canary share shown", 120)
    check(text_of(d, "tr[data-deployment='sql'] td.canary b") == "v2", "canary v2 shown")
    deps = requests.get(u + "/api/deployments").json()
    conforms(SPEC, "DeploymentList", deps, "GET /api/deployments")
    dep = deps["deployments"][0]
    check(dep["stable"]["version"] == 1 and dep["canary"]["version"] == 2 and dep["canary_share"] == 0.25,
          f"deployment: {dep}")
    served = []
    for _ in range(8):
        r = requests.post(u + "/v1/completions", json={"model": "sql", "prompt": "table:", "max_tokens": 1})
        served.append(r.json().get("model") if r.status_code == 200 else r.status_code)
    check(served.count("sql.v2") == 2 and served.count("sql.v1") == 6, f"canary split of 8 requests: {served}")
    d.save_screenshot(os.path.join(SHOTS, "deployments.png"))
    d.find_element(By.CSS_SELECTOR, "tr[data-deployment='sql'] button.rollback").click()
    wait(d, lambda: text_of(d, "tr[data-deployment='sql'] td.share") == "0%",
         "the canary gone from the page")
    dep = requests.get(u + "/api/deployments").json()["deployments"][0]
    check(dep["canary"] is None and dep["stable"]["version"] == 1, f"after rollback: {dep}")
    check(store_stages(work).get(2, ("?",))[0] == "archived", f"v2 archived after the rollback: {store_stages(work)}")
    console_errors(d, "/deployments")

    # ---- a phone-sized screen: no horizontal scrolling of the page itself
    d.set_window_size(390, 844)
    for page, ready in (("models", "section[data-model='sql']"), ("deployments", "tr[data-deployment='sql']")):
        d.get(u + "/" + page)
        wait(d, lambda: d.find_elements(By.CSS_SELECTOR, ready), f"/{page} drawn")
        w = d.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
        check(w[0] <= w[1], f"/{page} on a phone: page {w[0]}px wide in a {w[1]}px window")
        d.save_screenshot(os.path.join(SHOTS, f"phone-{page}.png"))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
