"""Taskonomy as downloaded by omnidata-tools (the paper's main benchmark, VTAGML Sec. 4, Table 2).

On-disk layout (``omnitools.download ... --components taskonomy --subset tiny``)::

    <folder>/taskonomy/<building>/point_<p>_view_<v>_domain_<folder>.png

with one folder per modality. A sample is a (building, point, view) triple present in ``rgb/``.

=========================  ========================  =============================================
task                       folder                    encoding (as read here)
=========================  ========================  =============================================
image                      ``rgb``                   8-bit RGB
depth                      ``depth_zbuffer``         uint16, 1/512 m per unit, 65535 = invalid
normals                    ``normal``                uint8 RGB, n = value / 255 * 2 - 1 (see below)
edges                      ``edge_texture``          uint16, divided by 65535 -> [0, 1]
seg                        ``segment_semantic``      uint8: 0 = unlabelled, v -> class v - 1
=========================  ========================  =============================================

Normals frame. Taskonomy/Omnidata store normals like 2D-3D-S: +x right, +y down, +z out of the
screen towards the viewer, so a surface facing the camera is (0, 0, 1) (stated by the dataset's
maintainers, EPFL-VILAB/omnidata issue #13, and the ``transform_normal_cam`` docstring of
omnidata-tools). The kit's frame is OpenCV (z forward, into the scene), so the z component is
negated (:data:`TASKONOMY_NORMAL_AXIS_SIGNS`); afterwards a surface facing the camera has
n . view_dir < 0 as the contract requires.

Edges. ``edge_texture`` is a 2-D texture-edge (Sobel-like) magnitude. omnidata-tools divides it
by 2**16 - 1 (``transform_16bit_single_channel``), which this reader follows; typical values
are small (omnidata's task config clamps them to [0, 0.25]).

Segmentation. ``segment_semantic`` holds pseudo-labels distilled from a COCO-trained network.
Value 0 marks unlabelled / uncertain pixels (Taskonomy's loaders mask ``img > 0`` and use
``img - 1``; later code uses ``ignore_index=0``); values 1..17 are the 17 classes listed in the
Taskonomy repository (``taskbank/assets/web_assets/pseudosemantics/coco_selected_classes.txt``),
so class = value - 1 and 0 -> ``IGNORE_INDEX``.

Valid mask. Taken from the depth file (value 65535 or 0 = invalid) whenever depth or normals
are requested (the depth files are then required); all True otherwise.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

from vtagml_core.data.readers.common import (
    ContractDataset,
    read_label_png,
    read_rgb,
    require_dir,
    require_files,
    resolve_tasks,
)
from vtagml_core.tasks import IGNORE_INDEX, TASKS

#: Folder of each kit task (plus the image) in the omnidata layout.
TASKONOMY_FOLDERS: dict[str, str] = {
    "image": "rgb",
    "seg": "segment_semantic",
    "depth": "depth_zbuffer",
    "normals": "normal",
    "edges": "edge_texture",
}

#: Sub-folder between the modality folder and the building folders.
TASKONOMY_COMPONENT: str = "taskonomy"

#: depth_zbuffer units per metre.
TASKONOMY_DEPTH_UNITS_PER_METRE: float = 512.0

#: depth_zbuffer value marking "no geometry" (sky, holes in the mesh).
TASKONOMY_DEPTH_INVALID: int = 65535

#: edge_texture scale: value / this -> [0, 1] (omnidata-tools' 16-bit transform).
TASKONOMY_EDGE_SCALE: float = 65535.0

#: Multiply decoded (x, y, z) by these signs to go from Taskonomy's frame (z towards the
#: viewer) to the kit's OpenCV camera frame (z forward).
TASKONOMY_NORMAL_AXIS_SIGNS: tuple[float, float, float] = (1.0, 1.0, -1.0)

#: The 17 semantic classes (value v in the PNG -> class v - 1).
TASKONOMY_CLASS_NAMES: list[str] = [
    "background", "bottle", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
]

#: Display colours (background grey, then distinct hues; COCO panoptic colours where they exist).
TASKONOMY_CLASS_COLORS: np.ndarray = np.array(
    [
        (128, 128, 128), (255, 179, 240), (153, 69, 1), (3, 95, 161), (107, 255, 200),
        (0, 114, 143), (255, 208, 186), (0, 220, 176), (0, 82, 0), (174, 57, 255),
        (199, 100, 0), (72, 0, 118), (120, 166, 157), (255, 99, 164), (92, 0, 73),
        (133, 129, 255), (78, 180, 255),
    ],
    dtype=np.uint8,
)

#: Raw segmentation value for unlabelled / uncertain pixels.
TASKONOMY_UNLABELLED_VALUE: int = 0

_RGB_NAME = re.compile(r"^point_(\d+)_view_(\d+)_domain_rgb\.png$")

TASKONOMY_LAYOUT: str = (
    "<root>/<folder>/taskonomy/<building>/point_<p>_view_<v>_domain_<folder>.png with folders "
    "rgb, depth_zbuffer, normal, edge_texture, segment_semantic (omnidata-tools download)"
)


#: Split names of the building split CSV, in its column order after the building name.
TASKONOMY_SPLIT_COLUMNS: tuple[str, ...] = ("train", "val", "test")


def read_building_split(path: str | Path, split: str) -> list[str]:
    """The buildings of ``split`` in a Taskonomy split CSV.

    The CSV is the official one (``train_val_test_<subset>.csv`` of the Taskonomy / omnidata
    repositories): one row ``building,is_train,is_val,is_test`` per building with 0/1 flags; a
    header row (``id,train,val,test``) and blank lines are skipped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown split, a malformed row (names the line), or no building in ``split``.
    """
    path = Path(path)
    if split not in TASKONOMY_SPLIT_COLUMNS:
        raise ValueError(f"Taskonomy has no split {split!r}; its split CSV has {list(TASKONOMY_SPLIT_COLUMNS)}")
    if not path.is_file():
        raise FileNotFoundError(
            f"Taskonomy split file not found: {path}. Point data.split_file at the building split "
            "CSV (train_val_test_<subset>.csv: rows building,is_train,is_val,is_test)"
        )
    column = 1 + TASKONOMY_SPLIT_COLUMNS.index(split)
    buildings = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        cells = [c.strip() for c in line.split(",")]
        if not line.strip() or (number == 1 and not cells[-1].isdigit()):
            continue  # blank line or header row
        if len(cells) != 1 + len(TASKONOMY_SPLIT_COLUMNS) or any(c not in ("0", "1") for c in cells[1:]):
            raise ValueError(
                f"{path}, line {number}: {line!r} is not 'building,is_train,is_val,is_test' with 0/1 "
                "flags; fix the row or use the official split CSV"
            )
        if cells[column] == "1":
            buildings.append(cells[0])
    if not buildings:
        raise ValueError(f"{path} puts no building in the {split!r} split; mark at least one with 1 in "
                         f"its {split!r} column")
    return buildings


class TaskonomyDataset(ContractDataset):
    """Taskonomy (omnidata-tools layout) as contract samples; see the module docstring.

    Args:
        root: folder holding ``rgb/``, ``depth_zbuffer/``, ... (the omnitools ``--dest``).
        buildings: buildings to include (folder names under ``rgb/taskonomy/``); None = all
            found. Taskonomy splits are by building, so this is how train / val / test are
            chosen (pass the building lists of the official split CSV you use).
        tasks: subset of ``("seg", "depth", "normals", "edges")``.
        size: optional ``(H, W)`` every sample is resized to.
        unlabelled: return only ``image``, ``name``, ``domain``.

    Raises:
        FileNotFoundError: missing root / rgb folder / requested building, or any label file
            of the index.
        ValueError: unknown task, or no rgb images found.
    """

    name = "taskonomy"
    available_tasks = TASKS
    class_names = TASKONOMY_CLASS_NAMES
    class_colors = TASKONOMY_CLASS_COLORS

    def __init__(
        self,
        root: str | Path,
        buildings: Iterable[str] | None = None,
        tasks: str | Iterable[str] = TASKS,
        size: tuple[int, int] | None = None,
        unlabelled: bool = False,
    ) -> None:
        super().__init__(resolve_tasks(tasks, TASKS, "Taskonomy"), size, unlabelled)
        self.root = require_dir(Path(root), "Taskonomy root", TASKONOMY_LAYOUT)
        rgb_dir = require_dir(
            self.root / TASKONOMY_FOLDERS["image"] / TASKONOMY_COMPONENT, "Taskonomy rgb folder", TASKONOMY_LAYOUT
        )
        available = sorted(p.name for p in rgb_dir.iterdir() if p.is_dir())
        if buildings is None:
            chosen = available
        else:
            chosen = list(buildings)
            absent = [b for b in chosen if b not in available]
            if absent:
                raise FileNotFoundError(
                    f"Taskonomy buildings {absent} not found under {rgb_dir}; available: {available}. "
                    "Download them (omnitools.download ... --components taskonomy) or fix the names."
                )
        self.buildings: list[str] = chosen
        self.records: list[tuple[str, int, int]] = []
        for building in chosen:
            points = []
            for f in (rgb_dir / building).iterdir():
                match = _RGB_NAME.match(f.name)
                if match:
                    points.append((building, int(match.group(1)), int(match.group(2))))
            self.records.extend(sorted(points))
        if not self.records:
            raise ValueError(
                f"no Taskonomy rgb images (point_<p>_view_<v>_domain_rgb.png) found for buildings "
                f"{chosen} under {rgb_dir}; expected layout: {TASKONOMY_LAYOUT}"
            )
        self.sample_ids = [f"{b}/point_{p}_view_{v}" for b, p, v in self.records]
        kinds = ["image"]
        if not self.unlabelled:
            kinds += list(self.tasks)
            if "normals" in self.tasks and "depth" not in self.tasks:
                kinds.append("depth")  # the valid mask comes from the depth file
        require_files(
            (self._path(kind, i) for i in range(len(self.records)) for kind in kinds[1:]),
            f"Taskonomy ({len(self.records)} rgb images in {rgb_dir})",
            TASKONOMY_LAYOUT,
        )

    def _path(self, kind: str, index: int) -> Path:
        building, point, view = self.records[index]
        folder = TASKONOMY_FOLDERS[kind]
        return (
            self.root / folder / TASKONOMY_COMPONENT / building
            / f"point_{point}_view_{view}_domain_{folder}.png"
        )

    def _load_arrays(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
        sources = {"image": self._path("image", index)}
        arrays: dict[str, np.ndarray] = {"image": read_rgb(sources["image"])}
        if self.unlabelled:
            return arrays, sources
        valid = np.ones(arrays["image"].shape[:2], dtype=bool)
        if "depth" in self.tasks or "normals" in self.tasks:
            path = sources["valid"] = self._path("depth", index)
            raw = read_label_png(path, np.uint16)
            valid = (raw != TASKONOMY_DEPTH_INVALID) & (raw > 0)
            if "depth" in self.tasks:
                sources["depth"] = path
                arrays["depth"] = raw.astype(np.float32) / TASKONOMY_DEPTH_UNITS_PER_METRE
        if "normals" in self.tasks:
            path = sources["normals"] = self._path("normals", index)
            raw = np.asarray(read_rgb(path), dtype=np.float32)
            normals = raw / 255.0 * 2.0 - 1.0
            arrays["normals"] = normals * np.asarray(TASKONOMY_NORMAL_AXIS_SIGNS, dtype=np.float32)
        if "edges" in self.tasks:
            path = sources["edges"] = self._path("edges", index)
            arrays["edges"] = read_label_png(path, np.uint16).astype(np.float32) / TASKONOMY_EDGE_SCALE
        if "seg" in self.tasks:
            path = sources["seg"] = self._path("seg", index)
            raw = read_label_png(path, np.uint8)
            if raw.max(initial=0) > len(TASKONOMY_CLASS_NAMES):
                raise ValueError(
                    f"{path} holds label {int(raw.max())} but Taskonomy segment_semantic labels are "
                    f"0..{len(TASKONOMY_CLASS_NAMES)}; the file is not a segment_semantic map"
                )
            seg = raw.astype(np.int64) - 1
            seg[raw == TASKONOMY_UNLABELLED_VALUE] = IGNORE_INDEX
            arrays["seg"] = seg
        arrays["valid"] = valid
        return arrays, sources
