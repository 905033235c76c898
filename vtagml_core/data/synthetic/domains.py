"""Named domains of the synthetic benchmark (domain shifts of paper Sec. 4.2, Tables 3-5).

The paper trains on one domain and tests transfer to others: a shifted indoor dataset
(Taskonomy -> NYUD-v2), street scenes (Synthia / Cityscapes / Vkitti2) and a stylistically
remote comics domain. The kit mirrors this with procedural domains that share one class
table (:mod:`vtagml_core.data.classes`) and differ in layout, appearance and camera:

=============  ===========================================================================
domain         description
=============  ===========================================================================
indoor         source domain: warm rooms with cabinets, tables, balls, pillars, people
indoor_shift   same classes, cooler/darker palette, harsher light, more texture and noise,
               larger halls, a higher, wider, hand-held (rolled) camera and denser rooms
street         road and pavement between building facades, sky, cars, poles and people
comic          either layout drawn as a comic: flat cel shading, posterised colours, ink
               outlines
street_shift   ``street`` as an overcast city (Vkitti2 -> Cityscapes): grey palette, flat
               light, haze, a lower wider camera, narrower and busier streets
=============  ===========================================================================

A :class:`DomainSpec` (:mod:`.specs`) is pure data: every number that shapes a domain lives
there as a named field, so that a student can copy a spec, change one field and render the
shifted domain. Each shift target names its source in :data:`SHIFT_SOURCES`; a name such as
``indoor_shift@0.4`` is that target at a graded severity (:mod:`.shift`), accepted wherever a
domain name is.
"""
from __future__ import annotations

from .specs import (NUM_SURFACE_TEXTURES, RGB, SKY_TEXTURE, TEXTURE_NAMES, AppearanceSpec,
                    CameraSpec, DomainSpec, IntRange, LightingSpec, Range, RoomSpec,
                    StreetSpec, StyleSpec, check_values)

#: Virtual domain name of the pretext split (the backbone's pretraining data): each scene is
#: one of :data:`MIXED_TARGETS` at a severity drawn uniformly from [0, 1] by its seed (every
#: factor alike), so the pretext covers both sources (s = 0), both full targets (s = 1) and the
#: whole appearance range of every severity between, and never the comic style (the remote case).
#: Its targets are albedo and texture type, never a task label (project issue 15, item 5).
MIXED_DOMAIN: str = "mixed"
MIXED_TARGETS: tuple[str, ...] = ("indoor_shift", "street_shift")

#: Probability that a surface takes its base colour from the domain's shared pool instead of its
#: class's own colours (:attr:`~.specs.AppearanceSpec.palette_overlap`), in every named domain:
#: colours then overlap between classes and shape, size, placement and context carry the class
#: (project issue 15, item 2). Measured (quick preset, seed 0; ``benchmark palette-overlap``,
#: 256 train / 64 val scenes of ``indoor``): a per-pixel colour-only classifier reaches 42.9 %
#: val mIoU at 0, 26.9 at 0.25, 19.8 at 0.5, 17.2 at 0.75, 14.7 at 1.
PALETTE_OVERLAP: float = 0.5


_SKIN: tuple[RGB, ...] = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))

# ----------------------------------------------------------------------------- layouts
_ROOM = RoomSpec(
    camera=CameraSpec(height=(1.2, 1.7), pitch_deg=(5.0, 20.0), yaw_deg=(-25.0, 25.0),
                      fov_deg=(60.0, 75.0)),
    width=(6.0, 9.0), depth=(8.0, 12.0), height=(2.7, 3.3),
    n_boxes=(2, 5), n_tables=(0, 2), n_balls=(1, 3), n_pillars=(0, 2), n_persons=(0, 1),
)
# v5: larger halls seen by a level camera, so the target's depth range is not the source's
# (docs/benchmark.md, "A lever for depth"; v4 had pitch 15-30 deg and 5-12 x 7-15 x 2.6-4.0 m).
# v6: a hand-held camera (roll up to 25 deg either way), so the target's normals, in the camera
# frame, are not the source's either ("A lever for normals").
_ROOM_SHIFT = RoomSpec(
    camera=CameraSpec(height=(1.8, 2.4), pitch_deg=(5.0, 15.0), yaw_deg=(-35.0, 35.0),
                      fov_deg=(75.0, 90.0), roll_deg=(-25.0, 25.0)),
    width=(8.0, 14.0), depth=(12.0, 20.0), height=(3.0, 4.5),
    n_boxes=(4, 8), n_tables=(1, 3), n_balls=(2, 5), n_pillars=(1, 3), n_persons=(0, 2),
)
_STREET = StreetSpec(
    camera=CameraSpec(height=(1.4, 2.2), pitch_deg=(-3.0, 8.0), yaw_deg=(-12.0, 12.0),
                      fov_deg=(60.0, 80.0)),
    road_width=(6.0, 9.0), sidewalk_width=(2.0, 4.0), length=(40.0, 70.0),
    building_width=(6.0, 15.0), building_height=(6.0, 25.0), building_gap_prob=0.2,
    n_cars=(1, 4), n_persons=(1, 4), n_poles=(2, 5), n_boxes=(0, 2), n_balls=(0, 1),
)
_STREET_SHIFT = StreetSpec(  # an overcast city seen from a car: level, wide, lower camera
    camera=CameraSpec(height=(1.1, 1.5), pitch_deg=(-2.0, 4.0), yaw_deg=(-6.0, 6.0),
                      fov_deg=(75.0, 95.0)),
    road_width=(5.0, 7.5), sidewalk_width=(2.5, 5.0), length=(50.0, 90.0),
    building_width=(8.0, 20.0), building_height=(12.0, 30.0), building_gap_prob=0.1,
    n_cars=(2, 6), n_persons=(2, 6), n_poles=(3, 7), n_boxes=(0, 3), n_balls=(0, 1),
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
        palette_overlap=PALETTE_OVERLAP,
    ),
    # v4: light from any elevation at any ambient level, so a plane's brightness does not tell
    # floor from wall from ceiling (docs/benchmark.md, the lighting lever; issue 15 item 2).
    lighting=LightingSpec(
        ambient=(0.2, 0.7), intensity=(0.8, 1.0), elevation_deg=(10.0, 80.0),
        light_color=(255, 242, 217), depth_falloff=0.02, fog_density=0.0,
        sky_horizon=(200, 215, 230), sky_zenith=(90, 140, 210), noise_sigma=0.008,
    ),
)

INDOOR_SHIFT = DomainSpec(
    name="indoor_shift",
    description="Shifted indoor: cool dark palette, harsh side light, busier textures and noise, "
                "larger halls seen by a higher, wider, hand-held camera, denser rooms.",
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
        palette_overlap=PALETTE_OVERLAP,
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
        palette_overlap=PALETTE_OVERLAP,
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
        palette_overlap=PALETTE_OVERLAP,
    ),
    lighting=LightingSpec(
        ambient=(0.45, 0.55), intensity=(0.9, 1.0), elevation_deg=(40.0, 70.0),
        light_color=(255, 255, 255), depth_falloff=0.0, fog_density=0.0,
        sky_horizon=(150, 215, 250), sky_zenith=(80, 170, 245), noise_sigma=0.0,
    ),
    style=StyleSpec(comic=True, shade_levels=3, posterize_levels=4),
)

STREET_SHIFT = DomainSpec(
    name="street_shift",
    description="Shifted street (Vkitti2 -> Cityscapes): overcast grey city, flat light, haze "
                "and noise, lower level wider camera, narrower busier streets.",
    layout_weights={"street": 1.0},
    street=_STREET_SHIFT,
    appearance=AppearanceSpec(
        palette={
            "floor": ((140, 140, 135), (125, 125, 122), (160, 155, 150)),
            "road": ((95, 95, 100), (80, 82, 88), (105, 103, 100)),
            "building": ((210, 200, 180), (185, 185, 180), (150, 140, 130), (230, 225, 215),
                         (120, 115, 110)),
            "box": ((90, 110, 90), (150, 150, 150), (70, 80, 110)),
            "ball": ((200, 60, 60), (60, 60, 180)),
            "pillar": ((70, 75, 80), (110, 110, 115), (160, 160, 165)),
            "person": ((30, 30, 35), (90, 90, 100), (120, 40, 50), (60, 80, 60)),
            "skin": _SKIN,
            "car": ((200, 200, 205), (40, 40, 45), (120, 125, 130), (30, 60, 110),
                    (150, 30, 30)),
            "glass": ((30, 35, 40), (55, 60, 70)),
            "wheel": ((25, 25, 25),),
        },
        texture_weights={
            "default": (0.5, 0.1, 0.1, 0.1, 0.2),
            "floor": (0.1, 0.1, 0.6, 0.0, 0.2),
            "road": (0.1, 0.0, 0.0, 0.0, 0.9),
            "building": (0.2, 0.4, 0.2, 0.1, 0.1),
            "skin": (1.0, 0.0, 0.0, 0.0, 0.0),
            "glass": (1.0, 0.0, 0.0, 0.0, 0.0),
            "wheel": (1.0, 0.0, 0.0, 0.0, 0.0),
        },
        color_jitter=0.06, texture_frequency=(1.0, 3.0), texture_contrast=(0.1, 0.3),
        palette_overlap=PALETTE_OVERLAP,
    ),
    lighting=LightingSpec(
        ambient=(0.6, 0.75), intensity=(0.3, 0.5), elevation_deg=(45.0, 80.0),
        light_color=(225, 230, 240), depth_falloff=0.0, fog_density=0.02,
        sky_horizon=(200, 202, 205), sky_zenith=(160, 165, 175), noise_sigma=0.02,
    ),
)

#: All named domains, by name.
DOMAINS: dict[str, DomainSpec] = {d.name: d for d in (INDOOR, INDOOR_SHIFT, STREET, COMIC,
                                                      STREET_SHIFT)}

#: Shift target -> its source domain: graded shifts (:mod:`.shift`) interpolate between them.
#: ``comic``'s source is ``indoor``, the source domain of every setting.
SHIFT_SOURCES: dict[str, str] = {"indoor_shift": "indoor", "comic": "indoor",
                                 "street_shift": "street"}
#: Separates a target domain from its severity in a domain name: ``indoor_shift@0.4``.
SHIFT_MARKER: str = "@"


def list_domains() -> list[str]:
    """Names of the synthetic domains, in definition order (``mixed`` is not listed)."""
    return list(DOMAINS)


def plain_domain(name: str) -> DomainSpec:
    """The :class:`DomainSpec` of one of :data:`DOMAINS` (no severity; names with one go
    through :func:`.catalog.get_domain`).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {name!r}; valid domains: "
                         f"{', '.join(DOMAINS)} (and {MIXED_DOMAIN!r} for the pretext mix; "
                         f"a shift target at a severity as e.g. 'indoor_shift{SHIFT_MARKER}0.4')")
    return DOMAINS[name]


def _validate(spec: DomainSpec) -> None:
    """Catch spec typos (and bad interpolations) before they reach a worker process.

    Raises:
        ValueError: naming the domain and the bad field.
    """
    if not spec.layout_weights or any(k not in ("room", "street") for k in spec.layout_weights):
        raise ValueError(f"domain {spec.name}: layout_weights keys must be 'room'/'street'")
    if any(w <= 0 for w in spec.layout_weights.values()):
        raise ValueError(f"domain {spec.name}: layout_weights must be positive, "
                         f"got {spec.layout_weights}")
    if "room" in spec.layout_weights and spec.room is None:
        raise ValueError(f"domain {spec.name}: uses the room layout but has no RoomSpec")
    if "street" in spec.layout_weights and spec.street is None:
        raise ValueError(f"domain {spec.name}: uses the street layout but has no StreetSpec")
    if "default" not in spec.appearance.texture_weights:
        raise ValueError(f"domain {spec.name}: texture_weights needs a 'default' entry")
    for key, w in spec.appearance.texture_weights.items():
        if len(w) != NUM_SURFACE_TEXTURES or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"domain {spec.name}: texture_weights[{key!r}] needs "
                             f"{NUM_SURFACE_TEXTURES} non-negative weights with a positive sum")
    try:
        check_values(spec)
    except ValueError as err:
        raise ValueError(f"domain {spec.name}: {err}") from None


for _spec in DOMAINS.values():
    _validate(_spec)
for _target, _source in SHIFT_SOURCES.items():
    if _target not in DOMAINS or _source not in DOMAINS:
        raise ValueError(f"SHIFT_SOURCES pair {_target} <- {_source}: both must be in DOMAINS")


__all__ = ["AppearanceSpec", "CameraSpec", "DOMAINS", "DomainSpec", "IntRange", "LightingSpec",
           "MIXED_DOMAIN", "MIXED_TARGETS", "NUM_SURFACE_TEXTURES", "PALETTE_OVERLAP", "RGB",
           "Range", "RoomSpec",
           "SHIFT_MARKER", "SHIFT_SOURCES", "SKY_TEXTURE", "StreetSpec", "StyleSpec", "TEXTURE_NAMES",
           "list_domains", "plain_domain"]

