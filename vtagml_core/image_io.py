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
* Decoding memory is bounded whatever the bit depth and mode: Pillow's decoded raster
  (:func:`decoded_bytes`: 1, 2 or 4 bytes a pixel) may not exceed ``max_decoded_bytes``
  (default :data:`MAX_DECODED_BYTES`, checked from the header), and everything after it --
  bit-depth scaling, mode conversion, downscaling -- runs on strips of :data:`STRIP_ROWS`
  rows, reduced by an integer factor as they are converted (uint8 / uint32 temporaries; float64
  only within one strip of a float image). Peak memory is the raster plus one strip plus the
  downscaled image: a 6300x6300 16-bit PNG costs ~110 MB, not the 1.25 GB of float64 copies.
* Truncated or corrupt pixel data: refused ("truncated or corrupt"). Pillow's
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off; the kit never changes that global.
* Animated images (GIF, APNG, WebP): the first frame is used, and a note says so; for a
  multi-page TIFF the note says page, not frame.
* EXIF orientation is applied (phone photos come out upright).
* 16-bit grayscale images are scaled to 8 bits (``v / 257``); 16-bit RGB(A) PNGs are reduced
  to 8 bits per channel by Pillow itself when read; float images are min-max scaled over
  their finite values (NaN shows as the minimum).
* Transparency (RGBA, LA, palette with a transparent colour) is composited on white
  (:data:`ALPHA_BACKGROUND`), as an image viewer on a light page shows it.
* Grayscale, bilevel, palette, CMYK, YCbCr, LAB, HSV: converted to RGB.
* Decoded images whose longer side exceeds ``max_side`` (default :data:`MAX_WORKING_SIDE`)
  are downscaled (box reduction by an integer factor, then bilinear to ``max_side``); JPEGs
  are decoded at a reduced scale directly (``Image.draft``).
* Modes Pillow cannot convert to RGB are refused with a message.
* Tiny images (even 1x1) are accepted; the predictor scales them up to the model's input.
"""
from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Largest accepted file, in bytes (the demo also passes this to Gradio's upload cap).
MAX_UPLOAD_BYTES: int = 20 * 1024 * 1024
#: Largest accepted image, in pixels, read from the header before decoding (e.g. 8000x5000).
MAX_IMAGE_PIXELS: int = 40_000_000
#: Decoded images are downscaled so that their longer side is at most this many pixels.
MAX_WORKING_SIDE: int = 2048
#: RGB background that transparent pixels are composited on.
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)
#: Largest values of an 8-bit and a 16-bit channel; ``v * 255 / 65535 = v / 257`` maps 16 bits
#: to 8, computed in integers as ``(v + 128) // 257`` (never a tie: 257 is odd).
UINT8_MAX: int = 255
UINT16_MAX: int = 65535
UINT16_TO_UINT8: int = 257
UINT16_ROUND: int = UINT16_TO_UINT8 // 2
#: Modes that carry transparency and must be composited.
ALPHA_MODES: tuple[str, ...] = ("RGBA", "LA", "PA", "RGBa", "La")
#: 16-bit integer modes Pillow produces for 16-bit PNG / TIFF.
UINT16_MODES: tuple[str, ...] = ("I;16", "I;16B", "I;16L", "I;16N")
#: Modes whose decoded raster has one byte a pixel (16-bit modes have 2, all others 4:
#: Pillow stores RGB, YCbCr, ... padded to 4 bytes).
ONE_BYTE_MODES: tuple[str, ...] = ("1", "L", "P")
MAX_BYTES_PER_PIXEL: int = 4
#: Largest decoded raster, in bytes: a :data:`MAX_IMAGE_PIXELS` image at 4 bytes a pixel.
MAX_DECODED_BYTES: int = MAX_IMAGE_PIXELS * MAX_BYTES_PER_PIXEL
#: Rows converted and downscaled at a time: one strip's temporaries stay a few MB
#: (256 rows x 8000 pixels x 4 bytes = 8 MB).
STRIP_ROWS: int = 256
#: EXIF orientation tag and the transpose that shows each orientation upright.
EXIF_ORIENTATION_TAG: int = 0x0112
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
#: Note for a file with several images, by format ("" for the rest: animations).
MULTI_FRAME_NOTES: dict[str, str] = {
    "TIFF": "multi-page TIFF: used page 1 of {n}",
    "MPO": "multi-picture file: used picture 1 of {n}",
    "": "animated image: used frame 1 of {n}",
}
#: Errors Pillow raises for unreadable pixel data (truncated files, bad compressed streams).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError,
                                                   zlib.error, IndexError)

ImageSource = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]
#: Converts one strip of a decoded image to an 8-bit working mode.
StripConverter = Callable[[Image.Image], Image.Image]


class UnsupportedImageError(ValueError):
    """A readable image the kit refuses (too costly to decode, or a mode without RGB)."""


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
        size, stream, what = len(source), io.BytesIO(bytes(source)), "the file"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path.name} is not a file; give the path of an image file")
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


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """Bytes of Pillow's decoded raster of a ``mode`` image of ``size`` (width, height)."""
    per_pixel = (1 if mode in ONE_BYTE_MODES else 2 if mode in UINT16_MODES
                 else MAX_BYTES_PER_PIXEL)
    return size[0] * size[1] * per_pixel


def _strips(im: Image.Image, rows: int) -> Iterator[tuple[int, Image.Image]]:
    """``(top, strip)`` of ``rows`` rows each (the last one shorter), copied from ``im``."""
    width, height = im.size
    for top in range(0, height, rows):
        yield top, im.crop((0, top, width, min(top + rows, height)))


def _gray_to_l(im: Image.Image, notes: list[str]) -> StripConverter:
    """16-bit, 32-bit integer or float grayscale -> 8-bit ``L``, one strip at a time.

    16-bit values are scaled by ``v / 257`` (in integers: ``(v + 128) // 257`` rounds it), 32-bit
    integers in 0..255 are kept, in 0..65535 scaled as 16-bit, otherwise min-max scaled; float
    images are min-max scaled over their finite values (NaN -> the minimum, +-inf -> the ends).
    """
    mode = im.mode

    def sixteen(strip: Image.Image) -> Image.Image:
        a = np.asarray(strip).astype(np.uint32)
        return Image.fromarray(((a + UINT16_ROUND) // UINT16_TO_UINT8).astype(np.uint8), "L")

    if mode in UINT16_MODES:
        notes.append("16-bit grayscale scaled to 8-bit RGB")
        return sixteen
    lo, hi = math.inf, -math.inf
    for _, strip in _strips(im, STRIP_ROWS):
        a = np.asarray(strip)
        a = a[np.isfinite(a)] if mode == "F" else a
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if lo > hi:  # no finite value at all
        lo = hi = 0.0
    if mode == "I" and lo >= 0 and hi <= UINT8_MAX:
        notes.append("converted from 32-bit integer to RGB")
        return lambda strip: Image.fromarray(np.asarray(strip).astype(np.uint8), "L")
    if mode == "I" and lo >= 0 and hi <= UINT16_MAX:
        notes.append("16-bit grayscale scaled to 8-bit RGB")
        return sixteen
    if mode == "I":
        notes.append("32-bit grayscale min-max scaled to 8-bit RGB")
        scale = UINT8_MAX / max(hi - lo, 1.0)
    else:
        notes.append("floating-point image min-max scaled to 8-bit RGB")
        scale = UINT8_MAX / max(hi - lo, float(np.finfo(np.float64).eps))

    def min_max(strip: Image.Image) -> Image.Image:
        a = np.nan_to_num(np.asarray(strip, dtype=np.float64), nan=lo, posinf=hi, neginf=lo)
        a = np.clip(np.rint((a - lo) * scale), 0, UINT8_MAX)
        return Image.fromarray(a.astype(np.uint8), "L")

    return min_max


def _working_mode(im: Image.Image, notes: list[str]) -> tuple[str, StripConverter | None]:
    """The 8-bit mode ``im`` is reduced in (L, LA, RGB, RGBA) and a strip converter to it.

    ``None`` as converter: ``im`` already is in that mode.
    """
    mode = im.mode
    if mode in UINT16_MODES or mode in ("I", "F"):
        return "L", _gray_to_l(im, notes)
    if mode in ("RGB", "RGBA", "LA"):
        return mode, None
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        target = "LA" if mode == "La" else "RGBA"
        return target, lambda strip: strip.convert(target)
    target = "L" if mode in ("1", "L") else "RGB"
    try:
        im.crop((0, 0, 1, 1)).convert(target)
    except ValueError:
        raise UnsupportedImageError(f"images in Pillow's {mode} mode cannot be converted to RGB; "
                                    "save the image as 8-bit RGB and upload it again") from None
    notes.append(f"converted from {mode} to RGB")
    return target, (None if mode == target else lambda strip: strip.convert(target))


def _decode_small(im: Image.Image, max_side: int, notes: list[str]) -> Image.Image:
    """A loaded image in an 8-bit working mode, reduced by an integer factor, strip by strip.

    The factor is the largest that keeps the longer side at least ``max_side``. Each strip of a
    multiple of ``factor`` rows is converted to the working mode and reduced by ``factor`` (a
    box filter: strip-wise equals whole-image reduction), so the temporaries never exceed one
    strip. :func:`_fit` then resizes the result to exactly ``max_side``.
    """
    width, height = im.size
    factor = max(1, max(width, height) // max_side)
    mode, convert = _working_mode(im, notes)
    if factor == 1 and convert is None:
        small = im
    else:
        small = Image.new(mode, (-(-width // factor), -(-height // factor)))
        for top, strip in _strips(im, max(factor, STRIP_ROWS // factor * factor)):
            strip = convert(strip) if convert is not None else strip
            small.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return small


def _fit(small: Image.Image, source_size: tuple[int, int], max_side: int,
         notes: list[str]) -> Image.Image:
    """``small`` resized (bilinear) so its longer side is at most ``max_side``."""
    if max(small.size) > max_side:
        scale = max_side / max(small.size)
        small = small.resize((max(1, round(small.width * scale)), max(1, round(small.height * scale))),
                             Image.Resampling.BILINEAR)
    if max(source_size) > max_side:
        notes.append(f"downscaled from {source_size[0]}x{source_size[1]} to "
                     f"{small.width}x{small.height}")
    return small


def _to_rgb(small: Image.Image, notes: list[str]) -> Image.Image:
    """An 8-bit working-mode image -> RGB; transparency is composited on white."""
    if small.mode in ("RGBA", "LA"):
        rgba = small if small.mode == "RGBA" else small.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < UINT8_MAX:
            notes.append("transparent pixels composited on white")
        rgb = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        rgb.paste(rgba.convert("RGB"), mask=alpha)  # over an opaque background: "over" compositing
        return rgb
    return small if small.mode == "RGB" else small.convert("RGB")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation of a loaded image (1, upright, when absent or unreadable)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


def load_image_with_notes(
    source: ImageSource,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_WORKING_SIDE,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
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
            notes.append(MULTI_FRAME_NOTES.get(im.format or "", MULTI_FRAME_NOTES[""]).format(n=frames))
        if im.format == "JPEG" and max(width, height) > max_side:
            im.draft("RGB", (max_side, max_side))
        need = decoded_bytes(im.mode, im.size)
        if need > max_decoded_bytes:
            raise UnsupportedImageError(
                f"decoding this {width}x{height} image (Pillow mode {im.mode}) takes "
                f"{need / 2**20:.0f} MB, more than the {max_decoded_bytes / 2**20:.0f} MB limit; "
                "downscale it first")
        im.load()
        orientation = _orientation(im)
        small = _decode_small(im, max_side, notes)
        del im  # frees the decoded raster (unless the caller holds the image)
        rgb = _to_rgb(_fit(small, (width, height), max_side, notes), notes)
        if orientation in ORIENTATION_TRANSPOSE:
            rgb = rgb.transpose(ORIENTATION_TRANSPOSE[orientation])
    except UnsupportedImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ValueError(f"the image is too large to decode safely ({err})") from None
    except DECODE_ERRORS as err:
        raise ValueError(f"the image data is truncated or corrupt ({err}); re-export or "
                         "re-download the file") from None
    return LoadedImage(np.asarray(rgb, dtype=np.uint8).copy(), notes, (width, height))


def load_image(
    source: ImageSource,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_WORKING_SIDE,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
) -> np.ndarray:
    """An image file (path or bytes), PIL image or uint8 array as ``(H, W, 3)`` uint8 RGB.

    Args:
        source: path, raw file bytes, ``PIL.Image.Image`` or uint8 array.
        max_pixels: refuse images larger than this (read from the header, before decoding).
        max_bytes: refuse files larger than this.
        max_side: downscale decoded images to at most this longer side.
        max_decoded_bytes: refuse images whose decoded raster would be larger (header check).

    Raises:
        ValueError: with a message for the user (not an image, too large, truncated, ...).
    """
    return load_image_with_notes(source, max_pixels, max_bytes, max_side, max_decoded_bytes).rgb


__all__ = ["ALPHA_BACKGROUND", "ImageSource", "LoadedImage", "MAX_DECODED_BYTES", "MAX_IMAGE_PIXELS",
           "MAX_UPLOAD_BYTES", "MAX_WORKING_SIDE", "UnsupportedImageError", "decoded_bytes",
           "load_image", "load_image_with_notes"]
