"""Autocast ("flagos") and GradScaler on flagos.

Policy: the same as CUDA's autocast (csrc/amp/Autocast.cpp registers
PyTorch's own policy lists on AutocastPrivateUse1). Checked three ways:
  - the set of ops with an AutocastPrivateUse1 kernel equals the set with an
    AutocastCUDA kernel (both are registered in every torch build), less the
    two cuDNN-only convolutions;
  - for a sample of ops of every policy class, the output dtype under
    autocast matches the class, and the value matches a CPU reference
    computed without autocast in the dtypes the policy casts to;
  - on a GPU (cuda mark), dtypes and values match torch CUDA's autocast.
GradScaler: the two AMP kernels run on flagos tensors through the routing
kernel, and a float16 training loop with loss scaling (one overflowing step
included) matches the same loop on CPU step by step.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import torch_fl
from clean_reference import gradscaler_training
from conftest import VENDOR, requires_cuda, run_clean

LOW = "lower_precision_fp"
FP32 = "fp32"
PROMOTE = "promote"
NONE = "none"  # no autocast kernel: runs in the input dtypes

AUTOCAST_DTYPES = [torch.float16, torch.bfloat16]


def _pos(*shape):
    return torch.rand(*shape) + 0.5


def _rand(*shape):
    return torch.randn(*shape)


# name -> (policy class, function, input builder returning float32 CPU tensors
# (or tensors marked to be given in the low dtype, see _LOW_INPUTS)).
CASES = {
    "mm": (LOW, torch.mm, lambda: [_rand(8, 16), _rand(16, 4)]),
    "matmul": (LOW, torch.matmul, lambda: [_rand(2, 8, 16), _rand(16, 4)]),
    "linear": (LOW, F.linear, lambda: [_rand(3, 16), _rand(8, 16), _rand(8)]),
    "bmm": (LOW, torch.bmm, lambda: [_rand(2, 8, 16), _rand(2, 16, 4)]),
    "addmm": (LOW, torch.addmm, lambda: [_rand(8, 4), _rand(8, 16), _rand(16, 4)]),
    "baddbmm": (LOW, torch.baddbmm, lambda: [_rand(2, 8, 4), _rand(2, 8, 16), _rand(2, 16, 4)]),
    "conv2d": (LOW, F.conv2d, lambda: [_rand(1, 3, 8, 8), _rand(4, 3, 3, 3), _rand(4)]),
    "sdpa": (LOW, F.scaled_dot_product_attention, lambda: [_rand(1, 2, 8, 16), _rand(1, 2, 8, 16), _rand(1, 2, 8, 16)]),
    "softmax": (FP32, lambda x: torch.softmax(x, -1), lambda: [_rand(4, 32)]),
    "log_softmax": (FP32, lambda x: torch.log_softmax(x, -1), lambda: [_rand(4, 32)]),
    "layer_norm": (FP32, lambda x, w, b: F.layer_norm(x, (32,), w, b), lambda: [_rand(4, 32), _rand(32), _rand(32)]),
    "rms_norm": (FP32, lambda x, w: F.rms_norm(x, (32,), w, 1e-6), lambda: [_rand(4, 32), _rand(32)]),
    "exp": (FP32, torch.exp, lambda: [_rand(4, 8)]),
    "log": (FP32, torch.log, lambda: [_pos(4, 8)]),
    "rsqrt": (FP32, torch.rsqrt, lambda: [_pos(4, 8)]),
    "pow": (FP32, lambda x: torch.pow(x, 3), lambda: [_rand(4, 8)]),
    "sum": (FP32, torch.sum, lambda: [_rand(4, 32)]),
    "cumsum": (FP32, lambda x: torch.cumsum(x, 1), lambda: [_rand(4, 32)]),
    "logsumexp": (FP32, lambda x: torch.logsumexp(x, 1), lambda: [_rand(4, 32)]),
    "mse_loss": (FP32, F.mse_loss, lambda: [_rand(4, 8), _rand(4, 8)]),
    "norm": (FP32, lambda x: torch.norm(x), lambda: [_rand(4, 8)]),
    "addcmul": (PROMOTE, torch.addcmul, lambda: [_rand(4, 8), _rand(4, 8), _rand(4, 8)]),
    "atan2": (PROMOTE, torch.atan2, lambda: [_rand(4, 8), _rand(4, 8)]),
    "dot": (PROMOTE, torch.dot, lambda: [_rand(16), _rand(16)]),
    "cat": (PROMOTE, lambda a, b: torch.cat([a, b]), lambda: [_rand(4, 8), _rand(4, 8)]),
    "stack": (PROMOTE, lambda a, b: torch.stack([a, b]), lambda: [_rand(4, 8), _rand(4, 8)]),
    "add": (NONE, torch.add, lambda: [_rand(4, 8), _rand(4, 8)]),
    "relu": (NONE, torch.relu, lambda: [_rand(4, 8)]),
}


# Ops whose autocast policy changed between the supported torch releases:
# rms_norm joined the fp32 list after 2.11. The policy is what this torch's
# CUDA autocast registers (present in CPU builds too).
_VERSIONED = {"rms_norm": "aten::rms_norm"}


def _policy(name):
    policy = CASES[name][0]
    op = _VERSIONED.get(name)
    if op and not torch._C._dispatch_has_kernel_for_dispatch_key(op, "AutocastCUDA"):
        return NONE
    return policy


def _inputs(name, low):
    """float32 CPU inputs of a case; fp32 and promote cases get lower-precision
    inputs where the policy would change them (first input in `low`)."""
    torch.manual_seed(sum(map(ord, name)))
    policy, build = _policy(name), CASES[name][2]
    xs = build()
    if policy in (FP32, NONE):
        xs = [x.to(low) for x in xs]  # fp32 policy must lift them to float32
    elif policy == PROMOTE:
        xs = [xs[0].to(low)] + xs[1:]  # mixed: promote to the widest (float32)
    return xs


def _reference(name, xs, low):
    """What the policy computes, on CPU without autocast."""
    policy, fn = _policy(name), CASES[name][1]
    if policy == LOW:
        return fn(*[x.to(low) for x in xs])
    if policy == FP32:
        return fn(*[x.float() for x in xs])
    if policy == PROMOTE:
        wide = xs[0].dtype
        for x in xs[1:]:
            wide = torch.promote_types(wide, x.dtype)
        return fn(*[x.to(wide) for x in xs])
    return fn(*xs)


def _expected_dtype(name, xs, low):
    policy = _policy(name)
    if policy == LOW:
        return low
    if policy in (FP32, PROMOTE):
        return torch.float32
    return xs[0].dtype


def _under_autocast(name, xs, low, device):
    """The case's function on `device` under that device's autocast."""
    with torch.autocast(device.type, dtype=low):
        return CASES[name][1](*[x.to(device) for x in xs])


def _loose(dtype):
    # Accumulation order may differ from the reference kernel's.
    return dict(rtol=2e-2, atol=2e-2) if dtype in (torch.float16, torch.bfloat16) else dict(rtol=1e-4, atol=1e-4)


@pytest.mark.anyplatform
def test_policy_registered_for_every_op_cuda_autocasts():
    # Only ATen's: other libraries (torchvision, once transformers imports
    # it) register their own ops for AutocastCUDA alone.
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("aten::")]
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    cuda = {n for n in names if has(n, "AutocastCUDA")}
    flagos = {n for n in names if has(n, "AutocastPrivateUse1")}
    # Registered in CUDA's own autocast file, outside the policy lists that
    # PyTorch shares with other backends: cuDNN kernels, and (torch 2.14)
    # linalg_matrix_sqrth, whose policy those lists do not state.
    cuda_only = {"aten::cudnn_convolution", "aten::cudnn_convolution_transpose", "aten::_cudnn_rnn",
                 "aten::linalg_matrix_sqrth"}
    assert len(cuda) > 50
    assert flagos == cuda - cuda_only


@pytest.mark.anyplatform
def test_amp_helpers():
    amp = torch_fl.flagos.amp
    assert amp.get_amp_supported_dtype() == [torch.float16, torch.bfloat16]
    assert torch_fl.flagos.get_amp_supported_dtype() == [torch.float16, torch.bfloat16]
    assert amp.is_autocast_available()
    assert torch.amp.is_autocast_available("flagos")
    with torch.autocast("flagos", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("flagos")
        assert torch.get_autocast_dtype("flagos") == torch.bfloat16
    assert not torch.is_autocast_enabled("flagos")
    with amp.autocast(dtype=torch.float16):
        assert torch.get_autocast_dtype("flagos") == torch.float16
    assert amp.GradScaler(init_scale=8.0).get_scale() == 8.0


@pytest.mark.anyplatform
@pytest.mark.parametrize("low", AUTOCAST_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(CASES))
def test_autocast_policy_dtype_and_value(name, low, dev):
    xs = _inputs(name, low)
    out = _under_autocast(name, xs, low, dev)
    assert out.device.type == "flagos"
    assert out.dtype == _expected_dtype(name, xs, low), f"{name} ({_policy(name)}) under autocast({low})"
    ref = _reference(name, xs, low)
    assert ref.dtype == out.dtype
    torch.testing.assert_close(out.cpu(), ref, **_loose(out.dtype))


@pytest.mark.anyplatform
def test_autocast_off_inside_and_cpu_tensors_untouched(dev):
    a = torch.randn(4, 4, device=dev)
    with torch.autocast("flagos", dtype=torch.bfloat16):
        assert torch.mm(a, a).dtype == torch.bfloat16
        with torch.autocast("flagos", enabled=False):
            assert torch.mm(a, a).dtype == torch.float32
        assert torch.mm(a.cpu(), a.cpu()).dtype == torch.float32  # autocast("flagos") leaves CPU alone


@pytest.mark.anyplatform
def test_autocast_backward_grads_in_param_dtype(dev):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8).to(dev)
    x = torch.randn(4, 16, device=dev)
    with torch.autocast("flagos", dtype=torch.bfloat16):
        y = lin(x)
        loss = torch.log_softmax(y, -1).sum()
    assert y.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert lin.weight.grad.dtype == torch.float32 and lin.weight.grad.device.type == "flagos"


@pytest.mark.anyplatform
def test_binary_cross_entropy_banned_under_autocast(dev):
    p = torch.rand(4, device=dev)
    with torch.autocast("flagos", dtype=torch.float16):
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            F.binary_cross_entropy(p, p)


# ------------------------------------------------------------- GradScaler

@pytest.mark.anyplatform
def test_amp_kernels_on_flagos_through_routing(dev):
    from torch_fl import routing

    grads_cpu = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, -8.0])]
    routing.reset_stats()
    for bad in (False, True):
        gs = [g.clone() for g in grads_cpu]
        if bad:
            gs[1][0] = math.inf
        gf = [g.to(dev) for g in gs]
        found_c, found_f = torch.zeros(1), torch.zeros(1, device=dev)
        inv_c, inv_f = torch.full((1,), 0.25), torch.full((1,), 0.25, device=dev)
        torch._amp_foreach_non_finite_check_and_unscale_(gs, found_c, inv_c)
        torch._amp_foreach_non_finite_check_and_unscale_(gf, found_f, inv_f)
        assert found_f.item() == found_c.item() == float(bad)
        for a, b in zip(gf, gs):
            assert a.device.type == "flagos"
            torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0, equal_nan=True)

        scale_c, scale_f = torch.full((1,), 1024.0), torch.full((1,), 1024.0, device=dev)
        tracker_c = torch.full((1,), 1, dtype=torch.int32)
        tracker_f = tracker_c.to(dev)
        torch._amp_update_scale_(scale_c, tracker_c, found_c, 2.0, 0.5, 2)
        out = torch._amp_update_scale_(scale_f, tracker_f, found_f, 2.0, 0.5, 2)
        assert out.device.type == "flagos"
        assert scale_f.item() == scale_c.item() == (512.0 if bad else 2048.0)
        assert tracker_f.item() == tracker_c.item()
    calls = routing.stats()
    for op in ("_amp_foreach_non_finite_check_and_unscale_", "_amp_update_scale_"):
        assert sum(calls.get(op, {}).values()) == 2, (op, calls.get(op))


@pytest.mark.anyplatform
@pytest.mark.parametrize("low", AUTOCAST_DTYPES, ids=str)
def test_gradscaler_training_matches_cpu(low, dev):
    losses_f, scales_f, params_f = gradscaler_training(dev, low)
    losses_c, scales_c, params_c = gradscaler_training("cpu", low, by_hand=True)
    assert scales_f == scales_c
    if low == torch.float16:
        assert scales_f[3] < scales_f[2], f"the overflowing step should have lowered the scale: {scales_f}"
    # The host vendor runs CPU kernels: bitwise equal in practice. A GPU's
    # float16/bfloat16 GEMMs round differently from the CPU's.
    close = dict(rtol=1e-5, atol=1e-5) if VENDOR == "host" else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(torch.tensor(losses_f), torch.tensor(losses_c), **close)
    for a, b in zip(params_f, params_c):
        torch.testing.assert_close(a, b, **close)


@pytest.mark.anyplatform
def test_clean_reference_process_matches_in_process():
    # The mechanism the GPU tests use for their torch CUDA references.
    losses, scales, _ = gradscaler_training("cpu")
    assert run_clean("gradscaler_training", "cpu") == [losses, scales]


# ------------------------------------------------------------------ GPU

@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu
@pytest.mark.parametrize("low", AUTOCAST_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(CASES))
def test_autocast_matches_torch_cuda(name, low, dev):
    xs = _inputs(name, low)
    out = _under_autocast(name, xs, low, dev)
    ref = _under_autocast(name, xs, low, torch.device("cuda"))
    assert out.dtype == ref.dtype, f"{name}: flagos {out.dtype} vs cuda {ref.dtype}"
    torch.testing.assert_close(out.cpu(), ref.cpu(), **_loose(ref.dtype))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.gpu
def test_gradscaler_training_matches_torch_cuda(dev):
    # torch CUDA trains in a process without torch_fl (clean_reference.py says why).
    losses_c, scales_c = run_clean("gradscaler_training", "cuda")
    losses_f, scales_f, _ = gradscaler_training(dev)
    assert scales_f == scales_c
    assert scales_f[3] < scales_f[2], f"the overflowing step should have lowered the scale: {scales_f}"
    torch.testing.assert_close(torch.tensor(losses_f), torch.tensor(losses_c), rtol=5e-3, atol=5e-3)
