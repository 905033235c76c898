"""Plotly figures of TROA's task-affinity matrix (paper Fig. 4) and its evolution."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from vtagml_core.tasks import TASK_TITLES

#: Colour scale of affinity heatmaps (rows are distributions: values in [0, 1]).
AFFINITY_COLORSCALE = "Blues"


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def affinity_heatmap(omega: Tensor | np.ndarray, tasks: Sequence[str],
                     title: str = "TROA task affinity omega") -> go.Figure:
    """Annotated heatmap of ``omega (N, N)``: row t = target task, column n = inductive task."""
    mat = _np(omega)
    names = [TASK_TITLES.get(t, t) for t in tasks]
    fig = go.Figure(go.Heatmap(
        z=mat, x=names, y=names, zmin=0.0, zmax=1.0, colorscale=AFFINITY_COLORSCALE,
        texttemplate="%{z:.3f}", colorbar=dict(title="omega"),
    ))
    fig.update_layout(title=title, xaxis_title="inductive task n", yaxis_title="target task t",
                      yaxis_autorange="reversed", width=520, height=480)
    return fig


def affinity_history_figure(steps: Tensor | np.ndarray, mats: Tensor | np.ndarray,
                            tasks: Sequence[str], max_frames: int = 60) -> go.Figure:
    """The affinity matrix over training with a step slider (static-friendly: plain plotly).

    Args:
        steps: ``(S,)`` training steps at which ``mats (S, N, N)`` were recorded.
        max_frames: at most this many evenly spaced frames are kept.
    """
    steps, mats = _np(steps), _np(mats)
    if len(steps) == 0:
        raise ValueError("the affinity history is empty: train with TROA on to record it")
    keep = np.unique(np.linspace(0, len(steps) - 1, min(max_frames, len(steps))).round().astype(int))
    fig = affinity_heatmap(mats[keep[-1]], tasks, title=f"TROA affinity, step {int(steps[keep[-1]])}")
    frames, slider_steps = [], []
    for i in keep:
        name = str(int(steps[i]))
        mat = mats[i]
        frames.append(go.Frame(data=[go.Heatmap(z=mat)], name=name,
                               layout=go.Layout(title=f"TROA affinity, step {name}")))
        slider_steps.append(dict(method="animate", label=name,
                                 args=[[name], dict(mode="immediate", frame=dict(duration=0))]))
    fig.frames = frames
    fig.update_layout(sliders=[dict(active=len(keep) - 1, steps=slider_steps,
                                    currentvalue=dict(prefix="step "))])
    return fig
