"""MTLoRA (Agiza, Neseem and Reda, CVPR 2024) as a kit baseline: low-rank adaptation for multitask learning.

Paper: A. Agiza, M. Neseem, S. Reda, "MTLoRA: Low-Rank Adaptation Approach for Efficient Multi-Task
Learning", CVPR 2024 (public code: scale-lab/MTLoRA, MIT). It builds on LoRA: E. Hu et al., "LoRA:
Low-Rank Adaptation of Large Language Models", ICLR 2022.

Like VTAGML, MTLoRA keeps the pretrained weights of a hierarchical vision transformer frozen and
trains a small number of added parameters; unlike VTAGML, the added parameters sit *inside* the
backbone, so the backbone's features themselves change while training. What each part implements:

===================================  ============================================================
paper                                here
===================================  ============================================================
LoRA (Hu et al., Sec. 4.1, Eq. 3):   :class:`LoRA`: ``h = W x + (alpha / r) B A x`` with
W frozen, B A the trained update     ``A (r, C_in)`` random (Kaiming uniform, as nn.Linear and
                                     the LoRA / MTLoRA code), ``B (C_out, r)`` zero, so the
                                     adapted layer starts as the frozen one
MTLoRA Sec. 3, Task-Agnostic LoRA    :class:`LoRALinear`: one LoRA per adapted linear layer of
(TA-LoRA): shared by all tasks       every backbone block, shared by all tasks (``targets``:
                                     ``qkv``, ``proj``; optionally ``fc1``, ``fc2`` and the patch
                                     merging ``reduction``, MTLoRA+)
MTLoRA Sec. 3, Task-Specific LoRA    :class:`TaskLoRALinear` in the **last block of each stage**:
(TS-LoRA): the last block of a       the shared stream goes on with the TA-LoRA (to the next
stage splits into one stream per     stage), and each task t gets its own stream
task                                 ``W x_t + (alpha_t / r_t) B_t A_t x_t``; ``qkv`` stays
                                     task-agnostic there (as in the MTLoRA code)
MTLoRA Sec. 3, multi-scale task-     each task-specific stage's streams are task t's stage maps at
specific feature sharing: each       strides 4, 8, 16, 32; they feed **task t's VTAGML decoder**
task's decoder reads its own         (:class:`~vtagml_core.model.heads.MultiTaskDecoder`, the same
stage maps                           per-task decoders and heads as ``vtagml`` and ``vanilla_mtl``)
loss                                 the kit's weighted sum (``MultiTaskLoss``); no extra terms
===================================  ============================================================

Where the kit simplifies, and why:

* **Only the LoRA matrices train inside the backbone.** MTLoRA's code also unfreezes the layer
  norms, the patch embedding and the relative position bias by default (the filters of its
  ``mark_only_lora_as_trainable``). The kit keeps every pretrained weight frozen, so the comparison measures
  LoRA alone; training the norms is what the ``norm_only`` method measures
  (:mod:`.norm_only`).
* **Scales are alpha / r**, Hu et al.'s convention; MTLoRA's code multiplies by a fixed scale
  (4.0 in its released configs). The defaults here give that same 4.0: ``alpha=32, rank=8`` and
  ``task_alpha=16, task_rank=4`` (the code's shared rank 16 and per-task rank 4 were chosen for a
  Swin-T of 96 channels; the kit's tiny Swin V2 has 32).
* **No LoRA dropout** (the code uses 0.05): every module of the kit's backbone runs in eval mode.
* **The task streams recompute the block's attention.** MTLoRA computes the last block's
  attention once and branches after it; the kit runs timm's block once on the shared stream and
  once on the T task streams stacked on the batch axis, so it never re-implements timm's block.
  The results are the same (``qkv`` is task-agnostic, so every stream gets the same attention);
  the extra cost is T forward passes of four blocks.
* **Only Swin V2 backbones** (the kit's tiny one and ``swinv2_base_window8_256``): MTLoRA is
  defined on hierarchical transformers whose stages end in a block, and the task streams need
  the block structure of timm's :class:`~timm.models.swin_transformer_v2.SwinTransformerV2`.
* **The deepest stage's last block has no TA-LoRA in its task-specific layers**: no decoder reads
  that stage's shared output (every task reads its own map), so those matrices would never get a
  gradient (DistributedDataParallel refuses such parameters). Its shared map, still returned in
  :attr:`MTLoRAFeatures.stages`, is the frozen layers' output there.

**A never-trained backbone gives LoRA nothing to adapt.** timm starts Swin V2's residual
post-norms at weight 0 (``init_respostnorm``), so in a randomly initialised Swin V2 (the smoke
preset's backbone) every block is the identity and a LoRA inside a block gets exactly zero
gradient: MTLoRA then trains only its decoders (and a ``reduction`` LoRA, whose patch-merging norm
is not zeroed). Every pretrained backbone (timm's ImageNet weights, the kit's pretext-pretrained
one) has non-zero norms. VTAGML's TSN works around the same zeros (``tsn_init_params``); MTLoRA
cannot without changing frozen weights, so it does not.

**Why ``model.backbone.frozen`` is False although no pretrained weight trains.** The flag answers
the question the trainer asks of it: "are this backbone's features a fixed function of the
image?" (the feature cache and the training state rely on it, see
:func:`vtagml_core.train.state.backbone_frozen`). With LoRA inside, they change every step, so
the features are computed in every forward. The *config* keeps ``backbone.frozen=true``: the
pretrained weights never change, so checkpoints and training states leave them out
(:func:`vtagml_core.model.checkpoint.frozen_backbone_keys` goes by ``requires_grad``).

The options are :class:`~vtagml_core.model.config.MTLoRAConfig`, the model config's
``model.mtlora`` section: ``--set model.mtlora.rank=16`` reaches them. docs/settings.md, "The
methods".
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import PatchMerging, SwinTransformerV2
from torch import Tensor, nn

from vtagml_core.model.backbone import IMAGE_CHANNELS, BackboneConfig, BackboneOutput, FrozenBackbone
from vtagml_core.model.config import LORA_TARGETS, MTLoRAConfig, ModelConfig

from .peft_base import PEFTMultiTask, parameter_view
from .simple import FROZEN_BACKBONE_ROW, vanilla_mtl_config

#: Kaiming-uniform slope of A's init: nn.Linear's default, as in the LoRA and MTLoRA code.
KAIMING_A: float = math.sqrt(5)
#: Linear layers of a Swin V2 block (and its patch merging) that LoRA can adapt: name -> the
#: attribute path from the block (``reduction`` is reached from the stage's ``downsample``).
BLOCK_TARGETS: dict[str, tuple[str, str]] = {
    "qkv": ("attn", "qkv"),
    "proj": ("attn", "proj"),
    "fc1": ("mlp", "fc1"),
    "fc2": ("mlp", "fc2"),
}
#: The patch-merging projection between stages (MTLoRA+ adds LoRA to the patch-merging layers).
REDUCTION_TARGET: str = "reduction"
#: Targets that stay task-agnostic inside a task-specific block: the attention's q, k, v (the
#: MTLoRA code builds its last-block ``qkv`` with ``tasks=None``), so every stream attends alike.
TASK_AGNOSTIC_IN_TS_BLOCK: frozenset[str] = frozenset({"qkv"})
#: Parameter-report rows.
TA_LORA_ROW: str = "TA-LoRA (task-agnostic)"
TS_LORA_ROW: str = "TS-LoRA (task-specific)"


# --------------------------------------------------------------------------- LoRA layers


class LoRA(nn.Module):
    """The low-rank update of one linear layer: ``x (..., C_in) -> (alpha / r) B A x (..., C_out)``.

    Hu et al. (ICLR 2022) Eq. 3: ``h = W_0 x + Delta W x = W_0 x + B A x``, with ``Delta W`` scaled
    by ``alpha / r`` (Sec. 4.1). ``A`` is random and ``B`` zero, so ``Delta W = 0`` at the start.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))    # (r, C_in): down-projection
        self.B = nn.Parameter(torch.zeros(out_features, rank))   # (C_out, r): up-projection, 0
        nn.init.kaiming_uniform_(self.A, a=KAIMING_A)
        self.scaling = alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.scaling * F.linear(F.linear(x, self.A), self.B)   # (alpha/r) B (A x)

    def delta_weight(self) -> Tensor:
        """``Delta W = (alpha / r) B A``, ``(C_out, C_in)``: the update in the weight's own shape."""
        return self.scaling * (self.B @ self.A)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus one task-agnostic LoRA (TA-LoRA): ``W x + b + (alpha/r) B A x``.

    ``weight`` is the merged ``W + (alpha/r) B A`` (the same function of ``x``): timm's Swin V2
    attention reads ``qkv.weight`` and calls ``F.linear`` itself (with its separate q and v
    biases) instead of calling the layer, so the update must show in the weight too.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base                                          # pretrained, requires_grad False
        self.lora = LoRA(base.in_features, base.out_features, rank, alpha)

    @property
    def weight(self) -> Tensor:
        return self.base.weight + self.lora.delta_weight()       # W + (alpha/r) B A

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.lora(x)


class TaskLoRALinear(nn.Module):
    """A frozen linear layer of a task-specific block: TA-LoRA for the shared stream, TS-LoRA per task.

    Shared stream (``task_streams`` False), ``x (B, ..., C_in)``: ``W x + b + (alpha/r) B A x``.
    Task streams (``task_streams`` True), ``x (T*B, ..., C_in)`` with task t's stream in rows
    ``t*B .. (t+1)*B - 1``: ``W x_t + b + (alpha_t/r_t) B_t A_t x_t`` (TS-LoRA; the shared update
    is not added, as in MTLoRA's code). :func:`run_task_specific_block` sets the flag.

    Args:
        shared: build the TA-LoRA; False where the shared stream feeds nothing (the deepest stage).
    """

    def __init__(self, base: nn.Linear, num_tasks: int, cfg: MTLoRAConfig, shared: bool = True) -> None:
        super().__init__()
        self.base = base
        self.lora = LoRA(base.in_features, base.out_features, cfg.rank, cfg.alpha) if shared else None
        self.task_loras = nn.ModuleList(
            LoRA(base.in_features, base.out_features, cfg.task_rank, cfg.task_alpha) for _ in range(num_tasks))
        self.task_streams = False

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        if not self.task_streams:
            return y if self.lora is None else y + self.lora(x)
        streams = x.unflatten(0, (len(self.task_loras), -1))                  # (T, B, ..., C_in)
        delta = torch.stack([lora(xs) for lora, xs in zip(self.task_loras, streams)])  # (T, B, ..., C_out)
        return y + delta.flatten(0, 1)


def run_task_specific_block(block: nn.Module, x: Tensor, num_tasks: int) -> tuple[Tensor, Tensor]:
    """The last block of a task-specific stage: ``x (B, H, W, C)`` -> shared ``(B, H, W, C)`` and
    per-task ``(T, B, H, W, C)`` streams.

    The shared stream is timm's block with its TA-LoRA; the T task streams run through the same
    block in one call, stacked on the batch axis, with each :class:`TaskLoRALinear` applying
    task t's TS-LoRA to rows of task t. Every task stream starts from the shared input ``x``
    (MTLoRA: the task-specific branch opens inside the stage's last block).
    """
    task_layers = [m for m in block.modules() if isinstance(m, TaskLoRALinear)]
    shared = block(x)
    for layer in task_layers:
        layer.task_streams = True
    try:
        streams = block(x.repeat(num_tasks, *([1] * (x.dim() - 1))))       # (T*B, H, W, C)
    finally:
        for layer in task_layers:
            layer.task_streams = False
    return shared, streams.unflatten(0, (num_tasks, x.shape[0]))


# --------------------------------------------------------------------------- the backbone


@dataclass
class MTLoRAFeatures(BackboneOutput):
    """The adapted backbone's output: the shared stream (``taps``, ``stages``) plus task streams.

    Attributes:
        task_stages: ``{stage index: (T, B, h_s, w_s, C_s)}`` for each task-specific stage (task t's
            map is ``task_stages[s][t]``); stages not listed give every task the shared map.
    """

    task_stages: dict[int, Tensor] = field(default_factory=dict)


class LoRABackbone(nn.Module):
    """A frozen Swin V2 with TA-LoRA in every block and TS-LoRA in each task-specific stage's last block.

    ``frozen`` is False: the features change as the LoRA matrices train (module docstring). Every
    module stays in eval mode, as the frozen backbone does (no stochastic depth).

    Attributes:
        base: the :class:`FrozenBackbone` (timm model, weights, pixel normalisation, taps).
        task_stages: the stages whose last block splits into task streams.
    """

    def __init__(self, config: BackboneConfig, num_tasks: int, cfg: MTLoRAConfig) -> None:
        super().__init__()
        self.base = FrozenBackbone(config)          # every pretrained weight: requires_grad False
        model = self.base.model
        if not isinstance(model, SwinTransformerV2):
            raise ValueError(
                f"method 'mtlora' needs a Swin V2 backbone (MTLoRA adapts a hierarchical transformer "
                f"stage by stage); {config.name!r} is a {type(model).__name__}. Use "
                "model.backbone.name=swinv2_tiny_cpu or swinv2_base_window8_256, or the method norm_only")
        self.num_tasks = num_tasks
        self.task_stages = cfg.stages(len(model.layers))
        last_stage = len(model.layers) - 1
        for s, stage in enumerate(model.layers):
            if REDUCTION_TARGET in cfg.targets and isinstance(stage.downsample, PatchMerging):
                stage.downsample.reduction = LoRALinear(stage.downsample.reduction, cfg.rank, cfg.alpha)
            for b, blk in enumerate(stage.blocks):
                task_specific = s in self.task_stages and b == len(stage.blocks) - 1
                for name in cfg.targets:
                    if name not in BLOCK_TARGETS:
                        continue
                    parent_name, attr = BLOCK_TARGETS[name]
                    parent = getattr(blk, parent_name)
                    base = getattr(parent, attr)
                    if task_specific and name not in TASK_AGNOSTIC_IN_TS_BLOCK:
                        layer = TaskLoRALinear(base, num_tasks, cfg, shared=s != last_stage)
                    else:
                        layer = LoRALinear(base, cfg.rank, cfg.alpha)
                    setattr(parent, attr, layer)
        self.train(False)

    @property
    def frozen(self) -> bool:
        """False: the features are not a fixed function of the image (LoRA trains inside)."""
        return False

    @property
    def config(self) -> BackboneConfig:
        return self.base.config

    @property
    def tap_blocks(self) -> list[tuple[int, int]]:
        return self.base.tap_blocks

    def train(self, mode: bool = True) -> LoRABackbone:
        """Eval mode whatever ``mode`` says, like the frozen backbone (LoRA has no mode)."""
        return super().train(False)

    def forward(self, images: Tensor) -> MTLoRAFeatures:
        """``images (B, 3, H, W)`` in [0, 1] -> shared taps and stage maps, and the task streams.

        The same module calls as :class:`~vtagml_core.model.backbone_families.SwinV2Walk` (patch
        embedding; per stage: patch merging, blocks), except that the last block of a
        task-specific stage also returns the T task streams. Runs with autograd (LoRA trains).
        """
        if images.ndim != 4 or images.shape[1] != IMAGE_CHANNELS:
            raise ValueError(f"LoRABackbone expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        base = self.base
        base.check_image_size(images.shape[2], images.shape[3])
        taps = set(base.tap_blocks)
        tapped, stages, task_stages = [], [], {}
        x = (images - base.pixel_mean) / base.pixel_std
        x = base.model.patch_embed(x)                                        # (B, H/4, W/4, C_0)
        for s, stage in enumerate(base.model.layers):
            x = stage.downsample(x)                                          # (B, h_s, w_s, C_s)
            last = len(stage.blocks) - 1
            for b, blk in enumerate(stage.blocks):
                if s in self.task_stages and b == last:
                    x, task_stages[s] = run_task_specific_block(blk, x, self.num_tasks)  # (T, B, h, w, C)
                else:
                    x = blk(x)
                if (s, b) in taps:
                    tapped.append(x)
            stages.append(x)
        return MTLoRAFeatures(taps=tapped, stages=stages, task_stages=task_stages)

    def lora_parameters(self, task_specific: bool) -> list[nn.Parameter]:
        """The TS-LoRA matrices (``task_specific``) or the TA-LoRA ones, in module order."""
        params: list[nn.Parameter] = []
        for m in self.modules():
            if isinstance(m, TaskLoRALinear):
                if task_specific:
                    params += list(m.task_loras.parameters())
                elif m.lora is not None:
                    params += list(m.lora.parameters())
            elif isinstance(m, LoRALinear) and not task_specific:
                params += list(m.lora.parameters())
        return params


# --------------------------------------------------------------------------- the method


def mtlora_config(config: ModelConfig) -> ModelConfig:
    """MTLoRA's effective config: no VTAGML adapters, per-task decoders, pretrained weights frozen.

    Raises:
        ValueError: ``backbone.frozen=false`` (MTLoRA trains LoRA matrices, never the pretrained
            weights; a fully trained backbone is ``finetune_mtl``).
    """
    if not config.backbone.frozen:
        raise ValueError(
            "method 'mtlora' keeps the pretrained backbone weights frozen and trains LoRA matrices "
            "inside it, but the config has model.backbone.frozen=false; set model.backbone.frozen=true "
            "or pick finetune_mtl for a fully trained backbone")
    return vanilla_mtl_config(copy.deepcopy(config))


class MTLoRA(PEFTMultiTask):
    """MTLoRA with VTAGML's interface (see the module docstring for the paper mapping).

    Args:
        config: the effective :class:`ModelConfig` (:func:`mtlora_config`).
        options: MTLoRA's own settings; default ``config.mtlora`` when the model config has such a
            field, else :class:`MTLoRAConfig()`.

    Attributes:
        backbone: :class:`LoRABackbone`; ``decoder``: per-task decoders and heads.
    """

    method = "mtlora"

    def __init__(self, config: ModelConfig, options: MTLoRAConfig | None = None) -> None:
        super().__init__(config)
        cfg = options if options is not None else config.mtlora
        cfg.validate()
        self.options = cfg
        self.backbone = LoRABackbone(config.backbone, len(self.tasks), cfg)
        self._build_decoder(self.backbone.base)

    def task_stage_maps(self, feats: BackboneOutput, batch: int) -> list[list[Tensor]]:
        if not isinstance(feats, MTLoRAFeatures):
            raise ValueError("MTLoRA needs its own features (MTLoRAFeatures from model.encode), with the "
                             f"task streams; got {type(feats).__name__}")
        return [[feats.task_stages[s][t] if s in feats.task_stages else shared
                 for s, shared in enumerate(feats.stages)] for t in range(len(self.tasks))]

    def components(self) -> dict[str, nn.Module]:
        bb = self.backbone
        lora = {id(p) for p in bb.lora_parameters(True) + bb.lora_parameters(False)}
        parts: dict[str, nn.Module] = {
            FROZEN_BACKBONE_ROW: parameter_view(p for p in bb.parameters() if id(p) not in lora),
            TA_LORA_ROW: parameter_view(bb.lora_parameters(task_specific=False)),
            TS_LORA_ROW: parameter_view(bb.lora_parameters(task_specific=True)),
        }
        return {**parts, **self.decoder_components()}


__all__ = ["LORA_TARGETS", "LoRA", "LoRABackbone", "LoRALinear", "MTLoRA", "MTLoRAConfig",
           "MTLoRAFeatures", "TaskLoRALinear", "mtlora_config", "run_task_specific_block"]
