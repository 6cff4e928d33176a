"""The FlagGems launcher on CPU CI: stand-in kernels report their launches
as Triton's launcher hook does (torch_fl._launch_capture.note_launch), and
the launcher's records, keys and replays are checked with launches kept
instead of run (the host vendor runs no compiled kernels). The values the
replayed kernels compute are checked on the GPU (test_flaggems_gpu.py).
The suite records first calls (the harness sets vendor_calls 0), except
where a check says otherwise.
"""
import struct

import pytest

from conftest import VENDOR, run_python
from test_flaggems_bridge import _HARNESS, _results

pytestmark = [pytest.mark.anyplatform]

on_host = pytest.mark.skipif(
    VENDOR != "host", reason=f"stand-in kernels get CPU aliases on the host vendor only (live vendor: {VENDOR})")

_SUITE = r'''
import struct
from torch.utils._python_dispatch import _disable_current_modes
from torch_fl import _launch_capture
from torch_fl import _C

ADD, MUL, SEEDED, CACHED = 0xADD0, 0x1110, 0x5EED, 0xCAC4E
calls = {}
seed = [0]
cached = {}

def kernel(name, function, signature, args, grid=(1, 1, 1)):
    calls[name] = calls.get(name, 0) + 1
    _launch_capture.note_launch(grid, function, 4, 1, 0, signature, args)

def add(a, b, *, alpha=1):
    out = torch.empty_like(a)
    kernel("add", ADD, ("*fp32", "*fp32", "*fp32", "i32", "fp32", "constexpr"), (a, b, out, a.numel(), alpha, 1024))
    with _disable_current_modes():  # what the kernel computes
        out.copy_(a + alpha * b)
    return out

def mul_(a, b):
    kernel("mul_", MUL, ("*fp32", "*fp32", "i64"), (a, b, a.numel()))
    with _disable_current_modes():
        a.mul_(b)
    return a

def neg(x):
    out = torch.empty_like(x)
    kernel("neg", MUL, ("*fp32", "*fp32"), (x, out))
    with _disable_current_modes():
        out.copy_(-x)
    return out

def seeded_rand_like(x, **kwargs):  # its schema has no generator, but the seeded tag
    out = torch.empty_like(x)
    seed[0] += 1  # as a random op's philox seed: differs at every call
    kernel("rand_like", SEEDED, ("*fp32", "u64"), (out, seed[0]))
    with _disable_current_modes():
        out.copy_(torch.rand_like(x))
    return out

def bool_mm(a, b):  # the host vendor's mm has no bool kernel
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.bool)
    kernel("mm", MUL, ("*i1", "*i1", "*i1"), (a, b, out))
    with _disable_current_modes():
        out.copy_((a.float() @ b.float()).bool())
    return out

def cached_abs(x):
    out = torch.empty_like(x)
    if "t" not in cached:
        with _disable_current_modes():
            cached["t"] = torch.zeros(1)
    kernel("abs", CACHED, ("*fp32", "*fp32", "*fp32"), (x, out, cached["t"]))
    with _disable_current_modes():
        out.copy_(x.abs())
    return out

def autotuned_sin(x):
    out = torch.empty_like(x)
    if "sin" not in calls:  # the first call benchmarks another configuration
        with _launch_capture.benchmarking():
            kernel("sin", ADD, ("*fp32", "*fp32", "i32"), (x, out, 64))
    kernel("sin", ADD, ("*fp32", "*fp32", "i32"), (x, out, 128))
    with _disable_current_modes():
        out.copy_(x.sin())
    return out

def seeded_bernoulli(x, generator=None):
    out = torch.empty_like(x)
    kernel("bernoulli", SEEDED, ("*fp32", "*fp32", "u64"), (x, out, 1234))  # a seed re-set by the caller
    with _disable_current_modes():
        out.copy_(torch.bernoulli(x, generator=generator))
    return out

def foreach_mul_(xs, y):  # in-place foreach ops return nothing
    for x in xs:
        kernel("foreach", MUL, ("*fp32", "fp32"), (x, y))
        with _disable_current_modes():
            x.mul_(y)

def write_then_copy_(x, value):  # as an in-place op that copies its argument after a first kernel
    kernel("fill", MUL, ("*fp32", "fp32"), (x, value))
    with _disable_current_modes():
        x.fill_(value)
    c = x.t().contiguous() if x.dim() == 2 else x.clone()
    kernel("fill", ADD, ("*fp32", "*fp32"), (x, c))
    return x

def clamp_max(x, min=None, max=None):
    out = torch.empty_like(x)
    kernel("clamp", MUL, ("*fp32", "*fp32", "*fp32"), (x, max, out))
    with _disable_current_modes():
        out.copy_(torch.clamp(x, min, max))
    return out

def contiguous_sqrt(x):
    x = x.contiguous()  # a copy when x is strided, which the kernel then reads
    if x.dim() == 2 and x.shape[0] == 3:  # a copy of a view, as FlagGems' dim_compress makes
        x = x.permute(1, 0).contiguous().permute(1, 0)
    out = torch.empty_like(x)
    kernel("sqrt", MUL, ("*fp32", "*fp32"), (x, out))
    with _disable_current_modes():
        out.copy_(x.sqrt())
    return out

def add_into_new_tensor_(a, b, *, alpha=1):  # an in-place function returning a new tensor
    out = torch.empty_like(a)
    kernel("add_", ADD, ("*fp32", "*fp32", "*fp32"), (a, b, out))
    with _disable_current_modes():
        out.copy_(a + alpha * b)
    return out

def cloning_exp(x):
    kernel("exp", ADD, ("*fp32",), (x,))
    return torch.ops.aten.exp.default(x.clone())

def zeroed_sigmoid(x):  # accumulates into zeros, as FlagGems' nll_loss_forward and embedding backward do
    out = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
    kernel("sigmoid", ADD, ("*fp32", "*fp32"), (x, out))
    with _disable_current_modes():
        out.add_(x.sigmoid())
    return out

def zero_filled_tanh(x):  # zero_() of a fresh allocation, before any kernel: the replay zeroes it too
    out = torch.empty_like(x).zero_()
    kernel("tanh", ADD, ("*fp32", "*fp32"), (x, out))
    with _disable_current_modes():
        out.add_(x.tanh())
    return out

def late_zeroed_cos(x):  # zeroes memory a kernel has used: not a replayable allocation
    out = torch.empty_like(x)
    kernel("cos", ADD, ("*fp32", "*fp32"), (x, out))
    out.zero_()
    kernel("cos", MUL, ("*fp32", "*fp32"), (x, out))
    with _disable_current_modes():
        out.copy_(x.cos())
    return out

flaggems.install_functions({"sigmoid": zeroed_sigmoid, "tanh": zero_filled_tanh, "cos": late_zeroed_cos,
                            "add.Tensor": add, "mul_.Tensor": mul_, "add_.Tensor": add_into_new_tensor_, "neg": neg, "abs": cached_abs,
                            "rand_like": seeded_rand_like, "mm": bool_mm,
                            "exp": cloning_exp, "sin": autotuned_sin,
                            "clamp.Tensor": clamp_max,
                            "sqrt": contiguous_sqrt, "bernoulli": seeded_bernoulli,
                            "_foreach_mul_.Scalar": foreach_mul_,
                            "fill_.Scalar": write_then_copy_})
dev = "flagos"
flaggems.set_vendor_calls(0)

def u64(b):
    return struct.unpack("<Q", b)[0]

def replayed(fn):
    _C._launcher_keep_launches(True)
    try:
        out = fn()
        return out, _C._launcher_kept_launches()
    finally:
        _C._launcher_keep_launches(False)

@check
def test_replay_without_python_after_one_record():
    a, b = torch.randn(6, device=dev), torch.randn(6, device=dev)
    r = torch.add(a, b, alpha=2)  # the record
    assert torch.allclose(r.cpu(), a.cpu() + 2 * b.cpu())
    before = calls["add"]
    x, y = torch.randn(6, device=dev), torch.randn(6, device=dev)
    out, kept = replayed(lambda: torch.add(x, y, alpha=2))
    assert calls["add"] == before, "a replay ran the Python function"
    assert len(kept) == 1, kept
    function, grid, block, shared, params = kept[0]
    assert (function, grid, block, shared) == (ADD, (1, 1, 1), 128, 0)
    # a, b, out, numel (i32), alpha (fp32), then the two scratch pointers
    assert len(params) == 7
    assert u64(params[0]) == x.data_ptr() and u64(params[1]) == y.data_ptr()
    assert u64(params[2]) not in (0, x.data_ptr(), y.data_ptr())
    assert struct.unpack("<i", params[3][:4])[0] == 6
    assert struct.unpack("<f", params[4][:4])[0] == 2.0
    assert params[5] == params[6] == bytes(8)
    assert out.device.type == "flagos" and out.shape == (6,) and out.dtype == torch.float32
    st = flaggems.launcher_stats()["add.Tensor"]
    assert (st["replayed"], st["recorded"], st["python"], st["replayable_signatures"]) == (1, 1, 0, 1), st
    assert st["ran_python"] == st["recorded"] + st["python"], st

@check
def test_new_shape_scalar_alignment_or_setting_is_a_new_signature():
    a, b = torch.randn(6, device=dev), torch.randn(6, device=dev)  # replayable with alpha=2
    for args in [(torch.randn(7, device=dev), torch.randn(7, device=dev), 2),
                 (a, b, 3),
                 (torch.randn(7, device=dev)[1:], b, 2)]:  # 4 bytes off 16-byte alignment
        before = calls["add"]
        _, kept = replayed(lambda: torch.add(args[0], args[1], alpha=args[2]))
        assert calls["add"] == before + 1 and kept == [], (args, kept)
    # Another residue mod 16 is another signature, though the one 4 bytes
    # off (recorded above) replays.
    before = calls["add"]
    _, kept = replayed(lambda: torch.add(torch.randn(8, device=dev)[2:], b, alpha=2))
    assert calls["add"] == before + 1 and kept == [], kept
    # Settings a function may read are signature too.
    for setting, restore in [(lambda: torch.set_default_dtype(torch.float64), lambda: torch.set_default_dtype(torch.float32)),
                             (lambda: torch.use_deterministic_algorithms(True), lambda: torch.use_deterministic_algorithms(False))]:
        setting()
        try:
            before = calls["add"]
            _, kept = replayed(lambda: torch.add(a, b, alpha=2))
            assert calls["add"] == before + 1 and kept == [], kept
        finally:
            restore()

@check
def test_inplace_replay_writes_the_argument_and_returns_it():
    x, y = torch.ones(4, device=dev), torch.full((4,), 3.0, device=dev)
    x.mul_(y)
    assert x.cpu().tolist() == [3.0] * 4
    before = calls["mul_"]
    out, kept = replayed(lambda: x.mul_(y))
    assert out is x and calls["mul_"] == before
    assert u64(kept[0][4][0]) == x.data_ptr() and u64(kept[0][4][1]) == y.data_ptr()
    assert struct.unpack("<q", kept[0][4][2])[0] == 4

@check
def test_seeded_ops_without_a_generator_argument_are_never_recorded():
    x = torch.zeros(6, device=dev)
    for _ in range(3):
        torch.manual_seed(0)
        torch.rand_like(x)
    _, kept = replayed(lambda: torch.rand_like(x))
    st = flaggems.launcher_stats()["rand_like"]
    assert kept == [] and calls["rand_like"] == 4 and st["recorded"] == 0 and st["signatures"] == 0, st

@check
def test_a_first_call_that_autotunes_does_not_keep_a_signature_from_replay():
    x = torch.randn(5, device=dev)
    for _ in range(2):  # a record refused (it autotuned), then one that holds
        assert torch.allclose(torch.sin(x).cpu(), x.cpu().sin())
    _, kept = replayed(lambda: torch.sin(x))
    assert len(kept) == 1 and struct.unpack("<i", kept[0][4][2][:4])[0] == 128, kept
    assert calls["sin"] == 3, calls  # launches in Python: a benchmark and a run, then a run

@check
def test_first_calls_on_the_vendor_then_one_record_then_replays():
    flaggems.set_vendor_calls(2)
    try:
        x = torch.randn(9, device=dev)
        routing.reset_stats()
        before, vendor = calls.get("neg", 0), flaggems.launcher_stats().get("neg", {}).get("vendor", 0)
        for _ in range(2):
            assert torch.equal(torch.neg(x).cpu(), -x.cpu())  # the host vendor's kernel
        assert calls.get("neg", 0) == before, "a first call ran the FlagGems function"
        assert routing.stats()["neg"] == {"cpu": 2}, routing.stats()["neg"]
        assert flaggems.launcher_stats()["neg"]["vendor"] == vendor + 2
        assert torch.equal(torch.neg(x).cpu(), -x.cpu())  # the record
        assert calls["neg"] == before + 1
        _, kept = replayed(lambda: torch.neg(x))
        assert calls["neg"] == before + 1 and len(kept) == 1 and u64(kept[0][4][0]) == x.data_ptr(), kept
        assert routing.stats()["neg"] == {"cpu": 2, "flagos": 2}, routing.stats()["neg"]
        assert flaggems.launcher_stats()["neg"]["vendor"] == vendor + 2  # not counted again
    finally:
        flaggems.set_vendor_calls(0)

@check
def test_a_first_call_the_vendor_refuses_runs_in_flaggems():
    flaggems.set_vendor_calls(1)
    try:
        a = torch.tensor([[True, False], [False, True]], device=dev)
        routing.reset_stats()
        got = torch.mm(a, a)  # the host vendor's mm has no bool kernel
        assert got.device.type == "flagos" and torch.equal(got.cpu(), a.cpu()) and calls["mm"] == 1
        assert routing.stats()["mm"] == {"flagos": 1}, routing.stats()["mm"]
        assert torch.equal((a.float() + 1).cpu(), a.cpu().float() + 1)  # the process goes on
    finally:
        flaggems.set_vendor_calls(0)

@check
def test_a_full_signature_table_is_dropped_not_left_to_python():
    flaggems.forget_launches("neg")
    for n in range(1, 1026):  # 1,024 signatures fill neg's table; the next drops it
        torch.neg(torch.zeros(n, dtype=torch.float64, device=dev))  # float64: no signature of the checks above
    st = flaggems.launcher_stats()["neg"]
    assert st["flushed"] == 1 and st["signatures"] == 1 and st["python"] == 0, st
    x = torch.zeros(1025, dtype=torch.float64, device=dev)
    _, kept = replayed(lambda: torch.neg(x))  # recorded after the drop: replays
    assert len(kept) == 1, kept

@check
def test_a_full_table_drops_signatures_not_recorded_and_keeps_the_replayed_ones():
    flaggems.forget_launches("neg")
    flaggems.set_vendor_calls(2)
    try:
        steady = torch.zeros(3000, dtype=torch.float64, device=dev)
        for _ in range(3):  # two on the vendor's kernel, then the record
            torch.neg(steady)
        before, flushed = calls["neg"], flaggems.launcher_stats()["neg"]["flushed"]
        for n in range(1, 1026):  # one call each, on the vendor's kernel: the table fills at n = 1023
            torch.neg(torch.zeros(n, dtype=torch.float64, device=dev))
        st = flaggems.launcher_stats()["neg"]
        # The drop kept the recorded signature; n = 1024 and 1025 came after it.
        assert st["flushed"] == flushed + 1 and st["replayable_signatures"] == 1 and st["signatures"] == 3, st
        _, kept = replayed(lambda: torch.neg(steady))
        assert calls["neg"] == before and len(kept) == 1, (calls["neg"], before, kept)
    finally:
        flaggems.set_vendor_calls(0)

@check
def test_an_absent_optional_tensor_keeps_the_places_of_the_others():
    x, m = torch.randn(5, device=dev), torch.zeros(5, device=dev)
    assert torch.equal(torch.clamp(x, max=m).cpu(), x.cpu().clamp(max=0))
    _, kept = replayed(lambda: torch.clamp(x, max=m))
    assert u64(kept[0][4][0]) == x.data_ptr() and u64(kept[0][4][1]) == m.data_ptr(), kept

@check
def test_a_contiguous_copy_of_an_argument_is_replayed_as_a_copy():
    x = torch.rand(4, 6, device=dev)
    assert torch.allclose(torch.sqrt(x.t()).cpu(), x.cpu().t().sqrt())
    before = calls["sqrt"]
    _, kept = replayed(lambda: torch.sqrt(x.t()))
    assert calls["sqrt"] == before and [k[0] for k in kept] == [0, MUL], kept  # the copy, the launch
    assert u64(kept[1][4][0]) not in (0, x.data_ptr()), "the kernel must read the contiguous copy"
    torch.sqrt(x)
    _, kept = replayed(lambda: torch.sqrt(x))
    assert len(kept) == 1 and u64(kept[0][4][0]) == x.data_ptr(), kept
    y = torch.rand(3, 5, device=dev)
    assert torch.allclose(torch.sqrt(y).cpu(), y.cpu().sqrt())
    _, kept = replayed(lambda: torch.sqrt(y))
    assert [k[0] for k in kept] == [0, MUL] and u64(kept[1][4][0]) not in (0, y.data_ptr()), kept

@check
def test_memory_the_function_zeroed_is_zeroed_at_replay():
    for op, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        x = torch.randn(6, device=dev)
        assert torch.allclose(fn(x).cpu(), fn(x.cpu())), op  # the record
        before = calls[op]
        out, kept = replayed(lambda: fn(x))
        assert calls[op] == before, f"a replay of {op} ran the Python function"
        # The fill (kept as function 0 with the memory's address and size),
        # then the kernel, which writes the zeroed memory: the result.
        assert len(kept) == 2 and kept[0][0] == 0 and kept[1][0] == ADD, kept
        assert u64(kept[0][4][0]) == u64(kept[1][4][1]) and u64(kept[0][4][1]) == 6 * 4, kept
        # A kept launch writes nothing: what the result holds is the fill's.
        assert torch.equal(out.cpu(), torch.zeros(6)), (op, out)
        st = flaggems.launcher_stats()[op]
        assert (st["replayed"], st["recorded"], st["python"]) == (1, 1, 0), (op, st)

def given_up(op, fn, reason, kernels_per_call=1):
    """Four calls of fn: three refused records, then Python; none replays,
    and the op's last reason says why."""
    x = torch.randn(5, device=dev)
    for _ in range(4):
        assert torch.allclose(fn(x).cpu(), fn(x.cpu())), op
    st = flaggems.launcher_stats()[op]
    assert calls[op] == 4 * kernels_per_call and st["replayed"] == 0 and reason in st["reason"], st

@check
def test_zeroing_memory_a_kernel_used_is_never_replayed():
    given_up("cos", torch.cos, "after a kernel used it", kernels_per_call=2)

@check
def test_random_ops_are_never_recorded_even_when_reseeded():
    x = torch.full((6,), 0.5, device=dev)
    for _ in range(4):
        torch.manual_seed(0)
        torch.bernoulli(x)
    _, kept = replayed(lambda: torch.bernoulli(x))
    st = flaggems.launcher_stats()["bernoulli"]
    assert kept == [] and calls["bernoulli"] == 5 and st["recorded"] == 0, st

@check
def test_an_inplace_op_returning_nothing_is_replayed():
    xs = [torch.ones(3, device=dev), torch.ones(5, device=dev)]
    torch._foreach_mul_(xs, 2.0)
    assert [x.cpu().tolist() for x in xs] == [[2.0] * 3, [2.0] * 5]
    _, kept = replayed(lambda: torch._foreach_mul_(xs, 2.0))
    assert [u64(k[4][0]) for k in kept] == [x.data_ptr() for x in xs], kept

@check
def test_a_copy_is_made_where_the_function_made_it():
    x = torch.zeros(2, 3, device=dev)
    x.fill_(1.5)
    _C._launcher_keep_launches(True)
    try:
        x.fill_(1.5)
        kept = _C._launcher_kept_launches()
    finally:
        _C._launcher_keep_launches(False)
    assert [k[0] for k in kept] == [MUL, 0, ADD], kept  # launch, copy, launch
    assert u64(kept[2][4][0]) == x.data_ptr() and u64(kept[2][4][1]) not in (0, x.data_ptr())

@check
def test_two_views_of_one_tensor_map_to_the_argument_each_pointer_starts():
    base = torch.randn(2, 16, device=dev)
    left, right = base[:, :4], base[:, 4:8]
    torch.add(left, right, alpha=2)
    _, kept = replayed(lambda: torch.add(left, right, alpha=2))
    assert [u64(p) for p in kept[0][4][:2]] == [left.data_ptr(), right.data_ptr()], kept
    # The same shapes and alignment, but the views start another distance apart: another signature.
    before = calls["add"]
    _, kept = replayed(lambda: torch.add(left, base[:, 8:12], alpha=2))
    assert calls["add"] == before + 1 and kept == [], kept

@check
def test_memory_outside_arguments_and_allocations_is_never_replayed():
    given_up("abs", torch.abs, "neither an argument")

@check
def test_other_aten_ops_are_never_replayed():
    given_up("exp", torch.exp, "ATen op aten::exp")

@check
def test_flagos_python_route_and_disabled_launcher_always_run_python():
    a, b = torch.randn(3, device=dev), torch.randn(3, device=dev)
    torch.add(a, b)
    with routing.override_ops({"add.Tensor": "flagos_python"}):
        before = calls["add"]
        torch.add(a, b)
        assert calls["add"] == before + 1
    flaggems.set_launcher_enabled(False)
    try:
        before = calls["add"]
        torch.add(a, b)
        assert calls["add"] == before + 1 and not flaggems.launcher_enabled()
    finally:
        flaggems.set_launcher_enabled(True)
    before = calls["add"]
    _, kept = replayed(lambda: torch.add(a, b))
    assert calls["add"] == before and len(kept) == 1

@check
def test_replay_error_names_the_vendor_and_leaves_the_process_usable():
    a, b = torch.randn(2, device=dev), torch.randn(2, device=dev)
    torch.add(a, b)
    try:
        torch.add(a, b)  # a real launch: the host vendor has no compiled kernels
        raise AssertionError("the host vendor launched a kernel")
    except RuntimeError as e:
        assert "host vendor runs no compiled device kernels" in str(e), e
    assert torch.equal((a * 2).cpu(), a.cpu() * 2)

@check
def test_unboxed_replays_take_the_flagos_tensors_without_aliases():
    x, y = torch.randn(11, device=dev), torch.randn(11, device=dev)
    torch.add(x, y, alpha=3)  # the record: through aliases and the boxed stack
    replays = flaggems.launcher_stats()["add.Tensor"]["replayed"]
    routing.take_route_clock()
    out, kept = replayed(lambda: torch.add(x, y, alpha=3))
    clock = routing.take_route_clock()
    assert (clock["calls"], clock["aliases"]) == (1, 0), clock
    assert u64(kept[0][4][0]) == x.data_ptr() and u64(kept[0][4][1]) == y.data_ptr(), kept
    assert struct.unpack("<f", kept[0][4][4][:4])[0] == 3.0
    assert out.device == x.device and out.shape == (11,) and out.dtype == torch.float32
    assert flaggems.launcher_stats()["add.Tensor"]["replayed"] == replays + 1
    # An in-place replay returns the caller's tensor, unaliased as well.
    x.mul_(y)
    routing.take_route_clock()
    got, kept = replayed(lambda: x.mul_(y))
    assert got is x and routing.take_route_clock()["aliases"] == 0 and u64(kept[0][4][0]) == x.data_ptr()
    # clamp.Tensor has no unboxed kernel: its replays take the boxed stack,
    # over aliases of its two tensors.
    m = torch.zeros(11, device=dev)
    torch.clamp(x, max=m)
    routing.take_route_clock()
    _, kept = replayed(lambda: torch.clamp(x, max=m))
    assert len(kept) == 1 and routing.take_route_clock()["aliases"] == 2

@check
def test_an_inplace_record_returning_a_new_tensor_replays_into_the_argument():
    a, b = torch.ones(13, device=dev), torch.full((13,), 2.0, device=dev)
    got = a.add_(b)  # the record: its new tensor is copied into a
    assert got is a and a.cpu().tolist() == [3.0] * 13
    before = calls["add_"]
    routing.take_route_clock()
    got, kept = replayed(lambda: a.add_(b))
    assert got is a and calls["add_"] == before and len(kept) == 1, kept
    assert u64(kept[0][4][2]) != a.data_ptr()
    # Only the boxed route copies a result into the argument: this call took it.
    assert routing.take_route_clock()["aliases"] == 2

@check
def test_forget_drops_the_records():
    a, b = torch.randn(8, device=dev), torch.randn(8, device=dev)
    torch.add(a, b)
    flaggems.forget_launches("add.Tensor")
    assert flaggems.launcher_stats()["add.Tensor"]["signatures"] == 0
    before = calls["add"]
    torch.add(a, b)
    assert calls["add"] == before + 1

# Last: once _to_copy has a function, every cast within one device is a
# routed call, and a replay outside replayed() would launch for real.
@check
def test_a_cast_within_one_device_replays_unboxed_and_a_device_change_never_reaches_flaggems():
    CAST = 0xCA57
    def to_copy(x, *, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False,
                memory_format=None):
        assert device is None, device  # a flagos device would reach the kernel unmapped
        out = torch.empty_like(x, dtype=dtype, memory_format=memory_format or torch.preserve_format)
        kernel("_to_copy", CAST, ("*fp32", "*bf16", "i32"), (x, out, x.numel()))
        with _disable_current_modes():
            out.copy_(x)
        return out
    flaggems.install_functions({"_to_copy": to_copy})
    x_ref = torch.randn(4, 6)
    x = x_ref.to(dev)  # from the CPU: not a flagos call
    assert calls.get("_to_copy", 0) == 0
    routing.reset_stats()
    got = x.to(torch.bfloat16)  # the record
    assert got.device == x.device and got.dtype == torch.bfloat16 and calls["_to_copy"] == 1
    assert torch.equal(got.cpu(), x_ref.bfloat16())
    routing.take_route_clock()
    out, kept = replayed(lambda: x.to(dev, torch.bfloat16))  # naming the same device is the same signature
    clock = routing.take_route_clock()
    assert calls["_to_copy"] == 1 and len(kept) == 1 and kept[0][0] == CAST, kept
    assert u64(kept[0][4][0]) == x.data_ptr() and (clock["calls"], clock["aliases"]) == (1, 0), (kept, clock)
    assert out.device == x.device and out.dtype == torch.bfloat16 and out.shape == (4, 6)
    assert routing.stats()["_to_copy"] == {"flagos": 2}, routing.stats()["_to_copy"]
    # A device change keeps torch_fl's copy path.
    assert torch.equal(x.to("cpu", torch.float64), x_ref.double())
    assert calls["_to_copy"] == 1 and routing.stats()["_to_copy"] == {"flagos": 2}
    # A negative view reaches the function resolved (the kernel reads bytes).
    assert torch.equal(torch._neg_view(x).to(torch.float64).cpu(), -x_ref.double())
    assert calls["_to_copy"] == 2
    # Routed to the vendor's kernels (the host vendor's are the CPU's), a
    # cast leaves FlagGems: here as the composite, an empty tensor and copy_.
    with routing.override(_to_copy="cpu"):
        assert torch.equal(x.to(torch.float64).cpu(), x_ref.double())
    assert calls["_to_copy"] == 2 and routing.stats()["_to_copy"] == {"flagos": 3}, routing.stats()["_to_copy"]

print("RESULTS " + __import__("json").dumps(RESULTS))
'''

CHECKS = [
    "test_replay_without_python_after_one_record",
    "test_new_shape_scalar_alignment_or_setting_is_a_new_signature",
    "test_inplace_replay_writes_the_argument_and_returns_it",
    "test_seeded_ops_without_a_generator_argument_are_never_recorded",
    "test_a_first_call_that_autotunes_does_not_keep_a_signature_from_replay",
    "test_first_calls_on_the_vendor_then_one_record_then_replays",
    "test_a_first_call_the_vendor_refuses_runs_in_flaggems",
    "test_a_full_signature_table_is_dropped_not_left_to_python",
    "test_a_full_table_drops_signatures_not_recorded_and_keeps_the_replayed_ones",
    "test_an_absent_optional_tensor_keeps_the_places_of_the_others",
    "test_a_contiguous_copy_of_an_argument_is_replayed_as_a_copy",
    "test_memory_the_function_zeroed_is_zeroed_at_replay",
    "test_zeroing_memory_a_kernel_used_is_never_replayed",
    "test_random_ops_are_never_recorded_even_when_reseeded",
    "test_an_inplace_op_returning_nothing_is_replayed",
    "test_a_copy_is_made_where_the_function_made_it",
    "test_two_views_of_one_tensor_map_to_the_argument_each_pointer_starts",
    "test_memory_outside_arguments_and_allocations_is_never_replayed",
    "test_other_aten_ops_are_never_replayed",
    "test_flagos_python_route_and_disabled_launcher_always_run_python",
    "test_replay_error_names_the_vendor_and_leaves_the_process_usable",
    "test_unboxed_replays_take_the_flagos_tensors_without_aliases",
    "test_an_inplace_record_returning_a_new_tensor_replays_into_the_argument",
    "test_forget_drops_the_records",
    "test_a_cast_within_one_device_replays_unboxed_and_a_device_change_never_reaches_flaggems",
]


@pytest.fixture(scope="module")
def suite_results():
    # The route clock counts each call's aliases.
    return _results(run_python(_HARNESS + _SUITE, env_extra={"FLAGOS_ROUTE_CLOCK": "1"}))


@on_host
def test_suite_covers_every_check(suite_results):
    assert sorted(suite_results) == sorted(CHECKS)


@on_host
@pytest.mark.parametrize("name", CHECKS)
def test_launcher(suite_results, name):
    result = suite_results.get(name, "did not run")
    assert result == "ok", result


@pytest.mark.parametrize("ty,value,expected", [
    ("i32", -2, struct.pack("<i", -2)),
    ("u64", 2**63, struct.pack("<Q", 2**63)),
    ("i1", True, b"\x01"),
    ("fp32", 3, struct.pack("<f", 3.0)),
    ("fp16", 0.5, struct.pack("<e", 0.5)),
    ("bf16", 1.0 + 2**-9, b"\x80\x3f"),  # truncated as Triton's pack_bf16 does
    ("fp64", 0.1, struct.pack("<d", 0.1)),
])
def test_scalar_parameters_are_packed_as_triton_packs_them(ty, value, expected):
    from torch_fl._launch_capture import _pack
    assert _pack(ty, value) == expected


def test_a_launch_that_cannot_be_recorded_refuses_the_record_not_the_call():
    from torch_fl import _launch_capture
    recording = _launch_capture._Recording([])
    _launch_capture._local.recording = recording
    try:  # an i32 parameter given a value that needs 64 bits
        _launch_capture.note_launch((1, 1, 1), 1, 4, 1, 0, ("i32",), (2**40,))
    finally:
        _launch_capture._local.recording = None
    assert recording.refused.startswith("a launch could not be recorded (error:"), recording.refused


def test_hook_is_installed_or_says_why_not():
    from torch_fl import _launch_capture
    problem = _launch_capture.install_triton_hook()
    if problem is None:  # Triton with a CUDA driver: its launcher class is wrapped, once
        from triton.runtime import driver
        assert driver.active.launcher_cls._flagos_hooked
        assert _launch_capture.install_triton_hook() is None
    else:  # no Triton, or no driver for it: a reason, and the routes run FlagGems' Python
        assert problem.startswith("Triton's launcher is not available ("), problem


def test_vendor_calls_setting_is_checked_at_import_and_by_the_api():
    proc = run_python("import torch_fl", env_extra={"FLAGOS_FLAGGEMS_VENDOR_CALLS": "some"})
    assert proc.returncode != 0 and "FLAGOS_FLAGGEMS_VENDOR_CALLS=some is not a count of calls" in proc.stderr, \
        proc.stderr[-2000:]
    proc = run_python("""
import torch_fl
from torch_fl import flaggems
assert flaggems.vendor_calls() == 5, flaggems.vendor_calls()
for bad in (-1, 2.5, True, "3"):
    try:
        flaggems.set_vendor_calls(bad)
        raise SystemExit(f"accepted {bad!r}")
    except ValueError as e:
        assert "is not a count of calls" in str(e), e
assert flaggems.vendor_calls() == 5
flaggems.set_vendor_calls(0)
print("ok", flaggems.vendor_calls())
""", env_extra={"FLAGOS_FLAGGEMS_VENDOR_CALLS": "5"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok 0", proc.stderr[-2000:]
    proc = run_python("import torch_fl; from torch_fl import flaggems; print(flaggems.vendor_calls())")
    assert proc.returncode == 0 and proc.stdout.strip() == "64", proc.stderr[-2000:]


def test_benchmark_launches_are_not_noted_and_refuse_the_record():
    from torch_fl import _launch_capture
    recording = _launch_capture._Recording([])
    _launch_capture._local.recording = recording
    try:
        with _launch_capture.benchmarking():
            assert getattr(_launch_capture._local, "recording", None) is None
            _launch_capture.note_launch((1, 1, 1), 1, 4, 1, 0, ("i32",), (7,))
        assert _launch_capture._local.recording is recording
        _launch_capture.note_launch((1, 1, 1), 1, 4, 1, 0, ("i32",), (7,))  # refused: not noted either
    finally:
        _launch_capture._local.recording = None
    assert recording.launches == [] and recording.refused.startswith("it autotuned a kernel"), recording.refused


# Stand-ins for ops whose unboxed kernels take each kind of argument (an
# optional int list, a tensor list, a tuple result): a record made on the
# boxed route must replay on the unboxed one, which keys the call from its
# C++ arguments. Each launches one kernel reading its first tensor.
_KEY_KINDS = r'''
import struct
from torch.utils._python_dispatch import _disable_current_modes
from torch_fl import _launch_capture, _C
KERNEL = 0x4B1D

def launch_then(ref, *tensors):
    outs = [torch.empty(r.shape, dtype=r.dtype) for r in ref]
    _launch_capture.note_launch((1, 1, 1), KERNEL, 4, 1, 0, ("*fp32",) * (len(tensors) + len(outs)),
                                (*tensors, *outs))
    with _disable_current_modes():
        for o, r in zip(outs, ref):
            o.copy_(r)
    return outs

def mean_dim(x, dim, keepdim=False, *, dtype=None):
    with _disable_current_modes():
        ref = torch.mean(x, dim, keepdim=keepdim, dtype=dtype)
    return launch_then([ref], x)[0]

def sum_dim(x, dim, keepdim=False, *, dtype=None):
    with _disable_current_modes():
        ref = torch.sum(x, dim, keepdim=keepdim, dtype=dtype)
    return launch_then([ref], x)[0]

def cat(tensors, dim=0):
    with _disable_current_modes():
        ref = torch.cat(tensors, dim)
    return launch_then([ref], *tensors)[0]

def nll_loss_forward(x, target, weight, reduction, ignore_index):
    with _disable_current_modes():
        ref = torch.ops.aten.nll_loss_forward(x, target, weight, reduction, ignore_index)
    return tuple(launch_then(list(ref), x, target))

flaggems.install_functions({"mean.dim": mean_dim, "sum.dim_IntList": sum_dim, "cat": cat,
                            "nll_loss_forward": nll_loss_forward})
dev = "flagos"
x, y = torch.randn(3, 5, device=dev), torch.randn(3, 5, device=dev)
target = torch.tensor([1, 0, 4], device=dev)
CALLS = {
    "mean.dim": lambda: torch.mean(x, (0, 1), keepdim=True),
    "sum.dim_IntList": lambda: torch.sum(y, 1),
    "cat": lambda: torch.cat([x, y], 1),
    "nll_loss_forward": lambda: torch.ops.aten.nll_loss_forward(torch.log_softmax(x, 1), target, None, 1, -100),
}
for op, call in CALLS.items():
    @check
    def replays_without_aliases(op=op, call=call):
        got = call()  # the record, on the boxed route's stack
        with _disable_current_modes():
            expected = {"mean.dim": lambda: torch.mean(x.cpu(), (0, 1), keepdim=True),
                        "sum.dim_IntList": lambda: torch.sum(y.cpu(), 1),
                        "cat": lambda: torch.cat([x.cpu(), y.cpu()], 1),
                        "nll_loss_forward": lambda: torch.ops.aten.nll_loss_forward(
                            torch.log_softmax(x.cpu(), 1), target.cpu(), None, 1, -100)}[op]()
        for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
            assert g.device.type == "flagos" and torch.allclose(g.cpu(), e), (op, g, e)
        routing.take_route_clock()
        _C._launcher_keep_launches(True)
        try:
            replayed = call()
            kept = _C._launcher_kept_launches()
        finally:
            _C._launcher_keep_launches(False)
        clock = routing.take_route_clock()
        assert len(kept) == 1 and kept[0][0] == KERNEL, (op, kept)
        results = replayed if isinstance(replayed, tuple) else (replayed,)
        assert all(r.device.type == "flagos" and r.shape == g.shape
                   for r, g in zip(results, got if isinstance(got, tuple) else (got,))), (op, results)
        # The log_softmax before nll_loss_forward aliases its argument (no
        # stand-in serves it); the replayed op itself aliases nothing.
        assert clock["aliases"] == (1 if op == "nll_loss_forward" else 0), (op, clock)
    replays_without_aliases.__name__ = op
    RESULTS[op] = RESULTS.pop("replays_without_aliases")
print("RESULTS " + __import__("json").dumps(RESULTS))
'''


@on_host
def test_unboxed_replays_key_every_argument_kind_as_the_boxed_route():
    results = _results(run_python(_HARNESS + _KEY_KINDS, env_extra={"FLAGOS_ROUTE_CLOCK": "1"}))
    assert sorted(results) == ["cat", "mean.dim", "nll_loss_forward", "sum.dim_IntList"], results
    failed = {op: r for op, r in results.items() if r != "ok"}
    assert not failed, failed
