"""The method comparison (issue 7, item 5): one table with every method, delta_m against the
same single-task models, parameters and seconds per epoch, runs reused by key; the ``compare``
command. Tiny: 64 px, S-D, 8 training scenes, one epoch."""
from __future__ import annotations

import json

import pytest

from vtagml_core.cli import main
from vtagml_core.experiments.compare import compare_markdown, learns_own_weights, run_compare, write_compare
from vtagml_core.experiments.settings import build_context

TINY = ["data.size=64", "model.backbone.img_size=64", "model.decoder.embed_dims=[32,16,16,8]",
        "model.decoder.depth_per_stage=1", "data.train_count=8", "data.val_count=4",
        "data.test_count=4", "data.batch_size=4", "train.epochs=1", "train.warmup_steps=1",
        "train.save_every_steps=0", "train.progress=false", "train.device=cpu"]
SETTINGS = ["pretrained_backbone=false"]
METHODS = ["vtagml", "vanilla_mtl", "mtformer"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTAGML_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("runs")


def context(root):
    return build_context("quick", overrides=TINY, root=root, store=root, settings_overrides=SETTINGS,
                         methods=METHODS, log=lambda _: None)


@pytest.fixture(scope="module")
def doc(env):
    ctx = context(env)
    out = run_compare(ctx, "S-D", METHODS)
    write_compare(ctx, out)
    return out


def test_one_table_with_every_method_and_the_reference(doc):
    methods = [r["method"] for r in doc["rows"]]
    assert methods == [*METHODS, "single_task"]
    keys = {c["key"] for c in doc["columns"]}
    assert keys == {"S-D/seg", "S-D/depth", "S-D/delta_m", "params/total", "params/trainable",
                    "seconds_per_epoch"}
    for r in doc["rows"]:
        assert set(r["cells"]) == keys, f"{r['method']} misses cells"
        assert r["cells"]["params/trainable"]["mean"] <= r["cells"]["params/total"]["mean"]
        assert r["cells"]["seconds_per_epoch"]["mean"] > 0
    ref = doc["rows"][-1]["cells"]
    assert ref["S-D/delta_m"]["mean"] == 0.0


def test_delta_m_is_against_the_same_single_task_models(doc):
    from vtagml_core.metrics.delta_m import delta_m

    ref = doc["rows"][-1]["cells"]
    stl = {"seg": {"mIoU": ref["S-D/seg"]["mean"]}, "depth": {"rmse": ref["S-D/depth"]["mean"]}}
    for r in doc["rows"][:-1]:
        mine = {"seg": {"mIoU": r["cells"]["S-D/seg"]["mean"]},
                "depth": {"rmse": r["cells"]["S-D/depth"]["mean"]}}
        assert abs(delta_m(mine, stl) - r["cells"]["S-D/delta_m"]["mean"]) < 1e-6


def test_parameters_tell_frozen_from_trained(doc):
    cells = {r["method"]: r["cells"] for r in doc["rows"]}
    vt = cells["vtagml"]
    assert vt["params/trainable"]["mean"] < vt["params/total"]["mean"]  # frozen backbone
    ref = cells["single_task"]  # two single-task models: two backbones counted
    assert ref["params/total"]["mean"] > vt["params/total"]["mean"]


def test_balancer_reruns_the_multitask_methods_and_reuses_the_rest(env, doc):
    assert not learns_own_weights("vtagml") and learns_own_weights("mtformer")
    ctx = context(env)
    out = run_compare(ctx, "S-D", METHODS, balancer="pcgrad")
    assert out["setting"] == "compare-pcgrad"
    reused = {r["role"].split()[0]: r["reused"] for r in out["runs"]}
    assert reused["single-task"] and reused["mtformer"]  # same keys as the equal comparison
    assert not reused["vtagml"] and not reused["vanilla_mtl"]  # the balancer is in the key
    assert out["timings"]["mtformer"]["balancer"] == "equal"
    assert any("mtformer learns its own loss weights" in n for n in out["notes"])
    assert "| Method |" in compare_markdown(out)


def test_compare_command_reuses_every_run_and_writes_both_files(env, doc, capsys):
    args = ["compare", "--preset", "quick", "--tasks", "S-D", "--methods", ",".join(METHODS),
            "--seeds", "0", "--runs", str(env), "--store", str(env), "--settings-set", "pretrained_backbone=false"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "vtagml: training reused" in printed and "total wall time" in printed
    saved = json.loads((env / "setting_results" / "compare.json").read_text())
    assert all(r["reused"] for r in saved["runs"])
    assert (env / "setting_results" / "compare.md").read_text().startswith("### Method comparison (S-D)")


def test_unknown_method_is_refused_with_the_list(env):
    with pytest.raises(ValueError, match="unknown method.*methods:"):
        run_compare(context(env), "S-D", ["vtagml", "nope"])
