"""Segmentation class weights from pixel frequencies (used by :func:`~.losses.seg_loss`).

docs/benchmark.md measured 1/sqrt(frequency) weighting of the cross-entropy as essential on the
synthetic classes; :mod:`.run_setup` counts the train split's pixels with
:func:`class_pixel_counts` and turns them into weights with :func:`class_weights_from_frequencies`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from vtagml_core.tasks import IGNORE_INDEX

#: Default exponent of :func:`class_weights_from_frequencies`: weight ~ frequency^-0.5.
CLASS_WEIGHT_POWER: float = 0.5

#: Weight given to classes whose frequency is 0 (see :func:`class_weights_from_frequencies`).
ABSENT_CLASS_WEIGHT: float = 1.0


def class_pixel_counts(seg: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Count labelled pixels per class in a label map of any shape -> int64 (K,).

    Sum these over the training split and pass them to :func:`class_weights_from_frequencies`.
    """
    labels = seg[seg != ignore_index].long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"seg labels must be in [0, {num_classes}) or {ignore_index}; found values "
            f"{labels.min().item()}..{labels.max().item()}"
        )
    return torch.bincount(labels.flatten(), minlength=num_classes)


def class_weights_from_frequencies(
    freq: Tensor | np.ndarray | Sequence[float], power: float = CLASS_WEIGHT_POWER
) -> Tensor:
    """Per-class cross-entropy weights ``w_k ~ freq_k^-power`` with mean 1 over present classes.

    ``power=0.5`` is the 1/sqrt(frequency) weighting of docs/benchmark.md; ``power=1`` is
    inverse frequency, ``power=0`` gives uniform weights. Counts or fractions both work (only
    ratios matter).

    Classes with frequency 0 get :data:`ABSENT_CLASS_WEIGHT` (= 1, the mean weight), not 0:
    a class missing from the counted pixels may still appear in a training batch, and a weight
    of 0 would silently drop it from the loss.

    Args:
        freq: (K,) non-negative pixel counts or fractions, at least one > 0.
        power: exponent >= 0.

    Returns:
        float32 tensor (K,).
    """
    f = torch.as_tensor(np.asarray(freq, dtype=np.float64))
    if f.dim() != 1:
        raise ValueError(f"freq must be a 1-D (K,) array of class frequencies, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all() or (f < 0).any():
        raise ValueError(f"class frequencies must be finite and >= 0, got {f.tolist()}")
    if power < 0:
        raise ValueError(f"power must be >= 0 (rarer classes get larger weights), got {power}")
    present = f > 0
    if not present.any():
        raise ValueError("all class frequencies are 0: count pixels over a non-empty split first")
    weights = torch.full_like(f, ABSENT_CLASS_WEIGHT)
    raw = f[present] ** (-power)
    weights[present] = raw / raw.mean()
    return weights.float()
