"""torch Datasets over cached synthetic splits (the shared sample contract, docs/benchmark.md).

:class:`SyntheticDataset` renders its split once (through :func:`.cache.ensure_split`) and
then only reads memory maps, so indexing is cheap and DataLoader workers share the page
cache. A sample is a dict:

===========  ==========  ============  =========================================
key          dtype       shape         meaning
===========  ==========  ============  =========================================
image        float32     (3, H, W)     RGB in [0, 1] (normalisation is the backbone's job)
seg          int64       (H, W)        class ids in [0, K) (255 = ignore; unused here)
depth        float32     (1, H, W)     z-buffer depth in scene units, 0 where invalid
normals      float32     (3, H, W)     camera-frame unit normals (OpenCV), 0 where invalid
edges        float32     (1, H, W)     Sobel edge strength in [0, 1]
valid        bool        (1, H, W)     True where depth and normals are defined
name         str                       ``<domain>/<split>/<index>``
domain       str                       domain name
===========  ==========  ============  =========================================

Only the requested tasks' keys are present (plus image/valid/name/domain); in unlabelled
mode (unsupervised domain adaptation, paper Sec. 4.2, Table 4) only image, name and domain.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..tasks import TASKS, parse_tasks
from .cache import ensure_split, load_split, split_statistics
from .classes import class_colors, class_names
from .synthetic.domains import MIXED_DOMAIN, TEXTURE_NAMES

#: Targets of the dense pretext task that pretrains the offline backbone (docs/benchmark.md).
PRETEXT_TARGETS: tuple[str, ...] = ("albedo", "texture")


def _chw_float(hwc_uint8: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> contiguous ``(3, H, W)`` float32 in [0, 1]."""
    t = torch.from_numpy(np.array(hwc_uint8)).permute(2, 0, 1)  # copy: memmaps are read-only
    return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


class _MemmapSplit(Dataset):
    """Shared plumbing: lazy memory maps (reopened in each DataLoader worker), indexing."""

    def __init__(self, path: Path, count: int):
        self.path = Path(path)
        self._count = count
        self._arrays: dict[str, np.ndarray] | None = None
        self.class_names: list[str] = class_names()
        self.class_colors: np.ndarray = class_colors()

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The split's arrays (read-only memory maps), opened on first use."""
        if self._arrays is None:
            self._arrays = load_split(self.path).arrays
        return self._arrays

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # never pickle memory maps into worker processes
        return state

    def __len__(self) -> int:
        return self._count

    def _index(self, i: int) -> int:
        if not isinstance(i, numbers.Integral):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        j = int(i) + self._count if i < 0 else int(i)
        if not 0 <= j < self._count:
            raise IndexError(f"index {i} out of range for {self._count} samples")
        return j

    def statistics(self) -> dict:
        """:func:`.cache.split_statistics` of this split."""
        return split_statistics(self.path)


class SyntheticDataset(_MemmapSplit):
    """One split of one synthetic domain, following the shared sample contract.

    Args:
        domain: synthetic domain name (see :func:`.synthetic.domains.list_domains`).
        split: ``train``, ``val``, ``test`` (or ``pretext``).
        tasks: task set, e.g. ``("seg", "depth")`` or ``"S-D"``.
        count, size, seed, root: identify and locate the cached split
            (:func:`.cache.ensure_split`); it is rendered on first use.
        unlabelled: return only ``image``, ``name``, ``domain`` (target domain in UDA).
        workers, progress: passed to :func:`.cache.ensure_split` when rendering.
    """

    def __init__(self, domain: str, split: str, tasks=TASKS, count: int = 256,
                 size: int | tuple[int, int] = 128, seed: int = 0, root: Path | None = None,
                 unlabelled: bool = False, workers: int | None = None, progress: bool = True):
        self.tasks: tuple[str, ...] = parse_tasks(tasks)
        path = ensure_split(domain, split, count, size, seed=seed, root=root, workers=workers,
                            progress=progress)
        super().__init__(path, count)
        self.name: str = domain
        self.domain: str = domain
        self.split: str = split
        self.unlabelled: bool = bool(unlabelled)

    def __getitem__(self, i: int) -> dict:
        j = self._index(i)
        a = self.arrays
        sample: dict = {"image": _chw_float(a["image"][j])}
        if not self.unlabelled:
            if "seg" in self.tasks:
                sample["seg"] = torch.from_numpy(a["seg"][j].astype(np.int64))
            if "depth" in self.tasks:
                sample["depth"] = torch.from_numpy(np.array(a["depth"][j]))[None]
            if "normals" in self.tasks:
                sample["normals"] = torch.from_numpy(
                    np.ascontiguousarray(a["normals"][j].transpose(2, 0, 1)))
            if "edges" in self.tasks:
                sample["edges"] = torch.from_numpy(np.array(a["edges"][j]))[None]
            sample["valid"] = torch.from_numpy(np.array(a["valid"][j]))[None]
        sample["name"] = f"{self.domain}/{self.split}/{j:05d}"
        sample["domain"] = self.domain
        return sample

    def __repr__(self) -> str:
        return (f"SyntheticDataset(domain={self.domain!r}, split={self.split!r}, "
                f"tasks={self.tasks}, count={len(self)}, size={self.arrays['image'].shape[1:3]}, "
                f"unlabelled={self.unlabelled})")


class PretextDataset(_MemmapSplit):
    """Dense pretext data for pretraining the offline backbone (docs/benchmark.md).

    Scenes of the ``pretext`` split of the ``"mixed"`` domain: disjoint from every benchmark
    split, each ``indoor_shift`` or ``street_shift`` at a random severity (no comics).
    A sample holds ``image`` (3, H, W) float32, ``albedo`` (3, H, W) float32 in [0, 1] (the
    surface colour before lighting), ``texture`` (H, W) int64 (texture type id, see
    :attr:`texture_names`), ``name`` and ``domain``.
    """

    def __init__(self, count: int = 1024, size: int | tuple[int, int] = 128, seed: int = 0,
                 root: Path | None = None, workers: int | None = None, progress: bool = True):
        path = ensure_split(MIXED_DOMAIN, "pretext", count, size, seed=seed, root=root,
                            workers=workers, progress=progress)
        super().__init__(path, count)
        self.tasks: tuple[str, ...] = PRETEXT_TARGETS
        self.texture_names: list[str] = list(TEXTURE_NAMES)
        self.name: str = MIXED_DOMAIN
        self.domain: str = MIXED_DOMAIN
        self.split: str = "pretext"

    def __getitem__(self, i: int) -> dict:
        j = self._index(i)
        a = self.arrays
        return {
            "image": _chw_float(a["image"][j]),
            "albedo": _chw_float(a["albedo"][j]),
            "texture": torch.from_numpy(a["texture"][j].astype(np.int64)),
            "name": f"{self.domain}/pretext/{j:05d}",
            "domain": self.domain,
        }
