#!/usr/bin/env bash
# run_plan_vs_rss_mpi.sh - the memory plan of a data-parallel run against each rank's measured
# peak RSS (docs/SCALE_OUT.md): `mpirun -np 2 loratune train`, one thread per rank, every rank
# under /usr/bin/time (its maximum resident set). The plan is `loratune plan --ranks 2` (the
# trainer's buffers, the model, the data-parallel exchange, the overhead estimate); the run's
# start event adds what it reserves besides the plan (tokenizer, data, output writing) to give
# planned_peak_bytes, which a --memory-budget is checked against. Two runs:
#   lora: the WikiSQL LoRA workload of bench/run_mpi_scaling.sh (SmolLM2-135M-Instruct fused to
#         fp32, r8 q,v, batch 4 x 256 packed): an exchange of a few MB;
#   full: full fine-tuning of stories260K-hf, batch 4 x 64, grad-accum 32: the exchange (192
#         row gradients of the whole model, 191 MiB) is most of each rank's memory;
#   fullsmol: full fine-tuning of SmolLM2-135M-Instruct (fp32), batch 2 x 256: one row a rank,
#         its gradient, the two received and their sum, 2.0 GiB of a 4.6 GiB plan per rank.
# Environment (defaults in brackets): STEPS [3]  LT [build/loratune]  MPIRUN [mpirun]
#   GGUF [models/SmolLM2-135M-Instruct.Q4_1.gguf]  OUTDIR [/tmp/lt-mpi-bench]
#   FIXTURES [$LT_FIXTURES or tests/fixtures]  MPI_ARGS [--oversubscribe]  RUNS ["lora full fullsmol"]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-3} LT=${LT:-build/loratune} MPIRUN=${MPIRUN:-mpirun}
GGUF=${GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
FIXTURES=${FIXTURES:-${LT_FIXTURES:-tests/fixtures}}
OUTDIR=${OUTDIR:-/tmp/lt-mpi-bench} MPI_ARGS=${MPI_ARGS:---oversubscribe} RUNS=${RUNS:-lora full fullsmol}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 LORATUNE_NO_TRACK=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # containers run as root
SMOL=$OUTDIR/smollm2-135m-instruct-f32
WIKI=$FIXTURES/datasets/wikisql-mlx
RUN=$OUTDIR/plan-rss-$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$RUN"
if [[ " $RUNS " == *" lora "* || " $RUNS " == *" fullsmol "* ]] && [ ! -f "$SMOL/model.safetensors" ]; then
  "$LT" fuse --model "$GGUF" --out "$SMOL" --dtype f32 >&2
fi
echo "# run_plan_vs_rss_mpi.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC') steps $STEPS;" \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for run in $RUNS; do
  case $run in
    lora) shape=(--model "$SMOL" --method lora --lora-rank 8 --lora-targets q,v --batch-size 4
                 --max-seq-len 256 --grad-accum 1 --compute-dtype f32) ;;
    full) shape=(--model "$FIXTURES/stories260K-hf" --method full --batch-size 4
                 --max-seq-len 64 --grad-accum 32) ;;
    fullsmol) shape=(--model "$SMOL" --method full --batch-size 2 --max-seq-len 256
                     --grad-accum 1) ;;
  esac
  "$LT" plan "${shape[@]}" --ranks 2 --device cpu --json > "$RUN/$run.plan.json"
  timed=(sh -c '/usr/bin/time -f "%M" -o "$0.${OMPI_COMM_WORLD_RANK:-0}.maxrss" "$@"'
         "$RUN/$run" "$LT")
  echo "## $run: $MPIRUN -np 2 ... train ${shape[*]}" >&2
  nice "$MPIRUN" -np 2 $MPI_ARGS "${timed[@]}" train "${shape[@]}" --data "$WIKI" --pack \
    --iters "$STEPS" --threads 1 --device cpu --memory-budget 20G --eval-every 0 \
    --save-every 0 --no-track --json --out "$RUN/out-$run" > "$RUN/$run.jsonl" 2> "$RUN/$run.err"
done
echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$RUN" $RUNS <<'EOF'
import json, sys
run, names = sys.argv[1], sys.argv[2:]
M = lambda b: b / 2**20
print("| run | plan: trainer + model + exchange + overhead = peak MiB | + reserve = planned MiB "
      "| rank 0 / rank 1 peak RSS MiB | measured / plan peak | measured / planned |")
print("|---|---|---|---|---|---|")
for n in names:
    p = json.load(open(f"{run}/{n}.plan.json"))
    evs = [json.loads(l) for l in open(f"{run}/{n}.jsonl") if l.startswith("{")]
    st = next(e for e in evs if e.get("event") == "start")
    assert st["exchange_bytes"] == p["exchange_bytes"], (st["exchange_bytes"], p["exchange_bytes"])
    rss = [int(open(f"{run}/{n}.{r}.maxrss").read().split()[-1]) * 1024 for r in (0, 1)]
    held = sum(p["bytes"].values())  # the trainer's buffers and the model's weights (bytes[])
    print(f"| {n} | {M(held):.1f} + {M(p['exchange_bytes']):.1f} + {M(p['overhead_bytes']):.1f}"
          f" = {M(p['peak_bytes']):.1f} | + {M(st['reserved_bytes']):.1f} = "
          f"{M(st['planned_peak_bytes']):.1f} | {M(rss[0]):.1f} / {M(rss[1]):.1f} | "
          f"{max(rss) / p['peak_bytes']:.3f} | {max(rss) / st['planned_peak_bytes']:.3f} |")
EOF
