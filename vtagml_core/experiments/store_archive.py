"""The run store as something people share: export and import (listing, selecting and removing
runs is :mod:`.store_catalog`).

A teacher trains the quick preset once (``make reproduce``, or on a GPU), exports the store to
one archive and hands it to a class; students import it and the notebooks reuse every run
instead of training it ("found trained run ..., reusing").

**The archive** is a gzipped tar with ``MANIFEST.json`` at its top (format, format version, kit
version, and every file's SHA-256 and size), one folder per run and ``backbones/`` with the
frozen backbones the runs point to (each stored once, content-addressed: a run folder keeps only
what it trained). Identical files are carried once: a run whose best epoch was its last has
byte-identical ``best/`` and ``last/`` weights (21 of 24 quick runs measured), so the manifest
marks the second as ``copy_of`` the first and import copies it after verifying the first. A run is exported with its model folders (``best/``, ``last/``: safetensors +
JSON), its config, key, results, evaluations and log; the training state (``state.pt``) and
lock files stay behind: a finished run does not need them, and nothing pickled travels. The
pretrained backbone files the runs' keys name travel under ``pretrained/`` and are installed
into the importer's cache where missing (:mod:`.store_pretrained`): without the same bytes the
keys would differ and every run would be trained again.

**Import** is all or nothing: the members are checked before anything is written (regular
files only, no absolute paths, no ``..``, no links or devices, only ``.json``, ``.jsonl``,
``.safetensors`` and ``.md`` files, only what the manifest lists), extracted into a staging
folder inside the store while hashing, every hash and size compared with the manifest, every
model folder read back, and only then is each run moved into place with one rename. A
truncated, tampered or path-escaping archive leaves the store as it was. Two imports into one
store at once are serialised by a lock (the second says who holds it).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from vtagml_core import __version__
from vtagml_core.model.checkpoint import BLOB_KEY, BLOB_SUFFIX, BLOBS_DIR, CONFIG_FILE, tensors_digest
from vtagml_core.train.run_lock import RunLock
from vtagml_core.train.state import (BEST_DIR, LAST_DIR, RUN_CONFIG_FILE,
                                     CheckpointError, check_model_folder)

from .store_status import run_stale_reasons
from .store_pretrained import (PRETRAINED_DIR, default_pretrained_dir, file_sha256, install_pretrained,
                               pretrained_members)

#: Archive layout and format.
MANIFEST_FILE: str = "MANIFEST.json"
ARCHIVE_FORMAT: str = "vtagml-runs"
FORMAT_VERSION: int = 3  # 2: pretrained backbone files under pretrained/; 3: identical files once (copy_of)
#: File kinds an archive may carry (no pickle, no code).
ALLOWED_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".safetensors", ".md")
#: What stays out of an export: training states and lock files.
EXPORT_SKIP_PREFIXES: tuple[str, ...] = ("state", ".lock", ".")
#: The staging folders of imports and the lock of the store's importers.
STAGING_PREFIX, IMPORT_LOCK_DIR = ".import-", ".import-lock"
#: Bytes read at a time while hashing.
CHUNK: int = 1 << 20


class ArchiveError(ValueError):
    """An archive that cannot be imported (the message names why; nothing was imported)."""


def _export_files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*") if p.is_file()
                  and not any(part.startswith(EXPORT_SKIP_PREFIXES) for part in p.relative_to(run).parts)
                  and p.suffix in ALLOWED_SUFFIXES
                  and not any(part.endswith(".broken") for part in p.relative_to(run).parts))


def _blobs_of(run: Path) -> set[str]:
    """Digests of the backbone blobs a run's model folders point to."""
    out = set()
    for sub in (BEST_DIR, LAST_DIR):
        path = run / sub / CONFIG_FILE
        if path.is_file():
            digest = json.loads(path.read_text()).get(BLOB_KEY)
            if digest:
                out.add(digest)
    return out


def export_runs(runs: list[Path], out: Path, pretrained_dir: Path | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Write ``out`` (tar.gz): the runs' files, their backbones, the pretrained backbone files
    their keys name (from ``pretrained_dir``, default ``<cache>/backbones``), a manifest of
    hashes. Returns the manifest."""
    members: dict[str, Path] = {}
    for run in runs:
        for path in _export_files(run):
            members[f"{run.name}/{path.relative_to(run).as_posix()}"] = path
    digests = sorted(set().union(*(_blobs_of(r) for r in runs)))
    for digest in digests:
        blob = runs[0].parent / BLOBS_DIR / f"{digest}{BLOB_SUFFIX}"
        if not blob.is_file():
            raise ArchiveError(f"{blob} is missing from the store: the runs that use it cannot be "
                               "exported (they would not load)")
        members[f"{BLOBS_DIR}/{blob.name}"] = blob
    pretrained, missing = pretrained_members(runs, pretrained_dir or default_pretrained_dir())
    members.update(pretrained)
    if missing:
        log(f"  warning: no file in {pretrained_dir or default_pretrained_dir()} has the backbone "
            f"weights some runs were trained on (SHA-256 {', '.join(d[:12] for d in missing)}); "
            "whoever imports them needs the same file, or the settings will train those runs again")
    files, first_of = {}, {}   # first_of: SHA-256 -> the member that carries those bytes
    for name, path in members.items():
        digest = file_sha256(path)
        files[name] = {"sha256": digest, "size": path.stat().st_size}
        if digest in first_of:
            files[name]["copy_of"] = first_of[digest]
        else:
            first_of[digest] = name
    manifest = {"format": ARCHIVE_FORMAT, "format_version": FORMAT_VERSION, "kit_version": __version__,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": [r.name for r in runs],
                "backbones": digests, "pretrained": sorted(p.name for p in pretrained.values()),
                "files": files}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        member = tarfile.TarInfo(MANIFEST_FILE)
        member.size, member.mtime = len(data), int(time.time())
        tar.addfile(member, io.BytesIO(data))
        for name, path in members.items():
            if "copy_of" not in files[name]:
                tar.add(path, arcname=name, recursive=False)
    os.replace(tmp, out)
    return manifest


def _safe_name(name: str) -> str:
    """A member name as a relative POSIX path inside the archive, or ArchiveError."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or "\\" in name:
        raise ArchiveError(f"archive member {name!r} points outside the store; refused, nothing imported")
    return path.as_posix()


def _read_manifest(tar: tarfile.TarFile) -> dict:
    try:
        member = tar.getmember(MANIFEST_FILE)
        manifest = json.loads(tar.extractfile(member).read())
    except (KeyError, AttributeError, ValueError) as err:
        raise ArchiveError(f"the archive has no readable {MANIFEST_FILE} ({err}): it was not "
                           "written by `runs export`; nothing imported") from err
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"not a {ARCHIVE_FORMAT} archive (format {manifest.get('format')!r}); "
                           "nothing imported")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ArchiveError(
            f"the archive was written by a newer kit (kit {manifest.get('kit_version')}, archive "
            f"format {manifest['format_version']}; this kit {__version__} reads format "
            f"{FORMAT_VERSION}): update the kit, then import again; nothing imported")
    return manifest


def import_runs(archive: Path, store: Path, log: Callable[[str], None] = print,
                pretrained_dir: Path | None = None) -> list[str]:
    """Import the runs of ``archive`` into ``store`` (module docstring); returns their names.
    The pretrained backbone files it carries go to ``pretrained_dir`` (default
    ``<cache>/backbones``) where missing (:mod:`.store_pretrained`).

    Raises:
        ArchiveError: truncated, tampered, path-escaping, from a newer kit, conflicting with
            a different run of the same name, or a store that cannot be written; the store is
            unchanged in every case.
    """
    archive, store = Path(archive), Path(store)
    try:
        store.mkdir(parents=True, exist_ok=True)
        lock = RunLock(store / IMPORT_LOCK_DIR, log).acquire(wait=False)
    except OSError as err:
        raise ArchiveError(f"the run store {store} cannot be written ({err.strerror}); choose a "
                           "writable one with --store or $VTAGML_RUNS; nothing imported") from err
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=store))
        names = _extract_verified(archive, staging)
        _check_runs(staging, names, log)
        for name in names:
            dest = store / name
            if dest.exists():
                if _same_files(staging / name, dest):
                    log(f"  {name}: already in the store (identical), kept")
                    continue
                raise ArchiveError(f"{dest} already exists with other contents; remove it first "
                                   f"(`runs remove {name}`) to import this one; nothing imported")
        install_pretrained(staging / PRETRAINED_DIR, pretrained_dir or default_pretrained_dir(), log)
        if (staging / BLOBS_DIR).is_dir():   # backbones: content-addressed, kept if present
            (store / BLOBS_DIR).mkdir(exist_ok=True)
            for blob in (staging / BLOBS_DIR).iterdir():
                if not (store / BLOBS_DIR / blob.name).exists():
                    os.replace(blob, store / BLOBS_DIR / blob.name)
        imported = []
        for name in names:
            if not (store / name).exists():
                os.replace(staging / name, store / name)   # one rename per run: all or nothing
                imported.append(name)
        return imported
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _extract_verified(archive: Path, staging: Path) -> list[str]:
    """Extract into ``staging`` while hashing; every file checked against the manifest."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive} is not a readable archive ({err}); nothing imported") from err
    try:
        with tar:
            manifest = _read_manifest(tar)
            expected: dict = manifest["files"]
            runs = [_safe_name(r) for r in manifest["runs"]]
            if any("/" in r for r in runs):
                raise ArchiveError("the manifest names a run inside another folder; nothing imported")
            seen = set()
            for member in tar:
                name = _safe_name(member.name)
                if name == MANIFEST_FILE:
                    continue
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ArchiveError(f"archive member {name!r} is a link or device; refused, "
                                       "nothing imported")
                _check_member(name, expected, runs)
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                h, size = hashlib.sha256(), 0
                source = tar.extractfile(member)
                with target.open("wb") as out:
                    for chunk in iter(lambda: source.read(CHUNK), b""):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                if h.hexdigest() != expected[name]["sha256"] or size != expected[name]["size"]:
                    raise ArchiveError(f"{name} does not match its SHA-256 in the manifest: the "
                                       "archive was changed or damaged; nothing imported")
                seen.add(name)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ArchiveError(f"{archive} is truncated or damaged ({type(err).__name__}: {err}); "
                           "nothing imported") from err
    seen |= _restore_copies(expected, seen, staging, runs)
    missing = sorted(set(expected) - seen)
    if missing:
        raise ArchiveError(f"the archive lacks {len(missing)} file(s) of its manifest (e.g. "
                           f"{missing[0]}): truncated; nothing imported")
    return runs


def _check_member(name: str, expected: dict, runs: list[str]) -> None:
    """A file the archive may write: a safetensors/JSON file the manifest lists, inside a run
    the manifest names or the backbone folders (``name`` already passed :func:`_safe_name`)."""
    if PurePosixPath(name).suffix not in ALLOWED_SUFFIXES:
        raise ArchiveError(f"archive member {name!r} is not a safetensors/JSON file; "
                           "refused (no pickled or executable files), nothing imported")
    top = name.split("/")[0]
    if name not in expected or (top not in runs and top not in (BLOBS_DIR, PRETRAINED_DIR)):
        raise ArchiveError(f"archive member {name!r} is not in the manifest; refused, "
                           "nothing imported")


def _restore_copies(expected: dict, seen: set[str], staging: Path, runs: list[str]) -> set[str]:
    """Write each manifest entry marked ``copy_of`` from its verified source in ``staging``
    (the source was hashed on extraction; the copy must name the same SHA-256 and size)."""
    restored = set()
    for name, entry in expected.items():
        source = entry.get("copy_of")
        if source is None or name in seen:
            continue
        _check_member(_safe_name(name), expected, runs)
        if source not in seen or expected[source]["sha256"] != entry["sha256"] \
                or expected[source]["size"] != entry["size"]:
            raise ArchiveError(f"{name} is marked as a copy of {source!r}, which the archive does "
                               "not carry with the same SHA-256; nothing imported")
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staging / source, target)
        restored.add(name)
    return restored


def _check_runs(staging: Path, names: list[str], log: Callable[[str], None]) -> None:
    """Every run has its config and loadable model folders, every backbone is what its name
    says (content address); code revisions are compared."""
    from safetensors.torch import load_file

    for blob in sorted((staging / BLOBS_DIR).glob(f"*{BLOB_SUFFIX}")):
        try:
            digest = tensors_digest(load_file(str(blob)))
        except Exception as err:  # safetensors raises several types for damaged files
            raise ArchiveError(f"backbone {blob.name} in the archive is unreadable ({err}); "
                               "nothing imported") from err
        if blob.name != f"{digest}{BLOB_SUFFIX}":
            raise ArchiveError(f"backbone {blob.name} in the archive does not hold what its name "
                               "says (content address mismatch); nothing imported")

    for name in names:
        run = staging / name
        try:
            json.loads((run / RUN_CONFIG_FILE).read_text())
            for sub in (BEST_DIR, LAST_DIR):
                if (run / sub / CONFIG_FILE).exists():
                    check_model_folder(run / sub)
        except (OSError, ValueError, CheckpointError) as err:
            raise ArchiveError(f"run {name} in the archive is incomplete or unreadable ({err}); "
                               "nothing imported") from err
        reasons = run_stale_reasons(run)
        if reasons:
            log(f"  warning: {name} is imported, but this kit will not reuse it (its key differs "
                f"from what the settings ask for): {'; '.join(reasons)}")


def _same_files(a: Path, b: Path) -> bool:
    fa = {p.relative_to(a): file_sha256(p) for p in _export_files(a)}
    fb = {p.relative_to(b): file_sha256(p) for p in _export_files(b)}
    return fa == fb


__all__ = ["ARCHIVE_FORMAT", "ArchiveError", "FORMAT_VERSION", "MANIFEST_FILE", "export_runs",
           "import_runs"]
