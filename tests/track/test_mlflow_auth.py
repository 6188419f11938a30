"""test_mlflow_auth.py - MLflow credentials come from MLflow's own environment variables, read by
the loratune program (apps/) and passed to the library (which reads no environment): a fake
MLflow server on loopback records the headers of every request of `train --mlflow URI`.

1. MLFLOW_TRACKING_TOKEN=T: every request carries "Authorization: Bearer T".
2. MLFLOW_TRACKING_USERNAME / _PASSWORD: every request carries HTTP basic auth of the pair.
3. Neither: no Authorization header. MLFLOW_TRACKING_URI in the environment stands for --mlflow.
"""
import base64
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

MODEL = os.path.join(ltcheck.FIXTURES, "stories260K", "stories260K.gguf")
DATA = os.path.join(ltcheck.FIXTURES, "datasets", "wikisql-mlx", "train.jsonl")


class Fake(http.server.BaseHTTPRequestHandler):
    seen = []  # (path, Authorization header or None)

    def answer(self):
        Fake.seen.append((self.path.split("?")[0], self.headers.get("Authorization")))
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if "experiments/get-by-name" in self.path:
            body = {"experiment": {"experiment_id": "1"}}
        elif self.path.endswith("runs/create"):
            body = {"run": {"info": {"run_id": "fake-run"}}}
        else:
            body = {}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = answer
    do_POST = answer

    def log_message(self, *a):
        pass


def train(tmp, name, env_extra, with_flag, uri):
    env = dict(os.environ)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD"):
        env.pop(k, None)
    env.update(env_extra)
    env["LORATUNE_STORE"] = os.path.join(tmp, "store")
    args = [ltcheck.LORATUNE, "train", "--model", MODEL, "--data", "data.jsonl", "--iters", "2",
            "--batch-size", "2", "--max-seq-len", "32", "--eval-every", "0", "--threads", "1",
            "--json", "--out", "out_" + name]
    if with_flag:
        args += ["--mlflow", uri]
    Fake.seen = []
    r = subprocess.run(args, cwd=tmp, capture_output=True, text=True, env=env, timeout=600)
    check(r.returncode == 0, f"{name}: train failed: {r.stderr[-2000:]}")
    check(len(Fake.seen) >= 3, f"{name}: the fake server saw {len(Fake.seen)} requests")
    return Fake.seen


def main():
    tmp = tempfile.mkdtemp(prefix="lt_mlflow_auth_")
    with open(DATA) as f:
        lines = f.readlines()[:8]
    with open(os.path.join(tmp, "data.jsonl"), "w") as f:
        f.writelines(lines)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    uri = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        seen = train(tmp, "token", {"MLFLOW_TRACKING_TOKEN": "t0k"}, True, uri)
        check(all(a == "Bearer t0k" for _, a in seen), f"token: headers {seen[:4]}")
        seen = train(tmp, "basic", {"MLFLOW_TRACKING_USERNAME": "ann",
                                    "MLFLOW_TRACKING_PASSWORD": "pw:1"}, True, uri)
        want = "Basic " + base64.b64encode(b"ann:pw:1").decode()
        check(all(a == want for _, a in seen), f"basic: headers {seen[:4]}, want {want}")
        seen = train(tmp, "none", {"MLFLOW_TRACKING_URI": uri}, False, uri)
        check(all(a is None for _, a in seen), f"none: headers {seen[:4]}")
        check(any(p.endswith("runs/create") for p, _ in seen),
              f"MLFLOW_TRACKING_URI stands for --mlflow: {seen[:4]}")
    finally:
        srv.shutdown()
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
