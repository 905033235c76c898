"""The affinity measurement's document as markdown, and its files (:mod:`.affinity`).

:func:`affinity_markdown` renders the document :func:`~.affinity.run_affinity` builds (agreement
table, quality table, the ``[target t, source n]`` matrices); :func:`write_affinity` writes
``<root>/setting_results/affinity.json`` and ``.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vtagml_core.experiments.settings.context import SettingContext, write_setting
from vtagml_core.tasks import TASK_TITLES


def matrix_markdown(matrix: list[list[float]], tasks: Sequence[str], caption: str, digits: int = 3) -> str:
    """A ``[target t, source n]`` matrix as a markdown table (rows targets, columns sources),
    ``digits`` significant digits (lookahead values are small)."""
    from vtagml_core.experiments.formatting import markdown_table

    names = [TASK_TITLES.get(t, t) for t in tasks]
    body = [[f"**{names[i]}**", *[("—" if i == j else f"{v:.{digits}g}") for j, v in enumerate(r)]]
            for i, r in enumerate(matrix)]
    return f"{caption}\n\n" + markdown_table(["target \\ source", *names], body)


def affinity_markdown(doc: dict[str, Any]) -> str:
    """The document as markdown: agreement table, quality table, ground truth and measure matrices."""
    from vtagml_core.experiments.tables import measured_section

    lines = measured_section(doc, doc["title"])
    quality = {**doc, **doc["quality"], "notes": [
        "The all-task runs whose omega and cosine are measured above; delta_m against the same "
        "single-task models.", *[f"{r['label']}: {r['note']}" for r in doc["quality"]["rows"]]]}
    lines += [""] + measured_section(quality, "TROA settings: the all-task runs")[:-2]
    tasks = doc["tasks"]
    lines += ["", "### The matrices (mean over seeds)", "",
              matrix_markdown(doc["mean_truth"], tasks, "Ground truth: gain (%) of target t trained "
                                                      "with source n over t alone")]
    for name, matrix in doc["mean_measures"].items():
        lines += ["", matrix_markdown(matrix, tasks, name)]
    return "\n".join(lines)


def write_affinity(ctx: SettingContext, doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<root>/setting_results/affinity.json`` and ``.md``; returns both paths.

    The figure (:func:`vtagml_core.viz.affinity_agreement.agreement_figure`) is written by the
    command, next to them (``affinity.html``): viz sits above this layer.
    """
    return write_setting(ctx, doc, affinity_markdown)


__all__ = ["affinity_markdown", "matrix_markdown", "write_affinity"]
