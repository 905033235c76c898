"""The house rules: layers that import only downward, no import cycles, one home per
hyperparameter, nothing that points outside the repository (``docs/layout.md``)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vtagml_core.config import to_dict
from vtagml_core.experiments.runs import key_config
from vtagml_core.experiments.settings import build_context
from vtagml_core.notebooks.params import resolve
from vtagml_core.train.config import load_kit_config, preset_names

ROOT = Path(__file__).resolve().parents[1]
#: Text files a person who clones the repository reads.
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".ipynb", ".toml", ".cfg", ".txt")


def test_import_contracts_hold():
    """``lint-imports`` with the contracts of pyproject.toml: layers and acyclic siblings."""
    exe = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout and "2 kept" in res.stdout, res.stdout[-2000:]


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_cli_settings_and_notebooks_resolve_one_config(preset, tmp_path, monkeypatch):
    """The same preset and seed give the same run config (hence the same run key) whether the
    CLI (``--preset P --set train.seed=S``), the settings or a notebook's parameters cell asks."""
    monkeypatch.delenv("VTAGML_NB_PRESET", raising=False)
    monkeypatch.delenv("VTAGML_NB_OUTPUT", raising=False)
    seed = 3
    cli = load_kit_config(preset=preset, overrides=[f"train.seed={seed}"])
    ctx = build_context(preset=preset, seeds=[seed], root=tmp_path,
                        settings_overrides=["pretrained_backbone=false"], log=lambda m: None)
    settings = ctx.config(cli.model.tasks, seed=seed)
    P = resolve(preset=preset, seed=seed, device="cpu", output_dir=str(tmp_path), interactive=False)
    notebook = P.kit_config()
    # Fields that cannot change a run's numbers (device, progress bars, ...) are not part of a
    # run's key; everything else must agree.
    keys = [key_config(c, seed) for c in (cli, settings, notebook)]
    assert keys[0] == keys[1] == keys[2]
    assert to_dict(cli)["train"]["lr"] == to_dict(notebook)["train"]["lr"] == settings.train.lr


def test_a_hyperparameter_has_one_home(tmp_path):
    """Changing the quick learning rate is one line in configs/presets/quick.yaml: every preset
    that inherits it follows, and no Python table holds a second copy."""
    quick = (ROOT / "configs" / "presets" / "quick.yaml").read_text()
    lr = load_kit_config(preset="quick").train.lr
    assert re.search(rf"^\s+lr: {lr}\s*$", quick, re.M), "train.lr is set in quick.yaml"
    assert load_kit_config(preset="smoke").train.lr == lr  # smoke inherits it
    smoke = (ROOT / "configs" / "presets" / "smoke.yaml").read_text()
    assert "inherit: quick" in smoke and not re.search(r"^\s+lr:", smoke, re.M)
    code = "\n".join(p.read_text() for p in (ROOT / "vtagml_core").rglob("*.py"))
    assert "SMOKE_KIT_OVERRIDES" not in code and "NotebookPreset" not in code
    assert set(preset_names()) >= {"smoke", "quick", "paper"}


def test_an_inherited_preset_changes_only_what_it_states(tmp_path):
    from vtagml_core.config import ConfigError, load_config
    from vtagml_core.train.config import KitConfig

    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.5\n  epochs: 3\n")
    (tmp_path / "child.yaml").write_text("inherit: base\ntrain:\n  epochs: 7\n")
    cfg = load_config(KitConfig, tmp_path / "child.yaml")
    assert (cfg.train.lr, cfg.train.epochs) == (0.5, 7)
    (tmp_path / "loop.yaml").write_text("inherit: loop\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(KitConfig, tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("inherit: missing\n")
    with pytest.raises(ConfigError, match="missing.yaml not found"):
        load_config(KitConfig, tmp_path / "orphan.yaml")


def test_nothing_points_outside_the_repository():
    """A person who clones the project has none of the design folder next to it: no file cites it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or name == "tests/test_architecture.py":
            continue
        text = path.read_text(errors="replace")
        # built from parts, so that this file does not itself name the folder it forbids
        shared = "sha" + "red"
        for needle in ("DESIGN" + ".md", f"../{shared}", f"/work/{shared}"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert not offenders, "\n".join(offenders)
