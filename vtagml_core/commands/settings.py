"""``python -m vtagml_core settings``: the paper's evaluation settings (Tables 2-6 shapes).

Examples::

    python -m vtagml_core settings mtl                        # quick preset, seed 0, CPU minutes
    python -m vtagml_core settings all --seeds 0,1,2          # every setting, 3 seeds (claims)
    python -m vtagml_core settings zeroshot --methods vtagml,vanilla_mtl,finetune_mtl
    python -m vtagml_core settings uda --settings-set uda_target=street
    python -m vtagml_core settings all --preset paper --runs runs/paper    # GPU, Swin-B V2

Each setting trains what it needs under ``--runs`` (or reuses it: runs are keyed by their
resolved config, see :mod:`vtagml_core.experiments.runs`), writes
``<runs>/setting_results/<setting>.json`` and ``.md``, prints its table and its wall time.
``python -m vtagml_core tables`` then collects every setting into one document.
"""
from __future__ import annotations

import argparse
import time

from ._common import add_config_arguments, add_settings_arguments, store_from_args

#: ``all`` runs every setting in this order (later settings reuse the MTL runs).
ALL = "all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtagml_core.experiments.settings import SETTINGS

    parser.add_argument("setting", choices=[*SETTINGS, ALL], help="which setting (or all)")
    add_config_arguments(parser)
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default: 0)")
    parser.add_argument("--methods", default=None,
                        help="methods compared, comma-separated (default: the settings config's, "
                             "vtagml,vanilla_mtl)")
    add_settings_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from vtagml_core.experiments.settings import SETTINGS, build_context, run_setting, write_setting
    from vtagml_core.experiments.tables import setting_markdown

    started = time.perf_counter()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    ctx = build_context(args.preset, args.config, args.overrides, args.seeds, args.runs,
                        args.settings_config, args.settings_overrides, methods,
                        store=store_from_args(args))
    names = list(SETTINGS) if args.setting == ALL else [args.setting]
    times = {}
    for name in names:
        print(f"[settings] {name}: preset {ctx.preset}, seeds {ctx.seeds}, runs in {ctx.store}, "
              f"results under {ctx.root}",
              flush=True)
        t0 = time.perf_counter()
        doc = run_setting(name, ctx)
        js, md = write_setting(ctx, doc)
        times[name] = time.perf_counter() - t0
        print(setting_markdown(doc), flush=True)
        print(f"[settings] {name} finished in {times[name]:.1f} s -> {js}, {md}", flush=True)
    if len(names) > 1:
        print("[settings] wall time per setting: "
              + ", ".join(f"{n} {s:.1f} s" for n, s in times.items()))
    print(f"[settings] total wall time {time.perf_counter() - started:.1f} s")
    return 0
