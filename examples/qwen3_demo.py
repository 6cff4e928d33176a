"""Qwen3 on flagos: greedy generation with the KV cache and a few AdamW
training steps, printing tokens/s, the vendor and the op calls per route.

On the cuda vendor: the Qwen3-0.6B architecture in bfloat16 (seeded random
weights, or real ones with --model PATH); elsewhere (host vendor) the small
config of the same code. Needs transformers>=4.51.

    python examples/qwen3_demo.py [--steps N] [--model PATH] [--size small|0.6b]
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402


def _route_counts():
    counts = {}
    for per_backend in routing.stats().values():
        for backend, n in per_backend.items():
            counts[backend] = counts.get(backend, 0) + n
    return counts


def _since(before):
    now = _route_counts()
    return {b: n - before.get(b, 0) for b, n in now.items() if n - before.get(b, 0)}


def run(steps: int = 3, model_path=None, size=None, new_tokens: int = 32) -> dict:
    """Generates ``new_tokens`` tokens and trains ``steps`` steps on flagos;
    returns the numbers it printed."""
    try:
        from torch_fl.models import qwen3
    except ImportError as exc:  # pragma: no cover
        print(f"\n== Qwen3: skipped ({exc})")
        return {}
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("\n== Qwen3: skipped (needs transformers>=4.51: pip install 'transformers>=4.51')")
        return {}
    warnings.filterwarnings("ignore", category=FutureWarning)
    vendor = torch_fl.flagos.vendor()
    gpu = vendor != "host"
    size = size or ("0.6b" if gpu else "small")
    dtype = torch.bfloat16 if gpu else torch.float32
    dev = torch.device("flagos", 0)
    print(f"\n== Qwen3 ({'weights from ' + model_path if model_path else size + ' architecture, random weights'}, "
          f"{str(dtype).replace('torch.', '')}) on flagos, vendor '{vendor}' " + "=" * 10)
    calls_before = _route_counts()

    start = time.perf_counter()
    model = qwen3.build_model(size, seed=0, model_path=model_path, device=dev)
    print(f"built in {time.perf_counter() - start:.1f} s: "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"{model.config.num_hidden_layers} layers")
    prompt = qwen3.random_tokens(1, 16, qwen3.vocab_size(model), seed=1)

    model.to(dtype)
    qwen3.greedy_generate(model, prompt, 2)  # warm-up (first-call costs)
    torch.flagos.synchronize()
    start = time.perf_counter()
    tokens, _, _ = qwen3.greedy_generate(model, prompt, new_tokens)
    torch.flagos.synchronize()
    gen_s = time.perf_counter() - start
    print(f"generated {new_tokens} tokens (greedy, KV cache): {new_tokens / gen_s:.1f} tokens/s; "
          f"first ones: {tokens[:8]}")

    model.float()
    batch, length = (2, 256) if gpu else (2, 32)
    batches = [qwen3.random_tokens(batch, length, qwen3.vocab_size(model), seed=100 + i) for i in range(2)]
    autocast = torch.bfloat16 if gpu else None
    t0 = [None]

    def on_step(step, loss):
        if step == 0:
            torch.flagos.synchronize()
            t0[0] = time.perf_counter()
        print(f"  step {step + 1}/{steps}: loss {loss:.4f}")

    losses, _ = qwen3.train(model, batches, steps=steps, autocast_dtype=autocast, on_step=on_step)
    torch.flagos.synchronize()
    train_tps = (steps - 1) * batch * length / (time.perf_counter() - t0[0]) if steps > 1 else float("nan")
    print(f"trained {steps} AdamW steps on {batch}x{length} tokens"
          f"{' (bf16 autocast)' if autocast else ''}: {train_tps:.0f} tokens/s after the first step")
    counts = _since(calls_before)
    print(f"op calls per route during the Qwen3 part (vendor '{vendor}'): {counts}")
    del model
    torch.flagos.empty_cache()
    return {"vendor": vendor, "size": size, "decode_tokens_per_s": new_tokens / gen_s,
            "train_tokens_per_s": train_tps, "losses": losses, "routes": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="training steps")
    parser.add_argument("--model", default=None, metavar="PATH", help="local folder with real Qwen3 weights")
    parser.add_argument("--size", choices=["small", "0.6b"], default=None,
                        help="architecture when no --model (default: 0.6b on a GPU vendor, else small)")
    args = parser.parse_args()
    run(steps=args.steps, model_path=args.model, size=args.size)


if __name__ == "__main__":
    main()
