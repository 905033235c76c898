"""Build tiny real-dataset trees on disk, in exactly the layouts the readers expect, with known
values, so tests can check that every reader decodes what was written.

Each ``make_*_tree`` returns a dict ``{sample_id: {raw arrays as written}}`` (plus layout
details) that the tests compare against. Values are deterministic per sample (seeded).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: Image quality of the NYUD JPEGs (lossy; tests compare with a tolerance).
JPEG_QUALITY: int = 95


def _smooth_rgb(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth colour gradient (compresses well as JPEG) with a per-sample offset."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(30, 120, size=3)
    img = np.stack([base[0] + 100 * xx / w, base[1] + 100 * yy / h, base[2] + 50 * (xx + yy) / (h + w)], axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _unit_vectors(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    v = rng.normal(size=(*size, 3)).astype(np.float32)
    return v / np.linalg.norm(v, axis=2, keepdims=True)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


# ----------------------------------------------------------------------------- NYUD-v2


def make_nyud_tree(root: Path, n_train: int = 3, n_val: int = 2, size: tuple[int, int] = (48, 64)) -> dict:
    """Write a ``NYUD_MT`` tree under ``root`` (MTI-Net layout).

    Per sample: a smooth RGB JPEG; segmentation PNG with values 0..40 (0 = unlabelled) and
    every sample containing 0, 1 and 40; depth with an invalid (0) block at the top-left;
    normals (random unit vectors, stored with length 2 to test renormalisation) with a zero
    block at the bottom-right; 0/1 edges.

    Returns:
        ``{"root": root, "splits": {"train": [...], "val": [...]}, "samples": {id: {...}}}``
        where each sample dict holds ``image``, ``seg_raw``, ``depth``, ``normals`` (unit),
        ``edges`` as written.
    """
    root = Path(root)
    h, w = size
    splits = {"train": [f"{i:04d}" for i in range(n_train)], "val": [f"{1000 + i:04d}" for i in range(n_val)]}
    (root / "gt_sets").mkdir(parents=True, exist_ok=True)
    samples = {}
    for split, ids in splits.items():
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for sid in ids:
            rng = np.random.default_rng(int(sid))
            image = _smooth_rgb(rng, size)
            seg_raw = rng.integers(0, 41, size=size).astype(np.uint8)
            seg_raw[0, :3] = (0, 1, 40)
            depth = rng.uniform(0.5, 10.0, size=size).astype(np.float32)
            depth[: h // 4, : w // 4] = 0.0
            normals = _unit_vectors(rng, size)
            normals[-h // 4:, -w // 4:] = 0.0
            edges = (rng.random(size) < 0.1).astype(np.float32)
            (root / "images").mkdir(exist_ok=True)
            Image.fromarray(image).save(root / "images" / f"{sid}.jpg", quality=JPEG_QUALITY)
            _save_png(root / "segmentation" / f"{sid}.png", seg_raw)
            for folder, arr in (("depth", depth), ("normals", normals * 2.0), ("edge", edges)):
                (root / folder).mkdir(exist_ok=True)
                np.save(root / folder / f"{sid}.npy", arr)
            samples[sid] = {"image": image, "seg_raw": seg_raw, "depth": depth, "normals": normals, "edges": edges}
    return {"root": root, "splits": splits, "samples": samples}


# ----------------------------------------------------------------------------- Taskonomy


def taskonomy_path(root: Path, folder: str, building: str, point: int, view: int) -> Path:
    """Path of one omnidata-layout file."""
    return Path(root) / folder / "taskonomy" / building / f"point_{point}_view_{view}_domain_{folder}.png"


def make_taskonomy_tree(
    root: Path,
    buildings: tuple[str, ...] = ("allensville", "beechwood"),
    points_per_building: int = 2,
    size: tuple[int, int] = (32, 40),
) -> dict:
    """Write an omnidata-tools Taskonomy tree under ``root``.

    Per (building, point, view): RGB PNG; ``depth_zbuffer`` uint16 with an invalid (65535)
    block at the top-left; ``normal`` uint8 RGB encoding random unit vectors, whose
    bottom-left pixel (h-1, 0) encodes (128, 128, 255) = a surface facing the camera in
    Taskonomy's frame;
    ``edge_texture`` uint16; ``segment_semantic`` uint8 values 0..17 (0 = unlabelled), with
    values 0, 1 and 17 always present. Views are numbered ``point + 1`` to exercise parsing.

    Returns:
        ``{"root": root, "records": [(building, point, view), ...], "samples": {id: {...}}}``
        with raw arrays ``rgb``, ``depth_raw``, ``normal_raw``, ``edge_raw``, ``seg_raw``;
        ``id`` is ``"<building>/point_<p>_view_<v>"``.
    """
    root = Path(root)
    h, w = size
    records, samples = [], {}
    for b_index, building in enumerate(buildings):
        for point in range(points_per_building):
            view = point + 1
            rng = np.random.default_rng(100 * b_index + point)
            rgb = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            depth_raw = rng.integers(256, 8192, size=size).astype(np.uint16)
            depth_raw[: h // 4, : w // 4] = 65535
            normal_raw = np.clip(np.rint((_unit_vectors(rng, size) + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
            normal_raw[-1, 0] = (128, 128, 255)
            edge_raw = rng.integers(0, 65536, size=size).astype(np.uint16)
            seg_raw = rng.integers(0, 18, size=size).astype(np.uint8)
            seg_raw[0, :3] = (0, 1, 17)
            for folder, arr in (
                ("rgb", rgb), ("depth_zbuffer", depth_raw), ("normal", normal_raw),
                ("edge_texture", edge_raw), ("segment_semantic", seg_raw),
            ):
                _save_png(taskonomy_path(root, folder, building, point, view), arr)
            records.append((building, point, view))
            samples[f"{building}/point_{point}_view_{view}"] = {
                "rgb": rgb, "depth_raw": depth_raw, "normal_raw": normal_raw, "edge_raw": edge_raw, "seg_raw": seg_raw,
            }
    return {"root": root, "records": records, "samples": samples}


# ----------------------------------------------------------------------------- Cityscapes

#: Stereo rig of the fixture cities: (baseline m, fx px); differs per city so that a reader
#: using the wrong camera file is caught.
CITYSCAPES_FIXTURE_CAMERAS: dict[str, tuple[float, float]] = {
    "frankfurt": (0.209313, 2262.52),
    "lindau": (0.22, 2300.0),
}


def cityscapes_path(root: Path, folder: str, split: str, base: str, suffix: str) -> Path:
    """Path of one Cityscapes file; ``base`` is ``<city>_<seq>_<frame>``."""
    city = base.split("_")[0]
    return Path(root) / folder / split / city / f"{base}{suffix}"


def make_cityscapes_tree(
    root: Path,
    split: str = "val",
    cities: tuple[str, ...] = ("frankfurt", "lindau"),
    n_per_city: int = 2,
    size: tuple[int, int] = (32, 64),
) -> dict:
    """Write a Cityscapes tree (leftImg8bit, gtFine labelIds, disparity, camera) under ``root``.

    Label ids are drawn from 0..33 (all official ids, evaluated or not), with ids 7 (road),
    33 (bicycle) and 0 (unlabelled) always present. Disparity PNG values are drawn from
    2..60000, with 0 (invalid) in a top-left block and 1 (d = 0, infinitely far) at pixel
    (h-1, w-1).

    Returns:
        ``{"root": root, "split": split, "samples": {base: {...}}}`` with ``image``,
        ``label_ids``, ``disparity_raw``, ``baseline``, ``fx``.
    """
    root = Path(root)
    h, w = size
    samples = {}
    for c_index, city in enumerate(cities):
        baseline, fx = CITYSCAPES_FIXTURE_CAMERAS.get(city, (0.2, 2000.0 + 10 * c_index))
        for i in range(n_per_city):
            base = f"{city}_{i:06d}_{19 + i:06d}"
            rng = np.random.default_rng(1000 * c_index + i)
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            label_ids = rng.integers(0, 34, size=size).astype(np.uint8)
            label_ids[0, :3] = (7, 33, 0)
            disparity_raw = rng.integers(2, 60000, size=size).astype(np.uint16)
            disparity_raw[: h // 4, : w // 4] = 0
            disparity_raw[-1, -1] = 1
            _save_png(cityscapes_path(root, "leftImg8bit", split, base, "_leftImg8bit.png"), image)
            _save_png(cityscapes_path(root, "gtFine", split, base, "_gtFine_labelIds.png"), label_ids)
            _save_png(cityscapes_path(root, "disparity", split, base, "_disparity.png"), disparity_raw)
            camera = cityscapes_path(root, "camera", split, base, "_camera.json")
            camera.parent.mkdir(parents=True, exist_ok=True)
            camera.write_text(json.dumps({
                "extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195, "z": 1.22},
                "intrinsic": {"fx": fx, "fy": fx, "u0": w / 2, "v0": h / 2},
            }))
            samples[base] = {
                "image": image, "label_ids": label_ids, "disparity_raw": disparity_raw, "baseline": baseline, "fx": fx,
            }
    return {"root": root, "split": split, "samples": samples}
