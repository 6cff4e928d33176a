"""Errors are clear Python exceptions, and the process keeps working after
each of them."""
import pytest
import torch

import torch_fl
from conftest import DEVICE_COUNT, assert_flagos_close, requires_host, requires_two_devices, run_python

pytestmark = pytest.mark.anyplatform


def _still_works(dev="flagos:0"):
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert_flagos_close((a.to(dev) @ a.t().to(dev)).softmax(-1), (a @ a.t()).softmax(-1))
    assert torch_fl.flagos.current_device() == 0


@requires_two_devices
@pytest.mark.parametrize("op", ["add", "matmul", "cat", "index", "inplace", "where"])
def test_two_devices_in_one_op(op):
    a = torch.ones(3, 3, device="flagos:0")
    b = torch.ones(3, 3, device="flagos:1")
    with pytest.raises(RuntimeError) as info:
        if op == "add":
            a + b
        elif op == "matmul":
            a @ b
        elif op == "cat":
            torch.cat([a, b])
        elif op == "index":
            a[torch.tensor([0, 1], device="flagos:1")]
        elif op == "inplace":
            a.add_(b)
        else:
            torch.where(a > 0, a, b)
    msg = str(info.value)
    assert "flagos:0" in msg and "flagos:1" in msg, msg
    _still_works()
    assert_flagos_close(a, torch.ones(3, 3), exact=True)  # the in-place op did not half-run
    assert_flagos_close(b, torch.ones(3, 3), exact=True)


def test_flagos_and_cpu_tensor_in_one_op(dev):
    a = torch.ones(3, device=dev)
    with pytest.raises(RuntimeError) as info:
        a + torch.ones(3)
    msg = str(info.value)
    assert "cpu" in msg and "flagos" in msg, msg
    _still_works()


def test_bad_device_index(dev):
    bad = DEVICE_COUNT + 3
    # Factories with a bad index: tests/test_device.py, in a child process.
    for fn in (lambda: torch_fl.flagos.set_device(bad),
               lambda: torch_fl.flagos.Stream(device=bad),
               lambda: torch_fl.flagos.memory_allocated(bad)):
        with pytest.raises((IndexError, RuntimeError)) as info:
            fn()
        msg = str(info.value)
        assert str(bad) in msg and str(DEVICE_COUNT) in msg, msg
        _still_works()


def test_unsupported_dtype(dev):
    with pytest.raises((TypeError, RuntimeError, NotImplementedError)):
        torch.empty(3, dtype=torch.qint8, device=dev)
    _still_works()


def test_shape_error_is_runtime_error(dev):
    with pytest.raises(RuntimeError, match="(?i)shape|size|mat1"):
        torch.ones(2, 3, device=dev) @ torch.ones(2, 3, device=dev)
    with pytest.raises(IndexError):
        torch.ones(3, device=dev)[5]
    with pytest.raises(RuntimeError):
        torch.ones(3, device=dev).view(2, 2)
    _still_works()


def test_error_inside_stream_context_restores_stream(dev):
    s = torch_fl.flagos.Stream()
    with pytest.raises(RuntimeError):
        with torch_fl.flagos.stream(s):
            torch.ones(2, 3, device=dev) @ torch.ones(2, 3, device=dev)
    assert torch_fl.flagos.current_stream() == torch_fl.flagos.default_stream()
    _still_works()


def test_bad_routing_backend_is_clear_error():
    with pytest.raises(ValueError, match="nonsense"):
        torch_fl.routing._check("mm", "nonsense", "test")
    with pytest.raises(ValueError, match="no_such_op_xyz"):
        torch_fl.routing._check("no_such_op_xyz", "cpu", "test")
    _still_works()


@requires_host
@pytest.mark.slow
def test_oom_recovery_subprocess():
    code = """
        import torch, torch_fl
        for attempt in range(3):
            try:
                torch.empty(80 << 20, dtype=torch.uint8, device="flagos")
                raise SystemExit("expected OOM")
            except torch.OutOfMemoryError as e:
                assert "80.00 MiB" in str(e), str(e)
            t = torch.randn(1000, device="flagos")
            assert torch.allclose((t * 2).cpu(), t.cpu() * 2)
        # allocator still returns memory and stats stay consistent
        keep = [torch.empty(8 << 20, dtype=torch.uint8, device="flagos") for _ in range(4)]
        del keep
        torch.flagos.empty_cache()
        assert torch.flagos.memory_reserved() <= 1 << 21, torch.flagos.memory_reserved()
        print("OK")
    """
    r = run_python(code, {"FLAGOS_HOST_MEMORY_LIMIT": "64M", "FLAGOS_VENDOR": "host"})
    assert r.returncode == 0 and "OK" in r.stdout, f"rc={r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"


@requires_host
def test_bad_env_config_is_clear_error_at_import():
    r = run_python("import torch_fl", {"FLAGOS_OP_mm": "nonsense_backend", "FLAGOS_VENDOR": "host"})
    assert r.returncode != 0
    assert "nonsense_backend" in r.stderr and "FLAGOS_OP_mm" in r.stderr, r.stderr[-2000:]


def test_sparse_result_is_a_clear_error(dev):
    x = torch.eye(3).to(dev)
    with pytest.raises(RuntimeError, match="only strided tensors are supported on flagos"):
        x.to_sparse()
    # still usable
    torch.testing.assert_close((x + 1).cpu(), torch.eye(3) + 1)


@pytest.mark.parametrize("vendor, words", [
    ("bogus", ["unknown vendor 'bogus'", "auto, host, cuda"]),
    ("metax", ["vendor 'metax' is not available"]),
    ("cuda", ["FLAGOS_VENDOR=cuda needs a CUDA build of PyTorch and a visible GPU"]),
])
def test_unusable_vendor_is_a_clear_error_at_import(vendor, words):
    if vendor == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine can run the cuda vendor")
    r = run_python("import torch_fl", {"FLAGOS_VENDOR": vendor})
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: flagos:"), r.stderr[-1500:]
    for w in words:
        assert w in last, last
    assert "Exception raised from" not in r.stderr, "C++ backtrace leaked into the message"
