"""torch_fl's wrappers around FlagGems functions: each hands a FlagGems
kernel the calls it serves right and fast, in the form it wants them, and
returns what torch returns (values, dtype, layout). A wrapper's own work is
views and FlagGems calls only, so the launcher records and replays it as it
does FlagGems' functions (torch_fl/_launch_capture.py).
"""
import functools
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch

# FlagGems 5.0.2 functions that read a tensor argument as a flat array from
# its data pointer whatever its strides, so they get contiguous tensors (a
# copy only where one is not). The softmax backwards read `output` flat:
# FlagGems' own _safe_softmax over a non-last dim returns a permuted, strided
# result, and the pair gave input gradients 19x off (H200, the sweep's
# _safe_softmax OpInfo), while each alone passed.
READS_FLAT = ("_softmax_backward_data", "_log_softmax_backward_data")


def with_contiguous_tensors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        return fn(*(a.contiguous() if hasattr(a, "is_contiguous") else a for a in args), **kwargs)
    return call


def reduction_as_one_dim(t: torch.Tensor, dims: Sequence[int]) -> Optional[Tuple[torch.Tensor, int, Set[int]]]:
    """`t` viewed in its memory order with the reduced dims `dims` merged into
    one, that dim's index, and the reduced dims of `t` (non-negative):
    (view, dim, reduced), so that a sum over `dim` of the view is the sum over
    `dims` of `t`, its result laid out as torch lays out the reduction's
    (contiguous, the kept dims in their order). None where no
    such view exists: `t` not dense (expanded, overlapping, gapped), the
    reduced dims apart in memory, or the kept ones out of their order."""
    if not isinstance(dims, (list, tuple)) or not dims or t.dim() == 0 or t.numel() == 0:
        return None
    nd = t.dim()
    if any(isinstance(d, bool) or not isinstance(d, int) or not -nd <= d < nd for d in dims):
        return None
    reduced = {d % nd for d in dims}
    if len(reduced) != len(dims):
        return None  # a repeated dim: the function says so
    # Size-1 dims hold no memory: their strides say nothing, and reducing one
    # only drops it from the result's shape.
    order = sorted((d for d in range(nd) if t.shape[d] != 1), key=lambda d: -t.stride(d))
    expected = 1
    for d in reversed(order):
        if t.stride(d) != expected:
            return None
        expected *= t.shape[d]
    kept = [d for d in order if d not in reduced]
    if kept != sorted(kept):
        return None
    runs: List[List] = []  # [reduced?, elements], one per stretch of memory
    for d in order:
        if runs and runs[-1][0] == (d in reduced):
            runs[-1][1] *= t.shape[d]
        else:
            runs.append([d in reduced, t.shape[d]])
    at = [i for i, (is_reduced, _) in enumerate(runs) if is_reduced]
    if len(at) != 1:
        return None
    sizes = [n for _, n in runs]
    strides = [1] * len(sizes)
    for i in range(len(sizes) - 2, -1, -1):
        strides[i] = strides[i + 1] * sizes[i + 1]
    return t.as_strided(sizes, strides, t.storage_offset()), at[0], reduced


def sum_in_memory_order(sum_dim: Callable) -> Callable:
    """FlagGems' sum over several dims copies its input with them moved last
    (dim_compress), and over one dim of a strided input makes it contiguous
    first. Where the reduced dims lie together in memory it gets one dim of
    a view of the memory as it lies instead, and copies nothing: RMSNorm's
    weight gradients (a sum over batch and sequence) and the q/k norms' (over
    batch, sequence and the heads of a transposed tensor) in a Qwen3
    training step, whose copies took 4.2 ms of a 2 x 1024-token step's
    kernel time on an H100 (torch_fl/speed_holds_cuda.conf had held the op
    on CUDA for them)."""
    @functools.wraps(sum_dim)
    def call(inp, dim=None, keepdim=False, *, dtype=None):
        plan = reduction_as_one_dim(inp, dim) if isinstance(inp, torch.Tensor) else None
        if plan is None:
            return sum_dim(inp, dim, keepdim, dtype=dtype)
        view, at, reduced = plan
        shape = [1 if d in reduced else n for d, n in enumerate(inp.shape) if keepdim or d not in reduced]
        return sum_dim(view, [at], False, dtype=dtype).view(shape)
    return call


def pow_by_multiplication(pow_tensor_scalar: Callable, mul: Callable) -> Callable:
    """FlagGems' pow runs libdevice's pow in float32 for every exponent;
    CUDA's copies for exponent 1 and multiplies for 2 and 3. Done as CUDA
    does them (a clone; FlagGems' mul), the values are CUDA's bit for bit,
    at the cost of a copy or a multiplication: a Qwen3 training step's 339
    pows (RMSNorm's square, its backward's pow(x, 1), rsqrt's backward's
    pow(x, 3)) took 3.1 ms of kernel time on FlagGems' pow against CUDA's
    0.7 (H100). Exponent 3 rounds once per multiplication, as CUDA's does
    only in float32 and float64; other dtypes, exponents and strided
    tensors keep FlagGems' pow."""
    @functools.wraps(pow_tensor_scalar)
    def call(inp, exponent):
        if (isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or not isinstance(inp, torch.Tensor)
                or not inp.is_floating_point() or not inp.is_contiguous()):
            return pow_tensor_scalar(inp, exponent)
        if exponent == 1:
            return inp.clone()
        if exponent == 2:
            return mul(inp, inp)
        if exponent == 3 and inp.dtype in (torch.float32, torch.float64):
            return mul(mul(inp, inp), inp)
        return pow_tensor_scalar(inp, exponent)
    return call


def adapt(items: List[Tuple[str, Callable]]) -> List[Tuple[str, Callable]]:
    """FlagGems' (op name, function) pairs with torch_fl's wrappers put on."""
    functions: Dict[str, Callable] = dict(items)
    mul = functions.get("mul.Tensor")

    def wrapped(name: str, fn: Callable) -> Callable:
        if name in READS_FLAT:
            return with_contiguous_tensors(fn)
        if name == "sum.dim_IntList":
            return sum_in_memory_order(fn)
        if name == "pow.Tensor_Scalar" and mul is not None:
            return pow_by_multiplication(fn, mul)
        return fn
    return [(name, wrapped(name, fn)) for name, fn in items]
