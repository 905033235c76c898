"""The kit's run config (data, model, training, lessons) and its presets, loaded from YAML.

**Presets are YAML files selected by name**: ``configs/presets/<name>.yaml`` (``smoke`` for
the tests, ``quick`` for a CPU session, ``paper`` for a GPU at the paper's scale). A preset may
start from another with ``inherit: <name>`` and change only what differs, so every
hyperparameter has one home. Any field can be overridden with ``key.sub=value`` strings: the
CLI's ``--set``, the ``overrides`` list of a notebook's parameters cell and the settings all
pass them to :func:`load_kit_config` (see :mod:`vtagml_core.config` and ``docs/presets.md``)::

    cfg = load_kit_config(preset="quick", overrides=["train.lr=0.004"])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vtagml_core.config import CONFIG_DIR, load_config
from vtagml_core.data.config import DataConfig
from vtagml_core.data.synthetic.catalog import check_domain_name
from vtagml_core.model.vtagml import ModelConfig
from vtagml_core.tasks import parse_tasks

from .balancing import BALANCERS, build_balancer

#: Folder of the preset files (``<name>.yaml``).
PRESETS_DIR: Path = CONFIG_DIR / "presets"


@dataclass
class TrainConfig:
    """How the trainer runs (:mod:`vtagml_core.train.trainer`; ``docs/method.md``, "Training").

    Budget:
        epochs: passes over the training split (the unit of validation and checkpoints).
        max_steps: optional cap on optimizer steps (``None``: ``epochs`` full passes).

    Optimisation (``docs/method.md``, "Training": Adam, warm-up then cosine decay; the
    paper's digest says the same and gives no numbers, so the values are the kit's):
        lr: peak Adam learning rate, reached at the end of the warm-up.
        warmup_steps: linear warm-up length in optimizer steps.
        min_lr_ratio: the cosine decays to ``min_lr_ratio * lr`` at the last step.
        class_weight_power: segmentation CE weights ~ frequency^-power, counted on the train
            split (0 disables; 0.5 was measured as essential on the synthetic classes, see
            ``docs/benchmark.md``).
        depth_loss, edge_loss, normals_loss: see :mod:`vtagml_core.train.losses`
            (``normals_loss`` is left out of the run key of a model without normals).
        task_weights: lambda_t per task (missing tasks: 1).
        balancer: how the task losses become one update (:mod:`vtagml_core.train.balancing`):
            ``equal`` (the paper's sum), ``uncertainty``, ``dwa``, ``gradnorm``, ``pcgrad`` or
            ``cagrad``.
        balancer_options: keyword options of the balancer, e.g. ``{temperature: 2.0}`` for
            ``dwa`` or ``{c: 0.4}`` for ``cagrad`` (unknown options raise, listing the valid ones).

    Run:
        seed: seeds the model init (torch, numpy, python) and the data order of every epoch.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        amp: bf16 autocast on CUDA (always fp32 on CPU).
        feature_cache: precompute the frozen backbone's features once
            (:mod:`vtagml_core.train.feature_cache`); only used when the backbone is frozen and
            the datasets do not augment images.
        feature_batch_size: images per backbone forward while filling the feature cache.
        save_every_steps: also checkpoint the training state every this many steps inside an
            epoch (0: only at epoch ends); resume continues from the latest one.
        progress: tqdm progress bars (rank 0 only).
        reference_step_seconds: seconds per optimizer step of the preset's VTAGML S-D-N-E model
            on the reference 2-core CPU (``bench/bench_quick_preset.py``); the notebooks' and
            settings' time estimates use it until this machine's run store has runs of its own
            to measure. Not part of a run's key.
    """

    epochs: int = 1
    max_steps: int | None = None
    lr: float = 2e-3
    warmup_steps: int = 5
    min_lr_ratio: float = 0.05
    class_weight_power: float = 0.5
    depth_loss: str = "l1"
    edge_loss: str = "l1"
    normals_loss: str = "cosine"
    task_weights: dict[str, float] = field(default_factory=dict)
    balancer: str = "equal"
    balancer_options: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    feature_cache: bool = True
    feature_batch_size: int = 32
    save_every_steps: int = 50
    progress: bool = True
    reference_step_seconds: float | None = None

    def validate(self) -> "TrainConfig":
        """Check ranges; a bad value raises naming the field and what it must be."""
        checks = [
            (self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1,
             f"train.max_steps must be >= 1 or null, got {self.max_steps}"),
            (self.lr > 0, f"train.lr must be > 0, got {self.lr}"),
            (self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}"),
            (0.0 <= self.min_lr_ratio <= 1.0,
             f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.save_every_steps >= 0,
             f"train.save_every_steps must be >= 0 (0 = epoch ends only), got {self.save_every_steps}"),
            (self.feature_batch_size >= 1,
             f"train.feature_batch_size must be >= 1, got {self.feature_batch_size}"),
            (self.device in ("auto", "cpu", "cuda"),
             f"train.device must be auto, cpu or cuda, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.balancer not in BALANCERS:
            raise ValueError(f"train.balancer must be one of {', '.join(BALANCERS)}, got {self.balancer!r}")
        build_balancer(self.balancer, ("seg", "depth"), **dict(self.balancer_options))  # checks options
        return self


@dataclass
class LessonConfig:
    """Budgets of the notebooks' lessons (they train with the same step and trainer as the rest).

    Attributes:
        steps: optimizer steps of the short run that lessons 02-04 share (the model whose TROA
            affinity, TAA biases and TSN scales they show).
        scenes_per_domain: scenes per domain in the benchmark tour and statistics (notebook 00).
    """

    steps: int = 60
    scenes_per_domain: int = 64

    def validate(self) -> "LessonConfig":
        if self.steps < 1 or self.scenes_per_domain < 1:
            raise ValueError(f"lesson.steps and lesson.scenes_per_domain must be >= 1, got "
                             f"{self.steps} and {self.scenes_per_domain}")
        return self


@dataclass
class KitConfig:
    """One run: its data, model, training and (for notebooks) lesson budgets."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lesson: LessonConfig = field(default_factory=LessonConfig)

    def validate(self) -> "KitConfig":
        parse_tasks(self.model.tasks)
        self.train.validate()
        self.lesson.validate()
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.data.batch_size}")
        if self.data.size <= 0:
            raise ValueError(f"data.size must be a positive integer, got {self.data.size}")
        if self.data.is_synthetic:
            # one spelling per domain (indoor_shift@0.40 -> indoor_shift@0.4): run keys agree
            self.data.domain = check_domain_name(self.data.domain)
        if self.data.size != self.model.backbone.img_size:
            raise ValueError(
                f"data.size ({self.data.size}) differs from model.backbone.img_size "
                f"({self.model.backbone.img_size}); the backbone is built for one image size: "
                "set both to the same multiple of the backbone's patch grid"
            )
        return self


def preset_names() -> list[str]:
    """The presets there are: the YAML files of :data:`PRESETS_DIR`, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(preset: str) -> Path:
    """Config file of a preset; an unknown preset raises listing the valid ones."""
    path = PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())} "
                         f"(the files of {PRESETS_DIR})")
    return path


def load_kit_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    preset: str | None = None) -> KitConfig:
    """A validated :class:`KitConfig` from a file or a preset, then ``key=value`` overrides."""
    if path is None and preset is not None:
        path = preset_path(preset)
    return load_config(KitConfig, path, overrides).validate()


__all__ = ["KitConfig", "LessonConfig", "PRESETS_DIR", "TrainConfig", "load_kit_config",
           "preset_names", "preset_path"]
