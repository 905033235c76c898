"""Checks of the benchmark itself (issue 15): colour-only classifier, headroom r, palette overlap.

The settings part runs in smoke size (64 px, 8 train scenes, one epoch, a random frozen
backbone; the TINY overrides of tests/test_settings.py): the numbers are meaningless, what is
checked is the shape of the results (one r per setting x task x seed) and the printed table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vtagml_core.cli import main
from vtagml_core.data.synthetic import domains, layouts
from vtagml_core.data.synthetic.render import render_scene
from vtagml_core.data.synthetic.scene import Camera
from vtagml_core.data.synthetic.specs import shared_palette
from vtagml_core.experiments.benchmark_checks import (colour_only_miou, fit_colour_classifier,
                                                      served_domain)
from vtagml_core.experiments.benchmark_checks_headroom import (NO_HEADROOM, REMOTE_CASE, headroom,
                                                               headroom_targets, normalised_score)
from vtagml_core.experiments.settings import build_context
from vtagml_core.tasks import parse_tasks

from test_settings import TINY

SETTINGS = ["task_sets=[S-D]", "zero_shot_task_sets=[S-D]", "methods=[vtagml]", "uda_tasks=S-D",
            "novel_tasks=S-D", "novel_domains=[indoor_shift,comic]", "pretrained_backbone=false"]
SEEDS = "0,1"
#: SHA-256 of every array of render_scene("indoor", 3, 32) and render_scene("street", 11, 32),
#: keys sorted, computed with the renderer before AppearanceSpec.palette_overlap existed.
RENDERS_BEFORE_OVERLAP = "1b37194a2073d576f4993f6241fd2d4146a069e31f82fd95951dc251a04e9c2d"
#: ``indoor``'s lighting up to generator v3 (v4 widened both ranges): restored with overlap 0,
#: the renderer gives generator v2's bytes again.
V3_INDOOR_LIGHTING = {"ambient": (0.35, 0.55), "elevation_deg": (50.0, 80.0)}


# ----------------------------------------------------------------------------- colour-only
def _toy(colours: list[tuple[int, int, int]], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One 1 x n image with the given pixel colours and labels."""
    return (np.array([[colours]], dtype=np.uint8), np.array([[labels]], dtype=np.uint8))


def test_colour_only_is_perfect_when_colour_is_the_class():
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 240)]
    data = _toy(colours * 3, [0, 1, 2, 3] * 3)
    result = colour_only_miou(data, data, num_classes=4)
    assert result["mIoU"] == pytest.approx(1.0)
    assert result["pixel_acc"] == pytest.approx(1.0)


def test_colour_only_when_two_classes_share_a_colour():
    a, b = (120, 60, 20), (20, 60, 120)
    # colour a: 3 pixels of class 0 and 1 of class 1 -> predicted 0; colour b: class 2 only
    data = _toy([a, a, a, a, b, b, b, b], [0, 0, 0, 1, 2, 2, 2, 2])
    result = colour_only_miou(data, data, num_classes=3)
    # IoU_0 = 3 / (3 + 1), IoU_1 = 0 (labelled, never predicted), IoU_2 = 1
    assert result["mIoU"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert result["pixel_acc"] == pytest.approx(7 / 8)


def test_unseen_colours_take_the_majority_class():
    images, seg = _toy([(10, 10, 10)] * 3 + [(250, 250, 250)], [1, 1, 1, 0])
    clf = fit_colour_classifier(images, seg, num_classes=2)
    assert clf.predict(np.array([[128, 0, 128]], np.uint8)).tolist() == [1]


def test_spec_with_changes_one_field_and_names_bad_ones():
    from vtagml_core.experiments.benchmark_checks import palette_overlap_sweep, spec_with

    base = domains.plain_domain("indoor")
    wide = spec_with(base, "lighting.elevation_deg", "5,85")
    assert wide.lighting.elevation_deg == (5.0, 85.0)
    assert dataclasses.replace(wide, lighting=base.lighting) == base   # nothing else changed
    assert spec_with(base, "appearance.palette_overlap", "1").appearance.palette_overlap == 1.0
    with pytest.raises(ValueError, match="no spec field 'nope' in LightingSpec"):
        spec_with(base, "lighting.nope", "1")
    with pytest.raises(ValueError, match="give a value of that shape"):
        spec_with(base, "lighting.ambient", "0.5")
    # light from a narrow band of elevations (v3's indoor): shading tells a plane's orientation,
    # and colour-only does better than under v4's light from any elevation
    [varied] = palette_overlap_sweep([0.5], train_count=64, val_count=32, size=64)
    [narrow] = palette_overlap_sweep([0.5], train_count=64, val_count=32, size=64,
                                     changes=[("lighting.elevation_deg", "50,80"),
                                              ("lighting.ambient", "0.35,0.55")])
    assert varied["mIoU"] < narrow["mIoU"]


# ----------------------------------------------------------------------------- r
def test_normalised_score_both_directions_and_no_headroom():
    assert normalised_score(0.4, 0.6, 0.2, lower_is_better=False) == pytest.approx(0.5)
    assert normalised_score(0.2, 0.6, 0.2, lower_is_better=False) == pytest.approx(0.0)
    assert normalised_score(2.0, 1.0, 3.0, lower_is_better=True) == pytest.approx(0.5)
    assert normalised_score(2.5, 1.0, 3.0, lower_is_better=True) == pytest.approx(0.25)
    assert normalised_score(0.4, 0.3, 0.3, lower_is_better=False) is None      # oracle == trivial
    assert normalised_score(2.0, 3.0, 3.0, lower_is_better=True) is None
    assert normalised_score(0.4, 0.2, 0.3, lower_is_better=False) is None      # oracle worse


# ----------------------------------------------------------------------------- settings
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTAGML_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("checks")


@pytest.fixture(scope="module")
def headroom_doc(env):
    ctx = build_context("quick", overrides=TINY, root=env, store=env, seeds=SEEDS,
                        settings_overrides=SETTINGS, log=lambda _: None)
    return ctx, headroom(ctx)


def test_headroom_has_one_r_per_setting_task_and_seed(headroom_doc):
    ctx, doc = headroom_doc
    targets = headroom_targets(ctx.settings)
    assert [t["setting"] for t in targets] == ["zeroshot", "uda", "novel", "novel"]
    assert [t["remote"] for t in targets] == [False, False, False, True]  # comic: remote case
    assert len(doc["rows"]) == sum(len(parse_tasks(t["task_set"])) for t in targets) == 8
    for row in doc["rows"]:
        assert len(row["r"]["values"]) == 2
        assert row["source_only"]["n"] == row["oracle"]["n"] == 2
        for r, src, orc in zip(row["r"]["values"], row["source_only"]["values"], row["oracle"]["values"]):
            expected = normalised_score(src, orc, row["trivial"], row["lower_is_better"])
            assert (r is None and expected is None) or r == pytest.approx(expected)
        if row["r"]["mean"] is not None:
            assert math.isfinite(row["r"]["mean"]) and isinstance(row["r"]["in_band"], bool)


def test_transfer_settings_can_name_their_own_source_pair(env):
    """The street family's own pair for zero-shot and UDA (issue 15, item 1): the source models,
    the trivial predictors and the headroom rows of those settings use ``street``; the novel
    table keeps ``indoor``."""
    from vtagml_core.experiments.settings.zero_shot import run_zero_shot

    pair = ["zero_shot_source=street", "zero_shot_target=street_shift@0.4", "uda_source=street",
            "uda_target=street_shift@0.4"]
    ctx = build_context("quick", overrides=TINY, root=env, store=env, seeds="0",
                        settings_overrides=SETTINGS + pair, log=lambda _: None)
    s = ctx.settings
    assert (s.source_for("zeroshot"), s.source_for("uda"), s.source_for("novel")) == (
        "street", "street", "indoor")
    rows = headroom_targets(s)
    assert [(t["setting"], t["source"]) for t in rows] == [
        ("zeroshot", "street"), ("uda", "street"), ("novel", "indoor"), ("novel", "indoor")]
    doc = run_zero_shot(ctx)
    assert doc["source_domain"] == "street" and "synthetic/street (all labels)" in doc["notes"][0]
    trained_on = {json.loads((Path(r["dir"]) / "config.json").read_text())["config"]["data"]["domain"]
                  for r in doc["runs"]}
    assert trained_on == {"street", s.zero_shot_target}   # source on street, fine-tune and oracle on the target
    with pytest.raises(ValueError, match="settings config"):
        build_context("quick", overrides=TINY, root=env, store=env, seeds="0",
                      settings_overrides=SETTINGS + ["zero_shot_source=no_such_domain"], log=lambda _: None)


def test_headroom_command_prints_the_table(headroom_doc, env, capsys):
    sets = [a for o in TINY for a in ("--set", o)] + [a for o in SETTINGS for a in ("--settings-set", o)]
    assert main(["benchmark", "headroom", "--preset", "quick", "--seeds", SEEDS, "--runs", str(env),
                 "--store", str(env), *sets]) == 0
    out = capsys.readouterr().out
    assert "| setting | source | target | tasks | task (metric) |" in out and "r in [0.3, 0.8]" in out
    assert out.count("| zeroshot | indoor |") == 2 and out.count("| novel | indoor |") == 4
    assert all(REMOTE_CASE in line for line in out.splitlines() if "| novel | indoor | comic |" in line)
    assert not any(REMOTE_CASE in line for line in out.splitlines()
                   if "| novel | indoor | indoor_shift |" in line)
    assert all(("±" in line) or NO_HEADROOM in line for line in out.splitlines()
               if line.startswith("| uda |"))
    doc = json.loads((env / "setting_results" / "headroom.json").read_text())
    assert len(doc["rows"]) == 8 and doc["runs"] and all(r["reused"] for r in doc["runs"])


def test_colour_check_command(headroom_doc, env, capsys):
    sets = [a for o in TINY for a in ("--set", o)] + [a for o in SETTINGS for a in ("--settings-set", o)]
    assert main(["benchmark", "colour-check", "--preset", "quick", "--seeds", "0", "--runs", str(env),
                 "--store", str(env), *sets]) == 0
    out = capsys.readouterr().out
    assert "colour-only (RGB histogram Bayes" in out and "synthetic/indoor val (4 scenes), 64x64" in out
    assert "ratio colour-only / VTAGML = " in out
    doc = json.loads((env / "setting_results" / "colour_check.json").read_text())
    assert 0.0 <= doc["colour_only"]["mIoU"] <= 1.0 and doc["passes"] == (doc["ratio"] <= 0.5)


# ----------------------------------------------------------------------------- palette overlap
def _render_digest() -> str:
    h = hashlib.sha256()
    for domain, seed in (("indoor", 3), ("street", 11)):
        out = render_scene(domain, seed, 32)
        for key in sorted(out):
            h.update(np.ascontiguousarray(out[key]).tobytes())
    return h.hexdigest()


def _without_overlap(name: str, **lighting):
    """Serve domain ``name`` with its palette overlap set to 0 (and ``lighting`` fields changed)."""
    spec = domains.DOMAINS[name]
    return served_domain(dataclasses.replace(
        spec, appearance=dataclasses.replace(spec.appearance, palette_overlap=0.0),
        lighting=dataclasses.replace(spec.lighting, **lighting)))


def test_every_named_domain_overlaps_its_palettes():
    assert all(spec.appearance.palette_overlap == domains.PALETTE_OVERLAP
               for spec in domains.DOMAINS.values())
    assert 0.0 < domains.PALETTE_OVERLAP < 1.0


def _camera_without_roll(spec, rng, x: float, z: float) -> Camera:
    """The camera draw before generator v6 added the roll (which draws one number more)."""
    cam = spec.camera
    return Camera(position=(x, float(rng.uniform(*cam.height)), z),
                  yaw_deg=float(rng.uniform(*cam.yaw_deg)),
                  pitch_deg=float(rng.uniform(*cam.pitch_deg)),
                  fov_deg=float(rng.uniform(*cam.fov_deg)))


def test_overlap_zero_renders_byte_identical_to_the_renderer_before_overlap(monkeypatch):
    """At overlap 0 no random number is drawn for it: with v3's indoor lighting and the camera
    drawn without v6's roll the scenes are those of generator v2."""
    default = _render_digest()
    monkeypatch.setattr(layouts, "_sample_camera", _camera_without_roll)
    with _without_overlap("indoor", **V3_INDOOR_LIGHTING), _without_overlap("street"):
        assert _render_digest() == RENDERS_BEFORE_OVERLAP
    assert _render_digest() != RENDERS_BEFORE_OVERLAP  # the default overlap changes the colours
    assert default != RENDERS_BEFORE_OVERLAP


def test_palette_overlap_draws_from_the_shared_pool():
    base = domains.DOMAINS["indoor"]
    palette = base.appearance.palette
    pool = set(shared_palette(palette))
    assert pool == {c for colours in palette.values() for c in colours}
    app = dataclasses.replace(base.appearance, palette_overlap=1.0, color_jitter=0.0)
    with served_domain(dataclasses.replace(base, appearance=app)):
        from vtagml_core.data.synthetic.layouts import sample_scene

        materials = [m for s in range(8) for m in sample_scene("indoor", s).materials]
    assert domains.DOMAINS["indoor"] is base  # restored
    ceiling = [tuple(round(c * 255) for c in m.color) for m in materials if m.class_id == 3]
    assert all(c in pool for c in ceiling)
    assert any(c not in palette["ceiling"] for c in ceiling)  # other classes' colours on ceilings


def test_the_pretext_mix_covers_every_severity_of_both_families_and_never_the_comic():
    from vtagml_core.data.cache import scene_seeds
    from vtagml_core.data.synthetic.layouts import sample_scene
    from vtagml_core.data.synthetic.shift import parse_domain_name

    drawn = [sample_scene("mixed", s).domain for s in scene_seeds("mixed", "pretext", 200)]
    parsed = [parse_domain_name(d) for d in drawn]
    assert {t for t, _ in parsed} == set(domains.MIXED_TARGETS) == {"indoor_shift", "street_shift"}
    for target in domains.MIXED_TARGETS:
        levels = sorted(sev.appearance for t, sev in parsed if t == target)
        # uniform on [0, 1]: every fifth of the range (each severity level's neighbourhood) is drawn
        assert all(any(k / 5 <= s < (k + 1) / 5 for s in levels) for k in range(5)), target
        assert all(sev.appearance == sev.lighting == sev.camera == sev.layout
                   for t, sev in parsed if t == target)
    assert not any(d.startswith("comic") for d in drawn)


def test_headroom_markdown_flags_the_band():
    from vtagml_core.experiments.benchmark_checks_headroom import _r_summary, headroom_markdown
    from vtagml_core.experiments.seeds import summarize

    where = {"split": "test (4 scenes)", "resolution": "64x64", "backbone": "b"}
    rows = [{"setting": "uda", "target": "indoor_shift", "task_set": "S-D", "zero_shot": None,
             "task": "depth", "metric": "rmse", "lower_is_better": True, "trivial": 3.0,
             "source_only": summarize([2.0, 2.0]), "oracle": summarize([1.0, 1.0]),
             "r": _r_summary([0.5, 0.5]), "where": where},
            {"setting": "uda", "target": "indoor_shift", "task_set": "S-D", "zero_shot": None,
             "task": "seg", "metric": "mIoU", "lower_is_better": False, "trivial": 0.3,
             "source_only": summarize([0.2, 0.1]), "oracle": summarize([0.3, 0.3]),
             "r": _r_summary([None, None]), "where": where}]
    doc = {"title": "t", "band": [0.3, 0.8], "method": "vtagml", "source_domain": "indoor",
           "seeds": [0, 1], "trivial_fitted_on": "synthetic/indoor train (8 scenes)", "rows": rows}
    text = headroom_markdown(doc)
    assert "| 0.500 ± 0.000 (n=2) | 0.500, 0.500 | yes, interval inside |" in text
    assert f"| {NO_HEADROOM} | -, - | - |" in text
