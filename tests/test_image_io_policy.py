"""The strip-wise decoding of :mod:`vtagml_core.image_io` gives the same pixels as whole-image
processing, and its messages name what the user can act on (reliability issue, items 3 and 8).
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vtagml_core.image_io import STRIP_ROWS, decoded_bytes, load_image, load_image_with_notes

#: Working side of these tests and an image 3x as wide: reduced by 3, no bilinear step after.
SIDE = 400
WIDE = (3 * SIDE, 2 * STRIP_ROWS + 37)  # (width, height): several strips, a short last one


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(shape: tuple[int, ...], dtype=np.uint8, high: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def test_strip_wise_reduction_equals_reducing_the_whole_image():
    width, height = WIDE
    rgb = Image.fromarray(_noise((height, width, 3)))
    out = load_image_with_notes(_save(rgb, "PNG"), max_side=SIDE)
    np.testing.assert_array_equal(out.rgb, np.asarray(rgb.reduce(3)))
    assert out.notes == [f"downscaled from {width}x{height} to {SIDE}x{-(-height // 3)}"]


def test_sixteen_bit_strips_scale_then_reduce_like_the_whole_image():
    width, height = WIDE
    values = _noise((height, width), np.uint16, high=65536, seed=1)
    eight = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    gray16 = Image.fromarray(values)  # mode I;16
    expected = np.asarray(Image.fromarray(eight, "L").reduce(3).convert("RGB"))
    np.testing.assert_array_equal(load_image(_save(gray16, "PNG"), max_side=SIDE), expected)


def test_transparent_strips_are_composited_like_the_whole_image():
    width, height = WIDE
    split = height // 2 // 3 * 3  # on a block boundary of the reduction by 3
    rgba = _noise((height, width, 4), seed=2)
    rgba[:split, :, 3] = 0      # top fully transparent -> white
    rgba[split:, :, 3] = 255    # bottom opaque -> the colours, reduced
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), max_side=SIDE)
    assert (out[: split // 3] == 255).all()
    np.testing.assert_array_equal(out[split // 3:],
                                  np.asarray(Image.fromarray(rgba[split:, :, :3]).reduce(3)))


def test_float_images_scale_over_finite_values():
    values = np.array([[0.0, 2.0, 4.0, np.nan, np.inf, -np.inf]], dtype=np.float32)
    out = load_image_with_notes(_save(Image.fromarray(values, "F"), "TIFF"))
    np.testing.assert_array_equal(out.rgb[0, :, 0], [0, 128, 255, 0, 255, 0])
    assert any("floating-point" in n for n in out.notes)


def test_thirty_two_bit_integer_images_keep_or_scale_their_range():
    small = np.array([[0, 100, 255]], dtype=np.int32)
    np.testing.assert_array_equal(load_image(_save(Image.fromarray(small, "I"), "TIFF"))[0, :, 0],
                                  [0, 100, 255])
    wide = np.array([[-1000, 0, 1000]], dtype=np.int32)
    np.testing.assert_array_equal(load_image(_save(Image.fromarray(wide, "I"), "TIFF"))[0, :, 0],
                                  [0, 128, 255])


def test_multi_page_tiff_is_called_multi_page_not_animated():
    pages = [Image.new("RGB", (8, 6), c) for c in ((250, 0, 0), (0, 250, 0))]
    data = _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    out = load_image_with_notes(data)
    assert out.notes == ["multi-page TIFF: used page 1 of 2"]
    assert out.rgb[..., 0].min() == 250  # page 1


def test_decoded_raster_cap_counts_bytes_per_pixel():
    assert decoded_bytes("L", (10, 10)) == 100
    assert decoded_bytes("I;16", (10, 10)) == 200
    assert decoded_bytes("RGB", (10, 10)) == 400  # Pillow pads RGB to 4 bytes
    gray16 = _save(Image.fromarray(np.zeros((10, 10), np.uint16)), "PNG")
    with pytest.raises(ValueError, match="takes 0 MB, more than the 0 MB limit; downscale"):
        load_image(gray16, max_decoded_bytes=199)
    assert load_image(gray16, max_decoded_bytes=200).shape == (10, 10, 3)


def test_missing_file_message_names_the_file_not_the_server_folder(tmp_path):
    with pytest.raises(ValueError) as err:
        load_image(tmp_path / "deep" / "photo.png")
    assert "photo.png is not a file" in str(err.value) and str(tmp_path) not in str(err.value)


def test_exif_orientation_rotates_the_downscaled_image():
    im = Image.fromarray(_noise((30, 90, 3), seed=3))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display
    out = load_image(_save(im, "PNG", exif=exif), max_side=30)
    np.testing.assert_array_equal(out, np.asarray(im.reduce(3).transpose(Image.Transpose.ROTATE_90)))
