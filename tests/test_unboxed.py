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

HOT = ["add.Tensor", "add_.Tensor", "mul.Tensor", "mm", "bmm", "cat", "mean.dim", "_softmax", "silu_backward", "copy_"]


def _x(*shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


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
    "div by a python scalar": lambda x, y, z: torch.div(x, 4.0),
    "slice_backward": lambda x, y, z: torch.ops.aten.slice_backward(x[1:5], [6, 4], 0, 1, 5, 1),
    "slice_backward stepped": lambda x, y, z: torch.ops.aten.slice_backward(x[:, ::2], [6, 4], 1, 0, 4, 2),
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
    # A CPU tensor inside a tensor list, too (the host vendor's CPU kernel
    # would take it silently).
    with pytest.raises(RuntimeError, match=r"flagos:0 and cpu"):
        torch.cat([a, _x(4, 4)])
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
        flaggems.set_vendor_calls(0)  # every call runs the stand-in
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


# ------------------------------------------------------------- foreach ops

def _lists(n=5, seed=10):
    """Tensors of several shapes, one a strided view, one a 0-dim tensor."""
    shapes = [(3, 4), (7,), (), (2, 3, 2), (5,)][:n]
    base = [_x(*s, seed=seed + i) for i, s in enumerate(shapes)]
    base[0] = _x(4, 3, seed=seed).t()  # strided
    return base


FOREACH_CASES = {
    "add_ Scalar": lambda a, b, c: torch._foreach_add_(a, 1.5),
    "add_ List alpha": lambda a, b, c: torch._foreach_add_(a, b, alpha=-0.5),
    "add_ ScalarList": lambda a, b, c: torch._foreach_add_(a, [float(i) for i in range(len(a))]),
    "add_ Tensor": lambda a, b, c: torch._foreach_add_(a, c[2], alpha=2.0),
    "sub_ Scalar": lambda a, b, c: torch._foreach_sub_(a, 0.25),
    "mul_ Scalar List ScalarList Tensor": lambda a, b, c: (torch._foreach_mul_(a, 0.9), torch._foreach_mul_(a, b),
                                                           torch._foreach_mul_(a, [2.0] * len(a)),
                                                           torch._foreach_mul_(a, c[2])),
    "div_ Scalar List ScalarList": lambda a, b, c: (torch._foreach_div_(a, 3.0),
                                                    torch._foreach_div_(a, [t.abs() + 1 for t in b]),
                                                    torch._foreach_div_(a, [1.0 + i for i in range(len(a))])),
    "lerp_ Scalar List": lambda a, b, c: (torch._foreach_lerp_(a, b, 0.1),
                                          torch._foreach_lerp_(a, c, [t.sigmoid() for t in b])),
    "addcmul_ addcdiv_": lambda a, b, c: (torch._foreach_addcmul_(a, b, c, value=0.3),
                                          torch._foreach_addcdiv_(a, b, [t.abs() + 1 for t in c], value=-0.2),
                                          torch._foreach_addcdiv_(a, b, [t.abs() + 1 for t in c],
                                                                  [0.5 + i for i in range(len(a))]),
                                          torch._foreach_addcmul_(a, b, b, [0.1] * len(a))),
    "sqrt_ and zero_": lambda a, b, c: (torch._foreach_sqrt_([t.abs_() for t in b]), torch._foreach_zero_(c),
                                        torch._foreach_add_(a, b), torch._foreach_add_(a, c)),
    "copy_": lambda a, b, c: torch._foreach_copy_(a, b),
    "views of one storage": lambda a, b, c: torch._foreach_mul_([a[3][0], a[3][1], a[1]], 2.0),
}


@pytest.mark.parametrize("name", sorted(FOREACH_CASES))
def test_unboxed_foreach_ops_agree_with_cpu(name, dev):
    fn = FOREACH_CASES[name]
    ref = [_lists(seed=s) for s in (10, 20, 30)]
    got = [[t.to(dev) for t in lst] for lst in ref]
    got[0][0] = got[0][0].t().contiguous().t()  # strided on flagos too
    fn(*ref)
    fn(*got)
    for r_list, g_list in zip(ref, got):
        for r, g in zip(r_list, g_list):
            assert g.shape == r.shape and g.stride() == r.stride()
            assert_flagos_close(g, r)


def test_unboxed_foreach_results_are_fresh_flagos_tensors(dev):
    ref = _lists()
    got = [t.to(dev) for t in ref]
    roots, norms = torch._foreach_sqrt([t.abs() for t in got]), torch._foreach_norm(got, 2)
    assert all(r.device == got[0].device for r in roots + norms)
    for r, e in zip(roots, torch._foreach_sqrt([t.abs() for t in ref])):
        assert_flagos_close(r, e)
    for n, e in zip(norms, torch._foreach_norm(ref, 2)):
        assert_flagos_close(n, e)
    # Results a kernel may return as views of one buffer stay valid on their own.
    kept = norms[-1]
    del norms
    assert_flagos_close(kept, torch.linalg.vector_norm(ref[-1]))


def test_unboxed_foreach_on_many_views_of_one_buffer(dev):
    """Hundreds of tensors, many over one storage: the scope's hashed
    index must alias one storage once, as the scan does for a few."""
    buf_ref = _x(600)
    views_ref = [buf_ref[i:i + 2] for i in range(0, 600, 3)] + [_x(3, seed=i) for i in range(100)]
    buf = buf_ref.to(dev)
    views = [buf[i:i + 2] for i in range(0, 600, 3)] + [_x(3, seed=i).to(dev) for i in range(100)]
    steps = [_x(*v.shape, seed=7) for v in views_ref]
    torch._foreach_add_(views_ref, steps, alpha=0.5)
    torch._foreach_add_(views, [s.to(dev) for s in steps], alpha=0.5)
    assert_flagos_close(buf, buf_ref)
    for g, r in zip(views[-100:], views_ref[-100:]):
        assert_flagos_close(g, r)


OPTIMIZERS = {
    "AdamW": lambda p, fe: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1, foreach=fe),
    "Adam amsgrad": lambda p, fe: torch.optim.Adam(p, lr=0.05, weight_decay=0.1, amsgrad=True, foreach=fe),
    "SGD nesterov": lambda p, fe: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1,
                                                  foreach=fe),
    "RMSprop centered": lambda p, fe: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True, foreach=fe),
    "Adagrad": lambda p, fe: torch.optim.Adagrad(p, lr=0.1, foreach=fe),
    "NAdam": lambda p, fe: torch.optim.NAdam(p, lr=0.05, foreach=fe),
    "RAdam": lambda p, fe: torch.optim.RAdam(p, lr=0.05, foreach=fe),
}


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_steps_on_flagos_agree_with_cpu(dev, name, foreach):
    """Three steps with gradient clipping and zero_grad(set_to_none=False):
    every foreach op an optimizer calls has an unboxed kernel."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    got = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    got.load_state_dict(ref.state_dict())
    got.to(dev)
    opts = [OPTIMIZERS[name](m.parameters(), foreach) for m in (ref, got)]
    x, y = _x(4, 6, seed=3), _x(4, 3, seed=4)
    for _ in range(3):
        for model, opt, d in ((ref, opts[0], "cpu"), (got, opts[1], dev)):
            opt.zero_grad(set_to_none=False)
            F.mse_loss(model(x.to(d)), y.to(d)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5, foreach=foreach)
            opt.step()
    for (pname, r), g in zip(ref.named_parameters(), got.parameters()):
        assert_flagos_close(g, r, rtol=1e-5, atol=1e-6), pname
        for key, value in opts[0].state[r].items():
            if torch.is_tensor(value) and value.dim() > 0:
                # RMSprop centered divides by sqrt(square_avg - grad_avg**2), which turns the
                # last-bit differences of CUDA's float32 reductions into 3e-5 (H100).
                assert_flagos_close(opts[1].state[g][key], value, rtol=1e-4, atol=1e-5), (pname, key)


def test_optimizers_call_only_unboxed_foreach_ops(dev):
    from torch.utils._python_dispatch import TorchDispatchMode

    called = set()

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.name().startswith("aten::_foreach"):
                called.add(func.name()[len("aten::"):])
            return func(*args, **(kwargs or {}))

    model = torch.nn.Linear(4, 3).to(dev)
    for name in sorted(OPTIMIZERS):
        opt = OPTIMIZERS[name](model.parameters(), True)
        for _ in range(2):
            model(_x(2, 4).to(dev)).sum().backward()
            with Log():
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
                opt.step()
                opt.zero_grad(set_to_none=False)
    assert "_foreach_addcdiv_.ScalarList" in called
    assert called <= set(routing.unboxed_ops()), sorted(called - set(routing.unboxed_ops()))


def test_unboxed_foreach_counts_and_errors(dev, dev1):
    a = [_x(3).to(dev), _x(2).to(dev)]
    routing.reset_stats()
    torch._foreach_mul_(a, 2.0)
    # One routed call for the list; without an unboxed kernel (the switch
    # off), PyTorch's composite kernel routes a mul per tensor instead.
    if "_foreach_mul_.Scalar" in routing.unboxed_ops():
        assert routing.stats()["_foreach_mul_.Scalar"] == {NATIVE: 1}
    else:
        assert sum(n for per_backend in routing.stats().values() for n in per_backend.values()) == 2
    with pytest.raises(RuntimeError, match=r"flagos:0 and cpu"):
        torch._foreach_add_(a, [_x(3), _x(2)])
    with pytest.raises(RuntimeError, match=r"flagos:0 and flagos:1|flagos:1 and flagos:0"):
        torch._foreach_add_(a, [_x(3).to(dev1), _x(2).to(dev1)])
    with pytest.raises(RuntimeError, match=r"(?i)same number of tensors|size"):
        torch._foreach_add_(a, [_x(3).to(dev)])
    assert_flagos_close(a[0], _x(3) * 2)


# ---------------------------------------------- aliases recycled per thread

def test_recycled_aliases_follow_the_tensor(dev):
    """The native route reuses a tensor's alias from its last call: after
    set_, resize_, .data =, a new shape in place or a freed tensor's
    address taken by another, the alias must stand for what is there now."""
    x_ref = _x(4, 4)
    x = x_ref.to(dev)
    assert_flagos_close(x + x, x_ref * 2)
    x.set_(_x(3, 5, seed=1).to(dev))                   # new storage, new shape
    assert_flagos_close(x * 3, _x(3, 5, seed=1) * 3)
    x.resize_(40)                                       # grown: new bytes
    x[15:].fill_(1.0)
    assert_flagos_close(x[:15] + 0, _x(3, 5, seed=1).flatten())
    assert_flagos_close(x[15:].sum(0, keepdim=True), torch.tensor([25.0]))
    x.data = _x(2, 2, seed=2).to(torch.float64).to(dev)  # new dtype
    assert_flagos_close(x + 1, _x(2, 2, seed=2).to(torch.float64) + 1)
    x.t_()                                              # strides changed in place
    assert_flagos_close(x * 1, _x(2, 2, seed=2).to(torch.float64).t())
    for seed in range(20):                              # addresses of freed tensors reused
        y_ref = _x(seed % 5 + 1, 3, seed=seed).to(torch.float64 if seed % 2 else torch.float32)
        y = y_ref.to(dev)
        assert_flagos_close(y.neg(), -y_ref)
        del y
    z = _x(6, seed=3).to(dev)
    assert_flagos_close(torch._neg_view(z) + z[0], -_x(6, seed=3) + _x(6, seed=3)[0])
    assert_flagos_close(z + z[0], _x(6, seed=3) + _x(6, seed=3)[0])


def test_recycled_aliases_are_per_thread(dev):
    import threading

    w_ref = _x(64, 64)
    w = w_ref.to(dev)
    errors = []

    def work(seed):
        try:
            for i in range(50):
                v_ref = _x(8, 64, seed=seed * 100 + i)
                got = (v_ref.to(dev) @ w).add_(w[0])
                assert_flagos_close(got, v_ref @ w_ref + w_ref[0], rtol=1e-5, atol=1e-5)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_foreach_over_more_tensors_than_recycled_slots(dev):
    """An optimizer-sized foreach call (more tensors than the per-thread
    stack of spare aliases holds) with a list passed twice, views of one
    storage in a list and dtypes changing between calls: every step matches
    CPU, and so does an op on fresh tensors after it."""
    gen = torch.Generator().manual_seed(0)
    n = 5000
    base = torch.randn(4 * n, generator=gen)
    exp_ref = [torch.randn(3, generator=gen) for _ in range(n)]
    grads_ref = [base[4 * i:4 * i + 3] for i in range(n)]        # views of one storage
    exp, flat = [t.to(dev) for t in exp_ref], base.to(dev)
    grads = [flat[4 * i:4 * i + 3] for i in range(n)]
    for step in range(3):
        torch._foreach_addcmul_(exp_ref, grads_ref, grads_ref, 0.1)
        torch._foreach_addcmul_(exp, grads, grads, 0.1)
        roots_ref = torch._foreach_sqrt([e.abs() for e in exp_ref])
        roots = torch._foreach_sqrt([e.abs() for e in exp])
        for i in range(0, n, 499):
            assert_flagos_close(exp[i], exp_ref[i], rtol=1e-6, atol=1e-6)
            assert_flagos_close(roots[i], roots_ref[i], rtol=1e-6, atol=1e-6)
        halves_ref = [e.to(torch.float64) for e in exp_ref[:100]]   # another dtype through the same slots
        halves = [e.to(torch.float64) for e in exp[:100]]
        torch._foreach_mul_(halves_ref, 0.5)
        torch._foreach_mul_(halves, 0.5)
        assert_flagos_close(halves[7], halves_ref[7])
    fresh_ref = _x(5, 3)
    assert_flagos_close(fresh_ref.to(dev) * 2 + 1, fresh_ref * 2 + 1)


@requires_host  # stand-ins for FlagGems; on a GPU, tests/test_flaggems_gpu.py runs the real ones
@pytest.mark.parametrize("op,call", [("add.Tensor", "x + x"),      # an unboxed kernel
                                     ("sigmoid", "x.sigmoid()")])  # the boxed routing kernel
def test_aliases_python_code_kept_are_not_recycled(op, call):
    """A FlagGems function that keeps its argument (an alias) keeps it as it
    was: a scope recycles only aliases that no one else holds."""
    proc = run_python(f"""
        import json, torch, torch_fl
        from torch_fl import flaggems, routing
        kept = []
        def keep(a, *args, **kwargs):
            kept.append(a)
            return getattr(torch, "{op}".split(".")[0])(a, *args, **kwargs)
        flaggems.install_functions({{"{op}": keep}})
        flaggems.set_vendor_calls(0)  # every call runs the stand-in
        x = torch.arange(3.0, device="flagos")
        x0 = x.detach()                             # keeps the bytes the kept alias reads
        r = {call}                                  # FlagGems route: Python sees the alias of x
        with routing.override_ops({{"{op}": routing.native_backend()}}):
            for _ in range(3):
                x.set_(torch.arange(12.0, device="flagos").view(3, 4))
                y = x * 2 + x.sigmoid()             # native routes: recycle x's alias if they may
        print(json.dumps({{"kept": [list(kept[0].shape), kept[0].tolist(), kept[0].device.type],
                          "r": r.cpu().tolist(), "y": y.cpu().tolist()}}))
    """, env_extra={"FLAGOS_HOST_PROTECT": "0"})  # the kept alias is read outside any scope
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kept"] == [[3], [0.0, 1.0, 2.0], "cpu"]
    x = torch.arange(3.0)
    assert out["r"] == pytest.approx((x + x if op == "add.Tensor" else x.sigmoid()).tolist())
    x = torch.arange(12.0).view(3, 4)
    torch.testing.assert_close(torch.tensor(out["y"]), x * 2 + x.sigmoid())


# ---------------------------------------------- casts (_to_copy)

CASTS = {
    "float32 to bfloat16": (lambda: _x(5, 7), lambda x, d: x.to(torch.bfloat16)),
    "float32 to float16": (lambda: _x(5, 7), lambda x, d: x.half()),
    "float32 to float64": (lambda: _x(5, 7), lambda x, d: x.double()),
    "float32 to int32": (lambda: _x(5, 7) * 10, lambda x, d: x.to(torch.int32)),
    "int64 to float32": (lambda: torch.arange(-6, 6), lambda x, d: x.float()),
    "bool to float32": (lambda: _x(9) > 0, lambda x, d: x.float()),
    "transposed keeps its strides": (lambda: _x(6, 4), lambda x, d: x.t().to(torch.float64)),
    "expanded becomes contiguous": (lambda: _x(1, 4), lambda x, d: x.expand(3, 4).to(torch.float64)),
    "sliced with an offset": (lambda: _x(8, 6), lambda x, d: x[2:, 1::2].to(torch.bfloat16)),
    "channels_last": (lambda: _x(2, 3, 4, 5), lambda x, d: x.to(torch.float64, memory_format=torch.channels_last)),
    "contiguous_format of a transpose": (lambda: _x(6, 4),
                                          lambda x, d: x.t().to(torch.float16, memory_format=torch.contiguous_format)),
    "same device named": (lambda: _x(5), lambda x, d: x.to(d, torch.float64)),
    "non_blocking": (lambda: _x(5), lambda x, d: x.to(torch.float64, non_blocking=True)),
    "copy=True, same dtype": (lambda: _x(5), lambda x, d: x.to(torch.float32, copy=True)),
    "zero-dim": (lambda: torch.tensor(2.5), lambda x, d: x.to(torch.float64)),
    "empty": (lambda: _x(0, 3), lambda x, d: x.to(torch.bfloat16)),
    "negative view": (lambda: _x(5), lambda x, d: torch._neg_view(x).to(torch.float64)),
    "conjugate view": (lambda: torch.complex(_x(4), _x(4, seed=1)), lambda x, d: x.conj().to(torch.complex128)),
}


@pytest.mark.parametrize("name", sorted(CASTS))
def test_casts_agree_with_cpu(name, dev):
    """tensor.to(dtype) within one flagos device (on the cuda vendor: CUDA's
    own _to_copy on an alias) gives CPU's values, dtype, shape and strides,
    and a tensor of its own."""
    make, cast = CASTS[name]
    ref_in = make()
    x = ref_in.to(dev)
    ref, got = cast(ref_in, torch.device("cpu")), cast(x, dev)
    assert got.device == x.device and got.dtype == ref.dtype and got.shape == ref.shape
    assert got.stride() == ref.stride(), (got.stride(), ref.stride())
    assert_flagos_close(got.resolve_conj().resolve_neg(), ref.resolve_conj().resolve_neg(), exact=True)
    got.zero_()
    assert_flagos_close(x, ref_in, exact=True)  # the cast's bytes are its own


def test_copies_and_casts_within_a_device_count_on_the_vendors_route(dev):
    """routing.stats() counts a copy or a cast within one flagos device on
    the vendor's route, as it counts every routed call: before, neither
    counted (about a third of a bf16 forward's routed calls). The
    cuda vendor casts with one _to_copy call; the host vendor with a
    copy_ into a new flagos tensor. A copy from another device is no
    routed call and counts nowhere."""
    x_ref = _x(4, 3)
    x = x_ref.to(dev)
    y = torch.empty_like(x)

    def copies():
        return {op: n for op, n in routing.stats().items() if op in ("copy_", "_to_copy")}

    routing.reset_stats()
    y.copy_(x)
    assert copies() == {"copy_": {NATIVE: 1}}
    routing.reset_stats()
    z = x.to(torch.float64)
    assert copies() == ({"copy_": {NATIVE: 1}} if VENDOR == "host" else {"_to_copy": {NATIVE: 1}})
    routing.reset_stats()
    w = x_ref.double().to(dev)
    assert copies() == {}
    assert_flagos_close(y, x_ref, exact=True)
    assert_flagos_close(z, x_ref.double(), exact=True)
    assert_flagos_close(w, x_ref.double(), exact=True)


def test_casts_between_devices_and_under_autograd(dev, dev1):
    x_ref = _x(4, 3)
    x = x_ref.to(dev)
    assert_flagos_close(x.to(dev1, torch.float64), x_ref.double(), exact=True)
    assert x.to(dev1).device == dev1
    cpu = x.to("cpu", torch.float64)
    assert cpu.device.type == "cpu" and torch.equal(cpu, x_ref.double())
    w = x.detach().requires_grad_()
    (w.to(torch.float64) * torch.arange(3.0, dtype=torch.float64).to(dev)).sum().backward()
    assert w.grad.dtype == torch.float32
    assert_flagos_close(w.grad, torch.arange(3.0).expand(4, 3), exact=True)


def test_ops_on_another_device_leave_the_current_device(dev, dev1):
    """A scope sets the op's device only when it is not the current one, and
    then sets the current one back: after unboxed, boxed, copy and cast
    calls on flagos:1 the current device is still flagos:0, and the other
    way round; every result is on its tensors' device."""
    from torch_fl import flagos

    x_ref = _x(4, 4)
    for current, other in ((0, dev1), (1, dev)):
        flagos.set_device(current)
        try:
            x = x_ref.to(other)
            results = [x + x, x.sigmoid(), x.to(torch.float64), torch.empty_like(x).copy_(x), x @ x]
            assert flagos.current_device() == current
            for got in results:
                assert got.device == other
            assert_flagos_close(results[0], x_ref * 2)
            assert_flagos_close(results[1], x_ref.sigmoid())
            assert_flagos_close(results[2], x_ref.double(), exact=True)
            assert_flagos_close(results[3], x_ref, exact=True)
            assert_flagos_close(results[4], x_ref @ x_ref)
            assert_flagos_close(x.add_(1), x_ref + 1)                  # in place, unboxed
            assert flagos.current_device() == current
        finally:
            flagos.set_device(0)
