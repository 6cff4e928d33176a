"""Copies between CPU and flagos, within flagos and across flagos devices."""
import pytest
import torch

import torch_fl
from conftest import assert_flagos_close, requires_two_devices, run_python

pytestmark = pytest.mark.anyplatform


def _ref(shape=(6, 8), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100, 100, shape, generator=g).to(dtype)


def test_contiguous_h2d_d2h(dev):
    ref = _ref((33, 17))
    t = torch.empty_like(ref, device=dev)
    t.copy_(ref)
    assert_flagos_close(t, ref, exact=True)
    out = torch.empty_like(ref)
    out.copy_(t)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("kind", ["transpose", "step_slice", "col_slice", "permute3d", "negative_view"])
def test_non_contiguous(dev, kind):
    base = _ref((12, 10, 3) if kind == "permute3d" else (12, 10))
    def view(x):
        if kind == "transpose":
            return x.t()
        if kind == "step_slice":
            return x[1::3, ::2]
        if kind == "col_slice":
            return x[:, 3:7]
        if kind == "permute3d":
            return x.permute(2, 0, 1)
        return x.flip(0)[::2] if x.device.type == "cpu" else x.flip(0)[::2]
    src_cpu = view(base)
    # CPU non-contiguous -> flagos
    t = src_cpu.to(dev)
    assert_flagos_close(t, src_cpu, exact=True)
    # flagos non-contiguous -> CPU
    fbase = base.to(dev)
    fview = view(fbase)
    assert not fview.is_contiguous() or kind == "negative_view"
    assert torch.equal(fview.cpu(), src_cpu)
    # flagos non-contiguous -> flagos contiguous and back into a non-contiguous destination
    c = fview.contiguous()
    assert c.is_contiguous()
    assert_flagos_close(c, src_cpu, exact=True)
    dst_base = torch.zeros_like(fbase)
    view(dst_base).copy_(c)
    expected = torch.zeros_like(base)
    view(expected).copy_(src_cpu)
    assert_flagos_close(dst_base, expected, exact=True)
    # CPU -> non-contiguous flagos destination
    dst_base2 = torch.zeros_like(fbase)
    view(dst_base2).copy_(src_cpu)
    assert_flagos_close(dst_base2, expected, exact=True)


def test_broadcast_copy(dev):
    row = torch.arange(5.0)
    dst = torch.zeros(4, 5, device=dev)
    dst.copy_(row)  # CPU -> flagos with broadcast
    assert_flagos_close(dst, row.expand(4, 5), exact=True)
    dst2 = torch.zeros(4, 5, device=dev)
    dst2.copy_(row.to(dev))  # flagos -> flagos with broadcast
    assert_flagos_close(dst2, row.expand(4, 5), exact=True)
    e = row.to(dev).expand(3, 5)
    assert e.stride() == (0, 1)
    assert torch.equal(e.cpu(), row.expand(3, 5))
    col = torch.arange(4.0).unsqueeze(1).to(dev)
    dst3 = torch.empty(4, 6, device=dev)
    dst3.copy_(col.expand(4, 6))
    assert_flagos_close(dst3, torch.arange(4.0).unsqueeze(1).expand(4, 6), exact=True)
    out = torch.empty(4, 5)
    out.copy_(row.to(dev))  # flagos -> CPU with broadcast
    assert torch.equal(out, row.expand(4, 5))


@pytest.mark.parametrize("src_dtype,dst_dtype", [
    (torch.float32, torch.float16), (torch.float32, torch.bfloat16), (torch.int32, torch.float32),
    (torch.int64, torch.float64), (torch.float32, torch.int32), (torch.float16, torch.float32),
    (torch.bool, torch.float32), (torch.float32, torch.complex64),
], ids=str)
@pytest.mark.parametrize("direction", ["h2d", "d2d", "d2h"])
def test_dtype_changing_copy(dev, src_dtype, dst_dtype, direction):
    src = _ref((7, 9), src_dtype) if src_dtype != torch.bool else _ref((7, 9)) > 0
    expected = src.to(dst_dtype)
    if direction == "h2d":
        dst = torch.empty(7, 9, dtype=dst_dtype, device=dev)
        dst.copy_(src)
        assert_flagos_close(dst, expected, exact=True)
    elif direction == "d2d":
        dst = torch.empty(7, 9, dtype=dst_dtype, device=dev)
        dst.copy_(src.to(dev))
        assert_flagos_close(dst, expected, exact=True)
        assert_flagos_close(src.to(dev).to(dst_dtype), expected, exact=True)
    else:
        dst = torch.empty(7, 9, dtype=dst_dtype)
        dst.copy_(src.to(dev))
        assert torch.equal(dst, expected)
        assert torch.equal(src.to(dev).to("cpu", dst_dtype), expected)


def test_same_device_copy_and_clone(dev):
    ref = _ref((64, 31))
    a = ref.to(dev)
    b = torch.empty_like(a)
    b.copy_(a)
    assert b.data_ptr() != a.data_ptr()
    assert_flagos_close(b, ref, exact=True)
    c = a.clone()
    a.add_(1)  # the copies are independent
    assert_flagos_close(b, ref, exact=True)
    assert_flagos_close(c, ref, exact=True)
    assert_flagos_close(a, ref + 1)


@requires_two_devices
def test_cross_device_copy(dev, dev1):
    ref = _ref((50, 20))
    a = ref.to(dev)
    b = a.to(dev1)
    assert b.device == dev1
    assert_flagos_close(b, ref, exact=True)
    # copy_ across devices both ways, non-contiguous source, dtype change
    c = torch.zeros(20, 50, device=dev1)
    c.copy_(a.t())
    assert_flagos_close(c, ref.t(), exact=True)
    d = torch.zeros(50, 20, dtype=torch.float64, device=dev)
    d.copy_(b)
    assert_flagos_close(d, ref.double(), exact=True)
    # after a computation queued on device 0
    e = (a * 3).to(dev1)
    assert_flagos_close(e, ref * 3)
    # with device 1 current
    with torch_fl.flagos.device(1):
        f = b.to(dev)
    assert f.device == dev
    assert_flagos_close(f, ref, exact=True)


@requires_two_devices
def test_cross_device_copy_from_side_stream(dev, dev1):
    ref = _ref((256, 256))
    a = ref.to(dev)
    s = torch_fl.flagos.Stream(device=dev)
    with torch_fl.flagos.stream(s):
        a2 = a * 2 + 1
    s.synchronize()
    assert_flagos_close(a2.to(dev1), ref * 2 + 1)


def test_pinned_non_blocking_round_trip(dev):
    n = 1 << 18
    ref = torch.randn(n)
    pinned = ref.pin_memory()
    assert pinned.is_pinned()
    t = pinned.to(dev, non_blocking=True)
    t2 = torch.empty(n, device=dev)
    t2.copy_(pinned, non_blocking=True)
    back = torch.empty(n).pin_memory()
    back.copy_(t2, non_blocking=True)
    back2 = t.to("cpu", non_blocking=True)
    torch_fl.flagos.synchronize()
    assert torch.equal(back, ref)
    assert torch.equal(back2, ref)
    assert_flagos_close(t, ref, exact=True)


def test_non_blocking_unpinned_still_correct(dev):
    ref = torch.randn(1000, 3)
    t = ref.to(dev, non_blocking=True)
    back = t.to("cpu", non_blocking=True)
    torch_fl.flagos.synchronize()
    assert torch.equal(back, ref)


def test_copy_into_view(dev):
    base = torch.zeros(6, 6, device=dev)
    expected = torch.zeros(6, 6)
    patch = torch.arange(9.0).reshape(3, 3)
    base[1:4, 2:5].copy_(patch)
    expected[1:4, 2:5] = patch
    assert_flagos_close(base, expected, exact=True)
    base[:, 0] = torch.ones(6, device=dev) * 7
    expected[:, 0] = 7
    assert_flagos_close(base, expected, exact=True)
    base.t()[5].copy_(torch.arange(6.0).to(dev))  # a column of base
    expected.t()[5].copy_(torch.arange(6.0))
    assert_flagos_close(base, expected, exact=True)
    base[::2, ::3] = 5.0
    expected[::2, ::3] = 5.0
    assert_flagos_close(base, expected, exact=True)


def test_copy_from_and_resize_via_out(dev):
    a = torch.randn(4, 5)
    b = torch.randn(4, 5)
    out = torch.empty(3, device=dev)  # wrong size: must be resized
    r = torch.add(a.to(dev), b.to(dev), out=out)
    assert r is out
    assert out.shape == (4, 5)
    assert_flagos_close(out, a + b)
    out2 = torch.empty(100, 100, device=dev)  # too big: shrinks
    torch.mul(a.to(dev), b.to(dev), out=out2)
    assert out2.shape == (4, 5)
    assert_flagos_close(out2, a * b)
    out3 = torch.empty(0, device=dev)
    torch.matmul(a.to(dev), b.t().to(dev), out=out3)
    assert_flagos_close(out3, a @ b.t())


def test_copy_from_and_resize_direct(dev):
    """The op PyTorch's CPU fallback uses to write results back into flagos
    out= tensors of the wrong size (it resizes a non-empty flagos tensor)."""
    a = torch.randn(4, 5)
    # the CPU fallback path of _copy_from_and_resize: flagos -> CPU out with the wrong size
    cpu_out = torch.empty(2)
    torch.ops.aten._copy_from_and_resize(a.to(dev), cpu_out)
    assert cpu_out.shape == (4, 5) and torch.equal(cpu_out, a)
    f_out = torch.empty(1, device=dev)
    torch.ops.aten._copy_from_and_resize(a, f_out)
    assert f_out.shape == (4, 5)
    assert_flagos_close(f_out, a, exact=True)


def test_empty_and_scalar_copies(dev):
    e = torch.empty(0, 3, device=dev)
    e.copy_(torch.empty(0, 3))
    assert e.cpu().shape == (0, 3)
    s = torch.tensor(2.5, device=dev)
    dst = torch.zeros(3, device=dev)
    dst.copy_(s)
    assert_flagos_close(dst, torch.full((3,), 2.5), exact=True)
    dst.fill_(torch.tensor(4.0))
    assert_flagos_close(dst, torch.full((3,), 4.0), exact=True)


@pytest.mark.parametrize("case", ["conj_to_cpu", "resolve_conj", "copy_from_conj_cpu", "resolve_neg"])
def test_conj_and_neg_views_copied_correctly(case):
    """Lazy conj/neg views must be materialised when copied. Runs in a child
    process: a failure here has been a crash (endless recursion), which
    would otherwise take the whole test session down."""
    code = f"""
        import torch, torch_fl
        case = {case!r}
        z = torch.complex(torch.arange(5.0), torch.arange(5.0) * 2 - 3)
        x = torch.arange(5.0) - 2
        if case == "conj_to_cpu":
            got, want = z.to("flagos").conj().cpu().resolve_conj(), z.conj().resolve_conj()
        elif case == "resolve_conj":
            got, want = z.to("flagos").conj().resolve_conj().cpu(), z.conj().resolve_conj()
        elif case == "copy_from_conj_cpu":
            dst = torch.empty(5, dtype=z.dtype, device="flagos")
            dst.copy_(z.conj())
            got, want = dst.cpu(), z.conj().resolve_conj()
        else:
            got, want = torch._neg_view(x.to("flagos")).resolve_neg().cpu(), -x
        assert torch.equal(got, want), (got, want)
        print("OK")
    """
    r = run_python(code, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, (
        f"child exited with {r.returncode} (negative = killed by a signal)\n{r.stderr[-2000:]}"
    )
