"""A run folder claimed for a new run, or checked and read for a resumed one (:mod:`.state`).

:func:`open_run_folder` is the one entry: a new run refuses a folder that already holds
checkpoints; a resumed one must have the same config (:data:`RESUME_MAY_DIFFER` lists what may
change), reads the newest readable training state and sets an unreadable ``last/`` or ``best/``
aside. :func:`run_folder_errors` turns a failed write (permissions, a full disk) into
:class:`RunFolderError` naming the path and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

from .state_files import (BEST_DIR, LAST_DIR, PREVIOUS_STATE_FILE, RESULTS_FILE, RUN_CONFIG_FILE,
                          STATE_FILE, TEMP_PATTERN, CheckpointError, _advice, atomic_write_text,
                          check_model_folder, load_training_state)

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


__all__ = ["RESUME_MAY_DIFFER", "RunFolderError", "check_same_run_config", "config_differences",
           "load_resume_state", "open_run_folder", "refuse_existing_run", "remove_orphan_temporaries",
           "run_folder_errors"]
