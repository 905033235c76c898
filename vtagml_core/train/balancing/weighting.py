"""Loss-weighting balancers: ``total = sum_t w_t L_t`` with weights that follow a rule.

* ``equal`` (:class:`~.base.Balancer`): w_t = 1, the paper's linear combination (Sec. 3.3).
* ``uncertainty`` (:class:`UncertaintyWeighting`): Kendall, Gal & Cipolla, "Multi-Task Learning
  Using Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018.
* ``dwa`` (:class:`DynamicWeightAverage`): Liu, Johns & Davison, "End-to-End Multi-Task Learning
  with Attention", CVPR 2019 (MTAN), Sec. 3.3.

The losses given to a balancer are the trainer's lambda-weighted task losses
(``train.task_weights``), so lambda_t and the balancer's w_t multiply.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .base import Balancer

#: Initial log-variance s_t of uncertainty weighting (weight exp(-0) = 1: starts as ``equal``).
UNCERTAINTY_INIT_LOG_VAR: float = 0.0
#: DWA's temperature T (Liu et al. 2019 use 2).
DWA_TEMPERATURE: float = 2.0
#: Epochs of recorded losses DWA needs before its weights leave 1 (it uses L(t-1) / L(t-2)).
DWA_WARMUP_EPOCHS: int = 2
#: Lower bound on a recorded epoch loss before dividing by it.
DWA_MIN_LOSS: float = 1e-12


class UncertaintyWeighting(Balancer):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018, Eq. 7, in log-variance form).

    With one learned ``s_t = log sigma_t^2`` per task::

        total = sum_t exp(-s_t) * L_t + s_t                                   (1)

    so task t's weight is ``exp(-s_t) = 1 / sigma_t^2``; the ``+ s_t`` term stops every sigma
    from growing without bound. The paper's Eq. 7 has factors 1/2 on the regression terms and
    ``log sigma`` instead of ``log sigma^2``; (1) is the common form (one s per task, all tasks
    alike; as in the MTAN and LibMTL implementations) and learns the same minimiser up to those
    constants. The s_t are ``nn.Parameter`` s trained by the same optimizer as the model.

    Args:
        tasks: task names in loss order.
        init_log_var: initial s_t for every task.
    """

    def __init__(self, tasks: str | Sequence[str], init_log_var: float = UNCERTAINTY_INIT_LOG_VAR) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)))

    def weights(self) -> Tensor:
        """``exp(-s_t)`` per task, detached ``(T,)``."""
        return torch.exp(-self.log_vars.detach()).cpu()

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        s = self.log_vars
        stacked = torch.stack([loss.float() for loss in self._ordered(losses)])
        return (torch.exp(-s.to(stacked.device)) * stacked + s.to(stacked.device)).sum()


class DynamicWeightAverage(Balancer):
    """Dynamic Weight Average (Liu et al. 2019, Eq. 1)::

        w_t(e) = T_tasks * exp(r_t(e-1) / temp) / sum_i exp(r_i(e-1) / temp),
        r_t(e-1) = L_t(e-1) / L_t(e-2)                                          (1)

    ``L_t(e)`` is task t's mean training loss over epoch e: a task whose loss fell less in the
    last epoch (r_t larger) gets a larger weight; the weights sum to the number of tasks. The
    first :data:`DWA_WARMUP_EPOCHS` epochs use w_t = 1 (no ratio yet), as in the paper.

    :meth:`combine` records the (detached) losses of every training step; the trainer calls
    :meth:`end_epoch` after each epoch. Recorded sums and the last two epoch means are buffers,
    so a resumed run continues with the same weights.

    Args:
        tasks: task names in loss order.
        temperature: ``temp`` of (1); larger = softer weights (closer to 1).
    """

    def __init__(self, tasks: str | Sequence[str], temperature: float = DWA_TEMPERATURE) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        n = len(self.tasks)
        self.register_buffer("loss_sum", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("epoch_means", torch.zeros(DWA_WARMUP_EPOCHS, n, dtype=torch.float64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def weights(self) -> Tensor:
        """Eq. (1) from the last two epochs' mean losses; ones during the warm-up."""
        n = len(self.tasks)
        if int(self.epochs_seen) < DWA_WARMUP_EPOCHS:
            return torch.ones(n)
        older, last = self.epoch_means[0], self.epoch_means[1]
        ratio = last / older.clamp_min(DWA_MIN_LOSS)
        return (n * torch.softmax(ratio / self.temperature, dim=0)).float().cpu()

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        ordered = self._ordered(losses)
        if torch.is_grad_enabled():  # a training step: remember this step's losses
            self.loss_sum += torch.stack([v.detach().double().cpu() for v in ordered]).to(self.loss_sum.device)
            self.loss_count += 1
        w = self.weights().to(ordered[0].device)
        return sum(w[i] * loss for i, loss in enumerate(ordered))

    def end_epoch(self) -> None:
        """Close the epoch: its mean losses become L(e-1), the previous ones L(e-2)."""
        if int(self.loss_count) == 0:
            return
        mean = self.loss_sum / int(self.loss_count)
        self.epoch_means[0] = self.epoch_means[1].clone()
        self.epoch_means[1] = mean
        self.epochs_seen += 1
        self.loss_sum.zero_()
        self.loss_count.zero_()

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, temperature={self.temperature}"
