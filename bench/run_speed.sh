#!/usr/bin/env bash
# run_speed.sh - training-step speed of loratune vs PyTorch eager (transformers + PEFT), in ONE
# invocation on the same machine, alternating the two per workload so that load changes hit
# both alike. Workloads on the SmolLM2-135M shape (random weights, fp32):
#   (a) LoRA r=8 alpha 16 on q,v   (b) LoRA r=16 alpha 32 on all linear   (c) full fine-tuning
# For each: loratune bench_train_step (once per THREADS entry, best kept), then torch fp32 (once
# per TORCH_THREADS entry in one process, best kept), then torch with bf16 autocast (first
# THREADS entry; very slow on CPUs without bf16 instructions: TORCH_BF16=0 skips it). Each process: WARMUP warm-up + STEPS timed optimizer steps.
# Prints a table (tokens/s, ratio loratune / torch, peak RSS) and keeps every JSON line.
#
# Environment (defaults in brackets):
#   BATCH [4] SEQ [512] STEPS [2] WARMUP [1] SHAPE [smollm2-135m]
#   THREADS ["2"]  loratune thread counts, e.g. "2,1" (one process each)
#   TORCH_BF16 [1]   0: skip the bf16-autocast torch runs
#   TORCH_THREADS ["2,1"]  thread counts tried for torch fp32 (each runs STEPS timed steps)
#   BUILD [build-bench]  a Release build folder (configured and built here if needed)
#   PY [.venv-golden/bin/python]  OUTDIR [/tmp/loratune-bench]
# Usage: bench/run_speed.sh            (from the repository root)
#        BATCH=1 SEQ=512 bench/run_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${BATCH:-4} SEQ=${SEQ:-512} STEPS=${STEPS:-2} WARMUP=${WARMUP:-1} THREADS=${THREADS:-2}
SHAPE=${SHAPE:-smollm2-135m} TORCH_BF16=${TORCH_BF16:-1} TORCH_THREADS=${TORCH_THREADS:-2,1}
BUILD=${BUILD:-build-bench} PY=${PY:-.venv-golden/bin/python}
OUTDIR=${OUTDIR:-/tmp/loratune-bench}
mkdir -p "$OUTDIR"
OUT="$OUTDIR/speed-$(date -u +%Y%m%dT%H%M%S).jsonl"

if [ ! -x "$BUILD/bench_train_step" ] || [ ! -x "$BUILD/loratune" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 --target bench_train_step loratune >/dev/null

echo "# run_speed.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  shape $SHAPE  batch $BATCH  seq $SEQ" \
     " warmup $WARMUP  steps $STEPS" >&2
echo "# loadavg at start: $(cat /proc/loadavg)" >&2
echo "# results: $OUT" >&2

run_workload() { # name, loratune args, torch args
  local name=$1 lt_args=$2 th_args=$3
  local th
  for th in ${THREADS//,/ }; do
    echo "## $name: loratune, $th threads" >&2
    "$BUILD/bench_train_step" --shape "$SHAPE" --batch "$BATCH" --seq "$SEQ" --warmup "$WARMUP" \
      --steps "$STEPS" --threads "$th" $lt_args | sed "s/^{/{\"workload\":\"$name\",/" >>"$OUT"
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
}

T0=$(date +%s)
run_workload "lora-r8-qv" "--method lora --rank 8 --targets q,v" "--method lora --rank 8 --targets q,v"
run_workload "lora-r16-all" "--method lora --rank 16 --targets all" "--method lora --rank 16 --targets all"
run_workload "full" "--method full" "--method full"
echo "# loadavg at end: $(cat /proc/loadavg)  total $(( $(date +%s) - T0 )) s" >&2

python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def mib(b): return f"{b / 2**20:.0f}"
first = rows[0]
print(f"shape {first['shape']}, batch {first['batch']}, seq {first['seq']}, "
      f"{first['warmup']} warm-up + {first['steps']} timed steps per process, fp32 weights")
print("| workload | loratune tok/s (thr) | torch fp32 tok/s (thr) | torch bf16-autocast tok/s | "
      "loratune / torch fp32 | loratune / best torch | peak RSS MiB: loratune (plan) | "
      "torch fp32 | torch bf16 |")
print("|---|---|---|---|---|---|---|---|---|")
for w in dict.fromkeys(r["workload"] for r in rows):
    # the fastest process of each kind (loratune may have run once per thread count)
    pick = lambda bench, ac=None: max((r for r in rows if r["workload"] == w and
                                       r["bench"] == bench and r.get("autocast") == ac),
                                      key=lambda r: r["tokens_per_s"], default=None)
    lt, tf, tb = pick("loratune"), pick("torch", "none"), pick("torch", "bf16")
    tps = lambda x: f"{x['tokens_per_s']:.1f}" if x else "-"
    best = max([t for t in (tf, tb) if t], key=lambda t: t["tokens_per_s"], default=None)
    ratio = lambda a, b: f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}" if a and b else "-"
    print(f"| {w} | {tps(lt)} ({lt['threads'] if lt else '-'}) | {tps(tf)} ({tf['threads'] if tf else '-'}) | {tps(tb)} | "
          f"{ratio(lt, tf)} | {ratio(lt, best)} | "
          f"{mib(lt['peak_measured']) + ' (' + mib(lt['peak_predicted']) + ')' if lt else '-'} | "
          f"{mib(tf['peak_rss']) if tf else '-'} | {mib(tb['peak_rss']) if tb else '-'} |")
print()
print("cpu_util (CPU seconds / wall seconds over the timed steps; 2.0 = both cores busy) and "
      "loadavg at the end of each process:")
for r in rows:
    tag = r["bench"] + ("" if r["bench"] == "loratune" else f" {r['autocast']}") + f" thr {r['threads']}"
    print(f"  {r['workload']:14s} {tag:24s} s/step {r['s_per_step']:8.2f}  "
          f"cpu_util {r['cpu_util']:.2f}  loadavg {r['loadavg']:.2f}"
          + (f"  GFLOP/s {r['gflops_per_s']:.1f}" if "gflops_per_s" in r else ""))
EOF
