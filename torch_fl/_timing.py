"""Timing helpers shared by the benchmarks and the training worker."""
import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collects, then keeps Python's cyclic garbage collector off for the
    block, as timeit does: with transformers, Triton and FlagGems loaded a
    full collection takes tens of milliseconds, and it lands on whichever
    target happens to run (a Qwen3 decode step read 120 and 214 ms against
    a median of 30 in one benchmark round, H100)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
