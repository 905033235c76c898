"""Robustness to a shift as one number: the corruption error of ImageNet-C.

Hendrycks & Dietterich ("Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019) summarise a model's errors over the five severities s of a shift c
by dividing their sum by a baseline model's sum over the same severities:

    CE_c = 100 * sum_s E_{s,c} / sum_s E_{s,c}^{baseline}                               (%)

and average CE_c over the shifts (mCE). 100 means "as many errors as the baseline", below 100
fewer. Summing before dividing weighs every severity by how hard it is for the baseline, so one
easy severity with a tiny baseline error cannot dominate (the mean of per-severity ratios
would let it).

A dense-prediction metric becomes an error ``E`` by its direction
(:data:`vtagml_core.metrics.multitask.METRIC_DIRECTIONS`): a lower-is-better metric (depth RMSE,
the normals' mean angle) is an error as it is; a higher-is-better one is a fraction in [0, 1]
(mIoU, odsF) and its error is ``1 - value``.

The kit uses the same summary over the severities of its graded shift and over the novel
domains (notebook 08: each domain one shift, errors relative to the single-task models).
"""
from __future__ import annotations

import math
from typing import Sequence

#: Corruption errors are printed in percent of the baseline's error.
PERCENT: float = 100.0


def as_errors(values: Sequence[float], lower_is_better: bool) -> list[float]:
    """Metric values -> errors (lower is better): as they are, or ``1 - value`` for fractions.

    Raises:
        ValueError: a value is not finite, or a higher-is-better value lies outside [0, 1]
            (give mIoU and odsF as fractions, not percentages).
    """
    values = [float(v) for v in values]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"metric values must be finite, got {values}")
    if lower_is_better:
        return values
    if not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"higher-is-better metrics must be fractions in [0, 1] (mIoU 0.49, not 49), "
                         f"got {values}")
    return [1.0 - v for v in values]


def corruption_error(values: Sequence[float], baseline: Sequence[float], lower_is_better: bool) -> float:
    """``CE = 100 * sum_s E_s / sum_s E_s^baseline`` (%) of one metric over the severities of one shift.

    Args:
        values: the model's metric at each severity (or on each shifted domain), ``(S,)``.
        baseline: the baseline model's metric at the same severities, ``(S,)``.
        lower_is_better: the metric's direction (``METRIC_DIRECTIONS[metric]``).

    Raises:
        ValueError: the two lists differ in length or are empty, or the baseline makes no error
            at all (the ratio is undefined).
    """
    if len(values) != len(baseline) or not values:
        raise ValueError(f"need one value per severity for both models, got {len(values)} and {len(baseline)}")
    errors, base = as_errors(values, lower_is_better), as_errors(baseline, lower_is_better)
    if sum(base) <= 0.0:
        raise ValueError("the baseline makes no error at any severity: its corruption error is undefined")
    return PERCENT * sum(errors) / sum(base)


def mean_corruption_error(errors: Sequence[float]) -> float:
    """mCE: the mean of the corruption errors of several shifts (or tasks), in %."""
    if not errors:
        raise ValueError("mean_corruption_error needs at least one corruption error")
    return sum(errors) / len(errors)


__all__ = ["PERCENT", "as_errors", "corruption_error", "mean_corruption_error"]
