"""Project-level checks: install lists agree, CLI lists its commands, configs parse."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from vtagml_core.config import ConfigError, apply_overrides, from_dict, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith(project["name"])]
    return {_name(r): r.replace(" ", "") for r in reqs}


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert conda == _pyproject_requirements(), (
        "environment.yml and pyproject.toml list different dependencies: update both"
    )


def test_layout_exists():
    for name in ("notebooks", "vtagml_core", "demo_app", "tests", "configs", "bench",
                 "environment.yml", "README.md", "pyproject.toml", "Makefile"):
        assert (ROOT / name).exists(), f"{name} missing from the top level (docs/layout.md)"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "vtagml_core", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    for cmd in ("data", "params", "reproduce"):
        assert cmd in out


def test_cli_data_domains_lists_all_domains():
    out = subprocess.run([sys.executable, "-m", "vtagml_core", "data", "domains"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for domain in ("indoor", "indoor_shift", "street", "comic"):
        assert domain in out


def test_cli_unknown_domain_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vtagml_core", "data", "render", "--domain",
                          "mars", "--count", "2", "--size", "32", "--root", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0
    assert "mars" in res.stderr and "indoor" in res.stderr


@dataclasses.dataclass
class _Inner:
    size: int = 128
    names: tuple[str, ...] = ("a",)
    rate: float = 1e-3


@dataclasses.dataclass
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    flag: bool = False
    path: str | None = None


def test_config_overrides_and_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  size: 64\nflag: true\n")
    cfg = load_config(_Outer, f, ["inner.rate=0.5", "inner.names=x,y", "path=runs/a"])
    assert cfg == _Outer(_Inner(64, ("x", "y"), 0.5), True, "runs/a")
    assert from_dict(_Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("inner.sise=3", "sise"),
    ("inner.size=big", "expected an integer"),
    ("flag=maybe", "true/false"),
    ("nokey", "key.sub=value"),
])
def test_config_bad_override_names_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(_Outer(), [override])


def test_config_unknown_yaml_key_lists_valid_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  sizes: 64\n")
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(_Outer, f)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_keeps_student_work_and_trained_runs(tmp_path):
    kept = [tmp_path / "runs" / "student" / "03_taa.ipynb", tmp_path / "runs" / "train" / "x" / "best.pt"]
    gone = [tmp_path / ".pytest_cache" / "v", tmp_path / "runs" / "reproduce" / "report.md",
            tmp_path / "runs" / "notebooks" / "report.md", tmp_path / "pkg" / "__pycache__" / "m.pyc"]
    for path in kept + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    make = ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path)]
    subprocess.run([*make, "clean"], check=True, capture_output=True, timeout=60)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in gone)
    refused = subprocess.run([*make, "clean-runs"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "CONFIRM=yes" in refused.stdout and all(p.exists() for p in kept)
    subprocess.run([*make, "clean-runs", "CONFIRM=yes"], check=True, capture_output=True, timeout=60)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_lab_shows_the_notebooks_and_the_student_copies():
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    # under `make test` the child make also prints "make[1]: Entering/Leaving directory" lines
    commands = [line for line in dry.stdout.splitlines() if line and not line.startswith("make")]
    student, lab = commands[-2:]
    assert "notebooks student --out runs/student" in student  # the copies exist before the lab
    assert lab.endswith(f'jupyter lab --ServerApp.root_dir="{ROOT}"')  # notebooks/ and runs/ visible
