"""Trivial predictors that any trained model must beat (a sanity floor for every table).

Majority class for segmentation, the training-set mean depth, the mean normal direction, and
the mean edge value everywhere (with odsF's threshold sweep this is the "edge everywhere"
predictor, which scores well above zero when edges are dense). They answer "did the model learn anything real?" on the same metrics and split.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from vtagml_core.tasks import IGNORE_INDEX

from .multitask import MultiTaskMetrics

#: Logit magnitude that makes the constant segmentation prediction one-hot after argmax.
_ONE_HOT_LOGIT = 1.0
#: Clamp of the mean edge value before taking its logit.
_EDGE_EPS = 1e-4


def fit_trivial(batches: Iterable[dict], tasks: Iterable[str], num_classes: int) -> dict[str, Tensor]:
    """Statistics of the training batches: class counts, mean depth, mean normal."""
    tasks = list(tasks)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    depth_sum, depth_n = 0.0, 0
    normal_sum = torch.zeros(3, dtype=torch.float64)
    edge_sum, edge_n = 0.0, 0
    for b in batches:
        if "seg" in tasks:
            s = b["seg"][b["seg"] != IGNORE_INDEX]
            counts += torch.bincount(s.flatten(), minlength=num_classes).double()
        valid = b["valid"][:, 0]
        if "depth" in tasks:
            d = b["depth"][:, 0][valid & (b["depth"][:, 0] > 0)]
            depth_sum, depth_n = depth_sum + float(d.double().sum()), depth_n + d.numel()
        if "normals" in tasks:
            normal_sum += b["normals"].permute(0, 2, 3, 1)[valid].double().sum(0)
        if "edges" in tasks:
            edge_sum, edge_n = edge_sum + float(b["edges"].double().sum()), edge_n + b["edges"].numel()
    edge_mean = min(max(edge_sum / max(edge_n, 1), _EDGE_EPS), 1 - _EDGE_EPS)
    return {"majority": counts.argmax(), "depth": torch.tensor(depth_sum / max(depth_n, 1)),
            "normal": normal_sum / normal_sum.norm().clamp_min(1e-12),
            "edge_logit": torch.logit(torch.tensor(edge_mean))}


def trivial_outputs(stats: dict[str, Tensor], batch: dict, tasks: Iterable[str],
                    num_classes: int) -> dict[str, Tensor]:
    """Raw outputs (as a model's heads would give) of the constant predictors for ``batch``."""
    B, _, H, W = batch["image"].shape
    out: dict[str, Tensor] = {}
    for t in tasks:
        if t == "seg":
            logits = torch.zeros(B, num_classes, H, W)
            logits[:, int(stats["majority"])] = _ONE_HOT_LOGIT
            out[t] = logits
        elif t == "depth":
            out[t] = torch.full((B, 1, H, W), float(stats["depth"]))
        elif t == "normals":
            out[t] = stats["normal"].float().view(1, 3, 1, 1).expand(B, 3, H, W).clone()
        elif t == "edges":
            out[t] = torch.full((B, 1, H, W), float(stats["edge_logit"]))
    return out


def evaluate_trivial(train_batches: Iterable[dict], eval_batches: Iterable[dict],
                     tasks: Iterable[str], num_classes: int) -> dict[str, dict[str, float]]:
    """Metrics of the trivial predictors fitted on ``train_batches``, over ``eval_batches``."""
    tasks = list(tasks)
    stats = fit_trivial(train_batches, tasks, num_classes)
    metrics = MultiTaskMetrics(tasks, num_classes)
    for b in eval_batches:
        metrics.update(trivial_outputs(stats, b, tasks, num_classes), b)
    return metrics.compute()
