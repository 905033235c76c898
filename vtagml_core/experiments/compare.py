"""The method comparison (issue 7, item 5): every method in one table, measured in one run.

For one task set (S-D-N-E by default) and a list of methods (VTAGML, the plain-multitask
baselines and the peer systems of docs/settings.md, "The methods"), each method is trained (or reused, through
the settings' run keying, :mod:`vtagml_core.experiments.runs`) once per seed on the source
domain's train split, selected on its val split and scored on its **test** split. One row per
method:

* each task's primary metric (mIoU, depth RMSE, normals mean error, odsF), mean ± std over seeds;
* delta_m (docs/settings.md, "delta_m", :mod:`vtagml_core.metrics.delta_m`) against the *same* single-task
  models for every method (one per task and seed, trained with the ``equal`` balancer, the
  MTL setting's references), computed per seed then averaged;
* total and trainable parameters (the trainer's parameter report, Table 6's columns);
* training seconds per epoch (the trainer's ``results.json``: full epochs only, measured where
  the run was trained; a reused run keeps the time of the machine that trained it).

A loss balancer (:mod:`vtagml_core.train.balancing`) may be chosen for every multitask method
(``balancer="pcgrad"``); it is part of each run's config, hence of its key. Methods that learn
their own loss weights (MTFormer's uncertainty weighting) keep them and say so in the notes.

The document has the shape of the settings' results documents (:func:`~vtagml_core.eval.
settings.context.setting_document`), so :mod:`vtagml_core.experiments.tables` formats its cells.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from vtagml_core.metrics.delta_m import delta_m
from vtagml_core.experiments.runs import RunRecord, RunSpec
from vtagml_core.experiments.seeds import summarize
from vtagml_core.experiments.settings.context import (SettingContext, column, row, setting_document,
                                                      write_setting)
from vtagml_core.experiments.settings.mtl import METHOD_LABELS, primary_cells, task_columns
from vtagml_core.experiments.tables import measured_section
from vtagml_core.model.params import TOTAL_ROW
from vtagml_core.tasks import parse_tasks

#: Default task set and methods of the comparison (issue 7, item 5).
DEFAULT_TASKS: str = "S-D-N-E"
DEFAULT_METHODS: tuple[str, ...] = ("vtagml", "vanilla_mtl", "finetune_mtl", "mtformer", "demtg",
                                    "autotaskformer", "mtlora", "norm_only")
#: The balancer of the single-task references (they have one loss: nothing to balance).
REFERENCE_BALANCER: str = "equal"
#: Labels of the peer systems (the kit's own methods are in :data:`METHOD_LABELS`).
PEER_LABELS: dict[str, str] = {"mtformer": "MTFormer", "demtg": "DeMTG", "autotaskformer": "AutoTaskFormer",
                               "mtlora": "MTLoRA", "norm_only": "per-task LayerNorms (norm only)"}
#: Column keys of the cost columns.
COST_KEYS: tuple[str, ...] = ("params/total", "params/trainable", "seconds_per_epoch")


def compare_name(balancer: str) -> str:
    """File stem of the comparison's results: ``compare`` or ``compare-<balancer>``."""
    return "compare" if balancer == REFERENCE_BALANCER else f"compare-{balancer}"


def learns_own_weights(method: str) -> bool:
    """True when ``method``'s model defines ``weight_losses`` (it only runs with ``equal``)."""
    from vtagml_core.baselines.registry import METHODS

    builder = METHODS[method]
    cls = getattr(builder, "model_class", builder)
    return hasattr(cls, "weight_losses")


def parameter_counts(results: dict) -> tuple[int, int]:
    """``(total, trainable)`` from a run's ``results.json`` parameter report."""
    for r in results["parameters"]:
        if r["component"] == TOTAL_ROW:
            return int(r["total"]), int(r["trainable"])
    raise ValueError("results.json has no total row in its parameter report; re-run the training")


def _with_balancer(cfg, balancer: str):
    out = copy.deepcopy(cfg)
    out.train.balancer = balancer
    if balancer == REFERENCE_BALANCER:
        out.train.balancer_options = {}
    return out.validate()


def cost_cells(records: list[RunRecord]) -> dict[str, dict]:
    """Parameters and seconds per epoch of one method's runs (one per seed)."""
    counts = [parameter_counts(r.results) for r in records]
    seconds = [r.results.get("seconds_per_epoch") for r in records]
    cells = {"params/total": summarize([c[0] for c in counts]),
             "params/trainable": summarize([c[1] for c in counts])}
    if all(s is not None for s in seconds):
        cells["seconds_per_epoch"] = summarize(seconds)
    return cells


def cost_columns() -> list[dict]:
    return [column("params/total", "total params (M)", "params", group="cost"),
            column("params/trainable", "trainable params (M)", "params", group="cost"),
            column("seconds_per_epoch", "s / epoch", "seconds", group="cost")]


def run_compare(ctx: SettingContext, tasks: str = DEFAULT_TASKS, methods: list[str] | None = None,
                balancer: str = REFERENCE_BALANCER) -> dict[str, Any]:
    """Train (or reuse) every method of the comparison and build its results document.

    Args:
        ctx: the settings context (preset, seeds, runs root; :func:`~vtagml_core.experiments.settings.
            build_context`).
        tasks: the task set, e.g. ``"S-D-N-E"``.
        methods: methods to compare (default: ``ctx.settings.methods``).
        balancer: loss balancer of every multitask run (single-task references: ``equal``).
    """
    from vtagml_core.baselines.registry import method_names

    started = time.perf_counter()
    names = parse_tasks(tasks)
    group = tasks
    methods = list(methods or ctx.settings.methods)
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; methods: {', '.join(method_names())}")
    src = ctx.settings.source
    ctx.records = []

    def config(task_spec: str, seed: int, bal: str):
        out = copy.deepcopy(_with_balancer(ctx.cfg, bal))
        out.model.tasks, out.data.domain, out.train.seed = task_spec, src, int(seed)
        return out.validate()

    stl_records = {seed: {t: ctx.train(RunSpec(f"single-task {t}", config(t, seed, REFERENCE_BALANCER),
                                               "single_task")) for t in names} for seed in ctx.seeds}
    stl = {seed: {t: ctx.evaluate(rec, src)[t] for t, rec in recs.items()}
           for seed, recs in stl_records.items()}
    columns = [*task_columns(group, names),
               column(f"{group}/delta_m", f"{group} Δm%↑", "delta_m", group=group, lower_is_better=False),
               *cost_columns()]
    rows, notes, timings = [], [], {}
    for method in methods:
        bal = balancer
        if balancer != REFERENCE_BALANCER and learns_own_weights(method):
            bal = REFERENCE_BALANCER
            notes.append(f"{method} learns its own loss weights (uncertainty weighting): trained with "
                         f"them, not with the {balancer} balancer.")
        records = [ctx.train(RunSpec(f"{method} {tasks} on {src}", config(tasks, seed, bal), method))
                   for seed in ctx.seeds]
        per_seed = [ctx.evaluate(r, src) for r in records]
        cells = primary_cells(group, per_seed, names)
        cells[f"{group}/delta_m"] = summarize([delta_m(m, stl[s]) for m, s in zip(per_seed, ctx.seeds)])
        cells.update(cost_cells(records))
        timings[method] = {"train_seconds_now": [round(r.seconds, 2) for r in records],
                           "reused": [not r.trained_now for r in records], "balancer": bal}
        label = METHOD_LABELS.get(method, PEER_LABELS.get(method, method))
        rows.append(row(label, cells, method=method, note=f"balancer {bal}"))
    stl_cells = primary_cells(group, [stl[s] for s in ctx.seeds], names)
    stl_cells[f"{group}/delta_m"] = summarize([0.0 for _ in ctx.seeds])
    per_seed_costs = [[parameter_counts(r.results) for r in stl_records[s].values()] for s in ctx.seeds]
    stl_cells["params/total"] = summarize([sum(c[0] for c in cs) for cs in per_seed_costs])
    stl_cells["params/trainable"] = summarize([sum(c[1] for c in cs) for cs in per_seed_costs])
    secs = [[r.results.get("seconds_per_epoch") for r in stl_records[s].values()] for s in ctx.seeds]
    if all(v is not None for vs in secs for v in vs):
        stl_cells["seconds_per_epoch"] = summarize([sum(vs) for vs in secs])
    rows.append(row(METHOD_LABELS["single_task"], stl_cells, kind="reference", method="single_task",
                    note="delta_m reference; parameters and seconds summed over the tasks' models"))
    notes = [f"All models trained on synthetic/{src} train ({ctx.cfg.data.train_count} scenes, all "
             f"labels), best epoch by the val split, scored on the test split; balancer {balancer}.",
             "delta_m (docs/settings.md, delta_m) per seed against the same single-task models (one per task, "
             "equal balancer) for every method; positive = better than single-task.",
             "Parameters: the trainer's report (total row); s / epoch: training seconds per full "
             "epoch as measured when the run was trained (a reused run keeps its original time).",
             *notes]
    return setting_document(ctx, compare_name(balancer), f"Method comparison ({tasks})", ctx.where(src),
                            columns, rows, notes, started, tasks=tasks, methods=methods,
                            balancer=balancer, timings=timings,
                            reference_balancer=REFERENCE_BALANCER)


def compare_markdown(doc: dict[str, Any]) -> str:
    """The comparison as markdown: table (best method bold per column), notes, timings."""
    return "\n".join(measured_section(doc, doc["title"]))


def write_compare(ctx: SettingContext, doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<root>/setting_results/<compare name>.json`` and ``.md``; returns both paths."""
    return write_setting(ctx, doc, compare_markdown)


__all__ = ["COST_KEYS", "DEFAULT_METHODS", "DEFAULT_TASKS", "compare_markdown", "compare_name",
           "cost_cells", "learns_own_weights", "parameter_counts", "run_compare", "write_compare"]
