"""Efficiency (paper Sec. 4.2, Table 6): parameters and training time per epoch, side by side.

For each method on the S-D-N-E task set (``single_task`` = one model per task, summed, as a
multitask system made of single-task models would cost) the table gives

- **total and trainable parameters** (the model's parameter report; the frozen backbone counts
  in the total, not in the trainable);
- **training seconds per step**, measured here, all methods in one process on the same data and
  machine, **interleaved** (step i of every method, then step i + 1 of every method, ...), so a
  change of machine load hits every method alike. ``efficiency_warmup_steps`` untimed steps
  first, then ``efficiency_steps`` timed ones; a step is timed from fetching its batch to the end
  of the optimizer step (forward, losses, backward, TROA update, Adam), like a training epoch;
- **seconds per epoch** = seconds per step x steps per epoch of the configured training split
  (``data.train_count / data.batch_size``), the paper's unit scaled to the kit's split;
- the **feature cache fill**, paid once per run by methods with a frozen backbone
  (:mod:`vtagml_core.train.feature_cache`): backbone seconds per image x training images;
- where the full training runs of the MTL setting exist under the same root, their measured
  seconds per epoch (nothing is trained for that column).

The trainers run on the first ``(warmup + steps) x batch`` training scenes only (the timing
needs no more); their run folders are scratch folders, deleted at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import torch
from torch.utils.data import Subset

from vtagml_core.tasks import parse_tasks
from vtagml_core.train.schedule import steps_per_epoch
from vtagml_core.train.state import RESULTS_FILE

from vtagml_core.experiments.runs import RunSpec, is_complete, run_dir
from vtagml_core.experiments.seeds import summarize
from .context import SettingContext, column, row, setting_document
from .mtl import METHOD_LABELS

#: Scratch folder (under the settings root) of the timing trainers; deleted afterwards.
SCRATCH_SUBDIR: str = "scratch"
#: Backbone forwards averaged to time the feature cache fill.
CACHE_TIMING_REPEATS: int = 2
#: The efficiency claim checked in the notes (engine issue: VTAGML epoch within 1.5x vanilla MTL).
MAX_VTAGML_OVER_VANILLA: float = 1.5


def _members(ctx: SettingContext, method: str, tasks: str, seed: int) -> list[tuple[str, Any]]:
    """``[(member method, kit config)]``: one model, or one per task for ``single_task``."""
    if method == "single_task":
        return [("single_task", ctx.config(t, seed=seed)) for t in parse_tasks(tasks)]
    return [(method, ctx.config(tasks, seed=seed))]


def _subsets(ctx: SettingContext, tasks: str, n_images: int) -> tuple[Subset, Subset]:
    from vtagml_core.data.config import build_dataset

    d = ctx.cfg.data
    kw = dict(domain=ctx.settings.source, progress=ctx.cfg.train.progress)
    train = build_dataset(d, "train", tasks, **kw)
    val = build_dataset(d, "val", tasks, **kw)
    if n_images > len(train):
        raise ValueError(f"timing needs {n_images} training scenes, the split has {len(train)}: "
                         "lower efficiency_steps or raise data.train_count")
    return Subset(train, range(n_images)), Subset(val, range(min(d.batch_size, len(val))))


@torch.no_grad()
def backbone_seconds_per_image(trainer, batch: dict) -> float:
    """Seconds per image of the frozen backbone forward (what filling the feature cache costs)."""
    images = batch["image"].to(trainer.device)
    trainer.model.backbone(images)  # warm-up
    t0 = time.perf_counter()
    for _ in range(CACHE_TIMING_REPEATS):
        trainer.model.backbone(images)
    return (time.perf_counter() - t0) / (CACHE_TIMING_REPEATS * images.shape[0])


def full_run_epoch_seconds(ctx: SettingContext, method: str, tasks: str, seed: int) -> float | None:
    """Seconds per epoch of the finished full training run(s) of ``method``, if all exist."""
    total = 0.0
    for member, cfg in _members(ctx, method, tasks, seed):
        folder = run_dir(ctx.store, RunSpec("", cfg, member))
        if not is_complete(folder):
            return None
        spe = json.loads((folder / RESULTS_FILE).read_text()).get("seconds_per_epoch")
        if spe is None:
            return None
        total += spe
    return total


def measure(ctx: SettingContext) -> dict[str, dict[str, Any]]:
    """Parameters and interleaved step timings of every efficiency method (module docstring)."""
    from vtagml_core.train.trainer import Trainer

    s, d = ctx.settings, ctx.cfg.data
    tasks, seed = s.efficiency_tasks, ctx.seeds[0]
    n_steps = s.efficiency_warmup_steps + s.efficiency_steps
    train, val = _subsets(ctx, tasks, n_steps * d.batch_size)
    scratch = ctx.root / SCRATCH_SUBDIR / f"efficiency-{os.getpid()}"
    trainers: dict[str, list] = {}
    try:
        for method in s.efficiency_methods:
            trainers[method] = []
            for i, (member, cfg) in enumerate(_members(ctx, method, tasks, seed)):
                cfg.train.progress = False
                trainers[method].append(Trainer(cfg, scratch / f"{method}-{i}", method=member,
                                                train_set=train, val_set=val))
        ctx.log(f"  timing {', '.join(trainers)}: {s.efficiency_warmup_steps} warm-up + "
                f"{s.efficiency_steps} timed steps each, interleaved")
        loaders = {(m, i): iter(t.train_loader(0)) for m, ts in trainers.items() for i, t in enumerate(ts)}
        step_s: dict[str, list[float]] = {m: [0.0] * s.efficiency_steps for m in trainers}
        for step in range(n_steps):
            for (m, i), loader in loaders.items():
                trainer = trainers[m][i]
                t0 = time.perf_counter()
                trainer.training_step(next(loader))
                trainer.scheduler.step()
                if step >= s.efficiency_warmup_steps:
                    step_s[m][step - s.efficiency_warmup_steps] += time.perf_counter() - t0
        first = next(iter(torch.utils.data.DataLoader(train, batch_size=d.batch_size)))
        out = {}
        for m, ts in trainers.items():
            params = [t.model.parameter_report()[-1] for t in ts]
            cached = [t for t in ts if t.use_feature_cache]
            out[m] = {"total": sum(p["total"] for p in params),
                      "trainable": sum(p["trainable"] for p in params),
                      "step_seconds": step_s[m], "members": len(ts),
                      "cache_fill_seconds": (sum(backbone_seconds_per_image(t, first) for t in cached)
                                             * d.train_count if cached else None)}
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_efficiency(ctx: SettingContext) -> dict[str, Any]:
    """Table 6's shape: parameters, seconds per step and per epoch, measured side by side."""
    started = time.perf_counter()
    s, d = ctx.settings, ctx.cfg.data
    tasks, seed = s.efficiency_tasks, ctx.seeds[0]
    measured = measure(ctx)
    epoch_steps = steps_per_epoch(d.train_count, d.batch_size)
    ref = measured.get("vtagml")
    columns = [column("total", "# parameters (M, total)↓", "params", lower_is_better=True),
               column("trainable", "# parameters (M, trainable)↓", "params", lower_is_better=True),
               column("step", "s per step↓", "seconds", lower_is_better=True),
               column("epoch", f"training s per epoch ({epoch_steps} steps)↓", "seconds",
                      lower_is_better=True),
               column("vs_vtagml", "epoch time / VTAGML's", "ratio"),
               column("cache", "feature cache fill (s, once per run)", "seconds"),
               column("full_run", "s per epoch in the full training run", "seconds")]
    rows = []
    ratios = {}
    for m, r in measured.items():
        step = summarize(r["step_seconds"])
        epoch = summarize([v * epoch_steps for v in r["step_seconds"]])
        cells = {"total": summarize([r["total"]]), "trainable": summarize([r["trainable"]]),
                 "step": step, "epoch": epoch}
        if ref is not None:
            ratios[m] = step["mean"] / summarize(ref["step_seconds"])["mean"]
            cells["vs_vtagml"] = summarize([ratios[m]])
        if r["cache_fill_seconds"] is not None:
            cells["cache"] = summarize([r["cache_fill_seconds"]])
        full = full_run_epoch_seconds(ctx, m, tasks, seed)
        if full is not None:
            cells["full_run"] = summarize([full])
        label = METHOD_LABELS.get(m, m) + (f" x {r['members']} summed" if r["members"] > 1 else "")
        rows.append(row(label, cells, method=m))
    notes = [f"Task set {tasks}; all methods timed in one process, interleaved step by step "
             f"({s.efficiency_warmup_steps} warm-up + {s.efficiency_steps} timed steps of batch "
             f"{d.batch_size}); cells: mean ± std over the timed steps. Seconds per epoch = seconds "
             f"per step x {epoch_steps} steps ({d.train_count} scenes / batch {d.batch_size}).",
             f"Measured on {_device_line(ctx)}, torch threads {torch.get_num_threads()}; timings depend "
             "on the machine's load at the time (interleaving spreads it evenly over the methods)."]
    if "vtagml" in ratios and "vanilla_mtl" in ratios:
        r = 1.0 / ratios["vanilla_mtl"]
        notes.append(f"VTAGML epoch / vanilla-MTL epoch = {r:.2f} (target: <= {MAX_VTAGML_OVER_VANILLA}; "
                     f"{'met' if r <= MAX_VTAGML_OVER_VANILLA else 'NOT met'}).")
    return setting_document(ctx, "efficiency", "Parameters and training time",
                            {**ctx.where(s.source, "train"), "seeds": [seed]}, columns, rows, notes,
                            started, epoch_steps=epoch_steps)


def _device_line(ctx: SettingContext) -> str:
    from vtagml_core.runtime import resolve_device

    dev = resolve_device(ctx.cfg.train.device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({os.cpu_count()} cores)"


__all__ = ["MAX_VTAGML_OVER_VANILLA", "backbone_seconds_per_image", "full_run_epoch_seconds",
           "measure", "run_efficiency"]
