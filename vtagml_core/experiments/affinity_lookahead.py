"""Lookahead affinity (piece (b) of :mod:`.affinity`): does a step on task n's loss help task t?

**Lookahead affinity** (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
Learning", NeurIPS 2021): one SGD step on task n's loss over the *shared* parameters (the
adapters), and how much task t's loss on the same batch drops,

    ``Z[t, n] = 1 - L_t(theta_s - lr * grad_{theta_s} L_n) / L_t(theta_s)``,

measured every ``lookahead_every`` steps during the all-task training run
(:class:`LookaheadTrainer`) and averaged over training. The weights are restored after each
lookahead and the optimizer is never called, so the run's numbers are those of a plain run.

**The step.** Fifty et al. write a plain SGD step at the training learning rate. The kit trains
with Adam, whose steps are normalised by the running gradient RMS; an SGD step of Adam's
learning rate on the raw gradient is then so small that the losses move by less than float32
resolves (measured, quick preset: |Z| ~ 1e-6, mostly exact zeros). So the default lookahead
step is the Adam-shaped one, ``theta_s - lr * grad L_n / (sqrt(v_hat) + eps)`` with the
optimizer's current second moments ``v_hat`` (read, never written), i.e. the step the
optimizer would take if task n's gradient were the whole update (without momentum);
``lookahead_step="sgd"`` is the formula as printed.

Matrices are indexed ``[target t, source n]``, like omega's rows (:mod:`.affinity`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from vtagml_core.train.logging import read_log
from vtagml_core.train.step import move_batch
from vtagml_core.train.trainer import Trainer

#: ``kind`` of the lookahead records in a run's ``log.jsonl``.
LOOKAHEAD_KIND: str = "lookahead"
#: Default optimizer steps between two lookahead measurements (the quick preset trains 640).
DEFAULT_LOOKAHEAD_EVERY: int = 10
#: Lookahead steps: Adam-shaped (default, see the module docstring) or Fifty et al.'s plain SGD.
LOOKAHEAD_STEPS: tuple[str, ...] = ("adam", "sgd")
DEFAULT_LOOKAHEAD_STEP: str = "adam"
#: Loss below which a task's lookahead ratio is not defined (a batch without a valid pixel).
LOSS_EPS: float = 1e-12


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters every task shares: VTAGML's adapter stack.

    Raises:
        ValueError: the model has no trainable adapter (nothing shared to look ahead on).
    """
    adapter = getattr(model, "adapter", None)
    params = [p for p in adapter.parameters() if p.requires_grad] if adapter is not None else []
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable shared adapter; the lookahead "
                         "affinity needs shared parameters (pass params=... explicitly)")
    return params


def lookahead_affinity(model: nn.Module, batch: dict, loss_fn: Callable[[dict, dict], tuple],
                       lr: float, *, tasks: Sequence[str] | None = None,
                       params: Sequence[nn.Parameter] | None = None, features: Any = None,
                       precondition: Sequence[Tensor] | None = None) -> Tensor:
    """Fifty et al.'s lookahead affinity on one batch: ``Z[t, n]``, ``(N, N)`` float64.

    ``Z[t, n] = 1 - L_t(theta_s - lr * grad_{theta_s} L_n / d) / L_t(theta_s)``: positive when one
    step on task n's loss, over the shared parameters ``theta_s`` only, lowers task t's loss.
    ``d = 1`` is the SGD step of the paper; ``precondition`` gives a per-parameter ``d`` (e.g.
    Adam's ``sqrt(v_hat) + eps``, see the module docstring).

    Args:
        model: called as ``model(batch["image"], features=features)`` (``features`` only when
            given); the forward must not draw random numbers (VTAGML's does not).
        batch: the batch, on the model's device.
        loss_fn: ``(outputs, batch) -> (total, {task: L_task})`` (a trainer's compute_losses).
        lr: the lookahead step size (Fifty et al.: the training learning rate).
        tasks: the tasks, in the matrix order (default ``model.tasks``).
        params: the shared parameters (default :func:`shared_parameters`).
        precondition: one positive tensor per parameter (its shape), dividing the gradient;
            None = plain SGD.

    Every parameter is restored bit for bit before returning (also on an error); no ``.grad``
    and no optimizer state is touched (gradients come from :func:`torch.autograd.grad`).
    """
    tasks = list(tasks if tasks is not None else model.tasks)
    params = list(params if params is not None else shared_parameters(model))
    divisors: list[Tensor | None] = [None] * len(params) if precondition is None else list(precondition)
    if len(divisors) != len(params):
        raise ValueError(f"precondition needs one tensor per shared parameter ({len(params)}), "
                         f"got {len(divisors)}")

    def losses() -> dict[str, Tensor]:
        out = model(batch["image"]) if features is None else model(batch["image"], features=features)
        return loss_fn(out, batch)[1]

    before = losses()
    base = torch.stack([before[t].detach().double() for t in tasks])           # L_t(theta), (N,)
    grads = [torch.autograd.grad(before[n], params, retain_graph=True, allow_unused=True)
             for n in tasks]                                                   # grad L_n per n
    del before
    saved = [p.detach().clone() for p in params]
    z = torch.zeros(len(tasks), len(tasks), dtype=torch.float64)
    try:
        for j, grad in enumerate(grads):
            with torch.no_grad():
                for p, g, d in zip(params, grad, divisors):
                    if g is not None:
                        p.sub_(lr * (g if d is None else g / d))               # theta_s - lr grad L_n / d
                after = losses()
                moved = torch.stack([after[t].detach().double() for t in tasks])   # L_t(theta')
            ok = base.abs() > LOSS_EPS
            z[:, j] = torch.where(ok, 1.0 - moved / base.clamp_min(LOSS_EPS), torch.zeros_like(base)).cpu()
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return z


class LookaheadTrainer(Trainer):
    """The trainer, plus the lookahead affinity every ``lookahead_every`` steps (module docstring).

    Before optimizer step i (0-based) with ``i % lookahead_every == 0`` it measures
    :func:`lookahead_affinity` on that step's batch at the current weights and logs
    ``{"kind": "lookahead", "step": i + 1, "lr": ..., "lookahead": Z}``; then the step runs as
    usual. The measurement restores every weight, reads (never writes) the optimizer's state and
    draws no random number, so losses, omega and checkpoints are those of the plain trainer, and
    resume is exact (a resumed step measures again; the log keeps records up to the saved step).

    Args:
        lookahead_every: steps between measurements (>= 1).
        lookahead_lr: lookahead step size; None = the learning rate of the step (a step whose
            learning rate is 0 is not measured).
        lookahead_step: ``"adam"`` (default: divided by Adam's current ``sqrt(v_hat) + eps``;
            the first step, before Adam has any statistics, is not measured) or ``"sgd"``.
        (the rest as :class:`~vtagml_core.train.trainer.Trainer`)
    """

    def __init__(self, *args: Any, lookahead_every: int = DEFAULT_LOOKAHEAD_EVERY,
                 lookahead_lr: float | None = None, lookahead_step: str = DEFAULT_LOOKAHEAD_STEP,
                 **kwargs: Any) -> None:
        if lookahead_every < 1:
            raise ValueError(f"lookahead_every must be >= 1 steps, got {lookahead_every}")
        if lookahead_lr is not None and not lookahead_lr > 0:
            raise ValueError(f"lookahead_lr must be > 0 (or None: the training lr), got {lookahead_lr}")
        if lookahead_step not in LOOKAHEAD_STEPS:
            raise ValueError(f"lookahead_step must be one of {LOOKAHEAD_STEPS}, got {lookahead_step!r}")
        self.lookahead_every, self.lookahead_lr = int(lookahead_every), lookahead_lr
        self.lookahead_step = lookahead_step
        super().__init__(*args, **kwargs)

    def adam_denominators(self, params: Sequence[nn.Parameter]) -> list[Tensor] | None:
        """Adam's ``sqrt(v_hat) + eps`` of each parameter, read from the optimizer; None before
        its first step (no second moments yet)."""
        group = self.optimizer.param_groups[0]
        beta2, eps = group["betas"][1], group["eps"]
        out = []
        for p in params:
            state = self.optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                return None
            bias = 1.0 - beta2 ** float(state["step"])                  # Adam's bias correction
            out.append((state["exp_avg_sq"] / bias).sqrt() + eps)       # sqrt(v_hat) + eps
        return out

    def training_step(self, batch: dict) -> dict[str, Any]:
        step = self.progress.global_step
        batch = move_batch(batch, self.device)
        lr = self.lookahead_lr if self.lookahead_lr is not None else self.scheduler.get_last_lr()[0]
        if step % self.lookahead_every == 0 and lr > 0:
            params = shared_parameters(self.model)
            denominators = self.adam_denominators(params) if self.lookahead_step == "adam" else None
            if self.lookahead_step == "sgd" or denominators is not None:
                with self.autocast():
                    z = lookahead_affinity(self.model, batch, self.compute_losses, lr, tasks=self.tasks,
                                           params=params, features=self.features(batch),
                                           precondition=denominators)
                self.logger.log({"kind": LOOKAHEAD_KIND, "step": step + 1, "lr": lr,
                                 "lookahead": z.tolist()})
        return super().training_step(batch)


def logged_lookahead(log_path: str | Path) -> Tensor:
    """``(R, N, N)`` lookahead matrices of a :class:`LookaheadTrainer` run's log (float64)."""
    mats = [r["lookahead"] for r in read_log(log_path, LOOKAHEAD_KIND)]
    if not mats:
        raise ValueError(f"{log_path} has no lookahead records: the run was not trained by "
                         "LookaheadTrainer (run the affinity command, it trains its own run)")
    return torch.tensor(mats, dtype=torch.float64)


__all__ = ["DEFAULT_LOOKAHEAD_EVERY", "DEFAULT_LOOKAHEAD_STEP", "LOOKAHEAD_KIND", "LOOKAHEAD_STEPS",
           "LOSS_EPS", "LookaheadTrainer", "logged_lookahead", "lookahead_affinity",
           "shared_parameters"]
