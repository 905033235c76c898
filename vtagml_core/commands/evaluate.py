"""``python -m vtagml_core evaluate``: the metric table of a checkpoint on any dataset split.

Examples::

    python -m vtagml_core evaluate --run runs/train/nyud --split val \
        --set data.dataset=nyud --set data.root=/data/NYUD_MT
    python -m vtagml_core evaluate --run runs/train/nyud/last --split val   # a model folder
    python -m vtagml_core evaluate --run runs/train/demo                    # its own val split

``--run`` is a training run's ``--out`` folder, a run of the store, or a model folder (``best/``,
``last/``). The data are the run's own unless ``--set data.*`` says otherwise; the model (tasks,
classes, backbone) always comes from the checkpoint. Real datasets are scored at the labels'
native resolution (the model sees its input size; predictions are resized to each label);
``--resolution model`` scores at the input size instead, as validation during training does.
The header names the checkpoint, dataset, split, resolution and backbone weights.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, metavar="DIR",
                        help="a run folder (train --out, or a run of the store) or a model folder")
    parser.add_argument("--split", default="val", help="the dataset split to score (default: val)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="which model of a run folder (default: best)")
    parser.add_argument("--tasks", default=None,
                        help="tasks to score, e.g. S-D (default: the model's tasks the dataset has)")
    parser.add_argument("--resolution", default="native", choices=["native", "model"],
                        help="real data: score at the labels' native resolution (default) or at the "
                             "model's input size")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="data.* or train.device override, e.g. data.dataset=nyud, data.root=DIR")


def metric_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per task, its metrics in the tables' formats (% for fractions)."""
    from vtagml_core.experiments.formatting import format_value, markdown_table
    from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS

    body = []
    for task, values in metrics.items():
        cells = []
        for name, value in values.items():
            arrow = "" if name not in METRIC_DIRECTIONS else (" ↓" if METRIC_DIRECTIONS[name] else " ↑")
            text = f"{name}{arrow} {format_value(value, name)}"
            cells.append(f"**{text}**" if name == PRIMARY_METRICS.get(task) else text)
        body.append([task, ", ".join(cells)])
    return markdown_table(["task", "metrics (headline in bold)"], body, ["l", "l"])


def run(args: argparse.Namespace) -> int:
    from vtagml_core.experiments.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.run, split=args.split, overrides=args.overrides, tasks=args.tasks,
                                 which=args.checkpoint, native=args.resolution == "native")
    for line in result.header():
        print(line)
    print()
    print(metric_table(result.metrics))
    return 0
