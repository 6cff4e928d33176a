"""torch_fl showcase: runs on the best device found (the cuda vendor on a
GPU machine, else the host-simulated flagos device).

    make demo            # or: python examples/demo.py [--qwen3-steps N]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import torch_fl  # noqa: E402
from torch_fl import routing  # noqa: E402


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 60 - len(title)))


def tensors(dev: torch.device, ref: str) -> None:
    section("tensors")
    x = torch.randn(512, 512, device=dev)
    y = torch.softmax(x @ x.T, dim=-1)
    expected = torch.softmax(x.cpu() @ x.cpu().T, dim=-1)
    err = (y.cpu() - expected).abs().max().item()
    print(f"softmax(x @ x.T) on {y.device}: shape {tuple(y.shape)}, max |flagos - cpu| = {err:.2e}")


def mlp_training(dev: torch.device) -> None:
    section("MLP training (flagos vs CPU, same seed)")
    torch.manual_seed(0)
    data = torch.randn(256, 32)
    target = torch.randint(0, 4, (256,))

    def make():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 4))

    losses = {}
    for where in (dev, torch.device("cpu")):
        model = make().to(where)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        xs, ys = data.to(where), target.to(where)
        history, times = [], []
        for _ in range(20):
            start = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs), ys)
            loss.backward()
            opt.step()
            history.append(loss.item())
            times.append(time.perf_counter() - start)
        losses[where.type] = history
        # The first step builds each op's plan and, on FlagGems routes,
        # compiles its Triton kernels: shown apart from the steady state.
        print(f"{str(where):>9}: loss {history[0]:.4f} -> {history[-1]:.4f}; first step {times[0] * 1e3:.1f} ms, "
              f"then {sum(times[1:]) / len(times[1:]) * 1e3:.2f} ms per step")
    diff = max(abs(a - b) for a, b in zip(losses["flagos"], losses["cpu"]))
    print(f"largest per-step loss difference flagos vs cpu: {diff:.2e}")


def streams_and_events(dev: torch.device) -> None:
    section("streams and events")
    F = torch.flagos
    side = F.Stream()
    start, end = F.Event(enable_timing=True), F.Event(enable_timing=True)
    a = torch.randn(256, 256, device=dev)
    with F.stream(side):
        start.record()
        b = a
        for _ in range(10):
            b = b @ a / 16
        end.record()
    F.current_stream().wait_event(end)
    c = b.sum()
    end.synchronize()
    print(f"10 matmuls on a side stream: {start.elapsed_time(end):.3f} ms (event timing); "
          f"result consumed on the default stream: {c.item():.4f}")


def memory() -> None:
    section("memory")
    F = torch.flagos
    before = F.memory_allocated()
    t = torch.empty(64, 1024, 1024, dtype=torch.uint8, device="flagos")
    print(f"allocated {F.memory_allocated() - before} bytes for a 64 MiB tensor; "
          f"reserved {F.memory_reserved() / 2**20:.1f} MiB, peak {F.max_memory_allocated() / 2**20:.1f} MiB")
    del t
    F.empty_cache()
    print(f"after del + empty_cache: allocated {F.memory_allocated()} bytes, reserved {F.memory_reserved()} bytes")


def routes() -> None:
    section("routing")
    counts = {}
    for op, per_backend in routing.stats().items():
        for backend, n in per_backend.items():
            counts[backend] = counts.get(backend, 0) + n
    print("op calls per backend so far:", counts)
    print("FlagGems live:", torch_fl.is_flaggems_enabled(), f"({len(torch_fl.get_registered_ops())} ops)",
          "" if torch_fl._flaggems.available() else f"- FlagGems {torch_fl._flaggems.unavailable_reason()}")
    if torch_fl._flaggems.available():
        stats = torch_fl._flaggems.launcher_stats().values()
        print(f"FlagGems calls replayed by the launcher: {sum(s['replayed'] for s in stats)}, "
              f"run in Python: {sum(s['python'] + s['recorded'] for s in stats)}, "
              f"calls on the vendor's kernel before their signature's record: {sum(s['vendor'] for s in stats)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qwen3-steps", type=int, default=3, help="training steps of the Qwen3 part")
    parser.add_argument("--skip-qwen3", action="store_true")
    args = parser.parse_args()

    F = torch.flagos
    print(f"torch {torch.__version__}, torch_fl {torch_fl.__version__}; vendor '{F.vendor()}', "
          f"{F.device_count()} flagos device(s): {F.get_device_name(0)}")
    dev = torch.device("flagos", 0)
    tensors(dev, "cpu")
    mlp_training(dev)
    streams_and_events(dev)
    memory()
    if not args.skip_qwen3:
        qwen3 = Path(__file__).resolve().parent / "qwen3_demo.py"
        if qwen3.exists():
            sys.path.insert(0, str(qwen3.parent))
            import qwen3_demo

            qwen3_demo.run(steps=args.qwen3_steps)
    routes()


if __name__ == "__main__":
    main()
