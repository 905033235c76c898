"""Model files: safetensors weights plus a JSON config, never pickle (DESIGN.md section 8).

A saved model is a folder::

    <dir>/model.safetensors   every weight and buffer (TROA's omega included), plus TROA's history
                              under the ``troa_history.`` prefix
    <dir>/config.json         {"kit_version", "model": ModelConfig as a dict, "meta": {...}}

Writes are atomic: each file goes to a temporary name in the same folder and is then renamed,
so an interrupted save never leaves a half-written file under the final name. Loading checks
that the file's tasks, classes and tensor shapes fit the config, and says what differs.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vtagml_core import __version__
from vtagml_core.config import ConfigError, from_dict, to_dict

from .vtagml import VTAGML, ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HISTORY_PREFIX = "troa_history."
#: How many differing keys an error message lists before "...".
MAX_LISTED = 8


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: VTAGML, folder: str | Path, meta: dict | None = None) -> Path:
    """Save ``model`` as ``folder/model.safetensors`` + ``folder/config.json``; returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    steps, mats = model.adapter.troa.history_tensor()
    tensors[HISTORY_PREFIX + "steps"] = steps.cpu().contiguous()
    tensors[HISTORY_PREFIX + "mats"] = mats.cpu().contiguous()
    config = {"kit_version": __version__, "model": to_dict(model.config), "meta": meta or {}}
    _atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    _atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2)))
    return folder


def read_model_config(folder: str | Path) -> tuple[ModelConfig, dict]:
    """The :class:`ModelConfig` and metadata stored in a model folder."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a folder written by save_model?")
    try:
        data = json.loads(path.read_text())
        return from_dict(ModelConfig, data["model"], str(path)), data.get("meta", {})
    except (json.JSONDecodeError, KeyError, ConfigError) as err:
        raise ValueError(f"{path} is not a valid model config ({err}); re-save the model") from err


def _describe_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(found)) if found[k].shape != expected[k].shape]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = " ..." if len(items) > MAX_LISTED else ""
            problems.append(f"{title}: {', '.join(items[:MAX_LISTED])}{more}")
    return problems


def _compare_configs(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
    diffs = []
    a, b = to_dict(saved), to_dict(wanted)

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{where}.{k}" if where else k)
        elif x != y:
            diffs.append(f"{where}: checkpoint {x!r} vs config {y!r}")

    walk(a, b, "")
    return diffs


def load_model(folder: str | Path, config: ModelConfig | None = None,
               map_location: str | torch.device = "cpu") -> VTAGML:
    """Rebuild a saved model. With ``config``, the checkpoint must have been made with it.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: the config differs from the checkpoint's (tasks, classes, architecture), the
            weights do not fit the model (names the keys), or the file is corrupt or truncated.
    """
    folder = Path(folder)
    saved_cfg, _ = read_model_config(folder)
    if config is not None:
        diffs = _compare_configs(saved_cfg, config)
        if diffs:
            raise ValueError(f"checkpoint {folder} was made with another model config: "
                             + "; ".join(diffs[:MAX_LISTED]))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found; the checkpoint folder is incomplete")
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{weights} is corrupt or truncated ({err}); it was not loaded") from err
    steps = tensors.pop(HISTORY_PREFIX + "steps", None)
    mats = tensors.pop(HISTORY_PREFIX + "mats", None)
    model = VTAGML(saved_cfg if config is None else config)
    expected = model.state_dict()
    problems = _describe_mismatch(expected, tensors)
    if problems:
        raise ValueError(f"{weights} does not fit model tasks {model.tasks} with "
                         f"{model.num_classes} classes: " + "; ".join(problems))
    model.load_state_dict(tensors)
    if steps is not None and mats is not None and steps.numel():
        model.adapter.troa.load_history(steps, mats)
    return model.to(map_location)
