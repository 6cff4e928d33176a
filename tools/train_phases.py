"""A Qwen3 AdamW step's time per configuration, each configuration in a
fresh process, and the same step split into its phases (forward, backward,
optimizer), the device synchronized at each phase's end.

    python tools/train_phases.py [--configs ref,ref+flaggems,native,native-noflaggems,default]
                                 [--repeats 2] [--steps 10] [--out phases.json]

Configurations: "ref" is PyTorch's own device (cuda, or cpu without a GPU)
in a process that never imports torch_fl; "ref+flaggems" the same with
FlagGems and Triton imported (what a flagos process carries besides
torch_fl); "native", "default", "flaggems" are flagos routing presets;
"-noflaggems" runs one without FlagGems' Python (FLAGOS_DISABLE_FLAGGEMS_PY=1).
Each repeat runs every configuration once, the order rotated. The
unsynchronized step is what the benchmark measures; the synchronized
phases tell which phase waits on the host (a phase whose synchronized
time exceeds its GPU work is bound by its launches).
"""
import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _without_torch_fl(relative: str):
    """A file of the torch_fl package loaded as a module of its own: the
    package (which registers the flagos backend) stays unimported."""
    name = relative.replace("/", "_").removesuffix(".py") + "_standalone"
    spec = importlib.util.spec_from_file_location(name, ROOT / "torch_fl" / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(config: str, steps: int, size: str) -> dict:
    """The configuration's measurements, in this process (see run_child)."""
    if config.startswith("ref"):
        if config == "ref+flaggems":
            import flag_gems  # noqa: F401
        import torch

        return measure(_without_torch_fl("models/qwen3.py"), "cuda" if torch.cuda.is_available() else "cpu", steps, size)
    import torch_fl  # noqa: F401
    from torch_fl import routing
    from torch_fl.models import qwen3

    with routing.preset(config.split("-")[0]):
        return measure(qwen3, "flagos", steps, size)


def measure(qwen3, device: str, steps: int, size: str) -> dict:
    """Median step time over `steps` timed steps after 3 untimed ones, then
    each phase's median time over steps synchronized at every phase's end."""
    import torch

    gpu = torch.cuda.is_available()
    batch, length = 2, 1024 if gpu else 64
    base = qwen3.build_model(size, seed=0)
    tokens = [qwen3.random_tokens(batch, length, qwen3.vocab_size(base), seed=2)]
    trainer = qwen3.Trainer(qwen3.clone_to(base, device), lr=1e-4, foreach=True,
                            autocast_dtype=torch.bfloat16 if gpu else None)
    for _ in range(3):
        trainer.step(tokens[0])
    step_s = trainer.timed_steps(tokens, steps)
    queued_s = trainer.queue_seconds
    phases = {"forward": [], "backward": [], "optimizer": []}

    class SyncedPhase:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            qwen3.sync(trainer.device)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            qwen3.sync(trainer.device)
            phases[self.name].append(time.perf_counter() - self.start)

    trainer.phase = SyncedPhase
    with qwen3.paused_gc():
        for _ in range(max(3, steps // 2)):
            trainer.step(tokens[0])
    if "torch_fl" in sys.modules and device != "flagos":
        raise RuntimeError("the reference process imported torch_fl")
    return {"step_ms": statistics.median(step_s) * 1e3, "steps_ms": [s * 1e3 for s in step_s],
            "queued_ms": statistics.median(queued_s) * 1e3,
            "tokens": batch * length, **{f"{k}_ms": statistics.median(v) * 1e3 for k, v in phases.items()}}


def run_child(config: str, steps: int, size: str) -> dict:
    """The configuration's measurements, from a fresh interpreter (the
    "ref" ones never import torch_fl, see torch_fl/_clean_process.py; nor
    does this process)."""
    env = {"FLAGOS_DISABLE_FLAGGEMS_PY": "1"} if config.endswith("-noflaggems") else None
    out = _without_torch_fl("_clean_process.py").run(__file__, ["--child", config, "--steps", str(steps), "--size", size], config, 900, env=env)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="ref,ref+flaggems,native,native-noflaggems,default")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", default=None, choices=["small", "0.6b"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.size)))
        return
    import torch

    size = args.size or ("0.6b" if torch.cuda.is_available() else "small")
    configs = args.configs.split(",")
    runs = {c: [] for c in configs}
    for r in range(args.repeats):
        for config in configs[r % len(configs):] + configs[:r % len(configs)]:
            runs[config].append(run_child(config, args.steps, size))
    print(f"Qwen3 {size} AdamW step, medians over {args.repeats} processes per configuration (ms)")
    print("('queued': the unsynchronized step's time until the host had queued its work; the rest of the "
          "step is the device catching up)")
    print(f"{'config':20} {'step':>8} {'x ref':>6} {'queued':>7} {'forward':>8} {'backward':>9} {'optimizer':>9}")
    table = {}
    for config in configs:
        row = {k: statistics.median(run[k] for run in runs[config])
               for k in ("step_ms", "queued_ms", "forward_ms", "backward_ms", "optimizer_ms")}
        table[config] = dict(row, runs=runs[config])
    ref = table[configs[0]]["step_ms"]
    for config, row in table.items():
        print(f"{config:20} {row['step_ms']:8.1f} {row['step_ms'] / ref:6.3f} {row['queued_ms']:7.1f} {row['forward_ms']:8.1f} "
              f"{row['backward_ms']:9.1f} {row['optimizer_ms']:9.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"size": size, "configs": table}, indent=1))


if __name__ == "__main__":
    main()
