#!/usr/bin/env python3
"""Regenerates tests/data/adapter/: our PEFT adapter folders as PEFT reads them, PEFT's
re-saved folders, and PEFT's logits with each adapter (see tests/adapter/test_adapter_peft_golden.c).

Needs the golden venv (torch, transformers 4.57.1, peft 0.17.1: .venv-golden, not CI) and a
build of the test program:

    .venv-golden/bin/python tools/gen_adapter_goldens.py --build build

Steps per adapter (lora: r 4, all linears, all layers; dora: r 4, rslora, 5 targets, layers 1-4;
and smol_dora: SmolLM2-135M-Instruct, DoRA r 1 on all linears of the last layer, whose logits
are kept for the first 2048 tokens of the vocabulary only):
  1. build/test_adapter_peft_golden --emit tests/data/adapter  (our writer, lt_adapter_save_peft)
  2. PeftModel.from_pretrained(stories260K, our folder); fails on any missing / unexpected key
  3. checks PEFT loaded exactly the tensors in our file, and that B != 0 (the adapter does
     something)
  4. logits of the fixed 12 tokens -> <name>_logits.f32 ([T][V] float32 little endian)
  5. save_pretrained -> <name>_peft_saved/ (what PEFT itself writes; our reader must read it)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the base is a local folder: no lookups

import numpy as np
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "adapter")
TOKENS = [1, 403, 407, 261, 378, 439, 297, 261, 270, 356, 410, 46]
SMOL_TOKENS = [1, 504, 3458, 314, 260, 1345, 282, 253]
SMOL_V = 2048


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build", help="CMake build folder with the test programs")
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "tests", "fixtures"))
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    args = ap.parse_args()
    base_dir = os.path.join(args.fixtures, "stories260K-hf")
    prog = os.path.join(args.build, "test_adapter_peft_golden")
    os.makedirs(OUT, exist_ok=True)
    env = dict(os.environ, LT_FIXTURES=args.fixtures, LT_MODELS=args.models)
    subprocess.run([prog, "--emit", OUT], check=True, env=env)
    torch.manual_seed(0)
    ids = torch.tensor([TOKENS])
    for name in ["lora", "dora"]:
        d = os.path.join(OUT, name)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        base.eval()
        with torch.no_grad():
            base_logits = base(ids).logits[0].float().numpy()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            pm = PeftModel.from_pretrained(base, d)
        bad = [str(x.message) for x in w if "key" in str(x.message).lower()]
        if bad:
            sys.exit(f"{name}: PEFT warned while loading our folder: {bad}")
        pm.eval()
        # every tensor of our file is in the PEFT model, with the same values
        ours = load_file(os.path.join(d, "adapter_model.safetensors"))
        sd = {k: v for k, v in pm.state_dict().items() if "lora_" in k}
        n_checked = 0
        for k, v in ours.items():
            stem = k[: -len(".weight")] if k.endswith(".weight") else k
            cands = [stem + ".default.weight", stem + ".default", k]
            hit = [c for c in cands if c in sd]
            if not hit:
                sys.exit(f"{name}: {k} not found in the PEFT model")
            if not np.array_equal(sd[hit[0]].numpy(), v):
                sys.exit(f"{name}: {k} differs after PEFT loaded it")
            n_checked += 1
        if n_checked != len(sd):
            sys.exit(f"{name}: PEFT model has {len(sd)} adapter tensors, our file {n_checked}")
        nz = max(float(np.abs(v).max()) for k, v in ours.items() if "lora_B" in k)
        if nz == 0.0:
            sys.exit(f"{name}: all B are zero: the test would prove nothing")
        with torch.no_grad():
            logits = pm(ids).logits[0].float().numpy()
        logits.astype("<f4").tofile(os.path.join(OUT, f"{name}_logits.f32"))
        saved = os.path.join(OUT, f"{name}_peft_saved")
        shutil.rmtree(saved, ignore_errors=True)
        pm.save_pretrained(saved)
        for junk in ["README.md"]:
            p = os.path.join(saved, junk)
            if os.path.exists(p):
                os.remove(p)
        theirs = load_file(os.path.join(saved, "adapter_model.safetensors"))
        same_keys = sorted(theirs) == sorted(ours)
        same_vals = same_keys and all(np.array_equal(theirs[k], ours[k]) for k in ours)
        cfg_o = json.load(open(os.path.join(d, "adapter_config.json")))
        cfg_t = json.load(open(os.path.join(saved, "adapter_config.json")))
        cfg_diff = sorted(k for k in set(cfg_o) | set(cfg_t)
                          if cfg_o.get(k) != cfg_t.get(k) and k != "target_modules")
        tm_same = sorted(cfg_o["target_modules"]) == sorted(cfg_t["target_modules"])
        same_bytes = (open(os.path.join(saved, "adapter_model.safetensors"), "rb").read() ==
                      open(os.path.join(d, "adapter_model.safetensors"), "rb").read())
        print(f"{name}: PEFT loaded {n_checked} tensors from our folder (max |B| {nz:.3f}); "
              f"adapter moves logits by up to {np.abs(logits - base_logits).max():.3f}; "
              f"PEFT re-save: same tensor names {same_keys}, same values {same_vals}, "
              f"byte-identical safetensors {same_bytes}, "
              f"config keys differing {cfg_diff or 'none'}, target_modules same set {tm_same}")
    smol(args.models)


def smol(models):
    """SmolLM2-135M-Instruct Q4_1 through transformers' GGUF loader (dequantized, q/k rows
    un-permuted, float32) with our smol_dora folder; keeps the first SMOL_V logits of every
    position, with and without the adapter."""
    d = os.path.join(OUT, "smol_dora")
    base = AutoModelForCausalLM.from_pretrained(models, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                                dtype=torch.float32)
    base.eval()
    ids = torch.tensor([SMOL_TOKENS])
    with torch.no_grad():
        b = base(ids).logits[0, :, :SMOL_V].float().numpy()
    pm = PeftModel.from_pretrained(base, d)
    pm.eval()
    with torch.no_grad():
        a = pm(ids).logits[0, :, :SMOL_V].float().numpy()
    b.astype("<f4").tofile(os.path.join(OUT, "smol_base_logits.f32"))
    a.astype("<f4").tofile(os.path.join(OUT, "smol_dora_logits.f32"))
    n = sum(1 for k in load_file(os.path.join(d, "adapter_model.safetensors")))
    print(f"smol_dora: PEFT loaded our {n} tensors on SmolLM2 (transformers GGUF loader); the "
          f"adapter moves the kept logits by up to {np.abs(a - b).max():.3f}")


if __name__ == "__main__":
    main()
