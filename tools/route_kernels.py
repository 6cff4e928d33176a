"""Which route runs each op of a Qwen3 step faster on the GPU: the device
time of every ATen op's kernels in one training step (and one 128-token
prefill) under the "native" routing (the vendor's kernels) and the
"flaggems" routing (FlagGems' kernels, replayed), in one process, joined by
op. The routing table holds an op on the vendor's kernel where FlagGems'
kernel is slower in the steps that users run; this tool is the measurement
behind such a line in torch_fl/speed_holds_cuda.conf.

    python tools/route_kernels.py [--rows 40] [--out route_kernels.json] [--skip-prefill] [--ablate]

Each routing warms up past FlagGems' records first (a training step's
decoder-layer ops record in its third step, a prefill's once-per-forward ops
after calls_past_records() prefills), so FlagGems' column is the replayed
kernels'. An op's device time is that of the kernels launched inside it
(torch.profiler's self device time), so a nested op's kernels count once,
under the nested op. "routes" gives the calls per backend of the op's
overloads under the flaggems routing: an op that FlagGems' wrapper sends on
to the vendor for some arguments (mul with broadcasting) shows both.

An op's route also changes the time of other ops' kernels: a kernel that
returns another memory layout than the vendor's makes a later copy cheaper
or dearer. --ablate measures that: from the flaggems routing, each op that
FlagGems serves in the step is moved back to the vendor's kernel alone, and
the step's whole kernel time (and its copies') is compared with the
flaggems routing's.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import torch_fl  # noqa: E402,F401
from torch_fl import routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402
from _common import calls_past_records, sync  # noqa: E402

ROUTINGS = ("native", "flaggems")


def device_us_by_op(ops: dict) -> dict:
    """{ATen op: (calls, device µs)} of an op_table(), ops only."""
    return {name: (row["calls"], row["device_us"]) for name, row in ops.items()
            if name.startswith("aten::") and not row["kernel"]}


def routes_by_op(stats: dict) -> dict:
    """routing.stats() by ATen op name ("aten::mul"): calls per backend,
    over the op's overloads."""
    routes = {}
    for overload, per_backend in stats.items():
        name = "aten::" + overload.split(".", 1)[0]
        for backend, n in per_backend.items():
            routes.setdefault(name, {})
            routes[name][backend] = routes[name].get(backend, 0) + n
    return routes


def profile_training(base, name: str, tokens: torch.Tensor, changes: Optional[dict] = None) -> tuple:
    """Step 3 (0-based) of AdamW with bf16 autocast on a fresh copy of the
    model under routing `name` (and `changes` to it, {overload: backend}):
    the op table, the routes of the four steps by overload, and the
    profiled step's wall time."""
    routing.reset_stats()
    with routing.preset(name), routing.override_ops(changes or {}):
        profiled = qwen3.profiled_train(qwen3.clone_to(base, "flagos"), [tokens], profile_step=3, lr=1e-4,
                                        foreach=True, autocast_dtype=torch.bfloat16)
    return device_us_by_op(profiled["ops"]), routing.stats(), profiled["step_ms"]


def ablate(base, tokens: torch.Tensor, flaggems_stats: dict, baseline: dict) -> list:
    """The step's kernel time with each op that FlagGems served (all of its
    overloads that did) moved back to the vendor, against the flaggems
    routing's; most saved first."""
    native = routing.native_backend()
    by_op = {}
    for overload, per_backend in flaggems_stats.items():
        if per_backend.get("flagos"):
            by_op.setdefault(overload.split(".", 1)[0], []).append(overload)
    total0 = sum(us for _, us in baseline.values())
    copy0 = baseline.get("aten::copy_", (0, 0.0))[1]
    rows = []
    for op, overloads in sorted(by_op.items()):
        table, _, _ = profile_training(base, "flaggems", tokens, {o: native for o in overloads})
        total = sum(us for _, us in table.values())
        rows.append({"op": op, "overloads": overloads, "kernel_us": total, "saved_us": total0 - total,
                     "copy_saved_us": copy0 - table.get("aten::copy_", (0, 0.0))[1],
                     "own_saved_us": baseline.get(f"aten::{op}", (0, 0.0))[1] - table.get(f"aten::{op}", (0, 0.0))[1]})
        print(f"  {op} on {native}: step kernel time {total / 1e3:.2f} ms", flush=True)
    rows.sort(key=lambda row: -row["saved_us"])
    return rows


def print_ablation(rows: list, total_us: float) -> None:
    print(f"\nEach op alone back on the vendor's kernel, from the flaggems routing ({total_us / 1e3:.1f} ms of kernels):")
    print(f"{'op':28} {'kernel ms':>9} {'saved us':>9} {'its own':>8} {'copies':>8}  overloads")
    for row in rows:
        print(f"{row['op'][:28]:28} {row['kernel_us'] / 1e3:9.2f} {row['saved_us']:9.0f} {row['own_saved_us']:8.0f} "
              f"{row['copy_saved_us']:8.0f}  {', '.join(row['overloads'])}")


def profile_prefill(base, name: str) -> tuple:
    """One bf16 prefill of 128 tokens after the warm-up past the records:
    the op table and the prefill's routes by overload."""
    from torch.profiler import profile

    with routing.preset(name):
        model = qwen3.clone_to(base, "flagos", torch.bfloat16)
        prompt = qwen3.random_tokens(1, 128, qwen3.vocab_size(base), seed=1).to("flagos")
        decoder = qwen3.Decoder(model, prompt)
        for _ in range(calls_past_records()):
            decoder.prefill()
        sync("flagos")
        routing.reset_stats()
        with profile(activities=qwen3.profiler_activities()) as prof:
            decoder.prefill()
            sync("flagos")
    return device_us_by_op(qwen3.op_table(prof)), routing.stats()


def join(tables: dict, routes: dict) -> list:
    """One row per op: calls and device µs per routing, and the flaggems
    routing's routes; by the device time FlagGems adds, most first."""
    names = set().union(*(t.keys() for t in tables.values()))
    rows = []
    for name in names:
        row = {"op": name, "routes": routes.get(name, {})}
        for r in ROUTINGS:
            calls, us = tables[r].get(name, (0, 0.0))
            row[f"{r}_calls"], row[f"{r}_device_us"] = calls, us
        row["flaggems_extra_us"] = row["flaggems_device_us"] - row["native_device_us"]
        rows.append(row)
    rows.sort(key=lambda row: -abs(row["flaggems_extra_us"]))
    return rows


def print_rows(title: str, rows: list, limit: int) -> None:
    total = {r: sum(row[f"{r}_device_us"] for row in rows) for r in ROUTINGS}
    print(f"\n{title}: kernel time {total['native'] / 1e3:.1f} ms native, {total['flaggems'] / 1e3:.1f} ms flaggems")
    print(f"{'op':34} {'calls':>6} {'native us':>10} {'flaggems us':>11} {'ratio':>6} {'extra us':>9}  routes (flaggems)")
    for row in rows[:limit]:
        ratio = row["flaggems_device_us"] / row["native_device_us"] if row["native_device_us"] else float("nan")
        routes = ", ".join(f"{b} {n}" for b, n in sorted(row["routes"].items()))
        print(f"{row['op'][:34]:34} {row['flaggems_calls']:6d} {row['native_device_us']:10.0f} "
              f"{row['flaggems_device_us']:11.0f} {ratio:6.2f} {row['flaggems_extra_us']:9.0f}  {routes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.6b", choices=["small", "0.6b"])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--skip-prefill", action="store_true")
    parser.add_argument("--ablate", action="store_true",
                        help="also time the training step with each FlagGems op alone back on the vendor")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch_fl._flaggems.available():
        sys.exit(f"route_kernels: needs FlagGems, which {torch_fl._flaggems.unavailable_reason()}")
    if not torch.cuda.is_available():
        sys.exit("route_kernels: needs a GPU: it compares kernel times")

    base = qwen3.build_model(args.size, seed=0)
    tokens = qwen3.random_tokens(2, 1024 if args.size == "0.6b" else 64, qwen3.vocab_size(base), seed=2)
    out = {"size": args.size}
    tables, routes, step_ms = {}, {}, {}
    for name in ROUTINGS:
        tables[name], stats, step_ms[name] = profile_training(base, name, tokens)
        if name == "flaggems":
            flaggems_stats, routes = stats, routes_by_op(stats)
    out["train"] = join(tables, routes)
    out["train_step_ms"] = step_ms
    print_rows(f"Qwen3 {args.size} AdamW step (bf16 autocast, 2 x {tokens.shape[1]} tokens); profiled step "
               f"{step_ms['native']:.0f} ms native, {step_ms['flaggems']:.0f} ms flaggems", out["train"], args.rows)
    if args.ablate:
        out["ablation"] = ablate(base, tokens, flaggems_stats, tables["flaggems"])
        print_ablation(out["ablation"], sum(us for _, us in tables["flaggems"].values()))
    if not args.skip_prefill:
        for name in ROUTINGS:
            tables[name], stats = profile_prefill(base, name)
            if name == "flaggems":
                routes = routes_by_op(stats)
        out["prefill"] = join(tables, routes)
        print_rows(f"Qwen3 {args.size} prefill of 128 tokens (bf16)", out["prefill"], args.rows)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
