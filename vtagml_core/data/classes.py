"""Semantic classes of the built-in synthetic benchmark (segmentation task, paper Sec. 4).

Every scene of every synthetic domain labels each pixel with one of these classes. The ids
are the values stored in the ``seg`` arrays; the colours are only for visualisation (the
renderer draws objects with the per-domain palettes of
:mod:`vtagml_core.data.synthetic.domains`, not with these colours).

==  ========  ==========================================  =====================
id  name      what produces it                            domains
==  ========  ==========================================  =====================
0   sky       rays that hit no geometry                   street, comic
1   floor     room floor; street pavement / sidewalks     all
2   wall      room walls                                  indoor*, comic
3   ceiling   room ceiling                                indoor*, comic
4   road      carriageway strip of the street ground      street, comic
5   building  facades along the street and at its end     street, comic
6   box       cabinets, shelves (indoor); crates (street) all
7   table     table top and legs (indoor)                 indoor*, comic
8   ball      spheres                                     indoor*, comic
9   pillar    columns (indoor); lamp/sign poles (street)  all
10  person    body cylinder with a sphere head            all
11  car       body, cabin and wheels (street)             street, comic
==  ========  ==========================================  =====================

``indoor*`` means both ``indoor`` and ``indoor_shift``. ``comic`` draws either layout.
Every pixel gets a class (there are no void pixels), so ``IGNORE_INDEX`` never appears in
synthetic labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class: its id in the ``seg`` maps, its name, its display colour (RGB)."""

    id: int
    name: str
    color: tuple[int, int, int]


#: The class table; ``CLASS_TABLE[i].id == i``.
CLASS_TABLE: tuple[ClassInfo, ...] = (
    ClassInfo(0, "sky", (70, 130, 180)),
    ClassInfo(1, "floor", (152, 251, 152)),
    ClassInfo(2, "wall", (102, 102, 156)),
    ClassInfo(3, "ceiling", (220, 220, 0)),
    ClassInfo(4, "road", (128, 64, 128)),
    ClassInfo(5, "building", (70, 70, 70)),
    ClassInfo(6, "box", (190, 153, 153)),
    ClassInfo(7, "table", (250, 170, 30)),
    ClassInfo(8, "ball", (255, 0, 0)),
    ClassInfo(9, "pillar", (153, 153, 153)),
    ClassInfo(10, "person", (220, 20, 60)),
    ClassInfo(11, "car", (0, 0, 142)),
)

#: Number of semantic classes K (segmentation head width).
NUM_CLASSES: int = len(CLASS_TABLE)

#: Class id by name, e.g. ``CLASS_ID["sky"] == 0``.
CLASS_ID: dict[str, int] = {c.name: c.id for c in CLASS_TABLE}


def class_names() -> list[str]:
    """Class names in id order (length :data:`NUM_CLASSES`)."""
    return [c.name for c in CLASS_TABLE]


def class_colors() -> np.ndarray:
    """Display colours, ``(K, 3)`` uint8, row ``i`` for class id ``i``."""
    return np.array([c.color for c in CLASS_TABLE], dtype=np.uint8)


def class_table_dict() -> list[dict]:
    """The class table as JSON-friendly dicts (written into cache manifests)."""
    return [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASS_TABLE]


def _check_table() -> None:
    for i, c in enumerate(CLASS_TABLE):
        if c.id != i:
            raise AssertionError(f"CLASS_TABLE[{i}] has id {c.id}; ids must equal positions")


_check_table()
