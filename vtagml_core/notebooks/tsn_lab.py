"""TSN experiments for notebook 04 (paper Sec. 3.2.3, Eq. 4).

* :func:`layernorm_gap`: TSN as the kit builds it starts as the backbone's LayerNorm (FiLM
  maps at zero); the gap to ``nn.LayerNorm`` on random input is ~1e-7.
* :func:`task_scales`: the effective per-task scale ``gamma' * (1 + g(omega~_t))`` and shift
  ``beta' + b(omega~_t)`` of every adapter layer of a model, averaged over tokens, channels
  and images (read from the model's own TSN modules with forward hooks).
* :func:`scale_experiment`: why TSN "balances the task scales". Two tasks share features and
  a readout; their targets are the same signal at different scales (think depth in metres
  and normals in [-1, 1]). A fixed, task-blind LayerNorm gives both tasks the same output, so
  the readout can only fit a compromise: the larger-scale task dominates the summed loss and
  the smaller one ends up far off. TSN, conditioned per task on ``omega~_t``, gives each task
  its own scale, and both fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtagml_core.model.tsn import LAYER_NORM_EPS, TaskScaledNorm

#: Defaults of the scale experiment: target scales, feature width, tokens, Adam steps and lr,
#: and the size of each task's code in omega~_t.
SCALE_TARGETS: tuple[float, ...] = (1.0, 10.0)
SCALE_DIM: int = 16
SCALE_TOKENS: int = 32
SCALE_STEPS: int = 200
SCALE_LR: float = 1e-2
TASK_CODE: float = 3.0
#: Record the per-task error every this many steps for the curves.
CURVE_EVERY: int = 5


def layernorm_gap(dim: int = SCALE_DIM, tokens: int = SCALE_TOKENS, seed: int = 0) -> float:
    """``max |TSN(a, omega~) - LayerNorm(a)|`` for a fresh TSN built from a random LayerNorm.

    The LayerNorm gets a random weight and bias (as a pretrained backbone's would be); the TSN
    takes them as gamma', beta' (Eq. 4). Any ``omega~`` gives the same output at init.
    """
    g = torch.Generator().manual_seed(seed)
    ln = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
    with torch.no_grad():
        ln.weight.copy_(1.0 + 0.5 * torch.randn(dim, generator=g))
        ln.bias.copy_(0.5 * torch.randn(dim, generator=g))
    tsn = TaskScaledNorm(dim, ln.weight, ln.bias)
    a = torch.randn(2, 3, tokens, dim, generator=g)
    omega_tilde = torch.randn(2, 3, tokens, dim, generator=g)
    with torch.no_grad():
        return float((tsn(a, omega_tilde) - ln(a)).abs().max())


@torch.no_grad()
def task_scales(model, images: Tensor) -> dict[str, Tensor]:
    """Per layer and task, TSN's mean effective scale and shift on ``images``.

    Returns:
        ``{"scale": (layers, T), "shift": (layers, T)}``: the mean over images, tokens and
        channels of ``|gamma' * (1 + g(omega~_t))|`` and of ``beta' + b(omega~_t)``. With TSN
        off (plain LayerNorm) every task gets the same values.
    """
    captured: list[tuple[TaskScaledNorm, Tensor, Tensor | None]] = []
    hooks = [layer.tsn.register_forward_hook(
        lambda mod, inputs, out: captured.append((mod, inputs[0], inputs[1])))
        for layer in model.adapter.layers]
    try:
        model.eval()
        model(images)
    finally:
        for h in hooks:
            h.remove()
    scales, shifts = [], []
    for mod, a, omega_tilde in captured:
        if mod.enabled:
            scale = mod.weight * (1.0 + mod.film_scale(omega_tilde))
            shift = mod.bias + mod.film_shift(omega_tilde)
        else:
            scale = mod.weight.expand_as(a)
            shift = mod.bias.expand_as(a)
        scales.append(scale.abs().mean(dim=(1, 2, 3)))  # (T,)
        shifts.append(shift.mean(dim=(1, 2, 3)))
    return {"scale": torch.stack(scales).cpu(), "shift": torch.stack(shifts).cpu()}


@dataclass
class ScaleExperiment:
    """Result of :func:`scale_experiment`.

    Attributes:
        target_scales: the scale of each task's target.
        steps: recorded step numbers ``(K,)``.
        errors: ``{"LayerNorm": (K, T), "TSN": (K, T)}`` relative error per task,
            ``|pred_t - y_t| / |y_t|``, over training.
        final: ``{"LayerNorm": (T,), "TSN": (T,)}`` the last errors.
    """

    target_scales: tuple[float, ...]
    steps: Tensor
    errors: dict[str, Tensor]

    @property
    def final(self) -> dict[str, Tensor]:
        return {k: v[-1] for k, v in self.errors.items()}


def _scale_run(tsn: bool, scales: tuple[float, ...], dim: int, tokens: int, steps: int,
               lr: float, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = len(scales)
    a = torch.randn(tokens, dim, generator=g)
    direction = torch.randn(dim, 1, generator=g) / dim ** 0.5
    signal = F.layer_norm(a, (dim,)) @ direction                      # (L, 1)
    targets = torch.stack([s * signal for s in scales])               # (T, L, 1)
    codes = torch.zeros(T, 1, dim)                                    # task t's code
    codes[torch.arange(T), 0, torch.arange(T) % dim] = TASK_CODE
    x = a.expand(T, tokens, dim)
    torch.manual_seed(seed)
    norm = TaskScaledNorm(dim, torch.ones(dim), torch.zeros(dim), enabled=tsn)
    head = nn.Linear(dim, 1)                                          # shared readout
    params = [p for p in [*norm.parameters(), *head.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    recorded, errors = [], []
    for step in range(steps + 1):
        pred = head(norm(x, x + codes))                               # omega~_t = a + code_t
        if step % CURVE_EVERY == 0 or step == steps:
            with torch.no_grad():
                err = (pred - targets).norm(dim=(1, 2)) / targets.norm(dim=(1, 2))
            recorded.append(step)
            errors.append(err)
        if step == steps:
            break
        loss = ((pred - targets) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.tensor(recorded), torch.stack(errors)


def scale_experiment(target_scales: tuple[float, ...] = SCALE_TARGETS, dim: int = SCALE_DIM,
                     tokens: int = SCALE_TOKENS, steps: int = SCALE_STEPS, lr: float = SCALE_LR,
                     seed: int = 0) -> ScaleExperiment:
    """Fit tasks with targets of different scales through a LayerNorm and through TSN.

    Both runs share the data, the seed, the readout and the optimiser; only the norm differs:
    ``TaskScaledNorm(enabled=False)`` (the fixed backbone LayerNorm, the TSN-off ablation)
    against ``TaskScaledNorm(enabled=True)`` conditioned on ``omega~_t = a + code_t``.

    Raises:
        ValueError: fewer than two tasks or a non-positive scale.
    """
    if len(target_scales) < 2 or min(target_scales) <= 0:
        raise ValueError(f"need at least two positive target scales, got {target_scales}")
    if len(target_scales) > dim:
        raise ValueError(f"at most dim={dim} tasks (one code channel each), got {len(target_scales)}")
    steps_ln, err_ln = _scale_run(False, target_scales, dim, tokens, steps, lr, seed)
    _, err_tsn = _scale_run(True, target_scales, dim, tokens, steps, lr, seed)
    return ScaleExperiment(tuple(target_scales), steps_ln, {"LayerNorm": err_ln, "TSN": err_tsn})


__all__ = ["ScaleExperiment", "layernorm_gap", "scale_experiment", "task_scales"]
