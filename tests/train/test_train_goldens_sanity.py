"""test_train_goldens_sanity.py - self-consistency of the committed training goldens.

tests/data/train/<case>/ is written by tools/gen_train_goldens.py (torch, not in CI). This test
(numpy + safetensors only) checks that what is committed is what the contract in
docs/TRAIN_GOLDENS.md promises, so that a broken or hand-edited golden fails here rather than
as a puzzling mismatch in the C training test:
  - every manifest key and tensor file is there, file sizes match the shapes, values finite;
  - micro-batches: grad_accum*steps of them, positions restart exactly where the sequence id
    changes, some row packs two sequences, targets are the next token of the same sequence or
    -100, -100 on each sequence's last token and first (prompt) position;
  - first.count and first.loss agree with a float64 cross-entropy of the stored logits;
  - LoRA/DoRA tensors have PEFT's names and shapes, DoRA magnitudes equal the row norms of
    W + scaling*B@A from the model file; every gradient is non-zero; every 'after' tensor
    differs from its initial value (init for LoRA, the model file for full FT).
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import FIXTURES, SOURCE_DIR, check, finish  # noqa: E402

DATA = os.path.join(SOURCE_DIR, "tests", "data", "train")
CASES = ["qwen2_lora_all", "qwen2_lora_rslora_qv_l1", "qwen2_dora_qkvo", "qwen2_full",
         "qwen2_full_l1_noemb", "qwen2_lora_bf16", "qwen2hd64_lora_all", "stories_lora_qv",
         "stories_dora_all", "stories_full"]
KEYS = ["generator", "torch", "transformers", "peft", "model", "method", "base_dtype", "optim",
        "micro_batches", "names", "init", "first", "after", "losses"]


def model_dir(ref):
    kind, rest = ref.split(":", 1)
    return os.path.join(SOURCE_DIR, rest) if kind == "data" else os.path.join(FIXTURES, rest)


def load_tensor(folder, entry, what):
    path = os.path.join(folder, entry["file"])
    n = int(np.prod(entry["shape"])) if entry["shape"] else 1
    if not os.path.exists(path):
        check(False, f"{what}: {path} missing")
        return None
    check(os.path.getsize(path) == 4 * n, f"{what}: {path} has {os.path.getsize(path)} bytes, "
          f"shape {entry['shape']} wants {4 * n}")
    a = np.fromfile(path, dtype="<f4")
    if a.size != n:
        return None
    a = a.reshape(entry["shape"])
    check(bool(np.isfinite(a).all()), f"{what}: non-finite values")
    return a


def check_batch(case, i, mb):
    B, T = mb["B"], mb["T"]
    tok, tgt, pos, seq = (np.array(mb[k], dtype=np.int64).reshape(B, T)
                          for k in ("tokens", "targets", "pos", "seq"))
    packed = False
    ok = True
    for b in range(B):
        ok &= pos[b, 0] == 0
        for t in range(1, T):
            if seq[b, t] != seq[b, t - 1]:
                packed = True
                ok &= pos[b, t] == 0
            else:
                ok &= pos[b, t] == pos[b, t - 1] + 1
        for t in range(T):
            last = t == T - 1 or seq[b, t + 1] != seq[b, t]
            if last or pos[b, t] == 0:  # sequence end; first position is always prompt
                ok &= tgt[b, t] == -100
            if tgt[b, t] != -100:
                ok &= tgt[b, t] == tok[b, t + 1]
    check(bool(ok), f"{case} micro_batch {i}: pos/seq/targets inconsistent")
    if i == 0:
        check(packed, f"{case} micro_batch 0: no row packs two sequences")
    return tgt


def main():
    sizes = 0
    for root, _, files in os.walk(DATA):
        sizes += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    check(sizes < 3_200_000, f"tests/data/train is {sizes} bytes (budget ~3 MB)")

    rq = os.path.join(DATA, "random_qwen2")
    with open(os.path.join(rq, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["model_type"] == "qwen2" and cfg["tie_word_embeddings"] is False
          and cfg["use_sliding_window"] is False, "random_qwen2 config")
    st = load_file(os.path.join(rq, "model.safetensors"))
    check("lm_head.weight" in st and "model.layers.1.self_attn.v_proj.bias" in st,
          "random_qwen2 lacks lm_head or q/k/v bias")

    for case in CASES:
        folder = os.path.join(DATA, case)
        with open(os.path.join(folder, "manifest.json")) as f:
            m = json.load(f)
        check(all(k in m for k in KEYS), f"{case}: manifest lacks {[k for k in KEYS if k not in m]}")
        mdir = model_dir(m["model"])
        check(os.path.isdir(mdir), f"{case}: model {mdir} not found")
        if not os.path.isdir(mdir):
            continue
        with open(os.path.join(mdir, "config.json")) as f:
            V = json.load(f)["vocab_size"]
        weights = load_file(os.path.join(mdir, "model.safetensors"))
        o = m["optim"]
        mbs = m["micro_batches"]
        check(len(mbs) == o["grad_accum"] * o["steps"], f"{case}: micro-batch count")
        check(len(m["losses"]) == o["steps"], f"{case}: losses length")
        tgts = [check_batch(case, i, mb) for i, mb in enumerate(mbs)]
        ex = m.get("extra", {})
        check(ex.get("micro_batch_token_counts") == [int((t != -100).sum()) for t in tgts],
              f"{case}: extra.micro_batch_token_counts")

        # first: logits and loss agree (float64 CE of the stored float32 logits)
        first = m["first"]
        mb0 = mbs[0]
        check(first["logits"]["shape"] == [mb0["B"], mb0["T"], V], f"{case}: logits shape")
        logits = load_tensor(folder, first["logits"], f"{case} logits")
        t0 = tgts[0].reshape(-1)
        check(first["count"] == int((t0 != -100).sum()), f"{case}: first.count")
        if logits is not None:
            lg = logits.reshape(-1, V).astype(np.float64)
            mx = lg.max(axis=1, keepdims=True)
            lse = (mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1)))
            keep = t0 != -100
            ce = (lse[keep] - lg[keep, t0[keep]]).sum() / keep.sum()
            check(abs(ce - first["loss"]) <= 1e-5 * abs(ce),
                  f"{case}: first.loss {first['loss']} vs CE of logits {ce}")

        names = m["names"]
        check(len(set(names)) == len(names), f"{case}: duplicate names")
        check(list(first["grads"]) == names, f"{case}: first.grads keys != names")
        for n, e in first["grads"].items():
            g = load_tensor(folder, e, f"{case} grad {n}")
            check(g is not None and float(np.abs(g).max()) > 0, f"{case}: zero gradient {n}")
        check(set(m["after"]) <= set(names) and len(m["after"]) > 0, f"{case}: after keys")

        if m["method"] == "full":
            check(m["init"] == {} and "full" in m, f"{case}: full FT manifest")
            for n in names:
                check(n in weights, f"{case}: {n} is not a tensor of the model")
            for n, e in m["after"].items():
                a = load_tensor(folder, e, f"{case} after {n}")
                check(a is not None and list(a.shape) == list(weights[n].shape)
                      and not np.array_equal(a, weights[n]), f"{case}: after {n} == model weight")
            continue

        lo = m["lora"]
        check(list(m["init"]) == names and list(m["after"]) == names, f"{case}: init/after keys")
        per_module = 3 if m["method"] == "dora" else 2
        check(len(names) == per_module * len(lo["targets"]) * len(lo["layers"]),
              f"{case}: {len(names)} tensors for {lo['targets']} x layers {lo['layers']}")
        scale = lo["alpha"] / (math.sqrt(lo["r"]) if lo["rslora"] else lo["r"])
        init = {n: load_tensor(folder, e, f"{case} init {n}") for n, e in m["init"].items()}
        for n, e in m["after"].items():
            a = load_tensor(folder, e, f"{case} after {n}")
            check(a is not None and not np.array_equal(a, init[n]), f"{case}: after {n} == init")
        for n in names:
            if not n.endswith("lora_A.weight"):
                continue
            mod = n[len("base_model.model."):-len(".lora_A.weight")]
            W = weights[mod + ".weight"]
            A, Bm = init[n], init[n.replace("lora_A", "lora_B")]
            check(A.shape == (lo["r"], W.shape[1]) and Bm.shape == (W.shape[0], lo["r"]),
                  f"{case}: {mod} LoRA shapes")
            check(float(np.abs(Bm).max()) > 0, f"{case}: {mod} lora_B is zero")
            if m["method"] == "dora":
                mag = init[n.replace("lora_A.weight", "lora_magnitude_vector")]
                ref = np.linalg.norm(W.astype(np.float64) + scale * (Bm.astype(np.float64) @ A),
                                     axis=1)
                check(np.allclose(mag, ref, rtol=1e-5, atol=0), f"{case}: {mod} DoRA magnitude")

    return finish()


if __name__ == "__main__":
    sys.exit(main())
