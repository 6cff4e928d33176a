"""The route clock (FLAGOS_ROUTE_CLOCK=1): one count per routed call on each
route (unboxed, boxed, copies, casts, the CPU route), the route's own time
apart from the vendor kernels' calls, totals that restart when taken; off,
asking for it says how to turn it on. tools/route_cost.py reports it for a
training step."""
import json
import os

import pytest
import torch

from torch_fl import routing

from conftest import run_python, run_script

pytestmark = pytest.mark.anyplatform


def test_off_by_default_and_says_how_to_turn_it_on():
    if os.environ.get("FLAGOS_ROUTE_CLOCK", "0") not in ("", "0"):
        pytest.skip("this run set FLAGOS_ROUTE_CLOCK")
    with pytest.raises(RuntimeError, match="FLAGOS_ROUTE_CLOCK=1"):
        routing.take_route_clock()


def test_counts_each_routed_call_once_and_restarts():
    proc = run_python("""
        import json, torch, torch_fl
        from torch_fl import routing
        x = torch.arange(6.0).view(2, 3).to("flagos")
        routing.take_route_clock()
        counts = {}
        def take(name, fn):
            fn()
            counts[name] = routing.take_route_clock()
        take("nothing", lambda: None)
        take("unboxed add", lambda: x + x)
        take("boxed sigmoid", lambda: x.sigmoid())
        take("copy_", lambda: torch.empty_like(x).copy_(x))
        take("cast", lambda: x.to(torch.float64))
        with routing.override(sigmoid="cpu"):
            take("cpu route", lambda: x.sigmoid())
        take("mm", lambda: x @ x.t())
        print(json.dumps(counts))
    """, env_extra={"FLAGOS_ROUTE_CLOCK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts.pop("nothing") == {"calls": 0, "route_ns": 0, "vendor_ns": 0, "aliases": 0}
    # x and x.t() are two tensors over one storage: two aliases. A cast is
    # an empty tensor and a copy_ (two aliases) on the host vendor.
    host = routing.native_backend() == "cpu"
    assert {name: c["aliases"] for name, c in counts.items() if name != "cpu route"} == {
        "unboxed add": 1, "boxed sigmoid": 1, "copy_": 2, "cast": 2 if host else 1, "mm": 2}
    # A cast is a copy_ into a new tensor on the host vendor, CUDA's own
    # _to_copy on the cuda vendor: one routed call either way.
    for name, c in counts.items():
        assert c["calls"] == 1, (name, c)
        assert c["route_ns"] > 0, (name, c)
        if name != "cpu route":  # the CPU route's time is all the route's
            assert c["vendor_ns"] > 0, (name, c)


def test_route_cost_tool_reports_a_training_step(tmp_path):
    out = tmp_path / "cost.json"
    args = ["--blocks", "2", "--steps", "2", "--warmup", "1", "--out", str(out)]
    if torch.cuda.is_available():
        args += ["--size", "small", "--length", "64"]
    stdout = run_script("tools/route_cost.py", *args)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for r in rows:
        # Every step routes the same ops.
        assert r["calls_per_step"] == rows[0]["calls_per_step"] > 100
        assert r["aliases_per_step"] == rows[0]["aliases_per_step"] > 100
        assert 0 < r["route_ms_per_step"] < r["step_ms"] and 0 < r["vendor_ms_per_step"] < r["step_ms"]
        assert r["route_us_per_call"] == pytest.approx(r["route_ms_per_step"] * 1e3 / r["calls_per_step"])
        # The phases share out the step's calls, aliases and times.
        phases = r["phases"]
        assert set(phases) == {"forward", "backward", "optimizer", "other"}
        for key in ("calls_per_step", "aliases_per_step", "route_ms_per_step", "vendor_ms_per_step"):
            assert sum(p[key] for p in phases.values()) == pytest.approx(r[key])
        assert min(phases[p]["calls_per_step"] for p in ("forward", "backward", "optimizer")) > 0
    assert "route/vendor" in stdout and "optimizer" in stdout


def test_in_place_foreach_calls_alias_tensors_only_on_the_host_vendor():
    """On the cuda vendor, CUDA's in-place foreach kernels take the flagos
    tensors themselves (an optimizer step aliases none of its parameters,
    gradients and states); out-of-place ones, and every one on the host
    vendor, take aliases. Values agree with CPU either way, a strided
    tensor (CUDA's per-tensor path) included."""
    proc = run_python("""
        import json, torch, torch_fl
        from torch_fl import routing
        gen = torch.Generator().manual_seed(0)
        ref = [torch.randn(3, 4, generator=gen) for _ in range(40)]
        steps_ref = [torch.randn(3, 4, generator=gen) for _ in range(40)]
        got, steps = [t.to("flagos") for t in ref], [t.to("flagos") for t in steps_ref]
        routing.take_route_clock()
        torch._foreach_add_(got, steps, alpha=0.5)
        in_place = routing.take_route_clock()
        absolute = [t.abs() for t in got]
        routing.take_route_clock()
        roots = torch._foreach_sqrt(absolute)
        out_of_place = routing.take_route_clock()
        strided = [t.t() for t in got[:3]] + [got[3]]
        torch._foreach_mul_(strided, 2.0)
        torch._foreach_add_(ref, steps_ref, alpha=0.5)
        expected_roots = torch._foreach_sqrt([t.abs() for t in ref])
        torch._foreach_mul_([t.t() for t in ref[:3]] + [ref[3]], 2.0)
        print(json.dumps({"host": routing.native_backend() == "cpu",
                          "in_place": in_place["aliases"], "out_of_place": out_of_place["aliases"],
                          "err": max((g.cpu() - r).abs().max().item() for g, r in zip(got, ref)),
                          "roots_err": max((g.cpu() - r).abs().max().item() for g, r in zip(roots, expected_roots)),
                          "roots_on": str(roots[0].device)}))
    """, env_extra={"FLAGOS_ROUTE_CLOCK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["in_place"] == (80 if out["host"] else 0)
    assert out["out_of_place"] == 40
    assert out["roots_on"] == "flagos:0"
    assert out["err"] < 1e-6 and out["roots_err"] < 1e-6


def test_route_cost_tool_trains_the_model_with_its_weights_tied():
    """route_cost's model keeps Qwen3's tied embedding and output weights on
    flagos (a plain Module.to() unties them, and the step trains and
    aliases one matrix more than the model has)."""
    proc = run_python("""
        import sys
        sys.path.insert(0, "tools")
        import route_cost
        trained, real_trainer = [], route_cost.qwen3.Trainer
        def trainer(model, **options):
            trained.append(model)
            return real_trainer(model, **options)
        route_cost.qwen3.Trainer = trainer
        route_cost.measure("native", "small", 2, 16, warmup=1, blocks=1, steps=1)
        model = trained[0]
        print(model.lm_head.weight is model.model.embed_tokens.weight)
    """, env_extra={"FLAGOS_ROUTE_CLOCK": "1", "FLAGOS_DISABLE_FLAGGEMS_PY": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
