"""What routing adds to a model's forward pass, measured in one process:
the same Qwen3 forward and loss (gradients on, as in training) on flagos
and on the vendor's own device (cuda, or cpu on the host vendor), in
alternating rounds.

    python tools/forward_overhead.py [--routing native] [--size 0.6b] [--rows 2] [--len 1024]
                                     [--rounds 30] [--out forward.json]

Training steps can only be compared across processes (torch CUDA's backward
refuses to run once torch_fl is imported, see the README's known
limitations), and fresh processes differ by up to a tenth in step time.
Here both devices share one process, so that bias cancels: the difference
between the two forwards is what routing costs. Per round and device: the
host's time until the forward returned ("queued": the host bounds a
training step at 2 x 1024 tokens) and the time until the device finished.
The paired difference in queued time, divided by the routed calls of one
forward (routing.stats()), is routing's host cost per call. Both devices'
losses are checked against each other first. Defaults: the 0.6B architecture at 2 x 1024
tokens with bf16 autocast on a GPU; the small config at 2 x 64 tokens in
float32 on the host vendor.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402


def reference_device() -> str:
    return "cpu" if torch_fl.flagos.vendor() == "host" else torch_fl.flagos.vendor()


def routed_ops(model, tokens, autocast_dtype) -> dict:
    """Routed calls per op (every backend, copies and casts included) of
    one forward and loss on flagos."""
    routing.reset_stats()
    qwen3.lm_loss(model, tokens, autocast_dtype).item()
    return {op: sum(per_backend.values()) for op, per_backend in sorted(routing.stats().items())}


def models_and_batches(size: str, rows: int, length: int) -> tuple:
    """The reference device, and per device (it and flagos) the same Qwen3
    model (seed 0, weights tied) and the same token batch."""
    reference = reference_device()
    base = qwen3.build_model(size, seed=0)
    models = {reference: qwen3.clone_to(base, reference), "flagos": qwen3.clone_to(base, "flagos")}
    tokens = qwen3.random_tokens(rows, length, qwen3.vocab_size(base), seed=2)
    return reference, models, {device: tokens.to(device) for device in models}


def measure(routing_name: str, size: str, rows: int, length: int, rounds: int, warmup: int,
            autocast_dtype) -> dict:
    """Per device, the median queued and finished time of a forward over
    `rounds` alternating rounds, and the paired flagos-minus-reference
    differences."""
    reference, models, batches = models_and_batches(size, rows, length)
    losses = {}
    for device, model in models.items():
        model.train()  # dropout is 0 in Qwen3's config: train mode changes no value
        losses[device] = qwen3.lm_loss(model, batches[device], autocast_dtype).item()
        for _ in range(warmup):
            qwen3.lm_loss(model, batches[device], autocast_dtype).item()
    tolerance = 2e-2 if autocast_dtype is not None else 1e-4
    if abs(losses["flagos"] - losses[reference]) > tolerance * abs(losses[reference]):
        raise RuntimeError(f"forward_overhead: flagos loss {losses['flagos']:.6f} differs from {reference}'s "
                           f"{losses[reference]:.6f} by more than {tolerance:.0e} (relative); nothing to compare")
    ops = routed_ops(models["flagos"], batches["flagos"], autocast_dtype)
    calls = sum(ops.values())
    times = {device: {"queued_ms": [], "finished_ms": []} for device in models}
    with qwen3.paused_gc():
        for r in range(rounds):
            order = [reference, "flagos"] if r % 2 == 0 else ["flagos", reference]
            for device in order:
                qwen3.sync(torch.device(device))
                begin = time.perf_counter()
                loss = qwen3.lm_loss(models[device], batches[device], autocast_dtype)
                queued = time.perf_counter()
                qwen3.sync(torch.device(device))
                finished = time.perf_counter()
                del loss
                times[device]["queued_ms"].append((queued - begin) * 1e3)
                times[device]["finished_ms"].append((finished - begin) * 1e3)
    extra = [f - r for f, r in zip(times["flagos"]["queued_ms"], times[reference]["queued_ms"])]
    quartiles = statistics.quantiles(extra, n=4) if len(extra) > 1 else [extra[0]] * 3
    return {
        "reference": reference, "size": size, "rows": rows, "length": length, "rounds": rounds,
        "autocast": str(autocast_dtype) if autocast_dtype is not None else None,
        "routing": routing_name, "losses": losses, "routed_calls": calls, "routed_ops": ops,
        "devices": {d: {k: statistics.median(v) for k, v in t.items()} for d, t in times.items()},
        "rounds_ms": times,
        "extra_queued_ms": statistics.median(extra),
        "extra_queued_ms_quartiles": [quartiles[0], quartiles[2]],
        "extra_us_per_call": statistics.median(extra) * 1e3 / calls if calls else None,
    }


def report(result: dict) -> str:
    ref = result["reference"]
    lines = [f"Qwen3 {result['size']} forward and loss, {result['rows']} x {result['length']} tokens"
             f"{', ' + result['autocast'] + ' autocast' if result['autocast'] else ''}, routing "
             f"'{result['routing']}', {result['rounds']} alternating rounds in one process (median ms)",
             f"{'device':>8} {'queued':>8} {'finished':>9}"]
    for device, row in result["devices"].items():
        lines.append(f"{device:>8} {row['queued_ms']:8.2f} {row['finished_ms']:9.2f}")
    q1, q3 = result["extra_queued_ms_quartiles"]
    lines.append(f"flagos - {ref}, queued: {result['extra_queued_ms']:+.2f} ms ({q1:+.2f} to {q3:+.2f}, "
                 f"25th-75th percentile) over {result['routed_calls']} routed calls: "
                 f"{result['extra_us_per_call']:+.2f} us a call, "
                 f"{result['extra_queued_ms'] / result['devices'][ref]['queued_ms'] * 100:+.1f} % of {ref}'s queued time")
    return "\n".join(lines)


def default_warmup(routing_name: str) -> int:
    """Forwards enough for every signature to pass its FlagGems record (the
    vendor-served calls, the record, one replay), so that timed calls
    replay; the native route has no records."""
    if routing_name == "native" or not torch_fl._flaggems.available():
        return 5
    return torch_fl._flaggems.vendor_calls() + 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routing", default="native", choices=list(routing.PRESETS))
    parser.add_argument("--size", default=None, choices=["small", "0.6b"])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--len", type=int, default=None, help="tokens per row (1024 on a GPU, 64 on the host vendor)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed forwards per device first (default: 5 on the native route, past the "
                             "FlagGems records otherwise)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    gpu = torch_fl.flagos.vendor() != "host"
    size = args.size or ("0.6b" if gpu else "small")
    length = args.len or (1024 if gpu else 64)
    warmup = default_warmup(args.routing) if args.warmup is None else args.warmup
    autocast_dtype = torch.bfloat16 if gpu else None
    with routing.preset(args.routing):
        result = measure(args.routing, size, args.rows, length, args.rounds, warmup, autocast_dtype)
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
