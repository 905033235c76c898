"""Relative multitask performance delta_m against single-task models (docs/settings.md, delta_m).

Definition (Maninis, Radosavovic & Kokkinos, "Attentive Single-Tasking of Multiple Tasks"
(ASTMT), CVPR 2019; Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A
Survey", TPAMI 2021)::

    delta_m = (1/T) * sum_i (-1)^{l_i} * (M_mtl,i - M_stl,i) / M_stl,i * 100   [%]

where i runs over the T chosen (task, metric) pairs, M_mtl,i is the multitask model's value,
M_stl,i the single-task model's (same kit, data and setting), and l_i = 1 when lower is better
(:data:`~vtagml_core.metrics.multitask.METRIC_DIRECTIONS`). Positive delta_m: the multitask model is
better on average. By default one metric per task is used (its
:data:`~vtagml_core.metrics.multitask.PRIMARY_METRICS` entry), so T is the number of tasks; with
several metrics per task every metric is one term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.tasks import TASKS

#: delta_m is reported in percent.
PERCENT: float = 100.0


@dataclass(frozen=True)
class DeltaMTerm:
    """One term of delta_m: ``term = sign * (mtl - stl) / stl * 100`` (positive: MTL better)."""

    task: str
    metric: str
    mtl: float
    stl: float
    lower_is_better: bool
    term: float


def _default_metrics(mtl: dict, stl: dict) -> dict[str, list[str]]:
    shared = [t for t in TASKS if t in mtl and t in stl]
    if not shared:
        raise ValueError(
            f"no task is present in both results (multitask: {sorted(mtl)}, single-task: "
            f"{sorted(stl)}); delta_m needs at least one shared task"
        )
    return {t: [PRIMARY_METRICS[t]] for t in shared}


def _value(results: dict[str, dict[str, float]], which: str, task: str, metric: str) -> float:
    if task not in results:
        raise ValueError(f"{which} results have no task {task!r} (tasks: {sorted(results)})")
    if metric not in results[task]:
        raise ValueError(
            f"{which} results for {task!r} have no metric {metric!r} (metrics: {sorted(results[task])})"
        )
    value = float(results[task][metric])
    if not math.isfinite(value):
        raise ValueError(f"{which} {task}/{metric} is {value}; delta_m needs finite values")
    return value


def delta_m_terms(
    mtl: dict[str, dict[str, float]],
    stl: dict[str, dict[str, float]],
    metrics: dict[str, list[str]] | None = None,
) -> list[DeltaMTerm]:
    """Every term of :func:`delta_m`, for tables (same arguments).

    Raises:
        ValueError: a chosen task/metric is missing from either result, a metric has no known
            direction, a value is not finite, or a single-task value is 0 (division by zero).
    """
    chosen = _default_metrics(mtl, stl) if metrics is None else metrics
    terms = []
    for task, names in chosen.items():
        for metric in names:
            if metric not in METRIC_DIRECTIONS:
                raise ValueError(
                    f"metric {metric!r} has no known direction; choose from {sorted(METRIC_DIRECTIONS)}"
                )
            m_mtl = _value(mtl, "multitask", task, metric)
            m_stl = _value(stl, "single-task", task, metric)
            if m_stl == 0:
                raise ValueError(
                    f"single-task {task}/{metric} is 0, so the relative change is undefined; "
                    "leave this metric out of delta_m (pass metrics=...)"
                )
            lower = METRIC_DIRECTIONS[metric]
            sign = -1.0 if lower else 1.0
            term = sign * (m_mtl - m_stl) / m_stl * PERCENT
            terms.append(DeltaMTerm(task, metric, m_mtl, m_stl, lower, term))
    if not terms:
        raise ValueError("no metrics chosen for delta_m: pass e.g. metrics={'seg': ['mIoU']}")
    return terms


def delta_m(
    mtl: dict[str, dict[str, float]],
    stl: dict[str, dict[str, float]],
    metrics: dict[str, list[str]] | None = None,
) -> float:
    """delta_m in percent (module docstring); positive means the multitask model is better.

    Args:
        mtl: multitask results ``{task: {metric: value}}`` (as from ``MultiTaskMetrics.compute()``).
        stl: single-task results, same layout (each task from its own single-task model).
        metrics: ``{task: [metric, ...]}`` to use; default: each shared task's primary metric.
    """
    terms = delta_m_terms(mtl, stl, metrics)
    return sum(t.term for t in terms) / len(terms)
