"""Plotly figures of the TAA lesson (paper Sec. 3.2.2, Eq. 1-3; notebook 03).

:func:`attention_panels` puts plain attention (Eq. 1), the bias row ``A'(omega_t)[q]`` (Eq. 3)
and task-adapted attention (Eq. 2) of one query token side by side, each as an ``(h, w)`` map
over the key tokens, with the query marked. :func:`bias_matrices` shows the full
``(L, L)`` bias of every task. The TAA attention overlay on the image (the demo's view) is
:func:`vtagml_core.viz.attention.attention_overlay`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from .troa_figs import task_names

#: Pixel size of one panel.
PANEL_PX: int = 300
#: Extra figure width/height for titles and colour bars.
EXTRA_WIDTH_PX: int = 160
EXTRA_HEIGHT_PX: int = 140
#: Colour scales: attention probabilities (sequential) and biases (diverging, centred on 0).
PROB_COLORSCALE: str = "Viridis"
BIAS_COLORSCALE: str = "RdBu"
QUERY_MARKER: dict = dict(symbol="x", size=14, color="red", line=dict(width=2))


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def attention_panels(plain: Tensor | np.ndarray, bias: Tensor | np.ndarray,
                     adapted: Tensor | np.ndarray, query: tuple[int, int],
                     title: str = "Attention of one query token") -> go.Figure:
    """Three ``(h, w)`` maps: plain attention, the bias row, task-adapted attention.

    The two attention maps share one colour range (both sum to 1) so they can be compared; the
    bias uses a diverging scale centred on zero. The query token is marked with a red cross.
    """
    maps = [_np(plain), _np(bias), _np(adapted)]
    if any(m.ndim != 2 or m.shape != maps[0].shape for m in maps):
        raise ValueError(f"need three (h, w) maps of one shape, got {[m.shape for m in maps]}")
    top = float(max(maps[0].max(), maps[2].max()))
    span = float(np.abs(maps[1]).max()) or 1.0
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.12, subplot_titles=(
        "plain attention, Eq. 1", "bias A'(omega_t)[q], Eq. 3", "task-adapted attention, Eq. 2"))
    specs = [(PROB_COLORSCALE, 0.0, top, 0.27), (BIAS_COLORSCALE, -span, span, 0.63),
             (PROB_COLORSCALE, 0.0, top, 1.0)]
    for col, (m, (scale, lo, hi, bar_x)) in enumerate(zip(maps, specs), start=1):
        fig.add_trace(go.Heatmap(z=m, colorscale=scale, zmin=lo, zmax=hi,
                                 colorbar=dict(x=bar_x, len=0.8, thickness=10),
                                 hovertemplate="key (%{y}, %{x}): %{z:.4f}<extra></extra>"), 1, col)
        fig.add_trace(go.Scatter(x=[query[1]], y=[query[0]], mode="markers", marker=QUERY_MARKER,
                                 showlegend=False, hoverinfo="skip"), 1, col)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}",
                         row=1, col=col)
    fig.update_layout(title=title, width=3 * PANEL_PX + EXTRA_WIDTH_PX,
                      height=PANEL_PX + EXTRA_HEIGHT_PX)
    return fig


def bias_matrices(biases: Tensor | np.ndarray, tasks: Sequence[str],
                  title: str = "FiLM bias A'(omega_t) per task (rows: queries, columns: keys)") -> go.Figure:
    """One ``(L, L)`` heatmap per task, on one diverging colour scale centred on zero."""
    b = _np(biases)
    if b.ndim != 3 or b.shape[0] != len(tasks) or b.shape[1] != b.shape[2]:
        raise ValueError(f"need biases (T, L, L) for {len(tasks)} tasks, got {b.shape}")
    span = float(np.abs(b).max()) or 1.0
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=task_names(tasks),
                        horizontal_spacing=0.04)
    for i, mat in enumerate(b, start=1):
        fig.add_trace(go.Heatmap(z=mat, colorscale=BIAS_COLORSCALE, zmin=-span, zmax=span,
                                 showscale=i == len(tasks), colorbar=dict(thickness=10),
                                 hovertemplate="query %{y}, key %{x}: %{z:.4f}<extra></extra>"),
                      1, i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    fig.update_layout(title=title, width=len(tasks) * PANEL_PX * 3 // 4 + EXTRA_WIDTH_PX,
                      height=PANEL_PX * 3 // 4 + EXTRA_HEIGHT_PX)
    return fig


__all__ = ["attention_panels", "bias_matrices"]
