"""One vision-adapter layer (paper Sec. 3.1, Fig. 3) and the skip transition between layers.

:class:`AdapterLayer` is TAA -> FFN -> TSN on every task stream at once; :class:`SkipTransition`
carries a layer's output to the next tap (identity, a width change, or Swin's 2x2 patch
merging). :class:`~.adapter.VisionAdapter` stacks them over the backbone's taps.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .taa import TaskAdaptedAttention
from .tsn import LAYER_NORM_EPS, TaskScaledNorm

#: Spatial factor of Swin's patch merging between stages.
MERGE_FACTOR: int = 2


class AdapterParts(NamedTuple):
    """Intermediate tensors of one adapter layer, each ``(T, B, L, C)`` (for teaching plots)."""

    a: Tensor            # after the attention residual
    omega_tilde: Tensor  # after the FFN residual
    out: Tensor          # TSN_t(a, omega_tilde); with TSN off, LN(omega_tilde)


class AdapterLayer(nn.Module):
    """One vision-adapter layer (Fig. 3), applied to all task streams at once.

    Args:
        dim, num_heads, grid: channels C, heads, token grid (h, w) of its tap.
        num_tasks: N.
        ln_weight, ln_bias: ``(C,)`` backbone LayerNorm (norm1 of the tapped block), the
            initial gamma', beta' of TSN.
        mlp_ratio: bottleneck width fraction.
        taa_logits, taa_bias, window_size, a_init_std, qkv_bias: see
            :class:`.taa.TaskAdaptedAttention`.
        taa_fused: TAA's ``fused`` switch (fused SDPA; False = always the readable Eq. 2 path).
        cond_dim: conditioning length (N for omega rows, E for task embeddings).
        tsn_enabled: False = the TSN-off ablation: the output is the tapped block's fixed
            LayerNorm of the FFN residual, ``LN(omega~_t)`` (see :meth:`parts`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: tuple[int, int],
        num_tasks: int,
        ln_weight: Tensor,
        ln_bias: Tensor,
        mlp_ratio: float = 0.25,
        taa_logits: str = "cosine",
        taa_bias: str = "film",
        window_size: int | None = None,
        a_init_std: float = 0.02,
        qkv_bias: bool = True,
        cond_dim: int | None = None,
        tsn_enabled: bool = True,
        taa_fused: bool = True,
    ) -> None:
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm_attn = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.taa = TaskAdaptedAttention(
            dim, num_heads, grid, num_tasks, qkv_bias=qkv_bias, logits=taa_logits,
            bias=taa_bias, window_size=window_size, a_init_std=a_init_std, cond_dim=cond_dim,
            fused=taa_fused,
        )
        self.norm_ffn = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.tsn = TaskScaledNorm(dim, ln_weight, ln_bias, enabled=tsn_enabled)

    def parts(self, x: Tensor, cond: Tensor) -> AdapterParts:
        """Run the layer on ``x (T, B, L, C)`` with ``cond (T, cond_dim)``, keep intermediates.

        With TSN (Eq. 4) the output normalises ``a_t`` and the FFN acts through the modulation
        by ``omega~_t``. Without TSN there is no modulation for the FFN to act through, so the
        ablation normalises ``omega~_t`` itself with the tapped block's fixed LayerNorm (TSN's
        starting point): the FFN keeps its effect and its gradient, and the ablation removes the
        task scaling only. (Normalising ``a_t`` there would discard the FFN's output: its
        parameters would count as trainable but never receive a gradient.)
        """
        a = x + self.taa(self.norm_attn(x), cond)                 # a_t = x + TAA(LN(x), omega_t)
        omega_tilde = a + self.ffn(self.norm_ffn(a))              # omega~_t = a_t + FFN(LN(a_t))
        if self.tsn.enabled:
            out = self.tsn(a, omega_tilde)                        # TSN_t(a_t, omega~_t), Eq. 4
        else:
            out = self.tsn(omega_tilde, None)                     # LN(omega~_t), weights fixed
        return AdapterParts(a, omega_tilde, out)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``(T, B, L, C) -> (T, B, L, C)``."""
        return self.parts(x, cond).out


class SkipTransition(nn.Module):
    """Carries adapter output l-1 to the input of layer l (Sec. 3.1 skip connections).

    Identity inside a stage; a linear map if only the width changes; 2x2 patch merging
    (concat 2x2 neighbours -> LayerNorm(4C) -> linear to the new width) if the grid halves.
    Works on ``(T, B, h, w, C)``.
    """

    def __init__(self, in_ch: int, in_grid: tuple[int, int], out_ch: int,
                 out_grid: tuple[int, int]) -> None:
        super().__init__()
        self.merge = tuple(in_grid) != tuple(out_grid)
        if self.merge:
            expected = (in_grid[0] // MERGE_FACTOR, in_grid[1] // MERGE_FACTOR)
            odd = in_grid[0] % MERGE_FACTOR or in_grid[1] % MERGE_FACTOR
            if odd or expected != tuple(out_grid):
                raise ValueError(
                    f"consecutive taps must keep the grid or halve it (Swin stage change); got "
                    f"{tuple(in_grid)} -> {tuple(out_grid)}. Reorder the taps or drop one."
                )
            merged = MERGE_FACTOR * MERGE_FACTOR * in_ch
            self.norm = nn.LayerNorm(merged, eps=LAYER_NORM_EPS)
            self.reduction = nn.Linear(merged, out_ch, bias=False)
        elif in_ch != out_ch:
            self.reduction = nn.Linear(in_ch, out_ch, bias=False)
        else:
            self.reduction = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if not self.merge:
            return self.reduction(x)
        # Same neighbour order as Swin's PatchMerging: (0,0), (1,0), (0,1), (1,1).
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :],
                       x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], dim=-1)
        return self.reduction(self.norm(x))


__all__ = ["MERGE_FACTOR", "AdapterLayer", "AdapterParts", "SkipTransition"]
