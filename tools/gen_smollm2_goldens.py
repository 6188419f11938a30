#!/usr/bin/env python3
"""gen_smollm2_goldens.py - reference logits and greedy replies for SmolLM2-135M-Instruct (GGUF Q4_1).

The reference is Hugging Face transformers loading the very same GGUF file (it dequantizes the
Q4_1 weights with the `gguf` package, undoes llama.cpp's q/k row permutation itself, and runs the
model in float32). Tokenization and chat formatting are transformers' too (the tokenizer is built
from the GGUF vocabulary, the prompt from the GGUF's Jinja chat template), so the goldens also
cross-check our tokenizer and chat template.

Usage (any machine with PyPI; not needed by CI):
    python3 -m venv .venv-golden && .venv/bin/uv pip install --python .venv-golden/bin/python -r tools/golden-requirements.txt
    .venv-golden/bin/python tools/gen_smollm2_goldens.py models/SmolLM2-135M-Instruct.Q4_1.gguf tests/data/smollm2

Writes into OUT:
  golden.json    - per case: input ids, the argmax at every position, the greedy continuation
                   ids (GREEDY_TOKENS new tokens, not stopping at EOS), the logits file name
  <case>.f32     - float32 little-endian logits of the LAST input position, [vocab]
"""
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

GREEDY_TOKENS = 40
PROMPTS = [  # (name, kind, text): kind "raw" = plain text with no special tokens; "chat" = user turn
    ("raw_capital", "raw", "The capital of France is"),
    ("raw_story", "raw", "Once upon a time, there was a little robot who"),
    ("chat_sky", "chat", "Why is the sky blue?"),
    ("chat_sql", "chat", "Write a SQL query that counts the rows of the table users."),
    ("chat_list", "chat", "Name three fruits."),
]


def main():
    gguf_path, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    d, f = os.path.split(os.path.abspath(gguf_path))
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    sha = hashlib.sha256(open(gguf_path, "rb").read()).hexdigest()
    cases = []
    for name, kind, text in PROMPTS:
        if kind == "raw":
            ids = tok(text, add_special_tokens=False)["input_ids"]
            rendered = text
        else:
            msgs = [{"role": "user", "content": text}]
            rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids = tok(rendered, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].float()  # [T, vocab]
            # plain greedy loop, never stopping at EOS, so every case has GREEDY_TOKENS ids
            new, seq = [], list(ids)
            for _ in range(GREEDY_TOKENS):
                nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
                new.append(nxt)
                seq.append(nxt)
        last = logits[-1].numpy().astype("<f4")
        last.tofile(os.path.join(out, name + ".f32"))
        cases.append({
            "name": name, "kind": kind, "text": text, "rendered": rendered,
            "input_ids": ids,
            "argmax": logits.argmax(-1).tolist(),
            "logits_file": name + ".f32",
            "last_logits_absmax": float(np.abs(last).max()),
            "greedy_ids": new,
            "greedy_text": tok.decode(new, skip_special_tokens=False),
        })
        print(name, len(ids), "tokens ->", repr(cases[-1]["greedy_text"][:80]))
    meta = {
        "description": "SmolLM2-135M-Instruct Q4_1 GGUF reference from transformers (float32) "
                       "loading the same GGUF; made by tools/gen_smollm2_goldens.py",
        "model_file": f, "model_sha256": sha,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "greedy_tokens": GREEDY_TOKENS, "eos_token_id": tok.eos_token_id,
        "cases": cases,
    }
    with open(os.path.join(out, "golden.json"), "w") as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
