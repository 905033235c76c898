"""Command line: ``python -m vtagml_core <command> ...``.

Each subcommand lives in its own module under :mod:`vtagml_core.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``--help`` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module, one-line help). Later issues add train, evaluate, settings, tables, demo.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("vtagml_core.commands.data", "synthetic benchmark: list domains, render, statistics"),
    "params": ("vtagml_core.commands.params", "parameter report of the VTAGML model per component"),
    "reproduce": ("vtagml_core.commands.reproduce", "headless end-to-end run of the kit's pipeline"),
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
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
