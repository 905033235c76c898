"""Appearance of the synthetic scenes: textures, sky, Lambertian lighting, fog, noise, comics.

The image a pixel gets is built in this order (all float32 in [0, 1], quantised to uint8 at
the very end, by :func:`shade_image`):

1. ``albedo`` = material colour blended to its second colour by a texture pattern
   ``a(u, v)`` in [0, 1] (:func:`texture_pattern`): ``albedo = (1 - a) color + a color2``.
   Comic domains posterise it to a few levels per channel.
2. ``lit = ambient + (1 - ambient) * intensity * max(0, n . l)`` (Lambert's cosine law with an
   ambient floor; ``n`` the normal facing the camera, ``l`` the direction to the light),
   divided by ``1 + falloff * depth`` (a dimming lamp indoors). Comic domains quantise ``lit``
   to a few bands (cel shading).
3. ``rgb = albedo * lit * light_color``; fog blends towards the horizon colour with weight
   ``1 - exp(-fog_density * depth)``; sky pixels take a vertical gradient instead.
4. Comic domains draw ink outlines where the primitive changes, depth jumps, or the normal
   bends sharply (:func:`outline_mask`); other domains add Gaussian sensor noise.

No shadows or reflections are traced: the labels do not need them and each would cost a
second ray cast per pixel.
"""
from __future__ import annotations

import numpy as np

from .domains import NUM_SURFACE_TEXTURES, SKY_TEXTURE, TEXTURE_NAMES, StyleSpec
from .raycast import HitBuffers
from .scene import Scene

#: Dot radius of the ``dots`` texture, as a fraction of the pattern cell.
DOT_RADIUS: float = 0.3
#: Lattice cells per pattern cycle of the ``noise`` texture (value noise).
NOISE_CELLS_PER_CYCLE: float = 2.0
#: Image size (shorter side, pixels) at which comic outlines are one pixel wide.
OUTLINE_REFERENCE_SIZE: int = 128
#: Comic skies are drawn in this many flat bands.
COMIC_SKY_BANDS: int = 2

_TEX = {name: i for i, name in enumerate(TEXTURE_NAMES)}
# constants of the integer hash behind the value noise (any large odd numbers work)
_HASH_X, _HASH_Y, _HASH_MIX, _HASH_MASK = 374761393, 668265263, 1274126177, 0xFFFFFFFF


def _hash01(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1] per integer lattice point (int64 in)."""
    h = (ix * _HASH_X + iy * _HASH_Y) & _HASH_MASK
    h = ((h ^ (h >> 13)) * _HASH_MIX) & _HASH_MASK
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / np.float32(0xFFFF)


def value_noise(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1]: hashed lattice values, smoothstep-interpolated."""
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    tx, ty = x - fx, y - fy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    top = _hash01(ix, iy) * (1 - tx) + _hash01(ix + 1, iy) * tx
    bottom = _hash01(ix, iy + 1) * (1 - tx) + _hash01(ix + 1, iy + 1) * tx
    return (top * (1 - ty) + bottom * ty).astype(np.float32)


def texture_pattern(texture: np.ndarray, uv: np.ndarray, frequency: np.ndarray,
                    phase: np.ndarray) -> np.ndarray:
    """Pattern value ``a`` in [0, 1] per hit point.

    Args:
        texture: ``(n,)`` texture type ids (see :data:`.domains.TEXTURE_NAMES`).
        uv: ``(n, 2)`` texture coordinates in scene units.
        frequency: ``(n,)`` cycles per scene unit; phase: ``(n, 2)`` offsets in cycles.

    plain: 0; stripes: ``frac(s_u) >= 1/2``; checker: parity of ``floor(s_u) + floor(s_v)``;
    dots: inside a disc of radius :data:`DOT_RADIUS` centred in each cell; noise: value noise
    — where ``s = uv * frequency + phase``.
    """
    s = uv * frequency[:, None] + phase
    a = np.zeros(texture.shape, dtype=np.float32)
    for kind in range(1, NUM_SURFACE_TEXTURES):
        sel = texture == kind
        if not sel.any():
            continue
        su, sv = s[sel, 0], s[sel, 1]
        if kind == _TEX["stripes"]:
            a[sel] = (su - np.floor(su)) >= 0.5
        elif kind == _TEX["checker"]:
            a[sel] = (np.floor(su) + np.floor(sv)) % 2
        elif kind == _TEX["dots"]:
            cu, cv = su - np.floor(su) - 0.5, sv - np.floor(sv) - 0.5
            a[sel] = (cu * cu + cv * cv) < DOT_RADIUS ** 2
        elif kind == _TEX["noise"]:
            a[sel] = value_noise(su * NOISE_CELLS_PER_CYCLE, sv * NOISE_CELLS_PER_CYCLE)
    return a


def posterize(x: np.ndarray, levels: int) -> np.ndarray:
    """Round values in [0, 1] to ``levels`` evenly spaced values."""
    return np.round(x * (levels - 1)) / (levels - 1)


def sky_colors(scene: Scene, rays: np.ndarray) -> np.ndarray:
    """Sky gradient for world rays ``(n, 3)`` -> ``(n, 3)`` float32: horizon to zenith by
    ``sqrt(max(0, elevation sine))``; comic skies are banded."""
    light = scene.spec.lighting
    horizon = np.array(light.sky_horizon, np.float32) / 255
    zenith = np.array(light.sky_zenith, np.float32) / 255
    s = np.sqrt(np.clip(rays[:, 1] / np.linalg.norm(rays, axis=1), 0.0, 1.0))
    if scene.spec.style.comic:
        s = np.floor(s * COMIC_SKY_BANDS) / (COMIC_SKY_BANDS - 1)
        s = np.minimum(s, 1.0)
    return (horizon + (zenith - horizon) * s[:, None]).astype(np.float32)


def surface_albedo(scene: Scene, hits: HitBuffers) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel colour before lighting and texture type.

    Returns:
        albedo ``(H, W, 3)`` float32 in [0, 1] (the sky colour on sky pixels),
        texture ``(H, W)`` uint8 texture id (:data:`.domains.SKY_TEXTURE` on sky pixels).
    """
    h, w = hits.depth.shape
    albedo = np.empty((h, w, 3), dtype=np.float32)
    texture = np.full((h, w), SKY_TEXTURE, dtype=np.uint8)
    hit = hits.hit
    mats = scene.materials
    color = np.array([m.color for m in mats], np.float32)
    color2 = np.array([m.color2 for m in mats], np.float32)
    tex = np.array([m.texture for m in mats], np.int64)
    freq = np.array([m.frequency for m in mats], np.float32)
    phase = np.array([m.phase for m in mats], np.float32)

    m = hits.material[hit]
    a = texture_pattern(tex[m], hits.uv[hit], freq[m], phase[m])[:, None]
    surf = color[m] * (1 - a) + color2[m] * a
    if scene.spec.style.comic:
        surf = posterize(surf, scene.spec.style.posterize_levels)
    albedo[hit] = surf
    texture[hit] = tex[m]
    albedo[~hit] = sky_colors(scene, hits.rays[~hit])
    return albedo, texture


def facing_normals(hits: HitBuffers) -> np.ndarray:
    """World normals ``(H, W, 3)`` flipped so that ``n . ray < 0`` (towards the camera)."""
    flip = np.sum(hits.normal * hits.rays, axis=-1, keepdims=True) > 0
    return np.where(flip, -hits.normal, hits.normal)


def outline_mask(hits: HitBuffers, normals: np.ndarray, style: StyleSpec) -> np.ndarray:
    """Comic ink lines ``(H, W)`` bool.

    A pixel is inked when it and its right or lower neighbour differ in primitive, their
    depths differ by more than ``outline_depth_ratio`` of the nearer one, or (both on
    geometry) their normals' cosine is below ``outline_crease_cos``. Lines are then widened
    to ``round(min(H, W) / OUTLINE_REFERENCE_SIZE)`` pixels.
    """
    prim, depth = hits.primitive, np.where(hits.hit, hits.depth, np.float32(1e6))
    ink = np.zeros(prim.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        near = np.minimum(depth[a], depth[b])
        jump = np.abs(depth[a] - depth[b]) > style.outline_depth_ratio * near
        edge = (prim[a] != prim[b]) | jump
        cos = np.sum(normals[a] * normals[b], axis=-1)
        edge |= (prim[a] >= 0) & (prim[b] >= 0) & (cos < style.outline_crease_cos)
        ink[a] |= edge
    width = max(1, int(round(min(prim.shape) / OUTLINE_REFERENCE_SIZE)))
    for _ in range(width - 1):  # dilate by one pixel towards the lower right per step
        grown = ink.copy()
        grown[1:, :] |= ink[:-1, :]
        grown[:, 1:] |= ink[:, :-1]
        ink = grown
    return ink


def shade_image(scene: Scene, hits: HitBuffers, albedo: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Light, fog, ink and noise -> the final image ``(H, W, 3)`` uint8."""
    spec = scene.spec
    light, style = spec.lighting, spec.style
    hit = hits.hit
    normals = facing_normals(hits)
    diffuse = np.maximum(normals @ scene.light_dir.astype(np.float32), 0.0)
    lit = scene.ambient + (1.0 - scene.ambient) * scene.intensity * diffuse
    depth = np.where(hit, hits.depth, 0.0).astype(np.float32)
    if light.depth_falloff > 0:
        lit = lit / (1.0 + light.depth_falloff * depth)
    if style.comic:
        lit = np.minimum(np.ceil(lit * style.shade_levels) / style.shade_levels, 1.0)
    rgb = albedo * (lit[..., None] * scene.light_color.astype(np.float32))
    if light.fog_density > 0:
        keep = np.exp(-light.fog_density * depth)[..., None]
        horizon = np.array(light.sky_horizon, np.float32) / 255
        rgb = rgb * keep + horizon * (1 - keep)
    rgb = np.where(hit[..., None], rgb, albedo)  # sky pixels show the sky gradient as is
    if style.comic:
        rgb[outline_mask(hits, normals, style)] = np.array(style.ink, np.float32) / 255
    if light.noise_sigma > 0:
        rgb = rgb + light.noise_sigma * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
