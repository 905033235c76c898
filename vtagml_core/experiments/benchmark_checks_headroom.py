"""Headroom of every setting (project issue 15, item 3): is there a gap worth closing?

A transfer setting says something only when the source-only model is neither as good as the
oracle (nothing to adapt) nor as bad as a constant predictor (nothing transferred). For each
setting at its configured target, each reported task and each seed, the **normalised score**

    r = (m_source_only - m_trivial) / (m_oracle - m_trivial)          (higher is better)
    r = (m_trivial - m_source_only) / (m_trivial - m_oracle)          (lower-is-better metrics)

places the source-only model between the trivial predictor (r = 0) and the oracle (r = 1), on
the task's headline metric (:data:`~vtagml_core.metrics.multitask.PRIMARY_METRICS`):

* ``m_source_only``: VTAGML trained on the setting's source domain (``source``, or the
  transfer setting's own ``zero_shot_source`` / ``uda_source``; the MTL setting's run when it is
  ``source``), scored on the target's test split;
* ``m_oracle``: VTAGML trained on the target with all labels (the zero-shot / UDA oracle,
  :func:`~vtagml_core.experiments.settings.zero_shot.train_oracle`), same split;
* ``m_trivial``: the trivial predictors (:mod:`vtagml_core.metrics.trivial`) fitted on the
  setting's **source** train split, scored on the target's test split (no seed: one value).

Settings and targets: zero-shot ``zero_shot_target`` with each of ``zero_shot_task_sets`` (all
tasks, the zero-shot one marked), UDA ``uda_target`` with ``uda_tasks``, novel domains each of
``novel_domains`` with ``novel_tasks``. Every r lies in :data:`HEADROOM_BAND` when the benchmark
has headroom; a novel domain listed in ``remote_domains`` (the comic style, the paper's photos ->
comics case) gets its r computed and printed, marked :data:`REMOTE_CASE`, and is not held to it.
Where the oracle is not better than the trivial predictor (gap at most
:data:`MIN_GAP_REL` of the larger value) r is undefined: "no headroom defined".
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.tasks import parse_tasks

#: The band r should lie in at each setting's default severity (issue 15, item 3).
HEADROOM_BAND: tuple[float, float] = (0.3, 0.8)
#: The oracle must beat the trivial predictor by more than this fraction of the larger of the
#: two values (in the metric's better direction) for r to be defined.
MIN_GAP_REL: float = 0.01
#: Method of the source-only and oracle models.
HEADROOM_METHOD: str = "vtagml"
#: Printed where r is undefined.
NO_HEADROOM: str = "no headroom defined"
#: Band flag of a remote-case row (``SettingsConfig.remote_domains``).
REMOTE_CASE: str = "remote case (not held to the band)"
#: Results document name under ``<runs>/setting_results/``.
HEADROOM_DOCUMENT: str = "headroom"


def normalised_score(source: float, oracle: float, trivial: float,
                     lower_is_better: bool) -> float | None:
    """r of one seed: 0 at the trivial predictor, 1 at the oracle; None when the oracle is not
    better than the trivial predictor by more than :data:`MIN_GAP_REL` (no headroom)."""
    sign = -1.0 if lower_is_better else 1.0
    gap = sign * (oracle - trivial)
    if gap <= MIN_GAP_REL * max(abs(oracle), abs(trivial)) or gap <= 0.0:
        return None
    return sign * (source - trivial) / gap


def headroom_targets(settings) -> list[dict[str, Any]]:
    """``[{setting, source, target, task_set, zero_shot, remote}]`` at each setting's configured
    source and target (``remote``: a novel domain of ``remote_domains``, not held to the band)."""
    from vtagml_core.experiments.settings.zero_shot import split_zero_shot

    out = [{"setting": "zeroshot", "source": settings.source_for("zeroshot"),
            "target": settings.zero_shot_target, "task_set": g,
            "zero_shot": split_zero_shot(g)[1], "remote": False}
           for g in settings.zero_shot_task_sets]
    out.append({"setting": "uda", "source": settings.source_for("uda"), "target": settings.uda_target,
                "task_set": settings.uda_tasks, "zero_shot": None, "remote": False})
    out += [{"setting": "novel", "source": settings.source, "target": d,
             "task_set": settings.novel_tasks, "zero_shot": None,
             "remote": d in settings.remote_domains}
            for d in settings.novel_domains if d != settings.source]
    return out


def _r_summary(values: list[float | None]) -> dict[str, Any]:
    """Mean and 95 % interval of the per-seed r (none when a seed has no headroom)."""
    from vtagml_core.experiments.stats import mean_ci

    low, high = HEADROOM_BAND
    if any(v is None for v in values):
        return {"values": values, "mean": None, "ci_low": None, "ci_high": None, "n": len(values),
                "in_band": None, "ci_in_band": None}
    ci = mean_ci(values)
    return {"values": values, "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
            "in_band": low <= ci.mean <= high,
            "ci_in_band": (low <= ci.low and ci.high <= high) if ci.has_interval else None}


def headroom(ctx) -> dict[str, Any]:
    """r for every setting x reported task x seed (module docstring); the results document.

    Trains or reuses, per seed, the source VTAGML run of each task set and the oracle of each
    (target, task set) through the settings context.
    """
    from vtagml_core.experiments.seeds import summarize
    from vtagml_core.experiments.settings.mtl import train_source, trivial_metrics
    from vtagml_core.experiments.settings.zero_shot import train_oracle

    started = time.perf_counter()
    rows, trivial_cache = [], {}
    try:
        for item in headroom_targets(ctx.settings):
            origin, target, g = item["source"], item["target"], item["task_set"]
            tasks = parse_tasks(g)
            if (origin, target, tasks) not in trivial_cache:
                trivial_cache[origin, target, tasks] = trivial_metrics(ctx, tasks, "test", domain=target,
                                                                       fitted_on=origin)
            trivial = trivial_cache[origin, target, tasks]
            source = [ctx.evaluate(train_source(ctx, g, HEADROOM_METHOD, s, origin), target)
                      for s in ctx.seeds]
            oracle = [ctx.evaluate(train_oracle(ctx, g, target, s), target) for s in ctx.seeds]
            for t in tasks:
                m = PRIMARY_METRICS[t]
                lower = METRIC_DIRECTIONS[m]
                src, orc = [x[t][m] for x in source], [x[t][m] for x in oracle]
                r = [normalised_score(a, b, trivial[t][m], lower) for a, b in zip(src, orc)]
                rows.append({**item, "task": t, "metric": m, "lower_is_better": lower,
                             "trivial": trivial[t][m], "source_only": summarize(src),
                             "oracle": summarize(orc), "r": _r_summary(r),
                             "where": ctx.where(target, "test")})
    finally:
        ctx.release_models()
    d = ctx.cfg.data
    return {"setting": HEADROOM_DOCUMENT, "title": "Headroom of every setting (issue 15, item 3)",
            "preset": ctx.preset, "band": list(HEADROOM_BAND), "method": HEADROOM_METHOD,
            "source_domain": ctx.settings.source, "seeds": list(ctx.seeds),
            "trivial_fitted_on": f"each row's source train split ({d.train_count} scenes)",
            "rows": rows, "runs": list(ctx.records),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def _r_text(r: dict[str, Any], remote: bool = False) -> tuple[str, str, str]:
    """(r cell, per-seed r, band flag) of one row."""
    per_seed = ", ".join("-" if v is None else f"{v:.3f}" for v in r["values"])
    if r["mean"] is None:
        return NO_HEADROOM, per_seed, REMOTE_CASE if remote else "-"
    text = f"{r['mean']:.3f}" + (f" ± {(r['ci_high'] - r['ci_low']) / 2:.3f}" if r["ci_low"] is not None
                                 else "") + f" (n={r['n']})"
    if remote:
        return text, per_seed, REMOTE_CASE
    flag = "yes" if r["in_band"] else "NO"
    if r["ci_in_band"] is not None:
        flag += ", interval inside" if r["ci_in_band"] else ", interval not inside"
    return text, per_seed, flag


def headroom_markdown(doc: dict[str, Any]) -> str:
    """The r table (one row per setting x task) with its provenance lines."""
    from vtagml_core.experiments.formatting import format_cell, format_value, generator_text, markdown_table

    low, high = doc["band"]
    body = []
    for row in doc["rows"]:
        m = row["metric"]
        arrow = "↓" if row["lower_is_better"] else "↑"
        task = f"{row['task']} {m}{arrow}" + (" (zero-shot)" if row["task"] == row["zero_shot"] else "")
        r, per_seed, flag = _r_text(row["r"], row.get("remote", False))
        body.append([row["setting"], row.get("source", doc["source_domain"]), row["target"], row["task_set"], task,
                     format_value(row["trivial"], m), format_cell(row["source_only"], m),
                     format_cell(row["oracle"], m), r, per_seed, flag])
    header = ["setting", "source", "target", "tasks", "task (metric)", "trivial", "source only",
              "oracle", "r", "r per seed", f"r in [{low:g}, {high:g}]"]
    first = doc["rows"][0]["where"] if doc["rows"] else {}
    generator = f"synthetic {generator_text(first)}, " if generator_text(first) else ""
    lines = [f"# {doc['title']}", "",
             f"{doc['method']} trained on the row's source domain (source only) vs "
             f"{doc['method']} trained on the target (oracle), both scored on the target's test "
             f"split ({first.get('split', '?')}), {generator}{first.get('resolution', '?')}, backbone "
             f"{first.get('backbone', '?')}, seeds {doc['seeds']}; trivial predictors fitted on "
             f"{doc['trivial_fitted_on']}, one value. Metrics in the tables' units (% for "
             "fractions); r: mean ± half-width of the 95 % t interval over seeds.", "",
             markdown_table(header, body, ["l", "l", "l", "l", "l", "r", "r", "r", "r", "r", "l"])]
    return "\n".join(lines)


def write_headroom(doc: dict[str, Any], root: str | Path) -> tuple[Path, Path]:
    """``<root>/setting_results/headroom.json`` and ``.md`` (next to the settings' results)."""
    from vtagml_core.experiments.runs import RESULTS_SUBDIR

    out = Path(root) / RESULTS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{HEADROOM_DOCUMENT}.json", out / f"{HEADROOM_DOCUMENT}.md"
    js.write_text(json.dumps(doc, indent=2) + "\n")
    md.write_text(headroom_markdown(doc) + "\n")
    return js, md


__all__ = ["HEADROOM_BAND", "HEADROOM_METHOD", "MIN_GAP_REL", "NO_HEADROOM", "REMOTE_CASE",
           "headroom", "headroom_markdown", "headroom_targets", "normalised_score",
           "write_headroom"]
