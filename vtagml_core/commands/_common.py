"""Arguments shared by the commands that take a kit config."""
from __future__ import annotations

import argparse

from vtagml_core.train.config import KitConfig, load_kit_config, preset_names


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config file (default: the preset's)")
    parser.add_argument("--preset", default="quick", choices=preset_names(),
                        help="a file of configs/presets: smoke (tests), quick (CPU, minutes), paper (Swin-B V2 256px, GPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field, e.g. model.adapter.tsn=false")


def config_from_args(args: argparse.Namespace) -> KitConfig:
    return load_kit_config(args.config, args.overrides, preset=args.preset)
