"""tools/forward_overhead.py: the same forward on flagos and on the vendor's
own device in one process, and what routing adds per call."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.anyplatform


def run_tool(*args, tmp_path=None):
    env = dict(os.environ, FLAGOS_DISABLE_FLAGGEMS_PY="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "forward_overhead.py"), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env)


def calls_in_stats(autocast: bool) -> int:
    """Calls of the tool's forward that routing.stats() counts, which leaves
    copies and casts within a device out; the tool counts those too."""
    import torch
    import torch_fl  # noqa: F401
    from torch_fl import routing
    from torch_fl.models import qwen3

    model = qwen3.clone_to(qwen3.build_model("small", seed=0), "flagos").train()
    tokens = qwen3.random_tokens(2, 32, qwen3.vocab_size(model), seed=2).to("flagos")
    routing.reset_stats()
    with torch.autocast("flagos", dtype=torch.bfloat16, enabled=autocast):
        qwen3.lm_loss(model, tokens).item()
    stats = routing.stats()
    assert sum(stats.get("copy_", {}).values()) + sum(stats.get("_to_copy", {}).values()) > 0
    total = sum(sum(per_backend.values()) for per_backend in stats.values())
    assert total > 20  # a 2-layer decoder's forward routes every op it runs
    return total


def test_both_devices_compute_the_same_loss_and_the_difference_is_per_routed_call(tmp_path):
    out = tmp_path / "forward.json"
    proc = run_tool("--size", "small", "--rows", "2", "--len", "32", "--rounds", "3", "--warmup", "1",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    reference = result["reference"]
    assert set(result["devices"]) == {reference, "flagos"}
    losses = result["losses"]
    tolerance = 2e-2 if result["autocast"] else 1e-4
    assert losses["flagos"] == pytest.approx(losses[reference], rel=tolerance)
    assert result["routed_calls"] == calls_in_stats(result["autocast"] is not None)
    for device, times in result["rounds_ms"].items():
        assert len(times["queued_ms"]) == len(times["finished_ms"]) == 3
        assert all(0 < q <= f for q, f in zip(times["queued_ms"], times["finished_ms"]))
    paired = sorted(f - r for f, r in zip(result["rounds_ms"]["flagos"]["queued_ms"],
                                          result["rounds_ms"][reference]["queued_ms"]))
    assert result["extra_queued_ms"] == pytest.approx(paired[1])
    assert result["extra_us_per_call"] == pytest.approx(paired[1] * 1e3 / result["routed_calls"])
    assert f"over {result['routed_calls']} routed calls" in proc.stdout


def test_it_refuses_zero_rounds():
    proc = run_tool("--rounds", "0")
    assert proc.returncode == 2
    assert "--rounds must be at least 1" in proc.stderr
