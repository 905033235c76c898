"""``python -m vtagml_core params``: parameters per component (the paper's Table 6 columns).

The paper reports 105.7M parameters in total for its Swin-B V2 model with adapters and
decoders (Table 6); this prints the kit's count for any config, e.g. ``--preset paper``.
"""
from __future__ import annotations

import argparse

from ._common import add_config_arguments, config_from_args

#: The paper's Table 6 total for VTAGML on Swin-B V2, for orientation.
PAPER_TOTAL_M = 105.7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from vtagml_core.model.params import format_parameter_table
    from vtagml_core.model.vtagml import VTAGML

    cfg = config_from_args(args)
    model = VTAGML(cfg.model)
    bb = cfg.model.backbone
    print(f"VTAGML, backbone {bb.name} at {bb.img_size}x{bb.img_size}, tasks {cfg.model.tasks}, "
          f"{model.num_classes} classes, adapter taps {model.backbone.tap_blocks}")
    print(format_parameter_table(model.parameter_report()))
    print(f"(paper, Table 6: {PAPER_TOTAL_M}M in total for Swin-B V2 + adapters + decoders)")
    return 0
