"""Loss-balancing strategies, plug-ins of the trainer (issue 7, item 4).

==============  ==================================================  ===========================
name            rule                                                module
==============  ==================================================  ===========================
``equal``       total = sum_t L_t (the paper's linear combination)  :mod:`.base`
``uncertainty`` exp(-s_t) L_t + s_t, s_t learned (Kendall 2018)     :mod:`.weighting`
``dwa``         weights from epoch loss ratios (Liu 2019)           :mod:`.weighting`
``gradnorm``    weights equalise gradient norms (Chen 2018)         :mod:`.gradnorm`
``pcgrad``      project conflicting gradients (Yu 2020)             :mod:`.gradient`
``cagrad``      worst-task-improving update near g0 (Liu 2021)      :mod:`.gradient`
==============  ==================================================  ===========================

``build_balancer("pcgrad", ("seg", "depth"))``; in a config: ``train.balancer=dwa`` and
``train.balancer_options={temperature: 2.0}``. How the trainer calls them, and why TROA keeps
working with every one of them: :mod:`.base`.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from .base import Balancer, TaskGradients, per_task_backward
from .gradient import CAGrad, PCGrad, cagrad_direction, pcgrad_project
from .gradnorm import GradNorm, gradnorm_weight_step
from .weighting import DynamicWeightAverage, UncertaintyWeighting

#: name -> balancer class (constructor: ``(tasks, **options)``).
BALANCERS: dict[str, type[Balancer]] = {
    "equal": Balancer,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
}


def balancer_options(name: str) -> list[str]:
    """The options (keyword arguments besides ``tasks``) balancer ``name`` accepts."""
    params = inspect.signature(BALANCERS[name].__init__).parameters
    return [p for p in params if p not in ("self", "tasks")]


def build_balancer(name: str, tasks: str | Sequence[str], **options: Any) -> Balancer:
    """The balancer ``name`` for ``tasks``; unknown names or options raise listing the valid ones."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; valid: {', '.join(BALANCERS)}")
    valid = balancer_options(name)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"balancer {name!r} has no option(s) {bad}; its options: "
                         f"{', '.join(valid) or 'none'} (set them with train.balancer_options)")
    return BALANCERS[name](tasks, **options)


__all__ = ["BALANCERS", "Balancer", "CAGrad", "DynamicWeightAverage", "GradNorm", "PCGrad",
           "TaskGradients", "UncertaintyWeighting", "balancer_options", "build_balancer",
           "cagrad_direction", "gradnorm_weight_step", "pcgrad_project", "per_task_backward"]
