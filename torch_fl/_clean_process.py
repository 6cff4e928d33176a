"""Runs a Python script in a fresh interpreter that never imports torch_fl.

Once a PrivateUse1 backend is registered (import torch_fl does it), PyTorch
takes it as the process's one accelerator, and the autograd engine trips its
internal assert `opt_ready_stream && opt_parent_stream` on any backward over
CUDA tensors (pytorch/pytorch#161129). torch CUDA training references
therefore run in such a process (torch_fl.models.qwen3.train_in_clean_process,
tests/clean_reference.py); the script itself must not import torch_fl.
"""
import os
import subprocess
import sys
from typing import List


def run(script: str, args: List[str], what: str, timeout: float) -> str:
    """The script's standard output; RuntimeError naming ``what`` with the
    end of its standard error if it fails."""
    # torch's device-backend autoload would import installed plugins, this one too.
    env = dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD="0")
    proc = subprocess.run([sys.executable, os.path.abspath(script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout
