"""``python -m vtagml_core config``: print the resolved config of a preset and overrides.

What a run would train with, after the preset's file, its ``inherit:`` chain and every
``--set`` (``docs/presets.md``), as YAML::

    python -m vtagml_core config --preset smoke --set train.lr=0.004
"""
from __future__ import annotations

import argparse

from ._common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import yaml

    from vtagml_core.config import to_dict

    source = args.config or f"preset {args.preset}"
    extra = f" with {' '.join('--set ' + o for o in args.overrides)}" if args.overrides else ""
    print(f"# resolved config of {source}{extra}")
    print(yaml.safe_dump(to_dict(config_from_args(args), complete=True), sort_keys=False), end="")
    return 0
