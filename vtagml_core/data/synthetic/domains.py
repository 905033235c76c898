"""Named domains of the synthetic benchmark (domain shifts of paper Sec. 4.2, Tables 3-5).

The paper trains on one domain and tests transfer to others: a shifted indoor dataset
(Taskonomy -> NYUD-v2), street scenes (Synthia / Cityscapes / Vkitti2) and a stylistically
remote comics domain. The kit mirrors this with four procedural domains that share one class
table (:mod:`vtagml_core.data.classes`) and differ in layout, appearance and camera:

=============  ===========================================================================
domain         description
=============  ===========================================================================
indoor         source domain: warm rooms with cabinets, tables, balls, pillars, people
indoor_shift   same classes, cooler/darker palette, harsher light, more texture and noise,
               a higher, wider camera and denser rooms
street         road and pavement between building facades, sky, cars, poles and people
comic          either layout drawn as a comic: flat cel shading, posterised colours, ink
               outlines
=============  ===========================================================================

A :class:`DomainSpec` is pure data: every number that shapes a domain lives here as a named
field, so that a student can copy a spec, change one field and render the shifted domain.
Ranges are ``(low, high)`` pairs sampled uniformly per scene; integer count ranges are
inclusive. Colours are RGB uint8 tuples.
"""
from __future__ import annotations

from dataclasses import dataclass, field

RGB = tuple[int, int, int]
Range = tuple[float, float]
IntRange = tuple[int, int]

#: Texture type ids (stored in the pretext ``texture`` maps). ``sky`` is only used for sky
#: pixels; materials draw from the first :data:`NUM_SURFACE_TEXTURES` types.
TEXTURE_NAMES: tuple[str, ...] = ("plain", "stripes", "checker", "dots", "noise", "sky")
SKY_TEXTURE: int = TEXTURE_NAMES.index("sky")
NUM_SURFACE_TEXTURES: int = SKY_TEXTURE

#: Virtual domain name: each scene takes the appearance and layout of one of
#: :data:`MIXED_SOURCES`, chosen by its seed. Used by the pretext split (the backbone's
#: pretraining data), which thereby never sees the comic style.
MIXED_DOMAIN: str = "mixed"
MIXED_SOURCES: tuple[str, ...] = ("indoor", "indoor_shift", "street")


@dataclass(frozen=True)
class CameraSpec:
    """Pinhole camera pose ranges. Pitch > 0 looks down; fov is horizontal, in degrees."""

    height: Range
    pitch_deg: Range
    yaw_deg: Range
    fov_deg: Range


@dataclass(frozen=True)
class RoomSpec:
    """A closed box room (floor, walls, ceiling) with furniture-like primitives inside."""

    camera: CameraSpec
    width: Range
    depth: Range
    height: Range
    n_boxes: IntRange
    n_tables: IntRange
    n_balls: IntRange
    n_pillars: IntRange
    n_persons: IntRange


@dataclass(frozen=True)
class StreetSpec:
    """A straight street: road strip, pavements, facades on both sides and across the end."""

    camera: CameraSpec
    road_width: Range
    sidewalk_width: Range
    length: Range
    building_width: Range
    building_height: Range
    building_gap_prob: float
    n_cars: IntRange
    n_persons: IntRange
    n_poles: IntRange
    n_boxes: IntRange
    n_balls: IntRange


@dataclass(frozen=True)
class AppearanceSpec:
    """Surface colours and textures.

    ``palette`` maps a palette key (a class name, or a part such as ``"skin"``, ``"glass"``,
    ``"wheel"``) to candidate base colours. ``texture_weights`` maps a palette key (or
    ``"default"``) to unnormalised probabilities over the surface texture types of
    :data:`TEXTURE_NAMES`. ``texture_contrast`` is how far the second texture colour departs
    from the base colour (0 = invisible texture, 1 = black/white).
    """

    palette: dict[str, tuple[RGB, ...]]
    texture_weights: dict[str, tuple[float, ...]]
    color_jitter: float
    texture_frequency: Range
    texture_contrast: Range


@dataclass(frozen=True)
class LightingSpec:
    """Lambertian + ambient lighting from one directional light, sky, fog and sensor noise."""

    ambient: Range
    intensity: Range
    elevation_deg: Range
    light_color: RGB
    depth_falloff: float
    fog_density: float
    sky_horizon: RGB
    sky_zenith: RGB
    noise_sigma: float


@dataclass(frozen=True)
class StyleSpec:
    """Comic rendering switches (the comics domain of paper Sec. 4, novel-domain setting)."""

    comic: bool = False
    shade_levels: int = 3
    posterize_levels: int = 4
    ink: RGB = (0, 0, 0)
    outline_depth_ratio: float = 0.06
    outline_crease_cos: float = 0.6


@dataclass(frozen=True)
class DomainSpec:
    """Everything that defines one synthetic domain."""

    name: str
    description: str
    layout_weights: dict[str, float]
    appearance: AppearanceSpec
    lighting: LightingSpec
    room: RoomSpec | None = None
    street: StreetSpec | None = None
    style: StyleSpec = field(default_factory=StyleSpec)


_SKIN: tuple[RGB, ...] = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))

# ----------------------------------------------------------------------------- layouts
_ROOM = RoomSpec(
    camera=CameraSpec(height=(1.2, 1.7), pitch_deg=(5.0, 20.0), yaw_deg=(-25.0, 25.0),
                      fov_deg=(60.0, 75.0)),
    width=(6.0, 9.0), depth=(8.0, 12.0), height=(2.7, 3.3),
    n_boxes=(2, 5), n_tables=(0, 2), n_balls=(1, 3), n_pillars=(0, 2), n_persons=(0, 1),
)
_ROOM_SHIFT = RoomSpec(
    camera=CameraSpec(height=(1.8, 2.4), pitch_deg=(15.0, 30.0), yaw_deg=(-35.0, 35.0),
                      fov_deg=(75.0, 90.0)),
    width=(5.0, 12.0), depth=(7.0, 15.0), height=(2.6, 4.0),
    n_boxes=(4, 8), n_tables=(1, 3), n_balls=(2, 5), n_pillars=(1, 3), n_persons=(0, 2),
)
_STREET = StreetSpec(
    camera=CameraSpec(height=(1.4, 2.2), pitch_deg=(-3.0, 8.0), yaw_deg=(-12.0, 12.0),
                      fov_deg=(60.0, 80.0)),
    road_width=(6.0, 9.0), sidewalk_width=(2.0, 4.0), length=(40.0, 70.0),
    building_width=(6.0, 15.0), building_height=(6.0, 25.0), building_gap_prob=0.2,
    n_cars=(1, 4), n_persons=(1, 4), n_poles=(2, 5), n_boxes=(0, 2), n_balls=(0, 1),
)

# ----------------------------------------------------------------------------- domains
INDOOR = DomainSpec(
    name="indoor",
    description="Source domain: warm-lit rooms with cabinets, tables, balls, pillars and people.",
    layout_weights={"room": 1.0},
    room=_ROOM,
    appearance=AppearanceSpec(
        palette={
            "floor": ((150, 110, 70), (170, 125, 80), (120, 90, 60), (200, 190, 170)),
            "wall": ((225, 215, 190), (210, 200, 180), (230, 220, 170), (225, 195, 170)),
            "ceiling": ((240, 238, 230), (230, 230, 225)),
            "box": ((140, 90, 50), (100, 70, 45), (215, 210, 200), (90, 120, 80)),
            "table": ((120, 80, 50), (160, 120, 80), (90, 60, 40)),
            "ball": ((200, 50, 40), (50, 90, 190), (230, 190, 40), (60, 160, 70)),
            "pillar": ((200, 195, 185), (170, 160, 150)),
            "person": ((60, 70, 120), (150, 40, 40), (70, 110, 70), (200, 180, 60)),
            "skin": _SKIN,
        },
        texture_weights={
            "default": (0.5, 0.25, 0.05, 0.1, 0.1),
            "floor": (0.2, 0.3, 0.4, 0.0, 0.1),
            "wall": (0.6, 0.3, 0.0, 0.05, 0.05),
            "ceiling": (0.9, 0.0, 0.0, 0.0, 0.1),
            "skin": (1.0, 0.0, 0.0, 0.0, 0.0),
        },
        color_jitter=0.08, texture_frequency=(1.0, 3.0), texture_contrast=(0.15, 0.35),
    ),
    lighting=LightingSpec(
        ambient=(0.35, 0.55), intensity=(0.8, 1.0), elevation_deg=(50.0, 80.0),
        light_color=(255, 242, 217), depth_falloff=0.02, fog_density=0.0,
        sky_horizon=(200, 215, 230), sky_zenith=(90, 140, 210), noise_sigma=0.008,
    ),
)

INDOOR_SHIFT = DomainSpec(
    name="indoor_shift",
    description="Shifted indoor: cool dark palette, harsh side light, busier textures and noise, "
                "higher wider camera, denser rooms.",
    layout_weights={"room": 1.0},
    room=_ROOM_SHIFT,
    appearance=AppearanceSpec(
        palette={
            "floor": ((110, 115, 120), (60, 80, 120), (70, 70, 80)),
            "wall": ((170, 190, 210), (150, 155, 165), (100, 150, 150), (160, 150, 190)),
            "ceiling": ((190, 200, 210), (160, 170, 185)),
            "box": ((130, 140, 150), (60, 70, 90), (210, 120, 40)),
            "table": ((150, 170, 180), (50, 50, 55), (220, 220, 225)),
            "ball": ((190, 50, 150), (40, 180, 200), (240, 140, 30)),
            "pillar": ((90, 100, 120), (180, 180, 190)),
            "person": ((30, 30, 40), (180, 180, 190), (120, 60, 140)),
            "skin": _SKIN,
        },
        texture_weights={
            "default": (0.2, 0.15, 0.2, 0.25, 0.2),
            "floor": (0.1, 0.1, 0.3, 0.2, 0.3),
            "wall": (0.3, 0.1, 0.1, 0.3, 0.2),
            "ceiling": (0.5, 0.0, 0.3, 0.0, 0.2),
            "skin": (1.0, 0.0, 0.0, 0.0, 0.0),
        },
        color_jitter=0.12, texture_frequency=(2.0, 5.0), texture_contrast=(0.25, 0.5),
    ),
    lighting=LightingSpec(
        ambient=(0.2, 0.35), intensity=(1.0, 1.3), elevation_deg=(25.0, 50.0),
        light_color=(217, 235, 255), depth_falloff=0.06, fog_density=0.0,
        sky_horizon=(200, 215, 230), sky_zenith=(90, 140, 210), noise_sigma=0.025,
    ),
)

STREET = DomainSpec(
    name="street",
    description="Street: road and pavements between facades under a sky, with cars, poles "
                "and people, light haze.",
    layout_weights={"street": 1.0},
    street=_STREET,
    appearance=AppearanceSpec(
        palette={
            "floor": ((170, 165, 155), (150, 145, 140), (185, 175, 160)),
            "road": ((70, 70, 75), (85, 85, 90), (60, 60, 62)),
            "building": ((150, 80, 60), (170, 100, 70), (160, 160, 155), (190, 180, 160),
                         (90, 110, 130)),
            "box": ((120, 100, 70), (60, 100, 60), (180, 140, 60)),
            "ball": ((220, 80, 30), (230, 200, 50)),
            "pillar": ((90, 90, 95), (60, 60, 60), (140, 140, 140)),
            "person": ((60, 70, 120), (150, 40, 40), (40, 40, 45), (200, 180, 60)),
            "skin": _SKIN,
            "car": ((180, 30, 30), (30, 50, 140), (200, 200, 205), (30, 30, 30), (220, 180, 40)),
            "glass": ((40, 50, 60), (60, 75, 90)),
            "wheel": ((20, 20, 20),),
        },
        texture_weights={
            "default": (0.7, 0.1, 0.0, 0.1, 0.1),
            "floor": (0.1, 0.2, 0.5, 0.0, 0.2),
            "road": (0.2, 0.0, 0.0, 0.0, 0.8),
            "building": (0.1, 0.3, 0.5, 0.05, 0.05),
            "skin": (1.0, 0.0, 0.0, 0.0, 0.0),
            "glass": (1.0, 0.0, 0.0, 0.0, 0.0),
            "wheel": (1.0, 0.0, 0.0, 0.0, 0.0),
        },
        color_jitter=0.08, texture_frequency=(0.5, 2.0), texture_contrast=(0.2, 0.4),
    ),
    lighting=LightingSpec(
        ambient=(0.45, 0.6), intensity=(0.7, 0.9), elevation_deg=(20.0, 60.0),
        light_color=(255, 250, 235), depth_falloff=0.0, fog_density=0.008,
        sky_horizon=(200, 215, 230), sky_zenith=(90, 140, 210), noise_sigma=0.01,
    ),
)

COMIC = DomainSpec(
    name="comic",
    description="Comic style: rooms or streets with flat cel shading, posterised saturated "
                "colours and black ink outlines.",
    layout_weights={"room": 0.5, "street": 0.5},
    room=_ROOM,
    street=_STREET,
    appearance=AppearanceSpec(
        palette={
            "floor": ((230, 200, 120), (200, 170, 110)),
            "wall": ((250, 235, 180), (180, 220, 240), (240, 190, 200)),
            "ceiling": ((250, 250, 240),),
            "road": ((90, 90, 110),),
            "building": ((240, 120, 90), (120, 170, 230), (250, 210, 80)),
            "box": ((230, 120, 50), (90, 170, 90)),
            "table": ((200, 120, 60),),
            "ball": ((240, 40, 40), (40, 120, 240), (250, 220, 30)),
            "pillar": ((170, 170, 200),),
            "person": ((40, 90, 200), (230, 50, 50)),
            "skin": ((250, 205, 160),),
            "car": ((240, 40, 40), (40, 140, 240), (250, 200, 0)),
            "glass": ((150, 220, 250),),
            "wheel": ((30, 30, 30),),
        },
        texture_weights={
            "default": (0.6, 0.2, 0.0, 0.2, 0.0),
            "skin": (1.0, 0.0, 0.0, 0.0, 0.0),
            "glass": (1.0, 0.0, 0.0, 0.0, 0.0),
            "wheel": (1.0, 0.0, 0.0, 0.0, 0.0),
        },
        color_jitter=0.0, texture_frequency=(2.0, 4.0), texture_contrast=(0.3, 0.5),
    ),
    lighting=LightingSpec(
        ambient=(0.45, 0.55), intensity=(0.9, 1.0), elevation_deg=(40.0, 70.0),
        light_color=(255, 255, 255), depth_falloff=0.0, fog_density=0.0,
        sky_horizon=(150, 215, 250), sky_zenith=(80, 170, 245), noise_sigma=0.0,
    ),
    style=StyleSpec(comic=True, shade_levels=3, posterize_levels=4),
)

#: All named domains, by name.
DOMAINS: dict[str, DomainSpec] = {d.name: d for d in (INDOOR, INDOOR_SHIFT, STREET, COMIC)}


def list_domains() -> list[str]:
    """Names of the synthetic domains, in definition order (``mixed`` is not listed)."""
    return list(DOMAINS)


def get_domain(name: str) -> DomainSpec:
    """The :class:`DomainSpec` called ``name``.

    Raises:
        ValueError: for an unknown name, naming it and listing the valid ones.
    """
    if name not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {name!r}; valid domains: "
                         f"{', '.join(DOMAINS)} (and {MIXED_DOMAIN!r} for the pretext mix)")
    return DOMAINS[name]


def check_domain_name(name: str) -> str:
    """Return ``name`` if it is a domain or :data:`MIXED_DOMAIN`, else raise ValueError."""
    if name != MIXED_DOMAIN:
        get_domain(name)
    return name


def _validate(spec: DomainSpec) -> None:
    """Catch spec typos at import time rather than deep inside a worker process."""
    if not spec.layout_weights or any(k not in ("room", "street") for k in spec.layout_weights):
        raise ValueError(f"domain {spec.name}: layout_weights keys must be 'room'/'street'")
    if "room" in spec.layout_weights and spec.room is None:
        raise ValueError(f"domain {spec.name}: uses the room layout but has no RoomSpec")
    if "street" in spec.layout_weights and spec.street is None:
        raise ValueError(f"domain {spec.name}: uses the street layout but has no StreetSpec")
    for key, w in spec.appearance.texture_weights.items():
        if len(w) != NUM_SURFACE_TEXTURES or sum(w) <= 0:
            raise ValueError(f"domain {spec.name}: texture_weights[{key!r}] needs "
                             f"{NUM_SURFACE_TEXTURES} non-negative weights with a positive sum")


for _spec in DOMAINS.values():
    _validate(_spec)
