"""tools/route_kernels.py needs a GPU and FlagGems to measure; what it does
with a measurement (joining two op tables, counting routes per op) is
checked here on any machine, and so is its refusal without them."""
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.anyplatform
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import route_kernels  # noqa: E402


def test_routes_by_op_sums_overloads_per_backend():
    stats = {"mul.Tensor": {"cuda": 4, "flagos": 2}, "mul.Scalar": {"cuda": 1}, "sum.dim_IntList": {"flagos": 3}}
    assert route_kernels.routes_by_op(stats) == {"aten::mul": {"cuda": 5, "flagos": 2},
                                                 "aten::sum": {"flagos": 3}}


def test_device_time_by_op_keeps_ops_not_kernels():
    ops = {"aten::mm": {"calls": 3, "device_us": 30.0, "kernel": False},
           "sm90_gemm_kernel": {"calls": 3, "device_us": 30.0, "kernel": True},
           "cudaLaunchKernel": {"calls": 3, "device_us": 0.0, "kernel": False}}
    assert route_kernels.device_us_by_op(ops) == {"aten::mm": (3, 30.0)}


def test_join_orders_by_what_flaggems_adds():
    tables = {"native": {"aten::sum": (2, 10.0), "aten::mul": (4, 40.0)},
              "flaggems": {"aten::sum": (2, 30.0), "aten::mul": (4, 35.0), "aten::copy_": (1, 1.0)}}
    rows = route_kernels.join(tables, {"aten::sum": {"flagos": 2}})
    assert [r["op"] for r in rows] == ["aten::sum", "aten::mul", "aten::copy_"]
    assert rows[0]["flaggems_extra_us"] == 20.0 and rows[0]["routes"] == {"flagos": 2}
    assert rows[1]["flaggems_extra_us"] == -5.0
    assert rows[2]["native_calls"] == 0 and rows[2]["native_device_us"] == 0.0


def test_it_says_what_it_needs_instead_of_measuring_nothing():
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "route_kernels.py")], capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT,
                          env=dict(os.environ, FLAGOS_DISABLE_FLAGGEMS_PY="1",
                                   PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert proc.returncode != 0
    assert "route_kernels: needs" in proc.stderr
