"""What a run is set up from before its first step, for :class:`~vtagml_core.train.trainer.Trainer`.

The config made ready (:func:`prepare_run_config`: fitted to the data, the backbone's
``weights: pretext`` resolved to its file, a random-init backbone said plainly), a real
dataset's splits opened and checked before the run folder is touched (:func:`open_real_data`),
the datasets (:func:`build_datasets`), the task loss (:func:`build_task_loss`), the loss
balancer (:func:`build_run_balancer`) and whether the frozen backbone's features may be cached
(:func:`feature_cache_allowed`).

**Loss balancing** (``train.balancer``, :mod:`vtagml_core.train.balancing`): a loss-weighting
balancer (uncertainty, DWA) turns the lambda-weighted task losses into the total; a
gradient-based one (GradNorm, PCGrad, CAGrad) replaces ``total.backward()`` by one backward per
task and its own combination of the shared parameters' gradients. Either way the per-task
adapter leaves end with the same gradients as under ``total.backward()``, so TROA's update
that follows is unchanged (:mod:`vtagml_core.train.balancing.base`). A method with its own
``weight_losses`` (MTFormer) only runs with ``equal``; gradient-based balancers run in one
process (each task's backward would need its own all-reduce under DDP).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vtagml_core.data.config import DataConfig, build_dataset
from vtagml_core.train.config import KitConfig, TrainConfig

from .balancing import Balancer, build_balancer
from .distributed import DistContext, barrier
from .class_weights import class_pixel_counts, class_weights_from_frequencies
from .losses import MultiTaskLoss
from .pretrain import resolve_backbone_weights
from .state import backbone_frozen


def prepare_run_config(cfg: KitConfig, init_from: str | Path | None,
                       log: Callable[[str], None] = print) -> KitConfig:
    """``cfg`` validated, fitted to its data (real data: its tasks and class count) and with the
    backbone's ``weights: pretext`` replaced by its file; warns when the backbone starts from
    random weights and no ``init_from`` model brings trained ones."""
    cfg.validate().model.fit_to_data(cfg.data)  # real data: its tasks and class count
    cfg = resolve_backbone_weights(cfg, log)  # weights: pretext -> its file
    bb = cfg.model.backbone
    if bb.random_init and init_from is None:
        log(f"warning: the backbone {bb.name} starts from random weights "
            f"(model.backbone.weights={bb.weights or 'null'}): its features carry no "
            "pretraining, and every number of this run says so in its provenance. Set "
            "model.backbone.weights=pretext (the kit's pretrained one) or a weights file.")
    return cfg


def open_real_data(data_cfg: DataConfig, train_set: Dataset | None, val_set: Dataset | None,
                   loss_tasks: tuple[str, ...], tasks: tuple[str, ...],
                   ) -> tuple[Dataset | None, Dataset | None]:
    """Open the real dataset's splits before the run folder is touched.

    Opening a reader checks the layout, the split list and every file's existence (``stat``
    only); the first sample of each split is decoded too, so a tree in the wrong format
    stops the run with nothing written (a corrupt file further in is named when it is read).
    """
    if train_set is None:
        train_set = build_dataset(data_cfg, "train", loss_tasks, augment=True)
        train_set[0]
    if val_set is None:
        val_set = build_dataset(data_cfg, "val", tasks)
        val_set[0]
    return train_set, val_set


def build_datasets(data_cfg: DataConfig, ctx: DistContext, show: bool, train_set: Dataset | None,
                   val_set: Dataset | None, loss_tasks: tuple[str, ...],
                   tasks: tuple[str, ...]) -> tuple[Dataset, Dataset]:
    """The given datasets, or ``data_cfg``'s splits (synthetic: rank 0 renders first, the
    others wait; real data was opened in :func:`open_real_data`)."""
    if train_set is not None and val_set is not None:
        return train_set, val_set
    if not ctx.is_main:
        barrier(ctx)
    train = (build_dataset(data_cfg, "train", loss_tasks, progress=show, augment=True)
             if train_set is None else train_set)
    val = build_dataset(data_cfg, "val", tasks, progress=show) if val_set is None else val_set
    if ctx.is_main:
        barrier(ctx)
    return train, val


def build_task_loss(tc: TrainConfig, loss_tasks: tuple[str, ...], train_set: Dataset,
                    num_classes: int) -> MultiTaskLoss:
    """lambda-weighted sum over ``loss_tasks``; seg CE weighted by train-split frequencies."""
    weights = None
    if "seg" in loss_tasks and tc.class_weight_power > 0:
        counts = torch.zeros(num_classes, dtype=torch.long)
        for batch in DataLoader(train_set, batch_size=64, generator=torch.Generator()):
            counts += class_pixel_counts(batch["seg"], num_classes)
        weights = class_weights_from_frequencies(counts, tc.class_weight_power)
    lambdas = {t: w for t, w in tc.task_weights.items() if t in loss_tasks}
    return MultiTaskLoss(loss_tasks, lambdas or None, tc.depth_loss, tc.edge_loss, weights,
                         normals_loss=tc.normals_loss)


def check_weighted_objective(tc: TrainConfig, model: nn.Module) -> None:
    """Refuse combinations the weighted objective does not define (messages say what to do)."""
    if tc.balancer != "equal" or hasattr(model, "weight_losses"):
        raise ValueError(
            "model.adapter.weighted_objective sets the loss weights itself (omega), so it "
            f"cannot be combined with train.balancer={tc.balancer!r}: use "
            "train.balancer=equal, or model.adapter.weighted_objective=false")


def build_run_balancer(tc: TrainConfig, loss_tasks: tuple[str, ...], model: nn.Module,
                       method: str, distributed: bool) -> Balancer:
    """``train.balancer`` over ``loss_tasks`` (see the module docstring for what it may not do)."""
    balancer = build_balancer(tc.balancer, loss_tasks, **dict(tc.balancer_options))
    if getattr(model, "weighted_objective", False):
        check_weighted_objective(tc, model)
    if tc.balancer != "equal" and hasattr(model, "weight_losses"):
        raise ValueError(
            f"method {method!r} learns its own loss weights (weight_losses); it cannot also "
            f"use train.balancer={tc.balancer!r}: set train.balancer=equal for this method")
    if balancer.gradient_based and distributed:
        raise ValueError(
            f"train.balancer={tc.balancer!r} needs each task's gradient, which this kit only "
            "computes in a single process: run without torchrun, or use equal/uncertainty/dwa")
    return balancer


def feature_cache_allowed(tc: TrainConfig, model: nn.Module, train_set: Dataset,
                          val_set: Dataset) -> bool:
    """``train.feature_cache`` with a frozen backbone, unless a split augments its images
    (``augments_images``: a real train split, :mod:`vtagml_core.data.augment`)."""
    frozen = backbone_frozen(model)
    augments = any(getattr(ds, "augments_images", False) for ds in (train_set, val_set))
    return bool(tc.feature_cache and frozen and not augments)


__all__ = ["build_datasets", "build_run_balancer", "build_task_loss", "check_weighted_objective",
           "feature_cache_allowed", "open_real_data", "prepare_run_config"]
