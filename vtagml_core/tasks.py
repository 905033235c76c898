"""The four dense tasks of the paper and how task sets are named.

The paper (Sec. 4) trains on task sets written with initials: S-D (segmentation, depth),
S-D-N (+ surface normals) and S-D-N-E (+ edges). Everything in the kit refers to tasks by the
long names in :data:`TASKS` and accepts either spelling from users.
"""
from __future__ import annotations

from typing import Iterable

#: Canonical task order. Tensors stacked over tasks follow this order (restricted to a task set).
TASKS: tuple[str, ...] = ("seg", "depth", "normals", "edges")

#: Initials used by the paper's tables (Table 2-5): S-D-N-E.
TASK_LETTERS: dict[str, str] = {"S": "seg", "D": "depth", "N": "normals", "E": "edges"}

#: Human-readable names for tables and figures.
TASK_TITLES: dict[str, str] = {
    "seg": "Semantic segmentation",
    "depth": "Depth",
    "normals": "Surface normals",
    "edges": "Edges",
}

#: Label value for pixels that segmentation ignores (unlabelled or void).
IGNORE_INDEX: int = 255


def parse_tasks(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Turn ``"S-D-N"``, ``"seg,depth"`` or ``["seg", "D"]`` into canonical task names.

    The result keeps the canonical order of :data:`TASKS` and has no duplicates.

    Raises:
        ValueError: for an unknown task name, naming it and listing the valid ones.
    """
    if isinstance(spec, str):
        parts = [p for p in spec.replace(",", "-").replace(" ", "-").split("-") if p]
    else:
        parts = list(spec)
    if not parts:
        raise ValueError("empty task set: give e.g. 'S-D' or 'seg,depth'")
    names = set()
    for p in parts:
        if p in TASKS:
            names.add(p)
        elif p.upper() in TASK_LETTERS:
            names.add(TASK_LETTERS[p.upper()])
        else:
            valid = ", ".join(TASKS) + " (or initials " + "/".join(TASK_LETTERS) + ")"
            raise ValueError(f"unknown task {p!r}; valid tasks: {valid}")
    return tuple(t for t in TASKS if t in names)


def task_set_name(tasks: Iterable[str]) -> str:
    """``("seg", "depth")`` -> ``"S-D"``, the paper's spelling."""
    inv = {v: k for k, v in TASK_LETTERS.items()}
    return "-".join(inv[t] for t in parse_tasks(list(tasks)))


def task_channels(task: str, num_classes: int) -> int:
    """Output channels of a task's head: K classes for seg, 1 for depth/edges, 3 for normals."""
    channels = {"seg": num_classes, "depth": 1, "normals": 3, "edges": 1}
    if task not in channels:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return channels[task]
