#!/usr/bin/env python3
"""gen_forward_goldens.py - transformers reference logits for small random models whose
configuration paths the fixtures don't cover: Qwen2 (q/k/v bias, untied head), Llama with
llama3 rope scaling and head_dim != hidden_size / heads, Mistral (GQA, rope_theta 1e6).

The llama3 case uses original_max_position_embeddings 8 and rope_theta 1e4 so that, within the
T=24 positions tested, every rotary frequency is in the scaled (or the smoothed) band: a wrong
llama3 formula moves the logits by far more than the tolerance.

Each case is written as a Hugging Face folder (config.json + model.safetensors, float32, saved
by save_pretrained) with `tokens.json` (input ids) and `logits.f32` ([T][vocab] float32 LE, the
model's logits for all positions, eager attention, float32). Deterministic (fixed seeds).

    .venv-golden/bin/python tools/gen_forward_goldens.py tests/data/forward
"""
import json
import os
import sys

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

T = 24


def cases():
    yield "qwen2_bias_untied", Qwen2ForCausalLM, Qwen2Config(
        vocab_size=128, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        use_sliding_window=False, attention_dropout=0.0, bos_token_id=1, eos_token_id=2)
    yield "llama3_rope_headdim", LlamaForCausalLM, LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-5,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=[2, 3])
    yield "mistral_gqa", MistralForCausalLM, MistralConfig(
        vocab_size=80, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=512,
        rope_theta=1000000.0, rms_norm_eps=1e-5, sliding_window=None,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def main():
    out = sys.argv[1]
    torch.manual_seed(1234)
    meta = {"generator": "tools/gen_forward_goldens.py", "transformers": transformers.__version__,
            "torch": torch.__version__, "cases": []}
    for name, cls, cfg in cases():
        cfg._attn_implementation = "eager"
        model = cls(cfg).float().eval()
        with torch.no_grad():  # larger weights than the default init, so errors show
            for p in model.parameters():
                p.normal_(0.0, 0.15)
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
        d = os.path.join(out, name)
        model.save_pretrained(d, safe_serialization=True)
        tokens = torch.randint(0, cfg.vocab_size, (T,)).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0].float()
        logits.numpy().astype("<f4").tofile(os.path.join(d, "logits.f32"))
        with open(os.path.join(d, "tokens.json"), "w") as f:
            json.dump(tokens, f)
        for junk in ("generation_config.json",):
            p = os.path.join(d, junk)
            if os.path.exists(p):
                os.remove(p)
        meta["cases"].append({"name": name, "T": T, "vocab": cfg.vocab_size,
                              "absmax": float(logits.abs().max())})
        print(name, "absmax", float(logits.abs().max()))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
