"""Checks of random ops on flagos by their properties, for the operator
sweep (tools/operator_support.py): their values differ from torch CUDA's by
design, so they are checked against the distribution they promise (range,
mean and standard deviation within 6 standard errors on 2**16 draws,
permutation, mask consistency) and against the seed (the same seed gives
the same values).

Each check takes a dtype name and raises AssertionError naming what is off.
"""
import math

N = 1 << 16


def _moments(x, mean, std, what):
    import torch

    x = x.double().cpu()
    got_mean, got_std = x.mean().item(), x.std().item()
    # 6 standard errors of the mean and of the std; half types round each
    # draw, so allow one ulp-scale slack as well.
    slack = 6 * std / math.sqrt(x.numel()) + 1e-2 * std
    assert abs(got_mean - mean) <= slack, f"{what}: mean {got_mean:.4f}, expected {mean:.4f} +- {slack:.4f}"
    assert abs(got_std - std) <= slack + 6 * std / math.sqrt(2 * x.numel()), \
        f"{what}: std {got_std:.4f}, expected {std:.4f}"
    assert torch.isfinite(x).all(), f"{what}: non-finite values"


def _in_range(x, low, high, what, closed=False):
    x = x.double().cpu()
    ok = (x >= low).all() and ((x <= high) if closed else (x < high)).all()
    assert ok, f"{what}: values outside [{low}, {high}{']' if closed else ')'}: min {x.min().item()}, max {x.max().item()}"


def _seeded(fn, what):
    import torch

    torch.manual_seed(1234)
    a = fn().cpu()
    torch.manual_seed(1234)
    b = fn().cpu()
    assert torch.equal(a, b), f"{what}: the same seed gave other values"


def _uniform_(dtype):
    import torch

    x = torch.empty(N, device="flagos", dtype=dtype).uniform_(-2.0, 3.0)
    _in_range(x, -2.0, 3.0, "uniform_(-2, 3)", closed=dtype != torch.float32)
    _moments(x, 0.5, 5 / math.sqrt(12), "uniform_(-2, 3)")
    _seeded(lambda: torch.empty(64, device="flagos", dtype=dtype).uniform_(), "uniform_")


def _normal_(dtype):
    import torch

    _moments(torch.empty(N, device="flagos", dtype=dtype).normal_(1.0, 2.0), 1.0, 2.0, "normal_(1, 2)")
    _seeded(lambda: torch.empty(64, device="flagos", dtype=dtype).normal_(), "normal_")


def _normal_overloads(dtype):
    import torch

    mean = torch.full((N,), 3.0, device="flagos", dtype=dtype)
    std = torch.full((N,), 0.5, device="flagos", dtype=dtype)
    _moments(torch.normal(mean, 0.5), 3.0, 0.5, "normal(Tensor mean, float std)")
    _moments(torch.normal(3.0, std), 3.0, 0.5, "normal(float mean, Tensor std)")
    _moments(torch.normal(mean, std), 3.0, 0.5, "normal(Tensor mean, Tensor std)")


def _rand(dtype):
    import torch

    x = torch.rand(N, device="flagos", dtype=dtype)
    _in_range(x, 0.0, 1.0, "rand", closed=dtype != torch.float32)
    _moments(x, 0.5, 1 / math.sqrt(12), "rand")
    _moments(torch.rand_like(x), 0.5, 1 / math.sqrt(12), "rand_like")
    _seeded(lambda: torch.rand(64, device="flagos", dtype=dtype), "rand")


def _randn(dtype):
    import torch

    x = torch.randn(N, device="flagos", dtype=dtype)
    _moments(x, 0.0, 1.0, "randn")
    _moments(torch.randn_like(x), 0.0, 1.0, "randn_like")
    _seeded(lambda: torch.randn(64, device="flagos", dtype=dtype), "randn")


def _bernoulli_(dtype):
    import torch

    x = torch.empty(N, device="flagos", dtype=dtype).bernoulli_(0.3)
    values = set(x.cpu().float().unique().tolist())
    assert values <= {0.0, 1.0}, f"bernoulli_(0.3): values {sorted(values)[:5]}"
    _moments(x, 0.3, math.sqrt(0.3 * 0.7), "bernoulli_(0.3)")


def _exponential_(dtype):
    import torch

    x = torch.empty(N, device="flagos", dtype=dtype).exponential_(2.0)
    _in_range(x, 0.0, math.inf, "exponential_(2)", closed=True)
    _moments(x, 0.5, 0.5, "exponential_(2)")


def _multinomial(dtype):
    import torch

    probs = torch.tensor([0.1, 0.2, 0.7], device="flagos", dtype=dtype)
    draws = torch.multinomial(probs, N, replacement=True).cpu()
    assert draws.dtype == torch.int64 and int(draws.min()) >= 0 and int(draws.max()) <= 2, "multinomial: bad indices"
    freq = torch.bincount(draws, minlength=3).double() / N
    for i, p in enumerate([0.1, 0.2, 0.7]):
        tol = 6 * math.sqrt(p * (1 - p) / N)
        assert abs(freq[i].item() - p) <= tol, f"multinomial: class {i} drawn {freq[i].item():.4f}, expected {p}"
    picks = torch.multinomial(torch.ones(50, device="flagos", dtype=dtype), 50, replacement=False).cpu()
    assert sorted(picks.tolist()) == list(range(50)), "multinomial without replacement repeated an index"


def _randperm(dtype):
    import torch

    p = torch.randperm(5000, device="flagos").cpu()
    assert sorted(p.tolist()) == list(range(5000)), "randperm: not a permutation of 0..4999"
    assert p.tolist() != list(range(5000)), "randperm: returned the identity"


def _native_dropout(dtype):
    import torch

    x = torch.full((N,), 2.0, device="flagos", dtype=dtype)
    out, mask = torch.native_dropout(x, 0.25, True)
    out, mask = out.float().cpu(), mask.cpu()
    kept = mask.double().mean().item()
    assert abs(kept - 0.75) <= 6 * math.sqrt(0.75 * 0.25 / N), f"native_dropout(p=0.25): kept {kept:.4f}"
    expected = torch.where(mask, torch.full_like(out, 2.0 / 0.75), torch.zeros_like(out))
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2, msg="native_dropout: output not mask * x / (1-p)")
    same, none = torch.native_dropout(x, 0.25, False)
    assert torch.equal(same.cpu(), x.cpu()), "native_dropout(train=False) changed the input"


CHECKS = {
    "uniform_": _uniform_,
    "normal_": _normal_,
    "normal overloads": _normal_overloads,
    "rand, rand_like": _rand,
    "randn, randn_like": _randn,
    "bernoulli_": _bernoulli_,
    "exponential_": _exponential_,
    "multinomial": _multinomial,
    "randperm": _randperm,
    "native_dropout": _native_dropout,
}
