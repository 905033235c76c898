"""Is a stored run one this kit would still reuse? *current*, or *stale* with the reasons.

A setting, notebook or ``train`` call reuses a run when it asks for the run's key, and the key
hashes the kit version, the method's code revision, the synthetic renderer's version and the
SHA-256 of the backbone weights file (:mod:`vtagml_core.experiments.runs`). A run whose recorded
key payload (``run_key.json``) differs from this kit in any of them is never asked for again:
it only takes space, and an archive for a class should leave it out. ``runs list`` marks such
runs, ``runs export --current`` exports only the others, ``runs remove --stale`` deletes them,
and ``runs import`` warns about them.
"""
from __future__ import annotations

import json
from pathlib import Path

from vtagml_core import __version__

from .runs import RUN_INFO_FILE
from .store_pretrained import WEIGHTS_SUFFIX, default_pretrained_dir, file_sha256


def available_backbones(directory: Path | None = None) -> set[str]:
    """SHA-256 digests of the pretrained backbone files in ``directory`` (default
    ``<cache>/backbones``): the weights a run key may name and still be asked for here."""
    directory = directory or default_pretrained_dir()
    if not directory.is_dir():
        return set()
    return {file_sha256(p) for p in directory.glob(f"*{WEIGHTS_SUFFIX}") if not p.name.startswith(".")}


def stale_reasons(payload: dict, backbones: set[str] | None = None) -> list[str]:
    """Why a run with this key payload would not be reused by this kit (empty: it would).

    Args:
        payload: the run's recorded key payload (``run_key.json``'s ``payload``).
        backbones: digests of the backbone files at hand (:func:`available_backbones`); ``None``
            skips that check (an import: the archive brings its backbone along).
    """
    from vtagml_core.baselines.registry import method_revision
    from vtagml_core.config import from_dict
    from vtagml_core.data.config import DataConfig

    reasons = []
    if payload.get("kit_version") != __version__:
        reasons.append(f"trained by kit {payload.get('kit_version')} (this kit: {__version__})")
    method = payload.get("method", "")
    try:
        now = method_revision(method)
    except (KeyError, ValueError):
        reasons.append(f"method {method!r} is not in this kit")
    else:
        if payload.get("method_revision", 0) != now:
            reasons.append(f"method revision {payload.get('method_revision', 0)} (this kit: {now})")
    config = payload.get("config", {})
    try:
        expected = from_dict(DataConfig, config.get("data", {})).generator_stamp()
    except (TypeError, ValueError):
        expected = None
    recorded = {k: v for k, v in payload.items() if k == "data_generator"}
    if expected is not None and recorded != expected:
        reasons.append(f"rendered by data generator {recorded.get('data_generator', '2 or older')} "
                       f"(this kit: {expected.get('data_generator', 'unstamped')})")
    weights = config.get("model", {}).get("backbone", {}).get("weights")
    if backbones is not None and isinstance(weights, dict) and weights.get("sha256") not in backbones:
        reasons.append(f"its backbone weights (SHA-256 {str(weights.get('sha256'))[:12]}) are not "
                       "among this cache's pretrained backbones")
    return reasons


def run_stale_reasons(folder: Path, backbones: set[str] | None = None) -> list[str]:
    """:func:`stale_reasons` of a run folder (a folder without ``run_key.json``: none known)."""
    info = folder / RUN_INFO_FILE
    if not info.is_file():
        return []
    return stale_reasons(json.loads(info.read_text()).get("payload", {}), backbones)


__all__ = ["available_backbones", "run_stale_reasons", "stale_reasons"]
