"""Headless run of every notebook with papermill (issue 5, item 2).

``python -m vtagml_core notebooks run --preset quick --out runs/notebooks`` executes the
numbered notebooks of ``notebooks/`` in order (``NN_name.ipynb``; later lessons slot in by file
name) and writes::

    <out>/executed/NN_name.ipynb   every executed notebook, outputs included
    <out>/artifacts/               what the notebooks write (their ``output_dir``)
    <out>/report.md, report.html   the tables and figures (PNG in report.md) of cells tagged
                                   ``report``, the seconds per notebook, any failure, and
                                   the paper's claims checked on the settings' results
    <out>/timings.json             seconds and status per notebook

Each notebook gets the papermill parameters ``preset``, ``device``, ``seed``, ``output_dir``
(plus any ``--param key=value``) and runs in a kernel started with ``VTAGML_NB_HEADLESS=1`` (so
widgets become static plotly figures, each with a PNG beside it: :mod:`vtagml_core.viz.static`) and ``VTAGML_NB_PRESET`` / ``VTAGML_NB_OUTPUT`` set to
the same values (so a stray environment variable cannot contradict the run). The kernel's
working directory is the notebooks folder, as in JupyterLab.

A failing cell does not stop the other notebooks (they are independent lessons; use
``fail_fast`` to stop): the run records the notebook, the cell's index in the *source*
notebook and its first line, the exception, and the command exits non-zero naming them.

The exercise checks a notebook printed (``PASS`` / ``FAIL`` / ``UNSOLVED`` lines of the cells
that call a checker of :mod:`vtagml_core.exercises`) are read back from the executed copy
(:func:`exercise_results`): a notebook with a failed check is not ``ok`` (status
``EXERCISE FAILED``, the command exits non-zero), while unsolved exercises (a student version,
which runs on with the reference solution) are listed but do not fail the run.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .results import INJECTED_TAG, CellFailure, ExerciseResult, NotebookResult, RunResult
from vtagml_core.notebooks.params import (DEFAULTS, HEADLESS_ENV, OUTPUT_ENV, PRESET_ENV, SEEDS_ENV,
                                          project_root)
from vtagml_core.train.config import preset_names

#: Notebook files the runner picks up: two digits, underscore, a name.
NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_[A-Za-z0-9_-]+\.ipynb$")
#: Cell tags: the papermill parameters cell, and cells whose outputs go into the report.
PARAMETERS_TAG: str = "parameters"
#: Kernel the notebooks run in (the current interpreter's, see :func:`ensure_kernel`).
KERNEL_NAME: str = "python3"
#: Layout of the output folder.
EXECUTED_DIR, ARTIFACTS_DIR, TIMINGS_FILE = "executed", "artifacts", "timings.json"
#: Lines of a cell that do not describe it (skipped when naming a failing cell).
MARKER_PREFIXES: tuple[str, ...] = ("# NBVAL_",)


def default_notebooks_dir() -> Path:
    """``notebooks/`` of the project."""
    return project_root() / "notebooks"


def discover_notebooks(folder: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks of ``folder`` in order; ``only`` keeps those whose number or
    stem is listed (e.g. ``["02", "03_taa"]``).

    Raises:
        FileNotFoundError: no such folder, or no notebook matches.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebooks folder {folder} does not exist")
    found = sorted(p for p in folder.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if only:
        wanted = set(only)
        found = [p for p in found if p.stem in wanted or p.name[:2] in wanted or p.name in wanted]
        unknown = wanted - {p.stem for p in found} - {p.name[:2] for p in found} - {p.name for p in found}
        if unknown:
            raise FileNotFoundError(f"no notebook matches {sorted(unknown)} in {folder}; numbered "
                                    f"notebooks are: {', '.join(q.stem for q in sorted(folder.glob('*.ipynb')))}")
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    return found


def parameters_cells(nb) -> list[int]:
    """Indices of the cells tagged ``parameters``."""
    return [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]


def check_notebook(path: Path):
    """Read a notebook and check it has exactly one ``parameters`` cell (papermill needs it)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = parameters_cells(nb)
    if len(cells) != 1:
        raise ValueError(f"{path.name} has {len(cells)} cells tagged '{PARAMETERS_TAG}'; it needs "
                         "exactly one (papermill injects the run's parameters after it)")
    return nb


def check_parameter_names(parameters: dict[str, Any]) -> None:
    """Unknown names would be injected and silently ignored: refuse them, listing valid ones."""
    unknown = sorted(set(parameters) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {', '.join(unknown)}; valid parameters: "
                         f"{', '.join(DEFAULTS)}")


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Make sure a ``name`` kernelspec exists for this interpreter; install it if missing.

    ``python -m ipykernel install --sys-prefix`` puts the spec inside the virtual environment;
    jupyter_client starts a spec whose command is ``python`` with the current interpreter.
    """
    try:
        import ipykernel  # noqa: F401
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as err:
        raise RuntimeError(f"{err.name} is missing: install the notebook extras with "
                           "`pip install -e \".[notebooks]\"`") from err
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", name],
                       check=True, capture_output=True)
    return name


@contextlib.contextmanager
def kernel_environment(preset: str, output_dir: Path,
                       seeds: Sequence[int] | None = None) -> Iterator[None]:
    """Set the headless/preset/output(/seeds) variables for kernels started inside, restore after."""
    wanted = {HEADLESS_ENV: "1", PRESET_ENV: preset, OUTPUT_ENV: str(output_dir)}
    if seeds:
        wanted[SEEDS_ENV] = ",".join(str(s) for s in seeds)
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(source: str) -> str:
    for line in source.splitlines():
        text = line.strip()
        if text and not text.startswith(MARKER_PREFIXES):
            return text
    return "<empty cell>"


def _unfinished_cell_source(executed: Path) -> str:
    """Source of the cell papermill marked as running or failed in a partly executed notebook."""
    import nbformat

    try:
        nb = nbformat.read(str(executed), as_version=4)
    except (OSError, ValueError):
        return ""
    for cell in nb.cells:
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status in ("running", "failed"):
            return cell.source
    return ""


def locate_failure(source_nb, name: str, err) -> CellFailure:
    """A :class:`CellFailure` from papermill's error, with the cell's index in ``source_nb``."""
    source = getattr(err, "source", "") or ""
    index = next((i for i, c in enumerate(source_nb.cells)
                  if c.cell_type == "code" and c.source == source), -1)
    evalue = str(getattr(err, "evalue", err)).strip().splitlines()
    return CellFailure(name, index, _first_line(source), getattr(err, "ename", type(err).__name__),
                       " ".join(evalue)[:500])


def _output_text(output) -> str:
    """Printed text of a cell output: stdout, or the plain-text value of a result."""
    if output.get("output_type") == "stream":
        text = output.get("text", "") if output.get("name") == "stdout" else ""
    elif output.get("output_type") == "execute_result":
        text = output.get("data", {}).get("text/plain", "")
    else:
        text = ""
    return "".join(text) if isinstance(text, list) else str(text)


def exercise_results(nb, name: str) -> list[ExerciseResult]:
    """The exercise checks printed by an executed notebook ``nb``, in cell order.

    Only cells that call a checker of :data:`vtagml_core.exercises.EXERCISES` are read, and
    in them the lines ``PASS|FAIL|UNSOLVED: <exercise>: <message>``
    (:data:`vtagml_core.exercises.harness.RESULT_LINE`).
    """
    from vtagml_core.exercises import EXERCISES
    from vtagml_core.exercises.harness import RESULT_LINE, STATUS_WORDS

    checkers = {ex.checker.__name__ for ex in EXERCISES.values()}
    statuses = {word: status for status, word in STATUS_WORDS.items()}
    found = []
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or not any(c in cell.source for c in checkers):
            continue
        for output in cell.get("outputs", []):
            for line in _output_text(output).splitlines():
                match = RESULT_LINE.match(line.strip())
                if match:
                    found.append(ExerciseResult(name, i, match.group(2), statuses[match.group(1)],
                                                match.group(3)))
    return found


def _read_exercises(executed: Path, name: str) -> list[ExerciseResult]:
    """:func:`exercise_results` of an executed copy; none when it is missing or unreadable."""
    import nbformat

    try:
        return exercise_results(nbformat.read(str(executed), as_version=4), name)
    except (OSError, ValueError):
        return []


def run_notebook(src: Path, dst: Path, parameters: dict[str, Any], cwd: Path,
                 kernel_name: str = KERNEL_NAME, timeout: float | None = None,
                 progress: bool = False) -> NotebookResult:
    """Execute one notebook with papermill into ``dst``; never raises for a failing cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source_nb = check_notebook(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failure = None
    try:
        papermill.execute_notebook(str(src), str(dst), parameters=parameters,
                                   kernel_name=kernel_name, cwd=str(cwd), progress_bar=progress,
                                   execution_timeout=timeout, log_output=False)
    except PapermillExecutionError as err:
        failure = locate_failure(source_nb, src.name, err)
    except Exception as err:  # timeout, dead kernel: name the cell that was running
        source = _unfinished_cell_source(dst)
        failure = CellFailure(src.name, -1, _first_line(source), type(err).__name__,
                              " ".join(str(err).split())[:500])
        if source:
            failure.cell_index = next((i for i, c in enumerate(source_nb.cells)
                                       if c.cell_type == "code" and c.source == source), -1)
    seconds = time.perf_counter() - start
    return NotebookResult(src.name, dst, seconds, failure, _read_exercises(dst, src.name))


def run_all(notebooks_dir: Path, out: Path, preset: str = "quick",
            parameters: dict[str, Any] | None = None, only: Sequence[str] | None = None,
            fail_fast: bool = False, timeout: float | None = None, progress: bool = False,
            log: Callable[[str], None] = print, seeds: Sequence[int] | None = None) -> RunResult:
    """Run the numbered notebooks headlessly and write the report (see the module docstring).

    ``seeds`` (two or more) become the training seeds of the setting notebooks' tables
    (``$VTAGML_NB_SEEDS``, :mod:`vtagml_core.notebooks.params`).

    Raises:
        ValueError: unknown preset or parameter name, or a notebook without exactly one
            parameters cell.
        FileNotFoundError: no notebooks.
    """
    from .report import write_report

    if preset not in preset_names():
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    params = dict(parameters or {})
    check_parameter_names(params)
    notebooks = discover_notebooks(Path(notebooks_dir), only)
    for path in notebooks:
        check_notebook(path)
    out = Path(out).resolve()
    artifacts = out / ARTIFACTS_DIR
    artifacts.mkdir(parents=True, exist_ok=True)
    params.update(preset=preset, output_dir=str(artifacts))
    kernel = ensure_kernel()
    run = RunResult(preset, out, params, started=time.strftime("%Y-%m-%d %H:%M:%S"))
    with kernel_environment(preset, artifacts, seeds):
        for path in notebooks:
            log(f"running {path.name} ({preset}) ...")
            result = run_notebook(path, out / EXECUTED_DIR / path.name, params,
                                  Path(notebooks_dir).resolve(), kernel, timeout, progress)
            run.results.append(result)
            log(f"  {result.status} in {result.seconds:.1f} s" +
                (f": {result.failure.describe()}" if result.failure else "") +
                (f"; exercises: {result.exercise_summary()}" if result.exercises else ""))
            for exercise in result.failed_exercises:
                log(f"  exercise failed: {exercise.describe()}")
            if fail_fast and not result.ok:
                break
    (out / TIMINGS_FILE).write_text(json.dumps(
        [{"notebook": r.name, "seconds": round(r.seconds, 2), "ok": r.ok, "status": r.status,
          "failure": r.failure.describe() if r.failure else None,
          "exercises": [{"cell": e.cell_index, "exercise": e.exercise, "status": e.status,
                         "message": e.message} for e in r.exercises]}
         for r in run.results], indent=2))
    write_report(run)
    return run


__all__ = ["CellFailure", "ExerciseResult", "NotebookResult", "RunResult", "check_notebook",
           "check_parameter_names", "default_notebooks_dir", "discover_notebooks", "ensure_kernel",
           "exercise_results", "locate_failure", "run_all", "run_notebook"]
