"""``python -m vtagml_core params``: parameters per component (the paper's Table 6 columns).

The paper reports 105.7M parameters in total for its Swin-B V2 model with adapters and
decoders (Table 6); this prints the kit's count for any config, e.g. ``--preset paper``.
``--method`` picks any registered method (default ``vtagml``), or several, comma-separated::

    python -m vtagml_core params --preset quick --method mtlora
    python -m vtagml_core params --preset paper --method vtagml,mtlora,norm_only
"""
from __future__ import annotations

import argparse

from ._common import add_config_arguments, config_from_args

#: The paper's Table 6 total for VTAGML on Swin-B V2, for orientation.
PAPER_TOTAL_M = 105.7
#: The method whose table the command prints when ``--method`` is not given.
DEFAULT_METHOD = "vtagml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--method", default=DEFAULT_METHOD,
                        help="registered method(s), comma-separated, e.g. vtagml,mtlora,norm_only "
                             "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from vtagml_core.baselines.registry import build_model, method_names
    from vtagml_core.model.params import format_parameter_table
    from vtagml_core.model.vtagml import VTAGML

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in method_names()]
    if not methods or unknown:
        raise ValueError(f"--method {args.method!r}: unknown method(s) {unknown}; valid methods: "
                         f"{', '.join(method_names())}")
    cfg = config_from_args(args)
    bb = cfg.model.backbone
    for i, method in enumerate(methods):
        if i:
            print()
        if method == DEFAULT_METHOD:
            model = VTAGML(cfg.model)
            print(f"VTAGML, backbone {bb.name} at {bb.img_size}x{bb.img_size}, tasks {cfg.model.tasks}, "
                  f"{model.num_classes} classes, adapter taps {model.backbone.tap_blocks}")
            print(format_parameter_table(model.parameter_report()))
            print(f"(paper, Table 6: {PAPER_TOTAL_M}M in total for Swin-B V2 + adapters + decoders)")
            continue
        model = build_model(method, cfg.model)
        print(f"method {method}, backbone {bb.name} at {bb.img_size}x{bb.img_size}, tasks "
              f"{cfg.model.tasks}, {model.num_classes} classes")
        print(format_parameter_table(model.parameter_report()))
    return 0
