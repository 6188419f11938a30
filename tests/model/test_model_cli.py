"""test_model_cli.py - `loratune inspect` and `loratune generate` end to end.

inspect --json on the three stories260K forms is compared with what outside readers see:
config.json (json module), the GGUF metadata and tensor list (gguf-py, llama.cpp's own
reader), the safetensors header (safetensors package) and the llama2.c header (struct).
generate --temp 0 from BOS must print exactly reference_greedy.json's "text" (produced by
llama2.c's run.c), from the .bin (with tok512.bin) and the HF folder; a fixed --seed must
reproduce its output; bad arguments fail with a message. --device cuda / auto: on a GPU the
greedy text is a prefix of the reference's too, without one cuda is a clear error and auto
runs on the CPU. Prints "N passed, M failed".
"""
import json
import os
import struct
import sys

import gguf
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, check  # noqa: E402

S = os.path.join(FIXTURES, "stories260K")
HF = os.path.join(FIXTURES, "stories260K-hf")


def run(*args):
    p = ltcheck.run(*args, text=False, timeout=300)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def inspect(path, *extra):
    rc, out, err = run("inspect", path, "--json", *extra)
    check(rc == 0, f"inspect {path}: rc {rc} {err}")
    return json.loads(out) if rc == 0 else {}


# --- HF folder vs config.json and the safetensors header
cfg = json.load(open(os.path.join(HF, "config.json")))
j = inspect(HF)
for ours, theirs in [("hidden_size", "hidden_size"), ("num_hidden_layers", "num_hidden_layers"),
                     ("num_attention_heads", "num_attention_heads"),
                     ("num_key_value_heads", "num_key_value_heads"), ("head_dim", "head_dim"),
                     ("intermediate_size", "intermediate_size"), ("vocab_size", "vocab_size"),
                     ("max_position_embeddings", "max_position_embeddings"),
                     ("rms_norm_eps", "rms_norm_eps"), ("rope_theta", "rope_theta"),
                     ("tie_word_embeddings", "tie_word_embeddings"),
                     ("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")]:
    check(j.get(ours) == cfg[theirs], f"hf {ours}: {j.get(ours)} vs config.json {cfg[theirs]}")
tensors = load_file(os.path.join(HF, "model.safetensors"))
check(j.get("stored_tensors") == len(tensors), f"hf tensor count {j.get('stored_tensors')} vs {len(tensors)}")
n_el = sum(t.size for t in tensors.values())
check(j.get("parameters") == n_el, f"hf parameters {j.get('parameters')} vs {n_el}")
check(j.get("stored_dtypes") == {"F32": {"tensors": len(tensors), "elements": n_el}}, "hf dtypes")
check(j.get("file_bytes") == os.path.getsize(os.path.join(HF, "model.safetensors")), "hf file size")
check(j.get("tokenizer", {}).get("vocab_size") == 512, "hf tokenizer vocab")
check(j.get("format") == "hf" and j.get("architecture") == "llama", "hf format")

# --- GGUF vs gguf-py
r = gguf.GGUFReader(os.path.join(S, "stories260K.gguf"))
def field(k):
    f = r.fields[k]
    return f.parts[f.data[0]].tolist()[0]
j = inspect(os.path.join(S, "stories260K.gguf"))
check(j.get("hidden_size") == field("llama.embedding_length"), "gguf dim")
check(j.get("num_hidden_layers") == field("llama.block_count"), "gguf layers")
check(j.get("num_key_value_heads") == field("llama.attention.head_count_kv"), "gguf kv heads")
check(j.get("intermediate_size") == field("llama.feed_forward_length"), "gguf ffn")
check(j.get("max_position_embeddings") == field("llama.context_length"), "gguf context")
check(abs(j.get("rms_norm_eps", 0) - field("llama.attention.layer_norm_rms_epsilon")) < 1e-12, "gguf eps")
check(j.get("stored_tensors") == len(r.tensors), "gguf tensor count")
n_el = sum(int(t.n_elements) for t in r.tensors)
check(j.get("stored_dtypes", {}).get("F32", {}).get("elements") == n_el, "gguf elements")
check(j.get("tie_word_embeddings") is False, "gguf stores output.weight: untied")
check(j.get("file_bytes") == os.path.getsize(os.path.join(S, "stories260K.gguf")), "gguf size")

# --- llama2.c .bin vs its header
hdr = struct.unpack("<7i", open(os.path.join(S, "stories260K.bin"), "rb").read(28))
j = inspect(os.path.join(S, "stories260K.bin"))
check([j.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "vocab_size", "max_position_embeddings")] == list(hdr),
      f"bin header {hdr}")
check(j.get("tokenizer", {}).get("kind") is None, "bin has no tokenizer")
j = inspect(os.path.join(S, "stories260K.bin"), "--tokenizer", os.path.join(S, "tok512.bin"))
check(j.get("tokenizer", {}).get("vocab_size") == 512, "bin with --tokenizer")
rc, out, err = run("inspect", os.path.join(S, "tok512.model"))
check(rc != 0 and "tok512.model" in err, f"inspect of a non-model fails clearly: {err}")
rc, out, err = run("inspect", os.path.join(S, "tok512.bin"))
check(rc != 0 and "header" in err, f"inspect of a tokenizer .bin fails clearly: {err}")

# --- generate: greedy text from BOS == llama2.c run.c's text
ref = json.load(open(os.path.join(S, "reference_greedy.json")))
rc, out, err = run("generate", "--model", os.path.join(S, "stories260K.bin"), "--tokenizer",
                   os.path.join(S, "tok512.bin"), "--temp", "0", "--max-tokens", "256", "--quiet")
check(rc == 0 and out == ref["text"] + "\n", f"bin greedy text (rc {rc}, {err}):\n{out[:200]}")
rc, out, err = run("generate", "--model", HF, "--temp", "0", "--max-tokens", "256", "--quiet")
check(rc == 0 and out == ref["text"] + "\n", f"hf greedy text (rc {rc}, {err}):\n{out[:200]}")
rc, out, err = run("generate", "--model", os.path.join(S, "stories260K.gguf"), "--temp", "0",
                   "--max-tokens", "256", "--quiet")
check(rc == 0 and out == ref["text"] + "\n", f"gguf greedy text (rc {rc}, {err}):\n{out[:200]}")
# seeded sampling reproduces; another seed (very likely) differs
a = run("generate", "--model", HF, "--prompt", "Once upon a time", "--temp", "1", "--top-p", "0.9",
        "--seed", "7", "--max-tokens", "60", "--quiet")
b = run("generate", "--model", HF, "--prompt", "Once upon a time", "--temp", "1", "--top-p", "0.9",
        "--seed", "7", "--max-tokens", "60", "--quiet")
c = run("generate", "--model", HF, "--prompt", "Once upon a time", "--temp", "1", "--top-p", "0.9",
        "--seed", "8", "--max-tokens", "60", "--quiet")
check(a[0] == 0 and a[1] == b[1] and len(a[1]) > 20, "same seed, same text")
check(a[1] != c[1], "another seed, another text")
# --device: cuda runs on the GPU (its greedy text from BOS a prefix of llama2.c's, 64 tokens,
# fp32 cache) or, without a GPU / CUDA build, fails naming why; auto falls back to the CPU
for dev in ("cuda", "auto"):
    for model in (HF, os.path.join(S, "stories260K.gguf")):
        rc, out, err = run("generate", "--model", model, "--temp", "0", "--max-tokens", "64",
                           "--exact", "--device", dev)
        if rc != 0:
            check(dev == "cuda" and rc == 1 and "--device cuda:" in err
                  and ("no GPU" in err or "without CUDA" in err),
                  f"--device {dev} without a GPU: a clear error (rc {rc}): {err}")
            continue
        check(len(out) > 100 and ref["text"].startswith(out[:-1]),
              f"--device {dev} {model}: greedy text not llama2.c's ({err}):\n{out[:200]}")
        check(dev == "cuda" or "[device" in err, f"--device auto says where it ran: {err}")
rc, out, err = run("generate", "--model", HF, "--device", "gpu")
check(rc == 2 and "expected cpu, cuda or auto" in err, f"bad --device: {err}")
# errors
rc, out, err = run("generate", "--model", os.path.join(S, "stories260K.bin"))
check(rc == 2 and "--tokenizer" in err, "bin without tokenizer")
rc, out, err = run("generate", "--model", HF, "--chat", "hi")
check(rc == 1 and "chat template" in err, f"chat without template: {err}")
rc, out, err = run("generate", "--model", HF, "--top-p", "2")
check(rc == 2, "bad top-p")
rc, out, err = run("generate", "--model", "/nonexistent/model")
check(rc == 1 and "/nonexistent/model" in err, f"missing model: {err}")

sys.exit(ltcheck.finish())
