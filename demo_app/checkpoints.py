"""Which trained models the demo offers, and how it loads them (safetensors + JSON only).

The demo never loads a path typed by a user. It *lists* checkpoint folders under a few roots
(:func:`default_roots`: ``demo_app/checkpoints/`` shipped with the repo, then ``runs/`` where
``make reproduce`` and the trainer write) and offers their labels in a dropdown; a handler
receives a label and looks it up in a fresh listing (:func:`resolve`), so nothing outside the
roots can ever be opened. A checkpoint folder is one written by
:func:`vtagml_core.model.checkpoint.save_model`: ``model.safetensors`` + ``config.json``.
Folders with pickle files only (``.pt``, ``.bin``, ...) are not listed, and
:func:`load_checkpoint` refuses them with a message: unpickling can run arbitrary code.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model
from vtagml_core.predict import Predictor

#: The repository root (demo_app/ lives directly under it).
REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: Where the shipped demo checkpoint lives: ``demo_app/checkpoints/<name>/``.
SHIPPED_ROOT: Path = REPO_ROOT / "demo_app" / "checkpoints"
#: Run outputs (``make reproduce`` writes ``runs/reproduce/model``).
RUNS_ROOT: Path = REPO_ROOT / "runs"
#: How many folder levels below a root are searched (``runs/<run>/<model>`` is depth 2).
MAX_DEPTH: int = 2
#: Files that betray a pickled checkpoint; the kit never loads them.
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
#: Loaded models kept in memory (switching back and forth between two is instant).
CACHE_SIZE: int = 2


def default_roots() -> list[Path]:
    """``demo_app/checkpoints/`` then ``runs/`` of this repository."""
    return [SHIPPED_ROOT, RUNS_ROOT]


def is_checkpoint_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds ``model.safetensors`` and ``config.json`` (a kit model)."""
    folder = Path(folder)
    return (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def find_checkpoints(roots: list[Path], max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """``{label: folder}`` of the checkpoint folders under ``roots``, in root order.

    The label is ``<root name>/<path below the root>``, e.g. ``checkpoints/quick`` or
    ``runs/reproduce/model``. Hidden folders and symlinks are skipped (a link could point
    outside the roots); a missing root is no error.
    """
    found: dict[str, Path] = {}

    def walk(folder: Path, root: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir()
                              if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if is_checkpoint_folder(child):
                found[f"{root.name}/{child.relative_to(root).as_posix()}"] = child
            elif depth < max_depth:
                walk(child, root, depth + 1)

    for root in roots:
        root = Path(root)
        if root.is_dir():
            walk(root, root, 1)
    return found


def resolve(label: str | None, roots: list[Path]) -> tuple[str, Path]:
    """The folder of a listed ``label``; ``None``/empty picks the first listed checkpoint.

    Raises:
        ValueError: no checkpoint exists, or ``label`` is not in the listing.
    """
    listing = find_checkpoints(roots)
    if not listing:
        where = ", ".join(str(r) for r in roots)
        raise ValueError(f"no trained checkpoint found under {where}. Train one with the "
                         "'Train a quick checkpoint' button or `make reproduce`.")
    if not label:
        label = next(iter(listing))
    if label not in listing:
        raise ValueError(f"unknown checkpoint {label!r}; choose one of: {', '.join(listing)}")
    return label, listing[label]


def load_checkpoint(folder: str | Path) -> torch.nn.Module:
    """Load a kit model folder (safetensors + JSON only) on the CPU, in eval mode.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: not a kit checkpoint, e.g. only pickle files (named in the message).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    if not is_checkpoint_folder(folder):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        why = (f"it holds pickle files ({', '.join(pickles)}), which the kit never loads because "
               "unpickling can run arbitrary code" if pickles else "files are missing")
        raise ValueError(f"{folder} is not a kit checkpoint: {WEIGHTS_FILE} + {CONFIG_FILE} are "
                         f"needed ({why}). Save models with vtagml_core.model.checkpoint.save_model.")
    return load_model(folder).eval()


class PredictorCache:
    """Predictors for the last :data:`CACHE_SIZE` checkpoints used, reloaded if a file changed."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Path, tuple[float, Predictor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, folder: Path) -> Predictor:
        stamp = (folder / WEIGHTS_FILE).stat().st_mtime
        with self._lock:
            hit = self._items.get(folder)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(folder)
                return hit[1]
            predictor = Predictor(load_checkpoint(folder))
            self._items[folder] = (stamp, predictor)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return predictor
