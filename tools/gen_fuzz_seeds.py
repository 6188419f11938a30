#!/usr/bin/env python3
"""gen_fuzz_seeds.py - writes the seed corpora of tests/fuzz/corpus/<harness>/ (small files:
the fuzzers mutate them; the replay tests fuzz_<harness> read them).

Where a format has an outside writer, that writer makes the seed: gguf-py (GGUFWriter) for
GGUF, the safetensors package for safetensors, the tokenizers package for tokenizer.json, the
sentencepiece trainer for tokenizer.model. llama2.c checkpoints are written in llama2.c's
export layout (its export.py legacy_export: 7 int32 header, then the weights in its order).
Other seeds are copies (or the first lines) of fixtures under tests/fixtures/ and tests/data/,
and a few hand-written bodies / configs that follow docs/. Fixed seeds, one thread; the
tokenizer trainers may still break ties differently from run to run (a seed is a starting
point, not a golden: any valid file does). Run with the project venv:
    .venv/bin/python tools/gen_fuzz_seeds.py
"""
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizers trainers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
FIX = os.path.join(ROOT, "tests", "fixtures")
DATA = os.path.join(ROOT, "tests", "data")


def out(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(harness, name, src, max_lines=None):
    with open(src, "rb") as f:
        data = f.read()
    if max_lines is not None:
        data = b"".join(data.splitlines(keepends=True)[:max_lines])
    out(harness, name, data)


rng = np.random.default_rng(18)
# a tiny Llama: what the seeds of several harnesses describe (and fuzz_safetensors' config)
D, F, L, H, KV, V, S = 8, 16, 1, 2, 1, 16, 32
HD = D // H


def w(*shape):
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


# ---- gguf (gguf-py) --------------------------------------------------------------------
def gguf_seeds():
    import gguf

    def write(name, fill):
        with tempfile.TemporaryDirectory() as t:
            p = os.path.join(t, "x.gguf")
            gw = gguf.GGUFWriter(p, "llama")
            fill(gw)
            gw.write_header_to_file()
            gw.write_kv_data_to_file()
            gw.write_tensors_to_file()
            gw.close()
            with open(p, "rb") as f:
                out("gguf", name, f.read())

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(4)] + \
        ["\u2581", "\u2581a", "b", "c", "\u2581the", "ab", "e", "\u2581t", "h"]
    assert len(pieces) == V

    def llama(gw, dtype=np.float32, spm=True):
        gw.add_context_length(S)
        gw.add_embedding_length(D)
        gw.add_block_count(L)
        gw.add_feed_forward_length(F)
        gw.add_head_count(H)
        gw.add_head_count_kv(KV)
        gw.add_layer_norm_rms_eps(1e-5)
        gw.add_rope_freq_base(10000.0)
        gw.add_file_type(0 if dtype == np.float32 else 1)
        if spm:
            gw.add_tokenizer_model("llama")
            gw.add_token_list(pieces)
            gw.add_token_scores([float(-i) for i in range(V)])
            gw.add_token_types([2, 3, 3] + [6] * 4 + [1] * (V - 7))
        else:
            gw.add_tokenizer_model("gpt2")
            gw.add_tokenizer_pre("default")
            toks = ["a", "b", "c", "Ġ", "ab", "Ġa", "<|endoftext|>"] + [f"t{i}" for i in range(V - 7)]
            gw.add_token_list(toks)
            gw.add_token_types([1] * 6 + [3] + [1] * (V - 7))
            gw.add_token_merges(["a b", "Ġ a"])
        gw.add_bos_token_id(1)
        gw.add_eos_token_id(2)
        gw.add_chat_template("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                             "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                             "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
        t = {"token_embd.weight": w(V, D), "output_norm.weight": np.ones(D, np.float32)}
        for i in range(L):
            t.update({
                f"blk.{i}.attn_norm.weight": np.ones(D, np.float32),
                f"blk.{i}.attn_q.weight": w(H * HD, D), f"blk.{i}.attn_k.weight": w(KV * HD, D),
                f"blk.{i}.attn_v.weight": w(KV * HD, D), f"blk.{i}.attn_output.weight": w(D, H * HD),
                f"blk.{i}.ffn_norm.weight": np.ones(D, np.float32),
                f"blk.{i}.ffn_gate.weight": w(F, D), f"blk.{i}.ffn_up.weight": w(F, D),
                f"blk.{i}.ffn_down.weight": w(D, F)})
        for k, v in t.items():
            gw.add_tensor(k, v.astype(dtype) if v.ndim == 2 else v)

    def llama_q(gw, qtype):  # D = F = 32: rows of one 32-value block
        global D, F, HD
        d0 = (D, F, HD)
        D, F = 32, 32
        HD = D // H
        try:
            gw.add_context_length(S)
            gw.add_embedding_length(D)
            gw.add_block_count(L)
            gw.add_feed_forward_length(F)
            gw.add_head_count(H)
            gw.add_head_count_kv(KV)
            gw.add_layer_norm_rms_eps(1e-5)
            t = {"token_embd.weight": w(V, D), "output_norm.weight": np.ones(D, np.float32),
                 "blk.0.attn_norm.weight": np.ones(D, np.float32),
                 "blk.0.attn_q.weight": w(H * HD, D), "blk.0.attn_k.weight": w(KV * HD, D),
                 "blk.0.attn_v.weight": w(KV * HD, D), "blk.0.attn_output.weight": w(D, H * HD),
                 "blk.0.ffn_norm.weight": np.ones(D, np.float32), "blk.0.ffn_gate.weight": w(F, D),
                 "blk.0.ffn_up.weight": w(F, D), "blk.0.ffn_down.weight": w(D, F)}
            for k, v in t.items():
                if v.ndim == 2:
                    gw.add_tensor(k, gguf.quants.quantize(v, qtype), raw_dtype=qtype)
                else:
                    gw.add_tensor(k, v)
        finally:
            D, F, HD = d0

    write("llama-spm-f32.gguf", lambda gw: llama(gw))
    write("llama-q8_0.gguf", lambda gw: llama_q(gw, gguf.GGMLQuantizationType.Q8_0))
    write("llama-q4_1.gguf", lambda gw: llama_q(gw, gguf.GGMLQuantizationType.Q4_1))
    write("llama-spm-f16.gguf", lambda gw: llama(gw, np.float16))
    write("llama-bpe.gguf", lambda gw: llama(gw, spm=False))

    def q8(gw):  # one block-quantized tensor (Q8_0: 32 values a block)
        gw.add_uint32("general.alignment", 64)
        x = w(2, 32)
        gw.add_tensor("q", gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        gw.add_array("a.i32", [1, -2, 3])
        gw.add_array("a.f32", [0.5, 1.5])
        gw.add_bool("a.bool", True)
        gw.add_float64("a.f64", 2.5)
        gw.add_int64("a.i64", -7)
    write("kv-types-q8_0.gguf", q8)
    write("empty.gguf", lambda gw: None)


# ---- safetensors (the safetensors package) ------------------------------------------------
HF_TENSORS = None


def hf_tensors():
    t = {"model.embed_tokens.weight": w(V, D), "model.norm.weight": np.ones(D, np.float32),
         "lm_head.weight": w(V, D)}
    for i in range(L):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": np.ones(D, np.float32),
                  p + "post_attention_layernorm.weight": np.ones(D, np.float32),
                  p + "self_attn.q_proj.weight": w(H * HD, D), p + "self_attn.k_proj.weight": w(KV * HD, D),
                  p + "self_attn.v_proj.weight": w(KV * HD, D), p + "self_attn.o_proj.weight": w(D, H * HD),
                  p + "mlp.gate_proj.weight": w(F, D), p + "mlp.up_proj.weight": w(F, D),
                  p + "mlp.down_proj.weight": w(D, F)})
    return t


def safetensors_seeds():
    from safetensors.numpy import save
    t = hf_tensors()
    out("safetensors", "tiny-llama-f32.safetensors", save(t, metadata={"format": "pt"}))
    out("safetensors", "tiny-llama-f16.safetensors",
        save({k: v.astype(np.float16) for k, v in t.items()}, metadata={"format": "pt"}))
    out("safetensors", "mixed-dtypes.safetensors", save({
        "a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.zeros((0, 4), np.float32),
        "c": np.array([1.5], np.float64), "d": np.array([1, 2], np.uint8), "e": np.array(3.0, np.float32)}))
    out("safetensors", "no-tensors.safetensors", save({}, metadata={"format": "pt", "k": "v"}))


def tiny_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D,
            "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H,
            "num_key_value_heads": KV, "vocab_size": V, "max_position_embeddings": S,
            "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None, "hidden_act": "silu",
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
            "torch_dtype": "float32"}


def hf_config_seeds():
    copy("hf_config", "stories260K.json", os.path.join(FIX, "stories260K-hf", "config.json"))
    for m in ("llama3_rope_headdim", "mistral_gqa", "qwen2_bias_untied"):
        copy("hf_config", m + ".json", os.path.join(DATA, "forward", m, "config.json"))
    out("hf_config", "tiny-llama.json", json.dumps(tiny_config(), indent=2))
    c = tiny_config()
    c.update({"eos_token_id": [2, 3], "rope_scaling": {"rope_type": "linear", "factor": 2.0},
              "head_dim": 4, "sliding_window": 16})
    out("hf_config", "eos-list-linear-rope.json", json.dumps(c))


# ---- tokenizer.json (the tokenizers package) ----------------------------------------------
TEXT = ["Once upon a time there was a little cat.", "The cat sat on the mat, and it was happy!",
        "café 日本 😀 12 + 30 = 42", "Hello world. Hello again, world."] * 8


def tokenizer_json_seeds():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import AddedToken
    # byte-level BPE (GPT-2 / Llama 3 / SmolLM family)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tk.train_from_iterator(TEXT, tr)
    out("tokenizer_json", "bpe-bytelevel.json", tk.to_str())
    # sentencepiece-style BPE (Llama 2 / Mistral tokenizer.json): Metaspace, byte fallback
    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tr = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"] +
                             [f"<0x{i:02X}>" for i in range(256)])
    tk.train_from_iterator(TEXT, tr)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                      special_tokens=[("<s>", 1)])
    tk.add_special_tokens([AddedToken("<|user|>", special=True)])
    out("tokenizer_json", "bpe-metaspace-bytefallback.json", tk.to_str())
    # models loratune does not read: must be refused by name
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(TEXT, trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    out("tokenizer_json", "wordpiece.json", tk.to_str())
    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.train_from_iterator(TEXT, trainers.UnigramTrainer(vocab_size=40, special_tokens=["<unk>"],
                                                         unk_token="<unk>"))
    out("tokenizer_json", "unigram.json", tk.to_str())


# ---- tokenizer.model (sentencepiece) ------------------------------------------------------
def spm_seeds():
    import sentencepiece as spm
    copy("spm", "tok512.model", os.path.join(FIX, "stories260K", "tok512.model"))
    # a small normalization rule table (compiled into the model's precompiled_charsmap): the
    # built-in nmt_nfkc table alone is 240 KB
    rules = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False)
    rules.write("41\t61\n42\t62\nFF21\t41\n3000\t20\n")
    rules.close()
    for kind, vs in (("bpe", 330), ("unigram", 60)):
        m = io.BytesIO()
        norm = {"normalization_rule_name": "identity"} if kind == "bpe" else \
            {"normalization_rule_tsv": rules.name}
        spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT), model_writer=m, vocab_size=vs,
                                       model_type=kind, byte_fallback=(kind == "bpe"),
                                       character_coverage=1.0, minloglevel=2, num_threads=1, **norm,
                                       user_defined_symbols=["<|im_end|>"], hard_vocab_limit=False)
        out("spm", f"tiny-{kind}.model", m.getvalue())
    os.unlink(rules.name)


# ---- llama2.c checkpoint (llama2.c's legacy export layout) ---------------------------------
def llama2c_seeds():
    def ckpt(shared):
        hdr = struct.pack("7i", D, F, L, H, KV, V if shared else -V, S)
        parts = [w(V, D), np.ones((L, D), np.float32), w(L, H * HD, D), w(L, KV * HD, D),
                 w(L, KV * HD, D), w(L, D, H * HD), np.ones((L, D), np.float32), w(L, F, D),
                 w(L, D, F), w(L, F, D), np.ones(D, np.float32)]
        freqs = 1.0 / (10000.0 ** (np.arange(0, HD, 2, dtype=np.float32) / HD))
        ang = np.outer(np.arange(S, dtype=np.float32), freqs)
        parts += [np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)]
        if not shared:
            parts.append(w(V, D))
        return hdr + b"".join(p.tobytes() for p in parts)
    out("llama2c", "tiny-shared.bin", ckpt(True))
    out("llama2c", "tiny-unshared.bin", ckpt(False))
    copy("llama2c", "tok512.bin", os.path.join(FIX, "stories260K", "tok512.bin"))


# ---- data records ---------------------------------------------------------------------------
def data_seeds():
    for f in sorted(os.listdir(os.path.join(DATA, "datasets"))):
        copy("data", f, os.path.join(DATA, "datasets", f))
    copy("data", "wikisql-mlx.jsonl", os.path.join(FIX, "datasets", "wikisql-mlx", "valid.jsonl"), 3)
    copy("data", "gsm8k.jsonl", os.path.join(FIX, "datasets", "gsm8k", "test.jsonl"), 2)
    copy("data", "alpaca_en_demo.jsonl",
         os.path.join(FIX, "datasets", "llamafactory-demo", "alpaca_en_demo.jsonl"), 3)
    copy("data", "identity.jsonl", os.path.join(FIX, "datasets", "llamafactory-demo", "identity.jsonl"), 3)


# ---- run config (YAML) --------------------------------------------------------------------
def yaml_seeds():
    # as `loratune train` writes run_config.yaml (stories260K, 2 steps; paths made relative)
    out("yaml_config", "run_config.yaml", """# loratune train: the resolved options of this run
# (loratune train -c run_config.yaml reproduces it)
model: "stories260K.bin"
tokenizer: "tok512.model"
data: "text.jsonl"
data-format: auto
valid-fraction: 0.1
method: lora
out: "out"
iters: 2
batch-size: 1
grad-accum: 1
max-seq-len: 32
pack: false
train-on-prompt: false
lr: 0.0001
lr-schedule: linear
warmup: 0
weight-decay: 0.01
grad-clip: 1
lora-rank: 8
lora-alpha: 16
lora-dropout: 0
lora-targets: q,v
lora-layers: "all"
rslora: false
grad-checkpoint: false
base-dtype: f32
memory-budget: 0
eval-every: 200
eval-batches: 0
save-every: 1
keep-checkpoints: 3
early-stop: 0
max-nonfinite: 5
seed: 42
threads: 0
""")
    out("yaml_config", "qlora.yaml", """model: models/SmolLM2-135M-Instruct.Q4_1.gguf
data: tests/data/datasets/chat.jsonl
out: runs/qlora
method: qlora
lora-rank: 16
lora-alpha: 32
lora-targets: "q,k,v,o,gate,up,down"
lr: 2e-4
lr-schedule: cosine
warmup: 0.1
epochs: 2
batch-size: auto
max-seq-len: auto
pack: true
""")
    out("yaml_config", "flow.yaml", "{model: m.gguf, data: d.jsonl, out: o, iters: 10, lr: 1e-3, "
        "method: dora, lora-dropout: 0.05}\n")


# ---- chat templates -----------------------------------------------------------------------
def chat_seeds():
    d = os.path.join(DATA, "chat_templates")
    for f in sorted(os.listdir(d)):
        if f.endswith(".jinja"):
            copy("chat_template", f, os.path.join(d, f))
    copy("chat_template", "smollm-tokenizer_config.json",
         os.path.join(FIX, "tokenizers", "smollm", "tokenizer_config.json"))
    with open(os.path.join(d, "chatml.jinja")) as f:
        chatml = f.read()
    out("chat_template", "config-list-form.json", json.dumps({
        "bos_token": {"content": "<s>", "special": True}, "eos_token": "</s>",
        "chat_template": [{"name": "default", "template": chatml},
                          {"name": "tool_use", "template": "{{ x }}"}]}))


# ---- checkpoint state ---------------------------------------------------------------------
# fuzz_checkpoint_state.c's three tensors (2 float32 each) and their SHA-256
TENSORS = {"w": [1.0, -1.0], "optimizer.m.w": [0.125, -0.125], "optimizer.v.w": [0.0625, 0.25]}


def state_seeds():
    sums = {k: hashlib.sha256(np.array(v, np.float32).tobytes()).hexdigest() for k, v in TENSORS.items()}
    # the state of a real checkpoint (loratune train on stories260K, --iters 2 --save-every 1,
    # step 2), paths made relative, "sha256" redone for the harness's tensors
    config = {"base-dtype": "f32", "batch-size": "1", "data": "text.jsonl", "data-format": "auto",
              "early-stop": "0", "eval-batches": "0", "eval-every": "200", "grad-accum": "1",
              "grad-checkpoint": "false", "grad-clip": "1", "iters": "2", "keep-checkpoints": "3",
              "lora-alpha": "16", "lora-dropout": "0", "lora-layers": "all", "lora-rank": "8",
              "lora-targets": "q,v", "lr": "0.0001", "lr-schedule": "linear", "max-nonfinite": "5",
              "max-seq-len": "32", "memory-budget": "0", "method": "lora", "model": "stories260K.bin",
              "out": "out", "pack": "false", "rslora": "false", "save-every": "1", "seed": "42",
              "threads": "0", "tokenizer": "tok512.model", "train-on-prompt": "false",
              "valid-fraction": "0.1", "warmup": "0", "weight-decay": "0.01"}
    st = {"best_val_loss": 13.284142583215006, "config": config, "consecutive_nonfinite": 0,
          "counters": {"batch_epoch": 0, "batch_index": 2, "micro": 2, "trainer_step": 2},
          "evals_without_improvement": 0, "format": 2, "seed": 42, "sha256": sums, "step": 2,
          "tokens": 58}
    dump = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":"))
    out("checkpoint_state", "format2.json", dump(st))
    st1 = dict(st, format=1)
    del st1["sha256"], st1["best_val_loss"]
    out("checkpoint_state", "format1.json", dump(st1))
    st3 = json.loads(dump(st))
    st3["config"]["grad-accum"] = "4"
    st3["counters"]["micro"] = 8
    out("checkpoint_state", "grad-accum.json", dump(st3))


# ---- serve request bodies (docs/SERVING.md) -----------------------------------------------
def serve_seeds():
    bodies = {
        "completion.json": {"model": "m", "prompt": "Once upon a time", "max_tokens": 8,
                            "temperature": 0, "seed": 1},
        "completion-ids.json": {"model": "m", "prompt": [1, 5, 9], "max_tokens": 4, "stop": ["\n", "."]},
        "completion-list.json": {"model": "m", "prompt": ["Hello"], "top_p": 0.9, "top_k": 40,
                                 "stream": True, "stream_options": {"include_usage": True}},
        "chat.json": {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hi!"}],
                      "max_completion_tokens": 16, "n": 1, "presence_penalty": 0, "user": "u"},
        "chat-parts.json": {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}],
            "stop": "x", "logprobs": False, "tools": []},
        # POST /api/jobs (docs/SERVER.md): the run options as JSON values
        "job.json": {"kind": "train", "dataset": "ds_0123456789abcdef", "model": "m.gguf",
                     "name": "first", "options": {"lora-rank": 4, "lr": 0.0002, "iters": 2,
                                                  "pack": True, "lora-targets": "q,v",
                                                  "batch-size": "auto", "method": "dora"}},
    }
    for k, v in bodies.items():
        out("serve_request", k, json.dumps(v))


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    for f in (gguf_seeds, safetensors_seeds, hf_config_seeds, tokenizer_json_seeds, spm_seeds,
              llama2c_seeds, data_seeds, yaml_seeds, chat_seeds, state_seeds, serve_seeds):
        f()
    total = 0
    for d in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, d))
        size = sum(os.path.getsize(os.path.join(CORPUS, d, f)) for f in files)
        total += size
        print(f"{d}: {len(files)} seeds, {size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
