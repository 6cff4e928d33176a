"""Shared timing and reporting for the benchmarks: synchronized loops, the
median of several repeats, a printed table and a JSON file."""
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sync(device: str) -> None:
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "flagos":
        torch.flagos.synchronize()


def time_per_call(fn: Callable[[], object], device: str, calls: int = 200, repeats: int = 7,
                  warmup: int = 20) -> float:
    """Median over `repeats` of (wall time of `calls` calls, synchronized) / calls, in µs;
    Python's garbage collector paused while timing, as timeit does."""
    from torch_fl.models.qwen3 import paused_gc

    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    with paused_gc():
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync(device)
            samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def target_routing(mode):
    """The flagos routing preset of a target ("native", "default", ...);
    torch's own device (mode None) has none."""
    import contextlib

    from torch_fl import routing

    return routing.preset(mode) if mode else contextlib.nullcontext()


def calls_past_records() -> int:
    """Calls of one signature that take it past its FlagGems record, so
    that the timed calls after them replay: the vendor-served calls
    (torch_fl.flaggems.vendor_calls()), the record, and one replay."""
    import torch_fl

    return torch_fl._flaggems.vendor_calls() + 2 if torch_fl._flaggems.available() else 2


def environment() -> Dict[str, object]:
    import torch_fl

    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "vendor": torch_fl.flagos.vendor(),
        "device_name": torch_fl.flagos.get_device_name(0),
    }
    try:
        import flag_gems

        info["flag_gems"] = flag_gems.__version__
    except Exception:
        info["flag_gems"] = None
    return info


def print_table(title: str, columns: List[str], rows: List[List[object]]) -> None:
    widths = [max(len(str(c)), *(len(_fmt(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(v).rjust(w) for v, w in zip(r, widths)))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "-" if v is None else str(v)


def write_json(path: str, payload: Dict[str, object]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
