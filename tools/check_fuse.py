"""check_fuse.py - `loratune fuse`'s merged Hugging Face folders checked by transformers and PEFT
(torch is not installable in CI, so this runs by hand with .venv-golden; its output is recorded
in docs/EXPORT.md).

For each base (stories260K-hf; SmolLM2-135M-Instruct, whose HF base is our own adapter-free
export of the GGUF, itself checked by mlx-lm / HF tokenizers in tests/export/test_fuse_peer.py)
and each method (LoRA, DoRA), the C tool `test_export --fuse` merges a random adapter (seeded,
every target of every layer, r=4, alpha=8) and writes the merged HF folder, the adapter and our
logits. Here:
  1. PEFT: a LoraConfig(r=4, lora_alpha=8, all seven targets, use_dora) model on the base with
     the same adapter values; its (unmerged) logits vs ours; merge_and_unload()'s weights vs
     our model.safetensors.
  2. transformers: AutoModelForCausalLM on our folder (f32, and bf16 / f16 exports) vs ours.
  3. AutoTokenizer (transformers 4.57) on the generated SmolLM2 tokenizer.json vs SmolLM's
     original tokenizer.json (fixtures/tokenizers/smollm).
Exit code 1 when a comparison is over its tolerance.

usage: .venv-golden/bin/python tools/check_fuse.py [--build build]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
failures = []


def report(name, value, tol):
    ok = value <= tol
    print(f"  {name:58s} {value:10.3g}  (tol {tol:g}) {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(name)


def fuse(tool, model, out, dtype, method, ids, tmp):
    ad = os.path.join(tmp, f"ad_{method}.safetensors")
    lg = os.path.join(tmp, f"lg_{method}_{dtype}.f32")
    subprocess.run([tool, "--fuse", model, out, "hf", dtype, "5", method, ad, lg, *map(str, ids)],
                   check=True)
    ours = np.fromfile(lg, dtype=np.float32).reshape(len(ids), -1)
    return (load_file(ad) if method != "none" else None), ours


def hf_logits(folder, ids, dtype=torch.float32):
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def peft_model(base, adapter, method, n_layers):
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0,
                     use_dora=method == "dora", init_lora_weights=True)
    pm = get_peft_model(model, cfg)
    sd = pm.state_dict()
    new = {}
    for l in range(n_layers):
        for t in TARGETS:
            mod = "self_attn" if t in TARGETS[:4] else "mlp"
            pre = f"base_model.model.model.layers.{l}.{mod}.{t}"
            new[f"{pre}.lora_A.default.weight"] = torch.from_numpy(adapter[f"{l}.{t}.A"])
            new[f"{pre}.lora_B.default.weight"] = torch.from_numpy(adapter[f"{l}.{t}.B"])
            if method == "dora":
                new[f"{pre}.lora_magnitude_vector.default.weight"] = torch.from_numpy(adapter[f"{l}.{t}.mag"])
    missing = [k for k in new if k not in sd]
    assert not missing, missing[:3]
    pm.load_state_dict(new, strict=False)
    return pm


def check_base(tool, name, base, ids, tmp):
    print(f"{name}:")
    n_layers = json.load(open(os.path.join(base, "config.json")))["num_hidden_layers"]
    for method in ("lora", "dora"):
        out = os.path.join(tmp, f"{name}_{method}")
        adapter, ours = fuse(tool, base, out, "f32", method, ids, tmp)
        pm = peft_model(base, adapter, method, n_layers)
        with torch.no_grad():
            peft_lg = pm(torch.tensor([ids])).logits[0].numpy()
        span = float(ours.max() - ours.min())
        report(f"{method}: PEFT (unmerged) vs ours, max |logit diff|", float(np.abs(peft_lg - ours).max()),
               1e-4 * span)
        merged = pm.merge_and_unload().state_dict()
        got = load_file(os.path.join(out, "model.safetensors"))
        worst = max(float(np.max(np.abs(got[k] - merged[k].numpy()) / (1e-3 + np.abs(merged[k].numpy()))))
                    for k in got)
        report(f"{method}: merge_and_unload vs our weights, max rel diff", worst, 1e-4)
        tf = hf_logits(out, ids)
        report(f"{method}: transformers on our f32 folder vs ours, max |diff|", float(np.abs(tf - ours).max()),
               1e-4 * span)
        report(f"{method}: transformers on our folder vs PEFT, max |diff|", float(np.abs(tf - peft_lg).max()),
               1e-4 * span)
    for dt, tdt, tol in (("bf16", torch.bfloat16, 0.05), ("f16", torch.float16, 0.01)):
        out = os.path.join(tmp, f"{name}_lora_{dt}")
        _, ours = fuse(tool, base, out, dt, "lora", ids, tmp)
        tf = hf_logits(out, ids, torch.float32)  # weights rounded to dt, computed in f32
        span = float(ours.max() - ours.min())
        report(f"lora {dt}: transformers (f32 compute) vs ours f32, |diff|/range",
               float(np.abs(tf - ours).max()) / span, tol)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    tool = os.path.join(args.build, "test_export")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
          f"peft {__import__('peft').__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        check_base(tool, "stories260K-hf", os.path.join(FIX, "stories260K-hf"),
                   [1, 403, 407, 261, 378, 426, 260, 500, 23, 7, 99, 310], tmp)
        smol = os.path.join(tmp, "smol_base")
        gguf = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
        ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198]
        _, ours = fuse(tool, gguf, smol, "f32", "none", ids, tmp)
        print("SmolLM2-135M-Instruct (GGUF -> HF, no adapter):")
        tf = hf_logits(smol, ids)
        report("transformers on our export vs ours, max |diff|", float(np.abs(tf - ours).max()),
               1e-4 * float(ours.max() - ours.min()))
        tok = AutoTokenizer.from_pretrained(smol)
        from tokenizers import Tokenizer
        orig = Tokenizer.from_file(os.path.join(FIX, "tokenizers", "smollm", "tokenizer.json"))
        orig.no_truncation()
        orig.no_padding()
        texts = ["Hello world!", "<|im_start|>user\nHi 12345<|im_end|>\n", "naïve café 🙂\n\n  x",
                 "def f(x):\n    return x**2", "don't I'M 3.14159"]
        bad = sum(tok(t)["input_ids"] != orig.encode(t).ids for t in texts)
        report(f"AutoTokenizer vs SmolLM's tokenizer.json: texts differing of {len(texts)}", bad, 0)
        check_base(tool, "SmolLM2-135M-Instruct", smol, ids, tmp)
    print("FAILED: " + ", ".join(failures) if failures else "all comparisons within tolerance")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
