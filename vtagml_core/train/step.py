"""One VTAGML training step, in the order the method needs (DESIGN.md section 2).

``images -> frozen backbone -> adapters (per task, conditioned on omega_t) -> decoders ->
heads -> per-task losses -> [stop if any is NaN/inf] -> backward -> TROA update of omega ->
optimizer step``.

The NaN check comes before ``backward()`` and ``step()``, so a diverging run stops with its
weights untouched. TROA reads the per-task gradients that this same backward left on the
adapters' per-task inputs (no extra backward pass), then updates omega for the next step
(Algorithm 1: omega^{i+1} from the gradients at iteration i).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtagml_core.model.vtagml import VTAGML

from .losses import MultiTaskLoss, check_finite


@dataclass
class StepResult:
    """What one step measured: the weighted total, per-task losses, TROA's similarity."""

    loss: float
    task_losses: dict[str, float]
    similarity: Tensor | None


def move_batch(batch: dict, device: torch.device | str) -> dict:
    """Tensors of a collated batch to ``device`` (strings and lists stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


def train_step(model: VTAGML, batch: dict, loss_fn: MultiTaskLoss,
               optimizer: torch.optim.Optimizer) -> StepResult:
    """Forward, loss, NaN guard, backward, TROA update, optimizer step.

    Args:
        model: the VTAGML model, in train mode (its backbone stays frozen in eval mode).
        batch: a collated batch following the data contract, on the model's device.
        loss_fn: the multitask loss over the model's tasks.
        optimizer: over the model's trainable parameters.

    Raises:
        FloatingPointError: a task loss is NaN or infinite (names the task); nothing changed.
    """
    track = model.training and model.tracks_task_grads
    outputs = model(batch["image"], track_task_grads=track)
    total, per_task = loss_fn(outputs, batch)
    check_finite({**per_task, "total": total})
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    sim = model.update_affinity() if track else None
    optimizer.step()
    return StepResult(float(total.detach()), {t: float(v.detach()) for t, v in per_task.items()},
                      None if sim is None else sim.detach().cpu())
