"""How a training step's losses become the total and its gradients: :class:`StepObjective`.

A mixin of :class:`~vtagml_core.train.trainer.Trainer` (it reads the trainer's ``cfg``, ``model``,
``tasks``, ``loss_tasks``, ``loss_fn``, ``balancer`` and ``trainable``): the lambda-weighted task
losses, the method's own terms, a loss balancer's total or Algorithm 1's weighted objective
(:meth:`StepObjective.affinity_objective`), and the backward that a gradient-based balancer
replaces (:mod:`.run_setup` says what each balancer may not be combined with).

Methods with their own loss terms (``extra_losses``, ``weight_losses``) and subclasses that
override :meth:`StepObjective.compute_losses`: the trainer's module docstring, "Extension points".
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from vtagml_core.model.troa import affinity_weighted_objective
from vtagml_core.model.vtagml import STREAM_OUTPUTS
from vtagml_core.train.config import KitConfig

from .balancing import Balancer
from .losses import MultiTaskLoss


class StepObjective:
    """The losses of one training step and their backward (mixed into the trainer)."""

    # What the trainer sets up and this mixin reads (annotations only).
    cfg: KitConfig
    model: nn.Module
    tasks: tuple[str, ...]
    loss_tasks: tuple[str, ...]
    loss_fn: MultiTaskLoss
    balancer: Balancer
    trainable: list[Tensor]

    def compute_losses(self, outputs: dict[str, Tensor], batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total, {name: loss})``: the task losses, plus the method's own terms if it has any.

        With ``model.adapter.weighted_objective`` the total is Algorithm 1's weighted objective
        (:meth:`affinity_objective`); the returned per-task losses stay each task's loss on its
        own stream, as in every other run.
        """
        total, per_task = self.loss_fn(outputs, batch)
        if STREAM_OUTPUTS in outputs:
            total = self.affinity_objective(outputs[STREAM_OUTPUTS], batch)
        elif hasattr(self.model, "weight_losses"):
            total = self.model.weight_losses(per_task)
        elif self.cfg.train.balancer != "equal":
            total = self.balancer.combine(self.weighted_task_losses(per_task))
        losses = dict(per_task)
        if hasattr(self.model, "extra_losses"):
            for name, value in self.model.extra_losses(outputs, batch).items():
                total, losses[name] = total + value, value
        return total, losses

    def affinity_objective(self, streams: list[dict[str, Tensor]], batch: dict) -> Tensor:
        """Algorithm 1's objective summed over targets: ``sum_t sum_n omega[t, n] lambda_n L_n(t -> n)``.

        ``streams[t][n]`` is task n's decoder on adapter stream t (:data:`STREAM_OUTPUTS`); n runs
        over the labelled tasks (``loss_tasks``), t over all the model's streams. The reading of
        Algorithm 1 is in :mod:`vtagml_core.model.troa`.
        """
        images = batch["image"].shape[0]
        if len(streams) != len(self.tasks) or any(p.shape[0] != images for p in streams[0].values()):
            raise ValueError(
                f"the weighted objective got {len(streams)} streams for {len(self.tasks)} tasks, "
                f"with predictions for {next(iter(streams[0].values())).shape[0]} images and labels "
                f"for {images}: a trainer that splits the model's outputs (the UDA setting) cannot "
                "use it; set model.adapter.weighted_objective=false")
        columns = [self.tasks.index(n) for n in self.loss_tasks]
        rows = [self.loss_fn.per_task(stream, batch) for stream in streams]   # {n: L_n(t -> n)}
        loss_matrix = torch.stack([torch.stack([self.loss_fn.weights[n] * r[n] for n in self.loss_tasks])
                                   for r in rows])                           # (T, M): lambda_n L_n(t -> n)
        omega = self.model.omega[:, columns]                                   # (T, M)
        return affinity_weighted_objective(omega, loss_matrix)

    def weighted_task_losses(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{task: lambda_t * L_t}`` over ``loss_tasks`` (what the balancer balances)."""
        return {t: self.loss_fn.weights[t] * losses[t] for t in self.loss_tasks}

    def _backward(self, total: Tensor, losses: dict[str, Tensor]) -> None:
        """``total.backward()``, or the gradient-based balancer's combination of task gradients."""
        if not self.balancer.gradient_based:
            total.backward()
            return
        extras = [v for k, v in losses.items() if k not in self.loss_tasks]
        self.balancer.backward(self.weighted_task_losses(losses), self.trainable,
                               extra=sum(extras) if extras else None)


__all__ = ["StepObjective"]
