"""The benchmarks and the profiling tool run on the host vendor and write
what they print: every case has a number for torch and for each flagos
column, so a benchmark that breaks shows here and not first on the GPU."""
import json
import math
import os
import sys
from types import SimpleNamespace

import pytest

from conftest import QUICK_TOOL_ENV, REPO_ROOT, VENDOR, run_script

pytestmark = [pytest.mark.anyplatform, pytest.mark.skipif(
    VENDOR != "host", reason=f"quick runs of the host vendor's configuration (live vendor: {VENDOR})")]


def _qwen3_benchmark():
    """benchmarks/qwen3.py as a module (it imports its folder's _common)."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    try:
        import qwen3 as bench
    finally:
        sys.path.pop(0)
    return bench


def _positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_decode_ops_times_every_case_on_both_routings(tmp_path):
    out = tmp_path / "decode_ops.json"
    stdout = run_script("benchmarks/decode_ops.py", "--calls", "20", "--out", str(out))
    results = json.loads(out.read_text())["results"]
    assert {"add", "to float32", "cat kv cache", "linear 1024"} <= {r["op"] for r in results}
    for r in results:
        for column in ("torch cpu us", "flagos native us", "flagos default us"):
            assert _positive(r[column]), (r["op"], column, r[column])
        assert r["native extra us"] == pytest.approx(r["flagos native us"] - r["torch cpu us"])
    assert "µs per call at decode shapes" in stdout


def test_dispatch_overhead_times_every_case(tmp_path):
    out = tmp_path / "dispatch.json"
    run_script("benchmarks/dispatch_overhead.py", "--calls", "20", "--out", str(out))
    results = json.loads(out.read_text())["results"]
    assert {"add", "mm 64 bf16", "cat"} <= {r["op"] for r in results}
    for r in results:
        assert _positive(r["torch cpu us"]) and _positive(r["flagos default us"]), r


def test_qwen3_benchmark_interleaves_inference_and_trains(tmp_path):
    out = tmp_path / "qwen3.json"
    stdout = run_script("benchmarks/qwen3.py", "--rounds", "2", "--train-steps", "4", "--train-rounds", "2",
                  "--prefill", "16", "--train-batch-large", "3", "--out", str(out))
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"flagos default", "torch cpu"}
    for label, r in results.items():
        assert r["inference_rounds"] == 2
        # Two training rounds of two steps each, the reference's in its worker process.
        assert r["train_steps_timed"] == 4
        for key in ("prefill_ms", "decode_ms", "train_tokens_per_s", "prefill_first_ms", "train_first_ms",
                    "prefill_warmup_max_ms", "decode_warmup_max_ms"):
            assert _positive(r[key]), (label, key, r.get(key))
        # The host has queued a step's work before the step ends (loss.item()).
        assert 0 < r["train_queue_ms"] <= max(r["train_step_round_ms"]), label
    assert results["flagos default"]["train_op_calls_per_route"]["cpu"] > 0
    # Paired ratios: the median over rounds of flagos' time over the
    # reference's in the same round, from the samples the JSON keeps.
    flg, ref = results["flagos default"], results["torch cpu"]
    for key, ratio in (("prefill", "prefill"), ("decode", "decode"), ("train_step", "train")):
        assert len(flg[f"{key}_round_ms"]) == len(ref[f"{key}_round_ms"]) == 2
        ratios = sorted(a / b for a, b in zip(flg[f"{key}_round_ms"], ref[f"{key}_round_ms"]))
        assert flg[f"{ratio}_x_ref"] == pytest.approx(sum(ratios) / 2)
    assert ref["decode_x_ref"] == pytest.approx(1.0)
    assert "x ref" in stdout
    # Two rounds are too few for a spread; it is left out, not made up.
    assert flg["train_x_ref_spread"] is None and "faster in" not in stdout
    # The second training, at 3 rows: the default routing and the reference
    # only, with the first training's keys and a ratio of their own.
    big, big_ref = flg["train_large_batch"], ref["train_large_batch"]
    assert big["batch"] == big_ref["batch"] == 3 and big["train_steps_timed"] == big_ref["train_steps_timed"] == 4
    ratios = sorted(a / b for a, b in zip(big["train_step_round_ms"], big_ref["train_step_round_ms"]))
    assert big["train_x_ref"] == pytest.approx(sum(ratios) / 2)
    assert big["train_tokens_per_s"] == pytest.approx(3 * 64 / big["train_step_ms"] * 1e3)
    assert "Training at 3 x 64 tokens" in stdout


def test_qwen3_benchmark_skips_the_large_batch_past_its_budget():
    bench = _qwen3_benchmark()
    results = {"flagos default": {}, "torch cpu": {}}
    args = SimpleNamespace(budget_s=400.0)
    # A deadline already past: no worker starts (it would need a model).
    bench.train_large_batch([("flagos default", "flagos", "default"), ("torch cpu", "cpu", None)], results, args,
                            gpu=False, deadline=0.0, batch=4)
    for r in results.values():
        assert r["train_large_batch"] == {"batch": 4, "skipped": "time budget of 400 s used up"}


def test_qwen3_benchmark_leaves_the_large_batch_its_share_of_the_budget():
    """The first training stops early enough for the second (at a larger
    batch) to run: before, it used the whole budget and the device-bound
    measurement was skipped in every GPU run."""
    bench = _qwen3_benchmark()
    assert bench.training_deadline(100.0, 300.0, large_batch_follows=True) == pytest.approx(
        100.0 + 200.0 * (1 - bench.LARGE_BATCH_SHARE))
    assert 100.0 < bench.training_deadline(100.0, 300.0, True) < 300.0
    assert bench.training_deadline(100.0, 300.0, large_batch_follows=False) == 300.0
    # A budget already used up stays used up: at least half the rounds run anyway.
    assert bench.training_deadline(400.0, 300.0, True) == 300.0


def _measure_training(monkeypatch, targets, **args):
    """benchmarks/qwen3.py's measure_training() on the small model, host vendor."""
    bench = _qwen3_benchmark()
    for name, value in QUICK_TOOL_ENV.items():  # read by the workers
        monkeypatch.setenv(name, value)
    results = {label: {} for label, _, _ in targets}
    args = SimpleNamespace(**{**dict(size="small", model=None, train_len=16, train_processes=1, train_warmup=1,
                                     budget_s=400.0), **args})
    bench.measure_training(targets, results, args, gpu=False, deadline=float("inf"), batch=2)
    return results


def test_qwen3_benchmark_shares_training_rounds_among_worker_processes(monkeypatch):
    """--train-processes 2: each target trains in two workers, one after the
    other; three rounds go 1 + 2, every round still pairs the targets, the
    calls per route add up over both workers, and each worker's median step
    is kept."""
    targets = [("flagos native", "flagos", "native"), ("torch cpu", "cpu", None)]
    results = _measure_training(monkeypatch, targets, train_steps=3, train_rounds=3, train_processes=2)
    for label, r in results.items():
        assert r["train_steps_timed"] == 3 and len(r["train_step_round_ms"]) == 3, label
        assert len(r["train_process_step_ms"]) == 2 and all(_positive(x) for x in r["train_process_step_ms"])
        assert _positive(r["train_first_ms"]) and _positive(r["train_warmup_max_ms"])
    # Calls are counted per step of the rounds, the first step and the
    # warm-up left out (a fresh model's first step routes other ops: the
    # optimizer's state): a warm step routes the same calls in any worker.
    flagos_only = targets[:1]
    one = _measure_training(monkeypatch, flagos_only, train_steps=1, train_rounds=1)["flagos native"]
    two = _measure_training(monkeypatch, flagos_only, train_steps=2, train_rounds=2)["flagos native"]
    assert "train_process_step_ms" not in one
    per_step = results["flagos native"]["train_op_calls_per_route"]["cpu"]
    assert per_step > 0
    assert one["train_op_calls_per_route"]["cpu"] == per_step == two["train_op_calls_per_route"]["cpu"]
    assert results["flagos native"]["train_launcher_per_step"]["python"] == 0
    # The ops on the vendor's kernels, most first, per step: the same in any
    # worker, and no more than the route's calls.
    most = results["flagos native"]["train_vendor_ops_per_step"]
    assert most == one["train_vendor_ops_per_step"] == two["train_vendor_ops_per_step"]
    assert 0 < len(most) <= 15 and [n for _, n in most] == sorted((n for _, n in most), reverse=True)
    assert sum(n for _, n in most) <= per_step and "mm" in dict(most)


def test_qwen3_benchmark_adds_up_each_workers_launcher_counts(monkeypatch):
    """A FlagGems routing's worker reports launcher counts (here one replay
    per step, stand-ins: the host has no FlagGems); the benchmark gives them
    per step of the rounds, for every target alike."""
    from torch_fl.models import qwen3

    timed_steps = qwen3.TrainingWorker.timed_steps

    def replaying_one_call_a_step(self, n):
        seconds = timed_steps(self, n)
        if "flagos" in self.what:
            self.launcher.setdefault("mul.Tensor", {"replayed": 0, "python": 0, "vendor": 0})["replayed"] += n
        return seconds

    monkeypatch.setattr(qwen3.TrainingWorker, "timed_steps", replaying_one_call_a_step)
    targets = [("flagos native", "flagos", "native"), ("torch cpu", "cpu", None)]
    results = _measure_training(monkeypatch, targets, train_steps=2, train_rounds=2)
    assert results["flagos native"]["train_launcher_per_step"] == {
        "replayed": 1, "python": 0, "vendor": 0, "most_python": []}
    assert results["torch cpu"]["train_steps_timed"] == 2 and "train_launcher_per_step" not in results["torch cpu"]


def test_qwen3_benchmark_launcher_counts_per_training_step():
    """The FlagGems launcher's calls of a worker's rounds, per step, with the
    ops that ran FlagGems' Python, most first."""
    bench = _qwen3_benchmark()
    per_op = {"mul.Tensor": {"replayed": 40, "python": 0, "vendor": 0},
              "cat": {"replayed": 0, "python": 6, "vendor": 2},
              "sum": {"replayed": 4, "python": 12, "vendor": 0}}
    got = bench.launcher_per_step(per_op, steps=2)
    assert got["replayed"] == 22 and got["python"] == 9 and got["vendor"] == 1
    assert got["most_python"] == [("sum", 6), ("cat", 3)]


def test_qwen3_benchmark_vendor_ops_per_training_step():
    bench = _qwen3_benchmark()
    native = bench.torch_fl.routing.native_backend()
    per_op = {"mm": {native: 30, "flagos": 2}, "mul.Tensor": {native: 10}, "add.Tensor": {"flagos": 50},
              "sum": {native: 60}}
    assert bench.vendor_ops_per_step(per_op, steps=2) == [("sum", 30), ("mm", 15), ("mul.Tensor", 5)]
    assert bench.vendor_ops_per_step(per_op, steps=2, rows=1) == [("sum", 30)]


def test_training_worker_counts_launcher_calls_since_a_block_began():
    from torch_fl.models import qwen3

    before = {"mul.Tensor": {"replayed": 5, "python": 1, "vendor": 0}}
    after = {"mul.Tensor": {"replayed": 9, "python": 1, "vendor": 0}, "cat": {"replayed": 0, "python": 2, "vendor": 0},
             "neg": {"replayed": 0, "python": 0, "vendor": 0}}
    assert qwen3._counts_since(before, after) == {"mul.Tensor": {"replayed": 4, "python": 0, "vendor": 0},
                                                   "cat": {"replayed": 0, "python": 2, "vendor": 0}}


def test_qwen3_benchmark_spread_of_paired_ratios():
    bench = _qwen3_benchmark()
    ref = {"train_step_round_ms": [100.0, 100.0, 200.0, 100.0, 100.0]}
    mine = {"train_step_round_ms": [90.0, 110.0, 180.0, 95.0, 120.0]}  # ratios .9 1.1 .9 .95 1.2
    spread = bench.paired_spread(mine, ref, "train_step")
    assert spread["faster_rounds"] == 3 and spread["rounds"] == 5
    assert spread["q1"] == pytest.approx(0.9) and spread["q3"] == pytest.approx(1.15)
    assert bench.paired_spread({"train_step_round_ms": [1.0] * 3}, {"train_step_round_ms": [1.0] * 3},
                               "train_step") is None


def test_decode_profile_joins_both_devices_by_op(tmp_path):
    out = tmp_path / "profile.json"
    stdout = run_script("tools/decode_profile.py", "--rows", "5", "--out", str(out))
    profile = json.loads(out.read_text())
    ops = {r["op"]: r for r in profile["rows"]}
    # The same model on both devices makes the same ATen calls.
    assert ops["aten::mm"]["ref_calls"] == ops["aten::mm"]["flagos_calls"] > 0
    assert profile["ref_total_us"] > 0 and profile["flagos_total_us"] > 0
    assert "extra us" in stdout


def test_decode_profile_of_python_functions_takes_turns(tmp_path):
    out = tmp_path / "python_profile.json"
    stdout = run_script("tools/decode_profile.py", "--python", "--rounds", "2", "--rows", "5", "--out", str(out))
    profile = json.loads(out.read_text())
    rows = [r for r in profile["rows"] if "modeling_qwen3.py" in r["op"] and "(forward)" in r["op"]]
    # The same model code runs on both devices, as often: averaged calls stay whole numbers.
    assert rows and all(r["ref_calls"] == r["flagos_calls"] > 0 for r in rows), rows
    assert "(2 rounds)" in stdout and profile["flagos_total_us"] > 0


def test_decode_profile_profiles_a_training_step(tmp_path):
    out = tmp_path / "train_profile.json"
    stdout = run_script("tools/decode_profile.py", "--train", "--rows", "5", "--out", str(out))
    profile = json.loads(out.read_text())
    assert profile["train"] and _positive(profile["ref_step_ms"]) and _positive(profile["flagos_step_ms"])
    ops = {r["op"]: r for r in profile["rows"]}
    # The reference trains the same model in its own process: the same
    # matrix products, and one fused foreach call per optimizer update.
    assert ops["aten::mm"]["ref_calls"] == ops["aten::mm"]["flagos_calls"] > 0
    assert ops["aten::_foreach_addcdiv_"]["ref_calls"] == ops["aten::_foreach_addcdiv_"]["flagos_calls"] == 1
    assert "AdamW step" in stdout and "aten calls" in stdout
    # Each step's three phases are named in its timeline, inside the
    # profiled window; a GPU busy time that cannot exceed it.
    for side in ("ref_timeline", "flagos_timeline"):
        timeline = profile[side]
        phases = [timeline[name]["host_us"] for name in ("forward", "backward", "optimizer")]
        assert all(_positive(us) for us in phases) and sum(phases) <= timeline["window_us"]
        assert 0 <= timeline["gpu_busy_us"] <= timeline["window_us"]
    assert "optimizer" in stdout


def test_decode_profile_profiles_a_prefill(tmp_path):
    out = tmp_path / "prefill_profile.json"
    stdout = run_script("tools/decode_profile.py", "--prefill", "--rounds", "1", "--rows", "5", "--out", str(out))
    profile = json.loads(out.read_text())
    ops = {r["op"]: r for r in profile["rows"]}
    # A 128-token prompt through the same small model on both devices: the
    # same matrix products, one per linear layer (2 layers x 7, and the head).
    assert ops["aten::mm"]["ref_calls"] == ops["aten::mm"]["flagos_calls"] == 15
    assert profile["ref_total_us"] > 0 and profile["flagos_total_us"] > 0
    assert "128-token prefill" in stdout


def test_decode_trace_times_each_step_of_each_target(tmp_path):
    out = tmp_path / "trace.json"
    stdout = run_script("tools/decode_trace.py", "--steps", "3", "--prefill", "8", "--out", str(out))
    trace = json.loads(out.read_text())
    assert set(trace) == {"cpu", "native", "default"}
    for label, steps in trace.items():
        assert len(steps) == 3 and all(_positive(s["ms"]) for s in steps), (label, steps)
        # FlagGems' Python is off in these runs: nothing recorded.
        assert all(s["events"] == {} for s in steps), (label, steps)
    assert "median" in stdout


def test_train_phases_times_each_configuration_in_its_own_process(tmp_path):
    out = tmp_path / "phases.json"
    stdout = run_script("tools/train_phases.py", "--configs", "ref,native", "--repeats", "1", "--steps", "2",
                  "--out", str(out))
    configs = json.loads(out.read_text())["configs"]
    assert set(configs) == {"ref", "native"}
    for name, row in configs.items():
        assert len(row["runs"]) == 1 and len(row["runs"][0]["steps_ms"]) == 2, (name, row)
        for key in ("step_ms", "forward_ms", "backward_ms", "optimizer_ms"):
            assert _positive(row[key]), (name, key, row)
        # The host queues a step's work before the step ends.
        assert 0 < row["queued_ms"] <= row["step_ms"], (name, row)
    assert "x ref" in stdout and "queued" in stdout


def test_training_worker_trains_flagos_in_its_own_process():
    from torch_fl.models import qwen3

    with qwen3.TrainingWorker("flagos", size="small", batch=2, length=8, routing="native") as worker:
        seconds = worker.timed_steps(2)
        assert len(seconds) == 2 and all(_positive(s) for s in seconds)
        # Each step's work was queued before the step ended.
        assert len(worker.queue_seconds) == 2
        assert all(0 < q <= s for q, s in zip(worker.queue_seconds, seconds))
        assert worker.routes["mm"] == {"cpu": worker.routes["mm"]["cpu"]} and worker.routes["mm"]["cpu"] > 0
    with pytest.raises(ValueError, match="applies to flagos only"):
        qwen3.TrainingWorker("cpu", size="small", routing="native")


def test_training_workers_started_together_build_their_models_at_once():
    """wait=False: workers build their models at the same time; each is
    ready before its first step, and they train alike."""
    from torch_fl.models import qwen3

    with qwen3.TrainingWorker("flagos", size="small", batch=2, length=8, routing="native", wait=False) as a, \
            qwen3.TrainingWorker("flagos", size="small", batch=2, length=8, routing="native", wait=False) as b:
        a.wait_ready()
        a.wait_ready()  # once ready, at once
        assert len(a.timed_steps(1)) == 1 and len(b.timed_steps(1)) == 1  # b waits inside
        assert a.routes == b.routes and a.routes["mm"]["cpu"] > 0
