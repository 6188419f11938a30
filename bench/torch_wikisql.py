"""torch_wikisql.py - the PyTorch eager + transformers + PEFT side of issue 7 workload (4).

Runs with .venv-golden/bin/python (CPU torch, transformers, peft; not in CI). LoRA fine-tuning
of an HF model folder on prompt/completion JSONL data (bench/run_wikisql.sh makes both), the
way loratune trains it, so the two train on the SAME micro-batches:
  - tokens: transformers' apply_chat_template of [{user: prompt}, {assistant: completion}];
    loss only from the end of the generation prompt (mlx-lm's CompletionsDataset with
    --mask-prompt, which loratune's data layer reproduces); an example of n tokens fills
    L = min(n - 1, seq) positions (inputs tokens[:L], targets tokens[1:L+1], -100 where masked).
  - order: loratune's epoch permutation (src/data/batcher.c: splitmix64 Fisher-Yates of
    (seed, stream 0xe90c0000 + epoch)), rows packed greedily in that order (a new row when the
    next example does not fit in seq), batch rows consecutive, padded to the longest row.
  - packing: position ids restart at 0 for every example and a block-diagonal causal boolean
    mask [B, 1, T, T] (passed as a 4-D attention_mask, which transformers hands to sdpa as is),
    so no token attends across examples; padding attends only to itself. --no-pack: one example
    per row, the batch padded to its longest row (the same mask: causal + padding).
  - PEFT LoraConfig(r, alpha, dropout 0, q_proj/v_proj), torch.optim.AdamW(lr, betas 0.9/0.999,
    eps 1e-8, weight decay), constant LR, no gradient clipping (mlx-lm's trainer has none),
    loss = mean cross-entropy over the batch's loss tokens (sum / count), fp32, eager.
After training: saves the PEFT adapter to --out and evaluates it on the valid split (file order,
one example per row, batches of --batch, token-weighted mean over the whole split: the same
definition as `loratune eval`). Prints ONE JSON line on stdout: real_tokens (input positions
that belong to an example: padding excluded), loss_tokens, train_s (the optimizer-step loop
only), tokens_per_s = real_tokens / train_s, val_loss, peak_rss (ru_maxrss), per-step losses.
"""
import argparse
import json
import os
import resource
import sys
import time

M64 = (1 << 64) - 1


def splitmix64(state):
    z = (state + 0x9E3779B97F4A7C15) & M64
    s = z
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return s, z ^ (z >> 31)


def permute(n, seed, stream):
    """loratune's lt_data_permute (src/data/batcher.c), bit for bit."""
    _, mixed = splitmix64(stream & M64)
    st = (seed ^ mixed) & M64
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        st, r = splitmix64(st)
        j = r % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def load_examples(path, tok, seq):
    """[(tokens, mask)] of prompt/completion records, mlx-lm CompletionsDataset + mask_prompt."""
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            msgs = [{"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r["completion"]}]
            ids = tok.apply_chat_template(msgs, tokenize=True)
            off = len(tok.apply_chat_template(msgs[:1], tokenize=True, add_generation_prompt=True))
            mask = [1 if i >= off else 0 for i in range(len(ids))]
            out.append((ids, mask))
    return out


def ex_len(ex, seq):
    return min(len(ex[0]) - 1, seq)


def epoch_rows(exs, order, seq, pack):
    order = [i for i in order if ex_len(exs[i], seq) >= 1]
    rows, fill = [], 0
    for k, i in enumerate(order):
        L = ex_len(exs[i], seq)
        if k == 0 or not pack or fill + L > seq:
            rows.append([])
            fill = 0
        rows[-1].append(i)
        fill += L
    return rows


def make_batch(torch, exs, rows, seq, pack):
    """(input_ids, targets, position_ids, attn_mask 4-D bool, real, loss) of rows."""
    T = max(sum(ex_len(exs[i], seq) for i in r) for r in rows)
    B = len(rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    tgt = torch.full((B, T), -100, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    sid = torch.zeros(B, T, dtype=torch.long)
    real = 0
    for b, r in enumerate(rows):
        t = 0
        for s, i in enumerate(r):
            toks, mask = exs[i]
            L = ex_len(exs[i], seq)
            ids[b, t:t + L] = torch.tensor(toks[:L])
            nxt = torch.tensor(toks[1:L + 1])
            m = torch.tensor(mask[1:L + 1], dtype=torch.bool)
            tgt[b, t:t + L] = torch.where(m, nxt, torch.full_like(nxt, -100))
            pos[b, t:t + L] = torch.arange(L)
            sid[b, t:t + L] = s
            t += L
        real += t
        pos[b, t:] = torch.arange(T - t)
        sid[b, t:] = len(r)  # padding: its own id, attends to itself only
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    same = sid[:, :, None] == sid[:, None, :]
    mask4 = (same & causal)[:, None, :, :]
    return ids, tgt, pos, mask4, real, int((tgt != -100).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF folder (fp32)")
    ap.add_argument("--data", required=True, help="folder with train.jsonl, valid.jsonl")
    ap.add_argument("--out", required=True, help="PEFT adapter folder to write")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-pack", action="store_true")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--eval", type=int, default=1, help="0: skip the final validation")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"],
                    help="bf16: the forward under torch.autocast('cpu', bfloat16)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (its first steps compile: tokens_per_s_steady "
                         "leaves out the first --warm steps)")
    ap.add_argument("--warm", type=int, default=3,
                    help="steps left out of tokens_per_s_steady (compilation, first-touch)")
    a = ap.parse_args()
    pack = not a.no_pack

    t_start = time.perf_counter()
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import peft
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    train = load_examples(os.path.join(a.data, "train.jsonl"), tok, a.seq)
    valid = load_examples(os.path.join(a.data, "valid.jsonl"), tok, a.seq)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32,
                                                 attn_implementation=a.attn)
    lc = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                    target_modules=["q_proj", "v_proj"], bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lc)
    trainable = [p for p in model.parameters() if p.requires_grad]
    fmodel = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=a.weight_decay)
    V = model.config.vocab_size
    t_ready = time.perf_counter()

    def batches():
        epoch = 0
        while True:
            order = permute(len(train), a.seed, 0xE90C0000 + epoch)
            rows = epoch_rows(train, order, a.seq, pack)
            for k in range(0, len(rows), a.batch):
                yield make_batch(torch, train, rows[k:k + a.batch], a.seq, pack)
            epoch += 1

    def forward_loss(ids, tgt, pos, mask4):
        # one path for both: unpacked rows hold one example, so the mask is causal + padding
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast == "bf16"):
            logits = fmodel(input_ids=ids, position_ids=pos, attention_mask=mask4).logits
        return F.cross_entropy(logits.float().reshape(-1, V), tgt.reshape(-1),
                               ignore_index=-100, reduction="sum")

    model.train()
    it = batches()
    real_tokens = loss_tokens = 0
    losses, times, reals = [], [], []
    train_s = 0.0
    for step in range(1, a.steps + 1):
        ids, tgt, pos, mask4, real, nl = next(it)
        t0 = time.perf_counter()
        loss = forward_loss(ids, tgt, pos, mask4) / nl
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        train_s += dt
        times.append(dt)
        reals.append(real)
        real_tokens += real
        loss_tokens += nl
        losses.append(loss.item())
        if step == 1 or step % 10 == 0 or step == a.steps:
            print(f"torch_wikisql: step {step}: loss {losses[-1]:.4f} {dt:.2f} s "
                  f"({real / dt:.0f} tok/s)", file=sys.stderr, flush=True)
    model.save_pretrained(a.out)
    t_trained = time.perf_counter()

    val_loss = None
    if a.eval:
        model.eval()
        s, n = 0.0, 0
        with torch.no_grad():
            for k in range(0, len(valid), a.batch):
                rows = [[i] for i in range(k, min(k + a.batch, len(valid)))
                        if ex_len(valid[i], a.seq) >= 1]
                ids, tgt, pos, mask4, _, nl = make_batch(torch, valid, rows, a.seq, True)
                logits = model(input_ids=ids, position_ids=pos, attention_mask=mask4).logits
                s += F.cross_entropy(logits.float().reshape(-1, V), tgt.reshape(-1),
                                     ignore_index=-100, reduction="sum").item()
                n += nl
        val_loss = s / n
    t_end = time.perf_counter()
    out = {
        "system": "torch+peft", "steps": a.steps, "batch": a.batch, "seq": a.seq,
        "pack": int(pack), "attn": a.attn, "threads": a.threads,
        "real_tokens": real_tokens, "loss_tokens": loss_tokens,
        "train_s": round(train_s, 3), "tokens_per_s": round(real_tokens / train_s, 2),
        "tokens_per_s_steady": (round(sum(reals[a.warm:]) / sum(times[a.warm:]), 2)
                                if a.steps > a.warm else None),
        "autocast": a.autocast, "compile": int(a.compile),
        "s_per_step": round(train_s / a.steps, 4),
        "setup_s": round(t_ready - t_start, 2), "eval_s": round(t_end - t_trained, 2),
        "val_loss_own": val_loss, "loss_first": losses[0], "loss_last": losses[-1],
        "loss_mean_last10": sum(losses[-10:]) / len(losses[-10:]),
        "losses": [round(x, 5) for x in losses],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loadavg": os.getloadavg()[0], "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
