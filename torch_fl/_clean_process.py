"""Runs a Python script in a fresh interpreter that never imports torch_fl.

Once a PrivateUse1 backend is registered (import torch_fl does it), PyTorch
takes it as the process's one accelerator, and the autograd engine trips its
internal assert `opt_ready_stream && opt_parent_stream` on any backward over
CUDA tensors (pytorch/pytorch#161129). torch CUDA training references
therefore run in such a process (torch_fl.models.qwen3.train_in_clean_process,
tests/clean_reference.py); the script itself must not import torch_fl. (A
flagos training worker, qwen3.TrainingWorker on flagos, starts the same way
so that every benchmark target starts alike, and imports torch_fl itself.)
"""
import os
import select
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional


# The folder that holds this torch_fl package: on the child's path, so that
# a script that imports torch_fl itself gets this copy (a script runs with
# its own folder first on the path, not the package's parent). Importing is
# still the script's choice.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(extra: Optional[Dict[str, str]] = None) -> dict:
    # torch's device-backend autoload would import installed plugins, this one too.
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD="0",
               PYTHONPATH=_PACKAGE_PARENT + (os.pathsep + path if path else ""))
    env.update(extra or {})
    return env


def run(script: str, args: List[str], what: str, timeout: float, env: Optional[Dict[str, str]] = None) -> str:
    """The script's standard output; RuntimeError naming ``what`` with the
    end of its standard error if it fails. ``env``: variables to set for it."""
    proc = subprocess.run([sys.executable, os.path.abspath(script), *args], env=_env(env), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def start(script: str, args: List[str]) -> subprocess.Popen:
    """The script running, its standard input and output as text pipes
    (standard error to a file that read_line() reports from)."""
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, os.path.abspath(script), *args], env=_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
    proc.error_file = err
    return proc


def read_line(proc: subprocess.Popen, what: str, timeout: float) -> str:
    """The next line the process prints; RuntimeError naming ``what`` with
    the end of its standard error if it exits or stays silent ``timeout``
    seconds (then it is killed)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if line:
        return line.strip()
    if not ready:
        proc.kill()
    proc.wait()
    proc.error_file.seek(0)
    cause = f"exit {proc.returncode}" if ready else f"no reply in {timeout:.0f} s"
    raise RuntimeError(f"{what} failed ({cause}):\n{proc.error_file.read()[-3000:]}")
