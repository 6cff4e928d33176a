"""Qwen3 on flagos against PyTorch's own device, in the same run:
prefill of 128 tokens, decode of 1 token with the KV cache (at ~128 tokens of
context), and training tokens/s (AdamW, bf16 autocast on a GPU), for flagos
under three routings and for plain torch.

    python benchmarks/qwen3.py [--out results/qwen3.json] [--model PATH]

Routings (torch_fl.routing.preset): "default" (the table as loaded),
"native" (every FlagGems op routed to the vendor's kernels), "flaggems"
(every FlagGems op on FlagGems, but those the packaged table keeps off it
because FlagGems' kernel was wrong or hung there); the last two need
FlagGems and are skipped with the reason otherwise. Reference: torch CUDA on the cuda vendor,
torch CPU on the host vendor. First calls, and the slowest call of a warm-up
that runs every signature past its FlagGems record (Triton JIT), are timed
separately from the steady state (median of repeats, synchronized). Inference
and training are both timed in rounds in which every target takes its turn;
every target trains in a worker process of its own (measure_training says
why).

On the cuda vendor: Qwen3-0.6B architecture (seeded random weights or
--model), bf16 inference, training 2 x 1024 tokens (bound by the host on an
H100), then the default routing and torch CUDA again at 4 x 1024 (bound by
the device; --train-batch-large). On the host vendor: the small config,
float32, training 2 x 64 tokens. --budget-s (default 380) skips the remaining
measurements, with that reason, once the run has taken that long, so the
whole run stays under 8 minutes on an H100.
"""
import argparse
import contextlib
import statistics
import time
import warnings

import torch

from _common import calls_past_records, environment, print_table, sync, target_routing, time_per_call, write_json

import torch_fl  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402


def _first_call(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def prepare_inference(base, device: str, dtype, args) -> dict:
    """A target's model with its prompt and KV cache, its first-call
    times, its warm-up, and prefill/decode closures for the timed rounds.

    The warm-up runs every signature past its records. Under the flagos
    and flaggems routings the vendor's kernel serves a signature's first
    calls (torch_fl.flaggems.vendor_calls(), 64), and the next one records
    FlagGems' kernel: FlagGems' Python and Triton's JIT compile, 0.2-1.6 s
    on an H100 (tools/decode_trace.py). A decode step calls some ops once
    (embedding, argmax), so their records come at its 65th step, and a
    prefill calls some once per forward too. The warm-up's slowest call is
    reported beside the first call, as part of what a first generation
    costs, and kept out of the steady state."""
    prompt = qwen3.random_tokens(1, args.prefill, qwen3.vocab_size(base), seed=1).to(device)
    decoder = qwen3.Decoder(qwen3.clone_to(base, device, dtype), prompt)
    result = {"prefill_first_ms": _first_call(decoder.prefill, device)}
    decoder.start()
    result["decode_first_ms"] = _first_call(decoder.decode, device)
    records = _launcher_events()
    result["prefill_warmup_max_ms"] = max(_first_call(decoder.prefill, device) for _ in range(args.warmup_prefill))
    result["decode_warmup_max_ms"] = max(_first_call(decoder.decode, device) for _ in range(args.warmup_decode))
    result["warmup_records"] = _launcher_events() - records
    return {"result": result, "prefill": decoder.prefill, "decode": decoder.decode}


def _launcher_events() -> int:
    """FlagGems calls so far that recorded or ran Python."""
    return launcher_totals()["python"] if torch_fl._flaggems.available() else 0


def measure_inference_interleaved(prepared: dict, rounds: int, prefill_tokens: int) -> None:
    """Prefill and decode times of every target, the targets taking turns
    within each round (the order rotated each round), so that a slow spell
    of the host (these numbers are launch-bound) falls on all of them alike;
    medians over the rounds, and each round's samples for paired ratios."""
    samples = {label: {"prefill": [], "decode": []} for label in prepared}
    labels = list(prepared)
    for i in range(rounds):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            p = prepared[label]
            device = p["device"]
            with target_routing(p["mode"]):
                samples[label]["prefill"].append(time_per_call(p["prefill"], device, calls=2, repeats=1, warmup=0) / 1e3)
                samples[label]["decode"].append(time_per_call(p["decode"], device, calls=4, repeats=1, warmup=0) / 1e3)
    for label, p in prepared.items():
        r = p["result"]
        r["prefill_ms"] = statistics.median(samples[label]["prefill"])
        r["decode_ms"] = statistics.median(samples[label]["decode"])
        r["prefill_round_ms"] = samples[label]["prefill"]
        r["decode_round_ms"] = samples[label]["decode"]
        r["prefill_tokens_per_s"] = prefill_tokens / r["prefill_ms"] * 1e3
        r["decode_tokens_per_s"] = 1e3 / r["decode_ms"]
        r["inference_rounds"] = rounds


def paired_ratio(r: dict, ref: dict, key: str):
    """The median over rounds of a target's time over the reference's in
    the same round: a spell that slows one round slows both sides of its
    ratio. Falls back to the ratio of medians."""
    mine, theirs = r.get(f"{key}_round_ms"), ref.get(f"{key}_round_ms")
    if mine and theirs and len(mine) == len(theirs):
        return statistics.median(a / b for a, b in zip(mine, theirs))
    if f"{key}_ms" not in r or f"{key}_ms" not in ref:
        return None
    return r[f"{key}_ms"] / ref[f"{key}_ms"]


def paired_spread(r: dict, ref: dict, key: str):
    """How far the rounds' ratios scatter, which says whether a median near
    1.00x is a tie or a result: their 25th and 75th percentiles, and in how
    many rounds the target took less time than the reference. None with
    fewer than 4 paired rounds."""
    mine, theirs = r.get(f"{key}_round_ms"), ref.get(f"{key}_round_ms")
    if not mine or not theirs or len(mine) != len(theirs) or len(mine) < 4:
        return None
    ratios = [a / b for a, b in zip(mine, theirs)]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {"q1": q1, "q3": q3, "faster_rounds": sum(x < 1.0 for x in ratios), "rounds": len(ratios)}


def _spread_text(spread) -> str:
    """A paired_spread() as a table cell."""
    if not spread:
        return "-"
    return f"{spread['q1']:.2f}-{spread['q3']:.2f}x, faster in {spread['faster_rounds']}/{spread['rounds']}"


def print_decode_profile(decode, device: str, rows: int) -> None:
    """Where one decode step's host time goes: torch.profiler's CPU table,
    by self time (the per-op cost of a route shows here)."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode()
        sync(device)
    print(f"--- one decode step on {device}: {sum(e.count for e in prof.key_averages() if e.key.startswith('aten::'))} aten calls")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def measure_training(targets, results: dict, args, gpu: bool, deadline: float, batch: int) -> None:
    """AdamW steps (float32 weights and state; bf16 autocast on a GPU) on one
    batch of `batch` rows, every target in a worker process of its own
    (qwen3.TrainingWorker: a fresh interpreter that builds the model and
    trains it, under the target's routing on flagos; torch CUDA's never
    imports torch_fl, as PyTorch's autograd engine refuses CUDA backward
    where a PrivateUse1 backend is registered, pytorch/pytorch#161129). So
    no target trains in a process that has run the inference rounds, and
    all start alike. Steps are taken in rounds: each round takes
    --train-steps / --train-rounds timed steps per target in turn, so that
    a slow spell of the shared host falls on every target alike; the first
    step of each is timed alone. A turn starts with one untimed step (the
    host's caches are another process's after a switch), and each round
    starts its turns one target later than the one before. Every step ends
    with loss.item(), so each is synchronized. With --train-processes N
    the rounds are shared out among N workers per target, started one set
    after the other."""
    options = dict(lr=1e-4, foreach=True, autocast_dtype=torch.bfloat16 if gpu else None)
    seconds = {label: [] for label, _, _ in targets}
    queued = {label: [] for label, _, _ in targets}
    rounds = {label: [] for label, _, _ in targets}
    per_process = {label: [] for label, _, _ in targets}
    calls_per_op = {label: {} for label, _, _ in targets}
    launcher_calls = {label: {} for label, _, _ in targets}
    steps_counted = {label: 0 for label, _, _ in targets}
    block = max(1, -(-args.train_steps // args.train_rounds))
    # With --train-processes N, each target trains in N worker processes
    # one after the other, the rounds shared out among them: a process's own
    # bias (the cores it landed on, its memory layout) lasts for all of its
    # rounds, so pairing rounds alone does not remove it.
    processes = max(1, min(args.train_processes, args.train_rounds))
    r = 0

    def out_of_time() -> bool:
        # A training round is a few hundred ms a target; one round's ratio
        # is too noisy to stand for the step, so the budget cuts only the
        # second half of the rounds.
        return time.perf_counter() > deadline and 2 * r >= args.train_rounds

    for p in range(processes):
        last_round = args.train_rounds * (p + 1) // processes
        if p and out_of_time():
            break
        with contextlib.ExitStack() as stack:
            # The workers build their models at the same time (a 0.6B model
            # takes tens of seconds on the host), and all are ready before
            # any takes a step.
            workers = {label: stack.enter_context(qwen3.TrainingWorker(
                device, size=args.size, seed=0, model_path=args.model, batch=batch, length=args.train_len,
                batch_seeds=[2], routing=mode, wait=False, **options)) for label, device, mode in targets}
            for worker in workers.values():
                worker.wait_ready()
            for label, _, mode in targets:
                first_ms = workers[label].timed_steps(1)[0] * 1e3
                # A decoder layer's ops run once per layer in a step: their
                # records (FlagGems' Python and Triton's JIT) come in the third.
                # The loss and the embedding's backward run once a step: theirs
                # come in step calls_past_records() - 1 (a 2 s pause on an H100,
                # which fell in a timed round before this warm-up).
                warmup = args.train_warmup
                if warmup is None:
                    warmup = calls_past_records() if mode not in (None, "native") else 3
                warmup_max_ms = max(workers[label].timed_steps(warmup)) * 1e3
                workers[label].reset_counts()  # the counts below are the rounds'
                if p == 0:
                    results[label].update(train_first_ms=first_ms, train_warmup_max_ms=warmup_max_ms)
            mine = {label: [] for label, _, _ in targets}
            while r < last_round and not out_of_time():
                for label, _, _ in targets[r % len(targets):] + targets[:r % len(targets)]:
                    timed = workers[label].timed_steps(block + 1)[1:]
                    steps_counted[label] += block + 1
                    seconds[label] += timed
                    mine[label] += timed
                    queued[label] += workers[label].queue_seconds[1:]
                    rounds[label].append(statistics.median(timed) * 1e3)
                r += 1
            for label, _, _ in targets:
                if mine[label]:
                    per_process[label].append(statistics.median(mine[label]) * 1e3)
                qwen3.add_counts(calls_per_op[label], workers[label].routes)
                qwen3.add_counts(launcher_calls[label], workers[label].launcher)
    for label, device, _ in targets:
        if device == "flagos" and steps_counted[label]:  # per step of the rounds (warm-up left out)
            steps = steps_counted[label]
            results[label]["train_op_calls_per_route"] = {
                backend: calls / steps for backend, calls in _calls_per_backend(calls_per_op[label]).items()}
            results[label]["train_vendor_ops_per_step"] = vendor_ops_per_step(calls_per_op[label], steps)
            results[label]["train_launcher_per_step"] = launcher_per_step(launcher_calls[label], steps)
        if processes > 1:
            results[label]["train_process_step_ms"] = per_process[label]
    for label, _, _ in targets:
        step_ms = statistics.median(seconds[label]) * 1e3
        # A step whose work is queued only just before it ends is bound by
        # the host, not by the device.
        results[label].update(train_step_ms=step_ms, train_steps_timed=len(seconds[label]),
                              train_queue_ms=statistics.median(queued[label]) * 1e3,
                              train_step_round_ms=rounds[label],
                              train_tokens_per_s=batch * args.train_len / step_ms * 1e3)


# The share of the time left for training that a second training at a
# larger batch (--train-batch-large) keeps for itself. Without a share of
# its own, the first training used the budget up and the second, the one
# whose step the device bounds, was skipped in every run on a GPU.
LARGE_BATCH_SHARE = 0.4


def training_deadline(now: float, deadline: float, large_batch_follows: bool) -> float:
    """The first training's deadline: the benchmark's, or, when a training
    at a larger batch follows, early enough to leave that one its share."""
    if not large_batch_follows or deadline <= now:
        return deadline
    return now + (deadline - now) * (1 - LARGE_BATCH_SHARE)


def train_large_batch(targets, results: dict, args, gpu: bool, deadline: float, batch: int) -> None:
    """measure_training() again at `batch` rows, into each target's
    results["train_large_batch"]; skipped (and said so there) once the time
    budget is used up, as the benchmark must end within its caller's limit."""
    large = {label: results[label].setdefault("train_large_batch", {"batch": batch}) for label, _, _ in targets}
    if time.perf_counter() > deadline:
        for r in large.values():
            r["skipped"] = f"time budget of {args.budget_s:.0f} s used up"
        return
    measure_training(targets, large, args, gpu, deadline, batch)


def _calls_per_backend(stats: dict) -> dict:
    """routing.stats()-shaped counts summed per backend."""
    counts = {}
    for per_backend in stats.values():
        for backend, n in per_backend.items():
            counts[backend] = counts.get(backend, 0) + n
    return counts


def _most_per_step(per_op: dict, kind: str, steps: int, rows: int) -> list:
    """(op, calls of `kind` per step) for the ops with the most, most first."""
    calls = sorted(((op, c[kind] / steps) for op, c in per_op.items() if c.get(kind)), key=lambda x: -x[1])
    return calls[:rows]


def vendor_ops_per_step(per_op: dict, steps: int, rows: int = 15) -> list:
    """The ops a training step routes to the vendor's kernels most, with
    their calls per step: where routing's host cost per call adds up, and
    the candidates for FlagGems' replays, which cost the host less."""
    return _most_per_step(per_op, torch_fl.routing.native_backend(), steps, rows)


def launcher_per_step(per_op: dict, steps: int) -> dict:
    """A training worker's FlagGems launcher counts (qwen3.TrainingWorker
    .launcher) per step: calls replayed, run in FlagGems' Python, served by
    the vendor, and the ops that ran Python. A warm step replays every
    FlagGems call; Python there costs tens of microseconds a call."""
    totals = {kind: sum(c.get(kind, 0) for c in per_op.values()) / steps for kind in ("replayed", "python", "vendor")}
    return dict(totals, most_python=_most_per_step(per_op, "python", steps, 12))


def launcher_totals() -> dict:
    """FlagGems calls so far that the launcher replayed, those that ran
    FlagGems' Python, and first calls served by the vendor's kernel, with the
    ops that ran Python most and why."""
    stats = torch_fl._flaggems.launcher_stats()
    python = sorted(stats.items(), key=lambda kv: -kv[1]["ran_python"])
    return {"vendor_calls": torch_fl._flaggems.vendor_calls(),
            "replayed": sum(s["replayed"] for s in stats.values()),
            "python": sum(s["ran_python"] for s in stats.values()),
            "on_vendor": sum(s["vendor"] for s in stats.values()),
            "most_python": [(op, s["ran_python"], s["signatures"], s["reason"])
                            for op, s in python[:20] if s["ran_python"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--model", default=None, metavar="PATH", help="local folder with real Qwen3 weights")
    parser.add_argument("--size", choices=["small", "0.6b"], default=None,
                        help="architecture (default: 0.6b on a GPU vendor, small on host)")
    parser.add_argument("--prefill", type=int, default=128, help="prompt tokens")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-len", type=int, default=None, help="tokens per row (1024 GPU, 64 host)")
    parser.add_argument("--train-steps", type=int, default=60, help="timed training steps after the first, per target")
    parser.add_argument("--train-rounds", type=int, default=30,
                        help="training rounds; each takes its share of the steps on every target, in turn; "
                             "at least half of them run whatever the time budget")
    parser.add_argument("--train-processes", type=int, default=None, metavar="N",
                        help="worker processes per target (default 2 on a GPU, 1 on the host vendor), one set "
                             "after the other, the training rounds shared out among them (each pays its start-up "
                             "and warm-up); the JSON then gives each process's median step")
    parser.add_argument("--train-warmup", type=int, default=None,
                        help="untimed training steps after the first, per target (default: 3, and past the "
                             "launcher's records where FlagGems serves ops, see measure_training)")
    parser.add_argument("--train-batch-large", type=int, default=None, metavar="ROWS",
                        help="after the training rounds, the default routing and the reference train again at "
                             "this many rows (default: 4 on a GPU, where 2 x 1024 tokens leave a step bound by "
                             "the host and 4 x 1024 by the device; 0 on the host vendor, or to skip); it keeps "
                             f"{LARGE_BATCH_SHARE * 100:.0f} %% of the time budget left after inference")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--profile-decode", type=int, default=0, metavar="ROWS",
                        help="print a torch.profiler table (ROWS rows) of one decode step per target")
    parser.add_argument("--modes", default="native,default,flaggems", help="flagos routings to measure")
    parser.add_argument("--budget-s", type=float, default=380.0)
    parser.add_argument("--warmup-prefill", type=int, default=None,
                        help="untimed prefills after the first (default: past the launcher's records, see "
                             "prepare_inference)")
    parser.add_argument("--warmup-decode", type=int, default=None,
                        help="untimed decode steps after the first (default: likewise)")
    parser.add_argument("--rounds", type=int, default=15,
                        help="inference rounds; each times every target's prefill and decode once, in turn")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    # A prefill's or decode step's once-per-call ops need this many calls.
    past_records = calls_past_records()
    args.warmup_prefill = past_records if args.warmup_prefill is None else args.warmup_prefill
    args.warmup_decode = past_records if args.warmup_decode is None else args.warmup_decode
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    vendor = torch_fl.flagos.vendor()
    gpu = vendor != "host"
    size = args.size = args.size or ("0.6b" if gpu else "small")
    dtype = torch.bfloat16 if gpu else torch.float32
    args.train_len = args.train_len or (1024 if gpu else 64)
    # Fresh processes running the same steps differ by up to a tenth in
    # step time (H100: torch CUDA's median step was 164, 180 and 182 ms in
    # three of them, each pinned to the same 4 cores); a target measured in
    # one process keeps that process's bias for the whole run.
    if args.train_processes is None:
        args.train_processes = 2 if gpu else 1
    reference = {"cuda": "cuda", "host": "cpu"}.get(vendor, "cpu")

    base = qwen3.build_model(size, seed=0, model_path=args.model)
    print(f"Qwen3 {args.model or size} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f} M params), "
          f"vendor '{vendor}', inference {str(dtype).replace('torch.', '')}, "
          f"train {args.train_batch}x{args.train_len} tokens{' bf16 autocast' if gpu else ''}")

    targets = [(f"flagos {m}", "flagos", m) for m in args.modes.split(",") if m]
    targets.append((f"torch {reference}", reference, None))
    results, skipped, prepared = {}, {}, {}
    for label, device, mode in targets:
        if mode in ("native", "flaggems") and not torch_fl._flaggems.available():
            skipped[label] = f"needs FlagGems, which {torch_fl._flaggems.unavailable_reason()}"
            continue
        if time.perf_counter() > deadline and mode is not None:
            skipped[label] = f"time budget of {args.budget_s:.0f} s used up"
            continue
        with target_routing(mode):
            prepared[label] = prepare_inference(base, device, dtype, args)
        prepared[label].update(device=device, mode=mode)
        results[label] = prepared[label]["result"]
        r = results[label]
        print(f"  {label}: first calls and warm-up done at {time.perf_counter() - t_start:.0f} s; slowest warm-up "
              f"prefill {r['prefill_warmup_max_ms']:.0f} ms, decode step {r['decode_warmup_max_ms']:.0f} ms "
              f"({r['warmup_records']} FlagGems records)")
    measure_inference_interleaved(prepared, args.rounds, args.prefill)
    print(f"  inference rounds done at {time.perf_counter() - t_start:.0f} s")
    if args.profile_decode:
        for label, p in prepared.items():
            with target_routing(p["mode"]):
                print_decode_profile(p["decode"], p["device"], args.profile_decode)
    prepared.clear()
    torch.flagos.empty_cache()
    if gpu:
        torch.cuda.empty_cache()

    trained = [t for t in targets if t[0] in results]
    large = args.train_batch_large if args.train_batch_large is not None else (4 if gpu else 0)
    large_targets = [t for t in trained if t[2] in (None, "default")]
    large_follows = bool(large) and len(large_targets) == 2
    if args.skip_train:
        why = "--skip-train"
    elif time.perf_counter() > deadline:
        why = f"time budget of {args.budget_s:.0f} s used up"
    else:
        why = None
        first_deadline = training_deadline(time.perf_counter(), deadline, large_follows)
        measure_training(trained, results, args, gpu, first_deadline, args.train_batch)
    print(f"  training done at {time.perf_counter() - t_start:.0f} s")
    if large_follows and not why:
        train_large_batch(large_targets, results, args, gpu, deadline, large)
        print(f"  training at {large} rows done at {time.perf_counter() - t_start:.0f} s")
    for label, device, _ in trained:
        if why:
            results[label]["train_skipped"] = why
        if device == "flagos" and torch_fl._flaggems.available():
            results[label]["launcher"] = launcher_totals()
    torch.flagos.empty_cache()

    ref = results.get(f"torch {reference}", {})
    columns = ["target", "prefill ms", "prefill 1st ms", "decode ms", "decode 1st ms",
               "train tok/s", "train 1st ms", "train queued ms", "prefill x ref", "decode x ref", "train x ref"]
    rows = []
    for label, r in results.items():
        r["prefill_x_ref"], r["decode_x_ref"], r["train_x_ref"] = (
            paired_ratio(r, ref, "prefill"), paired_ratio(r, ref, "decode"), paired_ratio(r, ref, "train_step"))
        rows.append([label, r["prefill_ms"], r["prefill_first_ms"], r["decode_ms"], r["decode_first_ms"],
                     r.get("train_tokens_per_s"), r.get("train_first_ms"), r.get("train_queue_ms"), r["prefill_x_ref"],
                     r["decode_x_ref"], r["train_x_ref"]])
    print_table(f"Qwen3 {size}: ms per call (median, synchronized); 'train queued ms': a step's time until the "
                f"host had queued all its work (near the step's time: bound by the host); 'x ref' = time relative "
                f"to torch {reference} (prefill, decode, train: median over rounds of the ratio within a round)",
                columns, rows)
    spread_rows = []
    for label, r in results.items():
        if label == f"torch {reference}":
            continue
        spreads = [paired_spread(r, ref, key) for key in ("prefill", "decode", "train_step")]
        r["prefill_x_ref_spread"], r["decode_x_ref_spread"], r["train_x_ref_spread"] = spreads
        spread_rows.append([label] + [_spread_text(s) for s in spreads])
    if spread_rows:
        print_table("Spread of the per-round ratios: 25th-75th percentile, and the rounds in which the target "
                    f"took less time than torch {reference}", ["target", "prefill", "decode", "train"], spread_rows)
    process_rows = [[label, ", ".join(f"{ms:.1f}" for ms in r["train_process_step_ms"])]
                    for label, r in results.items() if r.get("train_process_step_ms")]
    if process_rows:
        print_table("Median training step (ms) in each worker process, in the order they ran",
                    ["target", "per process"], process_rows)
    large_rows = []
    for label, r in results.items():
        if "train_large_batch" in r and "skipped" not in r["train_large_batch"]:
            big, big_ref = r["train_large_batch"], ref["train_large_batch"]
            big["train_x_ref"] = paired_ratio(big, big_ref, "train_step")
            spread = big["train_x_ref_spread"] = paired_spread(big, big_ref, "train_step")
            large_rows.append([label, big["train_tokens_per_s"], big["train_step_ms"], big["train_queue_ms"],
                               big["train_x_ref"], _spread_text(spread)])
    if large_rows:
        print_table(f"Training at {large} x {args.train_len} tokens, the default routing against torch {reference}",
                    ["target", "train tok/s", "step ms", "queued ms", "train x ref", "spread"], large_rows)
    for label, why in skipped.items():
        print(f"skipped {label}: {why}")
    for label, r in results.items():
        if "train_skipped" in r:
            print(f"{label}: training skipped: {r['train_skipped']}")
        if "skipped" in r.get("train_large_batch", {}):
            print(f"{label}: training at {large} rows skipped: {r['train_large_batch']['skipped']}")
    for label, r in results.items():
        per_step = r.get("train_launcher_per_step")
        if per_step:
            calls = r["train_op_calls_per_route"]
            print(f"{label}: a training step's routed calls: "
                  + ", ".join(f"{n:.0f} {backend}" for backend, n in sorted(calls.items()))
                  + f"; FlagGems launcher: {per_step['replayed']:.0f} replayed, {per_step['python']:.1f} in Python, "
                  f"{per_step['vendor']:.1f} on the vendor's kernel"
                  + "".join(f"\n    in Python: {op} {n:.1f} a step" for op, n in per_step["most_python"])
                  + "\n    most on the vendor's kernels: "
                  + ", ".join(f"{op} {n:.0f}" for op, n in r.get("train_vendor_ops_per_step", [])))
    for label, r in results.items():
        if "launcher" in r:
            lt = r["launcher"]
            print(f"{label}: launcher so far: {lt['replayed']} FlagGems calls replayed, {lt['python']} in Python; most in Python:")
            for op, n, sigs, why in lt["most_python"][:12]:
                print(f"    {op:32s} {n:6d} calls {sigs:5d} signatures  {why}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.out:
        write_json(args.out, {"benchmark": "qwen3", "environment": environment(), "size": size,
                              "model": args.model, "dtype": str(dtype), "prefill_tokens": args.prefill,
                              "train_batch": [args.train_batch, args.train_len], "results": results,
                              "skipped": skipped})


if __name__ == "__main__":
    main()
