"""``torch.flagos``: the device module, with the names ``torch.cuda`` uses so
that code written for CUDA (DDP, FSDP, DataLoader, torch.accelerator, user
scripts) finds what it looks for."""
import contextlib
import os
from typing import Any, Dict, Optional, Union

import torch

from . import _C
from ._memory import (  # noqa: F401
    empty_cache,
    max_memory_allocated,
    max_memory_reserved,
    mem_get_info,
    memory_allocated,
    memory_reserved,
    memory_stats,
    memory_summary,
    reset_accumulated_memory_stats,
    reset_max_memory_allocated,
    reset_peak_memory_stats,
)
from . import amp  # noqa: F401

_DeviceLike = Union[torch.device, str, int, None]


def _device_index(device: _DeviceLike = None, optional: bool = True) -> int:
    """Index of a flagos device given as None/int/str/torch.device."""
    if device is None:
        return current_device()
    if isinstance(device, int):
        index = device
    else:
        device = torch.device(device)
        if device.type != "flagos":
            raise ValueError(f"expected a flagos device, got {device}")
        index = current_device() if device.index is None else device.index
    count = device_count()
    if not 0 <= index < count:
        raise IndexError(
            f"flagos: device index {index} is out of range: flagos has {count} "
            f"device{'s' if count != 1 else ''} (vendor {vendor()})"
        )
    return index


def vendor() -> str:
    """Which vendor runtime serves flagos: 'host', 'cuda', ..."""
    return _C._vendor()


def is_available() -> bool:
    return device_count() > 0


def is_initialized() -> bool:
    return True


def init() -> None:
    _C._init()


def _lazy_init() -> None:
    _C._init()


# The runtime (CUDA's context, the host vendor's stream threads) does not
# survive fork(); like torch.cuda, a forked child is "in a bad fork" and
# torch.manual_seed (which a DataLoader worker calls) leaves flagos alone there.
_in_bad_fork = False


def _mark_bad_fork() -> None:
    global _in_bad_fork
    _in_bad_fork = True


os.register_at_fork(after_in_child=_mark_bad_fork)


def _is_in_bad_fork() -> bool:
    return _in_bad_fork


def device_count() -> int:
    return _C._device_count()


def current_device() -> int:
    return _C._get_device()


def set_device(device: _DeviceLike) -> None:
    _C._set_device(_device_index(device))


def synchronize(device: _DeviceLike = None) -> None:
    _C._synchronize(_device_index(device))


def get_device_properties(device: _DeviceLike = None):
    props = _C._get_device_properties(_device_index(device))
    return _DeviceProperties(**props)


class _DeviceProperties:
    def __init__(self, name, total_memory, multi_processor_count, major, minor):
        self.name = name
        self.total_memory = total_memory
        self.multi_processor_count = multi_processor_count
        self.major = major
        self.minor = minor

    def __repr__(self):
        return (
            f"_FlagosDeviceProperties(name='{self.name}', major={self.major}, minor={self.minor}, "
            f"total_memory={self.total_memory // (1024 * 1024)}MB, "
            f"multi_processor_count={self.multi_processor_count})"
        )


def get_device_name(device: _DeviceLike = None) -> str:
    return get_device_properties(device).name


def get_device_capability(device: _DeviceLike = None):
    props = get_device_properties(device)
    return props.major, props.minor


class device:
    """Context manager that makes a flagos device current, and restores the
    previous one on exit (also when the body raises)."""

    def __init__(self, device: _DeviceLike):
        self.idx = -1 if device is None else _device_index(device)
        self.prev_idx = -1

    def __enter__(self):
        self.prev_idx = current_device()
        if self.idx >= 0 and self.idx != self.prev_idx:
            set_device(self.idx)
        return self

    def __exit__(self, *exc):
        if self.idx >= 0 and self.idx != self.prev_idx:
            set_device(self.prev_idx)
        return False


class device_of(device):
    def __init__(self, obj):
        super().__init__(obj.get_device() if obj.device.type == "flagos" else None)


# ----------------------------------------------------------------- streams

class Stream(torch.Stream):
    """A flagos stream (on the cuda vendor, a CUDA stream of the same device)."""

    def __new__(cls, device: _DeviceLike = None, priority: int = 0, **kwargs):
        if {"stream_id", "device_index", "device_type"} <= kwargs.keys():
            return super().__new__(cls, **kwargs)
        index = _device_index(device)
        return super().__new__(cls, device=torch.device("flagos", index), priority=priority)

    def wait_stream(self, stream) -> None:
        self.wait_event(stream.record_event())

    def __repr__(self):
        return f"<torch_fl.flagos.Stream device=flagos:{self.device_index} stream_id={self.stream_id}>"


class _EventMeta(type(torch.Event)):
    def __instancecheck__(cls, obj):
        return isinstance(obj, torch.Event) and obj.device.type == "flagos"


class Event(torch.Event, metaclass=_EventMeta):
    """A flagos event; timing is off unless enable_timing=True, as in CUDA.

    Constructing one returns a plain ``torch.Event`` on the current flagos
    device: torch's ``Event.elapsed_time`` accepts only an exact
    ``torch.Event`` as its argument, so a subclass instance could not be an
    end event. ``isinstance(e, torch.flagos.Event)`` holds for every
    ``torch.Event`` of a flagos device."""

    def __new__(cls, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        return torch.Event(
            device=torch.device("flagos", current_device()), enable_timing=enable_timing,
            blocking=blocking, interprocess=interprocess,
        )


def _wrap_stream(triple) -> Stream:
    stream_id, device_index, device_type = triple
    return Stream(stream_id=stream_id, device_index=device_index, device_type=device_type)


def current_stream(device: _DeviceLike = None) -> Stream:
    return _wrap_stream(_C._current_stream(_device_index(device)))


def default_stream(device: _DeviceLike = None) -> Stream:
    return _wrap_stream(_C._default_stream(_device_index(device)))


def set_stream(stream: torch.Stream) -> None:
    if stream is None:
        return
    _C._set_stream(stream.stream_id, stream.device_index)


@contextlib.contextmanager
def stream(stream: Optional[torch.Stream]):
    """Makes ``stream`` current on its device (and that device current) for
    the body; restores both afterwards."""
    if stream is None:
        yield
        return
    with device(stream.device_index):
        previous = current_stream(stream.device_index)
        set_stream(stream)
        try:
            yield
        finally:
            set_stream(previous)


class StreamContext:
    def __init__(self, stream):
        self._ctx = globals()["stream"](stream)

    def __enter__(self):
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -------------------------------------------------------------------- RNG

def default_generators_for(index: int) -> torch.Generator:
    return _C._default_generator(index)


class _DefaultGenerators:
    def __getitem__(self, index: int) -> torch.Generator:
        return _C._default_generator(_device_index(index))

    def __len__(self) -> int:
        return device_count()

    def __iter__(self):
        return (self[i] for i in range(len(self)))


default_generators = _DefaultGenerators()


def manual_seed(seed: int) -> None:
    """Seeds the current flagos device's generator; every route draws from it."""
    default_generators[current_device()].manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    for gen in default_generators:
        gen.manual_seed(int(seed))


def seed() -> None:
    default_generators[current_device()].seed()


def seed_all() -> None:
    for gen in default_generators:
        gen.seed()


def initial_seed() -> int:
    return default_generators[current_device()].initial_seed()


def get_rng_state(device: _DeviceLike = None) -> torch.Tensor:
    return default_generators[_device_index(device)].get_state()


def set_rng_state(new_state: torch.Tensor, device: _DeviceLike = None) -> None:
    default_generators[_device_index(device)].set_state(new_state)


def get_rng_state_all() -> list:
    return [gen.get_state() for gen in default_generators]


def set_rng_state_all(new_states) -> None:
    for gen, state in zip(default_generators, new_states):
        gen.set_state(state)


# ---------------------------------------------------------------- dtypes

def is_bf16_supported(including_emulation: bool = True) -> bool:
    return True


def get_amp_supported_dtype():
    return amp.get_amp_supported_dtype()
