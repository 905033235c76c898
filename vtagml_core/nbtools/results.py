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


@dataclass
class NotebookResult:
    """One notebook of a run: executed copy, wall time, failure (None = it ran through)."""

    name: str
    executed: Path
    seconds: float
    failure: CellFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


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


__all__ = ["REPORT_TAG", "CellFailure", "NotebookResult", "RunResult"]
