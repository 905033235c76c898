"""Tests of the synthetic renderer: geometry labels, edges, determinism, domains, sizes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vtagml_core.data.classes import (CLASS_ID, CLASS_TABLE, NUM_CLASSES, class_colors,
                                      class_names)
from vtagml_core.data.synthetic import raycast
from vtagml_core.data.synthetic.catalog import get_domain
from vtagml_core.data.synthetic.domains import DOMAINS, SKY_TEXTURE, TEXTURE_NAMES, list_domains
from vtagml_core.data.synthetic.edges import EDGE_NORM, GRAY_WEIGHTS, sobel_edges
from vtagml_core.data.synthetic.render import render_scene, scene_camera
from vtagml_core.data.synthetic.layouts import sample_scene

DOMAIN_NAMES = list_domains()
SIZE = (48, 64)


@pytest.fixture(scope="module")
def renders() -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Three scenes per domain at 48x64, with pretext outputs, rendered once."""
    return {(d, s): render_scene(d, s, SIZE, pretext=True) for d in DOMAIN_NAMES
            for s in range(3)}


def camera_rays(domain: str, seed: int, height: int, width: int) -> np.ndarray:
    """Camera-frame rays ``K^-1 [u + 0.5, v + 0.5, 1]`` recomputed from the intrinsics."""
    k = scene_camera(domain, seed).intrinsics(height, width)
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pix @ np.linalg.inv(k).T


# ----------------------------------------------------------------------------- tables
def test_class_table_is_consistent():
    assert NUM_CLASSES >= 8 and len(CLASS_TABLE) == NUM_CLASSES
    assert [c.id for c in CLASS_TABLE] == list(range(NUM_CLASSES))
    assert len(set(class_names())) == NUM_CLASSES
    colors = class_colors()
    assert colors.shape == (NUM_CLASSES, 3) and colors.dtype == np.uint8


def test_domains_are_named_and_described():
    assert {"indoor", "indoor_shift", "street", "comic"} <= set(DOMAIN_NAMES)
    for name in DOMAIN_NAMES:
        spec = get_domain(name)
        assert spec.name == name and spec.description.strip()
    assert DOMAINS["comic"].style.comic and not DOMAINS["indoor"].style.comic


def test_unknown_domain_error_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError, match="'kitchen'") as err:
        get_domain("kitchen")
    assert all(name in str(err.value) for name in DOMAIN_NAMES)
    with pytest.raises(ValueError, match="'kitchen'"):
        render_scene("kitchen", 0, 32)


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_output_keys_dtypes_shapes(renders, domain):
    out = renders[(domain, 0)]
    h, w = SIZE
    expected = {"image": (np.uint8, (h, w, 3)), "seg": (np.uint8, (h, w)),
                "depth": (np.float32, (h, w)), "normals": (np.float32, (h, w, 3)),
                "edges": (np.float32, (h, w)), "valid": (np.bool_, (h, w)),
                "albedo": (np.uint8, (h, w, 3)), "texture": (np.uint8, (h, w))}
    assert set(out) == set(expected)
    for key, (dtype, shape) in expected.items():
        assert out[key].dtype == dtype and out[key].shape == shape, key
    assert set(render_scene(domain, 0, 16)) == set(expected) - {"albedo", "texture"}


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_normals_are_unit_and_face_the_camera(renders, domain):
    for seed in range(3):
        out = renders[(domain, seed)]
        valid, n = out["valid"], out["normals"]
        np.testing.assert_allclose(np.linalg.norm(n[valid], axis=-1), 1.0, atol=1e-5)
        assert np.all(n[~valid] == 0)
        rays = camera_rays(domain, seed, *SIZE)
        assert np.all(np.sum(n * rays, axis=-1)[valid] < 0)


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_depth_positive_exactly_where_valid(renders, domain):
    for seed in range(3):
        out = renders[(domain, seed)]
        assert np.array_equal(out["depth"] > 0, out["valid"])
        assert np.all(np.isfinite(out["depth"]))


def test_sky_exactly_where_no_geometry(renders):
    for (domain, _), out in renders.items():
        assert np.all(out["seg"][~out["valid"]] == CLASS_ID["sky"])
        assert np.all(out["seg"][out["valid"]] != CLASS_ID["sky"])
        assert np.array_equal(out["texture"] == SKY_TEXTURE, ~out["valid"])
    assert any((~o["valid"]).any() for (d, _), o in renders.items() if d == "street")


@pytest.mark.parametrize("domain", ["indoor", "street"])
def test_depth_is_zbuffer_and_floor_lies_on_its_plane(domain):
    """Back-project floor/road pixels with ``P = depth * K^-1 [u, v, 1]``: they must land on
    the ground plane (height 0 for the road and the room floor), and their normal must be
    world up. This holds only if depth is measured along the optical axis."""
    h, w = 64, 64
    for seed in range(4):
        out = render_scene(domain, seed, (h, w))
        cam = scene_camera(domain, seed)
        rot = cam.rotation()
        ground = CLASS_ID["road"] if domain == "street" else CLASS_ID["floor"]
        mask = out["seg"] == ground
        assert mask.sum() > 20
        points_cam = out["depth"][..., None] * camera_rays(domain, seed, h, w)
        height = (points_cam @ rot.T)[..., 1] + cam.position[1]
        np.testing.assert_allclose(height[mask], 0.0, atol=1e-3)
        up_cam = rot.T @ np.array([0.0, 1.0, 0.0])
        up = np.broadcast_to(up_cam, (mask.sum(), 3))
        np.testing.assert_allclose(out["normals"][mask], up, atol=1e-4)


def test_seg_ids_inside_class_table_and_classes_are_used(renders):
    seen = set()
    for out in renders.values():
        assert out["seg"].max() < NUM_CLASSES
        seen |= set(np.unique(out["seg"]).tolist())
    for seed in range(3, 12):
        seen |= set(np.unique(render_scene("street", seed, 48)["seg"]).tolist())
    assert len(seen) >= 8


def test_texture_ids_and_albedo_before_cel_shading():
    """Comic images have no noise or fog, so image = albedo * lit with ``lit`` quantised to
    ``shade_levels`` bands (cel shading); sky pixels show the albedo (sky colour) as is."""
    levels = DOMAINS["comic"].style.shade_levels
    bands = np.arange(1, levels + 1) / levels
    for seed in range(3):
        out = render_scene("comic", seed, 48, pretext=True)
        assert out["texture"].max() < len(TEXTURE_NAMES)
        image, albedo = out["image"].astype(float), out["albedo"].astype(float)
        ink = image.max(axis=-1) == 0
        surface = out["valid"] & ~ink & (albedo.min(axis=-1) > 60)
        ratio = (image / np.maximum(albedo, 1))[surface].mean(axis=-1)
        assert surface.sum() > 100
        assert np.all(np.abs(ratio[:, None] - bands).min(axis=1) < 0.03)
        sky = ~out["valid"] & ~ink
        assert np.array_equal(image[sky], albedo[sky])


# ----------------------------------------------------------------------------- edges
def reference_sobel(image: np.ndarray) -> np.ndarray:
    """Independent Sobel: explicit loops over the kernel taps, np.pad edge replication."""
    gray = image.astype(np.float64) @ np.array(GRAY_WEIGHTS) / 255.0
    padded = np.pad(gray, 1, mode="edge")
    h, w = gray.shape
    kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    ky = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
    gx = np.zeros((h, w))
    gy = np.zeros((h, w))
    for i in range(3):
        for j in range(3):
            gx += kx[i][j] * padded[i:i + h, j:j + w]
            gy += ky[i][j] * padded[i:i + h, j:j + w]
    return np.clip(np.sqrt(gx ** 2 + gy ** 2) / EDGE_NORM, 0.0, 1.0)


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_edges_equal_independent_sobel_of_stored_image(renders, domain):
    out = renders[(domain, 1)]
    np.testing.assert_allclose(out["edges"], reference_sobel(out["image"]), atol=1e-5)


def test_sobel_known_answer_on_a_step():
    """A vertical step of luma contrast c gives 4c / EDGE_NORM on the two columns beside it."""
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, 4:] = 20  # gray step c = 20/255 (weights sum to 1)
    edges = sobel_edges(image)
    c = 20 / 255
    np.testing.assert_allclose(edges[:, 3:5], min(4 * c / EDGE_NORM, 1.0), rtol=1e-5)
    assert np.all(edges[:, :3] == 0) and np.all(edges[:, 5:] == 0)
    with pytest.raises(ValueError, match="uint8"):
        sobel_edges(image.astype(np.float32))


def test_sobel_equals_the_documented_kernel_correlation():
    """The separable implementation is the 3x3 correlation with SOBEL_X / SOBEL_Y."""
    from vtagml_core.data.synthetic.edges import SOBEL_X, SOBEL_Y, grayscale

    image = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    g = np.pad(grayscale(image).astype(np.float64), 1, mode="edge")
    gx = sum(SOBEL_X[i, j] * g[i:i + 9, j:j + 11] for i in range(3) for j in range(3))
    gy = sum(SOBEL_Y[i, j] * g[i:i + 9, j:j + 11] for i in range(3) for j in range(3))
    want = np.clip(np.hypot(gx, gy) / EDGE_NORM, 0, 1)
    np.testing.assert_allclose(sobel_edges(image), want, atol=1e-6)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_different_seed_differs():
    a = render_scene("indoor_shift", 7, 40, pretext=True)
    b = render_scene("indoor_shift", 7, 40, pretext=True)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    c = render_scene("indoor_shift", 8, 40)
    assert a["image"].tobytes() != c["image"].tobytes()
    assert a["depth"].tobytes() != c["depth"].tobytes()


def test_screen_culling_loses_no_hits(monkeypatch):
    """Casting with per-primitive screen rectangles equals casting every ray at everything."""
    for domain, seed in [("indoor_shift", 2), ("street", 5)]:
        scene = sample_scene(domain, seed)
        culled = raycast.cast_rays(scene, 40, 56)
        monkeypatch.setattr(raycast, "screen_rect", lambda prim, *a: (0, a[-2], 0, a[-1]))
        brute = raycast.cast_rays(scene, 40, 56)
        monkeypatch.undo()
        assert np.array_equal(culled.primitive, brute.primitive)
        np.testing.assert_array_equal(culled.depth, brute.depth)


def test_camera_geometry():
    cam = scene_camera("street", 3)
    rot = cam.rotation()
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    k = cam.intrinsics(30, 50)
    assert k[0, 0] == pytest.approx(25 / np.tan(np.radians(cam.fov_deg) / 2))
    centre = cam.ray_directions(30, 50)[15, 25]  # pixel centre (25.5, 15.5)
    np.testing.assert_allclose(centre, [0.5 / k[0, 0], 0.5 / k[1, 1], 1.0], rtol=1e-6)


# ----------------------------------------------------------------------------- domains differ
def test_domains_look_different():
    stats = {}
    for domain in DOMAIN_NAMES:
        images = [render_scene(domain, s, 32)["image"].astype(float) for s in range(4)]
        stats[domain] = np.concatenate([np.mean(images, axis=(0, 1, 2)),
                                        np.std(images, axis=(0, 1, 2))])
    for i, a in enumerate(DOMAIN_NAMES):
        for b in DOMAIN_NAMES[i + 1:]:
            assert np.abs(stats[a] - stats[b]).max() > 8, (a, b)


def test_comic_has_ink_and_few_colours():
    def distinct(img):
        return len(np.unique(img.reshape(-1, 3), axis=0))
    for seed in range(3):
        comic = render_scene("comic", seed, 64)["image"]
        shaded = render_scene("indoor", seed, 64)["image"]
        assert np.mean(comic.max(axis=-1) <= 20) > 0.03  # ink outlines
        assert distinct(comic) < 120 and distinct(comic) * 5 < distinct(shaded)


# ----------------------------------------------------------------------------- sizes
def test_any_resolution_and_consistent_depth_across_resolutions():
    out = render_scene("indoor", 4, (48, 80))
    assert out["image"].shape == (48, 80, 3)
    small = render_scene("indoor", 4, 32)
    big = render_scene("indoor", 4, 64)
    # 2x2 blocks of the 64 px image share their centre with one 32 px pixel
    block_depth = big["depth"].reshape(32, 2, 32, 2).mean(axis=(1, 3))
    seg = big["seg"].reshape(32, 2, 32, 2)
    same = (seg == seg[:, :1, :, :1]).all(axis=(1, 3)) & (seg[:, 0, :, 0] == small["seg"])
    assert same.mean() > 0.8
    rel = np.abs(block_depth - small["depth"])[same] / small["depth"][same]
    assert np.median(rel) < 1e-3 and np.mean(rel < 0.02) > 0.98


@pytest.mark.parametrize("bad", [0, -5, 3.5, (32,), (32, 0), "64", True, None])
def test_bad_size_raises_naming_value(bad):
    with pytest.raises(ValueError, match="size") as err:
        render_scene("indoor", 0, bad)
    assert repr(bad) in str(err.value)


def test_bad_seed_raises():
    with pytest.raises(ValueError, match="-1"):
        render_scene("indoor", -1, 16)


def test_camera_roll_turns_the_view_about_the_optical_axis():
    """Roll r rotates (right, down) about forward: R_r = R_0 @ [[c, -s, 0], [s, c, 0], [0, 0, 1]];
    the centre ray (forward) hits the same point, and the horizon rises to the right for r > 0."""
    scene = sample_scene("indoor", 3)
    level = dataclasses.replace(scene.camera, roll_deg=0.0)
    rolled = dataclasses.replace(level, roll_deg=30.0)
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(rolled.rotation(), level.rotation() @ turn, atol=1e-12)
    np.testing.assert_allclose(rolled.rotation().T @ rolled.rotation(), np.eye(3), atol=1e-12)
    horizontal = level.rotation()[:, 0]  # the level camera's right: a world-horizontal direction
    np.testing.assert_allclose(rolled.rotation().T @ horizontal, [c, -s, 0.0], atol=1e-12)  # image y up
    a = raycast.cast_rays(dataclasses.replace(scene, camera=level), 41, 41)
    b = raycast.cast_rays(dataclasses.replace(scene, camera=rolled), 41, 41)
    assert b.depth[20, 20] == pytest.approx(a.depth[20, 20], rel=1e-5)
    np.testing.assert_allclose(b.normal[20, 20], a.normal[20, 20], atol=1e-6)


def test_shifted_indoor_camera_rolls_and_the_source_does_not():
    rolls = [scene_camera("indoor_shift", seed).roll_deg for seed in range(20)]
    assert max(abs(r) for r in rolls) > 5.0 and all(abs(r) <= 25.0 for r in rolls)
    assert all(scene_camera("indoor", seed).roll_deg == 0.0 for seed in range(5))
    assert all(scene_camera("indoor_shift@0", seed).roll_deg == 0.0 for seed in range(5))
