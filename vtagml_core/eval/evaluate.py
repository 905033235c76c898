"""Evaluate a model over a whole split (DESIGN.md section 6: accumulate, never average batches)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from vtagml_core.train.step import move_batch

from .metrics import MultiTaskMetrics


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
