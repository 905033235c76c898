"""MTFormer (Xu et al., ECCV 2022) as a kit baseline: shared decoder, per-task branches with
cross-task attention, cross-task contrastive loss and uncertainty loss weighting.

Paper: Xu et al., MTFormer, ECCV 2022. What each part implements:

================================  ============================================================
paper                              here
================================  ============================================================
Sec. 3.1 shared encoder            the kit's frozen backbone (:class:`FrozenBackbone`), or the
                                   fine-tuned one when ``backbone.frozen`` is False
Sec. 3.1 shared decoder            :class:`SharedDecoder`: FPN over the four stage maps, then
                                   shared Swin V2 blocks (W-MSA / SW-MSA, Sec. 4 "Implementation
                                   detail") at stride 8, and a stride-4 map for the heads
Sec. 3.1 branches, Eq. 1-2         per task, ``self_task_blocks`` pre-norm transformer blocks
                                   with self-task attention (:class:`PreNormBlock`)
Sec. 3.2 cross-task attn, Eq. 3    ``cross_task_blocks`` x :class:`CrossTaskBlock`
Sec. 3.3 contrastive, Eq. 4-6      :func:`cross_task_contrastive_loss` on pooled branch features
                                   through per-task projection heads (:meth:`MTFormer.extra_losses`)
Sec. 3.4 loss, Eq. 7               :class:`UncertaintyWeighting` (:meth:`MTFormer.weight_losses`)
Sec. 3.1 output heads              :class:`FullResHeads` (conv heads with a non-linear projection)
================================  ============================================================

**Direction of the cross-task attention (Eq. 3).** For task i, the paper writes
``A_k = MSA(F_k, F_k, F_i)``: the **query and key come from task k, the value from task i**.
Task k thus contributes *its attention map* ``softmax(Q_k K_k^T / sqrt(d))``, and that map
re-aggregates *task i's own values*. Task k's features reach task i's output only through the
query/key path, never as values; the tests prove it (changing task k's value projection leaves
task i unchanged; making task k's attention map uniform removes every effect of task k's
features on task i). The self term (k = i) keeps C channels, every other term is mapped to
``C // (n-1)`` channels (``M_k``; 21 for C = 64 and four tasks), and an MLP ``M_f`` fuses the
concatenation back to C (Eq. 3, and the "feature balance" ablation of Tables 5-6).

What the kit simplified, and why:

* Each task's attention map is computed **once**, with that task's own query/key projections,
  and reused by every target task (``n`` maps per block, ``n^2`` cheap map-times-value
  products). The paper's Fig. 3 "merges attention maps from different tasks", which this is;
  Eq. 3 does not say whose projection matrices form them.
* Branches use **global attention on a pooled grid** (the stride-8 map, average-pooled to at
  most ``max_tokens_side`` tokens per side: 16x16 at 128 px, also 16x16 at the paper's 256 px)
  instead of Swin windows: cross-task attention needs every task's map on the same tokens,
  and at this size global attention is cheaper than windowing.
* Contrastive loss (Eq. 4-6): the denominator also contains the positive pair (InfoNCE as in
  CMC, the paper's ref. [45]); Eq. 4 as printed sums negatives only, which diverges when the
  batch has a single image. The similarity ``g`` is ``exp(cos / temperature)``; temperature
  1 is the paper's ``g``. The loss is summed over unordered task pairs, both directions (Eq. 5-6).
* Uncertainty weighting (Eq. 7, Kendall et al. 2018) in its common log-variance form
  ``sum_t exp(-s_t) L_t + s_t`` with learnable ``s_t = log sigma_t^2`` (no per-task ``1/r``).
* The paper's branches keep the decoder's resolution; here branch outputs are upsampled back to
  stride 4 and added to the shared stride-4 map before the heads (FPN style).
* Widths follow the backbone by default (``dim`` = 2 x its stride-4 channels: 64 on the tiny
  Swin V2, about 1.3M trainable parameters for S-D-N-E; 256 on Swin-B V2, about 20M), so the
  same config serves the CPU preset and the paper's scale.

The pooled branch features of the **last forward pass** are kept in
``self._last_branch_feats`` (``{task: (B, C)}``, with gradients) for :meth:`extra_losses`; call
``extra_losses`` right after the forward pass whose outputs it gets.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from timm.layers import Mlp
from timm.models.swin_transformer_v2 import SwinTransformerV2Block
from torch import Tensor, nn

from vtagml_core.model.backbone import BackboneOutput, FrozenBackbone
from vtagml_core.model.vtagml import ModelConfig

from .common import (
    FullResHeads,
    PeerModel,
    PreNormBlock,
    check_heads,
    default_width,
    heads_for,
    init_linear_,
    nchw_to_tokens,
    nhwc_to_nchw,
    pooled_grid,
    resize,
    tokens_to_nchw,
)
from .mtformer_losses import UncertaintyWeighting, cross_task_contrastive_loss

#: Stride of the map the shared decoder's transformer blocks and the branches work on.
BRANCH_STRIDE: int = 8
#: Index of the stride-8 map among the backbone's stage maps (strides 4, 8, 16, 32).
BRANCH_STAGE: int = 1


@dataclass
class MTFormerConfig:
    """MTFormer's own settings (the rest comes from :class:`ModelConfig`).

    Attributes:
        dim: channels of the shared decoder and of every branch; None = ``default_width(backbone)``
            (64 for the tiny Swin V2, 256 for Swin-B).
        shared_blocks: Swin V2 blocks of the shared decoder, alternating regular/shifted windows.
        self_task_blocks: blocks with self-task attention per branch (paper: m_s = 2).
        cross_task_blocks: blocks with cross-task attention per branch (paper: m = 2).
        num_heads: attention heads in every block; None = 32 channels per head.
        window_size: Swin window of the shared decoder blocks.
        mlp_ratio: FFN width relative to ``dim``.
        max_tokens_side: the branches' attention grid is at most this many tokens per side.
        proj_dim: output width of the contrastive projection heads (Sec. 3.3 "mapping
            functions"); None = ``dim``.
        contrast_temperature: temperature of ``g`` (1 = the paper's ``exp(cos)``).
        contrast_weight: factor on the contrastive loss in the total (Eq. 7 uses 1).
        init_log_variance: initial ``s_t = log sigma_t^2`` of the uncertainty weighting.
    """

    dim: int | None = None
    shared_blocks: int = 2
    self_task_blocks: int = 2
    cross_task_blocks: int = 2
    num_heads: int | None = None
    window_size: int = 8
    mlp_ratio: float = 4.0
    max_tokens_side: int = 16
    proj_dim: int | None = None
    contrast_temperature: float = 1.0
    contrast_weight: float = 1.0
    init_log_variance: float = 0.0

    def resolved(self, backbone: FrozenBackbone) -> "MTFormerConfig":
        """A copy with the None widths filled in from the backbone."""
        dim = self.dim if self.dim is not None else default_width(backbone)
        return replace(self, dim=dim, num_heads=self.num_heads if self.num_heads is not None else heads_for(dim),
                       proj_dim=self.proj_dim if self.proj_dim is not None else dim)

    def validate(self) -> None:
        """Raise ValueError naming the field when a (resolved) setting is out of range."""
        for name in ("dim", "num_heads", "window_size", "max_tokens_side", "proj_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"MTFormerConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("shared_blocks", "self_task_blocks", "cross_task_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"MTFormerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.contrast_temperature <= 0:
            raise ValueError(f"contrast_temperature must be > 0, got {self.contrast_temperature}")
        check_heads(self.dim, self.num_heads, "MTFormerConfig")


# --------------------------------------------------------------------------- blocks


class CrossTaskBlock(nn.Module):
    """A transformer block with cross-task attention for ``n`` tasks (Sec. 3.2, Eq. 3).

    For target task i: ``A_{k->i} = softmax(Q_k K_k^T / sqrt(d)) V_i`` for every task k
    (query and key from task k, value from task i), ``Â_k = M_{i,k}(A_{k->i})`` with ``C``
    channels for k = i and ``C // (n-1)`` otherwise, ``Ā_i = M_f,i([Â_1, ..., Â_n])``; then the
    residual and FFN of Eq. 1: ``x_i = F_i + Ā_i``, ``x_i + FFN(LN(x_i))``.

    Shapes: a list of ``n`` tensors ``(B, L, C)`` in, the same out.
    """

    def __init__(self, num_tasks: int, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        check_heads(dim, num_heads, "CrossTaskBlock")
        self.num_tasks, self.num_heads = num_tasks, num_heads
        self.cross_dim = dim // (num_tasks - 1) if num_tasks > 1 else 0
        if num_tasks > 1 and self.cross_dim < 1:
            raise ValueError(f"width {dim} is too small for {num_tasks} tasks (C/(n-1) < 1)")
        n = range(num_tasks)
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in n)
        self.query = nn.ModuleList(nn.Linear(dim, dim) for _ in n)
        self.key = nn.ModuleList(nn.Linear(dim, dim) for _ in n)
        self.value = nn.ModuleList(nn.Linear(dim, dim) for _ in n)
        # maps[i][k] = M_k for target task i: C -> C for the self term, C -> C/(n-1) otherwise.
        self.maps = nn.ModuleList(
            nn.ModuleList(nn.Linear(dim, dim if k == i else self.cross_dim) for k in n) for i in n
        )
        fused = dim + (num_tasks - 1) * self.cross_dim
        self.fuse = nn.ModuleList(Mlp(fused, dim, out_features=dim) for _ in n)
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in n)
        self.mlp = nn.ModuleList(Mlp(dim, int(dim * mlp_ratio)) for _ in n)

    def _heads(self, x: Tensor) -> Tensor:
        b, l, c = x.shape
        return x.view(b, l, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, L, d)

    def attention_maps(self, normed: list[Tensor]) -> Tensor:
        """Each task's own map ``softmax(Q_k K_k^T / sqrt(d))``: ``(n, B, heads, L, L)``."""
        maps = []
        for k, x in enumerate(normed):
            q, key = self._heads(self.query[k](x)), self._heads(self.key[k](x))
            maps.append(torch.softmax(q @ key.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1))
        return torch.stack(maps)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        if len(feats) != self.num_tasks:
            raise ValueError(f"CrossTaskBlock was built for {self.num_tasks} tasks, got {len(feats)}")
        normed = [norm(x) for norm, x in zip(self.norm1, feats)]
        maps = self.attention_maps(normed)                                         # (n, B, h, L, L)
        values = torch.stack([self._heads(v(x)) for v, x in zip(self.value, normed)])  # (n, B, h, L, d)
        mixed = torch.einsum("kbhlm,ibhmd->kibhld", maps, values)   # [k, i] = map of k on values of i
        b, _, l, _ = maps.shape[1:]
        out = []
        for i, x in enumerate(feats):
            parts = [self.maps[i][k](mixed[k, i].transpose(1, 2).reshape(b, l, -1))
                     for k in range(self.num_tasks)]
            x = x + self.fuse[i](torch.cat(parts, dim=-1))
            out.append(x + self.mlp[i](self.norm2[i](x)))
        return out


class SharedDecoder(nn.Module):
    """Shared decoder (Sec. 3.1): FPN over the stage maps plus shared Swin V2 blocks.

    ``stages`` (B, h_s, w_s, C_s) at strides 4, 8, 16, 32 -> ``(fine (B, D, H/4, W/4),
    mid (B, H/8, W/8, D))``: each stage is LayerNorm-ed and projected to D, the top-down path adds
    upsampled coarser maps, the stride-8 sum runs through the Swin blocks (``mid``, the branches'
    input), and the stride-4 lateral plus upsampled ``mid`` is ``fine`` (the heads' shared input).
    """

    def __init__(self, stage_channels: list[int], img_size: int, cfg: MTFormerConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.lateral = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, d)) for c in stage_channels)
        size = (img_size // BRANCH_STRIDE, img_size // BRANCH_STRIDE)
        self.blocks = nn.Sequential(*(
            SwinTransformerV2Block(dim=d, input_resolution=size, num_heads=cfg.num_heads,
                                   window_size=cfg.window_size,
                                   shift_size=0 if j % 2 == 0 else cfg.window_size // 2,
                                   mlp_ratio=cfg.mlp_ratio)
            for j in range(cfg.shared_blocks)
        ))
        init_linear_(self)
        for blk in self.blocks:  # start each Swin block as the identity, as timm's Swin V2 does
            for norm in (blk.norm1, blk.norm2):
                nn.init.zeros_(norm.weight)
                nn.init.zeros_(norm.bias)

    def forward(self, stages: list[Tensor]) -> tuple[Tensor, Tensor]:
        lat = [nhwc_to_nchw(proj(x)) for proj, x in zip(self.lateral, stages)]
        top = lat[-1]
        for x in reversed(lat[BRANCH_STAGE:-1]):
            top = x + resize(top, tuple(x.shape[-2:]))
        mid = self.blocks(top.permute(0, 2, 3, 1))                           # (B, H/8, W/8, D)
        fine = lat[0] + resize(nhwc_to_nchw(mid), tuple(lat[0].shape[-2:]))  # (B, D, H/4, W/4)
        return fine, mid


# --------------------------------------------------------------------------- the model


class MTFormer(PeerModel):
    """MTFormer with VTAGML's interface (see the module docstring for the paper mapping).

    Args:
        config: the shared :class:`ModelConfig` (tasks, classes, backbone).
        family: MTFormer's own settings; default ``config.mtformer`` when the model config has
            such a field, else :class:`MTFormerConfig()`.
        backbone: an already built backbone to use (see :class:`PeerModel`).

    Attributes:
        decoder, branches (self-task blocks per task), cross_blocks, projections (contrastive
        mapping heads, training only), uncertainty (``s_t`` of Eq. 7), heads.
    """

    method = "mtformer"

    def __init__(self, config: ModelConfig, family: MTFormerConfig | None = None,
                 backbone: FrozenBackbone | None = None) -> None:
        super().__init__(config, backbone)
        cfg = family if family is not None else getattr(config, "mtformer", None) or MTFormerConfig()
        cfg = cfg.resolved(self.backbone)
        cfg.validate()
        self.family_config = cfg
        n = len(self.tasks)
        self.decoder = SharedDecoder(self.backbone.stage_channels, self.img_size, cfg)
        mid = (self.img_size // BRANCH_STRIDE, self.img_size // BRANCH_STRIDE)
        self.grid = pooled_grid(mid, cfg.max_tokens_side)
        self.branches = nn.ModuleDict({t: nn.Sequential(*(
            PreNormBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.self_task_blocks)
        )) for t in self.tasks})
        self.cross_blocks = nn.ModuleList(
            CrossTaskBlock(n, cfg.dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.cross_task_blocks)
        )
        self.projections = nn.ModuleDict({t: Mlp(cfg.dim, cfg.dim, out_features=cfg.proj_dim)
                                          for t in self.tasks})
        self.uncertainty = UncertaintyWeighting(self.tasks, cfg.init_log_variance)
        init_linear_(self.branches)
        init_linear_(self.cross_blocks)
        init_linear_(self.projections)
        self.heads = FullResHeads(self.tasks, cfg.dim, self.num_classes)
        self._last_branch_feats: dict[str, Tensor] | None = None

    def forward(self, images: Tensor, features: BackboneOutput | None = None,
                track_task_grads: bool = False) -> dict[str, Tensor]:
        """``images (B, 3, H, W)`` -> ``{task: (B, K_t, H, W)}``; ``track_task_grads`` is ignored.

        Side effect: ``self._last_branch_feats = {task: (B, dim)}``, the globally pooled branch
        features after the self-task blocks (Sec. 3.3's "intermediate features"), for
        :meth:`extra_losses`.
        """
        feats = self._features(images, features)
        fine, mid = self.decoder(feats.stages)
        tokens = nchw_to_tokens(resize(nhwc_to_nchw(mid), self.grid))      # (B, L, D)
        per_task = [self.branches[t](tokens) for t in self.tasks]
        self._last_branch_feats = {t: x.mean(dim=1) for t, x in zip(self.tasks, per_task)}
        for blk in self.cross_blocks:
            per_task = blk(per_task)
        size = tuple(fine.shape[-2:])
        head_in = {t: fine + resize(tokens_to_nchw(x, self.grid), size) for t, x in zip(self.tasks, per_task)}
        return self.heads(head_in, images)

    def extra_losses(self, outputs: dict[str, Tensor], batch: dict) -> dict[str, Tensor]:
        """``{"contrast": weight * L_contrast}`` (Eq. 6) from the last forward's branch features.

        Empty for a single task (no pair to contrast).

        Raises:
            RuntimeError: no forward pass has run yet.
        """
        if self._last_branch_feats is None:
            raise RuntimeError("MTFormer.extra_losses needs the branch features of a forward "
                               "pass: call the model on the batch first")
        if len(self.tasks) < 2:
            return {}
        emb = {t: self.projections[t](f) for t, f in self._last_branch_feats.items()}
        loss = cross_task_contrastive_loss(emb, self.family_config.contrast_temperature)
        return {"contrast": self.family_config.contrast_weight * loss}

    def weight_losses(self, per_task: dict[str, Tensor]) -> Tensor:
        """Uncertainty-weighted total of the task losses (Eq. 7); gradients reach ``s_t``."""
        return self.uncertainty(per_task)

    def components(self) -> dict[str, nn.Module]:
        return {
            self.backbone_label(): self.backbone,
            "shared decoder": self.decoder,
            "self-task branches": self.branches,
            "cross-task blocks": self.cross_blocks,
            "contrastive projections": self.projections,
            "uncertainty weights": self.uncertainty,
            "heads": self.heads,
        }
