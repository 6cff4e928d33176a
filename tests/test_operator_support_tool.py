"""The report side of tools/operator_support.py (the sweep itself needs a GPU)."""
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
import torch

import torch_fl  # noqa: F401  (the flagos device)
from torch_fl import routing
from conftest import REPO_ROOT

pytestmark = pytest.mark.anyplatform
TOOL = os.path.join(REPO_ROOT, "tools", "operator_support.py")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tool():
    return _load("operator_support", TOOL)


def _sample_checks():
    return _load("sweep_sample", os.path.join(REPO_ROOT, "tools", "sweep_sample.py"))


def _record(opinfo, dtype, status, reached, culprits=(), detail=""):
    return {"opinfo": opinfo, "dtype": dtype, "sample": 0, "status": status, "detail": detail,
            "reached": list(reached), "culprits": list(culprits)}


def test_worker_logs_name_the_sample_that_never_finished(tmp_path):
    tool = _tool()
    done = _record("add", "float32", "pass", ["add.Tensor"])
    (tmp_path / "worker0.jsonl").write_text(json.dumps(done) + "\n")
    started = {"opinfo": "bmm", "dtype": "float32", "sample": 1, "status": "started"}
    (tmp_path / "worker1.jsonl").write_text(
        json.dumps(done) + "\n" + json.dumps(started) + "\n" + '{"cut by a ki')
    begun = {"opinfo": "quantile", "status": "begun"}
    (tmp_path / "worker2.jsonl").write_text(json.dumps(done) + "\n" + json.dumps(begun) + "\n")
    records, hung, seen = tool.read_worker_logs(tmp_path)
    assert records == [done, done, done]
    assert hung == ["bmm (float32, sample 1)", "quantile (making its samples)"]
    assert seen == {"quantile"}


def test_shards_balance_the_extra_checks_and_honour_only():
    tool = _tool()
    names = [f"op{i}" for i in range(100)]
    shards = tool.make_shards(names, 4)
    assert sorted(n for shard in shards for n in shard) == sorted(names + list(tool.EXTRA_WEIGHT))
    loads = [sum(tool.EXTRA_WEIGHT.get(n, 1) for n in shard) for shard in shards]
    assert max(loads) - min(loads) <= 1, loads
    assert tool.make_shards(names, 2, only="op3,op7") == [["op3"], ["op7"]]
    with pytest.raises(SystemExit, match="no OpInfo named nosuch"):
        tool.make_shards(names, 2, only="op3,nosuch")


def test_later_runs_replace_earlier_samples(tmp_path):
    tool = _tool()
    first = {"summary": {"opinfos": 2, "seconds": 10, "hung": ["x (making its samples)"]},
             "table": {"add.Tensor": {}, "sub.Tensor": {}},
             "records": [_record("add", "float32", "fail", ["add.Tensor"], ["add.Tensor"]),
                         _record("sub", "float32", "pass", ["sub.Tensor"])]}
    second = {"summary": {"seconds": 5, "hung": [], "timeouts": 0},
              "records": [_record("add", "float32", "pass", ["add.Tensor"])], "table": {}}
    paths = []
    for i, run in enumerate((first, second)):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run))
    summary, records, served = tool.merge_runs(paths)
    assert sorted((r["opinfo"], r["status"]) for r in records) == [("add", "pass"), ("sub", "pass")]
    assert served == ["add.Tensor", "sub.Tensor"] and summary["seconds"] == 15 and summary["hung"] == []


def test_report_from_json(tmp_path):
    records = [
        _record("add", "float32", "pass", ["add.Tensor"]),
        _record("mul", "float16", "fail", ["mul.Tensor", "add.Tensor"], ["mul.Tensor"],
                "max abs err 3: Tensor-likes are not close!\nMismatched elements: 2 / 4"),
        # a sample reaching a random op proves nothing, pass or fail
        _record("dropout", "float32", "fail", ["bernoulli_.float", "add.Tensor"], ["add.Tensor"]),
    ]
    # mm.out: held on cuda by the bare "mm" line of torch_fl/backends.conf;
    # cat: held on cuda for speed by torch_fl/speed_holds_cuda.conf, and
    # cat.out by the same bare-name line
    table = {op: {} for op in ("add.Tensor", "mul.Tensor", "sum", "mm.out", "cat", "cat.out")}
    summary = {"flaggems_config_entries": 3, "routed_to_flaggems": 3, "excluded": {"_to_copy": "copies"},
               "opinfos": 3, "timeouts": 1, "hung": ["bmm (float32, sample 1)"],
               "environment": {"device": "GPU", "torch": "2.x", "flaggems": "5.0.2"}}
    src = tmp_path / "sweep.json"
    src.write_text(json.dumps({"summary": summary, "table": table, "records": records}))
    md, conf = tmp_path / "ops.md", tmp_path / "failing.conf"
    proc = subprocess.run([sys.executable, TOOL, "--from-json", str(src), "--md", str(md), "--conf", str(conf)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.read_text().splitlines() if line.startswith("| `")}
    # add.Tensor was reached by the failing float16 sample but was not its culprit
    assert rows["`add.Tensor`"][:4] == ["flagos", "pass", "pass", "no sample"]
    assert rows["`mul.Tensor`"][:4] == ["cuda", "no sample", "fail", "no sample"]
    assert "Mismatched elements" in rows["`mul.Tensor`"][4]  # the detail, on one line
    assert rows["`sum`"][1:4] == ["no sample"] * 3
    assert rows["`mm.out`"][0] == "cuda" and "torch_fl/backends.conf" in rows["`mm.out`"][4]
    text = md.read_text()
    assert "OpInfos not run within the time budget: 1 of 3" in text
    assert ("default routes of the ops listed: FlagGems 2; the vendor's kernel 4 (of them 2 held for speed in "
            "`torch_fl/speed_holds_cuda.conf`") in text
    assert "never finished (the worker was killed there): bmm (float32, sample 1)" in text
    lines = conf.read_text().splitlines()
    assert lines[1].startswith("mul.Tensor = cuda  # mul: max abs err 3") and len(lines) == 2


def test_random_words_inside_op_names():
    tool = _sample_checks()
    assert tool._is_random("native_dropout") and tool._is_random("new_empty.default")
    assert tool._is_random("bernoulli_.float") and tool._is_random("_fused_dropout")
    assert not tool._is_random("native_layer_norm") and not tool._is_random("add.Tensor")
    assert not tool._is_random("native_dropout_backward")


_ON_NATIVE_PRESET = []


@contextlib.contextmanager
def _native_preset_seen(name):
    _ON_NATIVE_PRESET.append(name == "native")
    try:
        yield
    finally:
        _ON_NATIVE_PRESET.pop()


class _Doubling(torch.autograd.Function):
    """The identity, whose backward doubles the gradient on flagos unless the
    vendor's kernels serve it (routing.preset("native")): a stand-in for a
    FlagGems *_backward kernel that is wrong."""

    @staticmethod
    def forward(ctx, x):
        ctx.wrong = x.device.type == "flagos" and not any(_ON_NATIVE_PRESET)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 2 if ctx.wrong else grad


class _StandInOp:
    supports_autograd = True

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _sample(x):
    return types.SimpleNamespace(input=x, args=(), kwargs={}, output_process_fn_grad=lambda out: out)


def test_sweep_compares_gradients_and_skips_samples_the_reference_refuses(monkeypatch):
    tool = _sample_checks()
    monkeypatch.setenv("FLAGOS_SWEEP_REFERENCE", "cpu")
    monkeypatch.setattr(routing, "preset", _native_preset_seen)
    x = torch.randn(4, 3)
    status, detail, _, grads = tool._run_sample(_StandInOp(_Doubling.apply), _sample(x), "float32")
    assert status == "fail" and detail.startswith("gradient of input 0") and grads, detail
    assert tool._run_sample(_StandInOp(torch.sin), _sample(x), "float32")[::3] == ("pass", True)
    # half types too
    assert tool._run_sample(_StandInOp(torch.sin), _sample(x.bfloat16()), "bfloat16")[::3] == ("pass", True)

    def refuses_cpu(t):
        if t.device.type == "cpu":
            raise RuntimeError("expected the index on another device")
        return t

    status, detail, reached, _ = tool._run_sample(_StandInOp(refuses_cpu), _sample(x), "float32")
    assert (status, reached) == ("reference-error", []) and "expected the index" in detail


def test_replay_mode_runs_three_calls_before_the_checked_one(monkeypatch):
    tool = _sample_checks()
    monkeypatch.setenv("FLAGOS_SWEEP_REFERENCE", "cpu")
    seen = []

    def sin(t):
        seen.append(t.device.type)
        return torch.sin(t)

    x = torch.randn(5)
    assert tool._run_sample(_StandInOp(sin), _sample(x), "float32")[0] == "pass"
    plain = seen.count("flagos")
    seen.clear()
    monkeypatch.setenv(tool.REPLAY, "1")
    assert tool._run_sample(_StandInOp(sin), _sample(x), "float32")[0] == "pass"
    assert seen.count("flagos") == plain + tool.REPLAY_WARMUP, seen


def test_inplace_and_out_forms_are_checked(monkeypatch):
    tool = _sample_checks()
    monkeypatch.setenv("FLAGOS_SWEEP_REFERENCE", "cpu")
    from torch.testing._internal.common_methods_invocations import op_db

    add = next(o for o in op_db if o.name == "add" and not o.variant_test_name)
    assert tool._variants(add) == ["functional", "inplace", "out"]
    sample = next(iter(add.sample_inputs("cpu", torch.float32)))
    for variant in ("inplace", "out"):
        assert tool._run_sample(add, sample, "float32", variant)[0] == "pass"
    # The in-place form compares the mutated input: a wrong one is caught.
    status, detail, _, _ = tool._run_sample(_WrongInPlace(), _sample(torch.randn(3)), "float32", "inplace")
    assert status == "fail", detail


class _WrongInPlace:
    """An op whose in-place form adds 1 more on flagos than elsewhere."""
    supports_out = False
    supports_autograd = False

    def __call__(self, x):
        return x.clone()

    @staticmethod
    def inplace_variant(x):
        return x.add_(1) if x.device.type == "flagos" else x


def test_tabulate_counts_property_checks_and_skips_reference_errors():
    tool = _tool()
    records = [
        _record("random: uniform_", "float32", "pass", ["uniform_"], ["uniform_"]) | {"variant": "property"},
        _record("random: normal_", "float32", "fail", ["normal_", "fill_.Scalar"], ["normal_"], "mean off")
        | {"variant": "property"},
        _record("tensor_split", "float32", "reference-error", [], []),
        _record("dropout", "float32", "pass", ["native_dropout", "add.Tensor"]),
    ]
    table = tool.tabulate(["uniform_", "normal_", "fill_.Scalar", "add.Tensor"], records)
    assert table["uniform_"]["float32"]["pass"] == 1
    assert table["normal_"]["float32"]["fail"] == 1 and table["fill_.Scalar"]["float32"]["pass"] == 1
    assert table["add.Tensor"]["float32"]["pass"] == 0  # reached a random op outside a property check


def test_random_op_checks_pass_on_flagos_and_catch_wrong_values():
    import importlib

    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    checks = importlib.import_module("random_op_checks")
    torch.manual_seed(0)
    for label, check in checks.CHECKS.items():
        check(torch.float32)
    with pytest.raises(AssertionError, match="mean"):
        checks._moments(torch.rand(checks.N) + 0.1, 0.5, 1 / 12 ** 0.5, "shifted rand")
    with pytest.raises(AssertionError, match="same seed"):
        counter = iter(range(10))
        checks._seeded(lambda: torch.tensor([float(next(counter))]), "unseeded")


def test_handwritten_cases_run_and_agree_with_the_cpu(monkeypatch):
    """Keeps tools/handwritten_op_cases.py well-formed: on the host vendor
    against the CPU every case passes, or is one the CPU has no kernel for
    (on the reference side, or on flagos, whose host kernels are the CPU's)."""
    tool = _sample_checks()
    monkeypatch.setenv("FLAGOS_SWEEP_REFERENCE", "cpu")
    from torch_fl import routing

    records = [tool.handwritten_record(item, dtype, routing) for item in tool.handwritten_items()
               for dtype in tool.handwritten_dtypes(item)]
    cpu_lacks = ("from the 'CPU' backend", "not implemented for")
    bad = [(r["opinfo"], r["dtype"], r["status"], r["detail"]) for r in records if r["status"] != "pass"
           and not (r["status"] in ("reference-error", "error") and any(w in r["detail"] for w in cpu_lacks))]
    assert not bad, bad
    assert sum(r["grads"] for r in records) >= 8 * 3  # the differentiable cases compared gradients


def _flaggems_env(tmp_path):
    missing = [m for m in ("flag_gems", "triton", "sqlalchemy") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} importable (pip install flag-gems==5.0.2 --no-deps sqlalchemy triton)")
    env = dict(os.environ, GEMS_VENDOR="nvidia", FLAGGEMS_DB_URL=f"sqlite:///{tmp_path}/flaggems.db",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FLAGOS_VENDOR", None)
    return env


def test_static_listing_runs_without_a_gpu(tmp_path):
    env = _flaggems_env(tmp_path)
    md = tmp_path / "ops.md"
    proc = subprocess.run([sys.executable, TOOL, "--static", "--out", str(tmp_path / "s.json"), "--md", str(md)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Static listing made without a GPU" in md.read_text()
    assert "| `add.Tensor` | flagos | not run | not run | not run |" in md.read_text()


@pytest.mark.slow
def test_rehearsal_reaches_every_op_flaggems_serves_but_the_cuda_only_ones(tmp_path):
    """tools/operator_support.py --rehearse on this CPU machine: every op
    FlagGems would serve on an NVIDIA GPU gets a sample, except those whose
    only reference is CUDA's or that the packaged table holds on CUDA."""
    env = _flaggems_env(tmp_path)
    out = tmp_path / "rehearsal.json"
    proc = subprocess.run([sys.executable, TOOL, "--rehearse", "--out", str(out), "--workers", "2",
                           "--budget", "300"], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["served"] > 300
    # _conv_depthwise2d: the CPU has no kernel to compare with (the GPU run has
    # CUDA's); the others are held on CUDA by torch_fl/backends.conf.
    assert set(result["unreached"]) <= {"_conv_depthwise2d", "_flash_attention_forward", "hardsigmoid.out"}, \
        result["unreached"]


def test_a_result_the_reference_gives_on_the_cpu_stays_there(monkeypatch):
    """_efficient_attention_forward gives its philox seed and offset as CPU
    tensors on CUDA; flagos must too. Their values are generator state (or
    unset without dropout), not compared."""
    tool = _sample_checks()
    monkeypatch.setenv("FLAGOS_SWEEP_REFERENCE", "cuda")
    seed = torch.tensor([7])
    tool._compare(torch.tensor([1341549691]), seed, "float32")
    with pytest.raises(AssertionError, match="result on flagos:0, the reference's on cpu"):
        tool._compare(seed.to("flagos"), seed, "float32")


def test_ops_failing_only_together_answer_for_it_together(monkeypatch):
    """FlagGems' _safe_softmax returns a strided result that its
    _softmax_backward_data read flat: each alone passed, the pair failed."""
    tool = _sample_checks()
    calls = []

    def run_sample(op, sample, dtype, variant="functional"):
        calls.append(dict(routing.table()))
        if len(calls) == 1:
            return "fail", "gradient of input 0: relative error 19.5 > 0.0001", ["_safe_softmax", "mul.Tensor"], True
        return "pass", "", [], True

    monkeypatch.setattr(tool, "_run_sample", run_sample)
    monkeypatch.setattr(routing, "override", lambda **routes: contextlib.nullcontext())
    record = tool._check_sample(None, None, "float32", "functional", routing)
    assert record["culprits"] == ["_safe_softmax", "mul.Tensor"] and len(calls) == 3
    assert record["detail"].startswith("only together: gradient of input 0")


def test_culprits_are_found_with_the_others_on_the_vendors_kernels(monkeypatch):
    """The other ops go to the live vendor's own kernels (cpu on the host
    vendor, where a route to cuda is refused): here only hypot, when
    left on its route, makes the sample fail."""
    tool = _sample_checks()

    def run_sample(op, sample, dtype, variant="functional"):
        hypot_moved = any(e[0] == "hypot" and e[1] == routing.native_backend() for e in routing.entries())
        return ("pass" if hypot_moved else "fail"), "max abs err 1", ["atan2", "hypot"], False

    monkeypatch.setattr(tool, "_run_sample", run_sample)
    record = tool._check_sample(None, None, "float32", "functional", routing)
    assert record["status"] == "fail" and record["culprits"] == ["hypot"], record
