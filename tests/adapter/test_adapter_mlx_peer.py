"""test_adapter_mlx_peer.py - our mlx-lm adapter folders against mlx-lm 0.32 itself.

The adapters (LoRA r 4 on every linear of every layer; DoRA r 4, rsLoRA, 5 targets on the last
4 layers) are written by lt_adapter_save_mlx (test_adapter_peft_golden --emit-peers). mlx-lm
loads stories260K-hf and each folder with its own loader (mlx_lm.tuner.utils.load_adapters,
which refuses unknown names and wrong shapes) and computes logits; `loratune generate
--adapter FOLDER --logits-out` computes ours (through our mlx-lm reader and the forward
without merging). Tolerance: max |diff| <= 2e-4 (fp32 both sides; the base alone agrees to
~1e-5). The same adapter saved for PEFT must give the same logits through our PEFT reader
(whose logits tests/adapter/test_adapter_peft_golden.c checks against PEFT). Also: mlx-lm's
own fuse of our folder (DoRALinear / LoRALinear .fuse) gives the same logits, and a folder with
a wrong shape is refused by both, ours naming the tensor and file.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_model
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ltcheck  # noqa: E402
from ltcheck import FIXTURES, check  # noqa: E402

HF = os.path.join(FIXTURES, "stories260K-hf")
IDS = [1, 403, 407, 261, 378, 439, 297, 261, 270, 356, 410, 46]
V = 512
TOL = 2e-4


def ours(tmp, adapter):
    out = os.path.join(tmp, "logits.f32")
    # an fp32 KV cache, as mlx-lm's on an fp32 model (generate's default is fp16)
    args = ["generate", "--model", HF, "--prompt-ids", ",".join(map(str, IDS)),
            "--logits-out", out, "--quiet", "--kv-cache", "f32"]
    if adapter:
        args += ["--adapter", adapter]
    p = ltcheck.run(*args, timeout=120)
    if p.returncode != 0:
        return None, p.stderr
    return np.fromfile(out, dtype="<f4").reshape(len(IDS), V), p.stderr


def mlx_logits(adapter, fuse=False):
    model, _ = load_model(Path(HF))
    if adapter:
        load_adapters(model, adapter)
        if fuse:
            fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
            model.update_modules(__import__("mlx.utils").utils.tree_unflatten(fused))
    model.eval()
    out = model(mx.array([IDS]))
    return np.array(out[0].astype(mx.float32))


def main():
    tmp = tempfile.mkdtemp(prefix="lt_adapter_mlx_")
    p = subprocess.run([ltcheck.tool("test_adapter_peft_golden"), "--emit-peers", tmp],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, LT_FIXTURES=FIXTURES))
    check(p.returncode == 0, f"emit adapters: {p.stdout[-500:]} {p.stderr[-1000:]}")
    if p.returncode != 0:
        return
    base_ours, _ = ours(tmp, None)
    base_mlx = mlx_logits(None)
    d0 = float(np.abs(base_ours - base_mlx).max())
    check(d0 <= TOL, f"base logits ours vs mlx-lm: {d0}")
    for name in ["lora", "dora"]:
        folder = os.path.join(tmp, f"{name}_mlx")
        cfg = json.load(open(os.path.join(folder, "adapter_config.json")))
        check(cfg["fine_tune_type"] == name, f"{name}: fine_tune_type {cfg['fine_tune_type']}")
        ref = mlx_logits(folder)
        lg, err = ours(tmp, folder)
        if lg is None:
            check(False, f"{name}: loratune generate --adapter failed: {err[-500:]}")
            continue
        d = float(np.abs(lg - ref).max())
        moved = float(np.abs(ref - base_mlx).max())
        print(f"{name}: max |ours - mlx-lm| {d:.3g}; the adapter moves mlx-lm's logits by {moved:.3g}")
        check(d <= TOL, f"{name}: logits ours vs mlx-lm: max |diff| {d}")
        check(moved > 0.05, f"{name}: adapter moves logits by {moved} (must be non-trivial)")
        fused = mlx_logits(folder, fuse=True)
        df = float(np.abs(lg - fused).max())
        check(df <= TOL, f"{name}: ours vs mlx-lm fused: {df}")
        lp, err = ours(tmp, os.path.join(tmp, f"{name}_peft"))
        check(lp is not None and float(np.abs(lp - lg).max()) <= 1e-5,
              f"{name}: same adapter via the PEFT folder gives the same logits")

    # the same adapter as mlx itself writes it (mx.save_safetensors: "__metadata__": null, as
    # mlx-lm's trainer saves adapters): we read it and give the same logits
    own = os.path.join(tmp, "lora_mlx_own")
    os.makedirs(own)
    src = os.path.join(tmp, "lora_mlx")
    arrs = mx.load(os.path.join(src, "adapters.safetensors"))
    mx.save_safetensors(os.path.join(own, "adapters.safetensors"), arrs)
    shutil.copy(os.path.join(src, "adapter_config.json"), own)
    raw = open(os.path.join(own, "adapters.safetensors"), "rb").read(4096)
    print("mlx header starts:", raw[8:80])
    lg_own, err = ours(tmp, own)
    lg_ref, _ = ours(tmp, src)
    check(lg_own is not None and lg_ref is not None and float(np.abs(lg_own - lg_ref).max()) == 0,
          f"adapter saved by mx.save_safetensors reads the same: {err[-300:]!r}")

    # a wrong shape: both refuse; ours names the tensor and the file
    bad = os.path.join(tmp, "bad_mlx")
    os.makedirs(bad)
    src = os.path.join(tmp, "lora_mlx")
    w = load_file(os.path.join(src, "adapters.safetensors"))
    key = "model.layers.2.self_attn.k_proj.lora_b"
    w[key] = np.zeros((4, 64), dtype=np.float32)  # k_proj outputs 32
    save_file(w, os.path.join(bad, "adapters.safetensors"))
    with open(os.path.join(src, "adapter_config.json")) as f:
        open(os.path.join(bad, "adapter_config.json"), "w").write(f.read())
    lg, err = ours(tmp, bad)
    check(lg is None and key in err and "adapters.safetensors" in err and "[4, 64]" in err,
          f"bad shape: our message names tensor, file and shape: {err!r}")
    try:
        mlx_logits(bad)
        check(False, "mlx-lm accepted the bad shape")
    except ValueError as e:
        check(key in str(e), f"mlx-lm refuses it too: {e}")
    # the CLI: a missing adapter is an error naming it
    lg, err = ours(tmp, os.path.join(tmp, "no_such_adapter"))
    check(lg is None and "no_such_adapter: no such adapter" in err, f"missing adapter: {err!r}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(ltcheck.finish())
