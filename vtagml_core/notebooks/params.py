"""The ``parameters`` cell of every notebook: a preset, overrides, type checks.

Each notebook has exactly one code cell tagged ``parameters`` (papermill injects its values
after it) holding plain assignments::

    preset = "quick"              # a file of configs/presets: smoke | quick | paper
    overrides = []                # key.sub=value strings, as the command line's --set
    device = "auto"               # auto | cpu | cuda | cuda:N
    seed = 0                      # the training seed
    output_dir = "runs/notebooks"  # relative paths start at the project root
    cache_dir = None              # data cache; None: $VTAGML_CACHE, else ~/.cache/vtagml
    interactive = "auto"          # auto | True | False: ipywidgets or static figures

(papermill's parameter parser skips a line with a second ``=`` in its comment, so the
comments avoid one) and the next cell calls ``P = resolve(preset=preset, ...)``, which checks
every value and returns a :class:`NotebookParams`. A wrong type or an unknown preset raises
:class:`NotebookParameterError` naming the parameter and listing the valid values, so a bad
papermill run stops in that first cell with a readable message.

**One preset system.** The notebook's numbers come from the preset's YAML file and the
``overrides`` list, exactly as ``python -m vtagml_core train --preset quick --set ...`` would
resolve them (:func:`vtagml_core.train.config.load_kit_config`): there is no table of notebook
sizes in Python. ``P.cfg`` is the resolved :class:`~vtagml_core.train.config.KitConfig`; the
seed is ``train.seed``, the device ``train.device`` and the cache ``data.cache_root``.

**Environment overrides** (nbval cannot inject papermill parameters, so the tests and the
runner use these; each one wins over the cell's value):

* ``VTAGML_NB_PRESET`` -- the preset (the nbval tests set ``smoke``);
* ``VTAGML_NB_OUTPUT`` -- the output folder;
* ``VTAGML_NB_SEEDS=0,1,2`` -- the training seeds of the setting notebooks' tables (05-10;
  default: the one ``seed``); ``make reproduce SEEDS=0,1,2`` and ``notebooks run --seeds`` set it;
* ``VTAGML_NB_HEADLESS=1`` -- no ipywidgets: static plotly figures instead (papermill, nbval).

Relative ``output_dir`` / ``cache_dir`` are taken from the project root (the folder holding
``pyproject.toml`` next to the package) when the package runs from a checkout, else from the
working directory, so JupyterLab (which starts kernels in ``notebooks/``) and the headless
runner write to the same ``runs/`` folder.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variables that override the parameters cell (see the module docstring).
PRESET_ENV: str = "VTAGML_NB_PRESET"
OUTPUT_ENV: str = "VTAGML_NB_OUTPUT"
SEEDS_ENV: str = "VTAGML_NB_SEEDS"
HEADLESS_ENV: str = "VTAGML_NB_HEADLESS"
#: Environment variable of the data cache root (read by :mod:`vtagml_core.data.cache`).
CACHE_ENV: str = "VTAGML_CACHE"
#: Values of an environment flag that count as "on".
TRUE_STRINGS: tuple[str, ...] = ("1", "true", "yes", "on")

#: Accepted values of ``interactive``.
INTERACTIVE_VALUES: tuple[Any, ...] = ("auto", True, False)
#: The parameters a notebook's parameters cell may define, with their defaults.
DEFAULTS: dict[str, Any] = {
    "preset": "quick", "overrides": [], "device": "auto", "seed": 0,
    "output_dir": "runs/notebooks", "cache_dir": None, "interactive": "auto",
}


class NotebookParameterError(ValueError):
    """A parameters-cell value has the wrong type or an unknown value (message lists valid ones)."""


def preset_description(name: str) -> str:
    """The first comment line of the preset's YAML file (what the preset is for)."""
    from vtagml_core.train.config import preset_path

    for line in preset_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return name


def project_root() -> Path:
    """The checkout's root (holds ``pyproject.toml``) or, for an installed package, the cwd."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_STRINGS


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_preset(value: Any, source: str) -> str:
    from vtagml_core.train.config import preset_names

    if not isinstance(value, str) or value not in preset_names():
        valid = "; ".join(f"{name!r} ({preset_description(name)})" for name in preset_names())
        got = _type_name(value) if not isinstance(value, str) else repr(value)
        raise NotebookParameterError(f"{source} = {got} is not a preset; valid presets: {valid}")
    return value


def _check_overrides(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) and "=" in v for v in value):
        raise NotebookParameterError(
            "parameter 'overrides' must be a list of 'key.sub=value' strings, the form of the "
            f"command line's --set (e.g. [\"train.lr=0.004\"]), got {_type_name(value)}")
    return tuple(value)


def _check_int(name: str, value: Any, minimum: int, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " or None (the preset's value)" if allow_none else ""
        raise NotebookParameterError(
            f"parameter {name!r} must be an integer >= {minimum}{none}, got {_type_name(value)}"
        )
    return int(value)


def _check_device(value: Any) -> str:
    from vtagml_core.runtime import DEVICE_NAMES, is_device_name, resolve_device

    if not is_device_name(value):
        raise NotebookParameterError(
            f"parameter 'device' must be one of {', '.join(map(repr, DEVICE_NAMES))} or 'cuda:N', "
            f"got {_type_name(value)}"
        )
    try:
        return str(resolve_device(value))
    except ValueError as err:
        raise NotebookParameterError(f"parameter 'device': {err}") from err


def _check_path(name: str, value: Any, allow_none: bool) -> Path | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        none = " or None" if allow_none else ""
        raise NotebookParameterError(
            f"parameter {name!r} must be a folder path (str){none}, got {_type_name(value)}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root() / path


def widgets_available() -> bool:
    """True in a live IPython kernel with ipywidgets, unless ``$VTAGML_NB_HEADLESS`` is set."""
    if _env_flag(HEADLESS_ENV):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _check_interactive(value: Any) -> bool:
    if not any(value is v or (isinstance(v, str) and value == v) for v in INTERACTIVE_VALUES):
        raise NotebookParameterError(
            f"parameter 'interactive' must be one of {', '.join(map(repr, INTERACTIVE_VALUES))}, "
            f"got {_type_name(value)}"
        )
    if _env_flag(HEADLESS_ENV):
        return False
    if value == "auto":
        return widgets_available()
    return bool(value)


@dataclass
class NotebookParams:
    """The checked parameters of one notebook run (what ``resolve`` returns).

    Attributes:
        preset: the preset's name (a file of ``configs/presets/``).
        overrides: the ``key.sub=value`` overrides of the parameters cell.
        cfg: the resolved :class:`~vtagml_core.train.config.KitConfig` (preset <- seed, device
            and cache root <- overrides), the same object the CLI would build.
        device: resolved torch device name (``"cpu"``, ``"cuda:0"``).
        seed: the training seed (``cfg.train.seed``; python, numpy and torch are seeded with it).
        output_dir: absolute folder for this run's artifacts (created).
        cache_dir: data cache root, or None for the default (``$VTAGML_CACHE``).
        interactive: True = ipywidgets explorers; False = static plotly figures.
        overridden: names of the parameters that came from an environment variable.
        seeds: the training seeds of the settings' tables: ``$VTAGML_NB_SEEDS``, else
            ``(seed,)``; with two or more every table shows the spread over them.
    """

    preset: str
    overrides: tuple[str, ...]
    cfg: Any
    device: str
    seed: int
    output_dir: Path
    cache_dir: Path | None
    interactive: bool
    overridden: tuple[str, ...] = field(default=())
    seeds: tuple[int, ...] = field(default=())

    # Read-only views of the resolved config, for captions and loops.
    @property
    def size(self) -> int:
        return self.cfg.data.size

    @property
    def steps(self) -> int:
        """Optimizer steps of the lessons' short run (``lesson.steps``)."""
        return self.cfg.lesson.steps

    @property
    def batch_size(self) -> int:
        return self.cfg.data.batch_size

    @property
    def train_count(self) -> int:
        return self.cfg.data.train_count

    @property
    def val_count(self) -> int:
        return self.cfg.data.val_count

    @property
    def description(self) -> str:
        return preset_description(self.preset)

    def artifacts(self, name: str) -> Path:
        """``output_dir / name``, created: where one notebook writes its files."""
        folder = self.output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def base_overrides(self) -> list[str]:
        """What the notebook adds to the preset: seed, device, cache root, then its overrides."""
        base = [f"train.seed={self.seed}", f"train.device={self.device.split(':')[0]}",
                f"train.progress={str(self.interactive).lower()}"]
        if self.cache_dir is not None:
            base.append(f"data.cache_root={self.cache_dir}")
        return base + list(self.overrides)

    def kit_config(self, overrides: list[str] | None = None):
        """The resolved kit config, with further ``key.sub=value`` ``overrides`` on top."""
        from vtagml_core.train.config import load_kit_config

        return load_kit_config(preset=self.preset, overrides=self.base_overrides() + list(overrides or []))

    def model_config(self, tasks: str = "S-D-N-E", overrides: list[str] | None = None):
        """The preset's :class:`~vtagml_core.model.vtagml.ModelConfig` for ``tasks``."""
        return self.kit_config([f"model.tasks={tasks}", *(overrides or [])]).model

    def dataset(self, split: str, tasks: str = "S-D-N-E", domain: str | None = None,
                count: int | None = None):
        """A split of the preset's data (:func:`vtagml_core.data.config.build_dataset`)."""
        from vtagml_core.data.config import build_dataset

        return build_dataset(self.cfg.data, split, tasks, domain=domain, count=count, progress=False)

    def describe(self) -> str:
        """One markdown line: preset, size, steps, batch, device, seed, folders."""
        env = f" (from the environment: {', '.join(self.overridden)})" if self.overridden else ""
        cache = self.cache_dir or os.environ.get(CACHE_ENV) or "default cache"
        extra = f", overrides `{' '.join(self.overrides)}`" if self.overrides else ""
        return (f"preset **{self.preset}**{env}{extra}: {self.size}x{self.size} px, "
                f"lessons {self.steps} steps of batch {self.batch_size}, device `{self.device}`, "
                f"seed {self.seed}, outputs in `{self.output_dir}`, data cache `{cache}`, "
                f"{'interactive widgets' if self.interactive else 'static figures'}")

    def _repr_markdown_(self) -> str:
        return self.describe()


def resolve(preset: Any = "quick", overrides: Any = (), device: Any = "auto", seed: Any = 0,
            output_dir: Any = "runs/notebooks", cache_dir: Any = None,
            interactive: Any = "auto", **unknown: Any) -> NotebookParams:
    """Check the parameters cell, apply environment overrides, seed, return the run's params.

    Args:
        preset: a preset name (``configs/presets/<name>.yaml``; ``$VTAGML_NB_PRESET`` wins).
        overrides: ``key.sub=value`` strings applied on top of the preset, as ``--set``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: non-negative integer: the training seed.
        output_dir: folder for artifacts (``$VTAGML_NB_OUTPUT`` wins); created.
        cache_dir: data cache root; when given, ``$VTAGML_CACHE`` is set to it for the kernel.
        interactive: ``"auto"`` (widgets when a live kernel has ipywidgets), True or False;
            ``$VTAGML_NB_HEADLESS=1`` forces False.

    Raises:
        NotebookParameterError: unknown parameter name, wrong type or value, or an override the
            config refuses; the message lists the valid values.
    """
    from vtagml_core.config import ConfigError
    from vtagml_core.runtime import configure_threads, seed_everything

    if unknown:
        raise NotebookParameterError(
            f"unknown notebook parameter(s) {', '.join(sorted(unknown))}; valid parameters: "
            f"{', '.join(DEFAULTS)} (sizes and budgets are overrides now, e.g. "
            "overrides = [\"lesson.steps=10\"])"
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
    seeds: tuple[int, ...] = ()
    env_seeds = os.environ.get(SEEDS_ENV)
    if env_seeds:
        from vtagml_core.experiments.seeds import parse_seeds

        try:
            seeds = tuple(parse_seeds(env_seeds))
        except ValueError as err:
            raise NotebookParameterError(f"${SEEDS_ENV}={env_seeds!r}: {err}") from err
        overridden.append("seeds")
    params = NotebookParams(
        preset=the_preset,
        overrides=_check_overrides(list(overrides) if isinstance(overrides, tuple) else overrides),
        cfg=None,
        device=_check_device(device),
        seed=_check_int("seed", seed, 0, allow_none=False),
        output_dir=_check_path("output_dir", output_dir, allow_none=False),
        cache_dir=_check_path("cache_dir", cache_dir, allow_none=True),
        interactive=_check_interactive(interactive),
        overridden=tuple(overridden),
    )
    params.seeds = seeds or (params.seed,)
    try:
        params.cfg = params.kit_config()
    except (ConfigError, ValueError) as err:
        raise NotebookParameterError(f"preset {the_preset!r} with overrides {list(params.overrides)}: "
                                     f"{err}") from err
    params.output_dir.mkdir(parents=True, exist_ok=True)
    if params.cache_dir is not None:
        os.environ[CACHE_ENV] = str(params.cache_dir)
    if not params.interactive:

        # Plotly JSON plus a static PNG in the outputs (vtagml_core.viz.static): the runner's
        # report reads both, nbconvert HTML and GitHub show the image, and no copy of plotly.js
        # is embedded in every executed notebook.
        from vtagml_core.viz.static import use_static_renderer

        use_static_renderer()
    configure_threads()  # $VTAGML_THREADS: a kernel next to a demo or a run (README)
    seed_everything(params.seed)
    return params


__all__ = ["DEFAULTS", "NotebookParameterError", "NotebookParams", "preset_description",
           "project_root", "resolve", "widgets_available"]
