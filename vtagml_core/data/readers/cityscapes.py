"""Cityscapes (Cordts et al., CVPR 2016): segmentation and depth, one of the paper's benchmarks
(VTAGML Sec. 4: Table 2 S-D on Cityscapes; target domain of the UDA and novel-domain settings).

On-disk layout (the official packages ``leftImg8bit_trainvaltest``, ``gtFine_trainvaltest``,
``disparity_trainvaltest``, ``camera_trainvaltest``)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json

Conventions applied here:

* seg: the 34 label ids are mapped to the 19 evaluation train ids of ``cityscapesScripts``
  (``labels.py``); every other id becomes ``IGNORE_INDEX`` (255).
* depth: the disparity PNG stores p = d * 256 + 1 for d > 0 and p = 0 where invalid, so
  d = (p - 1) / 256 for p > 0. With the stereo baseline b (metres) and focal length f_x
  (pixels) of the frame's camera JSON (``extrinsic.baseline``, ``intrinsic.fx``),
  depth = b * f_x / d metres. Pixels with d = 0 (p <= 1) have no depth and are invalid.
* valid: True where d > 0 when depth is requested; all True otherwise.
* Cityscapes has no surface-normal or edge labels: requesting ``normals`` or ``edges`` raises a
  ValueError (the kit does not fabricate labels).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from vtagml_core.data.readers.common import (
    ContractDataset,
    read_json_fields,
    read_label_png,
    read_rgb,
    require_dir,
    require_files,
    resolve_tasks,
)
from vtagml_core.tasks import IGNORE_INDEX

#: Tasks Cityscapes has labels for.
CITYSCAPES_TASKS: tuple[str, ...] = ("seg", "depth")

#: The 19 evaluation classes (train ids 0..18).
CITYSCAPES_CLASS_NAMES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]

#: Official colours of the 19 classes (cityscapesScripts ``labels.py``).
CITYSCAPES_CLASS_COLORS: np.ndarray = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)

#: label id -> train id for the 19 evaluated classes; all other ids are ignored.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

#: Disparity PNG encoding: d = (p - DISPARITY_OFFSET) / DISPARITY_SCALE for p > 0.
DISPARITY_OFFSET: float = 1.0
DISPARITY_SCALE: float = 256.0

#: Key paths of the camera JSON used for depth.
CAMERA_BASELINE_KEY: tuple[str, ...] = ("extrinsic", "baseline")
CAMERA_FX_KEY: tuple[str, ...] = ("intrinsic", "fx")

#: File-name suffix of each file kind, and its top-level folder.
CITYSCAPES_FILES: dict[str, tuple[str, str]] = {
    "image": ("leftImg8bit", "_leftImg8bit.png"),
    "seg": ("gtFine", "_gtFine_labelIds.png"),
    "depth": ("disparity", "_disparity.png"),
    "camera": ("camera", "_camera.json"),
}

CITYSCAPES_LAYOUT: str = (
    "<root>/{leftImg8bit,gtFine,disparity,camera}/<split>/<city>/<city>_<seq>_<frame>_"
    "{leftImg8bit.png,gtFine_labelIds.png,disparity.png,camera.json}"
)


def _id_to_train_id_table() -> np.ndarray:
    """A 256-entry lookup table label id -> train id (255 for ids that are not evaluated)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


_ID_TO_TRAIN_ID_LUT = _id_to_train_id_table()


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> tuple[np.ndarray, np.ndarray]:
    """Convert a raw Cityscapes disparity PNG to metric depth.

    Args:
        raw: ``(H, W)`` uint16 PNG values p.
        baseline: stereo baseline in metres; fx: focal length in pixels.

    Returns:
        ``(depth (H, W) float32, valid (H, W) bool)``: depth = baseline * fx / d with
        d = (p - 1) / 256, and 0 where d <= 0.
    """
    d = (raw.astype(np.float64) - DISPARITY_OFFSET) / DISPARITY_SCALE
    valid = (raw > 0) & (d > 0)
    depth = np.zeros(raw.shape, dtype=np.float32)
    depth[valid] = (baseline * fx / d[valid]).astype(np.float32)
    return depth, valid


class CityscapesDataset(ContractDataset):
    """Cityscapes as contract samples (``seg`` and ``depth``); see the module docstring.

    Args:
        root: folder holding ``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (test has no public labels).
        tasks: subset of ``("seg", "depth")``; ``normals``/``edges`` raise ValueError.
        size: optional ``(H, W)`` every sample is resized to.
        unlabelled: return only ``image``, ``name``, ``domain``.

    Raises:
        FileNotFoundError: missing root / split folder or any file of the index.
        ValueError: unknown or unavailable task, no images in the split.
    """

    name = "cityscapes"
    available_tasks = CITYSCAPES_TASKS
    class_names = CITYSCAPES_CLASS_NAMES
    class_colors = CITYSCAPES_CLASS_COLORS

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: str | Iterable[str] = CITYSCAPES_TASKS,
        size: tuple[int, int] | None = None,
        unlabelled: bool = False,
    ) -> None:
        super().__init__(resolve_tasks(tasks, CITYSCAPES_TASKS, "Cityscapes"), size, unlabelled)
        self.root = require_dir(Path(root), "Cityscapes root", CITYSCAPES_LAYOUT)
        self.split = split
        image_dir = require_dir(
            self.root / CITYSCAPES_FILES["image"][0] / split, f"Cityscapes {split!r} image folder", CITYSCAPES_LAYOUT
        )
        suffix = CITYSCAPES_FILES["image"][1]
        self.records: list[tuple[str, str]] = sorted(
            (city.name, f.name[: -len(suffix)])
            for city in image_dir.iterdir() if city.is_dir()
            for f in city.iterdir() if f.name.endswith(suffix)
        )
        if not self.records:
            raise ValueError(f"no *{suffix} images found under {image_dir}; expected layout: {CITYSCAPES_LAYOUT}")
        self.sample_ids = [base for _, base in self.records]
        kinds: list[str] = [] if self.unlabelled else list(self.tasks)
        if "depth" in kinds:
            kinds.append("camera")
        require_files(
            (self._path(kind, i) for i in range(len(self.records)) for kind in kinds),
            f"Cityscapes split {split!r} ({len(self.records)} images in {image_dir})",
            CITYSCAPES_LAYOUT,
        )

    def _path(self, kind: str, index: int) -> Path:
        city, base = self.records[index]
        folder, suffix = CITYSCAPES_FILES[kind]
        return self.root / folder / self.split / city / f"{base}{suffix}"

    def camera(self, index: int) -> tuple[float, float]:
        """``(baseline_m, fx_px)`` of sample ``index``, read from its camera JSON.

        Raises:
            ValueError: if the JSON lacks a key or holds a non-positive / non-numeric value.
        """
        path = self._path("camera", index)
        fields = read_json_fields(path, [CAMERA_BASELINE_KEY, CAMERA_FX_KEY])
        values = []
        for key in (CAMERA_BASELINE_KEY, CAMERA_FX_KEY):
            value = fields[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{path}: {'.'.join(key)} = {value!r}, expected a positive number; re-download it")
            values.append(float(value))
        return values[0], values[1]

    def _load_arrays(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
        sources = {"image": self._path("image", index)}
        arrays: dict[str, np.ndarray] = {"image": read_rgb(sources["image"])}
        if self.unlabelled:
            return arrays, sources
        valid = np.ones(arrays["image"].shape[:2], dtype=bool)
        if "seg" in self.tasks:
            path = sources["seg"] = self._path("seg", index)
            arrays["seg"] = _ID_TO_TRAIN_ID_LUT[read_label_png(path, np.uint8)]
        if "depth" in self.tasks:
            path = sources["depth"] = sources["valid"] = self._path("depth", index)
            baseline, fx = self.camera(index)
            arrays["depth"], valid = disparity_to_depth(read_label_png(path, np.uint16), baseline, fx)
        arrays["valid"] = valid
        return arrays, sources
