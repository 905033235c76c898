"""One VTAGML training step, in the order the method needs (``docs/method.md``).

``images -> frozen backbone -> adapters (per task, conditioned on omega_t) -> decoders ->
heads -> per-task losses -> [stop if any is NaN/inf] -> backward -> TROA update of omega ->
optimizer step``.

This is the kit's only training step: the trainer (:class:`vtagml_core.train.trainer.Trainer`,
and through it every setting, the notebooks' lesson runs and the CLI) and the benchmarks call
:func:`train_step`. The trainer passes what a plain loop does not need through keywords: the
DDP wrapper to run the forward through, precomputed backbone features, bf16 autocast, the
average of the losses over processes, a loss balancer's backward, the all-reduced TROA update.

The NaN check comes before ``backward()`` and ``step()``, so a diverging run stops with its
weights untouched. TROA reads the per-task gradients that this same backward left on the
adapters' per-task inputs (no extra backward pass), then updates omega for the next step
(Algorithm 1: omega^{i+1} from the gradients at iteration i).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .losses import check_finite

#: ``(outputs, batch) -> (total, {name: loss})``: a :class:`~.losses.MultiTaskLoss` or a
#: trainer's ``compute_losses``.
LossFn = Callable[[dict, dict], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class StepResult:
    """What one step measured: the total, per-task (and extra) losses, TROA's similarity."""

    loss: float
    task_losses: dict[str, float]
    similarity: Tensor | None


def move_batch(batch: dict, device: torch.device | str) -> dict:
    """Tensors of a collated batch to ``device`` (strings and lists stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


def _backward(total: Tensor, losses: dict[str, Tensor]) -> None:
    total.backward()


def _update_affinity(model: nn.Module) -> Tensor:
    return model.update_affinity()


def train_step(model: nn.Module, batch: dict, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
               *, forward: nn.Module | None = None, features=None,
               track_task_grads: bool | None = None,
               autocast: contextlib.AbstractContextManager | None = None,
               mean_over_ranks: Callable[[Tensor], Tensor] | None = None,
               backward: Callable[[Tensor, dict[str, Tensor]], None] = _backward,
               update_affinity: Callable[[nn.Module], Tensor] = _update_affinity) -> StepResult:
    """Forward, loss, NaN guard, backward, TROA update, optimizer step.

    Args:
        model: the model (VTAGML or a baseline), in train mode; its backbone stays frozen.
        batch: a collated batch following the data contract, on the model's device.
        loss_fn: ``(outputs, batch) -> (total, {name: loss})``.
        optimizer: over the model's trainable parameters.
        forward: the module to run the forward through (the DDP wrapper); default ``model``.
        features: precomputed backbone features of the batch (the feature cache), or None.
        track_task_grads: keep the per-task streams' gradients for TROA; default: when the
            model trains and tracks them.
        autocast: e.g. bf16 autocast on CUDA; default none (fp32).
        mean_over_ranks: averages the ``(1 + n_losses,)`` loss vector over processes (DDP), so
            every rank sees the same values and all stop together on a NaN.
        backward: ``(total, losses)``; default ``total.backward()``, a gradient-based balancer
            replaces it with its own combination of per-task gradients.
        update_affinity: TROA's update after the backward (all-reduced under DDP).

    Returns:
        The losses (averaged over processes) and TROA's similarity ``(N, N)`` (CPU) or None.

    Raises:
        FloatingPointError: a loss is NaN or infinite (names it); no weight changed.
    """
    track = (model.training and model.tracks_task_grads) if track_task_grads is None else track_task_grads
    net = model if forward is None else forward
    with autocast or contextlib.nullcontext():
        outputs = net(batch["image"], features=features, track_task_grads=track)
        total, losses = loss_fn(outputs, batch)
    names = ["total", *losses]
    values = torch.stack([total.detach().float(), *(v.detach().float() for v in losses.values())])
    if mean_over_ranks is not None:
        values = mean_over_ranks(values)
    check_finite(dict(zip(names, values)))
    optimizer.zero_grad(set_to_none=True)
    backward(total, losses)
    sim = update_affinity(model) if track else None
    optimizer.step()
    numbers = values.tolist()
    return StepResult(numbers[0], dict(zip(names[1:], numbers[1:])),
                      None if sim is None else sim.detach().cpu())


__all__ = ["StepResult", "move_batch", "train_step"]
