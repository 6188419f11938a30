"""test_serve_batch.py - `loratune serve --model` with continuous batching, under load, on
loopback, with the real `openai` client (PyPI) and the real SmolLM2-135M-Instruct Q4_1 GGUF.

(test_serve_openai.py covers one request at a time against `loratune generate`, the 400s of a
prompt over the context, a corrupt adapter refused while the others serve, and a disconnect with
nothing else running; this file covers what batching changes.)

  1. Batched == alone: twelve greedy requests (base and two random LoRA adapters, chat and
     completions, different prompts and max_tokens) sent at once to 8 slots give, each, the text
     and usage it gives when it runs alone on the server (batch of 1); one of them is also
     checked against `loratune generate --adapter` (the CLI's unbatched loop). /metrics shows
     that the decode steps really ran several rows (decode_rows_total / decode_steps_total).
 1b. Prompts join running requests (their prefill runs in the decode steps, a long one in
     chunks): a ~300-token completion on an adapter and a chat, sent while a long stream
     decodes, give what they give alone (the long one also `loratune generate`'s), and so does
     the stream.
  2. Load: 64 concurrent streaming clients (openai client, stream=True, include_usage) on
     loopback for LT_LOAD_SECONDS (default 15 s; LT_LOAD_SLOTS slots, default 8), each sending
     request after request with
     base / adapter models: no error, every stream ends with a finish_reason, usage and
     [DONE]; p50 / p99 latency and throughput printed (bench/RESULTS.md records a 60 s run).
  3. Under that load, clients that disconnect mid-stream (an adapter's stream, closed after its
     first chunk) free their slots: afterwards the adapter's in_flight (GET /v1/adapters) and
     the running gauge are 0, and 499s were counted for them.
"""
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oaikit  # noqa: E402
from oaikit import BASE  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import openai
    import requests
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

oaikit.need_model()
if "--device cuda" in os.environ.get("LT_SERVE_ARGS", ""):  # py_test_serve_batch_cuda
    import json
    import subprocess
    info = subprocess.run([ltcheck.LORATUNE, "info", "--json"], capture_output=True, text=True)
    cuda = json.loads(info.stdout).get("cuda", {}) if info.returncode == 0 else {}
    if not cuda.get("device_count"):
        print(f"skipped: --device cuda: no GPU here ({cuda.get('status', info.stderr[-300:])})")
        sys.exit(77)
TMP = tempfile.mkdtemp(prefix="lt_serve_batch_")
LOAD_S = float(os.environ.get("LT_LOAD_SECONDS", "15"))
SLOTS = os.environ.get("LT_LOAD_SLOTS", "8")  # bench/RESULTS.md's runs set both
N_CLIENTS = 64

ad_a = oaikit.write_lora(os.path.join(TMP, "ad_a"), seed=1)
ad_b = oaikit.write_lora(os.path.join(TMP, "ad_b"), seed=2, scale_b=0.3)
# LT_SERVE_ARGS: more `loratune serve` options (e.g. --kv-cache f32)
srv = oaikit.start(os.path.join(TMP, "work"), *os.environ.get("LT_SERVE_ARGS", "").split(), "--slots", SLOTS,
                   "--max-queue", "128", "--ctx", "512",
                   "--adapter", f"a={ad_a}", "--adapter", f"b={ad_b}")
url = srv.url
client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
# --device X in LT_SERVE_ARGS (py_test_serve_batch_device: cpu-as-device, the device code path
# on the CPU; on a GPU machine: cuda): /ready names where generation runs
_sa = os.environ.get("LT_SERVE_ARGS", "").split()
want_dev = _sa[_sa.index("--device") + 1] if "--device" in _sa else "cpu"
# `loratune generate` on the same device when it is a GPU (its fp32 products are the device's;
# generate has no cpu-as-device: that one is checked against the host's, bit for bit)
GEN_DEV = ["--device", want_dev] if want_dev in ("cuda", "auto") else []
ready = requests.get(url + "/ready", timeout=10).json()
check(ready.get("device") == want_dev, f"/ready device {ready.get('device')!r}, want {want_dev!r}")

try:
    # ---- 1. batched == alone ------------------------------------------------------------
    prompts = ["1, 2, 3, 4, 5,", "The capital of France is", "def fib(n):",
               "Once upon a time", "SELECT name FROM", "Roses are red,"]
    reqs = []
    for i in range(12):
        model = [BASE, "a", "b"][i % 3]
        if i % 2:
            reqs.append(("chat", model, f"Say something about {prompts[i % 6]}", 12 + 3 * (i % 4)))
        else:
            reqs.append(("comp", model, prompts[i % 6], 10 + 4 * (i % 5)))

    def ask(r):
        kind, model, text, n = r
        if kind == "chat":
            o = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                               temperature=0, max_tokens=n)
            return o.choices[0].message.content, o.choices[0].finish_reason, o.usage.completion_tokens
        o = client.completions.create(model=model, prompt=text, temperature=0, max_tokens=n)
        return o.choices[0].text, o.choices[0].finish_reason, o.usage.completion_tokens

    alone = [ask(r) for r in reqs]  # one at a time: batches of one row
    steps0 = oaikit.metric(url, "loratune_decode_steps_total")
    rows0 = oaikit.metric(url, "loratune_decode_rows_total")
    together = [None] * len(reqs)

    def worker(i):
        together[i] = ask(reqs[i])

    th = [threading.Thread(target=worker, args=(i,)) for i in range(len(reqs))]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for i, r in enumerate(reqs):
        check(together[i] == alone[i], f"request {i} {r}: batched {together[i]!r} vs alone {alone[i]!r}")
    steps = oaikit.metric(url, "loratune_decode_steps_total") - steps0
    rows = oaikit.metric(url, "loratune_decode_rows_total") - rows0
    print(f"1. {len(reqs)} requests at once: {rows:.0f} tokens in {steps:.0f} decode steps "
          f"(mean batch {rows / max(steps, 1):.2f})")
    check(rows / max(steps, 1) >= 3, f"mean batch {rows}/{steps}: the requests were not batched")
    want = oaikit.generate("--prompt", reqs[2][2], "--max-tokens", str(reqs[2][3]), "--adapter", ad_b,
                           *GEN_DEV)
    check(alone[2][0] == want, f"adapter b alone {alone[2][0]!r} vs loratune generate {want!r}")

    # ---- 1b. prompts joining running requests: prefill in the decode steps ---------------------
    # A long-running stream decodes; a ~300-token prompt (over one step's 256 tokens: its
    # prefill is cut into chunks, each next to the stream's decode row) and a short chat join it.
    # Each gives what it gives alone, and the long one what `loratune generate` gives (its prompt
    # in one piece, no batching); the stream is still running when they are answered.
    long_text = "The quick brown fox jumps over the lazy dog. " * 30 + "In the end, the fox"
    r_long = ("comp", "a", long_text, 16)
    r_short = ("chat", "b", "Say something about the sea", 12)
    r_run = ("comp", BASE, "Once upon a time", 160)
    alone_long, alone_short, alone_run = ask(r_long), ask(r_short), ask(r_run)
    check(alone_run[2] == 160, f"the running request stopped early: {alone_run!r}")
    ends = {}
    run_text = []

    def runner():
        s = client.completions.create(model=BASE, prompt=r_run[2], max_tokens=r_run[3], temperature=0,
                                      stream=True)
        for ch in s:
            if ch.choices:
                run_text.append(ch.choices[0].text)
                started.set()
        ends["run"] = time.time()

    def joiner(name, r):
        got[name] = ask(r)
        ends[name] = time.time()

    got = {}
    started = threading.Event()
    th = [threading.Thread(target=runner)]
    th[0].start()
    check(started.wait(120), "the running stream sent no text")
    th += [threading.Thread(target=joiner, args=("long", r_long)),
           threading.Thread(target=joiner, args=("short", r_short))]
    for t in th[1:]:
        t.start()
    for t in th:
        t.join()
    check(got.get("long") == alone_long, f"long prompt joining: {got.get('long')!r} vs alone {alone_long!r}")
    check(got.get("short") == alone_short, f"chat joining: {got.get('short')!r} vs alone {alone_short!r}")
    check("".join(run_text) == alone_run[0], f"the running stream: {''.join(run_text)!r} vs alone {alone_run[0]!r}")
    check(ends.get("run", 0) > max(ends.get("long", 1e18), ends.get("short", 1e18)),
          f"the running stream ended before the joiners were answered: {ends}")
    want = oaikit.generate("--prompt", long_text, "--max-tokens", "16", "--adapter", ad_a, *GEN_DEV)
    check(alone_long[0] == want, f"long prompt on adapter a {alone_long[0]!r} vs loratune generate {want!r}")
    print(f"1b. a {len(long_text.split())}-word prompt and a chat joined a running stream: "
          f"the same texts as alone (and as loratune generate)")

    # ---- 2. + 3. load, with disconnects -----------------------------------------------------
    lat, ttft, errors, tokens = [], [], [], [0]
    lock = threading.Lock()
    deadline = time.time() + LOAD_S

    def streamer(i):
        model = [BASE, "a", "b", BASE][i % 4]
        k = 0
        while time.time() < deadline:
            k += 1
            t0 = time.time()
            first, fin, usage, done = None, None, None, False
            try:
                s = client.completions.create(model=model, prompt=prompts[(i + k) % 6],
                                              max_tokens=8 + (i + k) % 9, temperature=0.7,
                                              seed=i * 1000 + k, stream=True,
                                              stream_options={"include_usage": True})
                for ch in s:
                    if ch.choices and first is None:
                        first = time.time() - t0
                    if ch.choices and ch.choices[0].finish_reason:
                        fin = ch.choices[0].finish_reason
                    if ch.usage:
                        usage = ch.usage
                done = True
            except Exception as e:  # noqa: BLE001 - any failure is the test's finding
                with lock:
                    errors.append(f"client {i} request {k}: {type(e).__name__}: {e}")
                continue
            with lock:
                if not (done and fin in ("stop", "length") and usage and usage.completion_tokens > 0):
                    errors.append(f"client {i} request {k}: finish {fin!r} usage {usage!r}")
                    continue
                lat.append(time.time() - t0)
                ttft.append(first if first is not None else time.time() - t0)
                tokens[0] += usage.completion_tokens

    n499_0 = oaikit.metric(url, "loratune_requests_total",
                           {"model": "a", "endpoint": "completions", "status": "499"}) or 0
    dropped = [0]

    def leaver():
        """Streams on adapter a, reads the first chunk, closes the connection."""
        while time.time() < deadline - 2:
            with requests.post(url + "/v1/completions", stream=True, timeout=300,
                               json={"model": "a", "prompt": "1, 2, 3,", "max_tokens": 200,
                                     "temperature": 0, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith(b"data: {"):
                        break
            dropped[0] += 1
            time.sleep(0.5)

    t0 = time.time()
    th = [threading.Thread(target=streamer, args=(i,)) for i in range(N_CLIENTS)]
    th.append(threading.Thread(target=leaver))
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.time() - t0
    lat.sort()
    ttft.sort()

    def pct(v, p):
        return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")

    print(f"2. {N_CLIENTS} streaming clients for {LOAD_S:.0f} s: {len(lat)} requests, "
          f"{len(errors)} errors, {tokens[0]} tokens in {wall:.1f} s = {tokens[0] / wall:.1f} tokens/s, "
          f"{len(lat) / wall:.2f} requests/s; latency p50 {pct(lat, .5):.2f} s p99 {pct(lat, .99):.2f} s; "
          f"time to first token p50 {pct(ttft, .5):.2f} s p99 {pct(ttft, .99):.2f} s")
    for e in errors[:10]:
        print("  ", e)
    check(not errors, f"{len(errors)} of the load's requests failed")
    check(len(lat) >= N_CLIENTS, f"only {len(lat)} requests completed in {LOAD_S} s")

    # ---- 3. the disconnected clients' slots are free -------------------------------------
    t1 = time.time()
    while time.time() - t1 < 10:
        running = oaikit.metric(url, "loratune_requests_running")
        ads = {a["name"]: a["in_flight"] for a in requests.get(url + "/v1/adapters", timeout=10).json()["data"]}
        if running == 0 and ads.get("a") == 0:
            break
        time.sleep(0.2)
    check(running == 0 and ads.get("a") == 0,
          f"after the load: running {running}, adapter in_flight {ads} (expected 0)")
    n499 = (oaikit.metric(url, "loratune_requests_total",
                          {"model": "a", "endpoint": "completions", "status": "499"}) or 0) - n499_0
    print(f"3. {dropped[0]} clients left mid-stream: {n499:.0f} counted as 499; running {running:.0f}, "
          f"in_flight {ads}")
    check(dropped[0] >= 1 and n499 >= dropped[0], f"{dropped[0]} disconnects, {n499} 499s counted")
    check(requests.get(url + "/health", timeout=10).status_code == 200, "alive after the load")
    # still serving, with the lone answer
    check(ask(reqs[0]) == alone[0], "request 0 after the load: same text as before")
finally:
    srv.stop()
    shutil.rmtree(TMP, ignore_errors=True)
sys.exit(ltcheck.finish())
