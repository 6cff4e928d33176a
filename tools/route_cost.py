"""What the routing layer itself costs in a Qwen3 training step: the route
clock (FLAGOS_ROUTE_CLOCK=1, csrc/aten/RouteClock.h) times every routed call
and, inside it, the vendor kernel's call or FlagGems launch; the difference
is the route's own host time (plan lookup, aliases, mapping results back,
the device guard).

    python tools/route_cost.py [--routing native] [--size 0.6b] [--blocks 3] [--steps 10] [--out cost.json]

Per block of --steps steps: the step's median time, routed calls per step,
the route's time per call and per step, and the vendor calls' host time per
step. On a shared host whose speed drifts, compare the route's time as a
share of the vendor calls' time ("route/vendor"), which drifts with it.
Defaults: the 0.6B architecture at 2 x 1024 tokens with bf16 autocast on a
GPU; the small config at 2 x 64 tokens in float32 on the host vendor.
"""
import argparse
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


def measure(routing_name: str, size: str, batch: int, length: int, warmup: int, blocks: int, steps: int) -> list:
    gpu = torch.cuda.is_available()
    with routing.preset(routing_name):
        model = qwen3.build_model(size, seed=0).to("flagos")
        tokens = qwen3.random_tokens(batch, length, qwen3.vocab_size(model), seed=2)
        trainer = qwen3.Trainer(model, lr=1e-4, foreach=True, autocast_dtype=torch.bfloat16 if gpu else None)
        for _ in range(warmup):
            trainer.step(tokens)
        rows = []
        for _ in range(blocks):
            routing.take_route_clock()
            seconds = trainer.timed_steps([tokens], steps)
            clock = routing.take_route_clock()
            rows.append({"step_ms": statistics.median(seconds) * 1e3,
                         "queued_ms": statistics.median(trainer.queue_seconds) * 1e3,
                         "calls_per_step": clock["calls"] / steps,
                         "route_us_per_call": clock["route_ns"] / max(clock["calls"], 1) / 1e3,
                         "route_ms_per_step": clock["route_ns"] / steps / 1e6,
                         "vendor_ms_per_step": clock["vendor_ns"] / steps / 1e6,
                         "route_per_vendor": clock["route_ns"] / max(clock["vendor_ns"], 1)})
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
    print(f"{'step ms':>9} {'queued ms':>10} {'calls/step':>11} {'route us/call':>14} {'route ms/step':>14} "
          f"{'vendor ms/step':>15} {'route/vendor':>13}")
    for r in rows:
        print(f"{r['step_ms']:9.1f} {r['queued_ms']:10.1f} {r['calls_per_step']:11.0f} {r['route_us_per_call']:14.2f} "
              f"{r['route_ms_per_step']:14.2f} {r['vendor_ms_per_step']:15.2f} {r['route_per_vendor']:12.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"routing": args.routing, "size": args.size, "batch": args.batch,
                                              "length": args.length, "vendor": torch_fl._VENDOR, "rows": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
