"""``python -m vtagml_core affinity``: do the task affinities mean something? (issue 17)

Examples::

    python -m vtagml_core affinity --preset quick --seeds 0,1,2
    python -m vtagml_core affinity --preset quick --seeds 0,1,2 --variants all   # + TROA settings
    python -m vtagml_core affinity --variant "kappa 0.3:model.adapter.kappa=0.3" --seeds 0
    python -m vtagml_core affinity --preset smoke --tasks S-D-N --seeds 0,1     # the test's size

Trains (or reuses, by run key, from the run store) per seed: one single-task model per task,
one pair model per task pair (the ground truth: gain of training t with n over t alone), one
all-task VTAGML run that also measures Fifty et al.'s lookahead affinity, and one all-task run
per TROA variant. Compares TROA's omega, the time-averaged gradient cosine and the lookahead
affinity with the ground truth by Spearman rank correlation
(:mod:`vtagml_core.experiments.affinity`). Writes ``<runs>/setting_results/affinity.json``,
``.md`` (the tables) and ``.html`` (the figure), and prints the tables.
"""
from __future__ import annotations

import argparse
import time

from ._common import add_config_arguments, add_settings_arguments, store_from_args

#: ``--variants`` values that are not a list of names.
ALL_VARIANTS, NO_VARIANTS = "all", "none"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtagml_core.experiments.affinity import (DEFAULT_LOOKAHEAD_EVERY, DEFAULT_LOOKAHEAD_STEP,
                                                  DEFAULT_PAIR_METHOD, DEFAULT_TASKS, LOOKAHEAD_STEPS,
                                                  TROA_VARIANTS)

    add_config_arguments(parser)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"task set, >= 3 tasks (default: {DEFAULT_TASKS})")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default: 0,1,2)")
    parser.add_argument("--lookahead-every", type=int, default=DEFAULT_LOOKAHEAD_EVERY,
                        help=f"steps between lookahead measurements (default: {DEFAULT_LOOKAHEAD_EVERY})")
    parser.add_argument("--lookahead-lr", type=float, default=None,
                        help="lookahead step size (default: the training learning rate of the step)")
    parser.add_argument("--lookahead-step", default=DEFAULT_LOOKAHEAD_STEP, choices=list(LOOKAHEAD_STEPS),
                        help="adam: divided by Adam's sqrt(v_hat) (default); sgd: Fifty et al.'s plain step")
    parser.add_argument("--pair-method", default=DEFAULT_PAIR_METHOD,
                        help=f"method of the pair models (default: {DEFAULT_PAIR_METHOD})")
    parser.add_argument("--variants", default=NO_VARIANTS,
                        help=f"TROA settings to add, comma-separated names of {list(TROA_VARIANTS)}, "
                             f"or '{ALL_VARIANTS}' / '{NO_VARIANTS}' (default: {NO_VARIANTS})")
    parser.add_argument("--variant", dest="custom_variants", action="append", default=[],
                        metavar="LABEL:KEY=VALUE[;KEY=VALUE]",
                        help="a TROA setting of your own, e.g. 'kappa 0.3:model.adapter.kappa=0.3'")
    add_settings_arguments(parser)


def parse_variants(names: str, custom: list[str]) -> dict[str, tuple[str, ...]]:
    """``--variants`` and ``--variant`` into ``{label: overrides}`` (errors name what is valid)."""
    from vtagml_core.experiments.affinity import TROA_VARIANTS

    chosen: dict[str, tuple[str, ...]] = {}
    if names == ALL_VARIANTS:
        chosen.update(TROA_VARIANTS)
    elif names != NO_VARIANTS:
        for name in (n.strip() for n in names.split(",") if n.strip()):
            if name not in TROA_VARIANTS:
                raise ValueError(f"unknown variant {name!r}; variants: {', '.join(TROA_VARIANTS)} "
                                 f"(or '{ALL_VARIANTS}', '{NO_VARIANTS}', or --variant LABEL:KEY=VALUE)")
            chosen[name] = TROA_VARIANTS[name]
    for text in custom:
        label, sep, rest = text.partition(":")
        overrides = tuple(o.strip() for o in rest.split(";") if o.strip())
        if not sep or not label.strip() or not overrides or any("=" not in o for o in overrides):
            raise ValueError(f"--variant {text!r} must look like 'LABEL:KEY=VALUE[;KEY=VALUE]', e.g. "
                             "'kappa 0.3:model.adapter.kappa=0.3'")
        chosen[label.strip()] = overrides
    return chosen


def run(args: argparse.Namespace) -> int:
    from vtagml_core.experiments.affinity import AffinityOptions, affinity_markdown, run_affinity, write_affinity
    from vtagml_core.experiments.settings import build_context
    from vtagml_core.viz.affinity_agreement import agreement_figure

    started = time.perf_counter()
    opts = AffinityOptions(tasks=args.tasks, lookahead_every=args.lookahead_every,
                           lookahead_lr=args.lookahead_lr, lookahead_step=args.lookahead_step,
                           pair_method=args.pair_method,
                           variants=parse_variants(args.variants, args.custom_variants)).validate()
    ctx = build_context(args.preset, args.config, args.overrides, args.seeds, args.runs,
                        args.settings_config, args.settings_overrides, store=store_from_args(args))
    print(f"[affinity] {opts.tasks}: preset {ctx.preset}, seeds {ctx.seeds}, variants "
          f"{list(opts.variants) or 'none'}; runs in {ctx.store}, results under {ctx.root}", flush=True)
    doc = run_affinity(ctx, opts)
    js, md = write_affinity(ctx, doc)
    html = md.with_suffix(".html")
    agreement_figure(doc).write_html(str(html), include_plotlyjs=True)
    print(affinity_markdown(doc), flush=True)
    trained = sum(1 for r in doc["runs"] if not r["reused"])
    print(f"[affinity] wrote {js}, {md}, {html}; {len(doc['runs'])} runs ({trained} trained now); "
          f"total wall time {time.perf_counter() - started:.1f} s")
    return 0
