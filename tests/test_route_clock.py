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
        cpu_only = routing.native_backend() == "cpu"
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
    assert counts.pop("nothing") == {"calls": 0, "route_ns": 0, "vendor_ns": 0}
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
        assert 0 < r["route_ms_per_step"] < r["step_ms"] and 0 < r["vendor_ms_per_step"] < r["step_ms"]
        assert r["route_us_per_call"] == pytest.approx(r["route_ms_per_step"] * 1e3 / r["calls_per_step"])
    assert "route/vendor" in stdout
