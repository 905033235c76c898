"""MTFormer's two loss terms (Xu et al., 2022; Xu et al., MTFormer, ECCV 2022).

:func:`cross_task_contrastive_loss` (Sec. 3.3, Eq. 4-6) and :class:`UncertaintyWeighting`
(Sec. 3.4, Eq. 7), used by :class:`~.mtformer.MTFormer`'s ``extra_losses`` and ``weight_losses``.
"""
from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cross_task_contrastive_loss(embeddings: dict[str, Tensor], temperature: float = 1.0) -> Tensor:
    """Cross-task contrastive loss (Sec. 3.3, Eq. 4-6) over projected, pooled branch features.

    For every pair of tasks (y, z) and image b, the positive is (y_b, z_b), two tasks' views of
    the same image; the negatives are z_b' for the other images b' of the batch. With
    ``g = exp(cos / temperature)``: ``L^y = -mean_b log g(y_b, z_b) / sum_b' g(y_b, z_b')``,
    ``L^{y,z} = L^y + L^z`` (Eq. 5), summed over task pairs (Eq. 6).

    Args:
        embeddings: ``{task: (B, D)}`` (L2-normalised here), at least two tasks.
        temperature: > 0.

    Returns:
        scalar tensor.
    """
    if len(embeddings) < 2:
        raise ValueError(f"the cross-task contrastive loss needs two or more tasks, got {list(embeddings)}")
    z = {t: F.normalize(e, dim=-1) for t, e in embeddings.items()}
    shapes = {tuple(e.shape) for e in z.values()}
    if len(shapes) != 1 or next(iter(shapes)).__len__() != 2:
        raise ValueError(f"embeddings must all be (B, D) of one shape, got {sorted(shapes)}")
    b = next(iter(z.values())).shape[0]
    target = torch.arange(b, device=next(iter(z.values())).device)
    total = next(iter(z.values())).new_zeros(())
    for y, w in combinations(z, 2):
        logits = z[y] @ z[w].T / temperature  # (B, B): row b, column b' = similarity of y_b, w_b'
        total = total + F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    return total


class UncertaintyWeighting(nn.Module):
    """Homoscedastic uncertainty weighting (Sec. 3.4, Eq. 7; Kendall et al. 2018).

    ``total = sum_t exp(-s_t) * L_t + s_t`` over the tasks present, with one learnable
    ``s_t = log sigma_t^2`` per task in ``log_vars (T,)``. A task whose loss is large gets a
    larger ``s_t`` (a smaller weight ``exp(-s_t)``), the ``+ s_t`` term stops ``s_t`` from growing
    without bound.
    """

    def __init__(self, tasks: tuple[str, ...], init_log_variance: float = 0.0) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_variance)))

    def forward(self, per_task: dict[str, Tensor]) -> Tensor:
        unknown = [t for t in per_task if t not in self.tasks]
        if unknown:
            raise KeyError(f"no uncertainty weight for task(s) {unknown}; this model has {self.tasks}")
        if not per_task:
            raise ValueError("uncertainty weighting needs at least one task loss")
        total = self.log_vars.new_zeros(())
        for t, loss in per_task.items():
            s = self.log_vars[self.tasks.index(t)]
            total = total + torch.exp(-s) * loss + s
        return total

    def weights(self) -> dict[str, float]:
        """Current effective weights ``exp(-s_t)`` per task, for logging."""
        return {t: float(torch.exp(-s)) for t, s in zip(self.tasks, self.log_vars.detach())}


__all__ = ["UncertaintyWeighting", "cross_task_contrastive_loss"]
