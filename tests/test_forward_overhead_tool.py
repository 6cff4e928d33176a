"""tools/forward_overhead.py: the same forward on flagos and on the vendor's
own device in one process, and what routing adds per call."""
import json

import pytest

from conftest import QUICK_TOOL_ENV, refused_usage, run_python, run_script

pytestmark = pytest.mark.anyplatform


def calls_in_stats(autocast: bool) -> dict:
    """Routed calls per op of the tool's forward, counted by routing.stats()
    in a process set up as the tool's is (QUICK_TOOL_ENV, routing native):
    with FlagGems' Python loaded, as in this test's own process, FlagGems
    claims composite ops (embedding, arange) and the forward routes other
    ops."""
    proc = run_python(f"""
        import json, torch, torch_fl
        from torch_fl import routing
        from torch_fl.models import qwen3
        model = qwen3.clone_to(qwen3.build_model("small", seed=0), "flagos").train()
        tokens = qwen3.random_tokens(2, 32, qwen3.vocab_size(model), seed=2).to("flagos")
        autocast_dtype = torch.bfloat16 if {autocast} else None
        with routing.preset("native"):
            # The tool counts a forward that follows others.
            qwen3.lm_loss(model, tokens, autocast_dtype).item()
            routing.reset_stats()
            qwen3.lm_loss(model, tokens, autocast_dtype).item()
            stats = routing.stats()
        print(json.dumps({{op: sum(per_backend.values()) for op, per_backend in stats.items()}}))
    """, env_extra=QUICK_TOOL_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_op = json.loads(proc.stdout.strip().splitlines()[-1])
    assert per_op.get("copy_", 0) + per_op.get("_to_copy", 0) > 0
    assert sum(per_op.values()) > 20  # a 2-layer decoder's forward routes every op it runs
    return per_op


def test_both_devices_compute_the_same_loss_and_the_difference_is_per_routed_call(tmp_path):
    out = tmp_path / "forward.json"
    stdout = run_script("tools/forward_overhead.py", "--size", "small", "--rows", "2", "--len", "32", "--rounds", "3",
                        "--warmup", "1", "--out", str(out))
    result = json.loads(out.read_text())
    reference = result["reference"]
    assert set(result["devices"]) == {reference, "flagos"}
    losses = result["losses"]
    tolerance = 2e-2 if result["autocast"] else 1e-4
    assert losses["flagos"] == pytest.approx(losses[reference], rel=tolerance)
    # Per op, so that a difference names the op.
    assert result["routed_ops"] == calls_in_stats(result["autocast"] is not None)
    assert result["routed_calls"] == sum(result["routed_ops"].values())
    for device, times in result["rounds_ms"].items():
        assert len(times["queued_ms"]) == len(times["finished_ms"]) == 3
        assert all(0 < q <= f for q, f in zip(times["queued_ms"], times["finished_ms"]))
    paired = sorted(f - r for f, r in zip(result["rounds_ms"]["flagos"]["queued_ms"],
                                          result["rounds_ms"][reference]["queued_ms"]))
    assert result["extra_queued_ms"] == pytest.approx(paired[1])
    assert result["extra_us_per_call"] == pytest.approx(paired[1] * 1e3 / result["routed_calls"])
    assert f"over {result['routed_calls']} routed calls" in stdout


def test_it_refuses_zero_rounds():
    assert "--rounds must be at least 1" in refused_usage("tools/forward_overhead.py", "--rounds", "0")
