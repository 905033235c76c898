"""What the real-dataset readers share: checked file access and the contract base class.

Readers never trust the disk: a missing folder, a missing file, a truncated PNG, an ``.npy``
that does not load or a JSON file without the expected keys each raise an error that names the
offending path and says what to do. File existence for the whole index is checked when a
dataset is constructed (cheap: ``stat`` calls only), so a broken download fails at once and not
hours into training; decoding errors surface when a sample is read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vtagml_core.data.transforms import resize_sample, to_contract_tensors
from vtagml_core.metrics.edges import BSDS_MAX_DIST
from vtagml_core.tasks import IGNORE_INDEX, parse_tasks

#: How many missing paths an error message lists before summarising the rest.
MAX_REPORTED_MISSING: int = 5

#: Errors PIL raises for unreadable or truncated images.
_PIL_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def require_dir(path: Path, what: str, layout_hint: str) -> Path:
    """Return ``path`` if it is a directory, else raise FileNotFoundError explaining the layout.

    Args:
        path: directory expected to exist.
        what: human description (``"NYUD-v2 root"``).
        layout_hint: the on-disk layout the reader expects, quoted in the message.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} not found: {path} is not a directory. Expected layout: {layout_hint}. "
            "Check the path, or download / extract the dataset into that layout."
        )
    return path


def require_files(paths: Iterable[Path], what: str, layout_hint: str) -> None:
    """Raise FileNotFoundError listing the first few of ``paths`` that are not files."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:MAX_REPORTED_MISSING])
        more = len(missing) - MAX_REPORTED_MISSING
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise FileNotFoundError(
            f"{what}: {len(missing)} file(s) missing, e.g.\n  {shown}{tail}\n"
            f"Expected layout: {layout_hint}. Re-download or re-extract the missing parts, "
            "or request only the tasks whose files you have."
        )


def _open_image(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"image file disappeared since the dataset was indexed: {path}") from None
    except _PIL_DECODE_ERRORS as err:
        raise ValueError(
            f"cannot decode image {path} ({err}); the file is corrupt or truncated: "
            "re-download or re-extract it"
        ) from err
    return img


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (grey / palette / RGBA are converted)."""
    return np.asarray(_open_image(path).convert("RGB"), dtype=np.uint8)


def read_label_png(path: Path, dtype: type[np.integer]) -> np.ndarray:
    """Read a single-channel label PNG as an ``(H, W)`` array of ``dtype`` (uint8 or uint16).

    PIL reports 16-bit PNGs as mode ``I;16`` (uint16) or ``I`` (int32) depending on version;
    both are accepted when the values fit ``dtype``. A 3-channel PNG is accepted only if its
    channels are identical (some tools save grey labels as RGB).

    Raises:
        ValueError: if the file does not decode, has several different channels, or holds
            values outside ``dtype``'s range.
    """
    arr = np.asarray(_open_image(path))
    if arr.ndim == 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise ValueError(
                f"{path} has {arr.shape[2]} different channels but a single-channel label map "
                "was expected; check that the file belongs to this task folder"
            )
        arr = arr[..., 0]
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(
            f"{path} holds values in [{arr.min()}, {arr.max()}], outside {np.dtype(dtype).name}; "
            "the file is not in the expected format"
        )
    return arr.astype(dtype)


def read_npy(path: Path, ndim: int, last_dim: int | None = None) -> np.ndarray:
    """Load a numeric ``.npy`` array (no pickles) as float32 and check its shape.

    Args:
        path: the ``.npy`` file.
        ndim: expected number of dimensions. A 2-D expectation also accepts ``(H, W, 1)``.
        last_dim: expected size of the last axis when ``ndim == 3`` (e.g. 3 for normals).

    Raises:
        ValueError: if the file does not load as a numeric array or has the wrong shape.
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"array file disappeared since the dataset was indexed: {path}") from None
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(
            f"cannot load {path} as a numpy array ({err}); the file is corrupt or truncated: "
            "re-download or re-extract it"
        ) from err
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path} does not hold a numeric array (dtype {getattr(arr, 'dtype', None)})")
    if ndim == 2 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != ndim or (last_dim is not None and arr.shape[-1] != last_dim):
        want = f"{ndim}-D" + (f" with last axis {last_dim}" if last_dim is not None else "")
        raise ValueError(f"{path} has shape {arr.shape}, expected a {want} array")
    return arr.astype(np.float32)


def read_json_fields(path: Path, fields: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], Any]:
    """Read a JSON file and return the values at the nested key paths ``fields``.

    Example: ``read_json_fields(p, [("extrinsic", "baseline"), ("intrinsic", "fx")])``.

    Raises:
        ValueError: if the file is not valid JSON or a key path is absent (naming both).
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"JSON file disappeared since the dataset was indexed: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-download or re-extract it") from err
    out: dict[tuple[str, ...], Any] = {}
    for field in fields:
        node: Any = data
        for key in field:
            if not isinstance(node, dict) or key not in node:
                raise ValueError(
                    f"{path} has no field {'.'.join(field)!r}; the file is incomplete or not in "
                    "the expected format: re-download it"
                )
            node = node[key]
        out[field] = node
    return out


def resolve_tasks(tasks: str | Iterable[str], provided: Sequence[str], dataset: str) -> tuple[str, ...]:
    """Parse ``tasks`` (any spelling :func:`vtagml_core.tasks.parse_tasks` accepts) and check
    that ``dataset`` provides each of them.

    Raises:
        ValueError: for an unknown task name, or a task the dataset has no labels for.
    """
    parsed = parse_tasks(tasks)
    absent = [t for t in parsed if t not in provided]
    if absent:
        raise ValueError(
            f"{dataset} has no labels for task(s) {absent}; it provides {tuple(provided)}. "
            "Request a subset of those."
        )
    return parsed


class ContractDataset(Dataset):
    """Base class of the real-dataset readers: the shared sample contract, resizing, and the
    ``tasks`` / ``class_names`` / ``class_colors`` / ``name`` attributes.

    Subclasses set :attr:`name`, :attr:`class_names`, :attr:`class_colors`, build an index in
    their constructor and implement :meth:`_load_arrays`, which returns numpy arrays in the
    layout of :func:`vtagml_core.data.transforms.to_contract_tensors`.

    In unlabelled mode (domain adaptation) samples carry only ``image``, ``name`` and
    ``domain``; :attr:`tasks` still names the task set the dataset was opened for.
    """

    #: Dataset / domain name, also written into every sample's ``"domain"``.
    name: str = ""
    #: Tasks the dataset has labels for (what ``tasks`` may ask for).
    available_tasks: tuple[str, ...] = ()
    #: Segmentation label value that marks unlabelled pixels (skipped by the loss and metrics).
    ignore_index: int = IGNORE_INDEX
    #: Edge F-measure matching distance, a fraction of the label's diagonal: the BSDS default
    #: unless the dataset's published evaluations use another (NYUD-v2: 0.011).
    edge_max_dist: float = BSDS_MAX_DIST
    class_names: list[str] = []
    class_colors: np.ndarray = np.zeros((0, 3), dtype=np.uint8)

    def __init__(self, tasks: tuple[str, ...], size: tuple[int, int] | None, unlabelled: bool) -> None:
        if size is not None and (len(size) != 2 or any(int(s) != s or s <= 0 for s in size)):
            raise ValueError(f"size must be None or (height, width) with positive integers, got {size!r}")
        self.tasks: tuple[str, ...] = tasks
        self.size: tuple[int, int] | None = None if size is None else (int(size[0]), int(size[1]))
        self.unlabelled: bool = bool(unlabelled)
        self.sample_ids: list[str] = []

    def __len__(self) -> int:
        return len(self.sample_ids)

    def _load_arrays(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
        """Read sample ``index`` from disk.

        Returns:
            ``(arrays, sources)``: ``arrays`` has ``"image"`` (H, W, 3) uint8 and, unless
            unlabelled, one entry per requested task plus ``"valid"`` (H, W) bool; ``sources``
            maps each key to the file it came from (used in error messages).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _load_arrays(index)")

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} dataset of {len(self)} samples")
        index = index % len(self)
        arrays, sources = self._load_arrays(index)
        hw = arrays["image"].shape[:2]
        for key, arr in arrays.items():
            if arr.shape[:2] != hw:
                raise ValueError(
                    f"{self.name} sample {self.sample_ids[index]!r}: {key} from {sources.get(key)} has "
                    f"size {arr.shape[:2]} but the image {sources.get('image')} is {hw}; "
                    "the files do not belong together: re-extract the dataset"
                )
        sample = to_contract_tensors(name=self.sample_ids[index], domain=self.name, **arrays)
        if self.unlabelled:
            sample = {k: sample[k] for k in ("image", "name", "domain")}
        if self.size is not None:
            sample = resize_sample(sample, self.size)
        return sample

    def __repr__(self) -> str:
        mode = "unlabelled" if self.unlabelled else "tasks=" + ",".join(self.tasks)
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, {mode}, size={self.size})"
