"""What data a run sees: :class:`DataConfig`, and the one dataset builder that reads it.

Every training and evaluation path of the kit (the trainer, the settings, the notebooks' lesson
runs, UDA's unlabelled target, the efficiency timing) builds its datasets with
:func:`build_dataset`, so a data config means the same images everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .dataset import SyntheticDataset


@dataclass
class DataConfig:
    """Which synthetic domain and how many scenes of each split, at what size.

    ``size`` must equal ``model.backbone.img_size`` (the backbone is built for one size).
    ``batch_size`` is per process: under ``torchrun --nproc_per_node=K`` the global batch of one
    optimizer step is ``K * batch_size``.
    """

    domain: str = "indoor"
    size: int = 128
    train_count: int = 512
    val_count: int = 128
    test_count: int = 128
    pretext_count: int = 1024
    seed: int = 0
    cache_root: str | None = None
    batch_size: int = 8
    num_workers: int = 0

    def count(self, split: str) -> int:
        """Scenes of ``split`` (``train``, ``val``, ``test`` or ``pretext``)."""
        counts = {"train": self.train_count, "val": self.val_count, "test": self.test_count,
                  "pretext": self.pretext_count}
        if split not in counts:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(counts)}")
        return counts[split]


def build_dataset(data: DataConfig, split: str, tasks: str | Iterable[str], *,
                  domain: str | None = None, count: int | None = None, unlabelled: bool = False,
                  progress: bool = True) -> SyntheticDataset:
    """The ``split`` of ``domain`` (default ``data.domain``) as ``data`` describes it.

    Args:
        data: sizes, seed and cache root.
        split: ``train``, ``val``, ``test`` or ``pretext``.
        tasks: labels to return (e.g. ``"S-D"``); ignored with ``unlabelled=True``.
        domain: another synthetic domain than ``data.domain`` (a setting's target domain).
        count: scenes; default: ``data``'s count of ``split``.
        unlabelled: images only (the unlabelled target of UDA).
        progress: a progress bar while the split is rendered the first time.
    """
    return SyntheticDataset(domain or data.domain, split, tasks,
                            data.count(split) if count is None else count, size=data.size,
                            seed=data.seed, root=Path(data.cache_root) if data.cache_root else None,
                            unlabelled=unlabelled, progress=progress)


__all__ = ["DataConfig", "build_dataset"]
