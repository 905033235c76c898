"""``python -m vtagml_core tables``: collect the settings' results into the paper's tables.

Reads ``<runs>/setting_results/*.json`` (written by ``python -m vtagml_core settings ...``) and
writes ``<out>/tables.md`` and ``<out>/tables.html`` (plotly): one table per setting in the shape
of the paper's Tables 2-6, each saying its dataset, resolution, backbone and seed count, with the
paper's own rows beside it in a separate, labelled block (:mod:`vtagml_core.experiments.tables`),
then the paper's claims as a checklist, each marked supported / contradicted / inconclusive
from these results (:mod:`vtagml_core.experiments.claims`; the ablations come from notebook 09's
``ablations.json`` when it is in the same folder).
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
    from vtagml_core.experiments.claims import claims_from_folder
    from vtagml_core.experiments.runs import RESULTS_SUBDIR
    from vtagml_core.experiments.tables import write_tables

    out = args.out if args.out is not None else args.runs / "tables"
    results = args.runs / RESULTS_SUBDIR
    md, html = write_tables(results, out)
    with md.open("a") as handle:
        handle.write("\n" + claims_from_folder(results) + "\n")
    print(md.read_text())
    print(f"wrote {md} and {html}")
    return 0
