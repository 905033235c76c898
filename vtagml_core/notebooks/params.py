"""The ``parameters`` cell of every notebook: presets, type checks and overrides.

Each notebook has exactly one code cell tagged ``parameters`` (papermill injects its values
after it) holding plain assignments::

    preset = "quick"              # smoke | quick | paper
    device = "auto"               # auto | cpu | cuda | cuda:N
    seed = 0
    steps = None                  # training steps; None: the preset's
    size = None                   # image side, a multiple of 32; None: the preset's
    output_dir = "runs/notebooks"  # relative paths start at the project root
    cache_dir = None              # data cache; None: $VTAGML_CACHE, else ~/.cache/vtagml
    interactive = "auto"          # auto | True | False: ipywidgets or static figures

(papermill's parameter parser skips a line with a second ``=`` in its comment, so the
comments avoid one) and the next cell calls ``P = resolve(preset=preset, ...)``, which checks
every value and returns a :class:`NotebookParams`. A wrong type or an unknown preset raises
:class:`NotebookParameterError` naming the parameter and listing the valid values, so a bad
papermill run stops in that first cell with a readable message.

**Environment overrides** (nbval cannot inject papermill parameters, so the tests and the
runner use these; each one wins over the cell's value):

* ``VTAGML_NB_PRESET`` -- the preset (the nbval tests set ``smoke``);
* ``VTAGML_NB_OUTPUT`` -- the output folder;
* ``VTAGML_NB_HEADLESS=1`` -- no ipywidgets: static plotly figures instead (papermill, nbval).

Relative ``output_dir`` / ``cache_dir`` are taken from the project root (the folder holding
``pyproject.toml`` next to the package) when the package runs from a checkout, else from the
working directory, so JupyterLab (which starts kernels in ``notebooks/``) and the headless
runner write to the same ``runs/`` folder.
"""
from __future__ import annotations

import numbers
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variables that override the parameters cell (see the module docstring).
PRESET_ENV: str = "VTAGML_NB_PRESET"
OUTPUT_ENV: str = "VTAGML_NB_OUTPUT"
HEADLESS_ENV: str = "VTAGML_NB_HEADLESS"
#: Environment variable of the data cache root (read by :mod:`vtagml_core.data.cache`).
CACHE_ENV: str = "VTAGML_CACHE"
#: Values of an environment flag that count as "on".
TRUE_STRINGS: tuple[str, ...] = ("1", "true", "yes", "on")

#: Image sides must be multiples of this (the Swin backbones' deepest stride, 32).
SIZE_MULTIPLE: int = 32
#: Accepted device names besides ``cuda:N``.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Accepted values of ``interactive``.
INTERACTIVE_VALUES: tuple[Any, ...] = ("auto", True, False)
#: The parameters a notebook's parameters cell may define, with their defaults.
DEFAULTS: dict[str, Any] = {
    "preset": "quick", "device": "auto", "seed": 0, "steps": None, "size": None,
    "output_dir": "runs/notebooks", "cache_dir": None, "interactive": "auto",
}


class NotebookParameterError(ValueError):
    """A parameters-cell value has the wrong type or an unknown value (message lists valid ones)."""


@dataclass(frozen=True)
class NotebookPreset:
    """Sizes and budgets of one notebook preset.

    Attributes:
        name: ``smoke``, ``quick`` or ``paper``.
        description: one line for error messages and the report.
        kit_preset: the :mod:`vtagml_core.experiment` preset whose model/training config the
            notebooks start from (``quick`` = ``configs/tiny-cpu.yaml``, ``paper`` =
            ``configs/paper.yaml``).
        size: image side in pixels (data and backbone).
        steps: optimizer steps of the short training runs of lessons 02-04.
        batch_size: images per step of those runs.
        train_count, val_count: scenes of the synthetic train / val splits the notebooks use.
        scenes_per_domain: scenes per domain for the benchmark tour and statistics (00).
        lr: Adam learning rate of the short lesson runs.
        compare_seeds: training seeds of the method comparison (notebook 10). Its seed spread
            needs two or more; the quick preset trains one to stay within a CPU session (the
            other notebooks' runs are reused, so seed 0 costs only the peers' training).
    """

    name: str
    description: str
    kit_preset: str
    size: int
    steps: int
    batch_size: int
    train_count: int
    val_count: int
    scenes_per_domain: int
    lr: float = 2e-3
    compare_seeds: int = 1


#: The presets. ``smoke`` is for the nbval tests (seconds per notebook), ``quick`` for a CPU
#: reproducibility run (minutes), ``paper`` for a GPU at the paper's scale (Swin-B V2, 256 px).
PRESETS: dict[str, NotebookPreset] = {
    "smoke": NotebookPreset("smoke", "tests: 64 px, a few steps, a handful of scenes", "quick",
                            size=64, steps=6, batch_size=2, train_count=8, val_count=4,
                            scenes_per_domain=4, compare_seeds=2),
    "quick": NotebookPreset("quick", "CPU: tiny Swin V2 at 128 px, minutes per notebook",
                            "quick", size=128, steps=60, batch_size=8, train_count=512,
                            val_count=128, scenes_per_domain=64),
    "paper": NotebookPreset("paper", "GPU: Swin-B V2 at 256 px, the paper's scale", "paper",
                            size=256, steps=1000, batch_size=16, train_count=4096,
                            val_count=512, scenes_per_domain=256, lr=2e-4,
                            compare_seeds=3),
}


def project_root() -> Path:
    """The checkout's root (holds ``pyproject.toml``) or, for an installed package, the cwd."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_STRINGS


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_preset(value: Any, source: str) -> NotebookPreset:
    if not isinstance(value, str) or value not in PRESETS:
        valid = "; ".join(f"{p.name!r} ({p.description})" for p in PRESETS.values())
        got = _type_name(value) if not isinstance(value, str) else repr(value)
        raise NotebookParameterError(f"{source} = {got} is not a preset; valid presets: {valid}")
    return PRESETS[value]


def _check_int(name: str, value: Any, minimum: int, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " or None (the preset's value)" if allow_none else ""
        raise NotebookParameterError(
            f"parameter {name!r} must be an integer >= {minimum}{none}, got {_type_name(value)}"
        )
    return int(value)


def _check_size(value: Any) -> int | None:
    size = _check_int("size", value, SIZE_MULTIPLE, allow_none=True)
    if size is not None and size % SIZE_MULTIPLE:
        raise NotebookParameterError(
            f"parameter 'size' must be a multiple of {SIZE_MULTIPLE} (the backbone's deepest "
            f"stride), e.g. 64, 128 or 256, got {size}"
        )
    return size


def _check_device(value: Any) -> str:
    import torch

    ok = isinstance(value, str) and (value in DEVICES or
                                     (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise NotebookParameterError(
            f"parameter 'device' must be one of {', '.join(map(repr, DEVICES))} or 'cuda:N', "
            f"got {_type_name(value)}"
        )
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise NotebookParameterError(
            f"parameter 'device' is {value!r} but no CUDA device is visible; use 'auto' or 'cpu'"
        )
    return value


def _check_path(name: str, value: Any, allow_none: bool) -> Path | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        none = " or None" if allow_none else ""
        raise NotebookParameterError(
            f"parameter {name!r} must be a folder path (str){none}, got {_type_name(value)}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root() / path


def _check_interactive(value: Any) -> bool:
    if not any(value is v or (isinstance(v, str) and value == v) for v in INTERACTIVE_VALUES):
        raise NotebookParameterError(
            f"parameter 'interactive' must be one of {', '.join(map(repr, INTERACTIVE_VALUES))}, "
            f"got {_type_name(value)}"
        )
    if _env_flag(HEADLESS_ENV):
        return False
    if value == "auto":
        from .widgets import widgets_available

        return widgets_available()
    return bool(value)


@dataclass
class NotebookParams:
    """The checked parameters of one notebook run (what ``resolve`` returns).

    Attributes:
        preset: the :class:`NotebookPreset`.
        device: resolved torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        seed: seed of torch, numpy and python's ``random`` (set by :func:`resolve`).
        steps, size: the preset's values unless overridden.
        output_dir: absolute folder for this run's artifacts (created).
        cache_dir: data cache root, or None for the default (``$VTAGML_CACHE``).
        interactive: True = ipywidgets explorers; False = static plotly figures.
        overridden: names of the parameters that came from an environment variable.
    """

    preset: NotebookPreset
    device: str
    seed: int
    steps: int
    size: int
    output_dir: Path
    cache_dir: Path | None
    interactive: bool
    overridden: tuple[str, ...] = field(default=())

    @property
    def batch_size(self) -> int:
        return self.preset.batch_size

    @property
    def train_count(self) -> int:
        return self.preset.train_count

    @property
    def val_count(self) -> int:
        return self.preset.val_count

    def artifacts(self, name: str) -> Path:
        """``output_dir / name``, created: where one notebook writes its files."""
        folder = self.output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def kit_config(self, overrides: list[str] | None = None):
        """The :class:`~vtagml_core.experiment.KitConfig` of this preset at this size/seed.

        Starts from the preset's YAML (``kit_preset``), sets image size, scene counts, batch,
        steps, seed, device and cache root, then applies ``overrides`` (``key.sub=value``).
        """
        from vtagml_core.experiment import load_kit_config

        base = [f"data.size={self.size}", f"model.backbone.img_size={self.size}",
                f"data.train_count={self.train_count}", f"data.val_count={self.val_count}",
                f"data.test_count={self.val_count}", f"data.batch_size={self.batch_size}",
                f"data.seed={self.seed}", f"train.seed={self.seed}",
                f"train.steps={self.steps}", f"train.max_steps={self.steps}",
                f"train.lr={self.preset.lr}",
                f"train.device={self.device.split(':')[0]}"]
        if self.cache_dir is not None:
            base.append(f"data.cache_root={self.cache_dir}")
        return load_kit_config(preset=self.preset.kit_preset, overrides=base + list(overrides or []))

    def model_config(self, tasks: str = "S-D-N-E", overrides: list[str] | None = None):
        """The preset's :class:`~vtagml_core.model.vtagml.ModelConfig` for ``tasks``."""
        return self.kit_config([f"model.tasks={tasks}", *(overrides or [])]).model

    def describe(self) -> str:
        """One markdown line: preset, size, steps, batch, device, seed, folders."""
        env = f" (from the environment: {', '.join(self.overridden)})" if self.overridden else ""
        cache = self.cache_dir or os.environ.get(CACHE_ENV) or "default cache"
        return (f"preset **{self.preset.name}**{env}: {self.size}x{self.size} px, "
                f"{self.steps} steps of batch {self.batch_size}, device `{self.device}`, "
                f"seed {self.seed}, outputs in `{self.output_dir}`, data cache `{cache}`, "
                f"{'interactive widgets' if self.interactive else 'static figures'}")

    def _repr_markdown_(self) -> str:
        return self.describe()


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA) with ``seed``."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve(preset: Any = "quick", device: Any = "auto", seed: Any = 0, steps: Any = None,
            size: Any = None, output_dir: Any = "runs/notebooks", cache_dir: Any = None,
            interactive: Any = "auto", **unknown: Any) -> NotebookParams:
    """Check the parameters cell, apply environment overrides, seed, return the run's params.

    Args:
        preset: ``"smoke"``, ``"quick"`` or ``"paper"`` (``$VTAGML_NB_PRESET`` wins).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: non-negative integer.
        steps: training steps of the lesson runs, or None for the preset's.
        size: image side (multiple of 32, >= 32), or None for the preset's.
        output_dir: folder for artifacts (``$VTAGML_NB_OUTPUT`` wins); created.
        cache_dir: data cache root; when given, ``$VTAGML_CACHE`` is set to it for the kernel.
        interactive: ``"auto"`` (widgets when a live kernel has ipywidgets), True or False;
            ``$VTAGML_NB_HEADLESS=1`` forces False.

    Raises:
        NotebookParameterError: unknown parameter name, wrong type or value; the message lists
            the valid values.
    """
    if unknown:
        raise NotebookParameterError(
            f"unknown notebook parameter(s) {', '.join(sorted(unknown))}; valid parameters: "
            f"{', '.join(DEFAULTS)}"
        )
    overridden = []
    env_preset = os.environ.get(PRESET_ENV)
    if env_preset:
        the_preset = _check_preset(env_preset, f"${PRESET_ENV}")
        overridden.append("preset")
    else:
        the_preset = _check_preset(preset, "parameter 'preset'")
    env_output = os.environ.get(OUTPUT_ENV)
    if env_output:
        output_dir = env_output
        overridden.append("output_dir")
    params = NotebookParams(
        preset=the_preset,
        device=_check_device(device),
        seed=_check_int("seed", seed, 0, allow_none=False),
        steps=_check_int("steps", steps, 1, allow_none=True) or the_preset.steps,
        size=_check_size(size) or the_preset.size,
        output_dir=_check_path("output_dir", output_dir, allow_none=False),
        cache_dir=_check_path("cache_dir", cache_dir, allow_none=True),
        interactive=_check_interactive(interactive),
        overridden=tuple(overridden),
    )
    params.output_dir.mkdir(parents=True, exist_ok=True)
    if params.cache_dir is not None:
        os.environ[CACHE_ENV] = str(params.cache_dir)
    if not params.interactive:
        import plotly.io as pio

        # Plain plotly JSON in the outputs: the runner's report reads it, and no copy of
        # plotly.js is embedded in every executed notebook.
        pio.renderers.default = "plotly_mimetype"
    seed_everything(params.seed)
    return params


__all__ = ["DEFAULTS", "NotebookParameterError", "NotebookParams", "NotebookPreset", "PRESETS",
           "resolve", "seed_everything", "project_root"]
