"""Tensor creation on flagos for every dtype, round trips, storages."""
import pytest
import torch

import torch_fl
from conftest import assert_flagos_close, requires_two_devices

pytestmark = pytest.mark.anyplatform

ALL_DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
]
FLOATING = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128}
ids = [str(d).replace("torch.", "") for d in ALL_DTYPES]


def _sample(dtype, shape=(3, 5)):
    """Deterministic CPU values that exercise the dtype's range."""
    n = shape[0] * shape[1]
    if dtype == torch.bool:
        return (torch.arange(n) % 3 == 0).reshape(shape)
    if dtype.is_complex:
        re = torch.linspace(-3, 3, n, dtype=torch.float64)
        return torch.complex(re, -re * 0.5).to(dtype).reshape(shape)
    if dtype.is_floating_point:
        return torch.linspace(-100, 100, n, dtype=torch.float64).to(dtype).reshape(shape)
    info = torch.iinfo(dtype)
    vals = torch.linspace(info.min, info.max, n, dtype=torch.float64).to(torch.int64)
    vals[0], vals[-1] = info.min, info.max
    return vals.to(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
def test_empty(dev, dtype):
    t = torch.empty(4, 3, dtype=dtype, device=dev)
    assert t.device == dev and t.dtype == dtype and t.shape == (4, 3)
    assert t.is_contiguous() and t.stride() == (3, 1)
    assert t.untyped_storage().nbytes() >= 12 * t.element_size()
    t2 = torch.empty_strided((2, 3), (1, 2), dtype=dtype, device=dev)
    assert t2.stride() == (1, 2) and t2.device == dev
    e = torch.empty(0, dtype=dtype, device=dev)
    assert e.numel() == 0 and e.cpu().numel() == 0


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
def test_zeros_ones_full(dev, dtype):
    assert_flagos_close(torch.zeros(2, 7, dtype=dtype, device=dev), torch.zeros(2, 7, dtype=dtype), exact=True)
    assert_flagos_close(torch.ones(2, 7, dtype=dtype, device=dev), torch.ones(2, 7, dtype=dtype), exact=True)
    value = True if dtype == torch.bool else (3 - 2j if dtype.is_complex else 5)
    assert_flagos_close(
        torch.full((3, 2), value, dtype=dtype, device=dev), torch.full((3, 2), value, dtype=dtype), exact=True
    )
    t = torch.empty(5, dtype=dtype, device=dev)
    assert_flagos_close(torch.zeros_like(t), torch.zeros(5, dtype=dtype), exact=True)
    assert_flagos_close(torch.ones_like(t), torch.ones(5, dtype=dtype), exact=True)
    t.fill_(value)
    assert_flagos_close(t, torch.full((5,), value, dtype=dtype), exact=True)
    t.zero_()
    assert_flagos_close(t, torch.zeros(5, dtype=dtype), exact=True)


@pytest.mark.parametrize("dtype", [d for d in ALL_DTYPES if d != torch.bool and not d.is_complex],
                         ids=[i for d, i in zip(ALL_DTYPES, ids) if d != torch.bool and not d.is_complex])
def test_arange(dev, dtype):
    end = 100 if dtype not in (torch.int8, torch.uint8) else 100
    assert_flagos_close(torch.arange(end, dtype=dtype, device=dev), torch.arange(end, dtype=dtype), exact=True)
    assert_flagos_close(
        torch.arange(3, end, 7, dtype=dtype, device=dev), torch.arange(3, end, 7, dtype=dtype), exact=True
    )


@pytest.mark.parametrize("dtype", sorted(FLOATING - {torch.float16, torch.bfloat16}, key=str) +
                         [torch.float16, torch.bfloat16], ids=str)
def test_randn(dev, dtype):
    torch_fl.flagos.manual_seed(123)
    a = torch.randn(64, 33, dtype=dtype, device=dev)
    assert a.device == dev and a.dtype == dtype and a.shape == (64, 33)
    ca = a.cpu()
    assert torch.isfinite(ca).all()
    # standard normal: mean ~0, std ~1 over 2112 samples
    real = torch.view_as_real(ca).double() if dtype.is_complex else ca.double()
    assert abs(real.mean().item()) < 0.15
    assert 0.5 < real.std().item() < 1.5
    torch_fl.flagos.manual_seed(123)
    b = torch.randn(64, 33, dtype=dtype, device=dev)
    assert_flagos_close(b, ca, exact=True)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
def test_tensor_constructor_and_to(dev, dtype):
    ref = _sample(dtype)
    t = torch.tensor(ref.tolist(), dtype=dtype, device=dev)
    assert t.device == dev and t.dtype == dtype
    assert_flagos_close(t, ref, exact=True)
    t2 = ref.to(dev)
    assert_flagos_close(t2, ref, exact=True)
    t3 = ref.to("flagos")
    assert t3.device == dev
    assert_flagos_close(t3, ref, exact=True)
    t4 = ref.to(device=dev, dtype=dtype, copy=True)
    assert_flagos_close(t4, ref, exact=True)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
def test_round_trip_exact(dev, dtype):
    ref = _sample(dtype, (17, 13))
    back = ref.to(dev).cpu()
    assert back.device.type == "cpu" and back.dtype == dtype
    assert torch.equal(back, ref)
    # non-contiguous source and a flagos->flagos clone in between
    nc = ref.t()
    back2 = nc.to(dev).clone().cpu()
    assert torch.equal(back2, nc)
    assert torch.equal(ref.to(dev).to("cpu", copy=True), ref)


def test_tensor_flagos_method_and_is_flagos(dev):
    cpu = torch.arange(10.0)
    t = cpu.flagos()
    assert t.is_flagos and not cpu.is_flagos
    assert t.device == dev
    assert_flagos_close(t, cpu, exact=True)
    assert t.flagos() is t  # already there: no copy, like .cuda()
    t0 = cpu.flagos(0)
    assert t0.device == dev


@requires_two_devices
def test_to_flagos1(dev1):
    cpu = torch.randn(8, 9)
    t = cpu.to("flagos:1")
    assert t.device == dev1 and t.get_device() == 1
    assert_flagos_close(t, cpu, exact=True)
    t_from0 = cpu.to("flagos:0").to("flagos:1")
    assert t_from0.device == dev1
    assert_flagos_close(t_from0, cpu, exact=True)
    t1 = cpu.flagos(1)
    assert t1.device == dev1
    assert_flagos_close(t1, cpu, exact=True)
    assert torch.zeros(3, device=dev1).device == dev1


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_storage_methods(dev):
    cpu = torch.arange(12, dtype=torch.float32)
    st = cpu.untyped_storage()
    fst = st.flagos()
    assert fst.device.type == "flagos"
    assert fst.is_flagos
    assert fst.nbytes() == st.nbytes()
    t = torch.empty(0, dtype=torch.float32, device=dev).set_(fst)
    assert_flagos_close(t, cpu, exact=True)
    assert t.untyped_storage().device == dev
    assert bytes(fst.cpu()) == bytes(st)
    # typed storage view
    ts = torch.arange(5, dtype=torch.int64, device=dev).storage()
    assert ts.device == dev
    assert ts.tolist() == [0, 1, 2, 3, 4]
    # a view shares storage with its base
    base = torch.zeros(6, device=dev)
    view = base[2:]
    assert view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
    assert view.data_ptr() == base.data_ptr() + 2 * base.element_size()


def test_storage_resize(dev):
    t = torch.arange(4, dtype=torch.float32, device=dev)
    s = t.untyped_storage()
    s.resize_(64)
    assert s.nbytes() == 64
    assert_flagos_close(t, torch.arange(4, dtype=torch.float32), exact=True)


def test_scalar_and_item(dev):
    t = torch.tensor(3.5, device=dev)
    assert t.dim() == 0 and t.item() == 3.5
    assert torch.tensor(7, device=dev).item() == 7
    assert torch.tensor(True, device=dev).item() is True
    assert torch.arange(5, device=dev).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("dtype", [torch.qint8, torch.quint8, torch.qint32], ids=str)
def test_unsupported_dtype_is_a_clear_error(dev, dtype):
    """A quantized dtype is refused with a short message that names flagos
    and the dtype (not a dispatcher dump about a 'Quantizedflagos' key)."""
    with pytest.raises((TypeError, RuntimeError, NotImplementedError)) as info:
        torch.empty(4, dtype=dtype, device=dev)
    msg = str(info.value)
    assert "flagos" in msg, msg
    name = str(dtype).replace("torch.", "")
    assert name in msg.lower().replace("torch.", ""), f"message does not name {name}: {msg[:300]}"
    # still usable
    assert_flagos_close(torch.ones(3, device=dev) * 2, torch.full((3,), 2.0))


def test_sparse_layout_rejected(dev):
    with pytest.raises((RuntimeError, NotImplementedError, TypeError)):
        torch.empty(3, 3, layout=torch.sparse_coo, device=dev)
    assert_flagos_close(torch.ones(2, device=dev), torch.ones(2))


@pytest.mark.anyplatform
def test_mode_with_out_tensors(dev):
    """mode.values is a composite that names the devices it accepts; routed,
    it runs on the vendor's device and fills the flagos out tensors."""
    x = torch.randint(0, 3, (4, 7), generator=torch.Generator().manual_seed(0)).float()
    values = torch.empty(4, device=dev)
    indices = torch.empty(4, dtype=torch.long, device=dev)
    r = torch.mode(x.to(dev), 1, out=(values, indices))
    assert r.values is values and r.indices is indices
    torch.testing.assert_close(values.cpu(), torch.mode(x, 1).values)
    # Which of the equal elements an index names differs between CPU and CUDA.
    torch.testing.assert_close(x.gather(1, indices.cpu()[:, None])[:, 0], values.cpu())


@pytest.mark.anyplatform
@pytest.mark.parametrize("act", ["silu", "mish"])
def test_activation_backward_is_one_op_as_on_the_vendors_device(dev, act):
    """silu_backward and mish_backward have a direct kernel on CPU and CUDA
    and a CompositeImplicitAutograd decomposition that a backend without
    its own kernel runs instead (sigmoid, sub, mul, ...: five ops where the
    vendor's device runs one). flagos runs the vendor's kernel, and its
    first and second derivatives match CPU's."""
    fn = getattr(torch.nn.functional, act)
    x = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    xf = x.detach().to(dev).requires_grad_()
    (gx,) = torch.autograd.grad(fn(x).sum(), x)
    with torch.profiler.profile() as prof:
        (gf,) = torch.autograd.grad(fn(xf).sum(), xf)
    ops = {e.key for e in prof.key_averages()}
    assert f"aten::{act}_backward" in ops and "aten::sigmoid" not in ops, sorted(ops)
    assert_flagos_close(gf, gx)
    # A second derivative (create_graph) takes the decomposition on every
    # device, as autograd's formula for silu and mish asks.
    (ggx,) = torch.autograd.grad(torch.autograd.grad(fn(x).sum(), x, create_graph=True)[0].sum(), x)
    (ggf,) = torch.autograd.grad(torch.autograd.grad(fn(xf).sum(), xf, create_graph=True)[0].sum(), xf)
    assert_flagos_close(ggf, ggx)
