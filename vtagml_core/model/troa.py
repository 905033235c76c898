"""TROA: the Task Representation Optimization Algorithm (paper Sec. 3.2.1, Algorithm 1).

TROA keeps an N x N task-affinity matrix ``omega``. Row ``omega[t]`` is a probability
distribution over the N tasks: how much each task ``n`` is an "inductive" task for the target
task ``t``. Every training iteration it

1. takes the gradient of each task loss L_n with respect to the shared representation theta
   (here: the frozen backbone taps that enter the adapters, see
   :meth:`vtagml_core.model.adapter.VisionAdapter.task_gradients`),
2. measures ``sim[t, n] = cos(grad L_t, grad L_n)`` (Algorithm 1, "gradient similarity"),
3. updates every row by one step of (approximate) mirror descent on the probability simplex
   with step size kappa (Algorithm 1, last line; the paper uses kappa = 1):

   ``omega[t, n] <- omega[t, n] * exp(s * kappa * sim[t, n]) / sum_n' (same, n')``.

**The sign s.** The printed Algorithm 1 has ``exp{-kappa sim}``, i.e. s = -1: a task similar
to the target would *lose* weight, and since ``sim[t, t] = 1`` is the largest entry of every
row, each task would end with its *weakest* affinity to itself. The paper's own reading of
Fig. 4 is the opposite ("TROA learns a strong task affinity between the same task gradients,
for example, segmentation with segmentation"), which needs s = +1. The kit defaults to
s = +1 and keeps the sign configurable (``sign=-1.0`` reproduces the printed formula).

**Why omega is asymmetric.** ``sim`` is symmetric, but each row is renormalised on its own:
``omega[t, n]`` depends on how task n compares with *all other tasks from t's point of view*
(the whole row ``sim[t, :]``). Two rows that share one similarity value but differ elsewhere
give that pair different weights, so in general ``omega[t, n] != omega[n, t]`` (the paper's
"segmentation does not affect normal as normal affects segmentation").

**Rows, not columns.** The text under Eq. 3 calls omega_t "the t-th column of omega"; Algorithm 1
normalises omega_t over n, so omega_t is a distribution over the tasks, and the kit conditions task
t on the *row* ``omega[t]`` (rows sum to 1; a column of a row-normalised matrix does not).
docs/method.md, "Where the paper is ambiguous", entry 2.

**A teaching note on the fixed point.** Unrolled, the update gives
``omega[t] ∝ exp(s * kappa * sum_i sim_i[t])``: the log-odds between two entries of a row
grow by ``kappa * (sim[t, a] - sim[t, b])`` per step. With s = +1, kappa = 1, a row drifts
towards its own task (``sim[t, t] = 1``) at a rate set by how dissimilar the others are;
tasks with nearly aligned gradients keep a large share. Lower ``kappa`` (or a larger ``every``)
slows this down. Measured: with kappa = 1 and s = +1, omega is (nearly) the identity within about
ten steps on the synthetic benchmark (an off-diagonal cosine of 0.2 adds 0.8 to the log-odds of
"self" per step: e^8 ~ 3000 : 1 after ten), after which it says little beyond "each task is most
like itself" (docs/method.md, entry 11).

**How often omega moves: ``every``.** Algorithm 1 alternates "a few steps of Adam" on the
weighted objective with one mirror-descent step of omega. ``every = k`` (config
``model.adapter.troa_every``) does that literally: omega stays fixed for k optimizer steps, the
similarities of those k steps are summed, and then omega takes one step with their mean,

    ``omega[t] <- omega[t] * exp(s * kappa * mean_{i in window} sim_i[t]) / sum``.

``k = 1`` (the default) is one update per step, exactly the kit's earlier behaviour. Because the
update is multiplicative, k steps of one update each would move the log-odds by
``s * kappa * sum_i sim_i``; one update with the mean moves them by ``s * kappa * mean_i sim_i``,
k times less: ``every`` both slows omega down (like kappa / k) and smooths the noise of single
batches. The running sum and its count are buffers (``sim_sum``, ``pending``), created only when
k > 1, so a checkpoint taken in the middle of a window resumes it exactly and the state dict of the
default model is unchanged. A zero gradient (no valid pixel) adds a zero row to the sum, so it
dilutes that window's mean instead of skipping it.

**The weighted objective of Algorithm 1, and how the kit reads it.** For a target task t,
Algorithm 1 runs Adam on ``sum_n omega[t, n] * L_n(theta, m_n)``: every task n's loss, through
task n's own decoder m_n, on the *representation the algorithm keeps for target t*, weighted by
row t. It is TAWT's objective (the paper's ref. [8], Chen et al., "Weighted training for
cross-task learning", ICLR 2022), which TROA builds on, with one target per row. In VTAGML the
representation for target t is adapter stream t (the stream conditioned on ``omega_t``), so the
kit reads the objective as

    ``L_affinity = sum_t sum_n omega[t, n] * lambda_n * L_n(decoder_n(stream_t))``     (summed over targets t)

i.e. stream t is decoded by *every* task's decoder and those N losses are weighted by row t; the
N targets share one set of adapter weights, so their N objectives are summed into one loss.
With omega = identity this is the kit's default objective ``sum_t lambda_t L_t``; with a uniform
omega (TROA off) all streams are the same function and it is again the default objective. It
costs N x N decoder passes instead of N. Switch: ``model.adapter.weighted_objective``
(default off, the kit's fixed-lambda objective ``sum_t lambda_t L_t(decoder_t(stream_t))``);
:func:`affinity_weighted_objective` is the sum above, the trainer builds the loss matrix.

TROA's similarity stays what it is under the default objective: ``cos(grad_theta L_t,
grad_theta L_n)``, each task's gradient taken through its own stream and decoder. The model
keeps the diagonal terms on separate, tracked copies of the streams so that the same single
backward still gives them (see :class:`vtagml_core.model.vtagml.VTAGML`).

:func:`affinity_loss_weights` is a cheaper single-objective reading (the mean over rows t of
``sum_n omega[t, n] L_n`` on each task's own stream, i.e. weights = column means of omega); the
kit does not use it for training. Either way the per-task gradient trick stays exact for the
cosine: each task's gradient is only scaled by a positive weight.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

#: Norm below which a task gradient counts as zero in :func:`gradient_cosine_similarity`.
GRAD_NORM_EPS: float = 1e-12

#: Smallest affinity kept after an update. A zero entry would be absorbing for mirror descent
#: (log 0 = -inf never moves again), so entries are floored here and rows renormalised.
OMEGA_FLOOR: float = 1e-12

#: Allowed values of the mirror-descent sign s (see the module docstring).
VALID_SIGNS: tuple[float, ...] = (1.0, -1.0)


def gradient_cosine_similarity(grads: Tensor) -> Tensor:
    """Pairwise cosine similarity of per-task gradients (Algorithm 1, "gradient similarity").

    Args:
        grads: ``(N, D)``, row n is the flattened gradient of L_n w.r.t. theta.

    Returns:
        ``(N, N)`` float32 matrix ``sim[t, n] = <g_t, g_n> / (|g_t| |g_n|)``, clamped to
        [-1, 1]. Convention for a zero gradient (norm < :data:`GRAD_NORM_EPS`, e.g. a task
        whose batch had no valid pixel): its similarity is 0 with every task *including
        itself*, so its whole row of ``sim`` is constant and the mirror-descent update leaves
        that task's affinity row unchanged for this step (no signal, no move).

    Raises:
        ValueError: if ``grads`` is not 2-D.
    """
    if grads.dim() != 2:
        raise ValueError(
            f"grads must be (N tasks, D) with one flattened gradient per row, got shape "
            f"{tuple(grads.shape)}; flatten each task's gradient with .reshape(N, -1)"
        )
    g = grads.detach().float()
    norms = g.norm(dim=1, keepdim=True)
    nonzero = norms > GRAD_NORM_EPS
    unit = torch.where(nonzero, g / norms.clamp_min(GRAD_NORM_EPS), torch.zeros_like(g))
    sim = unit @ unit.T
    # cos(g, g) = 1 exactly for non-zero gradients (the matmul may round to 1 - 1e-7).
    diag = nonzero.squeeze(1).to(sim.dtype)
    sim = sim - torch.diag(torch.diagonal(sim)) + torch.diag(diag)
    return sim.clamp(-1.0, 1.0)


def mirror_descent_update(omega: Tensor, sim: Tensor, kappa: float, sign: float) -> Tensor:
    """One TROA step: ``omega[t] <- omega[t] * exp(sign * kappa * sim[t]) / sum`` per row.

    Computed in log space, ``softmax(log omega[t] + sign * kappa * sim[t])``, in float64, so
    that large ``kappa`` or long runs neither overflow ``exp`` nor lose the small entries;
    entries are then floored at :data:`OMEGA_FLOOR` and rows renormalised (see its doc).

    Args:
        omega: ``(N, N)``, rows are distributions (positive, summing to 1).
        sim: ``(N, N)`` gradient cosine similarities.
        kappa: step size (> 0); the paper uses 1.
        sign: +1 (kit default, matches Fig. 4) or -1 (the printed Algorithm 1).

    Returns:
        ``(N, N)`` updated matrix, same dtype as ``omega``.
    """
    if omega.dim() != 2 or omega.shape[0] != omega.shape[1] or sim.shape != omega.shape:
        raise ValueError(
            f"omega and sim must both be square (N, N) of the same size, got omega "
            f"{tuple(omega.shape)} and sim {tuple(sim.shape)}"
        )
    if not kappa > 0:
        raise ValueError(f"kappa (mirror-descent step size) must be > 0, got {kappa}")
    if float(sign) not in VALID_SIGNS:
        raise ValueError(f"sign must be +1.0 or -1.0, got {sign}")
    logits = omega.double().clamp_min(OMEGA_FLOOR).log() + float(sign) * kappa * sim.double()
    new = torch.softmax(logits, dim=1).clamp_min(OMEGA_FLOOR)
    new = new / new.sum(dim=1, keepdim=True)
    return new.to(omega.dtype)


def affinity_loss_weights(omega: Tensor) -> Tensor:
    """Loss weights ``(N,)`` for the weighted objective of Algorithm 1, averaged over rows.

    ``mean_t sum_n omega[t, n] L_n = sum_n w_n L_n`` with ``w_n = mean_t omega[t, n]``
    (column means; they sum to 1). Optional: the kit's default objective uses fixed lambda
    (see the module docstring for why).
    """
    if omega.dim() != 2 or omega.shape[0] != omega.shape[1]:
        raise ValueError(f"omega must be square (N, N), got {tuple(omega.shape)}")
    return omega.mean(dim=0)


def affinity_weighted_objective(omega: Tensor, stream_losses: Tensor) -> Tensor:
    """Algorithm 1's weighted objective, summed over the target tasks (module docstring).

    ``L_affinity = sum_t sum_n omega[t, n] * L[t, n]`` with ``L[t, n]`` the loss of task n's
    decoder on stream t (already multiplied by lambda_n if the caller weights tasks).

    Args:
        omega: ``(T, M)`` affinity rows of the T target streams, restricted to the M tasks in
            the loss (``(N, N)`` when every task is labelled). Treated as a constant: omega
            moves by mirror descent, never by the optimizer.
        stream_losses: ``(T, M)`` scalar losses ``L[t, n]``, attached to the graph.

    Returns:
        The scalar objective.
    """
    if omega.dim() != 2 or stream_losses.shape != omega.shape:
        raise ValueError(
            f"omega and stream_losses must both be (T targets, M tasks in the loss) of the same "
            f"shape, got {tuple(omega.shape)} and {tuple(stream_losses.shape)}; row t of the losses "
            "holds every task's loss on stream t"
        )
    weights = omega.detach().to(stream_losses.dtype)       # omega[t, n], a constant
    return (weights * stream_losses).sum()                 # sum_t sum_n omega[t, n] L[t, n]


class TROA(nn.Module):
    """Holds the task-affinity matrix omega and updates it from per-task gradients.

    ``omega`` is a buffer (not a learned parameter: it changes by mirror descent, not by the
    optimizer) and is persistent, so checkpoints carry it, together with ``num_updates`` and,
    when ``every > 1``, the similarity sum of the window in progress (``sim_sum``, ``pending``).

    Args:
        num_tasks: N.
        kappa: mirror-descent step size (paper: 1).
        sign: +1 (default) or -1 (printed Algorithm 1); see the module docstring.
        enabled: False is the TROA-off ablation: omega stays uniform, nothing is recorded.
        history_every: record omega every this many updates (for the Fig. 4 evolution plots).
        history_max: at most this many snapshots are kept; when exceeded, every second
            snapshot is dropped and the recording interval doubles, so the history always spans
            the whole run at a coarser resolution.
        every: update omega once every this many steps, from the mean similarity of those
            steps (module docstring; 1 = every step).
    """

    def __init__(
        self,
        num_tasks: int,
        kappa: float = 1.0,
        sign: float = 1.0,
        enabled: bool = True,
        history_every: int = 1,
        history_max: int = 10_000,
        every: int = 1,
    ) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if not kappa > 0:
            raise ValueError(f"kappa (mirror-descent step size) must be > 0, got {kappa}")
        if float(sign) not in VALID_SIGNS:
            raise ValueError(f"sign must be +1.0 or -1.0, got {sign}")
        if history_every < 1 or history_max < 2:
            raise ValueError(
                f"need history_every >= 1 and history_max >= 2, got {history_every}, "
                f"{history_max}"
            )
        if isinstance(every, bool) or int(every) != every or every < 1:
            raise ValueError(
                f"every (model.adapter.troa_every) must be a whole number of steps >= 1, got "
                f"{every!r}; 1 updates omega every step")
        self.num_tasks = num_tasks
        self.kappa = float(kappa)
        self.sign = float(sign)
        self.enabled = enabled
        self.every = int(every)
        self.history_every = history_every
        self.history_max = history_max
        self._every = history_every
        self.register_buffer("omega", torch.full((num_tasks, num_tasks), 1.0 / num_tasks),
                             persistent=True)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long), persistent=True)
        if self.every > 1:  # the window in progress; absent for every = 1 (state dict unchanged)
            self.register_buffer("sim_sum", torch.zeros(num_tasks, num_tasks, dtype=torch.float64),
                                 persistent=True)
            self.register_buffer("pending", torch.zeros((), dtype=torch.long), persistent=True)
        self.history: list[tuple[int, Tensor]] = []
        if enabled:
            self._record()

    @property
    def steps_seen(self) -> int:
        """Similarities received so far: ``num_updates * every`` plus the open window's."""
        pending = int(self.pending) if self.every > 1 else 0
        return int(self.num_updates) * self.every + pending

    def _record(self) -> None:
        self.history.append((self.steps_seen, self.omega.detach().cpu().clone()))
        if len(self.history) > self.history_max:
            self.history = self.history[::2]
            self._every *= 2

    @torch.no_grad()
    def update(self, task_grads: Tensor) -> Tensor:
        """One TROA iteration from per-task gradients.

        Args:
            task_grads: ``(N, D)`` flattened gradient of each task loss w.r.t. theta, rows in
                task order.

        Returns:
            ``(N, N)`` cosine similarity ``sim`` of this step (computed even when disabled,
            for analysis). When enabled it goes to :meth:`observe`, which moves ``omega``
            (every step, or at the end of each window of ``every`` steps); when disabled,
            ``omega`` stays uniform and nothing is recorded.
        """
        if task_grads.dim() != 2 or task_grads.shape[0] != self.num_tasks:
            raise ValueError(
                f"task_grads must be ({self.num_tasks}, D), one row per task in task order, "
                f"got {tuple(task_grads.shape)}"
            )
        sim = gradient_cosine_similarity(task_grads).to(self.omega.device)
        self.observe(sim)
        return sim

    @torch.no_grad()
    def observe(self, sim: Tensor) -> bool:
        """Take one step's similarity ``(N, N)``; returns True when omega moved.

        ``every = 1``: one mirror-descent step with ``sim``. ``every = k``: add ``sim`` to the
        window's sum; at the k-th step, one mirror-descent step with the mean and a new window.
        Replaying a run's logged similarities through this method gives its omega exactly.
        """
        if sim.shape != (self.num_tasks, self.num_tasks):
            raise ValueError(
                f"sim must be ({self.num_tasks}, {self.num_tasks}), one row and column per task, "
                f"got {tuple(sim.shape)}"
            )
        if not self.enabled:
            return False
        if self.every == 1:
            step_sim = sim
        else:
            self.sim_sum += sim.to(self.sim_sum)                 # sum_i sim_i over the window
            self.pending += 1
            if int(self.pending) < self.every:
                return False
            step_sim = self.sim_sum / self.every                 # mean_i sim_i, (N, N) float64
            self.sim_sum.zero_()
            self.pending.zero_()
        # omega[t] <- omega[t] * exp(s * kappa * sim[t]) / sum_n' (...)
        self.omega.copy_(mirror_descent_update(self.omega, step_sim, self.kappa, self.sign))
        self.num_updates += 1
        if int(self.num_updates) % self._every == 0:
            self._record()
        return True

    def history_tensor(self) -> tuple[Tensor, Tensor]:
        """The recorded history as tensors: steps ``(S,)`` long and matrices ``(S, N, N)``."""
        n = self.num_tasks
        if not self.history:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, n, n)
        steps = torch.tensor([s for s, _ in self.history], dtype=torch.long)
        mats = torch.stack([m for _, m in self.history])
        return steps, mats

    def load_history(self, steps: Tensor, mats: Tensor) -> None:
        """Restore a history saved with :meth:`history_tensor` (resume from a checkpoint)."""
        n = self.num_tasks
        if steps.dim() != 1 or mats.shape != (steps.shape[0], n, n):
            raise ValueError(
                f"expected steps (S,) and mats (S, {n}, {n}), got {tuple(steps.shape)} and "
                f"{tuple(mats.shape)}"
            )
        self.history = [(int(s), m.detach().cpu().clone()) for s, m in zip(steps, mats)]
        diffs = (steps[1:] - steps[:-1]) // self.every  # in updates (history labels are steps)
        if diffs.numel() and int(diffs.min()) > self.history_every:
            self._every = int(diffs.min())
        else:
            self._every = self.history_every

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, kappa={self.kappa}, sign={self.sign:+.0f}, "
            f"every={self.every}, enabled={self.enabled}, updates={int(self.num_updates)}, "
            f"history={len(self.history)}/{self.history_max} every {self._every}"
        )


def uniform_affinity(num_tasks: int) -> Tensor:
    """The TROA-off / initial affinity: ``(N, N)`` with every entry ``1/N``."""
    return torch.full((num_tasks, num_tasks), 1.0 / num_tasks)


def row_entropy(omega: Tensor) -> Tensor:
    """Entropy of each row ``(N,)`` in nats; ``log N`` for uniform, 0 for one-hot."""
    p = omega.clamp_min(OMEGA_FLOOR)
    return -(p * p.log()).sum(dim=1)


__all__ = [
    "GRAD_NORM_EPS",
    "OMEGA_FLOOR",
    "TROA",
    "affinity_loss_weights",
    "affinity_weighted_objective",
    "gradient_cosine_similarity",
    "mirror_descent_update",
    "row_entropy",
    "uniform_affinity",
]
