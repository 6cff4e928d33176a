"""Memory statistics in torch.cuda's shape, the cache, and out-of-memory."""
import gc

import pytest
import torch

import torch_fl
from conftest import VENDOR, assert_flagos_close, requires_host, run_python

pytestmark = pytest.mark.anyplatform
flagos = torch_fl.flagos
ROUND = 512  # the allocator rounds every request up to 512 bytes, as CUDA's does


def _round(n):
    return (n + ROUND - 1) // ROUND * ROUND


def _settle():
    gc.collect()
    flagos.synchronize()


@pytest.mark.parametrize("numel", [1, 1000, 12345, 1 << 20])
def test_memory_allocated_tracks_tensor(dev, numel):
    _settle()
    before = flagos.memory_allocated()
    t = torch.empty(numel, dtype=torch.float32, device=dev)
    after = flagos.memory_allocated()
    assert after - before == _round(numel * 4), (before, after)
    assert flagos.memory_allocated(0) == after == flagos.memory_allocated(dev)
    del t
    _settle()
    assert flagos.memory_allocated() == before


def test_max_memory_allocated_and_reset(dev):
    _settle()
    flagos.reset_peak_memory_stats()
    base = flagos.memory_allocated()
    assert flagos.max_memory_allocated() == base
    big = torch.empty(1 << 20, device=dev)  # 4 MiB
    peak = flagos.max_memory_allocated()
    assert peak >= base + (4 << 20)
    del big
    _settle()
    assert flagos.memory_allocated() == base
    assert flagos.max_memory_allocated() == peak  # the peak stays
    flagos.reset_peak_memory_stats()
    assert flagos.max_memory_allocated() == base
    flagos.reset_max_memory_allocated(0)
    assert flagos.max_memory_allocated(0) == base


def test_memory_reserved_and_empty_cache(dev):
    _settle()
    x = torch.empty(8 << 20, dtype=torch.uint8, device=dev)
    assert flagos.memory_reserved() >= flagos.memory_allocated() > 0
    assert flagos.max_memory_reserved() >= flagos.memory_reserved()
    del x
    _settle()
    reserved_cached = flagos.memory_reserved()
    assert reserved_cached >= flagos.memory_allocated()
    assert reserved_cached >= 8 << 20  # freed blocks stay cached
    flagos.empty_cache()
    assert flagos.memory_reserved() < reserved_cached
    assert flagos.memory_reserved() >= flagos.memory_allocated()
    # the cache refills and values are right after emptying it
    y = torch.arange(1000, dtype=torch.float32, device=dev)
    assert_flagos_close(y * 2, torch.arange(1000, dtype=torch.float32) * 2)


def test_freed_block_is_reused(dev):
    _settle()
    x = torch.empty(1 << 20, device=dev)
    ptr = x.data_ptr()
    del x
    y = torch.empty(1 << 20, device=dev)
    assert y.data_ptr() == ptr  # same stream, same size: the cached block


def test_memory_stats_keys(dev):
    stats = flagos.memory_stats()
    for key in ("allocated_bytes.all.current", "allocated_bytes.all.peak", "reserved_bytes.all.current",
                "reserved_bytes.all.peak", "active.all.current", "num_alloc_retries", "num_ooms",
                "allocation.all.allocated", "allocation.all.freed"):
        assert key in stats, key
        assert isinstance(stats[key], int) and stats[key] >= 0, key
    assert stats["allocated_bytes.all.current"] == flagos.memory_allocated()
    assert list(stats) == sorted(stats)
    before = flagos.memory_stats()["allocation.all.allocated"]
    t = torch.empty(10, device=dev)
    assert flagos.memory_stats()["allocation.all.allocated"] == before + 1
    del t
    flagos.reset_accumulated_memory_stats()


def test_memory_summary(dev):
    s = flagos.memory_summary()
    assert isinstance(s, str)
    if VENDOR == "cuda":  # torch.cuda's own summary of the same pool
        assert "device ID 0" in s
        return
    assert "flagos" in s and "device 0" in s
    last = flagos.device_count() - 1
    assert f"device {last}" in flagos.memory_summary(last)
    assert "Allocated memory" in s and "Reserved memory" in s


def test_mem_get_info(dev):
    free, total = flagos.mem_get_info()
    assert 0 <= free <= total
    assert total == flagos.get_device_properties(0).total_memory


def test_per_device_accounting():
    if flagos.device_count() < 2:
        pytest.skip("needs two devices")
    _settle()
    b0, b1 = flagos.memory_allocated(0), flagos.memory_allocated(1)
    t = torch.empty(4096, device="flagos:1")
    assert flagos.memory_allocated(1) - b1 == 4096 * 4
    assert flagos.memory_allocated(0) == b0
    del t


OOM_CHILD = """
    import torch, torch_fl
    dev = torch.device("flagos:0")
    keep = torch.ones(1024, device=dev)
    try:
        torch.empty(100 * 1024 * 1024, dtype=torch.uint8, device=dev)
    except torch.OutOfMemoryError as e:
        msg = str(e)
        print("OOM-MESSAGE:", msg.replace("\\n", " "))
        assert "100.00 MiB" in msg, msg
        assert isinstance(e, RuntimeError)
    else:
        raise SystemExit("no OutOfMemoryError for 100 MiB under a 64 MiB limit")
    stats = torch.flagos.memory_stats()
    assert stats["num_ooms"] >= 1, stats
    # afterwards: small allocations work and compute right
    x = torch.arange(1000, dtype=torch.float32, device=dev)
    y = (x * 2 + keep[:1000]).cpu()
    assert torch.equal(y, torch.arange(1000, dtype=torch.float32) * 2 + 1), y
    # and close to the limit still works after the failure
    z = torch.full((16 * 1024 * 1024,), 3, dtype=torch.uint8, device=dev)
    assert int(z.sum().item()) == 3 * 16 * 1024 * 1024
    print("OK")
"""


@requires_host
@pytest.mark.slow
def test_out_of_memory_in_subprocess():
    r = run_python(OOM_CHILD, {"FLAGOS_HOST_MEMORY_LIMIT": "64M", "FLAGOS_VENDOR": "host"})
    assert r.returncode == 0 and "OK" in r.stdout, f"rc={r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    assert "OOM-MESSAGE" in r.stdout


def test_torch_accelerator_memory_api_agrees_with_flagos(dev):
    # import torch_fl makes flagos torch's accelerator; its memory functions
    # need the allocator to be a c10 DeviceAllocator.
    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13):
        pytest.skip("flagos is a c10::DeviceAllocator from torch 2.13 on (not built against older torch)")
    assert torch.accelerator.current_accelerator().type == "flagos"
    x = torch.ones(1 << 16, device=dev)
    assert torch.accelerator.memory_allocated(0) == torch_fl.flagos.memory_allocated(0) > 0
    stats = torch.accelerator.memory_stats(0)
    assert stats["allocated_bytes.all.current"] == torch_fl.flagos.memory_allocated(0)
    torch.accelerator.reset_peak_memory_stats(0)
    assert torch.accelerator.max_memory_allocated(0) == torch_fl.flagos.memory_allocated(0)
    del x
    torch.accelerator.empty_cache()
    assert torch_fl.flagos.memory_reserved(0) <= stats["reserved_bytes.all.current"]


def test_stats_count_in_a_process_that_never_used_torch_cuda():
    """On the cuda vendor the numbers are torch.cuda's, which reads nothing
    until its Python side is initialized; a process that only ever used
    flagos must still see its allocation (this read 0 on an H100)."""
    proc = run_python("""
        import torch, torch_fl
        t = torch.empty(1 << 20, device="flagos")
        print(torch_fl.flagos.memory_allocated(), torch_fl.flagos.memory_reserved(),
              "allocated_bytes.all.current" in torch_fl.flagos.memory_stats())
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    allocated, reserved, has_key = proc.stdout.split()
    assert int(allocated) >= 4 << 20 and int(reserved) >= int(allocated) and has_key == "True", proc.stdout
