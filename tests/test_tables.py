"""The paper-shaped tables (markdown + plotly) and the transcribed paper numbers.

No training here: the results documents are written by hand in the settings' format, so every
expected string is known in advance.
"""
from __future__ import annotations

import json

import pytest

from vtagml_core.experiments import paper_numbers as pn
from vtagml_core.experiments.seeds import summarize
from vtagml_core.experiments.tables import best_rows, collect, paper_block, setting_figure, setting_markdown, write_tables
from vtagml_core.experiments.formatting import format_cell, markdown_table


def _doc(setting: str = "mtl", seeds=(0,)) -> dict:
    """A two-method MTL document: VTAGML better on mIoU, vanilla MTL better on RMSE."""
    cols = [{"key": "S-D/seg", "label": "S-D SemSeg mIoU%↑", "metric": "mIoU", "group": "S-D",
             "task": "seg", "lower_is_better": False, "zero_shot": False},
            {"key": "S-D/depth", "label": "S-D Depth RMSE↓", "metric": "rmse", "group": "S-D",
             "task": "depth", "lower_is_better": True, "zero_shot": False},
            {"key": "S-D/delta_m", "label": "S-D Δm%↑", "metric": "delta_m", "group": "S-D",
             "task": "", "lower_is_better": False, "zero_shot": False}]
    n = len(seeds)
    rows = [
        {"label": "VTAGML", "method": "vtagml", "kind": "method", "note": "",
         "cells": {"S-D/seg": summarize([0.55] * n), "S-D/depth": summarize([1.8] * n),
                   "S-D/delta_m": summarize([2.5] * n)}},
        {"label": "vanilla MTL", "method": "vanilla_mtl", "kind": "method", "note": "",
         "cells": {"S-D/seg": summarize([0.50] * n), "S-D/depth": summarize([1.7] * n),
                   "S-D/delta_m": summarize([-1.25] * n)}},
        {"label": "single-task", "method": "single_task", "kind": "reference", "note": "",
         "cells": {"S-D/seg": summarize([0.60] * n), "S-D/depth": summarize([1.6] * n),
                   "S-D/delta_m": summarize([0.0] * n)}},
    ]
    return {"setting": setting, "title": "Multitask learning", "preset": "quick",
            "where": {"dataset": "synthetic/indoor", "split": "test (128 scenes)",
                      "resolution": "128x128", "backbone": "swinv2_tiny_cpu (pretext-pretrained, frozen)",
                      "seeds": list(seeds)},
            "columns": cols, "rows": rows, "notes": ["a note"], "runs": [
                {"role": "x", "seed": 0, "dir": "d", "reused": False, "seconds": 3.0}],
            "wall_seconds": 12.3}


def test_cells_use_the_papers_units_and_show_the_interval_and_n():
    assert format_cell(summarize([0.5246]), "mIoU") == "52.46 (n=1)"          # fraction -> %
    assert format_cell(summarize([0.4524]), "rmse") == "0.452 (n=1)"
    assert format_cell(summarize([19.456]), "mean") == "19.46 (n=1)"          # normals, degrees
    assert format_cell(summarize([-1.234]), "delta_m") == "-1.23 (n=1)"
    assert format_cell(summarize([2.0]), "delta_m") == "+2.00 (n=1)"
    assert format_cell(summarize([105_700_000]), "params") == "105.700"       # a count: exact
    # mean 0.52, std 0.02, t_{0.975,2} = 4.303: half-width 4.303 * 0.02 / sqrt(3) = 0.0497 -> 4.97 %
    assert format_cell(summarize([0.50, 0.52, 0.54]), "mIoU") == "52.00 ± 4.97 (n=3)"
    assert format_cell(None, "mIoU") == "—"
    old = {"mean": 0.5, "std": 0.01, "n": 3}                                  # a document without values
    assert format_cell(old, "mIoU") == "50.00 (n=3)"


def _seeded(doc: dict, values: dict[str, dict[str, list[float]]]) -> dict:
    """``doc`` with per-seed values per row label and column key."""
    for r in doc["rows"]:
        for key, vals in values.get(r["label"], {}).items():
            r["cells"][key] = summarize(vals)
    doc["where"]["seeds"] = list(range(len(next(iter(next(iter(values.values())).values())))))
    return doc


def test_bold_only_where_the_paired_interval_excludes_zero():
    one = _doc()
    assert best_rows(one) == {}                                   # n = 1: never bold
    md = setting_markdown(one)
    assert "**" not in md.split("#### Paired")[0].split("|", 1)[1]
    assert "n = 1, no interval" in md and "| vanilla MTL | +5.00 (n=1) | +0.100 (n=1) | +3.75 (n=1) |" in md
    assert "| *single-task* | 60.00 (n=1) | 1.600 (n=1) | +0.00 (n=1) |" in md      # reference: italic
    doc = _seeded(_doc(seeds=(0, 1, 2)), {
        "VTAGML": {"S-D/seg": [0.60, 0.62, 0.61], "S-D/depth": [1.8, 1.6, 1.7], "S-D/delta_m": [2.5, 0.5, 1.5]},
        "vanilla MTL": {"S-D/seg": [0.50, 0.53, 0.51], "S-D/depth": [1.5, 1.9, 1.7], "S-D/delta_m": [1.5, 1.6, 1.4]}})
    # seg: VTAGML better on every seed (differences 0.10, 0.09, 0.10) -> bold. depth: a tie on
    # average, noisy -> not bold. delta_m: VTAGML's mean is best but its differences (+1.0,
    # -1.1, +0.1) straddle zero -> not bold.
    assert best_rows(doc) == {"S-D/seg": 0}
    md = setting_markdown(doc)
    table = md.split("#### Paired")[0]
    assert "| VTAGML | **61.00 ± 2.48 (n=3)** | 1.700 ± 0.248 (n=3) | +1.50 ± 2.48 (n=3) |" in table
    diffs = md.split("#### Paired")[1].split("####")[0]
    assert ("| vanilla MTL | **+9.67 [+8.23, +11.10] (n=3)** | +0.000 [-0.745, +0.745] (n=3) "
            "| +0.00 [-2.62, +2.62] (n=3) |") in diffs
    # The single-task row (a reference) is compared too, never bold in the table above.
    assert "| single-task | +1.00 [-1.48, +3.48] (n=3) |" in diffs
    unpaired = _doc(seeds=(0, 1, 2))
    unpaired["rows"][1]["cells"]["S-D/seg"] = summarize([0.5])          # 3 seeds against 1
    assert "| vanilla MTL | — |" in setting_markdown(unpaired)
    one_method = _doc()
    one_method["rows"] = one_method["rows"][:1] + one_method["rows"][2:]
    assert best_rows(one_method) == {}                            # nothing to rank with one method


def test_markdown_says_where_and_keeps_the_papers_rows_apart():
    md = setting_markdown(_seeded(_doc(seeds=(0, 1, 2)), {"VTAGML": {"S-D/seg": [0.5, 0.6, 0.7]}}))
    head, paper = md.split("#### The paper's reported numbers", 1)
    assert "synthetic/indoor" in head and "128x128" in head and "swinv2_tiny_cpu" in head
    assert "3 seed(s) [0, 1, 2]" in head and "95% Student-t confidence interval" in head
    assert "Table 2 shape" in head and "a note" in head and "1 trained now" in head
    assert "52.46" not in head and "| Transformer | Our | 52.46 | 0.4524 |" in paper
    assert "not comparable" in paper and "Cityscapes" in paper and "Taskonomy" in paper
    assert "nothing is bold" in setting_markdown(_doc())


def test_markdown_table_layout():
    assert markdown_table(["a", "b"], [["x", "1"]]) == "| a | b |\n| --- | ---: |\n| x | 1 |"


def test_paper_numbers_as_printed():
    t2 = pn.TABLE2_TASKONOMY
    our = next(v for g, n, v in t2.rows if n == "Our")
    assert len(t2.rows) == 12 and our == (52.46, 0.4524, 57.03, 0.4291, 19.46, 60.80, 0.3903, 17.13, 71.09)
    assert next(v for g, n, v in pn.TABLE2_CITYSCAPES.rows if n == "Our") == (78.00, 6.503, 80.55, 6.307, 39.05)
    assert next(v for g, n, v in pn.TABLE3.rows if n == "Vanilla MTL Swin [30]") == (75.10, 8.003, 75.97, 8.000, 49.05)
    assert next(v for g, n, v in pn.TABLE4.rows if n == "Our-UDA") == ("yes", 70.93, 8.66)
    assert next(v for g, n, v in pn.TABLE5.rows if n == "Our") == ("yes", 40.77, 0.652)
    assert next(v for g, n, v in pn.TABLE6.rows if n == "Our") == (105.7, 8.0)
    for tables in pn.PAPER_TABLES.values():
        for t in tables:
            assert all(len(v) == len(t.columns) for _, _, v in t.rows)
    with pytest.raises(ValueError, match="columns"):
        pn.PaperTable("Table X", "d", ("a", "b"), (("g", "n", (1.0,)),), "c", (False, True), (2, 2))
    with pytest.raises(ValueError, match="no paper table"):
        pn.paper_tables("ablation")
    assert "Table 6" in paper_block("efficiency") and "105.7" in paper_block("efficiency")


def test_collect_and_write_tables(tmp_path):
    with pytest.raises(FileNotFoundError, match="settings all"):
        collect(tmp_path)
    (tmp_path / "novel.json").write_text(json.dumps(_doc("novel")))
    (tmp_path / "mtl.json").write_text(json.dumps(_doc("mtl")))
    assert [d["setting"] for d in collect(tmp_path)] == ["mtl", "novel"]          # paper order
    md, html = write_tables(tmp_path, tmp_path / "out")
    text = md.read_text()
    assert text.index("Table 2 shape") < text.index("Table 5 shape")
    assert text.count("#### The paper's reported numbers") == 3                    # 2 + 1 tables
    page = html.read_text()
    assert page.count("plotly-graph-div") >= 2 and "MEASURED" in page


def test_figure_has_the_measured_table_and_each_paper_table():
    fig = setting_figure(_doc("mtl"))
    assert len(fig.data) == 3 and all(tr.type == "table" for tr in fig.data)
    assert list(fig.data[0].cells.values[0]) == ["VTAGML", "vanilla MTL", "single-task"]
    assert list(fig.data[0].cells.values[1])[0] == "55.00 (n=1)"
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("Table 2 shape, MEASURED") and "orientation only" in titles[1]
