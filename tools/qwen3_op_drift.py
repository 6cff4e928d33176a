"""Which FlagGems ops move Qwen3 on flagos away from a reference run?
(GPU machine, FLAGOS_VENDOR=cuda.)

Runs the reference once, then on flagos: the default table, the all-native
table, and the all-native table with one FlagGems op switched on at a time
(each op the default table runs on FlagGems in that workload).

--target tokens: greedy decoding (default 0.6B, bfloat16, against torch
  CUDA). Per run: first-step max |logit diff|, tokens equal of 32, first
  differing step; and the reference's top-2 logit margin at each step, which
  shows whether a flip happened at a near-tie.
--target margins: the reference alone, for prompt seeds 1..--seeds: the
  smallest top-2 logit margin over the 32 steps, and how many steps fall
  under --tie (how well-conditioned token equality is for that prompt).
--target grads: one forward and backward of the next-token loss (default
  small config, float32, against CPU). Per run: loss difference and the worst
  per-parameter gradient relative error.

    python tools/qwen3_op_drift.py --target grads --size small --reference cpu --dtype float32
"""
import argparse
import json
import time

import torch

import torch_fl
from torch_fl import routing
from torch_fl.models import qwen3

NEW_TOKENS = 32


def run(model, prompt):
    tokens, _, logits = qwen3.greedy_generate(model, prompt, NEW_TOKENS)
    return tokens, logits


def compare(tokens, logits, ref_tokens, ref_logits):
    same = sum(a == b for a, b in zip(tokens, ref_tokens))
    first_split = next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens)) if a != b), None)
    return {"max_abs_first_logits": (logits[0] - ref_logits[0]).abs().max().item(),
            "tokens_equal": same, "first_split": first_split}


def grads_of(model, batch):
    model.zero_grad(set_to_none=True)
    loss = qwen3.lm_loss(model, batch.to(next(model.parameters()).device))
    loss.backward()
    return loss.item(), {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.grad is not None}


def compare_grads(result, ref):
    loss, grads = result
    ref_loss, ref_grads = ref
    worst = max((((grads[n] - g).norm() / g.norm().clamp_min(1e-30)).item(), n) for n, g in ref_grads.items())
    return {"loss_diff": abs(loss - ref_loss), "worst_grad_rel": worst[0], "worst_param": worst[1]}


def sweep(run_once, compare_to_ref):
    """{run name: comparison} for default, native, and native + each op."""
    routing.reset_stats()
    results = {"default": compare_to_ref(run_once())}
    used = sorted(op for op, per in routing.stats().items()
                  if any(b in routing._FLAGGEMS_BACKENDS for b in per))
    with routing.preset("native"):
        results["native"] = compare_to_ref(run_once())
        for op in used:
            start = time.perf_counter()
            with routing.override_ops({op: "flagos"}):
                got = run_once()
            results[f"native + {op}"] = dict(compare_to_ref(got), seconds=round(time.perf_counter() - start, 1))
    return used, results


def print_table(results, columns):
    print(f"{'run':<44} " + " ".join(f"{c:>14}" for c in columns))
    for name, r in results.items():
        print(f"{name:<44} " + " ".join(f"{r[c]:>14.4g}" if isinstance(r[c], float) else f"{str(r[c]):>14}"
                                        for c in columns))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="qwen3_op_drift.json")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--size", default="0.6b", choices=["0.6b", "small"])
    parser.add_argument("--reference", default="cuda", help="device of the reference run")
    parser.add_argument("--target", default="tokens", choices=["tokens", "grads", "margins"])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--tie", type=float, default=0.0625)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.target == "grads":
        base = qwen3.build_model(args.size, seed=0, dtype=dtype)
        batch = qwen3.random_tokens(2, 32, qwen3.vocab_size(base), seed=100)
        ref = grads_of(qwen3.clone_to(base, args.reference, dtype), batch)
        model = qwen3.clone_to(base, "flagos", dtype)
        used, results = sweep(lambda: grads_of(model, batch), lambda got: compare_grads(got, ref))
        print_table(results, ["loss_diff", "worst_grad_rel", "worst_param"])
        with open(args.out, "w") as f:
            json.dump({"target": "grads", "dtype": args.dtype, "size": args.size, "ops_on_flaggems": used,
                       "runs": results}, f, indent=1)
        return

    base = qwen3.build_model(args.size, seed=0)
    ref = qwen3.clone_to(base, args.reference, dtype)
    if args.target == "margins":
        found = {}
        for seed in range(1, args.seeds + 1):
            _, logits = run(ref, qwen3.random_tokens(1, 16, qwen3.vocab_size(base), seed=seed))
            m = qwen3.top2_margins(logits)
            found[seed] = {"min_margin": min(m), "near_ties": sum(x < args.tie for x in m)}
            print(f"prompt seed {seed:>3}: min top-2 margin {min(m):.4f}, steps under {args.tie}: "
                  f"{found[seed]['near_ties']}", flush=True)
        with open(args.out, "w") as f:
            json.dump({"target": "margins", "dtype": args.dtype, "tie": args.tie, "seeds": found}, f, indent=1)
        return
    prompt = qwen3.random_tokens(1, 16, qwen3.vocab_size(base), seed=1)
    ref_tokens, ref_logits = run(ref, prompt)
    del ref
    margins = qwen3.top2_margins(ref_logits)

    model = qwen3.clone_to(base, "flagos", dtype)
    used, results = sweep(lambda: run(model, prompt), lambda got: compare(*got, ref_tokens, ref_logits))
    print_table(results, ["max_abs_first_logits", "tokens_equal", "first_split"])
    print("reference top-2 margin per step:", " ".join(f"{m:.3f}" for m in margins))
    print("reference tokens:", ref_tokens)
    with open(args.out, "w") as f:
        json.dump({"target": "tokens", "dtype": args.dtype, "vendor": torch_fl.flagos.vendor(), "ops_on_flaggems": used,
                   "reference_tokens": ref_tokens, "reference_margins": margins, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
