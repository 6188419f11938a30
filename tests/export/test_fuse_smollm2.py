"""test_fuse_smollm2.py - SmolLM2-135M-Instruct (GGUF, byte-level BPE) through `loratune fuse`'s
writers, checked by HF tokenizers, transformers' AutoTokenizer, mlx-lm and gguf-py.

  4. SmolLM2 GGUF + random LoRA -> HF f32: HF tokenizers on the generated tokenizer.json and
     transformers' AutoTokenizer give the ids of SmolLM's original tokenizer.json
     (fixtures/tokenizers/smollm); chat template = the GGUF's; mlx-lm's logits equal ours.
  5. That HF folder (tokenizer.json source) -> GGUF q8_0: the tokenizer keys and hparams equal
     those of the original SmolLM2 GGUF (written by llama.cpp's converter).
Takes ~40-90 s on the 2-core machine: a 540 MB f32 folder is written, read back by our writer
and loaded by mlx-lm (I/O-bound; f32 so that the logit comparison with mlx-lm stays tight).
Prints "N passed, M failed".
"""
import json
import os
import subprocess
import sys

import gguf
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, SOURCE_DIR, check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fusecheck import TMP, field, fuse, mlx_logits  # noqa: E402

SMOL = os.path.join(SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

# ---- 4. SmolLM2 GGUF -> HF f32: tokenizer vs SmolLM's own tokenizer.json, mlx-lm logits ---------
SMOL_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198]
smol_hf = os.path.join(TMP, "smol_hf")
adapter, ours = fuse(SMOL, smol_hf, "hf", "f32", 9, "lora", SMOL_IDS)
if adapter is not None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    orig = Tokenizer.from_file(os.path.join(FIXTURES, "tokenizers", "smollm", "tokenizer.json"))
    orig.no_truncation()
    orig.no_padding()
    gen = Tokenizer.from_file(os.path.join(smol_hf, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(smol_hf)
    texts = ["Hello world!", "  leading spaces and 12345 digits 3.14159", "<|im_start|>user\nHi<|im_end|>\n",
             "naïve café, 東京, emoji 🙂 and tabs\tand\nnewlines\n\n", "don't you'll we've I'M",
             "def f(x):\n    return x**2  # comment", "<repo_name>x<file_sep>", ""]
    for t in texts:
        want = orig.encode(t).ids
        check(gen.encode(t).ids == want, f"tokenizers on the generated tokenizer.json: {t!r}")
        check(auto(t)["input_ids"] == want, f"AutoTokenizer: {t!r}: {auto(t)['input_ids']} vs {want}")
        check(auto.decode(want) == orig.decode(want, skip_special_tokens=False), f"decode {t!r}")
    # and the ids loratune's own tokenizer gives on the source GGUF
    ours_ids = ltcheck.tokenize(["--model", SMOL, "--json"], [json.dumps(t) for t in texts])
    check(ours_ids is not None and len(ours_ids) == len(texts), "loratune tokenize on the GGUF")
    for t, line in zip(texts, ours_ids or []):
        mine = [int(x) for x in line.split()]
        check(auto(t)["input_ids"] == mine, f"AutoTokenizer on the export vs loratune on the GGUF: {t!r}")
    r = gguf.GGUFReader(SMOL)
    tc = json.load(open(os.path.join(smol_hf, "tokenizer_config.json")))
    check(tc.get("chat_template") == field(r, "tokenizer.chat_template"), "chat template carried")
    check(tc.get("bos_token") == "<|im_start|>" and tc.get("eos_token") == "<|im_end|>", "bos / eos")
    check(auto.eos_token_id == 2 and auto.bos_token_id == 1, "AutoTokenizer bos/eos ids")
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    check(auto.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
          == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "chat template renders")
    cfg = json.load(open(os.path.join(smol_hf, "config.json")))
    check(cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576 and cfg["tie_word_embeddings"] is True
          and cfg["rope_theta"] == 100000.0 and cfg["rms_norm_eps"] == 1e-05 and cfg["num_key_value_heads"] == 3,
          f"SmolLM2 config.json {cfg}")
    theirs = mlx_logits(smol_hf, SMOL_IDS)
    d = float(np.max(np.abs(theirs - ours)))
    print(f"SmolLM2 LoRA HF f32: mlx-lm vs ours max |logit diff| {d:.3g} (logit range "
          f"{float(ours.min()):.1f}..{float(ours.max()):.1f})")
    check(d < 2e-3, f"SmolLM2: mlx-lm logits differ from ours by {d}")
    check(all(np.argmax(theirs, axis=1) == np.argmax(ours, axis=1)), "SmolLM2: same argmax")

    # ---- 5. that HF folder (tokenizer.json source) -> GGUF: tokenizer keys = the converter's ----
    back = os.path.join(TMP, "smol_back.gguf")
    fuse(smol_hf, back, "gguf", "q8_0", 0, "none", SMOL_IDS[:2])
    if os.path.exists(back):
        b = gguf.GGUFReader(back)
        for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                  "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                  "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                  "tokenizer.chat_template"):
            check(field(b, k) == field(r, k), f"HF -> GGUF {k}: differs from the original GGUF")
        for k in ("llama.block_count", "llama.context_length", "llama.embedding_length",
                  "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                  "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
                  "llama.rope.dimension_count"):
            check(field(b, k) == field(r, k), f"HF -> GGUF {k}: {field(b, k)} vs {field(r, k)}")


subprocess.run(["rm", "-rf", TMP])
sys.exit(ltcheck.finish())
