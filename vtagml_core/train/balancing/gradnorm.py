"""GradNorm: Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.

Learned task weights ``w_t`` (summing to T) scale the losses, ``L = sum_t w_t L_t``, and are
moved so that every task's weighted gradient norm on the shared parameters W,
``G_t = ||grad_W w_t L_t|| = w_t n_t``, approaches a common target scaled by how slowly the task
trains (Sec. 3, Eq. 1-2)::

    L~_t = L_t / L_t(0),   r_t = L~_t / mean_i L~_i            (inverse training rate)
    L_grad = sum_t | G_t - mean_i(G_i) * r_t^alpha |            (target held constant)

A task that trains slowly (r_t > 1) is given a larger gradient share; alpha sets how strongly.
After each update the weights are renormalised to sum to T (Sec. 3.2).

Choices of this kit (the paper leaves them to the implementer):

* W is every *shared* trainable parameter (found from the per-task gradients,
  :mod:`.base`), not only the last shared layer: the kit's models are small, and VTAGML has no
  single "last shared layer" (its adapters feed per-task streams).
* The weights take a plain gradient step of size ``lr`` on ``L_grad``, whose gradient
  ``dL_grad/dw_t = sign(G_t - target_t) * n_t`` is divided by the mean n, so the step does not
  depend on the scale of the gradients. They are clamped at :data:`GRADNORM_MIN_WEIGHT`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import NORM_EPS, Balancer, TaskGradients

#: The asymmetry alpha (the paper uses 0.12 to 1.5; 1.5 on NYUv2).
GRADNORM_ALPHA: float = 1.5
#: Step size of the weight update (on scale-free gradients, see the module docstring).
GRADNORM_LR: float = 0.025
#: Weights never fall below this (a weight of 0 would switch a task off for good).
GRADNORM_MIN_WEIGHT: float = 1e-3


def gradnorm_weight_step(weights: Tensor, norms: Tensor, loss_ratios: Tensor,
                         alpha: float = GRADNORM_ALPHA, lr: float = GRADNORM_LR) -> Tensor:
    """One GradNorm update of the task weights (module docstring); returns the new ``(T,)``.

    Args:
        weights: current w ``(T,)``, summing to T.
        norms: ``n_t = ||grad_W L_t||`` of the *unweighted* losses ``(T,)``.
        loss_ratios: ``L_t / L_t(0)`` ``(T,)``.
        alpha: the asymmetry.
        lr: step size.
    """
    T = weights.numel()
    w = weights.double()
    n = norms.double()
    ratio = loss_ratios.double()
    G = w * n
    inverse_rate = ratio / ratio.mean().clamp_min(NORM_EPS)
    target = G.mean() * inverse_rate**alpha
    grad = torch.sign(G - target) * n / n.mean().clamp_min(NORM_EPS)
    new = (w - lr * grad).clamp_min(GRADNORM_MIN_WEIGHT)
    return (new * T / new.sum()).to(weights.dtype)


class GradNorm(Balancer):
    """GradNorm as a trainer balancer (module docstring).

    The step's update is ``sum_t w_t g_t`` with the weights *before* this step's weight update
    (the paper's order: the network steps on L, the weights on L_grad, then renormalise).
    ``weights`` and the first step's losses ``L_t(0)`` are buffers, saved with the training
    state.
    """

    gradient_based = True

    def __init__(self, tasks: str | Sequence[str], alpha: float = GRADNORM_ALPHA,
                 lr: float = GRADNORM_LR) -> None:
        super().__init__(tasks)
        if alpha < 0 or lr <= 0:
            raise ValueError(f"GradNorm needs alpha >= 0 and lr > 0, got alpha={alpha}, lr={lr}")
        self.alpha, self.lr = float(alpha), float(lr)
        n = len(self.tasks)
        self.register_buffer("task_weights", torch.ones(n))
        self.register_buffer("initial_losses", torch.zeros(n))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self._last_losses: Tensor | None = None

    def weights(self) -> Tensor:
        return self.task_weights.detach().cpu().clone()

    def backward(self, losses: dict[str, Tensor], params: Sequence[Tensor],
                 extra: Tensor | None = None) -> dict[str, float]:
        self._last_losses = torch.stack([v.detach().float() for v in self._ordered(losses)]).cpu()
        if not bool(self.started):
            self.initial_losses.copy_(self._last_losses.clamp_min(NORM_EPS))
            self.started.fill_(True)
        return super().backward(losses, params, extra)

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        if self._last_losses is None:
            raise RuntimeError("GradNorm.aggregate is called by GradNorm.backward, which records the losses")
        g = grads.shared_matrix()
        w = self.task_weights.detach().cpu().to(g.dtype)
        update = w @ g
        norms = g.double().norm(dim=1)
        ratios = self._last_losses.double() / self.initial_losses.double().cpu()
        self.task_weights.copy_(gradnorm_weight_step(w, norms, ratios, self.alpha, self.lr))
        info = {f"w_{t}": float(w[i]) for i, t in enumerate(self.tasks)}
        return update, w, info

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, alpha={self.alpha}, lr={self.lr}"
