"""Hand-written samples for the operator sweep (tools/operator_support.py):
FlagGems ops that no OpInfo sample reaches on flagos, because the sweep runs
floating dtypes only (bitwise ops, bincount), because the op is called by
name only (zero, lift_fresh_copy, _conv_depthwise2d, fill.Tensor), or
because it is one overload among several (div.Scalar_mode, isin.Scalar_Tensor,
sort.stable). Also the backward ops of the normalizations that the cuda
table keeps native in the forward: their FlagGems backward must accept
statistics that CUDA's forward saved.

Each case is (function, make_inputs(dtype) -> (input, args, kwargs),
differentiable). The sweep runs it as an OpInfo sample: result against torch
CUDA, input gradients against the CPU's where differentiable.
Cases marked INT run once, with their own integer dtype.
"""
import torch
import torch.nn.functional as F

INT = "int"


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _x(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=_g(seed)).to(dtype)


def _ints(*shape, high=100, dtype=torch.int32, seed=0):
    return torch.randint(0, high, shape, generator=_g(seed), dtype=dtype)


def _max_pool2d_backward(grad, x):
    """aten::max_pool2d_backward on flagos; elsewhere (no CPU or CUDA kernel
    of that name) the same gradient through max_pool2d's autograd, on the
    CPU in float32: torch CUDA's backward cannot run in a process that
    imported torch_fl (pytorch#161129)."""
    if x.device.type == "flagos":
        return torch.ops.aten.max_pool2d_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    xc = x.detach().cpu().float().requires_grad_()
    got = torch.autograd.grad(F.max_pool2d(xc, 2), xc, grad.cpu().float())[0]
    return got.to(x.device, x.dtype)


CASES = {
    # Integer dtypes, which the sweep's float loop never gives.
    "bitwise_and.Tensor": (torch.bitwise_and, lambda d: (_ints(64), (_ints(64, seed=1),), {}), INT),
    "bitwise_and.Scalar": (torch.bitwise_and, lambda d: (_ints(64), (12,), {}), INT),
    "bitwise_and.Scalar_Tensor": (lambda s, t: torch.bitwise_and(s, t), lambda d: (12, (_ints(64),), {}), INT),
    "bitwise_and_.Scalar": (lambda t, s: t.clone().bitwise_and_(s), lambda d: (_ints(64), (12,), {}), INT),
    "bitwise_or.Tensor": (torch.bitwise_or, lambda d: (_ints(64), (_ints(64, seed=1),), {}), INT),
    "bitwise_or.Scalar": (torch.bitwise_or, lambda d: (_ints(64), (12,), {}), INT),
    "bitwise_or.Scalar_Tensor": (lambda s, t: torch.bitwise_or(s, t), lambda d: (12, (_ints(64),), {}), INT),
    "bitwise_or_.Scalar": (lambda t, s: t.clone().bitwise_or_(s), lambda d: (_ints(64), (12,), {}), INT),
    "bitwise_not": (torch.bitwise_not, lambda d: (_ints(64), (), {}), INT),
    "bitwise_not_": (lambda t: t.clone().bitwise_not_(), lambda d: (_ints(64), (), {}), INT),
    "bincount": (lambda t, w: torch.bincount(t, w, minlength=12),
                 lambda d: (_ints(200, high=10, dtype=torch.int64), (_x(200),), {}), INT),
    "repeat_interleave.Tensor": (torch.repeat_interleave,
                                 lambda d: (_ints(8, high=4, dtype=torch.int64), (), {}), INT),
    "isin.Scalar_Tensor": (lambda s, t: torch.isin(s, t), lambda d: (7, (_ints(64, high=10),), {}), INT),
    "isin.Tensor_Scalar": (lambda t, s: torch.isin(t, s), lambda d: (_ints(64, high=10), (7,), {}), INT),
    "_is_all_true": (torch.ops.aten._is_all_true, lambda d: (_ints(16, high=2) >= 0, (), {}), INT),
    # Called by name, or one overload among several.
    "zero": (torch.ops.aten.zero, lambda d: (_x(8, 9, dtype=d), (), {}), False),
    "fill.Tensor": (torch.ops.aten.fill.Tensor, lambda d: (_x(8, 9, dtype=d), (torch.tensor(2.5, dtype=d),), {}),
                    False),
    "fill_.Tensor": (lambda t, v: t.clone().fill_(v), lambda d: (_x(8, 9, dtype=d), (torch.tensor(2.5, dtype=d),), {}),
                     False),
    "lift_fresh_copy": (torch.ops.aten.lift_fresh_copy, lambda d: (_x(8, 9, dtype=d), (), {}), False),
    "_conv_depthwise2d": (lambda x, w: torch.ops.aten._conv_depthwise2d(x, w, [3, 3], None, [1, 1], [1, 1], [1, 1]),
                          lambda d: (_x(2, 4, 10, 10, dtype=d), (_x(4, 1, 3, 3, dtype=d, seed=1),), {}), False),
    "div.Scalar_mode": (lambda x: torch.div(x * 10, 3, rounding_mode="floor"), lambda d: (_x(64, dtype=d), (), {}),
                        False),
    "floor_divide.Scalar": (lambda x: torch.floor_divide(x * 10, 3), lambda d: (_x(64, dtype=d), (), {}), False),
    "remainder.Scalar_Tensor": (lambda x: torch.remainder(5.0, x.abs() + 0.5), lambda d: (_x(64, dtype=d), (), {}),
                                False),
    "ge.Scalar, gt.Scalar": (lambda x: torch.stack([x >= 0.25, x > 0.25]), lambda d: (_x(64, dtype=d), (), {}), False),
    "sort.stable": (lambda x: torch.sort(x, dim=-1, stable=True), lambda d: (_x(16, 33, dtype=d).round(), (), {}),
                    False),
    # Factories: the sweep puts its device into the device= keyword.
    "arange.start, arange.start_step": (
        lambda dt, device: torch.stack([torch.arange(2, 34, device=device, dtype=dt),
                                        torch.arange(1, 17, 0.5, device=device, dtype=dt)]),
        lambda d: (d, (), {"device": "cpu"}), False),
    "eye.m": (lambda dt, device: torch.eye(5, 7, device=device, dtype=dt), lambda d: (d, (), {"device": "cpu"}), False),
    "logspace": (lambda dt, device: torch.logspace(0, 2, 9, device=device, dtype=dt),
                 lambda d: (d, (), {"device": "cpu"}), False),
    "scatter_.reduce": (lambda x, i, s: x.clone().scatter_(0, i, s, reduce="add"),
                        lambda d: (_x(6, 5, dtype=d), (_ints(4, 5, high=6, dtype=torch.int64), _x(4, 5, dtype=d, seed=1)),
                                   {}), False),
    "index_put_ accumulate": (lambda x, i, v: x.clone().index_put_((i,), v, accumulate=True),
                              lambda d: (_x(6, 5, dtype=d), (_ints(8, high=6, dtype=torch.int64), _x(8, 5, dtype=d, seed=1)),
                                         {}), False),
    "index_add_": (lambda x, i, s: x.clone().index_add_(0, i, s),
                   lambda d: (_x(6, 5, dtype=d), (_ints(8, high=6, dtype=torch.int64), _x(8, 5, dtype=d, seed=1)), {}),
                   False),
    "masked_scatter_": (lambda x, m, s: x.clone().masked_scatter_(m, s),
                        lambda d: (_x(6, 5, dtype=d), (_x(6, 5, seed=2) > 0, _x(30, dtype=d, seed=1)), {}), False),
    "where.self_out": (lambda c, a, b: torch.where(c, a, b, out=torch.empty_like(a)),
                       lambda d: (_x(6, 5, seed=2) > 0, (_x(6, 5, dtype=d), _x(6, 5, dtype=d, seed=1)), {}), False),
    # By name, and the out= or in-place forms that no OpInfo calls.
    "_assert_async": (torch._assert_async, lambda d: (torch.tensor(True), (), {}), INT),
    "_functional_sym_constrain_range_for_size": (
        lambda dep: torch.ops.aten._functional_sym_constrain_range_for_size(3, 0, 10, dep),
        lambda d: (torch.empty(0), (), {}), INT),
    "all.dims, any.dims": (lambda x: torch.stack([torch.all(x > -3, dim=(0, 1)), torch.any(x > 1, dim=(0, 1))]),
                           lambda d: (_x(4, 5, 6, dtype=d), (), {}), False),
    "div.Scalar_mode, div_.Scalar_mode": (
        lambda x: torch.stack([torch.ops.aten.div.Scalar_mode(x, 3, rounding_mode="floor"),
                               torch.ops.aten.div_.Scalar_mode(x.clone(), 3, rounding_mode="trunc")]),
        lambda d: (_x(64, dtype=d) * 10, (), {}), False),
    "floor_divide.Scalar, floor_divide_.Scalar, remainder_.Scalar": (
        lambda x: torch.stack([torch.ops.aten.floor_divide.Scalar(x, 3), torch.ops.aten.floor_divide_.Scalar(x.clone(), 3),
                               torch.ops.aten.remainder_.Scalar(x.clone(), 3)]),
        lambda d: (_x(64, dtype=d) * 10, (), {}), False),
    "fill.Scalar_out, fill.Tensor_out, zero.out, sum.out": (
        lambda x: (torch.ops.aten.fill.Scalar_out(x, 2.5, out=torch.empty_like(x)),
                   torch.ops.aten.fill.Tensor_out(x, torch.full((), 1.5, dtype=x.dtype, device=x.device),
                                                  out=torch.empty_like(x)),
                   torch.ops.aten.zero.out(x, out=torch.empty_like(x)),
                   torch.ops.aten.sum.out(x, out=torch.empty((), dtype=x.dtype, device=x.device))),
        lambda d: (_x(8, 9, dtype=d), (), {}), False),
    "gelu_, relu_, hardswish_": (
        lambda x: (torch.ops.aten.gelu_(x.clone()), torch.ops.aten.relu_(x.clone()),
                   torch.ops.aten.hardswish_(x.clone())), lambda d: (_x(8, 9, dtype=d), (), {}), False),
    "lerp.Tensor": (torch.lerp, lambda d: (_x(8, 9, dtype=d), (_x(8, 9, dtype=d, seed=1), _x(8, 9, dtype=d, seed=2)), {}),
                    True),
    "max_pool2d_backward": (_max_pool2d_backward,
                            lambda d: (_x(2, 3, 4, 4, dtype=d, seed=1), (_x(2, 3, 8, 8, dtype=d),), {}), False),
    # Deterministic for a given mask: dropout's backward.
    "native_dropout_backward": (lambda g, mask: torch.ops.aten.native_dropout_backward(g, mask, 2.0),
                                lambda d: (_x(6, 7, dtype=d), (_ints(6, 7, high=2, seed=3).bool(),), {}), False),
    "pixel_unshuffle.out": (lambda x: torch.ops.aten.pixel_unshuffle.out(x, 2, out=x.new_empty(1, 12, 3, 4)),
                            lambda d: (_x(1, 3, 6, 8, dtype=d), (), {}), False),
    "reflection_pad1d.out, replication_pad1d.out": (
        lambda x: (torch.ops.aten.reflection_pad1d.out(x, [2, 3], out=x.new_empty(2, 3, 12)),
                   torch.ops.aten.replication_pad1d.out(x, [2, 3], out=x.new_empty(2, 3, 12))),
        lambda d: (_x(2, 3, 7, dtype=d), (), {}), False),
    "reflection_pad2d, reflection_pad2d.out": (
        lambda x: (torch.ops.aten.reflection_pad2d(x, [1, 2, 2, 1]),
                   torch.ops.aten.reflection_pad2d.out(x, [1, 2, 2, 1], out=x.new_empty(2, 3, 9, 10))),
        lambda d: (_x(2, 3, 6, 7, dtype=d), (), {}), True),
    "replication_pad3d": (lambda x: torch.ops.aten.replication_pad3d(x, [1, 1, 2, 0, 0, 1]),
                          lambda d: (_x(1, 2, 3, 4, 5, dtype=d), (), {}), True),
    "_grouped_mm": (lambda a, b, offs: torch._grouped_mm(a, b.transpose(-2, -1), offs),
                    lambda d: (_x(64, 32, dtype=d), (_x(4, 48, 32, dtype=d, seed=1),
                                                     torch.tensor([16, 32, 48, 64], dtype=torch.int32)), {}), False),
    # Differentiable: the forward and the FlagGems backward ops.
    "_upsample_bicubic2d_aa": (lambda x: F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True),
                               lambda d: (_x(1, 2, 12, 12, dtype=d), (), {}), True),
    "upsample_nearest2d": (lambda x: F.interpolate(x, size=(9, 14), mode="nearest"),
                           lambda d: (_x(1, 2, 5, 7, dtype=d), (), {}), True),
    "upsample_nearest3d": (lambda x: F.interpolate(x, size=(4, 6, 8), mode="nearest"),
                           lambda d: (_x(1, 2, 2, 3, 4, dtype=d), (), {}), True),
    "_weight_norm_interface": (lambda v, g: torch._weight_norm(v, g, 0),
                               lambda d: (_x(4, 5, dtype=d), (_x(4, 1, dtype=d, seed=1).abs() + 0.5,), {}), True),
    "avg_pool2d_backward": (lambda x: F.avg_pool2d(x, 2), lambda d: (_x(2, 3, 8, 8, dtype=d), (), {}), True),
    "nll_loss2d": (lambda x, t: F.nll_loss(F.log_softmax(x, 1), t),
                   lambda d: (_x(2, 3, 4, 4, dtype=d), (_ints(2, 4, 4, high=3, dtype=torch.int64),), {}), True),
    "native_layer_norm_backward": (lambda x, w, b: F.layer_norm(x, (16,), w, b),
                                   lambda d: (_x(4, 16, dtype=d), (_x(16, dtype=d, seed=1), _x(16, dtype=d, seed=2)), {}),
                                   True),
    "native_group_norm_backward": (lambda x, w, b: F.group_norm(x, 2, w, b),
                                   lambda d: (_x(2, 4, 6, dtype=d), (_x(4, dtype=d, seed=1), _x(4, dtype=d, seed=2)), {}),
                                   True),
    "native_batch_norm_backward": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                                   lambda d: (_x(8, 4, 5, dtype=d), (_x(4, dtype=d, seed=1), _x(4, dtype=d, seed=2)), {}),
                                   True),
}
