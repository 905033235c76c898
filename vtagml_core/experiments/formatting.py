"""How one number of the kit prints: a metric's scale and decimals, a table cell (mean ± the
half-width of its 95 % Student-t interval, and n), a paired difference, a markdown table.

Used by every table the kit writes (the settings' tables in :mod:`vtagml_core.experiments.tables`,
the benchmark checks, ``evaluate``, the claims checklist and the notebooks' summaries), so a
metric prints the same way everywhere. Formats (:data:`FORMATS`): mIoU, odsF and other fractions
as percent with 2 decimals (as the paper prints them), depth RMSE with 3 decimals, angles with 2,
delta_m signed, parameters in millions, seconds with 2 decimals. Parameter counts are exact
(:data:`EXACT_METRICS`): no n, no interval.
"""
from __future__ import annotations

import math
from typing import Any

from vtagml_core.metrics.multitask import FRACTION_METRICS
from vtagml_core.experiments.stats import CONFIDENCE, Interval, mean_ci

#: Metric name of the robustness setting's corruption-error columns (CE and mCE, in %).
CE_METRIC: str = "ce"
#: metric -> (scale, decimals, signed). Fractions not listed here print as percent, 2 decimals.
FORMATS: dict[str, tuple[float, int, bool]] = {
    "rmse": (1.0, 3, False), "mae": (1.0, 3, False), "abs_rel": (1.0, 3, False),
    "mean": (1.0, 2, False), "median": (1.0, 2, False), "delta_m": (1.0, 2, True),
    "params": (1e-6, 3, False), "seconds": (1.0, 2, False), "ratio": (1.0, 2, False),
    CE_METRIC: (1.0, 2, False)}
#: Scale and decimals of fraction metrics (printed in percent).
PERCENT_FORMAT: tuple[float, int, bool] = (100.0, 2, False)
#: Format of a metric with no entry (a plain number).
DEFAULT_FORMAT: tuple[float, int, bool] = (1.0, 4, False)
#: Text of an empty cell.
EMPTY = "—"
#: Metrics that are counts, not measurements: printed plainly, never compared or bold.
EXACT_METRICS: tuple[str, ...] = ("params",)


def metric_format(metric: str) -> tuple[float, int, bool]:
    """``(scale, decimals, signed)`` of ``metric`` (:data:`FORMATS`, else percent for fractions)."""
    if metric in FORMATS:
        return FORMATS[metric]
    return PERCENT_FORMAT if metric in FRACTION_METRICS else DEFAULT_FORMAT


def format_value(value: float, metric: str) -> str:
    """One value in ``metric``'s format, e.g. ``0.5246`` mIoU -> ``"52.46"``."""
    scale, digits, signed = metric_format(metric)
    return f"{value * scale:{'+' if signed else ''}.{digits}f}"


def cell_interval(stat: dict[str, Any], confidence: float = CONFIDENCE) -> Interval:
    """The confidence interval of a cell, from its per-seed ``values`` (older documents without
    them: the mean alone, no interval)."""
    values = stat.get("values")
    if values:
        return mean_ci(values, confidence)
    return Interval(float(stat["mean"]), None, None, int(stat.get("n", 1)), float(stat.get("std", 0.0)))


def finite_cell(stat: dict[str, Any]) -> bool:
    """True when every per-seed value of the cell (or its mean) is a finite number."""
    return all(math.isfinite(float(v)) for v in stat.get("values") or [stat["mean"]])


def format_cell(stat: dict[str, Any] | None, metric: str) -> str:
    """``"52.46 ± 2.98 (n=3)"`` (± the half-width of the 95 % t interval), ``"52.46 (n=1)"`` for
    one seed, a count as it is (:data:`EXACT_METRICS`), :data:`EMPTY` for no value."""
    if stat is None:
        return EMPTY
    text = format_value(stat["mean"], metric)
    if metric in EXACT_METRICS:
        return text
    if not finite_cell(stat):
        return f"{text} (n={stat.get('n', 1)}, not finite)"
    ci = cell_interval(stat)
    if ci.has_interval:
        scale, digits, _ = metric_format(metric)
        text += f" ± {ci.half_width * scale:.{digits}f}"
    return f"{text} (n={ci.n})"


def format_difference(diff: Interval, metric: str) -> str:
    """A paired difference: ``"+1.20 [+0.40, +2.00] (n=3)"``, or ``"+1.20 (n=1)"`` (no interval)."""
    scale, digits, _ = metric_format(metric)
    text = f"{diff.mean * scale:+.{digits}f}"
    if not diff.has_interval:
        return f"{text} (n={diff.n})"
    return f"{text} [{diff.low * scale:+.{digits}f}, {diff.high * scale:+.{digits}f}] (n={diff.n})"


def markdown_table(header: list[str], body: list[list[str]], align: list[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` per column: ``"l"`` or ``"r"`` (default: l, then r)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def generator_text(where: dict[str, Any]) -> str:
    """``"generator v4"`` for a ``where`` dict of stamped synthetic data, ``""`` otherwise."""
    return f"generator v{where['generator']}" if "generator" in where else ""


__all__ = ["CE_METRIC", "DEFAULT_FORMAT", "EMPTY", "EXACT_METRICS", "FORMATS", "PERCENT_FORMAT",
           "cell_interval", "finite_cell", "format_cell", "format_difference", "format_value",
           "generator_text", "markdown_table", "metric_format"]
