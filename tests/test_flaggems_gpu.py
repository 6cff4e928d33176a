"""FlagGems routes on the GPU: FlagGems' Triton kernels run on CUDA aliases of
flagos memory, on the current flagos stream, and agree with torch CUDA.
Needs FLAGOS_VENDOR=cuda and FlagGems; elsewhere every test skips with why."""
import pytest
import torch

import torch_fl
from conftest import assert_flagos_close, requires_cuda
from test_unboxed import CASTS
from torch_fl import flaggems, routing

requires_flaggems = pytest.mark.skipif(
    not flaggems.available(), reason=f"FlagGems {flaggems.unavailable_reason()}"
)
pytestmark = [pytest.mark.cuda, pytest.mark.gpu, pytest.mark.flaggems, requires_cuda, requires_flaggems]

@pytest.fixture(autouse=True)
def _every_call_in_flaggems():
    """Each call here runs a FlagGems kernel: a new signature's first calls
    are recorded rather than served by CUDA's kernel (the default), which
    would leave a test of a few calls testing CUDA."""
    kept = flaggems.vendor_calls()
    flaggems.set_vendor_calls(0)
    yield
    flaggems.set_vendor_calls(kept)


# FlagGems' own test tolerances.
RTOL = {torch.float32: 1.3e-6, torch.float16: 1e-3, torch.bfloat16: 0.016}

CASES = {
    "add.Tensor": lambda a, b: torch.add(a, b),
    "mul.Tensor": lambda a, b: torch.mul(a, b),
    "_softmax": lambda a, b: torch.softmax(a, dim=-1),
    "mm": lambda a, b: torch.mm(a, b.t()),
}


def _inputs(dtype):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(64, 128, generator=g).to(dtype) for _ in range(2)]


@pytest.mark.parametrize("backend", ["flagos", "flagos_python"])
@pytest.mark.parametrize("dtype", list(RTOL), ids=str)
@pytest.mark.parametrize("op", list(CASES))
def test_flaggems_route_matches_torch_cuda(op, dtype, backend):
    if op not in flaggems.available_ops():
        pytest.skip(f"FlagGems does not serve {op} here")
    a, b = _inputs(dtype)
    expected = CASES[op](a.cuda(), b.cuda())
    routing.reset_stats()
    with routing.override_ops({op: backend}):
        got = CASES[op](a.to("flagos"), b.to("flagos"))
    assert routing.stats().get(op, {}).get(backend, 0) >= 1, routing.stats()
    atol = 1e-4 if dtype == torch.float32 else RTOL[dtype]
    # Triton's fp32 dot uses TF32 by default; torch CUDA's mm does not.
    if op == "mm" and dtype == torch.float32:
        atol, rtol = 1e-2, 1e-2
    else:
        rtol = RTOL[dtype]
    assert_flagos_close(got, expected, rtol=rtol, atol=atol)


def test_flaggems_kernels_follow_the_current_flagos_stream():
    if "mm" not in flaggems.available_ops():
        pytest.skip("FlagGems does not serve mm here")
    n = 2048
    g = torch.Generator().manual_seed(1)
    x_cpu = torch.randn(n, n, generator=g) / n ** 0.5
    x = x_cpu.to("flagos")
    torch.flagos.synchronize()
    side = torch.flagos.Stream()
    done = torch.flagos.Event()
    side.wait_stream(torch.flagos.current_stream())
    routing.reset_stats()
    with routing.override_ops({"mm": "flagos"}), torch.flagos.stream(side):
        assert torch.cuda.current_stream().stream_id == side.stream_id
        a = x
        for _ in range(6):  # long enough that an unordered reader sees stale data
            a = torch.mm(a, x)
        done.record()
    torch.flagos.current_stream().wait_event(done)
    b = a.sum(0) * 2  # a dependent op on the default stream
    assert routing.stats()["mm"]["flagos"] == 6
    xr = x_cpu.cuda()
    ar = xr
    for _ in range(6):
        ar = ar @ xr
    assert_flagos_close(b, ar.sum(0) * 2, rtol=2e-2, atol=2e-2)


# Ops Qwen3 runs at every layer: after one record of a signature the
# launcher replays FlagGems' kernels without Python, and every call,
# replayed or not, matches torch CUDA.
REPLAYED = {
    "add.Tensor": ("add.Tensor", lambda a, b: torch.add(a, b, alpha=0.5)),
    "mul.Tensor": ("mul.Tensor", lambda a, b: a * b),
    "_softmax": ("_softmax", lambda a, b: torch.softmax(a, dim=-1)),
    "silu": ("silu", lambda a, b: torch.nn.functional.silu(a)),
    "rsqrt": ("rsqrt", lambda a, b: torch.rsqrt(a.abs() + 1)),
    "mean.dim": ("mean.dim", lambda a, b: a.mean(-1, keepdim=True)),
    "pow.Tensor_Scalar": ("pow.Tensor_Scalar", lambda a, b: a.pow(2)),
    "neg": ("neg", lambda a, b: -a),
    "cat": ("cat", lambda a, b: torch.cat([a, b], dim=-1)),
    "sum.dim_IntList": ("sum.dim_IntList", lambda a, b: a.sum(0)),
    # In-place ops: the replay writes the caller's tensor and returns it.
    "mul_.Tensor": ("mul_.Tensor", lambda a, b: a.mul_(b)),
    "add_.Tensor": ("add_.Tensor", lambda a, b: a.add_(b, alpha=2)),
    # FlagGems copies strided arguments (contiguous()) before its kernels: the replay copies too.
    "cat of slices": ("cat", lambda a, b: torch.cat([a[:, 64:], b[:, :64]], dim=-1)),
    "sum.dim_IntList transposed": ("sum.dim_IntList", lambda a, b: a.t().sum(0)),
    # ... and copies of a permuted view (FlagGems' dim_compress): the replay copies the same view.
    "sum.dim_IntList over two dims": ("sum.dim_IntList", lambda a, b: a.view(8, 8, 128).sum((0, 2))),
    # Reduced dims together in memory: one dim of a view, no copy (torch_fl/_flaggems_adapters.py).
    "sum.dim_IntList over leading dims": ("sum.dim_IntList", lambda a, b: a.view(8, 8, 128).sum((0, 1), keepdim=True)),
    "sum.dim_IntList of a heads transpose": ("sum.dim_IntList",
                                             lambda a, b: a.view(2, 4, 8, 128).transpose(1, 2).sum((0, 1, 2), keepdim=True)),
    # Exponents 1, 2 and 3 as CUDA computes them (a copy, multiplications), others on FlagGems' pow.
    "pow.Tensor_Scalar cubed": ("pow.Tensor_Scalar", lambda a, b: a.pow(3)),
    "pow.Tensor_Scalar to the first": ("pow.Tensor_Scalar", lambda a, b: a.pow(1.0)),
    "pow.Tensor_Scalar square root": ("pow.Tensor_Scalar", lambda a, b: a.abs().pow(0.5)),
    # Kernels that accumulate (atomic adds) into memory the function zeroed:
    # the replay zeroes it again. Both run once a training step (the loss,
    # the embedding's gradient), in float32 under bf16 autocast.
    "nll_loss_forward": ("nll_loss_forward",
                         lambda a, b: torch.nn.functional.nll_loss(a.float().log_softmax(-1), _targets(a, 128))),
    "embedding_dense_backward": ("embedding_dense_backward",
                                 lambda a, b: torch.ops.aten.embedding_dense_backward(a.float(), _targets(a, 50), 50,
                                                                                      -1, False)),
}


def _targets(a, classes):
    """Class indices for a's rows, repeating (so that atomic adds meet)."""
    return (torch.arange(a.shape[0], device=a.device) * 7) % classes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(REPLAYED))
def test_replayed_launches_match_torch_cuda(case, dtype):
    op, fn = REPLAYED[case]
    if op not in flaggems.available_ops():
        pytest.skip(f"FlagGems does not serve {op} here")
    flaggems.forget_launches(op)
    before = flaggems.launcher_stats().get(op, {}).get("replayed", 0)
    with routing.override_ops({op: "flagos"}):
        for seed in range(5):  # a record, then replays, each on new values
            g = torch.Generator().manual_seed(seed)
            a, b = [torch.randn(64, 128, generator=g).to(dtype) for _ in range(2)]
            got = fn(a.to("flagos"), b.to("flagos"))
            expected = fn(a.cuda(), b.cuda())
            atol, rtol = (1e-4, 1.3e-6) if dtype == torch.float32 else (1e-2, 1e-2)
            assert_flagos_close(got, expected, rtol=rtol, atol=atol)
    st = flaggems.launcher_stats()[op]
    # A first call that autotunes (sum over two dims, on a fresh machine) is
    # refused and the next one recorded: three replays, not four.
    assert st["replayed"] - before >= 3 and st["replayable_signatures"] == 1, st


def test_new_signatures_start_on_cuda_then_replay_flaggems_kernels():
    """A decode step's KV cache grows by one each token, so its cat meets a
    new signature per token, used once per layer: CUDA's kernel serves
    those; a signature used more is recorded once, then replayed."""
    flaggems.set_vendor_calls(3)
    flaggems.forget_launches("cat")
    before = flaggems.launcher_stats().get("cat", {})
    g = torch.Generator().manual_seed(3)
    routing.reset_stats()
    with routing.override_ops({"cat": "flagos"}):
        for length, layers in [(8, 3), (9, 3), (10, 6)]:  # tokens; the last one's signature outlives 3 calls
            past, new = torch.randn(2, length, 64, generator=g), torch.randn(2, 1, 64, generator=g)
            for _ in range(layers):
                got = torch.cat([past.to("flagos"), new.to("flagos")], dim=1)
                assert_flagos_close(got, torch.cat([past, new], dim=1).cuda(), exact=True)
    st = flaggems.launcher_stats()["cat"]
    delta = {k: st[k] - before.get(k, 0) for k in ("vendor", "recorded", "replayed", "python")}
    assert delta == {"vendor": 9, "recorded": 1, "replayed": 2, "python": 0}, st
    assert routing.stats()["cat"] == {"cuda": 9, "flagos": 3}, routing.stats()["cat"]


def test_replayed_kernels_follow_the_current_flagos_stream():
    n = 1 << 24  # 64 MiB a tensor: each add takes long enough to race an unordered reader
    g = torch.Generator().manual_seed(2)
    x_cpu = torch.randn(n, generator=g)
    x = x_cpu.to("flagos")
    with routing.override_ops({"add.Tensor": "flagos"}):
        t = x * 1
        for _ in range(3):  # a record, then replays on the default stream
            torch.add(t, x)
        before = flaggems.launcher_stats()["add.Tensor"]["replayed"]
        side, done = torch.flagos.Stream(), torch.flagos.Event()
        side.wait_stream(torch.flagos.current_stream())
        with torch.flagos.stream(side):
            a = x * 2
            for _ in range(20):
                a = torch.add(a, x)
            done.record()
        torch.flagos.current_stream().wait_event(done)
        b = a * 2  # a dependent op on the default stream
    assert flaggems.launcher_stats()["add.Tensor"]["replayed"] - before == 20
    assert_flagos_close(b, x_cpu.cuda() * 44, rtol=1e-5, atol=1e-4)


def test_plain_cuda_tensors_do_not_take_flaggems():
    # FlagGems is asked what it would register; nothing lands on the CUDA key.
    a = torch.ones(4, device="cuda")
    routing.reset_stats()
    torch.testing.assert_close(a + a, torch.full((4,), 2.0, device="cuda"))
    assert routing.stats() == {}


# Strided, broadcast and column-view cases under the default routing: FlagGems
# kernels that index memory as a flat array (fill_/zero_ on a view, the Hopper
# mul and sqrt) must not be what serves them.
def _fill_column(x):
    y = x.clone()
    y[:, 3].fill_(2.0)
    return y


def _zero_column(x):
    y = x.clone()
    y[:, 3].zero_()
    return y


LAYOUT_CASES = {
    "fill_ column": _fill_column,
    "zero_ column": _zero_column,
    "mul same-rank broadcast": lambda x: x[:, :1] * x[:1, :],
    "mul transposed": lambda x: x.t() * x.t(),
    "add broadcast": lambda x: x + x[0],
    "sqrt strided": lambda x: x.abs()[:, ::2].sqrt(),
    "softmax transposed": lambda x: torch.softmax(x.t(), dim=-1),
    "sum transposed": lambda x: x.t().sum(-1),
    # slice_backward with a transposed gradient (Qwen3's rotate_half backward
    # hands it a strided one).
    "slice_backward transposed grad": lambda x: torch.ops.aten.slice_backward(x.t(), [30, 16], 0, 3, 27, 1),
    # FlagGems' float32 scatter_add_ along a non-last dim leaves its result in
    # a permuted copy (the bridge copies it into self).
    "scatter_add_ dim 0": lambda x: torch.zeros_like(x).scatter_add_(
        0, (x.abs() * 5).long() % x.shape[0], x),
    # A softmax output with strides (FlagGems' own _safe_softmax over a
    # non-last dim returns one): its backward must not read it flat.
    "_softmax_backward_data strided output": lambda x: torch.ops.aten._softmax_backward_data(
        x, torch.softmax(x.t().contiguous(), -1).t(), 0, torch.float32),
    "_log_softmax_backward_data strided output": lambda x: torch.ops.aten._log_softmax_backward_data(
        x, torch.log_softmax(x.t().contiguous(), -1).t(), 0, torch.float32),
    # Complex tensors take the vendor's kernels (Triton has no complex type).
    "div_ complex": lambda x: torch.complex(x, x.flip(0)).div_(torch.complex(x.exp(), x.cos())),
}


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_default_routes_keep_strided_and_broadcast_inputs_right(case):
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(2))
    fn = LAYOUT_CASES[case]
    assert_flagos_close(fn(x.to("flagos")), fn(x.cuda()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["mul.Tensor", "add.Tensor"])
def test_flat_operand_ops_serve_flat_calls_and_leave_the_rest_to_cuda(op):
    """The Hopper mul reads equal-rank operands as flat arrays; FlagGems' add is
    slow on broadcast ones: both serve flat calls only, under any routing."""
    if op not in flaggems.flat_operand_ops():
        pytest.skip(f"FlagGems does not serve {op} here")
    fn = torch.mul if op == "mul.Tensor" else torch.add
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(64, 48, generator=g), torch.randn(64, 48, generator=g)
    cases = {"flat": (x, y), "broadcast": (x[:, :1], y[:1, :]), "transposed": (x.t(), y.t()),
             # The Hopper mul wrote bf16 * float32 in bf16: CUDA's kernel
             # serves it; FlagGems' add promotes as torch does.
             "mixed dtypes": (x.bfloat16(), y)}
    routing.reset_stats()
    with routing.override_ops({op: "flagos"}):
        for name, (a, b) in cases.items():
            got, expected = fn(a.to("flagos"), b.to("flagos")), fn(a.cuda(), b.cuda())
            assert got.dtype == expected.dtype, (name, got.dtype, expected.dtype)
            assert_flagos_close(got, expected, rtol=1.3e-6, atol=1e-5)
    expected = {"flagos": 1, "cuda": 3} if op == "mul.Tensor" else {"flagos": 2, "cuda": 2}
    assert routing.stats()[op] == expected, routing.stats()[op]


@pytest.mark.parametrize("name", sorted(CASTS))
def test_casts_within_one_device_take_flaggems_and_match_torch_cuda(name):
    """tensor.to(dtype) within one flagos device is a routed _to_copy:
    FlagGems' to_copy, recorded once and then replayed, gives torch CUDA's
    values, dtype and strides. Complex casts keep CUDA's kernel (Triton has
    no complex type)."""
    make, cast = CASTS[name]
    flaggems.forget_launches("_to_copy")
    replays = flaggems.launcher_stats().get("_to_copy", {}).get("replayed", 0)
    routing.reset_stats()
    with routing.override_ops({"_to_copy": "flagos"}):
        for _ in range(3):  # a record, then replays
            x = make()
            got, ref = cast(x.to("flagos"), torch.device("flagos")), cast(x.cuda(), torch.device("cuda"))
            assert got.dtype == ref.dtype and got.shape == ref.shape and got.stride() == ref.stride()
            assert_flagos_close(got.resolve_conj().resolve_neg(), ref.resolve_conj().resolve_neg(), exact=True)
    route = "cuda" if make().is_complex() else "flagos"
    assert routing.stats()["_to_copy"] == {route: 3}, routing.stats()["_to_copy"]
    if route == "flagos" and make().numel():
        assert flaggems.launcher_stats()["_to_copy"]["replayed"] - replays == 2, flaggems.launcher_stats()["_to_copy"]


# (op, call, copies a replay makes): what torch_fl's wrappers of FlagGems'
# functions hand its kernels, as a Qwen3 training step calls them.
ADAPTED = {
    "RMSNorm weight gradient": ("sum.dim_IntList", lambda x: x.sum((0, 1), keepdim=True), 0),
    "q/k norm weight gradient": ("sum.dim_IntList", lambda x: x.view(2, 8, 512, 128).transpose(1, 2)
                                 .sum((0, 1, 2), keepdim=True), 0),
    "dims apart (FlagGems copies)": ("sum.dim_IntList", lambda x: x.sum((0, 2)), 1),
    "RMSNorm square": ("pow.Tensor_Scalar", lambda x: x.pow(2), 0),
    "rsqrt backward cube": ("pow.Tensor_Scalar", lambda x: x.pow(3), 0),
    "pow backward first power": ("pow.Tensor_Scalar", lambda x: x.pow(1.0), 1),
}


@pytest.mark.parametrize("name", list(ADAPTED))
def test_adapted_functions_replay_without_copies_and_match_torch_cuda(name):
    op, fn, copies = ADAPTED[name]
    if op not in flaggems.available_ops():
        pytest.skip(f"FlagGems does not serve {op} here")
    flaggems.forget_launches(op)
    g = torch.Generator().manual_seed(4)
    with routing.override_ops({op: "flagos"}):
        # A record, then replays (a first call that autotunes is recorded at the next).
        for _ in range(3):
            x = torch.randn(2, 512, 1024, generator=g)
            got = fn(x.to("flagos"))
            expected = fn(x.cuda())
            if op == "pow.Tensor_Scalar":  # the same float32 multiplications as CUDA's
                assert_flagos_close(got, expected, exact=True)
            else:
                assert_flagos_close(got, expected, rtol=1.3e-6, atol=1e-3)
            assert got.is_contiguous() and got.stride() == expected.stride()
        x = x.to("flagos")
        torch_fl._C._launcher_keep_launches(True)
        try:
            fn(x)
            kept = torch_fl._C._launcher_kept_launches()
        finally:
            torch_fl._C._launcher_keep_launches(False)
    assert flaggems.launcher_stats()[op]["python"] == 0, flaggems.launcher_stats()[op]
    # A copy the replay makes is kept as a step of function 0.
    assert sum(k[0] == 0 for k in kept) == copies, kept
