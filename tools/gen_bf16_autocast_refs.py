#!/usr/bin/env python3
"""gen_bf16_autocast_refs.py - how far PyTorch's bf16 autocast lands from the fp32 training
goldens: the yardstick of loratune's bf16 compute mode (tests/train/test_trainer_golden.c).

For every case of tools/gen_train_goldens.py but DoRA (which loratune runs in fp32 only): the
same model, LoRA init, micro-batches and AdamW steps (gen_train_goldens.compute), once in float32
and once with every forward under torch.autocast("cpu", dtype=torch.bfloat16) -- linear layers,
attention products and the head in bf16, weights, gradients and optimizer in fp32, as PyTorch
users train in bf16 on a CPU. Written to tests/data/train/<case>/bf16_autocast.json: the
autocast run's relative errors (max |a - b| / max |b| per tensor, as the C test measures)
against the float32 run, for loss0, logits, step losses, pre-clip gradient norms, every
gradient ("grads") and every after-step tensor ("after"). The float32 run is checked against
the committed golden first (same setup: losses within 1e-4).

Run (torch, transformers, peft as for the goldens; a few minutes, one CPU thread):
  python3 tools/gen_bf16_autocast_refs.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_train_goldens as g  # noqa: E402


def rel(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main():
    torch.manual_seed(0)
    only = sys.argv[1:]
    for ci, case in enumerate(g.CASES):
        if case["method"] == "dora" or (only and case["name"] not in only):
            continue
        folder = os.path.join(g.OUT, case["name"])
        with open(os.path.join(folder, "manifest.json")) as f:
            man = json.load(f)
        seed_batches, seed_lora = case.get("seed", 1000 + ci), 2000 + ci
        model, _ = g.build(case, seed_lora)
        mbs = g.make_batches(case, model.config.vocab_size, seed_batches)
        del model
        r = g.compute(case, seed_lora, mbs, torch.float32)
        same = max(rel(x, y) for x, y in zip(r["losses"], man["losses"]))
        assert same < 1e-4, f"{case['name']}: fp32 run is {same} from the golden's losses"
        a = g.compute(case, seed_lora, mbs, torch.float32, autocast=True)
        after_names = [n for n in r["names"] if n in a["final"]]
        out = {
            "generator": "tools/gen_bf16_autocast_refs.py",
            "torch": torch.__version__.split("+")[0],
            "what": "relative errors of torch.autocast('cpu', bfloat16) training against the "
                    "same training in float32 (max |a - b| / max |b| per tensor)",
            "loss0": rel(a["loss0"], r["loss0"]),
            "logits": rel(a["logits"].float(), r["logits"]),
            "losses": max(rel(x, y) for x, y in zip(a["losses"], r["losses"])),
            "grad_norms_preclip": max(rel(x, y) for x, y in zip(a["norms"], r["norms"])),
            "grads": {n: rel(a["grads"][n], r["grads"][n]) for n in r["names"]},
            "after": {n: rel(a["final"][n], r["final"][n]) for n in after_names},
        }
        with open(os.path.join(folder, "bf16_autocast.json"), "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{case['name']}: loss0 {out['loss0']:.2e} logits {out['logits']:.2e} "
              f"losses {out['losses']:.2e} grads {max(out['grads'].values()):.2e} "
              f"after {max(out['after'].values()):.2e}")


if __name__ == "__main__":
    main()
