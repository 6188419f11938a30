#!/usr/bin/env bash
# run_cuda_table.sh - issue 14's table on one GPU, loratune beside PyTorch + PEFT (eager and
# torch.compile, bf16 autocast) in ONE invocation, row by row:
#   a: SmolLM2-135M shape LoRA q,v B4 x T512; Llama-3.2-1B shape full FT and LoRA r16 all-linear
#      B8 x T2048
#   b: Llama-3-8B shape LoRA r16 all-linear with checkpointing B4 x T2048 (torch: bf16 weights,
#      eager), QLoRA (NF4) B2 x T2048 (loratune only)
# GPU memory: loratune's cudaMemGetInfo "used" during the steps (device_used_steps, context
# included), torch's max_memory_allocated / reserved. Raw JSON lines into OUTDIR.
# Environment: BUILD [build] (a CUDA build), PY [python3: torch, transformers, peft],
# OUTDIR [/tmp/loratune-cuda-table]. Usage: bench/run_cuda_table.sh [a|b|ab]
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build} PY=${PY:-python3} OUTDIR=${OUTDIR:-/tmp/loratune-cuda-table}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
summ() { "$PY" -c "import json,sys
for l in open(sys.argv[1]):
  if l.startswith('{'):
    d=json.loads(l)
    m=d.get('device_used_steps') or d.get('gpu_peak_allocated') or 0
    print(sys.argv[2], 'tokens/s', round(d.get('tokens_per_s', 0)), 'GiB', round(m / 2**30, 2),
          's/step', d.get('s_per_step'))" "$1" "$2" 2>&1 | tail -1; }
lt() { n=$1; shift
  timeout 600 "$BUILD/bench_train_step" --device cuda --compute-dtype bf16 --warmup 1 --steps 3 \
    "$@" > "$OUTDIR/lt-$n.json" 2> "$OUTDIR/lt-$n.err"; summ "$OUTDIR/lt-$n.json" "loratune $n"; }
th() { n=$1; shift
  timeout 600 "$PY" bench/torch_train_step.py --device cuda --autocast bf16 --warmup 2 --steps 3 \
    "$@" > "$OUTDIR/th-$n.json" 2> "$OUTDIR/th-$n.err"; summ "$OUTDIR/th-$n.json" "torch $n"; }
part=${1:-ab}
if [ "${part#*a}" != "$part" ]; then
  S="--shape smollm2-135m --batch 4 --seq 512 --method lora --targets q,v --rank 16"
  S="$S --steps 10 --warmup 3"
  lt smol $S; th smol $S; th smol-compile $S --compile
  F="--shape llama3.2-1b --batch 8 --seq 2048 --method full"
  lt full1b $F; th full1b $F; th full1b-compile $F --compile
  L="--shape llama3.2-1b --batch 8 --seq 2048 --method lora --targets all --rank 16"
  lt lora1b $L; th lora1b $L; th lora1b-compile $L --compile
fi
if [ "${part#*b}" != "$part" ]; then
  E="--shape llama3-8b --batch 4 --seq 2048 --method lora --targets all --rank 16 --grad-checkpoint"
  lt lora8b $E --steps 2; th lora8b $E --steps 2 --weights-dtype bf16
  lt qlora8b --shape llama3-8b --batch 2 --seq 2048 --method qlora --targets all --rank 16 \
    --grad-checkpoint --steps 2
fi
