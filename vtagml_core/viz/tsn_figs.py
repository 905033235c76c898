"""Plotly figures of the TSN lesson (paper Sec. 3.2.3, Eq. 4; notebook 04)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from .troa_figs import task_names

#: Figure sizes (pixels).
CURVE_WIDTH_PX: int = 820
CURVE_HEIGHT_PX: int = 380
HEATMAP_WIDTH_PX: int = 560
HEATMAP_HEIGHT_PX: int = 420


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def scale_experiment_curves(result) -> go.Figure:
    """Relative error per task over training, LayerNorm (left) vs TSN (right), log scale.

    Args:
        result: a :class:`vtagml_core.notebooks.tsn_lab.ScaleExperiment`.
    """
    kinds = list(result.errors)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, shared_yaxes=True)
    steps = _np(result.steps)
    for col, kind in enumerate(kinds, start=1):
        err = _np(result.errors[kind])
        for t, scale in enumerate(result.target_scales):
            fig.add_trace(go.Scatter(x=steps, y=err[:, t], mode="lines",
                                     name=f"{kind}: task with scale {scale:g}",
                                     line=dict(dash="solid" if t == 0 else "dash")), 1, col)
        fig.update_xaxes(title_text="Adam step", row=1, col=col)
    fig.update_yaxes(type="log", title_text="relative error |pred - y| / |y|", row=1, col=1)
    fig.update_layout(title="Two tasks, one signal at different scales", width=CURVE_WIDTH_PX,
                      height=CURVE_HEIGHT_PX)
    return fig


def task_scale_heatmap(values: Tensor | np.ndarray, tasks: Sequence[str],
                       what: str = "mean |scale|") -> go.Figure:
    """``(layers, T)`` per-layer, per-task TSN statistics as an annotated heatmap."""
    v = _np(values)
    if v.ndim != 2 or v.shape[1] != len(tasks):
        raise ValueError(f"need values (layers, T) for {len(tasks)} tasks, got {v.shape}")
    layers = [f"adapter {i}" for i in range(v.shape[0])]
    fig = go.Figure(go.Heatmap(z=v, x=task_names(tasks), y=layers, colorscale="Viridis",
                               text=np.round(v, 4), texttemplate="%{text}",
                               colorbar=dict(title=what)))
    fig.update_layout(title=f"TSN per task and adapter layer: {what}", yaxis_autorange="reversed",
                      width=HEATMAP_WIDTH_PX, height=HEATMAP_HEIGHT_PX)
    return fig


__all__ = ["scale_experiment_curves", "task_scale_heatmap"]
