"""FlagGems integration: which ops FlagGems serves here, and the route that
runs its kernels on flagos memory. Filled in by the routing work; without
FlagGems every op stays on the vendor's native kernels."""

_AVAILABLE_OPS: list = []


def setup() -> None:
    """Finds FlagGems and registers what it can run on this machine."""
    return None


def available() -> bool:
    return bool(_AVAILABLE_OPS)


def unavailable_reason() -> str:
    return "is not installed or cannot run on this machine"


def available_ops() -> list:
    return list(_AVAILABLE_OPS)
