#!/usr/bin/env bash
# tune_pruning.sh - `loratune tune` with successive-halving pruning on and off, same sampler and
# seed, 16 trials of 90 steps on stories260K + the MLX WikiSQL data (the tests' fixtures), one
# thread. Prints, per mode, the optimizer steps spent, the trials' wall time, the best final
# validation loss and the trial states. Usage: bench/tune_pruning.sh [build/loratune] [WORKDIR]
set -euo pipefail
L=${1:-build/loratune}
W=${2:-$(mktemp -d)}
mkdir -p "$W"
F=$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures
for mode in prune noprune; do
  extra=""
  [ "$mode" = noprune ] && extra="--no-prune"
  /usr/bin/time -f "$mode: %e s wall, %M KB peak RSS" "$L" tune --model "$F/stories260K-hf" \
    --data "$F/datasets/wikisql-mlx" --study "$W/$mode" --trials 16 --iters 90 --batch-size 4 \
    --eval-batches 8 --max-seq-len 128 --threads 1 --no-track $extra > "$W/$mode.log"
done
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
for m in ("prune", "noprune"):
    s = json.load(open(f"{w}/{m}/study.json"))
    tj = [json.load(open(f"{w}/{m}/trials/%04d/trial.json" % t["trial"])) for t in s["trials"]]
    best = min(t["value"] for t in s["trials"] if t["state"] == "complete")
    print(f"{m:8s} steps {sum(t['steps'] for t in tj):5d}  trial time {sum(t['time_s'] for t in tj):6.1f} s"
          f"  best val_loss {best:.5f}  states {''.join(t['state'][0] for t in s['trials'])}")
PY
