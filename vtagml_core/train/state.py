"""The training state for exact resume: one atomic ``state.pt`` (docs/layout.md).

``state.pt`` holds everything that changes while training, so that a resumed run continues as
if it had never stopped:

- ``model``: every weight and buffer that can change (the frozen backbone is left out: it is
  rebuilt from the config and never moves); TROA's ``omega`` and update counter are buffers,
  so they are in here, and TROA's history is stored next to them (``troa_history``);
- ``optimizer`` and ``scheduler`` state dicts (Adam moments, step counts, current lr);
- ``rng``: the torch (CPU and CUDA), numpy and python generator states, as tensors. The data
  order needs no generator state: each epoch's permutation is a function of (seed, epoch)
  (:mod:`vtagml_core.train.schedule`);
- counters (``epoch``, ``batch_in_epoch``, ``global_step``), the best validation score so
  far, the reference metrics of the selection rule and the per-epoch history, as plain
  numbers, strings, lists and dicts.

The model weights are stored here although ``last/`` holds them too: ``state.pt`` is written in
one atomic rename, so it can never pair the weights of one step with the optimizer state of
another, whatever moment a run is killed at.

Files are written to a temporary name in the same folder and renamed (``os.replace``), so a
crash never leaves a half-written file under the final name. They are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers
(no pickled code). A file that cannot be read raises :class:`CheckpointError` naming it and
saying what to do; the trainer never deletes or overwrites such a file by itself
(:func:`open_run_folder` checks a run folder before anything is trained).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, frozen_backbone_keys

#: File name of the training state inside a run folder, and of the generation before it (kept
#: as a fallback: a state found corrupt on resume falls back to the previous one).
STATE_FILE: str = "state.pt"
PREVIOUS_STATE_FILE: str = "state.prev.pt"
#: Temporary files of an interrupted atomic write (``.<name>.<random>.tmp``).
TEMP_PATTERN: str = ".*.tmp"
#: Sub-folders of a run with the last and the best model (safetensors + JSON config).
LAST_DIR, BEST_DIR = "last", "best"
#: The run's resolved config and its final results.
RUN_CONFIG_FILE, RESULTS_FILE = "config.json", "results.json"
#: Format version written into every state; a different version is refused on resume.
STATE_VERSION: int = 1
#: Files every saved model folder must have (see :mod:`vtagml_core.model.checkpoint`).
MODEL_FOLDER_FILES: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or does not fit the run."""


def _advice(path: Path) -> str:
    """What to do when ``path`` of a run cannot be used: advice that works when followed."""
    run = path.parent if path.parent.name not in (LAST_DIR, BEST_DIR) else path.parent.parent
    return (f"The run in {run} cannot continue from it: delete the folder {run} to train the run "
            "again from the start (or restore it from a copy you have), or train into another --out")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_training_state(state: dict, out_dir: str | Path) -> Path:
    """Write ``state.pt`` atomically, keeping the one it replaces as ``state.prev.pt``.

    A kill at any moment leaves a readable state: the old ``state.pt`` until the new one is
    complete, then the previous generation under :data:`PREVIOUS_STATE_FILE` if the kill came
    between the two renames.
    """
    out_dir = Path(out_dir)
    path = out_dir / STATE_FILE
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{STATE_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        if path.exists():
            os.replace(path, out_dir / PREVIOUS_STATE_FILE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_training_state(path: str | Path) -> dict:
    """Read a ``state.pt`` written by :func:`atomic_torch_save` (``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable (corrupt/truncated), not a training state, or of
            another format version; the message names the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found: there is no training state to resume. "
                              f"{_advice(path)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt zip files
        raise CheckpointError(f"{path} is corrupt or truncated ({type(err).__name__}: {err}); "
                              f"it was not loaded. {_advice(path)}") from err
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a training state of format version {STATE_VERSION} "
                              f"(found {found!r}). {_advice(path)}")
    return state


def check_model_folder(folder: str | Path) -> None:
    """Refuse a model folder whose ``config.json`` or ``model.safetensors`` cannot be read.

    Reads every tensor, so a truncated safetensors file is caught here, before a run that would
    later overwrite the folder starts.
    """
    folder = Path(folder)
    for name in MODEL_FOLDER_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name} is missing; the model folder is incomplete. "
                                  f"{_advice(folder)}")
    config = folder / MODEL_FOLDER_FILES[0]
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config} is corrupt or truncated ({err}). {_advice(config)}") from err
    weights = folder / MODEL_FOLDER_FILES[1]
    try:
        load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{weights} is corrupt or truncated ({err}). {_advice(weights)}") from err


# --------------------------------------------------------------------------- run folders

#: Config fields that may change between a run and its resume (they do not change the numbers).
RESUME_MAY_DIFFER: frozenset[str] = frozenset(
    {"train.progress", "train.save_every_steps", "train.feature_batch_size", "data.num_workers",
     "data.cache_root", "model.adapter.taa_fused", "lesson", "train.reference_step_seconds"})


def refuse_existing_run(out_dir: Path, names: tuple[str, ...]) -> None:
    """Raise CheckpointError if ``out_dir`` holds any of ``names`` (a run's checkpoints)."""
    existing = [str(out_dir / n) for n in names if (out_dir / n).exists()]
    if existing:
        raise CheckpointError(
            f"{out_dir} already holds a training run ({', '.join(existing)}); continue it with "
            "--resume (resume=True), or choose another output folder: the kit never overwrites "
            "a run's checkpoints")


def config_differences(saved: Any, current: Any, where: str = "") -> list[str]:
    """``"key: saved vs now"`` for every differing leaf, except :data:`RESUME_MAY_DIFFER`."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            sub = f"{where}.{key}" if where else key
            out += config_differences(saved.get(key), current.get(key), sub)
        return out
    short = where.removeprefix("config.")
    free = short in RESUME_MAY_DIFFER or any(short.startswith(f + ".") for f in RESUME_MAY_DIFFER)
    if saved != current and not free:
        return [f"{short}: saved {saved!r} vs now {current!r}"]
    return []


def check_same_run_config(path: Path, current: dict) -> None:
    """Resume only the run that ``path`` (its config.json) describes; else CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path} not found, so the run cannot be checked before resuming. "
                              f"{_advice(path)}")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}). {_advice(path)}") from err
    diffs = config_differences(saved, json.loads(json.dumps(current)))
    if diffs:
        raise CheckpointError(
            f"{path.parent} was trained with another config, so it cannot resume exactly: "
            + "; ".join(diffs[:8]) + ". Resume with the same --config/--set options as the "
            "original run, or start a new run in another folder")


class RunFolderError(CheckpointError):
    """The run folder cannot be written (permissions, a full or read-only disk)."""


#: errno values of a run folder that cannot be written, with what to do about each.
_WRITE_ERRORS: dict[int, str] = {
    errno.EACCES: "make it writable (e.g. chmod -R u+w {folder})",
    errno.EPERM: "make it writable (e.g. chmod -R u+w {folder})",
    errno.EROFS: "move the run to a writable disk",
    errno.ENOSPC: "free disk space",
    errno.EDQUOT: "free disk space (your quota is full)",
}


@contextlib.contextmanager
def run_folder_errors(out_dir: Path):
    """Turn a failed write into :class:`RunFolderError` naming the path and what to do.

    Every write of a run is atomic (temporary file, then rename), so what was saved before the
    error is intact: after the cause is fixed, ``--resume`` continues from the last checkpoint.
    """
    try:
        yield
    except OSError as err:
        if err.errno not in _WRITE_ERRORS:
            raise
        path = err.filename or out_dir
        todo = _WRITE_ERRORS[err.errno].format(folder=out_dir)
        raise RunFolderError(
            f"cannot write {path}: {err.strerror}. Nothing saved before was lost: {todo}, then "
            f"continue the run with --resume (same --out {out_dir})") from err


def remove_orphan_temporaries(out_dir: Path) -> list[Path]:
    """Delete the temporary files of saves a kill interrupted (``.state.pt.*.tmp``, ...).

    Only called by the holder of the run folder's lock, so no save is in progress.
    """
    found = [p for folder in (out_dir, out_dir / LAST_DIR, out_dir / BEST_DIR) if folder.is_dir()
             for p in folder.glob(TEMP_PATTERN) if p.is_file()]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def load_resume_state(out_dir: Path, log: Callable[[str], None] = print) -> dict:
    """The newest readable training state: ``state.pt``, else the previous generation.

    Raises:
        CheckpointError: neither is readable; the advice (delete the folder, or another
            ``--out``) works when followed.
    """
    previous = out_dir / PREVIOUS_STATE_FILE
    if not (out_dir / STATE_FILE).exists() and not previous.exists() and not any(
            (out_dir / name).exists() for name in (LAST_DIR, BEST_DIR, RESULTS_FILE)):
        raise CheckpointError(f"{out_dir} holds no training run to resume; start the run without "
                              "--resume")
    try:
        return load_training_state(out_dir / STATE_FILE)
    except CheckpointError as err:
        if not previous.is_file():
            raise
        state = load_training_state(previous)
        log(f"warning: {err} Resuming from the previous training state {previous} (step "
            f"{state['counters']['global_step']}) instead; the steps after it are trained again.")
        return state


def _check_or_set_aside(folder: Path, log: Callable[[str], None]) -> bool:
    """True if the model folder is readable; else it is renamed ``<name>.broken`` (kept, not
    deleted) and the next checkpoint writes a new one."""
    try:
        check_model_folder(folder)
        return True
    except CheckpointError as err:
        aside = folder.with_name(folder.name + ".broken")
        if aside.exists():
            shutil.rmtree(aside)
        folder.rename(aside)
        log(f"warning: {err.args[0].split('. The run')[0]}. It was moved to {aside}; the training "
            "state is intact, so the run resumes and writes a new one at its next checkpoint.")
        return False


def open_run_folder(out_dir: Path, run_config: dict, resume: bool, is_main: bool,
                    log: Callable[[str], None] = print) -> dict | None:
    """Claim ``out_dir`` for a new run, or check it and read its state for a resumed one.

    New run: refuse a folder that already holds checkpoints, then (rank 0) write
    ``config.json``; returns None. Resume: the saved ``config.json`` must match ``run_config``
    (:func:`check_same_run_config`; a missing one is restored from the state, which carries a
    copy); the training state is read with its fallback generation
    (:func:`load_resume_state`); an unreadable ``last/`` or ``best/`` is set aside, since the
    state alone holds everything to continue (``best/``'s score is then forgotten, so the next
    epoch writes a new one). Temporary files of interrupted saves are removed first.
    """
    if is_main and out_dir.is_dir():
        orphans = remove_orphan_temporaries(out_dir)
        if orphans:
            log(f"removed {len(orphans)} temporary file(s) of an interrupted save in {out_dir}")
    if not resume:
        if is_main:
            refuse_existing_run(out_dir, (STATE_FILE, LAST_DIR, BEST_DIR, RESULTS_FILE))
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / RUN_CONFIG_FILE, json.dumps(run_config, indent=2) + "\n")
        return None
    state = load_resume_state(out_dir, log)
    config_path = out_dir / RUN_CONFIG_FILE
    if not config_path.is_file() and "run_config" in state and is_main:
        atomic_write_text(config_path, state["run_config"])
        log(f"warning: {config_path} was missing; restored it from the training state")
    check_same_run_config(config_path, run_config)
    if is_main:
        if (out_dir / LAST_DIR).exists():
            _check_or_set_aside(out_dir / LAST_DIR, log)
        if (out_dir / BEST_DIR).exists() and not _check_or_set_aside(out_dir / BEST_DIR, log):
            state["floats"]["best_score"] = -math.inf
    return state


# --------------------------------------------------------------------------- model entries


def backbone_frozen(model: nn.Module) -> bool:
    """Whether ``model.backbone`` never trains (its ``frozen`` flag, else no parameter needs grad)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return False
    flag = getattr(backbone, "frozen", None)
    if flag is not None:
        return bool(flag)
    return not any(p.requires_grad for p in backbone.parameters())


def mutable_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict without the frozen backbone (CPU copies).

    Only what cannot change is left out: a trainable tensor inside the backbone (a LoRA
    factor, a per-task norm) stays in, whatever its prefix.
    """
    frozen = frozen_backbone_keys(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_mutable_model_state(model: nn.Module, tensors: dict[str, Tensor], source: Path) -> None:
    """Inverse of :func:`mutable_model_state`; anything else missing or extra is an error."""
    result = model.load_state_dict(tensors, strict=False)
    frozen = frozen_backbone_keys(model)
    missing = [k for k in result.missing_keys if k not in frozen]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source} does not fit this model (missing {missing[:8]}, unexpected "
            f"{list(result.unexpected_keys)[:8]}): it was made by another model config. "
            f"{_advice(source)}")


# --------------------------------------------------------------------------- random generators


def capture_rng_state() -> dict[str, Tensor]:
    """Every global random generator's state as tensors (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    if kind != "MT19937":
        raise RuntimeError(f"unexpected numpy generator {kind!r}; only MT19937 is saved")
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if py_gauss is None else py_gauss],
                                     dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Tensor]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_meta"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos,
                         has_gauss, float(state["numpy_gauss"])))
    py = state["python"].tolist()
    gauss = float(state["python_gauss"][0])
    random.setstate((py[0], tuple(py[1:]), None if np.isnan(gauss) else gauss))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)


# --------------------------------------------------------------------------- the trainer's state


def troa_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{module path: TROA}`` inside ``model`` (their histories are not buffers: saved apart)."""
    from vtagml_core.model.troa import TROA

    return {path: m for path, m in model.named_modules() if isinstance(m, TROA)}


@dataclass
class Progress:
    """Where a run stands: counters, the best validation score so far and the epoch history.

    The trainer owns one and advances it; :func:`collect_state` / :func:`apply_state` store it
    in ``state.pt`` through :meth:`state_dict` / :meth:`load_state_dict` (plain numbers and a
    JSON string, so ``torch.load(weights_only=True)`` reads it back).

    Attributes:
        epoch: epochs fully done.
        batch_in_epoch: batches done in the current epoch.
        global_step: optimizer steps done.
        epoch_seconds_so_far, epoch_loss_sum: the current epoch's training time and loss sum.
        best_score, best_epoch: the selection rule's best validation score and its epoch.
        reference: the first validation metrics (the selection rule's reference).
        history: one record per finished epoch.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    epoch_seconds_so_far: float = 0.0
    epoch_loss_sum: float = 0.0
    best_score: float = -math.inf
    best_epoch: int = 0
    reference: dict | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def start_epoch(self) -> None:
        """The counters of a new epoch (after the previous one ended)."""
        self.epoch += 1
        self.batch_in_epoch, self.epoch_seconds_so_far, self.epoch_loss_sum = 0, 0.0, 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"counters": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                             "global_step": self.global_step, "best_epoch": self.best_epoch},
                "floats": {"best_score": self.best_score,
                           "epoch_seconds_so_far": self.epoch_seconds_so_far,
                           "epoch_loss_sum": self.epoch_loss_sum},
                "json": json.dumps({"reference": self.reference, "history": self.history})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        counters, floats = state["counters"], state["floats"]
        self.epoch, self.batch_in_epoch = counters["epoch"], counters["batch_in_epoch"]
        self.global_step, self.best_epoch = counters["global_step"], counters["best_epoch"]
        self.best_score = floats["best_score"]
        self.epoch_seconds_so_far = floats["epoch_seconds_so_far"]
        self.epoch_loss_sum = floats["epoch_loss_sum"]
        extra = json.loads(state["json"])
        self.reference, self.history = extra["reference"], extra["history"]


def collect_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                  progress: Progress, world_size: int, run_config: dict | None = None) -> dict:
    """Everything a run needs to resume exactly (module docstring)."""
    histories = {}
    for path, troa in troa_modules(model).items():
        steps, mats = troa.history_tensor()
        histories[path] = {"steps": steps, "mats": mats}
    saved = progress.state_dict()
    saved["counters"]["world_size"] = world_size
    return {
        "version": STATE_VERSION,
        "model": mutable_model_state(model),
        "troa_history": histories,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        **saved,
        # A copy of config.json, so a run whose config.json was lost can still resume.
        **({"run_config": json.dumps(run_config, indent=2) + "\n"} if run_config is not None else {}),
    }


def apply_state(state: dict, source: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, progress: Progress, world_size: int) -> dict[str, Tensor]:
    """Inverse of :func:`collect_state`; returns the random generators' states, which the
    caller restores when training starts (so nothing between now and then draws from them)."""
    counters = state["counters"]
    if counters["world_size"] != world_size:
        raise CheckpointError(
            f"{source} was saved by a run of {counters['world_size']} process(es), this one has "
            f"{world_size}: resume with the same number of processes (the data order and global "
            "batch depend on it)")
    load_mutable_model_state(model, state["model"], source)
    troas = troa_modules(model)
    for path, hist in state["troa_history"].items():
        if path in troas and hist["steps"].numel():
            troas[path].load_history(hist["steps"], hist["mats"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress.load_state_dict(state)
    return state["rng"]
