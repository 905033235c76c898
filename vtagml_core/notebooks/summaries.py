"""The sentences of the notebooks' summaries, written from statistics (issue 18).

Notebooks 05-09 close with a computed summary (:func:`vtagml_core.notebooks.display.summary`);
the runner copies it into ``report.md``. Every sentence that compares numbers comes from here,
so one rule holds everywhere (:mod:`vtagml_core.experiments.stats`):

* **better / worse** only when the paired per-seed interval excludes zero; otherwise "no
  measurable difference (n = 3)"; with one seed "n = 1, no interval", and the numbers are
  given without a verdict (:func:`row_comparison`, :func:`head_to_head_sentence`);
* **chance levels are computed**: a balanced binary discriminator's chance loss is
  ``ln 2`` (:func:`vtagml_core.experiments.stats.binary_chance_bce`); losses within
  :data:`~vtagml_core.experiments.stats.CHANCE_REL_TOLERANCE` of it are "at chance"
  (:func:`discriminator_sentence`);
* a **share of a gap** is printed only when the gap is measurably positive
  (:func:`gap_sentence`);
* a **training trend** ("the loss went down") compares the first and the last steps' windows
  with Welch's interval (:func:`trend_sentence`);
* **ablations** are compared with the full model seed by seed (:func:`ablation_sentences`);
* the **trivial predictors** are beaten only measurably (:func:`trivial_sentence`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from vtagml_core.experiments.stats import (ABOVE_CHANCE, AT_CHANCE, BELOW_CHANCE, BETTER, CHANCE_REL_TOLERANCE,
                                           NO_DIFFERENCE, NO_INTERVAL, WORSE, Comparison, binary_chance_bce,
                                           chance_position, gap_share, mean_ci, unpaired_difference)
from vtagml_core.experiments.tables import compare_cells, ranked_columns
from vtagml_core.experiments.formatting import format_difference, format_value

#: Fraction of a run's steps in the first / last window of :func:`trend_sentence` and
#: :func:`discriminator_sentence` (the last tenth: per-step losses are noisy).
WINDOW_FRACTION: float = 0.1
#: Fewest steps in such a window.
MIN_WINDOW_STEPS: int = 2


def _column(doc: dict[str, Any], key: str) -> dict[str, Any]:
    for col in doc["columns"]:
        if col["key"] == key:
            return col
    raise KeyError(f"no column {key!r} in the {doc.get('setting', '?')} results; columns: "
                   f"{', '.join(c['key'] for c in doc['columns'])}")


def row_comparison(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any], key: str) -> Comparison | None:
    """Row ``a`` against row ``b`` in column ``key``, seed by seed (None: cannot be paired)."""
    col = _column(doc, key)
    if col.get("lower_is_better") is None:
        raise ValueError(f"column {key!r} has no direction: nothing to compare")
    return compare_cells(a["cells"].get(key), b["cells"].get(key), bool(col["lower_is_better"]))


def comparison_sentence(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any], key: str,
                        a_name: str | None = None, b_name: str | None = None) -> str:
    """``"S-D Δm%↑: VTAGML +5.56 vs vanilla MTL +5.00, difference +0.56 (n=1); n = 1, no
    interval, so no verdict."``, or with seeds ``"...; VTAGML better (difference +0.56 [+0.20,
    +0.92] (n=3))."``."""
    col = _column(doc, key)
    a_name, b_name = a_name or a["label"], b_name or b["label"]
    ca, cb = a["cells"].get(key), b["cells"].get(key)
    if ca is None or cb is None:
        return f"{col['label']}: {a_name} or {b_name} has no value."
    numbers = (f"{a_name} {format_value(ca['mean'], col['metric'])} vs {b_name} "
               f"{format_value(cb['mean'], col['metric'])}")
    comp = row_comparison(doc, a, b, key)
    if comp is None:
        return f"{col['label']}: {numbers}; not paired (the rows have different seeds)."
    diff = format_difference(comp.difference, col["metric"])
    if comp.verdict == NO_INTERVAL:
        return f"{col['label']}: {numbers}, difference {diff}; {comp.phrase()}, so no verdict."
    return f"{col['label']}: {numbers}; {a_name} {comp.phrase()} (difference {diff})."


def _comparisons(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any],
                 keys: Sequence[str] | None) -> list[tuple[dict[str, Any], Comparison]]:
    """``(column, comparison)`` of row ``a`` against ``b`` over the ranked columns that pair."""
    out = []
    for col in ranked_columns(doc):
        if keys is not None and col["key"] not in keys:
            continue
        comp = compare_cells(a["cells"].get(col["key"]), b["cells"].get(col["key"]),
                             bool(col["lower_is_better"]))
        if comp is not None:
            out.append((col, comp))
    return out


def verdict_counts(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any],
                   keys: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Column labels by verdict of row ``a`` against row ``b`` (BETTER, WORSE, NO_DIFFERENCE,
    NO_INTERVAL; columns that cannot be paired are left out)."""
    out: dict[str, list[str]] = {BETTER: [], WORSE: [], NO_DIFFERENCE: [], NO_INTERVAL: []}
    for col, comp in _comparisons(doc, a, b, keys):
        out[comp.verdict].append(col["label"])
    return out


def _ahead(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any], labels: Sequence[str]) -> int:
    """On how many of the columns ``labels`` row ``a``'s mean is on the better side of ``b``'s."""
    ahead = 0
    for col in doc["columns"]:
        if col["label"] in labels:
            va, vb = a["cells"][col["key"]]["mean"], b["cells"][col["key"]]["mean"]
            ahead += (va < vb) if col["lower_is_better"] else (va > vb)
    return ahead


def head_to_head_sentence(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any],
                          keys: Sequence[str] | None = None, a_name: str | None = None,
                          b_name: str | None = None) -> str:
    """How row ``a`` compares with row ``b`` over the ranked columns, verdicts counted.

    With seeds: ``"VTAGML against vanilla MTL on 9 columns: better on 2 (..), worse on 1 (..),
    no measurable difference on 6 (n = 3)."``. With one seed nothing is called better or worse;
    the sentence says on how many columns the mean was ahead and that one seed cannot tell.
    """
    a_name, b_name = a_name or a["label"], b_name or b["label"]
    counts = verdict_counts(doc, a, b, keys)
    total = sum(len(v) for v in counts.values())
    if total == 0:
        return f"{a_name} and {b_name} share no column that can be compared seed by seed."
    if counts[NO_INTERVAL]:
        ahead = _ahead(doc, a, b, counts[NO_INTERVAL])
        return (f"{a_name} against {b_name} on {total} columns: n = 1, no interval, so none can be "
                f"called better or worse ({a_name}'s value was ahead on {ahead} of them, a count "
                "that one seed cannot separate from seed noise).")
    n = min(comp.n for _, comp in _comparisons(doc, a, b, keys))
    parts = []
    for verdict, word in ((BETTER, "better"), (WORSE, "worse"), (NO_DIFFERENCE, NO_DIFFERENCE)):
        labels = counts[verdict]
        if labels:
            listed = f" ({', '.join(labels)})" if verdict != NO_DIFFERENCE else ""
            parts.append(f"{word} on {len(labels)}{listed}")
    return f"{a_name} against {b_name} on {total} columns (n = {n}): " + ", ".join(parts) + "."


def gap_sentence(doc: dict[str, Any], floor: dict[str, Any], row: dict[str, Any], ceiling: dict[str, Any],
                 key: str, row_name: str | None = None) -> str:
    """How much of the floor-to-ceiling gap (source only to oracle) ``row`` closed in ``key``;
    the share is given only when the gap is measurably positive."""
    col = _column(doc, key)
    row_name = row_name or row["label"]
    cells = [r["cells"].get(key) for r in (floor, row, ceiling)]
    if any(c is None or not c.get("values") for c in cells) or len({len(c["values"]) for c in cells}) > 1:
        return f"{col['label']}: the source-only, adapted and oracle values cannot be paired."
    share = gap_share(*[c["values"] for c in cells], bool(col["lower_is_better"]))
    gap = format_difference(share.gap, col["metric"])
    if share.share is None:
        return (f"{col['label']}: oracle minus source only, signed so positive is better, {gap}; "
                f"no share of it is given for {row_name}: {share.reason}.")
    return (f"{col['label']}: oracle minus source only {gap} (a measurable gap); {row_name} closed "
            f"{share.share:.0f} % of it.")


def window(values: Sequence[float], fraction: float = WINDOW_FRACTION, last: bool = True) -> list[float]:
    """The last (or first) ``fraction`` of ``values``, at least :data:`MIN_WINDOW_STEPS` of them."""
    vals = [float(v) for v in values if math.isfinite(float(v))]
    if not vals:
        raise ValueError("no finite values to take a window of")
    size = min(len(vals), max(MIN_WINDOW_STEPS, round(fraction * len(vals))))
    return vals[-size:] if last else vals[:size]


def trend_sentence(name: str, values: Sequence[float], fraction: float = WINDOW_FRACTION) -> str:
    """``"<name> went down from 2.31 (first 10 steps) to 1.02 (last 10 steps)"`` only when
    Welch's interval of the two windows' difference excludes zero; otherwise says it did not
    measurably change."""
    first, last = window(values, fraction, last=False), window(values, fraction, last=True)
    diff = unpaired_difference(last, first)
    where = (f"from {sum(first) / len(first):.3g} (mean of the first {len(first)} steps) to "
             f"{sum(last) / len(last):.3g} (mean of the last {len(last)} steps)")
    if not diff.has_interval:
        return f"{name}: {where}; too few steps for an interval."
    if not diff.excludes_zero():
        return f"{name}: {where}; no measurable change (Welch 95 % interval includes zero)."
    return f"{name} went {'down' if diff.mean < 0 else 'up'} {where}."


def discriminator_sentence(losses: Mapping[str, Sequence[float]], positive_rate: float = 0.5,
                           fraction: float = WINDOW_FRACTION,
                           rel_tolerance: float = CHANCE_REL_TOLERANCE) -> str:
    """Where each UDA discriminator's loss ends against chance.

    Args:
        losses: task -> the discriminator's per-step loss.
        positive_rate: the share of source samples in its batches (0.5: as many target ones),
            which sets its chance loss (:func:`~vtagml_core.experiments.stats.binary_chance_bce`).

    Each loss is averaged over the last ``fraction`` of the steps and called at chance within
    ``rel_tolerance`` of the chance level, below it (the discriminator still tells the domains
    apart) or above it (it does worse than guessing: the adapted model fools it).
    """
    if not losses:
        raise ValueError("discriminator_sentence needs the loss of at least one discriminator")
    chance = binary_chance_bce(positive_rate)
    ends = {task: window(vals, fraction) for task, vals in losses.items()}
    means = {task: sum(v) / len(v) for task, v in ends.items()}
    where = {task: chance_position(m, chance, rel_tolerance) for task, m in means.items()}
    steps = min(len(v) for v in ends.values())
    text = (f"Discriminator losses over the last {steps} steps: "
            + ", ".join(f"{t} {m:.3f}" for t, m in means.items())
            + f"; chance for a balanced binary discriminator is ln 2 = {chance:.3f} "
              f"(within ±{rel_tolerance:.0%} counts as at chance).")
    groups = {pos: [t for t, p in where.items() if p == pos] for pos in (AT_CHANCE, BELOW_CHANCE, ABOVE_CHANCE)}
    said = []
    if groups[AT_CHANCE]:
        said.append(f"at chance for {', '.join(groups[AT_CHANCE])}: those discriminators cannot tell "
                    "source outputs from target outputs")
    if groups[BELOW_CHANCE]:
        said.append(f"below chance for {', '.join(groups[BELOW_CHANCE])}: those discriminators still "
                    "tell the domains apart")
    if groups[ABOVE_CHANCE]:
        said.append(f"above chance for {', '.join(groups[ABOVE_CHANCE])}: those discriminators do "
                    "worse than guessing")
    verdict = "; ".join(said)
    return f"{text} {verdict[0].upper()}{verdict[1:]}."


def ablation_sentences(doc: dict[str, Any], key: str = "delta_m", full_method: str = "full") -> list[str]:
    """What each ablation did against the full model in column ``key`` (seed by seed), then
    which removals measurably hurt. Nothing is called a loss without an interval."""
    col = _column(doc, key)
    full = next((r for r in doc["rows"] if r["method"] == full_method), None)
    if full is None:
        raise LookupError(f"no full-model row (method {full_method!r}) in the ablation results")
    ablated = [r for r in doc["rows"] if r is not full]
    points, hurt, helped, open_ = [], [], [], []
    for r in ablated:
        comp = row_comparison(doc, full, r, key)
        if comp is None:
            points.append(f"{r['label']}: cannot be paired with the full model.")
            continue
        diff = format_difference(comp.difference, col["metric"])
        values = (f"{format_value(r['cells'][key]['mean'], col['metric'])} vs the full model's "
                  f"{format_value(full['cells'][key]['mean'], col['metric'])}")
        if comp.verdict == BETTER:
            hurt.append(r["label"])
            verdict = "removing it measurably hurt"
        elif comp.verdict == WORSE:
            helped.append(r["label"])
            verdict = "removing it measurably helped"
        else:
            open_.append(r["label"])
            verdict = comp.phrase() if comp.verdict == NO_DIFFERENCE else f"{comp.phrase()}, no verdict"
        points.append(f"{r['label']}: {col['label']} {values} (full minus row {diff}): {verdict}.")
    if hurt or helped:
        points.append(f"Removing a part measurably hurt in {len(hurt)} of {len(ablated)} ablations"
                      + (f" ({', '.join(hurt)})" if hurt else "")
                      + (f" and measurably helped in {len(helped)} ({', '.join(helped)})" if helped else "")
                      + ".")
    elif ablated:
        ns = {c["n"] for r in doc["rows"] for k, c in r["cells"].items() if k == key}
        why = ("n = 1, no interval: train more seeds before saying which parts help" if ns == {1}
               else "every difference is within seed noise")
        points.append(f"No ablation measurably hurt or helped ({why}).")
    return points


def trivial_sentence(sanity: dict[str, Any], split: str) -> str:
    """The MTL quality check (:func:`vtagml_core.experiments.settings.mtl.quality_check`) as one
    sentence: on which tasks VTAGML is measurably better than the trivial predictors."""
    checks = sanity["checks"]
    better = [c["task"] for c in checks if c.get("verdict") == BETTER]
    worse = [c["task"] for c in checks if c.get("verdict") == WORSE]
    open_ = [c for c in checks if c.get("verdict") not in (BETTER, WORSE)]
    parts = [f"measurably better on {len(better)} of {len(checks)} tasks"
             + (f" ({', '.join(better)})" if better else "")]
    if worse:
        parts.append(f"measurably worse on {', '.join(worse)}: there the model has not learned more "
                     "than the label statistics")
    if open_:
        ahead = [c["task"] for c in open_ if c["beats_trivial"]]
        parts.append(f"no verdict on {', '.join(c['task'] for c in open_)} "
                     f"({open_[0].get('verdict_text', 'no interval')}; the mean is ahead on "
                     f"{len(ahead)} of them)")
    return f"On the {split} split VTAGML against the trivial predictors: " + "; ".join(parts) + "."


def best_row_sentence(doc: dict[str, Any], key: str, rows: Sequence[dict[str, Any]] | None = None) -> str:
    """Which row has the best mean in column ``key`` (e.g. the lowest mCE), and whether it is
    measurably best: ``"mCE%↓: lowest mean VTAGML 85.10, measurably below every other row. ..."``
    only when each paired interval excludes zero; otherwise the pairs' verdicts
    (:func:`comparison_sentence`), so no ranking is claimed that the seeds cannot carry."""
    col = _column(doc, key)
    if col.get("lower_is_better") is None:
        raise ValueError(f"column {key!r} has no direction: no row is best")
    lower = bool(col["lower_is_better"])
    rows = [r for r in (doc["rows"] if rows is None else rows) if key in r["cells"]]
    if len(rows) < 2:
        return f"{col['label']}: fewer than two rows have a value; nothing to rank."
    top = (min if lower else max)(rows, key=lambda r: r["cells"][key]["mean"])
    others = [r for r in rows if r is not top]
    comps = [row_comparison(doc, top, r, key) for r in others]
    side = "lowest" if lower else "highest"
    value = format_value(top["cells"][key]["mean"], col["metric"])
    head = f"{col['label']}: {side} mean {top['label']} {value}"
    if all(c is not None and c.verdict == BETTER for c in comps):
        verdict = f"measurably {'below' if lower else 'above'} every other row"
    else:
        verdict = "not measurably best"
    return f"{head}, {verdict}. " + " ".join(comparison_sentence(doc, top, r, key) for r in others)


def interval_text(values: Sequence[float], metric: str) -> str:
    """A mean with its interval in the table's format (``"52.46 [50.10, 54.82] (n=3)"``)."""
    ci = mean_ci(values)
    text = format_value(ci.mean, metric)
    if not ci.has_interval:
        return f"{text} ({ci.n_text()})"
    return f"{text} [{format_value(ci.low, metric)}, {format_value(ci.high, metric)}] (n={ci.n})"


__all__ = ["MIN_WINDOW_STEPS", "WINDOW_FRACTION", "ablation_sentences", "best_row_sentence",
           "comparison_sentence",
           "discriminator_sentence", "gap_sentence", "head_to_head_sentence", "interval_text",
           "row_comparison", "trend_sentence", "trivial_sentence", "verdict_counts", "window"]
