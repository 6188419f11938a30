#!/usr/bin/env python3
"""test_dequant_peer.py - lt_to_f32 against gguf.quants.dequantize on fresh random blocks.

Complements the committed goldens (tests/data/quant/, tools/gen_quant_goldens.py) with a
different fixed seed, more blocks per type and extreme blocks (all-zero and all-0xFF bytes,
largest / subnormal / negative-zero scales). The blocks go into a GGUF written by
gguf.GGUFWriter; `test_gguf --dump` (next to LORATUNE in the build folder) prints our
dequantized float32 bytes, which must equal gguf-py's bit for bit.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, quants

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ltcheck import check, finish, tool  # noqa: E402

SEED = 777001
N_BLOCKS = 64
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
              "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def blocks(rng, qt):
    _, ts = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(N_BLOCKS, ts), dtype=np.uint8)
    raw[0] = 0
    raw[1] = 0xFF
    for off in F16_FIELDS[qt.name]:
        s = (rng.uniform(1e-4, 4.0, N_BLOCKS) * rng.choice([-1, 1], N_BLOCKS)).astype(np.float16)
        # special scales: one, negative zero, subnormal, tiny, large-ish
        s[2:7] = np.array([1.0, -0.0, 6e-8, 1e-5, 8.0], dtype=np.float16)
        s[1] = np.float16(0.5)  # an all-0xFF block would otherwise have a NaN scale
        raw[:, off:off + 2] = s.view(np.uint8).reshape(N_BLOCKS, 2)
    return raw


def main():
    exe = tool("test_gguf")
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "blocks.gguf")
        w = gguf.GGUFWriter(path, "llama")
        want = {}
        for name in F16_FIELDS:
            qt = Q[name]
            raw = blocks(rng, qt)
            w.add_tensor(name, raw, raw_dtype=qt)
            want[name] = np.asarray(quants.dequantize(raw, qt), dtype=np.float32).reshape(-1)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        p = subprocess.run([exe, "--dump", path], capture_output=True, text=True)
        if p.returncode != 0:
            check(False, f"test_gguf --dump: {p.stderr.strip()}")
            return finish()
        got = {t["name"]: np.frombuffer(bytes.fromhex(t["f32"]), np.float32)
               for t in json.loads(p.stdout)["tensors"]}
    for name, w32 in want.items():
        g32 = got.get(name)
        if g32 is None or g32.shape != w32.shape:
            check(False, f"{name}: missing or wrong length")
            continue
        bad = np.nonzero(g32.view(np.uint32) != w32.view(np.uint32))[0]
        k = int(bad[0]) if len(bad) else 0
        check(len(bad) == 0,
              f"{name}: first mismatch at {k} (block {k // gguf.GGML_QUANT_SIZES[Q[name]][0]}):"
              f" ours {g32[k]!r} vs gguf {w32[k]!r}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
