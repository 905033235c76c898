"""Render one synthetic scene to an image and exact labels for the four tasks (paper Sec. 4).

:func:`render_scene` is the whole pipeline: sample the scene from ``(domain, seed)``
(:mod:`.scene`, :mod:`.layouts`), cast one ray per pixel (:mod:`.raycast`), shade it
(:mod:`.appearance`), and derive the labels:

* ``seg``: the class id of the hit material, ``sky`` (0) where nothing was hit;
* ``depth``: z-buffer depth (distance along the optical axis, not along the ray), 0 where
  nothing was hit;
* ``normals``: unit surface normal in the camera frame (OpenCV: x right, y down, z forward),
  flipped to face the camera (``n . ray < 0``), 0 where nothing was hit;
* ``edges``: Sobel edges of the stored uint8 image (:mod:`.edges`);
* ``valid``: True where a ray hit geometry.

The scene depends on the seed only, so one seed renders the same scene at any resolution;
the sensor noise is drawn from a separate stream of the same seed.
"""
from __future__ import annotations

import numbers

import numpy as np

from .appearance import shade_image, surface_albedo
from .catalog import check_domain_name
from .edges import sobel_edges
from .raycast import cast_rays
from .layouts import sample_scene
from .scene import Camera

#: Second entropy word of the sensor-noise generator (keeps it apart from the scene stream).
NOISE_STREAM: int = 1
#: Keys returned by :func:`render_scene` (``PRETEXT_KEYS`` added when ``pretext=True``).
LABEL_KEYS: tuple[str, ...] = ("image", "seg", "depth", "normals", "edges", "valid")
PRETEXT_KEYS: tuple[str, ...] = ("albedo", "texture")


def parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``128`` -> ``(128, 128)``; ``(H, W)`` -> ``(H, W)``; both must be positive integers.

    Raises:
        ValueError: naming the bad value.
    """
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    try:
        h, w = pair
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or an (H, W) pair of ints, got {size!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"size must be positive integers, got {size!r} (bad value {v!r})")
    return int(h), int(w)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def scene_camera(domain: str, seed: int) -> Camera:
    """The camera of scene ``(domain, seed)``; ``.intrinsics(H, W)`` gives its ``K``."""
    return sample_scene(check_domain_name(domain), _check_seed(seed)).camera


def render_scene(domain: str, seed: int, size: int | tuple[int, int],
                 pretext: bool = False) -> dict[str, np.ndarray]:
    """Render scene ``seed`` of ``domain`` at ``size`` (int or ``(H, W)``).

    Args:
        domain: a name from :func:`.domains.list_domains`, ``"mixed"``, or a shifted domain
            such as ``indoor_shift@0.4`` (:mod:`.shift`).
        seed: non-negative integer; the same ``(domain, seed, size)`` gives the same bytes.
        size: output resolution.
        pretext: also return the pretext targets ``albedo`` and ``texture``.

    Returns:
        ``image`` (H, W, 3) uint8, ``seg`` (H, W) uint8, ``depth`` (H, W) float32,
        ``normals`` (H, W, 3) float32, ``edges`` (H, W) float32, ``valid`` (H, W) bool; with
        ``pretext``: ``albedo`` (H, W, 3) uint8 (surface colour before lighting) and
        ``texture`` (H, W) uint8 (texture type id, :data:`.domains.SKY_TEXTURE` for sky).
    """
    height, width = parse_size(size)
    seed = _check_seed(seed)
    scene = sample_scene(check_domain_name(domain), seed)
    hits = cast_rays(scene, height, width)
    valid = hits.hit

    albedo, texture = surface_albedo(scene, hits)
    image = shade_image(scene, hits, albedo, np.random.default_rng([seed, NOISE_STREAM]))

    class_ids = np.array([m.class_id for m in scene.materials], dtype=np.uint8)
    seg = np.where(valid, class_ids[np.maximum(hits.material, 0)], 0).astype(np.uint8)

    rotation = scene.camera.rotation().astype(np.float32)
    n_cam = hits.normal @ rotation  # row form of R.T @ n: world -> camera frame
    rays_cam = hits.rays @ rotation
    n_cam = np.where(np.sum(n_cam * rays_cam, axis=-1, keepdims=True) > 0, -n_cam, n_cam)
    n_cam /= np.maximum(np.linalg.norm(n_cam, axis=-1, keepdims=True), np.float32(1e-12))
    normals = np.where(valid[..., None], n_cam, 0.0).astype(np.float32)

    out = {
        "image": image,
        "seg": seg,
        "depth": np.where(valid, hits.depth, 0.0).astype(np.float32),
        "normals": normals,
        "edges": sobel_edges(image),
        "valid": valid,
    }
    if pretext:
        out["albedo"] = np.round(albedo * 255).astype(np.uint8)
        out["texture"] = texture
    return out
