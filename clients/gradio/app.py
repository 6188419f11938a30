"""app.py - a small Gradio front end for `loratune serve`, driving its REST API only
(docs/SERVER.md, docs/SERVING.md): upload and validate a dataset, train with live progress,
download the adapter, chat with the served model and its adapters. Optional: the server never
needs it. Installed with uv into its own venv (clients/gradio/requirements.txt; tools/setup.sh
makes .venv-gradio), run as

    .venv-gradio/bin/python clients/gradio/app.py --server http://127.0.0.1:8080 [--port 7860]

The token, when the server has one, comes from --token or LORATUNE_TOKEN. Every function is
also a Gradio API endpoint (api_name: upload, validate, train, download, chat, refresh), so a
script can drive it with gradio_client (tests/serve/test_gradio_app.py does).
"""
import argparse
import json
import os
import tempfile

import gradio as gr
import httpx

SERVER = os.environ.get("LORATUNE_URL", "http://127.0.0.1:8080")
TOKEN = os.environ.get("LORATUNE_TOKEN", "")
TIMEOUT = httpx.Timeout(30.0, read=None)


def headers():
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


def api(method, path, **kw):
    """A request to the server; raises gr.Error with the server's own message on an error."""
    try:
        r = httpx.request(method, SERVER + path, headers={**headers(), **kw.pop("headers", {})},
                          timeout=TIMEOUT, **kw)
    except httpx.HTTPError as e:
        raise gr.Error(f"loratune serve at {SERVER} is not reachable: {e}")
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
            msg = err.get("message", "")
        except (ValueError, KeyError, TypeError):
            msg = r.text[:500]
        raise gr.Error(f"{method} {path}: HTTP {r.status_code}: {msg}")
    return r.json() if r.content else None


def sse(path, method="GET", body=None):
    """Yields the data of each Server-Sent Event of a streamed response (parsed JSON), until the
    stream ends or a "[DONE]" data line."""
    kw = {"json": body} if body is not None else {}
    with httpx.stream(method, SERVER + path, headers=headers(), timeout=TIMEOUT, **kw) as r:
        if r.status_code >= 400:
            r.read()
            try:
                msg = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = r.text[:500]
            raise gr.Error(f"{path}: HTTP {r.status_code}: {msg}")
        data = []
        for line in r.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line == "" and data:
                text = "\n".join(data)
                data = []
                if text == "[DONE]":
                    return
                yield json.loads(text)


# ---- the functions behind the tabs -----------------------------------------------------------
def choices():
    """(datasets, train models, done jobs, chat models) for the dropdowns."""
    ds = [(f"{d['name']} ({d['id']})", d["id"]) for d in api("GET", "/api/datasets")["datasets"]
          if not d.get("validation") or d["validation"].get("ok")]
    models = [m["name"] for m in api("GET", "/api/models")["models"]]
    jobs = [(j.get("name") or j["id"], j["id"]) for j in api("GET", "/api/jobs")["jobs"]
            if j["status"] == "done" and j.get("kind", "train") == "train"]
    ready = httpx.get(SERVER + "/ready", headers=headers(), timeout=TIMEOUT)
    chat = []
    if ready.status_code == 200 and ready.json().get("model"):
        chat = [m["id"] for m in api("GET", "/v1/models")["data"]]
    return ds, models, jobs, chat


def refresh():
    ds, models, jobs, chat = choices()
    return (gr.update(choices=ds, value=ds[0][1] if ds else None),
            gr.update(choices=models, value=models[0] if models else None),
            gr.update(choices=jobs, value=jobs[-1][1] if jobs else None),
            gr.update(choices=chat, value=chat[0] if chat else None))


def describe(v):
    if not v:
        return "not checked yet (large upload): press Validate"
    if not v.get("ok"):
        return "\n".join(f"Line {e['line']}: {e['message']}" if e.get("line") else e["message"]
                         for e in v.get("errors", []))
    lines = [f"valid ({v.get('format')})"]
    for split, s in (v.get("splits") or {}).items():
        extra = f", {s['tokens']} tokens" if s.get("tokens") is not None else ""
        lines.append(f"{split}: {s['examples']} examples, length {s['min_len']}..{s['max_len']} "
                     f"{s.get('unit', '')}{extra}")
    return "\n".join(lines)


def upload(path):
    """Uploads the file (streamed from disk), returns (dataset id, its structure check)."""
    if not path:
        raise gr.Error("choose a file first")
    with open(path, "rb") as f:
        ds = api("POST", "/api/datasets", params={"name": os.path.basename(path)}, content=f,
                 headers={"Content-Type": "application/octet-stream"})
    return ds["id"], describe(ds.get("validation"))


def validate(dataset, model):
    if not dataset:
        raise gr.Error("no dataset: upload one first")
    body = {"model": model} if model else {}
    return describe(api("POST", f"/api/datasets/{dataset}/validate", json=body))


def train(dataset, model, iters, lora_rank, lr):
    """Queues a train job and yields (job id, progress text, loss table) as its events come."""
    if not dataset or not model:
        raise gr.Error("choose a dataset and a model")
    opts = {"iters": int(iters), "lora-rank": int(lora_rank), "lr": float(lr)}
    job = api("POST", "/api/jobs", json={"dataset": dataset, "model": model, "options": opts})
    jid = job["id"]
    rows, status, total = [], "queued", int(iters)
    yield jid, f"{jid}: queued", rows
    for ev in sse(f"/api/jobs/{jid}/events"):
        kind = ev.get("event")
        if kind == "job":
            status = ev["status"]
            msg = f": {ev['message']}" if ev.get("message") else ""
            yield jid, f"{jid}: {status}{msg}", rows
        elif kind == "start":
            total = ev.get("steps", total)
        elif kind == "step":
            rows = rows + [[ev["step"], ev["loss"], None]]
            eta = ev.get("eta_s")
            yield jid, (f"{jid}: step {ev['step']} / {total} · loss {ev['loss']:.4f}"
                        + (f" · ETA {eta:.0f} s" if eta is not None else "")), rows
        elif kind == "eval":
            rows = rows + [[ev["step"], None, ev["val_loss"]]]
            yield jid, f"{jid}: step {ev['step']} · validation loss {ev['val_loss']:.4f}", rows
    if status == "failed":
        raise gr.Error(f"job {jid} failed: {api('GET', f'/api/jobs/{jid}').get('error')}")


def download(job):
    """The job's adapter as one zip (PEFT, GGUF, mlx-lm files), saved to a temp file."""
    if not job:
        raise gr.Error("no finished job")
    out = os.path.join(tempfile.mkdtemp(prefix="loratune-"), f"{job}-adapter.zip")
    with httpx.stream("GET", f"{SERVER}/api/jobs/{job}/adapter/adapter.zip", headers=headers(),
                      timeout=TIMEOUT) as r:
        if r.status_code >= 400:
            r.read()
            raise gr.Error(f"download: HTTP {r.status_code}: {r.text[:300]}")
        with open(out, "wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    return out


def chat(message, history, model, temperature, max_tokens, seed):
    """Streams the model's answer (POST /v1/chat/completions, stream: true); yields the
    conversation with the answer so far."""
    if not model:
        raise gr.Error("the server serves no model: start it with --model")
    history = list(history or [])
    msgs = [{"role": m["role"], "content": m["content"]} for m in history] + \
           [{"role": "user", "content": message}]
    body = {"model": model, "messages": msgs, "stream": True, "temperature": float(temperature),
            "max_tokens": int(max_tokens)}
    if seed is not None and str(seed).strip() != "":
        body["seed"] = int(seed)
    text = ""
    history = history + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    for chunk in sse("/v1/chat/completions", "POST", body):
        if chunk.get("error"):
            raise gr.Error(chunk["error"].get("message", "generation failed"))
        for ch in chunk.get("choices", []):
            piece = (ch.get("delta") or {}).get("content")
            if piece:
                text += piece
                history[-1] = {"role": "assistant", "content": text}
                yield history, ""
    yield history, ""


# ---- the interface -------------------------------------------------------------------------
def build():
    with gr.Blocks(title="loratune") as demo:
        gr.Markdown(f"# loratune\nDriving `loratune serve` at {SERVER} through its REST API.")
        with gr.Tab("Data"):
            file = gr.File(label="Dataset (JSONL / JSON)", type="filepath")
            up = gr.Button("Upload and validate")
            ds_id = gr.Textbox(label="Dataset id", interactive=False)
            check = gr.Textbox(label="Validation", lines=4, interactive=False)
            vmodel = gr.Dropdown(label="Tokenize with (optional)", choices=[], allow_custom_value=True)
            vbtn = gr.Button("Validate with the model")
        # allow_custom_value: the lists are filled per session (demo.load / refresh); an API
        # client (gradio_client) names its dataset / job / model directly
        with gr.Tab("Train"):
            dataset = gr.Dropdown(label="Dataset", choices=[], allow_custom_value=True)
            model = gr.Dropdown(label="Model", choices=[], allow_custom_value=True)
            with gr.Row():
                iters = gr.Number(label="iters", value=100, precision=0, minimum=1)
                rank = gr.Number(label="lora-rank", value=8, precision=0, minimum=1)
                lr = gr.Number(label="lr", value=1e-4)
            go = gr.Button("Train", variant="primary")
            job_id = gr.Textbox(label="Job", interactive=False)
            progress = gr.Textbox(label="Progress", interactive=False)
            losses = gr.Dataframe(headers=["step", "loss", "val_loss"], label="Losses",
                                  interactive=False)
        with gr.Tab("Download"):
            jobs = gr.Dropdown(label="Finished job", choices=[], allow_custom_value=True)
            dl = gr.Button("Download adapter (.zip)")
            zipfile = gr.File(label="adapter.zip", interactive=False)
        with gr.Tab("Chat"):
            cmodel = gr.Dropdown(label="Model (base or adapter)", choices=[], allow_custom_value=True)
            with gr.Row():
                temp = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature")
                maxt = gr.Number(label="max_tokens", value=128, precision=0, minimum=1)
                seed = gr.Textbox(label="seed", placeholder="random")
            bot = gr.Chatbot(label="Conversation")
            msg = gr.Textbox(label="Message", placeholder="Enter sends")
        refresh_btn = gr.Button("Refresh lists")

        lists = [dataset, model, jobs, cmodel]
        up.click(upload, [file], [ds_id, check], api_name="upload").then(refresh, None, lists)
        vbtn.click(validate, [ds_id, vmodel], [check], api_name="validate")
        go.click(train, [dataset, model, iters, rank, lr], [job_id, progress, losses],
                 api_name="train").then(refresh, None, lists)
        dl.click(download, [jobs], [zipfile], api_name="download")
        msg.submit(chat, [msg, bot, cmodel, temp, maxt, seed], [bot, msg], api_name="chat")
        refresh_btn.click(refresh, None, lists, api_name="refresh")
        demo.load(refresh, None, lists)
        vmodel_fill = demo.load(lambda: gr.update(choices=[""] + choices()[1]), None, [vmodel])
        del vmodel_fill
    return demo


def main():
    global SERVER, TOKEN
    p = argparse.ArgumentParser(description="Gradio front end for loratune serve")
    p.add_argument("--server", default=SERVER, help="the loratune serve URL (LORATUNE_URL)")
    p.add_argument("--token", default=TOKEN, help="its token (LORATUNE_TOKEN)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    a = p.parse_args()
    SERVER, TOKEN = a.server.rstrip("/"), a.token
    build().queue().launch(server_name=a.host, server_port=a.port, share=False,
                           show_error=True)


if __name__ == "__main__":
    main()
