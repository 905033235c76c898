"""The backbone and its taps (paper Sec. 3.1 "Encoder Module"; docs/method.md).

The encoder is a pretrained vision transformer that never trains: no gradients, eval mode. The
adapter layers read the outputs of a few of its blocks ("taps"), and the decoder reads every
stage's output. Paper Sec. 3.1 places the adapters on Swin-B V2 blocks 15-18 of stage 3 (the last
four of its 18) and on both blocks of stage 4: six taps.

How each timm family (Swin V2, ViT, PVT-v2) is run block by block, and its default taps, lives
in :mod:`~vtagml_core.model.backbone_families`; building the timm model and loading its weights
in :mod:`~vtagml_core.model.backbone_weights`. This module wraps both into one ``nn.Module``.

**Frozen by default, trainable on request.** VTAGML and every baseline of paper Sec. 4 except one
keep the backbone frozen. The exception is the "fully fine-tuned MTL Swin" baseline (docs/settings.md, The methods), which trains the backbone too: ``BackboneConfig(frozen=False)`` makes the same wrapper
trainable (parameters require grad, ``train()`` is honoured, the forward keeps the graph).
Features of a trainable backbone change every step, so a feature cache must check
``backbone.frozen`` before serving precomputed features.

All outputs are channels-last, ``(B, h, w, C)`` (timm's Swin layout).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from .backbone_families import (  # noqa: F401  (constants re-exported for existing imports)
    SWIN_STAGE3_TAPPED_BLOCKS,
    VIT_STAGE_STRIDES,
    VIT_TAP_FRACTIONS,
    Tap,
    make_walk,
    validate_taps,
)
from .backbone_weights import PRETEXT_WEIGHTS, RANDOM_WEIGHTS, check_backbone_name, create_timm_model

#: Image channels the backbone expects (RGB).
IMAGE_CHANNELS: int = 3


@dataclass
class BackboneConfig:
    """Which backbone to build, how to initialise it, and where the adapters tap it.

    Attributes:
        name: ``"swinv2_tiny_cpu"`` (the kit's tiny CPU Swin V2, see ``TINY_CONFIGS``) or any timm
            model name of a supported family (paper scale: ``"swinv2_base_window8_256"``).
        img_size: square image side the backbone is built for. timm builds Swin V2 and ViT for one
            fixed size (attention masks, position tables), so images of another size raise.
        pretrained: load timm's hub (ImageNet) weights: from the local Hugging Face cache, else
            the hub (needs internet).
        weights: ``"random"`` (or null: random initialisation, warned about and written into
            every result's provenance), ``"pretext"`` (the kit's pretext-pretrained backbone for
            this name and size, pretrained once at first use; ``vtagml_core.train.pretrain``),
            or a local ``.safetensors`` / torch state-dict file of the timm model.
        taps: ``(stage, block)`` pairs (0-based) whose outputs the adapters read, in forward order;
            ``None`` takes the paper's placement. ViT has a single stage 0.
        frozen: True (the paper): no gradients, always eval mode. False: the backbone trains with
            the rest of the model (the "fully fine-tuned MTL Swin" baseline, ``finetune_mtl``).
    """

    name: str = "swinv2_tiny_cpu"
    img_size: int = 128
    pretrained: bool = False
    weights: str | None = None
    taps: list[Tap] | None = field(default=None)
    frozen: bool = True

    @property
    def random_init(self) -> bool:
        """True when no weights are loaded: neither timm's nor a file nor the kit's pretext ones."""
        return not self.pretrained and self.weights in (None, RANDOM_WEIGHTS)

    def describe_weights(self) -> str:
        """``"random init"``, ``"timm pretrained"``, ``"pretext-pretrained (kit)"`` or the file."""
        if self.random_init:
            return "random init"
        if self.pretrained:
            return "timm pretrained"
        # the kit's pretraining writes its record (recipe, losses) beside the weights file
        if self.weights == PRETEXT_WEIGHTS or Path(str(self.weights)).with_suffix(".json").is_file():
            return "pretext-pretrained (kit)"
        return f"weights {Path(str(self.weights)).name}"

    def __post_init__(self) -> None:
        check_backbone_name(self.name)
        if not isinstance(self.img_size, int) or self.img_size <= 0:
            raise ValueError(f"backbone.img_size must be a positive integer, got {self.img_size!r}")
        if not isinstance(self.frozen, bool):
            raise ValueError(f"backbone.frozen must be true or false, got {self.frozen!r}")
        if self.taps is not None:
            try:
                self.taps = [(int(s), int(b)) for s, b in self.taps]
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"backbone.taps must be a list of (stage, block) pairs, got {self.taps!r}"
                ) from err


@dataclass
class BackboneOutput:
    """What the frozen backbone hands on.

    Attributes:
        taps: one ``(B, h_l, w_l, C_l)`` map per tapped block, in forward order (adapter inputs).
        stages: one ``(B, h_s, w_s, C_s)`` map per stage, strides 4, 8, 16, 32 (decoder skips).
    """

    taps: list[Tensor]
    stages: list[Tensor]


class FrozenBackbone(nn.Module):
    """A timm vision transformer returning adapter taps and stage maps; frozen unless configured.

    Frozen (``config.frozen=True``, the default and the paper's setting) means: every parameter
    has ``requires_grad=False``, the module stays in eval mode even when a parent calls
    ``.train()``, and the forward pass runs under ``torch.no_grad()``. With ``frozen=False`` none
    of the three holds: parameters require grad, ``train()``/``eval()`` act as usual, and the
    forward pass records the graph (under the caller's grad mode). The exception is timm's
    closing norm and classifier, which the taps never reach (``unused_modules`` of the family's
    walker): they stay fixed, as a parameter that never gets a gradient would stall
    DistributedDataParallel. The timm model is ``self.model``.
    """

    def __init__(self, config: BackboneConfig | None = None):
        super().__init__()
        self.config = config if config is not None else BackboneConfig()
        cfg = self.config
        self.model = create_timm_model(cfg.name, cfg.img_size, cfg.pretrained, cfg.weights)
        self._walk = make_walk(self.model, cfg.name)
        taps = cfg.taps if cfg.taps is not None else self._walk.default_taps()
        self._taps = validate_taps(taps, self._walk.depths, cfg.name)
        pretrained_cfg = getattr(self.model, "pretrained_cfg", None) or {}
        mean = pretrained_cfg.get("mean", IMAGENET_DEFAULT_MEAN)
        std = pretrained_cfg.get("std", IMAGENET_DEFAULT_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, IMAGE_CHANNELS, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, IMAGE_CHANNELS, 1, 1), persistent=False)
        self.model.requires_grad_(not cfg.frozen)
        for name in self._walk.unused_modules:  # never run by the walk: no gradient would reach
            unused = getattr(self.model, name, None)
            if isinstance(unused, nn.Module):
                unused.requires_grad_(False)
        self.train(False)
        self.check_image_size(cfg.img_size, cfg.img_size)

    @property
    def frozen(self) -> bool:
        """True when the backbone never trains (so its features may be cached)."""
        return self.config.frozen

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Frozen: stay in eval mode whatever ``mode`` says (no dropout, no stochastic depth).
        Trainable: switch modes as any module does."""
        return super().train(mode and not self.frozen)

    @property
    def tap_blocks(self) -> list[Tap]:
        """``(stage, block)`` of each tap, 0-based, in forward order."""
        return list(self._taps)

    @property
    def tap_channels(self) -> list[int]:
        return [self._walk.tap_channels(t) for t in self._taps]

    @property
    def tap_strides(self) -> list[int]:
        return [self._walk.tap_stride(t) for t in self._taps]

    @property
    def stage_channels(self) -> list[int]:
        return list(self._walk.stage_channels)

    @property
    def stage_strides(self) -> list[int]:
        return list(self._walk.stage_strides)

    @property
    def patch_grid_multiple(self) -> int:
        """Image sides must be multiples of this: the deepest stride times what windows need."""
        return self._walk.patch_grid_multiple()

    @property
    def built_size(self) -> tuple[int, int] | None:
        """``(H, W)`` the model was built for, or ``None`` when any multiple size works (PVT-v2)."""
        return self._walk.built_size()

    def norm_layers_at_taps(self) -> list[nn.LayerNorm]:
        """The LayerNorm of each tapped block (``norm1``), to initialise TSN (Eq. 4: gamma', beta').

        Swin V2: ``norm1`` is the post-norm of the attention branch; ViT and PVT-v2: ``norm1`` is
        the pre-norm at the block's input.
        """
        return [self._walk.norm_at(t) for t in self._taps]

    def num_heads_at_taps(self) -> list[int]:
        return [self._walk.block(t).attn.num_heads for t in self._taps]

    def check_image_size(self, h: int, w: int) -> None:
        """Raise ValueError if ``h x w`` images cannot go through this backbone."""
        m, built = self.patch_grid_multiple, self.built_size
        where = "Set backbone.img_size and data.size in the config to the same value."
        if h % m or w % m:
            raise ValueError(
                f"image size {h}x{w} does not fit backbone {self.config.name!r}: height and width "
                f"must be multiples of {m} (stride and attention windows). {where}"
            )
        if built is not None and (h, w) != built:
            raise ValueError(
                f"image size {h}x{w} does not fit backbone {self.config.name!r}, which was built for "
                f"{built[0]}x{built[1]} images (timm fixes the size at construction). {where}"
            )

    def forward(self, images: Tensor) -> BackboneOutput:
        """``images``: ``(B, 3, H, W)`` RGB in [0, 1] -> taps and stage maps (all ``(B, h, w, C)``).

        Normalises with the model's mean/std (timm's ``pretrained_cfg``, else ImageNet's). A frozen
        backbone runs without autograd; a trainable one keeps the graph for the backward pass.
        """
        if images.ndim != 4 or images.shape[1] != IMAGE_CHANNELS:
            raise ValueError(
                f"FrozenBackbone expects images of shape (B, 3, H, W), got {tuple(images.shape)}"
            )
        self.check_image_size(images.shape[2], images.shape[3])
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            x = (images - self.pixel_mean) / self.pixel_std
            taps, stages = self._walk.run(x, set(self._taps))
        return BackboneOutput(taps=taps, stages=stages)
