"""Model files: safetensors weights plus a JSON config, never pickle (DESIGN.md section 8).

One format serves every method of :mod:`vtagml_core.baselines.registry` (VTAGML and the
baselines). A saved model is a folder::

    <dir>/model.safetensors   every weight and buffer (TROA's omega included), plus TROA's history
                              under the ``troa_history.`` prefix
    <dir>/config.json         {"kit_version", "method": registry name, "model": the method's
                              effective ModelConfig as a dict, "meta": {...}}

Loading rebuilds the model through the registry, ``build_model(method, config)``; a config.json
written before methods existed has no "method" and loads as ``"vtagml"``.

Writes are atomic: each file goes to a temporary name in the same folder and is then renamed,
so an interrupted save never leaves a half-written file under the final name. Loading checks
that the file's method, tasks, classes and tensor shapes fit the config, and says what differs.
"""
from __future__ import annotations

import copy

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vtagml_core import __version__
from vtagml_core.baselines.registry import build_model, effective_config, method_names
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


def _history_prefixes(model: nn.Module) -> dict[str, TROA]:
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
    for prefix, troa in _history_prefixes(model).items():
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


def load_model(folder: str | Path, config: ModelConfig | None = None, method: str | None = None,
               map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model of any method through the registry.

    Args:
        folder: written by :func:`save_model`.
        config: if given, the checkpoint must have been made with it: it is compared with the
            stored config after the method's transformation (so the kit config that trained a
            ``vanilla_mtl`` model loads it, although that model's own config has no adapters).
        method: if given, the checkpoint must hold this method.
        map_location: device of the returned model.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: the method or config differs from the checkpoint's (tasks, classes,
            architecture: names the fields), the weights do not fit the model (names the keys),
            or the file is corrupt or truncated.
    """
    folder = Path(folder)
    saved_method, saved_cfg, _ = read_checkpoint_info(folder)
    if saved_method not in method_names():
        raise ValueError(f"checkpoint {folder} holds a model of method {saved_method!r}, which this "
                         f"kit does not know; known methods: {', '.join(method_names())}")
    if method is not None and method != saved_method:
        known = "" if method in method_names() else f" (known methods: {', '.join(method_names())})"
        raise ValueError(f"checkpoint {folder} holds a {saved_method!r} model, not {method!r}{known}")
    if config is not None:
        diffs = _compare_configs(saved_cfg, effective_config(saved_method, config))
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
    # The file holds every backbone weight, so build the backbone without fetching timm's hub
    # weights or reading the local weights file it was trained from (either may be missing on
    # this machine); the stored config is kept on the model as it was.
    build_cfg = copy.deepcopy(saved_cfg)
    build_cfg.backbone.pretrained, build_cfg.backbone.weights = False, None
    model = build_model(saved_method, build_cfg)
    model.config = saved_cfg
    histories = {prefix: (tensors.pop(prefix + "steps", None), tensors.pop(prefix + "mats", None))
                 for prefix in _history_prefixes(model)}
    expected = model.state_dict()
    problems = _describe_mismatch(expected, tensors)
    if problems:
        raise ValueError(f"{weights} does not fit {saved_method!r} model tasks {model.tasks} with "
                         f"{model.num_classes} classes: " + "; ".join(problems))
    model.load_state_dict(tensors)
    troas = _history_prefixes(model)
    for prefix, (steps, mats) in histories.items():
        if steps is not None and mats is not None and steps.numel():
            troas[prefix].load_history(steps, mats)
    return model.to(map_location)
