"""Several Python threads using flagos at once (devices, streams, the
allocator and the routing table are shared)."""
import threading

import pytest
import torch

import torch_fl
from conftest import DEVICE_COUNT

pytestmark = [pytest.mark.anyplatform, pytest.mark.slow]
flagos = torch_fl.flagos

ITERATIONS = 200


def _worker(tid, device_index, own_stream, errors):
    try:
        g = torch.Generator().manual_seed(tid)
        dev = torch.device("flagos", device_index)
        flagos.set_device(device_index)  # the current device is per thread
        stream = flagos.Stream(device=dev) if own_stream else None
        with flagos.stream(stream):
            for i in range(ITERATIONS):
                a = torch.randn(32, 48, generator=g)
                b = torch.randn(48, 16, generator=g)
                da, db = a.to(dev), b.to(dev)
                out = torch.relu(da @ db).add_(i).sum(0)
                tmp = torch.empty(1000 + 37 * i, device=dev)  # allocator churn
                tmp.fill_(float(i))
                got = out.cpu()
                want = torch.relu(a @ b).add_(i).sum(0)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
                assert tmp[-1].item() == float(i)
                assert flagos.current_device() == device_index
                if own_stream:
                    assert flagos.current_stream(device_index) == stream
    except BaseException as e:  # reported by the main thread
        errors.append((tid, repr(e)))


def test_four_threads_compute_and_copy():
    errors = []
    configs = [
        (0, 0, False),
        (1, min(1, DEVICE_COUNT - 1), False),
        (2, 0, True),
        (3, min(1, DEVICE_COUNT - 1), True),
    ]
    threads = [threading.Thread(target=_worker, args=(*c, errors)) for c in configs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    # the main thread's state is untouched by the workers
    assert flagos.current_device() == 0
    assert flagos.current_stream() == flagos.default_stream()
    x = torch.arange(10.0, device="flagos:0")
    torch.testing.assert_close((x * 2).cpu(), torch.arange(10.0) * 2)


def test_threads_share_one_tensor_readonly(dev):
    base_cpu = torch.randn(256, 256)
    base = base_cpu.to(dev)
    expected = base_cpu.sum(1)
    errors = []

    def read():
        try:
            for _ in range(50):
                torch.testing.assert_close(base.sum(1).cpu(), expected, rtol=1e-4, atol=1e-4)
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
