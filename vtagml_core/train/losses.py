"""Per-task losses and their weighted sum (paper Sec. 3.3, "Task Heads and Training").

The paper trains with "a linear combination of the task losses": cross-entropy for
segmentation, a depth loss, and L1 for surface normals and 2-D edges. Here:

- **seg**: cross-entropy ignoring :data:`~vtagml_core.tasks.IGNORE_INDEX` pixels, optionally
  class-weighted (:func:`~vtagml_core.train.class_weights.class_weights_from_frequencies`; docs/benchmark.md found 1/sqrt(frequency)
  weighting essential on the synthetic benchmark).
- **depth**: L1 over valid pixels (default). The paper cites a "rotated loss" without defining
  it; the official VTAGML code trains depth with berHu (reverse Huber, Laina et al., "Deeper
  Depth Prediction with Fully Convolutional Residual Networks", 3DV 2016), offered as
  ``depth_loss="berhu"``.
- **normals**: ``1 - cos`` between the unit-normalised prediction and the target over valid
  pixels (default, ``normals_loss="cosine"``, as LibMTL trains NYUv2 normals). The paper names L1:
  ``"l1"`` is L1 on the head's raw output and ``"l1_unit"`` L1 on the unit-normalised prediction.
  ``l1_unit`` was the kit's default until docs/benchmark.md ("The normals plateau") measured it
  holding single-task normals at the mean normal (~62 degrees) for 5-8 of 10 epochs, where
  ``cosine`` and ``l1`` leave it in the first epoch.
- **edges**: L1 between sigmoid(logits) and the soft target (default), or HED's class-balanced
  BCE (Xie & Tu, "Holistically-Nested Edge Detection", ICCV 2015) as ``edge_loss="weighted_bce"``.

Total (Sec. 3.3): ``L = sum_t lambda_t * L_t``, lambda configurable (default 1 for each task).

All dense losses are means over the pixels they are defined on, and a batch without a single
such pixel gives a loss of exactly 0 that is still attached to the graph (``.backward()``
works and produces zero gradients, never NaN).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vtagml_core.metrics.predictions import EDGE_GT_THRESHOLD, binarize_edges, to_prediction
from vtagml_core.tasks import IGNORE_INDEX, parse_tasks

#: berHu switches from L1 to the quadratic branch at c = this fraction of the batch's largest
#: absolute residual (Laina et al. 2016, Eq. 2; the official VTAGML code uses the same 0.2).
BERHU_THRESHOLD_FRACTION: float = 0.2

#: Lower bound on berHu's c, so a batch with all residuals 0 does not divide by 0.
BERHU_MIN_C: float = 1e-6

# --------------------------------------------------------------------------- helpers


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` (B, C, H, W) over pixels where ``mask`` (B, 1, H, W) is True and all C.

    Returns 0 (still attached to the graph) when the mask is empty.
    """
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def _check_dense_pair(task: str, pred: Tensor, target: Tensor, channels: int) -> None:
    if pred.dim() != 4 or pred.shape[1] != channels:
        raise ValueError(f"{task}: prediction must be (B, {channels}, H, W), got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(
            f"{task}: target shape {tuple(target.shape)} does not match prediction shape "
            f"{tuple(pred.shape)}; resize the head output to the label size (F.interpolate) "
            "or the labels to the image size in the dataset transform"
        )


def _valid_mask(valid: Tensor | None, defined: Tensor) -> Tensor:
    """Combine the batch's ``valid`` mask (B, 1, H, W) with where the label itself is defined."""
    if valid is None:
        return defined
    if valid.shape != defined.shape:
        raise ValueError(f"valid mask must be {tuple(defined.shape)}, got {tuple(valid.shape)}")
    return valid.bool() & defined


def depth_valid_mask(target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Pixels with usable depth: ``valid`` and ``target > 0`` (0 marks missing depth). (B, 1, H, W).

    A NaN label at a valid pixel is kept (``NaN > 0`` is False), so that the loss becomes NaN and
    :func:`check_finite` reports the corrupt label instead of it being silently skipped.
    """
    return _valid_mask(valid, (target > 0) | target.isnan())


def normals_valid_mask(target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Pixels with a usable normal: ``valid`` and a non-zero target vector. (B, 1, H, W).

    NaN components are kept for the same reason as in :func:`depth_valid_mask`.
    """
    total = target.abs().sum(dim=1, keepdim=True)
    return _valid_mask(valid, (total > 0) | total.isnan())


# --------------------------------------------------------------------------- segmentation


def seg_loss(
    logits: Tensor,
    target: Tensor,
    class_weights: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy over labelled pixels (paper Sec. 3.3).

    With class weights w, this is PyTorch's weighted mean ``sum_i w[y_i] CE_i / sum_i w[y_i]``
    over pixels whose label is not ``ignore_index``; a batch with no labelled pixel gives 0.

    Args:
        logits: (B, K, H, W).
        target: int64 (B, H, W), values in [0, K) or ``ignore_index``.
        class_weights: optional (K,) weights.
    """
    if logits.dim() != 4:
        raise ValueError(f"seg: logits must be (B, K, H, W), got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"seg: target must be (B, H, W) = {expected} int64 class ids, got {tuple(target.shape)}"
        )
    labelled = target != ignore_index
    if ((target < 0) | (target >= num_classes))[labelled].any():
        bad = torch.unique(target[labelled & ((target < 0) | (target >= num_classes))]).tolist()
        raise ValueError(
            f"seg: labels {bad[:10]} are outside [0, {num_classes}) and are not the ignore index "
            f"{ignore_index}; check num_classes of the head and the dataset's label mapping"
        )
    if class_weights is not None and class_weights.shape != (num_classes,):
        raise ValueError(f"seg: class_weights must be ({num_classes},), got {tuple(class_weights.shape)}")
    target = target.long()
    per_pixel = F.cross_entropy(
        logits, target, weight=class_weights, ignore_index=ignore_index, reduction="none"
    )
    if class_weights is None:
        denom = labelled.sum().to(per_pixel.dtype)
    else:
        safe = torch.where(labelled, target, torch.zeros_like(target))
        denom = torch.where(labelled, class_weights.to(per_pixel.dtype)[safe], 0.0).sum()
    return per_pixel.sum() / torch.where(denom > 0, denom, torch.ones_like(denom))


# --------------------------------------------------------------------------- depth


def depth_l1_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean |pred - target| over valid pixels with depth > 0. pred, target, valid: (B, 1, H, W)."""
    _check_dense_pair("depth", pred, target, 1)
    mask = depth_valid_mask(target, valid)
    target = torch.where(mask, target, torch.zeros_like(target))  # no NaN/inf from invalid pixels
    return _masked_mean((pred - target).abs(), mask)


def berhu_loss(
    pred: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    threshold_fraction: float = BERHU_THRESHOLD_FRACTION,
) -> Tensor:
    """berHu (reverse Huber) depth loss, Laina et al. 2016, Eq. 2, averaged over valid pixels.

    With residual ``r = |pred - target|`` and ``c = threshold_fraction * max_valid(r)`` over the
    batch (treated as a constant, as in the paper and the official VTAGML code):
    ``B(r) = r`` if ``r <= c``, else ``(r^2 + c^2) / (2c)``. Both branches meet at r = c.
    (The official code averages over *all* pixels, invalid ones counting 0; here the mean is over
    valid pixels, like the other losses.)
    """
    _check_dense_pair("depth", pred, target, 1)
    mask = depth_valid_mask(target, valid)
    target = torch.where(mask, target, torch.zeros_like(target))
    residual = (pred - target).abs()
    largest = torch.where(mask, residual, torch.zeros_like(residual)).max()
    c = (threshold_fraction * largest).detach().clamp(min=BERHU_MIN_C)
    per_pixel = torch.where(residual <= c, residual, (residual**2 + c**2) / (2 * c))
    return _masked_mean(per_pixel, mask)


# --------------------------------------------------------------------------- normals


def _normals_pair(raw: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Check a normals (raw, target) pair; return the target zeroed where invalid and the mask."""
    _check_dense_pair("normals", raw, target, 3)
    mask = normals_valid_mask(target, valid)
    return torch.where(mask, target, torch.zeros_like(target)), mask


def normals_cosine_loss(raw: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """``1 - cos(angle)`` between the unit-normalised prediction and the target, mean over valid pixels.

    raw: unnormalised head output (B, 3, H, W); target: unit normals (B, 3, H, W), 0 where invalid.
    Equals 0 for a prediction along the target, 1 for a perpendicular one, 2 for the opposite.
    """
    target, mask = _normals_pair(raw, target, valid)
    cos = (to_prediction("normals", raw) * target).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    return _masked_mean(1.0 - cos, mask)


def normals_l1_loss(raw: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """L1 between the raw head output and the target, mean over valid pixels and xyz.

    The head learns unit vectors itself; predictions are normalised only when scored.
    raw: (B, 3, H, W); target: unit normals (B, 3, H, W), 0 where invalid.
    """
    target, mask = _normals_pair(raw, target, valid)
    return _masked_mean((raw - target).abs(), mask)


def normals_unit_l1_loss(raw: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """L1 between the unit-normalised prediction and the target, mean over valid pixels and xyz.

    raw: unnormalised head output (B, 3, H, W); target: unit normals (B, 3, H, W), 0 where invalid.
    """
    target, mask = _normals_pair(raw, target, valid)
    return _masked_mean((to_prediction("normals", raw) - target).abs(), mask)


# --------------------------------------------------------------------------- edges


def edge_l1_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean |sigmoid(logits) - target| over all pixels (edges are defined everywhere). (B, 1, H, W)."""
    _check_dense_pair("edges", logits, target, 1)
    return (to_prediction("edges", logits) - target).abs().mean()


def edge_weighted_bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """HED's class-balanced BCE (Xie & Tu 2015, Eq. 2), mean over pixels.

    The target is binarised at :data:`EDGE_GT_THRESHOLD`. For each image,
    ``beta = |negatives| / |pixels|``; edge pixels are weighted by beta and non-edge pixels by
    1 - beta, so the rare edge class is not drowned by the background. (An image without any
    edge pixel has beta = 1 and contributes 0, as in HED.)
    """
    _check_dense_pair("edges", logits, target, 1)
    positive = binarize_edges(target, EDGE_GT_THRESHOLD)
    beta = 1.0 - positive.flatten(1).float().mean(dim=1)  # (B,) fraction of negatives
    beta = beta.view(-1, 1, 1, 1).to(logits.dtype)
    weight = torch.where(positive, beta, 1.0 - beta)
    return F.binary_cross_entropy_with_logits(logits, positive.to(logits.dtype), weight=weight)


# --------------------------------------------------------------------------- registries

#: Depth loss by name: ``f(pred, target, valid) -> scalar``.
DEPTH_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "l1": depth_l1_loss,
    "berhu": berhu_loss,
}

#: Normals loss by name: ``f(raw, target, valid) -> scalar``.
NORMALS_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "cosine": normals_cosine_loss,
    "l1": normals_l1_loss,
    "l1_unit": normals_unit_l1_loss,
}

#: Edge loss by name: ``f(logits, target) -> scalar``.
EDGE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": edge_l1_loss,
    "weighted_bce": edge_weighted_bce_loss,
}


def _lookup(registry: dict[str, Callable], name: str, what: str) -> Callable:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]


def check_finite(losses: dict[str, Tensor]) -> None:
    """Raise :class:`FloatingPointError` if any loss is NaN or infinite, naming the task(s).

    The trainer calls this after the forward pass and before ``backward()``/``step()``, so a
    diverging run stops with its weights untouched.
    """
    bad = {name: v for name, v in losses.items() if not bool(torch.isfinite(v.detach()).all())}
    if bad:
        listed = ", ".join(f"{name} ({v.detach().float().flatten()[0].item()})" for name, v in bad.items())
        raise FloatingPointError(
            f"non-finite loss for task(s): {listed}. Training was stopped before any weights were "
            "updated. Try a lower learning rate, check these tasks' labels for NaN/inf values, "
            "or disable mixed precision to rule out overflow."
        )


# --------------------------------------------------------------------------- multitask


class MultiTaskLoss(nn.Module):
    """``L = sum_t lambda_t * L_t`` over the model's tasks (paper Sec. 3.3).

    Args:
        tasks: task names or a spec such as ``"S-D-N"`` (see :func:`vtagml_core.tasks.parse_tasks`).
        weights: lambda per task (missing tasks get 1.0).
        depth_loss: a key of :data:`DEPTH_LOSSES` (``"l1"`` or ``"berhu"``).
        edge_loss: a key of :data:`EDGE_LOSSES` (``"l1"`` or ``"weighted_bce"``).
        normals_loss: a key of :data:`NORMALS_LOSSES` (``"cosine"``, ``"l1"`` or ``"l1_unit"``).
        class_weights: optional (K,) seg class weights (a buffer, so ``.to(device)`` moves it).

    ``outputs`` are raw head outputs ``{task: (B, C, H, W)}``; ``batch`` follows the kit's data
    contract (``"seg"`` (B, H, W), ``"depth"``/``"edges"`` (B, 1, H, W), ``"normals"`` (B, 3, H, W),
    ``"valid"`` (B, 1, H, W)).
    """

    def __init__(
        self,
        tasks: str | Sequence[str],
        weights: dict[str, float] | None = None,
        depth_loss: str = "l1",
        edge_loss: str = "l1",
        class_weights: Tensor | None = None,
        normals_loss: str = "cosine",
    ) -> None:
        super().__init__()
        self.tasks: tuple[str, ...] = parse_tasks(tasks)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"loss weights given for {unknown}, which are not among tasks {self.tasks}")
        negative = {t: w for t, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}")
        self.weights: dict[str, float] = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self.depth_loss_name = depth_loss
        self.edge_loss_name = edge_loss
        self.normals_loss_name = normals_loss
        self._depth_fn = _lookup(DEPTH_LOSSES, depth_loss, "depth loss")
        self._edge_fn = _lookup(EDGE_LOSSES, edge_loss, "edge loss")
        self._normals_fn = _lookup(NORMALS_LOSSES, normals_loss, "normals loss")
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.as_tensor(class_weights).float()
        )

    # One method per task, each ``(raw, batch) -> scalar``; looked up by name in per_task().
    def _seg_loss(self, raw: Tensor, batch: dict) -> Tensor:
        return seg_loss(raw, batch["seg"], self.class_weights)

    def _depth_loss(self, raw: Tensor, batch: dict) -> Tensor:
        return self._depth_fn(raw, batch["depth"], batch.get("valid"))

    def _normals_loss(self, raw: Tensor, batch: dict) -> Tensor:
        return self._normals_fn(raw, batch["normals"], batch.get("valid"))

    def _edges_loss(self, raw: Tensor, batch: dict) -> Tensor:
        return self._edge_fn(raw, batch["edges"])

    def per_task(self, outputs: dict[str, Tensor], batch: dict) -> dict[str, Tensor]:
        """Unweighted loss of every task, ``{task: scalar}``, still attached to the graph.

        They stay attached so that TROA (paper Sec. 3.2.1) can take each task's gradient.
        """
        losses = {}
        for task in self.tasks:
            if task not in outputs:
                raise ValueError(f"model outputs have no {task!r} head (got {sorted(outputs)})")
            if task not in batch:
                raise ValueError(
                    f"batch has no {task!r} labels (keys: {sorted(batch)}); build the dataset with "
                    f"tasks including {task!r}, or drop it from the loss's tasks"
                )
            losses[task] = getattr(self, f"_{task}_loss")(outputs[task], batch)
        return losses

    def forward(self, outputs: dict[str, Tensor], batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(sum_t lambda_t * L_t, {task: L_t})`` (per-task losses unweighted)."""
        losses = self.per_task(outputs, batch)
        total = torch.zeros((), dtype=torch.float32, device=next(iter(losses.values())).device)
        for task, loss in losses.items():
            total = total + self.weights[task] * loss
        return total, losses

    def extra_repr(self) -> str:
        return (f"tasks={self.tasks}, weights={self.weights}, depth={self.depth_loss_name}, "
                f"normals={self.normals_loss_name}, edges={self.edge_loss_name}")
