"""torch_fl: the ``flagos`` device for PyTorch.

``import torch_fl`` registers the device (PyTorch's PrivateUse1 slot under the
name ``flagos``), its operators and the ``torch.flagos`` module, then loads the
per-operator routing table (see :mod:`torch_fl.routing`).
"""
import torch

from . import _C

torch.utils.rename_privateuse1_backend("flagos")

from . import flagos  # noqa: E402  (needs the rename above)

torch._register_device_module("flagos", flagos)
torch.utils.generate_methods_for_privateuse1_backend(
    for_tensor=True, for_module=True, for_packed_sequence=True, for_storage=True
)

_VENDOR = _C._init()
# Ops that PyTorch would run on flagos as composites (structured add.Tensor
# -> add.out, ...) although the vendor has a direct kernel: route them, so
# the native route calls that kernel at once. Also composites that refuse
# every device but CPU, CUDA and XPU by name ("mode only supports CPU, CUDA
# and XPU device type"): routed, they run on the vendor's device, where the
# same composite accepts the aliases.
_C._claim_ops(_C._composite_ops_with_native_kernels() + ["mode.values"])

from . import routing  # noqa: E402
from . import flaggems as _flaggems  # noqa: E402

_flaggems.setup()
routing.load()

__version__ = "0.1.0"


def is_flaggems_enabled() -> bool:
    """True when at least one op is live on a FlagGems backend right now."""
    return bool(get_registered_ops())


def get_registered_ops() -> list:
    """Ops whose live route is a FlagGems backend (flagos, flaggems, flagos_python)."""
    return routing.ops_on_flaggems()


__all__ = ["flagos", "routing", "is_flaggems_enabled", "get_registered_ops"]
