"""Model files: safetensors weights plus a JSON config, never pickle.

One format serves every method (VTAGML and the baselines). A saved model is a folder::

    <dir>/model.safetensors   every weight and buffer (TROA's omega included), plus TROA's history
                              under the ``troa_history.`` prefix
    <dir>/config.json         {"kit_version", "method": registry name, "model": the method's
                              effective ModelConfig as a dict, "meta": {...}}

Loading rebuilds the model through the method registry: that is
:func:`vtagml_core.baselines.factory.load_model`, one layer up, since ``model/`` imports nothing
above itself. A config.json written before methods existed has no "method" and loads as
``"vtagml"``.

Writes are atomic: each file goes to a temporary name in the same folder and is then renamed,
so an interrupted save never leaves a half-written file under the final name. Loading checks
that the file's method, tasks, classes and tensor shapes fit the config, and says what differs.
"""
from __future__ import annotations


import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from vtagml_core import __version__
from vtagml_core.config import ConfigError, from_dict, to_dict

from .troa import TROA
from .vtagml import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HISTORY_PREFIX = "troa_history."
#: Method of a checkpoint whose config.json predates the "method" key.
LEGACY_METHOD = "vtagml"
#: Module path of VTAGML's TROA; its history keeps the short prefix ``troa_history.`` (older
#: files); a TROA elsewhere in a model is saved under ``troa_history.<module path>.``.
MAIN_TROA_PATH = "adapter.troa"
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


def history_prefixes(model: nn.Module) -> dict[str, TROA]:
    """``{key prefix: TROA module}`` for every TROA inside ``model`` (a peer system may have none)."""
    return {HISTORY_PREFIX if path == MAIN_TROA_PATH else f"{HISTORY_PREFIX}{path}.": module
            for path, module in model.named_modules() if isinstance(module, TROA)}


def save_model(model: nn.Module, folder: str | Path, meta: dict | None = None) -> Path:
    """Save ``model`` as ``folder/model.safetensors`` + ``folder/config.json``; returns folder.

    ``model`` is any method of the registry: it has ``config`` (its effective ModelConfig) and
    ``method`` (its registry name; a model without one is saved as ``"vtagml"``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for prefix, troa in history_prefixes(model).items():
        steps, mats = troa.history_tensor()
        tensors[prefix + "steps"] = steps.cpu().contiguous()
        tensors[prefix + "mats"] = mats.cpu().contiguous()
    config = {"kit_version": __version__, "method": getattr(model, "method", LEGACY_METHOD),
              "model": to_dict(model.config), "meta": meta or {}}
    _atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    _atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2)))
    return folder


def read_checkpoint_info(folder: str | Path) -> tuple[str, ModelConfig, dict]:
    """``(method, effective ModelConfig, meta)`` stored in a model folder.

    A config.json without "method" (written before the registry existed) is a VTAGML model.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a folder written by save_model?")
    try:
        data = json.loads(path.read_text())
        method = data.get("method", LEGACY_METHOD)
        if not isinstance(method, str):
            raise ConfigError(f"'method' must be a method name, got {method!r}")
        return method, from_dict(ModelConfig, data["model"], str(path)), data.get("meta", {})
    except (json.JSONDecodeError, KeyError, ConfigError) as err:
        raise ValueError(f"{path} is not a valid model config ({err}); re-save the model") from err


def read_model_config(folder: str | Path) -> tuple[ModelConfig, dict]:
    """The :class:`ModelConfig` and metadata stored in a model folder."""
    _, config, meta = read_checkpoint_info(folder)
    return config, meta


def describe_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
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


def compare_configs(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
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
