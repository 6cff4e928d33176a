"""Where routing's host time goes, function by function: the same Qwen3
forward (and loss) on flagos and on the vendor's own device in one process,
each device's forwards sampled by its own `perf record` session.

    python tools/perf_forward.py [--routing native] [--size 0.6b] [--rows 1] [--len 128] [--grad]
                                 [--blocks 8] [--per-block 25] [--shown 40] [--out perf.json]

Both sessions attach to this process and start disabled; each is enabled
(perf's --control fifo) only while its device runs a block of forwards, and
the devices alternate by block. So both profiles come from one process and
one host, free of the bias between processes that hides differences of a
few percent, and routing's cost shows as the functions, and the libraries,
on which the flagos forwards spent more time. A sample is CPU time of any
of the process's threads: at a fixed frequency, samples per forward are
milliseconds per forward.

Needs perf: on PATH, or PERF=/path/to/perf (PERF_LD_LIBRARY_PATH: the
libraries of a perf binary carried to a machine without one; the measured
process keeps its own library path). Defaults: a 128-token prefill of the
0.6B architecture without gradients, bf16 autocast, on a GPU; the small
config at 1 x 64 tokens in float32 on the host vendor.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402
from torch_fl.models import qwen3  # noqa: E402

from forward_overhead import default_warmup, models_and_batches, reference_device  # noqa: E402

FREQUENCY = 4999  # samples per second and thread; odd, so as not to beat with a periodic timer

# One row of `perf report --stdio -F overhead,sample,dso,sym`.
REPORT_ROW = re.compile(r"^\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*?)\s*$")


def perf_binary() -> str:
    perf = os.environ.get("PERF") or shutil.which("perf")
    if not perf:
        raise SystemExit("perf_forward: no perf on PATH; set PERF=/path/to/perf")
    return perf


def perf_env() -> dict:
    env = dict(os.environ)
    if os.environ.get("PERF_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["PERF_LD_LIBRARY_PATH"]
    return env


class Session:
    """A `perf record` attached to this process, enabled and disabled
    through its control fifo; each command waits for perf's ack."""

    def __init__(self, perf: str, name: str, workdir: str):
        self.data = os.path.join(workdir, f"{name}.data")
        control, ack = os.path.join(workdir, f"{name}.ctl"), os.path.join(workdir, f"{name}.ack")
        os.mkfifo(control)
        os.mkfifo(ack)
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen([perf, "record", "-F", str(FREQUENCY), "-D", "-1", "--control",
                                      f"fifo:{control},{ack}", "-p", str(os.getpid()), "-o", self.data],
                                     env=perf_env(), stdout=self.log, stderr=subprocess.STDOUT)
        # Opening a fifo blocks until the other end opens it: perf has started.
        self.control = open(control, "w")
        self.ack = open(ack)

    def command(self, word: str) -> None:
        self.control.write(word + "\n")
        self.control.flush()
        if not self.ack.readline():
            raise RuntimeError(f"perf_forward: perf stopped answering (see {self.log.name})")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=300)
        self.log.close()


def samples_by_function(perf: str, data: str) -> dict:
    """{(library, function): samples} of a perf.data file."""
    report = subprocess.run([perf, "report", "-i", data, "--no-children", "--stdio", "-F", "overhead,sample,dso,sym"],
                            env=perf_env(), capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in report.splitlines():
        match = REPORT_ROW.match(line)
        if match:
            key = (match[2], match[3])
            rows[key] = rows.get(key, 0) + int(match[1])
    return rows


def ms_per_forward(samples: dict, forwards: int) -> dict:
    return {key: n / FREQUENCY * 1e3 / forwards for key, n in samples.items()}


def compare(reference: dict, flagos: dict, shown: int) -> dict:
    """Functions and libraries by the time flagos spent on them beyond the
    reference (ms per forward), most first."""
    functions = [{"library": lib, "function": fn, "reference_ms": reference.get((lib, fn), 0.0),
                  "flagos_ms": flagos.get((lib, fn), 0.0)} for lib, fn in set(reference) | set(flagos)]
    libraries = {}
    for row in functions:
        totals = libraries.setdefault(row["library"], {"library": row["library"], "reference_ms": 0.0, "flagos_ms": 0.0})
        totals["reference_ms"] += row["reference_ms"]
        totals["flagos_ms"] += row["flagos_ms"]
    by_extra = lambda row: row["flagos_ms"] - row["reference_ms"]  # noqa: E731
    return {
        "reference_ms": sum(reference.values()), "flagos_ms": sum(flagos.values()),
        "functions": sorted(functions, key=by_extra, reverse=True)[:shown],
        "libraries": sorted(libraries.values(), key=by_extra, reverse=True),
    }


def measure(args, perf: str, workdir: str) -> dict:
    reference = reference_device()
    gpu = reference != "cpu"
    size = args.size or ("0.6b" if gpu else "small")
    length = args.len or (128 if gpu else 64)
    autocast_dtype = torch.bfloat16 if gpu else None
    _, models, batches = models_and_batches(size, args.rows, length)
    sessions = {device: Session(perf, device, workdir) for device in models}
    queued = {device: [] for device in models}
    warmup = default_warmup(args.routing) if args.warmup is None else args.warmup
    try:
        with routing.preset(args.routing), qwen3.paused_gc(), torch.set_grad_enabled(args.grad):
            for device, model in models.items():
                model.train(args.grad)
                for _ in range(warmup):
                    qwen3.lm_loss(model, batches[device], autocast_dtype).item()
            for block in range(args.blocks):
                for device in (list(models) if block % 2 == 0 else list(models)[::-1]):
                    qwen3.sync(torch.device(device))
                    sessions[device].command("enable")
                    for _ in range(args.per_block):
                        begin = time.perf_counter()
                        loss = qwen3.lm_loss(models[device], batches[device], autocast_dtype)
                        queued[device].append((time.perf_counter() - begin) * 1e3)
                        qwen3.sync(torch.device(device))
                        del loss
                    sessions[device].command("disable")
    finally:
        for session in sessions.values():
            session.stop()
    forwards = args.blocks * args.per_block
    profiles = {device: ms_per_forward(samples_by_function(perf, s.data), forwards) for device, s in sessions.items()}
    return {
        "reference": reference, "size": size, "rows": args.rows, "length": length, "grad": args.grad,
        "autocast": str(autocast_dtype) if autocast_dtype is not None else None, "routing": args.routing,
        "forwards": forwards, "queued_ms": {device: statistics.median(t) for device, t in queued.items()},
        **compare(profiles[reference], profiles["flagos"], args.shown),
    }


def report(result: dict) -> str:
    ref = result["reference"]
    lines = [f"Qwen3 {result['size']} forward and loss, {result['rows']} x {result['length']} tokens, "
             f"gradients {'on' if result['grad'] else 'off'}"
             f"{', ' + result['autocast'] + ' autocast' if result['autocast'] else ''}, routing '{result['routing']}', "
             f"{result['forwards']} forwards per device in one process",
             f"median queued ms: {ref} {result['queued_ms'][ref]:.2f}, flagos {result['queued_ms']['flagos']:.2f}; "
             f"sampled CPU ms per forward: {ref} {result['reference_ms']:.2f}, flagos {result['flagos_ms']:.2f}",
             "", f"{'extra ms':>9} {ref + ' ms':>9} {'flagos ms':>9}  library"]
    for row in result["libraries"]:
        lines.append(f"{row['flagos_ms'] - row['reference_ms']:+9.3f} {row['reference_ms']:9.3f} {row['flagos_ms']:9.3f}  "
                     f"{row['library']}")
    lines += ["", f"{'extra ms':>9} {ref + ' ms':>9} {'flagos ms':>9}  library: function"]
    for row in result["functions"]:
        lines.append(f"{row['flagos_ms'] - row['reference_ms']:+9.3f} {row['reference_ms']:9.3f} {row['flagos_ms']:9.3f}  "
                     f"{row['library']}: {row['function'][:100]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routing", default="native", choices=list(routing.PRESETS))
    parser.add_argument("--size", default=None, choices=["small", "0.6b"])
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--len", type=int, default=None, help="tokens per row (128 on a GPU, 64 on the host vendor)")
    parser.add_argument("--grad", action="store_true", help="gradients on, as in training (default: off, as in inference)")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per device, alternating")
    parser.add_argument("--per-block", type=int, default=25, help="forwards per block")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed forwards per device first (default: past the FlagGems records)")
    parser.add_argument("--shown", type=int, default=40, help="functions listed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.blocks < 1 or args.per_block < 1:
        parser.error("--blocks and --per-block must be at least 1")
    perf = perf_binary()
    with tempfile.TemporaryDirectory(prefix="perf_forward.") as workdir:
        result = measure(args, perf, workdir)
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
