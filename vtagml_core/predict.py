"""Predict the four dense tasks (paper Sec. 3.3) of one uploaded image with a trained model.

Two parts, both used by the Gradio demo (``demo_app/``) and usable from notebooks:

* :func:`load_image` turns a file path, raw bytes, a PIL image or an array into an
  ``(H, W, 3)`` uint8 RGB array, and refuses what cannot be read with a :class:`ValueError`
  that says what is wrong (see "Input policy" below).
* :class:`Predictor` wraps a :class:`~vtagml_core.model.vtagml.VTAGML` and returns a
  :class:`Prediction`: per-task arrays and colourised images at a display size.

Input policy of :func:`load_image` (decided once, here):

* More than ``max_bytes`` (default :data:`MAX_UPLOAD_BYTES`) is refused before reading.
* Not an image Pillow can identify: refused ("not an image ...").
* More than ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`) according to the *header* is
  refused before any pixel is decoded, so a 10000x10000 upload (or a decompression bomb)
  never costs memory. Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``) is left as is.
* Truncated or corrupt pixel data: refused ("truncated or corrupt"). Pillow's
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off; the kit never changes that global.
* Animated images (GIF, APNG, WebP): the first frame is used, and a note says so.
* EXIF orientation is applied (phone photos come out upright).
* 16-bit grayscale images are scaled to 8 bits (``v / 257``); 16-bit RGB(A) PNGs are reduced
  to 8 bits per channel by Pillow itself when read; float images are min-max scaled.
* Transparency (RGBA, LA, palette with a transparent colour) is composited on white
  (:data:`ALPHA_BACKGROUND`), as an image viewer on a light page shows it.
* Grayscale, bilevel, palette, CMYK, YCbCr, LAB, HSV: converted to RGB.
* Decoded images whose longer side exceeds ``max_side`` (default :data:`MAX_WORKING_SIDE`)
  are downscaled; JPEGs are decoded at a reduced scale directly (``Image.draft``).
* Tiny images (even 1x1) are accepted; the predictor scales them up to the model's input.

Resize policy of :class:`Predictor` -- letterbox: the image is scaled (aspect ratio kept)
so its longer side equals the model's square input ``S = backbone.img_size`` and pasted
centred on a canvas of the backbone's mean colour (which normalises to zero, a neutral
input). The model's outputs are cropped back to the image's box and resized to the display
size (longer side :data:`DISPLAY_MAX_SIDE`), bilinearly on the raw outputs (logits for seg
and edges), then turned into predictions with :func:`~vtagml_core.eval.predictions.to_prediction`.
Nothing of the image is cut off and nothing is stretched; the price is fewer model pixels for
non-square images (a 640x480 photo is seen at 128x96 by a 128 px model).
"""
from __future__ import annotations

import io
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from vtagml_core.eval.predictions import to_prediction
from vtagml_core.viz.samples import colorize_seg, depth_to_rgb, edges_to_rgb, normals_to_rgb

#: Largest accepted file, in bytes (the demo also passes this to Gradio's upload cap).
MAX_UPLOAD_BYTES: int = 20 * 1024 * 1024
#: Largest accepted image, in pixels, read from the header before decoding (e.g. 8000x5000).
MAX_IMAGE_PIXELS: int = 40_000_000
#: Decoded images are downscaled so that their longer side is at most this many pixels.
MAX_WORKING_SIDE: int = 2048
#: Longer side, in pixels, of the prediction images and arrays a :class:`Prediction` holds
#: (3x the 128 px model input: smooth class boundaries, yet cheap to colourise and encode).
DISPLAY_MAX_SIDE: int = 384
#: RGB background that transparent pixels are composited on.
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)
#: Largest value of a 16-bit channel; ``v * 255 / 65535 = v / 257`` maps it to 8 bits.
UINT16_MAX: int = 65535
#: Opacity of the class colours over the image in :attr:`Prediction.seg_overlay`.
SEG_OVERLAY_ALPHA: float = 0.6
#: Modes that carry transparency and must be composited.
ALPHA_MODES: tuple[str, ...] = ("RGBA", "LA", "PA", "RGBa", "La")
#: 16-bit integer modes Pillow produces for 16-bit PNG / TIFF.
UINT16_MODES: tuple[str, ...] = ("I;16", "I;16B", "I;16L", "I;16N")
#: Errors Pillow raises for unreadable pixel data (truncated files, bad compressed streams).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError,
                                                   zlib.error, IndexError)

ImageSource = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]


@dataclass
class LoadedImage:
    """What :func:`load_image_with_notes` read.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        notes: what was done to make it RGB (conversions, first frame, downscaling), for
            display next to the result; empty for a plain 8-bit RGB image.
        source_size: ``(width, height)`` in the file, before any downscaling.
    """

    rgb: np.ndarray
    notes: list[str] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)


def _open(source: ImageSource, max_bytes: int) -> Image.Image:
    """Open lazily (header only) from any supported source; check the byte cap first."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(f"array images must be uint8 (H, W), (H, W, 3) or (H, W, 4), got "
                             f"{arr.dtype} {arr.shape}")
        return Image.fromarray(np.ascontiguousarray(arr))
    if isinstance(source, (bytes, bytearray)):
        size, stream, what = len(source), io.BytesIO(bytes(source)), "the data"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path} is not a file; give the path of an image file")
        size, stream, what = path.stat().st_size, None, path.name
    else:
        raise ValueError(f"cannot read an image from a {type(source).__name__}; give a path, "
                         "bytes, a PIL image or a uint8 array")
    if size == 0:
        raise ValueError(f"{what} is empty (0 bytes); upload an image file")
    if size > max_bytes:
        raise ValueError(f"{what} is {size / 2**20:.1f} MB, more than the {max_bytes / 2**20:.0f} MB "
                         "limit; upload a smaller image")
    if stream is None:  # read the (capped) file at once: no file handle stays open
        stream = io.BytesIO(Path(source).read_bytes())
    try:
        return Image.open(stream)
    except UnidentifiedImageError:
        raise ValueError(f"{what} is not an image the kit can read (PNG, JPEG, GIF, BMP, TIFF, "
                         "WebP, ...); upload an image file") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"{what} is too large to decode safely ({err}); downscale it first") from None
    except DECODE_ERRORS as err:
        raise ValueError(f"{what} has a corrupt image header ({err}); upload another file") from None


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode -> RGB, by the module's policy (16-bit scaled, alpha on white)."""
    mode = im.mode
    if mode in UINT16_MODES or mode == "I":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        if mode == "I" and lo >= 0 and hi <= 255:
            scaled, note = a, "converted from 32-bit integer to RGB"
        elif lo >= 0 and hi <= UINT16_MAX:
            scaled, note = a * (255.0 / UINT16_MAX), "16-bit grayscale scaled to 8-bit RGB"
        else:
            scaled = (a - lo) * (255.0 / max(hi - lo, 1.0))
            note = "32-bit grayscale min-max scaled to 8-bit RGB"
        notes.append(note)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        lo, hi = a.min(initial=0.0), a.max(initial=0.0)
        notes.append("floating-point image min-max scaled to 8-bit RGB")
        a = (a - lo) / max(hi - lo, np.finfo(np.float64).eps) * 255.0
        return Image.fromarray(np.rint(a).astype(np.uint8)).convert("RGB")
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent pixels composited on white")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        notes.append(f"converted from {mode} to RGB")
        return im.convert("RGB")
    return im


def load_image_with_notes(
    source: ImageSource,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_WORKING_SIDE,
) -> LoadedImage:
    """Read ``source`` by the module's input policy; see :func:`load_image`.

    Returns:
        :class:`LoadedImage` with the ``(H, W, 3)`` uint8 array and notes on what was done.
    """
    im = _open(source, max_bytes)
    notes: list[str] = []
    width, height = im.size
    if width < 1 or height < 1:
        raise ValueError(f"the image has no pixels ({width}x{height}); upload another file")
    if width * height > max_pixels:
        raise ValueError(f"the image is {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                         f"more than the {max_pixels / 1e6:.0f} MP limit; downscale it first")
    frames = getattr(im, "n_frames", 1)
    try:
        if frames > 1:
            im.seek(0)
            notes.append(f"animated image: used frame 1 of {frames}")
        if im.format == "JPEG" and max(width, height) > max_side:
            im.draft("RGB", (max_side, max_side))
        im.load()
        im = ImageOps.exif_transpose(im) or im
        im = _to_rgb(im, notes)
    except Image.DecompressionBombError as err:
        raise ValueError(f"the image is too large to decode safely ({err})") from None
    except DECODE_ERRORS as err:
        raise ValueError(f"the image data is truncated or corrupt ({err}); re-export or "
                         "re-download the file") from None
    if max(im.size) > max_side:
        im = im.copy()
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        notes.append(f"downscaled from {width}x{height} to {im.size[0]}x{im.size[1]}")
    return LoadedImage(np.asarray(im, dtype=np.uint8).copy(), notes, (width, height))


def load_image(
    source: ImageSource,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_WORKING_SIDE,
) -> np.ndarray:
    """An image file (path or bytes), PIL image or uint8 array as ``(H, W, 3)`` uint8 RGB.

    Args:
        source: path, raw file bytes, ``PIL.Image.Image`` or uint8 array.
        max_pixels: refuse images larger than this (read from the header, before decoding).
        max_bytes: refuse files larger than this.
        max_side: downscale decoded images to at most this longer side.

    Raises:
        ValueError: with a message for the user (not an image, too large, truncated, ...).
    """
    return load_image_with_notes(source, max_pixels, max_bytes, max_side).rgb


# ---------------------------------------------------------------------------------------------
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
    "DISPLAY_MAX_SIDE", "MAX_IMAGE_PIXELS", "MAX_UPLOAD_BYTES", "MAX_WORKING_SIDE",
    "LegendEntry", "Letterbox", "LoadedImage", "Prediction", "Predictor", "default_class_table",
    "display_size", "letterbox_box", "load_image", "load_image_with_notes",
]
