"""NF4 goldens from bitsandbytes' own quantize_4bit / dequantize_4bit (CPU).

Writes tests/data/nf4/: for each case an input (.in.f32, little-endian float32), bitsandbytes'
packed codes (.codes.u8), its absmax state (plain: .absmax.f32; double-quantized: .qabsmax.u8,
.absmax2.f32, .offset.f32), and its dequantized values (.out.f32); plus the 8-bit dynamic map
it uses for the absmax values (dynamic_map.f32, as left by quantize_blockwise).
Run with .venv-golden (torch + bitsandbytes; see tools/golden-requirements.txt):
    .venv-golden/bin/python tools/gen_nf4_goldens.py
"""
import json
import os
import sys

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "nf4")
os.makedirs(OUT, exist_ok=True)


def save(name, arr):
    arr.tofile(os.path.join(OUT, name))


cases = []
g = torch.Generator().manual_seed(1234)
# (name, shape, scale, dtype, double_quant)
specs = [
    ("small_f32", (3, 64), 1.0, torch.float32, False),
    ("small_f32_dq", (3, 64), 1.0, torch.float32, True),
    ("ragged_f32", (5, 77), 0.02, torch.float32, False),    # 385: last block partial, odd n
    ("ragged_f32_dq", (5, 77), 0.02, torch.float32, True),
    ("weights_bf16_dq", (96, 160), 0.05, torch.bfloat16, True),   # 240 blocks
    ("many_blocks_dq", (300, 128), 0.03, torch.float32, True),    # 600 blocks: 3 absmax blocks
    ("heavy_tail_dq", (64, 192), 1.0, torch.float32, True),
]
for name, shape, scale, dt, dq in specs:
    x = torch.randn(shape, generator=g) * scale
    if name.startswith("heavy_tail"):
        x = x * torch.exp(torch.randn(shape, generator=g) * 1.5)
    x = x.to(dt)
    q, st = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=dq)
    y = F.dequantize_4bit(q, st).float()
    save(name + ".in.f32", x.float().numpy().astype("<f4"))
    save(name + ".codes.u8", q.numpy().reshape(-1).astype(np.uint8))
    save(name + ".out.f32", y.numpy().astype("<f4"))
    if dq:
        save(name + ".qabsmax.u8", st.absmax.numpy().astype(np.uint8))
        save(name + ".absmax2.f32", st.state2.absmax.numpy().astype("<f4"))
        save(name + ".offset.f32", np.array([float(st.offset)], dtype="<f4"))
        save("dynamic_map.f32", st.state2.code.numpy().astype("<f4"))
        assert st.state2.blocksize == 256
    else:
        save(name + ".absmax.f32", st.absmax.numpy().astype("<f4"))
    cases.append({"name": name, "n": int(x.numel()), "double_quant": dq,
                  "input_dtype": str(dt).replace("torch.", ""), "blocks": int((x.numel() + 63) // 64)})
save("nf4_code.f32", F.get_4bit_type("nf4", device="cpu").numpy().astype("<f4"))
meta = {"generator": "tools/gen_nf4_goldens.py", "bitsandbytes": bitsandbytes.__version__,
        "torch": torch.__version__, "blocksize": 64, "absmax_blocksize": 256, "cases": cases}
with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(meta, f, indent=1)
print(json.dumps(meta, indent=1))
