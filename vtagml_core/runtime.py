"""Where and how a run executes: the one seeding function and the one device resolver.

Every layer of the kit (pretraining, the trainer, the settings, the notebooks, the demo) asks
these two functions, so "auto" means the same device everywhere and one seed fixes the same
generators everywhere.
"""
from __future__ import annotations

import random

import numpy as np
import torch

#: Device names accepted besides ``cuda:N``.
DEVICE_NAMES: tuple[str, ...] = ("auto", "cpu", "cuda")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def is_device_name(name: object) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    return isinstance(name, str) and (name in DEVICE_NAMES or
                                      (name.startswith("cuda:") and name[5:].isdigit()))


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> the current CUDA device when visible, else CPU.

    ``"cuda"`` resolves to the current CUDA device *with* its index, so it compares equal to
    the device tensors report (``cuda:0``); ``"cuda:N"`` is taken as given.

    Raises:
        ValueError: an unknown name, or a CUDA device asked for where none is visible.
    """
    if not is_device_name(name):
        raise ValueError(f"device must be one of {', '.join(DEVICE_NAMES)} or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA device is visible; "
                         "use auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


__all__ = ["DEVICE_NAMES", "is_device_name", "resolve_device", "seed_everything"]
