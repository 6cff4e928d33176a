"""Checks every FlagGems op that torch_fl routes against torch CUDA and
writes the operator-support table (docs/operator-support.md).

    python tools/operator_support.py --out support.json --md docs/operator-support.md \
        [--conf backends.generated.conf] [--workers 12] [--budget 420]

Runs on the GPU machine (FLAGOS_VENDOR=cuda, FlagGems installed). Inputs are
PyTorch's OpInfo samples (two per dtype, and a non-contiguous copy of one).
Each sample runs on flagos with default routing (FlagGems where it serves
the op): its result is compared with torch CUDA's and, where the op is
differentiable, its input gradients for a fixed random output gradient with
the CPU's (same dtype, or float32 where the CPU lacks the kernel) (this is how *_backward ops are reached; torch
CUDA's backward cannot run after import torch_fl, pytorch#161129). The first
sample of each dtype also runs in the OpInfo's in-place and out= forms
(reaching add_.Tensor, add.out...), and random ops are checked by their
distribution and seeding (tools/random_op_checks.py); ops no OpInfo reaches
have hand-written samples (tools/handwritten_op_cases.py). The FlagGems ops a
sample reached (routing.stats()) are credited with the outcome. A failing
sample that reached several FlagGems ops is re-run with one of them on
FlagGems at a time to find the culprit. Tolerances are FlagGems' own: rtol
fp32 1.3e-6, fp16 1e-3, bf16 0.016 (atol 1e-4, 1e-3, 0.016); gradients:
normwise relative error fp32 1e-4, fp16 1e-2, bf16 5e-2 (GRAD_TOL).
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DTYPES = ("float32", "float16", "bfloat16")
TOL = {"float32": (1.3e-6, 1e-4), "float16": (1e-3, 1e-3), "bfloat16": (0.016, 0.016)}
# Normwise relative error of a gradient against the CPU's
# (see _grad_reference, _compare_grads): looser than the forward's, still
# far below the error of a kernel that reads the wrong elements.
GRAD_TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
RANDOM_WORDS = ("rand", "normal", "bernoulli", "dropout", "multinomial", "uniform", "empty",
                "exponential", "geometric", "cauchy", "log_normal", "poisson")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_random(op_name: str) -> bool:
    """A random op (rand, normal_, bernoulli...): its results differ from
    torch CUDA's by design, so samples reaching it prove nothing. The word
    may sit inside the name: native_dropout, new_empty."""
    base = op_name.split(".")[0]
    return any(w in base for w in RANDOM_WORDS)


def _noncontiguous_variant(samples):
    """The first sample with a tensor of one or more dimensions, made
    non-contiguous (OpInfo's own SampleInput.noncontiguous): kernels that
    index memory as a flat array fail here and pass on contiguous samples."""
    import torch

    for sample in samples:
        if isinstance(sample.input, torch.Tensor) and sample.input.dim() >= 1:
            return [sample.noncontiguous()]
    return []


def _to(obj, device, float_dtype=None):
    """A detached copy of ``obj`` on ``device``; with ``float_dtype``, its
    floating tensors in that dtype."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().to(device)
        return t.to(float_dtype) if float_dtype is not None and t.dtype.is_floating_point else t
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device, float_dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device, float_dtype) for k, v in obj.items()}
    return obj


def _compare(out, ref, dtype, tolerances=None):
    import torch

    rtol, atol = (tolerances or TOL)[dtype]
    if isinstance(ref, torch.Tensor):
        assert isinstance(out, torch.Tensor), f"expected a tensor, got {type(out).__name__}"
        assert out.device.type == "flagos", f"result on {out.device}"
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


def _claim_like_the_gpu():
    """Claims every op FlagGems would serve on an NVIDIA GPU (worked out
    without one), so the host vendor dispatches them as the cuda vendor does."""
    import torch_fl
    from torch_fl import flaggems

    names = [n for n, _ in flaggems.capture_config() if n not in flaggems._NEVER_ROUTED]
    refused = dict(torch_fl._C._claim_ops(names))
    return sorted(n for n in names if n not in refused)


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


def _place(sample, device, float_dtype=None):
    """The sample's input, args and kwargs on ``device``; a factory's
    ``device=`` keyword names it too (else arange, eye, linspace... would
    run where the sample was made)."""
    inp, args, kwargs = (_to(x, device, float_dtype) for x in (sample.input, sample.args, sample.kwargs))
    if "device" in kwargs:
        kwargs = dict(kwargs, device=device)
    return inp, args, kwargs


def _forward_backward(op, sample, device, backward, float_dtype=None):
    """The sample's result on ``device`` and, with ``backward``, the gradients
    of its floating inputs for a fixed random output gradient (None where the
    op gives no gradient path)."""
    import torch

    inp, args, kwargs = _place(sample, device, float_dtype)
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
    return _to(out, device), [None if t is None else t.float() for t in grads]


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
    """Input gradients on the CPU, in the sample's dtype where the CPU has
    the kernels (like for like: half types round as FlagGems' do), else in
    float32. Not torch CUDA's: its backward cannot run in a process that
    imported torch_fl (PyTorch takes the PrivateUse1 backend as the process's
    accelerator; pytorch#161129). None where the reference has no gradient
    for this sample."""
    import torch

    if not op.supports_autograd:
        return None
    for float_dtype in (None, torch.float32):
        try:
            return _forward_backward(op, sample, "cpu", True, float_dtype)[1]
        except Exception:
            continue
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
    a differentiable op, the input gradients with the CPU's (_grad_reference)."""
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
    routing.reset_stats()
    try:
        if variant == "functional":
            out, grads = _forward_backward(op, sample, "flagos", backward)
        else:
            out = _call_variant(op, sample, "flagos", variant, ref)
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


RANDOM_CHECKS = "random ops by their properties"
HANDWRITTEN = "hand-written samples"


class _HandWrittenOp:
    """A case of tools/handwritten_op_cases.py, shaped as the OpInfo fields
    _run_sample reads."""
    inplace_variant = None
    supports_out = False

    def __init__(self, fn, differentiable):
        self.fn, self.supports_autograd = fn, differentiable is True

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _handwritten_records(routing):
    """One record per hand-written case and dtype (integer cases once, shown
    in the float32 column)."""
    import types

    import torch

    sys.path.insert(0, str(ROOT / "tools"))
    import handwritten_op_cases as cases

    for label, (fn, make, differentiable) in cases.CASES.items():
        for dtype in (DTYPES[:1] if differentiable == cases.INT else DTYPES):
            inp, args, kwargs = make(getattr(torch, dtype))
            sample = types.SimpleNamespace(input=inp, args=args, kwargs=kwargs, output_process_fn_grad=lambda o: o)
            yield (_check_sample(_HandWrittenOp(fn, differentiable), sample, dtype, "functional", routing)
                   | {"opinfo": f"hand-written: {label}", "dtype": dtype, "sample": 0, "variant": "functional"})


def _random_op_records(routing):
    """One record per check of tools/random_op_checks.py and dtype; the
    record counts for the FlagGems ops it reached, random ones included."""
    import torch

    sys.path.insert(0, str(ROOT / "tools"))
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
            others = {o.replace(".", "__"): "cuda" for o in reached if o != target}
            try:
                with routing.override(**others):
                    again = _run_sample(op, sample, dtype, variant)[0]
            except Exception:
                again = "error"
            if again != "pass":
                culprits.append(target)
    return {"status": status, "detail": detail, "reached": reached, "culprits": culprits, "grads": grads}


def worker(shard, budget, log_path):
    os.environ.setdefault("FLAGOS_VENDOR", "cuda")
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torch_fl  # noqa: F401
    from torch_fl import routing
    from torch.testing._internal.common_methods_invocations import op_db

    if os.environ.get(REHEARSAL) == "1":
        _claim_like_the_gpu()
    deadline = time.time() + budget
    ops = {o.name + ("." + o.variant_test_name if o.variant_test_name else ""): o for o in op_db}
    log = open(log_path, "a", buffering=1)  # a line per record: a killed worker keeps its results
    records = []

    def emit(record):
        records.append(record)
        log.write(json.dumps(record) + "\n")

    for name in shard:
        if time.time() > deadline:
            emit({"opinfo": name, "status": "timeout"})
            continue
        if name in (RANDOM_CHECKS, HANDWRITTEN):
            for record in (_random_op_records if name == RANDOM_CHECKS else _handwritten_records)(routing):
                emit(record)
            continue
        op = ops[name]
        for dtype in DTYPES:
            tdtype = getattr(torch, dtype)
            if tdtype not in op.supported_dtypes(os.environ.get("FLAGOS_SWEEP_REFERENCE", "cuda")):
                continue
            try:
                samples = list(op.sample_inputs("cpu", tdtype))[:2]
                samples += _noncontiguous_variant(samples)
            except Exception:
                continue
            # The in-place and out= forms on the first sample only: they
            # share the functional form's kernel math, and time is short.
            checks = [(i, sample, "functional") for i, sample in enumerate(samples)]
            checks += [(0, samples[0], v) for v in _variants(op)[1:]] if samples else []
            for i, sample, variant in checks:
                if time.time() > deadline:
                    break
                # A kernel that never finishes leaves this as the worker's
                # last line: the report names it as hung.
                log.write(json.dumps({"opinfo": name, "dtype": dtype, "sample": i, "variant": variant,
                                      "status": "started"}) + "\n")
                emit(_check_sample(op, sample, dtype, variant, routing)
                     | {"opinfo": name, "dtype": dtype, "sample": i, "variant": variant})
    log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/operator_support.json")
    parser.add_argument("--md", default=str(ROOT / "docs" / "operator-support.md"))
    parser.add_argument("--conf", default=None, help="write 'op = cuda' lines for failing ops here")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--budget", type=float, default=420, help="seconds per worker")
    parser.add_argument("--report-only", action="store_true",
                        help="only build the table from the worker logs of an earlier run")
    parser.add_argument("--static", action="store_true",
                        help="no GPU: list what torch_fl routes to FlagGems and what it keeps native, "
                             "with the GPU columns 'not run' (needs GEMS_VENDOR=nvidia, FLAGGEMS_DB_URL)")
    parser.add_argument("--rehearse", action="store_true",
                        help="no GPU: run the sweep on the host vendor against the CPU with every FlagGems op "
                             "claimed, and list the ops no sample reaches (needs FlagGems, GEMS_VENDOR=nvidia, "
                             "FLAGGEMS_DB_URL)")
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="re-render the table and conf from a JSON this script wrote on the GPU machine")
    args = parser.parse_args()
    if args.from_json:
        return render_from_json(args)
    if args.static:
        args.report_only = True
    if args.rehearse:
        os.environ.update({"FLAGOS_VENDOR": "host", "FLAGOS_SWEEP_REFERENCE": "cpu", REHEARSAL: "1"})
    logs = Path(args.out).with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("FLAGOS_VENDOR", "cuda")
    # Which ops FlagGems serves: ask in a child so this process stays CUDA-free for spawn.
    ctx = mp.get_context("spawn")
    from torch.testing._internal.common_methods_invocations import op_db

    names = [o.name + ("." + o.variant_test_name if o.variant_test_name else "") for o in op_db
             if not any(w in o.name for w in RANDOM_WORDS)]
    start = time.time()
    if not args.report_only:
        for old in logs.glob("worker*.jsonl"):
            old.unlink()
        extra = {0: [RANDOM_CHECKS], 1 % args.workers: [HANDWRITTEN]}
        shards = [extra.get(i, []) + names[i::args.workers] for i in range(args.workers)]
        procs = [ctx.Process(target=worker, args=(s, args.budget, str(logs / f"worker{i}.jsonl")))
                 for i, s in enumerate(shards)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=max(1.0, args.budget + 60 - (time.time() - start)))
            if p.is_alive():
                print(f"{p.name} did not finish in time; its remaining OpInfos count as not run")
                p.kill()
    records, hung = read_worker_logs(logs)
    if args.static:
        records, hung = [], []
    elapsed = time.time() - start
    if args.rehearse:
        return report_rehearsal(args, records)

    import torch_fl
    from torch_fl import flaggems, routing

    if args.static:
        # What setup() would install on a GPU machine, worked out here.
        items = flaggems.capture_config()
        names_fg = [n for n, _ in items if n not in flaggems._NEVER_ROUTED]
        refused = dict(torch_fl._C._claim_ops(names_fg))
        captured = dict(items)
        excluded = {**{n: why for n, why in flaggems._NEVER_ROUTED.items() if n in captured}, **refused}
        served = sorted(n for n in names_fg if n not in refused)
        config_size = len(items)
    else:
        served, excluded, config_size = flaggems.available_ops(), flaggems.excluded_ops(), flaggems.config_size()
    table = tabulate(served, records)
    summary = {
        "flaggems_config_entries": config_size,
        "routed_to_flaggems": len(served),
        "excluded": excluded,
        **classify(served, table, args.static),
        "opinfos": len(names),
        "timeouts": sum(1 for r in records if r.get("status") == "timeout"),
        "hung": hung,
        "noncontiguous": True,
        "samples_with_gradients": sum(1 for r in records if r.get("grads")),
        "variant_samples": sum(1 for r in records if r.get("variant") in ("inplace", "out")),
        "random_checks": sum(1 for r in records if r.get("variant") == "property"),
        "seconds": elapsed,
        "environment": None if args.static else {
            "device": torch_fl.flagos.get_device_name(0), "torch": __import__("torch").__version__,
            "flaggems": __import__("flag_gems").__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "table": table, "records": records}, indent=1))

    routes = {op: ("flagos" if args.static else routing.route_of(op)) for op in served}
    write_reports(args, summary, table, served, routes)
    return 0


def report_rehearsal(args, records) -> int:
    """The served ops that no sample of a rehearsal reached: they need a
    hand-written sample (tools/handwritten_op_cases.py) before the GPU run."""
    served = _claim_like_the_gpu()
    reached = {op for r in records for op in r.get("reached", ())}
    unreached = [op for op in served if op not in reached]
    Path(args.out).write_text(json.dumps({"served": len(served), "unreached": unreached}, indent=1))
    print(f"{len(served) - len(unreached)} of {len(served)} ops FlagGems serves were reached; "
          f"not reached: {' '.join(unreached) or 'none'}")
    return 0


def read_worker_logs(logs: Path):
    """The records of every worker log, and the samples a worker started but
    never finished (it was killed there: a hang)."""
    records, hung = [], []
    for path in sorted(logs.glob("worker*.jsonl")):
        last = None
        for line in path.read_text().splitlines():
            try:
                last = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed worker
            if last.get("status") != "started":
                records.append(last)
        if last and last.get("status") == "started":
            form = "" if last.get("variant", "functional") == "functional" else f", {last['variant']}"
            hung.append(f"{last['opinfo']} ({last['dtype']}, sample {last['sample']}{form})")
    return records, hung


def tabulate(served, records):
    """Per op and dtype: samples passed/failed, and the first failure."""
    table = {op: {d: {"pass": 0, "fail": 0, "detail": ""} for d in DTYPES} for op in served}
    for r in records:
        if r.get("status") in (None, "timeout", "reference-error"):
            continue
        if r.get("variant") != "property" and any(_is_random(op) for op in r["reached"]):
            continue
        for op in r["reached"]:
            if op not in table:
                continue
            cell = table[op][r["dtype"]]
            if r["status"] == "pass" or op not in r["culprits"]:
                cell["pass"] += 1
            else:
                cell["fail"] += 1
                cell["detail"] = cell["detail"] or _one_line(f"{r['opinfo']}: {r['detail']}")
    return table


def _verdict_fn(static):
    def verdict(cell):
        if static:
            return "not run"
        if cell["fail"]:
            return "fail"
        return "pass" if cell["pass"] else "no sample"
    return verdict


def classify(served, table, static):
    """The summary's op lists: failing, passing every tested dtype, never sampled."""
    verdict = _verdict_fn(static)
    failing = sorted(op for op in served if any(verdict(table[op][d]) == "fail" for d in DTYPES))
    return {
        "failing": failing,
        "passing_all_tested": sorted(op for op in served if op not in failing and
                                     any(verdict(table[op][d]) == "pass" for d in DTYPES)),
        "no_sample": sorted(op for op in served if all(verdict(table[op][d]) == "no sample" for d in DTYPES)),
    }


def render_from_json(args) -> int:
    data = json.loads(Path(args.from_json).read_text())
    summary, records = data["summary"], data["records"]
    served = sorted(data["table"])
    table = tabulate(served, records)
    summary.update(classify(served, table, False))
    failing = summary["failing"]
    packaged = _packaged_routes()
    routes = {}
    for op in served:
        # An exact line, else a bare-name line ("bmm" also holds "bmm.out").
        line = op if op in packaged else op.split(".", 1)[0]
        routes[op] = "cuda" if op in failing else packaged.get(line, "flagos")
        if routes[op] != "flagos" and op not in failing:  # held for a reason the sweep could not see
            for d in DTYPES:
                table[op][d]["detail"] = table[op][d]["detail"] or f"torch_fl/backends.conf: {packaged.get(line + '#', '')}"
    write_reports(args, summary, table, served, routes)
    return 0


def _packaged_routes():
    """op -> backend of torch_fl/backends.conf, and op + '#' -> the comment
    block above its line."""
    routes, comment = {}, []
    for line in (ROOT / "torch_fl" / "backends.conf").read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            comment.append(text.lstrip("# "))
        elif "=" in text:
            op, backend = (w.strip() for w in text.split("#")[0].split("=", 1))
            routes[op], routes[op + "#"] = backend, " ".join(comment)
        else:
            comment = []
    return routes


def write_reports(args, summary, table, served, routes) -> None:
    verdict = _verdict_fn(args.static)
    failing = summary["failing"]
    env = summary.get("environment") or {}
    static_header = [
        "Static listing made without a GPU: the routes are what `import torch_fl` sets up on the cuda "
        "vendor; the per-dtype checks against torch CUDA have not been run yet (they come from "
        "`tools/operator_support.py` on the GPU machine, which replaces this table).",
    ]
    gpu_header = [
        "Generated by `tools/operator_support.py` on the GPU machine "
        f"({env.get('device')}, torch {env.get('torch')}, FlagGems {env.get('flaggems')}). "
        "Each FlagGems op is checked against torch CUDA on PyTorch OpInfo samples (up to 2 per dtype"
        f"{', plus a non-contiguous copy of one' if summary.get('noncontiguous') else ''}) "
        "with FlagGems' tolerances (rtol fp32 1.3e-6, fp16 1e-3, bf16 0.016). Samples that reach a "
        "random op (rand, normal, dropout...) are not compared."
        + (f" Input gradients were compared as well, against the CPU's, for "
           f"{summary['samples_with_gradients']} samples (this is how `*_backward` ops are reached)."
           if "samples_with_gradients" in summary else
           " Only forward results were compared: `*_backward` ops show 'no sample'.")
        + (f" The in-place and out= forms of each OpInfo ran on its first sample "
           f"({summary['variant_samples']} samples), and random ops were checked by their distribution and "
           f"seeding (tools/random_op_checks.py, {summary['random_checks']} checks); ops no OpInfo reaches "
           f"ran hand-written samples (tools/handwritten_op_cases.py; integer-only ones in the float32 column)."
           if "variant_samples" in summary else ""),
    ]
    timeouts = summary.get("timeouts", 0)
    lines = [
        "# Operator support: FlagGems routes on flagos",
        "",
        *(static_header if args.static else gpu_header),
        "",
        f"- FlagGems config entries enabled for this GPU: {summary['flaggems_config_entries']}",
        f"- routed to FlagGems by torch_fl: {summary['routed_to_flaggems']}; "
        f"passing every tested dtype: {len(summary['passing_all_tested'])}; failing: {len(failing)} "
        f"(routed to `cuda` by default in `torch_fl/backends.conf`); no OpInfo sample reached them: "
        f"{len(summary['no_sample'])}",
        *([f"- OpInfos not run within the time budget: {timeouts} of {summary['opinfos']} "
           f"(their ops may show 'no sample')"] if timeouts and not args.static else []),
        *([f"- samples that never finished (the worker was killed there): {', '.join(summary['hung'])}"]
          if summary.get("hung") else []),
        f"- kept native (never routed to FlagGems): {len(summary['excluded'])}",
        "",
        "| op | default route | float32 | float16 | bfloat16 | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for op in served:
        cells = [verdict(table[op][d]) for d in DTYPES]
        note = next((table[op][d]["detail"] for d in DTYPES if table[op][d]["detail"]), "")
        lines.append(f"| `{op}` | {routes[op]} | " + " | ".join(cells) + f" | {note.replace('|', '/')[:160]} |")
    lines += ["", "## Kept native", "", "| op | why |", "| --- | --- |"]
    for op, why in sorted(summary["excluded"].items()):
        lines.append(f"| `{op}` | {_one_line(why)} |")
    Path(args.md).write_text("\n".join(lines) + "\n")
    if args.conf:
        conf = ["# FlagGems ops that failed tools/operator_support.py against torch CUDA: native by default."]
        conf += [f"{op} = cuda  # {next((table[op][d]['detail'] for d in DTYPES if table[op][d]['detail']), '')[:100]}"
                 for op in failing]
        Path(args.conf).write_text("\n".join(conf) + "\n")
    print(json.dumps({k: (v if not isinstance(v, (list, dict)) else len(v)) for k, v in summary.items()}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
