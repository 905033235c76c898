"""Split-level metrics for segmentation, depth and surface normals (paper Sec. 4, Tables 2-5).

The paper reports mIoU (segmentation, higher is better), RMSE (depth, lower is better) and
mErr, the mean angular error in degrees (normals, lower is better). The usual companions are
also computed: pixel accuracy; abs-rel, sq-rel, log10 RMSE and delta < 1.25^k for depth;
median error and % of pixels within 11.25/22.5/30 degrees for normals.

All values are plain fractions or units (mIoU 0.53, not 53 %); tables convert to %.
Every metric accumulates sums over the whole split (see :mod:`metrics_base`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from vtagml_core.metrics.base import AccumulatingMetric, as_mask, check_same_shape
from vtagml_core.tasks import IGNORE_INDEX

# --------------------------------------------------------------------------- segmentation


class SegMetrics(AccumulatingMetric):
    """mIoU and pixel accuracy from a (K, K) confusion matrix accumulated over the split.

    ``confusion[g, p]`` counts pixels with label g predicted as p; pixels labelled
    ``ignore_index`` are skipped. IoU_k = TP_k / (GT_k + Pred_k - TP_k). **mIoU is the mean over
    classes whose union is non-zero** (they appear in the labels or in the predictions of the
    split); a class absent from both is excluded rather than counted as 0 or 1.

    Args:
        num_classes: K.
        ignore_index: label value to skip (the kit's IGNORE_INDEX, 255).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        super().__init__()

    def _zero_accumulators(self) -> dict[str, Tensor]:
        return {"confusion": torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)}

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            pred: logits (B, K, H, W) (argmax taken here) or class ids (B, H, W).
            target: int64 (B, H, W) class ids or ``ignore_index``.
            valid: optional (B, 1, H, W) / (B, H, W) bool; pixels outside it are skipped too.
        """
        if pred.dim() == 4:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"seg: logits have {pred.shape[1]} channels but SegMetrics has "
                    f"num_classes={self.num_classes}"
                )
            pred = pred.argmax(dim=1)
        check_same_shape("seg", pred, target)
        keep = target != self.ignore_index
        if valid is not None:
            keep &= as_mask(valid, target.unsqueeze(1)).squeeze(1)
        gt, pr = target[keep].long(), pred[keep].long()
        k = self.num_classes
        for name, ids in (("labels", gt), ("predictions", pr)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= k):
                raise ValueError(
                    f"seg: {name} contain ids outside [0, {k}) (min {ids.min().item()}, max "
                    f"{ids.max().item()}); check num_classes and the dataset's label mapping"
                )
        self._add("confusion", torch.bincount(gt * k + pr, minlength=k * k).view(k, k))

    def per_class_iou(self) -> list[float]:
        """IoU of each class (fraction); NaN for classes absent from both labels and predictions."""
        conf = self._acc["confusion"].double().cpu()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        return iou.tolist()

    def compute(self) -> dict[str, float]:
        """``{"mIoU", "pixel_acc"}`` as fractions in [0, 1]."""
        self._require_data("confusion")
        conf = self._acc["confusion"].double().cpu()
        iou = torch.tensor(self.per_class_iou(), dtype=torch.float64)
        return {
            "mIoU": float(iou[~iou.isnan()].mean()),
            "pixel_acc": float(conf.diag().sum() / conf.sum()),
        }


# --------------------------------------------------------------------------- depth

#: Depth thresholds of the delta metrics: fraction of pixels with max(p/t, t/p) < 1.25^k.
DELTA_BASE: float = 1.25
DELTA_POWERS: tuple[int, ...] = (1, 2, 3)

#: Log and ratio metrics (rmse_log10, delta_k) need p > 0: predictions are clamped to this
#: value (scene units) for those metrics only. rmse, mae, abs_rel and sq_rel use p as is.
MIN_PRED_DEPTH: float = 1e-3


class DepthMetrics(AccumulatingMetric):
    """Depth errors over the valid pixels (valid mask and target > 0) of the whole split.

    With p the prediction, t the target and n the number of valid pixels in the split:
    ``rmse = sqrt(sum (p-t)^2 / n)``, ``mae = sum |p-t| / n``, ``abs_rel = sum |p-t|/t / n``,
    ``sq_rel = sum (p-t)^2/t / n``, ``rmse_log10 = sqrt(sum (log10 p - log10 t)^2 / n)``,
    ``delta{k} = #{max(p/t, t/p) < 1.25^k} / n`` (fraction).
    """

    def _zero_accumulators(self) -> dict[str, Tensor]:
        f64 = dict(dtype=torch.float64)
        return {
            "count": torch.zeros((), dtype=torch.int64),
            "sum_abs": torch.zeros((), **f64),
            "sum_sq": torch.zeros((), **f64),
            "sum_abs_rel": torch.zeros((), **f64),
            "sum_sq_rel": torch.zeros((), **f64),
            "sum_sq_log10": torch.zeros((), **f64),
            "delta_hits": torch.zeros(len(DELTA_POWERS), dtype=torch.int64),
        }

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add a batch: pred, target (B, 1, H, W) in scene units; valid (B, 1, H, W) bool."""
        check_same_shape("depth", pred, target)
        mask = as_mask(valid, target) & (target > 0)
        p, t = pred[mask].double(), target[mask].double()
        err = p - t
        p_safe = p.clamp(min=MIN_PRED_DEPTH)
        ratio = torch.maximum(p_safe / t, t / p_safe)
        thresholds = torch.tensor([DELTA_BASE**k for k in DELTA_POWERS], dtype=torch.float64, device=p.device)
        self._add("count", torch.tensor(p.numel(), device=p.device))
        self._add("sum_abs", err.abs().sum())
        self._add("sum_sq", (err**2).sum())
        self._add("sum_abs_rel", (err.abs() / t).sum())
        self._add("sum_sq_rel", (err**2 / t).sum())
        self._add("sum_sq_log10", ((torch.log10(p_safe) - torch.log10(t)) ** 2).sum())
        self._add("delta_hits", (ratio.unsqueeze(1) < thresholds).sum(0))

    def compute(self) -> dict[str, float]:
        """``{"rmse", "mae", "abs_rel", "sq_rel", "rmse_log10", "delta1", "delta2", "delta3"}``."""
        self._require_data("count")
        a = {k: v.double().cpu() for k, v in self._acc.items()}
        n = a["count"]
        out = {
            "rmse": float(torch.sqrt(a["sum_sq"] / n)),
            "mae": float(a["sum_abs"] / n),
            "abs_rel": float(a["sum_abs_rel"] / n),
            "sq_rel": float(a["sum_sq_rel"] / n),
            "rmse_log10": float(torch.sqrt(a["sum_sq_log10"] / n)),
        }
        for k, hits in zip(DELTA_POWERS, a["delta_hits"]):
            out[f"delta{k}"] = float(hits / n)
        return out


# --------------------------------------------------------------------------- normals

#: Angular-error thresholds (degrees) of the "% within" metrics.
ANGLE_THRESHOLDS_DEG: tuple[float, ...] = (11.25, 22.5, 30.0)

#: Histogram bin width (degrees) used for the median: it is exact to +-half a bin (0.005 deg).
ANGLE_BIN_DEG: float = 0.01
MAX_ANGLE_DEG: float = 180.0


def angular_error_deg(pred: Tensor, target: Tensor) -> Tensor:
    """Angle in degrees between vectors along dim 1: (B, 3, H, W) x2 -> (B, H, W), float64.

    Uses ``atan2(|p x t|, p . t)``, which (unlike ``acos`` of the dot product) stays accurate
    near 0 and 180 degrees. Inputs need not be unit length.
    """
    p, t = pred.double(), target.double()
    cross = torch.linalg.vector_norm(torch.linalg.cross(p, t, dim=1), dim=1)
    dot = (p * t).sum(dim=1)
    return torch.rad2deg(torch.atan2(cross, dot))


class NormalMetrics(AccumulatingMetric):
    """Angular error (degrees) between predicted and true normals over the split's valid pixels.

    Pixels count when ``valid`` is True and the target vector is non-zero. Mean and RMSE come
    from exact sums; "within" fractions from exact counts; the median from a histogram of
    :data:`ANGLE_BIN_DEG`-wide bins over [0, 180]: the value reported is the mean error of the
    pixels in the bin holding the middle pixel, so it lies within one bin (0.01 degrees) of the
    exact median, and is exact when those pixels share one error (e.g. 0 for a perfect prediction).
    """

    def __init__(self) -> None:
        self.num_bins = int(round(MAX_ANGLE_DEG / ANGLE_BIN_DEG))
        super().__init__()

    def _zero_accumulators(self) -> dict[str, Tensor]:
        return {
            "count": torch.zeros((), dtype=torch.int64),
            "sum_angle": torch.zeros((), dtype=torch.float64),
            "sum_sq_angle": torch.zeros((), dtype=torch.float64),
            "within_hits": torch.zeros(len(ANGLE_THRESHOLDS_DEG), dtype=torch.int64),
            "histogram": torch.zeros(self.num_bins, dtype=torch.int64),
            "histogram_sum": torch.zeros(self.num_bins, dtype=torch.float64),
        }

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add a batch: pred (B, 3, H, W) (any length), target unit normals (B, 3, H, W)."""
        check_same_shape("normals", pred, target)
        if pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f"normals: expected (B, 3, H, W), got {tuple(pred.shape)}")
        defined = target.abs().sum(dim=1, keepdim=True) > 0
        mask = (as_mask(valid, defined) & defined).squeeze(1)
        angle = angular_error_deg(pred, target)[mask]
        thresholds = torch.tensor(ANGLE_THRESHOLDS_DEG, dtype=torch.float64, device=angle.device)
        bins = (angle / ANGLE_BIN_DEG).long().clamp(0, self.num_bins - 1)
        self._add("count", torch.tensor(angle.numel(), device=angle.device))
        self._add("sum_angle", angle.sum())
        self._add("sum_sq_angle", (angle**2).sum())
        self._add("within_hits", (angle.unsqueeze(1) < thresholds).sum(0))
        self._add("histogram", torch.bincount(bins, minlength=self.num_bins))
        self._add("histogram_sum", torch.bincount(bins, weights=angle, minlength=self.num_bins))

    def median(self) -> float:
        """Median angular error (degrees) from the histogram, to within ANGLE_BIN_DEG."""
        self._require_data("count")
        hist = self._acc["histogram"].cpu()
        cumulative = hist.cumsum(0).double()
        middle_bin = int(torch.searchsorted(cumulative, hist.sum().double() / 2))
        return float(self._acc["histogram_sum"][middle_bin].cpu() / hist[middle_bin])

    def compute(self) -> dict[str, float]:
        """``{"mean", "median", "rmse", "within_11.25", "within_22.5", "within_30"}`` (deg / fractions)."""
        self._require_data("count")
        a = {k: v.double().cpu() for k, v in self._acc.items()}
        n = a["count"]
        out = {
            "mean": float(a["sum_angle"] / n),
            "median": self.median(),
            "rmse": float(torch.sqrt(a["sum_sq_angle"] / n)),
        }
        for thr, hits in zip(ANGLE_THRESHOLDS_DEG, a["within_hits"]):
            out[f"within_{thr:g}"] = float(hits / n)
        return out
