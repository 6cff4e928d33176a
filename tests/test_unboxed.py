"""The unboxed kernels of the hottest ops (csrc/aten/Unboxed.cpp): they are
registered, they give the values the CPU gives (in-place, strided, mixed
dtypes, CPU scalars, autograd), they keep routing, counters, the dispatch
log and the errors of the boxed routing kernel, and FLAGOS_UNBOXED_OPS=0
turns them off."""
import json

import pytest
import torch
import torch.nn.functional as F

from torch_fl import routing

from conftest import VENDOR, assert_flagos_close, requires_host, run_python

pytestmark = [pytest.mark.anyplatform, pytest.mark.usefixtures("restore_routing")]

NATIVE = {"host": "cpu"}.get(VENDOR, VENDOR)

HOT = ["add.Tensor", "add_.Tensor", "mul.Tensor", "mm", "bmm", "cat", "mean.dim", "_softmax", "copy_"]


def _x(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_hot_ops_have_unboxed_kernels():
    names = routing.unboxed_ops()
    assert set(HOT) <= set(names)
    for name in names:
        line = [l for l in torch._C._dispatch_dump(f"aten::{name}").splitlines() if l.startswith("PrivateUse1")]
        # (Kernels with SymInt arguments show as "boxed": their unboxed
        # form is the dispatcher's SymInt one.)
        assert line and "Unboxed.cpp" in line[0], (name, line)


CASES = {
    "add alpha": lambda x, y, z: torch.add(x, y, alpha=2.5),
    "add python scalar": lambda x, y, z: x + 3,
    "add broadcast": lambda x, y, z: x + y[:1],
    "add int and float": lambda x, y, z: x.to(torch.int32) + y,
    "sub": lambda x, y, z: x - y,
    "mul cpu scalar tensor": lambda x, y, z: x * torch.tensor(2.0),
    "div": lambda x, y, z: x / (y.abs() + 1),
    "neg rsqrt sqrt exp": lambda x, y, z: torch.stack([x.neg(), (x.abs() + 1).rsqrt(), x.abs().sqrt(), x.exp()]),
    "pow": lambda x, y, z: x.pow(2),
    "mean dim dtype": lambda x, y, z: x.to(torch.bfloat16).mean(-1, keepdim=True, dtype=torch.float32),
    "sum all and dims": lambda x, y, z: torch.stack([x.sum(), x.sum((0, 1)), x.sum(dim=None)]),
    "argmax": lambda x, y, z: x.argmax(-1),
    "mm transposed": lambda x, y, z: x @ y.t(),
    "bmm": lambda x, y, z: torch.bmm(x.view(2, 3, 4), y.view(2, 4, 3)),
    "addmm": lambda x, y, z: torch.addmm(z, x, y.t()),
    "cat with empty and views": lambda x, y, z: torch.cat([x, torch.empty(0, 4, device=x.device), y[::2], x.t().contiguous().t()]),
    "where with cpu scalar": lambda x, y, z: torch.where(x > 0, x, torch.tensor(0.0)),
    "index_select": lambda x, y, z: x.index_select(0, torch.tensor([5, 0, 2]).to(x.device)),
    "silu softmax log_softmax": lambda x, y, z: torch.stack([F.silu(x), x.softmax(-1), x.log_softmax(-1)]),
    "fill_ zero_ on a strided view": lambda x, y, z: _strided_fill(x),
    "add_ on a strided view": lambda x, y, z: _strided_add(x, y),
    "mul_ broadcast": lambda x, y, z: x.clone().mul_(y[0]),
    "copy_ cast": lambda x, y, z: torch.empty(6, 4, dtype=torch.float64, device=x.device).copy_(x),
    "copy_ into a transposed view": lambda x, y, z: _copy_into_transposed(x),
    "copy_ overlapping": lambda x, y, z: _copy_overlapping(x),
    "copy_ onto itself": lambda x, y, z: _copy_onto_itself(x),
}


def _strided_fill(x):
    t = x.clone()
    t[:, ::2].fill_(7.0)
    t[::3].zero_()
    return t


def _strided_add(x, y):
    t = x.clone()
    t[:, 1::2].add_(y[:, :2], alpha=-1)
    return t


def _copy_into_transposed(x):
    t = torch.zeros(4, 6, device=x.device)
    t.t().copy_(x)
    return t


def _copy_overlapping(x):
    t = x.clone().flatten()
    t[1:].copy_(t[:-1].clone())
    t[2:8:2].copy_(t[1:7:2])  # interleaved views of one storage
    return t


def _copy_onto_itself(x):
    t = x.clone()
    t.copy_(t)
    t[1].copy_(t[1])
    return t


def test_copy_refuses_partial_overlap_as_the_cpu_does(dev):
    for t in (_x(24), _x(24).to(dev)):
        with pytest.raises(RuntimeError, match="single memory location"):
            t[2:8].copy_(t[0:6])


@pytest.mark.parametrize("name", sorted(CASES))
def test_unboxed_ops_agree_with_cpu(name, dev):
    fn = CASES[name]
    args = (_x(6, 4), _x(6, 4, seed=1), _x(6, 6, seed=2))
    expected = fn(*args)
    got = fn(*(a.to(dev) for a in args))
    assert got.dtype == expected.dtype
    assert_flagos_close(got, expected)


def test_unboxed_ops_agree_with_cpu_under_autograd(dev):
    def loss(w, x, target, table):
        h = F.embedding(torch.tensor([1, 3, 3]).to(x.device), table)
        logits = F.silu(x @ w.t() + h.sum()).softmax(-1).log()
        return F.cross_entropy(logits * 2, target) + F.relu(x).sum() * 0.1

    w, x, table = _x(5, 4, seed=3), _x(3, 4, seed=4), _x(6, 2, seed=5)
    target = torch.tensor([0, 4, 2])
    ref = [t.clone().requires_grad_() for t in (w, x, table)]
    loss(ref[0], ref[1], target, ref[2]).backward()
    got = [t.to(dev).requires_grad_() for t in (w, x, table)]
    loss(got[0], got[1], target.to(dev), got[2]).backward()
    for r, g in zip(ref, got):
        assert_flagos_close(g.grad, r.grad)


def test_unboxed_ops_keep_routing_and_counters(dev):
    a, b = _x(4, 4).to(dev), _x(4, 4, seed=1).to(dev)
    with routing.override_ops({"add.Tensor": NATIVE, "add_.Tensor": NATIVE}):
        routing.reset_stats()
        a + b
        a.add_(b)
        assert routing.stats()["add.Tensor"] == {NATIVE: 1}
        assert routing.stats()["add_.Tensor"] == {NATIVE: 1}
    with routing.override_ops({"add.Tensor": "cpu", "mm": "cpu"}):
        routing.reset_stats()
        assert_flagos_close(a + b, a.cpu() + b.cpu())
        assert_flagos_close(a @ b, a.cpu() @ b.cpu())
        assert routing.stats()["add.Tensor"] == {"cpu": 1}
        assert routing.stats()["mm"] == {"cpu": 1}


def test_unboxed_ops_raise_the_routing_kernels_errors(dev):
    a = _x(4, 4).to(dev)
    with pytest.raises(RuntimeError, match=r"flagos:0 and cpu"):
        a + _x(4, 4)
    with pytest.raises(RuntimeError, match=r"(?i)size|shape"):
        a @ _x(3, 5).to(dev)
    with pytest.raises(RuntimeError):
        torch.cat([a, _x(4, 5).to(dev)], 0)
    # The process stays usable, the inputs untouched.
    assert_flagos_close(a + a, _x(4, 4) * 2)


def test_unboxed_ops_name_both_devices(dev, dev1):
    with pytest.raises(RuntimeError, match=r"flagos:0 and flagos:1"):
        _x(4).to(dev) + _x(4).to(dev1)
    with pytest.raises(RuntimeError, match=r"flagos:0 and flagos:1|flagos:1 and flagos:0"):
        torch.cat([_x(4).to(dev), _x(4).to(dev1)])
    r = _x(4).to(dev1) * _x(4, seed=1).to(dev1)
    assert r.device == dev1
    assert_flagos_close(r, _x(4) * _x(4, seed=1), check_device=False)


def test_dispatch_log_names_unboxed_ops():
    proc = run_python("""
        import torch, torch_fl
        a = torch.ones(2, 3, device="flagos")
        (a + a).mul_(2)
        print("ok")
    """, env_extra={"FLAGOS_LOG_DISPATCH": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[flagos dispatch] add.Tensor -> " in proc.stderr
    assert "[flagos dispatch] mul_.Tensor -> " in proc.stderr


@requires_host  # stand-ins for FlagGems; on a GPU, tests/test_flaggems_gpu.py runs the real ones
def test_flaggems_route_gets_aliases_from_unboxed_kernels():
    proc = run_python("""
        import json, torch, torch_fl
        from torch_fl import flaggems, routing
        seen = []
        def add(a, b, *, alpha=1):
            seen.append([a.device.type, b.device.type])
            return torch.add(a, b, alpha=alpha)
        def add_(a, b, *, alpha=1):
            seen.append([a.device.type, b.device.type])
            return a.add_(b, alpha=alpha)
        flaggems.install_functions({"add.Tensor": add, "add_.Tensor": add_})
        x = torch.arange(6.0, device="flagos").view(2, 3)
        r = x + x
        y = x.clone()
        y.add_(x, alpha=2)
        z = x.clone()
        z.t().add_(x.t())     # a strided written tensor: the vendor's kernel, as on the boxed route
        print(json.dumps({"seen": seen, "r": r.cpu().tolist(), "y": y.cpu().tolist(), "z": z.cpu().tolist(),
                          "stats": routing.stats()["add_.Tensor"], "route": routing.route_of("add.Tensor")}))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["route"] == "flagos"
    assert out["seen"] == [["cpu", "cpu"]] * 2
    x = torch.arange(6.0).view(2, 3)
    assert out["r"] == (x + x).tolist()
    assert out["y"] == (x * 3).tolist()
    assert out["z"] == (x * 2).tolist()
    assert out["stats"] == {"flagos": 1, NATIVE: 1}


def test_switch_leaves_every_op_to_the_boxed_kernel():
    proc = run_python("""
        import json, torch, torch_fl
        from torch_fl import routing
        a = torch.arange(4.0, device="flagos")
        line = [l for l in torch._C._dispatch_dump("aten::add.Tensor").splitlines() if l.startswith("PrivateUse1")]
        print(json.dumps({"ops": routing.unboxed_ops(), "line": line[0], "sum": (a + a).cpu().tolist(),
                          "copy": torch.empty(4, dtype=torch.float64, device="flagos").copy_(a).cpu().tolist()}))
    """, env_extra={"FLAGOS_UNBOXED_OPS": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ops"] == []
    assert "Unboxed.cpp" not in out["line"]
    assert out["sum"] == [0.0, 2.0, 4.0, 6.0]
    assert out["copy"] == [0.0, 1.0, 2.0, 3.0]
