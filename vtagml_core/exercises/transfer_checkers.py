"""Checkers of the transfer notebooks' exercises: zero-shot transfer (06) and novel domains (08).

Same contract as :mod:`.checkers`: the student's function runs next to the library's on several
cases, a known mistake is named with a hint, ``UNSOLVED`` while the stub is there.

==========================  ==============================================  =========================
checker                     the student writes                              reference
==========================  ==============================================  =========================
check_fine_tuned_parameters ``f(model, labelled_tasks, zero_shot_task)``    experiments.settings.
                            -> the set of parameter names fine-tuning        zero_shot.
                            can change                                      fine_tuned_parameters
check_corruption_error      ``f(values, baseline, lower_is_better)`` -> CE  metrics.robustness.
                            in % over severities (or shifted domains)       corruption_error
==========================  ==============================================  =========================
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from vtagml_core.baselines.registry import build_model
from vtagml_core.experiments.settings.zero_shot import fine_tuned_parameters, split_zero_shot
from vtagml_core.metrics.robustness import PERCENT, as_errors, corruption_error
from vtagml_core.train.config import load_kit_config

from .harness import Case, CheckResult, Exercise, Mistake, check_function

# ------------------------------------------------------- the zero-shot protocol's parts (06)
#: (method, task set) of the models the fine-tuned-parameters checker is run on: the last task
#: of each set is the zero-shot one. Built from the smoke preset (small, built in ~0.1 s).
ZERO_SHOT_MODELS: tuple[tuple[str, str], ...] = (("vtagml", "S-D"), ("vtagml", "S-D-N"),
                                                 ("vtagml", "S-D-N-E"), ("vanilla_mtl", "S-D-N"))
#: The preset whose model sizes the cases use.
CASE_PRESET: str = "smoke"


@functools.lru_cache(maxsize=1)
def _zero_shot_models() -> tuple[tuple[str, str, nn.Module], ...]:
    # only the structure matters; building them must not move the notebook's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(600)
        return tuple((method, g, build_model(method, load_kit_config(
            preset=CASE_PRESET, overrides=[f"model.tasks={g}"]).model)) for method, g in ZERO_SHOT_MODELS)


def _zero_shot_cases() -> list[Case]:
    cases = []
    for method, g, model in _zero_shot_models():
        labelled, zero = split_zero_shot(g)
        cases.append(Case((model, labelled, zero), f"{method} {g} ({CASE_PRESET} sizes), zero-shot task {zero}"))
    return cases


def _fine_tuned_reference(model: nn.Module, labelled_tasks: tuple[str, ...], zero_shot_task: str) -> set[str]:
    return fine_tuned_parameters(model, labelled_tasks)


def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _name_mask(answer: Any, case: Case) -> Tensor:
    """A set of parameter names -> a 0/1 mask over ``model.named_parameters()``."""
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Iterable):
        raise TypeError(f"returned {type(answer).__name__}, expected a set of parameter names")
    chosen = set(answer)
    if not all(isinstance(n, str) for n in chosen):
        raise TypeError("expected parameter names (strings, as model.named_parameters() gives them)")
    names = _names(case.args[0])
    unknown = sorted(chosen - set(names))
    if unknown:
        raise ValueError(f"{len(unknown)} name(s) are not parameters of the model, e.g. {unknown[0]!r}")
    return torch.tensor([n in chosen for n in names], dtype=torch.float64)


def _name_difference(out: Tensor, case: Case) -> str:
    """On a mismatch no known mistake explains: the first parameter too many or too few."""
    model, labelled, zero = case.args
    expected = fine_tuned_parameters(model, labelled)
    chosen = {n for n, v in zip(_names(model), out.tolist()) if v}
    extra, missing = sorted(chosen - expected), sorted(expected - chosen)
    if extra:
        why = "it is frozen" if extra[0] not in _trainable(model) else "no labelled task's loss reaches it"
        return f"your set includes {extra[0]!r} ({len(extra)} too many), but {why}"
    return (f"your set misses {missing[0]!r} ({len(missing)} too few): it is trainable and the "
            f"labelled tasks' loss reaches it")


def _task_parts(names: Iterable[str], task: str) -> set[str]:
    """The names under a task's own decoder or head (``decoder.decoders.<task>.``, ``decoder.heads.<task>.``)."""
    return {n for n in names if f".{task}." in n}


def check_fine_tuned_parameters(student: Callable[[nn.Module, tuple[str, ...], str], Iterable[str]]) -> CheckResult:
    """Check ``student(model, labelled_tasks, zero_shot_task) -> set of parameter names`` (notebook 06).

    The answer is :func:`vtagml_core.experiments.settings.zero_shot.fine_tuned_parameters`: the
    trainable parameters that the labelled tasks' outputs depend on. The frozen backbone and the
    zero-shot task's own decoder and head stay as they are; everything shared is fine-tuned.
    """
    def trainable_but(model, drop):
        return _trainable(model) - drop

    mistakes = [
        Mistake("the frozen backbone is in your set",
                lambda m, lab, zero: set(_names(m)) - (_trainable(m) - fine_tuned_parameters(m, lab)),
                "the backbone's parameters have requires_grad False: the optimizer never changes "
                "them; keep only parameters p with p.requires_grad"),
        Mistake("the zero-shot task's decoder and head are in your set",
                lambda m, lab, zero: _trainable(m),
                "the zero-shot task's loss is not in the total, and no labelled task's output "
                "passes through its decoder or head: they get no gradient"),
        Mistake("you left out the zero-shot task's head but kept its decoder",
                lambda m, lab, zero: trainable_but(m, {n for n in _task_parts(_names(m), zero) if ".heads." in n}),
                "the zero-shot task's decoder feeds only its own head: no labelled loss reaches it either"),
        Mistake("you kept only the labelled tasks' decoders and heads",
                lambda m, lab, zero: set().union(*(_task_parts(fine_tuned_parameters(m, lab), t) for t in lab)),
                "the adapters (and the shared image path) are shared by every task: the labelled "
                "tasks' losses reach them, so fine-tuning changes them, and through them the "
                "zero-shot task's predictions"),
        Mistake("your set holds the parts that stay fixed, not the ones fine-tuning changes",
                lambda m, lab, zero: set(_names(m)) - fine_tuned_parameters(m, lab),
                "return the names of the parameters that DO change"),
    ]
    return check_function(student, _fine_tuned_reference, _zero_shot_cases(),
                          "fine-tuned parameters of zero-shot transfer", mistakes,
                          shape_hint="return a set of names from model.named_parameters()",
                          extra_checks=[_name_difference], encode=_name_mask)


# ------------------------------------------------------------- corruption error (08)
#: Severities per case (the graded shift's five levels).
N_SEVERITIES: int = 5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _severity_values(g: torch.Generator, lower_is_better: bool, worsening: float) -> list[float]:
    """Plausible metric values over five growing severities: errors grow, fractions shrink."""
    steps = torch.cumsum(torch.rand(N_SEVERITIES, generator=g) * worsening, 0)
    if lower_is_better:  # e.g. depth RMSE or normals' angle: from 1-20 upwards
        start = 1.0 + 19.0 * float(torch.rand((), generator=g))
        return [round(start * (1.0 + float(s)), 4) for s in steps]
    start = 0.5 + 0.4 * float(torch.rand((), generator=g))  # e.g. mIoU from 0.5-0.9 downwards
    return [round(max(0.01, start * (1.0 - 0.15 * float(s))), 4) for s in steps]


def _corruption_cases() -> list[Case]:
    cases = []
    for seed, lower in enumerate([True, False, True, False]):
        g = _gen(800 + seed)
        model = _severity_values(g, lower, 0.3 + 0.4 * seed / 3)
        baseline = _severity_values(g, lower, 0.5)
        kind = "lower-is-better (an error)" if lower else "higher-is-better (a fraction)"
        cases.append(Case((model, baseline, lower), f"{N_SEVERITIES} severities, {kind} metric, seed {800 + seed}"))
    return cases


def check_corruption_error(student: Callable[[list[float], list[float], bool], float]) -> CheckResult:
    """Check ``student(values, baseline, lower_is_better) -> CE in %`` (notebook 08).

    The answer is :func:`vtagml_core.metrics.robustness.corruption_error`:
    ``100 * sum_s E_s / sum_s E_s^baseline`` with ``E = value`` for a lower-is-better metric and
    ``E = 1 - value`` for a higher-is-better fraction.
    """
    def ratio_of_sums(values, baseline, lower, as_error=True):
        errors = as_errors(values, lower) if as_error else list(values)
        base = as_errors(baseline, lower) if as_error else list(baseline)
        return PERCENT * sum(errors) / sum(base)

    def mean_of_ratios(values, baseline, lower):
        pairs = list(zip(as_errors(values, lower), as_errors(baseline, lower)))
        return PERCENT * sum(e / b for e, b in pairs) / len(pairs)

    mistakes = [
        Mistake("a higher-is-better metric was used as an error",
                lambda v, b, lower: ratio_of_sums(v, b, lower, as_error=lower),
                "for mIoU or odsF (higher is better) the error is 1 - value; only lower-is-better "
                "metrics are errors as they are"),
        Mistake("you averaged the per-severity ratios",
                mean_of_ratios,
                "sum the errors over the severities first, then divide the two sums: the "
                "baseline's error weighs each severity"),
        Mistake("the ratio is the wrong way round (baseline / model)",
                lambda v, b, lower: PERCENT ** 2 / corruption_error(v, b, lower),
                "divide the model's summed error by the baseline's: below 100 % means fewer errors "
                "than the baseline"),
        Mistake("a fraction, not a percentage",
                lambda v, b, lower: corruption_error(v, b, lower) / PERCENT,
                "multiply by 100: the corruption error is given in % of the baseline's error"),
    ]
    return check_function(student, corruption_error, _corruption_cases(), "corruption error", mistakes,
                          shape_hint="return one number: the corruption error in %")


#: The transfer notebooks' exercises, merged into :data:`.checkers.EXERCISES`.
TRANSFER_EXERCISES: dict[str, Exercise] = {
    "fine_tuned_parameters": Exercise(check_fine_tuned_parameters, _fine_tuned_reference,
                                      "fine-tuned parameters of zero-shot transfer", _zero_shot_cases),
    "corruption_error": Exercise(check_corruption_error, corruption_error, "corruption error",
                                 _corruption_cases),
}

__all__ = ["TRANSFER_EXERCISES", "check_corruption_error", "check_fine_tuned_parameters"]
