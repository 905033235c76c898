"""The evaluation settings (paper Sec. 4, Tables 2-6) as the notebooks 05-09 run them.

The settings live in :mod:`vtagml_core.experiments.settings`; this module only turns a notebook's
:class:`~vtagml_core.notebooks.params.NotebookParams` into a settings context and reads the
results documents back for the lessons' tables and summaries:

* :func:`settings_context` -- the preset's settings exactly as the command line resolves them
  (``configs/presets/<preset>.yaml`` and ``configs/settings/<preset>.yaml``, plus the
  notebook's seed, device, cache root and ``overrides``), one seed (the notebook's), trained
  runs in the kit's one run store (:func:`vtagml_core.experiments.runs.default_store`), results
  under ``<output_dir>/settings/`` (:data:`SETTINGS_ROOT_DIR`).
  Runs are keyed by their resolved config (:mod:`vtagml_core.experiments.runs`), so notebook
  06 reuses the source models that 05 trained, 08 reuses them again, and a second headless run
  trains nothing;
* :func:`run_and_save` -- one setting, its ``setting_results/<name>.json`` and ``.md`` written;
* :func:`find_row`, :func:`cell_mean`, :func:`head_to_head` -- numbers for computed summaries
  ("VTAGML beat vanilla MTL on 5 of 9 columns"), never hard-coded;
* :func:`source_run`, :func:`run_log` -- a setting's trained run and its ``log.jsonl``.

"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from vtagml_core.experiments.settings import SettingContext, build_context, run_setting, write_setting
from vtagml_core.experiments.runs import RunRecord

from .params import NotebookParams

#: Folder (under the notebooks' ``output_dir``) holding the settings' runs and results.
SETTINGS_ROOT_DIR: str = "settings"


def settings_root(P: NotebookParams) -> Path:
    """``<output_dir>/settings``: the settings' results documents (``setting_results/``); the
    trained runs themselves live in the run store."""
    return P.output_dir / SETTINGS_ROOT_DIR


def settings_context(P: NotebookParams, log: Callable[[str], None] | None = None) -> SettingContext:
    """The :class:`~vtagml_core.experiments.settings.SettingContext` of a notebook run.

    The same preset and seed give the same run keys as ``python -m vtagml_core settings``, and
    the runs live in the same run store (``$VTAGML_RUNS``, else ``~/.cache/vtagml/runs``), so a
    run trained by the command line, ``make reproduce`` or another notebook is reused here.
    The training seeds are ``P.seeds``: the notebook's ``seed``, or ``$VTAGML_NB_SEEDS``
    (``make reproduce SEEDS=0,1,2``), and then every table shows the spread over them.
    """
    return build_context(preset=P.preset, overrides=P.base_overrides(), seeds=list(P.seeds),
                         root=settings_root(P), log=log or print)


def run_and_save(ctx: SettingContext, name: str) -> dict[str, Any]:
    """Run setting ``name`` (training or reusing its runs), write its JSON and markdown, return it."""
    doc = run_setting(name, ctx)
    write_setting(ctx, doc)
    return doc


def setting_table(doc: dict[str, Any]) -> str:
    """The setting's section as the ``tables`` command prints it: provenance, measured table,
    notes, then the paper's own rows in a separate block (:mod:`vtagml_core.experiments.tables`)."""
    from vtagml_core.experiments.tables import setting_markdown

    return setting_markdown(doc)


# --------------------------------------------------------------------------- reading documents


def find_row(doc: dict[str, Any], method: str | None = None, kind: str | None = None,
             label_startswith: str | None = None, label_contains: str | None = None) -> dict[str, Any]:
    """The one row of ``doc`` matching every given criterion.

    Raises:
        LookupError: none or several rows match (the message lists the rows' labels).
    """
    rows = [r for r in doc["rows"]
            if (method is None or r["method"] == method) and (kind is None or r["kind"] == kind)
            and (label_startswith is None or r["label"].startswith(label_startswith))
            and (label_contains is None or label_contains in r["label"])]
    if len(rows) != 1:
        labels = "; ".join(f"{r['label']!r} ({r['kind']}, {r['method']})" for r in doc["rows"])
        raise LookupError(f"{len(rows)} rows of the {doc['setting']} table match method={method!r}, "
                          f"kind={kind!r}, label_startswith={label_startswith!r}, "
                          f"label_contains={label_contains!r}; rows: {labels}")
    return rows[0]


def cell_mean(row: dict[str, Any], key: str) -> float | None:
    """Mean over seeds of one cell, or None when the row has no value in that column."""
    cell = row["cells"].get(key)
    return None if cell is None else float(cell["mean"])


def head_to_head(doc: dict[str, Any], a: dict[str, Any], b: dict[str, Any],
                 keys: Sequence[str] | None = None) -> tuple[int, int, list[str]]:
    """On how many of the ranked columns row ``a`` is strictly better than row ``b``.

    Only columns with a direction (``lower_is_better`` not None) and a value in both rows count.

    Returns:
        ``(wins, compared, labels of the columns a wins)``.
    """
    wins, compared, won = 0, 0, []
    for col in doc["columns"]:
        lower = col.get("lower_is_better")
        if lower is None or (keys is not None and col["key"] not in keys):
            continue
        va, vb = cell_mean(a, col["key"]), cell_mean(b, col["key"])
        if va is None or vb is None:
            continue
        compared += 1
        if (va < vb) if lower else (va > vb):
            wins += 1
            won.append(col["label"])
    return wins, compared, won


# --------------------------------------------------------------------------- runs


def source_run(ctx: SettingContext, tasks: str, method: str, seed: int | None = None) -> RunRecord:
    """The source-domain run of ``method`` on ``tasks`` (the MTL setting's; reused if trained)."""
    from vtagml_core.experiments.settings.mtl import train_single_task, train_source
    from vtagml_core.tasks import parse_tasks

    seed = ctx.seeds[0] if seed is None else seed
    if method == "single_task":
        (task,) = parse_tasks(tasks)
        return train_single_task(ctx, task, seed)
    return train_source(ctx, tasks, method, seed)


def run_log(record: RunRecord, kind: str | None = "step") -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl`` (``step`` records by default; None: all)."""
    from vtagml_core.train.logging import LOG_FILE, read_log

    return read_log(record.dir / LOG_FILE, kind)


def run_loss_tasks(record: RunRecord) -> list[str]:
    """Tasks whose labels entered the run's loss (from its ``results.json``)."""
    return list(record.results["loss_tasks"])


def saved_document(ctx: SettingContext, name: str) -> dict[str, Any] | None:
    """A setting's results document written earlier under the context's root, if any."""
    from vtagml_core.experiments.runs import RESULTS_SUBDIR

    path = ctx.root / RESULTS_SUBDIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["SETTINGS_ROOT_DIR", "cell_mean",
           "find_row", "head_to_head", "run_and_save", "run_log", "run_loss_tasks",
           "saved_document", "settings_context", "settings_root",
           "setting_table", "source_run"]
