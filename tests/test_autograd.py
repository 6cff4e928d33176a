"""Autograd on flagos: training a small MLP matches CPU step by step."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import assert_flagos_close

pytestmark = pytest.mark.anyplatform


class MLP(nn.Module):
    def __init__(self, d_in=16, d_hidden=32, n_classes=5):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.norm = nn.LayerNorm(d_hidden)
        self.fc2 = nn.Linear(d_hidden, n_classes)

    def forward(self, x):
        return self.fc2(self.norm(F.gelu(self.fc1(x))))


def _train(model, x, y, steps=5, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def test_mlp_training_matches_cpu(dev):
    torch.manual_seed(0)
    cpu_model = MLP()
    fl_model = copy.deepcopy(cpu_model).to(dev)
    for p in fl_model.parameters():
        assert p.device == dev
    x = torch.randn(64, 16)
    y = torch.randint(0, 5, (64,))
    cpu_losses = _train(cpu_model, x, y)
    fl_losses = _train(fl_model, x.to(dev), y.to(dev))
    for step, (a, b) in enumerate(zip(fl_losses, cpu_losses)):
        assert_flagos_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, s=step: f"loss at step {s}: {m}")
    assert cpu_losses[-1] < cpu_losses[0]  # it really trained
    for (name, p_fl), (_, p_cpu) in zip(fl_model.named_parameters(), cpu_model.named_parameters()):
        assert p_fl.grad is not None and p_fl.grad.device == dev, name
        assert_flagos_close(p_fl, p_cpu, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
        assert_flagos_close(p_fl.grad, p_cpu.grad, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"grad {n}: {m}")


def _grads(fn, *inputs, device):
    leaves = [t.detach().to(device).requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward()
    return out.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("name", ["softmax_sum", "matmul", "log_softmax_nll", "mse_tanh", "index_cat", "broadcast_mul"])
def test_gradients_match_cpu(dev, name):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 7, generator=g)
    b = torch.randn(7, 4, generator=g)
    fns = {
        "softmax_sum": (lambda x, w: (torch.softmax(x @ w, dim=-1) * torch.arange(4.0, device=x.device)).sum()),
        "matmul": (lambda x, w: (x @ w).pow(2).sum()),
        "log_softmax_nll": (lambda x, w: F.nll_loss(F.log_softmax(x @ w, 1), torch.tensor([0, 1, 2, 3, 0, 1], device=x.device))),
        "mse_tanh": (lambda x, w: F.mse_loss(torch.tanh(x @ w), torch.ones(6, 4, device=x.device))),
        "index_cat": (lambda x, w: torch.cat([x[[0, 2, 2]], w.t()[1:]], 0).sum(1).mul(torch.arange(6.0, device=x.device)).sum()),
        "broadcast_mul": (lambda x, w: (x.unsqueeze(2) * w.unsqueeze(0)).mean()),
    }
    fn = fns[name]
    out_cpu, grads_cpu = _grads(fn, a, b, device="cpu")
    out_fl, grads_fl = _grads(fn, a, b, device=dev)
    assert_flagos_close(out_fl, out_cpu)
    for gf, gc in zip(grads_fl, grads_cpu):
        assert gf is not None and gf.device == dev
        assert_flagos_close(gf, gc)


def test_grad_accumulates_and_no_grad(dev):
    w = torch.ones(3, device=dev, requires_grad=True)
    for _ in range(3):
        (w * 2).sum().backward()
    assert_flagos_close(w.grad, torch.full((3,), 6.0))
    with torch.no_grad():
        y = w * 5
    assert not y.requires_grad
    z = torch.autograd.grad((w ** 3).sum(), w)[0]
    assert_flagos_close(z, torch.full((3,), 3.0))


def test_backward_through_views_and_inplace(dev):
    x_cpu = torch.randn(4, 5)
    def f(x):
        y = x.clone()
        y[:, 1:3].mul_(3)
        y.t()[0].add_(1)
        return (y.exp() * y).sum()
    x1 = x_cpu.clone().requires_grad_()
    f(x1).backward()
    x2 = x_cpu.to(dev).requires_grad_()
    f(x2).backward()
    assert_flagos_close(x2.grad, x1.grad)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_convolution_gradients_match_cpu(transposed, dev):
    # flagos convolution goes through convolution_overrideable and its backward.
    torch.manual_seed(0)
    make = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    conv = make(4, 6, 3, groups=2, bias=True)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    conv(x).square().sum().backward()
    conv_f = make(4, 6, 3, groups=2, bias=True)
    conv_f.load_state_dict(conv.state_dict())
    conv_f = conv_f.to(dev)
    x_f = x.detach().to(dev).requires_grad_()
    conv_f(x_f).square().sum().backward()
    for got, ref in ((x_f.grad, x.grad), (conv_f.weight.grad, conv.weight.grad), (conv_f.bias.grad, conv.bias.grad)):
        assert_flagos_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.anyplatform
@pytest.mark.parametrize("fn", [torch.sgn, torch.sign, torch.ceil], ids=["sgn", "sign", "ceil"])
def test_zero_derivative_ops_give_zero_gradients_on_flagos(fn, dev):
    """Their backward makes an efficient zero tensor (no memory): it must be
    a flagos one, usable like any other gradient."""
    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    xf = x.to(dev).requires_grad_()
    (g,) = torch.autograd.grad(fn(xf), xf, torch.ones(5, 5, device=dev))
    assert g.device.type == "flagos"
    torch.testing.assert_close(g.cpu(), torch.zeros(5, 5))
    torch.testing.assert_close((g + 1).cpu(), torch.ones(5, 5))
    y = x.to(dev).requires_grad_()
    (fn(y) * 2 + y * 3).sum().backward()
    torch.testing.assert_close(y.grad.cpu(), torch.full((5, 5), 3.0))
    z = torch._efficientzerotensor((2, 3), device=dev)
    assert z.device.type == "flagos" and z.cpu().tolist() == [[0.0] * 3] * 2
