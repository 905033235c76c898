"""Command line: ``python -m vtagml_core <command> ...``.

Each subcommand lives in its own module under :mod:`vtagml_core.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``--help`` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("vtagml_core.commands.config", "print the resolved config of a preset and --set overrides"),
    "data": ("vtagml_core.commands.data", "synthetic benchmark: list domains, render, statistics"),
    "params": ("vtagml_core.commands.params", "parameter report of the VTAGML model per component"),
    "pretrain": ("vtagml_core.commands.pretrain", "pretrain the offline backbone on the dense pretext split"),
    "reproduce": ("vtagml_core.commands.reproduce",
                  "pipeline check: render every domain, train once, report (make reproduce runs the notebooks)"),
    "notebooks": ("vtagml_core.commands.notebooks",
                  "teaching notebooks: headless papermill run + report, student versions"),
    "train": ("vtagml_core.commands.train", "train a method: epochs, validation, checkpoints, --resume, torchrun"),
    "evaluate": ("vtagml_core.commands.evaluate",
                 "metric table of a checkpoint on any dataset split (synthetic, nyud, taskonomy, cityscapes)"),
    "demo": ("vtagml_core.commands.demo", "Gradio demo: per-task predictions, task affinities, attention"),
    "settings": ("vtagml_core.commands.settings",
                 "the paper's evaluation settings: mtl, zeroshot, uda, novel, efficiency, robustness, all"),
    "tables": ("vtagml_core.commands.tables", "collect setting results into the paper's tables (md + plotly)"),
    "runs": ("vtagml_core.commands.runs", "the run store: list, show, export, import, remove trained runs"),
    "compare": ("vtagml_core.commands.compare",
                "every method in one table: metrics, delta_m, parameters, s/epoch (--balancer)"),
    "course": ("vtagml_core.commands.course", "nbgrader course folder from the notebooks' exercises (course init DIR)"),
    "affinity": ("vtagml_core.commands.affinity",
                 "do the task affinities mean something? TROA omega, gradient cosine, lookahead vs pair gains"),
    "benchmark": ("vtagml_core.commands.benchmark",
                  "checks of the benchmark itself: colour-check, headroom, palette-overlap"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser; only the command named by ``argv[0]`` gets its (imported) arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m vtagml_core",
        description="VTAGML kit: Vision Transformer Adapters for Generalizable Multitask Learning.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if argv and argv[0] == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        if "torch" in sys.modules:  # a command that computes: $VTAGML_THREADS applies
            from vtagml_core.runtime import configure_threads

            configure_threads()
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
