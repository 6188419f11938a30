"""test_fuse_llamacpp.py - llama.cpp (llama-cpp-python, tools/requirements.txt) loads the GGUFs
`loratune fuse` writes and computes the logits we compute.

`test_export --fuse` merges a random LoRA adapter (seeded, every target, r=4, alpha=8) into
SmolLM2-135M-Instruct (GGUF source: tokenizer keys copied) and stories260K-hf (HF source:
sentencepiece vocabulary built from tokenizer.model), writes GGUF f16 and q8_0 and our logits
of the fp32 merged model. llama.cpp evaluates the same ids on each file. Two comparisons:
  - llama.cpp vs our forward on the same GGUF file (read back by load_gguf.c): only the two
    implementations differ (llama.cpp rounds activations to f16 / q8 in its matmuls);
  - llama.cpp vs our fp32 merged model: adds the export's own rounding.
Tolerances are on max |logit difference| relative to the logit range of the prompt, plus
same argmax at every position. Also: llama.cpp's tokenizer on the exported SmolLM2 GGUF gives
the ids of SmolLM's original tokenizer.json (HF tokenizers). Prints "N passed, M failed".
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, SOURCE_DIR, check  # noqa: E402

import llama_cpp  # noqa: E402

TOOL = ltcheck.tool("test_export")
TMP = tempfile.mkdtemp(prefix="lt_fuse_llamacpp_")
SMOL = os.path.join(SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
HF = os.path.join(FIXTURES, "stories260K-hf")
SMOL_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198]
STORIES_IDS = [1, 403, 407, 261, 378, 426, 260, 500, 23, 7, 99, 310]
# max |diff| / (logit max - logit min)
# (llama.cpp quantizes the activations to q8_0 in q8_0 matmuls, so over SmolLM2's 30 layers its
# q8_0 logits drift by ~2-3% of the range and near-ties may flip: there the check is that our
# argmax is among llama.cpp's top 5.)
TOL = {("same-file", "f16"): 0.005, ("same-file", "q8_0"): 0.05,
       ("fp32", "f16"): 0.005, ("fp32", "q8_0"): 0.05}


def tool(*args):
    p = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, f"test_export {args[:3]}: {p.stderr[-2000:]}")
    return p.returncode == 0


def read_logits(path, n):
    return np.fromfile(path, dtype=np.float32).reshape(n, -1)


def llama_logits(path, ids):
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, logits_all=True, verbose=False,
                          n_threads=2, seed=0)
    llm.eval(ids)
    out = np.array(llm.scores[:len(ids)], dtype=np.float32)
    return llm, out


for name, src, ids in (("SmolLM2", SMOL, SMOL_IDS), ("stories260K", HF, STORIES_IDS)):
    for dt in ("f16", "q8_0"):
        g = os.path.join(TMP, f"{name}_{dt}.gguf")
        ref32 = os.path.join(TMP, f"{name}_{dt}.fp32.f32")
        if not tool("--fuse", src, g, "gguf", dt, 4, "lora", os.path.join(TMP, "a.safetensors"), ref32, *ids):
            continue
        same = os.path.join(TMP, f"{name}_{dt}.same.f32")
        if not tool("--logits", g, same, *ids):
            continue
        ours32, ours_same = read_logits(ref32, len(ids)), read_logits(same, len(ids))
        llm, theirs = llama_logits(g, ids)
        check(theirs.shape == ours32.shape, f"{name} {dt}: llama.cpp logits shape {theirs.shape}")
        if theirs.shape != ours32.shape:
            continue
        span = float(ours32.max() - ours32.min())
        for what, ours in (("same-file", ours_same), ("fp32", ours32)):
            d = float(np.max(np.abs(theirs - ours)))
            agree = float(np.mean(np.argmax(theirs, 1) == np.argmax(ours, 1)))
            print(f"{name} {dt}: llama.cpp vs ours ({what}) max |logit diff| {d:.4f} "
                  f"= {d / span:.2e} of the logit range {span:.1f}; argmax agreement {agree:.2f}")
            check(d / span < TOL[(what, dt)], f"{name} {dt} {what}: max |diff| {d} / range {span} "
                                              f"over {TOL[(what, dt)]}")
            if dt == "f16":
                check(agree == 1.0, f"{name} {dt} {what}: argmax agrees at {agree:.2f} of positions")
            else:
                top5 = np.argsort(-theirs, axis=1)[:, :5]
                in5 = all(int(np.argmax(ours[i])) in top5[i] for i in range(len(ids)))
                check(in5, f"{name} {dt} {what}: our argmax not in llama.cpp's top 5")
        if name == "SmolLM2" and dt == "f16":
            from tokenizers import Tokenizer
            orig = Tokenizer.from_file(os.path.join(FIXTURES, "tokenizers", "smollm", "tokenizer.json"))
            orig.no_truncation()
            orig.no_padding()
            for t in ("Hello world!", "<|im_start|>user\nHi 12345<|im_end|>\n", "naïve café 🙂\n\n  x"):
                mine = llm.tokenize(t.encode(), add_bos=False, special=True)
                check(mine == orig.encode(t).ids, f"llama.cpp tokenizer on the exported GGUF: {t!r}")
        del llm

subprocess.run(["rm", "-rf", TMP])
sys.exit(ltcheck.finish())
