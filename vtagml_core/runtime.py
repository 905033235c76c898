"""Where and how a run executes: the one seeding function, device resolver and thread policy.

Every layer of the kit (pretraining, the trainer, the settings, the notebooks, the demo) asks
these functions, so "auto" means the same device everywhere, one seed fixes the same
generators everywhere and one variable sets the CPU threads everywhere.

**Threads.** torch uses every core by default. Two torch processes that each use all the cores
of a small machine slow each other far more than twice (OpenMP threads spin while they wait for
each other; measured on 2 cores: a demo forward went from 0.47 s to 1.4-7 s next to a
training). Give each process its share with ``VTAGML_THREADS`` (e.g. ``VTAGML_THREADS=1`` for a
JupyterLab kernel and for the demo on a 2-core laptop); the CLI, the notebooks and the demo
call :func:`configure_threads` when they start.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

#: Environment variable with the number of CPU threads torch may use (module docstring).
THREADS_ENV: str = "VTAGML_THREADS"

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


def configure_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads to ``threads``, else ``$VTAGML_THREADS``, else leave the default.

    Returns:
        The number of threads torch now uses.

    Raises:
        ValueError: when the count (argument or variable) is not a positive integer.
    """
    value: object = threads if threads is not None else os.environ.get(THREADS_ENV)
    if value is None or value == "":
        return torch.get_num_threads()
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ValueError(f"CPU threads must be a positive integer, got {value!r} (from "
                         f"{'the argument' if threads is not None else '$' + THREADS_ENV})")
    torch.set_num_threads(count)
    return count


__all__ = ["THREADS_ENV", "configure_threads", "DEVICE_NAMES", "is_device_name", "resolve_device", "seed_everything"]
