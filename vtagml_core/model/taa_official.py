"""The official code's TAA bias: block-diagonal over windows (IVRL/VTAGML ``TAA`` module).

The paper's bias ``A'(omega_t)`` (Sec. 3.2.2, Eq. 3) is a full ``(L, L)`` matrix over the
``h x w`` token map (:class:`vtagml_core.model.taa.FilmBias`). The official code computes
something else: inside each Swin window it FiLM-modulates a matrix with a *learned task
embedding* ``e_t`` (not omega) and gives every token pair in different windows bias 0.
:class:`WindowBlockBias` reproduces that bias on the kit's global attention; it is selected
with ``TaskAdaptedAttention(..., bias="embedding")`` (``AdapterConfig.taa_bias="embedding"``,
usually together with ``affinity_source="embedding"``).

Shapes: T task streams, L = h*w tokens, s = window**2 tokens per window, nW = L / s windows.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def window_order(grid: tuple[int, int], window: int) -> Tensor:
    """Position of each raster-order token in window order, ``(L,)`` long.

    Window order lists the tokens of window (0, 0) first (raster order inside the window),
    then window (0, 1), and so on, as Swin's ``window_partition`` does.
    """
    h, w = grid
    i = torch.arange(h).view(h, 1).expand(h, w)                       # (h, w) token row
    j = torch.arange(w).view(1, w).expand(h, w)                       # (h, w) token column
    win = (i // window) * (w // window) + (j // window)               # window index
    inside = (i % window) * window + (j % window)                     # position in the window
    return (win * window * window + inside).reshape(-1)               # (L,)


class WindowBlockBias(nn.Module):
    """The official code's TAA bias: block-diagonal over windows, zero elsewhere.

    What IVRL/VTAGML's ``TAA`` module computes (inside each Swin window of ``n`` tokens, with
    a learned task embedding ``e_t`` in place of omega): a matrix ``A`` of shape ``(n, s)``
    (zeros at init) is FiLM-modulated column-wise, ``(1 + gamma(e_t)) * A + beta(e_t)`` with
    ``gamma, beta in R^s`` broadcast over the rows (``nn.Linear`` with default weight init and
    zero bias), then its rows are cut into ``n / s`` slabs of shape ``(s, s)`` placed on the
    diagonal with ``torch.block_diag``; every other token pair gets bias 0 (not -inf: the
    attention still sees them, only without a task bias).

    Here the attention is global over the ``h x w`` map (paper), so the blocks are the
    ``window x window`` windows of the map (``s = window**2`` tokens each, ``h*w / s`` blocks),
    with the same parametrisation (A zeros ``(L, s)``, column-wise FiLM, default-initialised
    FiLM weights), then mapped back to raster token order. A window larger than the grid is
    clamped to it (Swin's rule for small maps), giving one block: a full bias.

    Args:
        grid: token grid ``(h, w)``.
        window_size: window side in tokens; must divide ``h`` and ``w`` (after clamping).
        cond_dim: length of the conditioning vector (task-embedding size, or N for omega rows).
    """

    def __init__(self, grid: tuple[int, int], window_size: int, cond_dim: int) -> None:
        super().__init__()
        h, w = grid
        window = min(window_size, h, w)
        if window < 1 or h % window or w % window:
            raise ValueError(
                f"window_size {window_size} must divide the token grid {h}x{w} for the "
                f"block-diagonal TAA bias; pick a divisor of both (e.g. {math.gcd(h, w)})"
            )
        self.grid = (h, w)
        self.window = window
        self.block = window * window
        self.num_windows = (h * w) // self.block
        self.A = nn.Parameter(torch.zeros(h * w, self.block))
        self.film = nn.Linear(cond_dim, 2 * self.block)
        nn.init.zeros_(self.film.bias)
        self.register_buffer("raster_to_window", window_order(grid, window), persistent=False)
        self.register_buffer("eye_windows", torch.eye(self.num_windows), persistent=False)

    def forward(self, cond: Tensor) -> Tensor:
        """``cond (T, cond_dim) -> bias (T, L, L)``, raster token order, zero off-block."""
        T, s, nw = cond.shape[0], self.block, self.num_windows
        gamma, beta = self.film(cond).view(T, 2, 1, 1, s).unbind(dim=1)  # each (T, 1, 1, s)
        blocks = (1.0 + gamma) * self.A.view(nw, s, s) + beta          # (T, nW, s, s)
        full = torch.einsum("tnij,nm->tnimj", blocks, self.eye_windows)  # zeros off-block
        full = full.reshape(T, nw * s, nw * s)                          # window order
        p = self.raster_to_window
        return full[:, p][:, :, p]                                      # (T, L, L) raster order

    def extra_repr(self) -> str:
        return f"grid={self.grid}, window={self.window}, blocks={self.num_windows}x{self.block}"


__all__ = ["WindowBlockBias", "window_order"]
