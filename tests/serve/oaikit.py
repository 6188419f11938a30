"""oaikit.py - what the tests of `loratune serve --model` share: the real SmolLM2-135M-Instruct
GGUF (tools/fetch_smollm2.sh), a random PEFT LoRA adapter for it written here with numpy +
safetensors, a corrupt one, starting the server and waiting for /ready, the HF tokenizer
(`tokenizers`, SmolLM's own tokenizer.json) and the chat template rendered by real Jinja (jinja2).
Not named test_*.py: CMake runs those.
"""
import json
import os
import sys
import time

import numpy as np
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servekit  # noqa: E402

SMOL = os.path.join(ltcheck.SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
BASE = "SmolLM2-135M-Instruct.Q4_1"  # the id /v1 gives it: the file name without .gguf


def need_model():
    if not os.path.exists(SMOL):
        print(f"skipped: {SMOL} missing (tools/fetch_smollm2.sh)")
        sys.exit(77)


def write_lora(folder, seed, r=4, scale_b=0.2):
    """A PEFT LoRA (q_proj, v_proj, down_proj of all 30 layers) with random A and B, so that its
    greedy text differs from the base's."""
    from safetensors.numpy import save_file
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    D, KV, F, L = 576, 192, 1536, 30
    shapes = {"self_attn.q_proj": (D, D), "self_attn.v_proj": (KV, D), "mlp.down_proj": (D, F)}
    t = {}
    for layer in range(L):
        for mod, (out, inp) in shapes.items():
            k = f"base_model.model.model.layers.{layer}.{mod}"
            t[f"{k}.lora_A.weight"] = (rng.standard_normal((r, inp)) / np.sqrt(inp)).astype(np.float32)
            t[f"{k}.lora_B.weight"] = (rng.standard_normal((out, r)) * scale_b).astype(np.float32)
    save_file(t, os.path.join(folder, "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
           "lora_dropout": 0.0, "bias": "none", "target_modules": ["q_proj", "v_proj", "down_proj"],
           "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)
    return folder


def write_corrupt(folder, good):
    """good's adapter with its safetensors file cut in half."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(good, "adapter_model.safetensors"), "rb") as f:
        data = f.read()
    with open(os.path.join(folder, "adapter_model.safetensors"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(good, "adapter_config.json")) as f, \
            open(os.path.join(folder, "adapter_config.json"), "w") as g:
        g.write(f.read())
    return folder


def start(workdir, *args, ready_s=120):
    """A server with SMOL (1 thread: two compete for two cores); waits for GET /ready."""
    s = servekit.Server(workdir, "--model", SMOL, "--threads", "1", *args)
    t0 = time.time()
    while time.time() - t0 < ready_s:
        r = requests.get(s.url + "/ready", timeout=10)
        if r.status_code == 200:
            return s
        ltcheck.check(r.status_code == 503 and r.json()["status"] == "loading",
                      f"/ready while loading: {r.status_code} {r.text[:200]}")
        time.sleep(0.2)
    ltcheck.check(False, f"/ready not 200 within {ready_s}s")
    return s


def hf_tokenizer():
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(os.path.join(ltcheck.FIXTURES, "tokenizers", "smollm", "tokenizer.json"))
    t.no_truncation()
    t.no_padding()
    return t


def chat_prompt(messages):
    """The GGUF's chat template rendered by Jinja, as transformers renders it."""
    import gguf
    import jinja2
    r = gguf.GGUFReader(SMOL)
    src = r.fields["tokenizer.chat_template"].contents()
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(src).render(messages=messages, add_generation_prompt=True,
                                       bos_token="<|im_start|>", eos_token="<|im_end|>")


def generate(*args):
    """`loratune generate ... --temp 0 --threads 1 --quiet`: the text it prints (an independent
    path: the CLI's own prompt, template and loop)."""
    r = ltcheck.run("generate", "--model", SMOL, "--temp", "0", "--threads", "1", "--quiet", *args,
                    timeout=600)
    ltcheck.check(r.returncode == 0, f"loratune generate {args}: {r.stderr[-1000:]}")
    out = r.stdout
    return out[:-1] if out.endswith("\n") else out


def metric(url, name, labels=None):
    """The value of one sample of GET /metrics (None when absent)."""
    text = requests.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, val = line.rpartition(" ")
        n, _, lab = head.partition("{")
        if n != name:
            continue
        got = dict(kv.split("=", 1) for kv in lab.rstrip("}").split(",") if kv) if lab else {}
        got = {k: v.strip('"') for k, v in got.items()}
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(val)
    return None
