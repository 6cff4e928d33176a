"""Autocast support for flagos: the dtypes autocast may lower to."""
import torch


def get_amp_supported_dtype():
    return [torch.float16, torch.bfloat16]


def is_autocast_available() -> bool:
    return True
