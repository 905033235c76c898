"""Methods by name: ``build_model("vtagml", model_cfg)`` and friends.

Every method returns an ``nn.Module`` with the same interface as
:class:`vtagml_core.model.vtagml.VTAGML`, so one trainer, one evaluation and one set of settings
serve them all:

- ``tasks`` (tuple of task names), ``num_classes``, ``config`` (the method's *effective*
  config, see below) and ``method`` (its name in :data:`METHODS`)
- ``encode(images) -> BackboneOutput`` and ``forward(images, features=None,
  track_task_grads=False) -> {task: (B, K_t, H, W)}``
- ``tracks_task_grads`` (bool) and ``update_affinity() -> Tensor | None`` (TROA; None elsewhere)
- ``components() -> {name: module}`` and ``parameter_report()`` (Table 6)
- ``backbone`` with a ``frozen`` bool (the feature cache is only valid for a frozen backbone)

A method is a builder ``ModelConfig -> nn.Module``. The kit's own methods are :class:`Method`
objects: a config transformation (applied to a copy of the given config) plus a model class,
so that one kit config serves every method and :func:`effective_config` can tell which config a
method really builds (checkpoints store that one). A plain function works as a builder too; its
effective config is the config it is given.

Methods (see :mod:`.simple` for what each one changes):

- ``vtagml``: the paper's model, as configured.
- ``single_task``: VTAGML for exactly one task; :func:`~.simple.single_task_configs` gives one
  config per task of a multitask config.
- ``vanilla_mtl``: frozen backbone, per-task decoders, no adapters.
- ``finetune_mtl``: trained backbone, per-task decoders, no adapters (fully fine-tuned MTL Swin).
- ``mtformer``, ``demtg``, ``autotaskformer``: the peer systems (:mod:`.peers`, docs/settings.md, "The methods").
- ``mtlora``, ``norm_only``: the parameter-efficient peers, pretrained weights frozen with a few
  trained parameters inside the backbone: task-agnostic and task-specific LoRA (:mod:`.mtlora`),
  per-task LayerNorms (:mod:`.norm_only`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from torch import nn

from vtagml_core.model.vtagml import VTAGML, ModelConfig

from .mtlora import MTLoRA, mtlora_config
from .norm_only import NormOnlyMTL, norm_only_config
from .simple import (
    AdapterFreeMTL,
    SingleTaskVTAGML,
    finetune_mtl_config,
    single_task_config,
    single_task_configs,
    vanilla_mtl_config,
    vtagml_config,
)

#: A builder: the config a user gives -> the method's model.
Builder = Callable[[ModelConfig], nn.Module]


@dataclass(frozen=True)
class Method:
    """A registered method: how it transforms the config, and which class it builds.

    Attributes:
        name: key in :data:`METHODS` (stored in checkpoints).
        configure: ``ModelConfig -> ModelConfig``, must not modify its argument and must be
            idempotent (``configure(configure(c)) == configure(c)``): checkpoints store its output
            and rebuild from it.
        model_class: called with the effective config.
        summary: one line for listings.
    """

    name: str
    configure: Callable[[ModelConfig], ModelConfig]
    model_class: Callable[[ModelConfig], nn.Module]
    summary: str

    def __call__(self, config: ModelConfig) -> nn.Module:
        model = self.model_class(self.configure(config))
        model.method = self.name
        return model


#: name -> builder(ModelConfig) -> model. New methods are added with :func:`register_method`.
METHODS: dict[str, Builder] = {
    m.name: m for m in (
        Method("vtagml", vtagml_config, VTAGML,
               "VTAGML: frozen backbone, adapters with TROA/TAA/TSN, decoders (paper Sec. 3)"),
        Method("single_task", single_task_config, SingleTaskVTAGML,
               "VTAGML for one task (same backbone, adapters, decoder); delta_m's references"),
        Method("vanilla_mtl", vanilla_mtl_config, AdapterFreeMTL,
               "frozen backbone, per-task decoders, no adapters"),
        Method("finetune_mtl", finetune_mtl_config, AdapterFreeMTL,
               "fully fine-tuned MTL Swin: trained backbone, per-task decoders, no adapters"),
        Method("mtlora", mtlora_config, MTLoRA,
               "MTLoRA (CVPR 2024): task-agnostic + task-specific LoRA in the frozen Swin, per-task decoders"),
        Method("norm_only", norm_only_config, NormOnlyMTL,
               "per-task LayerNorm scales and shifts in the frozen backbone, per-task decoders"),
    )
}


def _register_peers() -> None:
    """The peer systems of docs/settings.md, "The methods" (:mod:`.peers`): mtformer, demtg, autotaskformer.

    An import error in a peer module surfaces here on purpose: a broken peer must not silently
    disappear from the comparison.
    """
    from .peers import PEER_BUILDERS

    for name, builder in PEER_BUILDERS.items():
        register_method(name, builder)


#: Code revisions of methods whose architecture changed without a config field to show it. A
#: revision enters the settings' run keys (:mod:`vtagml_core.experiments.settings.common`), so runs
#: trained by older code are not reused (their checkpoints would not load). Methods not listed
#: are at revision 0 and their keys carry no revision at all. Bump a method's number whenever
#: its model changes in a way its config does not record.
#:
#: - peers, revision 1: :class:`~.common.FullResHeads` gained its two GroupNorms (HEAD_NORM).
#: - mtlora, norm_only, revision 1: their first version. MTLoRA's options are the model
#:   config's ``model.mtlora`` section (ranks, alphas, targets), so they are in the run key.
METHOD_REVISIONS: dict[str, int] = {"mtformer": 1, "demtg": 1, "autotaskformer": 1,
                                    "mtlora": 1, "norm_only": 1}


def method_revision(method: str) -> int:
    """The code revision of ``method`` (:data:`METHOD_REVISIONS`; 0 when unlisted)."""
    _lookup(method)
    return METHOD_REVISIONS.get(method, 0)


def method_names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)


def _lookup(method: str) -> Builder:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(method_names())}")
    return METHODS[method]


def register_method(name: str, builder: Builder) -> None:
    """Add a method (e.g. a peer system); a name that is already taken raises."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered; pick another name")
    METHODS[name] = builder


def effective_config(method: str, config: ModelConfig) -> ModelConfig:
    """The config ``method`` builds from ``config`` (a copy; ``config`` itself is untouched)."""
    builder = _lookup(method)
    configure = getattr(builder, "configure", None)
    return configure(config) if configure is not None else copy.deepcopy(config)


def build_model(method: str, config: ModelConfig) -> nn.Module:
    """Build the model of ``method`` for ``config``; unknown names list the valid ones.

    The returned model carries ``model.method == method`` and ``model.config`` (the effective
    config); ``config`` is never modified.
    """
    builder = _lookup(method)
    model = builder(copy.deepcopy(config))
    model.method = method
    return model


_register_peers()

__all__ = ["METHODS", "METHOD_REVISIONS", "Method", "build_model", "effective_config",
           "method_names", "method_revision",
           "register_method", "single_task_configs"]
