"""mlx_wikisql.py - the mlx-lm side of issue 7 workload (4) (WikiSQL LoRA, prompt masked).

Runs with .venv/bin/python (mlx[cpu], mlx-lm; pinned in tools/requirements.txt), best with the
system OpenBLAS LD_PRELOADed (bench/run_wikisql.sh does; the stock mlx[cpu] wheel's reference
BLAS is single-threaded and ~10x slower). It is what `mlx_lm.lora --train --mask-prompt` does,
written out so that the settings the CLI keeps in its defaults are pinned and the count of real
tokens is exact:
  - mlx_lm.load(HF folder); model.freeze(); linear_to_lora_layers(all layers, rank, scale
    alpha / rank, dropout 0, keys q_proj / v_proj) -- mlx-lm's own LoRA layers and init;
  - mlx_lm.tuner.datasets.load_dataset(data, mask_prompt=True): CompletionsDataset, the chat
    template of [{user: prompt}, {assistant: completion}], loss from the generation prompt on;
  - mlx_lm.tuner.trainer.train with its own iterate_batches (examples sorted by length, cut into
    batches, batches visited in a numpy permutation; padded to 1 + a multiple of 32, at most
    max_seq_length): mlx-lm has NO packing, so rows are padded;
  - optimizer mlx.optimizers.AdamW(lr, betas 0.9/0.999, eps 1e-8, weight decay) with
    bias_correction=True (mlx's default is False, unlike torch's and loratune's AdamW), constant
    LR, no gradient clipping (the trainer has none);
  - seeds: mx.random.seed(seed) (LoRA A init), np.random.seed(seed) (batch order).
The adapter is written as mlx-lm writes it (adapters.safetensors + adapter_config.json) to --out.
After training: mlx-lm's own evaluate() over the whole valid split (its batching: sorted by
length, the last incomplete batch dropped; with the same pad-target loss as training). Prints ONE JSON line: real_tokens (input positions
of the examples, sum of length - 1 per row: padding excluded), loss_tokens, train_s (the train()
call minus its first-report bookkeeping: just the loop; the first step includes mx.compile),
tokens_per_s = real_tokens / train_s, val_loss_own, peak_rss (ru_maxrss).
"""
import argparse
import json
import os
import resource
import sys
import time
import types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=int, default=1)
    ap.add_argument("--exclude-pad-target", type=int, default=0,
                    help="1: mask 'steps < length' instead of mlx-lm 0.32's 'steps <= length', "
                         "which also trains each padded row to predict the pad token 0 after "
                         "its last token (ml-explore/mlx-lm PR #1697)")
    a = ap.parse_args()

    t_start = time.perf_counter()
    import numpy as np
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    import mlx_lm
    from mlx_lm.tuner import trainer as tr
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx.random.seed(a.seed)
    np.random.seed(a.seed)
    model, tokenizer = mlx_lm.load(a.model)
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj"]
    lora = {"rank": a.rank, "scale": a.alpha / a.rank, "dropout": 0.0, "keys": keys}
    nl = len(model.layers)
    linear_to_lora_layers(model, nl, lora)
    n_trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    dargs = types.SimpleNamespace(data=a.data, train=True, test=False, mask_prompt=True,
                                  hf_dataset=False)
    train_set, valid_set, _ = load_dataset(dargs, tokenizer)
    train_set, valid_set = CacheDataset(train_set), CacheDataset(valid_set)
    opt = optim.AdamW(learning_rate=a.lr, betas=[0.9, 0.999], eps=1e-8,
                      weight_decay=a.weight_decay, bias_correction=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump({"fine_tune_type": "lora", "num_layers": nl, "lora_parameters": lora,
                   "model": a.model}, f, indent=2)
    targs = tr.TrainingArgs(batch_size=a.batch, iters=a.steps, val_batches=-1,
                            steps_per_report=10, steps_per_eval=10**9,
                            steps_per_save=10**9, max_seq_length=a.seq,
                            adapter_file=os.path.join(a.out, "adapters.safetensors"))

    count = {"real": 0, "loss": 0, "rows": 0}

    def counting_batches(**kw):  # mlx-lm's own batches, counted as they go by
        for batch, lengths in tr.iterate_batches(**kw):
            ln = np.array(lengths)
            count["real"] += int((ln[:, 1] - 1).sum())  # inputs = batch[:, :-1]
            count["loss"] += int(np.maximum(ln[:, 1] - np.maximum(ln[:, 0], 1), 0).sum())
            count["rows"] += ln.shape[0]
            yield batch, lengths

    class Cb(TrainingCallback):
        def __init__(self):
            self.reports = []

        def on_train_loss_report(self, info):
            self.reports.append(info)
            print(f"mlx_wikisql: step {info['iteration']}: loss {info['train_loss']:.4f} "
                  f"{info['tokens_per_second']:.0f} loss-tok/s", file=sys.stderr, flush=True)

    cb = Cb()
    loss_fn = tr.default_loss
    if a.exclude_pad_target:
        import mlx.nn as nn

        def loss_fn(model, batch, lengths):  # default_loss with the end bound fixed
            inputs, targets = batch[:, :-1], batch[:, 1:]
            logits = model(inputs)
            steps = mx.arange(1, targets.shape[1] + 1)
            mask = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])
            ce = nn.losses.cross_entropy(logits, targets) * mask
            ntoks = mask.sum()
            return ce.astype(mx.float32).sum() / ntoks, ntoks
    t_ready = time.perf_counter()
    tr.train(model=model, optimizer=opt, train_dataset=train_set, val_dataset=None,
             args=targs, loss=loss_fn, iterate_batches=counting_batches, training_callback=cb)
    train_s = time.perf_counter() - t_ready  # the loop + the final save (milliseconds)
    # mx.save_safetensors writes "__metadata__": null, which loratune's safetensors reader
    # refuses ("expected an object of strings"; the safetensors reference reads null as no
    # metadata). Until it accepts null, the same tensors are saved again with a metadata object.
    mx.save_safetensors(targs.adapter_file,
                        dict(tree_flatten(model.trainable_parameters())),
                        metadata={"format": "mlx"})
    # mlx-lm's loss-token count (mask sum) over the run, to check ours
    steps_total = sum(r["iteration"] - (cb.reports[i - 1]["iteration"] if i else 0)
                      for i, r in enumerate(cb.reports))
    val_loss = None
    t_tr = time.perf_counter()
    if a.eval:
        val_loss = tr.evaluate(model=model, dataset=valid_set, batch_size=a.batch,
                               num_batches=-1, max_seq_length=a.seq, loss=loss_fn)
    t_end = time.perf_counter()
    import importlib.metadata as md
    losses = [r["train_loss"] for r in cb.reports]
    out = {
        "system": "mlx-lm", "steps": a.steps, "batch": a.batch, "seq": a.seq, "pack": 0,
        "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0),
        "exclude_pad_target": a.exclude_pad_target, "blas": "openblas" if "openblas" in os.environ.get("LD_PRELOAD", "") else "stock",
        "real_tokens": count["real"], "loss_tokens": count["loss"],
        "loss_tokens_mlx": int(cb.reports[-1]["trained_tokens"]) if cb.reports else 0,
        "steps_reported": steps_total, "n_trainable": n_trainable,
        "train_s": round(train_s, 3), "tokens_per_s": round(count["real"] / train_s, 2),
        "s_per_step": round(train_s / a.steps, 4),
        "setup_s": round(t_ready - t_start, 2), "eval_s": round(t_end - t_tr, 2),
        "val_loss_own": val_loss, "loss_first10": losses[0] if losses else None,
        "loss_last10": losses[-1] if losses else None,
        "losses_per10": [round(x, 5) for x in losses],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loadavg": os.getloadavg()[0], "mlx": md.version("mlx"), "mlx_lm": md.version("mlx-lm"),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
