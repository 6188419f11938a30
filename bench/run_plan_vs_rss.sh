#!/usr/bin/env bash
# run_plan_vs_rss.sh - checks lt_train_plan's predicted peak against the measured peak RSS over
# a grid: methods lora (r=8 q,v) / dora (r=8 q,v) / full x gradient checkpointing off/on x
# batch/seq sizes, on the SmolLM2-135M shape and on the "small" shape (~10M params). Every
# config is its own bench_train_step process (so each peak RSS is that config's alone) running
# WARMUP warm-up + STEPS optimizer steps. Prints a table and max |measured / predicted - 1|;
# the issue's target is 10%.
#
# "unexplained" = measured peak - (the lt_model's fp32 weights + everything lt_trainer_create
# allocates), i.e. what the plan's constant overhead term (plan.overhead) has to cover: the
# binary and libraries (rss_start), OpenBLAS/OpenMP buffers and thread stacks, malloc slack.
#
# Environment: STEPS [1] WARMUP [0] THREADS [2] BUILD [build-bench] OUTDIR [/tmp/loratune-bench]
#   SIZES_135M ["1x128 2x512"]  SIZES_SMALL ["1x128 4x512 8x1024"]  (BATCHxSEQ)
#   METHODS ["lora dora full"]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-1} WARMUP=${WARMUP:-0} THREADS=${THREADS:-2} BUILD=${BUILD:-build-bench}
OUTDIR=${OUTDIR:-/tmp/loratune-bench}
SIZES_135M=${SIZES_135M-1x128 2x512} SIZES_SMALL=${SIZES_SMALL-1x128 4x512 8x1024}
METHODS=${METHODS-lora dora full}
mkdir -p "$OUTDIR"
OUT="$OUTDIR/plan-vs-rss-$(date -u +%Y%m%dT%H%M%S).jsonl"
if [ ! -x "$BUILD/bench_train_step" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 --target bench_train_step >/dev/null
echo "# run_plan_vs_rss.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC'); loadavg $(cat /proc/loadavg)" >&2
echo "# results: $OUT" >&2

for shape in small smollm2-135m; do
  if [ "$shape" = small ]; then sizes=$SIZES_SMALL; else sizes=$SIZES_135M; fi
  for bt in $sizes; do
    b=${bt%x*} t=${bt#*x}
    for m in $METHODS; do
      for ck in 0 1; do
        args=(--shape "$shape" --method "$m" --batch "$b" --seq "$t" --steps "$STEPS"
              --warmup "$WARMUP" --threads "$THREADS")
        [ "$m" != full ] && args+=(--rank 8 --targets q,v)
        [ "$ck" = 1 ] && args+=(--grad-checkpoint)
        echo "## ${args[*]}" >&2
        "$BUILD/bench_train_step" "${args[@]}" 2>/dev/null >>"$OUT" ||
          echo "   FAILED: ${args[*]}" >&2
      done
    done
  done
done
echo "# loadavg at end: $(cat /proc/loadavg)" >&2

python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
M = lambda b: b / 2**20
print("| shape | method | ckpt | B x T | plan: weights(model) + alloc (act / ws) + overhead = peak MiB "
      "| measured peak MiB | measured / predicted | unexplained MiB | rss at start MiB | s/step |")
print("|---|---|---|---|---|---|---|---|---|---|")
worst = 0.0
for r in rows:
    p = r["plan"]
    ratio = r["peak_measured"] / r["peak_predicted"]
    worst = max(worst, abs(ratio - 1))
    unexpl = r["peak_measured"] - p["model_bytes"] - p["alloc_total"]
    print(f"| {r['shape']} | {r['method']} | {r['grad_checkpoint']} | {r['batch']} x {r['seq']} | "
          f"{M(p['model_bytes']):.0f} + {M(p['alloc_total']):.1f} ({M(p['activations']):.1f} / "
          f"{M(p['workspace']):.1f}) + {M(p['overhead']):.0f} = {M(p['peak']):.1f} | "
          f"{M(r['peak_measured']):.1f} | {ratio:.3f} | {M(unexpl):.1f} | "
          f"{M(r['rss_start']):.1f} | {r['s_per_step']:.2f} |")
print(f"\nmax |measured/predicted - 1| = {worst:.3f} over {len(rows)} configs (target <= 0.10)")
big = [r for r in rows if r["shape"] != "small"]
if big:
    w = max(abs(r["peak_measured"] / r["peak_predicted"] - 1) for r in big)
    print(f"max |measured/predicted - 1| on {big[0]['shape']} alone = {w:.3f}")
EOF
