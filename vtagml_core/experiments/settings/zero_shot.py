"""Zero-shot task transfer (paper Sec. 4.2, Table 3).

The paper trains every model on Vkitti2 with all labels, then fine-tunes it on Cityscapes with
the segmentation labels only ('S-D') or segmentation and depth labels ('S-D-N'), and reports the
task never labelled on Cityscapes (depth, resp. normals) there. The kit does the same on its
synthetic domains: for each task set (the **last** task is the zero-shot one), method and seed,

1. the source model: trained on the source domain with all labels (the MTL setting's run, reused);
2. fine-tuning: starts from the source model's best weights and trains on the target domain's
   train split (for ``finetune_epochs``) with ``loss_tasks`` = the labelled tasks only. The training set does not even load
   the zero-shot task's labels, and model selection uses a target val split restricted to the
   labelled tasks, so no zero-shot label is seen anywhere. The model keeps every head; the
   zero-shot head gets no gradient (its loss is not in the total), what it predicts changes only
   through the shared adapters (TROA stays as learned on the source: the trainer skips its update
   when some tasks are not in the loss);
3. every task scored on the target's test split.

Reference rows: the source model without fine-tuning ("source only"), and VTAGML trained on the
target with all labels ("oracle", the upper bound a zero-shot task can approach).
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import torch
from torch import nn

from vtagml_core.model.backbone import IMAGE_CHANNELS
from vtagml_core.tasks import parse_tasks, task_set_name

from vtagml_core.experiments.runs import RunRecord, RunSpec
from .context import SettingContext, row, setting_document
from .mtl import METHOD_LABELS, primary_cells, task_columns, train_source

#: Method of the target-trained reference row.
ORACLE_METHOD: str = "vtagml"


def split_zero_shot(task_set: str) -> tuple[tuple[str, ...], str]:
    """``(labelled tasks, zero-shot task)`` of a task set: the last task is never labelled.

    Raises:
        ValueError: fewer than two tasks.
    """
    tasks = parse_tasks(task_set)
    if len(tasks) < 2:
        raise ValueError(f"zero-shot transfer needs >= 2 tasks (labelled + zero-shot), got {task_set!r}")
    return tasks[:-1], tasks[-1]


def fine_tuned_parameters(model: nn.Module, labelled_tasks: Iterable[str]) -> set[str]:
    """Names of the parameters that fine-tuning with only ``labelled_tasks`` in the loss can change.

    A parameter changes only if it is trainable (``requires_grad``) and the loss reaches it in
    the autograd graph; the optimizer skips a parameter whose gradient stays ``None``. So this
    runs one forward pass on a blank image and asks autograd which trainable parameters the
    labelled tasks' outputs depend on: the frozen backbone is left out by ``requires_grad``, the
    zero-shot task's own decoder and head because no labelled output depends on them; the
    shared adapters and the shared image path stay in.

    Args:
        model: a multitask model (VTAGML or a baseline) whose outputs are ``{task: (B, C, H, W)}``.
        labelled_tasks: the tasks whose losses enter fine-tuning.

    Raises:
        ValueError: a labelled task the model has no output for.
    """
    size = model.backbone.config.img_size
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    was_training = model.training
    model.eval()  # no dropout or batch statistics moved; the graph is the same
    try:
        with torch.enable_grad():
            outputs = model(torch.zeros(1, IMAGE_CHANNELS, size, size))
            missing = [t for t in labelled_tasks if t not in outputs]
            if missing:
                raise ValueError(f"the model has no output for {missing}; it predicts {sorted(outputs)}")
            reached = sum(outputs[t].float().sum() for t in labelled_tasks)
            grads = torch.autograd.grad(reached, list(trainable.values()), allow_unused=True)
    finally:
        model.train(was_training)
    return {name for name, g in zip(trainable, grads) if g is not None}


def finetune_on_target(ctx: SettingContext, source: RunRecord, task_set: str, method: str,
                       seed: int) -> RunRecord:
    """Fine-tune ``source`` on the target domain with only the labelled tasks in the loss."""
    labelled, zero = split_zero_shot(task_set)
    target = ctx.settings.zero_shot_target
    spec = RunSpec(f"{method} {task_set} fine-tuned on {target} without {zero} labels",
                   ctx.config(task_set, domain=target, seed=seed,
                              epochs=ctx.settings.finetune_epochs), method,
                   loss_tasks=labelled, val_tasks=labelled, init_from=source)
    return ctx.train(spec)


def train_oracle(ctx: SettingContext, task_set: str, domain: str, seed: int) -> RunRecord:
    """VTAGML trained on ``domain`` with all labels (the target-trained reference)."""
    return ctx.train(RunSpec(f"{ORACLE_METHOD} {task_set} trained on {domain} (oracle)",
                             ctx.config(task_set, domain=domain, seed=seed), ORACLE_METHOD))


def run_zero_shot(ctx: SettingContext) -> dict[str, Any]:
    """Table 3's shape: per method, target metrics after fine-tuning without the zero-shot labels."""
    started = time.perf_counter()
    s, target = ctx.settings, ctx.settings.zero_shot_target
    source = s.source_for("zeroshot")
    groups = [(g, parse_tasks(g), split_zero_shot(g)) for g in s.zero_shot_task_sets]
    columns = [c for g, tasks, (_, zero) in groups for c in task_columns(g, tasks, (zero,))]
    rows, source_rows = [], []
    for method in s.methods:
        tuned: dict[str, dict] = {}
        plain: dict[str, dict] = {}
        for g, tasks, _ in groups:
            src = [train_source(ctx, g, method, seed, source) for seed in ctx.seeds]
            fts = [finetune_on_target(ctx, r, g, method, seed) for r, seed in zip(src, ctx.seeds)]
            tuned.update(primary_cells(g, [ctx.evaluate(r, target) for r in fts], tasks))
            plain.update(primary_cells(g, [ctx.evaluate(r, target) for r in src], tasks))
        label = METHOD_LABELS.get(method, method)
        rows.append(row(label, tuned, method=method))
        source_rows.append(row(f"{label}, source only (no fine-tuning)", plain, kind="reference",
                               method=method))
    oracle: dict[str, dict] = {}
    for g, tasks, _ in groups:
        per_seed = [ctx.evaluate(train_oracle(ctx, g, target, seed), target) for seed in ctx.seeds]
        oracle.update(primary_cells(g, per_seed, tasks))
    rows += source_rows
    rows.append(row(f"{METHOD_LABELS[ORACLE_METHOD]} trained on {target} with all labels (oracle)",
                    oracle, kind="reference", method=ORACLE_METHOD))
    labelled = "; ".join(f"{g}: labelled {task_set_name(lab)}, zero-shot {zero}"
                         for g, _, (lab, zero) in groups)
    notes = [f"Source synthetic/{source} (all labels) -> target synthetic/{target}; {labelled}.",
             "Fine-tuning starts from the source model's best weights; the zero-shot task's labels "
             "are never loaded on the target (training and model selection use the labelled "
             "tasks only). All numbers on the target's test split.",
             "Columns marked (zero-shot) are the tasks without target labels (the paper's "
             "highlighted cells)."]
    return setting_document(ctx, "zeroshot", "Zero-shot task transfer", ctx.where(target),
                            columns, rows, notes, started, source_domain=source, target_domain=target)


__all__ = ["ORACLE_METHOD", "fine_tuned_parameters", "finetune_on_target", "run_zero_shot", "split_zero_shot", "train_oracle"]
