"""Readers for the real datasets of the paper, from their usual on-disk layouts.

Each reader is a ``torch.utils.data.Dataset`` returning the kit's shared sample contract
(:mod:`vtagml_core.data.transforms`) and exposing ``tasks``, ``class_names``, ``class_colors``
and ``name``, exactly like the synthetic benchmark, so the rest of the kit does not care which
one it gets:

* :class:`NYUDv2Dataset`  -- NYUD-v2 as prepared for MTI-Net / ATRC / InvPT (all four tasks);
* :class:`TaskonomyDataset` -- Taskonomy as downloaded by omnidata-tools (all four tasks);
* :class:`CityscapesDataset` -- Cityscapes (segmentation and depth only).

:func:`open_reader` builds one by name, for config-driven code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vtagml_core.data.readers.cityscapes import CityscapesDataset
from vtagml_core.data.readers.common import ContractDataset
from vtagml_core.data.readers.nyud import NYUDv2Dataset
from vtagml_core.data.readers.taskonomy import TaskonomyDataset

#: Reader class of each dataset name accepted by :func:`open_reader`.
READERS: dict[str, type[ContractDataset]] = {
    "nyud": NYUDv2Dataset,
    "taskonomy": TaskonomyDataset,
    "cityscapes": CityscapesDataset,
}


def open_reader(name: str, root: str | Path, **kwargs: Any) -> ContractDataset:
    """Open the real dataset ``name`` (a key of :data:`READERS`) at ``root``.

    Keyword arguments go to the reader (``split`` or ``buildings``, ``tasks``, ``size``,
    ``unlabelled``).

    Raises:
        ValueError: for an unknown dataset name, listing the known ones.
    """
    key = name.lower()
    if key not in READERS:
        raise ValueError(f"unknown real dataset {name!r}; known: {sorted(READERS)}")
    return READERS[key](root, **kwargs)


__all__ = ["READERS", "open_reader", "ContractDataset", "NYUDv2Dataset", "TaskonomyDataset", "CityscapesDataset"]
