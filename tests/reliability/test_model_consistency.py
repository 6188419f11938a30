"""test_model_consistency.py - issue 18 finding 6: a model whose parts disagree is refused, or
loaded with a warning that says what was ignored and why; never silently.

Made here from the fixtures (stories260K-hf: 5 layers, vocab 512; stories260K.gguf; the GPT-2
vocabulary GGUF), with gguf-py (in-place edits of fixed-size values, or its own
copy_with_new_metadata for a changed string):
  errors: config.json num_hidden_layers 4 with 5 layers stored; GGUF llama.block_count 4 of 5;
    eos_token_id [2, 600] (the second outside the vocabulary); GGUF model
    tokenizer.ggml.eos_token_id 600; a GGUF BPE vocabulary whose eos_token_id is out of
    range; tokenizer.ggml.model "gpt2" on a SentencePiece vocabulary (no merges);
  warnings: an unknown extra tensor and an lm_head beside tie_word_embeddings (inspect names
    them); an unrecognised Jinja chat template under `generate --chat` (rendered as ChatML).
"""
import json
import os
import shutil
import sys
import tempfile

import gguf
import numpy as np
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, check  # noqa: E402

HF = os.path.join(FIXTURES, "stories260K-hf")
GG = os.path.join(FIXTURES, "stories260K", "stories260K.gguf")
GPT2 = os.path.join(FIXTURES, "tokenizers", "gpt2", "ggml-vocab-gpt-2.gguf")


def hf_copy(tmp, name, config=None, tensors=None):
    d = os.path.join(tmp, name)
    shutil.copytree(HF, d)
    if config:
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        c.update(config)
        json.dump(c, open(p, "w"))
    if tensors:
        p = os.path.join(d, "model.safetensors")
        t = load_file(p)
        t.update(tensors)
        save_file(t, p, metadata={"format": "pt"})
    return d


def gguf_set_u32(src, dst, key, value):
    shutil.copy(src, dst)
    r = gguf.GGUFReader(dst, "r+")
    f = r.fields[key]
    f.parts[f.data[0]][0] = value
    r.data.flush()
    del r
    return dst


def gguf_set_str(src, dst, key, value):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch=r.fields["general.architecture"].contents())
    copy_with_new_metadata(r, w, {key: MetadataDetails(gguf.GGUFValueType.STRING, value)}, [])
    return dst


def err(r, *pieces, what):
    check(r.returncode != 0 and all(p in r.stderr for p in pieces),
          f"{what}: rc {r.returncode}, wanted {pieces} in: {r.stderr[-700:]}")


def main():
    tmp = tempfile.mkdtemp(prefix="lt_consist_")
    try:
        r = ltcheck.run("inspect", HF)
        check(r.returncode == 0 and "warning" not in r.stderr, f"the fixture is clean: {r.stderr}")
        r = ltcheck.run("inspect", GG)
        check(r.returncode == 0 and "warning" not in r.stderr, f"the GGUF is clean: {r.stderr}")

        # ---- errors ----
        d = hf_copy(tmp, "layers4", config={"num_hidden_layers": 4})
        err(ltcheck.run("inspect", d), "layer 4", "model.layers.4.", "num_hidden_layers says 4",
            what="HF num_hidden_layers 4, 5 stored")
        g = gguf_set_u32(GG, os.path.join(tmp, "bc4.gguf"), "llama.block_count", 4)
        err(ltcheck.run("inspect", g), "bc4.gguf", "layer 4", "blk.4.", "block_count",
            what="GGUF block_count 4 of 5")
        d = hf_copy(tmp, "eos", config={"eos_token_id": [2, 600]})
        err(ltcheck.run("inspect", d), "eos_token_id[1] = 600", "outside the vocabulary",
            what="HF eos_token_id list with an id outside the vocabulary")
        g = gguf_set_u32(GG, os.path.join(tmp, "eos.gguf"), "tokenizer.ggml.eos_token_id", 600)
        err(ltcheck.run("inspect", g), "tokenizer.ggml.eos_token_id = 600", "outside",
            what="GGUF model eos_token_id out of range")
        v = gguf_set_u32(GPT2, os.path.join(tmp, "bpe_eos.gguf"), "tokenizer.ggml.eos_token_id",
                         99999)
        r = ltcheck.run("tokenize", "--tokenizer", v, input="hello\n")
        err(r, "bpe_eos.gguf", "tokenizer.ggml.eos_token_id = 99999", "outside the vocabulary",
            what="GGUF BPE eos_token_id out of range")
        g = gguf_set_str(GG, os.path.join(tmp, "spm_as_gpt2.gguf"), "tokenizer.ggml.model", "gpt2")
        r = ltcheck.run("tokenize", "--tokenizer", g, input="hello\n")
        err(r, "spm_as_gpt2.gguf", "\"gpt2\"", "no tokenizer.ggml.merges",
            what="tokenizer.ggml.model gpt2 on a SentencePiece vocabulary")

        # ---- warnings: loaded, and what was ignored is said ----
        d = hf_copy(tmp, "extra", tensors={"model.extra_head.weight": np.ones((4, 4), np.float32)})
        r = ltcheck.run("inspect", d)
        check(r.returncode == 0 and "warning" in r.stderr and "ignored 1 tensor" in r.stderr
              and "model.extra_head.weight" in r.stderr, f"an unknown tensor: {r.stderr}")
        # train says it too: on stderr, and as a "warning" event with --json
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            for i in range(4):
                f.write(json.dumps({"text": f"one two three four {i}"}) + "\n")
        common = ["--model", d, "--data", data, "--iters", "1", "--batch-size", "1",
                  "--max-seq-len", "16", "--eval-every", "0", "--threads", "1", "--no-track"]
        r = ltcheck.run("train", *common, "--out", os.path.join(tmp, "t1"))
        check(r.returncode == 0 and "warning" in r.stderr and "model.extra_head.weight" in r.stderr,
              f"train names the ignored tensor: {r.returncode} {r.stderr[-500:]}")
        r = ltcheck.run("train", *common, "--out", os.path.join(tmp, "t2"), "--json")
        ev = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        w = [e for e in ev if e.get("event") == "warning"]
        check(r.returncode == 0 and w and w[0]["what"] == "model" and
              "model.extra_head.weight" in w[0]["message"], f"train --json warning event: {w}")
        emb = load_file(os.path.join(HF, "model.safetensors"))["model.embed_tokens.weight"]
        d = hf_copy(tmp, "tied_head", tensors={"lm_head.weight": emb.copy()})
        r = ltcheck.run("inspect", d)
        check(r.returncode == 0 and "lm_head.weight" in r.stderr and "ignored" in r.stderr,
              f"lm_head beside tie_word_embeddings: {r.stderr}")
        d = hf_copy(tmp, "tpl")
        p = os.path.join(d, "tokenizer_config.json")
        c = json.load(open(p))
        c["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        json.dump(c, open(p, "w"))
        r = ltcheck.run("generate", "--model", d, "--chat", "hi", "--max-tokens", "2", "--temp",
                        "0", "--quiet", timeout=120)
        check(r.returncode == 0 and "not one loratune recognises" in r.stderr
              and "ChatML" in r.stderr, f"generate --chat, unrecognised template: {r.stderr}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
