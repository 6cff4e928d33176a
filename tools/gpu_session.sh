#!/usr/bin/env bash
# One call on the GPU machine: install the carried wheels, build against the
# machine's torch, then run the steps named on the command line, writing logs
# and JSON under $OUT (or ./out). Steps: ctest pytest demo bench ops qwen3 smoke
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLAGOS_VENDOR=${FLAGOS_VENDOR:-cuda}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
make build > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
tail -2 "$OUT/build.log"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
for step in "$@"; do
  echo "=== $step"
  case $step in
    ctest) FLAGOS_REQUIRE_CUDA=1 ctest --test-dir "$(cat build/current)/runtime" --output-on-failure 2>&1 | tail -20 | tee "$OUT/ctest.log" ;;
    pytest) .venv/bin/python -m pytest tests -q -x -ra -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -40 ;;
    pytest-all) .venv/bin/python -m pytest tests -q -ra -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -60 ;;
    # The native route everywhere (FlagGems kept out: its JIT would dominate),
    # then the tests that are about FlagGems.
    pytest-native) FLAGOS_DISABLE_FLAGGEMS_PY=1 .venv/bin/python -m pytest tests -q -ra -p no:cacheprovider -m "not flaggems and not flaggems_python" 2>&1 | tee "$OUT/pytest-native.log" | tail -40 ;;
    pytest-flaggems) .venv/bin/python -m pytest tests -q -ra -p no:cacheprovider -m "flaggems or flaggems_python" 2>&1 | tee "$OUT/pytest-flaggems.log" | tail -40 ;;
    demo) .venv/bin/python examples/demo.py 2>&1 | tee "$OUT/demo.log" | tail -40 ;;
    bench) .venv/bin/python benchmarks/dispatch_overhead.py --out "$OUT/dispatch_overhead.json" 2>&1 | tail -20 ;;
    ops) .venv/bin/python tools/operator_support.py --out "$OUT/operator_support.json" --md "$OUT/operator-support.md" --conf "$OUT/backends.generated.conf" --workers 14 --budget ${OPS_BUDGET:-300} 2>&1 | tail -30 ;;
    qwen3) timeout ${QWEN_BENCH_TIMEOUT:-200} .venv/bin/python benchmarks/qwen3.py --out "$OUT/qwen3.json" --budget-s ${QWEN_BUDGET:-120} 2>&1 | tee "$OUT/qwen3-bench.log" | tail -30 ;;
    diag) printf 'import torch, torch_fl\ntry:\n    torch.empty(4, device="flagos:6")\nexcept Exception as e:\n    print("raised", type(e).__name__, e)\n' > /tmp/diag.py
          timeout 60 cuda-gdb -q -batch -ex run -ex bt --args .venv/bin/python /tmp/diag.py 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -40 | tee "$OUT/diag.log" ;;
    pytest-cuda) FLAGOS_DISABLE_FLAGGEMS_PY=1 timeout ${PYTEST_TIMEOUT:-150} .venv/bin/python -m pytest tests -q -rfE --tb=line -p no:cacheprovider --ignore=tests/test_ops.py --ignore=tests/integration -m "not flaggems and not flaggems_python" 2>&1 | tee "$OUT/pytest-cuda.log" | tail -40 ;;
    qwen3-tests) timeout ${QWEN_TIMEOUT:-200} .venv/bin/python -m pytest tests/integration tests/test_amp.py -q -s -rfE --tb=short -p no:cacheprovider 2>&1 | tee "$OUT/qwen3-tests.log" | tail -40 ;;
    smoke) .venv/bin/python /dev/stdin < tools/smoke_cuda.py 2>&1 | tail -40 ;;
    *) echo "unknown step $step" ;;
  esac
done
