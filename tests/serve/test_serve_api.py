"""test_serve_api.py - `loratune serve`'s REST API with a real HTTP client (requests, and raw
sockets / http.client where requests would tidy the request up) against the real server binary:

- start-up safety: a non-loopback --host without a token is refused; bad options; a second
  server on a locked work folder;
- /openapi.json is the repo's document byte for byte and a valid OpenAPI 3.1 document
  (openapi-spec-validator); responses are checked against its schemas (jsonschema);
- datasets: upload (sha256 / size against hashlib / the file), a broken line reported with its
  line number and the same message `loratune data check` prints, validation with the model's
  tokenizer giving `data check --json`'s numbers, list / get;
- bad input: malformed JSON, wrong types, unknown keys / options (did-you-mean), server-owned
  path options, unknown ids -> 404, path traversal in ids, model names and file names,
  oversized bodies and uploads -> 413 (JSON, Content-Length and chunked uploads, the quota),
  wrong Content-Type -> 415, wrong method -> 405, empty upload -> 400;
- auth: with --token, missing / wrong tokens -> 401 (health stays open); without a token, a
  non-loopback Host (DNS rebinding) and a cross-origin Origin (CSRF) -> 403;
- a client that stalls mid-request is disconnected after --timeout.
"""
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
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
    from openapi_spec_validator import validate as validate_spec
except ImportError as e:  # the venv lacks the test peers: tools/setup.sh installs them
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_api_")
SPEC = servekit.load_spec()


def err_code(r):
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def expect_error(r, status, code=None, contains=None, what=""):
    check(r.status_code == status, f"{what}: status {r.status_code}, expected {status}: {r.text[:300]}")
    if r.headers.get("Content-Type", "").startswith("application/json"):
        conforms(SPEC, "Error", r.json(), what)
    else:
        check(False, f"{what}: error reply is not JSON: {r.headers.get('Content-Type')}")
    if code:
        check(err_code(r) == code, f"{what}: error code {err_code(r)}, expected {code}")
    if contains:
        msg = r.json().get("error", {}).get("message", "") if err_code(r) else ""
        check(contains in msg, f"{what}: message {msg!r} lacks {contains!r}")


def raw_get(port, path, headers=None):
    """GET with the path exactly as given (no client-side normalization)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", f"127.0.0.1:{port}")
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def startup_checks():
    r = ltcheck.run("serve", "--host", "0.0.0.0", "--port", "0", "--workdir",
                    os.path.join(TMP, "w0"), env={**os.environ, "LORATUNE_TOKEN": ""})
    check(r.returncode == 2 and "without a token" in r.stderr,
          f"0.0.0.0 without token: rc {r.returncode} {r.stderr[-300:]}")
    check(not os.path.exists(os.path.join(TMP, "w0")), "refused start created the work folder")
    r = ltcheck.run("serve", "--port", "abc")
    check(r.returncode == 2 and "--port" in r.stderr, f"--port abc: {r.returncode} {r.stderr}")
    r = ltcheck.run("serve", "--bogus", "1")
    check(r.returncode == 2 and "--bogus" in r.stderr, f"--bogus: {r.returncode} {r.stderr}")
    r = ltcheck.run("serve", "--host", "not-an-address", "--port", "0", "--token", "t",
                    "--workdir", os.path.join(TMP, "w0"))
    check(r.returncode == 1 and "host" in r.stderr, f"bad host: {r.returncode} {r.stderr}")
    r = ltcheck.run("serve", "--help")
    check(r.returncode == 0 and "--token" in r.stdout, "serve --help")


def main():
    startup_checks()
    work = os.path.join(TMP, "work")
    # --memory-budget 1: jobs run one at a time (a second job stays queued behind the first)
    srv = Server(work, "--max-body", "4096", "--max-upload", "65536", "--quota", "100000",
                 "--timeout", "2", "--memory-budget", "1")
    u = srv.url
    try:
        run_checks(srv, u, work)
    finally:
        rc, out, err = srv.stop()
        check(rc == 0, f"server exit code {rc} after SIGTERM: {err[-1000:]}")
    auth_checks()


def run_checks(srv, u, work):
    # ---- a second server on the same work folder: the lock -------------------------------
    r = ltcheck.run("serve", "--port", "0", "--workdir", work, timeout=30)
    check(r.returncode == 1 and "in use" in r.stderr, f"second server: {r.returncode} {r.stderr}")

    # ---- health, the document -----------------------------------------------------------
    r = requests.get(u + "/api/health")
    check(r.status_code == 200 and r.json()["status"] == "ok", f"health: {r.text}")
    conforms(SPEC, "Health", r.json(), "health")
    r = requests.get(u + "/openapi.json")
    with open(servekit.SPEC_PATH, "rb") as f:
        check(r.content == f.read(), "/openapi.json differs from src/serve/openapi.json")
    try:
        validate_spec(r.json())
        check(r.json()["openapi"].startswith("3.1"), "not OpenAPI 3.1")
    except Exception as e:  # noqa: BLE001 - any validator complaint is a failure
        check(False, f"openapi.json is not a valid OpenAPI document: {e}")
    documented = set(SPEC["paths"])
    for p in ("/api/health", "/api/datasets", "/api/datasets/{id}", "/api/datasets/{id}/validate",
              "/api/jobs", "/api/jobs/{id}", "/api/jobs/{id}/cancel", "/api/jobs/{id}/events",
              "/api/jobs/{id}/adapter/{file}", "/api/runs", "/api/runs/{id}",
              "/api/runs/{id}/metrics", "/api/models", "/openapi.json"):
        check(p in documented, f"{p} not in the OpenAPI document")

    r = requests.get(u + "/api/options")
    opts = {o["name"]: o for o in r.json()["options"]}
    for o in r.json()["options"]:
        conforms(SPEC, "Option", o, f"option {o['name']}")
    help_text = ltcheck.run("train", "--help").stdout
    for name in ("lora-rank", "iters", "lr", "batch-size", "model", "out"):
        check(name in opts and f"--{name}" in help_text, f"option {name} in /api/options and --help")
    check(opts.get("out", {}).get("server") is True and opts.get("lora-rank", {}).get("server") is False,
          "server-owned flags")
    check(opts.get("lora-rank", {}).get("type") == "int" and opts["lora-rank"].get("min") == 1,
          f"lora-rank: {opts.get('lora-rank')}")
    r = requests.get(u + "/api/models")
    names = [m["name"] for m in r.json()["models"]]
    check(servekit.MODEL in names, f"models: {names}")

    # ---- upload a good dataset ------------------------------------------------------------
    good = "".join(servekit.wikisql_lines(40)).encode()
    r = requests.post(u + "/api/datasets", params={"name": "../../wikisql.jsonl"}, data=good,
                      headers={"Content-Type": "application/octet-stream"})
    check(r.status_code == 201, f"upload: {r.status_code} {r.text[:300]}")
    ds = r.json()
    conforms(SPEC, "Dataset", ds, "upload reply")
    check(ds["sha256"] == hashlib.sha256(good).hexdigest(), "sha256 differs from hashlib's")
    check(ds["size"] == len(good), f"size {ds['size']} != {len(good)}")
    check(ds["name"] == "wikisql.jsonl", f"name not cleaned of folders: {ds['name']}")
    check(ds["validation"]["ok"] is True, f"validation: {ds['validation']}")
    splits = ds["validation"].get("splits", {})
    check(sum(s["examples"] for s in splits.values()) == 40,
          f"examples {splits}: the file has 40 records")
    stored = os.path.join(work, "datasets", ds["id"], "data.jsonl")
    with open(stored, "rb") as f:
        check(f.read() == good, "stored dataset differs from the upload")
    check(os.listdir(os.path.join(work, "uploads")) == [], "temp upload left behind")

    # validate with the model: the numbers of `loratune data check --json --model`
    r = requests.post(u + f"/api/datasets/{ds['id']}/validate",
                      json={"model": servekit.MODEL, "max-seq-len": 64})
    check(r.status_code == 200, f"validate: {r.status_code} {r.text[:300]}")
    v = r.json()
    conforms(SPEC, "Validation", v, "validate reply")
    ref = ltcheck.run("data", "check", stored, "--json", "--model",
                      os.path.join(servekit.MODELS, servekit.MODEL), "--max-seq-len", "64")
    check(ref.returncode == 0, f"data check: {ref.stderr}")
    if ref.returncode == 0:
        refj = json.loads(ref.stdout)
        for sp, m in refj["splits"].items():
            got = v["splits"].get(sp, {})
            for k in ("examples", "tokens", "loss_tokens", "truncated", "min_len", "max_len"):
                check(got.get(k) == m.get(k), f"validate {sp}.{k}: {got.get(k)} vs data check {m.get(k)}")
        check(v["format"] == refj["format"], f"format {v['format']} vs {refj['format']}")

    # ---- a dataset with a broken line: the error names line 3, as `data check` does --------
    lines = servekit.wikisql_lines(6)
    bad = lines[:2] + ['{"text": "unterminated\n'] + lines[3:]
    badb = "".join(bad).encode()
    r = requests.post(u + "/api/datasets?name=broken.jsonl", data=badb,
                      headers={"Content-Type": "application/x-ndjson"})
    check(r.status_code == 201, f"broken upload stored: {r.status_code} {r.text[:200]}")
    bd = r.json()
    val = bd["validation"]
    check(val["ok"] is False and len(val["errors"]) == 1, f"broken: {val}")
    if val["errors"]:
        e0 = val["errors"][0]
        check(e0["line"] == 3, f"broken line reported as {e0['line']}, expected 3")
        check(e0["message"].startswith("broken.jsonl:3:"), f"message {e0['message']!r}")
        check(work not in e0["message"], "the server's path leaks into the message")
        path = os.path.join(work, "datasets", bd["id"], "data.jsonl")
        ref = ltcheck.run("data", "check", path)
        check(ref.returncode != 0 and ref.stderr.strip() ==
              "loratune data check: " + e0["message"].replace("broken.jsonl", path),
              f"differs from data check: {ref.stderr.strip()!r} vs {e0['message']!r}")
    # a record of another format on line 5
    mixed = lines[:4] + ['{"prompt": "p", "completion": "c"}\n'] + lines[5:]
    r = requests.post(u + "/api/datasets?name=mixed.jsonl", data="".join(mixed).encode(),
                      headers={"Content-Type": "application/octet-stream"})
    errs = r.json()["validation"]["errors"]
    check(len(errs) == 1 and errs[0]["line"] == 5, f"mixed: {errs}")
    mixed_id = r.json()["id"]
    r = requests.post(u + f"/api/datasets/{mixed_id}/validate", json={})
    check(r.status_code == 200 and r.json()["errors"][0]["line"] == 5, f"revalidate: {r.text[:300]}")

    # list / get
    r = requests.get(u + "/api/datasets")
    conforms(SPEC, "DatasetList", r.json(), "dataset list")
    ids = [d["id"] for d in r.json()["datasets"]]
    check(set(ids) == {ds["id"], bd["id"], mixed_id}, f"list: {ids}")
    check(ids[0] == mixed_id, "list not newest first")
    r = requests.get(u + f"/api/datasets/{ds['id']}")
    check(r.status_code == 200 and r.json()["sha256"] == ds["sha256"], "get dataset")

    # ---- bad input on datasets ------------------------------------------------------------
    expect_error(requests.get(u + "/api/datasets/ds_0000000000000000"), 404, "not_found",
                 what="unknown dataset")
    for bad_id in ("ds_../../etc/passwd", "..%2F..%2Fjobs", "ds_0123456789abcdeg",
                   "%2e%2e", "ds_0123456789ABCDEF", "ds_0123456789abcdef0"):
        st, body = raw_get(srv.port, f"/api/datasets/{bad_id}")
        check(st == 404, f"dataset id {bad_id!r}: {st}")
    for path in ("/api/datasets/../../../etc/passwd", "/api/../../etc/passwd",
                 "/api/datasets/..%2f..%2f..%2fetc%2fpasswd/validate"):
        st, body = raw_get(srv.port, path)
        check(st in (404, 405) and b"root:" not in body, f"{path}: {st} {body[:100]}")
    r = requests.post(u + f"/api/datasets/{ds['id']}/validate", data="{bad json",
                      headers={"Content-Type": "application/json"})
    expect_error(r, 400, "bad_json", "invalid JSON", what="malformed JSON")
    expect_error(requests.post(u + f"/api/datasets/{ds['id']}/validate", json={"max-seq-len": "x"}),
                 400, "bad_request", "max-seq-len", what="wrong type")
    expect_error(requests.post(u + f"/api/datasets/{ds['id']}/validate", json={"colour": 1}),
                 400, "bad_request", "colour", what="unknown key")
    expect_error(requests.post(u + f"/api/datasets/{ds['id']}/validate", json=[1, 2]),
                 400, "bad_json", "object", what="array body")
    expect_error(requests.post(u + f"/api/datasets/{ds['id']}/validate",
                               json={"model": "../stories260K/stories260K.gguf"}),
                 400, "bad_request", "model", what="model path traversal")
    expect_error(requests.post(u + f"/api/datasets/{ds['id']}/validate", data="{}",
                               headers={"Content-Type": "text/plain"}),
                 415, "unsupported_media_type", what="text/plain JSON")
    expect_error(requests.post(u + "/api/datasets", data=b"",
                               headers={"Content-Type": "application/octet-stream"}),
                 400, "empty", what="empty upload")
    expect_error(requests.post(u + "/api/datasets", data=b"x" * 10,
                               headers={"Content-Type": "text/plain"}), 415,
                 what="upload text/plain")

    # oversized: a JSON body, an upload with Content-Length, a chunked upload, the quota
    before = set(os.listdir(os.path.join(work, "datasets")))
    expect_error(requests.post(u + f"/api/datasets/{ds['id']}/validate",
                               json={"model": "x" * 5000}), 413, "too_large", what="big JSON")
    def chunks(total, size=8192):
        left = total
        while left > 0:
            n = min(size, left)
            yield b'{"text": "' + b"a" * (n - 13) + b'"}\n'
            left -= n
    expect_error(requests.post(u + "/api/datasets", data=b"y" * 70000,
                               headers={"Content-Type": "application/octet-stream"}),
                 413, "too_large", "65536", what="upload over --max-upload (Content-Length)")
    expect_error(requests.post(u + "/api/datasets", data=chunks(70000),
                               headers={"Content-Type": "application/octet-stream"}),
                 413, "too_large", "65536", what="chunked upload over --max-upload")
    big = b"".join(chunks(60000))
    r1 = requests.post(u + "/api/datasets?name=big1.jsonl", data=big,
                       headers={"Content-Type": "application/octet-stream"})
    check(r1.status_code == 201, f"60 kB upload within quota: {r1.status_code} {r1.text[:200]}")
    r2 = requests.post(u + "/api/datasets?name=big2.jsonl", data=chunks(60000),
                       headers={"Content-Type": "application/octet-stream"})
    expect_error(r2, 413, "too_large", "quota", what="upload past the quota (chunked)")
    after = set(os.listdir(os.path.join(work, "datasets")))
    check(after - before == {r1.json().get("id")}, f"datasets after 413s: {after - before}")
    check(os.listdir(os.path.join(work, "uploads")) == [], "413 left a temp upload behind")
    lst = requests.get(u + "/api/datasets").json()
    on_disk = sum(os.path.getsize(os.path.join(work, "datasets", d, f))
                  for d in after for f in os.listdir(os.path.join(work, "datasets", d))
                  if f.startswith("data.") and not f.endswith(".dvc"))  # the upload, not its .dvc file
    check(lst["used_bytes"] == on_disk, f"quota in use {lst['used_bytes']} != {on_disk} on disk")

    # ---- jobs: bad input ---------------------------------------------------------------------
    def job(body, status=400, code="bad_request", contains=None, what=""):
        r = requests.post(u + "/api/jobs", json=body)
        expect_error(r, status, code, contains, what=what)

    okb = {"dataset": ds["id"], "model": servekit.MODEL}
    job({}, contains="dataset", what="job without dataset")
    job({"dataset": ds["id"]}, contains="model", what="job without model")
    job({**okb, "dataset": "ds_0000000000000000"}, 404, "not_found", "no dataset",
        what="unknown dataset")
    job({**okb, "dataset": "../datasets/" + ds["id"]}, contains="not a dataset id",
        what="dataset path traversal")
    job({**okb, "dataset": 7}, contains="dataset", what="dataset not a string")
    job({**okb, "model": "../stories260K/stories260K.gguf"}, contains="model", what="model ..")
    job({**okb, "model": "/etc/passwd"}, contains="model", what="model absolute")
    job({**okb, "model": "nope.gguf"}, 404, "not_found", "no model", what="unknown model")
    job({**okb, "model": ".."}, contains="model", what="model ..")
    job({**okb, "options": {"out": "/tmp/x"}}, code="bad_option", contains="out",
        what="out from a client")
    job({**okb, "options": {"data": "/etc/passwd"}}, code="bad_option", contains="data",
        what="data from a client")
    job({**okb, "options": {"lora-rank": "x"}}, code="bad_option", contains="lora-rank",
        what="bad option value")
    job({**okb, "options": {"lora-rnak": 8}}, code="bad_option", contains="lora-rank",
        what="misspelt option (did you mean)")
    job({**okb, "options": {"lora-rank": [8]}}, code="bad_option", contains="lora-rank",
        what="option of a wrong JSON type")
    job({**okb, "options": {"lr": -1}}, code="bad_option", contains="lr", what="lr out of range")
    job({**okb, "options": [1]}, contains="options", what="options not an object")
    job({**okb, "kind": "finetune"}, contains="kind", what="unknown kind")
    job({**okb, "kind": "tune", "search": {"trails": 2}}, contains="trails", what="tune job with an unknown search key")
    job({**okb, "search": {"trials": 2}}, contains="search", what="search on a train job")
    job({**okb, "kind": 3}, contains="kind", what="kind not a string")
    job({**okb, "extra": 1}, contains="extra", what="unknown top-level key")
    r = requests.post(u + "/api/jobs", data="[1,", headers={"Content-Type": "application/json"})
    expect_error(r, 400, "bad_json", what="malformed job JSON")
    r = requests.post(u + "/api/jobs", data=json.dumps({**okb, "name": "n" * 5000}),
                      headers={"Content-Type": "application/json"})
    expect_error(r, 413, "too_large", what="job body over --max-body")
    check(requests.get(u + "/api/jobs").json()["jobs"] == [], "a refused job was queued")

    for bad_id in ("job_0000000000000000", "job_../x", "job_%2e%2e%2fjob.json", "1"):
        st, _ = raw_get(srv.port, f"/api/jobs/{bad_id}")
        check(st == 404, f"job id {bad_id!r}: {st}")
        st, _ = raw_get(srv.port, f"/api/jobs/{bad_id}/events")
        check(st == 404, f"events of {bad_id!r}: {st}")
    expect_error(requests.post(u + "/api/jobs/job_0000000000000000/cancel"), 404, "not_found",
                 what="cancel unknown")
    expect_error(requests.get(u + "/api/jobs/job_0000000000000000/adapter/adapter.gguf"), 404,
                 what="download of unknown job")
    for bad_id in ("0", "-1", "last", "1abc", "99999"):
        expect_error(requests.get(u + f"/api/runs/{bad_id}"), 404, what=f"run {bad_id}")
    r = requests.get(u + "/api/runs")
    check(r.status_code == 200 and r.json()["runs"] == [], f"runs before any job: {r.text[:200]}")

    # a queued job: cancel it at once (a long one keeps the worker busy first)
    r = requests.post(u + "/api/jobs", json={**okb, "options": {"iters": 100000, "threads": 1,
                                                                  "batch-size": 1,
                                                                  "max-seq-len": 32}})
    check(r.status_code == 201, f"long job: {r.status_code} {r.text[:300]}")
    long_id = r.json()["id"]
    conforms(SPEC, "Job", r.json(), "job reply")
    r = requests.post(u + "/api/jobs", json={**okb, "name": "second"})
    check(r.status_code == 201, f"second job: {r.text[:200]}")
    j2 = r.json()["id"]
    r = requests.post(u + f"/api/jobs/{j2}/cancel")
    check(r.status_code == 202, f"cancel queued: {r.status_code} {r.text[:200]}")
    r = requests.get(u + f"/api/jobs/{j2}")
    check(r.json()["status"] == "cancelled", f"queued job after cancel: {r.json()['status']}")
    expect_error(requests.post(u + f"/api/jobs/{j2}/cancel"), 409, "conflict",
                 what="cancel a cancelled job")
    expect_error(requests.get(u + f"/api/jobs/{j2}/adapter/adapter_model.safetensors"), 409,
                 what="download from a cancelled job")
    expect_error(requests.post(u + f"/api/jobs/{j2}/resume"), 409, "conflict", "no checkpoint",
                 what="resume without a checkpoint")
    expect_error(requests.post(u + "/api/jobs/job_0000000000000000/resume"), 404,
                 what="resume unknown")
    expect_error(requests.post(u + f"/api/jobs/{long_id}/resume"), 409, "conflict",
                 what="resume a running job")
    for f in ("../job.json", "job.json", "out", "..%2Fjob.json", "checkpoints"):
        st, _ = raw_get(srv.port, f"/api/jobs/{long_id}/adapter/{f}")
        check(st == 404, f"download {f!r}: {st}")
    r = requests.post(u + f"/api/jobs/{long_id}/cancel")
    check(r.status_code == 202, f"cancel running: {r.status_code}")
    t0 = time.time()
    while time.time() - t0 < 120:
        s = requests.get(u + f"/api/jobs/{long_id}").json()["status"]
        if s not in ("queued", "running"):
            break
        time.sleep(0.2)
    check(s == "cancelled", f"running job after cancel: {s}")

    # ---- routes, methods -------------------------------------------------------------------
    expect_error(requests.get(u + "/api/nothing"), 404, "not_found", what="unknown endpoint")
    expect_error(requests.get(u + "/nothing"), 404, what="unknown page")
    expect_error(requests.post(u + "/", json={}), 405, what="POST to the web interface")
    r = requests.delete(u + "/api/jobs")
    expect_error(r, 405, "method_not_allowed", what="DELETE jobs")
    check(r.headers.get("Allow") == "GET, HEAD, POST", f"Allow: {r.headers.get('Allow')}")
    expect_error(requests.put(u + "/api/health"), 405, what="PUT health")
    expect_error(requests.get(u + "/api/jobs/" + long_id + "/cancel"), 405, what="GET cancel")

    # ---- no token: loopback Host only, no cross-origin requests ---------------------------
    r = requests.get(u + "/api/jobs", headers={"Host": "evil.example:80"})
    expect_error(r, 403, "forbidden_host", what="DNS-rebinding Host")
    r = requests.post(u + "/api/jobs", json=okb, headers={"Origin": "http://evil.example"})
    expect_error(r, 403, "forbidden_origin", what="cross-origin POST")
    r = requests.post(u + f"/api/jobs/{long_id}/cancel", headers={"Origin": "null"})
    expect_error(r, 403, "forbidden_origin", what="Origin null (a sandboxed frame)")
    r = requests.get(u + "/api/health", headers={"Origin": f"http://127.0.0.1:{srv.port}"})
    check(r.status_code == 200, "same-origin request refused")

    # ---- a stalled client is dropped after --timeout 2 -------------------------------------
    sk = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
    sk.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes
    t0 = time.time()
    try:
        data = sk.recv(4096)
    except (ConnectionResetError, socket.timeout):
        data = b"timeout" if time.time() - t0 >= 14 else b""
    dt = time.time() - t0
    check(data in (b"",) or data.startswith(b"HTTP/1.1 408"),
          f"stalled client got {data[:60]!r}")
    check(dt < 10, f"stalled client dropped after {dt:.1f}s (timeout 2 s)")
    sk.close()
    r = requests.get(u + "/api/health")
    check(r.status_code == 200, "server alive after the stalled client")


def auth_checks():
    work = os.path.join(TMP, "work-token")
    token = "s3cret-token-" + "x" * 20
    srv = Server(work, "--token", token)
    u = srv.url
    try:
        r = requests.get(u + "/api/health")
        check(r.status_code == 200, "health needs no token")
        r = requests.get(u + "/api/jobs")
        expect_error(r, 401, "unauthorized", "Authorization", what="no token")
        check("Bearer" in r.headers.get("WWW-Authenticate", ""), "401 without WWW-Authenticate")
        for wrong in ("Bearer nope", "Bearer " + token[:-1], "Bearer " + token + "x",
                      "Basic " + token, token, "Bearer "):
            r = requests.get(u + "/api/jobs", headers={"Authorization": wrong})
            expect_error(r, 401, "unauthorized", what=f"token {wrong[:12]}...")
        r = requests.post(u + "/api/datasets", data=b'{"text": "a"}\n',
                          headers={"Content-Type": "application/octet-stream"})
        expect_error(r, 401, what="upload without token")
        check(os.listdir(os.path.join(work, "datasets")) == [], "unauthorized upload stored")
        h = {"Authorization": "Bearer " + token}
        r = requests.get(u + "/api/jobs", headers=h)
        check(r.status_code == 200 and r.json() == {"jobs": []}, f"right token: {r.text[:200]}")
        # with a token, a non-loopback Host name is fine (a real deployment has one)
        r = requests.get(u + "/api/jobs", headers={**h, "Host": "trainer.example"})
        check(r.status_code == 200, f"token + other Host: {r.status_code}")
    finally:
        rc, _, err = srv.stop()
        check(rc == 0, f"token server exit {rc}: {err[-500:]}")
    # the token from the environment
    srv = Server(os.path.join(TMP, "work-env"), env={"LORATUNE_TOKEN": "envtoken"})
    try:
        r = requests.get(srv.url + "/api/jobs")
        check(r.status_code == 401, f"LORATUNE_TOKEN not applied: {r.status_code}")
        r = requests.get(srv.url + "/api/jobs", headers={"Authorization": "Bearer envtoken"})
        check(r.status_code == 200, "LORATUNE_TOKEN token refused")
    finally:
        srv.stop()


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
