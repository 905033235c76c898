"""How the kit walks each supported timm family block by block (paper Sec. 3.1 "Encoder Module").

:class:`~vtagml_core.model.backbone.FrozenBackbone` needs two things from its timm model: the
outputs of a few blocks ("taps", read by the adapter layers) and every stage's output (read by
the decoder). A walker runs timm's own modules in order (patch embedding, then each stage's
downsampling and blocks), exactly the calls timm's ``forward_features`` makes, so the outputs are
bit-identical to timm's (tests/test_backbone.py checks it). One walker per family:

- :class:`SwinV2Walk` for :class:`~timm.models.swin_transformer_v2.SwinTransformerV2` (the paper's
  backbone; the kit's tiny CPU backbone too): four stages at strides 4, 8, 16, 32.
- :class:`ViTWalk` for :class:`~timm.models.vision_transformer.VisionTransformer`: single scale.
- :class:`PVTv2Walk` for :class:`~timm.models.pvt_v2.PyramidVisionTransformerV2`: four stages at
  strides 4, 8, 16, 32.

Default placement (Sec. 3.1): on Swin-B V2 the adapters read blocks 15-18 of stage 3 (the last four
of its 18) and both blocks of stage 4, six taps. "For any other vision transformer backbone, our
vision transformer adapters work best when integrated with layers comprising mid-level to
high-level information", so for ViT (no stages) the kit taps four mid-to-high blocks.

To support another family, subclass :class:`FamilyWalk` and add it to :data:`WALKS`.
All maps are channels-last, ``(B, h, w, C)`` (timm's Swin layout).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch.nn.functional as F
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

#: Swin V2 default placement (Sec. 3.1): this many last blocks of stage 3 (blocks 15-18 of Swin-B's
#: 18), then every block of stage 4. Stage 3 with fewer blocks is tapped whole.
SWIN_STAGE3_TAPPED_BLOCKS: int = 4
#: ViT default placement: blocks at these fractions of the depth (block 6, 8, 10, 12 of 12).
VIT_TAP_FRACTIONS: tuple[float, ...] = (1 / 2, 2 / 3, 5 / 6, 1.0)
#: Strides of the four stage maps a single-scale ViT provides to the decoder (resized, see ViTWalk).
VIT_STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)

#: A tapped block, ``(stage, block)``, both 0-based.
Tap = tuple[int, int]


class FamilyWalk(ABC):
    """How to run one timm family module by module; subclass it to support another family.

    Subclasses set ``depths`` (blocks per stage), ``stage_channels`` and ``stage_strides``, and
    name in ``unused_modules`` the timm submodules that :meth:`run` never calls (the closing norm
    and classifier of timm's ``forward_features``/``forward_head``): a trainable backbone keeps
    those fixed, since they would never receive a gradient.
    """

    family: str = ""
    unused_modules: tuple[str, ...] = ()
    depths: list[int]
    stage_channels: list[int]
    stage_strides: list[int]

    @abstractmethod
    def default_taps(self) -> list[Tap]:
        """The paper's placement for this family (Sec. 3.1)."""

    @abstractmethod
    def block(self, tap: Tap) -> nn.Module:
        """The timm block at ``(stage, block)``."""

    @abstractmethod
    def built_size(self) -> tuple[int, int] | None:
        """``(H, W)`` the model is fixed to, or ``None``."""

    @abstractmethod
    def patch_grid_multiple(self) -> int:
        """What image sides must be a multiple of."""

    @abstractmethod
    def run(self, x: Tensor, taps: set[Tap]) -> tuple[list[Tensor], list[Tensor]]:
        """Normalised ``(B, 3, H, W)`` -> (tap maps, stage maps), all ``(B, h, w, C)``."""

    def norm_at(self, tap: Tap) -> nn.LayerNorm:
        return self.block(tap).norm1

    def tap_channels(self, tap: Tap) -> int:
        return self.stage_channels[tap[0]]

    def tap_stride(self, tap: Tap) -> int:
        return self.stage_strides[tap[0]]


class SwinV2Walk(FamilyWalk):
    """Swin V2: ``patch_embed`` then, per stage, ``downsample`` (PatchMerging) and its blocks.

    Stage ``s`` outputs are ``model.layers[s](...)``; the last one is ``forward_features`` before
    timm's final ``norm``. The LayerNorm at a tap is the block's ``norm1``: Swin V2 blocks are
    post-norm (``x + norm1(attn(x))``), so ``norm1`` normalises the attention branch.
    """

    family = "Swin V2"
    unused_modules = ("norm", "head")

    def __init__(self, model: SwinTransformerV2):
        self.model = model
        self.depths = [len(stage.blocks) for stage in model.layers]
        self.stage_channels = [info["num_chs"] for info in model.feature_info]
        self.stage_strides = [info["reduction"] for info in model.feature_info]

    def default_taps(self) -> list[Tap]:
        mid, last = len(self.depths) - 2, len(self.depths) - 1
        first = max(0, self.depths[mid] - SWIN_STAGE3_TAPPED_BLOCKS)
        return [(mid, b) for b in range(first, self.depths[mid])] + [(last, b) for b in range(self.depths[last])]

    def block(self, tap: Tap) -> nn.Module:
        return self.model.layers[tap[0]].blocks[tap[1]]

    def built_size(self) -> tuple[int, int] | None:
        embed = self.model.patch_embed
        return tuple(embed.img_size) if embed.strict_img_size else None

    def patch_grid_multiple(self) -> int:
        """Deepest stride (patch merging halves the map 3 times), and stride x window for every
        stage whose map is split into several windows. timm clips a window larger than its map to
        the map (one window, no constraint); otherwise it would zero-pad partial windows."""
        factors = [self.stage_strides[-1]]
        for stride, stage in zip(self.stage_strides, self.model.layers):
            for blk in stage.blocks:
                factors += [
                    stride * win for win, res in zip(blk.window_size, blk.input_resolution) if win < res
                ]
        return math.lcm(*factors)

    def run(self, x: Tensor, taps: set[Tap]) -> tuple[list[Tensor], list[Tensor]]:
        """``x``: normalised ``(B, 3, H, W)`` -> (taps, stages), all ``(B, h, w, C)``."""
        tapped, stages = [], []
        x = self.model.patch_embed(x)  # (B, H/4, W/4, C0)
        for s, stage in enumerate(self.model.layers):
            x = stage.downsample(x)  # PatchMerging (Identity in stage 0): halves h, w
            for b, blk in enumerate(stage.blocks):
                x = blk(x)
                if (s, b) in taps:
                    tapped.append(x)
            stages.append(x)
        return tapped, stages


class ViTWalk(FamilyWalk):
    """ViT: patch embedding, position embedding, then one sequence of blocks at one stride.

    Taps drop the prefix (CLS/register) tokens and reshape the patch tokens to the patch grid,
    ``(B, H/p, W/p, C)``. ViT is single-scale, so the decoder's four stage maps are made by
    **bilinear resizing of the deepest tap** to strides 4, 8, 16 and 32 (upsampling below the
    patch stride adds no detail: the decoder's skips at 1/4 and 1/8 carry only coarse features).
    The LayerNorm at a tap is the block's ``norm1`` (pre-norm, applied to the block's input).
    """

    family = "ViT"
    unused_modules = ("norm", "fc_norm", "attn_pool", "head")

    def __init__(self, model: VisionTransformer):
        self.model = model
        self.depths = [len(model.blocks)]
        self.patch = tuple(model.patch_embed.patch_size)
        self.stage_channels = [model.embed_dim] * len(VIT_STAGE_STRIDES)
        self.stage_strides = list(VIT_STAGE_STRIDES)

    def default_taps(self) -> list[Tap]:
        depth = self.depths[0]
        blocks = [max(0, round(f * depth) - 1) for f in VIT_TAP_FRACTIONS]
        if any(a >= b for a, b in zip(blocks, blocks[1:])):  # shallow model: fractions collide
            blocks = list(range(max(0, depth - len(VIT_TAP_FRACTIONS)), depth))
        return [(0, b) for b in blocks]

    def block(self, tap: Tap) -> nn.Module:
        return self.model.blocks[tap[1]]

    def tap_channels(self, tap: Tap) -> int:
        return self.model.embed_dim

    def tap_stride(self, tap: Tap) -> int:
        return self.patch[0]

    def built_size(self) -> tuple[int, int] | None:
        embed = self.model.patch_embed
        fixed = embed.strict_img_size and not self.model.dynamic_img_size
        return tuple(embed.img_size) if fixed else None

    def patch_grid_multiple(self) -> int:
        return math.lcm(*self.patch)

    def run(self, x: Tensor, taps: set[Tap]) -> tuple[list[Tensor], list[Tensor]]:
        """``x``: normalised ``(B, 3, H, W)`` -> (taps ``(B, H/p, W/p, C)``, 4 resized stages)."""
        B, _, H, W = x.shape
        grid = (H // self.patch[0], W // self.patch[1])
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))  # (B, N_prefix + N_tok, C)
        tapped = []
        for b, blk in enumerate(m.blocks):
            x = blk(x)
            if (0, b) in taps:
                tapped.append(x[:, m.num_prefix_tokens:].reshape(B, grid[0], grid[1], -1))
        deepest = tapped[-1].permute(0, 3, 1, 2)  # (B, C, h, w)
        stages = [
            F.interpolate(deepest, size=(H // s, W // s), mode="bilinear", align_corners=False)
            .permute(0, 2, 3, 1)
            for s in self.stage_strides
        ]
        return tapped, stages


class PVTv2Walk(FamilyWalk):
    """PVT-v2: overlapping patch embedding, then stages of (downsample, blocks, closing ``norm``).

    Default taps are the **stage outputs of stages 3 and 4** (after each stage's closing
    LayerNorm), written as the last block of those stages; a tap on an earlier block reads that
    block's tokens on the stage grid. PVT-v2 takes any image size that is a multiple of its
    stride 32 (no position table). The LayerNorm at a tap is the tapped block's ``norm1``
    (pre-norm), the same choice as for ViT.
    """

    family = "PVT-v2"
    unused_modules = ("head",)

    def __init__(self, model: PyramidVisionTransformerV2):
        self.model = model
        self.depths = [len(stage.blocks) for stage in model.stages]
        self.stage_channels = [info["num_chs"] for info in model.feature_info]
        self.stage_strides = [info["reduction"] for info in model.feature_info]

    def default_taps(self) -> list[Tap]:
        return [(s, self.depths[s] - 1) for s in (len(self.depths) - 2, len(self.depths) - 1)]

    def block(self, tap: Tap) -> nn.Module:
        return self.model.stages[tap[0]].blocks[tap[1]]

    def built_size(self) -> tuple[int, int] | None:
        return None

    def patch_grid_multiple(self) -> int:
        """Deepest stride, and each stage's stride times its spatial-reduction conv stride."""
        factors = [self.stage_strides[-1]]
        for stride, stage in zip(self.stage_strides, self.model.stages):
            sr = getattr(stage.blocks[0].attn, "sr", None)
            if isinstance(sr, nn.Conv2d):
                factors.append(stride * sr.stride[0])
        return math.lcm(*factors)

    def run(self, x: Tensor, taps: set[Tap]) -> tuple[list[Tensor], list[Tensor]]:
        """``x``: normalised ``(B, 3, H, W)`` -> (taps, stages), all ``(B, h, w, C)``."""
        tapped, stages = [], []
        x = self.model.patch_embed(x)  # (B, H/4, W/4, C0); later stages take NCHW
        for s, stage in enumerate(self.model.stages):
            if stage.downsample is not None:
                x = stage.downsample(x)  # (B, C, h, w) -> (B, h/2, w/2, C')
            B, h, w, C = x.shape
            tokens = x.reshape(B, h * w, C)
            last = len(stage.blocks) - 1
            for b, blk in enumerate(stage.blocks):
                tokens = blk(tokens, (h, w))
                if (s, b) in taps and b != last:
                    tapped.append(tokens.reshape(B, h, w, C))
            out = stage.norm(tokens).reshape(B, h, w, -1)
            if (s, last) in taps:
                tapped.append(out)
            stages.append(out)
            x = out.permute(0, 3, 1, 2).contiguous()  # NCHW, as timm hands it to the next stage
        return tapped, stages


#: Supported timm classes and how to walk them (subclasses match too).
WALKS: tuple[tuple[type[nn.Module], type[FamilyWalk]], ...] = (
    (SwinTransformerV2, SwinV2Walk),
    (VisionTransformer, ViTWalk),
    (PyramidVisionTransformerV2, PVTv2Walk),
)


def make_walk(model: nn.Module, name: str) -> FamilyWalk:
    """The walker for ``model`` (built from config name ``name``); unsupported families raise."""
    for cls, walk in WALKS:
        if isinstance(model, cls):
            return walk(model)
    supported = ", ".join(walk.family for _, walk in WALKS)
    raise ValueError(
        f"backbone {name!r} is a {type(model).__name__}, which the kit cannot tap; supported "
        f"families: {supported} (e.g. swinv2_base_window8_256, vit_base_patch16_224, pvt_v2_b2)"
    )


def validate_taps(taps: list[Tap], depths: list[int], name: str) -> list[Tap]:
    """``taps`` if every one is a block of a model with ``depths`` blocks per stage, in forward
    order without repeats; else ValueError naming the bad tap and the model's layout."""
    for s, b in taps:
        if not (0 <= s < len(depths) and 0 <= b < depths[s]):
            layout = ", ".join(f"stage {i}: blocks 0-{d - 1}" for i, d in enumerate(depths))
            raise ValueError(f"backbone.taps: ({s}, {b}) is not a block of {name!r} ({layout})")
    if not taps or sorted(set(taps)) != list(taps):
        raise ValueError(f"backbone.taps must be distinct (stage, block) pairs in forward order, got {taps}")
    return list(taps)
