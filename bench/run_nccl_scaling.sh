#!/usr/bin/env bash
# run_nccl_scaling.sh - multi-GPU data parallelism over NCCL (docs/SCALE_OUT.md, "Multi-GPU
# over NCCL"): the same global batch on 1, 2, ... GPUs of one machine, one `loratune train`
# process per GPU (RANK / WORLD_SIZE / LOCAL_RANK, --dist-init tcp:127.0.0.1:PORT), and per
# rank count: rank 0's tokens/s over the steps after the first (tokens / wall time of each
# step, as its step events say), the speed-up against 1 GPU, and the largest relative
# difference of the step losses from 1 GPU's (equal within rounding, not bit for bit).
# Not run yet: written for the first multi-GPU machine (one GPU runs only NS=1).
#
# Environment (defaults in brackets): NS [1 2 4 8, up to the GPUs present]  STEPS [20]
#   LT [build-cuda/loratune]  MODEL [tests/fixtures/stories260K/stories260K.gguf: a smoke run;
#   give a real model for speed]  DATA [tests/fixtures/datasets/wikisql-mlx]  BATCH [16]
#   SEQ [256]  REDUCE [bf16]  OUTDIR [/tmp/lt-nccl-bench]  EXTRA [more train options;
#   EXTRA='--zero 1': the same with ZeRO-1]
#   LT_NCCL_LIB: the folder of libnccl.so.2 when the loader and site-packages lack it
# Usage: bench/run_nccl_scaling.sh     NS="1 2" MODEL=path/to/model bench/run_nccl_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LT=${LT:-build-cuda/loratune} STEPS=${STEPS:-20} BATCH=${BATCH:-16} SEQ=${SEQ:-256}
MODEL=${MODEL:-tests/fixtures/stories260K/stories260K.gguf}
DATA=${DATA:-tests/fixtures/datasets/wikisql-mlx} REDUCE=${REDUCE:-bf16}
OUTDIR=${OUTDIR:-/tmp/lt-nccl-bench} EXTRA=${EXTRA:-}
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | wc -l)
NS=${NS:-$(for n in 1 2 4 8; do if [ "$n" -le "$GPUS" ]; then echo -n "$n "; fi; done)}
export LORATUNE_NO_TRACK=1 NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
RUN=$OUTDIR/run-$(date -u +%Y%m%dT%H%M%S)
mkdir -p "$RUN"
echo "GPUs: $GPUS; rank counts: $NS; $MODEL, batch $BATCH x $SEQ, $STEPS steps, reduce $REDUCE"

for n in $NS; do
  port=$((29500 + RANDOM % 1000))
  pids=()
  for ((r = 0; r < n; r++)); do
    # shellcheck disable=SC2086
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r "$LT" train --model "$MODEL" --data "$DATA" \
      --out "$RUN/np$n" --overwrite --device cuda --iters "$STEPS" --batch-size "$BATCH" \
      --max-seq-len "$SEQ" --pack --lora-dropout 0 --eval-every 0 --json \
      --dist-init "tcp:127.0.0.1:$port" --dist-reduce "$REDUCE" $EXTRA \
      > "$RUN/np$n.rank$r.jsonl" 2> "$RUN/np$n.rank$r.err" &
    pids+=($!)
  done
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  [ "$rc" = 0 ] || { echo "np $n: a rank failed (exit $rc): $RUN/np$n.rank*.err" >&2; tail -3 "$RUN"/np$n.rank*.err >&2; }
done

python3 - "$RUN" $NS <<'EOF'
import json, sys
run, ns = sys.argv[1], [int(x) for x in sys.argv[2:]]
res = {}
for n in ns:
    try:
        with open(f"{run}/np{n}.rank0.jsonl") as f:
            steps = [e for e in map(json.loads, filter(str.strip, f)) if e.get("event") == "step"]
    except (OSError, ValueError):
        steps = []
    timed = steps[1:]
    secs = sum(e["tokens"] / e["tokens_per_sec"] for e in timed if e["tokens_per_sec"] > 0)
    toks = sum(e["tokens"] for e in timed)
    res[n] = (toks / secs if secs else 0.0, [e["loss"] for e in steps])
base = res.get(1)
print(f"{'ranks':>5} {'tokens/s':>10} {'speed-up':>8} {'steps':>5} {'max rel. loss diff vs 1':>24}")
for n in ns:
    tps, losses = res[n]
    up = tps / base[0] if base and base[0] else float("nan")
    diff = (max(abs(a - b) / abs(b) for a, b in zip(losses, base[1]))
            if base and losses and len(losses) == len(base[1]) else float("nan"))
    print(f"{n:>5} {tps:>10.0f} {up:>8.2f} {len(losses):>5} {diff:>24.3g}")
EOF
echo "outputs: $RUN"
