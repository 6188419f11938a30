"""mlx_train_step.py - the mlx-lm side of the training-step speed benchmark.

Runs with .venv/bin/python (mlx[cpu], mlx-lm; pinned in tools/requirements.txt). Builds the
same shapes as bench_train_step.c with mlx_lm.models.llama.Model (random init, float32 unless
--dtype bf16), converts the targets to LoRA with mlx-lm's own tuner (linear_to_lora_layers,
scale = alpha / r as PEFT's) or trains every parameter (--method full), and times W warm-up +
N optimizer steps of mlx-lm's training step as mlx_lm.tuner.trainer.train builds it:
nn.value_and_grad(model, default_loss) inside mx.compile over (model, optimizer, random) state,
AdamW(lr 1e-4, wd 0.01), plus clip_grad_norm(1.0) as the other two sides do. Synthetic random
tokens, every target counted (lengths = [0, T]). Prints ONE JSON line on stdout (same fields as
torch_train_step.py); peak RSS = ru_maxrss.
"""
import argparse
import json
import os
import resource
import sys
import time
from functools import partial

SHAPES = {
    # name: (dim, layers, heads, kv_heads, head_dim, ffn, vocab, rope_theta)
    "smollm2-135m": (576, 30, 9, 3, 64, 1536, 49152, 100000.0),
    "smollm2-360m": (960, 32, 15, 5, 64, 2560, 49152, 100000.0),
    "small": (256, 8, 8, 4, 32, 704, 8192, 10000.0),
    "tiny": (64, 2, 4, 2, 16, 172, 512, 10000.0),
}
ALL = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def rss_now():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--method", default="lora", choices=["lora", "dora", "full"])
    ap.add_argument("--targets", default="q,v", help='"q,v" or "all" (all linear)')
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=-1, help="default 2*rank")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    rss_start = rss_now()
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    import mlx_lm
    from mlx_lm.models import llama
    from mlx_lm.tuner.trainer import default_loss
    from mlx_lm.tuner.utils import linear_to_lora_layers

    rss_import = rss_now()
    mx.random.seed(a.seed)
    D, L, H, KV, HD, FF, V, theta = SHAPES[a.shape]
    args = llama.ModelArgs(model_type="llama", hidden_size=D, num_hidden_layers=L,
                           intermediate_size=FF, num_attention_heads=H, num_key_value_heads=KV,
                           head_dim=HD, rms_norm_eps=1e-5, vocab_size=V, rope_theta=theta,
                           tie_word_embeddings=True, max_position_embeddings=max(8192, a.seq))
    model = llama.Model(args)
    if a.dtype == "bf16":
        model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    if a.method != "full":
        model.freeze()
        keys = (["self_attn.q_proj", "self_attn.v_proj"] if a.targets in ("q,v",) else ALL)
        alpha = a.alpha if a.alpha > 0 else 2 * a.rank
        linear_to_lora_layers(model, L, {"rank": a.rank, "scale": alpha / a.rank,
                                         "dropout": 0.0, "keys": keys},
                              use_dora=(a.method == "dora"))
    n_trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    opt = optim.AdamW(learning_rate=1e-4, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.01)
    model.train()
    loss_value_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, opt.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step_fn(batch, lengths):
        (lvalue, toks), grad = loss_value_and_grad(model, batch, lengths)
        grad, _ = optim.clip_grad_norm(grad, 1.0)
        opt.update(model, grad)
        return lvalue, toks

    rss_model = rss_now()
    N = a.batch * a.seq
    lengths = mx.array([[0, a.seq]] * a.batch)

    def step():
        batch = mx.random.randint(0, V, (a.batch, a.seq + 1))
        mx.eval(batch)
        t0 = time.perf_counter()
        c0 = time.process_time()
        lv, toks = step_fn(batch, lengths)
        mx.eval(state, lv, toks)
        dt = time.perf_counter() - t0
        return dt, (time.process_time() - c0) / dt, lv.item()

    losses = []
    for i in range(a.warmup):
        dt, cu, lo = step()
        losses.append(lo)
        print(f"mlx_train_step: warm-up {i}: {dt:.2f} s (cpu {cu:.2f}x) loss {lo:.4f}",
              file=sys.stderr, flush=True)
    times, cpus = [], []
    for i in range(a.steps):
        dt, cu, lo = step()
        losses.append(lo)
        times.append(dt)
        cpus.append(cu * dt)
        print(f"mlx_train_step: step {i}: {dt:.2f} s (cpu {cu:.2f}x) loss {lo:.4f}",
              file=sys.stderr, flush=True)
    import importlib.metadata as md
    out = {
        "bench": "mlx", "shape": a.shape, "method": a.method,
        **({"targets": a.targets, "rank": a.rank} if a.method != "full" else {}),
        "batch": a.batch, "seq": a.seq, "autocast": a.dtype, "warmup": a.warmup,
        "steps": a.steps, "threads": 0, "tokens_per_s": round(N * len(times) / sum(times), 2),
        "s_per_step": round(sum(times) / len(times), 4),
        "cpu_util": round(sum(cpus) / sum(times), 2),
        "n_params": n_params, "n_trainable": n_trainable,
        "loss_first": round(losses[0], 5), "loss_last": round(losses[-1], 5),
        "rss_start": rss_start, "rss_after_import": rss_import, "rss_after_model": rss_model,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loadavg": os.getloadavg()[0],
        "mlx": md.version("mlx"), "mlx_lm": md.version("mlx-lm"),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
