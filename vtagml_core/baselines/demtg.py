"""DeMTG (Xu et al., deformable mixer + task-aware gating transformer) as a kit baseline.

Paper: Xu et al., "Deformable Mixer Transformer with Gating for Multi-Task Learning of Dense Prediction" (DeMTG). What each part implements:

===============================  ===============================================================
paper                             here
===============================  ===============================================================
Sec. 3.2 feature extractor        :class:`FeatureExtractor`: the four backbone stage maps
                                  resized to one grid and concatenated (Fig. 3)
Sec. 3.3 deformable mixer,        :class:`DeformableMixer`, one per task: LayerNorm + linear
Eq. 1-5                           C -> C' (Eq. 1), then ``mixer_depth`` times (paper: d = 2)
                                  channel mixing (1x1 conv, GELU, BN; Eq. 2-3) and spatial
                                  deformable convolution (torchvision ``deform_conv2d`` with
                                  offsets from a conv, GELU, BN, residual; Eq. 4-5)
Sec. 3.4 task interaction,        :class:`TaskInteraction`: one multi-head self-attention over
Eq. 8-10                          the concatenated tokens of all tasks (T*N tokens per image),
                                  then the sMLP (linear + LayerNorm)
Sec. 3.4 task query, Eq. 11-13    :class:`TaskQuery`, one per task: the task's deformed tokens are
                                  the queries, the task-interacted tokens the keys and values
Sec. 3.4 shared spatial gating,   :class:`SharedSpatialGating`, one module for all tasks:
Eq. 14-16                         LN, linear to 2C', GELU, split, ``X1 * Conv1d(LN(X2))`` with
                                  the 1-D convolution across tokens (spatial), linear
Sec. 3.5 loss, Eq. 17             the kit's weighted sum (``MultiTaskLoss``); no extra terms
heads                             :class:`FullResHeads` (conv heads)
===============================  ===============================================================

What the kit changed, and why:

* **Resolution.** The paper runs everything at 1/4 of the image; its task-interaction attention
  then has ``T * H/4 * W/4`` tokens (over 76,000 for four tasks on NYUD), far beyond a CPU. Here
  the feature extractor and the deformable mixers work at stride ``feature_stride`` (8: a 16x16
  map at 128 px), and **the attention parts (task interaction, task query, gating) run on that
  map average-pooled to at most ``max_tokens_side`` tokens per side** (16x16 = 256 tokens per
  task, 1,024 for S-D-N-E). The result is upsampled to stride 4 and added to a light
  upsampling path (the stride-4 backbone map, LayerNorm-ed and projected to C') before the heads.
* **Residuals.** Eq. 3 (channel mixing) and Eq. 14-16 (gating) print no residual; the kit adds
  one around each (the brief's "each with GELU and BatchNorm and residual"), so every block
  starts close to the identity. The gating's token convolution starts at weight 0 and bias 1,
  gMLP's initialisation (ref. Dauphin et al. / gMLP), so the gate starts open.
* The spatial deformable convolution is depthwise (one 3x3 kernel per channel): the paper
  separates spatial mixing (deformable) from channel mixing (1x1), as MLP-Mixer does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from vtagml_core.model.backbone import BackboneOutput, FrozenBackbone
from vtagml_core.model.vtagml import ModelConfig

from .common import (
    FullResHeads,
    MultiHeadAttention,
    PeerModel,
    check_heads,
    default_width,
    head_input_size,
    heads_for,
    init_linear_,
    nchw_to_tokens,
    nhwc_to_nchw,
    pooled_grid,
    resize,
    tokens_to_nchw,
)

#: Offset channels per sampling point of a 2-D deformable kernel: (dy, dx).
OFFSET_COORDS: int = 2
#: Initial bias of the gating's token convolution (gMLP: the gate starts as identity).
GATE_INIT_BIAS: float = 1.0


@dataclass
class DeMTGConfig:
    """DeMTG's own settings (the rest comes from :class:`ModelConfig`).

    Attributes:
        dim: C', the channels after the mixer's first linear layer (Eq. 1); None =
            ``default_width(backbone)`` (64 for the tiny Swin V2, 256 for Swin-B).
        feature_stride: stride of the feature extractor's output and of the mixers.
        mixer_depth: d, the number of (channel mixing, spatial deformable) pairs (paper: 2).
        deform_kernel: size of the deformable kernel.
        num_heads: attention heads of the task interaction and task query blocks; None = 32
            channels per head.
        max_tokens_side: the attention parts work on at most this many tokens per side.
    """

    dim: int | None = None
    feature_stride: int = 8
    mixer_depth: int = 2
    deform_kernel: int = 3
    num_heads: int | None = None
    max_tokens_side: int = 16

    def resolved(self, backbone: FrozenBackbone) -> "DeMTGConfig":
        """A copy with the None widths filled in from the backbone."""
        dim = self.dim if self.dim is not None else default_width(backbone)
        return replace(self, dim=dim, num_heads=self.num_heads if self.num_heads is not None else heads_for(dim))

    def validate(self) -> None:
        """Raise ValueError naming the field when a (resolved) setting is out of range."""
        for name in ("dim", "feature_stride", "mixer_depth", "deform_kernel", "num_heads", "max_tokens_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"DeMTGConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.deform_kernel % 2 == 0:
            raise ValueError(f"DeMTGConfig.deform_kernel must be odd (centred kernel), got {self.deform_kernel}")
        check_heads(self.dim, self.num_heads, "DeMTGConfig")


# --------------------------------------------------------------------------- encoder side


class FeatureExtractor(nn.Module):
    """Sec. 3.2, Fig. 3: stage maps ``[(B, h_s, w_s, C_s)]`` -> ``(B, sum C_s, h, w)`` on one grid."""

    def __init__(self, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, stages: list[Tensor]) -> Tensor:
        return torch.cat([resize(nhwc_to_nchw(x), self.grid) for x in stages], dim=1)


class ChannelMixing(nn.Module):
    """Eq. 2-3 with a residual: ``x + BN(GELU(W_1 x + b))``, ``(B, C', h, w)`` -> same."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(dim, dim, 1)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(F.gelu(self.pointwise(x)))


class SpatialDeformable(nn.Module):
    """Eq. 4-5: ``x + BN(GELU(D_S(x)))`` with a depthwise deformable convolution.

    A conv predicts one (dy, dx) offset per kernel point and location from ``x`` (Eq. 4's
    ``Delta_(i,j)``); ``torchvision.ops.deform_conv2d`` samples ``x`` at the shifted points
    (bilinear) and applies the kernel. Offsets start at zero (a regular convolution), as in
    Deformable ConvNets. ``(B, C', h, w)`` -> same.
    """

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.offset = nn.Conv2d(dim, OFFSET_COORDS * kernel * kernel, kernel, padding=kernel // 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        y = deform_conv2d(x, self.offset(x), self.weight, self.bias, padding=self.kernel // 2)
        return x + self.norm(F.gelu(y))


class DeformableMixer(nn.Module):
    """One task's deformable mixer encoder (Sec. 3.3): ``(B, C_in, h, w) -> (B, C', h, w)``."""

    def __init__(self, in_channels: int, cfg: DeMTGConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.reduce = nn.Linear(in_channels, cfg.dim)  # Eq. 1
        self.layers = nn.Sequential(*(
            nn.Sequential(ChannelMixing(cfg.dim), SpatialDeformable(cfg.dim, cfg.deform_kernel))
            for _ in range(cfg.mixer_depth)
        ))

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return self.layers(x)


# --------------------------------------------------------------------------- decoder side


class SmallMlp(nn.Module):
    """The paper's sMLP: a linear layer and a LayerNorm, ``(..., C) -> (..., C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.fc(x))


class TaskInteraction(nn.Module):
    """Eq. 8-10: self-attention over all tasks' tokens of one image together.

    ``(B, T, N, C)`` -> ``(B, T, N, C)``. The T*N tokens of an image attend to each other (a
    token of one task reads every token of every task); images of the batch never mix.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.smlp = SmallMlp(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        b, t, n, c = tokens.shape
        x = self.norm(tokens.reshape(b, t * n, c))      # X_f = Concat(X_q^1..X_q^T), Eq. 8
        return self.smlp(self.attn(x, x, x)).view(b, t, n, c)


class TaskQuery(nn.Module):
    """Eq. 11-13 for one task: ``X_q + sMLP(MHSA(LN(X_q), LN(X_f), LN(X_f)))``.

    ``query (B, N, C)`` (the task's deformed tokens), ``interacted (B, T*N, C)`` -> ``(B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.smlp = SmallMlp(dim)

    def forward(self, query: Tensor, interacted: Tensor) -> Tensor:
        kv = self.norm_kv(interacted)
        return query + self.smlp(self.attn(self.norm_q(query), kv, kv))


class SharedSpatialGating(nn.Module):
    """Eq. 14-16 (plus a residual), one module applied to every task: ``(B, N, C) -> (B, N, C)``.

    ``X_g = GELU(Linear(LN(x)))`` split into ``X1, X2`` (C each); ``X1 * Conv1d(LN(X2))`` where the
    1-D convolution (kernel 1) treats the N tokens as channels, i.e. mixes across space; then a
    linear layer back to C.
    """

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, 2 * dim)
        self.gate_norm = nn.LayerNorm(dim)
        self.spatial = nn.Conv1d(num_tokens, num_tokens, kernel_size=1)
        nn.init.zeros_(self.spatial.weight)
        nn.init.constant_(self.spatial.bias, GATE_INIT_BIAS)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = F.gelu(self.expand(self.norm(x))).chunk(2, dim=-1)
        return x + self.out(x1 * self.spatial(self.gate_norm(x2)))


# --------------------------------------------------------------------------- the model


class DeMTG(PeerModel):
    """DeMTG with VTAGML's interface (see the module docstring for the paper mapping).

    Args:
        config: the shared :class:`ModelConfig` (tasks, classes, backbone).
        family: DeMTG's own settings; default ``config.demtg`` when the model config has such a
            field, else :class:`DeMTGConfig()`.
        backbone: an already built backbone to use (see :class:`PeerModel`).
    """

    method = "demtg"

    def __init__(self, config: ModelConfig, family: DeMTGConfig | None = None,
                 backbone: FrozenBackbone | None = None) -> None:
        super().__init__(config, backbone)
        cfg = family if family is not None else getattr(config, "demtg", None) or DeMTGConfig()
        cfg = cfg.resolved(self.backbone)
        cfg.validate()
        if self.img_size % cfg.feature_stride:
            raise ValueError(f"image size {self.img_size} is not a multiple of "
                             f"DeMTGConfig.feature_stride={cfg.feature_stride}")
        self.family_config = cfg
        mixer_grid = (self.img_size // cfg.feature_stride, self.img_size // cfg.feature_stride)
        self.grid = pooled_grid(mixer_grid, cfg.max_tokens_side)
        self.extractor = FeatureExtractor(mixer_grid)
        in_ch = sum(self.backbone.stage_channels)
        self.mixers = nn.ModuleDict({t: DeformableMixer(in_ch, cfg) for t in self.tasks})
        self.interaction = TaskInteraction(cfg.dim, cfg.num_heads)
        self.queries = nn.ModuleDict({t: TaskQuery(cfg.dim, cfg.num_heads) for t in self.tasks})
        self.gating = SharedSpatialGating(cfg.dim, self.grid[0] * self.grid[1])
        fine_in = self.backbone.stage_channels[0]
        self.fine = nn.Sequential(nn.LayerNorm(fine_in), nn.Linear(fine_in, cfg.dim))
        for part in (self.mixers, self.interaction, self.queries, self.gating, self.fine):
            init_linear_(part)  # never the backbone: its weights are pretrained
        self.heads = FullResHeads(self.tasks, cfg.dim, self.num_classes)

    def forward(self, images: Tensor, features: BackboneOutput | None = None,
                track_task_grads: bool = False) -> dict[str, Tensor]:
        """``images (B, 3, H, W)`` -> ``{task: (B, K_t, H, W)}``; ``track_task_grads`` is ignored."""
        feats = self._features(images, features)
        x = self.extractor(feats.stages)                                     # (B, sum C_s, h, w)
        deformed = torch.stack([nchw_to_tokens(resize(self.mixers[t](x), self.grid))
                                for t in self.tasks], dim=1)                 # (B, T, N, C')
        b, t, n, c = deformed.shape
        interacted = self.interaction(deformed).reshape(b, t * n, c)         # X̂_f
        fine = nhwc_to_nchw(self.fine(feats.stages[0]))                      # (B, C', H/4, W/4)
        size = head_input_size(self.img_size)
        head_in = {}
        for i, task in enumerate(self.tasks):
            aware = self.gating(self.queries[task](deformed[:, i], interacted))  # (B, N, C')
            head_in[task] = fine + resize(tokens_to_nchw(aware, self.grid), size)
        return self.heads(head_in, images)

    def components(self) -> dict[str, nn.Module]:
        return {
            self.backbone_label(): self.backbone,
            "deformable mixers": self.mixers,
            "task interaction": self.interaction,
            "task queries": self.queries,
            "shared spatial gating": self.gating,
            "upsampling path": self.fine,
            "heads": self.heads,
        }
