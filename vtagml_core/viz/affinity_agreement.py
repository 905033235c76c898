"""Plotly figure of the affinity question (issue 17): do the affinity measures rank task pairs
as the ground truth does? Reads the document of :func:`vtagml_core.experiments.affinity.run_affinity`.

Top: Spearman's rho of each measure against the ground truth, one bar per measure (mean over
seeds, error bar = std over seeds, one dot per seed). Bottom: the seed-mean matrices, indexed
[target t, source n], the ground truth first; diagonals are blank (they never enter rho).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vtagml_core.tasks import TASK_TITLES

#: At most this many matrices in the bottom row (ground truth + the first measures).
MAX_MATRICES: int = 4
#: Diverging colour scale of the matrices (each matrix scaled to its own symmetric range).
MATRIX_COLORSCALE: str = "RdBu"
#: Pixels per figure row and per matrix column.
ROW_PX, COLUMN_PX = 360, 330


def _blank_diagonal(matrix: list[list[float]]) -> np.ndarray:
    m = np.array(matrix, dtype=float)
    np.fill_diagonal(m, np.nan)
    return m


def agreement_figure(doc: dict[str, Any]) -> go.Figure:
    """Rank agreement bars and the seed-mean matrices of an affinity document."""
    names = [r["label"] for r in doc["rows"]]
    per_seed = doc["per_seed"]
    tasks = [TASK_TITLES.get(t, t) for t in doc["tasks"]]
    matrices = [("ground truth: gain (%)", doc["mean_truth"])]
    matrices += list(doc["mean_measures"].items())[:MAX_MATRICES - 1]
    cols = len(matrices)
    fig = make_subplots(rows=2, cols=cols, specs=[[{"colspan": cols}] + [None] * (cols - 1),
                                                  [{} for _ in range(cols)]],
                        subplot_titles=["Spearman ρ with the ground truth (per seed: dots)",
                                        *[title for title, _ in matrices]],
                        vertical_spacing=0.18)
    means, stds = [], []
    for r in doc["rows"]:
        cell = r["cells"].get("rho")
        means.append(cell["mean"] if cell else math.nan)
        stds.append(cell["std"] if cell else 0.0)
    fig.add_trace(go.Bar(x=names, y=means, error_y=dict(type="data", array=stds), name="mean ρ",
                         marker_color="steelblue"), row=1, col=1)
    for s in per_seed:
        ys = [s["rho"].get(n) for n in names]
        fig.add_trace(go.Scatter(x=names, y=[math.nan if y is None else y for y in ys], mode="markers",
                                 name=f"seed {s['seed']}", marker=dict(size=8, color="black")),
                      row=1, col=1)
    fig.update_yaxes(range=[-1.05, 1.05], title_text="ρ", row=1, col=1)
    for i, (title, matrix) in enumerate(matrices, start=1):
        m = _blank_diagonal(matrix)
        finite = m[np.isfinite(m)]
        bound = float(np.abs(finite).max()) if finite.size else 1.0
        fig.add_trace(go.Heatmap(z=m, x=tasks, y=tasks, colorscale=MATRIX_COLORSCALE, zmid=0.0,
                                 zmin=-bound, zmax=bound, showscale=False,
                                 texttemplate="%{z:.3g}"), row=2, col=i)
        fig.update_yaxes(autorange="reversed", title_text="target t" if i == 1 else None, row=2, col=i)
        fig.update_xaxes(title_text="source n", row=2, col=i)
    seeds = [s["seed"] for s in per_seed]
    fig.update_layout(title=f"{doc['title']}: {', '.join(doc['tasks'])}, seeds {seeds}, preset {doc['preset']}",
                      height=2 * ROW_PX, width=max(2, cols) * COLUMN_PX, showlegend=False)
    return fig


__all__ = ["agreement_figure"]
