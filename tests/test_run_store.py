"""The one run store: the CLI and the notebooks reuse each other's runs; archives round-trip
byte for byte; tampered, truncated, path-escaping or newer archives are refused and leave the
store unchanged; hub-style loading."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtagml_core.baselines.factory import load_model
from vtagml_core.cli import main
from vtagml_core.experiments import store_archive as sa
from vtagml_core.experiments import store_catalog as sc
from vtagml_core.experiments.runs import RunSpec
from vtagml_core.model.checkpoint import WEIGHTS_FILE
from vtagml_core.model.vtagml import VTAGML
from vtagml_core.notebooks.params import resolve
from vtagml_core.notebooks.settings_glue import settings_context
from vtagml_core.train.run_lock import RunLock

#: The smoke preset, shortened to two optimizer steps.
SHORT = ["--set", "train.max_steps=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with one run trained by the CLI (smoke preset), and the data cache it used."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTAGML_CACHE", str(root / "cache"))
        mp.setenv("VTAGML_RUNS", str(root / "runs"))
        assert main(["train", "--preset", "smoke", *SHORT]) == 0
        yield root / "runs"


def _state(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".lock")}


def test_the_cli_and_a_notebook_share_one_run(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VTAGML_CACHE", str(store.parent / "cache"))
    monkeypatch.setenv("VTAGML_RUNS", str(store))
    monkeypatch.setenv("VTAGML_NB_HEADLESS", "1")
    monkeypatch.delenv("VTAGML_NB_PRESET", raising=False)
    monkeypatch.delenv("VTAGML_NB_OUTPUT", raising=False)
    [run] = [p for p in store.iterdir() if p.name.startswith("vtagml-")]
    # a notebook asking for the same preset and seed finds the CLI's run
    P = resolve(preset="smoke", overrides=["train.max_steps=2"], device="cpu",
                output_dir=str(tmp_path / "nb"))
    ctx = settings_context(P, log=lambda m: None)
    record = ctx.train(RunSpec("notebook", ctx.config(P.cfg.model.tasks, seed=0), "vtagml"))
    assert record.dir == run and not record.trained_now
    assert "smoke" in json.loads((run / "run_key.json").read_text())["presets"]
    # ... and the CLI finds what a notebook trained (another seed, trained by the notebook first)
    other = ctx.train(RunSpec("notebook", ctx.config(P.cfg.model.tasks, seed=1), "vtagml"))
    assert other.trained_now
    capsys.readouterr()
    assert main(["train", "--preset", "smoke", *SHORT, "--set", "train.seed=1"]) == 0
    assert f"found trained run {other.dir.name}" in capsys.readouterr().out


def test_runs_in_the_store_keep_the_frozen_backbone_once(store):
    """The smoke preset's frozen backbone is random, drawn from the seed: one blob per seed, shared
    by the run's best/ and last/ (with the quick preset's pretext backbone: one for all runs)."""
    runs = [p for p in store.iterdir() if p.name.startswith("vtagml-")]
    blobs = {p.stem for p in (store / "backbones").glob("*.safetensors")}
    used = set()
    for run in runs:
        digests = set()
        for sub in ("best", "last"):
            keys = load_file(str(run / sub / WEIGHTS_FILE)).keys()
            assert not any(k.startswith("backbone.") for k in keys)   # no copy in the run
            digests.add(json.loads((run / sub / "config.json").read_text())["backbone_blob"])
        assert len(digests) == 1
        used |= digests
    assert used == blobs and len(blobs) <= len(runs)
    full = load_model(runs[0] / "best")   # loading still gives the complete model
    assert any(k.startswith("backbone.") for k in full.state_dict())


def test_list_and_show_describe_the_runs(store, capsys):
    assert main(["runs", "--store", str(store), "list"]) == 0
    out = capsys.readouterr().out
    assert "| vtagml-" in out and "| vtagml | S-D-N-E | smoke | 0 |" in out and "seg mIoU" in out
    name = next(p.name for p in store.iterdir() if p.name.startswith("vtagml-"))
    assert main(["runs", "--store", str(store), "show", name[:10]]) == 0
    assert "best/model.safetensors" in capsys.readouterr().out


def test_export_then_import_into_an_empty_store_is_byte_identical(store, tmp_path, capsys):
    archive = tmp_path / "runs.tar.gz"
    assert main(["runs", "--store", str(store), "export", "--out", str(archive), "--seed", "0"]) == 0
    fresh = tmp_path / "fresh"
    assert main(["runs", "--store", str(fresh), "import", str(archive)]) == 0
    [run] = [p for p in store.iterdir() if p.name.startswith("vtagml-") and
             json.loads((p / "config.json").read_text())["config"]["train"]["seed"] == 0]
    copy = fresh / run.name
    for sub in ("best", "last"):
        assert (copy / sub / WEIGHTS_FILE).read_bytes() == (run / sub / WEIGHTS_FILE).read_bytes()
    assert json.loads((copy / "results.json").read_text()) == json.loads((run / "results.json").read_text())
    assert not (copy / "state.pt").exists()   # no training state, nothing pickled travels
    a, b = load_model(run / "best"), load_model(copy / "best")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    # importing the same archive again keeps the identical run
    assert sa.import_runs(archive, fresh, log=lambda m: None) == []


def _rewrite(archive: Path, out: Path, change) -> None:
    """Copy ``archive`` to ``out`` with ``change(name, data, manifest) -> (name, data)``."""
    with tarfile.open(archive) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    manifest = json.loads(dict(members)["MANIFEST.json"])
    edited = [change(n, d, manifest) for n, d in members if n != "MANIFEST.json"]
    with tarfile.open(out, "w:gz") as tar:
        for name, data in [("MANIFEST.json", json.dumps(manifest).encode()), *edited]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def archive(store, tmp_path):
    path = tmp_path / "good.tar.gz"
    sa.export_runs(sc.select_runs(store, seed=0), path)
    return path


def _refused(bad: Path, target: Path, match: str) -> None:
    target.mkdir(exist_ok=True)
    before = _state(target)
    with pytest.raises(sa.ArchiveError, match=match):
        sa.import_runs(bad, target, log=lambda m: None)
    assert _state(target) == before   # nothing half-imported, no staging left behind


def test_a_tampered_archive_is_refused(archive, tmp_path):
    def flip(name, data, manifest):
        if name.endswith(WEIGHTS_FILE):
            data = data[:-1] + bytes([data[-1] ^ 1])
        return name, data

    bad = tmp_path / "tampered.tar.gz"
    _rewrite(archive, bad, flip)
    _refused(bad, tmp_path / "s", "does not match its SHA-256")


def test_a_path_escaping_archive_is_refused(archive, tmp_path):
    def escape(name, data, manifest):
        if name.endswith("results.json"):
            manifest["files"]["../escaped.json"] = manifest["files"].pop(name)
            return "../escaped.json", data
        return name, data

    bad = tmp_path / "escape.tar.gz"
    _rewrite(archive, bad, escape)
    _refused(bad, tmp_path / "s", "points outside the store")
    assert not (tmp_path / "escaped.json").exists()


def test_a_truncated_archive_or_a_pickle_is_refused(archive, tmp_path):
    raw = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    _refused(truncated, tmp_path / "s", "truncated|damaged|not a readable")

    def add_pickle(name, data, manifest):
        if name.endswith("results.json"):
            new = name.replace("results.json", "evil.pt")
            manifest["files"][new] = manifest["files"].pop(name)
            return new, data
        return name, data

    bad = tmp_path / "pickle.tar.gz"
    _rewrite(archive, bad, add_pickle)
    _refused(bad, tmp_path / "s", "not a safetensors/JSON file")


def test_an_archive_from_a_newer_kit_is_refused_with_what_to_do(archive, tmp_path):
    def newer(name, data, manifest):
        manifest["format_version"] = sa.FORMAT_VERSION + 1
        return name, data

    bad = tmp_path / "newer.tar.gz"
    _rewrite(archive, bad, newer)
    _refused(bad, tmp_path / "s", "newer kit.*update the kit")


def test_identical_files_travel_once_and_a_false_copy_is_refused(store, archive, tmp_path):
    """best/ and last/ of a run whose best epoch was its last are byte-identical: the archive
    carries those bytes once and import writes both; a copy_of naming other bytes is refused."""
    manifest = json.loads(tarfile.open(archive).extractfile("MANIFEST.json").read())
    with tarfile.open(archive) as tar:
        carried = {m.name for m in tar if m.isfile()}
    copies = {n: e["copy_of"] for n, e in manifest["files"].items() if "copy_of" in e}
    [run] = sc.select_runs(store, seed=0)
    same = (run / "best" / WEIGHTS_FILE).read_bytes() == (run / "last" / WEIGHTS_FILE).read_bytes()
    assert same   # two optimizer steps, one epoch: the best epoch is the last
    weights = {f"{run.name}/{sub}/{WEIGHTS_FILE}" for sub in ("best", "last")}
    assert len(weights & carried) == 1 and len(weights & set(copies)) == 1
    assert all(manifest["files"][n]["sha256"] == manifest["files"][src]["sha256"] and src in carried
               for n, src in copies.items())
    assert not set(copies) & carried
    fresh = tmp_path / "fresh"
    sa.import_runs(archive, fresh, log=lambda m: None)
    for sub in ("best", "last"):
        assert (fresh / run.name / sub / WEIGHTS_FILE).read_bytes() == (run / sub / WEIGHTS_FILE).read_bytes()

    def false_copy(name, data, manifest):   # a copy pointing at a file with other bytes
        copy = next(n for n, e in manifest["files"].items() if "copy_of" in e)
        manifest["files"][copy]["copy_of"] = f"{run.name}/results.json"
        return name, data

    bad = tmp_path / "false-copy.tar.gz"
    _rewrite(archive, bad, false_copy)
    _refused(bad, tmp_path / "s", "marked as a copy of")


def test_stale_runs_are_listed_with_why_left_out_of_a_current_export_and_removable(store, tmp_path,
                                                                                  capsys):
    """A run whose key payload names another kit version or renderer is never asked for again:
    `runs list` says why, `export --current` leaves it out, `remove --stale` deletes only it."""
    [run] = sc.select_runs(store, seed=0)
    local = tmp_path / "store"
    shutil.copytree(run, local / run.name)
    shutil.copytree(store / "backbones", local / "backbones")
    old = local / "vtagml-000000000000"
    shutil.copytree(run, old)
    info = json.loads((old / "run_key.json").read_text())
    info["payload"]["kit_version"] = "0.0.1"
    info["payload"].pop("data_generator", None)
    (old / "run_key.json").write_text(json.dumps(info))
    assert main(["runs", "--store", str(local), "list"]) == 0
    out = capsys.readouterr().out
    stale_line = next(line for line in out.splitlines() if line.startswith(f"| {old.name} "))
    assert "stale: trained by kit 0.0.1" in stale_line and "rendered by data generator 2 or older" in stale_line
    assert next(line for line in out.splitlines() if line.startswith(f"| {run.name} ")).endswith("| yes |")
    assert "1 stale run(s)" in out
    archive = tmp_path / "current.tar.gz"
    assert main(["runs", "--store", str(local), "export", "--out", str(archive), "--current"]) == 0
    assert json.loads(tarfile.open(archive).extractfile("MANIFEST.json").read())["runs"] == [run.name]
    assert main(["runs", "--store", str(local), "remove"]) == 2   # nothing selected: nothing removed
    assert old.is_dir()
    assert main(["runs", "--store", str(local), "remove", "--stale"]) == 0
    assert not old.exists() and (local / run.name).is_dir()
    messages = []   # an import of a stale run warns why it will not be reused
    shutil.copytree(local / run.name, old)
    (old / "run_key.json").write_text(json.dumps(info))
    sa.export_runs([old], tmp_path / "old.tar.gz", log=lambda m: None)
    sa.import_runs(tmp_path / "old.tar.gz", tmp_path / "other", log=messages.append)
    assert any("will not reuse it" in m and "trained by kit 0.0.1" in m for m in messages)


def test_two_imports_at_once_are_refused_naming_the_holder(archive, tmp_path):
    target = tmp_path / "s"
    target.mkdir()
    holder = RunLock(target / ".import-lock").acquire()
    try:
        import subprocess
        import sys

        res = subprocess.run([sys.executable, "-m", "vtagml_core", "runs", "--store", str(target),
                              "import", str(archive)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and "in use by PID" in res.stderr
    finally:
        holder.release()
    assert not any(p.name.startswith("vtagml-") for p in target.iterdir())


def test_hub_style_from_pretrained_and_save_pretrained(store, tmp_path):
    run = next(p for p in store.iterdir() if p.name.startswith("vtagml-"))
    model = VTAGML.from_pretrained(run / "best")
    reference = load_model(run / "best")
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in model.state_dict().items())
    model.save_pretrained(tmp_path / "saved")   # a self-contained folder: the backbone included
    saved = load_file(str(tmp_path / "saved" / WEIGHTS_FILE))
    assert set(model.state_dict()) <= set(saved)
    again = VTAGML.from_pretrained(tmp_path / "saved")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="not a model folder|neither a local model folder"):
        VTAGML.from_pretrained(tmp_path / "missing")


def test_time_estimates_come_from_this_store_else_from_the_preset(store, tmp_path):
    """Before anything is trained the estimate is the preset's reference rate, said as such;
    once the store holds a run of the same method and size, that run's measured rate wins."""
    from vtagml_core.experiments.runs import estimate_text, run_steps
    from vtagml_core.train.config import load_kit_config

    cfg = load_kit_config(preset="smoke", overrides=["train.reference_step_seconds=3.0"])
    spec = RunSpec("test", cfg, "vtagml")
    empty = tmp_path / "empty"
    empty.mkdir()
    steps = run_steps(cfg)
    assert estimate_text(spec, empty) == (
        f", about {steps * 3.0 / 60:.1f} min ({steps} steps at 3.00 s/step, the preset's rate on "
        "the reference 2-core CPU)")
    cfg.train.reference_step_seconds = None
    assert estimate_text(RunSpec("test", cfg, "vtagml"), empty) == ""
    finished = [json.loads(p.read_text()) for p in sorted(store.glob("vtagml-*/results.json"))]
    rates = sorted(r["train_seconds"] / r["steps"] for r in finished)
    assert rates  # the module's store holds the CLI's run (and maybe others of the same size)
    assert estimate_text(spec, store).endswith(
        f"at {rates[len(rates) // 2]:.2f} s/step, measured on {len(rates)} run(s) of this store)")


def test_seeds_from_the_environment_reach_the_setting_notebooks(store, tmp_path, monkeypatch):
    """make reproduce SEEDS=0,1,2 -> $VTAGML_NB_SEEDS -> P.seeds -> the settings' seeds."""
    from vtagml_core.notebooks.params import NotebookParameterError

    monkeypatch.setenv("VTAGML_CACHE", str(store.parent / "cache"))
    monkeypatch.setenv("VTAGML_NB_HEADLESS", "1")
    monkeypatch.delenv("VTAGML_NB_PRESET", raising=False)
    monkeypatch.delenv("VTAGML_NB_OUTPUT", raising=False)
    monkeypatch.delenv("VTAGML_NB_SEEDS", raising=False)
    P = resolve(preset="smoke", seed=4, output_dir=str(tmp_path / "nb"))
    assert P.seeds == (4,) and settings_context(P, log=lambda m: None).seeds == [4]
    monkeypatch.setenv("VTAGML_NB_SEEDS", "0,1,2")
    P = resolve(preset="smoke", seed=4, output_dir=str(tmp_path / "nb"))
    assert P.seeds == (0, 1, 2) and "seeds" in P.overridden
    assert settings_context(P, log=lambda m: None).seeds == [0, 1, 2]
    monkeypatch.setenv("VTAGML_NB_SEEDS", "zero")
    with pytest.raises(NotebookParameterError, match="VTAGML_NB_SEEDS"):
        resolve(preset="smoke", output_dir=str(tmp_path / "nb"))


def test_a_new_renderer_gives_new_run_keys_and_real_data_none(monkeypatch):
    """Runs trained on other pixels are not reused: from renderer version 3 on the key holds the
    generator version; version 2 (the runs trained before) keeps its keys; real data has none."""
    from vtagml_core.data import config as data_config
    from vtagml_core.train.config import load_kit_config

    cfg = load_kit_config(preset="smoke")
    monkeypatch.setattr(data_config, "GENERATOR_VERSION", data_config.UNSTAMPED_GENERATOR)
    v2 = RunSpec("test", cfg, "vtagml")
    assert "data_generator" not in v2.key_payload()
    key_v2 = v2.key()
    monkeypatch.setattr(data_config, "GENERATOR_VERSION", "3")
    v3 = RunSpec("test", cfg, "vtagml")
    assert v3.key_payload()["data_generator"] == "3" and v3.key() != key_v2
    real = load_kit_config(preset="smoke", overrides=["data.dataset=nyud", "data.root=/nowhere"])
    assert real.data.generator_stamp() == {}


def test_the_pretrained_backbone_the_keys_name_travels_and_is_installed_where_missing(store, tmp_path):
    """A student's import installs the teacher's pretrained backbone file (the run keys hash its
    bytes); a different file already there is kept, with a warning."""
    from vtagml_core.experiments.store_pretrained import PRETRAINED_DIR, file_sha256

    teacher_cache = tmp_path / "teacher-backbones"
    teacher_cache.mkdir()
    weights = teacher_cache / "swinv2_tiny_cpu-128-s0.safetensors"
    weights.write_bytes(b"pretend safetensors bytes")  # only its hash matters here
    (teacher_cache / "swinv2_tiny_cpu-128-s0.json").write_text('{"config": {}}')
    runs = [tmp_path / "runs" / p.name for p in sc.select_runs(store, seed=0)]
    for src, dst in zip(sc.select_runs(store, seed=0), runs):
        shutil.copytree(src, dst)
    shutil.copytree(store / "backbones", tmp_path / "runs" / "backbones")
    info = runs[0] / "run_key.json"
    data = json.loads(info.read_text())
    data["payload"]["config"]["model"]["backbone"]["weights"] = {"sha256": file_sha256(weights)}
    info.write_text(json.dumps(data))
    archive = tmp_path / "class.tar.gz"
    manifest = sa.export_runs(runs, archive, pretrained_dir=teacher_cache, log=lambda m: None)
    assert manifest["pretrained"] == ["swinv2_tiny_cpu-128-s0.json", weights.name]
    assert f"{PRETRAINED_DIR}/{weights.name}" in manifest["files"]

    student_cache, said = tmp_path / "student-backbones", []
    sa.import_runs(archive, tmp_path / "student-store", log=said.append, pretrained_dir=student_cache)
    assert (student_cache / weights.name).read_bytes() == weights.read_bytes()
    assert (student_cache / "swinv2_tiny_cpu-128-s0.json").is_file()
    assert not [p for p in student_cache.iterdir() if p.name.startswith(".")]  # no temporaries

    other_cache = tmp_path / "other-backbones"
    other_cache.mkdir()
    (other_cache / weights.name).write_bytes(b"a backbone pretrained elsewhere")
    said = []
    sa.import_runs(archive, tmp_path / "other-store", log=said.append, pretrained_dir=other_cache)
    assert (other_cache / weights.name).read_bytes() == b"a backbone pretrained elsewhere"
    assert any("holds another pretrained backbone" in m and "Move it away" in m for m in said)
