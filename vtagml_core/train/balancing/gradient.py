"""Gradient-aggregation balancers: PCGrad and CAGrad, on the shared parameters' task gradients.

Both receive ``G (T, D)``, row t = task t's gradient on the shared parameters
(:class:`~.base.TaskGradients`), and return one update ``d (D,)``; task-specific parameters keep
their own task's gradient. The trainer's optimizer then steps along ``d``.

* ``pcgrad`` (:class:`PCGrad`): Yu et al., "Gradient Surgery for Multi-Task Learning",
  NeurIPS 2020, Algorithm 1.
* ``cagrad`` (:class:`CAGrad`): Liu et al., "Conflict-Averse Gradient Descent for Multi-task
  Learning", NeurIPS 2021, Eq. (4)-(6) and Algorithm 1.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import NORM_EPS, Balancer, TaskGradients

#: Seed of PCGrad's random task order (combined with the step count: reproducible and resumable).
PCGRAD_SEED: int = 0
#: CAGrad's c (Liu et al. use 0.4 on NYUv2 and 0.5 on Cityscapes).
CAGRAD_C: float = 0.4
#: Projected-gradient iterations of CAGrad's simplex problem (T is small: this is cheap).
CAGRAD_SOLVER_STEPS: int = 500
#: CAGrad rescaling of the final update (Algorithm 1 of the official code): divide by 1 + c^2.
CAGRAD_RESCALE: bool = True


def pcgrad_project(grads: Tensor, order: Sequence[Sequence[int]] | None = None) -> Tensor:
    """PCGrad (Yu et al. 2020, Algorithm 1) on ``grads (T, D)``; returns ``sum_t g_t^PC (D,)``.

    For every task i, starting from ``g_i^PC = g_i``, for each other task j (in ``order[i]``):
    if ``g_i^PC . g_j < 0`` (conflict), project it onto the normal plane of g_j::

        g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2 * g_j

    The update is the sum of the projected gradients. Gradients that do not conflict are
    untouched, so with no conflicts PCGrad is plain summation.

    Args:
        grads: (T, D) task gradients.
        order: for each task i, the other tasks in the order they are visited (default: 0..T-1
            without i); the paper samples it at random every step.
    """
    T = grads.shape[0]
    g = grads.double()
    sq_norms = (g * g).sum(dim=1)
    projected = g.clone()
    for i in range(T):
        others = order[i] if order is not None else [j for j in range(T) if j != i]
        for j in others:
            if j == i:
                continue
            dot = projected[i] @ g[j]
            if dot < 0 and sq_norms[j] > NORM_EPS:
                projected[i] = projected[i] - dot / sq_norms[j] * g[j]
    return projected.sum(dim=0).to(grads.dtype)


def project_to_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of ``v (T,)`` onto ``{w >= 0, sum w = 1}`` (sort-based algorithm)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, dim=0) - 1.0
    idx = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - css / idx > 0).max())
    theta = css[rho] / (rho + 1)
    return (v - theta).clamp_min(0.0)


def cagrad_direction(grads: Tensor, c: float = CAGRAD_C, steps: int = CAGRAD_SOLVER_STEPS,
                     rescale: bool = CAGRAD_RESCALE) -> tuple[Tensor, Tensor]:
    """CAGrad's update for ``grads (T, D)``; returns ``(d (D,), w (T,))``.

    CAGrad (Liu et al. 2021, Eq. 4) looks for the update that helps the *worst* task most while
    staying near the average gradient ``g0 = (1/T) sum_t g_t``::

        max_d  min_t  g_t . d      s.t.  ||d - g0|| <= c ||g0||

    Its dual (Eq. 5-6) is a problem over the simplex, solved here by projected gradient::

        min_{w in simplex}  g_w . g0 + sqrt(phi) ||g_w||,   g_w = sum_t w_t g_t,  phi = c^2 ||g0||^2

    and then ``d = g0 + sqrt(phi) / ||g_w|| * g_w``. With ``rescale`` the update is divided by
    ``1 + c^2`` as in the authors' code (Algorithm 1), which keeps the step size comparable to
    ``g0``'s for any c; the direction is the same. c = 0 gives ``g0`` (plain averaging).

    Only the ``(T, T)`` Gram matrix enters the solver, so its cost does not depend on D.
    """
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    g = grads.double()
    T = g.shape[0]
    g0 = g.mean(dim=0)
    # The minimising w does not change when G is scaled (both terms scale alike), so the solver
    # works on the Gram matrix normalised by its largest diagonal entry, step 1 / Lipschitz.
    raw_gram = g @ g.T
    scale = float(torch.diagonal(raw_gram).max().clamp_min(NORM_EPS))
    gram = raw_gram / scale
    g0_norm = torch.sqrt(gram.mean().clamp_min(0.0))  # ||g0||^2 = mean of the Gram matrix
    sqrt_phi = c * g0_norm
    b = gram.mean(dim=1)  # (G g0)_t = g_t . g0
    w = torch.full((T,), 1.0 / T, dtype=torch.float64)
    lr = 1.0 / (float(torch.linalg.matrix_norm(gram, ord=2)) + NORM_EPS)

    def objective(x: Tensor) -> Tensor:
        return x @ b + sqrt_phi * torch.sqrt((x @ gram @ x).clamp_min(0.0) + NORM_EPS)

    best, best_val = w.clone(), objective(w)
    for _ in range(steps):
        gw_norm = torch.sqrt((w @ gram @ w).clamp_min(0.0) + NORM_EPS)
        grad = b + sqrt_phi * (gram @ w) / gw_norm
        w = project_to_simplex(w - lr * grad)
        val = objective(w)
        if val < best_val:
            best, best_val = w.clone(), val
    w = best
    gw = w @ g
    gw_norm = gw.norm()
    radius = c * g0.norm()
    d = g0 + (radius / gw_norm) * gw if gw_norm > NORM_EPS else g0
    if rescale:
        d = d / (1.0 + c**2)
    return d.to(grads.dtype), w.float()


class PCGrad(Balancer):
    """Projecting Conflicting Gradients (Yu et al. 2020) as a trainer balancer.

    Every step draws a random order of the other tasks for each task (:func:`pcgrad_project`)
    from a generator seeded by ``(seed, step)``, so runs and resumed runs repeat exactly.
    """

    gradient_based = True

    def __init__(self, tasks: str | Sequence[str], seed: int = PCGRAD_SEED) -> None:
        super().__init__(tasks)
        self.seed = int(seed)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def _order(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.step))
        T = len(self.tasks)
        return [[j for j in torch.randperm(T, generator=gen).tolist() if j != i] for i in range(T)]

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        g = grads.shared_matrix()
        gram = g.double() @ g.double().T
        conflicts = int((torch.triu(gram, diagonal=1) < 0).sum())
        update = pcgrad_project(g, self._order())
        self.step += 1
        return update, None, {"conflicting_pairs": float(conflicts)}


class CAGrad(Balancer):
    """Conflict-Averse Gradient descent (Liu et al. 2021) as a trainer balancer.

    Args:
        tasks: task names in loss order.
        c: radius of the ball around the average gradient, relative to its norm.
        rescale: divide the update by ``1 + c^2`` (:func:`cagrad_direction`).
    """

    gradient_based = True

    def __init__(self, tasks: str | Sequence[str], c: float = CAGRAD_C,
                 rescale: bool = CAGRAD_RESCALE) -> None:
        super().__init__(tasks)
        if c < 0:
            raise ValueError(f"CAGrad's c must be >= 0, got {c}")
        self.c, self.rescale = float(c), bool(rescale)

    def aggregate(self, grads: TaskGradients) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        g = grads.shared_matrix()
        d, w = cagrad_direction(g, self.c, rescale=self.rescale)
        # d is scaled like the *mean* gradient; times T it is scaled like the sum that the
        # ``equal`` balancer steps along (c = 0 gives exactly that sum), and task-specific
        # parameters keep their own task's full gradient, as under ``equal``.
        T = len(self.tasks)
        info = {f"w_{t}": float(w[i]) for i, t in enumerate(self.tasks)}
        return d * T, None, info

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, c={self.c}, rescale={self.rescale}"
