"""test_serve_data_delete.py - deleting datasets of `loratune serve` (DELETE /api/datasets/{id}),
checked with a real HTTP client (requests), the real `dvc` (PyPI) and headless Chromium.

- three uploads: sql.jsonl v1 and v2 (other content), other.jsonl (v1's bytes: one cache object);
  their cache objects are WORK/.dvc/cache/files/md5/XX/REST with XX+REST = hashlib's md5;
- a long train job on v2: DELETE of v2, and of every version of sql.jsonl, is a 409 (in_use)
  naming the job while it is queued / running; nothing goes;
- DELETE v1: 200 (the spec's DatasetDeleted), its folder gone, GET 404, out of the list, the
  quota's used bytes down by its size; its cache object kept, the reason naming other.jsonl's
  upload (same content); the real `dvc status` of the work folder is clean;
- the job cancelled: DELETE v2 (all_versions=true) goes, its cache object kept (the job's run
  names that version); DELETE other.jsonl removes the last copy of v1's content from the cache;
- bad input: an unknown id (404), a path traversal id (404), all_versions=maybe (400), DELETE on
  the list (405 with Allow);
- the Data page: Delete asks for confirmation (dismissed: nothing goes; accepted: the row goes,
  and the API no longer lists it); screenshots data-delete-button.png, data-delete.png.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import requests
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

SPEC = servekit.load_spec()
TMP = tempfile.mkdtemp(prefix="lt_serve_delete_")
HF = os.path.join(ltcheck.FIXTURES, "stories260K-hf")
DVC = os.path.join(os.path.dirname(sys.executable), "dvc")
OPTS = {"iters": 100000, "batch-size": 1, "max-seq-len": 32, "threads": 1, "eval-every": 0}


def upload(u, name, data):
    r = requests.post(f"{u}/api/datasets?name={name}", data=data.encode(),
                      headers={"Content-Type": "application/octet-stream"})
    check(r.status_code == 201, f"upload {name}: {r.status_code} {r.text[:200]}")
    return r.json()


def cache_obj(work, md5):
    return os.path.join(work, ".dvc", "cache", "files", "md5", md5[:2], md5[2:])


def listed(u):
    return {d["id"] for d in requests.get(f"{u}/api/datasets").json()["datasets"]}


def wait_status(u, jid, want, limit=120):
    t0 = time.time()
    while time.time() - t0 < limit:
        j = requests.get(f"{u}/api/jobs/{jid}").json()
        if j["status"] in want:
            return j
        time.sleep(0.1)
    check(False, f"job {jid} not {want} in {limit}s")
    return j


def api_checks(u, work):
    lines = servekit.wikisql_lines(30)
    d1, d2 = "".join(lines[:20]), "".join(lines[10:30])
    v1, v2, other = upload(u, "sql.jsonl", d1), upload(u, "sql.jsonl", d2), upload(u, "other.jsonl", d1)
    md1, md2 = hashlib.md5(d1.encode()).hexdigest(), hashlib.md5(d2.encode()).hexdigest()
    check(v1["version"]["md5"] == md1 == other["version"]["md5"] and v2["version"]["md5"] == md2,
          "versions' md5 are hashlib's")
    check(os.path.exists(cache_obj(work, md1)) and os.path.exists(cache_obj(work, md2)), "cache objects there")

    job = requests.post(f"{u}/api/jobs", json={"dataset": v2["id"], "model": "stories260K-hf", "options": OPTS}).json()
    j = wait_status(u, job["id"], ("queued", "running"))
    for q in ("", "?all_versions=true"):
        r = requests.delete(f"{u}/api/datasets/{v2['id']}{q}")
        check(r.status_code == 409 and r.json()["error"]["code"] == "in_use" and job["id"] in r.text
              and j["status"] in ("queued", "running"), f"DELETE{q} while job uses it: {r.status_code} {r.text[:300]}")
    r = requests.delete(f"{u}/api/datasets/{v1['id']}?all_versions=true")
    check(r.status_code == 409 and v2["id"] in r.text, f"DELETE all versions (v2 in use): {r.status_code} {r.text[:200]}")
    check({v1["id"], v2["id"], other["id"]} <= listed(u), "nothing deleted by a refused DELETE")

    used0 = requests.get(f"{u}/api/datasets").json()["used_bytes"]
    r = requests.delete(f"{u}/api/datasets/{v1['id']}")
    check(r.status_code == 200, f"DELETE v1: {r.status_code} {r.text[:300]}")
    res = r.json()
    servekit.conforms(SPEC, "DatasetDeleted", res, "DELETE v1")
    check(res["deleted"] == [v1["id"]] and res["freed_bytes"] == len(d1), f"DELETE v1: {res}")
    check(res["cache"]["removed"] == [] and len(res["cache"]["kept"]) == 1
          and res["cache"]["kept"][0]["md5"] == md1 and other["id"] in res["cache"]["kept"][0]["reason"],
          f"v1's cache object kept for other.jsonl: {res['cache']}")
    check(not os.path.exists(os.path.join(work, "datasets", v1["id"])), "v1's folder removed")
    check(os.path.exists(cache_obj(work, md1)), "v1's content still cached (other.jsonl)")
    check(requests.get(f"{u}/api/datasets/{v1['id']}").status_code == 404, "GET v1: 404")
    check(v1["id"] not in listed(u), "v1 not listed")
    used1 = requests.get(f"{u}/api/datasets").json()["used_bytes"]
    check(used0 - used1 == len(d1), f"used bytes {used0} -> {used1}")
    v2now = requests.get(f"{u}/api/datasets/{v2['id']}").json()["version"]
    check(v2now["number"] == 1 and v2now["previous"] is None, f"v2 is now the first version: {v2now}")
    if os.path.exists(DVC):
        st = subprocess.run([DVC, "status", "--json"], cwd=work, capture_output=True, text=True, timeout=120)
        check(st.returncode == 0 and json.loads(st.stdout or "null") == {}, f"dvc status: {st.stdout} {st.stderr[-300:]}")
    else:
        print("dvc not installed: dvc status not checked")

    requests.post(f"{u}/api/jobs/{job['id']}/cancel")
    wait_status(u, job["id"], ("cancelled", "done", "failed"))
    r = requests.delete(f"{u}/api/datasets/{v2['id']}?all_versions=true")
    res = r.json()
    check(r.status_code == 200 and res["deleted"] == [v2["id"]], f"DELETE v2 after the job: {r.status_code} {r.text[:300]}")
    check(res["cache"]["removed"] == [] and [k["md5"] for k in res["cache"]["kept"]] == [md2]
          and job["id"] in res["cache"]["kept"][0]["reason"], f"v2's cache kept for the job's run: {res['cache']}")
    check(os.path.exists(cache_obj(work, md2)), "v2's content still cached (the job's run)")
    r = requests.delete(f"{u}/api/datasets/{other['id']}")
    res = r.json()
    check(r.status_code == 200 and res["cache"]["removed"] == [md1] and res["freed_bytes"] == 2 * len(d1),
          f"DELETE other.jsonl: {r.status_code} {r.text[:300]}")
    check(not os.path.exists(cache_obj(work, md1)), "the last copy of v1's content left the cache")
    check(requests.get(f"{u}/api/jobs/{job['id']}").status_code == 200, "the job stays after its data went")

    # ---- bad input
    r = requests.delete(f"{u}/api/datasets/{v1['id']}")
    check(r.status_code == 404 and v1["id"] in r.text, f"DELETE twice: {r.status_code}")
    check(requests.delete(f"{u}/api/datasets/ds_0123456789abcdef").status_code == 404, "unknown id")
    for bad in ("..%2F..%2Fetc", "ds_..", "%2E%2E"):
        check(requests.delete(f"{u}/api/datasets/{bad}").status_code == 404, f"traversal {bad}")
    x = upload(u, "x.jsonl", d1)
    for bad in ("maybe", "1", "TRUE"):
        r = requests.delete(f"{u}/api/datasets/{x['id']}?all_versions={bad}")
        check(r.status_code == 400 and "all_versions" in r.text and x["id"] in listed(u), f"all_versions={bad}: {r.status_code}")
    r = requests.delete(f"{u}/api/datasets")
    check(r.status_code == 405 and "POST" in r.headers.get("Allow", ""), f"DELETE the list: {r.status_code}")
    return x


def browser_checks(u, x):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    d = servekit.browser()
    try:
        d.get(u + "/data")
        sel = f"tr[data-dataset='{x['id']}'] button.delete"
        b = servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, sel), "the Delete button")
        if not b:
            return
        b[0].click()
        a = servekit.wait_for(d, lambda: EC.alert_is_present()(d), "the confirmation")
        check(a and x["name"] in a.text, f"confirmation text: {a.text if a else None}")
        a.dismiss()
        time.sleep(0.5)
        check(x["id"] in listed(u) and d.find_elements(By.CSS_SELECTOR, sel), "dismissed: nothing deleted")
        d.save_screenshot(os.path.join(servekit.screenshots_dir(TMP), "data-delete-button.png"))
        d.find_elements(By.CSS_SELECTOR, sel)[0].click()
        servekit.wait_for(d, lambda: EC.alert_is_present()(d), "the confirmation").accept()
        servekit.wait_for(d, lambda: not d.find_elements(By.CSS_SELECTOR, f"tr[data-dataset='{x['id']}']"),
                          "the deleted row to go")
        check(x["id"] not in listed(u), "accepted: the API no longer lists it")
        msg = d.find_elements(By.CSS_SELECTOR, "#datasets p.ok")
        check(msg and "Deleted 1 upload" in msg[0].text, f"message {msg[0].text if msg else None}")
        d.save_screenshot(os.path.join(servekit.screenshots_dir(TMP), "data-delete.png"))
        servekit.console_errors(d, "Data page")
    finally:
        d.quit()


def main():
    servekit.chromium_or_skip()
    work, models = os.path.join(TMP, "work"), os.path.join(TMP, "models")
    os.makedirs(models)
    os.symlink(HF, os.path.join(models, "stories260K-hf"))
    srv = Server(work, "--models", models)
    try:
        x = api_checks(srv.url, work)
        browser_checks(srv.url, x)
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
