"""Predict the four dense tasks (paper Sec. 3.3) of one uploaded image with a trained model.

Two parts, both used by the Gradio demo (``demo_app/``) and usable from notebooks:

* :func:`load_image` (from :mod:`vtagml_core.image_io`, re-exported here) turns a file path,
  raw bytes, a PIL image or an array into an ``(H, W, 3)`` uint8 RGB array, and refuses what
  cannot be read with a :class:`ValueError` that says what is wrong (the input policy is in
  that module's docstring).
* :class:`Predictor` wraps a :class:`~vtagml_core.model.vtagml.VTAGML` and returns a
  :class:`Prediction`: per-task arrays and colourised images at a display size.

Resize policy of :class:`Predictor` -- letterbox: the image is scaled (aspect ratio kept)
so its longer side equals the model's square input ``S = backbone.img_size`` and pasted
centred on a canvas of the backbone's mean colour (which normalises to zero, a neutral
input). The model's outputs are cropped back to the image's box and resized to the display
size (longer side :data:`DISPLAY_MAX_SIDE`), bilinearly on the raw outputs (logits for seg
and edges), then turned into predictions with :func:`~vtagml_core.metrics.predictions.to_prediction`.
Nothing of the image is cut off and nothing is stretched; the price is fewer model pixels for
non-square images (a 640x480 photo is seen at 128x96 by a 128 px model).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vtagml_core.metrics.predictions import to_prediction
from vtagml_core.image_io import (MAX_DECODED_BYTES, MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES,
                                  MAX_WORKING_SIDE, LoadedImage, load_image, load_image_with_notes)
from vtagml_core.viz.samples import colorize_seg, depth_to_rgb, edges_to_rgb, normals_to_rgb

#: Longer side, in pixels, of the prediction images and arrays a :class:`Prediction` holds
#: (3x the 128 px model input: smooth class boundaries, yet cheap to colourise and encode).
DISPLAY_MAX_SIDE: int = 384
#: Opacity of the class colours over the image in :attr:`Prediction.seg_overlay`.
SEG_OVERLAY_ALPHA: float = 0.6


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits on the model's ``S x S`` input: rows ``top:top+height`` etc."""

    top: int
    left: int
    height: int
    width: int


@dataclass
class LegendEntry:
    """One class present in a segmentation: id, name, display colour, fraction of pixels."""

    class_id: int
    name: str
    color: tuple[int, int, int]
    fraction: float


@dataclass
class Prediction:
    """Per-task outputs for one image, all at the display size ``(H, W)``.

    Task fields are ``None`` for tasks the model does not have.

    Attributes:
        image: ``(H, W, 3)`` uint8, the input at display size.
        tasks: the model's tasks.
        seg: ``(H, W)`` int64 class ids; ``seg_overlay`` ``(H, W, 3)`` uint8 class colours
            over the image; ``legend``: classes present, most frequent first.
        depth: ``(H, W)`` float32 depth (scene units); ``depth_rgb`` viridis colours spanning
            ``depth_range = (vmin, vmax)`` (the colour bar's ends).
        normals: ``(H, W, 3)`` float32 unit vectors (camera frame); ``normals_rgb`` as
            ``(n + 1) / 2``.
        edges: ``(H, W)`` float32 edge probability; ``edges_rgb`` grey.
        box: the image's place on the model input (see :class:`Letterbox`).
        timings: milliseconds for ``preprocess``, ``forward``, ``postprocess``, ``total``.
    """

    image: np.ndarray
    tasks: tuple[str, ...]
    seg: np.ndarray | None = None
    seg_overlay: np.ndarray | None = None
    legend: list[LegendEntry] = field(default_factory=list)
    depth: np.ndarray | None = None
    depth_rgb: np.ndarray | None = None
    depth_range: tuple[float, float] = (0.0, 0.0)
    normals: np.ndarray | None = None
    normals_rgb: np.ndarray | None = None
    edges: np.ndarray | None = None
    edges_rgb: np.ndarray | None = None
    box: Letterbox | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def task_images(self) -> dict[str, np.ndarray]:
        """``{task: (H, W, 3) uint8}`` for the model's tasks (seg: the overlay)."""
        images = {"seg": self.seg_overlay, "depth": self.depth_rgb,
                  "normals": self.normals_rgb, "edges": self.edges_rgb}
        return {t: images[t] for t in self.tasks}

    def arrays(self) -> dict[str, np.ndarray]:
        """``{task: array}`` of the raw predictions (seg ids, depth, normals, edges)."""
        values = {"seg": self.seg, "depth": self.depth, "normals": self.normals,
                  "edges": self.edges}
        return {t: values[t] for t in self.tasks}


def display_size(height: int, width: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """``(H, W)`` scaled so the longer side is ``max_side`` (each side at least 1)."""
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox_box(height: int, width: int, side: int) -> Letterbox:
    """The centred box of an ``height x width`` image scaled to fit ``side x side``."""
    h, w = display_size(height, width, side)
    return Letterbox(top=(side - h) // 2, left=(side - w) // 2, height=h, width=w)


def default_class_table(num_classes: int) -> tuple[list[str], np.ndarray]:
    """Names and ``(K, 3)`` colours: the synthetic benchmark's table when K matches it."""
    from vtagml_core.data.classes import NUM_CLASSES, class_colors, class_names

    if num_classes == NUM_CLASSES:
        return class_names(), class_colors()
    rng = np.random.default_rng(num_classes)
    return [f"class {k}" for k in range(num_classes)], rng.integers(0, 256, (num_classes, 3), dtype=np.uint8)


class Predictor:
    """Run a VTAGML model on single images (see the module docstring for the resize policy).

    Thread-safe: one forward at a time (``self.lock``; hold it to run ``self.model`` from
    elsewhere), under ``torch.inference_mode()``, model in eval mode on ``device`` (CPU).

    Args:
        model: a :class:`~vtagml_core.model.vtagml.VTAGML` (or any model of the same interface).
        class_names, class_colors: the segmentation classes; default
            :func:`default_class_table`.
        display_max_side: longer side of the output images and arrays.
    """

    def __init__(self, model: torch.nn.Module, class_names: list[str] | None = None,
                 class_colors: np.ndarray | None = None, display_max_side: int = DISPLAY_MAX_SIDE,
                 device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.tasks: tuple[str, ...] = tuple(model.tasks)
        self.input_size: int = int(model.config.backbone.img_size)
        names, colors = default_class_table(int(model.num_classes))
        self.class_names = list(class_names) if class_names is not None else names
        self.class_colors = np.asarray(class_colors if class_colors is not None else colors, dtype=np.uint8)
        self.display_max_side = display_max_side
        backbone = getattr(model, "backbone", None)
        mean = getattr(backbone, "pixel_mean", None)
        self.fill = (mean.reshape(3).cpu() if mean is not None else torch.full((3,), 0.5)).float()
        self.lock = threading.Lock()

    def to_input(self, rgb: np.ndarray) -> tuple[torch.Tensor, Letterbox]:
        """``(H, W, 3)`` uint8 -> letterboxed model input ``(1, 3, S, S)`` in [0, 1] and its box."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}; "
                             "read files with load_image()")
        S = self.input_size
        box = letterbox_box(rgb.shape[0], rgb.shape[1], S)
        small = Image.fromarray(rgb).resize((box.width, box.height), Image.Resampling.BILINEAR)
        canvas = self.fill.view(3, 1, 1).repeat(1, S, S)
        patch = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)
        canvas[:, box.top:box.top + box.height, box.left:box.left + box.width] = patch
        return canvas.unsqueeze(0), box

    def display_image(self, rgb: np.ndarray) -> np.ndarray:
        """The image resized so its longer side is ``display_max_side``, ``(H, W, 3)`` uint8."""
        H, W = display_size(rgb.shape[0], rgb.shape[1], self.display_max_side)
        return np.asarray(Image.fromarray(rgb).resize((W, H), Image.Resampling.BILINEAR))

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Predict every task of the model for one ``(H, W, 3)`` uint8 image."""
        t0 = time.perf_counter()
        x, box = self.to_input(rgb)
        image = self.display_image(rgb)
        H, W = image.shape[:2]
        t1 = time.perf_counter()
        with self.lock, torch.inference_mode():
            raw = self.model(x.to(self.device))
            outs = {}
            for task, r in raw.items():
                r = r[..., box.top:box.top + box.height, box.left:box.left + box.width]
                r = F.interpolate(r.float(), size=(H, W), mode="bilinear", align_corners=False)
                outs[task] = to_prediction(task, r)[0].cpu()
        t2 = time.perf_counter()
        pred = Prediction(image=image, tasks=self.tasks, box=box)
        if "seg" in outs:
            self._fill_seg(pred, outs["seg"].numpy().argmax(0))  # numpy: ~4x faster here
        if "depth" in outs:
            depth = outs["depth"][0].numpy().astype(np.float32)
            vmin, vmax = float(depth.min()), float(depth.max())
            pred.depth, pred.depth_range = depth, (vmin, vmax)
            # Offset by a tiny positive amount: depth_to_rgb treats depth <= 0 as invalid.
            eps = np.float32(np.finfo(np.float32).eps)
            pred.depth_rgb = depth_to_rgb(depth - vmin + eps, vmax=vmax - vmin + eps)
        if "normals" in outs:
            pred.normals = outs["normals"].permute(1, 2, 0).numpy().astype(np.float32)
            pred.normals_rgb = normals_to_rgb(pred.normals)
        if "edges" in outs:
            pred.edges = outs["edges"][0].numpy().astype(np.float32)
            pred.edges_rgb = edges_to_rgb(pred.edges)
        t3 = time.perf_counter()
        pred.timings = {"preprocess": (t1 - t0) * 1e3, "forward": (t2 - t1) * 1e3,
                        "postprocess": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return pred

    def _fill_seg(self, pred: Prediction, seg: np.ndarray) -> None:
        colors = colorize_seg(seg, self.class_colors).astype(np.float32)
        blend = SEG_OVERLAY_ALPHA * colors + (1.0 - SEG_OVERLAY_ALPHA) * pred.image.astype(np.float32)
        pred.seg = seg.astype(np.int64)
        pred.seg_overlay = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
        ids, counts = np.unique(seg, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        pred.legend = [
            LegendEntry(int(ids[i]), self.class_names[ids[i]] if ids[i] < len(self.class_names)
                        else f"class {ids[i]}", tuple(int(c) for c in self.class_colors[ids[i]]),
                        float(counts[i] / seg.size))
            for i in order
        ]


__all__ = [
    "DISPLAY_MAX_SIDE", "MAX_DECODED_BYTES", "MAX_IMAGE_PIXELS", "MAX_UPLOAD_BYTES", "MAX_WORKING_SIDE",
    "LegendEntry", "Letterbox", "LoadedImage", "Prediction", "Predictor", "default_class_table",
    "display_size", "letterbox_box", "load_image", "load_image_with_notes",
]
