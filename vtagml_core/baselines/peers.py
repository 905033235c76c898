"""The peer systems of docs/settings.md, "The methods" by name, for :mod:`vtagml_core.baselines.registry`.

``PEER_BUILDERS[name](model_config)`` builds the method with the kit's shared
:class:`~vtagml_core.model.vtagml.ModelConfig` (tasks, classes, backbone; frozen or not) and
the method's own defaults; ``PEER_CONFIGS[name]`` is the dataclass of those method settings.
A model config that has a field named like the method (e.g. ``model.mtformer``) of that type
overrides the defaults.

Every model shares VTAGML's interface (see the registry's docstring). Two optional hooks carry
method-specific losses, so the trainer never special-cases a method by name:

- ``extra_losses(outputs, batch) -> {name: tensor}``: terms added to the total (MTFormer's
  cross-task contrastive loss; an empty dict elsewhere);
- ``weight_losses(per_task) -> total``: only where a method learns its loss weights (MTFormer's
  uncertainty weighting); the trainer uses it instead of the fixed lambda_t when ``hasattr``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from vtagml_core.model.vtagml import ModelConfig

from .autotaskformer import AutoTaskFormer, AutoTaskFormerConfig
from .demtg import DeMTG, DeMTGConfig
from .mtformer import MTFormer, MTFormerConfig

#: name -> builder(ModelConfig) -> model with VTAGML's interface.
PEER_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "mtformer": MTFormer,
    "demtg": DeMTG,
    "autotaskformer": AutoTaskFormer,
}

#: name -> the dataclass of the method's own settings (defaults used when the config has none).
PEER_CONFIGS: dict[str, type] = {
    "mtformer": MTFormerConfig,
    "demtg": DeMTGConfig,
    "autotaskformer": AutoTaskFormerConfig,
}
