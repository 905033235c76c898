"""Edge F-measure at the optimal dataset-wide threshold, odsF (paper Sec. 4, edges task).

**This is a Python re-implementation, not the MATLAB SEISM / BSDS benchmark** used by published
edge-detection results: there is no non-maximum suppression or thinning of the prediction and
no one-to-one bipartite matching of predicted and true edge pixels. A pixel simply counts as
matched when a pixel of the other map lies within the matching distance r (Euclidean). Numbers
from this module are comparable with each other (same kit, same data), not with odsF values in
papers.

The matching distance r is either a fixed number of pixels (``tolerance_px``; the synthetic
benchmark's :data:`DEFAULT_EDGE_TOLERANCE_PX`) or, as the published evaluations state it, a
fraction ``max_dist`` of the label's diagonal: r = max_dist * sqrt(H^2 + W^2) pixels, a real
distance, not rounded, as the BSDS ``correspondPixels`` code computes it (its ``maxDist``;
default :data:`BSDS_MAX_DIST` = 0.0075; MTI-Net and its successors evaluate NYUD-v2 with 0.011,
i.e. 8.8 px on a 480 x 640 label, so offsets up to 8 px along an axis match). The fraction is
applied to each batch's own label size, so evaluation at the labels' native resolution uses the
published distance. Each real dataset states its value (``edge_max_dist`` of its reader).

Definition, for each threshold t (counts summed over the whole split, never averaged per batch):

- predicted edges E_t = {prediction >= t}; true edges G = {label >= EDGE_GT_THRESHOLD};
- precision P_t = #(E_t pixels with a G pixel within r) / #E_t;
- recall    R_t = #(G pixels with an E_t pixel within r) / #G;
- F_t = 2 P_t R_t / (P_t + R_t) (0 where P_t + R_t = 0); odsF = max_t F_t.

Implementation note (one pass for all thresholds): "a G pixel within r" does not depend on t,
so it is one binary dilation of G; "an E_t pixel within r" holds exactly when the *maximum
prediction* within r is >= t, so it is one grey-scale dilation of the prediction. Per-threshold
counts then come from a histogram of the prediction values, not from one dilation per threshold.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vtagml_core.metrics.base import AccumulatingMetric, as_mask, check_same_shape
from vtagml_core.metrics.predictions import EDGE_GT_THRESHOLD, binarize_edges

#: Default number of evenly spaced thresholds in (0, 1): 1/100, 2/100, ..., 99/100.
DEFAULT_EDGE_THRESHOLDS: int = 99
#: Default matching distance in pixels (the synthetic benchmark's).
DEFAULT_EDGE_TOLERANCE_PX: int = 2
#: The BSDS benchmark's default ``maxDist``: the matching distance as a fraction of the image
#: diagonal (``correspondPixels``; used by the published evaluations unless a dataset sets its own).
BSDS_MAX_DIST: float = 0.0075


def diagonal_tolerance(height: int, width: int, max_dist: float) -> float:
    """The matching distance in pixels of an ``height x width`` label: ``max_dist`` times its
    diagonal, unrounded (BSDS ``correspondPixels``: ``maxDist * sqrt(rows^2 + cols^2)``)."""
    return float(max_dist) * math.hypot(height, width)


def disk_offsets(radius: float) -> list[tuple[int, int]]:
    """Integer offsets (dy, dx) with dy^2 + dx^2 <= radius^2 (a digital disk; radius may be
    fractional, e.g. 8.8 px)."""
    r = math.floor(radius)
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius * radius]


def max_within_disk(x: Tensor, radius: float) -> Tensor:
    """Grey-scale dilation: max of ``x`` (B, 1, H, W) over a disk of ``radius`` px around each pixel.

    Pixels outside the image do not count (padding with -inf). A radius below 1 returns ``x``.
    """
    r = math.floor(radius)
    if r == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), value=float("-inf"))
    out = torch.full_like(x, float("-inf"))
    for dy, dx in disk_offsets(radius):
        out = torch.maximum(out, padded[..., r + dy : r + dy + h, r + dx : r + dx + w])
    return out


def count_at_least(values: Tensor, thresholds: Tensor) -> Tensor:
    """For each threshold t_i (ascending), how many ``values`` are >= t_i -> int64 (T,)."""
    # bucketize(right=True) gives, per value, the number of thresholds <= value.
    n_below_or_equal = torch.bucketize(values, thresholds, right=True)
    hist = torch.bincount(n_below_or_equal, minlength=thresholds.numel() + 1)
    # value >= t_i  <=>  n_below_or_equal > i: a reverse cumulative sum of the histogram.
    return hist[1:].flip(0).cumsum(0).flip(0)


class EdgeMetrics(AccumulatingMetric):
    """odsF with a pixel-distance tolerance (see the module docstring; not SEISM/BSDS).

    Args:
        thresholds: number T of evenly spaced thresholds k/(T+1), k = 1..T (99 gives
            0.01..0.99), or an explicit ascending sequence of thresholds in [0, 1].
        tolerance_px: matching distance r in pixels (0: pixels must coincide); default
            :data:`DEFAULT_EDGE_TOLERANCE_PX` unless ``max_dist`` is given.
        max_dist: matching distance as a fraction of each label's diagonal
            (:func:`diagonal_tolerance`; NYUD-v2: 0.011); excludes ``tolerance_px``.

    Raises:
        ValueError: bad thresholds, a negative distance, or both distances given.
    """

    def __init__(
        self,
        thresholds: int | Sequence[float] = DEFAULT_EDGE_THRESHOLDS,
        tolerance_px: float | None = None,
        max_dist: float | None = None,
    ) -> None:
        if isinstance(thresholds, int):
            if thresholds < 1:
                raise ValueError(f"need at least 1 threshold, got {thresholds}")
            thr = torch.arange(1, thresholds + 1, dtype=torch.float64) / (thresholds + 1)
        else:
            thr = torch.as_tensor(list(thresholds), dtype=torch.float64)
            if thr.numel() == 0 or (thr[1:] <= thr[:-1]).any():
                raise ValueError(f"thresholds must be a non-empty strictly ascending sequence, got {thr.tolist()}")
        if tolerance_px is not None and max_dist is not None:
            raise ValueError("give the edge matching distance either in pixels (tolerance_px) or as a "
                             f"fraction of the diagonal (max_dist), not both: got {tolerance_px} and {max_dist}")
        if max_dist is None and tolerance_px is None:
            tolerance_px = DEFAULT_EDGE_TOLERANCE_PX
        for name, value in (("tolerance_px", tolerance_px), ("max_dist", max_dist)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.thresholds: Tensor = thr  # float64; predictions are compared in float64 too
        self.tolerance_px: float | None = None if tolerance_px is None else float(tolerance_px)
        self.max_dist: float | None = None if max_dist is None else float(max_dist)
        super().__init__()

    def radius(self, height: int, width: int) -> float:
        """The matching distance in pixels for a ``height x width`` label."""
        if self.max_dist is not None:
            return diagonal_tolerance(height, width, self.max_dist)
        return float(self.tolerance_px)

    def _zero_accumulators(self) -> dict[str, Tensor]:
        per_threshold = torch.zeros(self.thresholds.numel(), dtype=torch.int64)
        scalar = torch.zeros((), dtype=torch.int64)
        return {
            "pred_total": per_threshold.clone(),  # #E_t
            "pred_matched": per_threshold.clone(),  # E_t pixels with a true edge within r
            "gt_matched": per_threshold.clone(),  # true edge pixels with an E_t pixel within r
            "gt_total": scalar.clone(),  # #G
            "pixels": scalar.clone(),  # pixels scored (to detect an empty split)
        }

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            pred: edge probabilities (B, 1, H, W) in [0, 1] (sigmoid of the head's logits).
            target: edge labels (B, 1, H, W) in [0, 1], binarised at EDGE_GT_THRESHOLD.
            valid: optional (B, 1, H, W) bool; only pixels inside it are counted (matching may
                still use neighbours outside it).
        """
        check_same_shape("edges", pred, target)
        if pred.dim() != 4 or pred.shape[1] != 1:
            raise ValueError(f"edges: expected (B, 1, H, W), got {tuple(pred.shape)}")
        pred = pred.double()
        mask = as_mask(valid, target)
        gt = binarize_edges(target, EDGE_GT_THRESHOLD)
        radius = self.radius(*target.shape[-2:])
        gt_near = max_within_disk(gt.float(), radius) > 0.5
        pred_near_max = max_within_disk(pred, radius)
        thr = self.thresholds.to(pred.device)
        self._add("pred_total", count_at_least(pred[mask], thr))
        self._add("pred_matched", count_at_least(pred[mask & gt_near], thr))
        self._add("gt_matched", count_at_least(pred_near_max[mask & gt], thr))
        self._add("gt_total", (mask & gt).sum())
        self._add("pixels", mask.sum())

    def curve(self) -> dict[str, list[float]]:
        """Precision, recall and F at every threshold (for a PR-curve plot)."""
        self._require_data("pixels")
        a = {k: v.double().cpu() for k, v in self._acc.items()}
        precision = a["pred_matched"] / a["pred_total"].clamp(min=1)
        recall = a["gt_matched"] / a["gt_total"].clamp(min=1)
        denom = precision + recall
        f = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(denom))
        return {
            "threshold": self.thresholds.tolist(),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f": f.tolist(),
        }

    def compute(self) -> dict[str, float]:
        """``{"odsF", "ods_threshold", "precision", "recall"}`` (precision/recall at that threshold).

        With no true edge pixel in the split, recall is taken as 0 and so is odsF.
        """
        c = self.curve()
        best = max(range(len(c["f"])), key=lambda i: c["f"][i])  # first (lowest) threshold on ties
        return {
            "odsF": c["f"][best],
            "ods_threshold": c["threshold"][best],
            "precision": c["precision"][best],
            "recall": c["recall"][best],
        }
