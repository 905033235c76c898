"""How a checker judges a student's function (issue 5, item 3).

A checker runs the student's function and the library's reference on several random cases
(different shapes and seeds). On the first case where they differ it compares the student's
output with a list of *known mistakes* -- the reference computed the wrong way in one specific
respect (forgot a normalisation, flipped a sign, normalised the wrong axis, ...) -- and, if
one matches, says which mistake it was and gives a hint. Otherwise it reports where and by how
much the output differs.

The result is a :class:`CheckResult`: ``passed``, a ``message`` and a ``hint``; it prints as
one line (``PASS: ...`` or ``FAIL: ...`` plus the hint) so a notebook cell can end with it.
A function that still raises ``NotImplementedError`` (the student version's stub) gets an
``UNSOLVED`` result instead of a traceback. The exercise cell wraps the student's function with
:func:`reference_fallback` (through :func:`vtagml_core.exercises.exercise`), so that until the
answer is written the cells further down run with the reference solution and print
:data:`FALLBACK_NOTE`: a student notebook runs top to bottom.

Every result prints as one line that starts with its :attr:`CheckResult.status` in capitals
(``PASS``, ``FAIL`` or ``UNSOLVED``) followed by the exercise's name: the headless runner reads
these lines back from the executed notebook (:data:`RESULT_LINE`).
"""
from __future__ import annotations

import copy
import functools
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

#: Default tolerances of the comparison (float64 reference vs the student's output).
ATOL: float = 1e-5
RTOL: float = 1e-4


#: Statuses of a check, and the word each result line starts with.
PASSED, FAILED, UNSOLVED = "passed", "failed", "unsolved"
STATUS_WORDS: dict[str, str] = {PASSED: "PASS", FAILED: "FAIL", UNSOLVED: "UNSOLVED"}
#: A printed result line: ``WORD: exercise name: message`` (exercise names hold no colon).
RESULT_LINE = re.compile(r"^(PASS|FAIL|UNSOLVED): ([^:\n]+): (.*)$")
#: Printed once by a wrapped exercise function the first time it falls back to the reference.
FALLBACK_NOTE: str = "using the reference solution: your answer is missing"


@dataclass
class CheckResult:
    """Verdict of a checker.

    Attributes:
        passed: True when the function matched the reference on every case.
        exercise: what was checked (e.g. ``"mirror-descent row update"``).
        message: what was found.
        hint: how to fix it (empty when passed).
        unsolved: True when the function is still the stub (raises ``NotImplementedError``).
        note: an extra line (e.g. that the notebook goes on with the reference solution).
    """

    passed: bool
    exercise: str
    message: str
    hint: str = ""
    unsolved: bool = False
    note: str = ""

    @property
    def status(self) -> str:
        """``"passed"``, ``"failed"`` or ``"unsolved"``."""
        return PASSED if self.passed else UNSOLVED if self.unsolved else FAILED

    def __str__(self) -> str:
        lines = [f"{STATUS_WORDS[self.status]}: {self.exercise}: {self.message}"]
        if self.hint and not self.passed:
            lines.append(f"Hint: {self.hint}")
        if self.note:
            lines.append(f"Note: {self.note}")
        return "\n".join(lines)

    __repr__ = __str__

    def __bool__(self) -> bool:
        return self.passed


def reference_fallback(student: Callable[..., Any], reference: Callable[..., Any],
                       exercise: str) -> Callable[..., Any]:
    """Wrap ``student`` so that while it raises ``NotImplementedError`` ``reference`` answers.

    The first fallback prints ``Note: <exercise>: using the reference solution: your answer is
    missing ...``, so the student sees which results are not theirs. Any other exception of the
    student's function propagates (it is their bug to see), and a function that returns
    something is used as it is. Checkers look through the wrapper (``__wrapped__``) and judge
    the student's own function.
    """
    noted = False

    @functools.wraps(student)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal noted
        try:
            return student(*args, **kwargs)
        except NotImplementedError:
            if not noted:
                noted = True
                print(f"Note: {exercise}: {FALLBACK_NOTE} (write it in the exercise cell above "
                      "and run the cells again)")
            return reference(*args, **kwargs)

    wrapper.reference_fallback = exercise  # type: ignore[attr-defined]
    return wrapper


@dataclass
class Mistake:
    """A known wrong way to compute the answer.

    Attributes:
        name: short name (shown in the message).
        compute: same arguments as the reference, returns the wrong answer (tensor or number).
        hint: what to change.
    """

    name: str
    compute: Callable[..., Any]
    hint: str


@dataclass(frozen=True)
class Exercise:
    """One course exercise: its checker, the reference the notebook falls back to, the
    checker's title of it and its random test cases."""

    checker: Callable[[Callable[..., Any]], CheckResult]
    reference: Callable[..., Any]
    title: str
    cases: Callable[[], list["Case"]]


@dataclass
class Case:
    """One set of arguments (positional) and a short description of its shape/seed."""

    args: tuple
    label: str


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol)


def _clone_args(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, Tensor) else copy.deepcopy(a)
                 if isinstance(a, (dict, list)) else a for a in args)


def _unchanged(after: Any, before: Any) -> bool:
    """Whether an argument (a tensor, or a dict or list of numbers) still equals its original."""
    if isinstance(before, Tensor):
        return torch.equal(after, before)
    return after == before if isinstance(before, (dict, list)) else True


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_tensor(value: Any) -> Tensor | None:
    """``value`` as a tensor, else None: a tensor as it is, a real number as a 0-dim float64
    tensor, a tuple or list of real numbers as a 1-dim one.

    Lets a checker judge exercises whose answer is a number (delta_m) or a few numbers (an
    interval's mean, low and high end) with the same comparison as tensor answers.
    """
    if isinstance(value, Tensor):
        return value
    if _is_number(value):
        return torch.tensor(float(value), dtype=torch.float64)
    if isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
        return torch.tensor([float(v) for v in value], dtype=torch.float64)
    return None


def check_function(
    student: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    exercise: str,
    mistakes: Sequence[Mistake] = (),
    shape_hint: str = "",
    extra_checks: Sequence[Callable[[Tensor, Case], str | None]] = (),
    atol: float = ATOL,
    rtol: float = RTOL,
    encode: Callable[[Any, Case], Tensor] | None = None,
) -> CheckResult:
    """Compare ``student`` with ``reference`` on every case; diagnose the first difference.

    Args:
        student: the function to check.
        reference: the library's answer for the same arguments: a tensor, a number or a tuple
            of numbers (then the student may return numbers or a tensor, see :func:`as_tensor`).
        cases: the inputs.
        exercise: name used in messages.
        mistakes: known wrong variants, tried in order on a mismatch.
        shape_hint: what the output shape should be, for the wrong-shape message.
        extra_checks: ``f(output, case) -> problem or None`` run on a mismatch before the
            generic message (e.g. "rows do not sum to 1").
        atol, rtol: tolerances.
        encode: ``f(answer, case) -> tensor`` for answers that are not numbers (e.g. a set of
            parameter names -> a 0/1 mask over the model's parameters), applied to the
            student's, the reference's and every mistake's answer before comparing; it raises
            ``TypeError`` or ``ValueError`` with a message for an answer of the wrong kind.
    """
    def encoded(answer: Any, case: Case) -> Any:
        return answer if encode is None else encode(answer, case)

    if not callable(student):
        return CheckResult(False, exercise, f"expected a function, got {type(student).__name__}",
                           "pass the function itself, e.g. check(my_function), not its result")
    falls_back = hasattr(student, "reference_fallback")
    if falls_back:
        student = student.__wrapped__  # judge the student's own function, not the fallback
    for case in cases:
        args = _clone_args(case.args)
        try:
            out = student(*args)
        except NotImplementedError:
            note = (f"{FALLBACK_NOTE}; the cells below run with the reference solution until you "
                    "write yours" if falls_back else "")
            return CheckResult(False, exercise, "not implemented yet",
                               "replace the `raise NotImplementedError` line with your code",
                               unsolved=True, note=note)
        except Exception as err:  # the student's bug: report it, do not crash the notebook
            return CheckResult(False, exercise,
                               f"your function raised {type(err).__name__}: {err} on {case.label}",
                               "run it on a small input and check every intermediate shape")
        if encode is not None:
            try:
                out = encode(out, case)
            except (TypeError, ValueError) as err:
                return CheckResult(False, exercise, f"{err} (on {case.label})",
                                   shape_hint or "return what the exercise asks for")
        raw_ref = encoded(reference(*_clone_args(case.args)), case)
        ref = as_tensor(raw_ref)
        wants_number = not isinstance(raw_ref, Tensor)
        if as_tensor(out) is None:
            what = ("a torch.Tensor" if not wants_number else "a number" if ref.dim() == 0
                    else f"{ref.numel()} numbers")
            return CheckResult(False, exercise, f"returned {type(out).__name__}, expected {what}",
                               f"return {what} (did you forget `return`?)")
        out = as_tensor(out)
        if not all(_unchanged(a, b) for a, b in zip(args, case.args)):
            return CheckResult(False, exercise, f"your function modified its inputs on {case.label}",
                               "do not change the arguments in place (no `x /= ...`, "
                               "`x.copy_(...)` or `d[key] = ...`); compute a new result")
        if out.shape != ref.shape:
            return CheckResult(False, exercise,
                               f"output shape {tuple(out.shape)} but expected {tuple(ref.shape)} "
                               f"on {case.label}", shape_hint or "check which axes you reduce")
        if not torch.isfinite(out).all():
            return CheckResult(False, exercise, f"output has NaN or inf on {case.label}",
                               "look for a division by zero or exp of a large number")
        if _close(out, ref, atol, rtol):
            continue
        for mistake in mistakes:
            wrong = as_tensor(encoded(mistake.compute(*_clone_args(case.args)), case))
            if wrong is not None and _close(out, wrong, atol, rtol):
                return CheckResult(False, exercise, f"{mistake.name} (on {case.label})",
                                   mistake.hint)
        for extra in extra_checks:
            problem = extra(out, case)
            if problem:
                return CheckResult(False, exercise, f"{problem} (on {case.label})",
                                   "compare with the formula in the markdown cell above")
        diff = (out.double() - ref.double()).abs()
        if out.dim() == 0:
            found = f"your value {float(out):.6g} but expected {float(ref):.6g}"
        else:
            where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
            found = (f"output differs from the reference by up to {float(diff.max()):.3g} (at "
                     f"index {where}: yours {float(out[where]):.6g}, expected "
                     f"{float(ref[where]):.6g})")
        return CheckResult(False, exercise, f"{found} on {case.label}",
                           "compare with the formula in the markdown cell above, step by step")
    return CheckResult(True, exercise, f"matches the reference on {len(cases)} random cases")


__all__ = ["ATOL", "FAILED", "FALLBACK_NOTE", "PASSED", "RESULT_LINE", "RTOL", "STATUS_WORDS",
           "UNSOLVED", "Case", "CheckResult", "Exercise", "Mistake", "as_tensor", "check_function",
           "reference_fallback"]
