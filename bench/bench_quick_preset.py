"""Time to the quality floor: the quick preset's recipe against the one it replaced, side by side.

Both recipes train the quick VTAGML S-D-N-E model (seed 0, the kit's pretext-pretrained frozen
backbone, the synthetic indoor train split) with the kit's one trainer, in this one process, one
after the other on the same machine and data. After every epoch the trainer validates on the
indoor val split; :mod:`vtagml_core.metrics.floor` checks those metrics against the floor
(mIoU >= 0.50, depth RMSE <= 0.65 x the mean-depth predictor's, normals mean error <= 0.5 x the
mean normal's, odsF above the constant edge map's; trivial predictors fitted on the train split).

**Time to the floor** of a recipe: wall-clock seconds from the start of its training (feature
cache included) to the end of the validation of its first epoch that meets the floor. The last
line reads ``time-to-floor ratio new/old: X.XX; floor met: yes|no`` (the issue's target: <= 0.25
with the floor met).

It also prints the FLOPs of one training step (``torch.utils.flop_counter``, forward + backward
on cached backbone features, as the trainer runs it) and the GFLOP/s the training achieved,
next to a 2048x2048 matrix multiply measured in the same run: how far from this machine's limit
the kit is.

The old recipe is the preset ``quick_v1`` (``configs/presets/quick_v1.yaml``: the quick preset
as it was until 2026-12-06); ``--old-preset``/``--new-preset`` and ``--old-set``/``--new-set``
compare any two recipes. Nothing is cached between runs except the data and the backbone; the
runs are written to a temporary folder (``--out`` keeps them).

Usage: ``python bench/bench_quick_preset.py [--only new|old] [--new-set train.epochs=4 ...]``
(about 10 minutes on the 2-core CPU machine; run it on an otherwise idle machine).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from vtagml_core.baselines.registry import build_model
from vtagml_core.data.config import build_dataset
from vtagml_core.experiments.settings.context import SettingsConfig, resolve_backbone
from vtagml_core.metrics.floor import QualityFloor, check_floor, floor_met
from vtagml_core.metrics.trivial import evaluate_trivial
from vtagml_core.tasks import parse_tasks
from vtagml_core.train.config import KitConfig, load_kit_config
from vtagml_core.train.logging import LOG_FILE, read_log
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.trainer import Trainer

#: Side of the square matrices of the peak measurement, and how many multiplies are timed.
MATMUL_SIDE = 2048
MATMUL_REPS = 10
#: Batches the trivial predictors are fitted on / evaluated with.
TRIVIAL_BATCH = 32
#: Model and seed of both recipes.
METHOD, SEED = "vtagml", 0


def matmul_peak(dtype: torch.dtype) -> float:
    """GFLOP/s of a ``MATMUL_SIDE``^2 matrix multiply in ``dtype`` (best of ``MATMUL_REPS``)."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE).to(dtype)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(MATMUL_REPS):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * MATMUL_SIDE**3 / best / 1e9


def recipe(preset: str, overrides: list[str]) -> KitConfig:
    """A recipe's config: the preset, the overrides, seed 0, the pretrained backbone, no bars."""
    cfg = load_kit_config(preset=preset, overrides=[*overrides, f"train.seed={SEED}",
                                                    "train.progress=false"])
    return resolve_backbone(cfg, SettingsConfig(), print)


def step_gflop(cfg: KitConfig) -> float:
    """FLOPs of one training step (forward + backward, backbone features precomputed), in GFLOP."""
    torch.manual_seed(SEED)
    model = build_model(METHOD, cfg.model).train()
    data = build_dataset(cfg.data, "train", cfg.model.tasks)
    batch = next(iter(DataLoader(data, batch_size=cfg.data.batch_size)))
    with torch.no_grad():
        features = model.backbone(batch["image"])
    loss = MultiTaskLoss(model.tasks)
    with FlopCounterMode(display=False) as counter:
        outputs = model(batch["image"], features=features, track_task_grads=model.tracks_task_grads)
        total, _ = loss(outputs, batch)
        total.backward()
    return counter.get_total_flops() / 1e9


def trivial_val(cfg: KitConfig) -> dict[str, dict[str, float]]:
    """The trivial predictors fitted on the train split, scored on the val split."""
    tasks, k = parse_tasks(cfg.model.tasks), cfg.model.resolved_num_classes()
    loaders = [DataLoader(build_dataset(cfg.data, split, tasks), batch_size=TRIVIAL_BATCH)
               for split in ("train", "val")]
    return evaluate_trivial(*loaders, tasks, k)


def time_recipe(cfg: KitConfig, out: Path, trivial: dict, floor: QualityFloor) -> dict[str, Any]:
    """Train ``cfg`` into ``out``; per-epoch validation, floor verdicts and cumulative seconds."""
    started = time.perf_counter()
    Trainer(cfg, out, method=METHOD).fit()
    wall = time.perf_counter() - started
    epochs = read_log(out / LOG_FILE, "epoch")
    steps = read_log(out / LOG_FILE, "step")
    in_epochs = sum(e["epoch_seconds"] + e["val_seconds"] for e in epochs)
    elapsed = wall - in_epochs  # setup: model, data loaders, feature cache
    rows, first = [], None
    for e in epochs:
        elapsed += e["epoch_seconds"] + e["val_seconds"]
        checks = check_floor(e["val"], trivial, floor)
        met = floor_met(checks)
        rows.append({"epoch": e["epoch"], "seconds": elapsed, "checks": checks, "met": met})
        if met and first is None:
            first = elapsed
    train_seconds = sum(e["epoch_seconds"] for e in epochs)
    return {"rows": rows, "time_to_floor": first, "wall": wall, "setup": wall - in_epochs,
            "steps": len(steps), "train_seconds": train_seconds}


def describe(name: str, cfg: KitConfig, preset: str, overrides: list[str]) -> str:
    d, t, m = cfg.data, cfg.train, cfg.model.decoder
    return (f"{name}: preset {preset}{' ' + ' '.join(overrides) if overrides else ''}: "
            f"{t.epochs} epochs x {d.train_count // d.batch_size} steps of batch {d.batch_size}, "
            f"lr {t.lr}; decoder dims {m.embed_dims}, {m.depth_per_stage} block(s)/stage, "
            f"image path {'shared' if m.share_image_skip else 'per task'}, fuse "
            f"{m.image_fuse_kernel}x{m.image_fuse_kernel}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-preset", default="quick_v1")
    parser.add_argument("--new-preset", default="quick")
    parser.add_argument("--old-set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--new-set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", choices=["old", "new"], help="time one recipe only")
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: temporary)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads on {cores} cores, load "
          f"average {os.getloadavg()[0]:.2f}; {MATMUL_SIDE}^2 matmul: {peaks['fp32']:.0f} GFLOP/s "
          f"fp32, {peaks['bf16']:.0f} GFLOP/s bf16")
    specs = {"old": (args.old_preset, args.old_set), "new": (args.new_preset, args.new_set)}
    if args.only:
        specs = {args.only: specs[args.only]}
    configs = {name: recipe(*spec) for name, spec in specs.items()}
    data = {name: {k: v for k, v in vars(c.data).items() if k != "batch_size"}
            for name, c in configs.items()}
    if len({repr(d) for d in data.values()}) > 1:
        raise SystemExit(f"the recipes must train on the same data (batch size aside): {data}")
    first = next(iter(configs.values()))
    floor = QualityFloor()
    trivial = trivial_val(first)
    print(f"data: synthetic/{first.data.domain} train {first.data.train_count} scenes, val "
          f"{first.data.val_count} scenes, {first.data.size}x{first.data.size} px; backbone "
          f"{first.model.backbone.name} pretext-pretrained ({first.model.backbone.weights}); "
          f"{METHOD} {first.model.tasks}, seed {SEED}")
    print("floor (val): " + "; ".join(
        f"{t} {', '.join(f'{k} {v:.3f}' for k, v in m.items() if k in ('mIoU', 'rmse', 'mean', 'odsF'))}"
        for t, m in trivial.items()) + " for the trivial predictors")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for name, cfg in configs.items():
            print(describe(name, cfg, *specs[name]))
            gflop = step_gflop(cfg)
            r = time_recipe(cfg, root / name, trivial, floor)
            results[name] = r
            for row in r["rows"]:
                print(f"  epoch {row['epoch']:2d} at {row['seconds']:7.1f} s: "
                      + "; ".join(c.text() for c in row["checks"])
                      + f"  floor {'MET' if row['met'] else 'not met'}")
            rate = gflop * r["steps"] / r["train_seconds"]
            ttf = r["time_to_floor"]
            print(f"  {name}: {r['steps']} steps, {gflop:.1f} GFLOP/step, train "
                  f"{r['train_seconds']:.1f} s = {r['train_seconds'] / r['steps'] * 1e3:.0f} ms/step "
                  f"= {rate:.0f} GFLOP/s ({rate / peaks['fp32']:.0%} of the fp32 matmul); setup "
                  f"{r['setup']:.1f} s, total {r['wall']:.1f} s; time to floor: "
                  + (f"{ttf:.1f} s" if ttf is not None else "never (floor not met)"))
    if set(results) == {"old", "new"}:
        old, new = results["old"]["time_to_floor"], results["new"]["time_to_floor"]
        if old is None:
            print("the old recipe never met the floor: no ratio; compare the totals above")
        met = new is not None
        ratio = (new if met else results["new"]["wall"]) / (old or results["old"]["wall"])
        print(f"time-to-floor ratio new/old: {ratio:.2f}; floor met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
