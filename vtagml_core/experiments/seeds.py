"""Per-seed numbers into table cells: summaries over seeds and the seed list parser."""
from __future__ import annotations

import math
from typing import Any, Sequence

from .stats import CONFIDENCE, mean_ci


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """One table cell from per-seed values (JSON-ready).

    Keys: ``mean``; ``ci_low`` / ``ci_high``, the Student-t confidence interval of the mean at
    ``confidence`` (``None`` for one value: no interval); ``confidence``; ``n``; ``std`` (sample
    std, 0 for n = 1); ``min``, ``max``; ``values`` in seed order, so that two rows can be
    compared seed by seed (:func:`vtagml_core.experiments.stats.paired_difference`).

    A non-finite value (a diverged run) gives a non-finite mean and no interval, so that the
    table shows it instead of hiding it.

    Raises:
        ValueError: no values.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize needs at least one value (one per seed)")
    if all(math.isfinite(v) for v in vals):
        ci = mean_ci(vals, confidence)
        mean, low, high, std = ci.mean, ci.low, ci.high, ci.std
    else:
        mean, low, high, std = sum(vals) / len(vals), None, None, float("nan")
    return {"mean": mean, "ci_low": low, "ci_high": high, "confidence": confidence,
            "n": len(vals), "std": std, "min": min(vals), "max": max(vals), "values": vals}


def aggregate_metrics(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """``{task: {metric: summarize(values over seeds)}}`` for the metrics every seed has."""
    if not per_seed:
        raise ValueError("aggregate_metrics needs the metrics of at least one seed")
    out: dict[str, dict[str, dict]] = {}
    for task, metrics in per_seed[0].items():
        for name in metrics:
            if all(name in m.get(task, {}) for m in per_seed):
                out.setdefault(task, {})[name] = summarize([m[task][name] for m in per_seed])
    return out


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """``"0,1,2"`` (or a list) -> ``[0, 1, 2]``; duplicates and negatives are refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip() != ""]
    except ValueError as err:
        raise ValueError(f"seeds must be comma-separated integers like 0,1,2, got {text!r}") from err
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers like 0,1,2, got {text!r}")
    return seeds


__all__ = ["aggregate_metrics", "parse_seeds", "summarize"]
