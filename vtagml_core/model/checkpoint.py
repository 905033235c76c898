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


import copy
import hashlib
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
from vtagml_core.config import ConfigError, from_dict, to_dict

from .troa import TROA
from .config import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HISTORY_PREFIX = "troa_history."
#: Content-addressed frozen backbones of a run store: ``<store>/backbones/<sha256>.safetensors``,
#: named in a model folder's config.json under ``backbone_blob``.
BLOBS_DIR, BLOB_SUFFIX, BLOB_KEY = "backbones", ".safetensors", "backbone_blob"
#: Key prefix of the backbone in every kit model's state dict.
FROZEN_PREFIX: str = "backbone."
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


def frozen_backbone_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the frozen backbone: ``backbone.*`` tensors that never train.

    Goes by ``requires_grad``, not by a flag: inside a frozen backbone a LoRA factor or a per-task
    norm trains and is not among them. Empty when every backbone weight trains (the fine-tuned
    MTL Swin) or the model has no backbone.
    """
    params = dict(model.named_parameters())
    backbone = [p for name, p in params.items() if name.startswith(FROZEN_PREFIX)]
    if not backbone or all(p.requires_grad for p in backbone):
        return set()
    trainable = {name for name, p in params.items() if p.requires_grad}
    return {k for k in model.state_dict() if k.startswith(FROZEN_PREFIX) and k not in trainable}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_backbone_blob(tensors: dict[str, torch.Tensor], blobs: str | Path) -> str:
    """Store frozen backbone weights once, content-addressed: ``<blobs>/<sha256>.safetensors``.

    Returns the digest; a blob that exists already is not written again (every run on the same
    frozen backbone points to the same file).
    """
    blobs = Path(blobs)
    digest = tensors_digest(tensors)
    path = blobs / f"{digest}{BLOB_SUFFIX}"
    if not path.is_file():
        blobs.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p)))
    return digest


def find_backbone_blob(folder: str | Path, digest: str) -> Path:
    """The blob of a model folder saved with ``backbone_store``: ``backbones/`` next to the run
    (``<store>/<run>/best`` -> ``<store>/backbones``) or next to the folder.

    Raises:
        FileNotFoundError: the blob is in neither place (names both and what to do).
    """
    folder = Path(folder).resolve()
    places = [folder.parent.parent / BLOBS_DIR, folder.parent / BLOBS_DIR]
    for place in places:
        path = place / f"{digest}{BLOB_SUFFIX}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{folder} keeps its frozen backbone in the run store's {BLOBS_DIR}/{digest[:12]}...; it is "
        f"not in {places[0]} or {places[1]}. Move run folders with `python -m vtagml_core runs "
        "export/import` (which carry the backbone), or save a self-contained copy with "
        "model.save_pretrained(...)")


def save_model(model: nn.Module, folder: str | Path, meta: dict | None = None,
               backbone_store: str | Path | None = None) -> Path:
    """Save ``model`` as ``folder/model.safetensors`` + ``folder/config.json``; returns folder.

    ``model`` is any method of the registry: it has ``config`` (its effective ModelConfig) and
    ``method`` (its registry name; a model without one is saved as ``"vtagml"``).

    With ``backbone_store`` (a run store's ``backbones/`` folder) the frozen backbone's weights
    are written there once, content-addressed (:func:`write_backbone_blob`), and the folder
    keeps only what was trained; ``config.json`` names the blob (``"backbone_blob"``) and
    loading merges it back. Without it the folder is self-contained.
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
    frozen = frozen_backbone_keys(model) if backbone_store is not None else set()
    if frozen:
        config[BLOB_KEY] = write_backbone_blob({k: tensors.pop(k) for k in frozen}, backbone_store)
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


#: Config fields that say where weights were read from, not what the model is: the backbone's
#: tensors travel inside the checkpoint's own weights file, and a run store moved to another
#: machine or cache (``runs export`` / ``import``) has them at another path. The run store keys
#: runs by the weights file's content (SHA-256), so compare_configs leaves these out.
WEIGHT_LOCATORS: tuple[tuple[str, str], ...] = (("backbone", "weights"),)


def compare_configs(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
    """The fields in which two model configs differ, as ``"field: checkpoint x vs config y"``
    lines (empty: the same model); :data:`WEIGHT_LOCATORS` are not compared."""
    diffs = []
    a, b = to_dict(saved), to_dict(wanted)
    for tree in (a, b):
        for section, field in WEIGHT_LOCATORS:
            tree.get(section, {}).pop(field, None)

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{where}.{k}" if where else k)
        elif x != y:
            diffs.append(f"{where}: checkpoint {x!r} vs config {y!r}")

    walk(a, b, "")
    return diffs


def build_config(saved: ModelConfig) -> ModelConfig:
    """The config to build a saved model's architecture with.

    The weights file holds every backbone weight, so the backbone is built without fetching
    timm's hub weights or reading the local weights file it was trained from (either may be
    missing on this machine); the stored config stays on the model as it was.
    """
    cfg = copy.deepcopy(saved)
    cfg.backbone.pretrained, cfg.backbone.weights = False, None
    return cfg


def load_weights_into(model: nn.Module, folder: str | Path, method: str,
                      map_location: str | torch.device = "cpu") -> nn.Module:
    """Load ``<folder>/model.safetensors`` into a model built for it (TROA histories too).

    Raises:
        FileNotFoundError: no weights file.
        ValueError: corrupt or truncated file, or weights that do not fit the model (names
            the missing, unexpected and mis-shaped keys).
    """
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found; the checkpoint folder is incomplete")
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{weights} is corrupt or truncated ({err}); it was not loaded") from err
    digest = json.loads((Path(folder) / CONFIG_FILE).read_text()).get(BLOB_KEY)
    if digest:  # the frozen backbone lives once in the run store (save_model's backbone_store)
        blob = find_backbone_blob(folder, digest)
        try:
            tensors.update(load_file(str(blob), device=str(map_location)))
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"{blob} is corrupt or truncated ({err}); it was not loaded") from err
    histories = {prefix: (tensors.pop(prefix + "steps", None), tensors.pop(prefix + "mats", None))
                 for prefix in history_prefixes(model)}
    problems = describe_mismatch(model.state_dict(), tensors)
    if problems:
        raise ValueError(f"{weights} does not fit {method!r} model tasks {model.tasks} with "
                         f"{model.num_classes} classes: " + "; ".join(problems))
    model.load_state_dict(tensors)
    troas = history_prefixes(model)
    for prefix, (steps, mats) in histories.items():
        if steps is not None and mats is not None and steps.numel():
            troas[prefix].load_history(steps, mats)
    return model.to(map_location)
