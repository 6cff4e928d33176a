"""One sample of the operator sweep (tools/operator_support.py), checked on
flagos: its result against the reference device's (torch CUDA), its input
gradients against the CPU's, its in-place and out= forms; and the records of
the random-op property checks and the hand-written samples. Each function
gives or takes plain records, so the sweep's workers only loop and log."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# random_op_checks and handwritten_op_cases sit beside this file.
sys.path.insert(0, str(ROOT / "tools"))

DTYPES = ("float32", "float16", "bfloat16")
TOL = {"float32": (1.3e-6, 1e-4), "float16": (1e-3, 1e-3), "bfloat16": (0.016, 0.016)}
SAMPLE_SEED = 1125
# Normwise relative error of a gradient against the vendor kernels' (see
# _grad_reference, _compare_grads): looser than the forward's, still far
# below the error of a kernel that reads the wrong elements.
GRAD_TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
RANDOM_WORDS = ("rand", "normal", "bernoulli", "dropout", "multinomial", "uniform", "empty",
                "exponential", "geometric", "cauchy", "log_normal", "poisson")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_random(op_name: str) -> bool:
    """A random op (rand, normal_, bernoulli...): its results differ from
    torch CUDA's by design, so samples reaching it prove nothing. The word
    may sit inside the name: native_dropout, new_empty. A backward is not
    random: native_dropout_backward scales by the mask it is given."""
    base = op_name.split(".")[0]
    return not base.endswith("_backward") and any(w in base for w in RANDOM_WORDS)


def _noncontiguous_variant(samples):
    """The first sample with a tensor of one or more dimensions, made
    non-contiguous (OpInfo's own SampleInput.noncontiguous): kernels that
    index memory as a flat array fail here and pass on contiguous samples."""
    import torch

    for sample in samples:
        if isinstance(sample.input, torch.Tensor) and sample.input.dim() >= 1:
            return [sample.noncontiguous()]
    return []


def _to(obj, device):
    """A detached copy of ``obj`` on ``device`` (None: where it is)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach() if device is None else obj.detach().to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _compare(out, ref, dtype, tolerances=None):
    import torch

    rtol, atol = (tolerances or TOL)[dtype]
    if isinstance(ref, torch.Tensor):
        assert isinstance(out, torch.Tensor), f"expected a tensor, got {type(out).__name__}"
        # A result the reference device gives on the CPU (the philox seed and
        # offset of _efficient_attention_forward) stays on the CPU on flagos.
        # Its value is generator state, or left unset without dropout: not
        # compared.
        ref_on_host = ref.device.type == "cpu" and os.environ.get("FLAGOS_SWEEP_REFERENCE", "cuda") != "cpu"
        expected = "cpu" if ref_on_host else "flagos"
        assert out.device.type == expected, f"result on {out.device}, the reference's on {ref.device}"
        if ref_on_host:
            return
        a, b = out.cpu(), ref.cpu()
        if a.dtype.is_floating_point or a.dtype.is_complex:
            try:
                torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True, check_stride=False)
            except AssertionError as e:
                diff = (a.double() - b.double()).abs()
                finite = diff[~diff.isnan()]
                raise AssertionError(f"max abs err {finite.max().item() if finite.numel() else float('nan'):.3g}: "
                                     + str(e).splitlines()[0]) from None
        else:
            torch.testing.assert_close(a, b, check_stride=False)
    elif isinstance(ref, (list, tuple)):
        assert len(out) == len(ref)
        for o, r in zip(out, ref):
            _compare(o, r, dtype, tolerances)


REHEARSAL = "FLAGOS_SWEEP_REHEARSAL"


def _reached(routing):
    """The FlagGems-routed ops the last sample ran; in a rehearsal (host
    vendor, every FlagGems op claimed but run on the CPU) every op it ran."""
    rehearsal = os.environ.get(REHEARSAL) == "1"
    return sorted(n for n, per in routing.stats().items() if rehearsal or "flagos" in per)


def _mark_leaves(obj, leaves):
    """Makes every floating tensor in ``obj`` (fresh detached copies) require
    grad, in a fixed walk order, so both devices get the same leaf list."""
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.dtype.is_floating_point:
            obj.requires_grad_(True)
            leaves.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _mark_leaves(o, leaves)
    return leaves


def _flat_tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _flat_tensors(o)]
    return []


def _place(sample, device):
    """The sample's input, args and kwargs on ``device``; a factory's
    ``device=`` keyword names it too (else arange, eye, linspace... would
    run where the sample was made)."""
    inp, args, kwargs = (_to(x, device) for x in (sample.input, sample.args, sample.kwargs))
    if "device" in kwargs:
        kwargs = dict(kwargs, device=device)
    return inp, args, kwargs


def _forward_backward(op, sample, device, backward):
    """The sample's result on ``device`` and, with ``backward``, the gradients
    of its floating inputs for a fixed random output gradient (None where the
    op gives no gradient path)."""
    import torch

    # Every run of a sample draws the same numbers (rrelu's noise, dropout's
    # mask), so its results and gradients can be compared.
    torch.manual_seed(SAMPLE_SEED)
    inp, args, kwargs = _place(sample, device)
    leaves = _mark_leaves([inp, args], []) if backward else []
    out = op(inp, *args, **kwargs)
    if not leaves:
        return out, None
    outs = [o for o in _flat_tensors(sample.output_process_fn_grad(out))
            if o.requires_grad and o.dtype.is_floating_point]
    if not outs:
        return out, None
    # A seed of its own: an output gradient equal to the input (hand-written
    # samples use small seeds) cancels the gradients of the normalizations.
    g = torch.Generator().manual_seed(20261125)
    grad_outs = [torch.randn(o.shape, generator=g, dtype=torch.float32).to(o.dtype).to(o.device) for o in outs]
    grads = torch.autograd.grad(outs, leaves, grad_outs, allow_unused=True)
    return _to(out, None), [None if t is None else t.float() for t in grads]


def _compare_grads(grads, ref_grads, dtype):
    """Normwise relative error per input gradient, over the elements both
    sides give finite: a half-type gradient rounds and overflows where its
    float32 reference does not, while a kernel reading wrong elements is off
    by order one."""
    import torch

    assert len(grads) == len(ref_grads)
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        assert (a is None) == (b is None), f"gradient of input {i}: {a is None} vs reference {b is None}"
        if b is None:
            continue
        assert a.device.type == "flagos", f"gradient of input {i} on {a.device}"
        a, b = a.cpu().double(), b.cpu().double()
        assert a.shape == b.shape, f"gradient of input {i}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        finite = torch.isfinite(a) & torch.isfinite(b)
        err = ((a[finite] - b[finite]).norm() / b[finite].norm().clamp_min(1e-12)).item() if finite.any() else 0.0
        assert err <= GRAD_TOL[dtype], f"gradient of input {i}: relative error {err:.3g} > {GRAD_TOL[dtype]}"


def _grad_reference(op, sample):
    """Input gradients of the same sample on flagos with every op FlagGems
    serves routed to the vendor's kernels: torch CUDA's own kernels, in the
    same dtype, with the same random draws (both runs are seeded alike), so
    a difference is FlagGems'. torch CUDA itself cannot run the backward in
    a process that imported torch_fl (PyTorch takes the PrivateUse1 backend
    as the process's accelerator; pytorch#161129), and the CPU is no fair
    reference: it breaks ties in sort and topk another way and sums in
    another order. None where the vendor gives no gradient for this sample
    (then neither side's backward is checked)."""
    from torch_fl import routing

    if not op.supports_autograd:
        return None
    try:
        with routing.preset("native"):
            return _forward_backward(op, sample, "flagos", True)[1]
    except Exception:
        return None


VARIANTS = ("functional", "inplace", "out")


def _variants(op):
    """The call forms of ``op`` to check: its functional form, and its
    in-place (``x.add_``) and out= forms where the OpInfo has them. They
    reach other FlagGems entries (``add_.Tensor``, ``add.out``)."""
    return [v for v in VARIANTS if v == "functional" or (v == "inplace" and op.inplace_variant is not None)
            or (v == "out" and op.supports_out)]


def _call_variant(op, sample, device, variant, like):
    """Runs the in-place or out= form on ``device``: the mutated input, or
    the out= tensors (shaped as ``like``, the functional reference result)."""
    import torch

    inp, args, kwargs = _place(sample, device)
    if variant == "inplace":
        inp = inp.clone()  # on its own device, _to aliases the sample, which later runs reuse
        op.inplace_variant(inp, *args, **kwargs)
        return inp
    outs = [torch.empty(r.shape, dtype=r.dtype, device=device) for r in _flat_tensors(like)]
    op(inp, *args, out=outs[0] if isinstance(like, torch.Tensor) else tuple(outs), **kwargs)
    return outs[0] if isinstance(like, torch.Tensor) else outs


def _run_sample(op, sample, dtype, variant="functional"):
    """Returns (status, detail, flaggems_ops_reached, gradients_compared).
    The result is compared with torch CUDA's and, for the functional form of
    a differentiable op, the input gradients with the vendor kernels'
    (_grad_reference)."""
    import torch
    from torch_fl import routing

    ref_device = os.environ.get("FLAGOS_SWEEP_REFERENCE", "cuda")
    try:
        ref, _ = _forward_backward(op, sample, ref_device, False)
        if variant != "functional":
            ref = _call_variant(op, sample, ref_device, variant, ref)
    except Exception as e:
        # A sample the reference itself refuses (say, an index tensor that must
        # stay on the CPU, or an in-place form that would change the dtype)
        # says nothing about FlagGems.
        return "reference-error", f"{type(e).__name__}: {_one_line(e)[:250]}", [], False
    ref_grads = _grad_reference(op, sample) if variant == "functional" else None
    backward = ref_grads is not None

    def on_flagos():
        if variant == "functional":
            return _forward_backward(op, sample, "flagos", backward)
        return _call_variant(op, sample, "flagos", variant, ref), None

    # --replay: the checked call is the second of its signatures, so the
    # launcher replays what it can (the first was recorded).
    for _ in range(REPLAY_WARMUP if os.environ.get(REPLAY) == "1" else 0):
        try:
            on_flagos()
        except Exception:
            break  # the checked call reports it
    routing.reset_stats()
    try:
        out, grads = on_flagos()
        torch.flagos.synchronize()
    finally:
        reached = _reached(routing)
    try:
        _compare(out, ref, dtype)
        if backward:
            _compare_grads(grads, ref_grads, dtype)
    except AssertionError as e:
        return "fail", _one_line(e)[:300], reached, backward
    return "pass", "", reached, backward


REPLAY = "FLAGOS_SWEEP_REPLAY"
REPLAY_WARMUP = 1
RANDOM_CHECKS = "random ops by their properties"
# Each hand-written case is an item of its own: "hand-written: <label>".
HANDWRITTEN = "hand-written: "


class _HandWrittenOp:
    """A case of tools/handwritten_op_cases.py, shaped as the OpInfo fields
    _run_sample reads."""
    inplace_variant = None
    supports_out = False

    def __init__(self, fn, differentiable):
        self.fn, self.supports_autograd = fn, differentiable is True

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def handwritten_items():
    import handwritten_op_cases as cases

    return [HANDWRITTEN + label for label in cases.CASES]


def handwritten_dtypes(item):
    """The dtypes a hand-written case runs in (integer cases once, shown in
    the float32 column)."""
    import handwritten_op_cases as cases

    return DTYPES[:1] if cases.CASES[item[len(HANDWRITTEN):]][2] == cases.INT else DTYPES


def handwritten_record(item, dtype, routing):
    import types

    import torch

    import handwritten_op_cases as cases

    fn, make, differentiable = cases.CASES[item[len(HANDWRITTEN):]]
    inp, args, kwargs = make(getattr(torch, dtype))
    sample = types.SimpleNamespace(input=inp, args=args, kwargs=kwargs, output_process_fn_grad=lambda o: o)
    return (_check_sample(_HandWrittenOp(fn, differentiable), sample, dtype, "functional", routing)
            | {"opinfo": item, "dtype": dtype, "sample": 0, "variant": "functional"})


def _random_op_records(routing):
    """One record per check of tools/random_op_checks.py and dtype; the
    record counts for the FlagGems ops it reached, random ones included."""
    import torch

    import random_op_checks

    for label, check in random_op_checks.CHECKS.items():
        for dtype in DTYPES:
            routing.reset_stats()
            try:
                check(getattr(torch, dtype))
                torch.flagos.synchronize()
                status, detail = "pass", ""
            except AssertionError as e:
                status, detail = "fail", _one_line(e)[:300]
            except Exception as e:
                status, detail = "error", f"{type(e).__name__}: {_one_line(e)[:250]}"
            reached = _reached(routing)
            yield {"opinfo": f"random: {label}", "dtype": dtype, "sample": 0, "variant": "property",
                   "status": status, "detail": detail, "reached": reached,
                   "culprits": [o for o in reached if _is_random(o)] or reached, "grads": False}


def _check_sample(op, sample, dtype, variant, routing):
    """One sample's record: status, detail, the FlagGems ops it reached, and
    the culprits among them (found by re-running with one on FlagGems at a time)."""
    grads = False
    try:
        status, detail, reached, grads = _run_sample(op, sample, dtype, variant)
    except Exception as e:  # flagos raised
        status, detail = "error", f"{type(e).__name__}: {_one_line(e)[:250]}"
        reached = _reached(routing)
    culprits = reached
    if status != "pass" and len(reached) > 1:
        culprits = []
        for target in reached:
            others = {o.replace(".", "__"): routing.native_backend() for o in reached if o != target}
            try:
                with routing.override(**others):
                    again = _run_sample(op, sample, dtype, variant)[0]
            except Exception:
                again = "error"
            if again != "pass":
                culprits.append(target)
        if not culprits and status == "fail":
            # No op fails alone, yet together they do (one's strided result
            # read flat by another): all of them answer for it.
            culprits, detail = list(reached), f"only together: {detail}"
    return {"status": status, "detail": detail, "reached": reached, "culprits": culprits, "grads": grads}
