"""``python -m vtagml_core pretrain``: pretrain the offline backbone on the dense pretext split.

The preset (``--preset quick``, or a kit YAML via ``--config``) gives the backbone name, image
size, pretext scene count and seed; the flags below and ``--set key=value`` (fields of
:class:`~vtagml_core.train.pretrain.PretrainConfig`, with or without a ``pretrain.`` prefix)
override them, in that order. Without ``--out`` the weights go to the default location that
``weights: auto`` looks up (:func:`~vtagml_core.train.pretrain.default_pretrained_path`).
``--probe-steps N`` then compares a segmentation linear probe on the frozen random-init and the
pretrained backbone (same seed, same steps) and adds the result to the ``.json`` record.

Examples::

    python -m vtagml_core pretrain                          # quick preset, ~3 min on 2 CPU cores
    python -m vtagml_core pretrain --steps 20 --count 64 --size 64 --out runs/pretrain/smoke
    python -m vtagml_core pretrain --set pretrain.lr=1e-3 --probe-steps 300
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Command-line flag -> PretrainConfig field.
FLAG_FIELDS: dict[str, str] = {"steps": "steps", "count": "count", "size": "img_size",
                               "batch_size": "batch_size", "lr": "lr", "seed": "seed",
                               "device": "device"}
#: Optional prefix of ``--set`` keys (``pretrain.steps=...`` and ``steps=...`` are the same).
SET_PREFIX: str = "pretrain."
#: Benchmark domain the linear probe segments.
PROBE_DOMAIN: str = "indoor"
PROBE_TRAIN_SCENES: int = 256
PROBE_VAL_SCENES: int = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vtagml_core.train.config import preset_names

    parser.add_argument("--preset", default="quick", choices=preset_names(),
                        help="kit preset giving backbone name, size, pretext count and seed")
    parser.add_argument("--config", default=None, help="kit YAML config instead of the preset's")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--count", type=int, help="pretext training scenes")
    parser.add_argument("--size", type=int, help="image size (= backbone img_size)")
    parser.add_argument("--batch-size", type=int, help="images per step")
    parser.add_argument("--lr", type=float, help="peak Adam learning rate")
    parser.add_argument("--seed", type=int, help="seed of data, init and order")
    parser.add_argument("--device", help="auto, cpu or cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a PretrainConfig field, e.g. pretrain.warmup_steps=10")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the kit cache's backbones/ folder)")
    parser.add_argument("--probe-steps", type=int, default=0,
                        help="also run the random-vs-pretrained segmentation probe for N steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    """Preset -> flags -> ``--set`` overrides, as a :class:`PretrainConfig`."""
    from vtagml_core.config import apply_overrides
    from vtagml_core.train.config import load_kit_config
    from vtagml_core.train.pretrain import PretrainConfig

    kit = load_kit_config(args.config, preset=None if args.config else args.preset)
    values = {"backbone": kit.model.backbone.name, "img_size": kit.model.backbone.img_size,
              "count": kit.data.pretext_count, "seed": kit.data.seed,
              "progress": not args.no_progress}
    values.update({field: getattr(args, flag) for flag, field in FLAG_FIELDS.items()
                   if getattr(args, flag) is not None})
    overrides = [o[len(SET_PREFIX):] if o.startswith(SET_PREFIX) else o for o in args.overrides]
    return apply_overrides(PretrainConfig(**values), overrides)


def run(args: argparse.Namespace) -> int:
    from vtagml_core.train.pretrain import (
        atomic_write,
        install_pretrained,
        pretrain,
        probe_segmentation,
    )
    from vtagml_core.runtime import resolve_device

    cfg = config_from_args(args)
    print(f"pretraining {cfg.backbone} at {cfg.img_size} px on {cfg.count} pretext scenes "
          f"({cfg.eval_count} held out): {cfg.steps} steps of batch {cfg.batch_size}, "
          f"lr {cfg.lr}, seed {cfg.seed}, {resolve_device(cfg.device)}", flush=True)
    if args.out is not None:
        result = pretrain(cfg, args.out)
        weights, record = result.weights, result.record
    else:
        weights, result = install_pretrained(cfg)
        record = weights.with_suffix(".json")
    before, after = result.eval_before, result.eval_after
    print(f"held-out pretext: texture accuracy {before['texture_acc']:.3f} -> "
          f"{after['texture_acc']:.3f} (majority class {result.majority_texture_accuracy:.3f}), "
          f"albedo L1 {before['albedo_l1']:.4f} -> {after['albedo_l1']:.4f}; "
          f"train loss {result.losses[0]['loss']:.4f} -> {result.losses[-1]['loss']:.4f}; "
          f"{result.seconds:.0f} s")
    print(f"weights: {weights}\nrecord:  {record}")
    if args.probe_steps > 0:
        probe = {}
        for label, path in (("random", None), ("pretrained", str(weights))):
            probe[label] = probe_segmentation(
                cfg.backbone_config(weights=path), PROBE_DOMAIN, PROBE_TRAIN_SCENES, PROBE_VAL_SCENES,
                args.probe_steps, cfg.seed, device=cfg.device, progress=cfg.progress)
            print(f"linear probe, {PROBE_DOMAIN} val, {args.probe_steps} steps, {label} frozen "
                  f"backbone: mIoU {probe[label]['mIoU']:.4f}, pixel acc {probe[label]['pixel_acc']:.4f}")
        data = json.loads(record.read_text())
        data["probe"] = {"domain": PROBE_DOMAIN, "train_scenes": PROBE_TRAIN_SCENES,
                         "val_scenes": PROBE_VAL_SCENES, "steps": args.probe_steps, **probe}
        atomic_write(record, lambda p: p.write_text(json.dumps(data, indent=2)))
    return 0
