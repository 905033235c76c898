"""The data types of a synthetic domain: :class:`DomainSpec` and its parts (pure data).

Every number that shapes a domain is a named field. Ranges are ``(low, high)`` pairs sampled
uniformly per scene; integer count ranges are inclusive. Colours are RGB uint8 tuples. The
field type annotations (``Range``, ``IntRange``, ``RGB``, ``float``, ...) are read by
:func:`check_values` and by :mod:`.shift`, which interpolates each kind of field its own way.
The named domains live in :mod:`.domains`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass

RGB = tuple[int, int, int]
Range = tuple[float, float]
IntRange = tuple[int, int]

#: Texture type ids (stored in the pretext ``texture`` maps). ``sky`` is only used for sky
#: pixels; materials draw from the first :data:`NUM_SURFACE_TEXTURES` types.
TEXTURE_NAMES: tuple[str, ...] = ("plain", "stripes", "checker", "dots", "noise", "sky")
SKY_TEXTURE: int = TEXTURE_NAMES.index("sky")
NUM_SURFACE_TEXTURES: int = SKY_TEXTURE



@dataclass(frozen=True)
class CameraSpec:
    """Pinhole camera pose ranges, in degrees. Pitch > 0 looks down; roll tilts the camera about
    its optical axis (a hand-held camera; 0 = a level horizon); fov is horizontal."""

    height: Range
    pitch_deg: Range
    yaw_deg: Range
    fov_deg: Range
    roll_deg: Range = (0.0, 0.0)


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

    ``palette_overlap`` is the probability that a material takes its base colour from the
    domain's shared pool (:func:`shared_palette`: every key's colours together) instead of its
    own key's colours. At 0 (the default, every named domain) each class keeps its own colours
    and no random number is drawn for it, so renders stay byte-identical; at 1 every class
    draws from the same colours and only shape, size, placement, texture and context tell the
    classes apart (project issue 15, item 2).
    """

    palette: dict[str, tuple[RGB, ...]]
    texture_weights: dict[str, tuple[float, ...]]
    color_jitter: float
    texture_frequency: Range
    texture_contrast: Range
    palette_overlap: float = 0.0


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


#: Largest value of a colour channel (colours are uint8).
CHANNEL_MAX: int = 255
#: Field types (as annotated) whose values must lie in [0, 1].
_PROBABILITY_FIELDS: frozenset[str] = frozenset({"building_gap_prob", "palette_overlap"})


def shared_palette(palette: dict[str, tuple[RGB, ...]]) -> tuple[RGB, ...]:
    """Every colour of ``palette`` once, in key order then colour order: the pool that
    :attr:`AppearanceSpec.palette_overlap` draws from (parts such as ``skin`` included)."""
    return tuple(dict.fromkeys(c for colors in palette.values() for c in colors))


def check_values(spec: object, path: str = "") -> None:
    """Check every field of a spec dataclass by its annotated type (recursively).

    ``Range``: two numbers with low <= high; ``IntRange``: two ints with 0 <= low <= high;
    ``RGB``: three ints in [0, 255] (palette entries too); ``float`` fields: finite and >= 0
    (probabilities also <= 1).

    Raises:
        ValueError: naming the field path and the bad value.
    """
    for f in fields(spec):
        value, where = getattr(spec, f.name), f"{path}{f.name}"
        if is_dataclass(value):
            check_values(value, where + ".")
        elif f.type == "Range":
            if not (len(value) == 2 and all(map(_is_finite, value)) and value[0] <= value[1]):
                raise ValueError(f"{where} must be a (low, high) pair with low <= high, got {value!r}")
        elif f.type == "IntRange":
            if not (len(value) == 2 and all(_is_int(v) and v >= 0 for v in value)
                    and value[0] <= value[1]):
                raise ValueError(f"{where} must be (low, high) non-negative ints with "
                                 f"low <= high, got {value!r}")
        elif f.type == "RGB":
            _check_rgb(value, where)
        elif f.name == "palette":
            for key, colors in value.items():
                if not colors:
                    raise ValueError(f"{where}[{key!r}] needs at least one colour")
                for color in colors:
                    _check_rgb(color, f"{where}[{key!r}]")
        elif f.type == "float":
            high = 1.0 if f.name in _PROBABILITY_FIELDS else math.inf
            if not (_is_finite(value) and 0.0 <= value <= high):
                raise ValueError(f"{where} must be a number in [0, {high}], got {value!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_rgb(value: object, where: str) -> None:
    if not (isinstance(value, tuple) and len(value) == 3
            and all(_is_int(c) and 0 <= c <= CHANNEL_MAX for c in value)):
        raise ValueError(f"{where} must be an RGB triple of ints in [0, {CHANNEL_MAX}], "
                         f"got {value!r}")
