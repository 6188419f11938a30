#!/usr/bin/env bash
# kill_soak.sh - the long kill soak of issue 18 (tests/reliability/kill_soak.py: SIGKILL at
# random times over many `loratune train` runs on stories260K, each folder resumed to the
# uninterrupted run's exact losses and adapter files). Not a speed benchmark: it records
# rounds, where the kills landed, how each folder was recovered, failures and wall time.
# Usage: bench/kill_soak.sh [build/loratune] [ROUNDS] [SEED] [SUMMARY.json]
# CTest runs the short version (tests/reliability/test_kill_soak.py, 8 rounds).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
L=$(realpath "${1:-$ROOT/build/loratune}")
ROUNDS=${2:-200}
SEED=${3:-18}
PY=${PYTHON:-$ROOT/.venv/bin/python}
echo "$(date -u '+%Y-%m-%d %H:%M UTC') $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
LORATUNE=$L LT_FIXTURES=$ROOT/tests/fixtures exec "$PY" "$ROOT/tests/reliability/kill_soak.py" \
  --rounds "$ROUNDS" --seed "$SEED" ${4:+--json "$4"}
