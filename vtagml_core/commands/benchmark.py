"""``python -m vtagml_core benchmark``: checks of the synthetic benchmark itself (issue 15).

Examples::

    python -m vtagml_core benchmark colour-check --preset quick          # item 2, seed 0
    python -m vtagml_core benchmark headroom --preset quick --seeds 0,1  # item 3
    python -m vtagml_core benchmark palette-overlap --overlaps 0,0.5,0.75,1
    python -m vtagml_core benchmark palette-overlap --overlaps 0.5 \
        --spec-set lighting.elevation_deg=10,80 --spec-set lighting.ambient=0.2,0.7

``colour-check`` fits a per-pixel colour-only classifier on the source train split and prints
its source val mIoU next to the VTAGML S-D-N-E source model's (trained or reused in the run
store like the MTL setting's run), their ratio and whether it is at most 0.5.
``headroom`` prints, per setting, task and seed, r = (source only - trivial) / (oracle -
trivial) (signed so higher is better) and whether it lies in [0.3, 0.8]; it trains or reuses
the source and oracle runs. Both write ``<runs>/setting_results/<check>.json`` and ``.md``.
``palette-overlap`` renders ``--domain`` in memory (no cache, no training) with its palette
overlap at each value and prints the colour-only mIoU of each (the data side of item 2);
``--spec-set FIELD=VALUE`` changes the domain's spec first (e.g. its lighting ranges).
Code: :mod:`vtagml_core.experiments.benchmark_checks`,
:mod:`vtagml_core.experiments.benchmark_checks_headroom`.
"""
from __future__ import annotations

import argparse
import json
import time

from ._common import add_config_arguments, add_settings_arguments, store_from_args

#: The checks, in the order of the issue's items.
CHECKS: tuple[str, ...] = ("colour-check", "headroom", "palette-overlap")
#: Palette overlaps the sweep measures by default.
DEFAULT_OVERLAPS: str = "0,0.5,0.75,1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("check", choices=CHECKS, help="which check")
    add_config_arguments(parser)
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default: 0)")
    add_settings_arguments(parser)
    sweep = parser.add_argument_group("palette-overlap")
    sweep.add_argument("--overlaps", default=DEFAULT_OVERLAPS,
                       help=f"palette overlaps in [0, 1], comma-separated (default: {DEFAULT_OVERLAPS})")
    sweep.add_argument("--domain", default="indoor", help="a plain domain (default: indoor)")
    sweep.add_argument("--train-count", type=int, default=256, help="train scenes (default: 256)")
    sweep.add_argument("--val-count", type=int, default=64, help="val scenes (default: 64)")
    sweep.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")
    sweep.add_argument("--spec-set", action="append", default=[], metavar="FIELD=VALUE",
                       help="change a field of the domain's spec first, e.g. "
                       "lighting.elevation_deg=10,80 (repeatable; rendered in memory only)")


def _context(args: argparse.Namespace):
    from vtagml_core.experiments.settings import build_context

    return build_context(args.preset, args.config, args.overrides, args.seeds, args.runs,
                         args.settings_config, args.settings_overrides, store=store_from_args(args))


def _write(root, name: str, doc: dict, markdown: str):
    from vtagml_core.experiments.runs import RESULTS_SUBDIR

    out = root / RESULTS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown + "\n")
    return out / f"{name}.json"


def _overlaps(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--overlaps must be comma-separated numbers in [0, 1], got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--overlaps must be comma-separated numbers in [0, 1], got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.check == "palette-overlap":
        from vtagml_core.experiments.benchmark_checks import COLOUR_LEVELS, palette_overlap_sweep
        from vtagml_core.experiments.formatting import format_value, markdown_table

        changes = []
        for item in args.spec_set:
            field, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--spec-set takes FIELD=VALUE, got {item!r}")
            changes.append((field.strip(), value.strip()))
        results = palette_overlap_sweep(_overlaps(args.overlaps), args.domain, args.train_count,
                                        args.val_count, args.size, changes=changes)
        changed = f", spec changed: {', '.join(args.spec_set)}" if changes else ""
        print(f"colour-only classifier (RGB histogram Bayes, {COLOUR_LEVELS} levels/channel): fitted "
              f"on synthetic/{args.domain} train ({args.train_count} scenes), scored on val "
              f"({args.val_count} scenes), {args.size}x{args.size}, data seed 0, rendered in "
              f"memory{changed}")
        print(markdown_table(["palette overlap", "colour-only mIoU %", "pixel acc %"],
                             [[f"{r['overlap']:g}", format_value(r["mIoU"], "mIoU"),
                               format_value(r["pixel_acc"], "pixel_acc")] for r in results]))
    elif args.check == "colour-check":
        from vtagml_core.experiments.benchmark_checks import colour_check, colour_check_markdown

        ctx = _context(args)
        doc = colour_check(ctx)
        text = colour_check_markdown(doc)
        print(text)
        print(f"[benchmark] wrote {_write(ctx.root, 'colour_check', doc, text)}")
    else:
        from vtagml_core.experiments.benchmark_checks_headroom import (headroom, headroom_markdown,
                                                                       write_headroom)

        ctx = _context(args)
        doc = headroom(ctx)
        print(headroom_markdown(doc))
        js, _ = write_headroom(doc, ctx.root)
        print(f"[benchmark] wrote {js}")
    print(f"[benchmark] {args.check} finished in {time.perf_counter() - started:.1f} s")
    return 0
