"""torch_attention.py - the anchor of bench_attention.c: causal attention forward + backward
through PyTorch's scaled_dot_product_attention (bf16, flash backend where it applies; GQA by
enable_gqa), same shape, timed after a warm-up with CUDA synchronisation. One JSON line."""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    B, T, H, KV, D = a.batch, a.seq, a.heads, a.kv_heads, a.head_dim
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(42)
    mk = lambda h: (torch.rand(B, h, T, D, device=dev, generator=g) * 2 - 1).to(torch.bfloat16)
    q, k, v = mk(H).requires_grad_(), mk(KV).requires_grad_(), mk(KV).requires_grad_()
    do = mk(H)
    tf = tb = 0.0
    for it in range(a.iters + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=(H != KV))
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        o.backward(do)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        if it:
            tf += t1 - t0
            tb += t2 - t1
        q.grad = k.grad = v.grad = None
    tf /= a.iters
    tb /= a.iters
    flop = 2.0 * 2.0 * B * H * T * T * D / 2.0
    print(json.dumps({"bench": "torch_sdpa", "device": torch.cuda.get_device_name(), "B": B, "T": T,
                      "NH": H, "NKV": KV, "HD": D, "torch": torch.__version__,
                      "bf16": {"fwd_ms": round(1e3 * tf, 3), "bwd_ms": round(1e3 * tb, 3),
                               "fwd_tflops": round(flop / tf * 1e-12, 2),
                               "bwd_tflops": round(2.5 * flop / tb * 1e-12, 2)}}))


if __name__ == "__main__":
    main()
