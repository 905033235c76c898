"""Training augmentations of the real datasets: random scale, random crop, horizontal flip.

The usual recipe of the multi-task dense-prediction papers on NYUD-v2 (MTI-Net's random
scaling by 1.0-1.5 and horizontal flip; InvPT adds the random crop back to the training size):

1. **random scale** s ~ U(``scale_range``): the sample at its native resolution is resized to
   ``round(s * H) x round(s * W)`` for the model's training size ``(H, W)``, so s = 1 gives
   exactly the un-augmented sample (the whole image, resized to the model's size) and the
   scene is seen at the same scale as at evaluation time on average over s near 1;
2. **random crop** back to ``(H, W)``: a window at a uniformly drawn offset; where the scaled
   sample is smaller than ``(H, W)`` (s < 1) it is padded instead, with pixels that score
   nothing (image 0, seg ``ignore_index``, depth 0, normals 0, valid False, edges 0);
3. **horizontal flip** with probability 1/2: every map is mirrored and the normals' x
   component is negated (the kit's normals are in the camera frame, x to the right).

Every label follows the image through the same operations: resizing is
:func:`~vtagml_core.data.transforms.resize_sample` (nearest-neighbour labels, so class ids
stay class ids and invalid depth stays exactly 0 where ``valid`` is False), crop and flip move
whole pixels.

Reproducibility: the draws of sample ``i`` come from ``numpy.random.default_rng([seed, i])``,
a pure function of the dataset's seed and the index. The trainer sets the seed of each epoch
(:meth:`AugmentedDataset.set_seed` with the epoch's seed), so an epoch's augmentations are the
same in every process, with any number of loader workers, and after a resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vtagml_core.tasks import IGNORE_INDEX

from .transforms import NON_SPATIAL_KEYS, resize_sample

#: Default ``data.scale_range``: MTI-Net's NYUD-v2 scales (1.0 to 1.5), never below the
#: training size, so no padding is needed.
DEFAULT_SCALE_RANGE: tuple[float, float] = (1.0, 1.5)

#: Probability of a horizontal flip when flipping is on.
FLIP_PROBABILITY: float = 0.5


@dataclass(frozen=True)
class AugmentParams:
    """The draws of one sample.

    Attributes:
        scaled: ``(height, width)`` the sample is resized to before cropping.
        top, left: offset of the crop window in the scaled sample (negative: padding).
        flip: mirror horizontally.
    """

    scaled: tuple[int, int]
    top: int
    left: int
    flip: bool


def check_scale_range(scale_range: tuple[float, float]) -> tuple[float, float]:
    """``scale_range`` as ``(low, high)`` floats with ``0 < low <= high``.

    Raises:
        ValueError: otherwise, saying what is wrong.
    """
    if len(scale_range) != 2:
        raise ValueError(f"data.scale_range must be [low, high], got {list(scale_range)}")
    low, high = float(scale_range[0]), float(scale_range[1])
    if not 0 < low <= high:
        raise ValueError(f"data.scale_range must be [low, high] with 0 < low <= high, got [{low}, {high}]")
    return low, high


def draw_params(rng: np.random.Generator, size: tuple[int, int], scale_range: tuple[float, float],
                flip: bool) -> AugmentParams:
    """One sample's random scale, crop offset and flip for output ``size = (H, W)``."""
    low, high = check_scale_range(scale_range)
    s = float(rng.uniform(low, high)) if high > low else low
    scaled = (max(1, round(s * size[0])), max(1, round(s * size[1])))
    # The window may start anywhere it stays inside the scaled sample (or, when the scaled
    # sample is smaller, anywhere the sample stays inside the window).
    offsets = [int(rng.integers(min(0, n - m), max(0, n - m) + 1)) for n, m in zip(scaled, size)]
    do_flip = bool(flip) and bool(rng.random() < FLIP_PROBABILITY)
    return AugmentParams(scaled, offsets[0], offsets[1], do_flip)


def _fill_value(key: str, ignore_index: int) -> float | int | bool:
    """What a padded pixel of ``key`` holds: nothing to score."""
    return {"seg": ignore_index, "valid": False}.get(key, 0)


def crop_sample(sample: dict[str, Any], top: int, left: int, size: tuple[int, int],
                ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """The ``size = (H, W)`` window of every spatial map of ``sample`` whose top-left corner is
    at ``(top, left)``; parts of the window outside the sample are padded with values that
    score nothing (image 0, seg ``ignore_index``, depth / normals / edges 0, valid False).

    The input is not modified; ``name`` / ``domain`` are copied.
    """
    out: dict[str, Any] = {}
    h, w = (int(s) for s in size)
    for key, value in sample.items():
        if key in NON_SPATIAL_KEYS:
            out[key] = value
            continue
        src_h, src_w = value.shape[-2:]
        window = value.new_full((*value.shape[:-2], h, w), _fill_value(key, ignore_index))
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + h, src_h), min(left + w, src_w)
        if y1 > y0 and x1 > x0:
            window[..., y0 - top:y1 - top, x0 - left:x1 - left] = value[..., y0:y1, x0:x1]
        out[key] = window
    return out


def flip_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` mirrored left-right: every spatial map flipped along its width, and the
    normals' x component negated (x points right in the camera frame). Not modified in place."""
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if key in NON_SPATIAL_KEYS:
            out[key] = value
        elif key == "normals":
            out[key] = value.flip(-1) * torch.tensor([-1.0, 1.0, 1.0], dtype=value.dtype).view(3, 1, 1)
        else:
            out[key] = value.flip(-1)
    return out


def augment_sample(sample: dict[str, Any], size: tuple[int, int], params: AugmentParams,
                   ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Apply ``params`` to a contract sample (any resolution): resize to ``params.scaled``,
    crop / pad to ``size``, flip. Normals stay unit vectors (zero where invalid)."""
    out = crop_sample(resize_sample(sample, params.scaled), params.top, params.left, size, ignore_index)
    return flip_sample(out) if params.flip else out


class AugmentedDataset(Dataset):
    """A real dataset's training split with random scale, crop and flip (module docstring).

    Wraps a reader opened at its native resolution; every sample comes out at ``size``.
    Attributes the wrapper does not set itself (``tasks``, ``class_names``, ``name``,
    ``ignore_index``, ...) are the wrapped dataset's.

    Args:
        base: the dataset to augment (contract samples, any resolution).
        size: ``(height, width)`` of the samples it returns (the model's input size).
        scale_range: ``(low, high)`` of the random scale; ``(1, 1)`` turns scaling and
            cropping off.
        flip: random horizontal flips.
        seed: seed of the draws until :meth:`set_seed` changes it.
    """

    #: Tells the trainer that samples differ from epoch to epoch (no feature cache).
    augments_images: bool = True

    def __init__(self, base: Dataset, size: tuple[int, int],
                 scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE, flip: bool = True,
                 seed: int = 0) -> None:
        if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
            raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
        self.base = base
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.scale_range = check_scale_range(scale_range)
        self.flip = bool(flip)
        self.seed = 0
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        """Draw the next samples from ``seed`` (the trainer passes the epoch's seed).

        Raises:
            ValueError: a negative seed.
        """
        if int(seed) < 0:
            raise ValueError(f"augmentation seed must be >= 0, got {seed}")
        self.seed = int(seed)

    def params(self, index: int) -> AugmentParams:
        """The draws of sample ``index`` under the current seed (a pure function of both)."""
        rng = np.random.default_rng([self.seed, int(index) % len(self)])
        return draw_params(rng, self.size, self.scale_range, self.flip)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.base[index]
        return augment_sample(sample, self.size, self.params(index),
                              getattr(self.base, "ignore_index", IGNORE_INDEX))

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally; guard the ones pickling looks up
        # before __dict__ is restored (loader workers), which would otherwise recurse.
        if name == "base" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return (f"AugmentedDataset({self.base!r}, size={self.size}, scale_range={list(self.scale_range)}, "
                f"flip={self.flip}, seed={self.seed})")


__all__ = ["AugmentParams", "AugmentedDataset", "DEFAULT_SCALE_RANGE", "FLIP_PROBABILITY",
           "augment_sample", "check_scale_range", "crop_sample", "draw_params", "flip_sample"]
