"""Which trained models the demo offers, and how it loads them (safetensors + JSON only).

The demo never loads a path typed by a user. It *lists* checkpoint folders under a few roots
(:func:`default_roots`: ``demo_app/checkpoints/`` shipped with the repo, the kit's run store
(:func:`vtagml_core.experiments.runs.default_store`: every run the CLI, ``make reproduce`` and
the notebooks trained, or a class imported), then ``runs/`` of the repository) and offers their labels in a dropdown; a handler
receives a label and looks it up in a fresh listing (:func:`resolve`), so nothing outside the
roots can ever be opened. A checkpoint folder is one written by
:func:`vtagml_core.model.checkpoint.save_model`: ``model.safetensors`` + ``config.json``.
Folders with pickle files only (``.pt``, ``.bin``, ...) are not listed, and
:func:`load_checkpoint` refuses them with a message: unpickling can run arbitrary code.

:class:`CheckpointCatalog` rescans the roots on every call and tells which checkpoints load:
a folder whose files are unreadable (:func:`quick_check`) or whose model fails to load is
listed as broken, with the reason, and never chosen as the default -- the newest checkpoint
that loads is. :func:`read_training_info` reads what the run folder above a checkpoint
records about its training data and validation metrics. Messages name checkpoints by label
and files relative to the roots (:func:`public_message`), never by server path.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from vtagml_core.baselines.factory import load_model
from vtagml_core.experiments.runs import default_store
from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
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
#: Files of the run folder above a checkpoint (the trainer's ``<run>/best``, ``<run>/last``;
#: ``reproduce``'s ``<out>/model``) that say what it was trained and validated on.
RUN_RESULTS_FILE: str = "results.json"
RUN_CONFIG_FILE: str = "config.json"
#: A run's ``where`` reads "<dataset> val split (...)"; reproduce writes "synthetic/<domain>".
WHERE_SPLIT_MARK: str = " val split"
SYNTHETIC_PREFIX: str = "synthetic/"
#: reproduce's results.json names the trained model's metrics "VTAGML after <N> steps".
TRAINED_RESULT_PREFIX: str = "VTAGML after"


def default_roots() -> list[Path]:
    """``demo_app/checkpoints/``, the run store, then ``runs/`` of this repository."""
    return [SHIPPED_ROOT, default_store(), RUNS_ROOT]


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
        where = ", ".join(display_path(r) for r in roots)
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


# ----------------------------------------------------------------------------- paths in messages
def display_path(path: Path) -> str:
    """``path`` as the page may show it: relative to the repository, else its folder name."""
    path = Path(path)
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def public_message(text: str, roots: list[Path]) -> str:
    """``text`` with the absolute paths of ``roots`` replaced by :func:`display_path` names.

    Errors of the loaders name files by absolute path; the page shows them relative to the
    checkpoint roots (``ckpts/a_bad/config.json``), never the server's folder layout.
    """
    pairs = {}
    for root in roots:
        for form in (str(Path(root)), str(Path(root).resolve())):
            if Path(form).is_absolute():
                pairs[form] = display_path(root)
    for absolute in sorted(pairs, key=len, reverse=True):  # longest first: nested roots
        text = text.replace(absolute, pairs[absolute])
    return text


# ----------------------------------------------------------------------------- which checkpoints load
def quick_check(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a loadable checkpoint, judged from its files; None if no reason.

    Reads ``config.json`` (JSON with a ``model`` section) and the safetensors header (complete
    file, tensors listed) without building the model; the full load happens when the
    checkpoint is used (:meth:`CheckpointCatalog.load`).
    """
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{CONFIG_FILE} is not valid JSON ({err})"
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        return f'{CONFIG_FILE} has no "model" section: it was not written by save_model'
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
            if not list(weights.keys()):
                return f"{WEIGHTS_FILE} holds no tensors"
    except (SafetensorError, OSError) as err:
        return f"{WEIGHTS_FILE} is corrupt or truncated ({err})"
    return None


def _stamp(folder: Path) -> tuple[int, int, int]:
    """Changes when either file of a checkpoint is rewritten (weights mtime + size, config mtime)."""
    weights = (folder / WEIGHTS_FILE).stat()
    return weights.st_mtime_ns, weights.st_size, (folder / CONFIG_FILE).stat().st_mtime_ns


@dataclass(frozen=True)
class CheckpointStatus:
    """One listed checkpoint: label, folder, when its weights were written, why it is broken.

    ``problem`` is None for a checkpoint that loads or has not been loaded yet and passed
    :func:`quick_check`.
    """

    label: str
    folder: Path
    modified_ns: int
    problem: str | None = None

    @property
    def broken(self) -> bool:
        return self.problem is not None


class CheckpointCatalog:
    """The checkpoints under ``roots`` now: which load, which are broken and why, the default.

    Every call rescans the roots, so a checkpoint written after the server started is listed
    (and accepted by the API) at once. Quick checks and failed full loads are remembered per
    file stamp: a rescan reads no unchanged file twice, and a re-saved checkpoint is judged
    again.
    """

    def __init__(self, roots: list[Path], cache: PredictorCache | None = None) -> None:
        self.roots = [Path(r) for r in roots]
        self.cache = cache if cache is not None else PredictorCache()
        self._problems: dict[Path, tuple[tuple[int, int, int], str | None]] = {}
        self._lock = threading.Lock()

    def public(self, text: str) -> str:
        """``text`` without the server's absolute checkpoint paths (see :func:`public_message`)."""
        return public_message(text, self.roots)

    def _problem(self, folder: Path, stamp: tuple[int, int, int]) -> str | None:
        with self._lock:
            known = self._problems.get(folder)
        if known is not None and known[0] == stamp:
            return known[1]
        problem = quick_check(folder)
        with self._lock:
            self._problems[folder] = (stamp, problem)
        return problem

    def scan(self) -> list[CheckpointStatus]:
        """Every listed checkpoint: the usable ones newest first, then the broken ones."""
        entries = []
        for label, folder in find_checkpoints(self.roots).items():
            try:
                stamp = _stamp(folder)
            except OSError:  # removed while listing
                continue
            problem = self._problem(folder, stamp)
            entries.append(CheckpointStatus(label, folder, stamp[0],
                                            None if problem is None else self.public(problem)))
        return sorted(entries, key=lambda e: (e.broken, -e.modified_ns))

    def default(self) -> str | None:
        """The newest checkpoint that loads (loaded now, into the cache); None if none does."""
        for entry in self.scan():
            if entry.broken:
                break  # broken ones come last
            try:
                self.load(entry.label)
            except ValueError:
                continue
            return entry.label
        return None

    def load(self, label: str | None) -> tuple[str, Predictor]:
        """``(label, predictor)`` of a listed checkpoint (empty label: :meth:`default`).

        Raises:
            ValueError: no checkpoint, an unknown label, or one that does not load (it is then
                listed as broken, with the reason).
        """
        if not label:
            label = self.default()
            if label is None:
                resolve(None, self.roots)  # raises "no trained checkpoint found ..."
                raise ValueError("no listed checkpoint loads; see the broken checkpoints listed "
                                 "under the checkpoint menu, re-train or re-save them")
        label, folder = resolve(label, self.roots)
        stamp = _stamp(folder)
        problem = self._problem(folder, stamp)
        if problem is None:
            try:
                return label, self.cache.get(folder)
            except Exception as err:  # any failure to build or load: report it, keep serving
                problem = str(err) if isinstance(err, (ValueError, OSError)) else \
                    f"{type(err).__name__}: {err}"
                with self._lock:
                    self._problems[folder] = (stamp, problem)
        raise ValueError(f"checkpoint {label} is broken: {self.public(problem)}. Choose another "
                         "checkpoint, or re-train / re-save this one")


# ----------------------------------------------------------------------------- what a model knows
@dataclass
class TrainingInfo:
    """What was recorded about a checkpoint's training, next to it (all optional).

    Attributes:
        dataset: the training data's name (a synthetic domain or a real dataset), "" if unknown.
        synthetic: True for a domain of the kit's renderer, False for a real dataset, None if
            unknown.
        details: e.g. "512 scenes at 128 px", from the run's config.
        metrics: validation ``{task: {metric: value}}`` of this checkpoint.
        metrics_where: what the metrics were measured on (the run's ``where``), and which epoch.
    """

    dataset: str = ""
    synthetic: bool | None = None
    details: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_where: str = ""


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when missing or unreadable (the info is optional)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics_of(results: dict, folder: Path, meta: dict) -> tuple[dict, str]:
    """This checkpoint's validation metrics and the epoch they come from."""
    if isinstance(results.get(folder.name), dict) and "metrics" in results[folder.name]:
        entry = results[folder.name]  # trainer run: best/ or last/
        return entry.get("metrics") or {}, f"{folder.name} epoch {entry.get('epoch', '?')}"
    if isinstance(results.get("results"), dict) and results["results"]:
        named = results["results"]  # reproduce: {"VTAGML after N steps": metrics, ...}
        name = next((k for k in reversed(named) if k.startswith(TRAINED_RESULT_PREFIX)),
                    next(reversed(named)))
        return named[name] or {}, name
    if isinstance(meta.get("val"), dict):
        return meta["val"], f"epoch {meta.get('epochs_done', '?')}"
    return {}, ""


def read_training_info(folder: Path) -> TrainingInfo:
    """What the checkpoint's own meta and its run folder's files say about its training.

    Sources: ``config.json`` ``meta`` of the checkpoint (the trainer stores the validation
    metrics of ``best/`` there), then the run folder above it: the trainer's ``results.json``
    (``where``, ``best``/``last`` metrics) and ``config.json`` (the data section), or the
    ``reproduce`` command's ``results.json`` / ``config.json``.
    """
    folder = Path(folder)
    meta = _read_json(folder / CONFIG_FILE).get("meta") or {}
    run = folder.parent
    results = _read_json(run / RUN_RESULTS_FILE)
    run_config = _read_json(run / RUN_CONFIG_FILE)
    data = (run_config.get("config") or run_config).get("data") or {}
    info = TrainingInfo()
    info.metrics, epoch = _metrics_of(results, folder, meta if isinstance(meta, dict) else {})
    where = results.get("where") if isinstance(results.get("where"), str) else ""
    info.metrics_where = ", ".join(part for part in (where, epoch) if part)
    name = where.split(WHERE_SPLIT_MARK)[0].strip() if WHERE_SPLIT_MARK in where else ""
    name = name.removeprefix(SYNTHETIC_PREFIX) or str(data.get("domain") or "")
    if name:
        info.dataset = name
        info.synthetic = _is_synthetic_domain(name)
    if info.synthetic and data.get("train_count") and data.get("size"):
        info.details = f"{data['train_count']} scenes at {data['size']} px"
    return info

def _is_synthetic_domain(name: str) -> bool:
    """Whether ``name`` names a synthetic domain (``mixed`` and graded shifts such as
    ``indoor_shift@0.4`` included)."""
    from vtagml_core.data.synthetic.catalog import check_domain_name

    try:
        check_domain_name(name)
    except ValueError:
        return False
    return True
