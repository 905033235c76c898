"""Unsupervised domain adaptation (paper Sec. 4.2, Table 4).

Source labels plus unlabelled target images: every method is adapted with the same output-level
adversarial recipe (AdaptSegNet style, one discriminator per task output;
:mod:`vtagml_core.train.adversarial`), as the paper does for all of its UDA rows. Rows per method:
**source only** (the source-domain model, reused from the MTL setting) and **adapted** (trained
on labelled source + unlabelled target; from scratch, or, with ``uda_epochs`` set as in the quick
preset, warm-started from the source-only model and adapted for that many epochs); plus VTAGML trained on the labelled target (the
**oracle**, the paper's "Swin-target (Oracle)" row; the kit's oracle is the multitask VTAGML
rather than a one-task Swin, so that it is the same run as the zero-shot setting's oracle).
Every number is on the target domain's test split.

**Domain pair.** The default is ``indoor -> indoor_shift``: the two share the class table
(walls, floor, ceiling, furniture, people) and differ in palette, lighting, texture and noise,
like the paper's synthetic-to-real pair Vkitti2 -> Cityscapes (same classes, another look).
``street`` makes a bigger shift but four of its classes (sky, road, building, car) never occur
in ``indoor``; adversarial alignment of outputs cannot create a class the source never labelled,
so its segmentation gap says nothing about adaptation. The table reports the measured gap
(oracle vs source only) so that a reader sees whether there is anything to adapt.
"""
from __future__ import annotations

import time
from typing import Any

from vtagml_core.config import to_dict
from vtagml_core.tasks import parse_tasks

from vtagml_core.experiments.runs import RunRecord, RunSpec
from .context import SettingContext, row, setting_document
from .mtl import METHOD_LABELS, primary_cells, task_columns, train_source
from .zero_shot import ORACLE_METHOD, train_oracle


def adversarial_factory(ctx: SettingContext, target: str):
    """A trainer factory for :class:`~vtagml_core.train.adversarial.AdversarialTrainer` that
    reads the unlabelled target train split (rendered only when a run really trains)."""
    from vtagml_core.data.config import build_dataset
    from vtagml_core.train.adversarial import AdversarialTrainer

    adv = ctx.settings.adversarial

    def build(cfg, out_dir, **kwargs):
        target_set = build_dataset(ctx.cfg.data, "train", cfg.model.tasks, domain=target,
                                   unlabelled=True, progress=cfg.train.progress)
        return AdversarialTrainer(cfg, out_dir, target_set=target_set, adversarial=adv, **kwargs)

    return build


def train_adapted(ctx: SettingContext, tasks: str, method: str, seed: int,
                  source: RunRecord | None = None) -> RunRecord:
    """``method`` trained on the labelled source and the unlabelled target (adversarial UDA).

    With ``settings.uda_epochs`` set, it starts from ``source`` (the source-only model) and adapts
    for that many epochs; otherwise it trains from scratch for ``train.epochs``.
    """
    s, d = ctx.settings, ctx.cfg.data
    warm = s.uda_epochs is not None
    if warm and source is None:
        raise ValueError("settings.uda_epochs is set, so adaptation starts from the source-only "
                         "model: pass source= (train_source(...)), or set uda_epochs: null")
    source_domain = s.source_for("uda")
    spec = RunSpec(f"{method} {tasks} UDA {source_domain} -> {s.uda_target}",
                   ctx.config(tasks, domain=source_domain, seed=seed, epochs=s.uda_epochs), method,
                   init_from=source if warm else None,
                   trainer_factory=adversarial_factory(ctx, s.uda_target),
                   extra={"trainer": "adversarial", "uda_target": s.uda_target,
                          "target_count": d.train_count, "adversarial": to_dict(s.adversarial)})
    return ctx.train(spec)


def run_uda(ctx: SettingContext) -> dict[str, Any]:
    """Table 4's shape on the target test split: source only, adapted, oracle."""
    started = time.perf_counter()
    s, target, g = ctx.settings, ctx.settings.uda_target, ctx.settings.uda_tasks
    source = s.source_for("uda")
    tasks = parse_tasks(g)
    columns = task_columns(g, tasks)
    rows = []
    for method in s.methods:
        label = METHOD_LABELS.get(method, method)
        sources = [train_source(ctx, g, method, seed, source) for seed in ctx.seeds]
        src = [ctx.evaluate(r, target) for r in sources]
        ada = [ctx.evaluate(train_adapted(ctx, g, method, seed, r), target)
               for seed, r in zip(ctx.seeds, sources)]
        rows.append(row(f"{label}, source only", primary_cells(g, src, tasks), kind="reference",
                        method=method))
        rows.append(row(f"{label}-UDA (adversarial)", primary_cells(g, ada, tasks), method=method))
    oracle = [ctx.evaluate(train_oracle(ctx, g, target, seed), target) for seed in ctx.seeds]
    rows.append(row(f"{METHOD_LABELS[ORACLE_METHOD]} trained on {target} (oracle)",
                    primary_cells(g, oracle, tasks), kind="reference", method=ORACLE_METHOD))
    a = s.adversarial
    notes = [f"Source synthetic/{source} (labelled) -> target synthetic/{target} (unlabelled "
             f"train images, {ctx.cfg.data.train_count} scenes); numbers on the target test split.",
             f"Output-level adversarial UDA (AdaptSegNet style): one discriminator per task output "
             f"(softmax for seg, unit vectors for normals, raw depth/edges), lambda_adv {a.lambda_adv}, "
             f"discriminator width {a.disc_channels}, Adam lr {a.disc_lr}.",
             "Domain pair: same class table, different look (see vtagml_core.experiments.settings.uda); "
             "the oracle row shows how large the gap is that adaptation could close."]
    return setting_document(ctx, "uda", "Unsupervised domain adaptation",
                            ctx.where(target), columns, rows, notes, started,
                            source_domain=source, target_domain=target)


__all__ = ["adversarial_factory", "run_uda", "train_adapted"]
