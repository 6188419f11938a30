#!/usr/bin/env bash
# run_wikisql.sh - issue 7 workload (4): LoRA on the WikiSQL fixture with prompt masking, side by
# side in ONE invocation: loratune, PyTorch eager + transformers + PEFT (CPU), and mlx-lm's LoRA
# trainer on mlx[cpu]. Same fp32 model folder, data, sequence length, batch, method, optimizer:
#   LoRA r=8 alpha=16 on q,v, dropout 0; AdamW lr 1e-4 (betas 0.9/0.999, eps 1e-8, weight decay
#   0.01, with bias correction everywhere), constant LR, no gradient clipping (mlx-lm's trainer
#   has none); loss on completions only; seq 256, batch 4, STEPS steps, seed 0; 2 threads each.
# Packing: loratune --pack; torch packs the SAME rows (bench/torch_wikisql.py reproduces
# loratune's epoch permutation and greedy row filling; positions restart per example, block-
# diagonal causal mask via sdpa); mlx-lm has no packing (its own length-sorted padded batches),
# so it sees ~half the examples per step. tokens/s = real (non-pad) input positions / seconds of
# the training loop (model load, tokenization and evaluation excluded) for every system.
#
# 1. HF folder of SmolLM2-135M-Instruct in fp32, made once by `loratune fuse` from the GGUF
#    (cached in OUTDIR); 2. the fixture's {"text"} records split at "\nA: " into
#    {"prompt", "completion"} (cached): the chat template of [user: prompt, assistant: completion]
#    is what all three render, and the loss is on the completion turn (mlx-lm --mask-prompt);
# 3. the three trainers, each under /usr/bin/time -v (peak RSS); 4. ONE evaluator for every
#    final adapter: `loratune eval --adapter` on valid.jsonl (plus the base model), next to each
#    system's own validation number; 5. a table, and JSON lines in OUTDIR/wikisql-STAMP.jsonl.
#
# Environment (defaults in brackets):
#   STEPS [200]  SYSTEMS ["loratune torch mlx"] (run in this order)  THREADS [2]
#   EVAL_BASE [1] 1: also evaluate the untrained base model   EVAL_OWN [1] 0: skip torch's and
#   mlx-lm's own validation pass (loratune's own number IS the common evaluator)
#   EVAL_BATCHES [0] the common evaluator on the first N batches only (0 = all; smoke tests)
#   MLX_PAD_FIX [0] 1: mlx-lm without its extra pad target (see bench/mlx_wikisql.py)
#   LT_COMPUTE [f32]  loratune's --compute-dtype for training (f32 | bf16 | auto); the common
#     evaluator always runs in f32, so runs in both dtypes are scored alike
#   LT_DEVICE [cpu]  loratune's --device for training (cpu | cuda | auto); the common
#     evaluator runs on the CPU, so runs on both devices are scored alike
#   TORCH_ARGS [""]  more bench/torch_wikisql.py options, e.g. "--autocast bf16 --compile"
#     (PyTorch's best on a CPU with bf16; its JSON then has tokens_per_s_steady: the first 3
#     steps, which compile, left out)
#   LT [build/loratune]  PY [.venv-bench/bin/python: tools/setup.sh --bench]  MLXPY [.venv/bin/python]
#   GGUF [models/SmolLM2-135M-Instruct.Q4_1.gguf]  FIXTURES [$LT_FIXTURES or tests/fixtures]
#   OUTDIR [/tmp/loratune-wikisql]
# Usage: bench/run_wikisql.sh        STEPS=2 EVAL_BASE=0 EVAL_OWN=0 EVAL_BATCHES=1 bench/run_wikisql.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-200} SYSTEMS=${SYSTEMS:-loratune torch mlx} THREADS=${THREADS:-2}
EVAL_BASE=${EVAL_BASE:-1} EVAL_OWN=${EVAL_OWN:-1} MLX_PAD_FIX=${MLX_PAD_FIX:-0}
EVAL_BATCHES=${EVAL_BATCHES:-0} TORCH_ARGS=${TORCH_ARGS:-}
# LT_DEVICE: where loratune trains (cpu, cuda, auto); the common evaluator runs on the CPU
LT_DEVICE=${LT_DEVICE:-cpu}
LT=${LT:-build/loratune} PY=${PY:-.venv-bench/bin/python} LT_COMPUTE=${LT_COMPUTE:-f32} MLXPY=${MLXPY:-.venv/bin/python}
GGUF=${GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
FIXTURES=${FIXTURES:-${LT_FIXTURES:-tests/fixtures}}
OUTDIR=${OUTDIR:-/tmp/loratune-wikisql}
BATCH=4 SEQ=256 LR=1e-4 WD=0.01 RANK=8 ALPHA=16 SEED=0
OPENBLAS_SO=$(ldconfig -p | awk '/libopenblas\.so\.0 / && !p {p = $NF} END {print p}')
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS LORATUNE_NO_TRACK=1

STAMP=$(date -u +%Y%m%dT%H%M%S)
MODEL=$OUTDIR/smollm2-135m-instruct-f32
DATA=$OUTDIR/wikisql-completions
RUN=$OUTDIR/run-$STAMP
OUT=$OUTDIR/wikisql-$STAMP.jsonl
mkdir -p "$OUTDIR" "$RUN"

if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "## fuse: $GGUF -> $MODEL (f32)" >&2
  "$LT" fuse --model "$GGUF" --out "$MODEL" --dtype f32 >&2
fi
if [ ! -f "$DATA/valid.jsonl" ]; then
  mkdir -p "$DATA"
  python3 - "$FIXTURES/datasets/wikisql-mlx" "$DATA" <<'EOF'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
for split in ("train", "valid", "test"):
    with open(f"{src}/{split}.jsonl") as f, open(f"{dst}/{split}.jsonl", "w") as o:
        for n, line in enumerate(f, 1):
            text = json.loads(line)["text"]
            if text.count("\nA: ") != 1:
                sys.exit(f"{src}/{split}.jsonl:{n}: 'text': expected one '\\nA: ' separator")
            prompt, completion = text.split("\nA: ")
            o.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
EOF
fi

echo "# run_wikisql.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  steps $STEPS  batch $BATCH" \
     " seq $SEQ  threads $THREADS  systems: $SYSTEMS" >&2
echo "# loadavg at start: $(cat /proc/loadavg)" >&2
echo "# run folder: $RUN   results: $OUT" >&2
T0=$(date +%s)

timed() { # name, command...: stdout -> RUN/name.out, stderr + time -v -> RUN/name.err
  local name=$1; shift
  local t=$(date +%s)
  /usr/bin/time -v -o "$RUN/$name.time" "$@" >"$RUN/$name.out" 2>"$RUN/$name.err" || {
    echo "run_wikisql.sh: $name failed, see $RUN/$name.err:" >&2; tail -5 "$RUN/$name.err" >&2
    return 1; }
  echo "## $name: $(( $(date +%s) - t )) s, loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

for sys in $SYSTEMS; do
  echo "## $sys: training $STEPS steps ($(date -u +%H:%M:%S))" >&2
  case $sys in
    loratune)
      # one file with --valid-fraction 0: no validation split, so the run does no validation
      # passes of its own (the common evaluator below is the same code as its validation)
      timed loratune "$LT" train --model "$MODEL" --data "$DATA/train.jsonl" \
        --valid-fraction 0 --out "$RUN/loratune" --method lora --iters "$STEPS" \
        --batch-size $BATCH --max-seq-len $SEQ --pack --lr $LR --lr-schedule constant \
        --weight-decay $WD --grad-clip 0 --lora-rank $RANK --lora-alpha $ALPHA \
        --lora-dropout 0 --lora-targets q,v --seed $SEED --threads "$THREADS" --json \
        --no-track --eval-every 0 --save-every 0 --compute-dtype "$LT_COMPUTE" \
        --device "$LT_DEVICE" ;;
    torch)
      timed torch "$PY" bench/torch_wikisql.py --model "$MODEL" --data "$DATA" \
        --out "$RUN/torch" --steps "$STEPS" --batch $BATCH --seq $SEQ --lr $LR \
        --weight-decay $WD --rank $RANK --alpha $ALPHA --seed $SEED --threads "$THREADS" \
        --eval "$EVAL_OWN" $TORCH_ARGS ;;
    mlx)
      LD_PRELOAD="$OPENBLAS_SO" timed mlx "$MLXPY" bench/mlx_wikisql.py --model "$MODEL" \
        --data "$DATA" --out "$RUN/mlx" --steps "$STEPS" --batch $BATCH --seq $SEQ --lr $LR \
        --weight-decay $WD --rank $RANK --alpha $ALPHA --seed $SEED --eval "$EVAL_OWN" \
        --exclude-pad-target "$MLX_PAD_FIX" ;;
    *) echo "run_wikisql.sh: unknown system '$sys' (loratune, torch, mlx)" >&2; exit 2 ;;
  esac
done

EVALS=$SYSTEMS
[ "$EVAL_BASE" = 1 ] && EVALS="base $EVALS"
for e in $EVALS; do
  ad=()
  [ "$e" != base ] && ad=(--adapter "$RUN/$e")
  [ "$EVAL_BATCHES" != 0 ] && ad+=(--eval-batches "$EVAL_BATCHES")
  timed "eval-$e" "$LT" eval --model "$MODEL" "${ad[@]}" --data "$DATA" --split valid \
    --batch-size $BATCH --max-seq-len $SEQ --pack --threads "$THREADS" --json \
    --compute-dtype f32 --device cpu
done
# loratune's batches, rebuilt from its own tokenization (data check) with the same code the
# torch side trains on: real tokens per step (loratune's JSON counts loss tokens only)
"$LT" data check "$DATA/train.jsonl" --valid-fraction 0 --model "$MODEL" --max-seq-len $SEQ \
  --json --tokens >"$RUN/datacheck.json"
echo "# loadavg at end: $(cat /proc/loadavg)  total $(( $(date +%s) - T0 )) s" >&2

python3 - "$RUN" "$OUT" "$STEPS" "$BATCH" "$SEQ" "$SEED" "$THREADS" "$SYSTEMS" "$EVAL_BASE" <<'EOF'
import json, os, re, sys
sys.path.insert(0, "bench")
from torch_wikisql import permute, epoch_rows, ex_len  # pure Python, no torch import

run, out, steps, batch, seq, seed, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
systems, eval_base = sys.argv[8].split(), sys.argv[9] == "1"

def peak_rss(name):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{run}/{name}.time").read())
    return int(m.group(1)) * 1024 if m else None

def cpu_pct(name):  # CPU s / wall s of the whole process (setup and own eval included)
    m = re.search(r"Percent of CPU this job got: (\d+)%", open(f"{run}/{name}.time").read())
    return int(m.group(1)) if m else None

def common_eval(name):
    try:
        return json.loads(open(f"{run}/eval-{name}.out").read())
    except (OSError, ValueError):
        return {}

rows = []
for s in systems:
    r = {"system": s, "steps": steps, "batch": batch, "seq": seq, "threads": threads}
    if s == "loratune":
        ev = [json.loads(l) for l in open(f"{run}/loratune.out") if l.startswith("{")]
        st = [e for e in ev if e.get("event") == "step"]
        # per-step seconds = loss tokens / tokens_per_sec (its tokens_per_sec counts loss tokens)
        train_s = sum(e["tokens"] / e["tokens_per_sec"] for e in st if e["tokens_per_sec"] > 0)
        dc = json.load(open(f"{run}/datacheck.json"))["splits"]["train"]["examples_detail"]
        exs = [(d["tokens"], d["mask"]) for d in dc]
        def lt_batches():  # src/data/batcher.c's packed batches, epoch after epoch
            epoch = 0
            while True:
                rws = epoch_rows(exs, permute(len(exs), seed, 0xE90C0000 + epoch), seq, True)
                for i in range(0, len(rws), batch):
                    yield rws[i:i + batch]
                epoch += 1
        real = loss = 0
        it = lt_batches()
        for _ in range(steps):
            for row in next(it):
                for i in row:
                    L = ex_len(exs[i], seq)
                    real += L
                    loss += sum(exs[i][1][1:L + 1])
        lt_loss = sum(e["tokens"] for e in st)
        r.update(real_tokens=real, loss_tokens=lt_loss, train_s=train_s,
                 batches_match=(loss == lt_loss), loss_first=st[0]["loss"],
                 loss_last=st[-1]["loss"], loss_mean_last10=sum(e["loss"] for e in st[-10:]) /
                 len(st[-10:]), peak_rss_json=max(e.get("peak_rss_bytes", 0) for e in st))
        r["val_loss_own"] = common_eval("loratune").get("loss")
    else:
        j = json.loads([l for l in open(f"{run}/{s}.out") if l.startswith("{")][-1])
        r.update({k: v for k, v in j.items() if k not in ("system", "losses")})
    r["tokens_per_s"] = r["real_tokens"] / r["train_s"]
    r["peak_rss"] = peak_rss(s)
    r["cpu_pct"] = cpu_pct(s)
    r["val_loss_common"] = common_eval(s).get("loss")
    r["val_tokens_common"] = common_eval(s).get("tokens")
    rows.append(r)
base = common_eval("base") if eval_base else {}
lt = next((r for r in rows if r["system"] == "loratune"), None)
with open(out, "a") as f:
    for r in rows:
        r["ratio_to_loratune"] = lt["tokens_per_s"] / r["tokens_per_s"] if lt else None
        f.write(json.dumps(r) + "\n")
    if base:
        f.write(json.dumps({"system": "base (no adapter)", "val_loss_common": base.get("loss"),
                            "val_tokens_common": base.get("tokens")}) + "\n")

fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"
print(f"| system | steps | real tokens trained | loss tokens | train s | tokens/s | "
      f"loratune / system | peak RSS MiB | CPU % | val loss (loratune eval) | val loss (own) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    print(f"| {r['system']} | {r['steps']} | {r['real_tokens']} | {r['loss_tokens']} | "
          f"{r['train_s']:.0f} | {r['tokens_per_s']:.1f} | {fmt(r['ratio_to_loratune'], 2)}x | "
          f"{fmt(r['peak_rss'] and r['peak_rss'] / 2**20, 0)} | {fmt(r['cpu_pct'], 0)} | "
          f"{fmt(r['val_loss_common'], 4)} | "
          f"{fmt(r.get('val_loss_own'), 4)} |")
if base:
    print(f"| base model (no adapter) | 0 | | | | | | | | {fmt(base.get('loss'), 4)} | |")
if lt is not None:
    print(f"\nloratune's batches rebuilt from its tokenization: loss tokens "
          f"{'match' if lt['batches_match'] else 'DO NOT match'} its step events "
          f"(torch trains on these same batches)")
print(f"results: {out}")
EOF
