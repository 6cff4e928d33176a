"""Per-call host cost of the ops a Qwen3 decode step is made of, at decode
shapes (one token, hidden 1024, bf16 on a GPU), on flagos against PyTorch's
own device in the same run. The tensors are tiny, so a call's time is the
host's: dispatch, routing, argument aliases, result wrapping and the launch.

    python benchmarks/decode_ops.py [--out results/decode_ops.json] [--calls 2000]

Columns: torch on the vendor's device; flagos with every op on the vendor's
kernels ("native"); flagos under the packaged routing table ("default").
"""
import argparse
import contextlib

import torch

from _common import environment, print_table, time_per_call, write_json

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402


def cases(dev: str, dtype):
    g = torch.Generator().manual_seed(0)

    def r(*shape, dt=dtype):
        return torch.randn(*shape, generator=g).to(device=dev, dtype=dt)

    h = r(1, 1, 1024)
    h2 = r(1, 1, 1024)
    hf = r(1, 1, 1024, dt=torch.float32)
    w = r(1024, 1024)
    q = r(1, 16, 1, 128)
    k_cache = r(1, 8, 128, 128)
    k_new = r(1, 8, 1, 128)
    scores = r(16, 1, 128)
    keys = r(16, 128, 128)
    out = torch.empty_like(h)
    norm_w = r(1024)
    cos, sin = r(1, 1, 1, 128), r(1, 1, 1, 128)

    # Whole blocks of a decoder layer, whose every op takes the fresh tensor
    # the one before it made, as in a model (a loop over one op reuses its
    # arguments, and their aliases).
    def rms_norm():  # 8 routed ops
        x = h.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return norm_w * x.to(dtype)

    def rotary():  # 6 routed ops, as transformers' apply_rotary_pos_emb
        x1, x2 = q[..., :64], q[..., 64:]
        return q * cos + torch.cat((-x2, x1), dim=-1) * sin

    return {
        "add": lambda: h + h2,
        "add_ (in place)": lambda: out.add_(h),
        "add out=": lambda: torch.add(h, h2, out=out),
        "mul by scalar": lambda: h * 0.5,
        "to float32": lambda: h.to(torch.float32),
        "copy_ same dtype": lambda: out.copy_(h),
        "pow 2": lambda: hf.pow(2),
        "mean -1 keepdim": lambda: hf.mean(-1, keepdim=True),
        "rsqrt": lambda: hf.rsqrt(),
        "neg": lambda: q.neg(),
        "cat kv cache": lambda: torch.cat([k_cache, k_new], dim=-2),
        "linear 1024": lambda: torch.nn.functional.linear(h, w),
        "bmm scores": lambda: torch.bmm(scores, keys),
        "softmax": lambda: torch.softmax(scores, -1),
        "silu": lambda: torch.nn.functional.silu(h),
        "RMSNorm block (8 ops)": rms_norm,
        "rotary block (6 ops)": rotary,
        "view (not routed)": lambda: h.view(1024),
        "empty (not routed)": lambda: torch.empty(1, 1, 1024, device=dev, dtype=dtype),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    reference = routing.native_backend()
    dtype = torch.bfloat16 if reference == "cuda" else torch.float32
    ref = cases(reference, dtype)
    flg = cases("flagos", dtype)
    routings = {"flagos native": "native", "flagos default": None}
    results = []
    for name in ref:
        row = {"op": name, f"torch {reference} us": time_per_call(ref[name], reference, calls=args.calls)}
        for label, preset in routings.items():
            with routing.preset(preset) if preset else contextlib.nullcontext():
                row[f"{label} us"] = time_per_call(flg[name], "flagos", calls=args.calls)
        row["native extra us"] = row["flagos native us"] - row[f"torch {reference} us"]
        row["default extra us"] = row["flagos default us"] - row[f"torch {reference} us"]
        results.append(row)
    columns = list(results[0].keys())
    print_table(f"µs per call at decode shapes ({dtype}), flagos vs torch {reference}, median of 7 x {args.calls}",
                columns, [[r[c] for c in columns] for r in results])
    write_json(args.out or "decode_ops.json", {"benchmark": "decode_ops", "environment": environment(),
                                               "results": results})


if __name__ == "__main__":
    main()
