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
(decode_rows_total / decode_steps_total). On a shared machine wall-clock rates mostly measure the
other processes, so each side is also given per CPU-second: llama.cpp's decode tokens / the
process CPU time of its eval calls (time.process_time), the server's completion tokens / the CPU
time of the whole server process (/proc/PID/stat: every thread, HTTP included) over the run.
Peak memory: the server's VmHWM (/proc/PID/status: its peak resident set over the whole run,
K streams included) and the llama.cpp child's VmHWM (its own peak, one stream), with the Python
floor of that child (interpreter + numpy + llama_cpp imported, no model) alone.
The like-for-like anchor, K llama.cpp streams in one process (CHILD_K, llama-cpp-python's
low-level API, as llama.cpp's own batched example / server slots do): one llama_context with
n_seq_max K, a llama_batch with one seq_id per stream; the K prompts in one llama_decode, then
one row per live stream a step, greedy, the same ids and token counts; rate = generated tokens /
(prefill + decode) wall time, as the server's side (which also has HTTP). Two KV layouts:
  - "per-seq": kv_unified false (llama.cpp's advice for unrelated sequences), n_ctx K x --ctx:
    the same plan as `serve --slots K --ctx 512` (llama.cpp rounds each sequence's part up to a
    multiple of 256 cells, so it is also the least this layout takes for 23 + 256 positions);
  - "unified": kv_unified true, n_ctx K x (prompt + tokens) rounded up to 256: the smallest KV
    cache llama.cpp can run these K streams in.
Each stream's greedy ids are compared with the one-stream child's, and each of the server's K
streamed texts with its one stream's (and that with llama.cpp's one-stream text).
Not a test (bench/RESULTS.md records runs).

usage: .venv/bin/python bench/batch_vs_llamacpp.py [--streams 8] [--tokens 256] [--threads 1]
       [--reps 3] [--kv-cache f16|f32] [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
       [--loratune build/loratune]
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
ap.add_argument("--kv-cache", default="f16", choices=("f16", "f32"))
a = ap.parse_args()

ids = ivl.prompt_ids(a.model)
ids_s = ",".join(map(str, ids))


CHILD = r"""
import json, sys, time
import numpy as np
import llama_cpp
model, ids, t, n = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=t, n_threads_batch=t, verbose=False)
eos, nv = llm.token_eos(), llm.n_vocab()
llm.eval(ids)
gen, tg, cpu = [], 0.0, 0.0
while len(gen) < n:
    p = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    tok = int(np.argmax(np.ctypeslib.as_array(p, shape=(nv,))))
    gen.append(tok)
    if tok == eos or len(gen) == n:
        break
    t0, c0 = time.perf_counter(), time.process_time()
    llm.eval([tok])
    tg += time.perf_counter() - t0
    cpu += time.process_time() - c0
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"n_tg": len(gen) - 1, "tg": tg, "cpu": cpu, "gen": len(gen), "rss": hwm / 1024,
                  "toks": gen, "text": llm.detokenize(gen).decode("utf-8", "replace")}))
"""
# K streams in one llama.cpp process: argv model ids threads tokens K n_ctx kv_unified
CHILD_K = r"""
import ctypes, json, sys, time
import numpy as np
import llama_cpp as L
model_path, ids = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
t, n, k, n_ctx, unified = (int(x) for x in sys.argv[3:8])
L.llama_backend_init()
mp = L.llama_model_default_params()
model = L.llama_model_load_from_file(model_path.encode(), mp)
cp = L.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, 512, 512, k
cp.n_threads = cp.n_threads_batch = t
cp.kv_unified = bool(unified)
cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as llama_cpp.Llama's default
ctx = L.llama_init_from_model(model, cp)
vocab = L.llama_model_get_vocab(model)
eos, nv = L.llama_vocab_eos(vocab), L.llama_vocab_n_tokens(vocab)
batch = L.llama_batch_init(max(k * len(ids), k), 0, 1)


def put(i, tok, pos, seq, logits):
    batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
    batch.seq_id[i][0], batch.logits[i] = seq, logits


def argmax(i):
    return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(nv,))))


t0, c0 = time.perf_counter(), time.process_time()
# the K prompts in one batch (the same ids in K sequences), logits of each prompt's last token
m = 0
for s in range(k):
    for p, tok in enumerate(ids):
        put(m, tok, p, s, int(p == len(ids) - 1))
        m += 1
batch.n_tokens = m
assert L.llama_decode(ctx, batch) == 0
gen = [[argmax((s + 1) * len(ids) - 1)] for s in range(k)]
tp, cpp = time.perf_counter() - t0, time.process_time() - c0
# decode: one row per live sequence a step, until each has n tokens or its eos
while True:
    live = [s for s in range(k) if len(gen[s]) < n and gen[s][-1] != eos]
    if not live:
        break
    for i, s in enumerate(live):
        put(i, gen[s][-1], len(ids) + len(gen[s]) - 1, s, 1)
    batch.n_tokens = len(live)
    assert L.llama_decode(ctx, batch) == 0
    for i, s in enumerate(live):
        gen[s].append(argmax(i))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"wall": wall, "cpu": cpu, "prefill": tp, "prefill_cpu": cpp,
                  "gen": [len(g) for g in gen], "toks": gen, "rss": hwm / 1024}))
"""
# VmHWM, not ru_maxrss: Linux carries a forked child's high-water mark (the parent's size at the
# fork) over execve into ru_maxrss, and this parent is ~100 MiB
FLOOR = ("import numpy, llama_cpp\n"
         "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0] / 1024)")


def llamacpp():
    """one llama.cpp stream (as infer_vs_llamacpp.py's child, plus its CPU time)"""
    r = subprocess.run([sys.executable, "-c", CHILD, a.model, ids_s, str(a.threads), str(a.tokens)],
                       capture_output=True, text=True, check=True)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    return j["n_tg"] / j["tg"], j["n_tg"] / j["cpu"], j["gen"], j["rss"], j["toks"], j["text"]


def llamacpp_k(n_ctx, unified):
    """K llama.cpp streams in one process: (tokens/s, per CPU-s, generated, peak RSS MiB, ids)"""
    r = subprocess.run([sys.executable, "-c", CHILD_K, a.model, ids_s, str(a.threads), str(a.tokens),
                        str(a.streams), str(n_ctx), str(int(unified))],
                       capture_output=True, text=True, check=True)
    j = json.loads(r.stdout.strip().splitlines()[-1])
    n = sum(j["gen"])
    return n / j["wall"], n / j["cpu"], n, j["rss"], j["toks"]


def same_as(one, toks):
    """'8/8 equal' or the streams that differ and where they first do"""
    diff = []
    for s, t in enumerate(toks):
        if t != one:
            d = next((i for i, (x, y) in enumerate(zip(one, t)) if x != y), min(len(one), len(t)))
            diff.append(f"{s}@{d}")
    return f"{len(toks) - len(diff)}/{len(toks)} equal" + (" (stream@first differing token: "
                                                            + " ".join(diff) + ")" if diff else "")


CTX_TIGHT = -(-a.streams * (len(ids) + a.tokens) // 256) * 256


def hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


work = tempfile.mkdtemp(prefix="lt_bench_batch_")
env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
srv = subprocess.Popen([a.loratune, "serve", "--port", "0", "--workdir", work, "--model", a.model,
                        "--threads", str(a.threads), "--slots", str(a.streams), "--ctx", "512",
                        "--kv-cache", a.kv_cache],
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


TEXTS = {}  # stream count -> the texts of its last run


def stream(out, i):
    n, text = 0, []
    for ch in client.completions.create(model=name, prompt=ids, max_tokens=a.tokens, temperature=0,
                                        stream=True, stream_options={"include_usage": True}):
        if ch.usage:
            n = ch.usage.completion_tokens
        if ch.choices:
            text.append(ch.choices[0].text)
    out[i] = (n, "".join(text))


def serve(k):
    out = {}
    th = [threading.Thread(target=stream, args=(out, i)) for i in range(k)]
    s0, r0 = metric("loratune_decode_steps_total"), metric("loratune_decode_rows_total")
    c0 = cpu_s(srv.pid)
    t0 = time.time()
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.time() - t0
    c = cpu_s(srv.pid) - c0
    s1, r1 = metric("loratune_decode_steps_total"), metric("loratune_decode_rows_total")
    n = sum(v[0] for v in out.values())
    TEXTS[k] = [out[i][1] for i in range(k)]
    return n / wall, n / max(c, 1e-9), n, (r1 - r0) / max(s1 - s0, 1)


try:
    serve(1)  # warm-up: pages of the mapped file, allocator
    print(f"model {os.path.basename(a.model)}, prompt {len(ids)} ids, {a.tokens} greedy tokens at most, "
          f"{a.threads} thread(s), {a.streams} slots, {a.kv_cache} KV cache; {a.reps} rounds in turn",
          flush=True)
    R = {k: [] for k in ("c", "cc", "l1", "lc1", "lk", "lck", "mb", "p", "pc", "u", "uc")}
    rss_c, rss_p, rss_u = [], [], []
    for rep in range(a.reps):
        load = os.getloadavg()[0]
        c, cc, cg, rc, one, one_text = llamacpp()
        rss_c.append(rc)
        l1, lc1, n1, _ = serve(1)
        lk, lck, nk, mb = serve(a.streams)
        p, pc, pn, rp, tp = llamacpp_k(a.streams * 512, False)
        u, uc, un, ru, tu = llamacpp_k(CTX_TIGHT, True)
        rss_p.append(rp)
        rss_u.append(ru)
        for k, v in zip(R, (c, cc, l1, lc1, lk, lck, mb, p, pc, u, uc)):
            R[k].append(v)
        print(f"round {rep + 1} (load {load:.2f} -> {os.getloadavg()[0]:.2f}): llama.cpp 1 stream "
              f"{c:.1f} tokens/s, {cc:.1f} per CPU-s ({cg} generated); loratune serve 1 stream {l1:.1f}, "
              f"{lc1:.1f} per CPU-s ({n1}); {a.streams} streams {lk:.1f} aggregate, {lck:.1f} per CPU-s "
              f"({nk} tokens, mean batch {mb:.2f}); llama.cpp {a.streams} streams per-seq KV "
              f"(n_ctx {a.streams * 512}) {p:.1f}, {pc:.1f} per CPU-s ({pn}, peak {rp:.1f} MiB, "
              f"{same_as(one, tp)} to its 1 stream); unified KV (n_ctx {CTX_TIGHT}) {u:.1f}, {uc:.1f} "
              f"per CPU-s ({un}, peak {ru:.1f} MiB, {same_as(one, tu)}); loratune's {a.streams} texts: "
              f"{sum(t == TEXTS[1][0] for t in TEXTS[a.streams])}/{a.streams} equal to its 1 stream's, "
              f"which shares its first {len(os.path.commonprefix([TEXTS[1][0], one_text]))} of "
              f"{len(one_text)} characters with llama.cpp's one-stream text",
              flush=True)
    m = {k: statistics.median(v) for k, v in R.items()}
    print()
    print("| system | streams | tokens/s (wall, aggregate) | vs one llama.cpp stream | tokens per CPU-second | vs one llama.cpp stream |")
    print("|---|---|---|---|---|---|")
    print(f"| llama.cpp (llama-cpp-python, decode only) | 1 | {m['c']:.1f} | 1.00x | {m['cc']:.1f} | 1.00x |")
    print(f"| loratune serve (openai client) | 1 | {m['l1']:.1f} | {m['l1'] / m['c']:.2f}x | "
          f"{m['lc1']:.1f} | {m['lc1'] / m['cc']:.2f}x |")
    print(f"| loratune serve (openai client) | {a.streams} | {m['lk']:.1f} | **{m['lk'] / m['c']:.2f}x** | "
          f"{m['lck']:.1f} | **{m['lck'] / m['cc']:.2f}x** |")
    print(f"| llama.cpp {a.streams} streams, one process, per-seq KV (n_ctx {a.streams} x 512) | "
          f"{a.streams} | {m['p']:.1f} | {m['p'] / m['c']:.2f}x | {m['pc']:.1f} | {m['pc'] / m['cc']:.2f}x |")
    print(f"| llama.cpp {a.streams} streams, one process, unified KV (n_ctx {CTX_TIGHT}) | "
          f"{a.streams} | {m['u']:.1f} | {m['u'] / m['c']:.2f}x | {m['uc']:.1f} | {m['uc'] / m['cc']:.2f}x |")
    print(f"loratune {a.streams} streams / llama.cpp {a.streams} streams: per-seq {m['lk'] / m['p']:.2f}x "
          f"wall, {m['lck'] / m['pc']:.2f}x per CPU-s; unified {m['lk'] / m['u']:.2f}x wall, "
          f"{m['lck'] / m['uc']:.2f}x per CPU-s")
    print(f"mean batch of the {a.streams}-stream runs: {m['mb']:.2f} rows per decode step")
    floor = float(subprocess.run([sys.executable, "-c", FLOOR], capture_output=True, text=True,
                                 check=True).stdout.strip())
    hw = hwm_mib(srv.pid)
    with open(f"/proc/{srv.pid}/status") as f:
        now = [int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:")][0]
    print(f"loratune serve resident now, every request ended (their KV pages given back): "
          f"{now:.1f} MiB")
    print(f"peak RSS: loratune serve ({a.streams} slots, {a.kv_cache} KV cache, the whole run) "
          f"{hw:.1f} MiB; llama.cpp child (1 stream) {max(rss_c):.1f} MiB, of which the Python "
          f"floor {floor:.1f} MiB -> {max(rss_c) - floor:.1f} MiB without it; ratio "
          f"{hw / (max(rss_c) - floor):.2f}x of that")
    for what, r in ((f"per-seq KV, n_ctx {a.streams * 512}", max(rss_p)),
                    (f"unified KV, n_ctx {CTX_TIGHT}", max(rss_u))):
        print(f"peak RSS, {a.streams} streams each: loratune serve {hw:.1f} MiB vs llama.cpp ({what}) "
              f"{r:.1f} MiB -> {r - floor:.1f} MiB without the Python floor; loratune / llama.cpp "
              f"{hw / r:.2f}x as processes, {hw / (r - floor):.2f}x of llama.cpp less its floor "
              f"(+10% goal: <= 1.10x)")
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
finally:
    srv.terminate()
    srv.wait(timeout=60)
