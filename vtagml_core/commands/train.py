"""``python -m vtagml_core train``: train one method with the kit's trainer.

Examples::

    python -m vtagml_core train                                  # quick preset, into the run store
    python -m vtagml_core train --set train.epochs=3 --set model.tasks=S-D
    python -m vtagml_core train --preset paper --out runs/train/paper   # a folder of your own
    python -m vtagml_core train --out runs/train/paper --resume  # continue a stopped run
    torchrun --nproc_per_node=4 -m vtagml_core train --preset paper --out runs/ddp  # 4 GPUs

Without ``--out`` the run goes into the kit's run store (:mod:`vtagml_core.experiments.runs`),
keyed by its resolved config: a run that is already there is reused ("found trained run ...,
reusing"), a stopped one resumed, and the notebooks and settings reuse what this trains (with
the preset's frozen backbone, pretext-pretrained once where the preset's settings say so, as
the settings do). With ``--out`` everything goes to that folder (see
:mod:`vtagml_core.train.trainer`): config, ``log.jsonl``, ``best/`` and ``last/`` models,
``state.pt`` and ``results.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_config_arguments, add_store_argument, config_from_args, store_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtagml_core.baselines.registry import method_names

    add_config_arguments(parser)
    parser.add_argument("--method", default="vtagml", choices=method_names(),
                        help="which model to train (default: vtagml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="a run folder of your own (default: the run store, keyed by config)")
    add_store_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out exactly where it stopped")
    parser.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                        help="start from the weights of a saved model folder (e.g. runs/x/best)")


def _format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    from vtagml_core.metrics.multitask import PRIMARY_METRICS

    return ", ".join(f"{task} {PRIMARY_METRICS[task]} {values[PRIMARY_METRICS[task]]:.4f}"
                     for task, values in metrics.items())


def run(args: argparse.Namespace) -> int:
    import torch

    from vtagml_core.train.trainer import Trainer

    cfg = config_from_args(args)
    if args.out is None:
        return _train_in_store(args, cfg)
    trainer = Trainer(cfg, args.out, method=args.method, init_from=args.init_from, resume=args.resume)
    try:
        result = trainer.fit()
    except (FloatingPointError, torch.cuda.OutOfMemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out
    if trainer.ctx.is_main:
        print(f"trained {args.method} for {trainer.progress.global_step} steps ({trainer.progress.epoch} epochs); "
              f"results in {out}")
        print(f"validation: {trainer.describe()}")
        print(f"best (epoch {trainer.progress.best_epoch}): {_format_metrics(result.best_metrics)}")
        print(f"last: {_format_metrics(result.last_metrics)}")
    return 0


def _train_in_store(args: argparse.Namespace, cfg) -> int:
    """Train (or reuse) the run of ``cfg`` in the run store, as the settings would key it."""
    import os

    from vtagml_core.experiments.runs import RunSpec, train_or_reuse
    from vtagml_core.experiments.settings.context import load_settings_config, resolve_backbone

    if args.resume or args.init_from is not None:
        raise ValueError("--resume and --init-from work on a folder of your own: add --out DIR "
                         "(runs in the store resume by themselves)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("under torchrun, train into a folder of your own: add --out DIR")
    settings = load_settings_config(preset=None if args.config else args.preset)
    cfg = resolve_backbone(cfg, settings, print)
    spec = RunSpec("train command", cfg, args.method, preset=None if args.config else args.preset)
    record = train_or_reuse(spec, store_from_args(args))
    results = record.results
    print(f"{args.method}: {results['steps']} steps ({results['epochs']} epochs); run "
          f"{record.dir.name} in the store {record.dir.parent}")
    print(f"validation: {results['where']}")
    print(f"best (epoch {results['best']['epoch']}): {_format_metrics(results['best']['metrics'])}")
    print(f"last: {_format_metrics(results['last']['metrics'])}")
    return 0
