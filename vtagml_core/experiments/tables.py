"""The settings' results as the paper's tables: markdown and plotly (paper Sec. 4, Tables 2-6).

Input: the results documents the settings write (``<runs>/setting_results/<setting>.json``,
:mod:`vtagml_core.experiments.settings`), each with ``columns`` (key, label, metric, direction),
``rows`` (label, kind, ``cells`` keyed by column: per-seed summaries) and ``where`` (dataset,
split, resolution, backbone, seeds). Output per setting:

1. a header saying what was measured where (dataset, split, resolution, backbone, seed count);
2. the measured table: every cell the mean over seeds, ``± `` the half-width of its 95 %
   Student-t confidence interval, and ``n`` (:mod:`vtagml_core.experiments.stats`); reference
   and trivial rows in italics. The best ``method`` row of a column is bold **only** when its
   paired per-seed difference to every other method row has an interval that excludes zero
   (one seed: never bold, "n = 1, no interval");
3. the paired differences to VTAGML: for each other row, ``VTAGML - row`` seed by seed with its
   interval, bold where the interval excludes zero;
4. the setting's notes and its wall time;
5. **in a separate, labelled block**, the paper's own rows for that table
   (:mod:`vtagml_core.experiments.paper_numbers`): real datasets and a Swin-B backbone, for orientation,
   not comparison.

How a number prints (scale, decimals, the cell's interval) is
:mod:`vtagml_core.experiments.formatting`; parameter counts are exact there, and never bold here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from vtagml_core.experiments.formatting import (CE_METRIC, EMPTY, EXACT_METRICS, finite_cell,
                                                format_cell, format_difference, generator_text,
                                                markdown_table)
from vtagml_core.experiments.stats import BETTER, CONFIDENCE, Comparison, compare
from vtagml_core.experiments.paper_numbers import NOT_IN_MAIN_TEXT, PAPER_CONDITIONS, PaperTable, paper_tables

#: Paper table of each setting, in the paper's order.
TABLE_OF: dict[str, str] = {"mtl": "Table 2", "zeroshot": "Table 3", "uda": "Table 4",
                            "novel": "Table 5", "efficiency": "Table 6"}
#: Settings with no table in the paper, listed after the paper's (own markdown, no paper block).
EXTRA_SETTINGS: tuple[str, ...] = ("robustness",)
#: Method of the row every other row is compared with, and (ablations) its stand-in.
REFERENCE_METHODS: tuple[str, ...] = ("vtagml", "full")
#: Row kinds left out of the paired differences (fitted once, no seeds).
UNPAIRED_KINDS: tuple[str, ...] = ("trivial",)
#: Pixels per plotly table row, and per table header/title.
ROW_PX, TABLE_PAD_PX = 28, 90


def ranked_columns(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Columns with a direction whose values are measurements (not counts)."""
    return [c for c in doc["columns"]
            if c.get("lower_is_better") is not None and c["metric"] not in EXACT_METRICS]


def compare_cells(a: dict[str, Any] | None, b: dict[str, Any] | None,
                  lower_is_better: bool) -> Comparison | None:
    """Cell ``a`` against cell ``b``, seed by seed; ``None`` when they cannot be paired (a cell
    is missing, has no per-seed values, a different number of them, or a non-finite one)."""
    if a is None or b is None or not a.get("values") or not b.get("values"):
        return None
    if len(a["values"]) != len(b["values"]) or not (finite_cell(a) and finite_cell(b)):
        return None
    return compare(a["values"], b["values"], lower_is_better)


def best_rows(doc: dict[str, Any]) -> dict[str, int]:
    """Column key -> index of the ``method`` row to print in bold.

    A column's best method row (by mean) is bold only when, seed by seed, it is measurably
    better than every other method row with a value there: each paired difference has an
    interval that excludes zero. One seed gives no interval, so nothing is bold.
    """
    methods = [i for i, r in enumerate(doc["rows"]) if r["kind"] == "method"]
    best: dict[str, int] = {}
    if len(methods) < 2:
        return best
    for col in ranked_columns(doc):
        key, lower = col["key"], bool(col["lower_is_better"])
        present = [i for i in methods if key in doc["rows"][i]["cells"]]
        if len(present) < 2:
            continue
        top = (min if lower else max)(present, key=lambda i: doc["rows"][i]["cells"][key]["mean"])
        verdicts = [compare_cells(doc["rows"][top]["cells"][key], doc["rows"][i]["cells"][key], lower)
                    for i in present if i != top]
        if all(v is not None and v.verdict == BETTER for v in verdicts):
            best[key] = top
    return best


def reference_row(doc: dict[str, Any]) -> int | None:
    """Index of the row every other row is compared with: VTAGML's ``method`` row (or the full
    model of the ablations); ``None`` when the document has none."""
    for method in REFERENCE_METHODS:
        for i, r in enumerate(doc["rows"]):
            if r["method"] == method and r["kind"] == "method":
                return i
    return None


def differences_to_reference(doc: dict[str, Any]) -> list[tuple[int, dict[str, Comparison | None]]]:
    """For every row but the reference and the unpaired kinds: ``(row index, {column key:
    Comparison of the reference against the row, or None})`` over the ranked columns."""
    ref = reference_row(doc)
    if ref is None:
        return []
    cols = ranked_columns(doc)
    out = []
    for i, r in enumerate(doc["rows"]):
        if i == ref or r["kind"] in UNPAIRED_KINDS:
            continue
        out.append((i, {c["key"]: compare_cells(doc["rows"][ref]["cells"].get(c["key"]),
                                                r["cells"].get(c["key"]), bool(c["lower_is_better"]))
                        for c in cols}))
    return out


def difference_lines(doc: dict[str, Any]) -> list[str]:
    """Markdown lines of the paired differences ``reference - row`` (empty without a reference
    row or another row to compare)."""
    ref = reference_row(doc)
    diffs = differences_to_reference(doc)
    cols = ranked_columns(doc)
    if ref is None or not diffs or not cols:
        return []
    name = doc["rows"][ref]["label"]
    body = []
    for i, comps in diffs:
        cells = [doc["rows"][i]["label"]]
        for c in cols:
            comp = comps[c["key"]]
            if comp is None:
                cells.append(EMPTY)
                continue
            text = format_difference(comp.difference, c["metric"])
            cells.append(f"**{text}**" if comp.significant else text)
        body.append(cells)
    ns = {comp.n for _, comps in diffs for comp in comps.values() if comp is not None}
    caveat = (" n = 1, no interval: no difference can be told from seed noise, so none is bold."
              if ns == {1} else "")
    return [f"#### Paired differences: {name} minus each row, seed by seed", "",
            f"Mean of the per-seed differences with its {CONFIDENCE:.0%} Student-t interval; "
            "↑ columns: positive = "
            f"{name} higher (better), ↓ columns: negative = {name} lower (better). **Bold**: the "
            f"interval excludes zero, a measurable difference.{caveat} {EMPTY}: not paired (a "
            "missing value or a different number of seeds).", "",
            markdown_table(["Row", *[c["label"] for c in cols]], body), ""]


def measured_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted body of a setting's measured table (plain text, no markup)."""
    header = ["Method", *[c["label"] for c in doc["columns"]]]
    body = [[r["label"], *[format_cell(r["cells"].get(c["key"]), c["metric"]) for c in doc["columns"]]]
            for r in doc["rows"]]
    return header, body


def cell_counts(doc: dict[str, Any]) -> set[int]:
    """The ``n`` of every measured cell of a document (counts left out)."""
    metric = {c["key"]: c["metric"] for c in doc["columns"]}
    return {int(cell.get("n", 1)) for r in doc["rows"] for key, cell in r["cells"].items()
            if metric.get(key) not in EXACT_METRICS}


def where_line(doc: dict[str, Any]) -> str:
    """The provenance line: dataset, split, resolution, backbone, seeds, preset, what a cell is."""
    w = doc["where"]
    seeds = w.get("seeds", [])
    if max(cell_counts(doc), default=1) > 1:
        spread = (f"; cells: mean ± half-width of its {CONFIDENCE:.0%} Student-t confidence "
                  "interval, and n, the values behind the mean (seeds; timed steps in Table 6)")
    else:
        spread = ("; every cell is one value (n=1): with no interval, no difference between rows "
                  "can be told from seed noise, so nothing is bold")
    generator = f" ({generator_text(w)})" if generator_text(w) else ""
    return (f"Measured on **{w['dataset']}**{generator}, split {w['split']}, resolution {w['resolution']}, "
            f"backbone {w['backbone']}, {len(seeds)} seed(s) {seeds}, preset `{doc['preset']}`"
            + spread + ".")


def paper_value(value: float | str | None, decimals: int) -> str:
    """A paper cell as printed: its decimals, check-mark columns as text, :data:`EMPTY` if missing."""
    if value is None:
        return EMPTY
    return value if isinstance(value, str) else f"{value:.{decimals}f}"


def paper_markdown(table: PaperTable) -> str:
    """The paper's rows of one table, as printed."""
    body = [[group, name, *[paper_value(v, d) for v, d in zip(values, table.decimals)]]
            for group, name, values in table.rows]
    arrows = ["" if d is None else ("↓" if d else "↑") for d in table.lower_is_better]
    header = ["", "Method (paper)", *[f"{c}{a}" for c, a in zip(table.columns, arrows)]]
    return markdown_table(header, body, ["l", "l"] + ["r"] * len(table.columns))


def paper_block(setting: str) -> str:
    """The labelled block of the paper's own rows for a setting's table."""
    parts = []
    for table in paper_tables(setting):
        parts += [f"#### The paper's reported numbers: {table.table}, {table.dataset}", "",
                  f"> Different data ({PAPER_CONDITIONS}): shown for orientation, **not comparable** "
                  f"with the measured table above. Caption: {table.caption}", "",
                  paper_markdown(table), ""]
    return "\n".join(parts).rstrip()


def measured_section(doc: dict[str, Any], title: str) -> list[str]:
    """Markdown lines of a measured results document: title, provenance line, the table (a best
    value in bold only where it is measurably best, reference rows in italics), the paired
    differences to VTAGML, notes, and how many runs were reused."""
    header, body = measured_rows(doc)
    best = best_rows(doc)
    keys = [c["key"] for c in doc["columns"]]
    for i, (r, cells) in enumerate(zip(doc["rows"], body)):
        for j, key in enumerate(keys, start=1):
            if best.get(key) == i:
                cells[j] = f"**{cells[j]}**"
        if r["kind"] != "method":
            cells[0] = f"*{cells[0]}*"
    runs = doc.get("runs", [])
    trained = sum(1 for r in runs if not r["reused"])
    lines = [f"### {title}", "", where_line(doc), "", markdown_table(header, body), ""]
    lines += difference_lines(doc)
    lines += [f"- {n}" for n in doc.get("notes", [])]
    lines += ["", f"Wall time {doc['wall_seconds']:.1f} s; runs used {len(runs)} ({trained} trained "
                  f"now, {len(runs) - trained} reused)."]
    return lines


def robustness_markdown(doc: dict[str, Any]) -> str:
    """The robustness section: a table per target (metric per level), then the corruption errors."""
    blocks = [(f"{doc['title']}: {t}", [c for c in doc["columns"] if c["group"].startswith(f"{t}@")])
              for t in doc["targets"]]
    base = next((r["label"] for r in doc["rows"] if r["method"] == doc["baseline"]), doc["baseline"])
    blocks.append((f"{doc['title']}: corruption errors vs {base}",
                   [c for c in doc["columns"] if c["metric"] == CE_METRIC]))
    lines: list[str] = []
    for i, (title, cols) in enumerate(blocks):
        last = i == len(blocks) - 1
        section = measured_section({**doc, "columns": cols, "notes": doc["notes"] if last else []}, title)
        lines += (section if last else section[:-2]) + ([] if last else [""])
    return "\n".join(lines)


def setting_markdown(doc: dict[str, Any]) -> str:
    """One setting's section: header, measured table, notes, timing, the paper's block (a
    setting of :data:`EXTRA_SETTINGS` has its own sections and no paper block)."""
    if doc["setting"] == "robustness":
        return robustness_markdown(doc)
    title = f"{doc['title']} ({TABLE_OF.get(doc['setting'], '')} shape)"
    return "\n".join(measured_section(doc, title) + ["", paper_block(doc["setting"])])


def collect(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``<setting>.json`` in ``results_dir``, in the paper's table order.

    Raises:
        FileNotFoundError: no results there (names the command that makes them).
    """
    folder = Path(results_dir)
    docs = [json.loads((folder / f"{s}.json").read_text()) for s in (*TABLE_OF, *EXTRA_SETTINGS)
            if (folder / f"{s}.json").is_file()]
    if not docs:
        raise FileNotFoundError(f"no setting results in {folder}; run e.g. "
                                "`python -m vtagml_core settings all` first")
    return docs


def tables_markdown(docs: Iterable[dict[str, Any]]) -> str:
    """All settings' sections in one document."""
    parts = ["# VTAGML kit: the paper's evaluation settings on the synthetic benchmark", "",
             "Every measured table below names its dataset, split, resolution, backbone and seeds. "
             "The paper's own numbers follow each table in a separate block: they come from real "
             "datasets and a much larger backbone, so they orient, they do not compare.", ""]
    for doc in docs:
        parts += [setting_markdown(doc), ""]
    parts += ["Not in the paper's main text (so not transcribed): " + "; ".join(NOT_IN_MAIN_TEXT) + "."]
    return "\n".join(parts)


def setting_figure(doc: dict[str, Any]):
    """A plotly figure: the measured table, then each of the paper's tables, titled apart."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    papers = paper_tables(doc["setting"]) if doc["setting"] in TABLE_OF else ()
    header, body = measured_rows(doc)
    shape = f"{TABLE_OF[doc['setting']]} shape, " if doc["setting"] in TABLE_OF else ""
    titles = [f"{shape}MEASURED: {doc['where']['dataset']}, "
              f"{doc['where']['resolution']}, {len(doc['where'].get('seeds', []))} seed(s)"]
    titles += [f"Paper's reported {t.table} ({t.dataset}): different data, for orientation only"
               for t in papers]
    heights = [len(body) + 2] + [len(t.rows) + 2 for t in papers]
    fig = make_subplots(rows=len(titles), cols=1, specs=[[{"type": "table"}]] * len(titles),
                        subplot_titles=titles, row_heights=heights, vertical_spacing=0.06)
    fig.add_trace(go.Table(header={"values": header}, cells={"values": [list(c) for c in zip(*body)]}),
                  row=1, col=1)
    for k, t in enumerate(papers, start=2):
        values = [[g for g, _, _ in t.rows], [n for _, n, _ in t.rows]]
        values += [[paper_value(v[j], t.decimals[j]) for _, _, v in t.rows] for j in range(len(t.columns))]
        fig.add_trace(go.Table(header={"values": ["", "Method (paper)", *t.columns]},
                               cells={"values": values}), row=k, col=1)
    fig.update_layout(title=doc["title"], height=ROW_PX * sum(heights) + TABLE_PAD_PX * len(titles),
                      margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return fig


def write_tables(results_dir: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Collect the settings' results into ``<out>/tables.md`` and ``<out>/tables.html``."""
    docs = collect(results_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "tables.md"
    md.write_text(tables_markdown(docs) + "\n")
    html = out / "tables.html"
    figures = [setting_figure(d).to_html(full_html=False, include_plotlyjs=(i == 0))
               for i, d in enumerate(docs)]
    html.write_text("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>VTAGML kit tables"
                    "</title></head><body>\n" + "\n".join(figures) + "\n</body></html>\n")
    return md, html


__all__ = ["EXTRA_SETTINGS", "TABLE_OF", "best_rows", "collect", "compare_cells", "difference_lines",
           "differences_to_reference", "measured_rows", "measured_section", "ranked_columns", "reference_row",
           "paper_block", "paper_markdown", "paper_value", "robustness_markdown", "setting_figure",
           "setting_markdown", "tables_markdown", "where_line", "write_tables"]
