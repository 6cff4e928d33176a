"""Shared pytest setup for torch_fl's Python tests.

Runs from the source tree: the repository root goes first on sys.path so
``import torch_fl`` finds the package built in place (torch_fl/_C*.so).
On this machine the live vendor is normally "host" (a simulated device in
host memory); on a GPU machine set FLAGOS_VENDOR=cuda.
"""
import os
import subprocess
import sys
import textwrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402
import torch_fl  # noqa: E402,F401  (registers the flagos device)

MARKS = {
    "anyplatform": "runs on every vendor (host, cuda, ...)",
    "cuda": "needs FLAGOS_VENDOR=cuda on a GPU machine",
    "gpu": "needs a GPU",
    "flaggems": "needs FlagGems kernels (flagos/flaggems route)",
    "flaggems_python": "needs FlagGems' Python wrappers (flagos_python route)",
    "slow": "takes more than a few seconds",
}


def pytest_addoption(parser):
    group = parser.getgroup("torch_fl")
    group.addoption("--model", default=None, metavar="PATH",
                    help="local folder with real Qwen3 weights (config.json + *.safetensors) for the "
                         "Qwen3 tests; default: the Qwen3-0.6B architecture with seeded random weights")
    group.addoption("--steps", type=int, default=None, metavar="N",
                    help="training steps of the Qwen3 training tests (default 20; 10 for the small config)")


def pytest_configure(config):
    for name, doc in MARKS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


VENDOR = torch_fl.flagos.vendor()
DEVICE_COUNT = torch_fl.flagos.device_count()

requires_cuda = pytest.mark.skipif(
    VENDOR != "cuda", reason=f"needs FLAGOS_VENDOR=cuda on a GPU machine (live vendor: {VENDOR})"
)
requires_two_devices = pytest.mark.skipif(
    DEVICE_COUNT < 2, reason=f"needs two flagos devices (found {DEVICE_COUNT})"
)
requires_host = pytest.mark.skipif(VENDOR != "host", reason=f"host vendor only (live vendor: {VENDOR})")

# Tolerances per dtype for comparing against a reference computed elsewhere.
TOLERANCES = {
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-7, atol=1e-7),
    torch.complex64: dict(rtol=1e-4, atol=1e-5),
    torch.complex128: dict(rtol=1e-7, atol=1e-7),
}


def tol(dtype):
    """rtol/atol for `dtype` (exact for integers and bool)."""
    return TOLERANCES.get(dtype, dict(rtol=0, atol=0))


def assert_flagos_close(actual, expected, *, exact=False, check_device=True, **kwargs):
    """Compare a flagos tensor with a reference tensor (CPU or CUDA).

    The flagos tensor must really be on flagos; its values are copied to the
    reference's device. Tolerances default to the dtype's (see TOLERANCES).
    """
    assert isinstance(actual, torch.Tensor), type(actual)
    if check_device:
        assert actual.device.type == "flagos", f"expected a flagos tensor, got one on {actual.device}"
    got = actual.detach().to(expected.device)
    if exact:
        kwargs.setdefault("rtol", 0)
        kwargs.setdefault("atol", 0)
    else:
        for k, v in tol(expected.dtype).items():
            kwargs.setdefault(k, v)
    kwargs.setdefault("equal_nan", True)
    torch.testing.assert_close(got, expected, **kwargs)


def run_python(code: str, env_extra=None, timeout=120):
    """Runs `code` in a fresh interpreter that can `import torch_fl` from
    the source tree; returns the CompletedProcess (stdout/stderr as text)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )


# What a tool or benchmark needs to run quickly in a test: FlagGems' Python
# stays unloaded, and host device memory unprotected.
QUICK_TOOL_ENV = {"FLAGOS_DISABLE_FLAGGEMS_PY": "1", "FLAGOS_HOST_PROTECT": "0"}


def _run_repo_script(script: str, args, env_extra, timeout):
    """A repository script (path relative to the root) in a fresh interpreter
    that can import torch_fl from the source tree; the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, script), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO_ROOT)


def run_script(script: str, *args: str, timeout=300) -> str:
    """A repository script run with QUICK_TOOL_ENV; its standard output.
    Fails the test, with the end of its output, if the script fails."""
    proc = _run_repo_script(script, args, QUICK_TOOL_ENV, timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def refused_usage(script: str, *args: str, timeout=300) -> str:
    """The standard error of a repository script given arguments it must
    refuse; fails the test unless it exits with argparse's usage status, 2."""
    proc = _run_repo_script(script, args, {}, timeout)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stderr


def run_clean(name: str, device: str, timeout=600):
    """The result of tests/clean_reference.py's `name` on `device`, computed in
    a fresh interpreter that never imports torch_fl (see that file for why)."""
    import json

    from torch_fl import _clean_process

    out = _clean_process.run(os.path.join(REPO_ROOT, "tests", "clean_reference.py"), [name, device],
                             f"clean reference {name} on {device}", timeout)
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def restore_routing():
    """The test leaves the routing table, the stats switch and the log switch as it found them."""
    from torch_fl import _C, routing

    saved = [tuple(e) for e in _C._routing_entries()]
    yield
    routing.set_log_dispatch(False)
    _C._routing_restore(saved)


@pytest.fixture
def dev():
    return torch.device("flagos:0")


@pytest.fixture
def dev1():
    if DEVICE_COUNT < 2:
        pytest.skip(f"needs two flagos devices (found {DEVICE_COUNT})")
    return torch.device("flagos:1")


@pytest.fixture(autouse=True)
def _restore_device_and_stream():
    """Every test starts on flagos:0 with default streams, and a test that
    changes either cannot leak that into the next one."""
    flagos = torch_fl.flagos
    flagos.set_device(0)
    yield
    for i in range(DEVICE_COUNT):
        flagos.set_stream(flagos.default_stream(i))
    flagos.set_device(0)
