"""The model factory: rebuild a saved model of any method (above the method registry).

:mod:`vtagml_core.model.checkpoint` writes and reads model folders (``config.json`` +
``model.safetensors``) without knowing which methods exist; this module adds what needs the
registry (:mod:`.registry`): building the right architecture for the method a folder names,
then loading its weights into it. Keeping it here lets ``model/`` import nothing above itself.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vtagml_core.model.checkpoint import (MAX_LISTED, WEIGHTS_FILE, compare_configs,
                                          describe_mismatch, history_prefixes,
                                          read_checkpoint_info)
from vtagml_core.model.vtagml import ModelConfig

from .registry import build_model, effective_config, method_names


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
        diffs = compare_configs(saved_cfg, effective_config(saved_method, config))
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
                 for prefix in history_prefixes(model)}
    expected = model.state_dict()
    problems = describe_mismatch(expected, tensors)
    if problems:
        raise ValueError(f"{weights} does not fit {saved_method!r} model tasks {model.tasks} with "
                         f"{model.num_classes} classes: " + "; ".join(problems))
    model.load_state_dict(tensors)
    troas = history_prefixes(model)
    for prefix, (steps, mats) in histories.items():
        if steps is not None and mats is not None and steps.numel():
            troas[prefix].load_history(steps, mats)
    return model.to(map_location)


__all__ = ["load_model"]
