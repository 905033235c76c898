"""What every split-level metric shares: sums accumulated over a whole split.

A metric such as RMSE over a split is ``sqrt(sum of squared errors / number of pixels)`` over
*all* pixels of the split. Averaging per-batch RMSEs gives a different (and batch-size
dependent) number, so every metric in the kit only ever adds raw counts and sums in
:meth:`update` and turns them into numbers once, in :meth:`compute`.

Because the state is nothing but sums, it can be combined:

- ``a.merge(b)`` adds another metric's sums (e.g. from another data loader or process);
- for DistributedDataParallel, sum each accumulator over processes and load it back::

      acc = metric.accumulators()
      for t in acc.values():
          torch.distributed.all_reduce(t)  # default op is SUM
      metric.load_accumulators(acc)
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class AccumulatingMetric(ABC):
    """Base class: named tensor accumulators that only ever get summed.

    Subclasses define :meth:`_zero_accumulators` (the state after :meth:`reset`), ``update``
    (which adds to the accumulators through :meth:`_add`) and ``compute``.
    """

    def __init__(self) -> None:
        self._acc: dict[str, Tensor] = {}
        self.reset()

    @abstractmethod
    def _zero_accumulators(self) -> dict[str, Tensor]:
        """Fresh accumulators: name -> zero tensor (int64 for counts, float64 for sums)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Metrics of everything accumulated since the last :meth:`reset`."""

    def reset(self) -> None:
        """Forget everything accumulated (start a new split)."""
        self._acc = self._zero_accumulators()

    def _add(self, name: str, value: Tensor) -> None:
        """Add ``value`` to accumulator ``name`` (moving the accumulators to its device first)."""
        acc = self._acc[name]
        if acc.device != value.device:
            self._acc = {k: v.to(value.device) for k, v in self._acc.items()}
            acc = self._acc[name]
        acc += value.to(acc.dtype)

    def _require_data(self, count_name: str) -> None:
        if int(self._acc[count_name].sum()) == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute() has no pixels to score: call update() with at "
                "least one batch that has valid/labelled pixels first (or check the valid masks)"
            )

    def accumulators(self) -> dict[str, Tensor]:
        """Copies of the raw accumulators, e.g. to ``all_reduce`` them across processes."""
        return {k: v.clone() for k, v in self._acc.items()}

    def load_accumulators(self, acc: dict[str, Tensor]) -> None:
        """Replace the state with ``acc`` (as returned by :meth:`accumulators`, possibly summed)."""
        expected = self._zero_accumulators()
        if set(acc) != set(expected):
            raise ValueError(
                f"{type(self).__name__}: accumulators must have keys {sorted(expected)}, got {sorted(acc)}"
            )
        for k, v in acc.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise ValueError(
                    f"{type(self).__name__}: accumulator {k!r} must have shape "
                    f"{tuple(expected[k].shape)}, got {tuple(v.shape)} (different metric settings?)"
                )
        self._acc = {k: v.detach().clone().to(expected[k].dtype) for k, v in acc.items()}

    def merge(self, other: "AccumulatingMetric") -> None:
        """Add another metric's accumulators to this one (same class and settings)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        theirs = other.accumulators()
        merged = self.accumulators()
        for k in merged:
            if merged[k].shape != theirs[k].shape:
                raise ValueError(
                    f"{type(self).__name__}: cannot merge, accumulator {k!r} has shape "
                    f"{tuple(theirs[k].shape)} vs {tuple(merged[k].shape)} (different settings)"
                )
            merged[k] += theirs[k].to(merged[k].device)
        self.load_accumulators(merged)

    def state_dict(self) -> dict[str, Tensor]:
        """The accumulators on CPU (for checkpoints; ``torch.save`` / ``weights_only`` safe)."""
        return {k: v.detach().cpu().clone() for k, v in self._acc.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.load_accumulators(state)


def check_same_shape(name: str, pred: Tensor, target: Tensor) -> None:
    """Raise a ValueError that says how to fix a prediction/label shape mismatch."""
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"{name}: prediction shape {tuple(pred.shape)} does not match label shape "
            f"{tuple(target.shape)}; resize predictions to the label size (F.interpolate) before "
            "scoring, and score labels at their native resolution"
        )


def as_mask(valid: Tensor | None, like: Tensor) -> Tensor:
    """``valid`` (B, 1, H, W) or (B, H, W) as a bool mask of ``like``'s (B, 1, H, W) shape.

    ``None`` means every pixel is valid.
    """
    if valid is None:
        return torch.ones_like(like, dtype=torch.bool)
    if valid.dim() == like.dim() - 1:
        valid = valid.unsqueeze(1)
    if tuple(valid.shape) != tuple(like.shape):
        raise ValueError(f"valid mask must be {tuple(like.shape)}, got {tuple(valid.shape)}")
    return valid.bool()
