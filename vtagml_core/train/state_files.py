"""The files of a run's training state: names, atomic writes and checked reads (:mod:`.state`).

Files are written to a temporary name in the same folder and renamed (``os.replace``), so a
crash never leaves a half-written file under the final name. They are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers
(no pickled code). A file that cannot be read raises :class:`CheckpointError` naming it and
saying what to do; the trainer never deletes or overwrites such a file by itself
(:func:`~vtagml_core.train.run_folder.open_run_folder` checks a run folder before anything is
trained).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE

#: File name of the training state inside a run folder, and of the generation before it (kept
#: as a fallback: a state found corrupt on resume falls back to the previous one).
STATE_FILE: str = "state.pt"
PREVIOUS_STATE_FILE: str = "state.prev.pt"
#: Temporary files of an interrupted atomic write (``.<name>.<random>.tmp``).
TEMP_PATTERN: str = ".*.tmp"
#: Sub-folders of a run with the last and the best model (safetensors + JSON config).
LAST_DIR, BEST_DIR = "last", "best"
#: The run's resolved config and its final results.
RUN_CONFIG_FILE, RESULTS_FILE = "config.json", "results.json"
#: Format version written into every state; a different version is refused on resume.
STATE_VERSION: int = 1
#: Files every saved model folder must have (see :mod:`vtagml_core.model.checkpoint`).
MODEL_FOLDER_FILES: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or does not fit the run."""


def _advice(path: Path) -> str:
    """What to do when ``path`` of a run cannot be used: advice that works when followed."""
    run = path.parent if path.parent.name not in (LAST_DIR, BEST_DIR) else path.parent.parent
    return (f"The run in {run} cannot continue from it: delete the folder {run} to train the run "
            "again from the start (or restore it from a copy you have), or train into another --out")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_training_state(state: dict, out_dir: str | Path) -> Path:
    """Write ``state.pt`` atomically, keeping the one it replaces as ``state.prev.pt``.

    A kill at any moment leaves a readable state: the old ``state.pt`` until the new one is
    complete, then the previous generation under :data:`PREVIOUS_STATE_FILE` if the kill came
    between the two renames.
    """
    out_dir = Path(out_dir)
    path = out_dir / STATE_FILE
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{STATE_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        if path.exists():
            os.replace(path, out_dir / PREVIOUS_STATE_FILE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_training_state(path: str | Path) -> dict:
    """Read a ``state.pt`` written by :func:`atomic_torch_save` (``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable (corrupt/truncated), not a training state, or of
            another format version; the message names the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found: there is no training state to resume. "
                              f"{_advice(path)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt zip files
        raise CheckpointError(f"{path} is corrupt or truncated ({type(err).__name__}: {err}); "
                              f"it was not loaded. {_advice(path)}") from err
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a training state of format version {STATE_VERSION} "
                              f"(found {found!r}). {_advice(path)}")
    return state


def check_model_folder(folder: str | Path) -> None:
    """Refuse a model folder whose ``config.json`` or ``model.safetensors`` cannot be read.

    Reads every tensor, so a truncated safetensors file is caught here, before a run that would
    later overwrite the folder starts.
    """
    folder = Path(folder)
    for name in MODEL_FOLDER_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name} is missing; the model folder is incomplete. "
                                  f"{_advice(folder)}")
    config = folder / MODEL_FOLDER_FILES[0]
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config} is corrupt or truncated ({err}). {_advice(config)}") from err
    weights = folder / MODEL_FOLDER_FILES[1]
    try:
        load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{weights} is corrupt or truncated ({err}). {_advice(weights)}") from err


__all__ = ["BEST_DIR", "LAST_DIR", "MODEL_FOLDER_FILES", "PREVIOUS_STATE_FILE", "RESULTS_FILE",
           "RUN_CONFIG_FILE", "STATE_FILE", "STATE_VERSION", "TEMP_PATTERN", "CheckpointError",
           "atomic_torch_save", "atomic_write_text", "check_model_folder", "load_training_state",
           "save_training_state"]
