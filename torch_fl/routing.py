"""Per-operator routing: which backend runs each ATen op on flagos tensors.

Order, first match wins:
  1. ``FLAGOS_OP_<name>=<backend>`` ('.' in the op name written as '__');
  2. the file named by ``FLAGOS_BACKEND_CONFIG``, else the packaged default
     for the live vendor (``backends.conf`` for cuda, ``backends_<vendor>.conf``);
  3. built in: FlagGems where it implements the op and can run here, else the
     vendor's native kernel, else the CPU fallback.
Runtime changes (:func:`set_route`, :func:`override`) sit above all three.
"""
import contextlib
import os
from pathlib import Path
from typing import Dict, Iterator, Optional

from . import _C
from . import flaggems as _flaggems

BACKENDS = ("flagos", "flaggems", "flagos_python", "flaggems_python", "cuda", "metax", "ascend", "cpu")
_FLAGGEMS_BACKENDS = ("flagos", "flaggems", "flagos_python", "flaggems_python")
_PACKAGE_DIR = Path(__file__).resolve().parent


def packaged_config(vendor: Optional[str] = None) -> Path:
    vendor = vendor or _C._vendor()
    return _PACKAGE_DIR / ("backends.conf" if vendor == "cuda" else f"backends_{vendor}.conf")


def _strip(op: str) -> str:
    return op[len("aten::"):] if op.startswith("aten::") else op


def _unrunnable_reason(backend: str) -> Optional[str]:
    """Why this machine cannot run `backend`, or None if it can."""
    vendor = _C._vendor()
    if backend in ("cuda", "metax", "ascend") and backend != vendor:
        return f"backend '{backend}' needs the {backend} vendor, but the live vendor is '{vendor}'"
    if backend in _FLAGGEMS_BACKENDS and not _flaggems.available():
        return f"backend '{backend}' needs FlagGems, which {_flaggems.unavailable_reason()}"
    return None


def _check(op: str, backend: str, where: str) -> None:
    if backend not in BACKENDS and backend != "default":
        raise ValueError(f"{where}: unknown backend '{backend}' for op '{op}' (allowed: {', '.join(BACKENDS)})")
    if not _C._op_exists(_strip(op)):
        raise ValueError(f"{where}: unknown op '{op}': no ATen operator has this name")
    reason = _unrunnable_reason(backend) if backend != "default" else None
    if reason:
        raise ValueError(f"{where}: cannot route '{op}': {reason}")
    if backend in _FLAGGEMS_BACKENDS and not _flaggems_serves(_strip(op)):
        raise ValueError(f"{where}: cannot route '{op}' to '{backend}': FlagGems has no function for "
                         f"it here (it serves {len(_flaggems.available_ops())} ops; see "
                         "torch_fl.flaggems.available_ops() and excluded_ops())")


def _flaggems_serves(op: str) -> bool:
    """An exact name FlagGems serves, or a bare name one of whose overloads it serves."""
    ops = _flaggems.available_ops()
    return op in ops or ("." not in op and any(o.split(".", 1)[0] == op for o in ops))


def load(config: Optional[str] = None) -> None:
    """(Re)loads the table: ``config`` or ``FLAGOS_BACKEND_CONFIG`` or the
    packaged default, then ``FLAGOS_OP_*`` variables. Every line is checked;
    an error names the file and line (or the variable) and leaves the
    previous table in place."""
    path = config or os.environ.get("FLAGOS_BACKEND_CONFIG") or ""
    if path and not Path(path).is_file():
        raise ValueError(f"FLAGOS_BACKEND_CONFIG: no such file: {path}")
    if not path:
        default = packaged_config()
        path = str(default) if default.is_file() else ""
    previous = entries()
    _C._routing_load(path, True)
    try:
        for op, backend, origin, line in _C._routing_entries():
            _check(op, backend, f"{origin}:{line}" if line else origin)
    except ValueError:
        _C._routing_restore(previous)
        raise


def route_of(op: str) -> str:
    """The backend that runs ``op`` ("aten::mm", "mm", "add.Tensor") now."""
    return _C._routing_resolve(_strip(op))


def table() -> Dict[str, str]:
    """Explicit entries: op -> backend, from config, environment and API."""
    return {op: backend for op, backend, _, _ in _C._routing_entries()}


def native_backend() -> str:
    """The backend word of the live vendor's own kernels: "cuda" on the
    cuda vendor, "cpu" on the host vendor."""
    return _C._native_backend()


def entries():
    """Explicit entries with where they came from: (op, backend, origin, line)."""
    return list(_C._routing_entries())


def set_route(op: str, backend: str) -> None:
    """Routes ``op`` (bare name = every overload without its own entry) to
    ``backend``; "default" removes the explicit choice. Takes effect at the
    next call of the op. A bad op or backend raises ValueError and changes
    nothing."""
    op = _strip(op)
    _check(op, backend, "set_route")
    _apply(op, backend)


def _apply(op: str, backend: str) -> None:
    if backend == "default":  # no entry: an exact overload then falls back to its bare name
        _C._routing_restore([e for e in _C._routing_entries() if e[0] != op])
    else:
        _C._routing_set(op, backend)


def _keyword_op(name: str) -> str:
    """The op a keyword of override() names: '__' stands for '.', taken at
    the last '__' so that dunder ops work (``__or____Tensor`` is
    ``__or__.Tensor``); a name that is already an op stays as it is."""
    name = _strip(name)
    if "." in name or _C._op_exists(name) or "__" not in name.strip("_"):
        return name
    base, overload = name.rsplit("__", 1)
    candidate = f"{base}.{overload}"
    return candidate if _C._op_exists(candidate) else name.replace("__", ".")


@contextlib.contextmanager
def override(**routes: str) -> Iterator[None]:
    """``with override(mm="cpu", add__Tensor="cuda"):`` ('__' stands for '.').
    On exit the table is as before for these ops, entries' origins included;
    entries of other ops made inside the block stay."""
    with override_ops({_keyword_op(op): backend for op, backend in routes.items()}):
        yield


@contextlib.contextmanager
def override_flaggems_ops(backend: str, *, keep_packaged: bool = False) -> Iterator[None]:
    """Routes every op FlagGems serves here to ``backend`` for the block:
    "cuda" (or the vendor's word) for all-native, "flagos" for all-FlagGems.
    ``keep_packaged=True`` leaves alone the ops that the packaged table for
    this vendor routes elsewhere (FlagGems kernels found wrong or hanging on
    this vendor; see docs/operator-support.md). The speed holds, in a file
    the packaged table includes, are not kept: they are what this measures."""
    ops = _flaggems.available_ops()
    if keep_packaged:
        packaged = str(packaged_config())
        kept = {op for op, _, origin, _ in entries() if origin == packaged}
        # A bare name ("cumsum") covers every overload without a line of its own.
        ops = [op for op in ops if op not in kept and op.split(".", 1)[0] not in kept]
    with override_ops({op: backend for op in ops}):
        yield


PRESETS = ("default", "native", "flaggems")


@contextlib.contextmanager
def preset(name: str) -> Iterator[None]:
    """A whole-table routing for the block, to compare backends:
    "default": the table as loaded; "native": every op FlagGems serves on the
    vendor's own kernels; "flaggems": every op FlagGems serves on FlagGems,
    except those the packaged table for this vendor routes elsewhere because
    FlagGems' kernel was found wrong or hanging there (its speed holds, where
    FlagGems is right but slower, run on FlagGems). Op routes may follow the
    preset's name, each after a '+', as override_ops() takes them:
    "default+_to_copy=cuda" is the table as loaded with casts on CUDA."""
    base, *changes = name.split("+")
    if base not in PRESETS:
        raise ValueError(f"unknown routing preset '{base}'; expected one of {', '.join(PRESETS)}")
    bad = [c for c in changes if c.count("=") != 1]
    if bad:
        raise ValueError(f"routing preset '{name}': '{bad[0]}' is not op=backend")
    with contextlib.ExitStack() as stack:
        if base != "default":
            backend, keep = (native_backend(), False) if base == "native" else ("flagos", True)
            stack.enter_context(override_flaggems_ops(backend, keep_packaged=keep))
        stack.enter_context(override_ops(dict(c.split("=") for c in changes)))
        yield


@contextlib.contextmanager
def override_ops(changes: Dict[str, str]) -> Iterator[None]:
    """override() with op names as keys ("add.Tensor")."""
    changes = {_strip(op): backend for op, backend in changes.items()}
    for op, backend in changes.items():
        _check(op, backend, "override")
    before = {e[0]: tuple(e) for e in _C._routing_entries()}
    try:
        for op, backend in changes.items():
            _apply(op, backend)
        yield
    finally:
        now = [tuple(e) for e in _C._routing_entries()]
        restored = [before[e[0]] if e[0] in changes else e
                    for e in now if e[0] not in changes or e[0] in before]
        present = {e[0] for e in restored}
        restored += [before[op] for op in changes if op in before and op not in present]
        _C._routing_restore(restored)


def stats() -> Dict[str, Dict[str, int]]:
    """Calls per op and backend since import (or reset_stats())."""
    return _C._routing_stats()


def reset_stats() -> None:
    _C._routing_reset_stats()


def unboxed_ops() -> list:
    """Ops whose flagos kernel takes its arguments unboxed: on the native
    and FlagGems routes they skip the boxed routing kernel's argument
    copies. Empty under FLAGOS_UNBOXED_OPS=0."""
    return list(_C._unboxed_ops())


def take_route_clock() -> Dict[str, int]:
    """What routing itself cost since the last call (which restarts the
    count): routed calls, their host time less the vendor kernels' calls
    (or FlagGems launches) inside them ("route_ns"), and those calls' host
    time ("vendor_ns"), and how many flagos tensors they aliased as the
    vendor's own tensors ("aliases"). Needs FLAGOS_ROUTE_CLOCK=1 when
    torch_fl loads."""
    if not _C._route_clock_enabled():
        raise RuntimeError("torch_fl.routing.take_route_clock(): the route clock is off; "
                           "set FLAGOS_ROUTE_CLOCK=1 before importing torch_fl")
    calls, route_ns, vendor_ns, aliases = _C._take_route_clock()
    return {"calls": calls, "route_ns": route_ns, "vendor_ns": vendor_ns, "aliases": aliases}


def set_log_dispatch(enabled: bool) -> None:
    """Same as FLAGOS_LOG_DISPATCH=1: one '[flagos dispatch] op -> backend' line per call."""
    _C._set_log_dispatch(bool(enabled))


def ops_on_flaggems() -> list:
    """Ops FlagGems implements here whose live route is a FlagGems backend."""
    return sorted(op for op in _flaggems.available_ops() if route_of(op) in _FLAGGEMS_BACKENDS)
