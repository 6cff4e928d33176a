"""tools/qwen3_op_drift.py on the host vendor with a CPU reference: it runs
each target and writes what it prints. (On the GPU it compares FlagGems ops
one at a time; here no op is on FlagGems, so every run must equal the
reference exactly.)"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, VENDOR

pytest.importorskip("transformers", reason="the drift tool builds Qwen3 with transformers")
pytestmark = [pytest.mark.anyplatform, pytest.mark.skipif(
    VENDOR != "host", reason=f"a CPU reference matches flagos exactly on the host vendor only (live vendor: {VENDOR})")]

TOOL = os.path.join(REPO_ROOT, "tools", "qwen3_op_drift.py")


def _run(tmp_path, *args):
    out = tmp_path / "drift.json"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               FLAGOS_DISABLE_FLAGGEMS_PY="1")
    proc = subprocess.run([sys.executable, TOOL, "--size", "small", "--reference", "cpu", "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_tokens_target(tmp_path):
    result, printed = _run(tmp_path, "--dtype", "float32")
    assert set(result["runs"]) == {"default", "native"} and result["ops_on_flaggems"] == []
    for run in result["runs"].values():
        assert run == {"max_abs_first_logits": 0.0, "tokens_equal": 32, "first_split": None}
    assert len(result["reference_margins"]) == 32 and "reference tokens" in printed


def test_grads_target(tmp_path):
    result, _ = _run(tmp_path, "--target", "grads", "--dtype", "float32")
    for run in result["runs"].values():
        assert run["worst_grad_rel"] < 1e-5 and run["loss_diff"] < 1e-5, run


def test_margins_target(tmp_path):
    result, printed = _run(tmp_path, "--target", "margins", "--dtype", "float32", "--seeds", "2")
    assert set(result["seeds"]) == {"1", "2"}
    assert all(s["min_margin"] >= 0 for s in result["seeds"].values())
    assert "prompt seed   2" in printed
