"""Per-op cost of dispatch on flagos against the same work on PyTorch's own
device, in the same run: µs per call for small ops (synchronized loops), on
each flagos route, and an allocator alloc/free pair.

    python benchmarks/dispatch_overhead.py [--out results/dispatch.json]

On the cuda vendor the reference is torch's CUDA device; on the host vendor
(no GPU) it is the CPU, which shows the cost of the routing layer itself.
With FlagGems, a column times FlagGems' own function called on torch CUDA
tensors: FlagGems' cost without torch_fl in between; "flagos flaggems" is
the flagos route (FlagGems' kernels replayed by torch_fl's launcher after
a record), "flagos python" FlagGems' Python function at every call.
"""
import argparse
import contextlib

import torch

from _common import environment, print_table, time_per_call, write_json

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402


def cases(dev: str, mm_n: int):
    g = torch.Generator().manual_seed(0)
    small = torch.randn(1024, generator=g)
    mat = torch.randn(mm_n, mm_n, generator=g).to(torch.bfloat16)
    logits = torch.randn(64, 1024, generator=g)
    idx = torch.randint(0, 1024, (256,), generator=g)
    host = torch.randn(1024, generator=g)
    pinned = host.pin_memory() if dev != "cpu" else host
    a, b = small.to(dev), small.to(dev)
    m = mat.to(dev)
    lg = logits.to(dev)
    ix = idx.to(dev)
    # (ATen op, the call, the same op as a call of its FlagGems function
    # given those tensors: FlagGems timed with no torch_fl in between)
    return {
        "add": ("add.Tensor", lambda: torch.add(a, b), lambda f: f(a, b)),
        "mul": ("mul.Tensor", lambda: torch.mul(a, b), lambda f: f(a, b)),
        "softmax": ("_softmax", lambda: torch.softmax(lg, dim=-1), lambda f: f(lg, -1, False)),
        "sum": ("sum", lambda: a.sum(), lambda f: f(a)),
        f"mm {mm_n} bf16": ("mm", lambda: torch.mm(m, m), lambda f: f(m, m)),
        "index": ("index.Tensor", lambda: a[ix], lambda f: f(a, [ix])),
        "cat": ("cat", lambda: torch.cat([a, b]), lambda f: f([a, b])),
        "copy h2d": ("_copy_from", lambda: pinned.to(dev, non_blocking=True), None),
        "copy d2h": ("_copy_from", lambda: a.to("cpu"), None),
        "alloc+free 1MiB": ("empty.memory_format", lambda: torch.empty(1 << 18, device=dev), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/dispatch_overhead.json")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    vendor = torch_fl.flagos.vendor()
    reference = routing.native_backend()
    routes = {"flagos default": None, "flagos native": reference}
    if torch_fl._flaggems.available():
        routes["flagos flaggems"] = "flagos"
        routes["flagos python"] = "flagos_python"

    # bf16 matmul on a CPU is slow enough to hide the dispatch cost.
    mm_n = 1024 if reference == "cuda" else 64
    ref_cases = cases(reference, mm_n)
    flagos_cases = cases("flagos", mm_n)
    rows, results = [], []
    direct = torch_fl._flaggems.available() and reference == "cuda"
    for name, (op, ref_fn, flaggems_call) in ref_cases.items():
        ref_us = time_per_call(ref_fn, reference, calls=args.calls)
        row = {"op": name, "aten": op, f"torch {reference} us": ref_us}
        if direct:
            # What torch_fl's bridge adds on the FlagGems routes is the
            # difference between this and the "flagos flaggems" column.
            fn = torch_fl._flaggems.function(op) if op in torch_fl._flaggems.available_ops() else None
            row["FlagGems on torch cuda us"] = (time_per_call(lambda: flaggems_call(fn), reference, calls=args.calls)
                                                if fn and flaggems_call else None)
        for label, backend in routes.items():
            can_route = backend is None or op in ("_copy_from", "empty.memory_format") or \
                (backend not in ("flagos", "flagos_python") or op in torch_fl._flaggems.available_ops())
            if not can_route:
                row[f"{label} us"] = None
                continue
            override = (routing.override(**{op.replace(".", "__"): backend})
                        if backend and op not in ("_copy_from", "empty.memory_format") else contextlib.nullcontext())
            with override:
                row[f"{label} us"] = time_per_call(flagos_cases[name][1], "flagos", calls=args.calls)
        row["default ratio"] = row["flagos default us"] / ref_us
        row["default route"] = routing.route_of(op) if op not in ("_copy_from", "empty.memory_format") else "direct"
        results.append(row)
        rows.append([row.get(c) for c in row])
    columns = list(results[0].keys())
    print_table(f"µs per call, flagos ({vendor}) vs torch {reference}, median of 7 x {args.calls} calls",
                columns, [[r.get(c) for c in columns] for r in results])
    launcher = torch_fl._flaggems.launcher_stats() if torch_fl._flaggems.available() else {}
    write_json(args.out, {"benchmark": "dispatch_overhead", "environment": environment(), "results": results,
                          "launcher": launcher})


if __name__ == "__main__":
    main()
