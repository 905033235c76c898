"""Procedural layouts: where the primitives of a room or a street go, and :func:`sample_scene`.

Each layout function draws from a :class:`numpy.random.Generator` only, so a scene depends on
its seed alone. Objects stand on the floor / ground (y = 0, or the curb height on pavements)
and are kept apart by a simple footprint test (discs in the x-z plane), retried a few times;
an object that finds no free spot is dropped.
"""
from __future__ import annotations

import numpy as np

from .catalog import get_domain
from .domains import MIXED_DOMAIN, MIXED_TARGETS, RoomSpec, StreetSpec
from .shift import SEVERITY_DECIMALS, shifted_name
from .scene import (Camera, MaterialSampler, Primitive, Scene, make_box, make_cylinder,
                    make_sphere)

#: Placement attempts per object before it is dropped.
PLACEMENT_TRIES: int = 20
#: Clear distance kept in front of the camera (scene units) before objects may stand.
CAMERA_CLEARANCE: float = 1.5
#: Gap kept between furniture and the room walls.
WALL_MARGIN: float = 0.3
#: Pavement height above the road (the curb).
CURB_HEIGHT: float = 0.15
#: Thickness of the ground slabs (only their top face is ever visible).
GROUND_THICKNESS: float = 1.0
#: How far the ground, and the facade across the street's end, reach sideways.
GROUND_SIDE_EXTENT: float = 40.0
#: Depth range of building blocks (x extent of the boxes along the street).
BUILDING_DEPTH: tuple[float, float] = (8.0, 15.0)
#: Car dimensions: length, width, wheel radius, body height (scene units = metres).
CAR_LENGTH: tuple[float, float] = (4.0, 4.8)
CAR_WIDTH: tuple[float, float] = (1.7, 1.9)
WHEEL_RADIUS: float = 0.32
CAR_BODY_HEIGHT: float = 0.7
CAR_CABIN_HEIGHT: float = 0.55
#: Person: body radius and height (feet to shoulders), head radius.
PERSON_RADIUS: tuple[float, float] = (0.18, 0.25)
PERSON_BODY_HEIGHT: tuple[float, float] = (1.1, 1.45)
PERSON_HEAD_RADIUS: tuple[float, float] = (0.11, 0.14)
#: Table: top thickness, leg half-width, height range.
TABLE_TOP_HALF_THICKNESS: float = 0.03
TABLE_LEG_HALF_WIDTH: float = 0.03
TABLE_HEIGHT: tuple[float, float] = (0.68, 0.8)


class Footprints:
    """Discs already occupied on the floor; ``try_place`` rejects overlapping candidates."""

    def __init__(self) -> None:
        self.discs: list[tuple[float, float, float]] = []

    def free(self, x: float, z: float, radius: float) -> bool:
        return all((x - a) ** 2 + (z - b) ** 2 >= (radius + r) ** 2 for a, b, r in self.discs)

    def try_place(self, sample_xz, radius: float) -> tuple[float, float] | None:
        """Call ``sample_xz()`` until a free spot is found (or give up, returning None)."""
        for _ in range(PLACEMENT_TRIES):
            x, z = sample_xz()
            if self.free(x, z, radius):
                self.discs.append((x, z, radius))
                return x, z
        return None


def _sample_camera(spec, rng: np.random.Generator, x: float, z: float) -> Camera:
    cam = spec.camera
    return Camera(position=(x, float(rng.uniform(*cam.height)), z),
                  yaw_deg=float(rng.uniform(*cam.yaw_deg)),
                  pitch_deg=float(rng.uniform(*cam.pitch_deg)),
                  fov_deg=float(rng.uniform(*cam.fov_deg)),
                  roll_deg=float(rng.uniform(*cam.roll_deg)))  # drawn even at (0, 0): same stream at every severity


def _person(x: float, z: float, ground: float, rng, mat: MaterialSampler) -> list[Primitive]:
    """Body cylinder (feet to shoulders) with a sphere head; both class ``person``."""
    radius = rng.uniform(*PERSON_RADIUS)
    body = rng.uniform(*PERSON_BODY_HEIGHT)
    head = rng.uniform(*PERSON_HEAD_RADIUS)
    return [make_cylinder((x, ground + body / 2, z), radius, body / 2, mat("person")),
            make_sphere((x, ground + body + 0.9 * head, z), head, mat("person", "skin"))]


def room_layout(spec: RoomSpec, rng: np.random.Generator,
                mat: MaterialSampler) -> tuple[Camera, list[Primitive]]:
    """A closed room (floor, four walls, ceiling) seen from near its back wall.

    The room spans x in [-W/2, W/2], y in [0, H], z in [0, D]; the camera stands near z = 0
    looking towards +z. Cabinets stand against the walls (some free-standing), tables
    (top + four legs) and pillars (floor-to-ceiling columns or pedestals) anywhere, balls on
    the floor or on tables.
    """
    width, depth, height = (rng.uniform(*spec.width), rng.uniform(*spec.depth),
                            rng.uniform(*spec.height))
    floor, wall, ceiling = mat("floor"), mat("wall"), mat("ceiling")
    back = mat("wall") if rng.random() < 0.3 else wall  # an accent wall sometimes
    room = make_box((0.0, height / 2, depth / 2), (width / 2, height / 2, depth / 2), 0.0,
                    (wall, wall, floor, ceiling, wall, back), inside=True)
    camera = _sample_camera(spec, rng, x=float(rng.uniform(-0.3, 0.3) * width / 2),
                            z=float(rng.uniform(0.4, 1.2)))
    prims: list[Primitive] = [room]
    taken = Footprints()
    x_lo, x_hi = -width / 2 + WALL_MARGIN, width / 2 - WALL_MARGIN
    z_lo, z_hi = camera.position[2] + CAMERA_CLEARANCE, depth - WALL_MARGIN

    def anywhere():
        return rng.uniform(x_lo, x_hi), rng.uniform(z_lo, z_hi)

    for _ in range(rng.integers(spec.n_boxes[0], spec.n_boxes[1] + 1)):
        w, d, h = rng.uniform(0.6, 2.0), rng.uniform(0.4, 0.8), rng.uniform(0.5, 2.2)
        side = rng.integers(4)  # 0 left wall, 1 right wall, 2 back wall, 3 free-standing
        if side < 2:
            sign = -1.0 if side == 0 else 1.0
            x0, yaw = sign * (width / 2 - d / 2 - 0.02), np.pi / 2
            spot = taken.try_place(lambda: (x0, rng.uniform(z_lo, z_hi)), w / 2)
        elif side == 2:
            z0, yaw = depth - d / 2 - 0.02, 0.0
            spot = taken.try_place(lambda: (rng.uniform(x_lo, x_hi), z0), w / 2)
        else:
            yaw = rng.uniform(0, np.pi)
            spot = taken.try_place(anywhere, 0.5 * np.hypot(w, d))
        if spot is not None:
            prims.append(make_box((spot[0], h / 2, spot[1]), (w / 2, h / 2, d / 2), yaw,
                                  mat("box")))

    table_tops: list[tuple[float, float, float]] = []  # (x, z, top height)
    for _ in range(rng.integers(spec.n_tables[0], spec.n_tables[1] + 1)):
        length, wide = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
        spot = taken.try_place(anywhere, 0.5 * np.hypot(length, wide))
        if spot is None:
            continue
        yaw, top_y = rng.uniform(0, np.pi), rng.uniform(*TABLE_HEIGHT)
        m = mat("table")
        prims.append(make_box((spot[0], top_y, spot[1]),
                              (length / 2, TABLE_TOP_HALF_THICKNESS, wide / 2), yaw, m))
        axes_x, axes_z = np.cos(yaw), np.sin(yaw)  # local x/z axes in world x-z
        inset = 0.08
        for sx in (-1, 1):
            for sz in (-1, 1):
                lx, lz = sx * (length / 2 - inset), sz * (wide / 2 - inset)
                leg_x = spot[0] + lx * axes_x + lz * axes_z
                leg_z = spot[1] - lx * axes_z + lz * axes_x
                half_leg = (top_y - TABLE_TOP_HALF_THICKNESS) / 2
                prims.append(make_box((leg_x, half_leg, leg_z),
                                      (TABLE_LEG_HALF_WIDTH, half_leg, TABLE_LEG_HALF_WIDTH),
                                      yaw, m))
        table_tops.append((spot[0], spot[1], top_y + TABLE_TOP_HALF_THICKNESS))

    for _ in range(rng.integers(spec.n_balls[0], spec.n_balls[1] + 1)):
        if table_tops and rng.random() < 0.5:
            x, z, top = table_tops[rng.integers(len(table_tops))]
            r = rng.uniform(0.08, 0.18)
            prims.append(make_sphere((x, top + r, z), r, mat("ball")))
            continue
        r = rng.uniform(0.15, 0.45)
        spot = taken.try_place(anywhere, r)
        if spot is not None:
            prims.append(make_sphere((spot[0], r, spot[1]), r, mat("ball")))

    for _ in range(rng.integers(spec.n_pillars[0], spec.n_pillars[1] + 1)):
        r = rng.uniform(0.15, 0.35)
        spot = taken.try_place(anywhere, r)
        if spot is not None:
            tall = height if rng.random() < 0.6 else rng.uniform(0.6, 1.2)
            prims.append(make_cylinder((spot[0], tall / 2, spot[1]), r, tall / 2,
                                       mat("pillar")))

    for _ in range(rng.integers(spec.n_persons[0], spec.n_persons[1] + 1)):
        spot = taken.try_place(anywhere, PERSON_RADIUS[1])
        if spot is not None:
            prims.extend(_person(spot[0], spot[1], 0.0, rng, mat))
    return camera, prims


def _car(x: float, z: float, yaw: float, rng, mat: MaterialSampler) -> list[Primitive]:
    """Body box, cabin box (glass) and two axle cylinders (front and rear wheels)."""
    length, wide = rng.uniform(*CAR_LENGTH), rng.uniform(*CAR_WIDTH)
    body_bottom = WHEEL_RADIUS * 0.8
    fwd = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    base = np.array([x, 0.0, z])
    body = mat("car")
    cabin_center = base + fwd * (-0.05 * length)
    cabin_center[1] = body_bottom + CAR_BODY_HEIGHT + CAR_CABIN_HEIGHT / 2
    prims = [
        make_box(base + np.array([0.0, body_bottom + CAR_BODY_HEIGHT / 2, 0.0]),
                 (wide / 2, CAR_BODY_HEIGHT / 2, length / 2), yaw, body),
        make_box(cabin_center, (wide * 0.45, CAR_CABIN_HEIGHT / 2, length * 0.27), yaw,
                 mat("car", "glass")),
    ]
    wheel = mat("car", "wheel")
    for sign in (-1.0, 1.0):
        axle = base + fwd * (sign * 0.33 * length)
        axle[1] = WHEEL_RADIUS
        prims.append(make_cylinder(axle, WHEEL_RADIUS, wide / 2 + 0.02, wheel, yaw=yaw,
                                   horizontal=True))
    return prims


def street_layout(spec: StreetSpec, rng: np.random.Generator,
                  mat: MaterialSampler) -> tuple[Camera, list[Primitive]]:
    """A straight street along +z: road strip, raised pavements, facades, sky above.

    The road spans |x| < road_width / 2; pavements (class ``floor``) rise by the curb height
    on both sides; building blocks line both pavements (with occasional gaps) and one facade
    closes the street at z = length, which bounds the depth range.
    """
    road_w, side_w, length = (rng.uniform(*spec.road_width), rng.uniform(*spec.sidewalk_width),
                              rng.uniform(*spec.length))
    z_mid, z_half = length / 2, length / 2 + 20.0
    half_t = GROUND_THICKNESS / 2
    prims: list[Primitive] = [
        make_box((0.0, -half_t, z_mid), (road_w / 2, half_t, z_half), 0.0, mat("road"))]
    walk_half = (GROUND_SIDE_EXTENT - road_w / 2) / 2
    for sign in (-1.0, 1.0):
        prims.append(make_box((sign * (road_w / 2 + walk_half), CURB_HEIGHT - half_t, z_mid),
                              (walk_half, half_t, z_half), 0.0, mat("floor")))
    # facades along both sides, from behind the camera to the end of the street
    for sign in (-1.0, 1.0):
        z = -10.0
        while z < length:
            w = rng.uniform(*spec.building_width)
            if rng.random() < spec.building_gap_prob:
                z += 0.5 * w
                continue
            h, d = rng.uniform(*spec.building_height), rng.uniform(*BUILDING_DEPTH)
            prims.append(make_box((sign * (road_w / 2 + side_w + d / 2), h / 2, z + w / 2),
                                  (d / 2, h / 2, w / 2), 0.0, mat("building")))
            z += w
    end_h = rng.uniform(*spec.building_height)
    prims.append(make_box((0.0, end_h / 2, length + 5.0), (GROUND_SIDE_EXTENT, end_h / 2, 5.0),
                          0.0, mat("building")))

    camera = _sample_camera(spec, rng, x=float(rng.uniform(-road_w / 4, road_w / 4)),
                            z=float(rng.uniform(-2.0, 2.0)))
    taken = Footprints()
    z_lo, z_hi = camera.position[2] + 2 * CAMERA_CLEARANCE, length - 3.0

    for _ in range(rng.integers(spec.n_cars[0], spec.n_cars[1] + 1)):
        lane = 1.0 if rng.random() < 0.5 else -1.0
        spot = taken.try_place(lambda: (lane * road_w / 4, rng.uniform(z_lo + 3.0, z_hi)),
                               CAR_LENGTH[1] / 2)
        if spot is not None:
            yaw = (0.0 if lane > 0 else np.pi) + np.radians(rng.uniform(-4.0, 4.0))
            prims.extend(_car(spot[0], spot[1], yaw, rng, mat))

    def on_pavement(margin: float):
        def sample():
            sign = 1.0 if rng.random() < 0.5 else -1.0
            return (sign * (road_w / 2 + rng.uniform(margin, side_w - margin)),
                    rng.uniform(z_lo, z_hi))
        return sample

    for _ in range(rng.integers(spec.n_persons[0], spec.n_persons[1] + 1)):
        spot = taken.try_place(on_pavement(0.5), PERSON_RADIUS[1])
        if spot is not None:
            prims.extend(_person(spot[0], spot[1], CURB_HEIGHT, rng, mat))
    for _ in range(rng.integers(spec.n_poles[0], spec.n_poles[1] + 1)):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        r, h = rng.uniform(0.06, 0.12), rng.uniform(3.5, 7.0)
        spot = taken.try_place(lambda: (sign * (road_w / 2 + 0.3), rng.uniform(z_lo, z_hi)), r)
        if spot is not None:
            prims.append(make_cylinder((spot[0], CURB_HEIGHT + h / 2, spot[1]), r, h / 2,
                                       mat("pillar")))
    for _ in range(rng.integers(spec.n_boxes[0], spec.n_boxes[1] + 1)):
        s = rng.uniform(0.4, 1.0)
        spot = taken.try_place(on_pavement(0.6), s)
        if spot is not None:
            prims.append(make_box((spot[0], CURB_HEIGHT + s / 2, spot[1]), (s / 2, s / 2, s / 2),
                                  rng.uniform(0, np.pi), mat("box")))
    for _ in range(rng.integers(spec.n_balls[0], spec.n_balls[1] + 1)):
        r = rng.uniform(0.2, 0.35)
        spot = taken.try_place(on_pavement(0.4), r)
        if spot is not None:
            prims.append(make_sphere((spot[0], CURB_HEIGHT + r, spot[1]), r, mat("ball")))
    return camera, prims


def mixed_domain_name(rng: np.random.Generator) -> str:
    """The domain of one scene of the ``mixed`` pretext domain: a target of
    :data:`~.domains.MIXED_TARGETS` at a severity ``s ~ U[0, 1]`` (rounded to the decimals a
    domain name may carry), e.g. ``"street_shift@0.374"``; ``s = 0`` is the target's source."""
    target = MIXED_TARGETS[int(rng.integers(len(MIXED_TARGETS)))]
    return shifted_name(target, round(float(rng.random()), SEVERITY_DECIMALS))


def sample_scene(domain: str, seed: int) -> Scene:
    """Sample the scene of ``domain`` (or ``"mixed"``) for an integer ``seed``."""
    rng = np.random.default_rng(seed)
    if domain == MIXED_DOMAIN:
        domain = mixed_domain_name(rng)
    spec = get_domain(domain)
    names = list(spec.layout_weights)
    weights = np.array([spec.layout_weights[n] for n in names], dtype=float)
    layout = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    sampler = MaterialSampler(spec.appearance, rng)
    if layout == "room":
        camera, prims = room_layout(spec.room, rng, sampler)
    else:
        camera, prims = street_layout(spec.street, rng, sampler)

    light = spec.lighting
    elevation = np.radians(rng.uniform(*light.elevation_deg))
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    light_dir = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                          np.cos(elevation) * np.cos(azimuth)])
    return Scene(domain=domain, layout=layout, camera=camera, primitives=prims,
                 materials=sampler.materials, light_dir=light_dir,
                 light_color=np.array(light.light_color, dtype=float) / 255.0,
                 ambient=float(rng.uniform(*light.ambient)),
                 intensity=float(rng.uniform(*light.intensity)), spec=spec)
