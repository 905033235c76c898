"""Robustness curves: the source models against graded shift severity (project issue 15, item 4).

The novel-domain setting (:mod:`.novel_domain`) tests the source models on each target domain
once; here each target is rendered at graded severity levels (``SEVERITY_LEVELS``, level k ->
s = 0.2 k, ImageNet-C style; :mod:`vtagml_core.data.synthetic.shift`), so every method gets a
curve metric-versus-severity. Level 0 is the target's **test scenes at s = 0**: the same scene
seeds as every other level, rendered in the source's look (``indoor_shift@0``), so a curve
changes only by the shift, never by the scenes. Level 5 (s = 1) is the target itself (its
``@1`` renders exactly the target's test split; the plain name reuses its cache and the
novel-domain setting's evaluations).

Models: the source-trained runs of :mod:`.mtl` (``train_source`` for each of
``settings.methods``, ``train_single_task`` per task), reused: this setting trains nothing
the MTL setting has trained. No fine-tuning, no target image in training.

One number per method and task (Hendrycks & Dietterich 2019, :mod:`vtagml_core.metrics.robustness`):

    CE_{target,task} = 100 * sum_{level>0} E_level / sum_{level>0} E_level^baseline      (%)

per seed against the baseline of the same seed (``robustness_baseline``, default the
single-task models: 100 % by definition), then summarised over seeds; ``mCE`` is the mean of
the CEs over every target and task. Below 100: fewer errors under the shift than the baseline.
"""
from __future__ import annotations

import time
from typing import Any

from vtagml_core.data.synthetic.shift import SEVERITY_LEVELS, shifted_name
from vtagml_core.experiments.seeds import summarize
from vtagml_core.experiments.formatting import CE_METRIC
from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.metrics.robustness import PERCENT, corruption_error, mean_corruption_error
from vtagml_core.tasks import parse_tasks

from .context import SettingContext, column, row, setting_document
from .mtl import (
    METHOD_LABELS,
    TASK_LABELS,
    arrow,
    primary_cells,
    stl_metrics,
    train_source,
)

#: The unshifted end of every curve: the target's scenes at s = 0 (the source's look).
SOURCE_LEVEL: int = 0
#: Column key of the mean corruption error over every target and task.
MCE_KEY: str = "mCE"
#: Name of the single-task baseline (one model per task).
SINGLE_TASK: str = "single_task"


def level_severity(level: int) -> float:
    """Severity ``s`` of a level: 0 for :data:`SOURCE_LEVEL`, else ``SEVERITY_LEVELS[level]``."""
    return 0.0 if level == SOURCE_LEVEL else SEVERITY_LEVELS[level]


def level_domain(target: str, level: int) -> str:
    """The domain name of ``target`` at ``level``: ``indoor_shift@0`` ... ``indoor_shift@0.8``, and
    the plain target at s = 1 (the same images: ``@1`` renders the target's splits)."""
    s = level_severity(level)
    return target if s == 1.0 else shifted_name(target, s)


def level_group(target: str, level: int) -> str:
    """Column group (and key prefix) of one target at one level: ``"indoor_shift@3"``."""
    return f"{target}@{level}"


def ce_key(target: str, task: str) -> str:
    """Column key of one target's corruption error on one task: ``"indoor_shift/CE/depth"``."""
    return f"{target}/CE/{task}"


def curve_columns(targets: list[str], levels: list[int], tasks: tuple[str, ...]) -> list[dict]:
    """Per target, level and task the primary metric; then per target and task its CE; then mCE."""
    cols = []
    for target in targets:
        for level in levels:
            group = level_group(target, level)
            for t in tasks:
                m = PRIMARY_METRICS[t]
                cols.append(column(f"{group}/{t}", f"{target} L{level} (s={level_severity(level):g}) "
                                   f"{TASK_LABELS[t]}{arrow(m)}", m, group=group, task=t,
                                   lower_is_better=METRIC_DIRECTIONS[m]))
    for target in targets:
        for t in tasks:
            cols.append(column(ce_key(target, t), f"{target} CE% {t}↓", CE_METRIC, group=f"{target} CE",
                               task=t, lower_is_better=True))
    cols.append(column(MCE_KEY, "mCE%↓", CE_METRIC, group="mCE", lower_is_better=True))
    return cols


def add_corruption_errors(cells: dict[str, dict], baseline: dict[str, dict], targets: list[str],
                          levels: list[int], tasks: tuple[str, ...], is_baseline: bool) -> None:
    """Add each target's CE per task and the mCE to a row's ``cells``, seed by seed.

    Seed ``i`` of the row is divided by seed ``i`` of the baseline (paired, as delta_m); the
    baseline's own CE is :data:`~vtagml_core.metrics.robustness.PERCENT` by definition.
    """
    shifted = [lv for lv in levels if lv > SOURCE_LEVEL]
    n = len(cells[f"{level_group(targets[0], shifted[0])}/{tasks[0]}"]["values"])
    per_seed: list[list[float]] = [[] for _ in range(n)]
    for target in targets:
        for t in tasks:
            keys = [f"{level_group(target, lv)}/{t}" for lv in shifted]
            lower = METRIC_DIRECTIONS[PRIMARY_METRICS[t]]
            ces = [PERCENT if is_baseline else
                   corruption_error([cells[k]["values"][i] for k in keys],
                                    [baseline[k]["values"][i] for k in keys], lower) for i in range(n)]
            cells[ce_key(target, t)] = summarize(ces)
            for i, ce in enumerate(ces):
                per_seed[i].append(ce)
    cells[MCE_KEY] = summarize([mean_corruption_error(ces) for ces in per_seed])


def run_robustness(ctx: SettingContext) -> dict[str, Any]:
    """Curves of the source models over the severity levels of every target; CE and mCE.

    Raises:
        ValueError: no shift target of the source (``robustness_targets``).
    """
    started = time.perf_counter()
    s = ctx.settings
    g, levels, targets = s.robustness_tasks, s.robustness_levels, s.shift_targets()
    tasks = parse_tasks(g)
    if not targets:
        raise ValueError(f"the source {s.source!r} is no shift target's source: set robustness_targets "
                         "to targets of it (SHIFT_SOURCES in vtagml_core/data/synthetic/domains.py)")
    points = [(t, lv, level_domain(t, lv)) for t in targets for lv in levels]
    rows = []
    for method in s.methods:
        records = [train_source(ctx, g, method, seed) for seed in ctx.seeds]
        cells: dict[str, dict] = {}
        for target, level, domain in points:
            cells.update(primary_cells(level_group(target, level), [ctx.evaluate(r, domain) for r in records],
                                       tasks))
        rows.append(row(METHOD_LABELS.get(method, method), cells, method=method))
    stl_cells: dict[str, dict] = {}
    for target, level, domain in points:
        stl_cells.update(primary_cells(level_group(target, level),
                                       [stl_metrics(ctx, tasks, seed, domain) for seed in ctx.seeds], tasks))
    rows.append(row(METHOD_LABELS[SINGLE_TASK], stl_cells, method=SINGLE_TASK,
                    note="one source-trained model per task"))
    base = next(r for r in rows if r["method"] == s.robustness_baseline)
    base["kind"], base["note"] = "reference", "the corruption errors' baseline (CE 100 % by definition)"
    for r in rows:
        add_corruption_errors(r["cells"], base["cells"], targets, levels, tasks, r is base)
    shifted = [lv for lv in levels if lv > SOURCE_LEVEL]
    notes = [f"Every model trained on synthetic/{s.source} train only (the MTL setting's runs, reused); "
             f"tested with no fine-tuning on the test split of each target at severity levels {levels} "
             f"(s = {', '.join(f'{level_severity(lv):g}' for lv in levels)}; level 0: the target's "
             f"scenes in the {s.source} look).",
             f"CE% = 100 * sum of errors over levels {shifted} / the same sum of the baseline "
             f"({base['label']}), per seed, then mean over seeds; error = RMSE or angle as is, 1 - mIoU "
             "or 1 - odsF. mCE: mean CE over every target and task. Below 100: fewer errors than the "
             "baseline under the shift."]
    where = {**ctx.where(s.source), "dataset": "synthetic/" + ", ".join(
        f"{t}@{{{', '.join(f'{level_severity(lv):g}' for lv in levels)}}}" for t in targets)}
    return setting_document(
        ctx, "robustness", "Robustness curves over graded shift severity", where,
        curve_columns(targets, levels, tasks), rows, notes, started, source_domain=s.source,
        targets=targets, tasks=list(tasks), baseline=s.robustness_baseline,
        levels=[{"level": lv, "severity": level_severity(lv),
                 "domains": {t: level_domain(t, lv) for t in targets}} for lv in levels])


__all__ = ["CE_METRIC", "MCE_KEY", "SOURCE_LEVEL", "add_corruption_errors", "ce_key", "curve_columns",
           "level_domain", "level_group", "level_severity", "run_robustness"]
