"""Memory statistics in torch.cuda's shape.

On the cuda vendor flagos memory *is* PyTorch's CUDA caching allocator's
pool (one pool per GPU for every route), so the numbers are torch.cuda's.
On other vendors they come from the flagos caching allocator."""
from typing import Any, Dict

import torch

from . import _C


def _index(device=None) -> int:
    from .flagos import _device_index

    return _device_index(device)


def _on_cuda() -> bool:
    """True on the cuda vendor, with torch.cuda's Python side initialized:
    flagos allocates through CUDA's allocator without it, and
    torch.cuda.memory_stats() and empty_cache() answer nothing (an empty
    dict, no-op) until it is."""
    if _C._vendor() != "cuda":
        return False
    if not torch.cuda.is_initialized():
        torch.cuda.init()
    return True


def memory_stats(device=None) -> Dict[str, Any]:
    index = _index(device)
    if _on_cuda():
        return torch.cuda.memory_stats(index)
    s = _C._allocator_stats(index)
    stats = {
        "allocated_bytes.all.current": s["allocated_bytes"],
        "allocated_bytes.all.peak": s["peak_allocated_bytes"],
        "reserved_bytes.all.current": s["reserved_bytes"],
        "reserved_bytes.all.peak": s["peak_reserved_bytes"],
        "requested_bytes.all.current": s["requested_bytes"],
        "active.all.current": s["active_blocks"],
        "segment.all.current": s["segments"],
        "allocation.all.allocated": s["num_allocs"],
        "allocation.all.freed": s["num_frees"],
        "num_device_alloc": s["num_device_mallocs"],
        "num_device_free": s["num_device_frees"],
        "num_alloc_retries": s["num_alloc_retries"],
        "num_ooms": s["num_ooms"],
    }
    return dict(sorted(stats.items()))


def memory_allocated(device=None) -> int:
    return memory_stats(device).get("allocated_bytes.all.current", 0)


def max_memory_allocated(device=None) -> int:
    return memory_stats(device).get("allocated_bytes.all.peak", 0)


def memory_reserved(device=None) -> int:
    return memory_stats(device).get("reserved_bytes.all.current", 0)


def max_memory_reserved(device=None) -> int:
    return memory_stats(device).get("reserved_bytes.all.peak", 0)


def reset_peak_memory_stats(device=None) -> None:
    index = _index(device)
    if _on_cuda():
        return torch.cuda.reset_peak_memory_stats(index)
    _C._reset_peak_stats(index)


def reset_max_memory_allocated(device=None) -> None:
    reset_peak_memory_stats(device)


def reset_accumulated_memory_stats(device=None) -> None:
    index = _index(device)
    if _on_cuda():
        return torch.cuda.reset_accumulated_memory_stats(index)
    _C._reset_accumulated_stats(index)


def empty_cache() -> None:
    if _on_cuda():
        return torch.cuda.empty_cache()
    _C._empty_cache()


def mem_get_info(device=None):
    return tuple(_C._mem_get_info(_index(device)))


def _format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.2f} GiB"


def memory_summary(device=None, abbreviated: bool = False) -> str:
    index = _index(device)
    if _on_cuda():
        return torch.cuda.memory_summary(index, abbreviated=abbreviated)
    s = memory_stats(index)
    rows = [
        ("Allocated memory", s["allocated_bytes.all.current"], s["allocated_bytes.all.peak"]),
        ("Reserved memory", s["reserved_bytes.all.current"], s["reserved_bytes.all.peak"]),
        ("Requested memory", s["requested_bytes.all.current"], None),
    ]
    lines = [
        "=" * 64,
        f" flagos memory summary, device {index} (vendor {_C._vendor()})",
        "-" * 64,
        f" {'Metric':<24}{'Current':>18}{'Peak':>18}",
    ]
    for name, cur, peak in rows:
        lines.append(f" {name:<24}{_format_bytes(cur):>18}{_format_bytes(peak) if peak is not None else '':>18}")
    lines += [
        "-" * 64,
        f" Active blocks: {s['active.all.current']}   Segments: {s['segment.all.current']}",
        f" Allocations: {s['allocation.all.allocated']}   Frees: {s['allocation.all.freed']}",
        f" Device mallocs: {s['num_device_alloc']}   Device frees: {s['num_device_free']}",
        f" OOM retries: {s['num_alloc_retries']}   OOMs: {s['num_ooms']}",
        "=" * 64,
    ]
    return "\n".join(lines) + "\n"
