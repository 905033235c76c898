"""Graded domain shift: a target domain at a severity between its source and itself.

Each shift target names its source (:data:`.domains.SHIFT_SOURCES`: ``indoor_shift`` and
``comic`` <- ``indoor``, ``street_shift`` <- ``street``). :func:`interpolate_domain` moves
every field of the :class:`~.specs.DomainSpec` from the source (severity 0) to the target
(severity 1), separately per factor (:data:`FACTORS`, fields assigned by
:data:`FIELD_FACTORS`):

==========  ======================================================================
factor      fields
==========  ======================================================================
appearance  palettes, texture weights/frequency/contrast, colour jitter, sensor noise,
            comic style
lighting    ambient, intensity, light elevation and colour, depth falloff, fog, sky
camera      camera height, pitch, yaw, roll, field of view (room and street)
layout      room and street geometry, object counts, layout kind weights
==========  ======================================================================

How each kind of field moves, with ``s`` the severity of its factor, ``lerp = (1-s) a + s b``:

* ``Range`` and ``float``: ``lerp`` per endpoint (a probability stays one);
* ``IntRange`` (object counts): ``lerp`` per endpoint, rounded half up (monotone, so low <= high);
* ``RGB``: ``lerp`` per channel, rounded half up to uint8;
* palettes: a key both sides have gets ``lcm(n_a, n_b)`` candidates, candidate ``i`` the
  ``lerp`` of source colour ``i mod n_a`` and target colour ``i mod n_b`` (each endpoint's
  colours stay equally likely); a key one side lacks keeps the other side's colours, at any
  severity (so ``comic@layout=1`` finds street colours in ``indoor``'s palette);
* texture weights: normalised, then ``lerp``; a key one side lacks counts as its ``default``;
* layout kind weights (not interpolable as kinds): the weights are normalised and
  ``lerp``-ed, so a kind the source lacks (``indoor`` -> ``comic``: streets) appears in a
  fraction ``s`` of the target's share of scenes; a room/street spec only one side has is
  taken whole from it;
* the comic style (a switch, not a quantity): the whole :class:`~.specs.StyleSpec` is the
  source's below ``appearance`` severity :data:`SWITCH_AT`, the target's from it on.

A factor at exactly 0 keeps the source's fields, at exactly 1 takes the target's (palettes
gain the other side's extra keys), and severity 0 on every factor returns the source spec
itself (byte-identical renders), 1 the target spec.

**Names.** ``<target>@<s>`` sets every factor to ``s``; ``<target>@<factor>=<s>,...`` sets
the named factors (the others stay 0), e.g. ``indoor_shift@appearance=0.4,camera=1``. ``s`` is
a decimal in [0, 1] with at most :data:`SEVERITY_DECIMALS` decimals. :func:`parse_domain_name`
is the one parser; :func:`canonical_domain_name` the one spelling (cache folders, manifests).
A shifted domain draws its scene seeds from the target's name (:func:`seed_domain_name`), so
every severity of a target renders the same scene seeds, and ``@1`` the target's own splits.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache

from .domains import (DOMAINS, SHIFT_MARKER, SHIFT_SOURCES, DomainSpec, _validate,
                      plain_domain)

#: The shift factors, in canonical order.
FACTORS: tuple[str, ...] = ("appearance", "lighting", "camera", "layout")
#: Named severity levels (ImageNet-C style): level k -> s. The one home of this table.
SEVERITY_LEVELS: dict[int, float] = {1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 1.0}
#: Appearance severity from which a switched field (the comic style) takes the target's value.
SWITCH_AT: float = 0.5
#: Decimals a severity may have in a domain name (keeps cache folder names short and exact).
SEVERITY_DECIMALS: int = 3
#: Spec field path (prefix) -> factor; the longest matching prefix wins.
FIELD_FACTORS: dict[str, str] = {
    "appearance": "appearance", "style": "appearance", "lighting.noise_sigma": "appearance",
    "lighting": "lighting",
    "room.camera": "camera", "street.camera": "camera",
    "room": "layout", "street": "layout", "layout_weights": "layout",
}
SYNTAX_HINT: str = (f"write <target>{SHIFT_MARKER}<s> or <target>{SHIFT_MARKER}<factor>=<s>,... "
                    f"with s in [0, 1] (at most {SEVERITY_DECIMALS} decimals) and factors "
                    f"{', '.join(FACTORS)}; e.g. indoor_shift{SHIFT_MARKER}0.4 or "
                    f"indoor_shift{SHIFT_MARKER}appearance=0.4,camera=1")
_VALUE_RE = re.compile(rf"^(0(\.\d{{1,{SEVERITY_DECIMALS}}})?|1(\.0{{1,{SEVERITY_DECIMALS}}})?)$")


@dataclass(frozen=True)
class Severity:
    """One shift severity per factor, each in [0, 1] (0 = source, 1 = target)."""

    appearance: float = 0.0
    lighting: float = 0.0
    camera: float = 0.0
    layout: float = 0.0

    def __post_init__(self) -> None:
        for name in FACTORS:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not 0.0 <= value <= 1.0):
                raise ValueError(f"severity {name}={value!r} must be a number in [0, 1] "
                                 f"(0 = source domain, 1 = target domain)")
            object.__setattr__(self, name, float(value))

    @classmethod
    def uniform(cls, s: float) -> "Severity":
        """Every factor at ``s``."""
        return cls(**{name: s for name in FACTORS})

    @classmethod
    def from_level(cls, level: int) -> "Severity":
        """Every factor at the named level's ``s`` (:data:`SEVERITY_LEVELS`)."""
        if level not in SEVERITY_LEVELS or isinstance(level, bool):
            raise ValueError(f"severity level must be one of {', '.join(map(str, SEVERITY_LEVELS))} "
                             f"(s = {', '.join(map(str, SEVERITY_LEVELS.values()))}), got {level!r}")
        return cls.uniform(SEVERITY_LEVELS[level])

    @classmethod
    def parse(cls, text: str) -> "Severity":
        """``"0.4"`` (every factor) or ``"appearance=0.4,camera=1"`` (the others 0).

        Raises:
            ValueError: naming the bad part and the syntax (:data:`SYNTAX_HINT`).
        """
        if "=" not in text:
            return cls.uniform(_parse_value(text))
        values: dict[str, float] = {}
        for item in text.split(","):
            factor, _, value = item.partition("=")
            factor = factor.strip()
            if factor not in FACTORS:
                raise ValueError(f"unknown shift factor {factor!r} in {text!r}; {SYNTAX_HINT}")
            if factor in values:
                raise ValueError(f"shift factor {factor!r} given twice in {text!r}; {SYNTAX_HINT}")
            values[factor] = _parse_value(value.strip(), factor)
        return cls(**values)

    def of(self, factor: str) -> float:
        """The severity of ``factor`` (one of :data:`FACTORS`)."""
        return getattr(self, factor)

    def as_dict(self) -> dict[str, float]:
        """``{factor: s}`` in :data:`FACTORS` order."""
        return {name: self.of(name) for name in FACTORS}

    @property
    def is_zero(self) -> bool:
        """Every factor at 0: the source domain."""
        return all(self.of(n) == 0.0 for n in FACTORS)

    @property
    def is_full(self) -> bool:
        """Every factor at 1: the target domain."""
        return all(self.of(n) == 1.0 for n in FACTORS)

    def suffix(self, strict: bool = True) -> str:
        """Canonical text after the marker: ``"0.4"``, or ``"appearance=0.4,camera=1"``.

        Raises:
            ValueError: ``strict`` and a value with more than :data:`SEVERITY_DECIMALS`
                decimals (``strict=False`` writes it in full: a label, not a domain name).
        """
        texts = {name: _format_value(self.of(name), name, strict) for name in FACTORS}
        if len(set(texts.values())) == 1:
            return texts[FACTORS[0]]
        return ",".join(f"{n}={t}" for n, t in texts.items() if self.of(n) != 0.0)


def _parse_value(text: str, factor: str = "") -> float:
    if not _VALUE_RE.match(text):
        raise ValueError(f"severity {text!r}{' of ' + factor if factor else ''} is not a number "
                         f"in [0, 1] with at most {SEVERITY_DECIMALS} decimals; {SYNTAX_HINT}")
    return float(text)


def _format_value(s: float, what: str, strict: bool = True) -> str:
    if round(s, SEVERITY_DECIMALS) != s:
        if not strict:
            return repr(s)
        raise ValueError(f"{what} severity {s!r} has more than {SEVERITY_DECIMALS} decimals, "
                         f"which a domain name cannot hold; round it (e.g. {round(s, 3)})")
    return f"{s:.{SEVERITY_DECIMALS}f}".rstrip("0").rstrip(".")


# ----------------------------------------------------------------------------- names
def parse_domain_name(name: str) -> tuple[str, Severity]:
    """``"indoor_shift@0.4"`` -> ``("indoor_shift", Severity.uniform(0.4))``.

    Raises:
        ValueError: no or several markers, a target without a source, a bad severity.
    """
    target, marker, text = name.partition(SHIFT_MARKER)
    if not marker or SHIFT_MARKER in text or not text:
        raise ValueError(f"{name!r} is not a shifted domain name; {SYNTAX_HINT}")
    if target not in SHIFT_SOURCES:
        what = "is not a domain" if target not in DOMAINS else "has no shift source"
        raise ValueError(f"{name!r}: {target!r} {what}; shift targets (with their "
                         f"source): " + ", ".join(f"{t} (<- {s})" for t, s in SHIFT_SOURCES.items()))
    return target, Severity.parse(text)


def shifted_name(target: str, severity: Severity | float) -> str:
    """The canonical name of ``target`` at ``severity`` (a float sets every factor)."""
    if not isinstance(severity, Severity):
        severity = Severity.uniform(severity)
    return canonical_domain_name(f"{target}{SHIFT_MARKER}{severity.suffix()}")


def canonical_domain_name(name: str) -> str:
    """One spelling per shifted domain: ``indoor_shift@0.40`` -> ``indoor_shift@0.4``,
    ``x@appearance=1,lighting=1,camera=1,layout=1`` -> ``x@1``. Other names pass through."""
    if SHIFT_MARKER not in name:
        return name
    target, severity = parse_domain_name(name)
    return f"{target}{SHIFT_MARKER}{severity.suffix()}"


def seed_domain_name(name: str) -> str:
    """The name whose scene seeds a domain uses: the target's for a shifted name (so all
    severities share them and ``@1`` renders the target's splits), else ``name`` itself."""
    return name.partition(SHIFT_MARKER)[0]


def shift_info(name: str) -> dict | None:
    """``{"target", "source", "severity": {factor: s}}`` of a shifted name (for manifests),
    None for a plain domain."""
    if SHIFT_MARKER not in name:
        return None
    target, severity = parse_domain_name(name)
    return {"target": target, "source": SHIFT_SOURCES[target], "severity": severity.as_dict()}


@lru_cache(maxsize=None)
def shifted_domain(name: str) -> DomainSpec:
    """The spec of a shifted name (``indoor_shift@0.4``), validated; cached per name."""
    target, severity = parse_domain_name(name)
    spec = interpolate_domain(plain_domain(SHIFT_SOURCES[target]), plain_domain(target), severity)
    _validate(spec)
    return spec


# ----------------------------------------------------------------------------- interpolation
def interpolate_domain(source: DomainSpec, target: DomainSpec,
                       severity: Severity | float) -> DomainSpec:
    """``source`` moved towards ``target`` by ``severity`` (a float sets every factor).

    Returns ``source`` itself at severity 0 and ``target`` itself at 1; otherwise a spec
    named ``<target>@<severity>`` (rules in the module docstring). Any float severity works
    here; only domain names are limited to :data:`SEVERITY_DECIMALS` decimals.
    """
    if not isinstance(severity, Severity):
        severity = Severity.uniform(severity)
    if severity.is_zero:
        return source
    if severity.is_full:
        return target
    suffix = severity.suffix(strict=False)
    return DomainSpec(
        name=f"{target.name}{SHIFT_MARKER}{suffix}",
        description=f"{target.name} at severity {suffix} (0 = {source.name}, 1 = {target.name})",
        layout_weights=_endpoint_or_mix(source.layout_weights, target.layout_weights,
                                        severity.layout, _mix_weights),
        appearance=_mix_spec(source.appearance, target.appearance, severity, "appearance"),
        lighting=_mix_spec(source.lighting, target.lighting, severity, "lighting"),
        room=_mix_optional(source.room, target.room, severity, "room"),
        street=_mix_optional(source.street, target.street, severity, "street"),
        style=source.style if severity.of(factor_of("style")) < SWITCH_AT else target.style,
    )


def factor_of(path: str) -> str:
    """The factor of a spec field path such as ``"room.camera.height"`` (:data:`FIELD_FACTORS`).

    Raises:
        KeyError: a field no factor covers (add it to :data:`FIELD_FACTORS`).
    """
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FIELD_FACTORS:
            return FIELD_FACTORS[prefix]
    raise KeyError(f"spec field {path!r} belongs to no shift factor; add it to FIELD_FACTORS")


def _lerp(a: float, b: float, s: float) -> float:
    return (1.0 - s) * a + s * b


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _mix_rgb(a: tuple[int, ...], b: tuple[int, ...], s: float) -> tuple[int, ...]:
    return tuple(_round_half_up(_lerp(x, y, s)) for x, y in zip(a, b))


def _mix_optional(a, b, severity: Severity, path: str):
    """A room/street spec: interpolated if both sides have one, else the one there is."""
    if a is None or b is None:
        return b if a is None else a
    return _mix_spec(a, b, severity, path)


def _mix_spec(a, b, severity: Severity, path: str):
    """Interpolate the fields of spec dataclass ``a`` towards ``b``, each by its factor."""
    values = {}
    for f in fields(a):
        where = f"{path}.{f.name}"
        x, y = getattr(a, f.name), getattr(b, f.name)
        if is_dataclass(x):
            values[f.name] = _mix_spec(x, y, severity, where)
        elif f.name == "palette":  # every key of either side, at any s: layouts need them
            values[f.name] = _mix_palette(x, y, severity.of(factor_of(where)))
        else:
            values[f.name] = _endpoint_or_mix(
                x, y, severity.of(factor_of(where)),
                lambda u, v, s, f=f, where=where: _mix_value(f.name, f.type, u, v, s, where))
    return type(a)(**values)


def _endpoint_or_mix(a, b, s: float, mix):
    """``a`` at s = 0 and ``b`` at s = 1 exactly (the same objects), else ``mix(a, b, s)``."""
    if s == 0.0:
        return a
    if s == 1.0:
        return b
    return mix(a, b, s)


def _mix_value(name: str, kind: str, a, b, s: float, where: str):
    """One leaf field at severity ``0 < s < 1``, by its annotated type."""
    if kind == "Range":
        return (_lerp(a[0], b[0], s), _lerp(a[1], b[1], s))
    if kind == "IntRange":
        return (_round_half_up(_lerp(a[0], b[0], s)), _round_half_up(_lerp(a[1], b[1], s)))
    if kind == "RGB":
        return _mix_rgb(a, b, s)
    if kind == "float":
        return _lerp(a, b, s)
    if name == "texture_weights":
        return _mix_texture_weights(a, b, s)
    raise TypeError(f"no interpolation rule for spec field {where} ({kind}); add one to "
                    "vtagml_core/data/synthetic/shift.py")


def _mix_palette(a: dict, b: dict, s: float) -> dict:
    """Palettes at any ``s`` in [0, 1]: keys of both sides (a key one side lacks keeps the
    other's colours, so a layout kind the source lacks finds its colours even at s = 0)."""
    out = {}
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in a or key not in b:
            out[key] = a.get(key, b.get(key))
        else:
            out[key] = _endpoint_or_mix(a[key], b[key], s, _mix_colors)
    return out


def _mix_colors(a: tuple, b: tuple, s: float) -> tuple:
    """``lcm(n_a, n_b)`` candidates: colour ``i`` mixes ``a[i % n_a]`` and ``b[i % n_b]``."""
    return tuple(_mix_rgb(a[i % len(a)], b[i % len(b)], s)
                 for i in range(math.lcm(len(a), len(b))))


def _normalised(w: tuple[float, ...]) -> list[float]:
    total = sum(w)
    return [x / total for x in w]


def _mix_texture_weights(a: dict, b: dict, s: float) -> dict:
    out = {}
    for key in [*a, *(k for k in b if k not in a)]:
        pa, pb = _normalised(a.get(key, a["default"])), _normalised(b.get(key, b["default"]))
        out[key] = tuple(_lerp(x, y, s) for x, y in zip(pa, pb))
    return out


def _mix_weights(a: dict[str, float], b: dict[str, float], s: float) -> dict[str, float]:
    """Layout kind weights, normalised and interpolated; kinds at weight 0 are dropped."""
    ta, tb = sum(a.values()), sum(b.values())
    mixed = {k: _lerp(a.get(k, 0.0) / ta, b.get(k, 0.0) / tb, s)
             for k in [*a, *(k for k in b if k not in a)]}
    return {k: w for k, w in mixed.items() if w > 0}
