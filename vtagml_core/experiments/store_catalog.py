"""The run store's catalogue: list its runs, summarise one, select some, remove them.

What ``python -m vtagml_core runs list|show|remove`` print and do, and how ``runs export`` picks
the runs it packs (:mod:`.store_archive`). A run folder is one whose ``config.json`` exists;
it is *finished* once its results are written (:func:`~.runs.is_complete`) and *stale* when the
kit would never ask for it again (:mod:`.store_status`).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vtagml_core.train.run_lock import RunLock
from vtagml_core.train.state import RESULTS_FILE, RUN_CONFIG_FILE

from .runs import RUN_INFO_FILE, is_complete
from .store_status import available_backbones, run_stale_reasons


class RunSelectionError(ValueError):
    """A selection of runs that names nothing in the store (the message says what to look at)."""


@dataclass
class RunSummary:
    """One line of ``runs list``."""

    name: str
    method: str
    tasks: str
    presets: list[str]
    seed: int
    metrics: str
    size_bytes: int
    date: str
    complete: bool
    stale: list[str]


def _run_folders(store: Path) -> list[Path]:
    if not store.is_dir():
        return []
    return sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / RUN_CONFIG_FILE).is_file())


def summarize_run(folder: Path, backbones: set[str] | None = None) -> RunSummary:
    """What ``runs list`` prints about one run folder (``backbones``: the digests of the
    pretrained backbones at hand, :func:`~.store_status.available_backbones`)."""
    from vtagml_core.metrics.multitask import PRIMARY_METRICS

    config = json.loads((folder / RUN_CONFIG_FILE).read_text())
    info = json.loads((folder / RUN_INFO_FILE).read_text()) if (folder / RUN_INFO_FILE).is_file() else {}
    complete = is_complete(folder)
    metrics = ""
    if complete:
        best = json.loads((folder / RESULTS_FILE).read_text())["best"]["metrics"]
        metrics = ", ".join(f"{t} {PRIMARY_METRICS[t]} {m[PRIMARY_METRICS[t]]:.3f}"
                            for t, m in best.items() if t in PRIMARY_METRICS)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    date = time.strftime("%Y-%m-%d %H:%M", time.localtime((folder / RUN_CONFIG_FILE).stat().st_mtime))
    cfg = config["config"]
    return RunSummary(folder.name, config["method"], cfg["model"]["tasks"], info.get("presets", []),
                      int(cfg["train"]["seed"]), metrics or "(not finished)", size, date, complete,
                      run_stale_reasons(folder, backbones))


def list_runs(store: Path) -> list[RunSummary]:
    """Every run folder of the store, by name."""
    backbones = available_backbones()
    return [summarize_run(folder, backbones) for folder in _run_folders(store)]


def select_runs(store: Path, names: Iterable[str] = (), method: str | None = None,
                seed: int | None = None, stale: bool | None = None) -> list[Path]:
    """Finished runs of the store matching the names (prefixes of them) and filters
    (``stale``: True only the stale runs, False only the current ones, :mod:`.store_status`).

    Raises:
        RunSelectionError: a name matches no finished run, or nothing matches at all.
    """
    runs = [p for p in _run_folders(store) if is_complete(p)]
    chosen = runs
    names = list(names)
    if names:
        chosen = []
        for name in names:
            hits = [p for p in runs if p.name.startswith(name)]
            if not hits:
                raise RunSelectionError(f"no finished run in {store} matches {name!r}; see `runs list`")
            chosen += [p for p in hits if p not in chosen]
    backbones = available_backbones() if stale is not None else None
    summaries = {p: summarize_run(p, backbones) for p in chosen}
    chosen = [p for p in chosen if (method is None or summaries[p].method == method)
              and (seed is None or summaries[p].seed == seed)
              and (stale is None or bool(summaries[p].stale) == stale)]
    if not chosen:
        raise RunSelectionError(f"no finished run in {store} matches the selection")
    return chosen


def remove_runs(runs: list[Path]) -> None:
    """Delete run folders, each only while no process trains into it (its lock is taken)."""
    for run in runs:
        with RunLock(run):
            shutil.rmtree(run)



__all__ = ["RunSelectionError", "RunSummary", "list_runs", "remove_runs", "select_runs", "summarize_run"]
