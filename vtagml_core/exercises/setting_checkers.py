"""Checkers of the course exercises in the settings notebooks (05 onwards).

Same contract as :mod:`.checkers` (notebooks 02-04): each checker runs the student's function
next to the library's own implementation on several random cases, names a known mistake with a
hint on the first difference, and says ``UNSOLVED`` while the stub is still there.

=========================  =============================================  =====================
checker                    the student writes                              reference
=========================  =============================================  =====================
check_delta_m              ``f(mtl, stl) -> delta_m in %`` (a number)      metrics.delta_m
check_discriminator_loss   ``f(source_logits, target_logits) -> loss``     train.adversarial
check_parameter_count      ``f(module) -> (total, trainable)``             model.params
check_paired_interval      ``f(a, b) -> (mean, low, high)`` over seeds     experiments.stats
=========================  =============================================  =====================
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtagml_core.experiments.stats import (paired_difference, t_quantile,
                                           unpaired_difference)
from vtagml_core.metrics.delta_m import delta_m
from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.model.params import count_parameters
from vtagml_core.tasks import TASKS
from vtagml_core.train.adversarial import SOURCE_LABEL, TARGET_LABEL, discriminator_losses

from .harness import Case, CheckResult, Exercise, Mistake, check_function

#: Results dicts of the delta_m exercise: ``{task: {metric: value}}``.
Results = dict[str, dict[str, float]]
#: A secondary metric per task in the delta_m cases (of the opposite direction where the task
#: has one), so that averaging every metric instead of the primary one is caught.
SECONDARY_METRICS: dict[str, str] = {"seg": "pixel_acc", "depth": "delta1", "normals": "within_30",
                                     "edges": "recall"}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------- delta_m (notebook 05)
def _metric_value(metric: str, g: torch.Generator) -> float:
    """A plausible value: fractions for accuracy-like metrics, errors of order 1 to 30."""
    u = float(torch.rand((), generator=g))
    return round(0.2 + 0.7 * u, 4) if not METRIC_DIRECTIONS.get(metric, False) else round(1 + 29 * u, 4)


def _results_pair(tasks: tuple[str, ...], g: torch.Generator) -> tuple[Results, Results]:
    mtl: Results = {}
    stl: Results = {}
    for task in tasks:
        metrics = [PRIMARY_METRICS[task], SECONDARY_METRICS[task]]
        stl[task] = {m: _metric_value(m, g) for m in metrics}
        # the multitask value: the single-task one moved by -30 % to +30 %
        mtl[task] = {m: round(v * (0.7 + 0.6 * float(torch.rand((), generator=g))), 4)
                     for m, v in stl[task].items()}
    return mtl, stl


def _delta_m_cases() -> list[Case]:
    cases = []
    for seed, tasks in enumerate([("seg", "depth"), ("seg", "depth", "normals"), TASKS,
                                  ("depth", "normals"), ("seg", "edges")]):
        mtl, stl = _results_pair(tasks, _gen(500 + seed))
        cases.append(Case((mtl, stl), f"tasks {'-'.join(tasks)}, seed {500 + seed}"))
    return cases


def _terms(mtl: Results, stl: Results, signed: bool = True, divide_by: str = "stl",
           relative: bool = True, every_metric: bool = False) -> list[float]:
    """delta_m's terms computed with one deliberate change (for the mistakes list)."""
    out = []
    for task in stl:
        for metric in (stl[task] if every_metric else [PRIMARY_METRICS[task]]):
            m, s = mtl[task][metric], stl[task][metric]
            sign = -1.0 if signed and METRIC_DIRECTIONS[metric] else 1.0
            base = {"stl": s, "mtl": m}[divide_by] if relative else 1.0
            out.append(sign * (m - s) / base * 100.0)
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def check_delta_m(student: Callable[[Results, Results], float]) -> CheckResult:
    """Check ``student(mtl, stl) -> delta_m`` in percent over each task's primary metric.

    ``mtl`` and ``stl`` are ``{task: {metric: value}}`` with the same tasks; the answer is
    :func:`vtagml_core.metrics.delta_m.delta_m` (a number; a 0-dim tensor is accepted too).
    """
    mistakes = [
        Mistake("the sign of lower-is-better metrics is not flipped", lambda m, s: _mean(_terms(m, s, signed=False)),
                "a lower depth RMSE or normals angle is an improvement: multiply those terms by -1 "
                "(METRIC_DIRECTIONS[metric] is True where lower is better)"),
        Mistake("every term has the wrong sign", lambda m, s: -delta_m(m, s),
                "positive must mean 'the multitask model is better': (M_mtl - M_stl), not "
                "(M_stl - M_mtl), for higher-is-better metrics"),
        Mistake("the result is a fraction, not a percentage", lambda m, s: delta_m(m, s) / 100.0,
                "delta_m is reported in percent: multiply the mean by 100"),
        Mistake("you summed the terms instead of averaging them", lambda m, s: sum(_terms(m, s)),
                "delta_m is the mean over the T tasks: divide the sum by the number of terms"),
        Mistake("you divided by the multitask value", lambda m, s: _mean(_terms(m, s, divide_by="mtl")),
                "the single-task model is the reference: divide by M_stl"),
        Mistake("the differences are not relative", lambda m, s: _mean(_terms(m, s, relative=False)),
                "divide each difference by the single-task value M_stl, so that metrics on "
                "different scales (an IoU, an RMSE) can be averaged"),
        Mistake("you averaged every metric, not each task's primary one",
                lambda m, s: _mean(_terms(m, s, every_metric=True)),
                "one term per task, on PRIMARY_METRICS[task] (mIoU, rmse, mean, odsF)"),
    ]
    return check_function(student, delta_m, _delta_m_cases(), "delta_m", mistakes,
                          shape_hint="delta_m is one number")


# ----------------------------------------------------------------------- UDA discriminator (07)
class _LogitsAsOutputs:
    """Stands in for :class:`~vtagml_core.train.adversarial.TaskDiscriminators` whose outputs
    are given: ``discriminator_losses`` of the library then computes the loss on them."""

    tasks = ("task",)

    def __call__(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return outputs


def _discriminator_reference(source_logits: Tensor, target_logits: Tensor) -> Tensor:
    """The library's discriminator loss on given logits (``discriminator_losses``)."""
    losses = discriminator_losses(_LogitsAsOutputs(), {"task": source_logits},  # type: ignore[arg-type]
                                  {"task": target_logits})
    return losses["task"]


def _bce(logits: Tensor, label: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.double(), torch.full_like(logits.double(), label))


def _discriminator_cases() -> list[Case]:
    cases = []
    for seed, (b_s, b_t, side, shift) in enumerate([(2, 2, 4, 0.0), (4, 4, 2, 1.5), (3, 1, 4, -1.0),
                                                     (2, 5, 1, 0.5)]):
        g = _gen(700 + seed)
        src = torch.randn(b_s, 1, side, side, generator=g) * 2 - shift
        tgt = torch.randn(b_t, 1, side, side, generator=g) * 2 + shift
        cases.append(Case((src, tgt), f"{b_s} source and {b_t} target maps of {side}x{side} logits, "
                                      f"seed {700 + seed}"))
    return cases


def check_discriminator_loss(student: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Check ``student(source_logits, target_logits) -> scalar`` (output-level UDA, notebook 07).

    Both arguments are ``(B, 1, h, w)`` patch logits of one task's discriminator; the answer is
    ``(BCE(source, SOURCE_LABEL) + BCE(target, TARGET_LABEL)) / 2`` with each BCE the mean over
    its patches, as :func:`vtagml_core.train.adversarial.discriminator_losses` (labels: source 0,
    target 1).
    """
    def pooled(s, t):
        logits = torch.cat([s.flatten(), t.flatten()])
        labels = torch.cat([torch.full_like(s.flatten(), SOURCE_LABEL), torch.full_like(t.flatten(), TARGET_LABEL)])
        return F.binary_cross_entropy_with_logits(logits.double(), labels.double())

    mistakes = [
        Mistake("the labels are swapped (source 1, target 0)",
                lambda s, t: 0.5 * (_bce(s, TARGET_LABEL) + _bce(t, SOURCE_LABEL)),
                f"the kit labels source outputs {SOURCE_LABEL:g} and target outputs {TARGET_LABEL:g} "
                "(SOURCE_LABEL, TARGET_LABEL in vtagml_core.train.adversarial)"),
        Mistake("the two terms are added, not averaged",
                lambda s, t: _bce(s, SOURCE_LABEL) + _bce(t, TARGET_LABEL),
                "divide the sum by 2, so that a discriminator at chance sits at ln 2"),
        Mistake("this is the generator's (adversarial) loss: only the target term, labelled source",
                lambda s, t: _bce(t, SOURCE_LABEL),
                "the discriminator learns to tell both apart: source maps labelled source, target "
                "maps labelled target"),
        Mistake("only the target term is there", lambda s, t: 0.5 * _bce(t, TARGET_LABEL),
                "add the source term BCE(D(source), source label)"),
        Mistake("you averaged over all patches of both batches together", pooled,
                "average each domain's BCE over its own patches, then the two domains: "
                "(BCE_source + BCE_target) / 2, which weighs the domains equally when the batches "
                "differ in size"),
        Mistake("the sigmoid is missing or applied twice",
                lambda s, t: 0.5 * (_bce(torch.sigmoid(s), SOURCE_LABEL) + _bce(torch.sigmoid(t), TARGET_LABEL)),
                "the arguments are logits: use F.binary_cross_entropy_with_logits on them directly"),
    ]
    return check_function(student, _discriminator_reference, _discriminator_cases(),
                          "UDA discriminator loss", mistakes,
                          shape_hint="the loss is one number: a 0-dim tensor (take the means)")


# ----------------------------------------------------------------------- parameter count (09)
class _TiedHead(nn.Module):
    """An embedding and an output layer sharing one weight tensor, and a BatchNorm (buffers)."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.BatchNorm1d(dim)
        self.out = nn.Linear(dim, vocab, bias=True)
        self.out.weight = self.embed.weight  # tied: one tensor, two names


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False)


def _parameter_cases() -> list[Case]:
    # only the sizes matter; building the modules must not move the notebook's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(900)
        backbone_and_adapter = nn.ModuleDict({
            "backbone": _frozen(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3))),
            "adapter": nn.Sequential(nn.Linear(8, 4), nn.GELU(), nn.Linear(4, 8)),
            "head": nn.Linear(8, 2)})
        return [
            Case((nn.Linear(4, 3),), "nn.Linear(4, 3), all trainable"),
            Case((nn.Sequential(_frozen(nn.Linear(8, 8)), nn.LayerNorm(8), nn.Linear(8, 2)),),
                 "a Sequential whose first Linear is frozen"),
            Case((backbone_and_adapter,),
                 "a frozen conv backbone (with BatchNorm buffers), an adapter and a head"),
            Case((_TiedHead(10, 6),), "an embedding whose weight is shared with the output layer"),
        ]


def check_parameter_count(student: Callable[[nn.Module], tuple[int, int]]) -> CheckResult:
    """Check ``student(module) -> (total, trainable)`` parameter counts (notebook 09).

    The answer is :func:`vtagml_core.model.params.count_parameters`: the number of elements of
    every distinct parameter tensor, and of those with ``requires_grad``; buffers (BatchNorm's
    running statistics) are not parameters, and a tensor shared by two layers counts once.
    """
    def counts(params: list[nn.Parameter]) -> tuple[int, int]:
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def nested(m: nn.Module) -> tuple[int, int]:
        return counts([p for sub in m.modules() for p in sub.parameters()])

    mistakes = [
        Mistake("you counted parameter tensors, not their elements",
                lambda m: (len(list(m.parameters())), sum(p.requires_grad for p in m.parameters())),
                "add up p.numel() for each parameter p: a (3, 4) weight is 12 parameters"),
        Mistake("frozen parameters are counted as trainable",
                lambda m: (count_parameters(m)[0],) * 2,
                "count a parameter as trainable only where p.requires_grad is True (a frozen "
                "backbone has requires_grad False)"),
        Mistake("the second number counts the frozen parameters",
                lambda m: (count_parameters(m)[0], count_parameters(m)[0] - count_parameters(m)[1]),
                "trainable parameters are those with p.requires_grad True"),
        Mistake("nested modules' parameters are counted again at every level", nested,
                "module.parameters() already walks every submodule: call it once on the module"),
        Mistake("a tensor shared by two layers is counted twice",
                lambda m: counts([p for _, p in m.named_parameters(remove_duplicate=False)]),
                "parameters() yields each tensor once (or keep a set of id(p)): a tied weight "
                "is stored once"),
        Mistake("you counted the state_dict, which holds buffers too",
                lambda m: (sum(v.numel() for v in m.state_dict().values()), count_parameters(m)[1]),
                "buffers (BatchNorm's running mean and variance) are not parameters: use "
                "module.parameters()"),
    ]
    return check_function(student, count_parameters, _parameter_cases(), "parameter count",
                          mistakes, shape_hint="return two numbers: (total, trainable)")


# ----------------------------------------------------------------------- paired interval (10)
#: Two-sided 95 % quantile of the normal distribution (the large-sample shortcut).
NORMAL_QUANTILE_95: float = 1.959964


def _paired_reference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the per-seed differences a_i - b_i, 95 % Student-t interval."""
    iv = paired_difference(a, b)
    return iv.mean, iv.low, iv.high


def _paired_cases() -> list[Case]:
    cases = []
    for seed, n in enumerate([2, 3, 5, 4]):
        g = _gen(1000 + seed)
        # a seed effect shared by both methods: pairing removes it, an unpaired interval does not
        shared = torch.randn(n, generator=g) * 3.0
        a = [round(float(v), 4) for v in shared + 1.0 + 0.5 * torch.randn(n, generator=g)]
        b = [round(float(v), 4) for v in shared + 0.5 * torch.randn(n, generator=g)]
        cases.append(Case((a, b), f"{n} seeds, seed {1000 + seed}"))
    return cases


def _interval(diffs: Sequence[float], quantile: float, ddof: int = 1,
              per_seed: bool = False) -> tuple[float, float, float]:
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - ddof))
    half = quantile * std / (1.0 if per_seed else math.sqrt(n))
    return mean, mean - half, mean + half


def check_paired_interval(student: Callable[[list[float], list[float]], Sequence[float]]) -> CheckResult:
    """Check ``student(a, b) -> (mean, low, high)``: the 95 % interval of the paired differences.

    ``a[i]`` and ``b[i]`` are two methods' values with seed ``i``; the answer is
    :func:`vtagml_core.experiments.stats.paired_difference` (Student t, ``n - 1`` degrees of
    freedom, sample standard deviation).
    """
    def diffs(a, b):
        return [x - y for x, y in zip(a, b)]

    def unpaired(a, b):
        iv = unpaired_difference(a, b)
        return iv.mean, iv.low, iv.high

    mistakes = [
        Mistake("you treated the two methods as independent samples (an unpaired interval)", unpaired,
                "the values are paired by seed: take the differences a_i - b_i first, then the "
                "interval of their mean; the seed's shared effect cancels"),
        Mistake("the difference is the wrong way round (b - a)",
                lambda a, b: _paired_reference(b, a),
                "the difference is a - b: the first method minus the second"),
        Mistake("you used the normal quantile 1.96 instead of Student's t",
                lambda a, b: _interval(diffs(a, b), NORMAL_QUANTILE_95),
                "with a handful of seeds the interval uses t_quantile(n), the Student-t quantile "
                "with n - 1 degrees of freedom (12.7 for 2 seeds, not 1.96)"),
        Mistake("the t quantile has n degrees of freedom, not n - 1",
                lambda a, b: _interval(diffs(a, b), t_quantile(len(a) + 1)),
                "t_quantile(n) already uses n - 1 degrees of freedom: pass the number of seeds"),
        Mistake("you used the population standard deviation (divided by n)",
                lambda a, b: _interval(diffs(a, b), t_quantile(len(a)), ddof=0),
                "the sample standard deviation divides by n - 1 (torch.std's default, "
                "statistics.stdev)"),
        Mistake("the half-width uses the standard deviation, not the standard error",
                lambda a, b: _interval(diffs(a, b), t_quantile(len(a)), per_seed=True),
                "the interval is about the mean of n differences: divide the standard deviation "
                "by sqrt(n)"),
    ]
    return check_function(student, _paired_reference, _paired_cases(),
                          "paired difference and its interval", mistakes,
                          shape_hint="return three numbers: (mean, low, high)")


#: The settings notebooks' exercises, merged into :data:`.checkers.EXERCISES`.
SETTING_EXERCISES: dict[str, Exercise] = {
    "delta_m": Exercise(check_delta_m, delta_m, "delta_m", _delta_m_cases),
    "discriminator_loss": Exercise(check_discriminator_loss, _discriminator_reference,
                                   "UDA discriminator loss", _discriminator_cases),
    "parameter_count": Exercise(check_parameter_count, count_parameters, "parameter count",
                                _parameter_cases),
    "paired_interval": Exercise(check_paired_interval, _paired_reference,
                                "paired difference and its interval", _paired_cases),
}

__all__ = ["SETTING_EXERCISES", "check_delta_m", "check_discriminator_loss", "check_paired_interval",
           "check_parameter_count"]
