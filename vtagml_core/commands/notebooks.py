"""``python -m vtagml_core notebooks``: run the teaching notebooks headlessly, make student copies.

Subcommands::

    notebooks run     [--preset quick] [--out runs/notebooks] [--only 02 03] [--param k=v ...]
    notebooks student [--out runs/student] [--force]
    notebooks list

``run`` executes every numbered notebook with papermill (:mod:`vtagml_core.nbtools.runner`),
writes the executed notebooks, ``report.md`` and ``report.html``, and exits with status 1 when a
notebook failed or an exercise check failed, naming the notebook and the cell (unsolved
exercises are listed, not failures). ``student`` writes the notebooks with the reference answers
of the exercises removed (:mod:`vtagml_core.nbtools.student`) into ``runs/student``, keeping any
copy already there (a student's work) unless ``--force``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vtagml_core.config import CONFIG_DIR

#: Preset names: the files of ``configs/presets`` (listed without importing the model, so
#: that ``--help`` stays fast).
PRESET_CHOICES: tuple[str, ...] = tuple(sorted(p.stem for p in (CONFIG_DIR / "presets").glob("*.yaml")))
#: Where ``notebooks student`` writes by default (``make lab`` shows it next to ``notebooks/``).
STUDENT_DIR: str = "runs/student"


def _parse_param(text: str) -> tuple[str, object]:
    """``key=value`` with a YAML value (``seed=20`` is an int, ``seed=abc`` a string)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param needs key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="execute all notebooks headlessly (papermill) and write a report")
    run.add_argument("--preset", default="quick", choices=PRESET_CHOICES,
                     help="smoke (tests, seconds), quick (CPU, minutes), paper (GPU, paper scale)")
    run.add_argument("--out", type=Path, default=Path("runs/notebooks"), help="output folder")
    run.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: notebooks/)")
    run.add_argument("--only", nargs="+", default=None, metavar="NN",
                     help="run only these notebooks (number or file stem), e.g. --only 02 03")
    run.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    run.add_argument("--seeds", default=None, metavar="0,1,2",
                     help="training seeds of the setting notebooks' tables (05-10); two or more "
                          "add the spread over seeds (default: the one --seed)")
    run.add_argument("--param", dest="params", action="append", default=[], type=_parse_param,
                     metavar="KEY=VALUE", help="another notebook parameter, e.g. interactive=false")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="config override for every notebook, as train --set (the parameters "
                          "cell's overrides list), e.g. --set lesson.steps=20")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failing notebook")
    run.add_argument("--timeout", type=float, default=None, help="seconds allowed per cell")
    student = sub.add_parser("student", help="write the notebooks without the exercise answers")
    student.add_argument("--out", type=Path, default=Path(STUDENT_DIR), help="output folder")
    student.add_argument("--force", action="store_true",
                         help="replace student copies already in the folder (their work is lost)")
    student.add_argument("--notebooks", type=Path, default=None, help="notebooks folder")
    listing = sub.add_parser("list", help="list the numbered notebooks")
    listing.add_argument("--notebooks", type=Path, default=None, help="notebooks folder")


def _run(args: argparse.Namespace, folder: Path) -> int:
    from vtagml_core.nbtools.runner import run_all

    params = dict(args.params)
    if args.overrides:
        params["overrides"] = [*params.get("overrides", []), *args.overrides]
    if args.device is not None:
        params["device"] = args.device
    if args.seed is not None:
        params["seed"] = args.seed
    from vtagml_core.experiments.seeds import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else None
    result = run_all(folder, args.out, args.preset, params, only=args.only,
                     fail_fast=args.fail_fast, timeout=args.timeout, seeds=seeds)
    total = sum(r.seconds for r in result.results)
    print(f"wrote {result.out / 'report.md'} and report.html ({len(result.results)} notebooks, "
          f"{total:.0f} s)")
    for exercise in result.exercises:
        if exercise.status != "failed":
            print(f"exercise {exercise.status}: {exercise.notebook} '{exercise.exercise}'")
    if not result.ok:
        for failure in result.failures:
            print(f"FAILED: {failure.describe()}", file=sys.stderr)
        for exercise in result.failed_exercises:
            print(f"EXERCISE FAILED: {exercise.describe()}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from vtagml_core.nbtools.runner import default_notebooks_dir, discover_notebooks

    folder = args.notebooks or default_notebooks_dir()
    if args.action == "run":
        return _run(args, folder)
    notebooks = discover_notebooks(folder)
    if args.action == "student":
        from vtagml_core.nbtools.student import write_student_notebooks

        written = write_student_notebooks(notebooks, args.out, overwrite=args.force)
        for path in written:
            print(f"wrote {path}")
        for path in sorted(set(args.out / p.name for p in notebooks) - set(written)):
            print(f"kept {path} (already there: a student's work; --force replaces it)")
        return 0
    import nbformat

    from vtagml_core.nbtools.student import exercise_count

    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells
                      if c.cell_type == "markdown" and c.source), "")
        print(f"{path.name:32s} {exercise_count(nb)} exercise(s)  {title}")
    return 0
