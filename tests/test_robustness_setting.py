"""The robustness setting (curves over graded shift severity, CE / mCE) and its figure, tiny.

Runs as tests/test_settings.py does: 64 px, S-D, 8 training scenes, one epoch, a random frozen
backbone; two seeds so that the cells have per-seed values to pair. Only the source-trained runs
(VTAGML S-D and one single-task model per task, per seed) are trained, once per module.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from vtagml_core.experiments.runs import RunSpec, run_dir
from vtagml_core.experiments.settings import build_context, run_setting, write_setting
from vtagml_core.experiments.settings.robustness import (MCE_KEY, SOURCE_LEVEL, ce_key, level_domain,
                                                         level_group)
from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.metrics.robustness import corruption_error, mean_corruption_error
from vtagml_core.train.trainer import Trainer

TINY = ["data.size=64", "model.backbone.img_size=64", "model.decoder.embed_dims=[32,16,16,8]",
        "model.decoder.depth_per_stage=1", "data.train_count=8", "data.val_count=4",
        "data.test_count=2", "data.batch_size=4", "train.epochs=1", "train.warmup_steps=1",
        "train.save_every_steps=0", "train.progress=false"]
SETTINGS = ["methods=[vtagml]", "pretrained_backbone=false", "robustness_targets=[comic]",
            "robustness_levels=[0,3,5]", "robustness_tasks=S-D"]
SEEDS = "0,1"
TASKS = ("seg", "depth")


def context(root: Path, *extra: str):
    return build_context("quick", overrides=TINY, root=root, store=root, seeds=SEEDS,
                         settings_overrides=[*SETTINGS, *extra], log=lambda _: None)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTAGML_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("settings")


@pytest.fixture(scope="module")
def doc(env):
    ctx = context(env)
    out = run_setting("robustness", ctx)
    write_setting(ctx, out)
    return out


def _rows(doc: dict) -> dict[str, dict]:
    return {r["method"]: r for r in doc["rows"]}


def test_every_row_has_a_value_at_every_level_and_task(env, doc):
    assert [r["method"] for r in doc["rows"]] == ["vtagml", "single_task"]
    assert [lv["level"] for lv in doc["levels"]] == [0, 3, 5]
    assert doc["levels"][0]["domains"] == {"comic": "comic@0"}
    assert doc["levels"][-1]["domains"] == {"comic": "comic"}            # s = 1: the target itself
    for r in doc["rows"]:
        for lv in (0, 3, 5):
            for t in TASKS:
                cell = r["cells"][f"comic@{lv}/{t}"]
                assert cell["n"] == 2 and all(math.isfinite(v) for v in cell["values"])
    w = doc["where"]
    assert w["resolution"] == "64x64" and w["seeds"] == [0, 1] and "test" in w["split"]
    md = (env / "setting_results" / "robustness.md").read_text()
    assert "synthetic/comic@{0, 0.6, 1}" in md and "RANDOM" in md and "corruption errors" in md


def test_corruption_errors_against_the_single_task_baseline(doc):
    rows = _rows(doc)
    base, vt = rows["single_task"], rows["vtagml"]
    assert base["kind"] == "reference" and vt["kind"] == "method"
    for t in TASKS:
        assert base["cells"][ce_key("comic", t)]["values"] == [100.0, 100.0]
        lower = METRIC_DIRECTIONS[PRIMARY_METRICS[t]]
        keys = [f"{level_group('comic', lv)}/{t}" for lv in (3, 5)]            # levels above 0
        for i in range(2):                                                   # seed by seed
            expected = corruption_error([vt["cells"][k]["values"][i] for k in keys],
                                        [base["cells"][k]["values"][i] for k in keys], lower)
            assert vt["cells"][ce_key("comic", t)]["values"][i] == pytest.approx(expected)
    for i in range(2):
        assert vt["cells"][MCE_KEY]["values"][i] == pytest.approx(mean_corruption_error(
            [vt["cells"][ce_key("comic", t)]["values"][i] for t in TASKS]))
    assert base["cells"][MCE_KEY]["mean"] == 100.0


def test_only_the_source_runs_are_used_and_reused(env, doc, monkeypatch):
    ctx = context(env)
    expected = {str(run_dir(ctx.store, RunSpec("", ctx.config(g, seed=s), m)))
                for s in (0, 1) for g, m in (("S-D", "vtagml"), ("seg", "single_task"),
                                             ("depth", "single_task"))}
    assert {r["dir"] for r in doc["runs"]} == expected
    calls = []
    monkeypatch.setattr(Trainer, "fit", lambda trainer: calls.append(trainer))
    again = run_setting("robustness", ctx)
    assert not calls and again["runs"] and all(r["reused"] for r in again["runs"])
    assert again["rows"][0]["cells"] == doc["rows"][0]["cells"]


def test_a_target_of_another_source_is_refused(env):
    with pytest.raises(ValueError, match="street_shift.*shifts from 'street'.*pick targets"):
        context(env, "robustness_targets=[street_shift]")
    with pytest.raises(ValueError, match="robustness_levels"):
        context(env, "robustness_levels=[0]")
    assert level_domain("indoor_shift", SOURCE_LEVEL) == "indoor_shift@0"


def test_figure_one_line_per_method_and_panel_and_a_unique_legend(doc):
    from vtagml_core.viz.robustness import robustness_figure

    fig = robustness_figure(doc)
    labels = [r["label"] for r in doc["rows"]]
    assert len(fig.data) == len(labels) * len(TASKS)                           # one target, two tasks
    legend = [tr.name for tr in fig.data if tr.showlegend]
    assert sorted(legend) == sorted(labels) and len(set(legend)) == len(legend)
    assert list(fig.data[0].x) == [0.0, 0.6, 1.0]
    assert "64x64" in fig.layout.title.text and "2 seed(s)" in fig.layout.title.text
    assert "higher is better" in fig.layout.yaxis.title.text and "%" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="robustness"):
        robustness_figure({"setting": "novel"})


def test_tables_list_it_and_the_summary_ranks_only_with_intervals(env, doc):
    from vtagml_core.experiments.tables import collect, write_tables
    from vtagml_core.notebooks.summaries import best_row_sentence

    assert [d["setting"] for d in collect(env / "setting_results")] == ["robustness"]
    md, html = write_tables(env / "setting_results", env / "tables")
    text = md.read_text()
    assert "Robustness curves over graded shift severity: comic" in text and "not comparable" not in text
    assert "plotly" in html.read_text().lower()
    sentence = best_row_sentence(doc, MCE_KEY)
    assert sentence.startswith("mCE%↓: lowest mean") and "(n=2)" in sentence
