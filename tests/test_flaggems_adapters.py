"""torch_fl's wrappers around FlagGems functions (torch_fl/_flaggems_adapters.py):
each gives a FlagGems function its calls in the form it serves fast and returns
torch's values and layout. Stand-in functions play FlagGems here; the GPU
tests (test_flaggems_gpu.py) run FlagGems' own against torch CUDA."""
import pytest
import torch

import torch_fl
from conftest import VENDOR, run_python
from test_flaggems_bridge import _HARNESS, _results
from torch_fl import _flaggems_adapters as adapters

pytestmark = pytest.mark.anyplatform


def test_functions_that_read_flat_get_contiguous_tensors():
    seen = []
    wrapped = adapters.with_contiguous_tensors(lambda *a, **k: seen.append([t.is_contiguous() for t in a[:2]]) or a)
    grad, out = torch.randn(4, 6), torch.randn(6, 4).t()
    args = wrapped(grad, out, 0, torch.float32)
    assert seen == [[True, True]] and args[2:] == (0, torch.float32)
    torch.testing.assert_close(args[1], out)
    assert args[0] is grad  # no copy where none is needed
    for name in adapters.READS_FLAT:
        assert torch_fl._C._op_exists(name), name


def _integers(*shape, dtype=torch.float32):
    """Small integers as floats: every order of summation gives the same value."""
    g = torch.Generator().manual_seed(sum(shape))
    return torch.randint(-8, 8, shape, generator=g).to(dtype)


def _heads(b=2, s=6, h=4, d=8):
    """Attention's [batch, seq, heads, dim] view of a [batch, heads, seq, dim] tensor."""
    return _integers(b, h, s, d).transpose(1, 2)


# (input, dim, keepdim, dtype, what the stand-in must get: (its dim, the view's
# shape) with no copy, or None where the call passes through unchanged)
SUMS = {
    "RMSNorm weight gradient": (lambda: _integers(2, 6, 8), [0, 1], True, None, ([0], (12, 8))),
    "leading dims, no keepdim": (lambda: _integers(2, 6, 8), [0, 1], False, None, ([0], (12, 8))),
    "trailing dims": (lambda: _integers(2, 6, 8), [1, 2], False, None, ([1], (2, 48))),
    "negative dims": (lambda: _integers(2, 6, 8), [-2, -3], True, None, ([0], (12, 8))),
    "every dim": (lambda: _integers(2, 6, 8), [0, 1, 2], False, None, ([0], (96,))),
    "q/k norm weight gradient": (lambda: _heads(), [0, 1, 2], True, None, ([0], (48, 8))),
    "one dim of a transpose": (lambda: _integers(8, 6).t(), [0], False, None, ([1], (8, 6))),
    "size-1 dims among them": (lambda: _integers(2, 1, 6, 8), [0, 1, 2], True, None, ([0], (12, 8))),
    "a size-1 dim kept": (lambda: _integers(2, 6, 1, 8), [0, 1], False, None, ([0], (12, 8))),
    "with a dtype": (lambda: _integers(2, 6, 8, dtype=torch.bfloat16), [0, 1], False, torch.float32, ([0], (12, 8))),
    "an offset view": (lambda: _integers(3, 6, 8)[1:], [0, 1], True, None, ([0], (12, 8))),
    # FlagGems' own path, copies and all:
    "dims apart in memory": (lambda: _integers(2, 6, 8), [0, 2], False, None, None),
    "kept dims out of order": (lambda: _heads(), [3], True, None, None),
    "expanded": (lambda: _integers(1, 6, 8).expand(3, 6, 8), [0, 1], False, None, None),
    "gapped": (lambda: _integers(2, 6, 16)[..., :8], [0, 1], False, None, None),
    "only size-1 dims reduced": (lambda: _integers(2, 1, 8), [1], False, None, None),
    "empty": (lambda: _integers(0, 6, 8), [0, 1], False, None, None),
    "no dims": (lambda: _integers(2, 6, 8), [], False, None, None),
    "all dims (None)": (lambda: _integers(2, 6, 8), None, False, None, None),
}


@pytest.mark.parametrize("case", list(SUMS))
def test_sum_gets_one_dim_of_the_memory_as_it_lies(case):
    make, dim, keepdim, dtype, wanted = SUMS[case]
    x = make()
    seen = []

    def sum_dim(inp, d, kd=False, *, dtype=None):
        seen.append((inp, d, kd))
        return torch.sum(inp, d, kd, dtype=dtype)

    got = adapters.sum_in_memory_order(sum_dim)(x, dim, keepdim, dtype=dtype)
    expected = torch.sum(x, dim, keepdim, dtype=dtype)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.is_contiguous() and torch.equal(got, expected)
    (inp, d, kd), = seen
    if wanted is None:
        assert inp is x and d == dim and kd == keepdim
        return
    want_dim, want_shape = wanted
    assert (d, kd, tuple(inp.shape)) == (want_dim, False, want_shape)
    assert inp.is_contiguous() and inp.data_ptr() == x.data_ptr(), "the function got a copy"


def test_sum_leaves_bad_dims_to_the_function_to_refuse():
    x = _integers(2, 6, 8)
    adapted = adapters.sum_in_memory_order(torch.sum)
    for dim in ([0, 0], [3], [True]):
        with pytest.raises((RuntimeError, IndexError, TypeError)) as expected:
            torch.sum(x, dim)
        with pytest.raises(type(expected.value)):
            adapted(x, dim)


class _Calls:
    def __init__(self):
        self.log = []

    def pow(self, x, e):
        self.log.append(("pow", e))
        return torch.pow(x, e)

    def mul(self, a, b):
        self.log.append(("mul", a is b))
        return torch.mul(a, b)


# (input, exponent, the calls the stand-ins get; [] for a clone)
POWS = {
    "squared": (lambda: torch.randn(6, 8), 2, [("mul", True)]),
    "squared, float exponent": (lambda: torch.randn(6, 8), 2.0, [("mul", True)]),
    "squared bf16": (lambda: torch.randn(6, 8).bfloat16(), 2, [("mul", True)]),
    "cubed": (lambda: torch.randn(6, 8), 3, [("mul", True), ("mul", False)]),
    "cubed float64": (lambda: torch.randn(6, 8, dtype=torch.float64), 3.0, [("mul", True), ("mul", False)]),
    "to the first": (lambda: torch.randn(6, 8), 1.0, []),
    # FlagGems' pow:
    "cubed bf16 (CUDA rounds once)": (lambda: torch.randn(6, 8).bfloat16(), 3, [("pow", 3)]),
    "square root": (lambda: torch.rand(6, 8), 0.5, [("pow", 0.5)]),
    "fourth": (lambda: torch.randn(6, 8), 4, [("pow", 4)]),
    "strided": (lambda: torch.randn(8, 6).t(), 2, [("pow", 2)]),
    "integers": (lambda: torch.arange(6), 2, [("pow", 2)]),
    "bool exponent": (lambda: torch.randn(6, 8), True, [("pow", True)]),
}


@pytest.mark.parametrize("case", list(POWS))
def test_pow_multiplies_as_cuda_does(case):
    make, exponent, wanted = POWS[case]
    x = make()
    calls = _Calls()
    got = adapters.pow_by_multiplication(calls.pow, calls.mul)(x, exponent)
    expected = torch.pow(x, exponent)
    assert calls.log == wanted
    assert got.dtype == expected.dtype and got.shape == expected.shape and got.stride() == expected.stride()
    assert torch.equal(got, expected)  # bit for bit: the same multiplications
    assert got.data_ptr() != x.data_ptr()


def test_adapt_wraps_the_ops_it_knows_and_leaves_the_rest():
    def fn(*a, **k):
        return "fn"
    items = [("sum.dim_IntList", fn), ("pow.Tensor_Scalar", fn), ("mul.Tensor", fn), ("add.Tensor", fn),
             ("_softmax_backward_data", fn)]
    got = dict(adapters.adapt(items))
    assert got["mul.Tensor"] is fn and got["add.Tensor"] is fn
    assert all(got[n] is not fn for n in ("sum.dim_IntList", "pow.Tensor_Scalar", "_softmax_backward_data"))
    # Without FlagGems' mul, pow stays FlagGems' own.
    assert dict(adapters.adapt([("pow.Tensor_Scalar", fn)]))["pow.Tensor_Scalar"] is fn


# A stand-in for FlagGems' sum as it handles memory: over several dims it
# copies the input with them moved last; over one, it makes the input
# contiguous. Its kernel reads the (copied) input and writes the result.
_SUM_SUITE = r'''
from torch.utils._python_dispatch import _disable_current_modes
from torch_fl import _C, _launch_capture, _flaggems_adapters
SUM = 0x5A11

def flaggems_sum(x, dim, keepdim=False, *, dtype=None):
    dims = [d % x.dim() for d in dim]
    with _disable_current_modes():
        ref = torch.sum(x, dims, keepdim=keepdim, dtype=dtype)
    if len(dims) > 1:
        x = x.permute([d for d in range(x.dim()) if d not in dims] + dims)
    x = x.contiguous()
    out = torch.empty(ref.shape, dtype=ref.dtype, device=x.device)
    _launch_capture.note_launch((1, 1, 1), SUM, 4, 1, 0, ("*fp32", "*fp32"), (x, out))
    with _disable_current_modes():
        out.copy_(ref)
    return out

flaggems.install_functions(dict(_flaggems_adapters.adapt([("sum.dim_IntList", flaggems_sum)])))
CASES = {
    "weight gradient": (lambda: torch.randn(2, 6, 8), (0, 1), True, 0),
    "q/k norm weight gradient": (lambda: torch.randn(2, 4, 6, 8).transpose(1, 2), (0, 1, 2), True, 0),
    "dims apart": (lambda: torch.randn(2, 6, 8), (0, 2), False, 1),
}
for name, (make, dim, keepdim, copies) in CASES.items():
    @check
    def replays(make=make, dim=dim, keepdim=keepdim, copies=copies):
        first = make().to("flagos")
        recorded = torch.sum(first, dim, keepdim)  # the stand-in computes this one
        expected = torch.sum(first.cpu(), dim, keepdim)
        assert recorded.shape == expected.shape and torch.allclose(recorded.cpu(), expected, atol=1e-5)
        x = make().to("flagos")
        _C._launcher_keep_launches(True)
        try:
            got = torch.sum(x, dim, keepdim)
            kept = _C._launcher_kept_launches()
        finally:
            _C._launcher_keep_launches(False)
        # The kernel's launch, after the copies the record made (function 0).
        assert [k[0] for k in kept] == [0] * copies + [SUM], kept
        if not copies:
            assert __import__("struct").unpack("<Q", kept[-1][4][0])[0] == x.data_ptr()
        # A replay launches nothing on the host vendor: its values are the GPU tests' to check.
        assert got.device.type == "flagos" and got.shape == expected.shape and got.is_contiguous()
        assert flaggems.launcher_stats()["sum.dim_IntList"]["python"] == 0
    replays.__name__ = name
    RESULTS[name] = RESULTS.pop("replays")
finish()
'''


@pytest.mark.skipif(VENDOR != "host", reason=f"stand-in kernels get CPU aliases on the host vendor only (live vendor: {VENDOR})")
def test_adapted_sum_records_and_replays_without_a_copy():
    results = _results(run_python(_HARNESS + _SUM_SUITE))
    assert sorted(results) == ["dims apart", "q/k norm weight gradient", "weight gradient"], results
    failed = {name: r for name, r in results.items() if r != "ok"}
    assert not failed, failed
