"""The pretext model that pretrains the kit's offline backbone (docs/method.md, docs/benchmark.md).

The paper starts from a Swin-B V2 pretrained on ImageNet-22K and freezes it (Sec. 3.1). Offline,
the kit cannot download those weights, so it pretrains its tiny Swin V2 itself on the synthetic
renderer's ``pretext`` split (scenes disjoint from every benchmark split) and then freezes it
exactly like the paper's encoder.

**Why a dense pretext.** A frozen backbone is only as useful as the spatial detail its features
keep. The prototype measured this on the 2-core CPU (docs/benchmark.md): a backbone pretrained
for 3 minutes on a *global* pretext (which classes are present, how many objects) stayed at
chance, no better than a frozen random one (mIoU 0.30), because a global target never asks the
features to say *where* anything is. A *dense* pretext, predicting for every pixel the surface
colour before lighting (albedo) and the texture type, forces every stage's map to encode local
appearance and surface identity at full resolution; frozen, it lifted the downstream mIoU to 0.36
(0.53 with class weighting and a higher learning rate).

**Architecture.** The timm backbone (trainable here, unlike in VTAGML) gives four stage maps at
strides 4, 8, 16, 32. A light FPN-style head (Lin et al., "Feature Pyramid Networks", 2017) merges
them: a 1x1 lateral projection of each stage to ``head_channels``, a top-down pass that
upsamples the coarser sum x2 and adds it, a 3x3 conv + GELU at stride 4, then two 1x1 predictors
upsampled bilinearly to full resolution: albedo (3 channels, sigmoid, L1 loss) and texture type
(``len(TEXTURE_NAMES)`` logits, cross-entropy). The head is deliberately small and has **no
path from the image itself**: every bit of spatial detail it needs must come from the backbone's
stage maps, which is what the frozen backbone later hands to VTAGML's decoders.

The backbone is the very wrapper VTAGML uses, :class:`~vtagml_core.model.backbone.FrozenBackbone`,
built with ``frozen=False`` (same normalisation, same module walk, bit-identical to timm's
``forward_features``), so the weights saved from its timm model load directly through
``BackboneConfig(weights=path)``.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtagml_core.data.synthetic.domains import TEXTURE_NAMES

from .backbone import BackboneConfig, FrozenBackbone

#: Width of the FPN head's merged feature map.
DEFAULT_HEAD_CHANNELS: int = 64
#: Channels of the albedo prediction (RGB).
ALBEDO_CHANNELS: int = 3
#: Number of texture types the head classifies (plain, stripes, checker, dots, noise, sky).
NUM_TEXTURES: int = len(TEXTURE_NAMES)
#: Kernel of the smoothing conv after the top-down merge.
SMOOTH_KERNEL: int = 3
#: Upsampling factor between consecutive stages in the top-down pass.
TOP_DOWN_FACTOR: int = 2


class FPNDenseHead(nn.Module):
    """Feature-pyramid merge of stage maps, then per-pixel albedo and texture predictions.

    Args:
        stage_channels: channels of each stage map, shallow (stride 4) to deep.
        head_channels: width of the merged map.

    ``forward(stages, out_size)``: ``stages`` channels-last ``[(B, h_s, w_s, C_s)]`` ->
    ``(albedo (B, 3, H, W) in [0, 1], texture logits (B, NUM_TEXTURES, H, W))``.
    """

    def __init__(self, stage_channels: list[int], head_channels: int = DEFAULT_HEAD_CHANNELS) -> None:
        super().__init__()
        if head_channels < 1 or not stage_channels:
            raise ValueError(f"FPNDenseHead needs stage channels and head_channels >= 1, got "
                             f"{stage_channels}, {head_channels}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, head_channels, kernel_size=1) for c in stage_channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(head_channels, head_channels, SMOOTH_KERNEL, padding=SMOOTH_KERNEL // 2),
            nn.GELU(),
        )
        self.albedo = nn.Conv2d(head_channels, ALBEDO_CHANNELS, kernel_size=1)
        self.texture = nn.Conv2d(head_channels, NUM_TEXTURES, kernel_size=1)

    def forward(self, stages: list[Tensor], out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        maps = [lat(s.permute(0, 3, 1, 2)) for lat, s in zip(self.lateral, stages)]  # NCHW
        x = maps[-1]
        for skip in reversed(maps[:-1]):  # top-down: deep -> shallow
            x = skip + F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.smooth(x)  # (B, D, H/4, W/4)
        albedo = F.interpolate(self.albedo(x), size=out_size, mode="bilinear", align_corners=False)
        texture = F.interpolate(self.texture(x), size=out_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(albedo), texture


class PretextModel(nn.Module):
    """Trainable timm backbone + :class:`FPNDenseHead` for the dense pretext (docs/benchmark.md).

    Args:
        backbone_cfg: which backbone to build (``name``, ``img_size``; ``pretrained``/``weights``
            start from those weights, e.g. to continue a pretraining). ``taps`` and ``frozen``
            are ignored: here the backbone trains, and only its stage maps are used.
        head_channels: width of the dense head.

    Attributes:
        backbone: a :class:`~vtagml_core.model.backbone.FrozenBackbone` built with
            ``frozen=False`` (the same wrapper, normalisation and module walk VTAGML uses later);
            ``backbone.model`` is the headless timm model whose ``state_dict()`` gets saved.
        head: the dense head (discarded after pretraining).
    """

    def __init__(self, backbone_cfg: BackboneConfig | None = None,
                 head_channels: int = DEFAULT_HEAD_CHANNELS) -> None:
        super().__init__()
        cfg = backbone_cfg if backbone_cfg is not None else BackboneConfig()
        self.config = replace(cfg, frozen=False, taps=None)
        self.backbone = FrozenBackbone(self.config)
        self.head = FPNDenseHead(self.backbone.stage_channels, head_channels)

    def stage_maps(self, images: Tensor) -> list[Tensor]:
        """Stage maps ``[(B, h_s, w_s, C_s)]`` at strides 4, 8, 16, 32 of ``images (B, 3, H, W)``
        in [0, 1] (the backbone normalises them and checks their size)."""
        return self.backbone(images).stages

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The timm model's weights, keyed as ``BackboneConfig(weights=...)`` loads them."""
        return {k: v.detach().cpu().contiguous().clone()
                for k, v in self.backbone.model.state_dict().items()}

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images (B, 3, H, W)`` in [0, 1] -> (albedo ``(B, 3, H, W)``, texture logits
        ``(B, NUM_TEXTURES, H, W)``), both at full resolution."""
        return self.head(self.stage_maps(images), tuple(images.shape[-2:]))


def pretext_losses(albedo: Tensor, texture_logits: Tensor, batch: dict) -> dict[str, Tensor]:
    """Per-target losses of the dense pretext: ``{"albedo": L1, "texture": cross-entropy}``.

    Args:
        albedo: ``(B, 3, H, W)`` predicted albedo in [0, 1]; target ``batch["albedo"]`` same shape.
        texture_logits: ``(B, NUM_TEXTURES, H, W)``; target ``batch["texture"]`` ``(B, H, W)`` int64.
    """
    if batch["albedo"].shape != albedo.shape:
        raise ValueError(f"albedo target {tuple(batch['albedo'].shape)} does not match the "
                         f"prediction {tuple(albedo.shape)}")
    return {"albedo": F.l1_loss(albedo, batch["albedo"]),
            "texture": F.cross_entropy(texture_logits, batch["texture"])}
