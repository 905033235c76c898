"""An nbgrader course from the kit's notebooks: the source versions and the course folder.

nbgrader (https://nbgrader.readthedocs.io) grades Jupyter assignments from a *source* version of
each notebook whose cells carry ``metadata.nbgrader``: solution cells (the region between
``BEGIN SOLUTION`` / ``END SOLUTION`` is replaced by a stub in the released copy) and autograded
test cells with points. The kit's notebooks already mark their answers that way
(:mod:`.student`), so the source version is derived, never written by hand:

* every cell tagged ``exercise`` becomes a solution cell (``grade_id`` = the exercise function);
* the checker cell after it (``print(check_x(my_x))``) becomes a locked, autograded test cell
  worth :data:`POINTS` point(s): it still prints the kit's checker message (the hint a student
  needs) and then asserts that the check passed, so nbgrader scores it;
* every other cell is unchanged (students may run and edit them).

``python -m vtagml_core course init DIR`` writes ``DIR/nbgrader_config.py`` (the kit's stub,
``raise NotImplementedError("your code here")``, which the exercise fallback recognises), one
``DIR/source/<notebook>/<notebook>.ipynb`` per notebook with exercises, and ``DIR/README.md``
with the teacher's commands (``nbgrader generate_assignment``, ``collect``/``autograde``,
``generate_feedback``).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Sequence

from .student import BEGIN_MARKER, EXERCISE_TAG, STUB, exercise_count

#: Points of one exercise's test cell.
POINTS: int = 1
#: nbgrader's cell-metadata schema version written here.
SCHEMA_VERSION: int = 3
#: A checker cell's call: ``print(check_name(my_function))`` (the form every notebook uses).
CHECK_CALL = re.compile(r"^print\((check_\w+)\((.*)\)\)\s*$")
#: The course folder's teacher guide.
TEACHER_README: str = """# VTAGML kit course (nbgrader)

Made by `python -m vtagml_core course init`. One assignment per notebook with exercises, in
`source/`; every exercise is one solution cell and one autograded test cell worth {points}
point(s). The test cells print the kit's checker message (the hint a student sees) and assert
that the check passed.

Run these from this folder, in the kit's virtual environment (`nbgrader` is installed with the
kit's dev extras). Notebooks run against the kit, so set the preset the grading should use
(`smoke` is quick: seconds per notebook; the checks do not depend on the preset):

```bash
export VTAGML_NB_PRESET=smoke VTAGML_NB_HEADLESS=1
nbgrader generate_assignment {first} --force          # release/{first}/: answers stubbed
# hand out release/<assignment>/, collect each student's copy into
#   submitted/<student id>/<assignment>/<notebook>.ipynb   (or use nbgrader collect)
nbgrader autograde {first} --force                    # runs every submission, fills gradebook.db
nbgrader generate_feedback {first} --force            # feedback/<student>/<assignment>/*.html
nbgrader export                                       # grades.csv
```

Assignments: {assignments}.

An unsolved exercise is not an error for the rest of the notebook: the exercise decorator
falls back to the reference answer (with a printed note) so later cells still run, and its test
cell scores 0.
"""


def _nbgrader(grade_id: str, *, solution: bool, grade: bool, locked: bool,
              points: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"grade_id": grade_id, "solution": solution, "grade": grade,
                            "locked": locked, "schema_version": SCHEMA_VERSION, "task": False}
    if points is not None:
        meta["points"] = points
    return meta


def _function_name(source: str, where: str) -> str:
    match = re.search(r"^def (\w+)\(", source, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"{where}: an exercise cell must define the function the student writes")
    return match.group(1)


def _graded_check(source: str, where: str) -> tuple[str, str]:
    """``(checker name, source that prints the result and asserts it passed)``."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        match = CHECK_CALL.match(line.strip())
        if match:
            checker, args = match.groups()
            lines[i] = f"_result = {checker}({args})"
            lines[i + 1:i + 1] = ["print(_result)",
                                  "assert _result.passed, f\"{_result.status}: see the message above\""]
            return checker, "\n".join(lines)
    raise ValueError(f"{where}: the cell after an exercise must call its checker as "
                     "print(check_<name>(my_<name>))")


def nbgrader_source(nb: Any, name: str = "notebook") -> Any:
    """The nbgrader source version of a kit notebook (module docstring); ``nb`` is unchanged.

    Raises:
        ValueError: an exercise cell without a solution region or function, or without a
            checker cell after it.
    """
    out = copy.deepcopy(nb)
    cells = out.cells
    for i, cell in enumerate(cells):
        if EXERCISE_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        where = f"{name}, cell {i}"
        if BEGIN_MARKER not in cell.source:
            raise ValueError(f"{where}: an exercise cell needs a '{BEGIN_MARKER}' region")
        function = _function_name(cell.source, where)
        cell.metadata["nbgrader"] = _nbgrader(function, solution=True, grade=False, locked=False)
        test = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
        if test is None:
            raise ValueError(f"{where}: no checker cell after the exercise")
        checker, test.source = _graded_check(test.source, f"{name}, checker of {function}")
        test.metadata["nbgrader"] = _nbgrader(checker, solution=False, grade=True, locked=True,
                                              points=POINTS)
        test.outputs, test.execution_count = [], None
    return out


def nbgrader_config(root: Path) -> str:
    """``nbgrader_config.py`` of a course at ``root``: the kit's stub, the kit's markers."""
    return (
        "# nbgrader configuration of a VTAGML kit course (python -m vtagml_core course init).\n"
        "c = get_config()  # noqa: F821 (nbgrader provides it)\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        "c.ClearSolutions.begin_solution_delimeter = 'BEGIN SOLUTION'\n"
        "c.ClearSolutions.end_solution_delimeter = 'END SOLUTION'\n"
        f"c.ClearSolutions.code_stub = {{'python': {STUB!r}}}\n"
        "# Notebooks train small models in their first cells: allow minutes per cell.\n"
        "c.ExecutePreprocessor.timeout = 1800\n"
    )


def init_course(notebooks: Sequence[Path], root: Path) -> list[Path]:
    """Lay out an nbgrader course at ``root`` from the notebooks with exercises.

    Returns:
        The source notebooks written (``root/source/<stem>/<name>``).

    Raises:
        FileExistsError: ``root`` already holds a course (``nbgrader_config.py``): a course
            with a gradebook is never overwritten.
        ValueError: none of ``notebooks`` has an exercise.
    """
    import nbformat

    root = Path(root).resolve()
    if (root / "nbgrader_config.py").exists():
        raise FileExistsError(f"{root} already holds a course (nbgrader_config.py); choose "
                              "another folder, or remove that one yourself if it is disposable")
    written = []
    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        if not exercise_count(nb):
            continue
        target = root / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbgrader_source(nb, path.name), str(target))
        written.append(target)
    if not written:
        raise ValueError("none of the notebooks has an exercise (cells tagged 'exercise')")
    (root / "nbgrader_config.py").write_text(nbgrader_config(root))
    names = [p.parent.name for p in written]
    (root / "README.md").write_text(TEACHER_README.format(
        points=POINTS, first=names[0], assignments=", ".join(f"`{n}`" for n in names)))
    return written


__all__ = ["POINTS", "init_course", "nbgrader_config", "nbgrader_source"]
