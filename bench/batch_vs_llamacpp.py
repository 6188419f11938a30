"""batch_vs_llamacpp.py - continuous batching: `loratune serve` with K concurrent streams vs one
llama.cpp stream, side by side in one run (issue 17's goal: K = 8 streams >= 3x one llama.cpp
stream on SmolLM2-135M-Instruct Q4_1).

Same GGUF, same prompt token ids (llama.cpp's tokenization of infer_vs_llamacpp.py's PROMPT),
greedy, the same number of new tokens at most, the same thread count. In turn, --reps times:
  - llama.cpp: one stream, llama-cpp-python in a process of its own (infer_vs_llamacpp.py's
    child: decode tokens/s around its eval calls, prompt excluded);
  - loratune: one `loratune serve --model M --slots K --threads T` started once, warmed by one
    request; then 1 stream alone and K concurrent streams through the real openai client
    (/v1/completions with the prompt ids, stream=True, include_usage): aggregate tokens/s =
    completion tokens of all streams / wall time from the first request to the last [DONE]
    (prefill, HTTP and streaming included: what the clients get).
Prints medians, the ratio K streams / one llama.cpp stream, and the server's mean batch
(decode_rows_total / decode_steps_total). Not a test (bench/RESULTS.md records runs).

usage: .venv/bin/python bench/batch_vs_llamacpp.py [--streams 8] [--tokens 256] [--threads 1]
       [--reps 3] [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--loratune build/loratune]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import openai
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import infer_vs_llamacpp as ivl  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.join(HERE, "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
ap.add_argument("--loratune", default=os.path.join(HERE, "..", "build", "loratune"))
ap.add_argument("--streams", type=int, default=8)
ap.add_argument("--tokens", type=int, default=256)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--reps", type=int, default=3)
a = ap.parse_args()

ids = ivl.prompt_ids(a.model)
ids_s = ",".join(map(str, ids))


def llamacpp():
    r = subprocess.run([sys.executable, os.path.join(HERE, "infer_vs_llamacpp.py"), "--llamacpp-child",
                        "--model", a.model, "--ids", ids_s, "--t", str(a.threads), "--tokens",
                        str(a.tokens)], capture_output=True, text=True, check=True)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return 1000.0 * j["n_tg"] / j["tg_ms"], j["gen"]


work = tempfile.mkdtemp(prefix="lt_bench_batch_")
env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
srv = subprocess.Popen([a.loratune, "serve", "--port", "0", "--workdir", work, "--model", a.model,
                        "--threads", str(a.threads), "--slots", str(a.streams), "--ctx", "512"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
port = int(re.search(r":(\d+) ", srv.stdout.readline()).group(1))
url = f"http://127.0.0.1:{port}"
while requests.get(url + "/ready", timeout=10).status_code != 200:
    time.sleep(0.2)
name = os.path.basename(a.model).removesuffix(".gguf")
client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)


def metric(n):
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(n + " "):
            return float(line.split()[1])
    return 0.0


def stream(out, i):
    n = 0
    for ch in client.completions.create(model=name, prompt=ids, max_tokens=a.tokens, temperature=0,
                                        stream=True, stream_options={"include_usage": True}):
        if ch.usage:
            n = ch.usage.completion_tokens
    out[i] = n


def serve(k):
    out = {}
    th = [threading.Thread(target=stream, args=(out, i)) for i in range(k)]
    s0, r0 = metric("loratune_decode_steps_total"), metric("loratune_decode_rows_total")
    t0 = time.time()
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.time() - t0
    s1, r1 = metric("loratune_decode_steps_total"), metric("loratune_decode_rows_total")
    return sum(out.values()) / wall, sum(out.values()), (r1 - r0) / max(s1 - s0, 1)


try:
    serve(1)  # warm-up: pages of the mapped file, allocator
    print(f"model {os.path.basename(a.model)}, prompt {len(ids)} ids, {a.tokens} greedy tokens at most, "
          f"{a.threads} thread(s), {a.streams} slots; {a.reps} rounds in turn", flush=True)
    C, L1, LK, batch = [], [], [], []
    for rep in range(a.reps):
        c, cg = llamacpp()
        l1, n1, _ = serve(1)
        lk, nk, mb = serve(a.streams)
        C.append(c), L1.append(l1), LK.append(lk), batch.append(mb)
        print(f"round {rep + 1}: llama.cpp 1 stream {c:.1f} tokens/s ({cg} generated); loratune serve "
              f"1 stream {l1:.1f} ({n1}), {a.streams} streams {lk:.1f} aggregate ({nk} tokens, mean "
              f"batch {mb:.2f}); load {os.getloadavg()[0]:.2f}", flush=True)
    c, l1, lk = statistics.median(C), statistics.median(L1), statistics.median(LK)
    print()
    print("| system | streams | tokens/s (aggregate) | vs one llama.cpp stream |")
    print("|---|---|---|---|")
    print(f"| llama.cpp (llama-cpp-python, decode only) | 1 | {c:.1f} | 1.00x |")
    print(f"| loratune serve (openai client, wall) | 1 | {l1:.1f} | {l1 / c:.2f}x |")
    print(f"| loratune serve (openai client, wall) | {a.streams} | {lk:.1f} | **{lk / c:.2f}x** |")
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
finally:
    srv.terminate()
    srv.wait(timeout=60)
