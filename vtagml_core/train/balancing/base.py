"""What every loss-balancing strategy shares: the interface the trainer calls, per-task gradients.

A multitask model minimises several task losses ``L_1 .. L_T`` at once. A *balancer* decides how
they become one parameter update. Two families (issue 7, item 4):

* **Loss weighting** (:mod:`.weighting`: equal, uncertainty, DWA): ``total = sum_t w_t L_t``
  with weights that may change during training; one ordinary ``total.backward()``.
* **Gradient aggregation** (:mod:`.gradient`: PCGrad, CAGrad; :mod:`.gradnorm`: GradNorm): take
  every task's gradient ``g_t`` on the *shared* parameters, combine them into one update ``d``
  by the method's rule, and let each task-specific parameter keep its own task's gradient.

How the trainer uses a balancer (:meth:`vtagml_core.train.trainer.Trainer.training_step`)::

    total = balancer.combine(task_losses) + extra_terms      # loss weighting
    if balancer.gradient_based:
        balancer.backward(task_losses, params, extra=extra_terms)
    else:
        total.backward()
    balancer.end_epoch()                                     # once per epoch (DWA)

**Per-task gradients and TROA.** :func:`per_task_backward` runs one ``backward`` per task
(keeping the graph between them). Before each, the trainable parameters' ``.grad`` are cleared
and after it they are collected, so ``g_t`` is exactly task t's gradient. Tensors that are *not*
in ``params`` are left alone and keep accumulating: VTAGML's per-task adapter leaves (TROA's
input, :meth:`vtagml_core.model.adapter.VisionAdapter.task_gradients`) end with the sum over
tasks of their gradients, exactly what a single ``total.backward()`` leaves there. TROA
therefore always measures the raw task gradients, before any surgery, whatever the balancer.

**Which parameters are shared** is found from the gradients themselves: a parameter that
receives a gradient from two or more tasks is shared (adapters, a shared decoder, a trained
backbone); one reached by a single task is task-specific (its decoder and head) and gets that
task's gradient unchanged. No model needs to declare anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from vtagml_core.tasks import parse_tasks

#: Added to norms before dividing by them (zero gradients do not divide by zero).
NORM_EPS: float = 1e-12


@dataclass
class TaskGradients:
    """Every task's gradient on the trainable parameters, split into shared and task-specific.

    Attributes:
        params: the trainable parameters, in order.
        grads: ``grads[t][k]`` = task t's gradient of ``params[k]`` (None: not reached).
        shared: indices of the parameters reached by two or more tasks.
    """

    params: list[Tensor]
    grads: list[list[Tensor | None]]
    shared: list[int]

    def shared_matrix(self) -> Tensor:
        """``(T, D)`` float32: row t = task t's gradient over the shared parameters, flattened.

        A task that does not reach a shared parameter contributes zeros there.
        """
        rows = []
        for task_grads in self.grads:
            parts = [(task_grads[k] if task_grads[k] is not None else torch.zeros_like(self.params[k]))
                     .reshape(-1).float() for k in self.shared]
            rows.append(torch.cat(parts) if parts else torch.zeros(0))
        return torch.stack(rows)

    def write(self, shared_update: Tensor, task_weights: Sequence[float] | Tensor | None = None) -> None:
        """Set ``.grad`` of every parameter: the shared ones from ``shared_update`` (D,), the
        task-specific ones to the (optionally weighted) sum of their tasks' gradients."""
        offset = 0
        shared = set(self.shared)
        for k in self.shared:
            p = self.params[k]
            n = p.numel()
            p.grad = shared_update[offset:offset + n].view_as(p).to(p.dtype).clone()
            offset += n
        for k, p in enumerate(self.params):
            if k in shared:
                continue
            total = None
            for t, task_grads in enumerate(self.grads):
                g = task_grads[k]
                if g is None:
                    continue
                w = 1.0 if task_weights is None else float(task_weights[t])
                total = w * g if total is None else total + w * g
            p.grad = total


def per_task_backward(losses: Sequence[Tensor], params: Sequence[Tensor],
                      retain_last: bool = False) -> TaskGradients:
    """One backward per task loss; returns each task's gradient (module docstring).

    Args:
        losses: T scalar losses from one forward pass.
        params: the trainable parameters (``requires_grad``).
        retain_last: keep the graph after the last task (needed when more terms follow).
    """
    params = [p for p in params if p.requires_grad]
    grads: list[list[Tensor | None]] = []
    for t, loss in enumerate(losses):
        for p in params:
            p.grad = None
        if loss.requires_grad:
            loss.backward(retain_graph=retain_last or t < len(losses) - 1)
        grads.append([p.grad for p in params])
    for p in params:
        p.grad = None
    reached = [sum(g[k] is not None for g in grads) for k in range(len(params))]
    return TaskGradients(params, grads, [k for k, n in enumerate(reached) if n >= 2])


class Balancer(nn.Module):
    """Base class: equal weights, one ordinary backward. Subclasses change :meth:`combine`
    (loss weighting) or set ``gradient_based = True`` and implement :meth:`aggregate`.

    Learnable weights are ``nn.Parameter`` s of the balancer (the trainer adds them to its
    optimizer); running statistics are buffers (saved with the training state, so a resumed
    run continues with the same weights).

    Args:
        tasks: the task names, in the order of the losses (a spec such as ``"S-D"`` works too).
    """

    #: True where :meth:`backward` replaces ``total.backward()``.
    gradient_based: bool = False

    def __init__(self, tasks: str | Sequence[str]) -> None:
        super().__init__()
        self.tasks: tuple[str, ...] = parse_tasks(tasks) if isinstance(tasks, str) else tuple(tasks)
        if not self.tasks:
            raise ValueError("a balancer needs at least one task")

    def _ordered(self, losses: dict[str, Tensor]) -> list[Tensor]:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise ValueError(f"balancer for tasks {self.tasks} got no loss for {missing} "
                             f"(losses given: {sorted(losses)})")
        return [losses[t] for t in self.tasks]

    def weights(self) -> Tensor:
        """Current task weights ``(T,)`` (detached); 1 for every task here."""
        return torch.ones(len(self.tasks))

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        """The scalar to minimise: ``sum_t w_t L_t`` (plus regularisers where a method has them)."""
        w = self.weights().to(next(iter(losses.values())).device)
        return sum(w[i] * loss for i, loss in enumerate(self._ordered(losses)))

    def backward(self, losses: dict[str, Tensor], params: Sequence[Tensor],
                 extra: Tensor | None = None) -> dict[str, float]:
        """Fill ``.grad`` of ``params`` from the task losses by the method's rule.

        ``extra`` (a method's own loss terms, e.g. MTFormer's contrastive loss) is
        back-propagated as is, on top. Returns what the step measured (for logs and tests).
        """
        grads = per_task_backward(self._ordered(losses), params, retain_last=extra is not None)
        update, weights, info = self.aggregate(grads)
        grads.write(update, weights)
        if extra is not None and extra.requires_grad:
            extra.backward()
        return info

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        """``(shared update (D,), task weights for the task-specific grads or None, info)``."""
        g = grads.shared_matrix()
        return g.sum(dim=0), None, {}

    def end_epoch(self) -> None:
        """Called by the trainer after every epoch (DWA uses it; a no-op here)."""
