"""test_serve_openai.py - `loratune serve --model` through the real `openai` Python client (PyPI)
on loopback, with the real SmolLM2-135M-Instruct Q4_1 GGUF:

  1. /health, /ready, /v1/models (the base and the adapters given with --adapter; a corrupt one
     is reported on stderr and not served, the others are).
  2. Greedy chat and completions equal `loratune generate` with the same prompt / template (an
     independent path); usage counts equal the HF tokenizer's counts (SmolLM's tokenizer.json,
     the chat template rendered by jinja2); streamed chunks concatenate to the plain text; stop
     strings cut the text (plain and streamed); max_tokens; a seed repeats a sampled text.
  3. Adapters: --adapter NAME=PATH serves the adapter's text (= `loratune generate --adapter`);
     POST /v1/adapters loads one at run time, DELETE unloads it (404 afterwards) while a stream
     using it finishes unharmed; a corrupt file is a 400 naming it, and the others keep serving.
  4. Concurrent requests (base, adapter, streamed) give the texts they give alone.
  5. Bad requests: bad JSON, unknown model (404), max_tokens over the context, a prompt over the
     context, bad temperature, n=2: clear 400s through the client's exceptions.
  6. A short request finishes while a long stream runs (turns are taken token by token); a client
     that disconnects mid-stream frees its slot: the running gauge returns to 0, a 499 is
     counted, and the next request is served.
  7. Bad command lines and a model that cannot be loaded: clear messages, /ready says why.
  8. Past --max-queue: 503 (plain and streamed); a client that leaves while queued frees its place.
  9. --compute-dtype bf16: /ready says so, and a greedy completion equals `loratune generate
     --compute-dtype bf16`.
Takes ~30-60 s on the 2-core machine. Prints "N passed, M failed".
"""
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oaikit  # noqa: E402
from oaikit import BASE  # noqa: E402
import servekit  # noqa: E402

SPEC = servekit.load_spec()

oaikit.need_model()
try:
    import openai
except ImportError:
    print("skipped: the openai package is missing (tools/requirements.txt)")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_oai_")
MODELS = os.path.join(TMP, "models")  # what POST /v1/adapters may name
good = oaikit.write_lora(os.path.join(MODELS, "good"), seed=1)
bad = oaikit.write_corrupt(os.path.join(MODELS, "bad"), good)
CTX = 512
srv = oaikit.start(os.path.join(TMP, "work"), "--models", MODELS, "--slots", "2", "--ctx", str(CTX),
                   "--adapter", f"styled={good}", "--adapter", f"broken={bad}")
URL = srv.url
client = openai.OpenAI(base_url=URL + "/v1", api_key="none", max_retries=0, timeout=600)
hf = oaikit.hf_tokenizer()

try:
    # ---- 1. health, ready, models --------------------------------------------------------------
    r = requests.get(URL + "/health", timeout=10)
    check(r.status_code == 200 and r.json()["status"] == "ok", f"/health: {r.text}")
    r = requests.get(URL + "/ready", timeout=10)
    check(r.status_code == 200 and r.json() == {"status": "ready", "model": BASE, "compute_dtype": "f32", "kv_cache": "f16", "device": "cpu"}, f"/ready: {r.text}")
    ids = [m.id for m in client.models.list().data]
    check(ids == [BASE, "styled"], f"/v1/models through the client: {ids}")
    servekit.conforms(SPEC, "OAIModelList", requests.get(URL + "/v1/models", timeout=10).json(), "GET /v1/models")
    servekit.conforms(SPEC, "ChatCompletion", requests.post(URL + "/v1/chat/completions", json={
        "model": "styled", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 3}, timeout=600).json(), "POST /v1/chat/completions")
    servekit.conforms(SPEC, "Completion", requests.post(URL + "/v1/completions", json={
        "model": BASE, "prompt": [504, 3458], "max_tokens": 2.0}, timeout=600).json(), "POST /v1/completions (ids)")

    # ---- 2. greedy = loratune generate; usage = HF tokenizer counts -----------------------------
    Q = "What is the capital of France? Answer in one sentence."
    msgs = [{"role": "user", "content": Q}]
    c = client.chat.completions.create(model=BASE, messages=msgs, temperature=0, max_tokens=48)
    text = c.choices[0].message.content
    want = oaikit.generate("--chat", Q, "--max-tokens", "48")
    check(text == want, f"chat greedy: server {text!r} vs loratune generate {want!r}")
    check(c.object == "chat.completion" and c.model == BASE and c.choices[0].message.role == "assistant",
          f"chat completion fields: {c}")
    n_prompt = len(hf.encode(oaikit.chat_prompt(msgs)).ids)
    check(c.usage.prompt_tokens == n_prompt,
          f"usage.prompt_tokens {c.usage.prompt_tokens} vs HF tokenizer on the Jinja rendering {n_prompt}")
    fin = c.choices[0].finish_reason
    n_text = len(hf.encode(text).ids)
    # an end-of-turn token ended it (counted) or max_tokens did
    check((fin == "stop" and c.usage.completion_tokens == n_text + 1) or
          (fin == "length" and c.usage.completion_tokens == 48 == n_text),
          f"usage.completion_tokens {c.usage.completion_tokens}, finish {fin}, HF count of the text {n_text}")
    check(c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens, "total_tokens")

    # streamed chat: the chunks concatenate to the plain text; usage chunk when asked
    parts, finishes, usage, roles = [], [], None, []
    for ch in client.chat.completions.create(model=BASE, messages=msgs, temperature=0, max_tokens=48,
                                             stream=True, stream_options={"include_usage": True}):
        check(ch.object == "chat.completion.chunk", f"chunk object {ch.object}")
        if ch.usage:
            usage = ch.usage
        for choice in ch.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    check("".join(parts) == text, f"streamed chat {''.join(parts)!r} vs plain {text!r}")
    check(len(parts) > 3, f"streamed in pieces ({len(parts)})")
    check(roles == ["assistant"] and finishes == [fin], f"stream roles {roles}, finishes {finishes}")
    check(usage is not None and usage.prompt_tokens == c.usage.prompt_tokens and
          usage.completion_tokens == c.usage.completion_tokens, f"stream usage {usage} vs {c.usage}")

    # completions: plain text, max_tokens, stop strings
    P = "The three primary colors are"
    t = client.completions.create(model=BASE, prompt=P, temperature=0, max_tokens=16)
    ctext = t.choices[0].text
    want = oaikit.generate("--prompt", P, "--max-tokens", "16")
    check(ctext == want, f"completion greedy: server {ctext!r} vs loratune generate {want!r}")
    check(t.object == "text_completion" and t.choices[0].finish_reason == "length" and
          t.usage.completion_tokens == 16, f"max_tokens 16: {t.choices[0].finish_reason} {t.usage}")
    check(t.usage.prompt_tokens == len(hf.encode(P).ids),
          f"completion prompt_tokens {t.usage.prompt_tokens} vs HF {len(hf.encode(P).ids)}")
    check(len(hf.encode(ctext).ids) == 16, f"HF re-encodes the 16 tokens' text to 16 ({ctext!r})")
    t1 = client.completions.create(model=BASE, prompt=P, temperature=0, max_tokens=1)
    check(t1.usage.completion_tokens == 1 and ctext.startswith(t1.choices[0].text),
          f"max_tokens 1: {t1.choices[0].text!r} {t1.usage}")
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model=BASE, prompt=P, temperature=0, max_tokens=16, stream=True) if ch.choices)
    check(streamed == ctext, f"streamed completion {streamed!r} vs {ctext!r}")
    # a stop string in the middle of the greedy text: the text before it, finish "stop"
    words = ctext.split()
    stop = " " + words[len(words) // 2] if len(words) > 2 else ctext[len(ctext) // 2:]
    cut = ctext[: ctext.index(stop)]
    ts = client.completions.create(model=BASE, prompt=P, temperature=0, max_tokens=16,
                                   stop=["\u2603never", stop])
    check(ts.choices[0].text == cut and ts.choices[0].finish_reason == "stop",
          f"stop {stop!r}: {ts.choices[0].text!r} ({ts.choices[0].finish_reason}) vs {cut!r}")
    st = "".join(ch.choices[0].text for ch in client.completions.create(
        model=BASE, prompt=P, temperature=0, max_tokens=16, stop=stop, stream=True) if ch.choices)
    check(st == cut, f"streamed with stop {stop!r}: {st!r} vs {cut!r}")
    # sampling with a seed repeats; temperature / top_p are taken
    a = client.completions.create(model=BASE, prompt=P, temperature=1.0, top_p=0.9, seed=7, max_tokens=12)
    b = client.completions.create(model=BASE, prompt=P, temperature=1.0, top_p=0.9, seed=7, max_tokens=12)
    check(a.choices[0].text == b.choices[0].text, f"seed 7 twice: {a.choices[0].text!r} vs {b.choices[0].text!r}")

    # ---- 3. adapters ----------------------------------------------------------------------------
    sty = client.chat.completions.create(model="styled", messages=msgs, temperature=0, max_tokens=32)
    want = oaikit.generate("--chat", Q, "--max-tokens", "32", "--adapter", good)
    check(sty.choices[0].message.content == want,
          f"adapter greedy: server {sty.choices[0].message.content!r} vs loratune generate --adapter {want!r}")
    check(sty.model == "styled" and sty.choices[0].message.content != text[:len(sty.choices[0].message.content)],
          f"the adapter changes the text: {sty.choices[0].message.content!r} vs base {text!r}")
    r = requests.post(URL + "/v1/adapters", json={"name": "late", "source": "good"}, timeout=600)
    check(r.status_code == 201 and r.json()["name"] == "late" and r.json()["r"] == 4,
          f"POST /v1/adapters: {r.status_code} {r.text[:300]}")
    late = client.chat.completions.create(model="late", messages=msgs, temperature=0, max_tokens=32)
    check(late.choices[0].message.content == sty.choices[0].message.content,
          "an adapter loaded at run time gives the same text as at start")
    r = requests.post(URL + "/v1/adapters", json={"name": "late", "source": "good"}, timeout=60)
    check(r.status_code == 409, f"loading a taken name: {r.status_code}")
    r = requests.post(URL + "/v1/adapters", json={"name": "bad2", "source": "bad"}, timeout=60)
    err = r.json().get("error", {})
    check(r.status_code == 400 and err.get("code") == "bad_adapter" and
          "adapter_model.safetensors" in err.get("message", "") and TMP not in err.get("message", ""),
          f"corrupt adapter at run time: {r.status_code} {r.text[:400]}")
    # a train job's adapter (WORK/jobs/ID/out, where a job writes it): placed here by hand
    jout = os.path.join(TMP, "work", "jobs", "job_0123456789abcdef", "out")
    shutil.copytree(good, jout)
    r = requests.post(URL + "/v1/adapters", json={"name": "fromjob", "job": "job_0123456789abcdef"}, timeout=600)
    check(r.status_code == 201 and r.json()["source"] == "WORK/jobs/job_0123456789abcdef/out",
          f"POST /v1/adapters from a job: {r.status_code} {r.text[:300]}")
    r = requests.delete(URL + "/v1/adapters/fromjob", timeout=60)
    check(r.status_code == 200 and r.json()["in_flight"] == 0, f"DELETE fromjob: {r.text}")
    r = requests.post(URL + "/v1/adapters", json={"name": "y", "job": "job_fedcba9876543210"}, timeout=60)
    check(r.status_code == 404 and r.json()["error"]["param"] == "job", f"a job without adapter: {r.text[:300]}")
    r = requests.post(URL + "/v1/adapters", json={"name": "x", "source": "../etc"}, timeout=60)
    check(r.status_code == 400, f"source outside the models folder: {r.status_code} {r.text[:200]}")
    r = requests.get(URL + "/v1/adapters", timeout=10)
    servekit.conforms(SPEC, "AdapterList", r.json(), "GET /v1/adapters")
    check(sorted(a["name"] for a in r.json()["data"]) == ["late", "styled"], f"GET /v1/adapters {r.text[:300]}")
    # unloading while a stream uses it: the stream finishes with the adapter's text
    stream = client.chat.completions.create(model="late", messages=msgs, temperature=0, max_tokens=32,
                                            stream=True)
    it = iter(stream)
    got = []
    for ch in it:
        if ch.choices and ch.choices[0].delta.content:
            got.append(ch.choices[0].delta.content)
            break
    r = requests.delete(URL + "/v1/adapters/late", timeout=60)
    servekit.conforms(SPEC, "AdapterDeleted", r.json(), "DELETE /v1/adapters/late")
    check(r.status_code == 200 and r.json()["in_flight"] == 1, f"DELETE in flight: {r.status_code} {r.text}")
    for ch in it:
        if ch.choices and ch.choices[0].delta.content:
            got.append(ch.choices[0].delta.content)
    check("".join(got) == sty.choices[0].message.content, f"the stream outlived its unload: {''.join(got)!r}")
    try:
        client.chat.completions.create(model="late", messages=msgs, max_tokens=2)
        check(False, "an unloaded adapter still answers")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and "late" in str(e), f"unloaded adapter: {e}")
    r = requests.delete(URL + "/v1/adapters/late", timeout=60)
    check(r.status_code == 404, f"DELETE twice: {r.status_code}")
    ids = [m.id for m in client.models.list().data]
    check(ids == [BASE, "styled"], f"models after unload: {ids}")

    # ---- 4. concurrent requests give their own texts --------------------------------------------
    res = {}

    def job(key, model, stream):
        kw = dict(model=model, messages=msgs, temperature=0, max_tokens=24)
        if stream:
            res[key] = "".join(ch.choices[0].delta.content or "" for ch in
                               client.chat.completions.create(stream=True, **kw) if ch.choices)
        else:
            res[key] = client.chat.completions.create(**kw).choices[0].message.content
    ths = [threading.Thread(target=job, args=("b", BASE, False)),
           threading.Thread(target=job, args=("s", "styled", False)),
           threading.Thread(target=job, args=("bs", BASE, True)),
           threading.Thread(target=job, args=("ss", "styled", True))]
    for th in ths:
        th.start()
    for th in ths:
        th.join(600)
    alone_b = client.chat.completions.create(model=BASE, messages=msgs, temperature=0, max_tokens=24)
    alone_s = client.chat.completions.create(model="styled", messages=msgs, temperature=0, max_tokens=24)
    check(res.get("b") == res.get("bs") == alone_b.choices[0].message.content,
          f"concurrent base {res.get('b')!r} / {res.get('bs')!r} vs alone {alone_b.choices[0].message.content!r}")
    check(res.get("s") == res.get("ss") == alone_s.choices[0].message.content,
          f"concurrent adapter {res.get('s')!r} / {res.get('ss')!r} vs alone {alone_s.choices[0].message.content!r}")

    # ---- 5. bad requests -------------------------------------------------------------------------
    r = requests.post(URL + "/v1/chat/completions", data=b'{"model": "x", "messages": [', timeout=10,
                      headers={"Content-Type": "application/json"})
    check(r.status_code == 400 and r.json()["error"]["code"] == "bad_json" and
          "invalid JSON" in r.json()["error"]["message"], f"bad JSON: {r.status_code} {r.text}")
    n404 = oaikit.metric(URL, "loratune_requests_total", {"model": "unknown", "endpoint": "chat", "status": "404"})
    try:
        client.chat.completions.create(model="nope", messages=msgs)
        check(False, "unknown model accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and "nope" in e.message and BASE in e.message, f"unknown model: {e.message}")
    for kw, word in [(dict(max_tokens=CTX + 100), "context"), (dict(temperature=5), "temperature"),
                     (dict(n=2), "n:"), (dict(stop=["a", "b", "c", "d", "e"]), "stop")]:
        try:
            client.chat.completions.create(model=BASE, messages=msgs, **kw)
            check(False, f"{kw} accepted")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and word in e.message, f"{kw}: {e.message}")
    try:
        client.completions.create(model=BASE, prompt="word " * (CTX + 10), max_tokens=4)
        check(False, "a prompt over the context accepted")
    except openai.BadRequestError as e:
        check(e.code == "context_length_exceeded" and str(CTX) in e.message, f"long prompt: {e.message}")
    r = requests.post(URL + "/v1/chat/completions", json={"model": BASE, "messages": msgs, "max_tokns": 3},
                      timeout=10)
    check(r.status_code == 400 and r.json()["error"]["param"] == "max_tokns", f"unknown field: {r.text}")
    servekit.conforms(SPEC, "OAIError", r.json(), "400 unknown field")
    r = requests.post(URL + "/v1/chat/completions", json={"model": BASE, "messages": [{"role": "wizard",
                      "content": "hi"}]}, timeout=10)
    check(r.status_code == 400 and "wizard" in r.json()["error"]["message"], f"bad role: {r.text}")

    # ---- 6. a client that goes away mid-stream frees its slot -----------------------------------
    before = oaikit.metric(URL, "loratune_requests_total",
                           {"model": BASE, "endpoint": "completions", "status": "499"}) or 0
    body = json.dumps({"model": BASE, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": CTX - 20,
                       "temperature": 0, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    while seen.count(b"data: ") < 3:
        seen += sock.recv(4096)
    check(oaikit.metric(URL, "loratune_requests_running") == 1, "one request running mid-stream")
    # requests take turns token by token: a short one is not held back until the long one ends
    t0 = time.time()
    short = client.completions.create(model=BASE, prompt=P, temperature=0, max_tokens=4)
    check(short.choices[0].text == ctext[: len(short.choices[0].text)] and
          oaikit.metric(URL, "loratune_requests_running") == 1,
          f"a short request finished ({time.time() - t0:.1f}s) while the long stream still runs")
    sock.close()
    t0 = time.time()
    while time.time() - t0 < 30 and oaikit.metric(URL, "loratune_requests_running") != 0:
        time.sleep(0.2)
    freed = time.time() - t0
    check(oaikit.metric(URL, "loratune_requests_running") == 0, "the slot is freed after the client left")
    check(freed < 15, f"freed within {freed:.1f}s (a full generation would take minutes)")
    after = oaikit.metric(URL, "loratune_requests_total",
                          {"model": BASE, "endpoint": "completions", "status": "499"})
    check(after == before + 1, f"499 counted: {before} -> {after}")
    t = client.completions.create(model=BASE, prompt=P, temperature=0, max_tokens=4)
    check(t.choices[0].text == ctext[: len(t.choices[0].text)], "served after the disconnect")
    m = oaikit.metric(URL, "loratune_requests_total", {"model": "unknown", "endpoint": "chat", "status": "404"})
    check(n404 is not None and m == n404 + 1, f"an unknown model's 404 counted under model=\"unknown\": {n404} -> {m}")
finally:
    code, out, err = srv.stop()
    check(code == 0, f"server exit code {code}: {err[-2000:]}")
    check("broken" in err and "adapter_model.safetensors" in err and "styled" not in err,
          f"the corrupt --adapter is reported on stderr, the good one not: {err[-1500:]}")

# ---- 7. bad command lines; a model that cannot be loaded -----------------------------------------
r = ltcheck.run("serve", "--port", "0", "--adapter", "x=y", timeout=60)
check(r.returncode == 2 and "need --model" in r.stderr, f"--adapter without --model: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--kv-cache", "f32", timeout=60)
check(r.returncode == 2 and "need --model" in r.stderr, f"--kv-cache without --model: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--model", oaikit.SMOL, "--kv-cache", "q8", timeout=60)
check(r.returncode == 2 and "--kv-cache: expected f16 or f32, got 'q8'" in r.stderr,
      f"--kv-cache q8: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--model", oaikit.SMOL, "--compute-dtype", "fp8", timeout=60)
check(r.returncode == 2 and "--compute-dtype: expected f32, bf16 or auto, got 'fp8'" in r.stderr,
      f"--compute-dtype fp8: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--compute-dtype", "bf16", timeout=60)
check(r.returncode == 2 and "need --model" in r.stderr, f"--compute-dtype without --model: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--model", oaikit.SMOL, "--device", "gpu", timeout=60)
check(r.returncode == 2 and "--device: expected cpu, cuda, auto or cpu-as-device, got 'gpu'" in r.stderr,
      f"--device gpu: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--device", "cuda", timeout=60)
check(r.returncode == 2 and "need --model" in r.stderr, f"--device without --model: {r.returncode} {r.stderr}")
r = ltcheck.run("serve", "--port", "0", "--workdir", os.path.join(TMP, "w2"), "--model", oaikit.SMOL,
                "--adapter", "noequals", timeout=60)
check(r.returncode == 1 and "NAME=PATH" in r.stderr, f"--adapter without '=': {r.returncode} {r.stderr}")
missing = os.path.join(TMP, "no-such-model.gguf")
srv2 = servekit.Server(os.path.join(TMP, "w3"), "--model", missing)
try:
    t0 = time.time()
    while time.time() - t0 < 30:
        r = requests.get(srv2.url + "/ready", timeout=10)
        if r.json().get("status") != "loading":
            break
        time.sleep(0.1)
    check(r.status_code == 503 and r.json()["status"] == "failed" and "no-such-model.gguf" in r.json()["error"],
          f"/ready with a model that cannot be loaded: {r.status_code} {r.text[:300]}")
    r = requests.get(srv2.url + "/v1/models", timeout=10)
    check(r.status_code == 503 and r.json()["error"]["code"] == "model_failed", f"/v1/models then: {r.text[:300]}")
    check(requests.get(srv2.url + "/health", timeout=10).status_code == 200, "/health stays 200")
finally:
    code, _, err = srv2.stop()
    check(code == 0 and "no-such-model.gguf" in err, f"stderr names the model: {code} {err[-500:]}")

# ---- 8. a full queue: 503; a client that leaves while queued frees its place ---------------------
srv3 = oaikit.start(os.path.join(TMP, "w4"), "--slots", "1", "--max-queue", "1", "--ctx", str(CTX))
try:
    def raw_stream(port):
        body = json.dumps({"model": BASE, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": CTX - 20,
                           "temperature": 0, "stream": True}).encode()
        k = socket.create_connection(("127.0.0.1", port), timeout=60)
        k.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return k
    a_sock = raw_stream(srv3.port)
    seen = b""
    while seen.count(b"data: ") < 2:
        seen += a_sock.recv(4096)
    b_sock = raw_stream(srv3.port)
    t0 = time.time()
    while time.time() - t0 < 20 and oaikit.metric(srv3.url, "loratune_requests_queued") != 1:
        time.sleep(0.1)
    check(oaikit.metric(srv3.url, "loratune_requests_queued") == 1, "the second stream waits in the queue")
    c3 = openai.OpenAI(base_url=srv3.url + "/v1", api_key="none", max_retries=0, timeout=60)
    for stream_it in (False, True):
        try:
            c3.completions.create(model=BASE, prompt="x", max_tokens=2, stream=stream_it)
            check(False, "a request past --max-queue accepted")
        except openai.APIStatusError as e:
            check(e.status_code == 503 and "queue" in e.message, f"queue full (stream={stream_it}): {e.status_code} {e.message}")
    b_sock.close()  # leaves while queued: noticed when its wait wakes, without a token to write
    t0 = time.time()
    while time.time() - t0 < 15 and oaikit.metric(srv3.url, "loratune_requests_queued") != 0:
        time.sleep(0.1)
    a_sock.close()
    while time.time() - t0 < 30 and oaikit.metric(srv3.url, "loratune_requests_running") != 0:
        time.sleep(0.1)
    check(oaikit.metric(srv3.url, "loratune_requests_queued") == 0 and
          oaikit.metric(srv3.url, "loratune_requests_running") == 0, "queue and slot freed after both left")
    t = c3.completions.create(model=BASE, prompt=P, temperature=0, max_tokens=4)
    check(t.choices[0].text == ctext[: len(t.choices[0].text)], "served after the queue emptied")
finally:
    code, _, err = srv3.stop()
    check(code == 0, f"server 3 exit code {code}: {err[-500:]}")

# ---- 9. --compute-dtype bf16: the base products in bf16, as `loratune generate --compute-dtype bf16`
srv4 = oaikit.start(os.path.join(TMP, "w5"), "--slots", "2", "--ctx", "256", "--compute-dtype", "bf16")
try:
    rd = requests.get(srv4.url + "/ready", timeout=10).json()
    check(rd.get("compute_dtype") == "bf16" and rd.get("kv_cache") == "f16", f"/ready of a bf16 server: {rd}")
    c4 = openai.OpenAI(base_url=srv4.url + "/v1", api_key="none", max_retries=0, timeout=600)
    P16 = "Write one sentence about the sea, the wind and the small boats of the harbour:"
    t = c4.completions.create(model=BASE, prompt=P16, temperature=0, max_tokens=24)
    want = oaikit.generate("--prompt", P16, "--max-tokens", "24", "--compute-dtype", "bf16")
    check(t.choices[0].text == want, f"bf16 server {t.choices[0].text!r} vs generate --compute-dtype bf16 {want!r}")
finally:
    code, _, err = srv4.stop()
    check(code == 0, f"server 4 exit code {code}: {err[-500:]}")

sys.exit(ltcheck.finish())
