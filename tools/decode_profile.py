"""Where a Qwen3 decode step's host time goes, per ATen op, on flagos against
PyTorch's own device in the same process: torch.profiler's CPU table of one
decode step on each, joined by op name and sorted by the time flagos adds.

    python tools/decode_profile.py [--routing native|default] [--rows 30] [--out profile.json]
    python tools/decode_profile.py --loop mm --device flagos --calls 200000   # a loop to run under perf
    python tools/decode_profile.py --train [--routing default]   # one AdamW step on flagos, by op

Inference only (no autograd), so the reference may be torch CUDA in the same
process. A row's "calls" are the op's own calls plus the calls made inside
it; "self us" is time not spent in a nested op, so on flagos it holds the
routing kernel's cost as well as the vendor kernel's launch.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402
from _common import sync  # noqa: E402


def decode_step(base, device: str, dtype, prefill: int):
    prompt = qwen3.random_tokens(1, prefill, qwen3.vocab_size(base), seed=1).to(device)
    decoder = qwen3.Decoder(qwen3.clone_to(base, device, dtype), prompt)
    decoder.start()
    return decoder.decode


def profile_ops(step, device: str, warmup: int = 4) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        sync(device)
    return {e.key: {"calls": e.count, "self_us": e.self_cpu_time_total, "total_us": e.cpu_time_total}
            for e in prof.key_averages()}


def profile_training(base, routing_name: str, rows: int, gpu: bool) -> None:
    """The host time of the third AdamW step (bf16 autocast on a GPU) on
    flagos, by op. torch CUDA cannot train in a process that registered a
    PrivateUse1 backend (pytorch/pytorch#161129), so there is no reference
    column here; benchmarks/qwen3.py times the reference in a clean process."""
    import time

    from torch.profiler import ProfilerActivity, profile

    model = qwen3.clone_to(base, "flagos")
    tokens = qwen3.random_tokens(2, 1024 if gpu else 64, qwen3.vocab_size(base), seed=2)
    prof = profile(activities=[ProfilerActivity.CPU])
    marks = {}

    def on_step(step, loss):
        marks[step] = time.perf_counter()
        if step == 1:
            prof.start()
        elif step == 2:
            prof.stop()

    with routing.preset(routing_name):
        qwen3.train(model, [tokens], steps=3, lr=1e-4, foreach=True,
                    autocast_dtype=torch.bfloat16 if gpu else None, on_step=on_step)
    events = prof.key_averages()
    aten = [e for e in events if e.key.startswith("aten::")]
    print(f"flagos ({routing_name}) training step: {(marks[2] - marks[1]) * 1e3:.1f} ms wall (profiled), "
          f"{sum(e.count for e in aten)} aten calls, {sum(e.self_cpu_time_total for e in events) / 1e3:.1f} ms host self time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))


def loop(op: str, device: str, calls: int) -> None:
    """One op many times, for a sampling profiler."""
    a = torch.randn(1024, 1024, device=device, dtype=torch.bfloat16)
    v = torch.randn(1, 1, 1024, device=device, dtype=torch.bfloat16)
    fns = {"mm": lambda: a @ a, "linear": lambda: torch.nn.functional.linear(v, a),
           "add": lambda: v + v, "to": lambda: v.float(), "view": lambda: v.view(1024)}
    fn = fns[op]
    for _ in range(calls):
        fn()
    sync(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routing", default="native", help="flagos routing preset (native, default)")
    parser.add_argument("--size", default=None, choices=["small", "0.6b"])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--out", default=None)
    parser.add_argument("--loop", default=None, help="run one op in a loop instead (mm, linear, add, to, view)")
    parser.add_argument("--device", default="flagos")
    parser.add_argument("--calls", type=int, default=100000)
    parser.add_argument("--train", action="store_true", help="profile a training step on flagos instead")
    args = parser.parse_args()
    if args.loop:
        return loop(args.loop, args.device, args.calls)

    reference = routing.native_backend()
    gpu = reference == "cuda"
    size = args.size or ("0.6b" if gpu else "small")
    dtype = torch.bfloat16 if gpu else torch.float32
    base = qwen3.build_model(size, seed=0)
    if args.train:
        return profile_training(base, args.routing, args.rows, gpu)
    ref = profile_ops(decode_step(base, reference, dtype, 128), reference)
    with routing.preset(args.routing):
        flg = profile_ops(decode_step(base, "flagos", dtype, 128), "flagos")

    rows = []
    for key in sorted(set(ref) | set(flg)):
        r, f = ref.get(key, {}), flg.get(key, {})
        rows.append({"op": key, "ref_calls": r.get("calls", 0), "flagos_calls": f.get("calls", 0),
                     "ref_self_us": r.get("self_us", 0.0), "flagos_self_us": f.get("self_us", 0.0),
                     "extra_self_us": f.get("self_us", 0.0) - r.get("self_us", 0.0)})
    rows.sort(key=lambda row: -row["extra_self_us"])
    total_ref = sum(r["self_us"] for r in ref.values())
    total_flg = sum(f["self_us"] for f in flg.values())
    print(f"Qwen3 {size} decode step, host time by op: torch {reference} {total_ref:.0f} us, "
          f"flagos ({args.routing}) {total_flg:.0f} us")
    print(f"{'op':42} {'calls ref':>9} {'calls fl':>9} {'self ref us':>11} {'self fl us':>11} {'extra us':>9} {'extra/call':>10}")
    for row in rows[:args.rows]:
        per_call = row["extra_self_us"] / max(row["flagos_calls"], 1)
        print(f"{row['op'][:42]:42} {row['ref_calls']:9d} {row['flagos_calls']:9d} {row['ref_self_us']:11.0f} "
              f"{row['flagos_self_us']:11.0f} {row['extra_self_us']:9.0f} {per_call:10.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"reference": reference, "routing": args.routing, "size": size,
                                              "ref_total_us": total_ref, "flagos_total_us": total_flg,
                                              "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
