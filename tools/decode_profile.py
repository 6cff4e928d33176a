"""Where a Qwen3 decode or training step's host time goes, per ATen op, on
flagos against PyTorch's own device: torch.profiler's CPU table of one step
on each, joined by op name and sorted by the time flagos adds.

    python tools/decode_profile.py [--routing native|default] [--rows 30] [--out profile.json]
    python tools/decode_profile.py --loop mm --device flagos --calls 200000   # a loop to run under perf
    python tools/decode_profile.py --train [--routing default]   # one AdamW step, by op
    python tools/decode_profile.py --prefill [--routing default]   # a prompt's forward: host and kernel time

The decode step's reference runs in the same process; the training step's
in a clean one (torch CUDA cannot run backward where a PrivateUse1 backend
is registered). A decode profile taken right after the other target's reads differently:
on an H100 (2026-11-26), profiled one after the other with the reference
first, the reference's pure-Python functions (nn.Module.__getattr__, config
attribute reads) took 30-45 % longer than the same functions on flagos. So
the decode profiles take turns over --rounds rounds, the first target
swapped each round, and are averaged; the training profile runs its
reference in another process first, so compare its host rows against
such a baseline, not against zero. A row's "calls" are the op's own calls plus the calls made
inside it; "self us" is time not spent in a nested op, so on flagos it holds the
routing kernel's cost as well as the vendor kernel's launch.
"""
import argparse
import functools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402
from _common import calls_past_records, sync, target_routing  # noqa: E402


def decode_step(base, device: str, dtype, prefill: int, prefill_only: bool = False):
    prompt = qwen3.random_tokens(1, prefill, qwen3.vocab_size(base), seed=1).to(device)
    decoder = qwen3.Decoder(qwen3.clone_to(base, device, dtype), prompt)
    if prefill_only:
        return decoder.prefill
    decoder.start()
    return decoder.decode


def profile_ops(step, device: str, warmup: int = 4, kernels: bool = False) -> dict:
    """One step's op table; with `kernels`, CUDA kernels' device time too
    (the warm-up runs past a FlagGems signature's vendor calls, so that
    its kernels are the replayed ones)."""
    from torch.profiler import profile

    for _ in range(warmup):
        step()
    sync(device)
    with profile(activities=qwen3.profiler_activities(kernels)) as prof:
        step()
        sync(device)
    return qwen3.op_table(prof)


def profile_training(base, size: str, routing_name: str, gpu: bool, step: int = 2) -> tuple:
    """Host time by op of AdamW step `step` (0-based; bf16 autocast on a GPU), on
    flagos and on the reference device. The reference trains in a clean
    process: torch CUDA cannot run backward in a process that registered a
    PrivateUse1 backend (pytorch/pytorch#161129)."""
    options = dict(lr=1e-4, foreach=True, autocast_dtype=torch.bfloat16 if gpu else None)
    batch, length = 2, 1024 if gpu else 64
    tokens = qwen3.random_tokens(batch, length, qwen3.vocab_size(base), seed=2)
    ref = qwen3.train_in_clean_process(routing.native_backend(), size=size, seed=0, batch=batch, length=length,
                                       batch_seeds=[2], profile_step=step, **options)
    with routing.preset(routing_name):
        flg = qwen3.profiled_train(qwen3.clone_to(base, "flagos"), [tokens], profile_step=step, **options)
    return ref, flg


def compare(title: str, ref: dict, flg: dict, rows: int) -> dict:
    """Prints the two op tables joined by name, by the host time flagos
    adds; returns the table."""
    joined = []
    for key in sorted(set(ref) | set(flg)):
        r, f = ref.get(key, {}), flg.get(key, {})
        joined.append({"op": key, "ref_calls": r.get("calls", 0), "flagos_calls": f.get("calls", 0),
                       "ref_self_us": r.get("self_us", 0.0), "flagos_self_us": f.get("self_us", 0.0),
                       "extra_self_us": f.get("self_us", 0.0) - r.get("self_us", 0.0)})
    joined.sort(key=lambda row: -abs(row["extra_self_us"]))
    total_ref = sum(r["self_us"] for r in ref.values())
    total_flg = sum(f["self_us"] for f in flg.values())
    aten_calls = [sum(t[k]["calls"] for k in t if k.startswith("aten::")) for t in (ref, flg)]
    print(f"{title}: host self time {total_ref:.0f} us reference, {total_flg:.0f} us flagos; "
          f"aten calls {aten_calls[0]} reference, {aten_calls[1]} flagos")
    print(f"{'op':42} {'calls ref':>9} {'calls fl':>9} {'self ref us':>11} {'self fl us':>11} {'extra us':>9} {'extra/call':>10}")
    for row in joined[:rows]:
        per_call = row["extra_self_us"] / max(row["flagos_calls"], 1)
        print(f"{row['op'][:42]:42} {row['ref_calls']:9d} {row['flagos_calls']:9d} {row['ref_self_us']:11.0f} "
              f"{row['flagos_self_us']:11.0f} {row['extra_self_us']:9.0f} {per_call:10.2f}")
    device = [sum(row["device_us"] for row in t.values() if row.get("kernel")) for t in (ref, flg)]
    if any(device):
        # Kernels are rows of their own (their host self time is 0): by the
        # device time flagos adds.
        kernels = sorted((row for row in joined if ref.get(row["op"], {}).get("kernel") or
                          flg.get(row["op"], {}).get("kernel")),
                         key=lambda row: -abs(flg.get(row["op"], {}).get("device_us", 0.0) -
                                              ref.get(row["op"], {}).get("device_us", 0.0)))
        print(f"device time {device[0]:.0f} us reference, {device[1]:.0f} us flagos")
        print(f"{'kernel or op':70} {'calls ref':>9} {'calls fl':>9} {'dev ref us':>10} {'dev fl us':>10}")
        for row in kernels[:rows]:
            r, f = ref.get(row["op"], {}), flg.get(row["op"], {})
            print(f"{row['op'][:70]:70} {row['ref_calls']:9d} {row['flagos_calls']:9d} "
                  f"{r.get('device_us', 0.0):10.0f} {f.get('device_us', 0.0):10.0f}")
    return {"ref_total_us": total_ref, "flagos_total_us": total_flg, "aten_calls": aten_calls,
            "ref_device_us": device[0], "flagos_device_us": device[1], "rows": joined}


def print_timeline(ref: dict, flg: dict) -> None:
    """The step's host span and GPU busy time, whole and by phase
    (qwen3.gpu_timeline), in ms."""
    if not ref or not flg:
        return
    print(f"{'span':12} {'host ref':>9} {'host fl':>9} {'gpu ref':>9} {'gpu fl':>9} {'idle ref':>9} {'idle fl':>9}")
    rows = [("step", ref["window_us"], flg["window_us"], ref["gpu_busy_us"], flg["gpu_busy_us"])]
    rows += [(name, ref[name]["host_us"], flg.get(name, {}).get("host_us", 0.0), ref[name]["gpu_busy_us"],
              flg.get(name, {}).get("gpu_busy_us", 0.0)) for name in ref if isinstance(ref[name], dict)]
    for name, host_r, host_f, gpu_r, gpu_f in rows:
        print(f"{name:12} {host_r / 1e3:9.1f} {host_f / 1e3:9.1f} {gpu_r / 1e3:9.1f} {gpu_f / 1e3:9.1f} "
              f"{(host_r - gpu_r) / 1e3:9.1f} {(host_f - gpu_f) / 1e3:9.1f}")


def profile_python(step, device: str, steps: int = 20, warmup: int = 4) -> dict:
    """Python-level time by function (cProfile) over `steps` decode steps:
    where a step's time goes outside the ATen ops' tables."""
    import cProfile
    import pstats

    for _ in range(warmup):
        step()
    sync(device)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    sync(device)
    prof.disable()
    table = {}
    for (path, line, name), (_, calls, tottime, cumtime, _) in pstats.Stats(prof).stats.items():
        where = f"{Path(path).name}:{line}({name})" if line else name
        table[where] = {"calls": calls // steps, "self_us": tottime * 1e6 / steps, "total_us": cumtime * 1e6 / steps}
    return table


def alternate(profiler, ref_step, flg_step, reference: str, routing_name: str, rounds: int) -> tuple:
    """The two targets' profiles averaged over `rounds` rounds in which they
    take turns, the one that goes first swapped each round: a profile taken
    right after the other target's reads 30-45 % differently (see above)."""
    totals = ({}, {})
    for r in range(rounds):
        turns = [(0, ref_step, reference), (1, flg_step, "flagos")]
        for side, step, device in (turns if r % 2 == 0 else turns[::-1]):
            with target_routing(routing_name if side else None):
                table = profiler(step, device)
            for key, row in table.items():
                acc = totals[side].setdefault(key, dict.fromkeys(row, 0.0))
                for k, v in row.items():
                    acc[k] += v / rounds
    for side in totals:
        for row in side.values():
            row["calls"] = int(round(row["calls"]))
    return totals


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
    parser.add_argument("--train", action="store_true", help="profile an AdamW step instead")
    parser.add_argument("--train-step", type=int, default=2,
                        help="which step to profile (0-based); a FlagGems signature replays once the vendor has "
                             "served its first 64 calls, 3 steps of a 28-layer model")
    parser.add_argument("--rounds", type=int, default=4,
                        help="decode profiles per target, the targets taking turns (the first one swapped each "
                             "round), averaged")
    parser.add_argument("--prefill", action="store_true",
                        help="profile a 128-token prefill (host and kernel times) instead of a decode step")
    parser.add_argument("--python", action="store_true",
                        help="profile the decode step's Python functions (cProfile) instead of its ATen ops")
    args = parser.parse_args()
    if args.loop:
        return loop(args.loop, args.device, args.calls)

    reference = routing.native_backend()
    gpu = reference == "cuda"
    size = args.size or ("0.6b" if gpu else "small")
    dtype = torch.bfloat16 if gpu else torch.float32
    base = qwen3.build_model(size, seed=0)
    if args.train:
        ref, flg = profile_training(base, size, args.routing, gpu, args.train_step)
        print(f"training step wall time (profiled): {ref['step_ms']:.1f} ms torch {reference}, "
              f"{flg['step_ms']:.1f} ms flagos ({args.routing})")
        table = compare(f"Qwen3 {size} AdamW step", ref["ops"], flg["ops"], args.rows)
        print_timeline(ref["timeline"], flg["timeline"])
        table.update(ref_step_ms=ref["step_ms"], flagos_step_ms=flg["step_ms"],
                     ref_timeline=ref["timeline"], flagos_timeline=flg["timeline"])
    else:
        if args.python:
            profiler = profile_python
        elif args.prefill:
            profiler = functools.partial(profile_ops, warmup=calls_past_records(), kernels=True)
        else:
            profiler = profile_ops
        ref_step = decode_step(base, reference, dtype, 128, prefill_only=args.prefill)
        with routing.preset(args.routing):
            flg_step = decode_step(base, "flagos", dtype, 128, prefill_only=args.prefill)
        ref, flg = alternate(profiler, ref_step, flg_step, reference, args.routing, args.rounds)
        what = "Python functions" if args.python else "ATen ops"
        step_name = "128-token prefill" if args.prefill else "decode step"
        table = compare(f"Qwen3 {size} {step_name}, {what} ({args.rounds} rounds)", ref, flg, args.rows)
    if args.out:
        Path(args.out).write_text(json.dumps({"reference": reference, "routing": args.routing, "size": size,
                                              "train": args.train, **table}, indent=1))


if __name__ == "__main__":
    main()
