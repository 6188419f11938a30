"""test_nonfinite.py - issue 18 finding 2: nothing non-finite is loaded or written with exit 0.

Bad inputs are made here from the fixtures (stories260K-hf and its PEFT LoRA in tests/data):
  - a PEFT adapter with lora_alpha 1e308 (inf as float32) and with a NaN in one lora_B;
  - an mlx-lm adapter (the same weights, transposed as mlx-lm stores them) with scale 1e39,
    beside the same adapter with scale 2 that fuses (the control);
  - a model whose up_proj of layer 2 holds an inf (safetensors), and a q8_0 GGUF whose first
    block of blk.1.ffn_down has a NaN scale (the lazy, quantized path of generate);
  - an adapter with a finite but huge alpha: the f32 export is finite and written, the f16 one
    would hold inf and is refused (every export checks what it writes).
Every refusal must exit non-zero and name the file and the tensor (or the scale).
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, SOURCE_DIR, check  # noqa: E402

HF = os.path.join(FIXTURES, "stories260K-hf")
LORA = os.path.join(SOURCE_DIR, "tests", "data", "adapter", "lora")


def peft_copy(dst, alpha=None, nan_key=None):
    shutil.copytree(LORA, dst)
    if alpha is not None:
        p = os.path.join(dst, "adapter_config.json")
        cfg = json.load(open(p))
        cfg["lora_alpha"] = alpha
        json.dump(cfg, open(p, "w"))
    if nan_key:
        p = os.path.join(dst, "adapter_model.safetensors")
        t = load_file(p)
        t[nan_key] = t[nan_key].copy()
        t[nan_key][0, 0] = np.nan
        save_file(t, p)
    return dst


def mlx_copy(dst, scale):
    os.makedirs(dst)
    t = load_file(os.path.join(LORA, "adapter_model.safetensors"))
    out = {}
    for k, v in t.items():  # base_model.model.model.layers.L.MOD.lora_A.weight
        name = k.replace("base_model.model.", "").replace(".weight", "")
        name = name.replace("lora_A", "lora_a").replace("lora_B", "lora_b")
        out[name] = np.ascontiguousarray(v.T)
    save_file(out, os.path.join(dst, "adapters.safetensors"))
    cfg = {"fine_tune_type": "lora", "num_layers": 5,
           "lora_parameters": {"rank": 4, "scale": scale, "dropout": 0.0}}
    with open(os.path.join(dst, "adapter_config.json"), "w") as f:
        f.write(json.dumps(cfg).replace('"scale": 1e+39', '"scale": 1e39'))
    return dst


def refused(r, *pieces, what):
    ok = r.returncode != 0 and all(p in r.stderr for p in pieces)
    check(ok, f"{what}: rc {r.returncode}, stderr wanted {pieces}: {r.stderr[-800:]}")


def main():
    tmp = tempfile.mkdtemp(prefix="lt_nonfinite_")
    try:
        fuse = lambda *a: ltcheck.run("fuse", "--model", HF, *a, timeout=300)  # noqa: E731

        # the controls: the fixture adapter, and its mlx-lm twin with a sane scale, fuse
        r = fuse("--adapter", LORA, "--out", os.path.join(tmp, "ok"))
        check(r.returncode == 0, f"control fuse: {r.stderr[-800:]}")
        r = fuse("--adapter", mlx_copy(os.path.join(tmp, "mlx_ok"), 2.0), "--out",
                 os.path.join(tmp, "ok_mlx"))
        check(r.returncode == 0, f"control fuse of the mlx-lm copy: {r.stderr[-800:]}")

        # adapters
        a = peft_copy(os.path.join(tmp, "alpha"), alpha=1e308)
        refused(fuse("--adapter", a, "--out", os.path.join(tmp, "o1")), "alpha", "not a finite",
                a, what="fuse, lora_alpha 1e308")
        m = mlx_copy(os.path.join(tmp, "mlx_bad"), 1e39)
        refused(fuse("--adapter", m, "--out", os.path.join(tmp, "o2")), "scale", "not a finite",
                m, what="fuse, mlx-lm scale 1e39")
        key = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"
        n = peft_copy(os.path.join(tmp, "nanb"), nan_key=key)
        refused(fuse("--adapter", n, "--out", os.path.join(tmp, "o3")),
                "layers.1.self_attn.q_proj.lora_B", "not finite", "nan at [0][0]",
                what="fuse, NaN in lora_B")
        r = ltcheck.run("generate", "--model", HF, "--adapter", n, "--prompt", "Once",
                        "--max-tokens", "4", "--temp", "0", timeout=120)
        refused(r, "layers.1.self_attn.q_proj.lora_B", "not finite",
                what="generate --adapter with a NaN lora_B")
        check(not os.path.exists(os.path.join(tmp, "o3", "model.safetensors")),
              "no merged weights written for the NaN adapter")

        # models
        bad = os.path.join(tmp, "bad_model")
        shutil.copytree(HF, bad)
        st = os.path.join(bad, "model.safetensors")
        t = load_file(st)
        up = "model.layers.2.mlp.up_proj.weight"
        t[up] = t[up].copy()
        t[up][3, 5] = np.inf
        save_file(t, st, metadata={"format": "pt"})
        r = ltcheck.run("generate", "--model", bad, "--prompt", "Once", "--max-tokens", "4",
                        "--temp", "0", timeout=120)
        refused(r, up, "1 of", "inf at [3][5]", "damaged", what="generate, inf in a weight")
        refused(ltcheck.run("fuse", "--model", bad, "--out", os.path.join(tmp, "o4"), timeout=300),
                up, "not finite", what="fuse of a model with an inf weight")

        q8 = os.path.join(tmp, "m.q8_0.gguf")
        r = ltcheck.run("fuse", "--model", HF, "--out", q8, "--dtype", "q8_0", timeout=300)
        check(r.returncode == 0, f"fuse to q8_0: {r.stderr[-800:]}")
        import gguf
        rd = gguf.GGUFReader(q8, "r+")
        tens = [x for x in rd.tensors if x.name == "blk.1.ffn_up.weight"]
        check(tens and tens[0].tensor_type == gguf.GGMLQuantizationType.Q8_0,
              "the q8_0 export has blk.1.ffn_up.weight in Q8_0")
        if tens:
            raw = tens[0].data.reshape(-1).view(np.uint8)
            raw[0:2] = np.frombuffer(np.float16(np.nan).tobytes(), np.uint8)
            rd.data.flush()
            del rd
            r = ltcheck.run("generate", "--model", q8, "--prompt", "Once", "--max-tokens", "4",
                            "--temp", "0", timeout=120)
            refused(r, "blk.1.ffn_up.weight", "32 of", "nan at [0][0]",
                    what="generate, a NaN Q8_0 block scale")

        # exports check what they write: finite in f32, past f16's range
        big = peft_copy(os.path.join(tmp, "big"), alpha=1e10)
        r = fuse("--adapter", big, "--out", os.path.join(tmp, "big_f32"))
        check(r.returncode == 0, f"alpha 1e10 merges to finite f32 weights: {r.stderr[-600:]}")
        if r.returncode == 0:
            w = load_file(os.path.join(tmp, "big_f32", "model.safetensors"))
            check(all(np.isfinite(v).all() for v in w.values()), "the f32 export is finite")
            check(max(float(np.abs(v).max()) for v in w.values()) > 65504,
                  "and holds values past f16's range")
        refused(fuse("--adapter", big, "--out", os.path.join(tmp, "big_f16"), "--dtype", "f16"),
                "model.safetensors: tensor", "not finite", "16-bit", what="fuse to f16 past range")
        refused(fuse("--adapter", big, "--out", os.path.join(tmp, "big.gguf")),
                "big.gguf: tensor", "not finite", what="fuse to a GGUF f16 past range")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ltcheck.finish()


if __name__ == "__main__":
    sys.exit(main())
