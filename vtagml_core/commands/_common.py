"""Arguments shared by the commands that take a kit config."""
from __future__ import annotations

import argparse
from pathlib import Path

from vtagml_core.train.config import KitConfig, load_kit_config, preset_names


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config file (default: the preset's)")
    parser.add_argument("--preset", default="quick", choices=preset_names(),
                        help="a file of configs/presets: smoke (tests), quick (CPU, minutes), paper (Swin-B V2 256px, GPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field, e.g. model.adapter.tsn=false")


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store DIR``: the run store (default ``$VTAGML_RUNS``, else ``~/.cache/vtagml/runs``)."""
    parser.add_argument("--store", type=Path, default=None,
                        help="the run store that trained runs live in (default: $VTAGML_RUNS, "
                             "else ~/.cache/vtagml/runs); shared by the CLI, notebooks and demo")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runs`` (results), ``--store`` (runs), ``--settings-config``, ``--settings-set``: what
    every command that builds a settings context takes."""
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="where the results go: <runs>/setting_results/ (default: runs)")
    add_store_argument(parser)
    parser.add_argument("--settings-config", type=Path, default=None,
                        help="settings YAML (default: configs/settings/<preset>.yaml)")
    parser.add_argument("--settings-set", dest="settings_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a settings field, e.g. uda_target=street")


def store_from_args(args: argparse.Namespace) -> Path:
    from vtagml_core.experiments.runs import default_store

    return args.store if args.store is not None else default_store()


def config_from_args(args: argparse.Namespace) -> KitConfig:
    """The kit config of ``--config``/``--preset`` and ``--set``, fitted to its dataset
    (``model.num_classes`` follows ``data.dataset``; a task it lacks is refused)."""
    cfg = load_kit_config(args.config, args.overrides, preset=args.preset)
    cfg.model.fit_to_data(cfg.data)
    return cfg
