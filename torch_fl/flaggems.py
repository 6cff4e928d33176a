"""FlagGems integration.

FlagGems (``pip install torch_fl[flaggems]``, version 5.0.2) implements ~430
ATen ops as Triton kernels and normally registers them on PyTorch's CUDA key.
torch_fl never registers anything on CUDA: it asks FlagGems which functions it
*would* register on this machine (its own vendor filters and conditions
apply), and hands them to the routing kernel. An op routed to ``flagos``,
``flaggems`` or ``flagos_python`` then runs the FlagGems function on CUDA
aliases of the flagos memory (zero copy), on the current flagos stream, which
on the cuda vendor is torch's current CUDA stream.

On the ``flagos`` and ``flaggems`` routes a call whose arguments (dtypes,
shapes, strides, scalars) were seen before skips FlagGems' Python: the C++
launcher allocates what the function allocated and launches the Triton
kernels it launched (see torch_fl/_launch_capture.py for what can be
replayed). The first 64 calls of a signature run on the vendor's kernel,
the next in FlagGems' Python under the recorder, and the rest replay: a
record costs ~100 us of Python and a replay saves about a microsecond
against the vendor's kernel, so signatures that few calls use (a decode
step's growing KV cache makes new ones every token, used once per layer)
stay on the vendor's kernel. ``FLAGOS_FLAGGEMS_VENDOR_CALLS=N`` or
``set_vendor_calls(N)`` sets the count; 0 records first calls, so that
every call runs a FlagGems kernel (what tests of FlagGems' kernels need).
An op the vendor lacks is recorded at its first call either way. ``flagos_python`` always
runs the Python function; ``FLAGOS_FLAGGEMS_LAUNCHER=0`` or
``set_launcher_enabled(False)`` turns the launcher off.

``FLAGOS_DISABLE_FLAGGEMS_PY=1`` keeps every FlagGems function out.
"""
import os
from typing import Callable, Dict, List, Optional, Tuple

from . import _C, _flaggems_adapters, _launch_capture

_FUNCTIONS: Dict[str, Callable] = {}   # op name -> FlagGems function, live here
_EXCLUDED: Dict[str, str] = {}         # op name -> why it stays native
_UNAVAILABLE = "was not loaded"
_CONFIG_SIZE = 0
_LAUNCHER_HOOK = "FlagGems was not loaded"   # why Triton launches are not seen, or ""


class _CapturingLibrary:
    """Stands in for torch.library.Library: records what FlagGems would
    register instead of touching PyTorch's CUDA key."""

    def __init__(self):
        self.items: List[Tuple[str, Callable]] = []

    def impl(self, name, fn, dispatch_key="", **kwargs):
        self.items.append((name, fn))

    def _destroy(self):
        pass


def capture_config() -> List[Tuple[str, Callable]]:
    """(op name, function) pairs FlagGems enables for its detected vendor."""
    import flag_gems

    lib = _CapturingLibrary()
    flag_gems.enable(lib=lib)
    return lib.items


def _disabled() -> bool:
    return os.environ.get("FLAGOS_DISABLE_FLAGGEMS_PY", "0") not in ("", "0")


def _why_not_here(vendor: str) -> Optional[str]:
    if _disabled():
        return "is disabled by FLAGOS_DISABLE_FLAGGEMS_PY=1"
    if vendor != "cuda":
        return f"cannot run Triton kernels on the '{vendor}' vendor"
    return None


# Copies between devices are torch_fl's own job (_copy_from): FlagGems'
# versions assume both sides are CUDA tensors.
_NEVER_ROUTED = {
    "copy_": "device changes are torch_fl's copy path; FlagGems' copy_ assumes CUDA on both sides",
}

# Ops that torch_fl's own unboxed kernel routes only in part: FlagGems'
# function serves what that kernel hands it, and claim_ops() leaves the op
# to that kernel (ours already). A cast within one flagos device
# (tensor.to(dtype), autocast's casts) is a routed _to_copy
# (csrc/aten/Unboxed.cpp); a cast that changes the device stays torch_fl's
# copy path. Without the unboxed kernel the routing kernel would claim it,
# device changes included: then FlagGems serves none of it.
_PARTLY_ROUTED = ("_to_copy",)


# FlagGems 5.0.2 kernels that are right, or fast, only for flat operands:
# every tensor contiguous and of one shape. Other calls of these ops go to
# the vendor's kernel (FlagGemsBridge.cpp), wherever the op is routed.
_FLAT_OPERANDS = {
    # The Hopper mul runs two tensors of equal rank through a flat 1-D kernel:
    # broadcasting ([S,1] * [1,N]) and strides are ignored (the first sweep),
    # and its result takes the first operand's dtype (bf16 * float32 gave
    # bf16, H100).
    "mul.Tensor": "its Hopper kernel ignores broadcasting, strides and dtype promotion between operands of "
                  "equal rank",
    "mul_.Tensor": "its Hopper kernel ignores broadcasting and strides between operands of equal rank",
    # A Qwen3-0.6B training step (H100, profile-train): FlagGems' rank-4
    # kernel for broadcast or strided adds took 10.5 ms over 84 calls where
    # CUDA's took about half; its flat adds were as fast as CUDA's.
    "add.Tensor": "its kernel for broadcast or strided operands is about 2x slower than the vendor's",
    "add_.Tensor": "its kernel for broadcast or strided operands is about 2x slower than the vendor's",
}
# Of those, the kernels that are right for operands of one dtype only: the
# Hopper mul writes its result in its first operand's dtype. FlagGems' add
# promotes as torch does, so mixed dtypes stay on it (56 adds of a Qwen3
# training step).
_ONE_DTYPE = ("mul.Tensor",)


def flat_operand_ops() -> Dict[str, str]:
    """Ops whose FlagGems kernel serves only calls with flat operands (every
    tensor contiguous, one shape; for mul.Tensor one dtype as well); the
    vendor's kernel serves the rest. With the reason per op."""
    return {op: why for op, why in _FLAT_OPERANDS.items() if op in _FUNCTIONS}


def _install(items: List[Tuple[str, Callable]]) -> None:
    """Claims the ops for the routing kernel and hands their functions over."""
    global _CONFIG_SIZE
    _CONFIG_SIZE = len(items)
    never = dict(_NEVER_ROUTED)
    unboxed = set(_C._unboxed_ops())
    never.update({n: "only torch_fl's unboxed kernel routes it (casts within one device), and "
                     "FLAGOS_UNBOXED_OPS=0 turned that kernel off" for n in _PARTLY_ROUTED if n not in unboxed})
    _EXCLUDED.update({n: never[n] for n, _ in items if n in never})
    items = [(n, fn) for n, fn in items if n not in never]
    names = [name for name, _ in items]
    refused = dict(_C._claim_ops(names))
    _EXCLUDED.update(refused)
    for name, fn in items:
        if name in refused:
            continue
        _FUNCTIONS[name] = fn
        _C._set_flaggems_function(name, fn)
    _C._set_flaggems_ops(sorted(_FUNCTIONS))
    _C._set_launch_recorder(_launch_capture.capture)


def vendor_calls() -> int:
    """How many calls of a new argument signature the vendor's kernel serves
    on the flagos and flaggems routes before FlagGems' kernel is recorded;
    0: every call runs a FlagGems kernel."""
    return _C._launcher_vendor_calls()


def set_vendor_calls(calls: int) -> None:
    """Sets vendor_calls() for the whole process; signatures seen keep the
    calls they have had."""
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
        raise ValueError(f"torch_fl.flaggems.set_vendor_calls: {calls!r} is not a count of calls (an int >= 0)")
    _C._launcher_set_vendor_calls(calls)


def _vendor_calls_from_environment() -> None:
    word = os.environ.get("FLAGOS_FLAGGEMS_VENDOR_CALLS", "")
    if not word:
        return
    if not word.isdigit():
        raise ValueError(f"FLAGOS_FLAGGEMS_VENDOR_CALLS={word} is not a count of calls (an int >= 0)")
    set_vendor_calls(int(word))


def setup() -> None:
    """Called by ``import torch_fl``: loads FlagGems when it can run here."""
    global _UNAVAILABLE
    _vendor_calls_from_environment()
    reason = _why_not_here(_C._vendor())
    if reason:
        _UNAVAILABLE = reason
        return
    try:
        items = capture_config()
    except ImportError as exc:
        _UNAVAILABLE = f"is not installed ({exc}); pip install 'torch_fl[flaggems]'"
        return
    except Exception as exc:  # FlagGems failing to start must not break torch_fl
        _UNAVAILABLE = f"failed to load: {type(exc).__name__}: {exc}"
        return
    global _LAUNCHER_HOOK
    _LAUNCHER_HOOK = _launch_capture.install_triton_hook() or ""
    _install(_flaggems_adapters.adapt(items))
    flat = flat_operand_ops()
    _C._set_flaggems_flat_operand_ops(sorted(flat), [op for op in _ONE_DTYPE if op in flat])


def install_functions(functions: Dict[str, Callable]) -> None:
    """Serves ops with the given Python functions on the FlagGems routes,
    as FlagGems' own functions are. Functions receive CUDA (or, on the host
    vendor, CPU) aliases of flagos tensors; used by tests and by users who
    bring a kernel of their own. Refused (RuntimeError) under
    FLAGOS_DISABLE_FLAGGEMS_PY=1. Ops that decompose above the backend key
    (CompositeImplicitAutograd) and copy_ are refused: see excluded_ops();
    a function for _to_copy serves casts within one flagos device."""
    if _disabled():
        raise RuntimeError("torch_fl.flaggems.install_functions: FlagGems functions are disabled "
                           "by FLAGOS_DISABLE_FLAGGEMS_PY=1")
    _install(list(functions.items()))


def available() -> bool:
    return bool(_FUNCTIONS)


def unavailable_reason() -> str:
    return _UNAVAILABLE


def available_ops() -> List[str]:
    return sorted(_FUNCTIONS)


def function(op: str) -> Callable:
    """The Python function serving ``op`` on the FlagGems routes (FlagGems'
    own, or one given to install_functions): to call on CUDA tensors
    directly, e.g. to time FlagGems without torch_fl in between."""
    if op not in _FUNCTIONS:
        why = "does not serve it" if _FUNCTIONS else _UNAVAILABLE
        raise KeyError(f"no FlagGems function serves '{op}' here (FlagGems {why})")
    return _FUNCTIONS[op]


def excluded_ops() -> Dict[str, str]:
    """Ops FlagGems implements that stay on native kernels, with the reason."""
    return dict(_EXCLUDED)


def config_size() -> int:
    return _CONFIG_SIZE


def launcher_enabled() -> bool:
    """Whether the flagos/flaggems routes replay recorded launches."""
    return _C._launcher_enabled()


def set_launcher_enabled(on: bool) -> None:
    """Turns the launcher on or off for the whole process (records kept)."""
    _C._launcher_set_enabled(bool(on))


def launcher_hook_problem() -> str:
    """Why FlagGems' Triton launches cannot be recorded here ("" if they can)."""
    return _LAUNCHER_HOOK


def launcher_stats() -> Dict[str, dict]:
    """Per op: calls replayed without Python ("replayed"), calls recorded
    ("recorded"), calls run in Python without a record ("python"), both of
    those ("ran_python"), first calls run on the vendor's kernel ("vendor"),
    signatures seen ("signatures", and how many replay), how often a full
    signature table was dropped ("flushed"), and the last reason a signature
    could not be replayed."""
    stats = _C._launcher_stats()
    for s in stats.values():
        s["ran_python"] = s["python"] + s["recorded"]
    return stats


def forget_launches(op: str = "") -> None:
    """Drops the recorded signatures of one op, or of every op."""
    _C._launcher_forget(op)
