"""Records what a FlagGems function does for one argument signature, so that
the C++ launcher (csrc/python/FlagGemsLauncher.cpp) can do it again without
Python: the memory it allocates, the compiled kernels it launches (handle,
grid, block, shared memory, every parameter) and where its results live.

A call can be replayed only if that is all it does. The recording is
refused, with the reason, when the function runs any other ATen op than an
allocation (zeroed ones included: torch.zeros, or zero_() of a whole
allocation no kernel has touched yet, which the replay repeats with the
vendor's fill) or a view (a copy, another fill, a host read of device
data), when a
kernel gets a pointer outside the arguments and the recorded allocations
(a cached tensor), when a launch needs Triton features the launcher does
not reproduce (scratch memory, clusters, cooperative or PDL launches,
tensor descriptors), or when a result is not a tensor. The C++ side runs a
signature's first calls on the vendor's kernel (64 by default, so that a
signature used a few times never pays for a record), records the next, and
replays the rest. One record is
enough because what could change between two calls with the same arguments
is refused here or never recorded: random ops (known by their schema) are
never recorded; an autotuning call (it benchmarks configurations) is
refused and recorded again at the next call; so are host reads of device
data and cached tensors. A signature is given up after three refusals.

Pointers are stored as (INPUT, ALLOCATION or COPY, index, byte offset from
that tensor's data pointer); every other parameter as the bytes the kernel
receives, packed as Triton's own launcher packs them. A COPY is an argument
copied by contiguous() or clone() (FlagGems makes strided arguments
contiguous before its kernels read them flat), or of a view of one; the
replay makes the same copy of the same view with the vendor's copy kernel.
"""
import contextlib
import os
import struct
import sys
import threading
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils._python_dispatch import TorchDispatchMode

INPUT, ALLOCATION, COPY = 0, 1, 2
_KIND = {"input": INPUT, "allocation": ALLOCATION, "copy": COPY}
_POINTER_BYTES = bytes(8)
# After the kernel's own parameters Triton (3.5+) passes the global and the
# profile scratch pointers; both are NULL for kernels that use neither, and
# a CUDA kernel ignores parameter slots it does not declare.
_SCRATCH_POINTERS = (_POINTER_BYTES, _POINTER_BYTES)

_PACK = {
    "i1": "<b", "i8": "<b", "i16": "<h", "i32": "<i", "i64": "<q",
    "u1": "<B", "u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q",
    "fp16": "<e", "fp32": "<f", "f32": "<f", "fp64": "<d",
}

_aten = torch.ops.aten
_COPIES = {_aten.contiguous.default, _aten.clone.default}
_ALLOCATIONS = {
    _aten.empty.memory_format, _aten.empty_strided.default, _aten.empty_like.default,
    _aten.new_empty.default, _aten.new_empty_strided.default,
}
# Allocations filled with zeros: FlagGems accumulates into them (atomic
# adds: nll_loss_forward's sums, embedding_dense_backward's rows).
_ZEROED_ALLOCATIONS = {_aten.zeros.default, _aten.zeros_like.default, _aten.new_zeros.default}
_ZERO_FILLS = {_aten.zero_.default}

# Ops that read tensor metadata (dtype, sizes) only: no device work, no data.
_METADATA = {"promote_types", "result_type", "can_cast", "sym_size", "sym_stride", "sym_numel",
             "sym_storage_offset", "size", "stride", "numel", "dim", "is_same_size", "is_floating_point",
             "is_complex", "is_signed", "is_non_overlapping_and_dense"}

_local = threading.local()
_DEBUG = os.environ.get("FLAGOS_LAUNCHER_LOG") == "2"

Pointer = Tuple[int, int, int]
Param = Union[bytes, Pointer]


def _pack(ty: str, value: Any) -> bytes:
    if ty == "bf16":  # Triton's pack_bf16 truncates the float32 bits
        return struct.pack("<H", struct.unpack("<I", struct.pack("<f", float(value)))[0] >> 16)
    fmt = _PACK[ty]
    return struct.pack(fmt, float(value) if fmt[-1] in "efd" else int(value))


class _Recording:
    def __init__(self, inputs: Sequence[torch.Tensor]):
        self.inputs = list(inputs)
        self.allocations: List[torch.Tensor] = []
        self.zeroed: List[bool] = []  # per allocation: filled with zeros before any kernel
        # (argument index, byte offset, sizes, strides) of what was copied, the
        # launches before the copy, and the copy
        self.copies: List[Tuple[int, int, tuple, tuple, int, torch.Tensor]] = []
        self.launches: List[tuple] = []
        self.refused: Optional[str] = None
        self.aten_ops: List[str] = []  # for FLAGOS_LAUNCHER_LOG=2

    def refuse(self, why: str) -> None:
        if self.refused is None:
            self.refused = why

    def allocated(self, t: Any, zeroed: bool = False) -> None:
        if not isinstance(t, torch.Tensor):
            return self.refuse("an allocation returned no tensor")
        if t.storage_offset() != 0:
            return self.refuse("an allocation has a storage offset")
        self.allocations.append(t)
        self.zeroed.append(zeroed)

    def zero_filled(self, t: Any) -> None:
        """Notes zero_() of a whole allocation that no kernel has touched
        yet: the replay zeroes it when it allocates it, before every kernel."""
        if not isinstance(t, torch.Tensor):
            return self.refuse("it fills something that is not a tensor with zeros")
        for k, a in enumerate(self.allocations):
            if t.untyped_storage().data_ptr() != a.untyped_storage().data_ptr():
                continue
            whole = (t.data_ptr() == a.data_ptr() and t.is_contiguous() and t.dtype == a.dtype
                     and t.numel() == a.numel() and a.is_contiguous())
            if not whole:
                return self.refuse("it fills part of an allocation with zeros")
            if any(p[:2] == (ALLOCATION, k) for launch in self.launches for p in launch[4] if isinstance(p, tuple)):
                return self.refuse("it fills an allocation with zeros after a kernel used it")
            self.zeroed[k] = True
            return None
        return self.refuse("it fills a tensor with zeros that the call did not allocate")

    def _bases(self):
        for i, t in enumerate(self.inputs):
            if t is not None:  # an absent optional tensor keeps its place
                yield "input", i, t
        for k, t in enumerate(self.allocations):
            yield "allocation", k, t
        for k, copy in enumerate(self.copies):
            yield "copy", k, copy[-1]

    def copied(self, source: Any, out: Any) -> None:
        """Notes a copy (contiguous(), clone()) of an argument or of a view of one."""
        if not isinstance(source, torch.Tensor) or not isinstance(out, torch.Tensor) or out.storage_offset() != 0:
            return self.refuse("it copies something that is not a tensor into a new one")
        start = source.untyped_storage().data_ptr()
        for i, t in enumerate(self.inputs):
            if t is not None and t.untyped_storage().data_ptr() == start and t.dtype == source.dtype:
                # The number of launches before it: the replay copies at the same point.
                self.copies.append((i, source.data_ptr() - t.data_ptr(), tuple(source.shape),
                                    tuple(source.stride()), len(self.launches), out))
                return None
        return self.refuse("it copies a tensor that is neither an argument nor a view of one")

    def locate(self, ptr: int) -> Optional[Pointer]:
        """The tensor whose memory holds `ptr`, as (kind, index, offset): the
        one whose data pointer it is, else the one whose storage holds it."""
        holders = []
        for kind, index, t in self._bases():
            if t.data_ptr() == ptr:
                return (_KIND[kind], index, 0)
            storage = t.untyped_storage()
            start = storage.data_ptr()
            if start <= ptr < start + storage.nbytes() or ptr == start:
                holders.append((_KIND[kind], index, ptr - t.data_ptr(), t.data_ptr()))
        if len({h[3] for h in holders}) > 1:
            # Views of one storage at other offsets: which one the kernel
            # reads from is not knowable, and the next call may shift them.
            self.refuse("a kernel pointer lies inside two overlapping arguments")
            return None
        return holders[0][:3] if holders else None

    def launch(self, grid: Tuple[int, int, int], function: int, num_warps: int, num_ctas: int,
               shared: int, signature: Optional[Sequence[Any]], args: Sequence[Any],
               unsupported: Optional[str] = None) -> None:
        if unsupported:
            return self.refuse(unsupported)
        if signature is None:
            return self.refuse("a kernel's launcher was made before torch_fl's hook")
        if len(signature) != len(args):
            return self.refuse(f"a kernel has {len(signature)} parameters but got {len(args)} arguments")
        if num_ctas != 1:
            return self.refuse(f"a kernel launches clusters of {num_ctas} CTAs")
        if grid[0] * grid[1] * grid[2] == 0:
            return  # Triton launches nothing either
        params: List[Param] = []
        for ty, value in zip(signature, args):
            if not isinstance(ty, str) or ty.startswith("tensordesc") or ty == "nvTmaDesc":
                return self.refuse(f"a kernel takes a parameter of type {ty}")
            if ty == "constexpr":
                continue
            if ty.startswith("*"):
                ptr = value if isinstance(value, int) else (0 if value is None else value.data_ptr())
                if ptr == 0:
                    params.append(_POINTER_BYTES)
                    continue
                where = self.locate(ptr)
                if where is None:
                    extents = ", ".join(f"{k}{i} {t.data_ptr():#x}+{t.untyped_storage().nbytes()}"
                                        for k, i, t in self._bases())
                    return self.refuse(f"a kernel reads memory at {ptr:#x}, which is neither an argument nor "
                                       f"allocated by the call (a cached tensor?); tensors: {extents}")
                params.append(where)
            elif ty in _PACK or ty == "bf16":
                params.append(_pack(ty, value))
            else:
                return self.refuse(f"a kernel takes a parameter of type {ty}")
        params.extend(_SCRATCH_POINTERS)
        self.launches.append((int(function), tuple(grid), 32 * int(num_warps), int(shared), tuple(params)))

    def _result(self, r: Any) -> Optional[tuple]:
        if not isinstance(r, torch.Tensor):
            self.refuse(f"it returns a {type(r).__name__}, not a tensor")
            return None
        for i, t in enumerate(self.inputs):
            if t is not None and r is t:
                return (INPUT, i, 0, None, None)
        for kind, index, t in self._bases():
            if t.untyped_storage().data_ptr() != r.untyped_storage().data_ptr():
                continue
            if r.dtype != t.dtype:
                self.refuse("a result views an argument as another dtype")
                return None
            return (_KIND[kind], index, r.data_ptr() - t.data_ptr(), tuple(r.shape), tuple(r.stride()))
        self.refuse("a result is neither an argument nor memory the call allocated")
        return None

    def plan(self, out: Any, num_returns: int) -> Union[str, tuple]:
        # No launch is right only where there was nothing to write (a
        # zero-size result, or an argument returned as it is); otherwise
        # a launch went by a path the hook does not see.
        if self.refused is None and not self.launches and any(t.numel() for t in self.allocations):
            self.refuse("it launched no kernel that the hook saw")
        outs = (out,) if num_returns == 1 else () if num_returns == 0 and out is None else out
        if self.refused is None and (not isinstance(outs, (tuple, list)) or len(outs) != num_returns):
            self.refuse(f"it returned {type(out).__name__} for {num_returns} results")
        results = [] if self.refused else [self._result(r) for r in outs]
        if self.refused is not None:
            return self.refused
        # CPU scalars (0-dim or one element) may come with device tensors:
        # the launcher keys on their values, so a value read here is right.
        inputs = [t for t in self.inputs if t is not None]
        devices = {t.device for t in inputs if t.device.type != "cpu" or t.numel() != 1}
        allocated = {t.device for t in self.allocations}
        if len(devices | allocated) > 1:
            return (f"it takes or allocates tensors on several devices (arguments on {sorted(map(str, devices))}, "
                    f"allocations on {sorted(map(str, allocated))})")
        allocations = tuple((tuple(t.shape), tuple(t.stride()), t.dtype, zeroed)
                            for t, zeroed in zip(self.allocations, self.zeroed))
        copies = tuple((i, offset, sizes, strides, tuple(t.stride()), at)
                       for i, offset, sizes, strides, at, t in self.copies)
        return (allocations, tuple(self.launches), tuple(results), copies)


class _AllocationsAndViewsOnly(TorchDispatchMode):
    def __init__(self, recording: _Recording):
        super().__init__()
        self.recording = recording

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.recording.refused is not None and not _DEBUG:
            return out  # nothing more to learn; an autotuner's buffers are not kept alive
        if _DEBUG:
            self.recording.aten_ops.append(str(func))
        if func in _ALLOCATIONS:
            self.recording.allocated(out)
        elif func in _ZEROED_ALLOCATIONS:
            self.recording.allocated(out, zeroed=True)
        elif func in _ZERO_FILLS:
            self.recording.zero_filled(args[0])
        elif func._opname in _METADATA:
            pass
        elif func in _COPIES and not _shares_storage(out, args):
            self.recording.copied(args[0], out)
        elif not func.is_view or not _shares_storage(out, args):
            # contiguous() counts as a view op, but copies a strided tensor
            self.recording.refuse(f"it runs the ATen op {func.name()}")
        return out


def _shares_storage(out: Any, args: tuple) -> bool:
    """Whether a view op's results are views of its first tensor argument."""
    base = next((a for a in args if isinstance(a, torch.Tensor)), None)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if base is None:
        return False
    start = base.untyped_storage().data_ptr()
    return all(isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() == start for o in outs)


@contextlib.contextmanager
def benchmarking():
    """A context in which launches are benchmarks (Triton's autotuner trying
    configurations), not the call's own work: a record made around them is
    refused, and the signature's next call records again. The benchmark
    runs unrecorded: noting its thousands of launches made an autotuning
    FlagGems mm take minutes."""
    recording = getattr(_local, "recording", None)
    if recording is None:
        yield
        return
    recording.refuse("it autotuned a kernel (benchmark launches)")
    _local.recording = None
    try:
        yield
    finally:
        _local.recording = recording


def note_launch(grid: Tuple[int, int, int], function: int, num_warps: int, num_ctas: int, shared: int,
                signature: Optional[Sequence[Any]], args: Sequence[Any], unsupported: Optional[str] = None) -> None:
    """Tells an active recording about one kernel launch (from Triton's
    launcher hook, or from a test's stand-in kernel). A no-op otherwise."""
    recording = getattr(_local, "recording", None)
    if recording is None or recording.refused is not None:
        return
    try:
        recording.launch(grid, function, num_warps, num_ctas, shared, signature, args, unsupported)
    except Exception as exc:  # a record may fail; the launch itself must not
        recording.refuse(f"a launch could not be recorded ({type(exc).__name__}: {exc})")


def capture(fn, args: tuple, kwargs: dict, inputs: Sequence[torch.Tensor], num_returns: int):
    """Runs fn(*args, **kwargs) and returns (its result, its plan or the
    reason it cannot be replayed). Called by the C++ launcher."""
    if getattr(_local, "recording", None) is not None:
        return fn(*args, **kwargs), "it ran inside another recorded call"
    recording = _Recording(inputs)
    _local.recording = recording
    try:
        with _AllocationsAndViewsOnly(recording):
            out = fn(*args, **kwargs)
    finally:
        _local.recording = None
    plan = recording.plan(out, num_returns)
    if _DEBUG and isinstance(plan, str):
        launches = [(hex(f), grid, [p if isinstance(p, tuple) else p.hex() for p in params])
                    for f, grid, _, _, params in recording.launches]
        print(f"[flagos launcher record] {getattr(fn, '__name__', fn)}: {plan}\n  aten ops: {recording.aten_ops}"
              f"\n  launches: {launches}\n  python mode on: "
              f"{torch._C._dispatch_tls_is_dispatch_key_included(torch._C.DispatchKey.Python)}", file=sys.stderr)
    return out, plan


def install_triton_hook() -> Optional[str]:
    """Makes Triton's CUDA launcher report each launch to note_launch.
    Returns why it cannot (no Triton, another launcher), else None."""
    try:
        from triton.runtime import driver
        launcher_cls = driver.active.launcher_cls
    except Exception as exc:  # no Triton, or no GPU driver: nothing to replay
        return f"Triton's launcher is not available ({type(exc).__name__}: {exc})"
    if getattr(launcher_cls, "_flagos_hooked", False):
        return None
    if not callable(getattr(launcher_cls, "__call__", None)):
        return f"Triton's launcher {launcher_cls.__name__} is not callable"
    original_init, original_call = launcher_cls.__init__, launcher_cls.__call__

    def __init__(self, src, metadata, *rest, **kw):
        original_init(self, src, metadata, *rest, **kw)
        signature = getattr(src, "signature", None)
        self._flagos_signature = tuple(signature.values()) if isinstance(signature, dict) else None

    def __call__(self, gridX, gridY, gridZ, stream, function, *args):
        if getattr(_local, "recording", None) is not None:
            _note_triton_launch(self, (gridX, gridY, gridZ), function, args)
        return original_call(self, gridX, gridY, gridZ, stream, function, *args)

    launcher_cls.__init__ = __init__
    launcher_cls.__call__ = __call__
    launcher_cls._flagos_hooked = True
    _hook_autotuner()
    return None


def _hook_autotuner() -> None:
    """Marks Triton's autotuner benchmarks (FlagGems' LibTuner inherits
    _bench), so that a record refuses them by name rather than by the
    cache-clearing fill that do_bench happens to run."""
    try:
        from triton.runtime.autotuner import Autotuner
    except Exception:
        return
    bench = getattr(Autotuner, "_bench", None)
    if bench is None or getattr(bench, "_flagos_hooked", False):
        return

    def _bench(self, *args, **kwargs):
        with benchmarking():
            return bench(self, *args, **kwargs)

    _bench._flagos_hooked = True
    Autotuner._bench = _bench


def _note_triton_launch(launcher, grid, function, args) -> None:
    # args: packed metadata (num_warps, num_ctas, shared), launch metadata,
    # the enter and exit hooks, then the kernel's arguments.
    unsupported = None
    if getattr(launcher, "global_scratch_size", 0) or getattr(launcher, "profile_scratch_size", 0):
        unsupported = "a kernel needs scratch memory"
    elif getattr(launcher, "launch_cooperative_grid", False) or getattr(launcher, "launch_pdl", False):
        unsupported = "a kernel needs a cooperative or PDL launch"
    try:
        num_warps, num_ctas, shared = args[0]
    except (TypeError, ValueError):
        num_warps, num_ctas, shared, unsupported = 0, 0, 0, "Triton's launch metadata has another form"
    note_launch(grid, function, num_warps, num_ctas, shared, getattr(launcher, "_flagos_signature", None),
                args[4:], unsupported)
