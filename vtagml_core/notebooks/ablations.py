"""Ablations of VTAGML's components, trained like the settings' runs (notebook 09; paper Sec. 4.3).

Each ablation is the full VTAGML model with one change, given as ``key=value`` overrides of the
kit config (:data:`ABLATIONS`):

========================  ==========================================  ============================
name                      change                                      what it removes
========================  ==========================================  ============================
``no_troa``               ``model.adapter.troa=false``                 TROA: omega stays uniform
``no_taa``                ``model.adapter.taa_bias=none``              TAA's task bias A'(omega_t)
``no_tsn``                ``model.adapter.tsn=false``                  TSN: the backbone LayerNorm
``late_taps``             ``model.backbone.taps=[[3,0],[3,1]]``        adapters on stage 4 only
``other_backbone``        ``model.backbone.name=pvt_v2_b0``            another frozen backbone
========================  ==========================================  ============================

Every run trains through :class:`~vtagml_core.train.trainer.Trainer` with the settings' budget,
on the source domain and the efficiency task set (``S-D-N-E`` by default), and is keyed like any
settings run (:func:`vtagml_core.experiments.runs.train_or_reuse`): rerunning the notebook
trains nothing new, and the **full model** row *is* the MTL setting's VTAGML run. Numbers are on
the source **test** split; delta_m is against the single-task models of the MTL setting.

**The other backbone.** The settings' frozen backbone is pretext-pretrained by the kit
(``pretrained_backbone``); a fair swap pretrains the new backbone the same way
(:func:`vtagml_core.experiments.settings.context.resolve_backbone`, once, then cached). With
``pretrained_backbone`` off (the smoke preset) both are random and frozen.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Sequence

from vtagml_core.config import apply_overrides
from vtagml_core.experiments.settings import SettingContext
from vtagml_core.experiments.runs import RunRecord, RunSpec
from vtagml_core.experiments.seeds import summarize
from vtagml_core.experiments.settings.context import column, row, setting_document
from vtagml_core.tasks import parse_tasks

#: The frozen backbone of the ``other_backbone`` ablation (multi-scale like Swin, timm-built).
OTHER_BACKBONE: str = "pvt_v2_b0"
#: Name of the results document (not one of the paper's tables; rendered by :func:`ablation_markdown`).
ABLATION_SETTING: str = "ablations"


@dataclass(frozen=True)
class Ablation:
    """One ablation: a label for the table, the kit overrides, and what it takes away."""

    label: str
    overrides: tuple[str, ...]
    removes: str


#: The ablations of notebook 09 (module docstring), in table order.
ABLATIONS: dict[str, Ablation] = {
    "no_troa": Ablation("without TROA (omega uniform)", ("model.adapter.troa=false",),
                        "task relations learned from gradients"),
    "no_taa": Ablation("without TAA bias", ("model.adapter.taa_bias=none",),
                       "task-dependent attention bias"),
    "no_tsn": Ablation("without TSN (LayerNorm)", ("model.adapter.tsn=false",),
                       "per-task scales of the normalisation"),
    "late_taps": Ablation("adapters on stage 4 only", ("model.backbone.taps=[[3,0],[3,1]]",),
                          "the mid-level taps of stage 3"),
    "other_backbone": Ablation(f"backbone {OTHER_BACKBONE}",
                               (f"model.backbone.name={OTHER_BACKBONE}", "model.backbone.weights=null",
                                "model.backbone.taps=null"),
                               "the Swin V2 backbone"),
}


def ablation_config(ctx: SettingContext, name: str, tasks: str, seed: int):
    """The kit config of ablation ``name``: the full model's config plus its overrides.

    Raises:
        ValueError: an unknown ablation name (lists the valid ones).
    """
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; ablations: {', '.join(ABLATIONS)}")
    cfg = apply_overrides(copy.deepcopy(ctx.config(tasks, seed=seed)), list(ABLATIONS[name].overrides))
    if cfg.model.backbone.weights is None and ctx.cfg.model.backbone.weights is not None:
        from vtagml_core.experiments.settings.context import resolve_backbone

        cfg = resolve_backbone(cfg, ctx.settings, ctx.log)  # pretrain the new backbone alike
    return cfg.validate()


def train_ablation(ctx: SettingContext, name: str, tasks: str, seed: int) -> RunRecord:
    """Train (or reuse) ablation ``name`` of VTAGML on the source domain."""
    spec = RunSpec(f"ablation {name} {tasks}", ablation_config(ctx, name, tasks, seed), "vtagml")
    return ctx.train(spec)


def _cells(ctx: SettingContext, record: RunRecord, tasks: tuple[str, ...],
           stl: dict[str, dict[str, float]], full: dict[str, dict[str, float]] | None) -> dict:
    from vtagml_core.metrics.delta_m import delta_m
    from vtagml_core.metrics.multitask import PRIMARY_METRICS

    metrics = ctx.evaluate(record, ctx.settings.source)
    cells = {t: summarize([metrics[t][PRIMARY_METRICS[t]]]) for t in tasks}
    cells["delta_m"] = summarize([delta_m(metrics, stl)])
    if full is not None:
        cells["vs_full"] = summarize([delta_m(metrics, full)])
    params = record.results["parameters"][-1]
    cells["trainable"] = summarize([params["trainable"]])
    cells["train_s"] = summarize([record.results["train_seconds"] / max(1, record.results["epochs"])])
    return cells


def run_ablations(ctx: SettingContext, names: Sequence[str] | None = None,
                  tasks: str | None = None) -> dict[str, Any]:
    """The ablation table: the full model, then each ablation, same budget and seed.

    Columns: each task's primary metric, delta_m against the single-task models, delta_m
    against the full model (how much the removed part was worth), trainable parameters and
    training seconds per epoch. A results document like the settings' (``setting`` =
    :data:`ABLATION_SETTING`), for :func:`ablation_markdown`.
    """
    from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
    from vtagml_core.experiments.settings.mtl import TASK_LABELS, arrow, stl_metrics, train_source

    started = time.perf_counter()
    tasks = tasks or ctx.settings.efficiency_tasks
    names = list(names) if names is not None else list(ABLATIONS)
    task_tuple, seed, src = parse_tasks(tasks), ctx.seeds[0], ctx.settings.source
    ctx.records = []
    try:
        stl = stl_metrics(ctx, task_tuple, seed, src)
        full_run = train_source(ctx, tasks, "vtagml", seed)
        full = ctx.evaluate(full_run, src)
        columns = [column(t, f"{TASK_LABELS[t]}{arrow(PRIMARY_METRICS[t])}", PRIMARY_METRICS[t], task=t,
                          lower_is_better=METRIC_DIRECTIONS[PRIMARY_METRICS[t]]) for t in task_tuple]
        columns += [column("delta_m", "Δm% vs single-task↑", "delta_m", lower_is_better=False),
                    column("vs_full", "Δm% vs full model↑", "delta_m", lower_is_better=False),
                    column("trainable", "# trainable parameters (M)", "params"),
                    column("train_s", "training s per epoch", "seconds")]
        rows = [row("VTAGML (full model)", _cells(ctx, full_run, task_tuple, stl, full), method="full",
                    note=str(full_run.dir))]
        for name in names:
            record = train_ablation(ctx, name, tasks, seed)
            rows.append(row(ABLATIONS[name].label, _cells(ctx, record, task_tuple, stl, full),
                            method=name, note=str(record.dir)))
    finally:
        ctx.release_models()
    notes = [f"VTAGML on {tasks}, trained on synthetic/{src} with the settings' budget (seed {seed}); "
             "each row changes one thing (vtagml_core.notebooks.ablations.ABLATIONS); numbers on the "
             "source test split.",
             "Δm% vs full model: the row against the full model, as delta_m (positive: the ablation "
             "did better)."]
    return setting_document(ctx, ABLATION_SETTING, "Ablations", ctx.where(src), columns, rows, notes,
                            started, tasks=tasks)


def ablation_markdown(doc: dict[str, Any]) -> str:
    """The ablation document as markdown: provenance, the table (best per column in bold), notes."""
    from vtagml_core.experiments.tables import best_rows, measured_rows, where_line
    from vtagml_core.experiments.formatting import markdown_table

    header, body = measured_rows(doc)
    best = best_rows({**doc, "rows": [{**r, "kind": "method"} for r in doc["rows"]]})
    keys = [c["key"] for c in doc["columns"]]
    for i, cells in enumerate(body):
        for j, key in enumerate(keys, start=1):
            if best.get(key) == i:
                cells[j] = f"**{cells[j]}**"
    lines = [f"### {doc['title']}", "", where_line(doc), "", markdown_table(header, body), ""]
    lines += [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines)


__all__ = ["ABLATIONS", "ABLATION_SETTING", "Ablation", "OTHER_BACKBONE", "ablation_config",
           "ablation_markdown", "run_ablations", "train_ablation"]
