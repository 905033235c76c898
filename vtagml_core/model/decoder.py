"""The VTAGML decoder: four stages of Swin V2 blocks guided by adapter and backbone features.

Paper Sec. 3.3 ("Decoder Module"): "our decoder architecture comprises four stages, each
containing 2 sequential transformer blocks [...] alternate regular and shifted window attention
[...] Between each stage, we employ an upsampling layer to double the spatial resolution and
halve the channel dimension". The adapters "guide the stages of the decoder in a sequential
manner": the deepest adapter output is the decoder input, and skips join after each upsampling
(docs/method.md):

==========  ======================================  ===============================
stride       joins the decoder                        tiny kit (128 px) / paper (256)
==========  ======================================  ===============================
1/32         deepest adapter output (decoder input)   (B, 4, 4, 256) / (B, 8, 8, 1024)
1/16         stage-3 adapter output                   (B, 8, 8, 128) / (B, 16, 16, 512)
1/8          backbone stage-2 features                (B, 16, 16, 64) / (B, 32, 32, 256)
1/4          backbone stage-1 features                (B, 32, 32, 32) / (B, 64, 64, 128)
==========  ======================================  ===============================

Choices this module makes where the paper is silent (each one is a small, named piece below):

* **Upsampling** is Swin-Unet's *patch expanding* (ref. [3] of the paper): a linear layer
  ``C -> 4 * C_next`` followed by a pixel shuffle into 2x2 tokens of ``C_next`` channels and a
  LayerNorm (:class:`PatchExpand`). With ``C_next = C / 2`` this is exactly Swin-Unet's
  ``Linear(C, 2C)``.
* **Skip fusion** is concatenation then a linear projection back to the stage width, as
  Swin-Unet's ``concat_back_dim`` (:class:`SkipFusion`). Each skip is LayerNorm-ed first, because
  frozen backbone features and adapter outputs live on different scales.
* **Full resolution**: after the stride-4 stage, a x4 patch expanding (Swin-Unet's
  ``FinalPatchExpand_X4``) gives an ``H x W`` map. docs/benchmark.md reports that edges barely
  beat predicting zeros without a full-resolution path, so a light image branch (two 3x3 convs,
  :class:`ImageSkip`, in :mod:`.decoder_image` with the fusion conv) is concatenated and fused
  with one 3x3 conv. ``image_skip_channels=0`` removes that branch (and the fusion conv)
  completely. With ``share_image_skip`` the image branch is computed once per forward and given
  to every task's decoder (as the peers'
  :class:`~vtagml_core.baselines.common.FullResHeads` do): the image carries no task, and at
  128 px the per-task copies were a quarter of a four-task CPU training step.
* **Attention heads**: the paper lists 48/24/12/6 heads, which do not divide Swin-B V2's
  1024/512/256/128 channels (1024 / 48 is not an integer). By default this kit keeps Swin's head
  width of :data:`DEFAULT_HEAD_DIM` channels (32/16/8/4 heads at paper scale); ``num_heads`` sets
  them explicitly.
* **Initialisation** follows timm's ``SwinTransformerV2``: linear weights ~ N(0, 0.02) and the
  residual post-norms of every block set to zero, so each block starts as the identity.

All token maps are NHWC ``(B, h, w, C)`` like timm's Swin; the output is NCHW ``(B, D, H, W)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from timm.layers import trunc_normal_
from timm.models.swin_transformer_v2 import SwinTransformerV2Block

from .decoder_image import (  # ImageSkip and the constants stay importable from here
    IMAGE_CONV_KERNEL, RGB_CHANNELS, ImageSkip, _check_nchw, make_image_fuse)

#: Swin's channels per attention head (Swin-T/S/B all use 32); sets the default head counts.
DEFAULT_HEAD_DIM: int = 32
#: Stride of the decoder input (deepest adapter output) for a Swin backbone: 4 x 2^3.
DEFAULT_DEEP_STRIDE: int = 32
#: Spatial factor of the upsampling between two decoder stages (paper: "double the resolution").
STAGE_UPSAMPLE: int = 2
#: Standard deviation of the truncated-normal init of linear weights, as timm's Swin V2.
LINEAR_INIT_STD: float = 0.02


@dataclass
class DecoderConfig:
    """Architecture of one task decoder (paper Sec. 3.3); the same config builds every task's.

    Attributes:
        embed_dims: channels of each decoder stage, deepest first. ``None`` halves from the input
            channels at every stage (paper: "halve the channel dimension"), e.g. 256/128/64/32.
        depth_per_stage: Swin V2 blocks per stage; they alternate regular and shifted windows
            (paper: 2 per stage).
        num_heads: attention heads per stage. ``None`` gives ``dim // DEFAULT_HEAD_DIM`` (at least
            1, and a divisor of ``dim``).
        window_size: attention window (clamped to the feature map size, as timm does; a stage
            whose map fits in one window has no shift, since shifting one window changes nothing).
        mlp_ratio: hidden width of each block's MLP relative to its channels.
        shared: one decoder for all tasks (paper Fig. 2) instead of task-specific decoders of one
            architecture (paper Sec. 3.3 text and the official code; the default).
        image_skip_channels: width of the light full-resolution image path (docs/benchmark.md);
            0 disables it.
        share_image_skip: one image path for all tasks (built by
            :class:`~vtagml_core.model.heads.MultiTaskDecoder`, computed once per forward) instead
            of one per task decoder; each decoder keeps its own fusion conv.
        image_fuse_kernel: kernel of the conv that fuses the image path with the decoder output
            at full resolution (odd). 3 mixes a 3x3 neighbourhood; 1 is ~9x cheaper and at the
            quick preset's 128 px the 3x3 fuse alone was ~40% of a 4-task training step (the
            image path's own two 3x3 convs already see a 5x5 neighbourhood).
        zero_init_residual: start every Swin block as the identity by zeroing its residual
            post-norm weights, as timm's Swin V2 does.
    """

    embed_dims: list[int] | None = None
    depth_per_stage: int = 2
    num_heads: list[int] | None = None
    window_size: int = 8
    mlp_ratio: float = 4.0
    shared: bool = False
    image_skip_channels: int = 16
    share_image_skip: bool = False
    image_fuse_kernel: int = IMAGE_CONV_KERNEL
    zero_init_residual: bool = True

    def stage_dims(self, in_channels: int, num_stages: int) -> list[int]:
        """Channels of each stage, deepest first, for a decoder input of ``in_channels``.

        Raises:
            ValueError: when ``embed_dims`` has the wrong length or a non-positive entry, or the
                default halving would not give whole channel counts.
        """
        if self.embed_dims is not None:
            dims = [int(d) for d in self.embed_dims]
            if len(dims) != num_stages or min(dims) < 1:
                raise ValueError(
                    f"DecoderConfig.embed_dims={self.embed_dims} must list {num_stages} positive "
                    f"channel counts (one per decoder stage, deepest first), or be None to halve "
                    f"from the input's {in_channels} channels"
                )
            return dims
        factor = STAGE_UPSAMPLE ** (num_stages - 1)
        if in_channels % factor:
            raise ValueError(
                f"cannot halve {in_channels} input channels {num_stages - 1} times; set "
                f"DecoderConfig.embed_dims explicitly"
            )
        return [in_channels // STAGE_UPSAMPLE**i for i in range(num_stages)]

    def stage_heads(self, dims: list[int]) -> list[int]:
        """Attention heads of each stage; each must divide that stage's channels.

        Raises:
            ValueError: when ``num_heads`` has the wrong length or does not divide the channels.
        """
        if self.num_heads is None:
            heads = []
            for d in dims:
                h = max(1, d // DEFAULT_HEAD_DIM)
                while d % h:
                    h -= 1
                heads.append(h)
            return heads
        heads = [int(h) for h in self.num_heads]
        if len(heads) != len(dims) or any(h < 1 or d % h for d, h in zip(dims, heads)):
            raise ValueError(
                f"DecoderConfig.num_heads={self.num_heads} must give, for each of the {len(dims)} "
                f"stages with channels {dims}, a head count that divides the channels; or use "
                f"None for {DEFAULT_HEAD_DIM} channels per head"
            )
        return heads

    def validate(self) -> None:
        """Raise ValueError naming the field when a scalar setting is out of range."""
        if self.depth_per_stage < 1:
            raise ValueError(f"depth_per_stage must be >= 1, got {self.depth_per_stage}")
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.image_skip_channels < 0:
            raise ValueError(
                f"image_skip_channels must be >= 0 (0 disables the image path), "
                f"got {self.image_skip_channels}"
            )
        if self.image_fuse_kernel < 1 or self.image_fuse_kernel % 2 == 0:
            raise ValueError(
                f"image_fuse_kernel must be a positive odd number (1 or 3 keep the map size), "
                f"got {self.image_fuse_kernel}"
            )


class PatchExpand(nn.Module):
    """Upsample tokens by ``scale`` (Swin-Unet patch expanding): ``(B,h,w,C) -> (B,sh,sw,C_out)``.

    A linear layer maps each token to ``scale**2 * C_out`` channels, which are rearranged into a
    ``scale x scale`` block of tokens (a pixel shuffle), then LayerNorm-ed.
    """

    def __init__(self, in_dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, self.out_dim)
        return self.norm(x)


class SkipFusion(nn.Module):
    """Join a skip to the decoder stream: ``Linear(concat(x, LN(skip)))`` -> ``(B, h, w, C)``.

    ``x`` is ``(B, h, w, C)`` (upsampled decoder tokens), ``skip`` is ``(B, h, w, C_skip)``.
    """

    def __init__(self, dim: int, skip_dim: int) -> None:
        super().__init__()
        self.skip_norm = nn.LayerNorm(skip_dim)
        self.proj = nn.Linear(dim + skip_dim, dim)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.proj(torch.cat([x, self.skip_norm(skip)], dim=-1))


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


class SwinDecoder(nn.Module):
    """One task decoder (paper Sec. 3.3): Swin V2 stages from stride 32 up to full resolution.

    Args:
        cfg: architecture settings (:class:`DecoderConfig`).
        in_channels: channels of the decoder input (the deepest adapter output).
        skip_channels: channels of the skips, deep to shallow, e.g. ``[128, 64, 32]`` for
            stride 16 (stage-3 adapter output), 8 and 4 (backbone stages 2 and 1). The decoder
            has ``len(skip_channels) + 1`` stages (4 in the paper).
        img_size: input image size ``H`` or ``(H, W)``; fixes the feature size of every stage
            (timm's Swin V2 blocks are built for one input resolution).
        deep_stride: stride of the decoder input relative to the image (32 for Swin).
        in_chans: channels of the image given to the full-resolution path.

    Shapes (tiny kit): deep ``(B, 4, 4, 256)``; skips ``[(B, 8, 8, 128), (B, 16, 16, 64),
    (B, 32, 32, 32)]``; image ``(B, 3, 128, 128)``; output ``(B, 32, 128, 128)``.
    """

    def __init__(
        self,
        cfg: DecoderConfig,
        in_channels: int,
        skip_channels: list[int],
        img_size: int | tuple[int, int],
        deep_stride: int = DEFAULT_DEEP_STRIDE,
        in_chans: int = RGB_CHANNELS,
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.img_size = _as_hw(img_size)
        self.in_channels = in_channels
        self.skip_channels = list(skip_channels)
        self.in_chans = in_chans
        num_stages = len(self.skip_channels) + 1
        self.final_scale = deep_stride // STAGE_UPSAMPLE ** (num_stages - 1)
        if self.final_scale < 1 or deep_stride % STAGE_UPSAMPLE ** (num_stages - 1):
            raise ValueError(
                f"deep_stride={deep_stride} cannot be halved {num_stages - 1} times (one per "
                f"skip); give fewer skips or the backbone's true stride"
            )
        if any(s % deep_stride for s in self.img_size):
            raise ValueError(
                f"img_size={self.img_size} must be a multiple of the decoder input stride "
                f"{deep_stride}; resize or crop the images"
            )
        self.dims = cfg.stage_dims(in_channels, num_stages)
        self.heads = cfg.stage_heads(self.dims)
        self.feature_sizes = [
            (self.img_size[0] // (deep_stride // STAGE_UPSAMPLE**i),
             self.img_size[1] // (deep_stride // STAGE_UPSAMPLE**i))
            for i in range(num_stages)
        ]

        self.input_norm = nn.LayerNorm(in_channels)
        self.input_proj = (
            nn.Linear(in_channels, self.dims[0]) if in_channels != self.dims[0] else nn.Identity()
        )
        self.upsamples = nn.ModuleList(
            PatchExpand(self.dims[i], self.dims[i + 1], STAGE_UPSAMPLE) for i in range(num_stages - 1)
        )
        self.fusions = nn.ModuleList(
            SkipFusion(self.dims[i + 1], c) for i, c in enumerate(self.skip_channels)
        )
        self.stages = nn.ModuleList(
            self._make_stage(dim, heads, size)
            for dim, heads, size in zip(self.dims, self.heads, self.feature_sizes)
        )
        last = self.dims[-1]
        self.final_upsample = (
            PatchExpand(last, last, self.final_scale) if self.final_scale > 1 else nn.Identity()
        )
        own_skip = cfg.image_skip_channels > 0 and not cfg.share_image_skip
        self.image_skip: ImageSkip | None = (
            ImageSkip(in_chans, cfg.image_skip_channels) if own_skip else None)
        if cfg.image_skip_channels > 0:
            self.image_fuse: nn.Module | None = make_image_fuse(
                last, cfg.image_skip_channels, cfg.image_fuse_kernel)
        else:
            self.image_fuse = None
        self._init_weights()

    def _make_stage(self, dim: int, heads: int, size: tuple[int, int]) -> nn.Sequential:
        """``depth_per_stage`` blocks alternating shift 0 and ``window // 2`` (paper Sec. 3.3)."""
        w = self.cfg.window_size
        return nn.Sequential(*(
            SwinTransformerV2Block(
                dim=dim,
                input_resolution=size,
                num_heads=heads,
                window_size=w,
                shift_size=0 if j % 2 == 0 else w // 2,
                mlp_ratio=self.cfg.mlp_ratio,
            )
            for j in range(self.cfg.depth_per_stage)
        ))

    def _init_weights(self) -> None:
        """timm Swin V2 init: linear weights ~ N(0, 0.02), zero biases, zero residual post-norms."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=LINEAR_INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.cfg.zero_init_residual:
            for stage in self.stages:
                for blk in stage:
                    for norm in (blk.norm1, blk.norm2):
                        nn.init.zeros_(norm.weight)
                        nn.init.zeros_(norm.bias)

    @property
    def out_channels(self) -> int:
        """Channels ``D`` of the full-resolution output map (the heads' input)."""
        return self.dims[-1]

    def _check(self, name: str, x: Tensor, size: tuple[int, int], channels: int) -> None:
        want = (size[0], size[1], channels)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"{name}: expected NHWC shape (B, {want[0]}, {want[1]}, {want[2]}) for img_size "
                f"{self.img_size}, got {tuple(x.shape)}. If the tensor is NCHW, permute(0, 2, 3, 1) "
                f"it; if the image size changed, build the decoder with the new img_size"
            )

    def forward(self, deep: Tensor, skips: list[Tensor], image: Tensor | None = None,
                image_features: Tensor | None = None) -> Tensor:
        """Decode to full resolution.

        Args:
            deep: deepest adapter output ``(B, h0, w0, C_in)``, stride ``deep_stride``.
            skips: deep to shallow, ``[(B, 2h0, 2w0, C_s1), (B, 4h0, 4w0, C_s2), ...]``.
            image: ``(B, 3, H, W)``; required when this decoder owns the image path, ignored
                otherwise.
            image_features: ``(B, C_img, H, W)``, the shared image path's output; required
                when ``share_image_skip`` is on, ignored otherwise.

        Returns:
            ``(B, out_channels, H, W)`` features for the task head.

        Raises:
            ValueError: for a missing input or a shape other than the configured sizes.
        """
        if len(skips) != len(self.skip_channels):
            raise ValueError(
                f"expected {len(self.skip_channels)} skips (deep to shallow, channels "
                f"{self.skip_channels}), got {len(skips)}"
            )
        self._check("deep", deep, self.feature_sizes[0], self.in_channels)
        x = self.stages[0](self.input_proj(self.input_norm(deep)))
        for i, (up, fuse, stage) in enumerate(zip(self.upsamples, self.fusions, self.stages[1:])):
            self._check(f"skips[{i}]", skips[i], self.feature_sizes[i + 1], self.skip_channels[i])
            x = stage(fuse(up(x), skips[i]))
        x = self.final_upsample(x).permute(0, 3, 1, 2)  # (B, D, H, W)
        if self.image_fuse is None:
            return x.contiguous()
        if self.image_skip is not None:
            _check_nchw("image", image, (deep.shape[0], self.in_chans, *self.img_size),
                        "the full-resolution image path is on; set image_skip_channels=0 to "
                        "disable it")
            image_features = self.image_skip(image)
        else:
            _check_nchw("image_features", image_features,
                        (deep.shape[0], self.cfg.image_skip_channels, *self.img_size),
                        "share_image_skip is on: pass the shared ImageSkip's output, as "
                        "MultiTaskDecoder does")
        return self.image_fuse(torch.cat([x, image_features], dim=1))

    def extra_repr(self) -> str:
        return (f"dims={self.dims}, heads={self.heads}, feature_sizes={self.feature_sizes}, "
                f"image_skip_channels={self.cfg.image_skip_channels}")

