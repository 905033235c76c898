"""Graded domain shift (vtagml_core/data/synthetic/shift.py): endpoints, validity, labels,
names, the cache and the command line."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vtagml_core.commands.data import domain_name
from vtagml_core.data.cache import ensure_split, load_split, scene_seeds
from vtagml_core.data.classes import NUM_CLASSES
from vtagml_core.data.synthetic.catalog import check_domain_name, get_domain
from vtagml_core.data.synthetic.domains import DOMAINS, SHIFT_SOURCES, _validate, list_domains
from vtagml_core.data.synthetic.render import render_scene
from vtagml_core.data.synthetic.shift import (FACTORS, SEVERITY_LEVELS, Severity, factor_of,
                                              interpolate_domain, shifted_name)

SIZE = (32, 40)
SEEDS = (0, 1, 2)
TARGETS = list(SHIFT_SOURCES)


def same_render(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


# ----------------------------------------------------------------------------- endpoints
@pytest.mark.parametrize("target", TARGETS)
def test_severity_zero_is_the_source_byte_for_byte(target):
    source = SHIFT_SOURCES[target]
    assert get_domain(f"{target}@0") is get_domain(source)
    assert get_domain(f"{target}@appearance=0,layout=0") is get_domain(source)
    for seed in SEEDS:
        assert same_render(render_scene(f"{target}@0", seed, SIZE, pretext=True),
                           render_scene(source, seed, SIZE, pretext=True))


@pytest.mark.parametrize("target", TARGETS)
def test_severity_one_is_the_target_byte_for_byte(target):
    src, tgt = get_domain(SHIFT_SOURCES[target]), get_domain(target)
    assert get_domain(f"{target}@1") == tgt
    assert interpolate_domain(src, tgt, Severity.uniform(1.0)) == tgt
    assert interpolate_domain(src, tgt, Severity.from_level(5)) == tgt
    for seed in SEEDS[:2]:
        assert same_render(render_scene(f"{target}@1", seed, SIZE),
                           render_scene(target, seed, SIZE))


def test_one_factor_at_a_time_moves_only_its_fields():
    src, tgt = DOMAINS["indoor"], DOMAINS["indoor_shift"]
    app = interpolate_domain(src, tgt, Severity(appearance=1.0))
    assert app.appearance == tgt.appearance and app.room == src.room
    assert app.lighting == dataclasses.replace(src.lighting,
                                               noise_sigma=tgt.lighting.noise_sigma)
    cam = interpolate_domain(src, tgt, Severity(camera=1.0))
    assert cam.room == dataclasses.replace(src.room, camera=tgt.room.camera)
    assert cam.appearance == src.appearance and cam.lighting == src.lighting
    lay = interpolate_domain(src, tgt, Severity(layout=1.0))
    assert lay.room == dataclasses.replace(tgt.room, camera=src.room.camera)


def test_interpolation_rules_at_half():
    spec = get_domain("indoor_shift@0.5")
    assert spec.room.camera.height == pytest.approx((1.5, 2.05))  # (1.2, 1.7) -> (1.8, 2.4)
    assert spec.room.n_boxes == (3, 7)  # (2, 5) -> (4, 8): 6.5 rounds half up
    assert spec.lighting.light_color == (236, 239, 236)  # (255, 242, 217) -> (217, 235, 255)
    assert len(spec.appearance.palette["floor"]) == 12  # lcm(4, 3) candidates
    comic = get_domain("comic@0.5")
    assert comic.layout_weights == {"room": 0.75, "street": 0.25}
    assert comic.style.comic and not get_domain("comic@0.499").style.comic


# ----------------------------------------------------------------------------- validity
def _leaf_paths(spec, prefix: str = ""):
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_paths(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_every_spec_field_has_a_factor():
    paths = set(_leaf_paths(DOMAINS["comic"])) - {"name", "description"}
    assert {factor_of(p) for p in paths} == set(FACTORS)


@pytest.mark.parametrize("target", TARGETS)
def test_interpolated_specs_are_valid_on_a_grid_and_at_random(target):
    src, tgt = get_domain(SHIFT_SOURCES[target]), get_domain(target)
    for s in np.linspace(0.0, 1.0, 21):
        _validate(interpolate_domain(src, tgt, float(s)))
    rng = np.random.default_rng(0)
    for _ in range(30):
        _validate(interpolate_domain(src, tgt, Severity(*rng.random(len(FACTORS)))))


@pytest.mark.parametrize("name", ["indoor_shift@0.5", "comic@0.6", "street_shift@0.4",
                                  "indoor_shift@appearance=0.3,layout=0.7",
                                  "comic@layout=1,lighting=0.2"])
def test_labels_stay_exact_at_intermediate_severities(name):
    for seed in SEEDS:
        out = render_scene(name, seed, SIZE)
        valid, normals, depth = out["valid"], out["normals"], out["depth"]
        np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-5)
        assert np.all(normals[~valid] == 0) and np.all(depth[~valid] == 0)
        assert np.all(depth[valid] > 0) and np.all(np.isfinite(depth))
        assert out["seg"].max() < NUM_CLASSES
        assert out["edges"].min() >= 0 and out["edges"].max() <= 1


def test_existing_domains_are_untouched():
    assert list_domains()[:4] == ["indoor", "indoor_shift", "street", "comic"]
    assert "street_shift" in list_domains() and SHIFT_SOURCES["street_shift"] == "street"
    for name in DOMAINS:
        _validate(DOMAINS[name])


# ----------------------------------------------------------------------------- names
def test_severity_levels_table():
    assert SEVERITY_LEVELS == {1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 1.0}
    assert shifted_name("indoor_shift", Severity.from_level(2)) == "indoor_shift@0.4"


@pytest.mark.parametrize("name, canonical", [
    ("indoor_shift@0.40", "indoor_shift@0.4"),
    ("indoor_shift@1.0", "indoor_shift@1"),
    ("indoor_shift@camera=1,appearance=0.400", "indoor_shift@appearance=0.4,camera=1"),
    ("comic@appearance=0.2,lighting=0.2,camera=0.2,layout=0.2", "comic@0.2"),
    ("street_shift@layout=0", "street_shift@0"),
    ("indoor", "indoor"),
])
def test_names_have_one_canonical_spelling(name, canonical):
    assert check_domain_name(name) == canonical


@pytest.mark.parametrize("name, message", [
    ("indoor_shift@1.5", r"in \[0, 1\]"),
    ("indoor_shift@-0.1", r"in \[0, 1\]"),
    ("indoor_shift@0.1234", "at most 3 decimals"),
    ("indoor_shift@", "not a shifted domain name"),
    ("indoor_shift@0.1@0.2", "not a shifted domain name"),
    ("indoor_shift@colour=0.5", "unknown shift factor 'colour'"),
    ("indoor_shift@camera=0.5,camera=1", "given twice"),
    ("indoor@0.5", "has no shift source"),
    ("kitchen@0.5", "is not a domain"),
])
def test_bad_severity_names_say_the_syntax(name, message):
    with pytest.raises(ValueError, match=message) as err:
        get_domain(name)
    assert "@" in str(err.value)


@pytest.mark.parametrize("kwargs", [{"appearance": 1.5}, {"camera": -0.1},
                                    {"layout": float("nan")}, {"lighting": True}])
def test_bad_severity_values(kwargs):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Severity(**kwargs)
    with pytest.raises(ValueError, match="level must be one of 1, 2, 3, 4, 5"):
        Severity.from_level(0)
    with pytest.raises(ValueError, match="more than 3 decimals"):
        shifted_name("indoor_shift", 0.12345)


# ----------------------------------------------------------------------------- cache, CLI
def test_cache_keeps_severities_apart(tmp_path):
    kw = dict(split="val", count=3, size=24, root=tmp_path, workers=1, progress=False)
    paths = {s: ensure_split(f"indoor_shift@{s}", **kw) for s in ("0", "0.4", "1")}
    assert len(set(paths.values())) == 3 and paths["0.4"].parent.name == "indoor_shift@0.4"
    assert ensure_split("indoor_shift@0.40", **kw) == paths["0.4"]
    manifest = json.loads((paths["0.4"] / "manifest.json").read_text())
    assert manifest["domain"] == "indoor_shift@0.4"
    assert manifest["shift"] == {"target": "indoor_shift", "source": "indoor",
                                 "severity": Severity.uniform(0.4).as_dict()}
    images = {s: np.asarray(load_split(p).arrays["image"]) for s, p in paths.items()}
    assert not np.array_equal(images["0"], images["0.4"])
    # every severity renders the target's scene seeds: @1 is the target's split, @0 those
    # scenes in the source's look
    seeds = scene_seeds("indoor_shift", "val", 3)
    assert manifest["scene_seeds"] == seeds
    plain = load_split(ensure_split("indoor_shift", **kw)).arrays
    for kind, arr in load_split(paths["1"]).arrays.items():
        assert np.array_equal(arr, plain[kind]), kind
    assert np.array_equal(images["0"][0], render_scene("indoor", seeds[0], 24)["image"])


def test_cli_domain_name():
    assert domain_name("indoor_shift", severity="0.4") == "indoor_shift@0.4"
    assert domain_name("indoor_shift", level=2) == "indoor_shift@0.4"
    assert domain_name("comic@appearance=1") == "comic@appearance=1"
    assert domain_name("street") == "street"
    with pytest.raises(ValueError, match="already names a severity"):
        domain_name("indoor_shift@0.2", severity="0.4")
    with pytest.raises(ValueError, match="level must be one of"):
        domain_name("indoor_shift", level=6)
    with pytest.raises(ValueError, match="no shift source"):
        domain_name("street", severity="0.5")
