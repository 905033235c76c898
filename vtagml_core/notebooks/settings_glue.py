"""The evaluation settings (paper Sec. 4, Tables 2-6) as the notebooks 05-09 run them.

The settings live in :mod:`vtagml_core.eval.settings`; this module only turns a notebook's
:class:`~vtagml_core.notebooks.params.NotebookParams` into a settings context and reads the
results documents back for the lessons' tables and summaries:

* :func:`settings_context` -- the preset's settings (``quick`` / ``paper``: the settings configs
  ``configs/settings/<preset>.yaml`` as the command line uses them; ``smoke``: the tiny sizes of
  :data:`SMOKE_KIT_OVERRIDES` / :data:`SMOKE_SETTINGS_OVERRIDES`, seconds per run), one seed
  (the notebook's), trained runs under ``<output_dir>/settings/`` (:data:`SETTINGS_ROOT_DIR`).
  Runs are keyed by their resolved config (:mod:`vtagml_core.eval.settings.common`), so notebook
  06 reuses the source models that 05 trained, 08 reuses them again, and a second headless run
  trains nothing;
* :func:`run_and_save` -- one setting, its ``setting_results/<name>.json`` and ``.md`` written;
* :func:`find_row`, :func:`cell_mean`, :func:`head_to_head` -- numbers for computed summaries
  ("VTAGML beat vanilla MTL on 5 of 9 columns"), never hard-coded;
* :func:`source_run`, :func:`run_log` -- a setting's trained run and its ``log.jsonl``.

``size`` and ``steps`` of the parameters cell apply when they differ from the notebook preset's
own values (``size`` -> data and backbone side, ``steps`` -> ``train.max_steps``); otherwise the
settings keep their configured budget (10 epochs of the training split in ``quick``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from vtagml_core.eval.settings import SettingContext, build_context, run_setting, write_setting
from vtagml_core.eval.settings.common import RunRecord

from .params import NotebookParams

#: Folder (under the notebooks' ``output_dir``) holding the settings' runs and results.
SETTINGS_ROOT_DIR: str = "settings"
#: Notebook presets that map onto a settings preset of the same name.
SETTINGS_PRESETS: tuple[str, ...] = ("quick", "paper")
#: The smoke preset's kit config on top of ``quick``: 64 px, a narrow decoder, 8/4/4 scenes,
#: batches of 4, one epoch (2 optimizer steps), no intermediate checkpoints.
SMOKE_KIT_OVERRIDES: tuple[str, ...] = (
    "data.size=64", "model.backbone.img_size=64", "model.decoder.embed_dims=[32,16,16,8]",
    "model.decoder.depth_per_stage=1", "data.train_count=8", "data.val_count=4",
    "data.test_count=4", "data.batch_size=4", "train.epochs=1", "train.warmup_steps=1",
    "train.save_every_steps=0")
#: The smoke preset's settings: every table keeps its shape, on a random frozen backbone (no
#: pretext pretraining) and with one warm-up + one timed efficiency step.
SMOKE_SETTINGS_OVERRIDES: tuple[str, ...] = (
    "pretrained_backbone=false", "efficiency_steps=1", "efficiency_warmup_steps=1",
    "adversarial.disc_channels=8", "adversarial.lambda_adv=0.01")


def kit_overrides(P: NotebookParams) -> list[str]:
    """``key=value`` kit-config overrides of the notebook's settings runs (module docstring)."""
    out = list(SMOKE_KIT_OVERRIDES) if P.preset.name == "smoke" else []
    if P.size != P.preset.size:
        out += [f"data.size={P.size}", f"model.backbone.img_size={P.size}"]
    if P.steps != P.preset.steps:
        out.append(f"train.max_steps={P.steps}")
    out += [f"train.device={P.device.split(':')[0]}", f"train.progress={str(P.interactive).lower()}"]
    if P.cache_dir is not None:
        out.append(f"data.cache_root={P.cache_dir}")
    return out


def settings_overrides(P: NotebookParams) -> list[str]:
    """Settings-config overrides of the preset (only the smoke preset has any)."""
    return list(SMOKE_SETTINGS_OVERRIDES) if P.preset.name == "smoke" else []


def settings_root(P: NotebookParams) -> Path:
    """``<output_dir>/settings``: trained runs (``runs/``) and results (``setting_results/``)."""
    return P.output_dir / SETTINGS_ROOT_DIR


def settings_context(P: NotebookParams, log: Callable[[str], None] | None = None) -> SettingContext:
    """The :class:`~vtagml_core.eval.settings.SettingContext` of a notebook run.

    The ``smoke`` preset starts from the ``quick`` kit and settings configs and shrinks them; the
    ``quick`` and ``paper`` presets use their settings configs unchanged (module docstring).
    The notebook's ``seed`` is the one training seed.
    """
    preset = P.preset.name if P.preset.name in SETTINGS_PRESETS else P.preset.kit_preset
    ctx = build_context(preset=preset, overrides=kit_overrides(P), seeds=[P.seed],
                        root=settings_root(P), settings_overrides=settings_overrides(P),
                        log=log or print)
    ctx.preset = P.preset.name  # the tables' provenance names the notebook preset (e.g. smoke)
    return ctx


def run_and_save(ctx: SettingContext, name: str) -> dict[str, Any]:
    """Run setting ``name`` (training or reusing its runs), write its JSON and markdown, return it."""
    doc = run_setting(name, ctx)
    write_setting(ctx, doc)
    return doc


def setting_table(doc: dict[str, Any]) -> str:
    """The setting's section as the ``tables`` command prints it: provenance, measured table,
    notes, then the paper's own rows in a separate block (:mod:`vtagml_core.eval.tables`)."""
    from vtagml_core.eval.tables import setting_markdown

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
    from vtagml_core.eval.settings.mtl import train_single_task, train_source
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
    from vtagml_core.eval.settings.common import RESULTS_SUBDIR

    path = ctx.root / RESULTS_SUBDIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["SETTINGS_ROOT_DIR", "SMOKE_KIT_OVERRIDES", "SMOKE_SETTINGS_OVERRIDES", "cell_mean",
           "find_row", "head_to_head", "kit_overrides", "run_and_save", "run_log", "run_loss_tasks",
           "saved_document", "settings_context", "settings_overrides", "settings_root",
           "setting_table", "source_run"]
