#!/usr/bin/env bash
# demo.sh LORATUNE MODEL [DATA] - what `make demo` shows: LoRA fine-tuning of
# SmolLM2-135M-Instruct on the mlx-lm WikiSQL example data (text-to-SQL), on the CPU:
# validation loss and a test question answered (greedy) before and after training.
# Sized to finish well under 15 minutes on a 2-core machine (docs/TRAIN_CLI.md, "The demo").
# Environment: DEMO_OUT (output folder, default build/demo-run), DEMO_ITERS (default 40).
set -euo pipefail
lt=$1
model=$2
data=${3:-tests/fixtures/datasets/wikisql-mlx}
out=${DEMO_OUT:-$(dirname "$lt")/demo-run}
iters=${DEMO_ITERS:-40}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t_start=$SECONDS

say "loratune info"
"$lt" info

# A question from the test split (never trained on), cut after "A:" (no trailing space: in the
# data the space belongs to the next token, " SELECT").
prompt=$'table: 1-10015132-16\ncolumns: Player, No., Nationality, Position, Years in Toronto, School/Club Team\nQ: What is terrence ross\' nationality\nA:'
expected="SELECT Nationality FROM 1-10015132-16 WHERE Player = 'Terrence Ross'"
ask() { "$lt" generate --model "$model" "$@" --prompt "$prompt" --temp 0 --max-tokens 56 --quiet; }

say "before training: the base model answers (greedy)"
printf '%s' "$prompt"
before=$(ask)
printf '%s\n' "$before"

say "loratune train (LoRA r=8 on q,k,v,o,gate,up,down of the last 8 layers, $iters steps)"
rm -rf "$out"
# Packed rows of 256 tokens, 4 per step; validation on the first 4 batches of valid.jsonl
# before and after; cosine schedule with warmup. See docs/TRAIN_CLI.md for every option.
"$lt" train --model "$model" --data "$data" --out "$out" \
  --iters "$iters" --batch-size 4 --max-seq-len 256 --pack \
  --lora-rank 8 --lora-alpha 16 --lora-targets all --lora-layers 8 \
  --lr 2e-3 --lr-schedule cosine --warmup 4 \
  --eval-every 0 --eval-batches 4 --save-every 20 --seed 42 | tee "$out.log"

say "after training: the same question with the adapter (generate --adapter $out)"
printf '%s' "$prompt"
after=$(ask --adapter "$out")
printf '%s\n' "$after"

say "summary"
val_before=$(grep -m1 '^eval @ step 0:' "$out.log" | sed 's/.*val_loss \([0-9.]*\).*/\1/')
val_after=$(grep '^eval @ step' "$out.log" | tail -1 | sed 's/.*val_loss \([0-9.]*\).*/\1/')
echo "validation loss (first 4 batches of valid.jsonl): before $val_before, after $val_after"
echo "expected: $expected"
oneline() { printf '%s' "$1" | tr '\n' ' ' | cut -c1-120; }
echo "before:   $(oneline "$before")"
echo "after:    $(oneline "$after")"
echo "outputs: $out (PEFT adapter, mlx-lm/, adapter.gguf, checkpoints/, run_config.yaml)"
echo "demo time: $((SECONDS - t_start)) s"
