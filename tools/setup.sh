#!/usr/bin/env bash
# setup.sh - installs what loratune's build and tests need on a Debian machine:
# Debian packages (compiler, CMake, OpenBLAS, PCRE2, jansson, ...; clang + libclang-rt-14-dev:
# the sanitizer build and libFuzzer for `make fuzz`) and the Python test
# peers (tools/requirements.txt) in .venv, with uv. Idempotent and quick when all is there.
# The Gradio app's requirements go to .venv-gradio (clients/gradio/requirements.txt).
# `tools/setup.sh --bench` also installs the benchmark anchors (Optuna + torch) in .venv-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential clang libclang-rt-14-dev cmake pkg-config git ca-certificates unzip libopenblas-dev libpcre2-dev libjansson-dev libutf8proc-dev libyaml-dev libomp-dev python3 python3-venv libsqlite3-dev libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libarchive-dev libjs-chart.js chromium chromium-driver curl openssl qemu-user libgsl-dev liblapacke-dev librsvg2-dev libdnnl-dev libopenmpi-dev openmpi-bin prometheus prometheus-alertmanager libpq-dev postgresql iproute2"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check uv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum tools/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python test peers (tools/requirements.txt)"
  .venv/bin/uv pip install -q --python .venv/bin/python -r tools/requirements.txt
  echo "$want" > "$stamp"
fi
# a CUDA build (nvcc found): NCCL's header and library for multi-GPU training, the wheel of
# nvcc's CUDA major version (tools/cuda-requirements.txt); CPU-only machines skip it
NVCC=$(command -v nvcc || true)
[ -n "$NVCC" ] || { [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc; } || true
if [ -n "$NVCC" ]; then
  cmajor=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  creq=$(grep -E "^nvidia-nccl-cu${cmajor}==" tools/cuda-requirements.txt || true)
  cstamp=.venv/.cuda-requirements.sha
  cwant=$(echo "$creq" | sha256sum | cut -d' ' -f1)
  if [ -z "$creq" ]; then
    echo "setup: nvcc is CUDA ${cmajor}: no NCCL wheel for it in tools/cuda-requirements.txt" \
         "(multi-GPU training is left out)"
  elif [ "$(cat "$cstamp" 2>/dev/null)" != "$cwant" ]; then
    echo "setup: nvcc found (CUDA ${cmajor}): installing $creq in .venv (multi-GPU training)"
    .venv/bin/uv pip install -q --python .venv/bin/python "$creq"
    echo "$cwant" > "$cstamp"
  fi
fi
# the optional Gradio front end (clients/gradio/) and gradio_client, for its test, in their own
# venv: Gradio's many dependencies stay out of .venv and are never needed by the server
[ -x .venv-gradio/bin/python ] || "$PY" -m venv .venv-gradio
gstamp=.venv-gradio/.requirements.sha
gwant=$(sha256sum clients/gradio/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$gstamp" 2>/dev/null)" != "$gwant" ]; then
  echo "setup: installing the Gradio app's requirements (clients/gradio/requirements.txt) in .venv-gradio"
  .venv/bin/uv pip install -q --python .venv-gradio/bin/python -r clients/gradio/requirements.txt
  echo "$gwant" > "$gstamp"
fi
# --bench: also the benchmark anchors (tools/bench-requirements.txt) in .venv-bench
if [ "${1:-}" = "--bench" ]; then
  [ -x .venv-bench/bin/python ] || "$PY" -m venv .venv-bench
  bstamp=.venv-bench/.requirements.sha
  bwant=$(sha256sum tools/bench-requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$bstamp" 2>/dev/null)" != "$bwant" ]; then
    echo "setup: installing benchmark anchors (tools/bench-requirements.txt) in .venv-bench"
    .venv/bin/uv pip install -q --python .venv-bench/bin/python -r tools/bench-requirements.txt
    echo "$bwant" > "$bstamp"
  fi
fi
