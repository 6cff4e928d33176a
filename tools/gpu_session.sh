#!/usr/bin/env bash
# One call on the GPU machine: install the carried wheels, build against the
# machine's torch, then run the steps named on the command line, writing logs
# and JSON under $OUT (or ./out). Steps: see run_step below and the README.
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
readelf -d torch_fl/_C*.so | grep NEEDED | tr -s ' ' | cut -d' ' -f6 | tr '\n' ' '; echo
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
run_step() {
  local step=$1
  echo "=== $step"
  case $step in
    ctest) FLAGOS_REQUIRE_CUDA=1 ctest --test-dir "$(cat build/current)/runtime" --output-on-failure 2>&1 | tail -20 | tee "$OUT/ctest.log" ;;
    pytest-all) .venv/bin/python -m pytest tests -q -ra -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -60 ;;
    # The native route everywhere (FlagGems kept out: its JIT would dominate),
    # then the tests that are about FlagGems.
    pytest-native) FLAGOS_DISABLE_FLAGGEMS_PY=1 .venv/bin/python -m pytest tests -q -ra -p no:cacheprovider -m "not flaggems and not flaggems_python" 2>&1 | tee "$OUT/pytest-native.log" | tail -40 ;;
    pytest-flaggems) timeout ${FLAGGEMS_TIMEOUT:-420} .venv/bin/python -m pytest tests -q -ra -p no:cacheprovider -m "flaggems or flaggems_python" 2>&1 | tee "$OUT/pytest-flaggems.log" | tail -40 ;;
    # The launcher's GPU tests: replayed FlagGems kernels against torch CUDA.
    # A test stuck past 60 s dumps every thread's stack into the log.
    pytest-launcher) timeout ${LAUNCHER_TIMEOUT:-240} .venv/bin/python -m pytest tests/test_flaggems_gpu.py tests/test_flaggems_launcher.py -v -rfE -p no:cacheprovider \
                       -o faulthandler_timeout=60 -k "${LAUNCHER_K:-replayed or stream or signatures}" > "$OUT/pytest-launcher.log" 2>&1
                     grep -E "PASSED|FAILED|ERROR|passed|failed|Timeout|Fatal|File " "$OUT/pytest-launcher.log" | tail -50 ;;
    demo) .venv/bin/python examples/demo.py 2>&1 | tee "$OUT/demo.log" | tail -40 ;;
    bench) .venv/bin/python benchmarks/dispatch_overhead.py --out "$OUT/dispatch_overhead.json" 2>&1 | tail -20 ;;
    # Decode-shaped ops, host cost per call; FLAGOS_UNBOXED_OPS=0 measures
    # the boxed routing kernel alone (TAG names the JSON).
    decode-ops) .venv/bin/python benchmarks/decode_ops.py --out "$OUT/decode_ops${TAG:-}.json" 2>&1 | tail -22 ;;
    # Worker logs stay in /tmp: only 8 files come back from $OUT.
    # OPS_PREVIOUS=<an earlier run's JSON>: only the OpInfos that run did not reach.
    # OPS_REPLAY=1: each checked call is the second of its signature (the launcher replays it).
    # OPS_ONLY="a,b": only those OpInfos or hand-written cases.
    ops) .venv/bin/python tools/operator_support.py --out /tmp/ops/operator_support.json --md "$OUT/operator-support.md" --conf "$OUT/backends.generated.conf" --workers ${OPS_WORKERS:-14} --budget ${OPS_BUDGET:-300} ${OPS_PREVIOUS:+--missing-from "$OPS_PREVIOUS"} ${OPS_REPLAY:+--replay} ${OPS_ONLY:+--only "$OPS_ONLY"} > /tmp/ops.log 2>&1
         cp /tmp/ops/operator_support.json "$OUT/"; tail -30 /tmp/ops.log ;;
    # FLAGOS_LAUNCHER_LOG=1 adds a line per signature the launcher gives up.
    qwen3) timeout ${QWEN_BENCH_TIMEOUT:-480} .venv/bin/python benchmarks/qwen3.py --out "$OUT/qwen3.json" --budget-s ${QWEN_BUDGET:-380} --modes ${QWEN_MODES:-native,default,flaggems} ${QWEN_ARGS:-} 2>&1 | tee "$OUT/qwen3-bench.log" | grep -v "^\[flagos launcher\]" | tail -40
           grep "^\[flagos launcher\]" "$OUT/qwen3-bench.log" | sed -E 's/0x[0-9a-f]+(\+[0-9]+)?/ADDR/g' | sort | uniq -c | sort -rn | head -40 ;;
    # -v names every test as it runs, so a crash still shows which test it
    # was. A crash or the time limit ends an attempt; the next one runs only
    # the tests no attempt has reported yet, the one that was running left
    # out (at most 3 more attempts).
    pytest-cuda) : > "$OUT/pytest-cuda.log"; deselect=()
          for attempt in 1 2 3 4; do
            FLAGOS_DISABLE_FLAGGEMS_PY=1 timeout ${PYTEST_LIMIT:-420} .venv/bin/python -m pytest tests -v -rfE --tb=short -p no:cacheprovider \
              --ignore=tests/test_ops.py --ignore=tests/integration -m "not flaggems and not flaggems_python" "${deselect[@]}" \
              > "$OUT/pytest-cuda.$attempt.log" 2>&1; rc=$?
            cat "$OUT/pytest-cuda.$attempt.log" >> "$OUT/pytest-cuda.log"; rm "$OUT/pytest-cuda.$attempt.log"
            [ $rc -lt 128 ] && [ $rc -ne 124 ] && break
            last=$(grep -oE "^tests/[^ ]+::[^ ]+" "$OUT/pytest-cuda.log" | tail -1)
            echo "CRASH rc=$rc in or after: $last" | tee -a "$OUT/pytest-cuda.log"
            [ -n "$last" ] || break
            deselect=()
            while read -r id; do deselect+=(--deselect "$id"); done < <(grep -oE "^tests/[^ ]+::[^ ]+" "$OUT/pytest-cuda.log" | sort -u)
          done
          grep -E "^(FAILED|ERROR|CRASH)|passed|failed" "$OUT/pytest-cuda.log" | tail -40 ;;
    # pytest-timeout (on the GPU machine) fails one stuck test with its stack.
    qwen3-tests) timeout ${QWEN_TIMEOUT:-200} .venv/bin/python -m pytest tests/integration tests/test_amp.py -v -s -rfE --tb=short -p no:cacheprovider \
                   --timeout ${QWEN_TEST_TIMEOUT:-240} --durations=15 ${QWEN_K:+-k "$QWEN_K"} > "$OUT/qwen3-tests.log" 2>&1
                 grep -E "^(FAILED|ERROR)|passed|failed|\[qwen3\]|Timeout" "$OUT/qwen3-tests.log" | tail -60 ;;
    # Small Qwen3 greedy decoding on FlagGems routes with every launch
    # synchronous and every op logged: a kernel that never finishes shows as
    # the last logged op.
    hang) printf 'import time, torch, torch_fl\nfrom torch_fl.models import qwen3\nm = qwen3.build_model("small", seed=0, attn_implementation="eager")\nf = qwen3.clone_to(m, "flagos")\np = qwen3.random_tokens(1, 12, qwen3.vocab_size(m), seed=1)\nt = time.time()\ntoks = qwen3.greedy_generate(f, p, 32)[0]\nprint("flagos tokens in", round(time.time() - t, 1), "s", flush=True)\nprint("equal to cpu:", toks == qwen3.greedy_generate(m, p, 32)[0], flush=True)\n' > /tmp/diag_hang.py
          FLAGOS_LOG_DISPATCH=1 CUDA_LAUNCH_BLOCKING=1 timeout ${HANG_TIMEOUT:-120} .venv/bin/python /tmp/diag_hang.py > /tmp/hang.out 2> /tmp/hang.err; echo "rc=$?" >> /tmp/hang.out
          { cat /tmp/hang.out; grep -v "^\[flagos dispatch\]" /tmp/hang.err | tail -8; echo "--- last ops"; grep "^\[flagos dispatch\]" /tmp/hang.err | tail -12; } | tee "$OUT/hang.log" ;;
    # Qwen3-0.6B tests with every op on the vendor's kernels.
    qwen3-native) FLAGOS_DISABLE_FLAGGEMS_PY=1 timeout ${QWEN_TIMEOUT:-200} .venv/bin/python -m pytest tests/integration -v -s -rfE --tb=short -p no:cacheprovider \
                    -k "${QWEN_K:-0_6b and default}" > "$OUT/qwen3-native.log" 2>&1
                  grep -E "^(FAILED|ERROR)|passed|failed|\[qwen3\]" "$OUT/qwen3-native.log" | tail -30 ;;
    # Which FlagGems ops move Qwen3 off the reference: bf16 0.6B decoding
    # against torch CUDA (drift), small fp32 gradients against CPU
    # (drift-grads); and how close to a tie the bf16 reference's greedy
    # choices are per prompt seed (margins).
    drift) timeout ${DRIFT_TIMEOUT:-300} .venv/bin/python tools/qwen3_op_drift.py --out "$OUT/qwen3_op_drift.json" 2>&1 | tee "$OUT/drift.log" | tail -40 ;;
    drift-grads) timeout ${DRIFT_TIMEOUT:-300} .venv/bin/python tools/qwen3_op_drift.py --target grads --size small --dtype float32 --reference cpu \
                   --out "$OUT/qwen3_grad_drift.json" 2>&1 | tee "$OUT/drift-grads.log" | tail -40 ;;
    margins) timeout ${DRIFT_TIMEOUT:-300} .venv/bin/python tools/qwen3_op_drift.py --target margins --seeds ${MARGIN_SEEDS:-16} \
               --out "$OUT/qwen3_margins.json" 2>&1 | tee "$OUT/margins.log" | tail -20 ;;
    # Per-op host time of a Qwen3 decode step, flagos against torch CUDA
    # (tools/decode_profile.py); with perf on the machine, where one op's
    # host time goes on each device (PROFILE_LOOPS="mm add").
    profile) for r in ${PROFILE_ROUTINGS:-native default}; do
               timeout 150 .venv/bin/python tools/decode_profile.py --routing $r --rows ${PROFILE_ROWS:-30} --out "$OUT/decode_profile_$r.json" 2>&1 | grep -v "^USDT" | tail -$(( ${PROFILE_ROWS:-30} + 3 ))
             done
             if command -v perf >/dev/null; then
               for op in ${PROFILE_LOOPS:-mm add}; do for dev in cuda flagos; do
                 perf record -F 5000 -g -o /tmp/perf.$op.$dev.data .venv/bin/python tools/decode_profile.py --loop $op --device $dev --calls ${PROFILE_CALLS:-50000} >/dev/null 2>&1
                 perf report -i /tmp/perf.$op.$dev.data --no-children --sort dso,sym --stdio 2>/dev/null | grep -E "^ +[0-9.]+%" | head -45 > /tmp/perf.$op.$dev.txt
               done; done
               tail -n +1 /tmp/perf.*.txt > "$OUT/perf.txt"; echo "perf tables in perf.txt"
             else echo "no perf on this machine"; fi ;;
    # A 128-token prefill's host time by op and kernel time by kernel
    # (replayed FlagGems kernels against CUDA's).
    profile-prefill) for r in ${PROFILE_ROUTINGS:-default}; do
                       timeout 200 .venv/bin/python tools/decode_profile.py --prefill --rounds ${PROFILE_ROUNDS:-2} --routing $r --rows ${PROFILE_ROWS:-30} --out "$OUT/prefill_profile_$r.json" 2>&1 | grep -v "^USDT" | tail -$(( ${PROFILE_ROWS:-30} * 2 + 5 ))
                     done ;;
    # A decode step's Python functions (cProfile), flagos against torch CUDA.
    profile-python) for r in ${PROFILE_ROUTINGS:-native}; do
                      timeout 200 .venv/bin/python tools/decode_profile.py --python --routing $r --rows ${PROFILE_ROWS:-30} --out "$OUT/decode_python_$r.json" 2>&1 | grep -v "^USDT" | tail -$(( ${PROFILE_ROWS:-30} + 3 ))
                    done ;;
    # Per op, the GPU time of its kernels on the vendor's route and on FlagGems'
    # in a Qwen3-0.6B training step and prefill (the measurement behind a
    # speed hold in torch_fl/speed_holds_cuda.conf).
    route-cost) timeout ${ROUTE_COST_TIMEOUT:-200} .venv/bin/python tools/route_cost.py ${ROUTE_COST_ARGS:-} --out "$OUT/route_cost.json" 2>&1 | grep -v "^\[flagos launcher\]" | tail -8 ;;
    route-kernels) timeout ${ROUTE_KERNELS_TIMEOUT:-300} .venv/bin/python tools/route_kernels.py --rows ${ROUTE_ROWS:-40} ${ROUTE_ARGS:-} --out "$OUT/route_kernels.json" 2>&1 | grep -v "^USDT\|^\[flagos launcher\]" | tail -$(( 2 * ${ROUTE_ROWS:-40} + 12 )) ;;
    # Per-op host time of a Qwen3 AdamW step, flagos against torch CUDA in
    # a clean process.
    profile-train) for r in ${PROFILE_ROUTINGS:-default}; do
                     timeout 300 .venv/bin/python tools/decode_profile.py --train --train-step ${PROFILE_STEP:-2} --routing $r --rows ${PROFILE_ROWS:-30} --out "$OUT/train_profile_$r.json" 2>&1 | grep -v "^USDT" | tail -$(( ${PROFILE_ROWS:-30} + 4 ))
                   done ;;
    # Routing's host cost per call: the same Qwen3 forward on flagos and on
    # the vendor's device in one process, free of the bias between processes
    # (tools/forward_overhead.py; FORWARD_ARGS passes --routing, --rows, --rounds).
    forward-overhead) timeout ${FORWARD_TIMEOUT:-240} .venv/bin/python tools/forward_overhead.py ${FORWARD_ARGS:-} \
                        --out "$OUT/forward_overhead.json" 2>&1 | grep -v "^\[flagos launcher\]" | tail -6 ;;
    # Where that cost goes, function by function: two perf sessions on one
    # process, one per device (tools/perf_forward.py; PERF_FORWARD_ARGS passes
    # --routing, --rows, --len, --grad; PERF=/path/to/perf and
    # PERF_LD_LIBRARY_PATH for a perf carried to the machine).
    perf-forward) timeout ${PERF_FORWARD_TIMEOUT:-300} .venv/bin/python tools/perf_forward.py ${PERF_FORWARD_ARGS:-} \
                    --out "$OUT/perf_forward.json" 2>&1 | grep -v "^\[flagos launcher\]" | tail -70 ;;
    # A training step per configuration, each in a fresh process, and its
    # phases synchronized (tools/train_phases.py).
    train-phases) timeout ${PHASES_TIMEOUT:-500} .venv/bin/python tools/train_phases.py --repeats ${PHASES_REPEATS:-2} ${PHASES_CONFIGS:+--configs "$PHASES_CONFIGS"} \
                    --out "$OUT/train_phases.json" 2>&1 | tail -12 ;;
    smoke) .venv/bin/python /dev/stdin < tools/smoke_cuda.py 2>&1 | tail -40 ;;
    *) echo "unknown step $step" ;;
  esac
}

# "&step" runs in the background, beside the steps after it.
for step in "$@"; do
  case $step in
    \&*) run_step "${step#&}" & ;;
    *) run_step "$step" ;;
  esac
done
wait
