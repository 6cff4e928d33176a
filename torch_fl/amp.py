"""Autocast support for flagos (``torch.flagos.amp``).

``torch.autocast("flagos", dtype=torch.float16 | torch.bfloat16)`` applies the
same op policy as CUDA's autocast: the policy kernels are registered on the
AutocastPrivateUse1 key by ``csrc/amp/Autocast.cpp`` (mm/linear/conv/sdpa in
the lower precision; exp/log/norms/losses/softmax in float32; addcmul/dot/
index_put... promoted to the widest input type). ``torch.amp.GradScaler("flagos")``
runs its inf checks and unscaling on flagos (``_amp_foreach_non_finite_check_and_unscale_``
and ``_amp_update_scale_`` go through the routing kernel).
"""
import torch


def get_amp_supported_dtype():
    """The dtypes autocast may lower to on flagos."""
    return [torch.float16, torch.bfloat16]


def is_autocast_available() -> bool:
    return True


class autocast(torch.amp.autocast):
    """``torch.flagos.amp.autocast(dtype=...)``: torch.autocast on flagos."""

    def __init__(self, enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True):
        super().__init__("flagos", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)


def GradScaler(*args, **kwargs):  # noqa: N802  (mirrors torch.cuda.amp.GradScaler)
    """``torch.amp.GradScaler("flagos", ...)``."""
    return torch.amp.GradScaler("flagos", *args, **kwargs)
