"""Robustness curves: a metric against shift severity, one line per method.

Input: the robustness setting's results document
(:mod:`vtagml_core.experiments.settings.robustness`): ``targets``, ``tasks``, ``levels``
(``[{"level", "severity", "domains"}]``) and rows whose cells ``<target>@<level>/<task>`` are
summaries over seeds (mean, 95 % interval). One panel per target (row) and task (column); x is
the severity s in [0, 1] with a tick per level, y the task's primary metric in the tables' units
(mIoU in %, depth RMSE as is) with its direction; error bars are the 95 % Student-t intervals
over seeds (none for one seed). Every method is one colour and one legend entry, in every panel.
"""
from __future__ import annotations

from typing import Any

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vtagml_core.experiments.formatting import metric_format
from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS

#: Height of one row of panels, and the room for the title and the legend (pixels).
PANEL_HEIGHT_PX, FIGURE_PAD_PX = 300, 140
#: Dash of the baseline's (reference row's) line, so it reads as the reference.
REFERENCE_DASH: str = "dash"


def _axis_title(task: str) -> str:
    """``"mIoU % (higher is better)"`` / ``"rmse (lower is better)"``."""
    metric = PRIMARY_METRICS[task]
    unit = " %" if metric_format(metric)[0] == 100.0 else ""
    return f"{task} {metric}{unit} ({'lower' if METRIC_DIRECTIONS[metric] else 'higher'} is better)"


def _series(cells: dict[str, dict], target: str, task: str, levels: list[dict],
            scale: float) -> tuple[list[float], list[float | None], list[float | None]]:
    """Means and the interval's upper/lower distances at each level (None: no interval)."""
    means, up, down = [], [], []
    for lv in levels:
        cell = cells[f"{target}@{lv['level']}/{task}"]
        mean = cell["mean"] * scale
        means.append(mean)
        has = cell.get("ci_low") is not None and cell.get("ci_high") is not None
        up.append(cell["ci_high"] * scale - mean if has else None)
        down.append(mean - cell["ci_low"] * scale if has else None)
    return means, up, down


def robustness_figure(doc: dict[str, Any]) -> go.Figure:
    """Metric versus severity: one panel per target and task, one line per method.

    Raises:
        ValueError: ``doc`` is not a robustness results document (names the command making one).
    """
    if doc.get("setting") != "robustness":
        raise ValueError(f"need the robustness setting's document, got {doc.get('setting')!r}; run "
                         "`python -m vtagml_core settings robustness` (or run_and_save(ctx, 'robustness'))")
    targets, tasks, levels = doc["targets"], doc["tasks"], doc["levels"]
    fig = make_subplots(rows=len(targets), cols=len(tasks), shared_xaxes=True,
                        subplot_titles=[f"{t}: {task}" for t in targets for task in tasks])
    palette = plotly.colors.qualitative.Plotly
    xs = [lv["severity"] for lv in levels]
    ticks = [f"L{lv['level']}<br>s={lv['severity']:g}" for lv in levels]
    for k, r in enumerate(doc["rows"]):
        color = palette[k % len(palette)]
        for i, target in enumerate(targets):
            for j, task in enumerate(tasks):
                means, up, down = _series(r["cells"], target, task, levels,
                                          metric_format(PRIMARY_METRICS[task])[0])
                bars = (dict(type="data", array=up, arrayminus=down, visible=True)
                        if all(v is not None for v in up) else None)
                fig.add_trace(go.Scatter(
                    x=xs, y=means, error_y=bars, mode="lines+markers", name=r["label"],
                    legendgroup=r["label"], showlegend=(i == 0 and j == 0),
                    line=dict(color=color, dash=REFERENCE_DASH if r["kind"] == "reference" else None),
                    hovertemplate=f"{r['label']}<br>s=%{{x}}<br>%{{y:.3f}}<extra></extra>"),
                    row=i + 1, col=j + 1)
                fig.update_yaxes(title_text=_axis_title(task), row=i + 1, col=j + 1)
                fig.update_xaxes(tickvals=xs, ticktext=ticks,
                                 title_text="shift severity s (level)" if i == len(targets) - 1 else None,
                                 row=i + 1, col=j + 1)
    w = doc["where"]
    seeds = w.get("seeds", [])
    bars_text = "bars: 95 % interval over seeds" if len(seeds) > 1 else "one seed: no interval"
    fig.update_layout(
        title=dict(text=f"Robustness curves, source {doc['source_domain']} models: {w['dataset']}, "
                        f"{w['resolution']}, {len(seeds)} seed(s) {seeds}",
                   subtitle=dict(text=f"test split, no fine-tuning; {bars_text}")),
        height=PANEL_HEIGHT_PX * len(targets) + FIGURE_PAD_PX, legend_title_text="method",
        margin={"l": 60, "r": 20, "t": 100, "b": 50})
    return fig


__all__ = ["robustness_figure"]
