"""Rendered splits of the synthetic benchmark, cached on disk (docs/benchmark.md).

A split is rendered once into ``<root>/data/<domain>/<split>-<H>x<W>-n<count>-s<seed>/``:

==============  =================  =========  ================================================
file            shape              dtype      content
==============  =================  =========  ================================================
images.npy      (N, H, W, 3)       uint8      RGB image
seg.npy         (N, H, W)          uint8      class ids (:mod:`vtagml_core.data.classes`)
depth.npy       (N, H, W)          float32    z-buffer depth, 0 where invalid
normals.npy     (N, H, W, 3)       float32    camera-frame unit normals, 0 where invalid
edges.npy       (N, H, W)          float32    Sobel edges of the image, in [0, 1]
valid.npy       (N, H, W)          bool       a ray hit geometry
albedo.npy      (N, H, W, 3)       uint8      pretext split only: colour before lighting
texture.npy     (N, H, W)          uint8      pretext split only: texture type id
manifest.json                                 arguments, class table, generator version,
                                              file shapes/dtypes, scene seeds, creation time
==============  =================  =========  ================================================

Scene seeds come from ``SeedSequence(entropy=seed, spawn_key=(domain key, split key, i))``,
so the scenes of different domains and splits are disjoint by construction, and scene ``i``
is the same whatever ``count`` is. The ``pretext`` split (backbone pretraining,
``docs/benchmark.md``) is normally rendered for the virtual domain ``"mixed"``, whose scenes take the
layout and appearance of ``indoor``, ``indoor_shift`` or ``street`` (never ``comic``, the
remote test domain). A shifted domain (:mod:`.synthetic.shift`) has a folder per canonical
name (``data/indoor_shift@0.4/``), ``shift`` (target, source, severities) in its manifest, and
its target's scene seeds, shared by every severity of that target.

Writes are atomic: a split is rendered into a hidden temporary sibling folder and renamed
into place when complete, so an interrupted run never leaves a half-written folder under the
final name; leftover temporary folders of dead processes are removed on the next call. A
folder whose manifest does not parse, whose :data:`GENERATOR_VERSION` differs, or whose
arrays are missing or truncated is rendered again.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import numbers
import os
import shutil
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .classes import CLASS_TABLE, class_table_dict
from .synthetic.catalog import check_domain_name
from .synthetic.domains import TEXTURE_NAMES
from .synthetic.edges import EDGE_NORM
from .synthetic.render import parse_size, render_scene
from .synthetic.shift import seed_domain_name, shift_info

log = logging.getLogger(__name__)

#: Bump whenever the renderer's output changes (v4-v6 and why: docs/benchmark.md, "The cache").
GENERATOR_VERSION: str = "6"
#: Split names. Each gets its own seed stream (its index is part of the spawn key).
SPLITS: tuple[str, ...] = ("train", "val", "test", "pretext")
#: Environment variable that overrides the default cache root.
CACHE_ENV: str = "VTAGML_CACHE"
#: Scenes per work item sent to a rendering process (smaller for small splits).
CHUNK_SCENES: int = 16
#: Fewer scenes than this per process do not pay for starting the process (~0.5 s).
MIN_SCENES_PER_PROCESS: int = 24
#: Marker between the final folder name and the owner's pid in temporary folder names.
TEMP_MARKER: str = ".tmp-"
MANIFEST_NAME: str = "manifest.json"
#: Array kind -> (file name, dtype, trailing shape after (N, H, W)).
ARRAY_LAYOUT: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "image": ("images.npy", "uint8", (3,)),
    "seg": ("seg.npy", "uint8", ()),
    "depth": ("depth.npy", "float32", ()),
    "normals": ("normals.npy", "float32", (3,)),
    "edges": ("edges.npy", "float32", ()),
    "valid": ("valid.npy", "bool", ()),
}
PRETEXT_LAYOUT: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "albedo": ("albedo.npy", "uint8", (3,)),
    "texture": ("texture.npy", "uint8", ()),
}
_RENDER_HINT = "delete the folder or re-run `python -m vtagml_core data render`"


class CacheError(RuntimeError):
    """A cached split is missing or corrupt; the message names the file and the remedy."""


# ----------------------------------------------------------------------------- naming, seeds
def default_cache_root() -> Path:
    """``$VTAGML_CACHE`` if set, else ``~/.cache/vtagml``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vtagml"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def _check_int(value: int, what: str, low: int) -> int:
    """``value`` as an int if it is an integer >= ``low`` (0 or 1), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        kind = "a positive" if low > 0 else "a non-negative"
        raise ValueError(f"{what} must be {kind} integer, got {value!r}")
    return int(value)


def scene_seed(seed: int, domain: str, split: str, index: int) -> int:
    """Seed of scene ``index`` of ``(domain, split)`` under ``seed`` (63-bit; shifts: target's)."""
    key = (zlib.crc32(seed_domain_name(domain).encode()), SPLITS.index(_check_split(split)), int(index))
    words = np.random.SeedSequence(entropy=seed, spawn_key=key).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def scene_seeds(domain: str, split: str, count: int, seed: int = 0) -> list[int]:
    """Seeds of scenes ``0 .. count-1`` of a split (what :func:`ensure_split` renders)."""
    return [scene_seed(seed, domain, split, i) for i in range(count)]


def split_dir(root: Path, domain: str, split: str, count: int,
              size: tuple[int, int], seed: int) -> Path:
    """``<root>/data/<domain>/<split>-<H>x<W>-n<count>-s<seed>``."""
    return Path(root) / "data" / domain / f"{split}-{size[0]}x{size[1]}-n{count}-s{seed}"


def array_layout(split: str) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """Array kinds stored for ``split``: the labels, plus albedo/texture for ``pretext``."""
    return {**ARRAY_LAYOUT, **(PRETEXT_LAYOUT if split == "pretext" else {})}


# ----------------------------------------------------------------------------- rendering
def _render_chunk(job: tuple[int, str, list[int], tuple[int, int], bool]):
    """Worker: render ``seeds`` and stack them. Returns ``(start, {kind: (n, ...) array})``."""
    start, domain, seeds, size, pretext = job
    scenes = [render_scene(domain, s, size, pretext=pretext) for s in seeds]
    return start, {k: np.stack([sc[k] for sc in scenes]) for k in scenes[0]}


@contextmanager
def _single_threaded_children():
    """Rendering processes get one BLAS/OpenMP thread each (no oversubscription)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _render_into(folder: Path, domain: str, split: str, seeds: list[int],
                 size: tuple[int, int], workers: int, progress: bool) -> dict:
    """Render all scenes into memory-mapped ``.npy`` files in ``folder``; return file info."""
    layout = array_layout(split)
    count = len(seeds)
    arrays = {kind: np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype,
                                              shape=(count, *size, *trail))
              for kind, (name, dtype, trail) in layout.items()}
    chunk = max(1, min(CHUNK_SCENES, math.ceil(count / (4 * max(workers, 1)))))
    jobs = [(i, domain, seeds[i:i + chunk], size, split == "pretext")
            for i in range(0, count, chunk)]
    bar = tqdm(total=count, desc=f"render {domain}/{split}", unit="scene", disable=not progress)

    def store(result):
        start, stacked = result
        for kind, arr in arrays.items():
            arr[start:start + len(stacked[kind])] = stacked[kind]
        bar.update(len(stacked["image"]))

    n_proc = min(workers, len(jobs), count // MIN_SCENES_PER_PROCESS)
    if multiprocessing.current_process().daemon:  # e.g. inside a DataLoader worker
        n_proc = 1  # daemonic processes may not start children
    try:
        if n_proc <= 1:
            for job in jobs:
                store(_render_chunk(job))
        else:
            with _single_threaded_children():
                pool = multiprocessing.get_context("spawn").Pool(n_proc)
            with pool:
                for result in pool.imap_unordered(_render_chunk, jobs):
                    store(result)
    finally:
        bar.close()
    files = {}
    for kind, arr in arrays.items():
        arr.flush()
        files[kind] = {"file": layout[kind][0], "shape": list(arr.shape), "dtype": layout[kind][1]}
    del arrays
    return files


# ----------------------------------------------------------------------------- validation
def _read_manifest(path: Path) -> dict:
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CacheError(f"{manifest_path}: missing; {_RENDER_HINT} to render it again")
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict) or "files" not in manifest:
            raise ValueError("not a manifest object")
    except (ValueError, UnicodeDecodeError) as err:
        raise CacheError(f"{manifest_path}: does not parse ({err}); {_RENDER_HINT}") from None
    return manifest


def _open_arrays(path: Path, manifest: dict) -> dict[str, np.ndarray]:
    arrays = {}
    for kind, info in manifest["files"].items():
        file = Path(path) / info["file"]
        try:
            arr = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise CacheError(f"{file}: cannot be read ({err}); {_RENDER_HINT}") from None
        if list(arr.shape) != list(info["shape"]) or str(arr.dtype) != info["dtype"]:
            raise CacheError(f"{file}: holds {arr.dtype} {tuple(arr.shape)}, manifest says "
                             f"{info['dtype']} {tuple(info['shape'])}; {_RENDER_HINT}")
        arrays[kind] = arr
    return arrays


def _cache_problem(path: Path, expected: dict) -> str | None:
    """Why the split at ``path`` cannot be reused (None if it can)."""
    try:
        manifest = _read_manifest(path)
        for key, value in expected.items():
            if manifest.get(key) != value:
                return f"manifest {key} is {manifest.get(key)!r}, expected {value!r}"
        missing = set(array_layout(expected["split"])) - set(manifest["files"])
        if missing:
            return f"manifest lists no {sorted(missing)}"
        _open_arrays(path, manifest)
    except CacheError as err:
        return str(err)
    return None


def _remove_stale_temps(final: Path) -> None:
    """Delete temporary folders of ``final`` left by processes that no longer run."""
    prefix = f".{final.name}{TEMP_MARKER}"
    for tmp in final.parent.glob(prefix + "*"):
        try:
            pid = int(tmp.name[len(prefix):].split("-")[0])
            if pid <= 0:
                raise ValueError(pid)
            os.kill(pid, 0)  # signal 0 only checks: raises if there is no such process
            alive = True
        except (ValueError, ProcessLookupError, OverflowError):
            alive = False
        except PermissionError:  # a process of another user holds the pid
            alive = True
        if not alive:
            log.info("removing stale temporary folder %s", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- public API
def ensure_split(domain: str, split: str, count: int, size: int | tuple[int, int],
                 seed: int = 0, root: Path | None = None, workers: int | None = None,
                 progress: bool = True) -> Path:
    """Render split ``(domain, split, count, size, seed)`` unless a valid cache exists.

    Args:
        domain: a synthetic domain, ``"mixed"``, or a shifted domain such as
            ``indoor_shift@0.4`` (see module docstring).
        split: one of :data:`SPLITS`.
        count: number of scenes; size: int or ``(H, W)``; seed: base seed.
        root: cache root (default :func:`default_cache_root`).
        workers: rendering processes (default ``os.cpu_count()``); the output does not
            depend on it.
        progress: show a tqdm progress bar while rendering.

    Returns:
        The split folder (pass it to :func:`load_split`).
    """
    domain = check_domain_name(domain)
    split, count, seed = _check_split(split), _check_int(count, "count", 1), _check_int(seed, "seed", 0)
    size = parse_size(size)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers <= 0:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    final = split_dir(root if root is not None else default_cache_root(), domain, split, count,
                      size, seed)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    expected = {"generator_version": GENERATOR_VERSION, "domain": domain, "split": split,
                "seed": seed, "size": list(size), "count": count}
    if final.exists():
        problem = _cache_problem(final, expected)
        if problem is None:
            return final
        log.warning("re-rendering %s: %s", final, problem)
        shutil.rmtree(final)

    seeds = scene_seeds(domain, split, count, seed)
    tmp = final.parent / f".{final.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = _render_into(tmp, domain, split, seeds, size, workers, progress)
        manifest = {
            **expected,
            "class_table": class_table_dict(),
            "texture_names": list(TEXTURE_NAMES),
            "edge_norm": EDGE_NORM,
            "files": files,
            "scene_seeds": seeds,
            **({"shift": info} if (info := shift_info(domain)) else {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same split first
            if _cache_problem(final, expected) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass
class RenderedSplit:
    """A cached split: its manifest and its arrays as read-only memory maps."""

    path: Path
    manifest: dict
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of every sample."""
        return tuple(self.manifest["size"])


def load_split(path: Path) -> RenderedSplit:
    """Open a split folder written by :func:`ensure_split`.

    Raises:
        CacheError: naming the missing/corrupt file and how to re-render it.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    return RenderedSplit(path=path, manifest=manifest, arrays=_open_arrays(path, manifest))


def split_statistics(path: Path, chunk: int = 256) -> dict:
    """Summary of a cached split (read in chunks of ``chunk`` scenes).

    Returns a dict with ``count``, ``size``, ``class_fraction`` (pixel fraction per class
    name), ``depth_min/mean/max`` over valid pixels, ``valid_fraction``, ``edge_mean`` and
    ``image_mean_rgb`` (in [0, 1]).
    """
    split = load_split(path)
    a = split.arrays
    n = len(split)
    k = len(CLASS_TABLE)
    class_pixels = np.zeros(k, np.int64)
    valid_pixels, depth_sum, edge_sum = 0, 0.0, 0.0
    depth_min, depth_max = np.inf, -np.inf
    rgb_sum = np.zeros(3)
    for i in range(0, n, chunk):
        seg, depth, valid = a["seg"][i:i + chunk], a["depth"][i:i + chunk], a["valid"][i:i + chunk]
        class_pixels += np.bincount(seg.ravel(), minlength=k)[:k]
        d = depth[valid]
        valid_pixels += d.size
        if d.size:
            depth_sum += float(d.sum(dtype=np.float64))
            depth_min, depth_max = min(depth_min, float(d.min())), max(depth_max, float(d.max()))
        edge_sum += float(a["edges"][i:i + chunk].sum(dtype=np.float64))
        rgb_sum += a["image"][i:i + chunk].reshape(-1, 3).sum(axis=0, dtype=np.float64)
    total = n * split.size[0] * split.size[1]
    return {
        "count": n,
        "size": list(split.size),
        "class_fraction": {c.name: float(class_pixels[c.id] / total) for c in CLASS_TABLE},
        "depth_min": depth_min if valid_pixels else float("nan"),
        "depth_mean": depth_sum / valid_pixels if valid_pixels else float("nan"),
        "depth_max": depth_max if valid_pixels else float("nan"),
        "valid_fraction": valid_pixels / total,
        "edge_mean": edge_sum / total,
        "image_mean_rgb": (rgb_sum / total / 255.0).tolist(),
    }
