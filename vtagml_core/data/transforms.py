"""Sample transforms shared by every dataset of the kit (the shared sample contract).

A *sample* is a dict (docs/benchmark.md, The sample contract)::

    "image"   float32 (3, H, W)  RGB in [0, 1]   (ImageNet normalisation happens in the backbone)
    "seg"     int64   (H, W)     class ids in [0, K), or IGNORE_INDEX (255) for unlabelled pixels
    "depth"   float32 (1, H, W)  z-buffer depth in metres / scene units, 0 where invalid
    "normals" float32 (3, H, W)  unit vectors, camera frame (OpenCV: x right, y down, z forward),
                                 0 where invalid
    "edges"   float32 (1, H, W)  in [0, 1]
    "valid"   bool    (1, H, W)  True where depth and normals are defined
    "name"    str,  "domain" str

Only the requested tasks' keys are present. This module turns numpy arrays read from disk into
that contract (:func:`to_contract_tensors`) and resizes a sample consistently
(:func:`resize_sample`): the image is resampled bilinearly with anti-aliasing, every label map
with nearest-neighbour sampling (so class ids stay class ids and invalid pixels never blend
into valid ones), and normals are renormalised to unit length after resampling.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Interpolation of label maps. "nearest-exact" samples pixel centres symmetrically (PyTorch's
#: plain "nearest" is biased towards the top-left when downsampling).
LABEL_INTERPOLATION: str = "nearest-exact"

#: Interpolation of the RGB image (anti-aliased when downsampling).
IMAGE_INTERPOLATION: str = "bilinear"

#: A normal vector shorter than this is treated as "no normal" (left at 0, marked invalid).
MIN_NORMAL_LENGTH: float = 1e-6

#: Maximum value of an 8-bit image, used to map uint8 RGB to [0, 1].
UINT8_MAX: float = 255.0

#: Keys that carry no pixels and are copied unchanged by transforms.
NON_SPATIAL_KEYS: tuple[str, ...] = ("name", "domain")

#: Spatial keys that :func:`resize_sample` knows how to resample.
SPATIAL_KEYS: tuple[str, ...] = ("image", "seg", "depth", "normals", "edges", "valid")


def _check_hw(name: str, array: np.ndarray, hw: tuple[int, int]) -> None:
    if tuple(array.shape[:2]) != hw:
        raise ValueError(
            f"{name!r} has spatial size {tuple(array.shape[:2])} but the image is {hw}; "
            "every label map of a sample must match the image size"
        )


def normalize_normals(normals: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale normals to unit length where defined; zero them elsewhere.

    Args:
        normals: ``(3, H, W)`` float tensor.
        valid: optional ``(1, H, W)`` bool mask of pixels that may carry a normal.

    Returns:
        ``(unit_normals (3, H, W), has_normal (1, H, W) bool)`` where ``has_normal`` is True
        where the input vector was longer than :data:`MIN_NORMAL_LENGTH` (and ``valid``).
    """
    length = normals.norm(dim=0, keepdim=True)
    has_normal = length > MIN_NORMAL_LENGTH
    if valid is not None:
        has_normal = has_normal & valid
    unit = torch.where(has_normal, normals / length.clamp_min(MIN_NORMAL_LENGTH), torch.zeros_like(normals))
    return unit, has_normal


def to_contract_tensors(
    image: np.ndarray,
    *,
    name: str,
    domain: str,
    seg: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    edges: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Build a contract sample from numpy arrays as readers load them.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, or float in [0, 1].
        name: sample id; domain: dataset / domain name.
        seg: ``(H, W)`` integer class ids (already mapped to ``[0, K)`` or 255).
        depth: ``(H, W)`` float depth; set to 0 where ``valid`` is False.
        normals: ``(H, W, 3)`` float vectors in the kit's camera frame; renormalised to unit
            length where valid, 0 elsewhere.
        edges: ``(H, W)`` float in [0, 1] (clipped to that range).
        valid: ``(H, W)`` bool, True where depth and normals are defined; all True if None.

    Returns:
        dict with ``image (3,H,W) float32``, ``valid (1,H,W) bool``, ``name``, ``domain`` and
        one key per label given (``seg (H,W) int64``, ``depth (1,H,W)``, ``normals (3,H,W)``,
        ``edges (1,H,W)``, all float32).

    Raises:
        ValueError: if an array has the wrong number of dimensions or a size other than the
            image's.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    hw = (int(image.shape[0]), int(image.shape[1]))
    if image.dtype == np.uint8:
        img = torch.from_numpy(image.astype(np.float32) / UINT8_MAX)
    else:
        img = torch.from_numpy(np.clip(image.astype(np.float32), 0.0, 1.0))
    sample: dict[str, Any] = {"image": img.permute(2, 0, 1).contiguous()}

    if valid is None:
        valid_t = torch.ones((1, *hw), dtype=torch.bool)
    else:
        valid = np.asarray(valid, dtype=bool)
        if valid.ndim != 2:
            raise ValueError(f"valid must be (H, W), got shape {valid.shape}")
        _check_hw("valid", valid, hw)
        valid_t = torch.from_numpy(valid.copy())[None]

    if seg is not None:
        seg = np.asarray(seg)
        if seg.ndim != 2:
            raise ValueError(f"seg must be (H, W), got shape {seg.shape}")
        _check_hw("seg", seg, hw)
        sample["seg"] = torch.from_numpy(seg.astype(np.int64))
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float32)
        if depth.ndim != 2:
            raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
        _check_hw("depth", depth, hw)
        d = torch.from_numpy(depth.copy())[None]
        sample["depth"] = torch.where(valid_t, d, torch.zeros_like(d))
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        if normals.ndim != 3 or normals.shape[2] != 3:
            raise ValueError(f"normals must be (H, W, 3), got shape {normals.shape}")
        _check_hw("normals", normals, hw)
        n = torch.from_numpy(normals.copy()).permute(2, 0, 1).contiguous()
        sample["normals"], _ = normalize_normals(n, valid_t)
    if edges is not None:
        edges = np.asarray(edges, dtype=np.float32)
        if edges.ndim != 2:
            raise ValueError(f"edges must be (H, W), got shape {edges.shape}")
        _check_hw("edges", edges, hw)
        sample["edges"] = torch.from_numpy(np.clip(edges, 0.0, 1.0))[None]

    sample["valid"] = valid_t
    sample["name"] = name
    sample["domain"] = domain
    return sample


def _resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resampling of a ``(C, H, W)`` map of any dtype, dtype preserved."""
    out = F.interpolate(x[None].to(torch.float32), size=size, mode=LABEL_INTERPOLATION)[0]
    if x.dtype == torch.bool:
        return out > 0.5
    return out.to(x.dtype)


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 3, H, W)`` images in [0, 1] resampled to ``size = (H', W')``: bilinear with
    anti-aliasing, clamped to [0, 1] (how every image of the kit is resized)."""
    return F.interpolate(images.to(torch.float32), size=tuple(size), mode=IMAGE_INTERPOLATION,
                         align_corners=False, antialias=True).clamp(0.0, 1.0)


def resize_sample(sample: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Resize every spatial entry of a contract sample to ``size = (H, W)``.

    The image is resampled bilinearly with anti-aliasing; ``seg``, ``depth``, ``edges`` and
    ``valid`` with nearest-neighbour sampling (the same source pixel for all of them, so
    depth stays 0 exactly where ``valid`` is False); ``normals`` nearest, then renormalised
    to unit length where valid. ``name``/``domain`` are copied. The input is not modified.

    Args:
        sample: a contract sample (any subset of the keys in :data:`SPATIAL_KEYS`).
        size: target ``(height, width)`` in pixels, both positive.

    Raises:
        ValueError: for a bad size or a key this function does not know how to resize.
    """
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
    size = (int(size[0]), int(size[1]))
    unknown = [k for k in sample if k not in SPATIAL_KEYS and k not in NON_SPATIAL_KEYS]
    if unknown:
        raise ValueError(
            f"resize_sample does not know how to resize keys {unknown}; "
            f"it handles {SPATIAL_KEYS} and copies {NON_SPATIAL_KEYS}"
        )
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if key in NON_SPATIAL_KEYS:
            out[key] = value
        elif key == "image":
            out[key] = resize_images(value[None], size)[0]
        elif key == "seg":
            out[key] = _resize_nearest(value[None], size)[0]
        else:
            out[key] = _resize_nearest(value, size)
    if "normals" in out:
        valid = out.get("valid")
        out["normals"], _ = normalize_normals(out["normals"].to(torch.float32), valid)
    return out
