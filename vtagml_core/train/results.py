"""What a training run returns (:class:`FitResult`) and which epoch counts as its best
(:func:`selection_score`), for :class:`~vtagml_core.train.trainer.Trainer`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS

#: Relative changes in :func:`selection_score` are divided by at least this (a reference
#: metric of exactly 0, e.g. an odsF of 0 after the first epoch, would divide by zero).
SCORE_MIN_REFERENCE: float = 1e-6


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        model: the trained model (weights of the last step, not wrapped in DDP).
        best_metrics, last_metrics: validation metrics ``{task: {metric: value}}`` of the best
            and of the last epoch.
        out_dir: the run folder.
        history: one dict per epoch (the ``"epoch"`` records of ``log.jsonl``).
    """

    model: nn.Module
    best_metrics: dict[str, dict[str, float]]
    last_metrics: dict[str, dict[str, float]]
    out_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def selection_score(metrics: dict[str, dict[str, float]],
                    reference: dict[str, dict[str, float]]) -> float:
    """Which epoch is "best": mean over tasks of the signed relative change of the primary metric.

    ``score = (1/T) sum_t s_t (M_t - R_t) / max(|R_t|, eps)`` with M_t the task's
    :data:`~vtagml_core.metrics.multitask.PRIMARY_METRICS` value (mIoU, depth RMSE, normals mean
    error, odsF), R_t the same metric at the run's first validation, s_t = +1 where higher is
    better and -1 where lower is better. It is delta_m's rule (:mod:`vtagml_core.metrics.delta_m`)
    with the first validation standing in for the single-task model: scale-free, so a task
    measured in degrees does not outweigh one measured in [0, 1]. Higher is better; the first
    validation scores 0.
    """
    terms = []
    for task, values in metrics.items():
        name = PRIMARY_METRICS[task]
        sign = -1.0 if METRIC_DIRECTIONS[name] else 1.0
        ref = reference[task][name]
        terms.append(sign * (values[name] - ref) / max(abs(ref), SCORE_MIN_REFERENCE))
    return sum(terms) / len(terms)


__all__ = ["SCORE_MIN_REFERENCE", "FitResult", "selection_score"]
