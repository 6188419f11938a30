#!/usr/bin/env python3
"""gen_train_goldens.py - transformers + PEFT goldens for the CPU training engine.

Writes tests/data/train/<case>/manifest.json plus raw little-endian float32 tensor files, in the
format of the training-engine spec (documented in docs/TRAIN_GOLDENS.md), and the tiny random
Qwen2 model tests/data/train/random_qwen2/{config.json,model.safetensors} that half the cases use.

For every case (model x method x base dtype):
  batches  grad_accum*steps micro-batches, B=2, T=16, from a seeded numpy Generator. Row 0 packs
           two sequences (pos restarts at 0, seq id 0 then 1), row 1 holds one sequence of 16.
           Each sequence has a prompt of P tokens; targets are already shifted:
           targets[t] = tokens[t+1] for P-1 <= t <= L-2 within the sequence, else -100
           (prompt positions and each sequence's last token).
  forward  HF model, float32, attn_implementation="eager", position_ids = pos, attention_mask =
           explicit additive 4D float mask (B,1,T,T): 0 where s<=t and seq[s]==seq[t], else
           torch.finfo(float32).min (transformers returns a 4D mask as-is). The generator
           asserts that every packed sequence's logits equal those of the sequence run alone
           with default causal masking and positions 0..L-1 (proves mask + positions).
  loss     F.cross_entropy(logits.view(-1,V), targets.view(-1), ignore_index=-100,
           reduction="sum") / count.
  init     LoRA/DoRA: peft.get_peft_model(LoraConfig(...)), then lora_A := U(-1/sqrt(in),
           1/sqrt(in)) and lora_B := N(0, 0.05^2) from a seeded torch.Generator (B non-zero so
           that A gets gradients); DoRA magnitude re-initialised by PEFT's own
           DoraLinearLayer.update_layer (row norms of W + scaling*B@A, the same call PEFT makes
           when the adapter is created). Full FT: the HF weights as loaded; requires_grad=False
           on frozen tensors.
  first    one forward/backward of micro_batches[0]: loss, count, logits, every trainable grad.
  after    a fresh copy of init, torch.optim.AdamW(trainable params in one group, foreach=False);
           per step: zero_grad; total = counted tokens over the step's micro-batches;
           backward(ce_sum_i / total) for each micro-batch (accumulates);
           clip_grad_norm_(params, grad_clip, foreach=False); opt.step().
  checks   packed == unpacked logits; gradient checkpointing (transformers, non-reentrant)
           reproduces the `first` gradients; at least one step is actually clipped; the whole
           case recomputed in float64 stays within 1e-5 (relative to each tensor's max-abs) of
           the float32 golden (extra.fp64_rel_err: how far a correct fp32 engine may land).

Determinism: torch.manual_seed, one CPU thread, torch.use_deterministic_algorithms(True); two
runs give byte-identical files (checked when the goldens were made).

Run (CPU torch lives in the golden venv, not in CI; < 1 minute):
  .venv-golden/bin/python tools/gen_train_goldens.py
Needs torch, transformers==4.57.1, peft==0.17.1 (tools/golden-requirements.txt).
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "data", "train")
FIXTURES = os.environ.get("LT_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
STORIES = os.path.join(FIXTURES, "stories260K-hf")
RANDOM_DIR = os.path.join(OUT, "random_qwen2")
# head_dim 64: the head dims that the bf16 attention kernels take (CPU AVX512-BF16, CUDA tensor
# cores: 32 / 64 / 128), which the head_dim-8 model never reaches
RANDOM64_DIR = os.path.join(OUT, "random_qwen2_hd64")
MODEL_DIRS = {"random": RANDOM_DIR, "random64": RANDOM64_DIR}

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
B, T = 2, 16
LORA_B_STD = 0.05
OPTIM = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}

# grad_clip values are chosen between the observed pre-clip gradient norms, so that some steps
# clip and (in most cases) some do not; the generator asserts that at least one step clips and
# that no norm lies within 0.1% of the threshold (no knife-edge for the C comparison).
CASES = [
    dict(name="qwen2_lora_all", model="random", method="lora", r=4, alpha=8, rslora=False,
         targets=ALL7, layers=[0, 1], base_dtype="f32", grad_clip=1.0, grad_accum=2, steps=3),
    dict(name="qwen2_lora_rslora_qv_l1", model="random", method="lora", r=2, alpha=4, rslora=True,
         targets=["q_proj", "v_proj"], layers=[1], base_dtype="f32", grad_clip=0.23,
         grad_accum=3, steps=2),
    dict(name="qwen2_dora_qkvo", model="random", method="dora", r=4, alpha=8, rslora=False,
         targets=["q_proj", "k_proj", "v_proj", "o_proj"], layers=[0, 1], base_dtype="f32",
         grad_clip=0.84, grad_accum=2, steps=3),
    dict(name="qwen2_full", model="random", method="full", freeze_embeddings=False,
         layers=[0, 1], base_dtype="f32", grad_clip=2.65, grad_accum=2, steps=3),
    # batch seed 1104, not the default 1004: with 1004 one lm_head gradient element of step 1
    # is ~1e-8 (= Adam eps) and dominated by rounding, so its Adam move differs by 6e-5
    # (relative) between float32 and float64 -- no fair golden (see fp64_rel_err).
    dict(name="qwen2_full_l1_noemb", model="random", method="full", freeze_embeddings=True,
         layers=[1], base_dtype="f32", grad_clip=1.48, grad_accum=2, steps=3, seed=1104),
    dict(name="qwen2_lora_bf16", model="random", method="lora", r=4, alpha=8, rslora=False,
         targets=ALL7, layers=[0, 1], base_dtype="bf16", grad_clip=0.9, grad_accum=2, steps=3),
    dict(name="qwen2hd64_lora_all", model="random64", method="lora", r=4, alpha=8,
         rslora=False, targets=ALL7, layers=[0, 1], base_dtype="f32", grad_clip=0.97,
         grad_accum=2, steps=3),
    dict(name="stories_lora_qv", model="stories", method="lora", r=4, alpha=8, rslora=False,
         targets=["q_proj", "v_proj"], layers=[0, 1, 2, 3, 4], base_dtype="f32", grad_clip=7.45,
         grad_accum=2, steps=3),
    dict(name="stories_dora_all", model="stories", method="dora", r=2, alpha=4, rslora=False,
         targets=ALL7, layers=[0, 1, 2, 3, 4], base_dtype="f32", grad_clip=7.0, grad_accum=2,
         steps=3),
    # 'after' is stored only for this subset (size budget); grads are stored for all tensors.
    dict(name="stories_full", model="stories", method="full", freeze_embeddings=False,
         layers=[0, 1, 2, 3, 4], base_dtype="f32", grad_clip=20.0, grad_accum=2, steps=3,
         after_subset=["model.embed_tokens.weight", "model.layers.0.", "model.layers.4.",
                       "model.norm.weight"]),
]


# ----------------------------------------------------------------------------- random model

def make_random_qwen2(out_dir=RANDOM_DIR, hidden=32, heads=4, kv_heads=2, head_dim=8, inter=48):
    """Tiny Qwen2: GQA 4/2 heads, head_dim 8 (or as given), q/k/v bias, untied lm_head, fp32."""
    cfg = Qwen2Config(vocab_size=96, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=2, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, head_dim=head_dim,
                      max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6,
                      hidden_act="silu", tie_word_embeddings=False, use_sliding_window=False,
                      sliding_window=None, attention_dropout=0.0, bos_token_id=1,
                      eos_token_id=2, torch_dtype="float32")
    torch.manual_seed(1234)
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    # HF init gives zero biases and unit norms, which would hide a missing bias or norm weight;
    # draw every tensor from our own generator instead, scaled so that logits have std ~1.
    g = torch.Generator().manual_seed(20261125)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * n)
            elif name.endswith(".bias"):
                p.copy_(0.1 * n)
            elif name == "model.embed_tokens.weight":
                p.copy_(0.5 * n)
            else:  # Linear weight [out, in]
                p.copy_(n / math.sqrt(p.shape[1]))
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen_cfg = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    from safetensors import safe_open
    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" in keys and "model.layers.0.self_attn.q_proj.bias" in keys, keys
    with open(os.path.join(out_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["model_type"] == "qwen2" and saved["tie_word_embeddings"] is False
    assert saved["use_sliding_window"] is False and saved["attention_dropout"] == 0.0


def load_base(case):
    path = MODEL_DIRS.get(case["model"], STORIES)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()  # dropout is 0 everywhere anyway
    if case["base_dtype"] == "bf16":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model


# ----------------------------------------------------------------------------- batches

def make_batches(case, vocab, seed):
    rng = np.random.default_rng(seed)
    n = case["grad_accum"] * case["steps"]
    split_choices = [7, 5, 9, 6, 10, 8]
    mbs = []
    for i in range(n):
        tokens = rng.integers(0, vocab, size=(B, T)).astype(np.int64)
        targets = np.full((B, T), -100, dtype=np.int64)
        pos = np.zeros((B, T), dtype=np.int64)
        seq = np.zeros((B, T), dtype=np.int64)
        a = split_choices[i % len(split_choices)]
        rows = [[(0, a), (a, T)], [(0, T)]]  # row 0 packs two sequences, row 1 one
        prompts = []  # [row, start, length, prompt_len] per sequence
        for b, segs in enumerate(rows):
            for sid, (s, e) in enumerate(segs):
                L = e - s
                # prompt length 2..4 (so every sequence has >= 1 masked prompt position) and
                # at least 2 counted targets left
                P = int(rng.integers(2, min(4, L - 2) + 1))
                prompts.append([b, s, L, P])
                pos[b, s:e] = np.arange(L)
                seq[b, s:e] = sid
                for t in range(P - 1, L - 1):
                    targets[b, s + t] = tokens[b, s + t + 1]
        mbs.append({"B": B, "T": T, "tokens": tokens, "targets": targets, "pos": pos,
                    "seq": seq, "segs": rows, "sequences": prompts})
    return mbs


def additive_mask(seq):
    """seq [B,T] -> float32 [B,1,T,T]: 0 where s<=t and same sequence, else finfo.min."""
    s = torch.as_tensor(seq)
    Tn = s.shape[1]
    causal = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    ok = causal[None] & (s[:, :, None] == s[:, None, :])
    m = torch.zeros(ok.shape, dtype=torch.float32)
    m[~ok] = torch.finfo(torch.float32).min
    return m[:, None]


def forward(model, mb):
    out = model(input_ids=torch.as_tensor(mb["tokens"]), position_ids=torch.as_tensor(mb["pos"]),
                attention_mask=additive_mask(mb["seq"]).to(model.dtype), use_cache=False)
    logits = out.logits
    tgt = torch.as_tensor(mb["targets"])
    ce_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                             ignore_index=-100, reduction="sum")
    return logits, ce_sum, int((tgt != -100).sum())


def check_packing(model, mbs):
    """Packed-row logits must equal each sequence run alone (default causal mask, pos 0..L-1)."""
    worst = 0.0
    with torch.no_grad():
        for mb in mbs:
            logits, _, _ = forward(model, mb)
            for b, segs in enumerate(mb["segs"]):
                for (s, e) in segs:
                    ids = torch.as_tensor(mb["tokens"][b, s:e])[None]
                    alone = model(input_ids=ids, position_ids=torch.arange(e - s)[None],
                                  use_cache=False).logits[0]
                    d = (alone - logits[b, s:e]).abs().max().item()
                    worst = max(worst, d / max(1.0, alone.abs().max().item()))
    assert worst < 1e-5, f"packed vs unpacked logits differ by {worst}"
    return worst


# ----------------------------------------------------------------------------- trainables

def build(case, vocab_seed):
    """Fresh model with the case's initial trainable values. Returns (model, [(name, param)])."""
    torch.manual_seed(4321)  # PEFT's own init (overwritten below) draws from the global RNG
    model = load_base(case)
    if case["method"] == "full":
        layers = set(case["layers"])
        for name, p in model.named_parameters():  # tied lm_head is not listed separately
            if name == "model.embed_tokens.weight":
                p.requires_grad_(not case["freeze_embeddings"])
            elif name.startswith("model.layers."):
                p.requires_grad_(int(name.split(".")[2]) in layers)
            else:  # model.norm.weight, lm_head.weight (untied)
                p.requires_grad_(True)
        return model, [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    cfg = LoraConfig(r=case["r"], lora_alpha=case["alpha"], lora_dropout=0.0,
                     target_modules=list(case["targets"]), layers_to_transform=list(case["layers"]),
                     use_rslora=case["rslora"], use_dora=case["method"] == "dora", bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.eval()
    g = torch.Generator().manual_seed(vocab_seed)
    from peft.tuners.lora import LoraLayer
    with torch.no_grad():
        for _, mod in model.named_modules():  # module order is deterministic
            if not isinstance(mod, LoraLayer) or "default" not in mod.lora_A:
                continue
            A = mod.lora_A["default"].weight  # [r, in]
            Bw = mod.lora_B["default"].weight  # [out, r]
            bound = 1.0 / math.sqrt(A.shape[1])
            A.copy_((torch.rand(A.shape, generator=g) * 2 - 1) * bound)
            Bw.copy_(torch.randn(Bw.shape, generator=g) * LORA_B_STD)
            if case["method"] == "dora":
                # PEFT's own magnitude init, now with the non-zero B.
                mod.lora_magnitude_vector["default"].update_layer(
                    base_layer=mod.get_base_layer(), lora_A=A, lora_B=Bw,
                    scaling=mod.scaling["default"])
                mag = mod.lora_magnitude_vector["default"].weight
                ref = torch.linalg.norm(mod.get_base_layer().weight
                                        + mod.scaling["default"] * (Bw @ A), dim=1)
                assert torch.equal(mag, ref) and mag.requires_grad
    sd = get_peft_model_state_dict(model)
    by_ptr = {p.data_ptr(): p for p in model.parameters() if p.requires_grad}
    named = []
    for k, v in sd.items():
        p = by_ptr.get(v.data_ptr())
        assert p is not None and p.shape == v.shape, f"no trainable param for saved key {k}"
        named.append((k, p))
    assert len(named) == len(by_ptr), "trainable params missing from the saved state dict"
    return model, named


def compute(case, seed_lora, mbs, dtype, check_ckpt=False, autocast=False):
    """first (one forward/backward on micro_batches[0]) and after (AdamW steps) in `dtype`.

    float32 is the golden; the same computation in float64 (same initial values, cast) only
    estimates how far a correct float32 implementation may land from the golden. autocast:
    every forward under torch.autocast("cpu", dtype=torch.bfloat16) (the yardstick of the bf16
    compute mode: tools/gen_bf16_autocast_refs.py); the golden checks on clipping are then
    skipped."""
    if autocast:
        real_forward = forward

        def forward_(model, mb):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return real_forward(model, mb)
    else:
        forward_ = forward
    out = {}
    model, named = build(case, seed_lora)
    model.to(dtype)
    out["names"] = [n for n, _ in named]
    out["init"] = {n: p.detach().clone() for n, p in named}
    logits, ce_sum, count = forward_(model, mbs[0])
    loss0 = ce_sum / count
    loss0.backward()
    out.update(logits=logits.detach(), loss0=loss0.item(), count=count,
               grads={n: p.grad.detach().clone() for n, p in named})
    assert all(g.abs().max() > 0 for g in out["grads"].values()), "a tensor got no gradient"
    del model, named

    out["ck_err"] = 0.0
    if check_ckpt:
        # gradient checkpointing must reproduce the same gradients: one golden, both modes
        model, named = build(case, seed_lora)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
        _, ce_ck, _ = forward_(model, mbs[0])
        (ce_ck / count).backward()
        for (n, p) in named:
            g = out["grads"][n]
            out["ck_err"] = max(out["ck_err"], ((p.grad - g).abs().max() /
                                                g.abs().max().clamp_min(1e-30)).item())
        assert out["ck_err"] < 1e-5, f"checkpointed gradients differ by {out['ck_err']}"
        del model, named

    # after: AdamW with accumulation and clipping, from a fresh copy of init
    model, named = build(case, seed_lora)
    model.to(dtype)
    params = [p for _, p in named]
    for n, p in named:
        assert torch.equal(p, out["init"][n])
    opt = torch.optim.AdamW(params, lr=OPTIM["lr"], betas=tuple(OPTIM["betas"]), eps=OPTIM["eps"],
                            weight_decay=OPTIM["weight_decay"], foreach=False)
    losses, norms, step_counts = [], [], []
    A = case["grad_accum"]
    for s in range(case["steps"]):
        opt.zero_grad(set_to_none=True)
        step_mbs = mbs[s * A:(s + 1) * A]
        total = sum(int((mb["targets"] != -100).sum()) for mb in step_mbs)
        step_sum = 0.0
        for mb in step_mbs:
            _, ce, _ = forward_(model, mb)
            (ce / total).backward()
            step_sum += ce.item()
        norm = torch.nn.utils.clip_grad_norm_(params, case["grad_clip"], foreach=False)
        opt.step()
        losses.append(step_sum / total)
        norms.append(float(norm))
        step_counts.append(total)
    if dtype == torch.float32 and not autocast:
        assert any(nv > case["grad_clip"] for nv in norms), f"no step clipped: {norms}"
        assert all(abs(nv - case["grad_clip"]) > 1e-3 * case["grad_clip"] for nv in norms), norms
    out.update(losses=losses, norms=norms, step_counts=step_counts,
               final={n: p.detach().clone() for n, p in named})
    for n in out["names"]:
        assert not torch.equal(out["final"][n], out["init"][n]), f"{n} did not change"
    return out


def scaling_of(case):
    return case["alpha"] / (math.sqrt(case["r"]) if case["rslora"] else case["r"])


# ----------------------------------------------------------------------------- writing

def write_f32(folder, fname, t):
    arr = t.detach().to(torch.float32).contiguous().numpy().astype("<f4")
    with open(os.path.join(folder, fname), "wb") as f:
        f.write(arr.tobytes())
    return {"file": fname, "shape": list(arr.shape)}


def run_case(ci, case):
    folder = os.path.join(OUT, case["name"])
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    seed_batches, seed_lora = case.get("seed", 1000 + ci), 2000 + ci

    model, _ = build(case, seed_lora)
    mbs = make_batches(case, model.config.vocab_size, seed_batches)
    packing_err = check_packing(model, mbs)
    del model
    r = compute(case, seed_lora, mbs, torch.float32, check_ckpt=True)
    r64 = compute(case, seed_lora, mbs, torch.float64)
    names, init, grads, final = r["names"], r["init"], r["grads"], r["final"]
    logits, loss0, count, losses, norms = r["logits"], r["loss0"], r["count"], r["losses"], r["norms"]
    step_counts, ck_err = r["step_counts"], r["ck_err"]
    assert names == r64["names"] and r64["norms"] and r["step_counts"] == r64["step_counts"]

    def rel(a, b):
        return float(np.float32(((a.double() - b).abs().max() / b.abs().max()).item()))
    fp64_err = {
        "loss0": rel(torch.tensor(loss0), torch.tensor(r64["loss0"])),
        "logits": rel(logits, r64["logits"]),
        "losses": max(rel(torch.tensor(x), torch.tensor(y)) for x, y in zip(losses, r64["losses"])),
        "grad_norms_preclip": max(rel(torch.tensor(x), torch.tensor(y))
                                  for x, y in zip(norms, r64["norms"])),
        "grads": {n: rel(grads[n], r64["grads"][n]) for n in names},
        "after": {n: rel(final[n], r64["final"][n]) for n in names},
    }
    # A golden must be well-conditioned at the C test's tolerance (1e-5 relative to each
    # tensor's max-abs): float32 torch itself must be well within it of float64.
    for what in ("grads", "after"):
        w = max(fp64_err[what].values())
        assert w < 1e-5, f"{case['name']}: float32 {what} are {w} from float64"
    assert fp64_err["logits"] < 1e-5 and fp64_err["loss0"] < 1e-5

    # manifest + tensor files (file index = position in `names`)
    man = {
        "generator": "tools/gen_train_goldens.py",
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "model": ("data:tests/data/train/" + os.path.basename(MODEL_DIRS[case["model"]])
                  if case["model"] in MODEL_DIRS else "fixture:stories260K-hf"),
        "method": case["method"],
    }
    if case["method"] == "full":
        man["full"] = {"freeze_embeddings": case["freeze_embeddings"], "layers": case["layers"]}
    else:
        man["lora"] = {"r": case["r"], "alpha": case["alpha"], "rslora": case["rslora"],
                       "dropout": 0.0, "targets": list(case["targets"]), "layers": case["layers"]}
    man["base_dtype"] = case["base_dtype"]
    man["optim"] = {**OPTIM, "grad_clip": case["grad_clip"], "grad_accum": case["grad_accum"],
                    "steps": case["steps"]}
    man["micro_batches"] = [
        {"B": mb["B"], "T": mb["T"], "tokens": mb["tokens"].ravel().tolist(),
         "targets": mb["targets"].ravel().tolist(), "pos": mb["pos"].ravel().tolist(),
         "seq": mb["seq"].ravel().tolist()} for mb in mbs]
    man["names"] = names
    if case["method"] == "full":
        man["init"] = {}
    else:
        man["init"] = {n: write_f32(folder, f"init_{i}.f32", init[n]) for i, n in enumerate(names)}
    man["first"] = {
        "loss": float(np.float32(loss0)), "count": count,
        "logits": write_f32(folder, "logits0.f32", logits),
        "grads": {n: write_f32(folder, f"grad_{i}.f32", grads[n]) for i, n in enumerate(names)},
    }
    subset = case.get("after_subset")
    keep = [n for n in names if subset is None or any(
        n == s or (s.endswith(".") and n.startswith(s)) for s in subset)]
    man["after"] = {n: write_f32(folder, f"after_{i}.f32", final[n])
                    for i, n in enumerate(names) if n in keep}
    man["losses"] = [float(np.float32(x)) for x in losses]
    man["extra"] = {
        "grad_norms_preclip": norms,
        "step_token_counts": step_counts,
        "fp64_rel_err": fp64_err,
        "micro_batch_token_counts": [int((mb["targets"] != -100).sum()) for mb in mbs],
        "sequences": [mb["sequences"] for mb in mbs],
        "packed_vs_unpacked_max_rel_diff": float(np.float32(packing_err)),
        "checkpointing_grad_max_rel_diff": float(np.float32(ck_err)),
    }
    notes = {
        "targets": "already shifted (HF convention: labels of the prompt tokens are -100, then "
                   "shift by one): targets[t] = tokens[t+1] inside the same sequence for "
                   "prompt_len-1 <= t <= len-2; -100 for t < prompt_len-1 and on each sequence's "
                   "last token. No padding. extra.sequences lists [row, start, length, "
                   "prompt_len] of every sequence of every micro-batch.",
        "mask": "additive float32 (B,1,T,T) mask, 0 where s<=t and seq[s]==seq[t], else "
                "finfo(float32).min; eager attention; position_ids = pos.",
        "loss": "first.loss = CE sum over micro_batches[0] / first.count; losses[k] = CE sum over "
                "step k's micro-batches / their total counted tokens, at the parameters before "
                "step k's update.",
        "optimizer": "torch.optim.AdamW(all trainable params in ONE group, foreach=False): weight "
                     "decay applies to every trainable tensor, norms and biases included. "
                     "clip_grad_norm_(grad_clip) on the global L2 norm of all trainable grads "
                     "before each step (extra.grad_norms_preclip = its return value).",
        "checkpointing": "transformers gradient checkpointing (non-reentrant) gives the same "
                         "first.grads within extra.checkpointing_grad_max_rel_diff: one golden "
                         "serves both modes.",
        "files": "raw little-endian float32, row-major, shape as given; init_<i>/grad_<i>/"
                 "after_<i> where i is the index of the tensor in `names`.",
    }
    if case["method"] == "full":
        notes["init"] = ("full FT: init is empty; initial values are the model's weights as "
                         "loaded" + (" (rounded to bf16)" if case["base_dtype"] == "bf16" else "")
                         + ". names are Hugging Face state-dict names of the trainable tensors.")
        notes["trainable"] = ("embed_tokens per freeze_embeddings; every tensor of the listed "
                              "layers; model.norm.weight and lm_head.weight always (when untied).")
        if case["model"] == "stories":
            notes["tied"] = ("stories260K ties lm_head to the embeddings: the shared tensor "
                             "appears once, as model.embed_tokens.weight, and its gradient sums "
                             "the embedding and the LM-head uses.")
        if subset:
            notes["after_subset"] = ("size budget: all parameters are trained, but `after` holds "
                                     "only " + ", ".join(subset) + " (prefixes ending in '.' "
                                     "match whole layers); first.grads holds every tensor.")
    else:
        notes["init"] = (
            f"peft.get_peft_model(LoraConfig(r, lora_alpha, lora_dropout=0, target_modules, "
            f"layers_to_transform, use_rslora, use_dora, bias='none')); scaling = "
            f"{scaling_of(case)!r} (alpha/{'sqrt(r)' if case['rslora'] else 'r'}). Then, per "
            f"adapted module in module order, from torch.Generator().manual_seed({seed_lora}): "
            f"lora_A = U(-1/sqrt(in), 1/sqrt(in)) [r,in], lora_B = N(0, {LORA_B_STD}^2) [out,r] "
            f"(non-zero so that lora_A gets gradients).")
        if case["method"] == "dora":
            notes["init"] += (" DoRA magnitude [out] re-initialised with PEFT's "
                              "DoraLinearLayer.update_layer on the new A, B: "
                              "||W + scaling*B@A|| over each output row (dim=1), W the frozen "
                              "base weight (without bias). The weight norm is detached in the "
                              "forward (PEFT semantics). With a biased base layer (qwen2 q/k/v) "
                              "PEFT's output is (m/||W+s*B@A||) * (W x + s*B@A x) + bias: the "
                              "bias is not rescaled.")
        notes["names"] = ("keys of peft.get_peft_model_state_dict (= adapter_model.safetensors "
                          "names), in that order.")
    if case["base_dtype"] == "bf16":
        notes["base_dtype"] = ("every base-model tensor (embeddings, norms, biases, lm_head, all "
                               "linear weights) was rounded w.to(bfloat16).to(float32) before "
                               "PEFT wrapped the model; compute and LoRA params are float32.")
    man["notes"] = notes
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")
    worst = lambda d: max(d.values())  # noqa: E731
    print(f"{case['name']:26s} fp64: grads {worst(fp64_err['grads']):.1e} after "
          f"{worst(fp64_err['after']):.1e} logits {fp64_err['logits']:.1e}")
    print(f"{case['name']:26s} loss0={loss0:.5f} count={count} losses="
          f"{[round(x, 5) for x in losses]} norms={[round(x, 4) for x in norms]} "
          f"clipped={[nv > case['grad_clip'] for nv in norms]} pack={packing_err:.1e} "
          f"ckpt={ck_err:.1e}")


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    make_random_qwen2()
    make_random_qwen2(RANDOM64_DIR, hidden=32, heads=2, kv_heads=1, head_dim=64, inter=48)
    only = sys.argv[1:]
    for ci, case in enumerate(CASES):
        if not only or case["name"] in only:
            run_case(ci, case)


if __name__ == "__main__":
    main()
