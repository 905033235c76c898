"""Multitask evaluation over a split (paper Sec. 4): one metric object per task.

The paper's tables report one headline number per task: mIoU % (seg, higher is better), RMSE
(depth, lower), mErr = mean angular error in degrees (normals, lower) and odsF (edges, higher).
:data:`PRIMARY_METRICS` names them, :data:`METRIC_DIRECTIONS` says which way is better for
every quality metric the kit computes (delta_m and tables use it).

Usage::

    metrics = MultiTaskMetrics(("seg", "depth"), num_classes=8)
    for batch in loader:
        metrics.update(model(batch["image"]), batch)   # raw head outputs
    metrics.compute()   # {"seg": {"mIoU": ..., "pixel_acc": ...}, "depth": {"rmse": ..., ...}}

The per-task classes live in :mod:`metrics_dense` (seg, depth, normals) and
:mod:`metrics_edges` (edges) and are re-exported here.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from vtagml_core.metrics.base import AccumulatingMetric
from vtagml_core.metrics.dense import DepthMetrics, NormalMetrics, SegMetrics
from vtagml_core.metrics.edges import DEFAULT_EDGE_THRESHOLDS, EdgeMetrics
from vtagml_core.metrics.predictions import to_prediction
from vtagml_core.tasks import IGNORE_INDEX, parse_tasks

__all__ = [
    "AccumulatingMetric",
    "SegMetrics",
    "DepthMetrics",
    "NormalMetrics",
    "EdgeMetrics",
    "MultiTaskMetrics",
    "resize_to_label",
    "METRIC_DIRECTIONS",
    "PRIMARY_METRICS",
    "FRACTION_METRICS",
]

#: The headline metric of each task in the paper's tables (keys of each task's compute()).
PRIMARY_METRICS: dict[str, str] = {"seg": "mIoU", "depth": "rmse", "normals": "mean", "edges": "odsF"}

#: Metric name -> True when lower is better (l_i = 1 in delta_m). Covers every quality metric
#: the task metrics return; "ods_threshold" is a setting, not a quality, and is left out.
#: Names are shared across tasks where they mean the same direction ("rmse": depth error in
#: scene units, angular error in degrees for normals; both lower is better).
METRIC_DIRECTIONS: dict[str, bool] = {
    # seg
    "mIoU": False,
    "pixel_acc": False,
    # depth
    "rmse": True,
    "mae": True,
    "abs_rel": True,
    "sq_rel": True,
    "rmse_log10": True,
    "delta1": False,
    "delta2": False,
    "delta3": False,
    # normals (degrees, and fractions within a threshold)
    "mean": True,
    "median": True,
    "within_11.25": False,
    "within_22.5": False,
    "within_30": False,
    # edges
    "odsF": False,
    "precision": False,
    "recall": False,
}

#: Metrics returned as fractions in [0, 1] that tables show as percentages.
FRACTION_METRICS: frozenset[str] = frozenset(
    {"mIoU", "pixel_acc", "delta1", "delta2", "delta3", "within_11.25", "within_22.5",
     "within_30", "odsF", "precision", "recall"}
)

#: Tasks scored only where the batch's "valid" mask is True. Segmentation labels and edges
#: exist where depth/normals do not (e.g. sky), so they are scored on their own terms
#: (seg: labels != IGNORE_INDEX; edges: every pixel).
_USES_VALID_MASK: dict[str, bool] = {"seg": False, "depth": True, "normals": True, "edges": False}


def resize_to_label(raw: Tensor, label: Tensor) -> Tensor:
    """``raw`` (B, C, h, w) head outputs, bilinearly resized to ``label``'s (H, W) if they differ.

    Evaluation at the labels' native resolution: the prediction follows the label, never the
    other way round (resampling labels would change what is scored).
    """
    hw = tuple(label.shape[-2:])
    if raw.dim() != 4 or tuple(raw.shape[-2:]) == hw:
        return raw
    return F.interpolate(raw.float(), size=hw, mode="bilinear", align_corners=False)


class MultiTaskMetrics:
    """One split-level metric per task, fed with raw head outputs.

    Args:
        tasks: task names or a spec such as ``"S-D-N-E"``.
        num_classes: K, for segmentation.
        ignore_index: seg label to skip.
        edge_thresholds, edge_tolerance_px, edge_max_dist: see :class:`EdgeMetrics`
            (``thresholds``, ``tolerance_px``, ``max_dist``): the edge matching distance in
            pixels or as a fraction of the label's diagonal (a real dataset's
            ``edge_max_dist``); neither: the synthetic benchmark's fixed pixels.
    """

    def __init__(
        self,
        tasks: str | Sequence[str],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        edge_thresholds: int | Sequence[float] = DEFAULT_EDGE_THRESHOLDS,
        edge_tolerance_px: float | None = None,
        edge_max_dist: float | None = None,
    ) -> None:
        self.tasks: tuple[str, ...] = parse_tasks(tasks)
        factories = {
            "seg": lambda: SegMetrics(num_classes, ignore_index),
            "depth": DepthMetrics,
            "normals": NormalMetrics,
            "edges": lambda: EdgeMetrics(edge_thresholds, edge_tolerance_px, edge_max_dist),
        }
        self.metrics: dict[str, AccumulatingMetric] = {t: factories[t]() for t in self.tasks}

    def update(self, outputs_raw: dict[str, Tensor], batch: dict) -> None:
        """Score one batch: ``outputs_raw[task]`` (B, C, H, W) head outputs, ``batch`` labels.

        Predictions are made with :func:`~vtagml_core.metrics.predictions.to_prediction`. Head
        outputs of another spatial size than the labels (a model run at its input size, scored
        at the labels' native resolution) are resized to the labels first, bilinearly on the raw
        outputs (logits, depth, normals, edge logits); the labels are never resampled.
        """
        for task, metric in self.metrics.items():
            if task not in outputs_raw:
                raise ValueError(f"model outputs have no {task!r} head (got {sorted(outputs_raw)})")
            if task not in batch:
                raise ValueError(
                    f"batch has no {task!r} labels (keys: {sorted(batch)}); evaluate on a dataset "
                    f"built with task {task!r} or drop it from MultiTaskMetrics' tasks"
                )
            pred = to_prediction(task, resize_to_label(outputs_raw[task].detach(), batch[task]))
            valid = batch.get("valid") if _USES_VALID_MASK[task] else None
            metric.update(pred, batch[task], valid=valid)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{task: {metric name: value}}`` for every task."""
        return {task: metric.compute() for task, metric in self.metrics.items()}

    def primary(self) -> dict[str, float]:
        """``{task: value of its PRIMARY_METRICS entry}``, the paper's headline numbers."""
        results = self.compute()
        return {task: results[task][PRIMARY_METRICS[task]] for task in self.tasks}

    def reset(self) -> None:
        """Start a new split."""
        for metric in self.metrics.values():
            metric.reset()

    def accumulators(self) -> dict[str, Tensor]:
        """All tasks' accumulators, keyed ``"task/name"`` (see :mod:`metrics_base` for DDP)."""
        return {
            f"{task}/{name}": value
            for task, metric in self.metrics.items()
            for name, value in metric.accumulators().items()
        }

    def load_accumulators(self, acc: dict[str, Tensor]) -> None:
        """Inverse of :meth:`accumulators`."""
        unknown = sorted({key.split("/", 1)[0] for key in acc} - set(self.tasks))
        if unknown:
            raise ValueError(f"accumulators for tasks {unknown}, which are not among {self.tasks}")
        for task, metric in self.metrics.items():
            prefix = f"{task}/"
            metric.load_accumulators({k[len(prefix):]: v for k, v in acc.items() if k.startswith(prefix)})

    def merge(self, other: "MultiTaskMetrics") -> None:
        """Add another MultiTaskMetrics' accumulators (same tasks and settings)."""
        if other.tasks != self.tasks:
            raise ValueError(f"cannot merge metrics for tasks {other.tasks} into {self.tasks}")
        for task, metric in self.metrics.items():
            metric.merge(other.metrics[task])

    def state_dict(self) -> dict[str, Tensor]:
        """CPU copies of :meth:`accumulators` (checkpoint-safe)."""
        return {k: v.cpu() for k, v in self.accumulators().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.load_accumulators(state)
