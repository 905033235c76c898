"""The short training run that the mechanism lessons (02 TROA, 03 TAA, 04 TSN) share.

TROA's affinity matrix, TAA's task-dependent bias and TSN's task scales only become
interesting once the model has trained: at initialisation omega is uniform and the FiLM maps
output zero, so every task looks the same. :func:`lesson_model` trains the preset's VTAGML
model for ``P.steps`` steps of :func:`vtagml_core.train.step.train_step` (TROA on) on the
``indoor`` domain, recording every step's losses and TROA's gradient cosine similarity, and
caches the result in ``<output_dir>/lesson_model/`` (safetensors + JSON, with TROA's history).
Notebook 02 trains it; 03 and 04 reload it when the parameters match, or train it themselves
when run alone.

The loop is the plain one of :mod:`vtagml_core.train.step` (no validation, no schedule) so a
reader can see every stage of a step; full training with schedules, checkpoints and
evaluation is the trainer's job (:mod:`vtagml_core.train.trainer`, notebook 05).
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vtagml_core.tasks import parse_tasks

from .params import NotebookParams

#: Folder (under the run's output_dir) and files of the cached lesson model.
LESSON_MODEL_DIR: str = "lesson_model"
RECORD_FILE: str = "record.json"
#: Task set and domain of the lesson model (all four tasks of the paper's Fig. 4).
LESSON_TASKS: str = "S-D-N-E"
LESSON_DOMAIN: str = "indoor"
#: Images per forward when counting class pixels for the segmentation class weights.
COUNT_BATCH: int = 64


@dataclass
class TrainingRecord:
    """What a short run measured, step by step.

    Attributes:
        tasks: task order of the rows/columns of ``sims``.
        batch_size: images per step.
        seconds: wall time of the training loop.
        losses: one dict per step: ``{"total": ..., task: ...}``.
        sims: ``(S, N, N)`` TROA gradient cosine similarity of every step (Algorithm 1).
    """

    tasks: tuple[str, ...]
    batch_size: int
    seconds: float
    losses: list[dict[str, float]]
    sims: Tensor

    @property
    def steps(self) -> int:
        return len(self.losses)

    def to_json(self) -> dict:
        return {"tasks": list(self.tasks), "batch_size": self.batch_size, "seconds": self.seconds,
                "losses": self.losses, "sims": self.sims.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "TrainingRecord":
        return cls(tuple(data["tasks"]), int(data["batch_size"]), float(data["seconds"]),
                   list(data["losses"]), torch.tensor(data["sims"], dtype=torch.float32))


def segmentation_class_weights(dataset: Dataset, num_classes: int, power: float) -> Tensor:
    """Cross-entropy class weights ``~ frequency^-power`` counted on ``dataset`` (DESIGN sec. 5)."""
    from vtagml_core.train.losses import class_pixel_counts, class_weights_from_frequencies

    counts = sum(class_pixel_counts(b["seg"], num_classes)
                 for b in DataLoader(dataset, batch_size=COUNT_BATCH))
    return class_weights_from_frequencies(counts, power)


def short_training(model, dataset: Dataset, steps: int, batch_size: int, lr: float, seed: int,
                   device: str, class_weight_power: float = 0.5,
                   progress: bool = False) -> TrainingRecord:
    """Train ``model`` in place for ``steps`` steps of ``train_step`` with Adam.

    Args:
        model: a VTAGML model (TROA on to record similarities).
        dataset: labelled samples for the model's tasks.
        steps, batch_size, lr, seed: the run (the seed fixes the data order).
        device: torch device name; the model is moved there.
        class_weight_power: segmentation class weighting (0 = plain cross-entropy).
        progress: show a tqdm bar.

    Raises:
        ValueError: ``steps < 1`` or a dataset smaller than one batch.
    """
    from tqdm.auto import tqdm

    from vtagml_core.train.losses import MultiTaskLoss
    from vtagml_core.train.step import move_batch, train_step

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if len(dataset) < batch_size:
        raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one batch of "
                         f"{batch_size}: render more scenes or lower the batch size")
    model.to(device).train()
    weights = None
    if "seg" in model.tasks and class_weight_power > 0:
        weights = segmentation_class_weights(dataset, model.num_classes,
                                             class_weight_power).to(device)
    loss_fn = MultiTaskLoss(model.tasks, class_weights=weights)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    batches = itertools.cycle(loader)
    n = len(model.tasks)
    losses, sims = [], []
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="training", disable=not progress):
        result = train_step(model, move_batch(next(batches), device), loss_fn, optimizer)
        losses.append({"total": result.loss, **result.task_losses})
        sim = result.similarity
        sims.append(sim if sim is not None else torch.full((n, n), float("nan")))
    seconds = time.perf_counter() - start
    model.eval()
    return TrainingRecord(tuple(model.tasks), batch_size, seconds, losses, torch.stack(sims))


def _run_key(P: NotebookParams, tasks: tuple[str, ...], domain: str) -> dict:
    """What identifies a lesson run; a cached model is reused only if all of it matches."""
    return {"preset": P.preset.name, "size": P.size, "steps": P.steps, "seed": P.seed,
            "tasks": list(tasks), "domain": domain, "batch_size": P.batch_size,
            "train_count": P.train_count, "lr": P.preset.lr}


def _load_cached(folder: Path, key: dict, device: str):
    from vtagml_core.model.checkpoint import load_model, read_model_config

    if not (folder / RECORD_FILE).is_file():
        return None
    try:
        _, meta = read_model_config(folder)
        if meta.get("lesson") != key:
            return None
        model = load_model(folder, map_location=device)
        record = TrainingRecord.from_json(json.loads((folder / RECORD_FILE).read_text()))
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError):
        return None  # stale or half-written: train again
    return model.eval(), record


def lesson_model(P: NotebookParams, tasks: str = LESSON_TASKS, domain: str = LESSON_DOMAIN,
                 retrain: bool = False, progress: bool | None = None):
    """The preset's VTAGML model after a short training run, and that run's record.

    Reuses ``<P.output_dir>/lesson_model/`` when it was made with the same preset, size,
    steps, seed, tasks, domain and batch; otherwise (or with ``retrain=True``) builds the
    model from ``P.model_config(tasks)``, trains it with :func:`short_training` on
    ``P.train_count`` scenes of ``domain`` and saves it there.

    Returns:
        ``(model in eval mode on P.device, TrainingRecord)``.
    """
    from vtagml_core.data.dataset import SyntheticDataset
    from vtagml_core.model.checkpoint import save_model
    from vtagml_core.model.vtagml import VTAGML

    from .params import seed_everything

    task_tuple = parse_tasks(tasks)
    folder = P.output_dir / LESSON_MODEL_DIR
    key = _run_key(P, task_tuple, domain)
    if not retrain:
        cached = _load_cached(folder, key, P.device)
        if cached is not None:
            return cached
    seed_everything(P.seed)
    model = VTAGML(P.model_config(tasks))
    data = SyntheticDataset(domain, "train", tasks=task_tuple, count=P.train_count, size=P.size,
                            seed=P.seed, root=P.cache_dir, progress=False)
    show = P.interactive if progress is None else progress
    record = short_training(model, data, P.steps, P.batch_size, P.preset.lr, P.seed, P.device,
                            progress=show)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_FILE).unlink(missing_ok=True)  # the record is written last: marks complete
    save_model(model, folder, meta={"lesson": key})
    tmp = folder / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record.to_json()))
    tmp.replace(folder / RECORD_FILE)
    return model, record


__all__ = ["LESSON_DOMAIN", "LESSON_TASKS", "TrainingRecord", "lesson_model",
           "segmentation_class_weights", "short_training"]
