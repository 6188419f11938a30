#!/usr/bin/env bash
# run_mpi_scaling.sh - issue 19's CPU goal: data-parallel `loratune train` under mpirun, -np 2
# with one thread each against -np 1 with one thread, on the WikiSQL LoRA workload of
# bench/run_wikisql.sh (SmolLM2-135M-Instruct in fp32, LoRA r=8 alpha=16 on q,v, dropout 0,
# seq 256, batch 4 packed, AdamW lr 1e-4 constant, no clipping, seed 0): the same global batch
# (4 rows; with 2 ranks each computes 2 of them). Also the plain process (no mpirun, one
# thread), which sums rows inside its products rather than row by row.
# Per run: training seconds = sum over steps of tokens / tokens_per_sec (rank 0's wall time of
# each step: its rows, the exchange, AdamW), without step 1 (warm-up); tokens/s = loss tokens of
# those steps / that time. The runs go in the order ROUNDS x (np2, np1, plain) so that load
# from other users of the machine falls on all of them; the load average is printed per run.
# Losses: -np 2 and -np 1 must be equal bit for bit (printed).
# CPU seconds: every process (each rank) runs under /usr/bin/time (user + sys, whole process:
# loading included). On a loaded shared machine the wall-clock ratio says little; the ratio of
# -np 1's CPU seconds to the busier -np 2 rank's is what an idle machine with a core per rank
# would approach (conservative: the load / tokenize time, the same in both, is in it; a rank
# waiting in MPI_Allgather polls, so its wait counts as CPU too). Each round also runs every
# system for 1 step: (CPU of STEPS steps - CPU of 1 step) / (STEPS - 1) is the CPU seconds of
# one step without loading, tokenizing and step 1.
#
# Environment (defaults in brackets): STEPS [8]  ROUNDS [1]  LT [build/loratune]
#   MPIRUN [mpirun]  GGUF [models/SmolLM2-135M-Instruct.Q4_1.gguf]  OUTDIR [/tmp/lt-mpi-bench]
#   FIXTURES [$LT_FIXTURES or tests/fixtures]  MPI_ARGS [--oversubscribe]
# Usage: bench/run_mpi_scaling.sh        STEPS=3 bench/run_mpi_scaling.sh   (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-8} ROUNDS=${ROUNDS:-1} LT=${LT:-build/loratune} MPIRUN=${MPIRUN:-mpirun}
GGUF=${GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
FIXTURES=${FIXTURES:-${LT_FIXTURES:-tests/fixtures}}
OUTDIR=${OUTDIR:-/tmp/lt-mpi-bench} MPI_ARGS=${MPI_ARGS:---oversubscribe}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 LORATUNE_NO_TRACK=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # containers run as root
MODEL=$OUTDIR/smollm2-135m-instruct-f32
DATA=$OUTDIR/wikisql-completions
STAMP=$(date -u +%Y%m%dT%H%M%S)
RUN=$OUTDIR/run-$STAMP
mkdir -p "$OUTDIR" "$RUN"

if [ ! -f "$MODEL/model.safetensors" ]; then
  "$LT" fuse --model "$GGUF" --out "$MODEL" --dtype f32 >&2
fi
if [ ! -f "$DATA/train.jsonl" ]; then # the {"text"} records split at "\nA: " (run_wikisql.sh)
  mkdir -p "$DATA"
  python3 - "$FIXTURES/datasets/wikisql-mlx" "$DATA" <<'EOF'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
for split in ("train", "valid"):
    with open(f"{src}/{split}.jsonl") as f, open(f"{dst}/{split}.jsonl", "w") as o:
        for n, line in enumerate(f, 1):
            text = json.loads(line)["text"]
            if text.count("\nA: ") != 1:
                sys.exit(f"{src}/{split}.jsonl:{n}: 'text': expected one '\\nA: ' separator")
            prompt, completion = text.split("\nA: ")
            o.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
EOF
fi

ARGS=(train --model "$MODEL" --data "$DATA/train.jsonl" --valid-fraction 0 --method lora
      --iters "$STEPS" --batch-size 4 --max-seq-len 256 --pack --lr 1e-4 --lr-schedule constant
      --weight-decay 0.01 --grad-clip 0 --lora-rank 8 --lora-alpha 16 --lora-dropout 0
      --lora-targets q,v --seed 0 --threads 1 --json --no-track --eval-every 0 --save-every 0
      --compute-dtype f32)
echo "# run_mpi_scaling.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC') steps $STEPS rounds $ROUNDS" \
     "($(getconf _NPROCESSORS_ONLN) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))" >&2
for round in $(seq 1 "$ROUNDS"); do
  for sys in np2 np1 plain np2_1 np1_1 plain_1; do
    # each process under /usr/bin/time, its file named by its rank
    timed=(sh -c '/usr/bin/time -f "%U %S %e" -o "$0.${OMPI_COMM_WORLD_RANK:-0}.time" "$@"'
           "$RUN/$sys-$round" "$LT")
    iters=$STEPS
    case $sys in *_1) iters=1 ;; esac
    case ${sys%_1} in
      np2) cmd=("$MPIRUN" -np 2 $MPI_ARGS "${timed[@]}") ;;
      np1) cmd=("$MPIRUN" -np 1 $MPI_ARGS "${timed[@]}") ;;
      plain) cmd=("${timed[@]}") ;;
    esac
    echo "## round $round $sys: ${cmd[*]} ${ARGS[0]} ... (loadavg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    echo "$(cut -d' ' -f1-3 /proc/loadavg)" > "$RUN/$sys-$round.load"
    "${cmd[@]}" "${ARGS[@]}" --iters "$iters" --out "$RUN/out-$sys-$round" > "$RUN/$sys-$round.jsonl" 2> "$RUN/$sys-$round.err"
    echo "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RUN/$sys-$round.load"
  done
done

python3 - "$RUN" "$ROUNDS" "$STEPS" <<'EOF'
import json, sys
run, rounds, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    ev = [json.loads(l) for l in open(f"{run}/{name}.jsonl") if l.startswith("{")]
    st = [e for e in ev if e["event"] == "step"]
    t = sum(e["tokens"] / e["tokens_per_sec"] for e in st[1:] if e["tokens_per_sec"] > 0)
    tok = sum(e["tokens"] for e in st[1:])
    la = [l.split()[0] for l in open(f"{run}/{name}.load")]
    cpu = []
    for rank in range(2):
        try:
            u, s_, _ = open(f"{run}/{name}.{rank}.time").read().split()[-3:]
            cpu.append(float(u) + float(s_))
        except OSError:
            pass
    return dict(losses=[e["loss"] for e in st], s_per_step=t / max(1, len(st) - 1),
                tok_s=tok / t if t else 0, load=la, cpu=cpu)
for r in range(1, rounds + 1):
    res = {s: load(f"{s}-{r}") for s in ("np2", "np1", "plain")}
    for s, v in res.items():  # CPU seconds of one step, from the busier rank
        one = load(f"{s}_1-{r}")
        v["cpu_step"] = max((a - b) / (steps - 1) for a, b in zip(v["cpu"], one["cpu"]))
    for s, v in res.items():
        print(f"round {r} {s:5s}: {v['s_per_step']:7.2f} s/step  {v['tok_s']:7.1f} loss tokens/s"
              f"  loadavg {'->'.join(v['load'])}  CPU s per rank {v['cpu']}")
    if not all(v["s_per_step"] for v in res.values()):
        sys.exit("run_mpi_scaling.sh: no timed steps (STEPS >= 2: step 1 is not timed)")
    print(f"round {r}: np2 vs np1 speed-up {res['np1']['s_per_step'] / res['np2']['s_per_step']:.2f}x,"
          f" np2 vs plain {res['plain']['s_per_step'] / res['np2']['s_per_step']:.2f}x;"
          f" losses np2 == np1 bit for bit: {res['np2']['losses'] == res['np1']['losses']};"
          f" max |np2 - plain| / plain: "
          f"{max(abs(a - b) / abs(b) for a, b in zip(res['np2']['losses'], res['plain']['losses'])):.2e}")
    print(f"round {r}: CPU seconds, np1 / busier np2 rank: "
          f"{res['np1']['cpu'][0] / max(res['np2']['cpu']):.2f}x; plain / busier np2 rank: "
          f"{res['plain']['cpu'][0] / max(res['np2']['cpu']):.2f}x")
    print(f"round {r}: CPU seconds per step (busier rank): np2 {res['np2']['cpu_step']:.2f}, "
          f"np1 {res['np1']['cpu_step']:.2f}, plain {res['plain']['cpu_step']:.2f}; np1 / np2 "
          f"{res['np1']['cpu_step'] / res['np2']['cpu_step']:.2f}x, plain / np2 "
          f"{res['plain']['cpu_step'] / res['np2']['cpu_step']:.2f}x")
    print(json.dumps({"round": r, **{s: {k: v[k] for k in ('s_per_step', 'tok_s', 'load', 'cpu', 'cpu_step')}
                                     for s, v in res.items()}}))
EOF
