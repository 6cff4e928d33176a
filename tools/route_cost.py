"""What the routing layer itself costs in a Qwen3 training step: the route
clock (FLAGOS_ROUTE_CLOCK=1, csrc/aten/RouteClock.h) times every routed call
and, inside it, the vendor kernel's call or FlagGems launch; the difference
is the route's own host time (plan lookup, aliases, mapping results back,
the device guard).

    python tools/route_cost.py [--routing native] [--size 0.6b] [--blocks 3] [--steps 10] [--out cost.json]

Per block of --steps steps: the step's median time, routed calls and the
flagos tensors they aliased per step, the route's time per call and per step, and the vendor calls' host time per
step. On a shared host whose speed drifts, compare the route's time as a
share of the vendor calls' time ("route/vendor"), which drifts with it.
Defaults: the 0.6B architecture at 2 x 1024 tokens with bf16 autocast on a
GPU; the small config at 2 x 64 tokens in float32 on the host vendor.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path

os.environ["FLAGOS_ROUTE_CLOCK"] = "1"  # read when torch_fl loads

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch_fl  # noqa: E402,F401
from torch_fl import routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402


PHASES = ("forward", "backward", "optimizer", "other")


class PhaseClock:
    """The route clock's totals per phase of a training step (Trainer's
    phase hook); "other" is what runs between phases (the batch's copy to
    the device, reading the loss back)."""

    def __init__(self):
        self.restart()

    def restart(self):
        counters = routing.take_route_clock()
        self.totals = {p: dict.fromkeys(counters, 0) for p in PHASES}

    def _add(self, phase: str):
        for key, value in routing.take_route_clock().items():
            self.totals[phase][key] += value

    @contextlib.contextmanager
    def __call__(self, phase: str):
        self._add("other")
        try:
            yield
        finally:
            self._add(phase)

    def take(self) -> dict:
        self._add("other")
        totals = self.totals
        self.restart()
        return totals


def per_step(clock: dict, steps: int) -> dict:
    """Totals of `steps` steps from the route clock, per step."""
    return {"calls_per_step": clock["calls"] / steps,
            "aliases_per_step": clock["aliases"] / steps,
            "route_us_per_call": clock["route_ns"] / max(clock["calls"], 1) / 1e3,
            "route_ms_per_step": clock["route_ns"] / steps / 1e6,
            "vendor_ms_per_step": clock["vendor_ns"] / steps / 1e6,
            "route_per_vendor": clock["route_ns"] / max(clock["vendor_ns"], 1)}


def measure(routing_name: str, size: str, batch: int, length: int, warmup: int, blocks: int, steps: int) -> list:
    gpu = torch.cuda.is_available()
    clock = PhaseClock()
    with routing.preset(routing_name):
        model = qwen3.build_model(size, seed=0, device="flagos")  # ties kept, unlike Module.to()
        tokens = qwen3.random_tokens(batch, length, qwen3.vocab_size(model), seed=2)
        trainer = qwen3.Trainer(model, lr=1e-4, foreach=True, autocast_dtype=torch.bfloat16 if gpu else None,
                                phase=clock)
        for _ in range(warmup):
            trainer.step(tokens)
        rows = []
        for _ in range(blocks):
            clock.restart()
            seconds = trainer.timed_steps([tokens], steps)
            phases = clock.take()
            whole = {key: sum(p[key] for p in phases.values()) for key in phases["other"]}
            rows.append({"step_ms": statistics.median(seconds) * 1e3,
                         "queued_ms": statistics.median(trainer.queue_seconds) * 1e3,
                         **per_step(whole, steps),
                         "phases": {name: per_step(p, steps) for name, p in phases.items()}})
    return rows


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routing", default="native", help="a routing preset (native, default, flaggems)")
    parser.add_argument("--size", choices=["small", "0.6b"], default="0.6b" if gpu else "small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=1024 if gpu else 64)
    parser.add_argument("--warmup", type=int, default=70 if gpu else 3,
                        help="untimed steps first (past FlagGems' records on its routings)")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = measure(args.routing, args.size, args.batch, args.length, args.warmup, args.blocks, args.steps)
    print(f"Qwen3 {args.size}, {args.batch} x {args.length} tokens, {args.routing} routing, vendor "
          f"'{torch_fl._VENDOR}': per block of {args.steps} steps")
    print(f"{'step ms':>9} {'queued ms':>10} {'calls/step':>11} {'aliases/step':>13} {'route us/call':>14} {'route ms/step':>14} "
          f"{'vendor ms/step':>15} {'route/vendor':>13}")
    for r in rows:
        print(f"{r['step_ms']:9.1f} {r['queued_ms']:10.1f} {r['calls_per_step']:11.0f} {r['aliases_per_step']:13.0f} "
              f"{r['route_us_per_call']:14.2f} "
              f"{r['route_ms_per_step']:14.2f} {r['vendor_ms_per_step']:15.2f} {r['route_per_vendor']:12.1%}")
    print("per phase of a step, last block:")
    print(f"{'phase':>10} {'calls/step':>11} {'aliases/step':>13} {'route us/call':>14} {'route ms/step':>14} "
          f"{'vendor ms/step':>15}")
    for name, p in rows[-1]["phases"].items():
        print(f"{name:>10} {p['calls_per_step']:11.0f} {p['aliases_per_step']:13.0f} {p['route_us_per_call']:14.2f} "
              f"{p['route_ms_per_step']:14.2f} {p['vendor_ms_per_step']:15.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"routing": args.routing, "size": args.size, "batch": args.batch,
                                              "length": args.length, "vendor": torch_fl._VENDOR, "rows": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
