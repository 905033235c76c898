"""Evaluate a model over a whole split (accumulate over the split, never average batches),
a trained run's best model on any split of any domain (cached in the run folder), and any
checkpoint folder on any dataset split (:func:`evaluate_checkpoint`, the ``evaluate`` command)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from vtagml_core.baselines.factory import load_model
from vtagml_core.config import ConfigError, apply_overrides, from_dict
from vtagml_core.data.config import DataConfig, build_dataset
from vtagml_core.data.transforms import resize_images
from vtagml_core.metrics.multitask import MultiTaskMetrics
from vtagml_core.model.checkpoint import read_checkpoint_info
from vtagml_core.runtime import resolve_device
from vtagml_core.tasks import IGNORE_INDEX, parse_tasks
from vtagml_core.train.config import KitConfig
from vtagml_core.train.state import BEST_DIR, LAST_DIR, RUN_CONFIG_FILE
from vtagml_core.train.step import move_batch

from .runs import EVALS_SUBDIR, RunRecord


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], tasks: Iterable[str], num_classes: int,
             device: torch.device | str = "cpu", *, ignore_index: int = IGNORE_INDEX,
             input_size: int | None = None, edge_max_dist: float | None = None) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``model`` over every batch of ``batches``.

    The model is put in eval mode for the pass and restored to its previous mode afterwards.

    Args:
        ignore_index: the dataset's seg label for unlabelled pixels.
        input_size: the model's square input side; images of another size (a real dataset read
            at its native resolution) are resized to it for the model, and the predictions are
            resized back to the labels (:func:`~vtagml_core.metrics.multitask.resize_to_label`),
            so the labels are scored as they are on disk.
        edge_max_dist: the dataset's edge matching distance as a fraction of the label's
            diagonal (:attr:`~vtagml_core.data.config.DatasetInfo.edge_max_dist`); None: the
            synthetic benchmark's fixed pixels.
    """
    metrics = MultiTaskMetrics(list(tasks), num_classes, ignore_index=ignore_index, edge_max_dist=edge_max_dist)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = move_batch(batch, device)
            images = batch["image"]
            if input_size is not None and tuple(images.shape[-2:]) != (input_size, input_size):
                images = resize_images(images, (input_size, input_size))
            metrics.update(model(images), batch)
    finally:
        model.train(was_training)
    return metrics.compute()


def eval_name(domain: str, split: str, count: int, size: int, data_seed: int,
              tasks: Sequence[str]) -> str:
    """File stem of a cached evaluation: which split of which domain, which tasks."""
    return f"{domain}-{split}-n{count}-{size}px-s{data_seed}-{'_'.join(tasks)}"


def evaluate_run(record: RunRecord, cfg: KitConfig, domain: str, split: str = "test",
                 tasks: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of ``record``'s best model on ``domain``'s ``split`` (cached in the run folder).

    The split's scene count is ``cfg.data.<split>_count``; size and data seed are ``cfg.data``'s.
    """
    d = cfg.data
    counts = {"train": d.train_count, "val": d.val_count, "test": d.test_count}
    if split not in counts:
        raise ValueError(f"split must be one of {', '.join(counts)}, got {split!r}")
    tasks = parse_tasks(tasks) if tasks is not None else tuple(record.results["tasks"])
    path = record.dir / EVALS_SUBDIR / f"{eval_name(domain, split, counts[split], d.size, d.seed, tasks)}.json"
    if path.is_file():
        return json.loads(path.read_text())["metrics"]
    device = resolve_device(cfg.train.device)
    ds = build_dataset(d, split, tasks, domain=domain, progress=cfg.train.progress)
    loader = DataLoader(ds, batch_size=d.batch_size, generator=torch.Generator())
    model = record.model(device)
    metrics = evaluate(model, loader, tasks, model.num_classes, device)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"domain": domain, "split": split, "count": counts[split],
                                "size": d.size, "tasks": list(tasks), "metrics": metrics}, indent=2))
    return metrics



@dataclass
class CheckpointEvaluation:
    """The metrics of one checkpoint on one dataset split, and where they come from.

    Attributes:
        metrics: ``{task: {metric: value}}``.
        model_dir: the model folder evaluated; method: its method.
        dataset, root, split, images: which data (``root`` None for synthetic).
        input_size: the model's square input side.
        label_resolution: ``"native"`` (labels as stored, predictions resized to them) or
            ``"<S>x<S>"`` (labels resized to the input size, the synthetic benchmark's own).
        backbone, weights: backbone name and where its weights came from.
        tasks: the tasks scored; skipped: the model's tasks the dataset has no labels for.
    """

    metrics: dict[str, dict[str, float]]
    model_dir: Path
    method: str
    dataset: str
    root: str | None
    split: str
    images: int
    input_size: int
    label_resolution: str
    backbone: str
    weights: str
    tasks: tuple[str, ...]
    skipped: tuple[str, ...] = field(default_factory=tuple)

    def header(self) -> list[str]:
        """Lines naming the checkpoint, dataset, split, resolution and backbone weights."""
        where = f" at {self.root}" if self.root else ""
        lines = [f"checkpoint: {self.model_dir} ({self.method})",
                 f"dataset: {self.dataset}{where}, split {self.split} ({self.images} images)",
                 f"resolution: model input {self.input_size}x{self.input_size}, metrics at "
                 + ("the labels' native resolution (predictions resized to each label)"
                    if self.label_resolution == "native" else f"{self.label_resolution}"),
                 f"backbone: {self.backbone}, weights: {self.weights}"]
        if self.skipped:
            lines.append(f"not scored: {', '.join(self.skipped)} (no such labels in {self.dataset})")
        return lines


def checkpoint_folders(path: str | Path, which: str = BEST_DIR) -> tuple[Path, dict | None]:
    """``(model folder, run config or None)`` of ``path``: a run folder (the trainer's or the
    run store's: ``config.json`` + ``best/`` / ``last/``) or a model folder itself.

    Raises:
        FileNotFoundError: ``path`` is neither (names what was looked for).
    """
    path = Path(path)
    if which not in (BEST_DIR, LAST_DIR):
        raise ValueError(f"checkpoint must be {BEST_DIR!r} or {LAST_DIR!r}, got {which!r}")
    if (path / which).is_dir() and (path / RUN_CONFIG_FILE).is_file():
        try:
            run_config = json.loads((path / RUN_CONFIG_FILE).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path / RUN_CONFIG_FILE} is not valid JSON ({err}); the run folder is "
                             "damaged: evaluate its model folder directly (--run DIR/best)") from err
        return path / which, run_config
    if (path / RUN_CONFIG_FILE).is_file() and not (path / BEST_DIR).exists() and not (path / LAST_DIR).exists():
        return path, None  # a model folder (save_model)
    raise FileNotFoundError(f"{path} is not a run folder with {which}/ nor a model folder (config.json + "
                            "model.safetensors): pass the --out folder of a training run, a run of the "
                            "store, or one of their best/ or last/ folders")


def evaluate_checkpoint(path: str | Path, split: str = "val", overrides: Sequence[str] = (),
                        tasks: str | Iterable[str] | None = None, which: str = BEST_DIR,
                        native: bool = True, progress: bool = False) -> CheckpointEvaluation:
    """Metrics of the checkpoint at ``path`` on ``split`` of the data the config describes.

    The config is the run's (its ``config.json``; a bare model folder: defaults at the model's
    image size) with ``overrides`` (``data.*`` or ``train.device``: the model comes from the
    checkpoint) applied, e.g. ``["data.dataset=nyud", "data.root=/data/NYUD_MT"]``; an override
    of ``data.dataset`` drops the run's ``data.root`` and ``data.split_file`` (they belong to
    the run's dataset). The data are
    opened and checked before the model is loaded.

    Args:
        path: see :func:`checkpoint_folders`; which: ``best`` or ``last`` of a run folder.
        split: the dataset's split (``val``, ``train``, ``test``).
        tasks: the tasks to score (default: the model's tasks the dataset has labels for).
        native: real data: score at the labels' native resolution (default); False: at the
            model's input size, as the trainer's validation does.

    Raises:
        ValueError / FileNotFoundError: each naming what to change (a model override, a task
            the dataset or the model lacks, a class count that differs from the dataset's, a
            missing or broken dataset tree).
    """
    model_dir, run_config = checkpoint_folders(path, which)
    method, model_cfg, _ = read_checkpoint_info(model_dir)
    bad = [o for o in overrides if not o.split("=", 1)[0].strip().startswith(("data.", "train.device"))]
    if bad:
        raise ValueError(f"--set {bad[0]}: evaluate takes data.* and train.device overrides only; the "
                         "model (tasks, classes, backbone) comes from the checkpoint")
    if run_config is not None:
        try:
            cfg = from_dict(KitConfig, run_config["config"], str(Path(path) / RUN_CONFIG_FILE))
        except (KeyError, ConfigError) as err:
            raise ValueError(f"{Path(path) / RUN_CONFIG_FILE} is not a run config of this kit ({err}); "
                             "evaluate its model folder directly (--run DIR/best)") from err
    else:
        cfg = KitConfig(model=model_cfg)
        cfg.data.size = model_cfg.backbone.img_size
    if any(o.split("=", 1)[0].strip() == "data.dataset" for o in overrides):
        # Another dataset: its own location, from --set; the run's training augmentations do not apply.
        for key, default in DataConfig.real_data_defaults().items():
            setattr(cfg.data, key, default)
    cfg = apply_overrides(cfg, list(overrides))
    cfg.model = model_cfg
    cfg.validate()
    data = cfg.data
    info = data.info()
    if tasks is None:
        scored = tuple(t for t in parse_tasks(model_cfg.tasks) if t in info.tasks)
        if not scored:
            raise ValueError(f"the model's tasks ({model_cfg.tasks}) have no labels in data.dataset="
                             f"{data.dataset}, which has {', '.join(info.tasks)}")
    else:
        scored = data.check_tasks(tasks, what="--tasks")
        extra = [t for t in scored if t not in parse_tasks(model_cfg.tasks)]
        if extra:
            raise ValueError(f"the model has no {', '.join(extra)} head (its tasks: {model_cfg.tasks}); "
                             "drop it from --tasks")
    if "seg" in scored and model_cfg.resolved_num_classes() != info.num_classes:
        others = [t for t in scored if t != "seg"]
        raise ValueError(
            f"the model segments {model_cfg.resolved_num_classes()} classes but data.dataset={data.dataset} "
            f"has {info.num_classes}: evaluate it on its own dataset"
            + (f", or leave seg out: --tasks {','.join(others)}" if others else ""))
    native = native and not data.is_synthetic
    dataset = build_dataset(data, split, scored, native_size=native, progress=progress)
    # Native sizes may differ between images: one image per batch then.
    loader = DataLoader(dataset, batch_size=1 if native else data.batch_size, generator=torch.Generator(),
                        num_workers=data.num_workers)
    device = resolve_device(cfg.train.device)
    model = load_model(model_dir, map_location=device)
    metrics = evaluate(model, loader, scored, model.num_classes, device, ignore_index=info.ignore_index,
                       input_size=data.size, edge_max_dist=info.edge_max_dist)
    return CheckpointEvaluation(
        metrics=metrics, model_dir=model_dir, method=method, dataset=data.dataset,
        root=data.root, split=split, images=len(dataset), input_size=data.size,
        label_resolution="native" if native else f"{data.size}x{data.size}",
        backbone=model_cfg.backbone.name, weights=model_cfg.backbone.describe_weights(),
        tasks=scored, skipped=tuple(t for t in parse_tasks(model_cfg.tasks) if t not in scored))


__all__ = ["CheckpointEvaluation", "checkpoint_folders", "eval_name",
           "evaluate", "evaluate_checkpoint", "evaluate_run"]
