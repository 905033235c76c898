"""An epoch of VTAGML training with the frozen-backbone feature cache versus without it.

Both runs train the quick preset's model (tiny Swin V2, 4 tasks, 128 px) on the same scenes in
the same order from the same initial weights, with full training steps (forward with per-task
gradient tracking, multitask loss, backward, TROA update, Adam step). Without the cache every
step runs the frozen backbone (:func:`vtagml_core.train.step.train_step`); with it, each image
was encoded once when :class:`~vtagml_core.train.feature_cache.CachedFeatureDataset` was built
and the step skips the encoder. Epochs alternate (plain, cached, plain, cached, ...) so load
from other processes hits both alike. Target: cached epoch >= 3x faster.

Then a breakdown of one training step (median over batches): frozen backbone forward, adapter
forward, decoder + heads forward, loss, backward, TROA update + optimizer step. It tells where
an epoch's time goes, hence what a cache of the backbone can save at most.

Usage: ``python bench/bench_feature_cache.py [--scenes 64] [--batch 8] [--epochs 2] [--size 128]``
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vtagml_core.data.dataset import SyntheticDataset
from vtagml_core.train.config import load_kit_config
from vtagml_core.model.vtagml import VTAGML
from vtagml_core.train.feature_cache import CachedFeatureDataset, features_from_batch
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.step import train_step

LEARNING_RATE = 1e-3
TARGET_RATIO = 3.0
#: Batches timed piece by piece for the breakdown.
PROFILE_BATCHES = 4


def cached_step(model: VTAGML, batch: dict, loss_fn: MultiTaskLoss, opt) -> float:
    """:func:`train_step` with the batch's cached features handed to the forward."""
    outputs = model(batch["image"], features=features_from_batch(batch),
                    track_task_grads=model.tracks_task_grads)
    total, _ = loss_fn(outputs, batch)
    opt.zero_grad(set_to_none=True)
    total.backward()
    model.update_affinity()
    opt.step()
    return float(total.detach())


def epoch(model, data, loss_fn, opt, batch: int, seed: int, cached: bool) -> float:
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    for b in loader:
        if cached:
            cached_step(model, b, loss_fn, opt)
        else:
            train_step(model, b, loss_fn, opt)
    return time.perf_counter() - t0


class Timer:
    """Wall time of a module's forward via hooks (pre-hook starts, hook stops)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.times: list[float] = []
        module.register_forward_pre_hook(lambda *_: setattr(self, "_t0", time.perf_counter()))
        module.register_forward_hook(lambda *_: self.times.append(time.perf_counter() - self._t0))


def breakdown(model: VTAGML, data, loss_fn, opt, batch: int) -> dict[str, float]:
    """Median seconds per training step spent in each part (uncached step)."""
    bb, ad, dec = Timer(model.backbone), Timer(model.adapter), Timer(model.decoder)
    parts: dict[str, list[float]] = {"loss": [], "backward": [], "troa + optimizer": []}
    for _, b in zip(range(PROFILE_BATCHES), DataLoader(data, batch_size=batch)):
        outputs = model(b["image"], track_task_grads=model.tracks_task_grads)
        t0 = time.perf_counter()
        total, _ = loss_fn(outputs, b)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total.backward()
        t2 = time.perf_counter()
        model.update_affinity()
        opt.step()
        t3 = time.perf_counter()
        parts["loss"].append(t1 - t0), parts["backward"].append(t2 - t1)
        parts["troa + optimizer"].append(t3 - t2)
    med = {"backbone forward": statistics.median(bb.times), "adapter forward": statistics.median(ad.times),
           "decoders + heads forward": statistics.median(dec.times)}
    return {**med, **{k: statistics.median(v) for k, v in parts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each kind (interleaved)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(os.environ.get("VTAGML_CACHE") or tempfile.mkdtemp(prefix="vtagml-bench-"))
    cfg = load_kit_config(preset="quick", overrides=[f"model.backbone.img_size={args.size}",
                                                     f"data.size={args.size}"])
    data = SyntheticDataset("indoor", "train", tasks=cfg.model.tasks, count=args.scenes,
                            size=args.size, seed=0, root=root, progress=False)
    torch.manual_seed(0)
    plain = VTAGML(cfg.model)
    fast = copy.deepcopy(plain)
    plain.train(), fast.train()
    loss_fn = MultiTaskLoss(plain.tasks)
    opt_plain = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=LEARNING_RATE)
    opt_fast = torch.optim.Adam([p for p in fast.parameters() if p.requires_grad], lr=LEARNING_RATE)

    t0 = time.perf_counter()
    cached = CachedFeatureDataset(data, fast.backbone, progress=False)
    build = time.perf_counter() - t0
    print(f"VTAGML {cfg.model.tasks} at {args.size} px, {args.scenes} scenes, batch {args.batch}, "
          f"{torch.get_num_threads()} threads; cache built in {build:.2f} s "
          f"({cached.nbytes / 2**20:.1f} MiB)")
    times: dict[str, list[float]] = {"without cache": [], "with cache": []}
    for e in range(args.epochs):
        order = [("without cache", False), ("with cache", True)]
        for name, use_cache in order if e % 2 == 0 else order[::-1]:
            model, opt = (fast, opt_fast) if use_cache else (plain, opt_plain)
            secs = epoch(model, cached if use_cache else data, loss_fn, opt, args.batch, e, use_cache)
            times[name].append(secs)
            print(f"  epoch {e}  {name:13s}  {secs:7.2f} s")
    slow, quick = statistics.median(times["without cache"]), statistics.median(times["with cache"])
    ratio = slow / quick
    print(f"median epoch: without cache {slow:.2f} s, with cache {quick:.2f} s -> {ratio:.2f}x "
          f"({'meets' if ratio >= TARGET_RATIO else 'misses'} the {TARGET_RATIO:.0f}x target); "
          f"first epoch including the cache build: {slow / (quick + build):.2f}x")

    parts = breakdown(plain, data, loss_fn, opt_plain, args.batch)
    step = sum(parts.values())
    print(f"one uncached training step of batch {args.batch} (median of {PROFILE_BATCHES}): {step:.3f} s")
    for name, secs in parts.items():
        print(f"  {name:26s} {secs:7.3f} s  {100 * secs / step:5.1f} %")
    print(f"at most the backbone's share can be saved: ceiling {step / (step - parts['backbone forward']):.2f}x")


if __name__ == "__main__":
    main()
