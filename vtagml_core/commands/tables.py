"""``python -m vtagml_core tables``: collect the settings' results into the paper's tables.

Reads ``<runs>/setting_results/*.json`` (written by ``python -m vtagml_core settings ...``) and
writes ``<out>/tables.md`` and ``<out>/tables.html`` (plotly): one table per setting in the shape
of the paper's Tables 2-6, each saying its dataset, resolution, backbone and seed count, with the
paper's own rows beside it in a separate, labelled block (:mod:`vtagml_core.experiments.tables`).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="settings root holding setting_results/ (default: runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <runs>/tables)")


def run(args: argparse.Namespace) -> int:
    from vtagml_core.experiments.runs import RESULTS_SUBDIR
    from vtagml_core.experiments.tables import write_tables

    out = args.out if args.out is not None else args.runs / "tables"
    md, html = write_tables(args.runs / RESULTS_SUBDIR, out)
    print(md.read_text())
    print(f"wrote {md} and {html}")
    return 0
