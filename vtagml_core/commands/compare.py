"""``python -m vtagml_core compare``: every method in one table, measured in one run (issue 7 item 5).

Examples::

    python -m vtagml_core compare --preset quick --tasks S-D-N-E --seeds 0
    python -m vtagml_core compare --methods vtagml,vanilla_mtl,mtformer --seeds 0,1,2
    python -m vtagml_core compare --balancer pcgrad          # every multitask run with PCGrad

Trains (or reuses, by run key) each method and the single-task references under ``--runs``,
writes ``<runs>/setting_results/compare[-<balancer>].json`` and ``.md``
(:mod:`vtagml_core.experiments.compare`), prints the table, each method's training time and the wall
time.
"""
from __future__ import annotations

import argparse
import time

from ._common import add_config_arguments, add_settings_arguments, store_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtagml_core.experiments.compare import DEFAULT_METHODS, DEFAULT_TASKS
    from vtagml_core.train.balancing import BALANCERS

    add_config_arguments(parser)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"task set (default: {DEFAULT_TASKS})")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="methods, comma-separated (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default: 0)")
    parser.add_argument("--balancer", default="equal", choices=list(BALANCERS),
                        help="loss balancer of the multitask runs (default: equal)")
    add_settings_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from vtagml_core.experiments.compare import compare_markdown, run_compare, write_compare
    from vtagml_core.experiments.settings import build_context

    started = time.perf_counter()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    ctx = build_context(args.preset, args.config, args.overrides, args.seeds, args.runs,
                        args.settings_config, args.settings_overrides, methods,
                        store=store_from_args(args))
    print(f"[compare] {args.tasks}: {', '.join(methods)}; balancer {args.balancer}; preset {ctx.preset}, "
          f"seeds {ctx.seeds}, runs in {ctx.store}, results under {ctx.root}", flush=True)
    doc = run_compare(ctx, args.tasks, methods, args.balancer)
    js, md = write_compare(ctx, doc)
    print(compare_markdown(doc), flush=True)
    for method, t in doc["timings"].items():
        parts = [("reused" if reused else f"{sec:.1f} s") for sec, reused in zip(t["train_seconds_now"], t["reused"])]
        print(f"[compare] {method}: training {', '.join(parts)} (per seed)")
    print(f"[compare] wrote {js}, {md}; total wall time {time.perf_counter() - started:.1f} s")
    return 0
