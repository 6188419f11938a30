#!/usr/bin/env bash
# run_cuda_speed.sh - training-step speed on one GPU: loratune (bench_train_step --device cuda,
# fp32 and bf16 compute) against PyTorch + PEFT (bench/torch_train_step.py --device cuda, fp32
# and bf16 autocast), in ONE invocation, each workload's systems in turn. GPU memory: the peak of
# nvidia-smi's "used" sampled every 50 ms while each process runs (CUDA context included).
# Environment: BUILD [build] (a CUDA build with bench_train_step), PY [python3: torch,
# transformers, peft], BATCH [4] SEQ [512] STEPS [5] OUTDIR [/tmp/loratune-cuda-bench]
# Usage: bench/run_cuda_speed.sh         (from the repository root, on a machine with a GPU)
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build} PY=${PY:-python3} BATCH=${BATCH:-4} SEQ=${SEQ:-512} STEPS=${STEPS:-5}
OUTDIR=${OUTDIR:-/tmp/loratune-cuda-bench}
mkdir -p "$OUTDIR"
nvidia-smi -L; date -u
gpumem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$OUTDIR/mem_$1.txt" & MP=$!; }
gpustop() { kill "$MP"; wait "$MP" 2>/dev/null; sort -n "$OUTDIR/mem_$1.txt" | tail -1; }
printf "%-6s %-8s %-6s %12s %10s\n" workload system dtype tokens/s gpu_MiB
for w in "qv|--method lora --targets q,v --rank 8" "all|--method lora --targets all --rank 16" "full|--method full"; do
  n=${w%%|*}; a=${w#*|}
  for c in f32 bf16; do
    gpumem "lt-$n-$c"
    "$BUILD/bench_train_step" --shape smollm2-135m --batch "$BATCH" --seq "$SEQ" --warmup 1 \
      --steps "$STEPS" --device cuda --compute-dtype "$c" $a > "$OUTDIR/lt-$n-$c.json" 2>/dev/null
    m=$(gpustop "lt-$n-$c")
    printf "%-6s %-8s %-6s %12s %10s\n" "$n" loratune "$c" \
      "$($PY -c "import json; print(json.load(open('$OUTDIR/lt-$n-$c.json'))['tokens_per_s'])" 2>/dev/null)" "$m"
  done
  ta=${a/--method lora /}
  for ac in none bf16; do
    gpumem "th-$n-$ac"
    "$PY" bench/torch_train_step.py --device cuda --shape smollm2-135m --batch "$BATCH" \
      --seq "$SEQ" --warmup 2 --steps "$STEPS" --autocast "$ac" $ta > "$OUTDIR/th-$n-$ac.json" 2>/dev/null
    m=$(gpustop "th-$n-$ac")
    printf "%-6s %-8s %-6s %12s %10s\n" "$n" torch "$ac" \
      "$($PY -c "import json; print(json.load(open('$OUTDIR/th-$n-$ac.json'))['tokens_per_s'])" 2>/dev/null)" "$m"
  done
done
