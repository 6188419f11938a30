#!/usr/bin/env bash
# run_speed.sh - training-step speed of loratune vs PyTorch eager (transformers + PEFT) and
# mlx-lm's LoRA trainer (mlx[cpu]), in ONE invocation on the same machine, alternating the
# systems per workload so that load changes hit them alike. The machine's fp32 GEMM peak
# (bench_gemm: OpenBLAS sgemm, best of the start and the end of the run) is the denominator of
# the "fraction of GEMM peak" column (model FLOPs per step / s per step / peak). Workloads on the SmolLM2-135M shape (random weights, fp32):
#   (a) LoRA r=8 alpha 16 on q,v   (b) LoRA r=16 alpha 32 on all linear   (c) full fine-tuning
# For each: loratune bench_train_step in each LT_COMPUTE dtype (once per THREADS entry, best
# kept), then torch fp32 (once per TORCH_THREADS entry in one process, best kept), then torch
# with bf16 autocast (first THREADS entry; very slow on CPUs without bf16 instructions:
# TORCH_BF16=0 skips it), then with TORCH_COMPILE=1 the same two under torch.compile. Each
# process: WARMUP warm-up + STEPS timed optimizer steps (compiling happens in the warm-up).
# Prints a table (tokens/s, ratio loratune / torch, peak RSS) and keeps every JSON line.
#
# Environment (defaults in brackets):
#   BATCH [4] SEQ [512] STEPS [2] WARMUP [1] SHAPE [smollm2-135m]
#   THREADS ["2"]  loratune thread counts, e.g. "2,1" (one process each)
#   LT_COMPUTE ["f32"]  loratune --compute-dtype values, e.g. "f32,bf16"
#   TORCH_BF16 [1]   0: skip the bf16-autocast torch runs
#   TORCH_COMPILE [0]  1: also torch.compile'd runs (fp32, and bf16 autocast unless TORCH_BF16=0)
#   TORCH_THREADS ["2,1"]  thread counts tried for torch fp32 (each runs STEPS timed steps)
#   MLX [1]  0: skip mlx-lm;  MLX_BF16 [0]  1: also mlx-lm with a bf16 model
#   MLX_BLAS ["stock,openblas"]  mlx-lm runs: "stock" = the wheel as installed (mlx[cpu] on
#     Linux bundles the reference netlib BLAS, single-threaded), "openblas" = the same with the
#     system OpenBLAS LD_PRELOADed (same numerics, ~9x faster); the best is kept
#   WORKLOADS ["lora-r8-qv lora-r16-all full"]
#   NO_BUILD [0]  1: use the programs already in BUILD as they are
#   MLXPY [.venv/bin/python]
#   BUILD [build-bench]  a Release build folder (configured and built here if needed)
#   PY [.venv-bench/bin/python: tools/setup.sh --bench]  OUTDIR [/tmp/loratune-bench]
# Usage: bench/run_speed.sh            (from the repository root)
#        BATCH=1 SEQ=512 bench/run_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${BATCH:-4} SEQ=${SEQ:-512} STEPS=${STEPS:-2} WARMUP=${WARMUP:-1} THREADS=${THREADS:-2}
SHAPE=${SHAPE:-smollm2-135m} TORCH_BF16=${TORCH_BF16:-1} TORCH_THREADS=${TORCH_THREADS:-2,1}
BUILD=${BUILD:-build-bench} PY=${PY:-.venv-bench/bin/python}
LT_COMPUTE=${LT_COMPUTE:-f32} TORCH_COMPILE=${TORCH_COMPILE:-0}
MLX=${MLX:-1} MLX_BF16=${MLX_BF16:-0} MLXPY=${MLXPY:-.venv/bin/python}
MLX_BLAS=${MLX_BLAS:-stock,openblas} WORKLOADS=${WORKLOADS:-lora-r8-qv lora-r16-all full}
OPENBLAS_SO=$(ldconfig -p | awk '/libopenblas\.so\.0 / && !p {p = $NF} END {print p}')
OUTDIR=${OUTDIR:-/tmp/loratune-bench}
mkdir -p "$OUTDIR"
OUT="$OUTDIR/speed-$(date -u +%Y%m%dT%H%M%S).jsonl"

if [ ! -x "$BUILD/bench_train_step" ] || [ ! -x "$BUILD/bench_gemm" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
[ "${NO_BUILD:-0}" = 1 ] || cmake --build "$BUILD" -j2 --target bench_train_step bench_gemm >/dev/null

echo "# run_speed.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  shape $SHAPE  batch $BATCH  seq $SEQ" \
     " warmup $WARMUP  steps $STEPS" >&2
echo "# loadavg at start: $(cat /proc/loadavg)" >&2
echo "# results: $OUT" >&2

run_workload() { # name, loratune args, torch args
  local name=$1 lt_args=$2 th_args=$3
  local th cd
  for cd in ${LT_COMPUTE//,/ }; do
    for th in ${THREADS//,/ }; do
      echo "## $name: loratune $cd, $th threads" >&2
      "$BUILD/bench_train_step" --shape "$SHAPE" --batch "$BATCH" --seq "$SEQ" --warmup "$WARMUP" \
        --steps "$STEPS" --threads "$th" --compute-dtype "$cd" $lt_args \
        | sed "s/^{/{\"workload\":\"$name\",/" >>"$OUT"
    done
  done
  echo "## $name: torch fp32" >&2
  "$PY" bench/torch_train_step.py --shape "$SHAPE" --batch "$BATCH" --seq "$SEQ" \
    --warmup "$WARMUP" --steps "$STEPS" --threads "$TORCH_THREADS" $th_args \
    | sed "s/^{/{\"workload\": \"$name\", /" >>"$OUT"
  if [ "$TORCH_BF16" = 1 ]; then
    echo "## $name: torch bf16 autocast" >&2
    "$PY" bench/torch_train_step.py --shape "$SHAPE" --batch "$BATCH" --seq "$SEQ" \
      --warmup "$WARMUP" --steps "$STEPS" --threads "${THREADS%%,*}" --autocast bf16 $th_args \
      | sed "s/^{/{\"workload\": \"$name\", /" >>"$OUT"
  fi
  if [ "$TORCH_COMPILE" = 1 ]; then
    local ac
    for ac in none bf16; do
      [ "$ac" = bf16 ] && [ "$TORCH_BF16" != 1 ] && continue
      echo "## $name: torch.compile, autocast $ac" >&2
      "$PY" bench/torch_train_step.py --shape "$SHAPE" --batch "$BATCH" --seq "$SEQ" \
        --warmup "$WARMUP" --steps "$STEPS" --threads "${THREADS%%,*}" --autocast "$ac" --compile \
        $th_args | sed "s/^{/{\"workload\": \"$name\", /" >>"$OUT"
    done
  fi
  if [ "$MLX" = 1 ]; then
    local dts=f32
    [ "$MLX_BF16" = 1 ] && dts="f32 bf16"
    local bl pre
    for dt in $dts; do
      for bl in ${MLX_BLAS//,/ }; do
        pre=""
        [ "$bl" = openblas ] && pre="$OPENBLAS_SO"
        echo "## $name: mlx-lm $dt, BLAS $bl" >&2
        LD_PRELOAD="$pre" "$MLXPY" bench/mlx_train_step.py --shape "$SHAPE" --batch "$BATCH" \
          --seq "$SEQ" --warmup "$WARMUP" --steps "$STEPS" --dtype "$dt" $th_args \
          | sed "s/^{/{\"workload\": \"$name\", \"mlx_blas\": \"$bl\", /" >>"$OUT"
      done
    done
  fi
}

T0=$(date +%s)
"$BUILD/bench_gemm" --threads "${THREADS%%,*}" >>"$OUT"
for w in $WORKLOADS; do
  case $w in
    lora-r8-qv) a="--method lora --rank 8 --targets q,v" ;;
    lora-r16-all) a="--method lora --rank 16 --targets all" ;;
    full) a="--method full" ;;
    *) echo "run_speed.sh: unknown workload '$w'" >&2; exit 2 ;;
  esac
  run_workload "$w" "$a" "$a"
done
"$BUILD/bench_gemm" --threads "${THREADS%%,*}" >>"$OUT"
echo "# loadavg at end: $(cat /proc/loadavg)  total $(( $(date +%s) - T0 )) s" >&2

python3 bench/speed_table.py "$OUT"
