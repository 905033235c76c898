"""Notebooks 05-09 (the evaluation settings, efficiency, ablations) and their support modules.

The generic structure rules (one parameters cell, learning goals, computed summary, no committed
outputs, report cells) and an nbval run of every notebook are in ``tests/test_notebooks.py``,
which discovers these notebooks too. Here: what is specific to 05-09 (each runs its setting
through :mod:`vtagml_core.notebooks.settings_glue`, shows the table in a report cell, checks its
must-hold equations), the glue's smoke configuration and row helpers on known answers, the
training-curve and prediction figures. Their nbval runs (in order, in one output folder, each
within its smoke budget and saving its setting's results) are in ``tests/test_notebooks.py``.
"""
from __future__ import annotations


import nbformat
import pytest
import torch

from test_notebooks import CHECK_MARKER, NOTEBOOK_DIR, SETTING_OF
from vtagml_core.notebooks.params import HEADLESS_ENV, OUTPUT_ENV, PRESET_ENV, resolve



def _nb(stem: str):
    return nbformat.read(str(NOTEBOOK_DIR / f"{stem}.ipynb"), as_version=4)


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("stem", SETTING_OF)
def test_runs_its_setting_and_shows_the_table_in_a_report_cell(stem):
    nb = _nb(stem)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "settings_context(P)" in code, f"{stem}: settings must come from the notebook's params"
    assert f'run_and_save(ctx, "{SETTING_OF[stem]}")' in code
    tables = [c for c in nb.cells if "report" in _tags(c) and "setting_table(" in c.source]
    assert tables, f"{stem}: the setting's table must be in a cell tagged 'report'"
    assert sum(CHECK_MARKER in c.source for c in nb.cells) >= 1


def test_ablations_notebook_covers_every_ablation_and_the_paper_components():
    from vtagml_core.notebooks.ablations import ABLATIONS

    code = "\n".join(c.source for c in _nb("09_efficiency_and_ablations").cells)
    assert "run_ablations(ctx)" in code and "parameter_report()" in code
    overrides = [o for a in ABLATIONS.values() for o in a.overrides]
    for wanted in ("model.adapter.troa=false", "model.adapter.taa_bias=none", "model.adapter.tsn=false",
                   "model.backbone.taps=[[3,0],[3,1]]"):
        assert wanted in overrides
    assert any(o.startswith("model.backbone.name=") for o in overrides)


def test_summaries_are_computed_not_written():
    """The summary cell builds its sentences from variables: no bare numbers in its strings."""
    import re

    for stem in SETTING_OF:
        last = _nb(stem).cells[-1]
        assert "summary(" in last.source and "{" in last.source
        literals = re.findall(r'"([^"{}]*)"', last.source)
        assert not any(re.search(r"\d+\.\d+", s) for s in literals), f"{stem}: a hard-coded number"


# --------------------------------------------------------------------------- glue


@pytest.fixture()
def smoke_params(tmp_path, monkeypatch):
    monkeypatch.setenv(PRESET_ENV, "smoke")
    monkeypatch.setenv(HEADLESS_ENV, "1")
    monkeypatch.delenv(OUTPUT_ENV, raising=False)
    return resolve(preset="quick", device="cpu", output_dir=str(tmp_path / "out"))


def test_smoke_context_is_tiny_and_keeps_every_table_shape(smoke_params, monkeypatch, tmp_path):
    from vtagml_core.experiments.settings.context import load_settings_config
    from vtagml_core.notebooks.settings_glue import settings_context, settings_root

    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "cache"))
    ctx = settings_context(smoke_params, log=lambda _: None)
    d = ctx.cfg.data
    assert (d.size, d.train_count, d.batch_size, ctx.cfg.train.epochs) == (64, 8, 4, 1)
    assert ctx.cfg.model.backbone.weights is None  # no pretext pretraining in the smoke preset
    assert ctx.root == settings_root(smoke_params) == smoke_params.output_dir / "settings"
    quick = load_settings_config(preset="quick")
    assert ctx.settings.task_sets == quick.task_sets and ctx.settings.methods == quick.methods
    assert ctx.seeds == [smoke_params.seed]


def test_overrides_reach_the_settings_runs(tmp_path, monkeypatch):
    """A notebook's ``overrides`` change the settings' configs (hence their run keys) exactly as
    ``--set`` does; without them the settings keep the preset's own values."""
    from vtagml_core.notebooks.settings_glue import settings_context

    monkeypatch.setenv(HEADLESS_ENV, "1")
    monkeypatch.delenv(PRESET_ENV, raising=False)
    monkeypatch.delenv(OUTPUT_ENV, raising=False)
    P = resolve(preset="smoke", device="cpu", output_dir=str(tmp_path))
    assert settings_context(P, log=lambda m: None).cfg.data.size == 64
    P2 = resolve(preset="smoke", device="cpu", output_dir=str(tmp_path),
                 overrides=["data.size=96", "model.backbone.img_size=96", "train.max_steps=7"])
    cfg = settings_context(P2, log=lambda m: None).cfg
    assert (cfg.data.size, cfg.model.backbone.img_size, cfg.train.max_steps) == (96, 96, 7)


def _doc():
    def cell(v):
        return {"mean": v, "std": 0.0, "n": 1, "values": [v]}

    cols = [{"key": "a/seg", "label": "mIoU", "metric": "mIoU", "lower_is_better": False},
            {"key": "a/depth", "label": "RMSE", "metric": "rmse", "lower_is_better": True},
            {"key": "a/delta_m", "label": "dm", "metric": "delta_m", "lower_is_better": False},
            {"key": "ratio", "label": "ratio", "metric": "ratio", "lower_is_better": None}]
    rows = [{"label": "VTAGML", "method": "vtagml", "kind": "method", "note": "",
             "cells": {"a/seg": cell(0.5), "a/depth": cell(1.0), "a/delta_m": cell(2.0), "ratio": cell(1.0)}},
            {"label": "vanilla", "method": "vanilla_mtl", "kind": "method", "note": "",
             "cells": {"a/seg": cell(0.4), "a/depth": cell(0.9), "ratio": cell(3.0)}},
            {"label": "VTAGML, source only", "method": "vtagml", "kind": "reference", "note": "", "cells": {}}]
    return {"setting": "mtl", "columns": cols, "rows": rows}


def test_row_helpers_give_known_answers():
    from vtagml_core.notebooks.settings_glue import cell_mean, find_row, head_to_head

    doc = _doc()
    a, b = find_row(doc, method="vtagml", kind="method"), find_row(doc, method="vanilla_mtl")
    # seg: 0.5 > 0.4 wins; depth: 1.0 > 0.9 loses (lower is better); delta_m missing in b;
    # the ratio column has no direction.
    assert head_to_head(doc, a, b) == (1, 2, ["mIoU"])
    assert head_to_head(doc, b, a) == (1, 2, ["RMSE"])
    assert head_to_head(doc, a, b, keys=["a/depth"]) == (0, 1, [])
    assert cell_mean(a, "a/delta_m") == 2.0 and cell_mean(b, "a/delta_m") is None
    assert find_row(doc, label_contains="source only")["kind"] == "reference"
    with pytest.raises(LookupError, match="2 rows .* rows: 'VTAGML'"):
        find_row(doc, method="vtagml")


def test_unknown_ablation_lists_the_valid_ones():
    from types import SimpleNamespace

    from vtagml_core.notebooks.ablations import ablation_config

    with pytest.raises(ValueError, match="no_troa, no_taa, no_tsn"):
        ablation_config(SimpleNamespace(), "no_everything", "S-D", 0)


# --------------------------------------------------------------------------- figures


def test_curves_read_step_records_and_smooth_them():
    from vtagml_core.viz.curves import curves_figure, loss_keys, moving_average, step_series

    records = [{"kind": "step", "step": i + 1, "loss": float(v), "losses": {"seg": 2.0 * v, "disc_seg": "nan"}}
               for i, v in enumerate([4, 2, 6, 0])] + [{"kind": "epoch", "epoch": 1, "step": 4}]
    assert step_series(records, "loss") == ([1, 2, 3, 4], [4.0, 2.0, 6.0, 0.0])
    assert step_series(records, "losses.disc_seg") == ([], [])  # non-finite values are skipped
    assert moving_average([4, 2, 6, 0], 2) == [4.0, 3.0, 4.0, 3.0]
    assert loss_keys(records) == ["losses.seg", "losses.disc_seg"]
    assert loss_keys(records, "disc_") == ["losses.disc_seg"]
    fig = curves_figure({"run": records}, smooth=2)
    assert [t.name for t in fig.data] == ["run (raw)", "run"] and list(fig.data[1].y) == [4, 3, 4, 3]
    with pytest.raises(ValueError, match="no step record"):
        curves_figure(records=records, keys=["losses.disc_seg"])
    with pytest.raises(ValueError, match="either"):
        curves_figure()


def test_prediction_grid_shows_labels_and_predictions():
    from vtagml_core.model.backbone import BackboneConfig
    from vtagml_core.model.vtagml import ModelConfig, VTAGML
    from vtagml_core.viz.predictions import predict, prediction_grid

    torch.manual_seed(0)
    model = VTAGML(ModelConfig(tasks="S-D", backbone=BackboneConfig(img_size=64)))

    class Data:
        name, tasks = "fake", ("seg",)
        class_colors = torch.randint(0, 255, (model.num_classes, 3)).numpy()

        def __len__(self):
            return 2

        def __getitem__(self, i):  # seg labelled, depth not: depth shows its prediction only
            return {"image": torch.rand(3, 64, 64), "seg": torch.zeros(64, 64, dtype=torch.long),
                    "name": f"s{i}"}

    preds = predict(model, torch.rand(2, 3, 64, 64))
    assert preds["seg"].shape == (2, 64, 64) and preds["depth"].shape == (2, 64, 64)
    assert (preds["depth"] >= 0).all()
    fig = prediction_grid(model, Data(), n=2, highlight=["depth"])
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Image", "Semantic segmentation label", "Semantic segmentation prediction",
                      "Depth prediction (zero-shot)"]
    assert len(fig.data) == 2 * 4
    with pytest.raises(ValueError, match="must be among the model's tasks"):
        prediction_grid(model, Data(), tasks=["normals"])


