"""Random numbers on flagos: seeding, per-device generators, states and
explicit torch.Generator(device="flagos") objects."""
import pytest
import torch
import torch.nn.functional as F

import torch_fl
from conftest import assert_flagos_close, requires_two_devices

pytestmark = pytest.mark.anyplatform
flagos = torch_fl.flagos


def _draws(dev):
    x = torch.ones(200, device=dev)
    p = torch.full((50,), 0.3, device=dev)
    return [
        torch.randn(100, device=dev),
        torch.rand(100, device=dev),
        torch.bernoulli(p),
        torch.multinomial(torch.tensor([0.1, 0.2, 0.3, 0.4], device=dev), 20, replacement=True),
        torch.randint(0, 1000, (50,), device=dev),
        torch.empty(100, device=dev).normal_(2.0, 3.0),
        torch.empty(100, device=dev).uniform_(-1, 1),
        torch.randperm(64, device=dev),
    ]


def _assert_same(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.device.type == "flagos" and y.device.type == "flagos", i
        torch.testing.assert_close(x.cpu(), y.cpu(), rtol=0, atol=0, msg=lambda m, i=i: f"draw {i}: {m}")


def test_manual_seed_reproducible(dev):
    flagos.manual_seed(1234)
    first = _draws(dev)
    flagos.manual_seed(1234)
    second = _draws(dev)
    _assert_same(first, second)
    flagos.manual_seed(4321)
    third = _draws(dev)
    assert not torch.equal(first[0].cpu(), third[0].cpu())
    assert flagos.initial_seed() == 4321


def test_dropout_reproducible_with_flagos_seed(dev):
    """dropout on flagos becomes aten::native_dropout, whose schema has no
    generator argument: it must still draw from the flagos generator."""
    x = torch.ones(200, device=dev)
    flagos.manual_seed(1234)
    a = F.dropout(x, p=0.5, training=True).cpu()
    flagos.manual_seed(1234)
    b = F.dropout(x, p=0.5, training=True).cpu()
    assert torch.equal(a, b), "flagos.manual_seed does not make dropout reproducible"
    # and the CPU generator's state is not what decides it
    flagos.manual_seed(1234)
    torch.default_generator.manual_seed(1)
    c = F.dropout(x, p=0.5, training=True).cpu()
    assert torch.equal(a, c)


def test_draws_are_plausible(dev):
    flagos.manual_seed(0)
    n = torch.randn(20000, device=dev).cpu()
    assert abs(n.mean().item()) < 0.05 and abs(n.std().item() - 1) < 0.05
    u = torch.rand(20000, device=dev).cpu()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02
    d = F.dropout(torch.ones(20000, device=dev), p=0.25, training=True).cpu()
    kept = (d != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.02
    assert torch.allclose(d[d != 0], torch.full_like(d[d != 0], 1 / 0.75))
    b = torch.bernoulli(torch.full((20000,), 0.3, device=dev)).cpu()
    assert set(b.unique().tolist()) <= {0.0, 1.0} and abs(b.mean().item() - 0.3) < 0.02
    m = torch.multinomial(torch.tensor([0.0, 1.0, 0.0], device=dev), 10, replacement=True).cpu()
    assert torch.equal(m, torch.ones(10, dtype=torch.long))
    p = torch.randperm(100, device=dev).cpu()
    assert torch.equal(p.sort().values, torch.arange(100))


def test_flagos_seed_does_not_touch_cpu_generator(dev):
    torch.manual_seed(5)
    cpu_a = torch.randn(10)
    torch.manual_seed(5)
    flagos.manual_seed(99)
    torch.randn(10, device=dev)  # draws from flagos:0, not from the CPU generator
    cpu_b = torch.randn(10)
    assert torch.equal(cpu_a, cpu_b)


def test_torch_manual_seed_seeds_flagos(dev):
    torch.manual_seed(77)
    a = torch.randn(20, device=dev).cpu()
    torch.manual_seed(77)
    b = torch.randn(20, device=dev).cpu()
    assert torch.equal(a, b)


@requires_two_devices
def test_devices_have_independent_generators(dev, dev1):
    flagos.manual_seed_all(7)
    a0 = torch.randn(50, device=dev).cpu()
    a1 = torch.randn(50, device=dev1).cpu()
    assert torch.equal(a0, a1)  # same seed, separate generators
    # drawing on device 1 does not advance device 0
    flagos.manual_seed_all(7)
    for _ in range(3):
        torch.randn(50, device=dev1)
    b0 = torch.randn(50, device=dev).cpu()
    assert torch.equal(a0, b0)
    # seeding the current device (0) leaves device 1 alone
    flagos.manual_seed_all(7)
    torch.randn(50, device=dev1)
    state1 = flagos.get_rng_state(1)
    flagos.manual_seed(123)
    assert torch.equal(flagos.get_rng_state(1), state1)
    with flagos.device(1):
        flagos.manual_seed(8)
    assert not torch.equal(flagos.get_rng_state(1), state1)
    assert flagos.default_generators[0] is not flagos.default_generators[1] or \
        flagos.default_generators[0].device != flagos.default_generators[1].device
    assert flagos.default_generators[1].device == dev1


def test_rng_state_round_trip(dev):
    flagos.manual_seed(42)
    torch.randn(10, device=dev)
    state = flagos.get_rng_state()
    assert isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.device.type == "cpu"
    first = _draws(dev)
    flagos.set_rng_state(state)
    second = _draws(dev)
    _assert_same(first, second)
    states = flagos.get_rng_state_all()
    assert len(states) == flagos.device_count()
    x = torch.rand(5, device=dev).cpu()
    flagos.set_rng_state_all(states)
    assert torch.equal(torch.rand(5, device=dev).cpu(), x)


def test_torch_random_fork_rng(dev):
    # torch.random.fork_rng handles the private-use device through torch.flagos
    flagos.manual_seed(3)
    with torch.random.fork_rng(devices=[0], device_type="flagos"):
        a = torch.randn(10, device=dev).cpu()
    b = torch.randn(10, device=dev).cpu()
    assert torch.equal(a, b)


def test_explicit_generator(dev):
    g1 = torch.Generator(device="flagos")
    assert g1.device.type == "flagos"
    g2 = torch.Generator(device=dev)
    g1.manual_seed(2024)
    g2.manual_seed(2024)
    a = torch.randn(64, device=dev, generator=g1)
    b = torch.randn(64, device=dev, generator=g2)
    assert_flagos_close(a, b.cpu(), exact=True)
    c = torch.empty(64, device=dev).normal_(1.0, 2.0, generator=g1)
    d = torch.empty(64, device=dev).normal_(1.0, 2.0, generator=g2)
    assert_flagos_close(c, d.cpu(), exact=True)
    # different seeds differ; the default generator is not disturbed
    flagos.manual_seed(11)
    ref = torch.randn(8, device=dev).cpu()
    flagos.manual_seed(11)
    g3 = torch.Generator(device=dev).manual_seed(999)
    torch.randn(64, device=dev, generator=g3)
    assert torch.equal(torch.randn(8, device=dev).cpu(), ref)
    g4 = torch.Generator(device=dev).manual_seed(1000)
    assert not torch.equal(torch.randn(64, device=dev, generator=g4).cpu(),
                           torch.randn(64, device=dev, generator=torch.Generator(device=dev).manual_seed(999)).cpu())


def test_explicit_generator_state(dev):
    g = torch.Generator(device=dev).manual_seed(5)
    s = g.get_state()
    a = torch.rand(30, device=dev, generator=g).cpu()
    g.set_state(s)
    b = torch.rand(30, device=dev, generator=g).cpu()
    assert torch.equal(a, b)
    assert g.initial_seed() == 5


def test_generator_more_ops(dev):
    def draw(seed):
        g = torch.Generator(device=dev).manual_seed(seed)
        return [
            torch.bernoulli(torch.full((40,), 0.5, device=dev), generator=g).cpu(),
            torch.multinomial(torch.ones(10, device=dev), 5, generator=g).cpu(),
            torch.randperm(30, device=dev, generator=g).cpu(),
            torch.randint(0, 9, (20,), device=dev, generator=g).cpu(),
        ]
    for x, y in zip(draw(3), draw(3)):
        assert torch.equal(x, y)


def test_forked_child_is_in_bad_fork_and_torch_seeding_skips_flagos():
    # DataLoader workers are forked and call torch.manual_seed; the device
    # runtime does not survive fork, so flagos must be left alone there.
    import os

    assert not torch_fl.flagos._is_in_bad_fork()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = torch_fl.flagos._is_in_bad_fork()
            torch.manual_seed(3)
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert not torch_fl.flagos._is_in_bad_fork()
