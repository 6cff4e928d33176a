"""Helpers of the Qwen3 integration tests: options, the model cache, the
routing modes (torch_fl.routing.preset) and the comparisons. The model itself is built by
torch_fl.models.qwen3 (shared with examples/qwen3_demo.py and
benchmarks/qwen3.py)."""
import functools

import pytest
import torch

import torch_fl
from torch_fl import routing

pytest.importorskip("transformers", reason="the Qwen3 tests need transformers>=4.51 (pip install 'transformers>=4.51')")

from torch_fl.models import qwen3  # noqa: E402

VENDOR = torch_fl.flagos.vendor()
MODES = list(routing.PRESETS)


def model_path(request):
    return request.config.getoption("--model", default=None)


def steps_option(request, default):
    n = request.config.getoption("--steps", default=None)
    return default if n is None else n


@functools.lru_cache(maxsize=2)
def cpu_model(size: str, path=None):
    """The float32 CPU model of ``size`` (built once per session; tests clone it)."""
    return qwen3.build_model(size, seed=0, model_path=path)


def mode_skip_reason(mode: str):
    """Why ``mode`` cannot run here, or None."""
    if mode == "default":
        return None
    if not torch_fl._flaggems.available():
        return (f"routing mode '{mode}' needs FlagGems ops to route, but FlagGems "
                f"{torch_fl._flaggems.unavailable_reason()}")
    return None


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def report_tokens_per_second(label: str, n_tokens: int, seconds: float) -> None:
    print(f"\n[qwen3] {label}: {n_tokens} tokens in {seconds * 1e3:.1f} ms = {n_tokens / seconds:.1f} tokens/s")
