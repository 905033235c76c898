"""Training curves from the trainer's ``log.jsonl`` (:mod:`vtagml_core.train.logging`).

A ``step`` record is ``{"kind": "step", "step", "epoch", "lr", "loss", "losses": {name: value},
"seconds"}``: ``loss`` is the weighted total, ``losses`` the unweighted task losses plus any
extra terms a trainer logs (the UDA trainer adds ``adv_<task>`` generator terms and
``disc_<task>`` discriminator losses). Keys are addressed with dots: ``"loss"``,
``"losses.seg"``, ``"losses.disc_depth"``.

Runs of a few steps give noisy curves; ``smooth`` (a trailing moving average over that many
steps) makes trends readable without hiding the raw values (drawn faintly beside it, in the
same colour and legend group, so the legend names every line). ``references`` draws labelled
horizontal lines, such as a discriminator's chance loss ``ln 2``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

#: Default trailing moving-average window (steps) of the curves.
DEFAULT_SMOOTH: int = 5
#: Opacity of the raw (unsmoothed) line drawn under a smoothed one.
RAW_OPACITY: float = 0.25
#: Figure height in pixels.
CURVE_HEIGHT_PX: int = 380
#: Colour of the reference lines (chance levels and the like).
REFERENCE_COLOR: str = "grey"


def _get(record: Mapping[str, Any], key: str) -> float | None:
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    try:
        out = float(value)
    except (TypeError, ValueError):  # "nan"/"inf" strings of a diverged step stay readable
        return None
    return out if math.isfinite(out) else None


def step_series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key`` over the ``step`` records that have it (module docstring)."""
    steps, values = [], []
    for r in records:
        if r.get("kind", "step") != "step":
            continue
        v = _get(r, key)
        if v is not None:
            steps.append(int(r["step"]))
            values.append(v)
    return steps, values


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start); ``window >= 1``."""
    if window < 1:
        raise ValueError(f"the smoothing window must be >= 1 step, got {window}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_keys(records: Sequence[Mapping[str, Any]], prefix: str = "") -> list[str]:
    """The ``losses.<name>`` keys present in the step records, those starting with ``prefix``."""
    names: dict[str, None] = {}
    for r in records:
        for name in r.get("losses", {}) if r.get("kind", "step") == "step" else ():
            if name.startswith(prefix):
                names[f"losses.{name}"] = None
    return list(names)


def curves_figure(series: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                  key: str = "loss", title: str | None = None, smooth: int = DEFAULT_SMOOTH,
                  records: Sequence[Mapping[str, Any]] | None = None,
                  keys: Sequence[str] | None = None, log_y: bool = False,
                  references: Mapping[str, float] | None = None) -> go.Figure:
    """Line plot of training curves: several runs on one key, or several keys of one run.

    Either ``series`` (``{run label: step records}``, one line per run, all on ``key``) or
    ``records`` with ``keys`` (one line per key of one run, e.g. every task loss).
    ``references``: ``{legend label: y}`` horizontal dashed lines (e.g. a chance level).

    Raises:
        ValueError: neither or both given, or no line has any value (names what was looked for).
    """
    if (series is None) == (records is None):
        raise ValueError("pass either series={label: records} or records=... with keys=[...]")
    lines = ([(label, recs, key) for label, recs in series.items()] if series is not None
             else [(k.split(".")[-1], records, k) for k in (keys or ["loss"])])
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    fig = go.Figure()
    drawn = 0
    for label, recs, k in lines:
        steps, values = step_series(recs, k)
        if not steps:
            continue
        color = palette[drawn % len(palette)]
        drawn += 1
        if smooth > 1 and len(values) > 1:
            raw = go.Scatter(x=steps, y=values, mode="lines", name=f"{label} (raw)", line=dict(color=color),
                             opacity=RAW_OPACITY, showlegend=False, hoverinfo="skip", legendgroup=label)
            fig.add_trace(raw)
            fig.add_trace(go.Scatter(x=steps, y=moving_average(values, smooth), mode="lines",
                                     name=label, line=dict(color=color), legendgroup=label))
        else:
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=label,
                                     line=dict(color=color)))
    if not drawn:
        wanted = sorted({k for _, _, k in lines})
        raise ValueError(f"no step record has a finite value for {wanted}: is the log empty, or "
                         "is the key misspelt? (see vtagml_core.viz.curves.loss_keys)")
    for name, y in (references or {}).items():
        all_steps = [x for trace in fig.data for x in trace.x]
        fig.add_trace(go.Scatter(x=[min(all_steps), max(all_steps)], y=[y, y], mode="lines", name=name,
                                 line=dict(color=REFERENCE_COLOR, dash="dash"), hoverinfo="name+y"))
    how = f"solid: moving average over {smooth} steps; faint: raw values" if smooth > 1 else ""
    fig.update_layout(title=dict(text=title or "training curves", subtitle=dict(text=how)),
                      height=CURVE_HEIGHT_PX,
                      xaxis_title="optimizer step", yaxis_title=key if series is not None else "loss",
                      yaxis_type="log" if log_y else "linear", margin={"l": 60, "r": 20, "t": 80, "b": 50})
    return fig


__all__ = ["curves_figure", "loss_keys", "moving_average", "step_series"]
