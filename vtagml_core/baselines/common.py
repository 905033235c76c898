"""Parts shared by the peer-system baselines: MTFormer, DeMTG and AutoTaskFormer (docs/settings.md, The methods).

The three peers are compared with VTAGML on equal terms, so they share with it everything that
is not their own idea:

- the **backbone**: the same :class:`~vtagml_core.model.backbone.FrozenBackbone`, frozen unless
  ``config.backbone.frozen`` is False (the fine-tuned setting), read through its four stage
  maps at strides 4, 8, 16, 32;
- the **interface** of :class:`~vtagml_core.model.vtagml.VTAGML` (:class:`PeerModel`), so one
  trainer, one evaluation and one set of settings run every method;
- the **output heads** (:class:`FullResHeads`): per-task conv heads from a stride-4 map to
  ``(B, K_t, H, W)``, with the light full-resolution image path that docs/benchmark.md found
  necessary for edges (VTAGML's decoder has the same path, :class:`ImageSkip`);
- small **attention blocks** (:class:`MultiHeadAttention`, :class:`PreNormBlock`) written out so
  that each peer can change exactly the part its paper changes (which task gives the query, the
  key, the value).

Method-specific losses: a peer that has extra loss terms defines ``extra_losses(outputs, batch)
-> {name: tensor}`` (the trainer adds them to the total); a peer with learned loss weighting
defines ``weight_losses(per_task) -> total``. The trainer checks ``hasattr``; it never
special-cases a method by name.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Iterable

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from torch import Tensor, nn

from vtagml_core.model.backbone import IMAGE_CHANNELS, BackboneOutput, FrozenBackbone
from vtagml_core.model.decoder import DEFAULT_HEAD_DIM, LINEAR_INIT_STD, ImageSkip
from vtagml_core.model.params import parameter_table
from vtagml_core.model.vtagml import ModelConfig
from vtagml_core.tasks import parse_tasks, task_channels

#: Channels of the light full-resolution image path (VTAGML's ``DecoderConfig.image_skip_channels``).
IMAGE_SKIP_CHANNELS: int = 16
#: Width of each task head's full-resolution part (the expensive part: it runs on H x W pixels).
HEAD_HIDDEN_CHANNELS: int = 16
#: Kernel size of the heads' spatial convolutions.
HEAD_KERNEL: int = 3
#: Normalise the heads' input map and hidden layer (:class:`FullResHeads`). Without it, measured
#: in the quick preset (lr 0.006, S-D-N-E), the edge heads of MTFormer and AutoTaskFormer drove
#: their logits to about -5000 within the first epoch (hidden activations of ~600): sigmoid is
#: then exactly 0, the L1-on-sigmoid edge loss has no gradient left, and odsF stayed 0. The
#: VTAGML decoder ends in a LayerNorm (:class:`~vtagml_core.model.decoder.PatchExpand`), which
#: bounds its heads' input the same way.
HEAD_NORM: bool = True
#: Stride of the feature map the heads read (the decoders of all methods end at 1/4, Swin-Unet style).
HEAD_INPUT_STRIDE: int = 4
#: Interpolation used to bring coarse maps to finer grids (bilinear, as FPN-style decoders do).
UPSAMPLE_MODE: str = "bilinear"
#: Default width of a peer's decoder = this times the backbone's stride-4 channels: 64 for the
#: kit's tiny Swin V2 (32 channels), 256 for Swin-B V2 (128), so the peers scale with the backbone.
WIDTH_PER_STEM_CHANNEL: int = 2


# --------------------------------------------------------------------------- the shared interface


class WithoutTROA:
    """VTAGML's training interface for a model without TROA: no per-task gradients, no affinity
    update, features straight from ``self.backbone`` (peers and parameter-efficient methods)."""

    @property
    def tracks_task_grads(self) -> bool:
        """No TROA: the trainer never keeps per-task gradients for this model."""
        return False

    def update_affinity(self) -> None:
        """No task-affinity matrix to update (VTAGML's TROA step); always None."""
        return None

    def encode(self, images: Tensor) -> BackboneOutput:
        """Backbone features of ``images (B, 3, H, W)`` in [0, 1] (with autograd where the
        backbone has trainable parameters)."""
        return self.backbone(images)


class PeerModel(WithoutTROA, nn.Module, ABC):
    """Base of the peer baselines: VTAGML's interface without TROA.

    Subclasses build their decoder in ``__init__`` after calling this one, implement
    :meth:`forward` and :meth:`components`.

    Attributes:
        config: the :class:`ModelConfig` the model was built from.
        method: the registry name of the method (``"mtformer"``, ...).
        tasks: canonical task names; ``num_classes``: segmentation classes.
        backbone: the frozen (or fine-tuned) timm backbone.
    """

    #: Registry name; subclasses override it.
    method: str = ""

    def __init__(self, config: ModelConfig, backbone: FrozenBackbone | None = None) -> None:
        """``backbone``: reuse an already built backbone of ``config.backbone`` (e.g. a frozen one
        shared by several candidate networks); None builds it from the config."""
        super().__init__()
        self.config = config
        self.tasks: tuple[str, ...] = parse_tasks(config.tasks)
        self.num_classes = config.resolved_num_classes()
        if backbone is not None and (backbone.config.img_size, backbone.frozen) != (
                config.backbone.img_size, config.backbone.frozen):
            raise ValueError(
                f"the given backbone ({backbone.config.img_size} px, frozen={backbone.frozen}) does "
                f"not match the config ({config.backbone.img_size} px, frozen={config.backbone.frozen}); "
                "pass backbone=None to build one from the config")
        self.backbone = backbone if backbone is not None else FrozenBackbone(config.backbone)

    @property
    def img_size(self) -> int:
        return self.config.backbone.img_size

    def _features(self, images: Tensor, features: BackboneOutput | None) -> BackboneOutput:
        return features if features is not None else self.encode(images)

    def extra_losses(self, outputs: dict[str, Tensor], batch: dict) -> dict[str, Tensor]:
        """Method-specific loss terms to add to the total; none by default."""
        return {}

    @abstractmethod
    def components(self) -> dict[str, nn.Module]:
        """Named parts for the parameter report (Table 6), backbone first."""

    def parameter_report(self) -> list[dict]:
        """Rows ``{component, total, trainable}`` plus a total row (paper Table 6 format)."""
        return parameter_table(self.components())

    def backbone_label(self) -> str:
        """Component name of the backbone in :meth:`parameter_report`."""
        return "backbone (frozen)" if self.backbone.frozen else "backbone (fine-tuned)"


# --------------------------------------------------------------------------- layout helpers


def nhwc_to_nchw(x: Tensor) -> Tensor:
    """``(B, h, w, C) -> (B, C, h, w)``, contiguous."""
    return x.permute(0, 3, 1, 2).contiguous()


def nchw_to_tokens(x: Tensor) -> Tensor:
    """``(B, C, h, w) -> (B, h*w, C)`` tokens in row-major order."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_nchw(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """``(B, h*w, C) -> (B, C, h, w)``; ``grid`` is ``(h, w)``."""
    b, n, c = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not fill a {grid[0]}x{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(b, c, grid[0], grid[1])


def pooled_grid(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Grid for attention over a ``size`` map with at most ``max_side`` tokens per side.

    Keeps the aspect ratio; a map already small enough keeps its size. E.g. ``(32, 32)`` with
    ``max_side=16`` -> ``(16, 16)``; ``(8, 8)`` -> ``(8, 8)``.
    """
    if max_side < 1:
        raise ValueError(f"max_tokens_side must be >= 1, got {max_side}")
    h, w = size
    scale = max(h, w) / max_side
    if scale <= 1:
        return (h, w)
    return (max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale)))


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``size``; average pooling when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode=UPSAMPLE_MODE, align_corners=False)


def init_linear_(module: nn.Module) -> None:
    """timm's transformer init for every ``nn.Linear`` inside ``module``: N(0, 0.02), zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=LINEAR_INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def default_width(backbone: FrozenBackbone) -> int:
    """:data:`WIDTH_PER_STEM_CHANNEL` x the backbone's stride-4 (first stage) channels."""
    return WIDTH_PER_STEM_CHANNEL * backbone.stage_channels[0]


def heads_for(width: int) -> int:
    """Attention heads for ``width`` channels: Swin's 32 channels per head, and a divisor of ``width``."""
    h = max(1, width // DEFAULT_HEAD_DIM)
    while width % h:
        h -= 1
    return h


def check_heads(dim: int, heads: int, where: str) -> None:
    if heads < 1 or dim % heads:
        raise ValueError(f"{where}: num_heads={heads} must be >= 1 and divide the width {dim}")


# --------------------------------------------------------------------------- attention


class MultiHeadAttention(nn.Module):
    """``softmax(Q K^T / sqrt(d)) V`` with its own q, k, v and output projections.

    Shapes: ``query (B, L_q, C)``, ``key`` and ``value`` ``(B, L_k, C)`` -> ``(B, L_q, C)``.
    Attention runs over the token axis of each batch element separately (never over the batch).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        check_heads(dim, num_heads, "MultiHeadAttention")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: Tensor) -> Tensor:
        """``(B, L, C) -> (B, heads, L, C / heads)``."""
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        """``(B, heads, L, d) -> (B, L, heads * d)``."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        q, k, v = self.split_heads(self.q(query)), self.split_heads(self.k(key)), self.split_heads(self.v(value))
        return self.proj(self.merge_heads(F.scaled_dot_product_attention(q, k, v)))


class PreNormBlock(nn.Module):
    """Transformer block with global self-attention (MTFormer Eq. 1): ``(B, L, C) -> (B, L, C)``.

    ``x + MSA(LN(x))`` then ``x + FFN(LN(x))``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y)
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------- heads


def _head_norm(channels: int, on: bool) -> nn.Module:
    """``GroupNorm(1, C)`` (a LayerNorm over each map's channels and pixels), or the identity."""
    return nn.GroupNorm(1, channels) if on else nn.Identity()


class FullResHeads(nn.Module):
    """Per-task conv heads: stride-4 features -> raw outputs ``(B, K_t, H, W)``.

    For each task: a GroupNorm, a 3x3 conv and GELU at stride 4, a 1x1 conv down to
    :data:`HEAD_HIDDEN_CHANNELS`, bilinear upsampling to the image size, concatenation with a
    light full-resolution image path (shared by all tasks, computed once per forward), a 3x3
    conv, GroupNorm and GELU, and a 1x1 conv to K_t channels (``task_channels``). The two
    norms (``norm``, :data:`HEAD_NORM`) keep the logits bounded. K_t: classes for seg, 1
    for depth and edges, 3 for normals; outputs are raw (logits / unnormalised normals).

    Args:
        tasks: the task set.
        in_channels: channels of each task's stride-4 input map ``(B, C_in, H/4, W/4)``.
        num_classes: segmentation classes.
        image_channels: width of the image path; 0 removes it.
        hidden: width of the full-resolution part.
    """

    def __init__(self, tasks: Iterable[str], in_channels: int, num_classes: int,
                 image_channels: int = IMAGE_SKIP_CHANNELS, hidden: int = HEAD_HIDDEN_CHANNELS,
                 norm: bool = HEAD_NORM) -> None:
        super().__init__()
        self.tasks = parse_tasks(list(tasks))
        if in_channels < 1 or hidden < 1 or image_channels < 0:
            raise ValueError(f"FullResHeads: bad widths in={in_channels}, hidden={hidden}, "
                             f"image={image_channels}")
        pad = HEAD_KERNEL // 2
        self.image_skip = ImageSkip(IMAGE_CHANNELS, image_channels) if image_channels else None
        self.coarse = nn.ModuleDict({t: nn.Sequential(
            _head_norm(in_channels, norm),
            nn.Conv2d(in_channels, in_channels, HEAD_KERNEL, padding=pad), nn.GELU(),
            nn.Conv2d(in_channels, hidden, 1),
        ) for t in self.tasks})
        self.fine = nn.ModuleDict({t: nn.Sequential(
            nn.Conv2d(hidden + image_channels, hidden, HEAD_KERNEL, padding=pad),
            _head_norm(hidden, norm), nn.GELU(),
            nn.Conv2d(hidden, task_channels(t, num_classes), 1),
        ) for t in self.tasks})

    def forward(self, feats: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
        """``feats {task: (B, C_in, h, w)}``, ``image (B, 3, H, W)`` -> ``{task: (B, K_t, H, W)}``."""
        size = tuple(image.shape[-2:])
        img = self.image_skip(image) if self.image_skip is not None else None
        out = {}
        for t in self.tasks:
            if t not in feats:
                continue
            x = F.interpolate(self.coarse[t](feats[t]), size=size, mode=UPSAMPLE_MODE, align_corners=False)
            if img is not None:
                x = torch.cat([x, img], dim=1)
            out[t] = self.fine[t](x)
        return out


def head_input_size(img_size: int) -> tuple[int, int]:
    """Grid of the heads' input map: the image at stride :data:`HEAD_INPUT_STRIDE`."""
    return (img_size // HEAD_INPUT_STRIDE, img_size // HEAD_INPUT_STRIDE)
