"""Checks every FlagGems op that torch_fl routes against torch CUDA and
writes the operator-support table (docs/operator-support.md).

    python tools/operator_support.py --out support.json --md docs/operator-support.md \
        [--conf backends.generated.conf] [--workers 12] [--budget 420]

Runs on the GPU machine (FLAGOS_VENDOR=cuda, FlagGems installed). Inputs are
PyTorch's OpInfo samples (two per dtype, and a non-contiguous copy of one).
Each sample runs on flagos with default routing (FlagGems where it serves
the op): its result is compared with torch CUDA's and, where the op is
differentiable, its input gradients for a fixed random output gradient with
those of the same sample on flagos with every FlagGems op routed to the
vendor's kernels (torch CUDA's kernels, same dtype, same seed; torch CUDA's
own backward cannot run after import torch_fl, pytorch#161129). This is how
*_backward ops are reached. The first
sample of each dtype also runs in the OpInfo's in-place and out= forms
(reaching add_.Tensor, add.out...), and random ops are checked by their
distribution and seeding (tools/random_op_checks.py); ops no OpInfo reaches
have hand-written samples (tools/handwritten_op_cases.py). The FlagGems ops a
sample reached (routing.stats()) are credited with the outcome. A failing
sample that reached several FlagGems ops is re-run with one of them on
FlagGems at a time to find the culprit. Tolerances are FlagGems' own: rtol
fp32 1.3e-6, fp16 1e-3, bf16 0.016 (atol 1e-4, 1e-3, 0.016); gradients:
normwise relative error fp32 1e-4, fp16 1e-2, bf16 5e-2 (GRAD_TOL).
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Dict, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from sweep_sample import (  # noqa: E402
    DTYPES, HANDWRITTEN, RANDOM_CHECKS, RANDOM_WORDS, REHEARSAL, REPLAY, _check_sample, _is_random,
    _noncontiguous_variant, _one_line, _random_op_records, _variants, handwritten_dtypes, handwritten_items,
    handwritten_record,
)


def _claim_like_the_gpu():
    """Claims every op FlagGems would serve on an NVIDIA GPU (worked out
    without one, as setup() would install it there), so the host vendor
    dispatches them as the cuda vendor does. Returns (served ops, excluded
    op -> why, size of FlagGems' config)."""
    import torch_fl
    from torch_fl import flaggems

    items = flaggems.capture_config()
    names = [n for n, _ in items if n not in flaggems._NEVER_ROUTED]
    refused = dict(torch_fl._C._claim_ops(names))
    captured = dict(items)
    excluded = {**{n: why for n, why in flaggems._NEVER_ROUTED.items() if n in captured}, **refused}
    return sorted(n for n in names if n not in refused), excluded, len(items)


def worker(shard, budget, log_path):
    os.environ.setdefault("FLAGOS_VENDOR", "cuda")
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torch_fl  # noqa: F401
    from torch_fl import routing
    from torch.testing._internal.common_methods_invocations import op_db

    if os.environ.get(REHEARSAL) == "1":
        _claim_like_the_gpu()
    deadline = time.time() + budget
    ops = {o.name + ("." + o.variant_test_name if o.variant_test_name else ""): o for o in op_db}
    log = open(log_path, "a", buffering=1)  # a line per record: a killed worker keeps its results
    records = []

    def emit(record):
        records.append(record)
        log.write(json.dumps(record) + "\n")

    for name in shard:
        if time.time() > deadline:
            emit({"opinfo": name, "status": "timeout"})
            continue
        # A worker killed outside a sample (making samples, compiling) leaves
        # this as its last line: the report names the OpInfo.
        log.write(json.dumps({"opinfo": name, "status": "begun"}) + "\n")
        if name == RANDOM_CHECKS:
            for record in _random_op_records(routing):
                emit(record)
            continue
        if name.startswith(HANDWRITTEN):
            for dtype in handwritten_dtypes(name):
                log.write(json.dumps({"opinfo": name, "dtype": dtype, "sample": 0, "status": "started"}) + "\n")
                emit(handwritten_record(name, dtype, routing))
            continue
        op = ops[name]
        for dtype in DTYPES:
            tdtype = getattr(torch, dtype)
            if tdtype not in op.supported_dtypes(os.environ.get("FLAGOS_SWEEP_REFERENCE", "cuda")):
                continue
            try:
                samples = list(op.sample_inputs("cpu", tdtype))[:2]
                samples += _noncontiguous_variant(samples)
            except Exception:
                continue
            # The in-place and out= forms on the first sample only: they
            # share the functional form's kernel math, and time is short.
            checks = [(i, sample, "functional") for i, sample in enumerate(samples)]
            checks += [(0, samples[0], v) for v in _variants(op)[1:]] if samples else []
            for i, sample, variant in checks:
                if time.time() > deadline:
                    break
                # A kernel that never finishes leaves this as the worker's
                # last line: the report names it as hung.
                log.write(json.dumps({"opinfo": name, "dtype": dtype, "sample": i, "variant": variant,
                                      "status": "started"}) + "\n")
                emit(_check_sample(op, sample, dtype, variant, routing)
                     | {"opinfo": name, "dtype": dtype, "sample": i, "variant": variant})
    log.close()


# How many OpInfos' worth of time the random checks take (2^16 draws per
# op and dtype), so that their worker gets fewer OpInfos and all end
# together.
EXTRA_WEIGHT = {RANDOM_CHECKS: 8}


def make_shards(names, workers, only=None):
    """Each worker's list: the random checks first, then OpInfos and
    hand-written cases, each given to the least loaded worker."""
    items = list(EXTRA_WEIGHT) + names
    if only is not None:
        wanted = set(only.split(","))
        unknown = wanted - set(items)
        if unknown:
            raise SystemExit(f"--only: no OpInfo named {', '.join(sorted(unknown))}")
        items = [n for n in items if n in wanted]
    shards, load = [[] for _ in range(workers)], [0] * workers
    for name in items:
        i = load.index(min(load))
        shards[i].append(name)
        load[i] += EXTRA_WEIGHT.get(name, 1)
    return shards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/operator_support.json")
    parser.add_argument("--md", default=str(ROOT / "docs" / "operator-support.md"))
    parser.add_argument("--conf", default=None, help="write 'op = cuda' lines for failing ops here")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--budget", type=float, default=420, help="seconds per worker")
    parser.add_argument("--report-only", action="store_true",
                        help="only build the table from the worker logs of an earlier run")
    parser.add_argument("--static", action="store_true",
                        help="no GPU: list what torch_fl routes to FlagGems and what it keeps native, "
                             "with the GPU columns 'not run' (needs GEMS_VENDOR=nvidia, FLAGGEMS_DB_URL)")
    parser.add_argument("--rehearse", action="store_true",
                        help="no GPU: run the sweep on the host vendor against the CPU with every FlagGems op "
                             "claimed, and list the ops no sample reaches (needs FlagGems, GEMS_VENDOR=nvidia, "
                             "FLAGGEMS_DB_URL)")
    parser.add_argument("--from-json", default=None, metavar="PATH", nargs="+",
                        help="re-render the table and conf from JSONs this script wrote on the GPU machine "
                             "(several: a later run's samples replace an earlier one's)")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated OpInfo names to run (say, those a first run did not reach); "
                             f"'{HANDWRITTEN}<case>' names a hand-written case, '{RANDOM_CHECKS}' the random checks")
    parser.add_argument("--replay", action="store_true",
                        help="run each sample on flagos once before the checked call (the launcher's "
                             "record), so that the checked call replays FlagGems' kernels where it can")
    parser.add_argument("--missing-from", default=None, metavar="PATH",
                        help="run only the OpInfos with no record in this earlier run's JSON "
                             "(merge the two with --from-json)")
    args = parser.parse_args()
    if args.from_json:
        return render_from_json(args)
    if args.static:
        args.report_only = True
    if args.rehearse:
        os.environ.update({"FLAGOS_VENDOR": "host", "FLAGOS_SWEEP_REFERENCE": "cpu", REHEARSAL: "1"})
    if args.replay:
        os.environ[REPLAY] = "1"
    logs = Path(args.out).with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)

    # The static listing needs no GPU: the host vendor serves it.
    os.environ.setdefault("FLAGOS_VENDOR", "host" if args.static else "cuda")
    # A checked call must run FlagGems' kernel, not CUDA's, though its
    # signature is new (the default serves a first call on the vendor's kernel).
    os.environ["FLAGOS_FLAGGEMS_VENDOR_CALLS"] = "0"
    # Which ops FlagGems serves: ask in a child so this process stays CUDA-free for spawn.
    ctx = mp.get_context("spawn")
    from torch.testing._internal.common_methods_invocations import op_db

    # jiterator_* OpInfos call torch.cuda.jiterator, which takes CUDA tensors only.
    names = [o.name + ("." + o.variant_test_name if o.variant_test_name else "") for o in op_db
             if not any(w in o.name for w in RANDOM_WORDS) and not o.name.startswith("jiterator_")]
    names += handwritten_items()
    start = time.time()
    if not args.report_only:
        for old in logs.glob("worker*.jsonl"):
            old.unlink()
        if args.missing_from:
            ran = {r["opinfo"] for r in json.loads(Path(args.missing_from).read_text())["records"]}
            args.only = ",".join(n for n in names if n not in ran)
        shards = make_shards(names, args.workers, args.only)
        procs = [ctx.Process(target=worker, args=(s, args.budget, str(logs / f"worker{i}.jsonl")))
                 for i, s in enumerate(shards)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=max(1.0, args.budget + 60 - (time.time() - start)))
            if p.is_alive():
                print(f"{p.name} did not finish in time; its remaining OpInfos count as not run")
                p.kill()
    records, hung, begun = read_worker_logs(logs)
    if not args.report_only:
        # The OpInfos of a worker killed before it reached them.
        timed_out = {r["opinfo"] for r in records if r.get("status") == "timeout"}
        records += [{"opinfo": n, "status": "timeout"} for shard in shards for n in shard
                    if n not in begun and n not in timed_out and n not in EXTRA_WEIGHT]
        names = [n for shard in shards for n in shard if n not in EXTRA_WEIGHT]
    if args.static:
        records, hung = [], []
    elapsed = time.time() - start
    if args.rehearse:
        return report_rehearsal(args, records)

    import torch_fl
    from torch_fl import flaggems, routing

    if args.static:
        served, excluded, config_size = _claim_like_the_gpu()
    else:
        served, excluded, config_size = flaggems.available_ops(), flaggems.excluded_ops(), flaggems.config_size()
    table = tabulate(served, records)
    summary = {
        "flaggems_config_entries": config_size,
        "routed_to_flaggems": len(served),
        "excluded": excluded,
        **classify(served, table, args.static),
        "opinfos": sum(1 for n in names if not n.startswith(HANDWRITTEN)),
        "timeouts": sum(1 for r in records if r.get("status") == "timeout"),
        "hung": hung,
        "noncontiguous": True,
        "replay": bool(args.replay),  # checked calls were the launcher's replays where it could
        **_record_counts(records),
        "seconds": elapsed,
        "environment": None if args.static else {
            "device": torch_fl.flagos.get_device_name(0), "torch": __import__("torch").__version__,
            "flaggems": __import__("flag_gems").__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "table": table, "records": records}, indent=1))

    routes = {op: ("flagos" if args.static else routing.route_of(op)) for op in served}
    write_reports(args, summary, table, served, routes)
    return 0


def report_rehearsal(args, records) -> int:
    """The served ops that no sample of a rehearsal reached: they need a
    hand-written sample (tools/handwritten_op_cases.py) before the GPU run."""
    served = _claim_like_the_gpu()[0]
    reached = {op for r in records for op in r.get("reached", ())}
    unreached = [op for op in served if op not in reached]
    Path(args.out).write_text(json.dumps({"served": len(served), "unreached": unreached}, indent=1))
    print(f"{len(served) - len(unreached)} of {len(served)} ops FlagGems serves were reached; "
          f"not reached: {' '.join(unreached) or 'none'}")
    return 0


def read_worker_logs(logs: Path):
    """The records of every worker log; the samples a worker started but
    never finished (it was killed there: a hang), or the OpInfo it was
    preparing when killed; and the OpInfos begun."""
    records, hung, begun = [], [], set()
    for path in sorted(logs.glob("worker*.jsonl")):
        last = None
        for line in path.read_text().splitlines():
            try:
                last = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed worker
            if last.get("status") == "begun":
                begun.add(last["opinfo"])
            elif last.get("status") != "started":
                records.append(last)
        if last and last.get("status") == "started":
            form = "" if last.get("variant", "functional") == "functional" else f", {last['variant']}"
            hung.append(f"{last['opinfo']} ({last['dtype']}, sample {last['sample']}{form})")
        elif last and last.get("status") == "begun":
            hung.append(f"{last['opinfo']} (making its samples)")
    return records, hung, begun


def tabulate(served, records):
    """Per op and dtype: samples passed/failed, and the first failure."""
    table = {op: {d: {"pass": 0, "fail": 0, "detail": ""} for d in DTYPES} for op in served}
    for r in records:
        if r.get("status") in (None, "timeout", "reference-error"):
            continue
        if r.get("variant") != "property" and any(_is_random(op) for op in r["reached"]):
            continue
        for op in r["reached"]:
            if op not in table:
                continue
            cell = table[op][r["dtype"]]
            if r["status"] == "pass" or op not in r["culprits"]:
                cell["pass"] += 1
            else:
                cell["fail"] += 1
                cell["detail"] = cell["detail"] or _one_line(f"{r['opinfo']}: {r['detail']}")
    return table


def _verdict_fn(static):
    def verdict(cell):
        if static:
            return "not run"
        if cell["fail"]:
            return "fail"
        return "pass" if cell["pass"] else "no sample"
    return verdict


def classify(served, table, static):
    """The summary's op lists: failing, passing every tested dtype, never sampled."""
    verdict = _verdict_fn(static)
    failing = sorted(op for op in served if any(verdict(table[op][d]) == "fail" for d in DTYPES))
    return {
        "failing": failing,
        "passing_all_tested": sorted(op for op in served if op not in failing and
                                     any(verdict(table[op][d]) == "pass" for d in DTYPES)),
        "no_sample": sorted(op for op in served if all(verdict(table[op][d]) == "no sample" for d in DTYPES)),
    }


def _record_key(r):
    return r["opinfo"], r.get("dtype"), r.get("sample"), r.get("variant", "functional")


def merge_runs(paths):
    """The summary of the first run, and the records of all: a later run's
    record replaces an earlier one of the same sample (a rerun of the
    OpInfos a first run did not reach, or after a fix)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    merged = {}
    for run in runs:
        for r in run["records"]:
            merged[_record_key(r)] = r
    records = list(merged.values())
    summary = dict(runs[0]["summary"])
    summary.update(_record_counts(records))
    if len(runs) > 1:
        summary["seconds"] = sum(run["summary"].get("seconds", 0) for run in runs)
        summary["hung"] = [h for run in runs[1:] for h in run["summary"].get("hung", [])]
        summary["timeouts"] = runs[-1]["summary"].get("timeouts", 0)
    return summary, records, sorted(runs[0]["table"])


def _record_counts(records):
    return {
        "samples_with_gradients": sum(1 for r in records if r.get("grads")),
        "variant_samples": sum(1 for r in records if r.get("variant") in ("inplace", "out")),
        "random_checks": sum(1 for r in records if r.get("variant") == "property"),
    }


def render_from_json(args) -> int:
    summary, records, served = merge_runs(args.from_json)
    table = tabulate(served, records)
    summary.update(classify(served, table, False))
    failing = summary["failing"]
    packaged = _packaged_routes()
    routes = {}
    for op in served:
        held = _packaged_route_of(op, packaged)
        # A failing op goes to CUDA's kernel unless the packaged table says
        # where (max_pool2d_backward has none: the CPU).
        routes[op] = held.backend if held else "cuda" if op in failing else "flagos"
        if routes[op] != "flagos" and op not in failing:  # held for a reason the sweep could not see
            for d in DTYPES:
                table[op][d]["detail"] = table[op][d]["detail"] or f"torch_fl/{held.file}: {held.comment}"
    write_reports(args, summary, table, served, routes)
    return 0


class PackagedRoute(NamedTuple):
    backend: str
    comment: str  # the comment block above the op's line
    file: str  # the file of the line: backends.conf or one it includes


def _packaged_routes(path: Path = ROOT / "torch_fl" / "backends.conf") -> Dict[str, PackagedRoute]:
    """The lines of torch_fl/backends.conf and of the files it includes
    (the speed holds), by op."""
    routes, comment = {}, []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            comment.append(text.lstrip("# "))
        elif text.startswith("include "):
            routes.update(_packaged_routes(path.parent / text.split(None, 1)[1]))
            comment = []
        elif "=" in text:
            op, backend = (w.strip() for w in text.split("#")[0].split("=", 1))
            routes[op] = PackagedRoute(backend, " ".join(comment), path.name)
        else:
            comment = []
    return routes


def _packaged_route_of(op: str, packaged: Dict[str, PackagedRoute]):
    """The packaged line that routes `op`: an exact line, else a bare-name
    line ("bmm" also holds "bmm.out"); None if none does."""
    return packaged.get(op) or packaged.get(op.split(".", 1)[0])


def _default_routes_line(served, routes) -> str:
    """How the listed ops run by default: on FlagGems, on the vendor's
    kernel (and how many of those for speed, not correctness), on the CPU,
    or otherwise (decomposed above the backend key, copies, absent)."""
    packaged = _packaged_routes()

    def count(want: str) -> int:
        return sum(1 for op in served if routes[op] == want)

    def in_included_file(op: str) -> bool:  # a speed hold, not backends.conf's own line
        held = _packaged_route_of(op, packaged)
        return held is not None and held.file != "backends.conf"

    held_for_speed = sum(1 for op in served if routes[op] == "cuda" and in_included_file(op))
    other = len(served) - count("flagos") - count("cuda") - count("cpu")
    return (f"- default routes of the ops listed: FlagGems {count('flagos')}; the vendor's kernel "
            f"{count('cuda')} (of them {held_for_speed} held for speed in `torch_fl/speed_holds_cuda.conf`, "
            f"the rest for correctness in `torch_fl/backends.conf`); CPU {count('cpu')}; other {other}")


def write_reports(args, summary, table, served, routes) -> None:
    verdict = _verdict_fn(args.static)
    failing = summary["failing"]
    env = summary.get("environment") or {}
    static_header = [
        "Static listing made without a GPU: the routes are what `import torch_fl` sets up on the cuda "
        "vendor; the per-dtype checks against torch CUDA have not been run yet (they come from "
        "`tools/operator_support.py` on the GPU machine, which replaces this table).",
    ]
    gpu_header = [
        "Generated by `tools/operator_support.py` on the GPU machine "
        f"({env.get('device')}, torch {env.get('torch')}, FlagGems {env.get('flaggems')}). "
        "Each FlagGems op is checked against torch CUDA on PyTorch OpInfo samples (up to 2 per dtype"
        f"{', plus a non-contiguous copy of one' if summary.get('noncontiguous') else ''}) "
        "with FlagGems' tolerances (rtol fp32 1.3e-6, fp16 1e-3, bf16 0.016). Samples that reach a "
        "random op (rand, normal, dropout...) are not compared."
        + (f" Input gradients were compared as well, against the same sample's on flagos with every "
           f"FlagGems op on CUDA's kernels (same dtype and seed), for "
           f"{summary['samples_with_gradients']} samples (this is how `*_backward` ops are reached)."
           if "samples_with_gradients" in summary else
           " Only forward results were compared: `*_backward` ops show 'no sample'.")
        + (f" The in-place and out= forms of each OpInfo ran on its first sample "
           f"({summary['variant_samples']} samples), and random ops were checked by their distribution and "
           f"seeding (tools/random_op_checks.py, {summary['random_checks']} checks); ops no OpInfo reaches "
           f"ran hand-written samples (tools/handwritten_op_cases.py; integer-only ones in the float32 column)."
           if "variant_samples" in summary else ""),
    ]
    timeouts = summary.get("timeouts", 0)
    lines = [
        "# Operator support: FlagGems routes on flagos",
        "",
        *(static_header if args.static else gpu_header),
        "",
        f"- FlagGems config entries enabled for this GPU: {summary['flaggems_config_entries']}",
        f"- routed to FlagGems by torch_fl: {summary['routed_to_flaggems']}; "
        f"passing every tested dtype: {len(summary['passing_all_tested'])}; failing: {len(failing)} "
        f"(routed off FlagGems by default in `torch_fl/backends.conf`); no OpInfo sample reached them: "
        f"{len(summary['no_sample'])}",
        *([f"- OpInfos not run within the time budget: {timeouts} of {summary['opinfos']} "
           f"(their ops may show 'no sample')"] if timeouts and not args.static else []),
        *([f"- samples that never finished (the worker was killed there): {', '.join(summary['hung'])}"]
          if summary.get("hung") else []),
        _default_routes_line(served, routes),
        f"- kept native (never routed to FlagGems): {len(summary['excluded'])}",
        "",
        "| op | default route | float32 | float16 | bfloat16 | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for op in served:
        cells = [verdict(table[op][d]) for d in DTYPES]
        note = next((table[op][d]["detail"] for d in DTYPES if table[op][d]["detail"]), "")
        lines.append(f"| `{op}` | {routes[op]} | " + " | ".join(cells) + f" | {note.replace('|', '/')[:160]} |")
    lines += ["", "## Kept native", "", "| op | why |", "| --- | --- |"]
    for op, why in sorted(summary["excluded"].items()):
        lines.append(f"| `{op}` | {_one_line(why)} |")
    Path(args.md).write_text("\n".join(lines) + "\n")
    if args.conf:
        conf = ["# FlagGems ops that failed tools/operator_support.py against torch CUDA: native by default."]
        conf += [f"{op} = cuda  # {next((table[op][d]['detail'] for d in DTYPES if table[op][d]['detail']), '')[:100]}"
                 for op in failing]
        Path(args.conf).write_text("\n".join(conf) + "\n")
    print(json.dumps({k: (v if not isinstance(v, (list, dict)) else len(v)) for k, v in summary.items()}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
