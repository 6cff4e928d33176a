"""Qwen3 greedy decoding one synchronized step at a time, with what the
FlagGems launcher did in each step: a step that records a signature (runs
FlagGems' Python) or drops a full signature table shows up next to its time.

    python tools/decode_trace.py [--steps 80] [--routings native,default] [--out trace.json]

Each routing decodes the same prompt on its own model copy; torch's own
device decodes it too, the targets taking turns step by step.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import torch_fl  # noqa: E402
from torch_fl import flaggems, routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402
from _common import target_routing  # noqa: E402

EVENTS = ("recorded", "python", "flushed")


def launcher_counts() -> dict:
    """Per op, the launcher's counters that mean Python ran or a table was dropped."""
    return {op: {k: s[k] for k in EVENTS} for op, s in flaggems.launcher_stats().items()}


def events_between(before: dict, after: dict) -> dict:
    out = {}
    for op, counts in after.items():
        delta = {k: v - before.get(op, {}).get(k, 0) for k, v in counts.items()}
        delta = {k: v for k, v in delta.items() if v}
        if delta:
            out[op] = delta
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--routings", default="native,default")
    parser.add_argument("--size", default=None, choices=["small", "0.6b"])
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    reference = routing.native_backend()
    gpu = reference == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    base = qwen3.build_model(args.size or ("0.6b" if gpu else "small"), seed=0)
    prompt = qwen3.random_tokens(1, args.prefill, qwen3.vocab_size(base), seed=1)
    # (label, device, routing preset or None for torch's own device)
    targets = [(reference, reference, None)] + [(r, "flagos", r) for r in args.routings.split(",")]
    decoders = {}
    for label, device, mode in targets:
        with target_routing(mode):
            decoders[label] = qwen3.Decoder(qwen3.clone_to(base, device, dtype), prompt.to(device))
            decoders[label].start()
    trace = {label: [] for label in decoders}
    for step in range(args.steps):
        for label, device, mode in targets:
            with target_routing(mode):
                before = launcher_counts()
                qwen3.sync(device)
                start = time.perf_counter()
                decoders[label].decode()
                qwen3.sync(device)
                ms = (time.perf_counter() - start) * 1e3
                trace[label].append({"ms": ms, "events": events_between(before, launcher_counts())})
    print(f"{'step':>4} " + " ".join(f"{label:>10}" for label in trace) + "  launcher events (flagos routings)")
    for step in range(args.steps):
        cells = " ".join(f"{trace[label][step]['ms']:10.1f}" for label in trace)
        events = {label: trace[label][step]["events"] for label in trace if trace[label][step]["events"]}
        print(f"{step:4d} {cells}  {json.dumps(events) if events else ''}")
    print("median " + " ".join(f"{statistics.median(s['ms'] for s in trace[label]):10.1f}" for label in trace))
    if args.out:
        Path(args.out).write_text(json.dumps(trace, indent=1))


if __name__ == "__main__":
    main()
