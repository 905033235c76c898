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
CURVE_HEIGHT_PX: int = 420
HEATMAP_WIDTH_PX: int = 560
HEATMAP_HEIGHT_PX: int = 420
#: Margin of the log axis beyond the curves' smallest and largest values (decades).
LOG_PAD_DECADES: float = 0.15
#: Log-axis ticks: 1, 2 and 5 of every decade (plotly's "D2"), readable at this height.
LOG_DTICK: str = "D2"
#: Significant digits of the numbers printed in the heatmap's cells and hover.
HEATMAP_DIGITS: int = 3


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def log_range(values: np.ndarray, pad: float = LOG_PAD_DECADES) -> list[float]:
    """A log-axis range (in decades, as plotly wants it) holding every positive finite value of
    ``values`` with ``pad`` decades to spare; ``[-1, 1]`` when there is none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return [-1.0, 1.0]
    return [float(np.log10(v.min())) - pad, float(np.log10(v.max())) + pad]


def scale_experiment_curves(result) -> go.Figure:
    """Relative error per task over training, LayerNorm (left) vs TSN (right), on one log axis.

    Both panels share one explicit log range that holds every curve of both (plotly's own
    autorange on a shared log axis can cut one panel's curves off). One colour per task, the
    same in both panels, and one legend entry per task.

    Args:
        result: a :class:`vtagml_core.notebooks.tsn_lab.ScaleExperiment`.
    """
    import plotly.colors

    kinds = list(result.errors)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, shared_yaxes=True,
                        horizontal_spacing=0.06)
    steps = _np(result.steps)
    palette = plotly.colors.qualitative.Plotly
    errors = {kind: _np(result.errors[kind]).astype(float) for kind in kinds}
    for col, kind in enumerate(kinds, start=1):
        err = errors[kind]
        for t, scale in enumerate(result.target_scales):
            fig.add_trace(go.Scatter(x=steps, y=err[:, t], mode="lines", name=f"task with target scale {scale:g}",
                                     legendgroup=f"task{t}", showlegend=col == 1,
                                     line=dict(color=palette[t % len(palette)]),
                                     hovertemplate=f"{kind}, scale {scale:g}: step %{{x}}, error %{{y:.3g}}"
                                                   "<extra></extra>"), 1, col)
        fig.update_xaxes(title_text="Adam step", row=1, col=col)
    span = log_range(np.concatenate([e.ravel() for e in errors.values()]))
    fig.update_yaxes(type="log", range=span, dtick=LOG_DTICK)
    fig.update_yaxes(title_text="relative error |pred - y| / |y|", row=1, col=1)
    fig.update_layout(title="Two tasks, one signal at different scales", width=CURVE_WIDTH_PX,
                      height=CURVE_HEIGHT_PX, legend=dict(orientation="h", y=-0.2, x=0.5, xanchor="center"),
                      margin=dict(b=110))
    return fig


def task_scale_heatmap(values: Tensor | np.ndarray, tasks: Sequence[str],
                       what: str = "mean |scale|") -> go.Figure:
    """``(layers, T)`` per-layer, per-task TSN statistics as an annotated heatmap."""
    v = _np(values)
    if v.ndim != 2 or v.shape[1] != len(tasks):
        raise ValueError(f"need values (layers, T) for {len(tasks)} tasks, got {v.shape}")
    layers = [f"adapter {i}" for i in range(v.shape[0])]
    # Numbers formatted by plotly (3 significant digits), never float32 reprs with 16 digits.
    fmt = f".{HEATMAP_DIGITS}g"
    fig = go.Figure(go.Heatmap(z=v.astype(float), x=task_names(tasks), y=layers, colorscale="Viridis",
                               texttemplate=f"%{{z:{fmt}}}", colorbar=dict(title=what, tickformat=fmt),
                               hovertemplate=f"%{{y}}, %{{x}}: %{{z:{fmt}}}<extra></extra>"))
    fig.update_layout(title=f"TSN per task and adapter layer: {what}", yaxis_autorange="reversed",
                      width=HEATMAP_WIDTH_PX, height=HEATMAP_HEIGHT_PX)
    return fig


__all__ = ["log_range", "scale_experiment_curves", "task_scale_heatmap"]
