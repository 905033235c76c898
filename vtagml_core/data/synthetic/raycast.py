"""Vectorised ray casting of boxes, spheres and cylinders (numpy, float32).

Pass 1 (visibility): for each primitive the caster projects its bounding box to find the
screen rectangle it can cover, intersects all rays of that rectangle at once in the
primitive's local frame, and keeps a hit where it is nearer than what the z-buffer already
holds. Pass 2 (surfaces): for each primitive, only on the pixels it finally won, it computes
the surface normal, texture coordinates and material. The Python loops run over primitives
(tens per scene); all per-pixel work is numpy.

Arrays of directions and points are kept *planar*, ``(3, n)`` (components first), so each
component is a contiguous vector. Rays are the unnormalised ``K^-1 [u, v, 1]`` rotated to
the world frame (see :mod:`.scene`), hence the hit parameter ``t`` equals z-buffer depth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import Primitive, Scene

#: Hits nearer than this (scene units along the optical axis) are ignored; it is also the
#: near plane used to clip bounding boxes before projecting them.
T_MIN: float = 1e-3
#: Direction components smaller than this are nudged to it to avoid dividing by zero.
DIRECTION_EPS: float = 1e-12
#: Extra pixels around a projected bounding rectangle (guards against rounding).
RECT_MARGIN: int = 1

# the 12 edges of a box whose corners are indexed 4*ix + 2*iy + iz (see world_corners)
_BOX_EDGES = np.array([(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])


@dataclass
class HitBuffers:
    """Per-pixel result of casting one scene at ``H x W``.

    depth ``(H, W)`` float32: z-buffer depth, ``inf`` where no geometry was hit.
    normal ``(H, W, 3)`` float32: unit surface normal in the *world* frame (not yet flipped
    towards the camera). uv ``(H, W, 2)`` float32: texture coordinates in scene units.
    material, primitive ``(H, W)`` int32: indices into the scene's lists, -1 where no hit.
    rays ``(H, W, 3)`` float32: world-frame ray directions (camera z-component 1).
    """

    depth: np.ndarray
    normal: np.ndarray
    uv: np.ndarray
    material: np.ndarray
    primitive: np.ndarray
    rays: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        """``(H, W)`` bool, True where a ray hit geometry."""
        return self.primitive >= 0


# ----------------------------------------------------------------------------- intersections
def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < DIRECTION_EPS, DIRECTION_EPS, d)


def intersect_box(o: np.ndarray, d: np.ndarray, half: np.ndarray, inside: bool) -> np.ndarray:
    """Slab test. ``o`` (3,), ``d`` (3, n) local frame; returns ``t`` (n,), ``inf`` on a miss.

    Seen from outside, the visible hit is the entry ``t_near = max_k min(t0_k, t1_k)``; from
    inside (the room) it is the exit ``t_far = min_k max(t0_k, t1_k)``.
    """
    inv = 1.0 / _safe(d)
    t0 = (-half[:, None] - o[:, None]) * inv
    t1 = (half[:, None] - o[:, None]) * inv
    lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
    t_far = np.minimum(np.minimum(hi[0], hi[1]), hi[2])
    if inside:
        return np.where(t_far > T_MIN, t_far, np.inf).astype(np.float32)
    t_near = np.maximum(np.maximum(lo[0], lo[1]), lo[2])
    return np.where((t_near <= t_far) & (t_near > T_MIN), t_near, np.inf).astype(np.float32)


def intersect_sphere(o: np.ndarray, d: np.ndarray, size: np.ndarray,
                     inside: bool = False) -> np.ndarray:
    """Nearest root of ``|o + t d|^2 = r^2`` (camera outside); ``t`` (n,), ``inf`` on a miss."""
    r = size[0]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]  # half of the usual b
    c = float(o @ o - r * r)
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > T_MIN), t, np.inf).astype(np.float32)


def intersect_cylinder(o: np.ndarray, d: np.ndarray, size: np.ndarray,
                       inside: bool = False) -> np.ndarray:
    """Capped cylinder along local y, radius ``size[0]``, half height ``size[1]``."""
    r, h = size[0], size[1]
    a = d[0] * d[0] + d[2] * d[2]
    b = o[0] * d[0] + o[2] * d[2]
    c = float(o[0] * o[0] + o[2] * o[2] - r * r)
    disc = b * b - a * c
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(a, DIRECTION_EPS)
    y = o[1] + t_side * d[1]
    t = np.where((disc >= 0) & (np.abs(y) <= h) & (t_side > T_MIN), t_side, np.inf)
    if abs(o[1]) > h:  # the camera is above (below) the cylinder: the top (bottom) cap shows
        cap_y = h if o[1] > h else -h
        t_cap = (cap_y - o[1]) / _safe(d[1])
        px, pz = o[0] + t_cap * d[0], o[2] + t_cap * d[2]
        cap_ok = (t_cap > T_MIN) & (px * px + pz * pz <= r * r)
        t = np.where(cap_ok & (t_cap < t), t_cap, t)
    return t.astype(np.float32)


# ----------------------------------------------------------------------------- surfaces
def surface_box(p: np.ndarray, half: np.ndarray):
    """Local hit points ``p`` (3, n) -> normal (3, n), uv (2, n), face index (n,).

    The face is the axis ``k`` where ``|p_k| / half_k`` is largest (closest to 1); face index
    ``2k + (p_k > 0)`` follows :data:`.scene.BOX_FACES`; uv are the two other coordinates,
    measured from the box corner.
    """
    q = np.abs(p) / half[:, None]
    on_x = q[0] >= np.maximum(q[1], q[2])
    on_y = ~on_x & (q[1] >= q[2])
    on_z = ~(on_x | on_y)
    sign = np.where(p > 0, 1.0, -1.0).astype(p.dtype)
    normal = np.stack([on_x * sign[0], on_y * sign[1], on_z * sign[2]])
    shifted = p + half[:, None]
    uv = np.stack([np.where(on_x, shifted[2], shifted[0]), np.where(on_y, shifted[2], shifted[1])])
    axis = np.where(on_x, 0, np.where(on_y, 1, 2))
    positive = np.where(on_x, sign[0], np.where(on_y, sign[1], sign[2])) > 0
    return normal, uv, 2 * axis + positive


def surface_sphere(p: np.ndarray, size: np.ndarray):
    """Normal ``p / r``; uv = (longitude, latitude) arc lengths; one part."""
    r = size[0]
    normal = p / r
    uv = np.stack([np.arctan2(p[2], p[0]) * r, np.arcsin(np.clip(normal[1], -1, 1)) * r])
    return normal, uv, np.zeros(p.shape[1], dtype=np.int64)


def surface_cylinder(p: np.ndarray, size: np.ndarray):
    """Side (part 0): radial normal, uv = (arc length, height); caps (part 1): +-y."""
    r, h = size[0], size[1]
    rho = np.sqrt(p[0] * p[0] + p[2] * p[2])
    cap = (h - np.abs(p[1])) / h < (r - rho) / r
    normal = np.where(cap, 0.0, p / np.maximum(rho, DIRECTION_EPS))
    normal[1] = np.where(cap, np.sign(p[1]), 0.0)
    uv = np.where(cap, np.stack([p[0] + r, p[2] + r]),
                  np.stack([np.arctan2(p[2], p[0]) * r, p[1] + h]))
    return normal.astype(p.dtype), uv, cap.astype(np.int64)


_INTERSECT = {"box": intersect_box, "sphere": intersect_sphere, "cylinder": intersect_cylinder}
_SURFACE = {"box": surface_box, "sphere": surface_sphere, "cylinder": surface_cylinder}


# ----------------------------------------------------------------------------- screen culling
def screen_rect(prim: Primitive, rotation: np.ndarray, position: np.ndarray, k: np.ndarray,
                height: int, width: int) -> tuple[int, int, int, int] | None:
    """Pixel rectangle ``(y0, y1, x0, x1)`` (end-exclusive) that can see ``prim``.

    The primitive's bounding box is clipped by the near plane z = :data:`T_MIN` (its corners
    in front plus the points where its edges cross the plane), projected, and the enclosing
    rectangle of pixel centres is returned; None if nothing is in front or on screen. A box
    the camera is inside covers the whole image.
    """
    if prim.inside:
        return 0, height, 0, width
    cam = (prim.world_corners() - position) @ rotation  # (8, 3) camera frame
    z = cam[:, 2]
    front = z > T_MIN
    if not front.any():
        return None
    points = cam[front]
    a, b = cam[_BOX_EDGES[:, 0]], cam[_BOX_EDGES[:, 1]]
    crossing = (a[:, 2] > T_MIN) != (b[:, 2] > T_MIN)
    if crossing.any():
        a, b = a[crossing], b[crossing]
        s = (T_MIN - a[:, 2]) / (b[:, 2] - a[:, 2])
        points = np.concatenate([points, a + s[:, None] * (b - a)])
    u = k[0, 0] * points[:, 0] / points[:, 2] + k[0, 2]
    v = k[1, 1] * points[:, 1] / points[:, 2] + k[1, 2]
    # pixel i has its centre at i + 0.5: it is covered when umin <= i + 0.5 <= umax
    x0 = max(0, int(np.ceil(u.min() - 0.5)) - RECT_MARGIN)
    x1 = min(width, int(np.floor(u.max() - 0.5)) + 1 + RECT_MARGIN)
    y0 = max(0, int(np.ceil(v.min() - 0.5)) - RECT_MARGIN)
    y1 = min(height, int(np.floor(v.max() - 0.5)) + 1 + RECT_MARGIN)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


# ----------------------------------------------------------------------------- casting
def cast_rays(scene: Scene, height: int, width: int) -> HitBuffers:
    """Cast one ray per pixel through ``scene`` and return the nearest hits (z-buffer)."""
    camera = scene.camera
    rotation = camera.rotation()
    position = np.asarray(camera.position, dtype=np.float64)
    k = camera.intrinsics(height, width)
    rays_cam = camera.ray_directions(height, width)
    rays = (rotation.astype(np.float32) @ rays_cam.reshape(-1, 3).T).reshape(3, height, width)

    # pass 1, visibility: nearest t and which primitive, per pixel (a z-buffer)
    depth = np.full((height, width), np.inf, dtype=np.float32)
    primitive = np.full((height, width), -1, dtype=np.int32)
    frames = [_local_frame(prim, position) for prim in scene.primitives]
    for index, (prim, (axes, origin, size)) in enumerate(zip(scene.primitives, frames)):
        rect = screen_rect(prim, rotation, position, k, height, width)
        if rect is None:
            continue
        y0, y1, x0, x1 = rect
        d = axes @ rays[:, y0:y1, x0:x1].reshape(3, -1)
        t = _INTERSECT[prim.kind](origin, d, size, prim.inside).reshape(y1 - y0, x1 - x0)
        z_view = depth[y0:y1, x0:x1]  # a view: the boolean writes land in the buffer
        win = t < z_view
        z_view[win] = t[win]
        primitive[y0:y1, x0:x1][win] = index

    # pass 2, surfaces: normal, uv and material once per visible pixel, grouped by primitive
    n_pix = height * width
    flat_prim, flat_depth = primitive.ravel(), depth.ravel()
    flat_rays = rays.reshape(3, n_pix)
    normal = np.zeros((3, n_pix), dtype=np.float32)
    uv = np.zeros((2, n_pix), dtype=np.float32)
    material = np.full(n_pix, -1, dtype=np.int32)
    order = np.argsort(flat_prim, kind="stable")
    ends = np.cumsum(np.bincount(flat_prim + 1, minlength=len(scene.primitives) + 1))
    for index, (prim, (axes, origin, size)) in enumerate(zip(scene.primitives, frames)):
        pixels = order[ends[index]:ends[index + 1]]  # bincount slot 0 holds the misses (-1)
        if pixels.size == 0:
            continue
        p = origin[:, None] + (axes @ flat_rays[:, pixels]) * flat_depth[pixels]
        n_local, uv_hit, part = _SURFACE[prim.kind](p, size)
        normal[:, pixels] = axes.T @ n_local
        uv[:, pixels] = uv_hit
        material[pixels] = np.asarray(prim.materials, dtype=np.int32)[part]

    return HitBuffers(depth=depth, normal=np.ascontiguousarray(normal.T).reshape(height, width, 3),
                      uv=np.ascontiguousarray(uv.T).reshape(height, width, 2),
                      material=material.reshape(height, width), primitive=primitive,
                      rays=np.ascontiguousarray(rays.transpose(1, 2, 0)))


def _local_frame(prim: Primitive, position: np.ndarray):
    """float32 (axes, camera position in local coordinates, size) of a primitive."""
    axes = prim.axes.astype(np.float32)
    origin = (prim.axes @ (position - prim.center)).astype(np.float32)
    return axes, origin, prim.size.astype(np.float32)
