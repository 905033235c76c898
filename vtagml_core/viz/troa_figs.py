"""Plotly figures of the TROA lesson (paper Sec. 3.2.1, Algorithm 1; notebook 02).

The affinity heatmap and its evolution with a step slider are in :mod:`.affinity`; these are
the lesson's other pictures: task gradients as arrows (the cosine similarity is the cosine of
the angle between two arrows), similarities over training, and how fast each update rule makes
a row collapse onto its own task.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from vtagml_core.tasks import TASK_TITLES

#: Figure size of the lesson's line plots and arrow plot (pixels).
LINE_WIDTH_PX: int = 640
LINE_HEIGHT_PX: int = 380
ARROW_SIZE_PX: int = 460


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def gradient_arrows(grads: Tensor | np.ndarray, names: Sequence[str],
                    title: str = "Task gradients at theta") -> go.Figure:
    """Arrows from the origin for 2-D gradients ``(N, 2)``, one colour per task."""
    g = _np(grads).astype(float)
    if g.ndim != 2 or g.shape[1] != 2 or len(names) != g.shape[0]:
        raise ValueError(f"need grads (N, 2) and N names, got {g.shape} and {len(names)} names")
    fig = go.Figure()
    reach = float(np.abs(g).max()) * 1.15 or 1.0
    for (x, y), name in zip(g, names):
        fig.add_trace(go.Scatter(x=[0, x], y=[0, y], mode="lines+markers", name=str(name),
                                 marker=dict(symbol=["circle", "arrow"], size=[4, 14],
                                             angleref="previous")))
    fig.update_layout(title=title, width=ARROW_SIZE_PX, height=ARROW_SIZE_PX,
                      xaxis=dict(range=[-reach, reach], zeroline=True, title="theta_1"),
                      yaxis=dict(range=[-reach, reach], zeroline=True, title="theta_2",
                                 scaleanchor="x"))
    return fig


def similarity_lines(sims: Tensor | np.ndarray, tasks: Sequence[str],
                     title: str = "Gradient cosine similarity during training") -> go.Figure:
    """One line per task pair ``(t < n)``: ``sim[t, n]`` at every step of ``(S, N, N)``."""
    s = _np(sims)
    if s.ndim != 3 or s.shape[1:] != (len(tasks), len(tasks)):
        raise ValueError(f"need sims (S, N, N) for {len(tasks)} tasks, got {s.shape}")
    fig = go.Figure()
    steps = np.arange(1, s.shape[0] + 1)
    for t in range(len(tasks)):
        for n in range(t + 1, len(tasks)):
            fig.add_trace(go.Scatter(x=steps, y=s[:, t, n], mode="lines",
                                     name=f"{tasks[t]} / {tasks[n]}"))
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title="training step", yaxis_title="cos(grad L_t, grad L_n)",
                      yaxis_range=[-1, 1], width=LINE_WIDTH_PX, height=LINE_HEIGHT_PX)
    return fig


def self_affinity_curves(curves: Mapping[str, Tensor | np.ndarray],
                         title: str = "Self-affinity mean_t omega[t, t] over the updates",
                         uniform: float | None = None) -> go.Figure:
    """One line per update rule: the mean diagonal of omega after each step (index 0 = start)."""
    fig = go.Figure()
    for label, curve in curves.items():
        c = _np(curve)
        fig.add_trace(go.Scatter(x=np.arange(len(c)), y=c, mode="lines+markers", name=label))
    if uniform is not None:
        fig.add_hline(y=uniform, line_dash="dot", line_color="grey",
                      annotation_text="uniform 1/N", annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title="update", yaxis_title="mean diagonal of omega",
                      yaxis_range=[0, 1.02], width=LINE_WIDTH_PX, height=LINE_HEIGHT_PX)
    return fig


def task_names(tasks: Sequence[str]) -> list[str]:
    """Display titles of the kit's tasks (unknown names are kept as they are)."""
    return [TASK_TITLES.get(t, t) for t in tasks]


__all__ = ["gradient_arrows", "self_affinity_curves", "similarity_lines", "task_names"]
