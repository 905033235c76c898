"""``report.md`` and ``report.html`` of a headless notebook run (issue 5, item 2).

The report gathers, per executed notebook and in cell order, the outputs of the cells tagged
``report`` (the notebooks' tables, key figures and closing summaries), after a table with
every notebook's status, exercise checks and seconds, and a list of every exercise check
(passed, failed or unsolved, with the checker's message). Output kinds:

=======================================  ===========================  ==========================
notebook output                          report.md                    report.html
=======================================  ===========================  ==========================
``text/markdown`` (tables, summaries)    as is                        converted to HTML
``application/vnd.plotly.v1+json``       ``figures/*.png`` and a      the interactive figure
                                         link to ``figures/*.html``
``image/png``                            ``figures/*.png``            inline image
``text/html`` (no plotly)                as is (raw HTML)             as is
``text/plain`` / stdout                  code block                   ``<pre>``
=======================================  ===========================  ==========================

plotly.js is written once to ``figures/plotly.min.js`` and loaded from there, so the report
works offline and stays small. A figure's PNG is the one its output carries (the static renderer
of :mod:`vtagml_core.viz.static`), else it is drawn here with kaleido; without Chromium the
markdown keeps the link alone.

When the run wrote settings results (notebooks 05-09: ``<artifacts>/settings/setting_results``),
the report ends with the paper's claims as a checklist (:mod:`vtagml_core.experiments.claims`).
"""
from __future__ import annotations

import base64
import html
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import INJECTED_TAG, REPORT_TAG, RunResult
from vtagml_core.viz.static import figure_image

REPORT_MD, REPORT_HTML, FIGURES_DIR = "report.md", "report.html", "figures"
PLOTLY_JS: str = "plotly.min.js"
PLOTLY_MIME: str = "application/vnd.plotly.v1+json"
#: Outputs that carry no content for a report (widget views, ANSI progress bars).
SKIPPED_MIMES: tuple[str, ...] = ("application/vnd.jupyter.widget-view+json",)

HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}
td{text-align:right}td:first-child{text-align:left}pre{background:#f6f6f6;padding:.5em}
.fail{color:#b00}.ok{color:#070}"""


@dataclass
class ReportItem:
    """One output of a ``report`` cell: ``kind`` in markdown/html/plotly/image/text; a plotly
    figure's ``image`` is the base64 PNG its output carries, if any."""

    kind: str
    content: Any
    cell_index: int
    image: str | None = None


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def collect_report_items(nb) -> list[ReportItem]:
    """The outputs of the cells tagged ``report`` of an executed notebook, in order.

    ``cell_index`` counts the cells of the source notebook (papermill's injected parameters
    cell is skipped), so it matches what a reader sees in ``notebooks/``.
    """
    items = []
    source_cells = [c for c in nb.cells
                    if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    for i, cell in enumerate(source_cells):
        if cell.cell_type != "code" or REPORT_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                items.append(ReportItem("text", _text(out["text"]), i))
                continue
            data = out.get("data", {})
            if not data or any(m in data for m in SKIPPED_MIMES):
                continue
            if PLOTLY_MIME in data:
                png = data.get("image/png")
                items.append(ReportItem("plotly", data[PLOTLY_MIME], i,
                                        _text(png) if png is not None else None))
            elif "text/markdown" in data:
                items.append(ReportItem("markdown", _text(data["text/markdown"]), i))
            elif "image/png" in data:
                items.append(ReportItem("image", _text(data["image/png"]), i))
            elif "text/html" in data:
                items.append(ReportItem("html", _text(data["text/html"]), i))
            elif "text/plain" in data:
                items.append(ReportItem("text", _text(data["text/plain"]), i))
    return items


def _markdown_to_html(text: str) -> str:
    try:
        import mistune
    except ImportError:  # nbconvert brings mistune; without it, show the markdown source
        return f"<pre>{html.escape(text)}</pre>"
    return mistune.create_markdown(plugins=["table"])(text)


def _figure_title(spec: dict, fallback: str) -> str:
    title = spec.get("layout", {}).get("title", {})
    text = title.get("text") if isinstance(title, dict) else title
    return str(text) if text else fallback


def _alt_text(title: str) -> str:
    """A figure title as markdown image text (no brackets, no HTML)."""
    return html.unescape(title).replace("[", "(").replace("]", ")").replace("<br>", " ")


def settings_results_dir(run: RunResult) -> Path | None:
    """Where the notebooks of ``run`` wrote the settings' results documents (under the
    notebooks' ``output_dir``, which the runner always passes); None without one."""
    from vtagml_core.experiments.runs import RESULTS_SUBDIR
    from vtagml_core.notebooks.settings_glue import SETTINGS_ROOT_DIR

    artifacts = run.parameters.get("output_dir")
    return None if not artifacts else Path(artifacts) / SETTINGS_ROOT_DIR / RESULTS_SUBDIR


def claims_section(run: RunResult) -> str:
    """``## The paper's claims`` with the checklist, or "" when no settings results were written."""
    from vtagml_core.experiments.claims import claims_markdown, check_claims, load_documents

    folder = settings_results_dir(run)
    docs = load_documents(folder) if folder is not None else {}
    if not docs:
        return ""
    return "## The paper's claims\n\n" + claims_markdown(
        check_claims(docs), title=f"Checked on this run's results ({', '.join(sorted(docs))})")


def _environment_line(run: RunResult) -> str:
    import torch

    device = "CUDA: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"Started {run.started}; python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.machine()} {device}; parameters: "
            + ", ".join(f"`{k}={v}`" for k, v in run.parameters.items() if k != "output_dir"))


def exercises_section(run: RunResult) -> list[str]:
    """``## Exercises``: one row per exercise check of the run (no lines when there is none)."""
    if not run.exercises:
        return []
    md = ["## Exercises", "", "| notebook | cell | exercise | result | message |",
          "|---|---:|---|---|---|"]
    for e in run.exercises:
        message = e.message.replace("|", "\\|")
        md.append(f"| {e.notebook} | {e.cell_index} | {e.exercise} | {e.status} | {message} |")
    return md + [""]


def write_report(run: RunResult) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run.out``; returns both paths."""
    import nbformat
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    out = run.out
    figures = out / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    (figures / PLOTLY_JS).write_text(get_plotlyjs())
    total = sum(r.seconds for r in run.results)
    md = [f"# Notebook run, preset `{run.preset}`", "", _environment_line(run), "",
          "| notebook | status | exercises | seconds |", "|---|---|---|---:|"]
    md += [f"| {r.name} | {r.status} | {r.exercise_summary()} | {r.seconds:.1f} |"
           for r in run.results]
    md += [f"| total | {'ok' if run.ok else 'FAILED'} | | {total:.1f} |", ""]
    if not run.ok:
        md += ["## Failures", ""] + [f"- {f.describe()}" for f in run.failures]
        md += [f"- {e.describe()}" for e in run.failed_exercises] + [""]
    md += exercises_section(run)
    body = [_markdown_to_html("\n".join(md))]
    for result in run.results:
        md += [f"## {result.name}", ""]
        body.append(f"<h2>{html.escape(result.name)}</h2>")
        if not result.executed.is_file():
            md += ["(not executed)", ""]
            continue
        nb = nbformat.read(str(result.executed), as_version=4)
        for k, item in enumerate(collect_report_items(nb)):
            stem = f"{Path(result.name).stem}_cell{item.cell_index}_{k}"
            if item.kind == "markdown":
                md += [item.content, ""]
                body.append(_markdown_to_html(item.content))
            elif item.kind == "plotly":
                fig = pio.from_json(json.dumps(item.content), skip_invalid=True)
                title = _figure_title(item.content, stem)
                fig.write_html(str(figures / f"{stem}.html"), include_plotlyjs="directory")
                png = base64.b64decode(item.image) if item.image else figure_image(fig)
                if png is not None:
                    (figures / f"{stem}.png").write_bytes(png)
                    md += [f"![{_alt_text(title)}]({FIGURES_DIR}/{stem}.png)", ""]
                md += [f"[figure: {title}]({FIGURES_DIR}/{stem}.html)", ""]
                body.append(pio.to_html(fig, include_plotlyjs=False, full_html=False))
            elif item.kind == "image":
                (figures / f"{stem}.png").write_bytes(base64.b64decode(item.content))
                md += [f"![{stem}]({FIGURES_DIR}/{stem}.png)", ""]
                body.append(f'<img src="data:image/png;base64,{item.content}">')
            elif item.kind == "html":
                md += [item.content, ""]
                body.append(item.content)
            else:
                md += ["```", item.content.rstrip("\n"), "```", ""]
                body.append(f"<pre>{html.escape(item.content)}</pre>")
        if result.failure is not None:
            md += [f"**Failed:** {result.failure.describe()}", ""]
            body.append(f'<p class="fail"><b>Failed:</b> {html.escape(result.failure.describe())}</p>')
    checklist = claims_section(run)
    if checklist:
        md += [checklist, ""]
        body.append(_markdown_to_html(checklist))
    md_path, html_path = out / REPORT_MD, out / REPORT_HTML
    md_path.write_text("\n".join(md) + "\n")
    html_path.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>vtagml-kit notebooks, preset {html.escape(run.preset)}</title>"
        f"<style>{HTML_STYLE}</style><script src='{FIGURES_DIR}/{PLOTLY_JS}'></script></head>"
        f"<body>{''.join(body)}</body></html>\n")
    return md_path, html_path


__all__ = ["claims_section", "collect_report_items", "exercises_section", "settings_results_dir",
           "write_report"]
