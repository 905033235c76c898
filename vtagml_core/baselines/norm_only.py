"""``norm_only``: per-task LayerNorm scales and shifts in a frozen backbone, per-task decoders.

The simplest way for several tasks to share one frozen backbone yet read different features from
it: give every task its own copy of the backbone's LayerNorm parameters and train only those
(plus the decoders). It is the multitask form of the "scale-and-bias patch" of Mudrakarta et al.,
"K for the Price of 1: Parameter-efficient Multi-task and Transfer Learning" (ICLR 2019), who
learn per-task BatchNorm scales and biases, and of norm tuning in transformers (Qi et al.,
"Parameter-efficient Tuning on Layer Normalization for Pre-trained Language Models", 2022).
It answers a question VTAGML raises: TSN (paper Sec. 3.2.3, Eq. 4) conditions a LayerNorm on the
task through omega; how far do static per-task norms, placed at *every* LayerNorm of the backbone,
get with a comparable budget? docs/settings.md, "The methods".

For each LayerNorm of the backbone that its walk runs (patch embedding, every block's ``norm1``
and ``norm2``, patch merging) and each task t::

    LN_t(x) = gamma_t * (x - mu(x)) / sqrt(var(x) + eps) + beta_t      (Ba et al. 2016)

with ``gamma_t, beta_t`` (C each) started from the pretrained ``gamma, beta`` (so every task
starts with the frozen backbone's features), and everything else in the backbone frozen.

**One batched pass instead of T passes.** Each task needs the backbone run with its own norms.
The images are stacked T times on the batch axis (``(T*B, 3, H, W)``, task t in rows ``t*B ..
(t+1)*B - 1``) and go through the backbone once; each :class:`TaskLayerNorm` normalises rows of
task t with ``gamma_t, beta_t``. Nothing else in a vision transformer mixes images of a batch,
so this is exactly T backbone passes, in one call (the cost is still T times one pass).

**Why ``model.backbone.frozen`` is False** although no pretrained weight trains: the flag tells
the trainer whether the features are a fixed function of the image (the feature cache and the
training state rely on it); the per-task norms change them every step (the same reasoning as
:mod:`.mtlora`). The config keeps ``backbone.frozen=true``.

Simplifications: timm's closing norm, which the backbone's walk never runs, stays shared and
frozen (it would get no gradient); LayerNorms without affine parameters have nothing to copy and
stay as they are. Works with every backbone family the kit supports (Swin V2, ViT, PVT-v2).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtagml_core.model.backbone import IMAGE_CHANNELS, BackboneConfig, BackboneOutput, FrozenBackbone
from vtagml_core.model.backbone_families import make_walk
from vtagml_core.model.vtagml import ModelConfig

from .peft_base import PEFTMultiTask, parameter_view
from .simple import FROZEN_BACKBONE_ROW, vanilla_mtl_config

#: Parameter-report row of the per-task norms.
TASK_NORMS_ROW: str = "LayerNorms (per task)"


class TaskLayerNorm(nn.Module):
    """A LayerNorm with one ``(gamma_t, beta_t)`` per task, for T task streams stacked on the batch.

    ``x (T*B, ..., C)`` with task t in rows ``t*B .. (t+1)*B - 1`` -> the same shape. Each task's
    rows go through ``F.layer_norm`` with that task's parameters, so at the start (copies of the
    pretrained norm) every stream gets exactly what the pretrained LayerNorm gives.

    Attributes:
        weight, bias: ``(T, *normalized_shape)``; ``bias`` None when the pretrained norm has none.
    """

    def __init__(self, norm: nn.LayerNorm, num_tasks: int) -> None:
        super().__init__()
        if norm.weight is None:
            raise ValueError("TaskLayerNorm copies a LayerNorm's affine parameters; this one has none")
        self.num_tasks = num_tasks
        self.normalized_shape = tuple(norm.normalized_shape)
        self.eps = norm.eps

        def per_task(p: Tensor) -> nn.Parameter:    # (C,) -> (T, C), T copies of the pretrained values
            return nn.Parameter(p.detach().clone().unsqueeze(0).repeat(num_tasks, *([1] * p.dim())))

        self.weight = per_task(norm.weight)                                       # gamma_t
        self.bias = per_task(norm.bias) if norm.bias is not None else None        # beta_t

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] % self.num_tasks:
            raise ValueError(f"TaskLayerNorm expects T*B rows for T={self.num_tasks} task streams, got "
                             f"a batch of {x.shape[0]}: run the backbone through NormOnlyBackbone")
        streams = x.unflatten(0, (self.num_tasks, -1))                            # (T, B, ..., C)
        return torch.cat([
            F.layer_norm(xs, self.normalized_shape, self.weight[t],               # LN_t(x_t)
                         None if self.bias is None else self.bias[t], self.eps)
            for t, xs in enumerate(streams)])

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, tasks={self.num_tasks}, eps={self.eps}"


class NormOnlyBackbone(nn.Module):
    """A frozen backbone whose LayerNorms are per task: ``images (B, 3, H, W)`` -> T*B stacked features.

    ``frozen`` is False (module docstring); every module stays in eval mode.

    Attributes:
        base: the :class:`FrozenBackbone`, built trainable so that its forward keeps the autograd
            graph (the norms need gradients), then every pretrained weight frozen by hand.
        num_tasks: T.
    """

    def __init__(self, config: BackboneConfig, num_tasks: int) -> None:
        super().__init__()
        self._config = config
        self.base = FrozenBackbone(replace(config, frozen=False))
        self.base.requires_grad_(False)
        self.num_tasks = num_tasks
        model = self.base.model
        unused = make_walk(model, config.name).unused_modules   # never run (timm's closing norm)
        norms = [(name, m) for name, m in model.named_modules()
                 if isinstance(m, nn.LayerNorm) and m.weight is not None
                 and name.split(".")[0] not in unused]
        for name, norm in norms:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, TaskLayerNorm(norm, num_tasks))
        self.train(False)

    @property
    def frozen(self) -> bool:
        """False: the features change as the per-task norms train."""
        return False

    @property
    def config(self) -> BackboneConfig:
        """The configured backbone (``frozen`` true: no pretrained weight trains)."""
        return self._config

    @property
    def tap_blocks(self) -> list[tuple[int, int]]:
        return self.base.tap_blocks

    def train(self, mode: bool = True) -> NormOnlyBackbone:
        """Eval mode whatever ``mode`` says, like the frozen backbone (no stochastic depth)."""
        return super().train(False)

    def forward(self, images: Tensor) -> BackboneOutput:
        """``images (B, 3, H, W)`` -> taps and stage maps ``(T*B, h, w, C)``, task t in rows t*B.."""
        if images.ndim != 4 or images.shape[1] != IMAGE_CHANNELS:
            raise ValueError(f"NormOnlyBackbone expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return self.base(images.repeat(self.num_tasks, 1, 1, 1))                 # (T*B, 3, H, W)

    def norm_parameters(self) -> list[nn.Parameter]:
        """Every per-task gamma_t and beta_t, in module order."""
        return [p for m in self.modules() if isinstance(m, TaskLayerNorm) for p in m.parameters()]


def norm_only_config(config: ModelConfig) -> ModelConfig:
    """norm_only's effective config: no VTAGML adapters, per-task decoders, pretrained weights frozen.

    Raises:
        ValueError: ``backbone.frozen=false`` (only the norms train; a fully trained backbone is
            ``finetune_mtl``).
    """
    if not config.backbone.frozen:
        raise ValueError(
            "method 'norm_only' keeps the pretrained backbone weights frozen and trains per-task "
            "LayerNorms, but the config has model.backbone.frozen=false; set "
            "model.backbone.frozen=true or pick finetune_mtl for a fully trained backbone")
    return vanilla_mtl_config(copy.deepcopy(config))


class NormOnlyMTL(PEFTMultiTask):
    """Per-task LayerNorms in the frozen backbone, per-task decoders (see the module docstring).

    Args:
        config: the effective :class:`ModelConfig` (:func:`norm_only_config`).

    Attributes:
        backbone: :class:`NormOnlyBackbone`; ``decoder``: per-task decoders and heads.
    """

    method = "norm_only"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.backbone = NormOnlyBackbone(config.backbone, len(self.tasks))
        self._build_decoder(self.backbone.base)

    def task_stage_maps(self, feats: BackboneOutput, batch: int) -> list[list[Tensor]]:
        num_tasks = len(self.tasks)
        if feats.stages[0].shape[0] != num_tasks * batch:
            raise ValueError(f"norm_only needs its own features (model.encode): {num_tasks} task streams "
                             f"of {batch} images, got a batch of {feats.stages[0].shape[0]}")
        per_stage = [stage.unflatten(0, (num_tasks, batch)) for stage in feats.stages]  # (T, B, h, w, C)
        return [[stage[t] for stage in per_stage] for t in range(num_tasks)]

    def components(self) -> dict[str, nn.Module]:
        norms = self.backbone.norm_parameters()
        ids = {id(p) for p in norms}
        parts: dict[str, nn.Module] = {
            FROZEN_BACKBONE_ROW: parameter_view(p for p in self.backbone.parameters() if id(p) not in ids),
            TASK_NORMS_ROW: parameter_view(norms),
        }
        return {**parts, **self.decoder_components()}


__all__ = ["NormOnlyBackbone", "NormOnlyMTL", "TaskLayerNorm", "norm_only_config"]
