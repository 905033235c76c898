"""Statistics over seeds: means with confidence intervals, paired differences, and verdicts.

Every table cell, notebook summary and claim of the kit reads its numbers through this module,
so that one rule decides what may be called a difference (issue 18, "answers you can trust"):

* a cell is the **mean over seeds with a 95 % Student-t confidence interval**
  (``mean ± t_{0.975, n-1} * s / sqrt(n)``, :func:`mean_ci`) and its count ``n``;
* two rows are compared seed by seed: the **paired difference** ``a_i - b_i`` of the same seed
  gets its own t interval (:func:`paired_difference`). Seeds share data order and
  initialisation, so pairing removes their common part of the noise;
* a row is called **better** or **worse** only when that interval excludes zero
  (:class:`Comparison`); otherwise "no measurable difference (n = 3)"; with one seed there is
  no interval at all ("n = 1, no interval") and nothing is called a difference;
* a **chance level** is computed, not assumed (:func:`binary_chance_bce`: ``ln 2`` for a
  balanced binary discriminator), and a value counts as at chance within
  :data:`CHANCE_REL_TOLERANCE` of it (:func:`chance_position`);
* a **share of a gap** (how much of the source-only to oracle gap adaptation closed) is given
  only when the gap itself is measurably positive (:func:`gap_share`).

The t quantiles come from :func:`scipy.stats.t.ppf`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

#: Confidence level of every interval the kit prints.
CONFIDENCE: float = 0.95
#: Fewest values that give an interval (one value has no spread to estimate).
MIN_INTERVAL_N: int = 2
#: A value within this fraction of a chance level counts as at chance (2 %: 0.693 +- 0.014 for
#: ln 2). The losses are noisy per-step values averaged over a window (:func:`chance_position`).
CHANCE_REL_TOLERANCE: float = 0.02

#: Verdicts of a :class:`Comparison`.
BETTER, WORSE, NO_DIFFERENCE, NO_INTERVAL = "better", "worse", "no measurable difference", "no interval"
#: Positions of a value against a chance level (:func:`chance_position`).
AT_CHANCE, BELOW_CHANCE, ABOVE_CHANCE = "at chance", "below chance", "above chance"


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided Student-t confidence interval.

    Attributes:
        mean: the sample mean.
        low, high: the interval's ends; ``None`` when ``n`` < :data:`MIN_INTERVAL_N`.
        n: how many values (seeds, or timed steps).
        std: the sample standard deviation (``ddof=1``; 0 for one value).
        confidence: the interval's level.
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    std: float
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        return None if not self.has_interval else (self.high - self.low) / 2.0

    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or below zero (never for ``n = 1``)."""
        return self.has_interval and (self.low > 0.0 or self.high < 0.0)

    def n_text(self) -> str:
        """``"n = 3"``, or ``"n = 1, no interval"``."""
        return f"n = {self.n}" if self.has_interval else f"n = {self.n}, no interval"


def _values(values: Sequence[float], what: str) -> list[float]:
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError(f"{what} needs at least one value (one per seed)")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{what} got a non-finite value in {vals}; check the run that produced it")
    return vals


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for ``n`` values (``n - 1`` degrees of freedom)."""
    if n < MIN_INTERVAL_N:
        raise ValueError(f"a t interval needs at least {MIN_INTERVAL_N} values, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    from scipy import stats as scipy_stats  # imported here: scipy is slow to import

    return float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1))


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` with its Student-t confidence interval (none for one value).

    Raises:
        ValueError: no values, or a non-finite one.
    """
    vals = _values(values, "mean_ci")
    n = len(vals)
    mean = sum(vals) / n
    if n < MIN_INTERVAL_N:
        return Interval(mean, None, None, n, 0.0, confidence)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(n, confidence) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, confidence)


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = CONFIDENCE) -> Interval:
    """Interval of the per-seed differences ``a_i - b_i`` (the same seed at the same index).

    Raises:
        ValueError: the two lists differ in length (they are not paired by seed).
    """
    va, vb = _values(a, "paired_difference"), _values(b, "paired_difference")
    if len(va) != len(vb):
        raise ValueError(f"paired_difference needs one value per seed on both sides, got {len(va)} "
                         f"and {len(vb)}: run both rows with the same --seeds")
    return mean_ci([x - y for x, y in zip(va, vb)], confidence)


def unpaired_difference(a: Sequence[float], b: Sequence[float],
                        confidence: float = CONFIDENCE) -> Interval:
    """Interval of ``mean(a) - mean(b)`` for two independent samples (Welch's t, unequal
    variances): for values that are not paired, such as the first and the last training steps
    of one run. ``n`` is the smaller sample's size and ``std`` holds the difference's standard
    error; no interval when either sample has one value.
    """
    va, vb = _values(a, "unpaired_difference"), _values(b, "unpaired_difference")
    ia, ib = mean_ci(va, confidence), mean_ci(vb, confidence)
    diff = ia.mean - ib.mean
    n = min(ia.n, ib.n)
    if not (ia.has_interval and ib.has_interval):
        return Interval(diff, None, None, n, 0.0, confidence)
    qa, qb = ia.std ** 2 / ia.n, ib.std ** 2 / ib.n
    se = math.sqrt(qa + qb)
    if se == 0.0:
        return Interval(diff, diff, diff, n, 0.0, confidence)
    dof = (qa + qb) ** 2 / (qa ** 2 / (ia.n - 1) + qb ** 2 / (ib.n - 1))
    from scipy import stats as scipy_stats

    half = float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, dof)) * se
    return Interval(diff, diff - half, diff + half, n, se, confidence)


@dataclass(frozen=True)
class Comparison:
    """Row ``a`` against row ``b`` on one metric, seed by seed.

    Attributes:
        difference: the paired difference ``a - b`` in the metric's units.
        lower_is_better: the metric's direction.
    """

    difference: Interval
    lower_is_better: bool

    @property
    def n(self) -> int:
        return self.difference.n

    @property
    def verdict(self) -> str:
        """:data:`BETTER` / :data:`WORSE` (``a`` against ``b``) only when the interval excludes
        zero; :data:`NO_DIFFERENCE` when it does not; :data:`NO_INTERVAL` for one seed."""
        d = self.difference
        if not d.has_interval:
            return NO_INTERVAL
        if not d.excludes_zero():
            return NO_DIFFERENCE
        return BETTER if (d.mean < 0) == self.lower_is_better else WORSE

    @property
    def significant(self) -> bool:
        return self.verdict in (BETTER, WORSE)

    def phrase(self) -> str:
        """``"better"``, ``"worse"``, ``"no measurable difference (n = 3)"`` or
        ``"n = 1, no interval"``: the words every summary uses."""
        v = self.verdict
        if v == NO_INTERVAL:
            return self.difference.n_text()
        if v == NO_DIFFERENCE:
            return f"{NO_DIFFERENCE} ({self.difference.n_text()})"
        return v


def compare(a: Sequence[float], b: Sequence[float], lower_is_better: bool,
            confidence: float = CONFIDENCE) -> Comparison:
    """:class:`Comparison` of per-seed values ``a`` against ``b``."""
    return Comparison(paired_difference(a, b, confidence), lower_is_better)


def binary_chance_bce(positive_rate: float = 0.5) -> float:
    """The binary cross-entropy (nats) of a classifier that only knows the label frequency.

    It predicts ``positive_rate`` for every input, so its loss is the labels' entropy
    ``-(p ln p + (1 - p) ln(1 - p))``: ``ln 2`` for balanced labels, as a UDA discriminator sees
    (half source, half target).
    """
    if not 0.0 < positive_rate < 1.0:
        raise ValueError(f"positive_rate must lie strictly between 0 and 1, got {positive_rate}")
    p = positive_rate
    return -(p * math.log(p) + (1.0 - p) * math.log(1.0 - p))


def chance_position(value: float, chance: float, rel_tolerance: float = CHANCE_REL_TOLERANCE) -> str:
    """:data:`AT_CHANCE` within ``rel_tolerance * chance`` of the level, else below / above it."""
    if abs(value - chance) <= rel_tolerance * abs(chance):
        return AT_CHANCE
    return BELOW_CHANCE if value < chance else ABOVE_CHANCE


@dataclass(frozen=True)
class GapShare:
    """How much of the gap between a floor (source only) and a ceiling (oracle) a row closed.

    Attributes:
        gap: paired ``ceiling - floor``, signed so that positive means the ceiling is better.
        gain: paired ``row - floor``, signed the same way.
        share: ``100 * gain / gap`` (percent), or ``None`` when no share is meaningful.
        reason: why ``share`` is ``None`` (empty otherwise).
    """

    gap: Interval
    gain: Interval
    share: float | None
    reason: str


def gap_share(floor: Sequence[float], row: Sequence[float], ceiling: Sequence[float],
              lower_is_better: bool, confidence: float = CONFIDENCE) -> GapShare:
    """The share of the floor-to-ceiling gap that ``row`` closed, per seed paired.

    A share is given only when the gap is measurably positive (its interval lies above zero).
    Otherwise ``share`` is ``None`` and ``reason`` says why: one seed (the gap's noise is
    unknown), a gap within noise, or a ceiling that is not better than the floor (a share of
    such a gap has no meaning: its sign flips the sentence).
    """
    sign = -1.0 if lower_is_better else 1.0
    gap = paired_difference([sign * v for v in ceiling], [sign * v for v in floor], confidence)
    gain = paired_difference([sign * v for v in row], [sign * v for v in floor], confidence)
    if not gap.has_interval:
        return GapShare(gap, gain, None, "n = 1, no interval: the gap's noise is unknown")
    if not gap.excludes_zero():
        return GapShare(gap, gain, None, f"the gap is within noise ({gap.n_text()})")
    if gap.mean < 0:
        return GapShare(gap, gain, None, "the oracle is worse than source only: no gap to close")
    return GapShare(gap, gain, 100.0 * gain.mean / gap.mean, "")


__all__ = ["ABOVE_CHANCE", "AT_CHANCE", "BELOW_CHANCE", "BETTER", "CHANCE_REL_TOLERANCE", "CONFIDENCE",
           "Comparison", "GapShare", "Interval", "MIN_INTERVAL_N", "NO_DIFFERENCE", "NO_INTERVAL", "WORSE",
           "binary_chance_bce", "chance_position", "compare", "gap_share", "mean_ci", "paired_difference",
           "t_quantile", "unpaired_difference"]
