"""test_serve_prometheus.py - GET /metrics of `loratune serve --model` read by the real tools:
`promtool check metrics` (Debian package prometheus) lints the exposition (format and naming:
_total counters, base units), and a real Prometheus server on loopback scrapes the server every
second (with the server's token, as docs/SERVING.md configures it); the test then asks Prometheus's HTTP API for the counters and histograms of requests it
made itself (3 chat requests, 2 completions of 4 tokens, one unknown model).
The KV-bytes gauge (loratune_kv_cache_bytes): 0 when idle; while a streamed completion runs,
every scrape (one after each chunk the client gets) equals positions x bytes per position, the
latter from the GGUF's own metadata (gguf, PyPI: 2 x block_count x head_count_kv x
embedding_length / head_count x 2 bytes, the fp16 cache /ready names), positions between what
the client has been sent (prompt + chunks - 2: the gauge is updated after the step whose tokens
went out) and the request's final prompt + completion - 1 tokens from its usage, never
decreasing (0 only in the scrapes after its last token: the slot is freed before the client
reads it); 0 again once the stream has ended.
Skipped (77) without the prometheus binaries or the SmolLM2 model. Prints "N passed, M failed".
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import gguf
import json
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oaikit  # noqa: E402
import servekit  # noqa: E402
from oaikit import BASE  # noqa: E402

oaikit.need_model()
PROM, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
if not PROM or not PROMTOOL:
    print("skipped: prometheus / promtool missing (Debian package prometheus; tools/setup.sh)")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_prom_")
TOKEN = "prom-scrape-token"
srv = oaikit.start(os.path.join(TMP, "work"), "--slots", "2", "--ctx", "256", "--token", TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = srv.url
prom = None


def free_port():
    return servekit.free_port()


def query(q):
    r = requests.get(PURL + "/api/v1/query", params={"query": q}, timeout=10)
    body = r.json()
    if body.get("status") != "success":
        return None
    res = body["data"]["result"]
    return float(res[0]["value"][1]) if res else None


try:
    msgs = [{"role": "user", "content": "Say hi."}]
    for _ in range(3):
        r = requests.post(URL + "/v1/chat/completions", json={"model": BASE, "messages": msgs,
                          "max_tokens": 4, "temperature": 0}, headers=AUTH, timeout=600)
        check(r.status_code == 200, f"chat: {r.status_code} {r.text[:300]}")
    for _ in range(2):
        r = requests.post(URL + "/v1/completions", json={"model": BASE, "prompt": "Once upon a time",
                          "max_tokens": 4, "temperature": 0}, headers=AUTH, timeout=600)
        check(r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, f"completion: {r.text[:300]}")
    r = requests.post(URL + "/v1/completions", json={"model": "nope", "prompt": "x"}, headers=AUTH,
                      timeout=60)
    check(r.status_code == 404, f"unknown model: {r.status_code}")

    # promtool lints the exposition: format, names, units, _total
    r = requests.get(URL + "/metrics", timeout=10)
    check(r.status_code == 401, f"/metrics without the token: {r.status_code}")
    r = requests.get(URL + "/metrics", headers=AUTH, timeout=10)
    check(r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4"),
          f"/metrics content type {r.headers.get('Content-Type')}")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=r.text, capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
          f"promtool check metrics: rc {p.returncode} {p.stdout[-1500:]} {p.stderr[-1500:]}")

    # a real Prometheus scrapes it
    pport = free_port()
    PURL = f"http://127.0.0.1:{pport}"
    cfg = os.path.join(TMP, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: loratune
    metrics_path: /metrics
    authorization:
      credentials: {TOKEN}
    static_configs:
      - targets: ["127.0.0.1:{srv.port}"]
""")
    plog = open(os.path.join(TMP, "prometheus.log"), "w")
    prom = subprocess.Popen([PROM, f"--config.file={cfg}", f"--storage.tsdb.path={TMP}/tsdb",
                             f"--web.listen-address=127.0.0.1:{pport}"], stdout=plog, stderr=plog)
    want = {
        f'loratune_requests_total{{model="{BASE}",endpoint="chat",status="200"}}': 3,
        f'loratune_requests_total{{model="{BASE}",endpoint="completions",status="200"}}': 2,
        'loratune_requests_total{model="unknown",endpoint="completions",status="404"}': 1,
        f'loratune_time_to_first_token_seconds_count{{model="{BASE}"}}': 5,
        f'loratune_request_duration_seconds_bucket{{model="{BASE}",le="+Inf"}}': 5,
        'up{job="loratune"}': 1,
        "loratune_model_ready": 1,
        "loratune_kv_cache_slots": 2,
        "loratune_kv_cache_bytes": 0,
    }
    got = {}
    t0 = time.time()
    while time.time() - t0 < 90:
        try:
            got = {q: query(q) for q in want}
        except requests.RequestException:
            got = {}
        if got == want:
            break
        time.sleep(1)
    for q, v in want.items():
        check(got.get(q) == v, f"Prometheus query {q}: {got.get(q)} (want {v})")
    # generated tokens: 3 chats of at most 4 (an end-of-turn token counts) + 2 x 4
    gen = query(f'loratune_generation_tokens_total{{model="{BASE}"}}')
    check(gen is not None and 8 + 3 <= gen <= 8 + 12, f"generation tokens in Prometheus: {gen}")
    q = query(f'histogram_quantile(0.5, loratune_request_duration_seconds_bucket{{model="{BASE}"}})')
    check(q is not None and q > 0, f"histogram_quantile over the duration buckets: {q}")

    # loratune_kv_cache_bytes: the formula from the model's own config (after the
    # Prometheus checks, which count the requests above)
    def kv_bytes():
        for line in requests.get(URL + "/metrics", headers=AUTH, timeout=10).text.splitlines():
            if line.startswith("loratune_kv_cache_bytes "):
                return int(line.split()[1])
        return None

    rd = gguf.GGUFReader(oaikit.SMOL)

    def meta(k):
        f = rd.fields[k]
        return int(f.parts[f.data[0]][0])

    ready = requests.get(URL + "/ready", timeout=10).json()
    es = {"f16": 2, "f32": 4}.get(ready.get("kv_cache"))
    check(es is not None, f"/ready kv_cache: {ready}")
    per_pos = 2 * meta("llama.block_count") * meta("llama.attention.head_count_kv") * \
        (meta("llama.embedding_length") // meta("llama.attention.head_count")) * (es or 2)
    check(kv_bytes() == 0, f"idle: loratune_kv_cache_bytes {kv_bytes()} (want 0)")
    MAX = 150
    samples, usage = [], None
    with requests.post(URL + "/v1/completions", headers=AUTH, stream=True, timeout=600,
                       json={"model": BASE, "prompt": "Once upon a time, in a land far away,",
                             "max_tokens": MAX, "temperature": 0, "stream": True,
                             "stream_options": {"include_usage": True}}) as r:
        chunks = 0
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            j = json.loads(line[6:])
            if j.get("usage"):
                usage = j["usage"]
            if j.get("choices"):
                chunks += 1
                if chunks >= 2:
                    samples.append((chunks, kv_bytes()))
    after = kv_bytes()
    check(usage is not None and usage["completion_tokens"] >= 20, f"usage of the stream: {usage}")
    if usage:
        P, C = usage["prompt_tokens"], usage["completion_tokens"]
        while samples and samples[-1][1] == 0:  # the request ended while its last chunks were read
            samples.pop()
        bad = [(k, b) for k, b in samples
               if b is None or b % per_pos or not P + k - 2 <= b // per_pos <= P + C - 1]
        check(not bad, f"in-flight loratune_kv_cache_bytes not (prompt {P} + chunks - 2 .. prompt + "
              f"{C} - 1) x {per_pos} bytes: (chunk, bytes) {bad[:5]}")
        vals = [b for _, b in samples if b is not None]
        check(len(vals) >= 10 and vals == sorted(vals) and vals[-1] > vals[0],
              f"in-flight gauge not rising: {vals[:5]} ... {vals[-5:]}")
    check(after == 0, f"after the stream: loratune_kv_cache_bytes {after} (want 0)")
finally:
    if prom:
        prom.terminate()
        try:
            prom.wait(30)
        except subprocess.TimeoutExpired:
            prom.kill()
    code, out, err = srv.stop()
    check(code == 0, f"server exit code {code}: {err[-1500:]}")

sys.exit(ltcheck.finish())
