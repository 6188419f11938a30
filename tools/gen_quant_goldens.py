#!/usr/bin/env python3
"""gen_quant_goldens.py - writes tests/data/quant/: dequantization goldens from gguf-py.

For every ggml type tested by tests/quant/test_dequant.c this writes
  <TYPE>.bin  raw blocks (random bytes; f16 scale fields replaced by finite values, some
              blocks with zero / negative / subnormal scales so every path is exercised)
  <TYPE>.f32  float32 little-endian output of gguf.quants.dequantize(blocks, type)
and, for the quantizers, <TYPE>.qin.f32 (random floats) with <TYPE>.qout.bin =
gguf.quants.quantize(floats, type). Q8_K has no gguf-py implementation: its golden is
computed here with numpy as d * q (float32), the formula of ggml's dequantize_row_q8_K.
Scalar types (F16, BF16, F64, I8..I64) use numpy's conversions to float32.

Run from the repo root:  .venv/bin/python tools/gen_quant_goldens.py
Deterministic (fixed seed); the C test compares bit-exactly.
"""
import os
import sys

import numpy as np
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

SEED = 20261125
N_BLOCKS = 8
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant")

# byte offsets of f16 scale fields inside one block (ggml-common.h layouts)
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def scale_values(rng, n):
    """n f16 scales: mostly moderate magnitudes of both signs, plus special cases."""
    v = (rng.uniform(0.001, 2.0, n) * rng.choice([-1.0, 1.0], n)).astype(np.float16)
    specials = np.array([0.0, -0.0, 6.0e-8, -3.0e-5, 1.0, 65504.0 / 4096], dtype=np.float16)
    k = min(n // 3, len(specials))
    v[rng.choice(n, k, replace=False)] = specials[:k]
    return v


def quant_blocks(rng, name):
    _, type_size = GGML_QUANT_SIZES[T[name]]
    raw = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        raw[:, off:off + 2] = scale_values(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
    return raw


def write(name, raw, out):
    raw = np.ascontiguousarray(raw)
    out = np.ascontiguousarray(out, dtype="<f4")
    assert np.all(np.isfinite(out)), name
    raw.tofile(os.path.join(OUT, name + ".bin"))
    out.tofile(os.path.join(OUT, name + ".f32"))


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for name in F16_FIELDS:
        raw = quant_blocks(rng, name)
        out = quants.dequantize(raw, T[name]).reshape(-1)
        write(name, raw, out)

    # Q8_K: f32 d, int8 qs[256], int16 bsums[16] (bsums unused by dequantization)
    d = rng.uniform(-0.1, 0.1, N_BLOCKS).astype("<f4")
    d[0] = 0.0
    qs = rng.integers(-128, 128, size=(N_BLOCKS, 256), dtype=np.int8)
    bsums = rng.integers(-32768, 32768, size=(N_BLOCKS, 16), dtype="<i2")
    raw = np.concatenate([d.view(np.uint8).reshape(N_BLOCKS, 4), qs.view(np.uint8),
                          bsums.view(np.uint8).reshape(N_BLOCKS, 32)], axis=1)
    write("Q8_K", raw, (d[:, None] * qs.astype(np.float32)).reshape(-1))

    n = 256
    h = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    h[(h & 0x7C00) == 0x7C00] &= 0xFBFF  # no inf/nan: exponent 31 -> 15
    h[:4] = [0x0000, 0x8000, 0x0001, 0x83FF]  # zeros and subnormals
    write("F16", h.view(np.uint8), h.view(np.float16).astype(np.float32))
    b = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    b[(b & 0x7F80) == 0x7F80] &= 0xFF7F  # no inf/nan
    write("BF16", b.view(np.uint8), quants.dequantize(b.view(np.uint8), T.BF16).reshape(-1))
    f64 = rng.normal(0, 1e3, n).astype("<f8")
    write("F64", f64.view(np.uint8), f64.astype(np.float32))
    for name, dt in [("I8", "<i1"), ("I16", "<i2"), ("I32", "<i4"), ("I64", "<i8")]:
        info = np.iinfo(dt)
        v = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        write(name, v.view(np.uint8), v.astype(np.float32))

    # quantizers: gguf-py's quantize (bit-exact with ggml's *_ref for Q8_0 by its own claim)
    for name in ["Q8_0", "Q4_0", "Q4_1"]:
        x = (rng.normal(0, 1, (N_BLOCKS, 32)) * rng.uniform(0.01, 10, (N_BLOCKS, 1)))
        x = x.astype("<f4")
        x[0] = 0.0  # all-zero block: d = 0
        x[1, 5] = 7.5  # exact ties
        q = quants.quantize(x, T[name])
        x.tofile(os.path.join(OUT, name + ".qin.f32"))
        np.ascontiguousarray(q).tofile(os.path.join(OUT, name + ".qout.bin"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
