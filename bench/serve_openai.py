"""serve_openai.py - `loratune serve --model` through the real openai client vs `loratune
generate` in the same run: the same GGUF, prompt, greedy decoding and thread count. Streams
N_TOKENS tokens with 1 client, then K concurrent clients, and prints tokens/s and time to first
token (TTFT, as the client sees it). Not a test (bench/RESULTS.md records runs).

usage: .venv/bin/python bench/serve_openai.py [--loratune build/loratune] [--model M]
       [--threads 1] [--tokens 64] [--clients 4] [--repeat 3]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import openai
import requests

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ap = argparse.ArgumentParser()
ap.add_argument("--loratune", default=os.path.join(ROOT, "build", "loratune"))
ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--clients", type=int, default=4)
ap.add_argument("--repeat", type=int, default=3)
a = ap.parse_args()
PROMPT = "1, 2, 3, 4, 5,"  # counting goes on: no early end of text


def generate_cli():
    r = subprocess.run([a.loratune, "generate", "--model", a.model, "--prompt", PROMPT, "--temp", "0",
                        "--max-tokens", str(a.tokens), "--threads", str(a.threads)],
                       capture_output=True, text=True, check=True)
    m = re.search(r"(\d+) generated, ([\d.]+) tokens/s; decode ([\d.]+) tokens/s", r.stderr)
    return int(m.group(1)), float(m.group(3))


work = tempfile.mkdtemp(prefix="lt_bench_serve_")
srv = subprocess.Popen([a.loratune, "serve", "--port", "0", "--workdir", work, "--model", a.model,
                        "--threads", str(a.threads), "--slots", str(max(a.clients, 1))],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
port = int(re.search(r":(\d+) ", srv.stdout.readline()).group(1))
url = f"http://127.0.0.1:{port}"
while requests.get(url + "/ready", timeout=10).status_code != 200:
    time.sleep(0.2)
name = os.path.basename(a.model).removesuffix(".gguf")
client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)


def stream(out, i):
    t0 = time.time()
    first, n = None, 0
    for ch in client.completions.create(model=name, prompt=PROMPT, max_tokens=a.tokens, temperature=0,
                                        stream=True, stream_options={"include_usage": True}):
        if ch.choices and ch.choices[0].text and first is None:
            first = time.time() - t0
        if ch.usage:
            n = ch.usage.completion_tokens
    out[i] = (time.time() - t0, first, n)


def run(k):
    out = {}
    th = [threading.Thread(target=stream, args=(out, i)) for i in range(k)]
    t0 = time.time()
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.time() - t0
    return sum(v[2] for v in out.values()) / wall, sorted(v[1] for v in out.values())


try:
    print(f"model {os.path.basename(a.model)}, {a.tokens} greedy tokens, {a.threads} thread(s)")
    for rep in range(a.repeat):
        n, dec = generate_cli()
        t1, ttft1 = run(1)
        tk, ttftk = run(a.clients)
        print(f"run {rep + 1}: loratune generate decode {dec:.1f} tokens/s | serve 1 stream "
              f"{t1:.1f} tokens/s (TTFT {ttft1[0]:.2f} s) = {t1 / dec:.2f}x | serve {a.clients} "
              f"streams {tk:.1f} tokens/s aggregate (TTFT {ttftk[0]:.2f}..{ttftk[-1]:.2f} s)")
finally:
    srv.terminate()
    srv.wait(60)
