"""``python -m vtagml_core train``: train one method with the kit's trainer.

Examples::

    python -m vtagml_core train                                  # quick preset, CPU, minutes
    python -m vtagml_core train --preset paper --out runs/train/paper
    python -m vtagml_core train --set train.epochs=3 --set model.tasks=S-D
    python -m vtagml_core train --out runs/train/paper --resume  # continue a stopped run
    torchrun --nproc_per_node=4 -m vtagml_core train --preset paper   # 4 GPUs (DDP)

Everything the run writes goes to ``--out`` (see :mod:`vtagml_core.train.trainer`): config,
``log.jsonl``, ``best/`` and ``last/`` models, ``state.pt`` and ``results.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_config_arguments, config_from_args

#: Default output folder; the method name is appended.
DEFAULT_OUT_ROOT = Path("runs/train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtagml_core.baselines.registry import method_names

    add_config_arguments(parser)
    parser.add_argument("--method", default="vtagml", choices=method_names(),
                        help="which model to train (default: vtagml)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"run folder (default: {DEFAULT_OUT_ROOT}/<method>)")
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
    out = args.out if args.out is not None else DEFAULT_OUT_ROOT / args.method
    trainer = Trainer(cfg, out, method=args.method, init_from=args.init_from, resume=args.resume)
    try:
        result = trainer.fit()
    except (FloatingPointError, torch.cuda.OutOfMemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if trainer.ctx.is_main:
        print(f"trained {args.method} for {trainer.progress.global_step} steps ({trainer.progress.epoch} epochs); "
              f"results in {out}")
        print(f"validation: {trainer.describe()}")
        print(f"best (epoch {trainer.progress.best_epoch}): {_format_metrics(result.best_metrics)}")
        print(f"last: {_format_metrics(result.last_metrics)}")
    return 0
