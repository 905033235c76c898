"""What a headless notebook run produced: per-notebook results and failures.

Shared by :mod:`.runner` (which fills them) and :mod:`.report` (which writes them out), so
neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Cell tag of the cells whose outputs go into the report.
REPORT_TAG: str = "report"
#: Tag papermill gives the cell it injects after the parameters cell.
INJECTED_TAG: str = "injected-parameters"


@dataclass
class CellFailure:
    """Where and why a notebook stopped.

    Attributes:
        notebook: file name.
        cell_index: index of the failing cell in the source notebook (0-based; the injected
            parameters cell of papermill is not counted), or -1 if it could not be found.
        first_line: the cell's first meaningful source line.
        ename, evalue: exception name and message.
    """

    notebook: str
    cell_index: int
    first_line: str
    ename: str
    evalue: str

    def describe(self) -> str:
        where = f"cell {self.cell_index}" if self.cell_index >= 0 else "a cell"
        return f"{self.notebook} {where} (`{self.first_line}`): {self.ename}: {self.evalue}"


#: Statuses of an exercise check (the words of :mod:`vtagml_core.exercises.harness`).
EXERCISE_STATUSES: tuple[str, ...] = ("passed", "failed", "unsolved")


@dataclass
class ExerciseResult:
    """One exercise check printed by an executed notebook.

    Attributes:
        notebook: file name.
        cell_index: index of the check cell in the source notebook (papermill's injected
            parameters cell not counted).
        exercise: the checker's name of the exercise (e.g. ``"mirror-descent row update"``).
        status: ``"passed"``, ``"failed"`` or ``"unsolved"`` (the stub is still there; the
            notebook went on with the reference solution).
        message: what the checker found.
    """

    notebook: str
    cell_index: int
    exercise: str
    status: str
    message: str

    def describe(self) -> str:
        return (f"{self.notebook} cell {self.cell_index} exercise '{self.exercise}' "
                f"{self.status}: {self.message}")


@dataclass
class NotebookResult:
    """One notebook of a run: executed copy, wall time, failure (None = it ran through), and
    the exercise checks it printed."""

    name: str
    executed: Path
    seconds: float
    failure: CellFailure | None = None
    exercises: list[ExerciseResult] = field(default_factory=list)

    @property
    def failed_exercises(self) -> list[ExerciseResult]:
        return [e for e in self.exercises if e.status == "failed"]

    @property
    def ok(self) -> bool:
        """Ran through and no exercise check failed (unsolved exercises are not failures: a
        student notebook runs on with the reference solution)."""
        return self.failure is None and not self.failed_exercises

    @property
    def status(self) -> str:
        """``ok``, ``FAILED`` (a cell raised) or ``EXERCISE FAILED`` (it ran, a check failed)."""
        if self.failure is not None:
            return "FAILED"
        return "EXERCISE FAILED" if self.failed_exercises else "ok"

    def exercise_summary(self) -> str:
        """``2 passed, 1 unsolved`` (statuses with a count only), or ``-`` without exercises."""
        counts = [(s, sum(e.status == s for e in self.exercises)) for s in EXERCISE_STATUSES]
        return ", ".join(f"{n} {s}" for s, n in counts if n) or "-"


@dataclass
class RunResult:
    """A whole headless run."""

    preset: str
    out: Path
    parameters: dict[str, Any]
    results: list[NotebookResult] = field(default_factory=list)
    started: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CellFailure]:
        return [r.failure for r in self.results if r.failure is not None]

    @property
    def exercises(self) -> list[ExerciseResult]:
        return [e for r in self.results for e in r.exercises]

    @property
    def failed_exercises(self) -> list[ExerciseResult]:
        return [e for r in self.results for e in r.failed_exercises]


__all__ = ["EXERCISE_STATUSES", "INJECTED_TAG", "REPORT_TAG", "CellFailure", "ExerciseResult", "NotebookResult",
           "RunResult"]
