"""torch_train_step.py - the PyTorch side of the training-step speed benchmark.

Runs with .venv-golden/bin/python (CPU torch, transformers, peft). Builds the same
shapes as bench_train_step.c with transformers' LlamaForCausalLM(LlamaConfig(...)) (random
init, float32), wraps it in PEFT LoRA (or trains every parameter for --method full), and times
W warm-up + N optimizer steps on synthetic random tokens with every target counted:
    logits = model(input_ids).logits           # [B, T, V] (fp32)
    loss = F.cross_entropy(logits, targets)    # mean over B*T (targets = next random token)
    loss.backward(); clip_grad_norm_(1.0); AdamW(lr 1e-4, wd 0.01).step(); zero_grad()
PyTorch eager unless --compile (torch.compile of the model, default inductor backend; the warm-up
steps include compiling); attention is transformers' default "sdpa" unless --attn eager.
--device cuda runs it all on the GPU (each step ends with loss.item(), which synchronizes;
gpu_peak_allocated / _reserved in the output). --autocast bf16 runs the forward under
torch.autocast(device, torch.bfloat16) (params, grads and
AdamW stay fp32). --threads "2,1": the timed steps are run once per thread count in this process
(after one shared warm-up) and the best is reported as tokens_per_s, all of them in by_threads.
Prints ONE JSON line on stdout; peak RSS = resource.getrusage(RUSAGE_SELF).ru_maxrss (the
process's high-water mark, including torch's own libraries: rss_after_import says how much).
"""
import argparse
import json
import os
import resource
import sys
import time

SHAPES = {
    # name: (dim, layers, heads, kv_heads, head_dim, ffn, vocab, rope_theta)
    "smollm2-135m": (576, 30, 9, 3, 64, 1536, 49152, 100000.0),
    "smollm2-360m": (960, 32, 15, 5, 64, 2560, 49152, 100000.0),
    "llama3.2-1b": (2048, 16, 32, 8, 64, 8192, 128256, 500000.0),
    "llama3-8b": (4096, 32, 32, 8, 128, 14336, 128256, 500000.0),  # untied head
    "small": (256, 8, 8, 4, 32, 704, 8192, 10000.0),
    "tiny": (64, 2, 4, 2, 16, 172, 512, 10000.0),
}


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
    ap.add_argument("--threads", default="2", help='comma list, e.g. "2,1"')
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--weights-dtype", choices=["fp32", "bf16"], default="fp32",
                    help="the base weights' storage (bf16: as the issue's 8B anchor loads them; "
                    "PEFT keeps the LoRA weights fp32)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: the model, data and optimizer on the GPU (timings synchronized)")
    a = ap.parse_args()

    rss_start = rss_now()
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    import peft

    rss_import = rss_now()
    threads = [int(t) for t in a.threads.split(",")]
    torch.set_num_threads(threads[0])
    torch.manual_seed(a.seed)
    D, L, H, KV, HD, FF, V, theta = SHAPES[a.shape]
    cfg = LlamaConfig(hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=KV, head_dim=HD, intermediate_size=FF, vocab_size=V,
                      rope_theta=theta, max_position_embeddings=max(8192, a.seq),
                      tie_word_embeddings=a.shape != "llama3-8b", rms_norm_eps=1e-5,
                      attention_bias=False,
                      mlp_bias=False, torch_dtype=torch.float32)
    cfg._attn_implementation = a.attn
    wdt = torch.bfloat16 if a.weights_dtype == "bf16" else torch.float32
    with torch.device(a.device):  # built where it runs: an 8B model's init on a CPU takes minutes
        model = LlamaForCausalLM(cfg).to(wdt)
    n_params = sum(p.numel() for p in model.parameters())
    if a.method == "full":
        trainable = [p for p in model.parameters()]
    else:
        from peft import LoraConfig, get_peft_model
        tm = (["q_proj", "v_proj"] if a.targets in ("q,v", "q_proj,v_proj")
              else "all-linear" if a.targets in ("all", "all-linear")
              else [t if t.endswith("_proj") else t + "_proj" for t in a.targets.split(",")])
        lc = LoraConfig(r=a.rank, lora_alpha=a.alpha if a.alpha > 0 else 2 * a.rank,
                        lora_dropout=0.0, target_modules=tm, use_dora=(a.method == "dora"),
                        bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lc)
        trainable = [p for p in model.parameters() if p.requires_grad]
    if a.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if a.method != "full":
            model.enable_input_require_grads()
    model.train()
    n_trainable = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    rss_model = rss_now()

    g = torch.Generator().manual_seed(a.seed + 1)
    N = a.batch * a.seq
    fwd = torch.compile(model) if a.compile else model

    def step():
        toks = torch.randint(0, V, (a.batch, a.seq + 1), generator=g).to(a.device)
        x, y = toks[:, :-1], toks[:, 1:]
        if a.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        c0 = time.process_time()
        if a.autocast == "bf16":
            with torch.autocast(a.device, dtype=torch.bfloat16):
                logits = fwd(input_ids=x).logits
        else:
            logits = fwd(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        lv = loss.item()  # synchronizes a GPU
        dt = time.perf_counter() - t0
        return dt, (time.process_time() - c0) / dt, lv

    losses = []
    for i in range(a.warmup):
        dt, cu, lo = step()
        losses.append(lo)
        print(f"torch_train_step: warm-up {i}: {dt:.2f} s (cpu {cu:.2f}x) loss {lo:.4f}",
              file=sys.stderr, flush=True)
    by_threads = {}
    for nt in threads:
        torch.set_num_threads(nt)
        times, cpus = [], []
        for i in range(a.steps):
            dt, cu, lo = step()
            losses.append(lo)
            times.append(dt)
            cpus.append(cu * dt)
            print(f"torch_train_step: threads {nt} step {i}: {dt:.2f} s (cpu {cu:.2f}x) "
                  f"loss {lo:.4f}", file=sys.stderr, flush=True)
        by_threads[str(nt)] = {"tokens_per_s": N * len(times) / sum(times),
                               "s_per_step": sum(times) / len(times),
                               "s_per_step_min": min(times),
                               "cpu_util": sum(cpus) / sum(times)}
    best = max(by_threads, key=lambda k: by_threads[k]["tokens_per_s"])
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {
        "bench": "torch", "shape": a.shape, "method": a.method,
        **({"targets": a.targets, "rank": a.rank} if a.method != "full" else {}),
        "batch": a.batch, "seq": a.seq, "grad_checkpoint": int(a.grad_checkpoint),
        "autocast": a.autocast,
        "weights_dtype": a.weights_dtype, "compile": int(a.compile), "attn": a.attn, "warmup": a.warmup, "steps": a.steps,
        "threads": int(best), "tokens_per_s": round(by_threads[best]["tokens_per_s"], 2),
        "s_per_step": round(by_threads[best]["s_per_step"], 4),
        "cpu_util": round(by_threads[best]["cpu_util"], 2),
        "by_threads": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in by_threads.items()},
        "n_params": n_params, "n_trainable": n_trainable,
        "loss_first": round(losses[0], 5), "loss_last": round(losses[-1], 5),
        "rss_start": rss_start, "rss_after_import": rss_import, "rss_after_model": rss_model,
        "peak_rss": maxrss, "device": a.device,
        **({"gpu": torch.cuda.get_device_name(0),
            "gpu_peak_allocated": torch.cuda.max_memory_allocated(),
            "gpu_peak_reserved": torch.cuda.max_memory_reserved()} if a.device == "cuda" else {}),
        "loadavg": os.getloadavg()[0],
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
