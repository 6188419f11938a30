"""fusecheck.py - what the fuse peer tests share: running `test_export --fuse`, mlx-lm logits,
GGUF field values. Not named test_*.py: CMake runs those as tests."""
import os
import subprocess
import tempfile

import numpy as np
from safetensors.numpy import load_file

import ltcheck
from ltcheck import check

TOOL = ltcheck.tool("test_export")
TMP = tempfile.mkdtemp(prefix="lt_fuse_peer_")


def fuse(model, out, fmt, dtype, seed, method, ids):
    ad = os.path.join(TMP, f"adapter_{seed}_{method}.safetensors")
    lg = os.path.join(TMP, f"logits_{seed}_{method}_{fmt}_{dtype}.f32")
    p = subprocess.run([TOOL, "--fuse", model, out, fmt, dtype, str(seed), method, ad, lg,
                        *map(str, ids)], capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, f"test_export --fuse {model} {fmt} {dtype}: {p.stderr[-2000:]}")
    if p.returncode != 0:
        return None, None
    logits = np.fromfile(lg, dtype=np.float32)
    return (load_file(ad) if method != "none" else None), logits.reshape(len(ids), -1)


def mlx_logits(folder, ids):
    import mlx.core as mx
    from mlx_lm import load
    model, _ = load(folder)
    y = model(mx.array([ids]))
    return np.array(y.astype(mx.float32))[0]


def field(r, k):
    f = r.fields.get(k)
    if f is None:
        return None
    v = f.contents()
    return v
