"""The model factory: rebuild a saved model of any method (above the method registry).

:mod:`vtagml_core.model.checkpoint` writes and reads model folders (``config.json`` +
``model.safetensors``) without knowing which methods exist; this module adds what needs the
registry (:mod:`.registry`): building the right architecture for the method a folder names,
then loading its weights into it. Keeping it here lets ``model/`` import nothing above itself.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vtagml_core.model.checkpoint import (MAX_LISTED, build_config, compare_configs,
                                          load_weights_into, read_checkpoint_info)
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
    model = build_model(saved_method, build_config(saved_cfg))
    model.config = saved_cfg
    load_weights_into(model, folder, saved_method, map_location)
    return model.to(map_location)


__all__ = ["load_model"]
