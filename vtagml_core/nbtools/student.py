"""Student versions of the notebooks: reference answers removed (issue 5, item 3).

In the reference notebooks every exercise cell is tagged ``exercise`` and holds its answer
between two marker lines::

    def my_mirror_descent_update(omega, sim, kappa, sign):
        # BEGIN SOLUTION
        ...reference code...
        # END SOLUTION

The student version replaces each such region by ``raise NotImplementedError("your code
here")`` at the marker's indentation, clears every output and execution count, and adds a line
to the title cell. The checker cell after an exercise then reports ``UNSOLVED`` instead of
raising, and since every exercise function is decorated with
:func:`vtagml_core.exercises.exercise`, the cells further down that call it (to compare it with
the model on real activations) get the reference answer and a printed note ("using the
reference solution: your answer is missing"): the student version runs top to bottom.

``python -m vtagml_core notebooks student --out runs/student`` writes them; a copy already in
the folder is a student's work and is kept unless ``--force``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

#: Tag of exercise cells and the markers around the reference answer.
EXERCISE_TAG: str = "exercise"
BEGIN_MARKER: str = "# BEGIN SOLUTION"
END_MARKER: str = "# END SOLUTION"
#: What replaces a solution region.
STUB: str = 'raise NotImplementedError("your code here")'
#: Line added to the notebook's first markdown cell.
STUDENT_NOTE: str = ("> **Student version.** Write your code in the cells tagged `exercise` "
                     "(where it says `your code here`); the cell after each one checks it.")


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every ``BEGIN/END SOLUTION`` region of ``source`` by an indented stub.

    Raises:
        ValueError: a marker without its partner, nested markers, or no region at all.
    """
    out: list[str] = []
    inside = False
    regions = 0
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if text == BEGIN_MARKER:
            if inside:
                raise ValueError(f"{where}, line {number}: '{BEGIN_MARKER}' inside another "
                                 f"solution region; close the first one with '{END_MARKER}'")
            inside = True
            regions += 1
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif text == END_MARKER:
            if not inside:
                raise ValueError(f"{where}, line {number}: '{END_MARKER}' without a preceding "
                                 f"'{BEGIN_MARKER}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{BEGIN_MARKER}' is never closed by '{END_MARKER}'")
    if regions == 0:
        raise ValueError(f"{where} is tagged '{EXERCISE_TAG}' but has no '{BEGIN_MARKER}' ... "
                         f"'{END_MARKER}' region to remove")
    return "\n".join(out)


def student_notebook(nb, name: str = "notebook"):
    """A student copy of ``nb``: solutions stripped, outputs and counts cleared.

    Raises:
        ValueError: solution markers in a cell that is not tagged ``exercise`` (they would
            leak the answer), or a malformed exercise cell.
    """
    student = copy.deepcopy(nb)
    for i, cell in enumerate(student.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        has_markers = BEGIN_MARKER in cell.source or END_MARKER in cell.source
        if EXERCISE_TAG in tags:
            if cell.cell_type != "code":
                raise ValueError(f"{name} cell {i}: only code cells can be tagged '{EXERCISE_TAG}'")
            cell.source = strip_solutions(cell.source, f"{name} cell {i}")
        elif has_markers:
            raise ValueError(f"{name} cell {i} has solution markers but is not tagged "
                             f"'{EXERCISE_TAG}': tag it, or the answer stays in the student version")
    first_md = next((c for c in student.cells if c.cell_type == "markdown"), None)
    if first_md is not None:
        lines = first_md.source.split("\n", 1)
        first_md.source = lines[0] + "\n\n" + STUDENT_NOTE + ("\n" + lines[1] if len(lines) > 1 else "")
    return student


def exercise_count(nb) -> int:
    """Number of cells tagged ``exercise``."""
    return sum(EXERCISE_TAG in c.get("metadata", {}).get("tags", []) for c in nb.cells)


def write_student_notebooks(notebooks: Sequence[Path], out_dir: Path,
                            overwrite: bool = False) -> list[Path]:
    """Write the student version of each notebook into ``out_dir`` (same file names).

    Notebooks without exercises are copied with outputs cleared, so the student folder is a
    complete course. A file already in ``out_dir`` may hold a student's answers: it is kept
    unless ``overwrite``. Returns the written paths (not the kept ones).
    """
    import nbformat

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        student = student_notebook(nb, Path(path).name)
        target = out_dir / Path(path).name
        if target.exists() and not overwrite:
            continue
        nbformat.write(student, str(target))
        written.append(target)
    return written


__all__ = ["BEGIN_MARKER", "END_MARKER", "EXERCISE_TAG", "STUB", "exercise_count",
           "strip_solutions", "student_notebook", "write_student_notebooks"]
