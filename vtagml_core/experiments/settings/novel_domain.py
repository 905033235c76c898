"""Generalization to novel domains (paper Sec. 4.2, Table 5).

The paper applies models trained on Taskonomy to NYUDv2 "without any fine-tuning", and a model
trained on MS-COCO to a comics domain. The kit tests its source-domain models (the MTL setting's
runs, reused) on the test splits of the other synthetic domains, including the comic-style one,
with no fine-tuning and no target images seen in training. Rows: each method, and the
single-task models (one per task, the paper's "1-task Swin" row). The source domain's own test
split is the first column group, for reference.

Class caveat: ``street`` and ``comic`` contain classes that ``indoor`` never labels (sky, road,
building, car; see :mod:`vtagml_core.data.classes`). A source model cannot predict them, so their
pixels count as errors in mIoU: segmentation on those domains has a ceiling well below 100%,
the same for every row. Depth has no such ceiling.
"""
from __future__ import annotations

import time
from typing import Any

from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.tasks import parse_tasks

from .context import SettingContext, column, row, setting_document
from .mtl import METHOD_LABELS, TASK_LABELS, arrow, primary_cells, stl_metrics, train_source


def domain_columns(domain: str, tasks: tuple[str, ...], source: str) -> list[dict]:
    """One column per task's primary metric, grouped under the test domain."""
    group = f"{domain} (source)" if domain == source else domain
    cols = []
    for t in tasks:
        m = PRIMARY_METRICS[t]
        cols.append(column(f"{domain}/{t}", f"{group} {TASK_LABELS[t]}{arrow(m)}", m, group=group,
                           task=t, lower_is_better=METRIC_DIRECTIONS[m]))
    return cols


def run_novel(ctx: SettingContext) -> dict[str, Any]:
    """Table 5's shape: source-trained models on every domain's test split, no fine-tuning."""
    started = time.perf_counter()
    s, g = ctx.settings, ctx.settings.novel_tasks
    tasks = parse_tasks(g)
    domains = [s.source, *[d for d in s.novel_domains if d != s.source]]
    columns = [c for d in domains for c in domain_columns(d, tasks, s.source)]
    rows = []
    for method in s.methods:
        records = [train_source(ctx, g, method, seed) for seed in ctx.seeds]
        cells: dict[str, dict] = {}
        for d in domains:
            cells.update(primary_cells(d, [ctx.evaluate(r, d) for r in records], tasks))
        rows.append(row(METHOD_LABELS.get(method, method), cells, method=method))
    stl_cells: dict[str, dict] = {}
    for d in domains:
        stl_cells.update(primary_cells(d, [stl_metrics(ctx, tasks, seed, d) for seed in ctx.seeds], tasks))
    rows.append(row(METHOD_LABELS["single_task"], stl_cells, method="single_task",
                    note="the paper's '1-task Swin' row"))
    notes = [f"Every model trained on synthetic/{s.source} train only; tested with no fine-tuning on "
             f"the test splits of {', '.join(domains)} ({ctx.cfg.data.test_count} scenes each).",
             "street and comic contain classes the source never labels (sky, road, building, car): "
             "their mIoU has the same ceiling below 100% for every row; depth has none."]
    where = {**ctx.where(s.source), "dataset": "synthetic/" + ", ".join(domains)}
    return setting_document(ctx, "novel", "Generalization to novel domains", where,
                            columns, rows, notes, started, source_domain=s.source, test_domains=domains)


__all__ = ["domain_columns", "run_novel"]
