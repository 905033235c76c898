"""From raw head outputs to predictions (paper Sec. 3.3, "Task Heads and Training").

The task heads are linear layers, so what they emit is not yet a prediction:

========  ===================  ================================================================
task      raw output           prediction (:func:`to_prediction`)
========  ===================  ================================================================
seg       logits (B, K, H, W)  unchanged; metrics take the argmax over K
depth     (B, 1, H, W) linear  clamped to >= 0 (depth is a z-buffer distance)
normals   (B, 3, H, W)         L2-normalised along the channels (unit vectors)
edges     logits (B, 1, H, W)  sigmoid probabilities in [0, 1]
========  ===================  ================================================================

Losses and metrics both use these functions, so training and evaluation read the heads the
same way. This module also holds :data:`EDGE_GT_THRESHOLD`, the one place where a soft edge
label becomes "edge / no edge" for the weighted BCE loss and for odsF.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vtagml_core.tasks import TASKS

#: An edge label (float in [0, 1], paper's 2-D Sobel texture edges) counts as an edge pixel
#: when it is >= this value. Shared by the weighted-BCE edge loss and :class:`EdgeMetrics`.
EDGE_GT_THRESHOLD: float = 0.5

#: Smallest norm used when normalising predicted normals, so a zero vector gives 0, not NaN.
NORMAL_EPS: float = 1e-6

#: Channels each raw head output must have (``None``: any number, the K classes of seg).
_EXPECTED_CHANNELS: dict[str, int | None] = {"seg": None, "depth": 1, "normals": 3, "edges": 1}


def _seg(raw: Tensor) -> Tensor:
    """Seg logits stay logits: argmax happens in the metric, softmax in the loss."""
    return raw


def _depth(raw: Tensor) -> Tensor:
    """Depth is a distance along the optical axis, so negative values are clamped to 0."""
    return raw.clamp(min=0.0)


def _normals(raw: Tensor) -> Tensor:
    """Unit vectors: ``n / max(||n||, NORMAL_EPS)`` along the channel dimension."""
    return F.normalize(raw, p=2.0, dim=1, eps=NORMAL_EPS)


def _edges(raw: Tensor) -> Tensor:
    """Edge logits -> probability of an edge at each pixel."""
    return torch.sigmoid(raw)


_CONVERTERS: dict[str, Callable[[Tensor], Tensor]] = {
    "seg": _seg,
    "depth": _depth,
    "normals": _normals,
    "edges": _edges,
}


def _check_raw(task: str, raw: Tensor) -> None:
    if task not in _CONVERTERS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if not isinstance(raw, Tensor):
        raise TypeError(f"{task}: expected a torch.Tensor head output, got {type(raw).__name__}")
    if raw.dim() != 4:
        raise ValueError(
            f"{task}: raw head output must be (B, C, H, W), got shape {tuple(raw.shape)}; "
            "add a batch dimension with .unsqueeze(0) for a single image"
        )
    expected = _EXPECTED_CHANNELS[task]
    if expected is not None and raw.shape[1] != expected:
        raise ValueError(
            f"{task}: raw head output must have {expected} channel(s), got shape "
            f"{tuple(raw.shape)}; check that the head was built with task_channels({task!r}, K)"
        )


def to_prediction(task: str, raw: Tensor) -> Tensor:
    """Turn one task's raw head output into its prediction (see the module table).

    Args:
        task: one of ``"seg"``, ``"depth"``, ``"normals"``, ``"edges"``.
        raw: head output (B, C, H, W) with C = K, 1, 3 or 1.

    Returns:
        A tensor of the same shape: seg logits, depth >= 0, unit normals (0 where the raw
        vector is 0), or edge probabilities in [0, 1]. Differentiable (losses use it too).

    Raises:
        ValueError: unknown task or a shape that does not match the task.
    """
    _check_raw(task, raw)
    return _CONVERTERS[task](raw)


def to_predictions(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """Apply :func:`to_prediction` to every task of a model's output dict ``{task: raw}``."""
    return {task: to_prediction(task, out) for task, out in raw.items()}


def binarize_edges(edges: Tensor, threshold: float = EDGE_GT_THRESHOLD) -> Tensor:
    """Soft edge map (any shape, values in [0, 1]) -> bool map, True where ``edges >= threshold``."""
    return edges >= threshold
