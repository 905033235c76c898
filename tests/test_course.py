"""nbgrader courses from the kit's notebooks (vtagml_core.nbtools.course, `course init`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vtagml_core.cli import main
from vtagml_core.nbtools.course import POINTS, init_course, nbgrader_source
from vtagml_core.nbtools.runner import default_notebooks_dir

ROOT = Path(__file__).resolve().parents[1]
NB03 = default_notebooks_dir() / "03_taa.ipynb"
#: The stub nbgrader writes into the released copy (the kit's, from nbgrader_config.py).
STUB_LINE = '    raise NotImplementedError("your code here")'
#: Bodies of the FiLM-bias exercise: the kit's A * (1 + gamma) + beta, and Eq. 3 read literally.
RIGHT = ("    L = A.shape[0]\n    gb = (omega @ W.T + b).view(-1, 2, L, L)\n"
         "    return A * (1 + gb[:, 0]) + gb[:, 1]")
WRONG = ("    L = A.shape[0]\n    gb = (omega @ W.T + b).view(-1, 2, L, L)\n"
         "    return A * gb[:, 0] + gb[:, 1]")


def test_source_version_marks_solution_and_autograded_test_cells():
    nb = nbformat.read(str(NB03), as_version=4)
    src = nbgrader_source(nb, NB03.name)
    marked = [c for c in src.cells if "nbgrader" in c.metadata]
    solution, test = marked
    assert solution.metadata.nbgrader["solution"] and not solution.metadata.nbgrader["grade"]
    assert solution.metadata.nbgrader["grade_id"] == "my_film_bias"
    assert test.metadata.nbgrader == {"grade_id": "check_film_bias", "solution": False,
                                      "grade": True, "locked": True, "schema_version": 3,
                                      "task": False, "points": POINTS}
    assert "print(_result)" in test.source and "assert _result.passed" in test.source
    assert not any("nbgrader" in c.metadata for c in nb.cells)  # the original is untouched


def test_an_exercise_without_its_checker_cell_is_refused():
    nb = nbformat.read(str(NB03), as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", []))
    nb.cells[i + 1].source = "print('no checker here')"
    with pytest.raises(ValueError, match=r"print\(check_<name>\(my_<name>\)\)"):
        nbgrader_source(nb, "03")


def test_init_refuses_a_folder_that_holds_a_course(tmp_path, capsys):
    assert main(["course", "init", str(tmp_path / "c"), "--only", "03"]) == 0
    assert (tmp_path / "c" / "source" / "03_taa" / "03_taa.ipynb").is_file()
    assert "nbgrader generate_assignment 03_taa" in (tmp_path / "c" / "README.md").read_text()
    assert main(["course", "init", str(tmp_path / "c"), "--only", "03"]) == 2
    assert "already holds a course" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no.* exercise|none of the notebooks"):
        init_course([default_notebooks_dir() / "00_setup_and_benchmark.ipynb"], tmp_path / "d")


def _nbgrader(course: Path, *args: str) -> None:
    bin_dir = str(Path(sys.executable).parent)  # nbgrader calls alembic from PATH
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "VTAGML_NB_PRESET": "smoke", "VTAGML_NB_HEADLESS": "1"}
    proc = subprocess.run([str(Path(bin_dir) / "nbgrader"), *args, "--force"], cwd=course,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_generate_autograde_and_feedback_score_right_and_wrong_answers(tmp_path):
    """The teacher's README, followed: generate the assignment, collect a right and a wrong
    submission, autograde (the notebooks run in the smoke preset), feedback: 1 and 0 points."""
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    init_course([NB03], course)
    _nbgrader(course, "generate_assignment", "03_taa")
    released = (course / "release" / "03_taa" / "03_taa.ipynb").read_text()
    code = "\n".join("".join(c["source"]) for c in json.loads(released)["cells"]
                     if c["cell_type"] == "code")
    assert STUB_LINE in code and "return A * (1 + gamma) + beta" not in code
    for student, body in (("right", RIGHT), ("wrong", WRONG)):
        nb = json.loads(released)
        for cell in nb["cells"]:
            text = "".join(cell["source"])
            if STUB_LINE in text:
                cell["source"] = text.replace(STUB_LINE, body)
        folder = course / "submitted" / student / "03_taa"
        folder.mkdir(parents=True)
        (folder / "03_taa.ipynb").write_text(json.dumps(nb))
    _nbgrader(course, "autograde", "03_taa")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission("03_taa", s).score, gb.find_submission("03_taa", s).max_score)
                  for s in ("right", "wrong")}
    assert scores == {"right": (1.0, 1.0), "wrong": (0.0, 1.0)}
    _nbgrader(course, "generate_feedback", "03_taa")
    feedback = (course / "feedback" / "wrong" / "03_taa" / "03_taa.html").read_text()
    assert "A * gamma + beta" in feedback  # the checker's hint reaches the student
    shutil.rmtree(course / "autograded")
