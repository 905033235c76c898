"""Decoding memory of :func:`vtagml_core.image_io.load_image` stays bounded (reliability issue, item 3).

A 77 KB 16-bit PNG of 6300 x 6300 zeros is under the pixel cap, yet the loader used to turn
it into float64 arrays: +1.25 GB per request. Each measurement runs in a fresh Python process
(``ru_maxrss`` is a per-process high-water mark) and compares the peak RSS before and after
decoding the file.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

#: Side of the square bomb: 39.7 megapixels, under MAX_IMAGE_PIXELS (40 MP).
BOMB_SIDE = 6300
#: Largest peak-RSS growth allowed for decoding it (the issue's bound).
MAX_GROWTH_MB = 300
#: Seconds the measuring subprocess may take.
SUBPROCESS_TIMEOUT_S = 300

#: Run in a subprocess: load the file, print the peak RSS growth (MB), result shape and notes.
MEASURE = r"""
import json, resource, sys
import numpy as np
from vtagml_core.image_io import load_image_with_notes

data = open(sys.argv[1], "rb").read()
np.zeros(1)  # numpy and Pillow imported, file read: the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = load_image_with_notes(data)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "shape": list(out.rgb.shape),
                  "max": int(out.rgb.max()), "notes": out.notes}))
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(side: int, bit_depth: int, color_type: int, channels: int) -> bytes:
    """A ``side x side`` PNG of zeros, compressed row by row (a few dozen KB)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + side * channels * bit_depth // 8)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _measure(path: Path) -> dict:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=root, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


#: (name, bit depth, PNG colour type, channels): the issue's 16-bit grayscale file, and the
#: other layouts whose decoded raster is largest (16-bit RGBA, 8-bit RGBA).
BOMBS = [("gray16", 16, 0, 1), ("rgba16", 16, 6, 4), ("rgba8", 8, 6, 4)]


@pytest.mark.parametrize("name, bit_depth, color_type, channels", BOMBS)
def test_decoding_a_large_png_of_any_depth_stays_under_the_memory_bound(
        tmp_path, name, bit_depth, color_type, channels):
    path = tmp_path / f"{name}.png"
    path.write_bytes(zero_png(BOMB_SIDE, bit_depth, color_type, channels))
    result = _measure(path)
    assert result["growth_mb"] < MAX_GROWTH_MB, result
    # The image still comes out: downscaled to the working size, as 8-bit RGB.
    assert result["shape"] == [2048, 2048, 3]
    assert any("downscaled from 6300x6300" in n for n in result["notes"])
    if color_type == 0:
        assert result["max"] == 0 and any("16-bit" in n for n in result["notes"])
    else:  # fully transparent zeros are composited on white
        assert result["max"] == 255 and any("white" in n for n in result["notes"])
