"""test_fuse_peer.py - merged-model exports (lt_adapter_merge + lt_model_save_hf/_gguf) checked
by the tools that read them, in CI.

The C tool `test_export --fuse` loads a base, merges a random adapter (seeded, every target
of every layer, r=4, alpha=8), writes the export, the adapter (plain safetensors) and our
logits of the merged fp32 model. Then:
  1. stories260K-hf, LoRA and DoRA, HF f32: every weight equals numpy's PEFT merge of the base
     safetensors + adapter (W + s B A; DoRA mag / ||W + s B A||_row * (W + s B A)); config.json
     keys equal the base's; mlx-lm loads the folder and its logits equal ours.
  2. HF bf16 / f16: dtypes and values are numpy's round-to-nearest-even of the f32 export.
  3. GGUF f16 / q8_0 (stories260K-hf, a sentencepiece vocabulary): gguf-py reads it; KVs as
     convert_hf_to_gguf writes them; tensors = the converter's permute() of the HF weights
     (numpy, written out here), f16 by numpy's cast, q8_0 byte-equal to gguf-py's quantize;
     tokens / scores / types equal sentencepiece's reading of tokenizer.model.
  4. `loratune fuse` end to end with a PEFT adapter folder written here; --help and errors.
(SmolLM2: test_fuse_smollm2.py.) Prints "N passed, M failed".
"""
import json
import os
import struct
import subprocess
import sys

import gguf
import numpy as np
from gguf import quants
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusecheck import TMP, field, fuse, mlx_logits  # noqa: E402

HF = os.path.join(FIXTURES, "stories260K-hf")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODULE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
IDS = [1, 403, 407, 261, 378, 426, 260, 500, 23, 7, 99, 310]


def peft_merge(base, adapter, method, r=4, alpha=8.0):
    """PEFT's merge_and_unload, in float64."""
    out = {}
    s = alpha / r
    for name, w in base.items():
        out[name] = w
    n_layers = 1 + max(int(k.split(".")[0]) for k in adapter)
    for l in range(n_layers):
        for t in TARGETS:
            key = f"model.layers.{l}.{MODULE[t]}.{t}.weight"
            w = base[key].astype(np.float64)
            m = w + s * adapter[f"{l}.{t}.B"].astype(np.float64) @ adapter[f"{l}.{t}.A"].astype(np.float64)
            if method == "dora":
                m = (adapter[f"{l}.{t}.mag"] / np.linalg.norm(m, axis=1))[:, None] * m
            out[key] = m
    return out


def rel_err(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b) / (1e-3 + np.abs(b))))


def bf16_round(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


# ---- 1. stories260K-hf LoRA / DoRA -> HF f32: numpy PEFT merge, config, mlx-lm ----------------
base = load_file(os.path.join(HF, "model.safetensors"))
base_cfg = json.load(open(os.path.join(HF, "config.json")))
fused_f32 = {}
for method in ("lora", "dora"):
    out = os.path.join(TMP, f"hf_{method}")
    adapter, ours = fuse(HF, out, "hf", "f32", 5, method, IDS)
    if adapter is None:
        continue
    got = load_file(os.path.join(out, "model.safetensors"))
    want = peft_merge(base, adapter, method)
    check(sorted(got) == sorted(k for k in want if k != "lm_head.weight"),
          f"{method}: tensor names {sorted(set(got) ^ set(want))}")
    worst = max(rel_err(got[k], want[k]) for k in got if k in want)
    check(worst < 1e-4, f"{method}: max relative difference to numpy's PEFT merge {worst}")
    check(all(got[k].dtype == np.float32 for k in got), f"{method}: f32 tensors")
    changed = max(float(np.max(np.abs(want[k] - base[k]))) for k in want)
    check(changed > 1e-3, f"{method}: the adapter changes the weights ({changed})")
    cfg = json.load(open(os.path.join(out, "config.json")))
    for k in ("architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
              "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
              "bos_token_id", "eos_token_id", "rope_scaling", "attention_bias"):
        check(cfg.get(k) == base_cfg.get(k), f"config.json {k}: {cfg.get(k)} vs {base_cfg.get(k)}")
    check(cfg.get("torch_dtype") == "float32" and cfg.get("dtype") == "float32", "config dtype")
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json"):
        check(open(os.path.join(out, f), "rb").read() == open(os.path.join(HF, f), "rb").read(),
              f"{f} copied")
    theirs = mlx_logits(out, IDS)
    d = float(np.max(np.abs(theirs - ours)))
    print(f"stories260K {method} HF f32: mlx-lm vs ours max |logit diff| {d:.3g}")
    check(d < 1e-3, f"{method}: mlx-lm logits differ from ours by {d}")
    fused_f32[method] = got

# ---- 2. HF bf16 / f16: numpy's rounding of the f32 export -------------------------------------
for dt, np_dt, st_name in (("bf16", None, "bfloat16"), ("f16", np.float16, "float16")):
    out = os.path.join(TMP, f"hf_lora_{dt}")
    fuse(HF, out, "hf", dt, 5, "lora", IDS[:2])
    raw = open(os.path.join(out, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    dts = {v["dtype"] for k, v in hdr.items() if k != "__metadata__"}
    check(dts == {"BF16" if dt == "bf16" else "F16"}, f"{dt}: safetensors dtypes {dts}")
    check(json.load(open(os.path.join(out, "config.json"))).get("torch_dtype") == st_name, f"{dt} torch_dtype")
    if "lora" not in fused_f32:
        continue
    bad = 0
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        bits = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.uint16)
        ref = fused_f32["lora"][k].ravel()
        want = bf16_round(ref) if dt == "bf16" else ref.astype(np.float16).view(np.uint16)
        bad += int(np.sum(bits != want))
    check(bad == 0, f"{dt}: {bad} values differ from numpy's round-to-nearest-even")

# ---- 3. GGUF f16 / q8_0 from stories260K-hf: gguf-py, converter's permute, sentencepiece -------
def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


import sentencepiece as spm  # noqa: E402
sp = spm.SentencePieceProcessor(model_file=os.path.join(HF, "tokenizer.model"))
for dt in ("f16", "q8_0"):
    out = os.path.join(TMP, f"lora_{dt}.gguf")
    fuse(HF, out, "gguf", dt, 5, "lora", IDS[:2])
    if not os.path.exists(out) or "lora" not in fused_f32:
        continue
    r = gguf.GGUFReader(out)
    c = base_cfg
    want_kv = {"general.architecture": "llama", "general.type": "model",
               "llama.block_count": c["num_hidden_layers"], "llama.context_length": c["max_position_embeddings"],
               "llama.embedding_length": c["hidden_size"], "llama.feed_forward_length": c["intermediate_size"],
               "llama.attention.head_count": c["num_attention_heads"],
               "llama.attention.head_count_kv": c["num_key_value_heads"],
               "llama.rope.dimension_count": c["head_dim"], "llama.vocab_size": c["vocab_size"],
               "general.file_type": 1 if dt == "f16" else 7, "general.quantization_version": 2,
               "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": sp.bos_id(),
               "tokenizer.ggml.eos_token_id": sp.eos_id(), "tokenizer.ggml.unknown_token_id": sp.unk_id(),
               "tokenizer.ggml.add_bos_token": True}
    for k, v in want_kv.items():
        check(field(r, k) == v, f"gguf {dt} {k}: {field(r, k)} vs {v}")
    for k, v in (("llama.rope.freq_base", c["rope_theta"]),
                 ("llama.attention.layer_norm_rms_epsilon", c["rms_norm_eps"])):
        check(abs(field(r, k) - v) <= 1e-6 * v, f"gguf {dt} {k}: {field(r, k)} vs {v}")
    toks = field(r, "tokenizer.ggml.tokens")
    check(toks == [sp.id_to_piece(i) for i in range(sp.get_piece_size())], f"gguf {dt}: tokens = sentencepiece's")
    scores = field(r, "tokenizer.ggml.scores")
    check(np.allclose(scores, [sp.get_score(i) for i in range(sp.get_piece_size())]), "scores")
    types = field(r, "tokenizer.ggml.token_type")
    sp_types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                else 5 if sp.is_unused(i) else 1 for i in range(sp.get_piece_size())]
    check(types == sp_types, f"gguf {dt}: token types")
    names = {t.name: t for t in r.tensors}
    check("output.weight" not in names, "tied: no output.weight")
    hf2gguf = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    for l in range(c["num_hidden_layers"]):
        for a, b in (("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"),
                     ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                     ("self_attn.o_proj", "attn_output"), ("post_attention_layernorm", "ffn_norm"),
                     ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")):
            hf2gguf[f"model.layers.{l}.{a}.weight"] = f"blk.{l}.{b}.weight"
    check(set(names) == set(hf2gguf.values()), f"gguf {dt}: tensor names {set(names) ^ set(hf2gguf.values())}")
    bad = []
    for hk, gk in hf2gguf.items():
        if gk not in names:
            continue
        t = names[gk]
        w = fused_f32["lora"][hk]
        if ".attn_q." in gk:
            w = permute(w, c["num_attention_heads"])
        elif ".attn_k." in gk:
            w = permute(w, c["num_key_value_heads"])
        if w.ndim == 1:
            ok = t.tensor_type == gguf.GGMLQuantizationType.F32 and np.array_equal(np.asarray(t.data), w)
        elif dt == "f16" or w.shape[1] % 32:
            ok = t.tensor_type == gguf.GGMLQuantizationType.F16 and np.array_equal(
                np.asarray(t.data).view(np.uint16).reshape(w.shape), w.astype(np.float16).view(np.uint16))
        else:
            want = quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
            ok = t.tensor_type == gguf.GGMLQuantizationType.Q8_0 and np.array_equal(
                np.asarray(t.data).reshape(want.shape), want)
        if not ok:
            bad.append(gk)
    check(not bad, f"gguf {dt}: tensors differ from the converter's layout: {bad[:5]}")

# ---- 4. loratune fuse: a PEFT adapter folder written here, CLI errors ----------------------
rng = np.random.default_rng(3)
peft_dir = os.path.join(TMP, "peft")
os.makedirs(peft_dir)
c = base_cfg
qd, kd = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
shapes = {"q_proj": (qd, c["hidden_size"]), "v_proj": (kd, c["hidden_size"])}
tensors = {}
for l in range(c["num_hidden_layers"]):
    for t, (o, i) in shapes.items():
        pre = f"base_model.model.model.layers.{l}.self_attn.{t}"
        tensors[f"{pre}.lora_A.weight"] = (0.1 * rng.standard_normal((8, i))).astype(np.float32)
        tensors[f"{pre}.lora_B.weight"] = (0.1 * rng.standard_normal((o, 8))).astype(np.float32)
save_file(tensors, os.path.join(peft_dir, "adapter_model.safetensors"))
json.dump({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
           "use_rslora": False, "use_dora": False, "lora_dropout": 0.0, "bias": "none",
           "task_type": "CAUSAL_LM", "base_model_name_or_path": HF, "fan_in_fan_out": False},
          open(os.path.join(peft_dir, "adapter_config.json"), "w"))
cli_out = os.path.join(TMP, "cli_hf")
p = ltcheck.run("fuse", "--model", HF, "--adapter", peft_dir, "--out", cli_out, timeout=300)
check(p.returncode == 0, f"loratune fuse --adapter PEFT: rc {p.returncode} {p.stderr}")
if p.returncode == 0:
    got = load_file(os.path.join(cli_out, "model.safetensors"))
    worst = 0.0
    for l in range(c["num_hidden_layers"]):
        for t in shapes:
            pre = f"base_model.model.model.layers.{l}.self_attn.{t}"
            key = f"model.layers.{l}.self_attn.{t}.weight"
            want = base[key] + 2.0 * tensors[f"{pre}.lora_B.weight"].astype(np.float64) @ tensors[f"{pre}.lora_A.weight"]
            worst = max(worst, rel_err(got[key], want))
    check(worst < 1e-4, f"loratune fuse with a PEFT folder: max relative difference {worst}")
    check(np.array_equal(got["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"]),
          "untargeted weights unchanged")
p = ltcheck.run("fuse", "--model", HF, "--out", os.path.join(TMP, "cli.gguf"), "--dtype", "q8_0", timeout=300)
check(p.returncode == 0 and gguf.GGUFReader(os.path.join(TMP, "cli.gguf")).fields["general.file_type"].contents() == 7,
      f"fuse --out x.gguf infers gguf: {p.stderr}")
p = ltcheck.run("fuse", "--help")
check(p.returncode == 0 and "--adapter" in p.stdout and "q8_0" in p.stdout, "fuse --help")
for args, msg in ((["--model", HF], "--model and --out are required"),
                  (["--model", HF, "--out", os.path.join(TMP, "x"), "--dtype", "q8_0"], "--dtype 'q8_0'"),
                  (["--model", HF, "--out", os.path.join(TMP, "x.gguf"), "--dtype", "bf16"], "--dtype 'bf16'"),
                  (["--model", HF, "--out", os.path.join(TMP, "x"), "--format", "onnx"], "--format 'onnx'"),
                  (["--model", HF, "--out", os.path.join(TMP, "x"), "--bogus", "1"], "unknown option '--bogus'"),
                  (["--model", os.path.join(TMP, "nope"), "--out", os.path.join(TMP, "x")], "nope"),
                  (["--model", HF, "--adapter", os.path.join(TMP, "noadapter"), "--out", os.path.join(TMP, "x")],
                   "noadapter")):
    p = ltcheck.run("fuse", *args, timeout=120)
    check(p.returncode != 0 and msg in p.stderr, f"fuse {args}: rc {p.returncode}, stderr {p.stderr!r}")

subprocess.run(["rm", "-rf", TMP])
sys.exit(ltcheck.finish())
