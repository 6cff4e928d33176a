"""Views, in-place ops, out= and a broad sweep of ATen ops (PyTorch's
OpInfo database) on flagos, compared with the reference device: CPU on the
host vendor, torch CUDA on the cuda vendor."""
import itertools
import re
import time
import warnings

import pytest
import torch

import torch_fl
from conftest import VENDOR, assert_flagos_close

pytestmark = pytest.mark.anyplatform

# --------------------------------------------------------------- views

def test_views_share_storage(dev):
    base_cpu = torch.arange(24.0).reshape(4, 6)
    base = base_cpu.to(dev)
    cases = {
        "view": (lambda x: x.view(6, 4)),
        "reshape": (lambda x: x.reshape(2, 12)),
        "transpose": (lambda x: x.transpose(0, 1)),
        "t": (lambda x: x.t()),
        "narrow": (lambda x: x.narrow(1, 2, 3)),
        "select": (lambda x: x.select(0, 2)),
        "slice_step": (lambda x: x[::2, 1::2]),
        "expand": (lambda x: x[:1].expand(5, 6)),
        "as_strided": (lambda x: x.as_strided((3, 3), (5, 1), 2)),
        "unsqueeze": (lambda x: x.unsqueeze(1)),
        "permute": (lambda x: x.unsqueeze(0).permute(2, 0, 1)),
        "diagonal": (lambda x: x.diagonal()),
        "unfold": (lambda x: x.unfold(1, 2, 2)),
        "split": (lambda x: x.split(2, dim=1)[1]),
        "chunk": (lambda x: x.chunk(2)[1]),
        "flatten": (lambda x: x.flatten()),
        "squeeze": (lambda x: x[:1].squeeze(0)),
        "view_dtype": (lambda x: x.view(torch.int32)),
        "real": (lambda x: x.view(-1)),
    }
    for name, fn in cases.items():
        v, ref = fn(base), fn(base_cpu)
        assert v.device == dev, name
        assert v.untyped_storage().data_ptr() == base.untyped_storage().data_ptr(), name
        assert v.shape == ref.shape and v.stride() == ref.stride(), name
        assert v.storage_offset() == ref.storage_offset(), name
        assert_flagos_close(v, ref, exact=True, msg=lambda m, n=name: f"{n}: {m}")
        assert v._base is base or v._base is None or v._base._base is base, name


def test_inplace_on_views_changes_base(dev):
    ref = torch.arange(30.0).reshape(5, 6)
    base = ref.to(dev)
    ops = [
        (lambda x: x[1:3].add_(10)),
        (lambda x: x.t()[2].mul_(-2)),
        (lambda x: x.narrow(0, 3, 2).narrow(1, 1, 3).fill_(7)),
        (lambda x: x.select(1, 5).sub_(100)),
        (lambda x: x.as_strided((2, 2), (7, 1), 1).div_(4)),
        (lambda x: x[::2, ::3].clamp_(min=20)),
        (lambda x: x.view(-1)[::7].neg_()),
        (lambda x: x[4].copy_(torch.arange(6.0, device=x.device) * 3 if x.device.type != "cpu" else torch.arange(6.0) * 3)),
        (lambda x: x.diagonal().addcmul_(x.diagonal(), x.diagonal(), value=0.5)),
    ]
    for fn in ops:
        fn(base)
        fn(ref)
        assert_flagos_close(base, ref)


def test_inplace_identity(dev):
    x = torch.ones(4, device=dev)
    y = x.add_(1)
    assert y is x
    z = x.mul_(torch.full((4,), 3.0, device=dev))
    assert z is x
    assert_flagos_close(x, torch.full((4,), 6.0))
    ptr = x.data_ptr()
    x.sigmoid_()
    assert x.data_ptr() == ptr
    assert_flagos_close(x, torch.full((4,), 6.0).sigmoid())


def test_inplace_broadcast_and_expanded_view(dev):
    a = torch.zeros(3, 4, device=dev)
    a += torch.arange(4.0, device=dev)
    a *= torch.tensor([[1.0], [2.0], [3.0]], device=dev)
    ref = torch.zeros(3, 4) + torch.arange(4.0)
    ref *= torch.tensor([[1.0], [2.0], [3.0]])
    assert_flagos_close(a, ref)
    with pytest.raises(RuntimeError):
        torch.zeros(4, device=dev).expand(3, 4).add_(1)  # writes into overlapping memory


@pytest.mark.parametrize("op", ["add", "mul", "matmul", "sum", "cat", "softmax", "sin", "max_dim"])
def test_out_variants_resize(dev, op):
    a_cpu, b_cpu = torch.randn(5, 7), torch.randn(5, 7)
    a, b = a_cpu.to(dev), b_cpu.to(dev)

    def run(x, y, out):
        if op == "add":
            return torch.add(x, y, alpha=2, out=out)
        if op == "mul":
            return torch.mul(x, y, out=out)
        if op == "matmul":
            return torch.matmul(x, y.t(), out=out)
        if op == "sum":
            return torch.sum(x, 1, out=out)
        if op == "cat":
            return torch.cat([x, y], 0, out=out)
        if op == "softmax":
            return torch.softmax(x, 1, out=out) if False else torch._softmax(x, 1, False, out=out)
        if op == "sin":
            return torch.sin(x, out=out)
        values, indices = out
        return torch.max(x, 1, out=(values, indices))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "output ... was resized"
        for size in (0, 3, 500):  # empty, too small, too big
            if op == "max_dim":
                out = (torch.empty(size, device=dev), torch.empty(size, dtype=torch.long, device=dev))
                ref = (torch.empty(size), torch.empty(size, dtype=torch.long))
            else:
                out, ref = torch.empty(size, device=dev), torch.empty(size)
            r = run(a, b, out)
            expected = run(a_cpu, b_cpu, ref)
            if op == "max_dim":
                assert r[0] is out[0] and r[1] is out[1]
                for got, want in zip(out, ref):
                    assert got.shape == want.shape
                    assert_flagos_close(got, want)
            else:
                assert r is out
                assert out.shape == ref.shape
                assert_flagos_close(out, expected)


def test_out_into_view_of_larger_tensor(dev):
    base = torch.zeros(4, 6, device=dev)
    ref = torch.zeros(4, 6)
    x = torch.randn(4, 3)
    torch.exp(x.to(dev), out=base[:, 3:])
    torch.exp(x, out=ref[:, 3:])
    assert_flagos_close(base, ref)


def test_mixed_cpu_scalar_tensor(dev):
    a = torch.randn(3, 3)
    s = torch.tensor(2.5)  # 0-dim CPU tensors may mix with device tensors
    assert_flagos_close(a.to(dev) * s, a * s)
    assert_flagos_close(torch.where(a.to(dev) > 0, a.to(dev), s), torch.where(a > 0, a, s))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int64, torch.int32, torch.complex64], ids=str)
def test_elementwise_and_reduction_dtypes(dev, dtype):
    g = torch.Generator().manual_seed(1)
    if dtype.is_floating_point or dtype.is_complex:
        a = torch.randn(33, 17, generator=g, dtype=torch.float64 if not dtype.is_complex else torch.complex128).to(dtype)
        b = torch.randn(33, 17, generator=g, dtype=torch.float64 if not dtype.is_complex else torch.complex128).to(dtype)
    else:
        a = torch.randint(-50, 50, (33, 17), generator=g, dtype=dtype)
        b = torch.randint(1, 50, (33, 17), generator=g, dtype=dtype)
    fa, fb = a.to(dev), b.to(dev)
    for fn in (lambda x, y: x + y, lambda x, y: x * y - y, lambda x, y: x.sum(0), lambda x, y: x.sum(),
               lambda x, y: (x == y), lambda x, y: torch.cat([x, y], 1), lambda x, y: x[y.real.abs() > 1] if not dtype.is_complex else x.flip(0),
               lambda x, y: x.t().contiguous(), lambda x, y: torch.stack([x, y]).mean(0) if dtype.is_floating_point or dtype.is_complex else x.max()):
        assert_flagos_close(fn(fa, fb), fn(a, b))


# ------------------------------------------------------- OpInfo sweep

REF_DEVICE = "cuda" if VENDOR == "cuda" else "cpu"
MAX_SAMPLES = 3
MAX_SECONDS = 1.0  # ops whose reference takes longer are skipped
RTOL, ATOL = 1e-4, 1e-5

_RANDOM_WORDS = ("rand", "dropout", "multinomial", "bernoulli", "empty", "uniform", "cauchy",
                 "geometric", "poisson", "rrelu")
_RANDOM_NAMES = {"normal", "log_normal", "exponential"}
# Their results are uninitialised memory, so there is nothing to compare.
_UNINITIALISED = {"resize_", "resize_as_"}

# Ops whose tensor arguments (besides the input) are index lists that PyTorch
# wants on the CPU whatever the input's device.
ARGS_STAY_ON_CPU = {"tensor_split"}

# OpInfo name (with ".variant") -> why it is expected to fail on flagos
# because of a torch_fl bug (reported with a repro; remove once fixed).
KNOWN_FAILURES = {}
# Same, for failures that kill the process: these are not run at all.
KNOWN_CRASHES = {}
# Ops whose result cannot live on flagos; each has an explicit error test.
UNSUPPORTED = {
    "to_sparse": "sparse layouts are not supported on flagos; tests/test_errors.py::test_sparse_result_is_a_clear_error",
}

try:
    from torch.testing._internal.common_methods_invocations import op_db as _OP_DB

    OP_DB_ERROR = None
except Exception as e:  # e.g. expecttest missing on a machine
    _OP_DB = []
    OP_DB_ERROR = f"{type(e).__name__}: {e}"


def _op_id(op):
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _is_random(op):
    if op.name in _RANDOM_NAMES or op.name == "__rand__":
        return op.name != "__rand__"
    return any(w in op.name for w in _RANDOM_WORDS) or bool(getattr(op, "has_nondeterministic_output", False))


def _selected_ops():
    ops = []
    for op in _OP_DB:
        try:
            if torch.float32 not in op.supported_dtypes("cpu"):
                continue
        except Exception:
            continue
        ops.append(op)
    return ops


OPS = _selected_ops()


def _move_tensor(t, device):
    """`t` on `device` with the same sizes, strides and storage offset over a
    copy of its whole storage, so that views (and ops such as as_strided that
    look at the storage) see the same memory layout as on the CPU."""
    t = t.detach()
    if t.device == torch.device(device) or t.layout != torch.strided or t.is_conj() or t.is_neg():
        return t.to(device)
    raw = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()) if t.device.type == "cpu" else None
    if raw is None:
        return t.to(device)
    storage = raw.to(device).untyped_storage()
    return torch.empty(0, dtype=t.dtype, device=device).set_(storage, t.storage_offset(), t.size(), t.stride())


def _move(obj, device, args_stay=False):
    """Tensors (recursively through lists, tuples, dicts) to `device`; a
    'cpu' device argument becomes `device` too (factory-like ops, `to`)."""
    if isinstance(obj, torch.Tensor):
        return _move_tensor(obj, device)
    if isinstance(obj, torch.device) and obj.type == "cpu":
        return torch.device(device)
    if isinstance(obj, str) and obj == "cpu":
        return str(torch.device(device))
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _move_sample(s, device, op_id):
    if op_id in ARGS_STAY_ON_CPU:  # index arguments that must be CPU tensors, as on CUDA
        return _move(s.input, device), s.args, s.kwargs
    return _move((s.input, s.args, s.kwargs), device)


def _compare(actual, expected, path="out", results=True):
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{path}: expected a tensor, got {type(actual)}"
        if results and expected.device.type == REF_DEVICE:
            assert actual.device.type == "flagos", f"{path}: result on {actual.device}, not flagos"
        elif not results:
            assert actual.device.type in ("flagos", expected.device.type), f"{path}: on {actual.device}"
        assert actual.shape == expected.shape, f"{path}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        assert actual.dtype == expected.dtype, f"{path}: dtype {actual.dtype} != {expected.dtype}"
        if expected.layout != torch.strided:
            return
        torch.testing.assert_close(
            actual.detach().to(expected.device).resolve_conj().resolve_neg(),
            expected.detach().resolve_conj().resolve_neg(),
            rtol=RTOL, atol=ATOL, equal_nan=True, check_device=True,
            msg=lambda m: f"{path}: {m}",
        )
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, f"{path}[{i}]", results)
    elif isinstance(expected, (int, float, complex, bool)):
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, equal_nan=True, msg=lambda m: f"{path}: {m}")
    else:
        assert type(actual) is type(expected), f"{path}: {type(actual)} vs {type(expected)}"


def run_opinfo(op, dev="flagos:0"):
    """Runs the first MAX_SAMPLES float32 samples of `op` on the reference
    device and on flagos and compares them. Returns the number of samples
    compared; calls pytest.skip when there is nothing to compare."""
    if _is_random(op):
        pytest.skip("random or nondeterministic op")
    if op.name in _UNINITIALISED:
        pytest.skip("results are uninitialised memory")
    torch.manual_seed(0)
    try:
        samples = list(itertools.islice(op.sample_inputs("cpu", torch.float32), MAX_SAMPLES))
    except Exception as e:
        pytest.skip(f"sample inputs unavailable: {type(e).__name__}")
    compared = 0
    for i, s in enumerate(samples):
        if isinstance(s.input, torch.Tensor) and s.input.layout != torch.strided:
            continue
        ref_args = _move_sample(s, REF_DEVICE, _op_id(op))
        fl_args = _move_sample(s, dev, _op_id(op))
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = op(ref_args[0], *ref_args[1], **ref_args[2])
        except Exception:
            continue  # the reference itself rejects this sample
        if time.perf_counter() - start > MAX_SECONDS:
            pytest.skip(f"reference takes more than {MAX_SECONDS} s")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            actual = op(fl_args[0], *fl_args[1], **fl_args[2])
        try:
            _compare(actual, expected)
            # inputs an op mutates must be mutated the same way
            _compare(fl_args, ref_args, "args", results=False)
        except AssertionError as e:
            raise AssertionError(f"{_op_id(op)} sample {i} ({s.summary() if hasattr(s, 'summary') else s}): {e}") from None
        compared += 1
    if not compared:
        pytest.skip("the reference fails on every sample")
    return compared


def test_op_db_importable():
    if OP_DB_ERROR:
        pytest.skip(f"torch.testing._internal op_db unavailable ({OP_DB_ERROR}); pip install expecttest")
    assert len(OPS) > 300


def _param(op):
    op_id = _op_id(op)
    marks = ()
    if op_id in UNSUPPORTED:
        marks = pytest.mark.skip(reason=UNSUPPORTED[op_id])
    elif op_id in KNOWN_CRASHES:
        marks = pytest.mark.xfail(reason=KNOWN_CRASHES[op_id], run=False)
    elif op_id in KNOWN_FAILURES:
        marks = pytest.mark.xfail(reason=KNOWN_FAILURES[op_id], strict=False)
    return pytest.param(op, id=op_id, marks=marks)


@pytest.mark.parametrize("op", [_param(op) for op in OPS])
def test_opinfo(op, dev):
    run_opinfo(op, dev)
