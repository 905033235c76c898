"""What data a run sees: :class:`DataConfig`, and the one dataset builder that reads it.

Every training and evaluation path of the kit (the trainer, the settings, the notebooks' lesson
runs, UDA's unlabelled target, the efficiency timing, the ``evaluate`` command) builds its
datasets with :func:`build_dataset`, so a data config means the same images everywhere.

``data.dataset`` picks the source: the built-in ``synthetic`` benchmark (the default) or one of
the paper's real datasets read from ``data.root`` by :mod:`vtagml_core.data.readers`
(``nyud``, ``taskonomy``, ``cityscapes``). What a dataset provides (tasks, classes, ignore
index) is :func:`dataset_info`; :meth:`DataConfig.check_tasks` refuses a task it lacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal

from torch.utils.data import Dataset

from vtagml_core.config import OMIT_IF_DEFAULT
from vtagml_core.tasks import IGNORE_INDEX, TASKS, parse_tasks

from .augment import DEFAULT_SCALE_RANGE, AugmentedDataset, check_scale_range
from .cache import GENERATOR_VERSION
from .classes import class_names
from .dataset import SyntheticDataset
from .readers import READERS, open_reader
from .readers.cityscapes import CITYSCAPES_LAYOUT
from .readers.nyud import NYUD_LAYOUT
from .readers.taskonomy import TASKONOMY_LAYOUT, read_building_split
from .synthetic.catalog import check_domain_name

#: ``data.dataset`` of the built-in synthetic benchmark (the default).
SYNTHETIC: str = "synthetic"
#: The synthetic renderer version of the runs trained before run keys recorded it: their keys
#: stay as they were while the renderer is unchanged (:meth:`DataConfig.generator_stamp`).
UNSTAMPED_GENERATOR: str = "2"
#: Every value ``data.dataset`` accepts.
DATASETS: tuple[str, ...] = (SYNTHETIC, *READERS)
#: A path under a dataset's root that only its layout has (used to recognise a tree), and the
#: layout to quote in messages.
LAYOUT_MARKERS: dict[str, tuple[str, str]] = {
    "nyud": ("gt_sets", NYUD_LAYOUT),
    "taskonomy": ("rgb/taskonomy", TASKONOMY_LAYOUT),
    "cityscapes": ("leftImg8bit", CITYSCAPES_LAYOUT),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset provides, known without opening it.

    Attributes:
        name: the ``data.dataset`` value.
        tasks: tasks it has labels for.
        class_names: segmentation classes in id order.
        ignore_index: seg label value of unlabelled pixels.
        edge_max_dist: the edge F-measure's matching distance as a fraction of the label's
            diagonal, as the dataset's published evaluations use it
            (:class:`~vtagml_core.metrics.edges.EdgeMetrics`); None for the synthetic benchmark
            (a fixed number of pixels).
    """

    name: str
    tasks: tuple[str, ...]
    class_names: tuple[str, ...]
    ignore_index: int
    edge_max_dist: float | None = None

    @property
    def num_classes(self) -> int:
        """Number of segmentation classes (the seg head's width)."""
        return len(self.class_names)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (a value of :data:`DATASETS`).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name == SYNTHETIC:
        return DatasetInfo(SYNTHETIC, TASKS, tuple(class_names()), IGNORE_INDEX)
    if name not in READERS:
        raise ValueError(f"unknown data.dataset {name!r}; known: {', '.join(DATASETS)}")
    reader = READERS[name]
    return DatasetInfo(name, tuple(reader.available_tasks), tuple(reader.class_names), reader.ignore_index,
                       reader.edge_max_dist)


def matching_layouts(root: Path) -> list[str]:
    """The real datasets whose layout marker (:data:`LAYOUT_MARKERS`) exists under ``root``."""
    return [name for name, (marker, _) in LAYOUT_MARKERS.items() if (root / marker).is_dir()]


@dataclass
class DataConfig:
    """Which dataset, which scenes of each split, at what size.

    ``size`` must equal ``model.backbone.img_size`` (the backbone is built for one size); real
    images are resized to ``size x size`` for training, and the trainer's split is augmented
    (``augment``; drawn from the trainer's per-epoch seed, so reproducible). ``batch_size`` is
    per process: under ``torchrun --nproc_per_node=K`` the global batch of one optimizer step
    is ``K * batch_size``.

    Attributes:
        dataset: ``synthetic`` (the built-in benchmark, default), ``nyud`` (NYUD-v2 in the
            MTI-Net layout), ``taskonomy`` (omnidata-tools layout) or ``cityscapes``.
        root: the real dataset's folder (``NYUD_MT/``, the omnitools ``--dest``, the
            Cityscapes root); unused for synthetic.
        split_file: Taskonomy only: the building split CSV (``train_val_test_<subset>.csv``,
            rows ``building,is_train,is_val,is_test``); a relative path is read under ``root``.
            NYUD reads ``gt_sets/<split>.txt``, Cityscapes its ``<split>`` folders.
        augment: real data: the training split is augmented (random scale, crop back to
            ``size``, horizontal flip with the normals' x negated; :mod:`.augment`). On by
            default; the synthetic benchmark is never augmented (setting it there is an error).
        scale_range: ``[low, high]`` of the random scale relative to ``size`` (default
            ``[1.0, 1.5]``, MTI-Net's NYUD-v2 scales; below 1 the crop is padded with pixels
            that score nothing).
        flip: random horizontal flips (probability 1/2).
        domain, train_count, val_count, test_count, pretext_count, seed, cache_root: the
            synthetic benchmark's domain, split sizes, seed and cache (unused for real data).
            ``domain`` may name a graded shift, e.g. ``indoor_shift@0.4``
            (:mod:`vtagml_core.data.synthetic.shift`).
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
    # Left out of saved configs while unset, so synthetic runs keep their run keys.
    dataset: Literal["synthetic", "nyud", "taskonomy", "cityscapes"] = field(
        default=SYNTHETIC, metadata={OMIT_IF_DEFAULT: True})
    root: str | None = field(default=None, metadata={OMIT_IF_DEFAULT: True})
    split_file: str | None = field(default=None, metadata={OMIT_IF_DEFAULT: True})
    augment: bool = field(default=True, metadata={OMIT_IF_DEFAULT: True})
    scale_range: tuple[float, float] = field(default=DEFAULT_SCALE_RANGE, metadata={OMIT_IF_DEFAULT: True})
    flip: bool = field(default=True, metadata={OMIT_IF_DEFAULT: True})

    def count(self, split: str) -> int:
        """Scenes of ``split`` (``train``, ``val``, ``test`` or ``pretext``) of the synthetic benchmark."""
        counts = {"train": self.train_count, "val": self.val_count, "test": self.test_count,
                  "pretext": self.pretext_count}
        if split not in counts:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(counts)}")
        return counts[split]

    @classmethod
    def real_data_defaults(cls) -> dict[str, Any]:
        """``{key: default}`` of the keys that only real data reads (``root``, ``split_file``,
        the augmentation keys): every key left out of saved configs at its default, but
        ``dataset``. A synthetic config must hold these defaults (:meth:`check_source`)."""
        return {f.name: f.default for f in fields(cls) if f.metadata.get(OMIT_IF_DEFAULT) and f.name != "dataset"}

    @property
    def is_synthetic(self) -> bool:
        """True for the built-in synthetic benchmark."""
        return self.dataset == SYNTHETIC

    def generator_stamp(self) -> dict[str, str]:
        """``{"data_generator": version}`` of the synthetic renderer, for what depends on the
        rendered pixels (run keys, the pretrained backbone's record): a new renderer makes them
        stale. Empty for real data and for :data:`UNSTAMPED_GENERATOR` (the renderer of the runs
        trained before keys recorded it, which keep their keys)."""
        if not self.is_synthetic or GENERATOR_VERSION == UNSTAMPED_GENERATOR:
            return {}
        return {"data_generator": GENERATOR_VERSION}

    def info(self) -> DatasetInfo:
        """What :attr:`dataset` provides (:func:`dataset_info`)."""
        return dataset_info(self.dataset)

    def check_tasks(self, tasks: str | Iterable[str], what: str = "model.tasks") -> tuple[str, ...]:
        """The parsed ``tasks``, if :attr:`dataset` has labels for all of them.

        Raises:
            ValueError: naming the missing tasks, what the dataset has, and the override to use.
        """
        parsed = parse_tasks(tasks)
        info = self.info()
        absent = [t for t in parsed if t not in info.tasks]
        if absent:
            keep = [t for t in parsed if t in info.tasks] or list(info.tasks)
            raise ValueError(
                f"data.dataset={self.dataset} has no labels for {', '.join(absent)}; it has "
                f"{', '.join(info.tasks)}. Ask for those only, e.g. --set {what}={','.join(keep)}")
        return parsed

    def check_source(self) -> Path | None:
        """Check where the data comes from before anything is read; return the real root.

        Synthetic: checks that no real-data key (``root``, ``split_file``, or an augmentation
        key away from its default) is set, returns None. Real: ``root`` must be a folder in the
        layout of :attr:`dataset` (a tree of another dataset is named as such).

        Raises:
            ValueError: a real-data key with synthetic data, ``split_file`` set for a dataset
                that does not use one, no ``root``, a bad ``scale_range``.
            FileNotFoundError: ``root`` is not a folder, or not in the dataset's layout.
        """
        if self.is_synthetic:
            set_keys = [k for k, default in self.real_data_defaults().items()
                        if (tuple(v) if isinstance(v := getattr(self, k), list) else v) != default]
            if set_keys:
                raise ValueError(f"data.{set_keys[0]} is set but data.dataset is synthetic: add "
                                 f"--set data.dataset=<{'|'.join(READERS)}> or drop data.{set_keys[0]}")
            return None
        check_scale_range(self.scale_range)
        if self.split_file is not None and self.dataset != "taskonomy":
            raise ValueError(f"data.split_file is read for taskonomy only; {self.dataset} takes its splits "
                             "from its own layout: drop data.split_file")
        if not self.root:
            raise ValueError(f"data.dataset={self.dataset} reads its files from data.root: add "
                             f"--set data.root=/path/to/the/{self.dataset} folder")
        root = Path(self.root).expanduser()
        marker, layout = LAYOUT_MARKERS[self.dataset]
        if not root.is_dir():
            raise FileNotFoundError(f"data.root {root} is not a folder; point it at the {self.dataset} "
                                    f"tree (expected layout: {layout})")
        if not (root / marker).is_dir():
            others = [n for n in matching_layouts(root) if n != self.dataset]
            hint = (f"it looks like a {others[0]} tree: set data.dataset={others[0]}" if others else
                    "it matches none of the layouts the kit reads "
                    f"({'; '.join(f'{n}: {lay}' for n, (_, lay) in LAYOUT_MARKERS.items())})")
            raise FileNotFoundError(f"data.root {root} is not a {self.dataset} tree (no {marker}/ folder); "
                                    f"{hint}")
        return root

    def taskonomy_buildings(self, split: str) -> list[str]:
        """The Taskonomy buildings of ``split`` from :attr:`split_file`.

        Raises:
            ValueError: no ``split_file`` set (Taskonomy splits are by building).
        """
        if self.split_file is None:
            raise ValueError("Taskonomy splits are by building: add --set data.split_file=<the "
                             "train_val_test_<subset>.csv building split, rows building,is_train,is_val,is_test>")
        path = Path(self.split_file).expanduser()
        if not path.is_absolute() and self.root:
            path = Path(self.root).expanduser() / path
        return read_building_split(path, split)


def build_dataset(data: DataConfig, split: str, tasks: str | Iterable[str], *,
                  domain: str | None = None, count: int | None = None, unlabelled: bool = False,
                  progress: bool = True, native_size: bool = False, augment: bool = False) -> Dataset:
    """The ``split`` of the dataset ``data`` describes, at ``data.size``.

    Synthetic: the ``split`` of ``domain`` (default ``data.domain``), rendered and cached on
    first use. Real (``data.dataset`` nyud / taskonomy / cityscapes): the reader of
    :mod:`vtagml_core.data.readers` over ``data.root``, every sample resized to
    ``data.size x data.size``; opening it checks the layout, the split list and that every file
    of the split exists (``stat`` only), so a broken tree fails here, naming the file.

    Args:
        data: dataset, sizes, seed and cache root.
        split: ``train``, ``val``, ``test`` or ``pretext`` (synthetic only).
        tasks: labels to return (e.g. ``"S-D"``); ignored with ``unlabelled=True``.
        domain: another synthetic domain than ``data.domain`` (a setting's target domain; a
            shifted name such as ``indoor_shift@0.4`` is read in its canonical spelling); for
            real data only ``None`` or the dataset's own name.
        count: scenes (synthetic only); default: ``data``'s count of ``split``.
        unlabelled: images only (the unlabelled target of UDA).
        progress: a progress bar while a synthetic split is rendered the first time.
        native_size: real data: samples at the files' own resolution instead of ``data.size``
            (evaluation at the labels' native resolution; the model's input is resized by the
            evaluation loop). Synthetic scenes are rendered at ``data.size``, their native size.
        augment: the split a trainer draws its batches from (``train`` only): real data with
            ``data.augment`` on comes as an :class:`~vtagml_core.data.augment.AugmentedDataset`
            (random scale, crop, flip of the native-resolution samples, at ``data.size``; its
            ``set_seed`` takes the epoch's seed). The synthetic benchmark is never augmented.

    Raises:
        ValueError: a task the dataset has no labels for (naming what it has), a bad split or
            setting (each message says what to change).
        FileNotFoundError: a missing root, split list or file (naming it).
    """
    if augment and (split != "train" or native_size):
        raise ValueError(f"augment=True is for the training split at the model's size, not split={split!r}"
                         + (" with native_size=True" if native_size else ""))
    root = data.check_source()
    if root is None:
        return SyntheticDataset(check_domain_name(domain or data.domain), split, tasks,
                                data.count(split) if count is None else count, size=data.size,
                                seed=data.seed, root=Path(data.cache_root) if data.cache_root else None,
                                unlabelled=unlabelled, progress=progress)
    if domain not in (None, data.dataset):
        raise ValueError(f"domain {domain!r} is a synthetic domain, but data.dataset={data.dataset}: "
                         "real datasets have no domains; use data.dataset=synthetic for domain settings")
    if count is not None:
        raise ValueError(f"count={count} picks scenes of the synthetic benchmark; "
                         f"data.dataset={data.dataset} uses its whole {split!r} split")
    tasks = parse_tasks(tasks) if unlabelled else data.check_tasks(tasks)
    if split == "pretext":
        raise ValueError(f"the pretext split exists for the synthetic benchmark only, not data.dataset={data.dataset}")
    where: dict = ({"buildings": data.taskonomy_buildings(split)} if data.dataset == "taskonomy"
                   else {"split": split})
    augmented = augment and data.augment
    reader = open_reader(data.dataset, root, tasks=tasks, unlabelled=unlabelled,
                         size=None if native_size or augmented else (data.size, data.size), **where)
    if augmented:
        return AugmentedDataset(reader, (data.size, data.size), data.scale_range, data.flip)
    return reader


__all__ = ["DATASETS", "DataConfig", "DatasetInfo", "SYNTHETIC", "build_dataset", "dataset_info",
           "matching_layouts"]
