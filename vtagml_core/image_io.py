"""Read an uploaded image as ``(H, W, 3)`` uint8 RGB, or refuse it with a message (the demo's input).

:func:`load_image` turns a file path, raw bytes, a PIL image or an array into an ``(H, W, 3)``
uint8 RGB array and refuses what cannot be read with a :class:`ValueError` that says what is
wrong. :mod:`vtagml_core.predict` runs a model on the result.

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
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest accepted file, in bytes (the demo also passes this to Gradio's upload cap).
MAX_UPLOAD_BYTES: int = 20 * 1024 * 1024
#: Largest accepted image, in pixels, read from the header before decoding (e.g. 8000x5000).
MAX_IMAGE_PIXELS: int = 40_000_000
#: Decoded images are downscaled so that their longer side is at most this many pixels.
MAX_WORKING_SIDE: int = 2048
#: RGB background that transparent pixels are composited on.
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)
#: Largest value of a 16-bit channel; ``v * 255 / 65535 = v / 257`` maps it to 8 bits.
UINT16_MAX: int = 65535
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


__all__ = ["ALPHA_BACKGROUND", "ImageSource", "LoadedImage", "MAX_IMAGE_PIXELS", "MAX_UPLOAD_BYTES",
           "MAX_WORKING_SIDE", "load_image", "load_image_with_notes"]
