"""Domain names -> specs: the one front door for plain and graded-shift names.

``indoor`` names a domain of :data:`.domains.DOMAINS`; ``indoor_shift@0.4`` (or
``indoor_shift@appearance=0.4,camera=1``) names a target at a severity between its source and
itself (:mod:`.shift`). Everything that takes a domain name from a user (configs, settings, the
CLI, the renderer, the cache) resolves it here, so every module accepts the same names and
spells them the same way (run keys and cache folders agree).
"""
from __future__ import annotations

from .domains import MIXED_DOMAIN, SHIFT_MARKER, DomainSpec, plain_domain
from .shift import canonical_domain_name, shifted_domain


def get_domain(name: str) -> DomainSpec:
    """The :class:`DomainSpec` called ``name``; ``target@severity`` names an interpolated spec.

    Raises:
        ValueError: for an unknown name or a bad severity, naming it and what is valid.
    """
    if isinstance(name, str) and SHIFT_MARKER in name:
        return shifted_domain(name)
    return plain_domain(name)


def check_domain_name(name: str) -> str:
    """``name`` if it is a domain or :data:`.domains.MIXED_DOMAIN`; a shifted name comes back in
    its canonical spelling (``indoor_shift@0.40`` -> ``indoor_shift@0.4``). Else ValueError."""
    if isinstance(name, str) and SHIFT_MARKER in name:
        return canonical_domain_name(name)
    if name != MIXED_DOMAIN:
        plain_domain(name)
    return name


__all__ = ["check_domain_name", "get_domain"]
