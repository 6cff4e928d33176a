#!/usr/bin/env bash
# Creates .venv for building and testing torch_fl, reusing what the machine
# has: a Python that already imports torch (the GPU machine: torch with CUDA,
# no network) gets a venv that sees its packages; otherwise torch==2.13.0
# (CPU build) is installed into a fresh venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null \
   && "$PY" -c "import torch" 2>/dev/null; then
  rm -rf "$VENV"  # made before torch was reachable; start over with it
fi
if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    # That Python may itself be a venv, whose packages a nested venv would
    # not see: point .venv/bin/python at it instead.
    mkdir -p "$VENV/bin"
    real=$("$PY" -c "import sys; print(sys.executable)")
    printf '#!/bin/sh\nexec "%s" "$@"\n' "$real" > "$VENV/bin/python"
    chmod +x "$VENV/bin/python"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"

missing() { ! "$VPY" -c "import $1" 2>/dev/null; }
if missing torch; then
  "$VPY" -m pip install -q "torch==${FLAGOS_TORCH_VERSION:-2.13.0}"
fi
need=()
missing pytest && need+=(pytest)
missing numpy && need+=(numpy)
missing yaml && need+=(pyyaml)
missing expecttest && need+=(expecttest)
missing transformers && need+=("transformers>=4.51")  # Qwen3 tests, demo, benchmark
if [ ${#need[@]} -gt 0 ]; then
  "$VPY" -m pip install -q "${need[@]}"
fi
if ! command -v cmake >/dev/null 2>&1; then
  "$VPY" -m pip install -q cmake
fi
# Opt in (FLAGOS_SETUP_FLAGGEMS=1): FlagGems for the CPU test of its config
# capture (tests/test_flaggems_bridge.py); triton alone is ~290 MB. --no-deps:
# FlagGems pins versions that would replace torch's numpy/triton.
if [ "${FLAGOS_SETUP_FLAGGEMS:-0}" = 1 ]; then
  missing flag_gems && "$VPY" -m pip install -q --no-deps flag-gems==5.0.2
  missing sqlalchemy && "$VPY" -m pip install -q "sqlalchemy==2.0.48"
  missing triton && "$VPY" -m pip install -q --no-deps triton
fi
touch "$VENV/.ready"
"$VPY" -c "import torch, sys; print(f'torch {torch.__version__} on Python {sys.version.split()[0]}')"
