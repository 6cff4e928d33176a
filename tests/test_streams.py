"""Streams and events: torch.flagos.Stream/Event and the generic
torch.Stream/torch.Event with device="flagos"."""
import time

import pytest
import torch

import torch_fl
from conftest import DEVICE_COUNT, assert_flagos_close, requires_two_devices

pytestmark = pytest.mark.anyplatform
flagos = torch_fl.flagos


def test_stream_creation_and_identity(dev):
    s = flagos.Stream()
    assert isinstance(s, torch.Stream)
    assert s.device == dev and s.device_type == torch.device("flagos").type or s.device.type == "flagos"
    assert s.device_index == 0
    s2 = flagos.Stream(device=dev, priority=-1)
    assert s2 != s
    assert s2.stream_id != s.stream_id
    d = flagos.default_stream()
    assert d == flagos.default_stream(0) == flagos.default_stream(dev)
    assert flagos.current_stream() == d
    assert d != s
    assert "flagos" in repr(s)
    assert s.query()  # nothing queued
    s.synchronize()


@requires_two_devices
def test_stream_on_device_1(dev1):
    s = flagos.Stream(device=dev1)
    assert s.device_index == 1 and s.device == dev1
    assert flagos.default_stream(1).device_index == 1
    assert flagos.current_stream(1) == flagos.default_stream(1)


def test_stream_context_switches_and_restores(dev):
    d = flagos.current_stream()
    s = flagos.Stream()
    with flagos.stream(s):
        assert flagos.current_stream() == s
        x = torch.arange(10.0, device=dev) * 2
        s2 = flagos.Stream()
        with flagos.stream(s2):
            assert flagos.current_stream() == s2
        assert flagos.current_stream() == s
    assert flagos.current_stream() == d
    s.synchronize()
    assert_flagos_close(x, torch.arange(10.0) * 2)
    with pytest.raises(ValueError):
        with flagos.stream(s):
            raise ValueError("x")
    assert flagos.current_stream() == d
    with flagos.stream(None):
        assert flagos.current_stream() == d
    with flagos.StreamContext(s):
        assert flagos.current_stream() == s
    assert flagos.current_stream() == d


@requires_two_devices
def test_stream_context_on_other_device_restores_device():
    s1 = flagos.Stream(device=1)
    with flagos.stream(s1):
        assert flagos.current_device() == 1
        assert flagos.current_stream() == s1
        assert flagos.current_stream(0) == flagos.default_stream(0)
    assert flagos.current_device() == 0
    assert flagos.current_stream(1) == flagos.default_stream(1)


def test_set_stream(dev):
    s = flagos.Stream()
    flagos.set_stream(s)
    assert flagos.current_stream() == s
    flagos.set_stream(flagos.default_stream())
    assert flagos.current_stream() == flagos.default_stream()


def test_event_record_query_synchronize_elapsed(dev):
    start = flagos.Event(enable_timing=True)
    end = flagos.Event(enable_timing=True)
    x = torch.randn(512, 512, device=dev)
    start.record()
    for _ in range(5):
        x = x @ x.t() / 512
    end.record()
    end.synchronize()
    assert end.query()
    ms = start.elapsed_time(end)
    assert isinstance(ms, float) and ms >= 0.0
    assert torch.isfinite(x.cpu()).all()


def test_event_on_explicit_stream(dev):
    s = flagos.Stream()
    e = flagos.Event()
    with flagos.stream(s):
        y = torch.ones(1000, device=dev).cumsum(0)
        e.record()
    e.synchronize()
    assert e.query()
    assert_flagos_close(y, torch.ones(1000).cumsum(0))
    e2 = s.record_event()
    assert isinstance(e2, torch.Event) and isinstance(e2, flagos.Event)
    assert isinstance(e, flagos.Event)
    e2.synchronize()
    assert e2.query()


def test_elapsed_time_needs_timing(dev):
    a, b = flagos.Event(), flagos.Event()
    a.record()
    b.record()
    b.synchronize()
    with pytest.raises((RuntimeError, ValueError), match="(?i)timing"):
        a.elapsed_time(b)
    torch.ones(2, device=dev).sum().item()  # still usable


def test_event_wait_orders_streams(dev):
    producer = flagos.Stream()
    consumer = flagos.Stream()
    ref = torch.randn(256, 256)
    with flagos.stream(producer):
        a = ref.to(dev)
        for _ in range(4):
            a = a * 1.5 + 1
        done = flagos.Event()
        done.record(producer)
    done.wait(consumer)
    with flagos.stream(consumer):
        b = a.sum(1)
    consumer.synchronize()
    expected = ref
    for _ in range(4):
        expected = expected * 1.5 + 1
    assert_flagos_close(b, expected.sum(1), rtol=1e-4, atol=1e-3)


def test_wait_stream(dev):
    side = flagos.Stream()
    ref = torch.randn(300, 300)
    side.wait_stream(flagos.current_stream())
    with flagos.stream(side):
        a = ref.to(dev).exp()
    flagos.current_stream().wait_stream(side)
    b = a.log()
    assert_flagos_close(b, ref)


def test_record_stream(dev):
    side = flagos.Stream()
    x = torch.randn(1 << 16, device=dev)
    side.wait_stream(flagos.current_stream())
    with flagos.stream(side):
        y = x * 2
        x.record_stream(side)
    ptr = x.data_ptr()
    del x
    # a new allocation on the default stream must not reuse x's block before
    # the side stream's work is done; either way the values must be right
    z = torch.full((1 << 16,), 7.0, device=dev)
    side.synchronize()
    assert_flagos_close(z, torch.full((1 << 16,), 7.0))
    assert y.shape == (1 << 16,)
    assert isinstance(ptr, int)
    with pytest.raises((RuntimeError, TypeError)):
        torch.ones(2, device=dev).record_stream(torch.Stream(device="cpu"))


def test_generic_torch_stream_without_index_uses_current_device(dev):
    s = torch.Stream(device="flagos")
    assert s.device == dev
    s.synchronize()


def test_generic_torch_stream_and_event(dev):
    s = torch.Stream(device="flagos:0")
    assert s.device.type == "flagos" and s.device_index == 0
    e = torch.Event(device="flagos", enable_timing=True)
    e2 = torch.Event(device="flagos", enable_timing=True)
    with s:
        x = torch.randn(128, 128, device=dev)
        e.record(s)
        x = x @ x
        e2.record(s)
    e2.synchronize()
    assert e2.query()
    assert e.elapsed_time(e2) >= 0.0
    e.wait(torch.Stream(device="flagos:0"))
    s.synchronize()
    assert s.query()
    assert torch.isfinite(x.cpu()).all()
    if hasattr(torch, "accelerator") and hasattr(torch.accelerator, "current_stream"):
        cs = torch.accelerator.current_stream()
        assert cs.device.type in ("flagos", "cuda")


def test_pinned_async_copy_on_side_stream_ordering(dev):
    """A large non_blocking pinned->flagos copy on a side stream, an event
    the default stream waits on, then a computation on the default stream:
    the computation must see the copied data."""
    n = 1 << 22  # 16 MiB of float32
    ref = torch.arange(n, dtype=torch.float32) % 1000
    pinned = ref.pin_memory()
    side = flagos.Stream()
    copied = flagos.Event()
    with flagos.stream(side):
        dst = torch.empty(n, device=dev)  # allocated on the side stream
        dst.copy_(pinned, non_blocking=True)
        copied.record()
    flagos.current_stream().wait_event(copied)
    result = (dst * 2 + 1).sum()
    expected = (ref.double() * 2 + 1).sum()
    torch.testing.assert_close(result.cpu().double(), expected, rtol=1e-5, atol=0)
    # and element-wise
    assert_flagos_close(dst[:1000] * 2, ref[:1000] * 2)
    assert_flagos_close(dst[-1000:], ref[-1000:], exact=True)


def test_async_d2h_into_pinned_then_event(dev):
    n = 1 << 20
    src = torch.arange(n, dtype=torch.float32, device=dev) * 3
    out = torch.empty(n).pin_memory()
    out.copy_(src, non_blocking=True)
    ev = flagos.Event()
    ev.record()
    ev.synchronize()
    assert torch.equal(out, torch.arange(n, dtype=torch.float32) * 3)


def test_streams_per_device_independent():
    if DEVICE_COUNT < 2:
        pytest.skip("needs two devices")
    s0, s1 = flagos.Stream(device=0), flagos.Stream(device=1)
    flagos.set_stream(s1)
    assert flagos.current_stream(1) == s1
    assert flagos.current_stream(0) == flagos.default_stream(0)
    flagos.set_stream(flagos.default_stream(1))
    a = torch.ones(10, device="flagos:0")
    with flagos.stream(s0):
        a = a + 1
    with flagos.stream(s1):
        b = torch.ones(10, device="flagos:1") * 3
    flagos.synchronize(0)
    flagos.synchronize(1)
    assert_flagos_close(a, torch.full((10,), 2.0))
    assert_flagos_close(b, torch.full((10,), 3.0))
