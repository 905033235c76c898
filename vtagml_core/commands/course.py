"""``python -m vtagml_core course init DIR``: an nbgrader course folder from the kit's notebooks.

Examples::

    python -m vtagml_core course init ~/courses/vtagml            # every notebook with exercises
    python -m vtagml_core course init ~/courses/vtagml --only 03 05

Then follow ``DIR/README.md`` (``nbgrader generate_assignment``, ``autograde``,
``generate_feedback``); :mod:`vtagml_core.nbtools.course` says how the source versions are made.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="lay out an nbgrader course (source/, config, teacher README)")
    init.add_argument("dir", type=Path, help="the course folder (created; must not hold a course)")
    init.add_argument("--only", nargs="+", default=None, metavar="NN",
                      help="notebook numbers to include (default: every notebook with exercises)")
    init.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: notebooks/)")


def run(args: argparse.Namespace) -> int:
    from vtagml_core.nbtools.course import init_course
    from vtagml_core.nbtools.runner import default_notebooks_dir, discover_notebooks

    notebooks = discover_notebooks(args.notebooks or default_notebooks_dir(), args.only)
    for path in init_course(notebooks, args.dir):
        print(f"wrote {path}")
    print(f"wrote {Path(args.dir).resolve() / 'nbgrader_config.py'} and README.md: follow the README "
          "to generate, autograde and give feedback")
    return 0
