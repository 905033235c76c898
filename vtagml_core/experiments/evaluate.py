"""Evaluate a model over a whole split (accumulate over the split, never average batches),
and a trained run's best model on any split of any domain (cached in the run folder)."""
from __future__ import annotations

import json
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from vtagml_core.data.config import build_dataset
from vtagml_core.metrics.multitask import MultiTaskMetrics
from vtagml_core.runtime import resolve_device
from vtagml_core.tasks import parse_tasks
from vtagml_core.train.config import KitConfig
from vtagml_core.train.step import move_batch

from .runs import EVALS_SUBDIR, RunRecord


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], tasks: Iterable[str], num_classes: int,
             device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``model`` over every batch of ``batches``.

    The model is put in eval mode for the pass and restored to its previous mode afterwards.
    """
    metrics = MultiTaskMetrics(list(tasks), num_classes)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = move_batch(batch, device)
            metrics.update(model(batch["image"]), batch)
    finally:
        model.train(was_training)
    return metrics.compute()


def eval_name(domain: str, split: str, count: int, size: int, data_seed: int,
              tasks: Sequence[str]) -> str:
    """File stem of a cached evaluation: which split of which domain, which tasks."""
    return f"{domain}-{split}-n{count}-{size}px-s{data_seed}-{'_'.join(tasks)}"


def evaluate_run(record: RunRecord, cfg: KitConfig, domain: str, split: str = "test",
                 tasks: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of ``record``'s best model on ``domain``'s ``split`` (cached in the run folder).

    The split's scene count is ``cfg.data.<split>_count``; size and data seed are ``cfg.data``'s.
    """
    d = cfg.data
    counts = {"train": d.train_count, "val": d.val_count, "test": d.test_count}
    if split not in counts:
        raise ValueError(f"split must be one of {', '.join(counts)}, got {split!r}")
    tasks = parse_tasks(tasks) if tasks is not None else tuple(record.results["tasks"])
    path = record.dir / EVALS_SUBDIR / f"{eval_name(domain, split, counts[split], d.size, d.seed, tasks)}.json"
    if path.is_file():
        return json.loads(path.read_text())["metrics"]
    device = resolve_device(cfg.train.device)
    ds = build_dataset(d, split, tasks, domain=domain, progress=cfg.train.progress)
    loader = DataLoader(ds, batch_size=d.batch_size, generator=torch.Generator())
    model = record.model(device)
    metrics = evaluate(model, loader, tasks, model.num_classes, device)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"domain": domain, "split": split, "count": counts[split],
                                "size": d.size, "tasks": list(tasks), "metrics": metrics}, indent=2))
    return metrics


__all__ = ["eval_name", "evaluate", "evaluate_run"]
