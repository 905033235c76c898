"""The pretrained backbone files a store's runs were trained on, carried in an archive.

A run's key names its frozen backbone's weights file by the SHA-256 of its bytes
(:func:`vtagml_core.experiments.runs.key_config`). The kit's pretext-pretrained backbone
(``model.backbone.weights: pretext``) is such a file in the data cache,
``<cache>/backbones/<name>-<size>-s<seed>.safetensors``, pretrained by the first run that needs
it (about 4 minutes on a 2-core CPU). A student who imports a teacher's runs needs the *same*
bytes: a backbone pretrained again on another machine can differ in the last bits (float
reductions differ between CPUs), and then every key differs and every run is trained again.

So ``runs export`` adds the pretrained files its runs name (found in the cache by their hash)
under ``pretrained/`` with their ``.json`` records, and ``runs import`` installs each into the
cache when it is missing. A file already there with other bytes is kept, with a warning that
says what to do: the user's own backbone is never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from .runs import RUN_INFO_FILE

#: Top folder of an archive that holds pretrained backbone files.
PRETRAINED_DIR: str = "pretrained"
#: Suffixes of a pretrained backbone (the weights) and of its record.
WEIGHTS_SUFFIX, RECORD_SUFFIX = ".safetensors", ".json"
#: Bytes read at a time while hashing.
CHUNK: int = 1 << 20


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def default_pretrained_dir() -> Path:
    """Where the kit keeps pretrained backbones: ``<cache>/backbones``."""
    from vtagml_core.data.cache import default_cache_root
    from vtagml_core.train.pretrain import BACKBONES_DIR

    return default_cache_root() / BACKBONES_DIR


def referenced_digests(runs: Iterable[Path]) -> set[str]:
    """SHA-256 digests of the backbone weights files the runs' keys name (none: random init)."""
    out = set()
    for run in runs:
        info = run / RUN_INFO_FILE
        if not info.is_file():
            continue
        weights = (json.loads(info.read_text()).get("payload", {}).get("config", {})
                   .get("model", {}).get("backbone", {}).get("weights"))
        if isinstance(weights, dict) and weights.get("sha256"):
            out.add(weights["sha256"])
    return out


def pretrained_members(runs: list[Path], directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Archive members ``pretrained/<file>`` of the backbone files the runs name, and the digests
    that no file in ``directory`` has (runs trained on a file from elsewhere)."""
    wanted = referenced_digests(runs)
    members: dict[str, Path] = {}
    found = set()
    for weights in sorted(directory.glob(f"*{WEIGHTS_SUFFIX}")) if directory.is_dir() else []:
        if weights.name.startswith(".") or not wanted - found:
            continue
        digest = file_sha256(weights)
        if digest in wanted:
            found.add(digest)
            members[f"{PRETRAINED_DIR}/{weights.name}"] = weights
            record = weights.with_suffix(RECORD_SUFFIX)
            if record.is_file():
                members[f"{PRETRAINED_DIR}/{record.name}"] = record
    return members, sorted(wanted - found)


def _copy_atomic(source: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def install_pretrained(staged: Path, directory: Path, log: Callable[[str], None]) -> list[Path]:
    """Install the staged ``pretrained/`` files into ``directory`` where missing; returns the
    weights files installed. The record is written first and the weights last (the weights file
    marks a finished install, as :func:`vtagml_core.train.pretrain.install_pretrained` does)."""
    installed = []
    if not staged.is_dir():
        return installed
    for weights in sorted(staged.glob(f"*{WEIGHTS_SUFFIX}")):
        dest = directory / weights.name
        if dest.is_file():
            if file_sha256(dest) != file_sha256(weights):
                log(f"  warning: {dest} holds another pretrained backbone than the one the imported "
                    "runs were trained on; it is kept, so the notebooks will not reuse those runs. "
                    "Move it away and import again to use the archive's backbone.")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        record = weights.with_suffix(RECORD_SUFFIX)
        if record.is_file():
            _copy_atomic(record, dest.with_suffix(RECORD_SUFFIX))
        _copy_atomic(weights, dest)
        installed.append(dest)
        log(f"  pretrained backbone {weights.name} installed in {directory}")
    return installed


__all__ = ["PRETRAINED_DIR", "default_pretrained_dir", "file_sha256", "install_pretrained",
           "pretrained_members", "referenced_digests"]
