"""Plotly figures of the TAA lesson (paper Sec. 3.2.2, Eq. 1-3; notebook 03).

:func:`attention_panels` puts plain attention (Eq. 1), the bias row ``A'(omega_t)[q]`` (Eq. 3)
and task-adapted attention (Eq. 2) of one query token side by side, each as an ``(h, w)`` map
over the key tokens, with the query marked. :func:`bias_matrices` shows the ``(L, L)`` bias of
every task as its **difference from the mean over tasks** (what makes one task's attention
differ from another's; a part shared by all tasks is a common offset that says nothing about
the task), with the mean itself in a panel of its own. The TAA attention overlay on the image (the demo's view) is
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
#: Widest figure (pixels), about a notebook page; spacing between bias panels (paper units);
#: where the horizontal colour bars go (paper y, under the panels) and the room they take.
MAX_WIDTH_PX: int = 960
BIAS_SPACING: float = 0.03
COLORBAR_Y: float = -0.12
COLORBAR_ROOM_PX: int = 70
#: Font size of the subplot titles (small enough that neighbouring titles never overlap).
SUBPLOT_TITLE_FONT_PX: int = 12


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
    fig.update_annotations(font_size=SUBPLOT_TITLE_FONT_PX)
    fig.update_layout(title=title, width=3 * PANEL_PX + EXTRA_WIDTH_PX,
                      height=PANEL_PX + EXTRA_HEIGHT_PX)
    return fig


def bias_matrices(biases: Tensor | np.ndarray, tasks: Sequence[str], relative: bool = True,
                  title: str | None = None) -> go.Figure:
    """The ``(L, L)`` bias of every task (rows: queries, columns: keys).

    Args:
        biases: ``(T, L, L)``, one bias matrix per task.
        relative: show the mean over tasks first (its own colour scale), then each task's bias
            minus that mean on one diverging scale centred on zero and shared by the tasks; False
            shows the raw biases on one shared scale.
        title: figure title (default says which view).

    The figure is at most :data:`MAX_WIDTH_PX` wide; colour bars lie under the panels they
    belong to.
    """
    b = _np(biases).astype(float)
    if b.ndim != 3 or b.shape[0] != len(tasks) or b.shape[1] != b.shape[2]:
        raise ValueError(f"need biases (T, L, L) for {len(tasks)} tasks, got {b.shape}")
    names = task_names(tasks)
    if relative:
        mean = b.mean(axis=0)
        panels, titles = [mean, *(m - mean for m in b)], ["mean over tasks", *(f"{n} - mean" for n in names)]
        title = title or "TAA bias A'(omega_t): the mean over tasks, then each task minus it"
    else:
        panels, titles = list(b), names
        title = title or "TAA bias A'(omega_t) per task"
    first_task = 1 if relative else 0
    n = len(panels)
    spacing = BIAS_SPACING
    fig = make_subplots(rows=1, cols=n, subplot_titles=titles, horizontal_spacing=spacing)
    width_each = (1.0 - spacing * (n - 1)) / n
    task_span = float(max(np.abs(p).max() for p in panels[first_task:])) or 1.0
    tasks_start = first_task * (width_each + spacing)  # paper x where the task panels begin
    for i, mat in enumerate(panels):
        is_mean = relative and i == 0
        hi = (float(np.abs(mat).max()) or 1.0) if is_mean else task_span
        x, length = (width_each / 2, width_each) if is_mean else ((tasks_start + 1.0) / 2, 1.0 - tasks_start)
        bar = dict(orientation="h", thickness=10, y=COLORBAR_Y, yanchor="top", x=x, len=length,
                   title=dict(text="mean" if is_mean else ("task - mean" if relative else "bias"), side="top"))
        fig.add_trace(go.Heatmap(z=mat, colorscale=BIAS_COLORSCALE, zmin=-hi, zmax=hi,
                                 showscale=is_mean or i == first_task, colorbar=bar,
                                 hovertemplate="query %{y}, key %{x}: %{z:.4f}<extra></extra>"), 1, i + 1)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i + 1 if i else ''}", row=1, col=i + 1)
    panel_px = min(PANEL_PX * 3 // 4, (MAX_WIDTH_PX - EXTRA_WIDTH_PX) // n)
    fig.update_annotations(font_size=SUBPLOT_TITLE_FONT_PX)
    fig.update_layout(title=dict(text=title, font_size=SUBPLOT_TITLE_FONT_PX + 2),
                      width=n * panel_px + EXTRA_WIDTH_PX, height=panel_px + EXTRA_HEIGHT_PX + COLORBAR_ROOM_PX,
                      margin=dict(l=40, r=40, t=80, b=COLORBAR_ROOM_PX))
    return fig


__all__ = ["attention_panels", "bias_matrices"]
