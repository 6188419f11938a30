#!/usr/bin/env python3
"""gen_ops_goldens.py - PyTorch / transformers / PEFT goldens for the CPU training ops.

Writes tests/data/ops/<case>.bin (raw little-endian float32, tensors back to back) and
tests/data/ops/manifest.json (per case: its file, scalar params, and for each tensor its
offset in floats and shape). Integer inputs (tokens, targets, positions, sequence ids) are
stored as float32 (exact for these small values). Inputs come from a seeded torch.Generator;
outputs and gradients from torch autograd with L = sum(out * R) for a stored random R.

References used (outside our code):
  matmul        torch.nn.functional.linear
  embedding     torch.nn.functional.embedding
  rmsnorm       transformers LlamaRMSNorm
  rope          transformers LlamaRotaryEmbedding + apply_rotary_pos_emb (half-split);
                the interleaved layout via complex multiplication as Meta's llama reference
  attention     explicit masked softmax (causal & same sequence id & window), GQA via
                repeat_interleave of the kv heads, as transformers' repeat_kv
  swiglu        torch.nn.functional.silu(gate) * up
  cross_entropy torch.nn.functional.cross_entropy(ignore_index=-100), mean and sum
  adamw         torch.optim.AdamW, 3 steps, weight decay, clip_grad_norm_ each step
  lora / dora   peft.tuners.lora.Linear on an nn.Linear (use_dora False/True); the dropout
                module is replaced by a fixed mask so the result is reproducible, which also
                makes PEFT take its training-with-dropout path.

Run (CPU torch lives in the golden venv, not in CI):
  .venv-golden/bin/python tools/gen_ops_goldens.py
Needs torch, transformers and peft==0.17.1.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ops")

B, T, C, OC, NH, NKV, HD, V, R, H = 2, 7, 16, 12, 4, 2, 8, 37, 4, 24
N = B * T
torch.manual_seed(0)  # modules built with default init before we overwrite them
gen = torch.Generator().manual_seed(20261125)


def rnd(*shape, scale=1.0):
    return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1).float() * scale


class Case:
    def __init__(self, name, **params):
        self.name, self.params, self.tensors, self.blobs, self.off = name, params, {}, [], 0

    def add(self, key, t):
        t = t.detach().to(torch.float32).contiguous()
        self.tensors[key] = {"offset": self.off, "shape": list(t.shape)}
        self.blobs.append(t.numpy().astype("<f4").tobytes())
        self.off += t.numel()


cases = []


def leaf(t):
    return t.clone().requires_grad_(True)


# ---- matmul ---------------------------------------------------------------------------------
c = Case("matmul", N=N, C=C, OC=OC)
x, w, b, r = leaf(rnd(N, C)), leaf(rnd(OC, C)), leaf(rnd(OC)), rnd(N, OC)
y = F.linear(x, w, b)
(y * r).sum().backward()
for k, v in [("x", x), ("w", w), ("bias", b), ("R", r), ("out", y), ("dx", x.grad), ("dw", w.grad),
             ("dbias", b.grad)]:
    c.add(k, v)
cases.append(c)

# ---- embedding -------------------------------------------------------------------------------
c = Case("embedding", N=N, C=C, V=V)
tok = torch.randint(0, V, (N,), generator=gen)
tok[3] = tok[5]  # a repeated token: the backward must scatter-add
wte, r = leaf(rnd(V, C)), rnd(N, C)
y = F.embedding(tok, wte)
(y * r).sum().backward()
for k, v in [("tokens", tok), ("wte", wte), ("R", r), ("out", y), ("dwte", wte.grad)]:
    c.add(k, v)
cases.append(c)

# ---- rmsnorm ---------------------------------------------------------------------------------
from transformers.models.llama.modeling_llama import (LlamaConfig, LlamaRMSNorm,
                                                      LlamaRotaryEmbedding, apply_rotary_pos_emb)

eps = 1e-5
c = Case("rmsnorm", N=N, C=C, eps=eps)
norm = LlamaRMSNorm(C, eps=eps)
with torch.no_grad():
    norm.weight.copy_(rnd(C) + 1.0)
x, r = leaf(rnd(N, C, scale=3.0)), rnd(N, C)
y = norm(x)
(y * r).sum().backward()
for k, v in [("x", x), ("w", norm.weight), ("R", r), ("out", y), ("dx", x.grad),
             ("dw", norm.weight.grad)]:
    c.add(k, v)
cases.append(c)

# ---- rope --------------------------------------------------------------------------------------
pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6]]) * 3  # row 0 packs two sequences
seq = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [5, 5, 5, 5, 5, 5, 5]])
cfg = LlamaConfig(hidden_size=NH * HD, num_attention_heads=NH, num_key_value_heads=NKV,
                  head_dim=HD, rope_theta=10000.0, max_position_embeddings=64)
rot = LlamaRotaryEmbedding(cfg)
inv_freq = rot.inv_freq.float()
c = Case("rope", N=N, NH=NH, HD=HD, n_pos=int(pos.max()) + 1)
x, r = leaf(rnd(B, T, NH, HD)), rnd(B, T, NH, HD)
cos, sin = rot(x, pos)                                 # [B, T, HD]
y, _ = apply_rotary_pos_emb(x.transpose(1, 2), x.transpose(1, 2), cos, sin)  # [B, NH, T, HD]
y = y.transpose(1, 2)
(y * r).sum().backward()
for k, v in [("pos", pos), ("inv_freq", inv_freq), ("x", x), ("R", r), ("out", y), ("dx", x.grad)]:
    c.add(k, v)
# interleaved pairs (2i, 2i+1) as complex numbers rotated by e^{i angle}
x2 = leaf(rnd(B, T, NH, HD))
freqs = pos.float()[..., None] * inv_freq  # [B, T, HD/2], float32 like transformers
cis = torch.polar(torch.ones_like(freqs), freqs)[:, :, None, :]
xc = torch.view_as_complex(x2.reshape(B, T, NH, HD // 2, 2))
y2 = torch.view_as_real(xc * cis).reshape(B, T, NH, HD)
(y2 * r).sum().backward()
for k, v in [("x_il", x2), ("out_il", y2), ("dx_il", x2.grad)]:
    c.add(k, v)
cases.append(c)


# ---- attention ----------------------------------------------------------------------------------
def attention(q, k, v, seq, window):
    # q [B,T,NH,HD], k/v [B,T,NKV,HD]
    k = k.repeat_interleave(NH // NKV, dim=2)
    v = v.repeat_interleave(NH // NKV, dim=2)
    s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(HD)
    t_idx = torch.arange(T)[:, None]
    s_idx = torch.arange(T)[None, :]
    allowed = (s_idx <= t_idx)[None] & (seq[:, :, None] == seq[:, None, :])  # [B,T,S]
    if window > 0:
        allowed = allowed & ((t_idx - s_idx) < window)[None]
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [B,NH,T]
    p = torch.softmax(s, dim=-1)
    return torch.einsum("bhts,bshd->bthd", p, v), lse


for window in (0, 3):
    c = Case("attention" if window == 0 else "attention_window", B=B, T=T, NH=NH, NKV=NKV, HD=HD,
             window=window)
    q, k, v, r = leaf(rnd(B, T, NH, HD, scale=2)), leaf(rnd(B, T, NKV, HD, scale=2)), \
        leaf(rnd(B, T, NKV, HD)), rnd(B, T, NH, HD)
    y, lse = attention(q, k, v, seq, window)
    (y * r).sum().backward()
    for kk, vv in [("seq", seq), ("q", q), ("k", k), ("v", v), ("R", r), ("out", y), ("lse", lse),
                   ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)]:
        c.add(kk, vv)
    cases.append(c)

# ---- swiglu -----------------------------------------------------------------------------------
c = Case("swiglu", n=N * H)
g, u, r = leaf(rnd(N, H, scale=4)), leaf(rnd(N, H)), rnd(N, H)
y = F.silu(g) * u
(y * r).sum().backward()
for k, v in [("gate", g), ("up", u), ("R", r), ("out", y), ("dgate", g.grad), ("dup", u.grad)]:
    c.add(k, v)
cases.append(c)

# ---- cross-entropy -------------------------------------------------------------------------------
c = Case("cross_entropy", N=N, V=V)
logits = leaf(rnd(N, V, scale=6))
with torch.no_grad():
    logits[2, 5] = 90.0  # needs the max subtraction
tgt = torch.randint(0, V, (N,), generator=gen)
tgt[[1, 6, 13]] = -100
loss = F.cross_entropy(logits, tgt, ignore_index=-100)
loss.backward()
loss_sum = F.cross_entropy(logits.detach().double(), tgt, ignore_index=-100, reduction="sum")
c.params.update(mean=loss.item(), sum=loss_sum.item(), count=int((tgt != -100).sum()))
for k, v in [("logits", logits), ("targets", tgt), ("dlogits", logits.grad)]:
    c.add(k, v)
cases.append(c)

# ---- AdamW + clip_grad_norm_ ------------------------------------------------------------------------
lr, b1, b2, aeps, wd, max_norm = 1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0
c = Case("adamw", n0=3 * 5, n1=7, steps=3, lr=lr, beta1=b1, beta2=b2, eps=aeps, weight_decay=wd,
         max_norm=max_norm)
p0, p1 = torch.nn.Parameter(rnd(3, 5)), torch.nn.Parameter(rnd(7))
c.add("p0_init", p0), c.add("p1_init", p1)
opt = torch.optim.AdamW([p0, p1], lr=lr, betas=(b1, b2), eps=aeps, weight_decay=wd)
norms = []
for step in range(3):
    # step 1 stays below max_norm (no clipping); p1's gradients are tiny so that sqrt(v_hat)
    # is near eps and where eps goes (outside the sqrt) matters
    g0, g1 = rnd(3, 5, scale=0.1 if step == 1 else 2), rnd(7, scale=1e-7)
    c.add(f"g0_{step}", g0), c.add(f"g1_{step}", g1)
    p0.grad, p1.grad = g0.clone(), g1.clone()
    norms.append(torch.nn.utils.clip_grad_norm_([p0, p1], max_norm).item())
    opt.step()
c.params["norms"] = norms
c.add("p0_final", p0), c.add("p1_final", p1)
cases.append(c)

# ---- LoRA / DoRA via PEFT ----------------------------------------------------------------------------
from peft.tuners.lora import Linear as LoraLinear


class FixedMask(torch.nn.Module):
    """Stands in for nn.Dropout: multiplies by a stored mask of 0 and 1/(1-p)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask


for use_dora in (False, True):
    for dropout in (False, True):
        name = ("dora" if use_dora else "lora") + ("_dropout" if dropout else "")
        alpha, rslora = 8, use_dora  # exercise both scalings
        base = torch.nn.Linear(C, OC, bias=True)
        with torch.no_grad():
            base.weight.copy_(rnd(OC, C, scale=0.5)), base.bias.copy_(rnd(OC))
        layer = LoraLinear(base, "default", r=R, lora_alpha=alpha, lora_dropout=0.0,
                           use_rslora=rslora, use_dora=use_dora)
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(rnd(R, C, scale=0.5))
            layer.lora_B["default"].weight.copy_(rnd(OC, R, scale=0.5))
            if use_dora:
                layer.lora_magnitude_vector["default"].weight.copy_(rnd(OC) + 1.5)
        p = 0.25
        mask = (torch.rand(N, C, generator=gen) >= p).float() / (1 - p)
        if dropout:
            layer.lora_dropout["default"] = FixedMask(mask)
        base.weight.requires_grad_(False), base.bias.requires_grad_(False)  # as get_peft_model
        layer.train()
        x, r = leaf(rnd(N, C)), rnd(N, OC)
        y = layer(x)
        (y * r).sum().backward()
        A, Bw = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        c = Case(name, N=N, C=C, OC=OC, r=R, alpha=alpha, rslora=int(rslora),
                 scaling=layer.scaling["default"], dropout=int(dropout))
        for k, v in [("x", x), ("W", base.weight), ("bias", base.bias), ("A", A), ("B", Bw),
                     ("R", r), ("out", y), ("dx", x.grad), ("dA", A.grad), ("dB", Bw.grad)]:
            c.add(k, v)
        if dropout:
            c.add("mask", mask)
        if use_dora:
            mag = layer.lora_magnitude_vector["default"].weight
            c.add("mag", mag), c.add("dmag", mag.grad)
            with torch.no_grad():
                wn = layer.lora_magnitude_vector["default"].get_weight_norm(
                    base.weight, Bw @ A, layer.scaling["default"])
            c.add("wnorm", wn)
        assert base.weight.grad is None  # W frozen
        cases.append(c)

# ---- LoRA init bound, as torch computes it for kaiming_uniform_(a=sqrt(5)) ------------------------
layer = LoraLinear(torch.nn.Linear(C, OC), "default", r=R, lora_alpha=8)
fan_in = torch.nn.init._calculate_correct_fan(layer.lora_A["default"].weight, "fan_in")
bound = math.sqrt(3.0) * torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(fan_in)
c = Case("lora_init", C=C, r=R, OC=OC, bound=bound,
         peft_A_maxabs=layer.lora_A["default"].weight.abs().max().item(),
         peft_B_maxabs=layer.lora_B["default"].weight.abs().max().item())
cases.append(c)

# ---- write ----------------------------------------------------------------------------------------------
os.makedirs(OUT, exist_ok=True)
manifest = {"generator": "tools/gen_ops_goldens.py", "torch": torch.__version__,
            "peft": __import__("peft").__version__,
            "transformers": __import__("transformers").__version__, "cases": {}}
total = 0
for c in cases:
    entry = {"params": c.params, "tensors": c.tensors}
    if c.blobs:
        fn = c.name + ".bin"
        data = b"".join(c.blobs)
        with open(os.path.join(OUT, fn), "wb") as f:
            f.write(data)
        entry["file"] = fn
        total += len(data)
    manifest["cases"][c.name] = entry
with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
print(f"wrote {len(cases)} cases, {total} bytes of tensors to {os.path.normpath(OUT)}", file=sys.stderr)
