"""Scene description for the synthetic renderer: camera, primitives, materials, light.

A scene is sampled from ``(domain, seed)`` alone (never from the image size), so the same
seed renders the same 3-D scene at any resolution.

Frames
------
* **World**: x right, y up, z forward (away from the starting camera). The floor / ground
  top is at y = 0 (pavements at the curb height).
* **Camera** (OpenCV): x right, y down, z forward. :meth:`Camera.rotation` returns the
  camera-to-world matrix whose columns are the camera's right, down and forward axes in
  world coordinates. It is orthogonal with determinant -1 (the y axis flips between "up" and
  "down"); orthogonality is all that is needed to move directions and normals between frames
  (``v_world = R @ v_cam``, ``v_cam = R.T @ v_world``).
* **Rays** are not normalised: in the camera frame ``d = K^-1 [u + 0.5, v + 0.5, 1]`` has
  z-component 1, so the ray parameter ``t`` of a hit *is* its z-buffer depth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..classes import CLASS_ID
from .domains import NUM_SURFACE_TEXTURES, AppearanceSpec, DomainSpec
from .specs import shared_palette

#: Primitive kinds understood by :mod:`.raycast`.
PRIMITIVE_KINDS: tuple[str, ...] = ("box", "sphere", "cylinder")

#: Box faces, in the order of :attr:`Primitive.materials` for boxes: -x, +x, -y, +y, -z, +z.
BOX_FACES: tuple[str, ...] = ("-x", "+x", "-y", "+y", "-z", "+z")


# corner i of a box has signs (x, y, z) from the bits of i = 4*ix + 2*iy + iz
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
                         dtype=np.float64)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: position (world), yaw/pitch/roll (degrees; pitch > 0 looks down; roll > 0
    tilts the camera clockwise about its optical axis, so the horizon rises to the right in
    the image), fov.

    ``fov_deg`` is the horizontal field of view; pixels are square, so the vertical field of
    view follows from the image aspect ratio.
    """

    position: tuple[float, float, float]
    yaw_deg: float
    pitch_deg: float
    fov_deg: float
    roll_deg: float = 0.0

    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation ``(3, 3)`` float64, columns = right, down, forward.

        Yaw and pitch give a level camera (right horizontal); roll then turns right and down
        about forward: ``right' = cos(r) right + sin(r) down``, ``down' = right' x forward``.
        """
        yaw, pitch, roll = np.radians([self.yaw_deg, self.pitch_deg, self.roll_deg])
        forward = np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch),
                            np.cos(yaw) * np.cos(pitch)])
        level_right = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
        level_down = np.cross(level_right, forward)
        right = np.cos(roll) * level_right + np.sin(roll) * level_down
        down = np.cross(right, forward)
        return np.stack([right, down, forward], axis=1)

    def intrinsics(self, height: int, width: int) -> np.ndarray:
        """Pinhole matrix ``K`` ``(3, 3)`` float64 for an image of ``height x width`` pixels.

        ``fx = fy = (W / 2) / tan(fov / 2)``, principal point at the image centre; pixel
        ``(v, u)`` has its centre at ``(u + 0.5, v + 0.5)``.
        """
        f = (width / 2.0) / np.tan(np.radians(self.fov_deg) / 2.0)
        return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])

    def ray_directions(self, height: int, width: int) -> np.ndarray:
        """Camera-frame ray directions ``(H, W, 3)`` float32 with z = 1 (not unit length)."""
        k = self.intrinsics(height, width)
        u = (np.arange(width, dtype=np.float64) + 0.5 - k[0, 2]) / k[0, 0]
        v = (np.arange(height, dtype=np.float64) + 0.5 - k[1, 2]) / k[1, 1]
        rays = np.empty((height, width, 3), dtype=np.float32)
        rays[..., 0] = u[None, :]
        rays[..., 1] = v[:, None]
        rays[..., 2] = 1.0
        return rays


@dataclass(frozen=True)
class Material:
    """Surface appearance and semantic class of a primitive part.

    ``color``/``color2`` are RGB in [0, 1]; the texture pattern (a value in [0, 1] per
    point) blends from ``color`` to ``color2``. ``frequency`` is in pattern cycles per scene
    unit, ``phase`` offsets the pattern (in cycles) so that equal materials differ.
    """

    class_id: int
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    texture: int
    frequency: float
    phase: tuple[float, float]


@dataclass
class Primitive:
    """One solid: a box, sphere or finite cylinder in its own local frame.

    ``axes`` ``(3, 3)``: rows are the local x, y, z axes in world coordinates, so a world
    point ``p`` has local coordinates ``axes @ (p - center)``. ``size``: half extents for a
    box; ``(r, r, r)`` for a sphere; ``(r, half_height, r)`` for a cylinder along local y.
    ``materials``: one index per part: six faces for a box (order :data:`BOX_FACES`), one
    for a sphere, ``(side, caps)`` for a cylinder. ``inside``: the camera is inside this box
    (the room), so the exit point is the visible surface.
    """

    kind: str
    center: np.ndarray
    axes: np.ndarray
    size: np.ndarray
    materials: tuple[int, ...]
    inside: bool = False

    def world_corners(self) -> np.ndarray:
        """Corners ``(8, 3)`` of a box enclosing the primitive, in world coordinates."""
        return self.center[None, :] + (_CORNER_SIGNS * self.size[None, :]) @ self.axes


def yaw_axes(yaw: float) -> np.ndarray:
    """Local axes rotated by ``yaw`` radians about world y (rows: local x, y, z)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def make_box(center, half, yaw: float, materials: int | tuple[int, ...],
             inside: bool = False) -> Primitive:
    """A box with half extents ``half`` (local x, y, z), yawed about world y."""
    mats = materials if isinstance(materials, tuple) else (materials,) * len(BOX_FACES)
    return Primitive("box", np.asarray(center, float), yaw_axes(yaw), np.asarray(half, float),
                     mats, inside)


def make_sphere(center, radius: float, material: int) -> Primitive:
    """A sphere of ``radius`` around ``center``."""
    return Primitive("sphere", np.asarray(center, float), np.eye(3),
                     np.full(3, radius, dtype=float), (material,))


def make_cylinder(center, radius: float, half_height: float, material: int,
                  yaw: float = 0.0, horizontal: bool = False) -> Primitive:
    """A capped cylinder: vertical, or (``horizontal``) with its axis along the yawed x."""
    axes = yaw_axes(yaw)
    if horizontal:  # local y (the cylinder axis) along the yawed x direction
        axes = np.stack([axes[1], axes[0], axes[2]])
    return Primitive("cylinder", np.asarray(center, float), axes,
                     np.array([radius, half_height, radius], dtype=float), (material, material))


@dataclass
class Scene:
    """A sampled scene: everything the ray caster and shader need, no image size."""

    domain: str
    layout: str
    camera: Camera
    primitives: list[Primitive]
    materials: list[Material]
    light_dir: np.ndarray  # (3,) world, unit, pointing from the surface towards the light
    light_color: np.ndarray  # (3,) in [0, 1]
    ambient: float
    intensity: float
    spec: DomainSpec | None = field(repr=False, default=None)  # the domain drawn from


class MaterialSampler:
    """Draws :class:`Material` s from a domain's palette and texture statistics."""

    def __init__(self, appearance: AppearanceSpec, rng: np.random.Generator):
        self.appearance = appearance
        self.rng = rng
        self.materials: list[Material] = []

    def __call__(self, class_name: str, key: str | None = None) -> int:
        """Append a material of class ``class_name`` (palette entry ``key`` or the class
        name) and return its index."""
        app, rng = self.appearance, self.rng
        key = key or class_name
        if key not in app.palette:
            raise ValueError(f"palette has no entry {key!r}; add it to the domain's "
                             f"AppearanceSpec.palette (keys: {sorted(app.palette)})")
        choices = app.palette[key]
        # no draw at overlap 0: the random stream, hence every render, stays as before
        if app.palette_overlap > 0.0 and rng.random() < app.palette_overlap:
            choices = shared_palette(app.palette)
        base = np.array(choices[rng.integers(len(choices))], dtype=float) / 255.0
        base = np.clip(base * (1.0 + rng.uniform(-app.color_jitter, app.color_jitter, 3)), 0, 1)
        weights = np.cumsum(app.texture_weights.get(key, app.texture_weights["default"]))
        texture = min(int(np.searchsorted(weights, rng.random() * weights[-1], side="right")),
                      NUM_SURFACE_TEXTURES - 1)
        contrast = rng.uniform(*app.texture_contrast)
        if rng.random() < 0.5:  # darker pattern on the base colour
            second = base * (1.0 - contrast)
        else:  # lighter pattern
            second = base + (1.0 - base) * contrast
        mat = Material(class_id=CLASS_ID[class_name], color=tuple(base), color2=tuple(second),
                       texture=texture, frequency=float(rng.uniform(*app.texture_frequency)),
                       phase=(float(rng.random()), float(rng.random())))
        self.materials.append(mat)
        return len(self.materials) - 1
