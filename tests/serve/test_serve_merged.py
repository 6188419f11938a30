"""test_serve_merged.py - merged-model downloads of `loratune serve` (GET /api/jobs/{id}/merged):
the base model with a finished job's LoRA adapter merged in, as `loratune fuse` writes it.

A 4-step LoRA job (rank 4, alpha 8, q/k/v/o + MLP targets) on the stories260K-hf fixture (a
Hugging Face folder); then:
- format hf (the default, f32): a zip whose folder transformers reads (AutoConfig: the fixture's
  architecture and sizes; AutoTokenizer: the fixture tokenizer's ids for a sentence), and whose
  model.safetensors holds, for every tensor of the fixture's model.safetensors, W + (alpha / r)
  B A with A and B from the job's PEFT adapter_model.safetensors (the PEFT merge, computed here
  with numpy), the other tensors unchanged;
- where PyTorch is installed (the bench venv, .venv-bench: torch is not a test peer), the download
  is loaded with transformers' AutoModelForCausalLM and its logits equal those of the fixture
  with the adapter loaded and merged by PEFT (merge_and_unload);
- format gguf, dtype q8_0: gguf-py reads it (architecture llama, Q8_0 tensors, the same number
  of blocks);
- the same request again gives the same bytes (made once); bf16 is another file;
- made on a thread of the server: the first GET answers 202 (state making, Location,
  Retry-After; the spec's MergeState) at once, POST polls until 200 ready (its size the download's),
  ?wait=true is the blocking GET;
- bad input: an unknown format / dtype / wait (400 naming it), an unknown job (404), a job not
  done (409), DELETE (405);
- a full fine-tune (method full): its download is its trained model, equal tensor for tensor to
  the run's own model.safetensors (and moved from the fixture's), and as GGUF f32 (gguf-py) the
  embedding, an MLP, a v_proj and the final norm equal it;
- the Models page's "merged model" button makes it (POST, polled) and offers the link; the link's
  bytes equal the API's;
- the Runs page overlays the training-loss curves of the ticked runs (the three newest: LoRA,
  cancelled, full), each equal to its run's GET /api/runs/{id}/metrics history; unticking one
  drops its curve.
"""
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402
from servekit import Server  # noqa: E402

import ltcheck  # noqa: E402
from ltcheck import check  # noqa: E402

try:
    import gguf
    import numpy as np
    import requests
    from safetensors.numpy import load, load_file
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoConfig, AutoTokenizer
except ImportError as e:
    print(f"missing Python package: {e}; run tools/setup.sh")
    sys.exit(77)

TMP = tempfile.mkdtemp(prefix="lt_serve_merged_")
HF = os.path.join(ltcheck.FIXTURES, "stories260K-hf")
OPTS = {"iters": 4, "batch-size": 2, "max-seq-len": 64, "lora-rank": 4, "lora-alpha": 8,
        "lora-targets": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "threads": 1, "eval-every": 0, "lr": 5e-3, "seed": 5}
BENCH_PY = os.path.join(ltcheck.SOURCE_DIR, ".venv-bench", "bin", "python")
if not os.path.exists(BENCH_PY):
    BENCH_PY = os.path.join(os.path.dirname(os.path.realpath(os.path.join(ltcheck.SOURCE_DIR, ".venv"))),
                            ".venv-bench", "bin", "python")

TORCH_CHECK = r'''
import sys, torch, numpy as np
from transformers import AutoModelForCausalLM
from peft import PeftModel
merged, base, adapter = sys.argv[1:4]
ids = torch.tensor([[1, 403, 407, 261, 378, 434, 267, 288, 261, 400]])
with torch.no_grad():
    a = AutoModelForCausalLM.from_pretrained(merged, torch_dtype=torch.float32)(ids).logits
    b = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32), adapter)
    d = b.merge_and_unload()(ids).logits
    c = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)(ids).logits
print(float((a - d).abs().max()), float((c - d).abs().max()))
'''


def wait_job(u, jid, limit=180):
    t0 = time.time()
    while time.time() - t0 < limit:
        j = requests.get(f"{u}/api/jobs/{jid}").json()
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.2)
    check(False, f"job {jid} did not end in {limit}s")
    return j


def peft_merge(base, adapter, cfg):
    """The merged tensors PEFT's merge gives: W + scaling * B @ A (scaling = alpha / r)."""
    scale = cfg["lora_alpha"] / (cfg["r"] ** 0.5 if cfg.get("use_rslora") else cfg["r"])
    out = dict(base)
    n = 0
    for k, A in adapter.items():
        if not k.endswith(".lora_A.weight"):
            continue
        mod = k[len("base_model.model."):-len(".lora_A.weight")]
        B = adapter[k.replace("lora_A", "lora_B")]
        out[mod + ".weight"] = base[mod + ".weight"] + scale * (B.astype(np.float64) @ A.astype(np.float64)).astype(np.float32)
        n += 1
    return out, n


def expect(r, status, word, what):
    check(r.status_code == status and word in r.text, f"{what}: {r.status_code} {r.text[:300]}")


def poll_ready(u, jid, query, limit=300):
    """POSTs .../merged until it answers 200 (ready); each answer before is a 202 making."""
    t0 = time.time()
    while time.time() - t0 < limit:
        r = requests.post(f"{u}/api/jobs/{jid}/merged?{query}")
        if r.status_code == 200:
            return r.json()
        check(r.status_code == 202 and r.json()["state"] == "making", f"poll {query}: {r.status_code} {r.text[:300]}")
        if r.status_code != 202:
            return {"location": f"/api/jobs/{jid}/merged?{query}", "size": -1}
        time.sleep(0.2)
    check(False, f"merge {query} not ready in {limit} s")
    return {"location": f"/api/jobs/{jid}/merged?{query}", "size": -1}


def check_full(u, work, fid):
    """A full fine-tune's download is its trained model: the run's own model.safetensors (f32),
    tensor for tensor; as GGUF f32 (gguf-py), tensors llama.cpp stores unpermuted (not q / k)
    equal the saved ones."""
    saved = load_file(os.path.join(work, "jobs", fid, "out", "model.safetensors"))
    base = load_file(os.path.join(HF, "model.safetensors"))
    r = requests.post(f"{u}/api/jobs/{fid}/merged")
    check(r.status_code in (200, 202) and r.json()["source"] == "full", f"full POST: {r.status_code} {r.text[:300]}")
    info = poll_ready(u, fid, "format=hf&dtype=f32")
    z = requests.get(f"{u}{info['location']}")
    check(z.status_code == 200 and "model" in z.headers.get("Content-Disposition", ""),
          f"full download: {z.status_code} {z.headers.get('Content-Disposition')}")
    zf = zipfile.ZipFile(io.BytesIO(z.content))
    got = load(zf.read("model.safetensors"))
    check(set(got) == set(saved), f"full: tensors {sorted(set(got) ^ set(saved))[:5]}")
    same = all(np.array_equal(got[k], saved[k]) for k in saved if k in got)
    check(same, "full: the download's weights equal the run's saved model.safetensors")
    moved = max(float(np.abs(saved[k].astype(np.float64) - base[k]).max()) for k in saved if k in base)
    check(moved > 1e-5, f"full: training moved the weights ({moved}): the comparison means something")
    cfg = json.loads(zf.read("config.json"))
    check(cfg.get("num_hidden_layers") == 5, f"full config: {cfg.get('num_hidden_layers')} layers")
    g = requests.get(f"{u}/api/jobs/{fid}/merged?format=gguf&dtype=f32&wait=true")
    check(g.status_code == 200, f"full gguf: {g.status_code} {g.text[:300] if g.status_code != 200 else ''}")
    if g.status_code == 200:
        gp = os.path.join(TMP, "full.gguf")
        open(gp, "wb").write(g.content)
        rd = gguf.GGUFReader(gp)
        ts = {t.name: t for t in rd.tensors}
        pairs = {"token_embd.weight": "model.embed_tokens.weight",
                 "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
                 "blk.4.attn_v.weight": "model.layers.4.self_attn.v_proj.weight",
                 "output_norm.weight": "model.norm.weight"}
        for gn, hn in pairs.items():
            t = ts.get(gn)
            ok = t is not None and np.array_equal(np.asarray(t.data).reshape(saved[hn].shape), saved[hn])
            check(ok, f"full gguf {gn} equals the run's {hn}")
    return z.content


def run(u, work):
    ds = requests.post(f"{u}/api/datasets?name=sql.jsonl", data="".join(servekit.wikisql_lines(40)),
                       headers={"Content-Type": "application/octet-stream"}).json()
    r = requests.post(f"{u}/api/jobs", json={"dataset": ds["id"], "model": "stories260K-hf", "options": OPTS})
    check(r.status_code == 201, f"job: {r.text[:300]}")
    j = wait_job(u, r.json()["id"])
    check(j["status"] == "done", f"job: {j['status']} {j.get('error')}")
    jid = j["id"]

    # ---- not made yet: GET starts it on the server's thread and answers 202 at once
    spec = servekit.load_spec()
    r0 = requests.get(f"{u}/api/jobs/{jid}/merged")
    check(r0.status_code == 202 and r0.json().get("state") == "making", f"first GET: {r0.status_code} {r0.text[:300]}")
    if r0.status_code == 202:
        servekit.conforms(spec, "MergeState", r0.json(), "202 of a merge")
        check(r0.headers.get("Location") == f"/api/jobs/{jid}/merged?format=hf&dtype=f32"
              and r0.json()["location"] == r0.headers.get("Location") and r0.headers.get("Retry-After"),
              f"202 headers: {dict(r0.headers)}")
        check(r0.json()["source"] == "adapter", "source adapter")
    ready = poll_ready(u, jid, "format=hf&dtype=f32")
    # ---- hf: transformers reads it; the weights are the PEFT merge
    r = requests.get(f"{u}{ready['location']}")
    check(r.status_code == 200 and r.headers.get("Content-Type") == "application/zip",
          f"merged: {r.status_code} {r.text[:300] if r.status_code != 200 else ''}")
    if r.status_code != 200:
        return
    zbytes = r.content
    check(ready["size"] == len(zbytes), f"ready size {ready['size']} vs {len(zbytes)} bytes downloaded")
    z = zipfile.ZipFile(io.BytesIO(zbytes))
    check(z.testzip() is None, "the zip is intact")
    folder = os.path.join(TMP, "merged")
    z.extractall(folder)
    check({"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"} <= set(z.namelist()),
          f"zip members {z.namelist()}")
    cfg = AutoConfig.from_pretrained(folder)
    ref = AutoConfig.from_pretrained(HF)
    for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size"):
        check(getattr(cfg, k) == getattr(ref, k), f"config {k}: {getattr(cfg, k)} vs {getattr(ref, k)}")
    text = "Once upon a time there was a little dog."
    check(AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == AutoTokenizer.from_pretrained(HF)(text)["input_ids"],
          "the download's tokenizer gives the fixture's ids")
    adapter_dir = os.path.join(TMP, "adapter")
    os.makedirs(adapter_dir)
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        a = requests.get(f"{u}/api/jobs/{jid}/adapter/{f}")
        check(a.status_code == 200, f"adapter {f}: {a.status_code}")
        open(os.path.join(adapter_dir, f), "wb").write(a.content)
    acfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    check(acfg["r"] == 4 and acfg["lora_alpha"] == 8, f"adapter config r {acfg['r']} alpha {acfg['lora_alpha']}")
    got = load_file(os.path.join(folder, "model.safetensors"))
    want, n = peft_merge(load_file(os.path.join(HF, "model.safetensors")),
                         load_file(os.path.join(adapter_dir, "adapter_model.safetensors")), acfg)
    check(n == 5 * 7, f"{n} adapted matrices, expected 35")
    check(set(got) == set(want), f"tensors {sorted(set(got) ^ set(want))[:5]} differ between the download and the fixture")
    worst = max(float(np.abs(got[k].astype(np.float64) - want[k]).max()) for k in got if k in want)
    moved = max(float(np.abs(want[k] - load_file(os.path.join(HF, "model.safetensors"))[k]).max()) for k in want)
    check(worst < 1e-5, f"merged weights differ from the PEFT merge by {worst}")
    check(moved > 1e-4, f"the adapter moves the weights ({moved}): the comparison means something")

    # ---- transformers loads the model (PyTorch: the bench venv's)
    if os.path.exists(BENCH_PY):
        p = subprocess.run([BENCH_PY, "-c", TORCH_CHECK, folder, HF, adapter_dir], capture_output=True,
                           text=True, timeout=600)
        check(p.returncode == 0, f"torch check: {p.stderr[-1500:]}")
        if p.returncode == 0:
            diff, base_diff = map(float, p.stdout.split()[-2:])
            check(diff < 1e-4, f"logits of the download vs PEFT merge_and_unload: max |diff| {diff}")
            check(base_diff > 1e-3, f"the adapter changes the logits ({base_diff})")
            print(f"transformers + torch: download vs PEFT merge logits max |diff| {diff:.2e} "
                  f"(base vs merged {base_diff:.2e})")
    else:
        print("no .venv-bench (PyTorch): the AutoModelForCausalLM load is not checked; the weights are")

    # ---- made once; another dtype is another file
    r2 = requests.get(f"{u}/api/jobs/{jid}/merged?format=hf&dtype=f32")
    check(r2.status_code == 200 and r2.content == zbytes, "the second download gives the same bytes")
    rb = requests.get(f"{u}/api/jobs/{jid}/merged?dtype=bf16&wait=true")  # the blocking GET
    check(rb.status_code == 200 and rb.content != zbytes, "bf16 is another file")
    if rb.status_code == 200:
        zb = zipfile.ZipFile(io.BytesIO(rb.content))
        check(json.loads(zb.read("config.json")).get("torch_dtype") == "bfloat16", "bf16 config torch_dtype")

    # ---- gguf q8_0
    rg = requests.get(f"{u}/api/jobs/{jid}/merged?format=gguf&dtype=q8_0&wait=true")
    check(rg.status_code == 200, f"gguf: {rg.status_code} {rg.text[:300] if rg.status_code != 200 else ''}")
    if rg.status_code == 200:
        gp = os.path.join(TMP, "merged.gguf")
        open(gp, "wb").write(rg.content)
        g = gguf.GGUFReader(gp)
        arch = bytes(g.fields["general.architecture"].parts[-1]).decode()
        blocks = {t.name.split(".")[1] for t in g.tensors if t.name.startswith("blk.")}
        check(arch == "llama" and len(blocks) == 5, f"gguf: {arch}, {len(blocks)} blocks")
        check(any(t.tensor_type == gguf.GGMLQuantizationType.Q8_0 for t in g.tensors)
              or all(t.tensor_type in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32) for t in g.tensors),
              "gguf tensor types")

    # ---- bad input
    expect(requests.get(f"{u}/api/jobs/{jid}/merged?format=onnx"), 400, "format", "unknown format")
    expect(requests.get(f"{u}/api/jobs/{jid}/merged?format=gguf&dtype=bf16"), 400, "dtype", "bf16 gguf")
    expect(requests.get(f"{u}/api/jobs/{jid}/merged?dtype=int4"), 400, "dtype", "unknown dtype")
    expect(requests.get(f"{u}/api/jobs/job_0123456789abcdef/merged"), 404, "no job", "unknown job")
    expect(requests.get(f"{u}/api/jobs/{jid}/merged?wait=maybe"), 400, "wait", "bad wait")
    expect(requests.get(f"{u}/api/jobs/{jid}/merged?wait=1"), 400, "wait", "wait=1 (true / false only)")
    expect(requests.post(f"{u}/api/jobs/{jid}/merged?format=tar"), 400, "format", "POST unknown format")
    expect(requests.post(f"{u}/api/jobs/job_0123456789abcdef/merged"), 404, "no job", "POST unknown job")
    expect(requests.delete(f"{u}/api/jobs/{jid}/merged"), 405, "", "DELETE")
    rp = requests.post(f"{u}/api/jobs/{jid}/merged")
    check(rp.status_code == 200 and rp.json()["state"] == "ready" and rp.json()["size"] == len(zbytes),
          f"POST on a made model: {rp.status_code} {rp.text[:200]}")
    long = requests.post(f"{u}/api/jobs", json={"dataset": ds["id"], "model": "stories260K-hf",
                                               "options": {**OPTS, "iters": 100000}}).json()
    requests.post(f"{u}/api/jobs/{long['id']}/cancel")
    wait_job(u, long["id"])
    expect(requests.get(f"{u}/api/jobs/{long['id']}/merged"), 409, "not done", "a cancelled job")
    full = requests.post(f"{u}/api/jobs", json={"dataset": ds["id"], "model": "stories260K-hf",
                                               "options": {**OPTS, "method": "full", "iters": 2}}).json()
    fj = wait_job(u, full["id"])
    check(fj["status"] == "done", f"full job: {fj['status']} {fj.get('error')}")
    if fj["status"] == "done":
        check_full(u, work, full["id"])
    check(not [f for f in os.listdir(os.path.join(work, "jobs", jid)) if f.startswith(("merged-tmp", "part_"))],
          "no temp files left")

    # ---- the Models page links it
    from selenium.webdriver.common.by import By
    d = servekit.browser()
    try:
        d.get(u + "/models")
        b = servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] button.merged"),
                              "the merged-model button")
        if b:
            b[0].click()
            a = servekit.wait_for(d, lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{jid}'] a.merged-link"),
                                  "the merged model's download link once made")
            if a:
                href = a[0].get_attribute("href")
                check(href.endswith(f"/api/jobs/{jid}/merged?format=hf&dtype=f32"), f"merged link {href}")
                check(requests.get(href).content == zbytes, "the page's link gives the API's bytes")
        servekit.console_errors(d, "Models page")
        # ---- the Runs page overlays the curves of the runs ticked (the three newest at first)
        runs = requests.get(f"{u}/api/runs").json()["runs"][:3]
        want = {}
        for x in runs:
            h = requests.get(f"{u}/api/runs/{x.get('run_id') or x.get('id')}/metrics").json()["history"]
            want[x.get("name") or str(x.get("run_id") or x.get("id"))] = [p[1] for p in h.get("train_loss", [])]
        d.get(u + "/runs")
        js = ("const c = lt.charts.runs; return c ? c.data.datasets.filter((s) => s.label.endsWith(' train'))"
              ".map((s) => [s.label.slice(0, -6), s.data.map((p) => p.y)]) : null")
        got = servekit.wait_for(d, lambda: (lambda v: v if v and len(v) == sum(1 for w in want.values() if w) else None)(
            d.execute_script(js)), "the runs chart with the ticked runs' curves")
        check(len(runs) >= 2 and got and {k: v for k, v in got} == {k: v for k, v in want.items() if v},
              f"runs chart overlays {[(k, len(v)) for k, v in got or []]} vs the API's {[(k, len(v)) for k, v in want.items()]}")
        boxes = d.find_elements(By.CSS_SELECTOR, "input[id^='run-']")
        if got and boxes:
            boxes[0].click()
            servekit.wait_for(d, lambda: len(d.execute_script(js) or []) == len(got) - 1, "unticking a run drops its curve")
        servekit.console_errors(d, "Runs page")
    finally:
        d.quit()


def main():
    servekit.chromium_or_skip()
    work = os.path.join(TMP, "work")
    models = os.path.join(TMP, "models")
    os.makedirs(models)
    os.symlink(HF, os.path.join(models, "stories260K-hf"))
    srv = Server(work, "--models", models)
    try:
        run(srv.url, work)
    finally:
        code, _, err = srv.stop()
        check(code == 0, f"server exit code {code}: {err[-1000:]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(ltcheck.finish())
