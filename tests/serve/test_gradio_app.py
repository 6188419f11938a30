"""test_gradio_app.py - the optional Gradio front end (clients/gradio/app.py) driven with
gradio_client (PyPI, Gradio's own client) against a real `loratune serve --model` started here
on a free loopback port (stories260K for training, the real SmolLM2-135M-Instruct Q4_1 for chat),
the app itself started with the .venv-gradio Python (tools/setup.sh; clients/gradio/requirements.txt):

- upload: a file whose line 4 is broken gives the server's error naming line 4; a valid file
  gives a dataset id that GET /api/datasets lists, and its validation;
- validate with a model: the tokenized statistics (tokens) as the server computes them;
- train: a 10-step LoRA job streamed through the app's generator: several progress updates,
  the last "done"; the loss table's steps 1..10 and losses equal the job's events read from the
  server's SSE stream;
- download: the app's adapter.zip passes testzip and its adapter_model.safetensors equals the
  server's single-file download;
- chat: the answer streams (several partial conversations), and at temperature 0 equals
  `loratune generate --chat ... --temp 0` (an independent path);
- errors: no file, an unknown dataset: the app raises the server's message, no crash.
This file runs itself again with .venv-gradio's Python (Gradio stays out of the test venv).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

GPY = os.path.join(ltcheck.SOURCE_DIR, ".venv-gradio", "bin", "python")
try:
    import gradio_client  # noqa: F401
    import httpx
except ImportError:
    if os.path.exists(GPY) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(GPY))):
        os.execv(GPY, [GPY, os.path.abspath(__file__), *sys.argv[1:]])
    print(f"skipped: gradio / gradio_client not installed ({GPY} missing: run tools/setup.sh)")
    sys.exit(77)
from gradio_client import Client, handle_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402

SMOL = os.path.join(ltcheck.SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
BASE = "SmolLM2-135M-Instruct.Q4_1"
if not os.path.exists(SMOL):
    print(f"skipped: {SMOL} missing (tools/fetch_smollm2.sh)")
    sys.exit(77)
APP = os.path.join(ltcheck.SOURCE_DIR, "clients", "gradio", "app.py")
TMP = tempfile.mkdtemp(prefix="lt_gradio_")
Q = "What is the capital of France? Answer in one sentence."


def free_port():
    return servekit.free_port()


def wait_http(url, limit=120, ok=(200,)):
    t0 = time.time()
    while time.time() - t0 < limit:
        try:
            if httpx.get(url, timeout=5).status_code in ok:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def raises(fn, contains, what):
    try:
        fn()
    except Exception as e:  # gradio_client raises AppError with the app's message
        check(contains in str(e), f"{what}: error {str(e)[:300]!r} lacks {contains!r}")
        return
    check(False, f"{what}: no error")


def main():
    srv = servekit.Server(os.path.join(TMP, "work"), "--model", SMOL, "--threads", "1",
                          "--slots", "1", "--ctx", "512")
    check(wait_http(srv.url + "/ready"), "the server's model is ready")
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    app = subprocess.Popen([sys.executable, APP, "--server", srv.url, "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        if not wait_http(url, 120):
            app.kill()
            check(False, f"the Gradio app did not start: {app.communicate()[0][-2000:]}")
            return
        run(srv.url, Client(url, verbose=False, download_files=os.path.join(TMP, "dl")))
    finally:
        app.terminate()
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-800:]}")


def run(su, c):
    lines = servekit.wikisql_lines(60)
    bad = os.path.join(TMP, "broken.jsonl")
    with open(bad, "w") as f:
        f.writelines(lines[:3] + ['{"text": "unterminated\n'] + lines[4:8])
    ds_id, text = c.predict(handle_file(bad), api_name="/upload")
    check("Line 4" in text and "broken.jsonl:4" in text, f"broken upload: {text!r}")
    good = os.path.join(TMP, "train.jsonl")
    with open(good, "w") as f:
        f.writelines(lines)
    ds_id, text = c.predict(handle_file(good), api_name="/upload")
    listed = httpx.get(su + "/api/datasets").json()["datasets"]
    check(any(d["id"] == ds_id for d in listed), f"the uploaded dataset {ds_id} is listed")
    v = next(d for d in listed if d["id"] == ds_id)["validation"]
    check(text.startswith("valid") and f"{v['splits']['train']['examples']} examples" in text,
          f"validation shown: {text!r} vs {v}")
    vt = c.predict(ds_id, servekit.MODEL, api_name="/validate")
    want = httpx.post(f"{su}/api/datasets/{ds_id}/validate", json={"model": servekit.MODEL}, timeout=120).json()
    check(f"{want['splits']['train']['tokens']} tokens" in vt, f"tokenized validation: {vt!r}")

    # ---- train, live
    job = c.submit(ds_id, servekit.MODEL, 10, 4, 5e-4, api_name="/train")
    job.result(timeout=300)
    outs = job.outputs()
    jid = outs[-1][0]
    progress = [o[1] for o in outs]
    check(len(progress) >= 10 and "done" in progress[-1], f"progress updates: {len(progress)}, last {progress[-1:]!r}")
    check(any("step 5 / 10" in p for p in progress), f"a step in the progress: {progress[:6]}")
    table = outs[-1][2]
    rows = table["data"] if isinstance(table, dict) else table
    got = [(int(r[0]), float(r[1])) for r in rows if r[1] not in (None, "", "NaN")]
    evs = []
    with httpx.stream("GET", f"{su}/api/jobs/{jid}/events", timeout=60) as r:
        for _, kind, d in sse_httpx(r):
            evs.append(d)
    want = [(e["step"], e["loss"]) for e in evs if e.get("event") == "step"]
    check([s for s, _ in got] == list(range(1, 11)) and got == want, f"losses in the app = the job's events: {got} vs {want}")

    # ---- download
    path = c.predict(jid, api_name="/download")
    with zipfile.ZipFile(path) as z:
        check(z.testzip() is None, "adapter.zip is a valid zip")
        inner = z.read("adapter_model.safetensors")
    single = httpx.get(f"{su}/api/jobs/{jid}/adapter/adapter_model.safetensors").content
    check(inner == single and len(single) > 1000, "the zip's adapter_model.safetensors = the single-file download")

    # ---- chat, streamed; greedy = loratune generate
    job = c.submit(Q, [], BASE, 0, 24, "", api_name="/chat")
    job.result(timeout=300)
    outs = job.outputs()
    texts = [content_text(o[0][-1]["content"]) if o[0] else "" for o in outs]
    partial = [t for t in dict.fromkeys(texts) if t]
    check(len(partial) >= 3 and all(partial[i + 1].startswith(partial[i]) for i in range(len(partial) - 1)),
          f"the answer streamed (growing partial texts): {partial[:4]}")
    r = ltcheck.run("generate", "--model", SMOL, "--temp", "0", "--threads", "1", "--quiet",
                    "--chat", Q, "--max-tokens", "24", timeout=600)
    want = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    check(texts[-1] == want, f"chat answer {texts[-1]!r} != loratune generate {want!r}")
    first = outs[-1][0][0]
    check(first["role"] == "user" and content_text(first["content"]) == Q,
          f"the conversation holds the question: {first}")

    # ---- errors reach the user as the server's message
    raises(lambda: c.predict(None, api_name="/upload"), "choose a file", "upload without a file")
    raises(lambda: c.predict("ds_0000000000000000", "", api_name="/validate"), "404", "unknown dataset")


def content_text(c):
    """A Chatbot message's text: a string, or (Gradio 6) a list of {"type": "text", "text"} parts."""
    if isinstance(c, str):
        return c
    return "".join(p.get("text", "") for p in c if isinstance(p, dict))


def sse_httpx(resp):
    """(id, event, data) of a text/event-stream response read with httpx."""
    eid, kind, data = None, None, []
    for raw in resp.iter_lines():
        if raw == "":
            if data:
                yield eid, kind, json.loads("\n".join(data))
            eid, kind, data = None, None, []
        elif raw.startswith(":"):
            continue
        else:
            field, _, value = raw.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                eid = int(value)
            elif field == "event":
                kind = value
            elif field == "data":
                data.append(value)


if __name__ == "__main__":
    main()
    sys.exit(ltcheck.finish())
