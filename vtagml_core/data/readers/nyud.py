"""NYUD-v2 as prepared for MTI-Net / ATRC / InvPT (``NYUD_MT``), one of the paper's benchmarks
(VTAGML Sec. 4: MTL on NYUDv2, and Taskonomy -> NYUDv2 generalisation, Table 5).

On-disk layout (root ``NYUD_MT/``; 795 train / 654 val images of 480 x 640)::

    gt_sets/train.txt, gt_sets/val.txt   one sample id per line
    images/<id>.jpg                      RGB
    segmentation/<id>.png                uint8: 0 = unlabelled, 1..40 = the NYUv2-40 classes
    depth/<id>.npy                       float (H, W), metres, 0 = invalid
    normals/<id>.npy                     float (H, W, 3), components in [-1, 1]
    edge/<id>.npy                        float (H, W), 0/1 boundaries

Label conventions applied here:

* segmentation: class = value - 1 (0..39); value 0 becomes ``IGNORE_INDEX`` (255).
* valid: True where depth > 0 (if depth is requested) and the normal vector is non-zero (if
  normals are requested); all True when neither is requested.
* normals: **kept in the axis convention of the files**. The ``NYUD_MT`` release does not
  document its normal frame and this kit does not guess: vectors are only renormalised to unit
  length. They may therefore differ from the kit's OpenCV camera frame (x right, y down,
  z forward) by axis signs; models trained and evaluated on NYUD alone are unaffected, but check
  the frame (e.g. a floor should point "up", -y in OpenCV) before transferring normal
  predictions between NYUD and other domains.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from vtagml_core.data.readers.common import (
    ContractDataset,
    read_label_png,
    read_npy,
    read_rgb,
    require_dir,
    require_files,
    resolve_tasks,
)
from vtagml_core.tasks import IGNORE_INDEX, TASKS

#: The 40 classes of NYUv2-40 (Gupta et al., CVPR 2013), in label order 1..40 -> ids 0..39.
NYUD_CLASS_NAMES: list[str] = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
]

#: Display colours of the 40 classes: the NYU40 palette used by ScanNet's benchmark scripts.
NYUD_CLASS_COLORS: np.ndarray = np.array(
    [
        (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34),
        (140, 86, 75), (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189),
        (196, 156, 148), (23, 190, 207), (178, 76, 76), (247, 182, 210), (66, 188, 102),
        (219, 219, 141), (140, 57, 197), (202, 185, 52), (51, 176, 203), (200, 54, 131),
        (92, 193, 61), (78, 71, 183), (172, 114, 82), (255, 127, 14), (91, 163, 138),
        (153, 98, 156), (140, 153, 101), (158, 218, 229), (100, 125, 154), (178, 127, 135),
        (120, 185, 128), (146, 111, 194), (44, 160, 44), (112, 128, 144), (96, 207, 209),
        (227, 119, 194), (213, 92, 176), (94, 106, 211), (82, 84, 163), (100, 85, 144),
    ],
    dtype=np.uint8,
)

#: Raw segmentation value meaning "unlabelled" in NYUD_MT.
NYUD_UNLABELLED_VALUE: int = 0

#: Edge matching distance of the published NYUD-v2 edge evaluations (MTI-Net, ATRC, InvPT:
#: SEISM's ``maxDist`` = 0.011 of the image diagonal, 8.8 px on a 480 x 640 label).
NYUD_EDGE_MAX_DIST: float = 0.011

#: Sub-folder and file extension of each file kind, relative to the root.
NYUD_FILES: dict[str, tuple[str, str]] = {
    "image": ("images", ".jpg"),
    "seg": ("segmentation", ".png"),
    "depth": ("depth", ".npy"),
    "normals": ("normals", ".npy"),
    "edges": ("edge", ".npy"),
}

NYUD_LAYOUT: str = (
    "NYUD_MT/{gt_sets/<split>.txt, images/<id>.jpg, segmentation/<id>.png, depth/<id>.npy, "
    "normals/<id>.npy, edge/<id>.npy} (the MTI-Net / ATRC / InvPT release)"
)


class NYUDv2Dataset(ContractDataset):
    """NYUD-v2 (MTI-Net layout) as contract samples; see the module docstring for conventions.

    Args:
        root: the ``NYUD_MT`` folder.
        split: name of a list in ``gt_sets/`` (``"train"`` or ``"val"``).
        tasks: subset of ``("seg", "depth", "normals", "edges")`` in any spelling
            :func:`vtagml_core.tasks.parse_tasks` accepts.
        size: optional ``(H, W)`` every sample is resized to.
        unlabelled: return only ``image``, ``name``, ``domain`` (label files are not needed).

    Raises:
        FileNotFoundError: missing root, split list, or any file of the index.
        ValueError: unknown task, empty split list.
    """

    name = "nyud"
    available_tasks = TASKS
    class_names = NYUD_CLASS_NAMES
    class_colors = NYUD_CLASS_COLORS
    edge_max_dist = NYUD_EDGE_MAX_DIST

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: str | Iterable[str] = TASKS,
        size: tuple[int, int] | None = None,
        unlabelled: bool = False,
    ) -> None:
        super().__init__(resolve_tasks(tasks, TASKS, "NYUD-v2"), size, unlabelled)
        self.root = require_dir(Path(root), "NYUD-v2 root", NYUD_LAYOUT)
        self.split = split
        list_file = self.root / "gt_sets" / f"{split}.txt"
        if not list_file.is_file():
            available = sorted(p.stem for p in (self.root / "gt_sets").glob("*.txt"))
            raise FileNotFoundError(
                f"NYUD-v2 split list not found: {list_file}. Available splits: {available or 'none'}. "
                f"Expected layout: {NYUD_LAYOUT}."
            )
        self.sample_ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not self.sample_ids:
            raise ValueError(f"NYUD-v2 split list {list_file} is empty; it should list one sample id per line")
        kinds = ("image",) if self.unlabelled else ("image", *self.tasks)
        require_files(
            (self._path(kind, sid) for sid in self.sample_ids for kind in kinds),
            f"NYUD-v2 split {split!r} in {self.root}",
            NYUD_LAYOUT,
        )

    def _path(self, kind: str, sample_id: str) -> Path:
        folder, ext = NYUD_FILES[kind]
        return self.root / folder / f"{sample_id}{ext}"

    def _load_arrays(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
        sid = self.sample_ids[index]
        sources = {"image": self._path("image", sid)}
        arrays: dict[str, np.ndarray] = {"image": read_rgb(sources["image"])}
        if self.unlabelled:
            return arrays, sources
        valid = np.ones(arrays["image"].shape[:2], dtype=bool)
        for task in self.tasks:
            path = sources[task] = self._path(task, sid)
            if task == "seg":
                raw = read_label_png(path, np.uint8)
                if raw.max(initial=0) > len(NYUD_CLASS_NAMES):
                    raise ValueError(
                        f"{path} holds label {int(raw.max())} but NYUD-v2 labels are 0..{len(NYUD_CLASS_NAMES)}; "
                        "the file is not a NYUD_MT segmentation map"
                    )
                seg = raw.astype(np.int64) - 1
                seg[raw == NYUD_UNLABELLED_VALUE] = IGNORE_INDEX
                arrays["seg"] = seg
            elif task == "depth":
                depth = read_npy(path, ndim=2)
                depth[~np.isfinite(depth)] = 0.0
                arrays["depth"] = depth
            elif task == "normals":
                normals = read_npy(path, ndim=3, last_dim=3)
                normals[~np.isfinite(normals)] = 0.0
                arrays["normals"] = normals
            else:  # edges
                arrays["edges"] = read_npy(path, ndim=2)
        # Valid pixels: wherever every requested geometric label is defined.
        if "depth" in arrays and arrays["depth"].shape == valid.shape:
            valid &= arrays["depth"] > 0
        if "normals" in arrays and arrays["normals"].shape[:2] == valid.shape:
            valid &= np.linalg.norm(arrays["normals"], axis=2) > 0
        arrays["valid"] = valid
        sources["valid"] = sources.get("depth", sources.get("normals", sources["image"]))
        return arrays, sources
