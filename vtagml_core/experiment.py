"""The kit's top-level config: data, model and a short training run, loaded from YAML.

``configs/tiny-cpu.yaml`` is the quick CPU preset (the default), ``configs/paper.yaml`` the
paper's scale (Swin-B V2 at 256x256, for a GPU). Any field can be overridden from the command
line with ``--set key.sub=value`` (see :mod:`vtagml_core.config`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vtagml_core.config import load_config
from vtagml_core.model.vtagml import ModelConfig
from vtagml_core.tasks import parse_tasks

#: Preset name -> config file, relative to the repository's ``configs/`` folder.
PRESETS: dict[str, str] = {"quick": "tiny-cpu.yaml", "paper": "paper.yaml"}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    """Which synthetic domain and how many scenes of each split, at what size.

    ``size`` must equal ``model.backbone.img_size`` (the backbone is built for one size).
    ``batch_size`` is per process: under ``torchrun --nproc_per_node=K`` the global batch of one
    optimizer step is ``K * batch_size``.
    """

    domain: str = "indoor"
    size: int = 128
    train_count: int = 512
    val_count: int = 128
    test_count: int = 128
    pretext_count: int = 1024
    seed: int = 0
    cache_root: str | None = None
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class TrainConfig:
    """How the trainer runs (:mod:`vtagml_core.train.trainer`; DESIGN.md section 3, "Training").

    Budget:
        epochs: passes over the training split (the unit of validation and checkpoints).
        max_steps: optional cap on optimizer steps (``None``: ``epochs`` full passes).
        steps: older name of ``max_steps`` (kept so that ``--set train.steps=N`` still works);
            set one of the two, not both to different values.

    Optimisation (DESIGN.md section 3, "Training": Adam, warm-up then cosine decay; the
    paper's digest says the same and gives no numbers, so the values are the kit's):
        lr: peak Adam learning rate, reached at the end of the warm-up.
        warmup_steps: linear warm-up length in optimizer steps.
        min_lr_ratio: the cosine decays to ``min_lr_ratio * lr`` at the last step.
        class_weight_power: segmentation CE weights ~ frequency^-power, counted on the train
            split (0 disables; DESIGN.md section 5 measured 0.5 as essential on the synthetic
            classes).
        depth_loss, edge_loss: see :mod:`vtagml_core.train.losses`.
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
    """

    epochs: int = 1
    max_steps: int | None = None
    steps: int | None = None
    lr: float = 2e-3
    warmup_steps: int = 5
    min_lr_ratio: float = 0.05
    class_weight_power: float = 0.5
    depth_loss: str = "l1"
    edge_loss: str = "l1"
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

    def validate(self) -> "TrainConfig":
        """Check ranges and fold the legacy ``steps`` into ``max_steps``."""
        if self.steps is not None:
            if self.max_steps is not None and self.max_steps != self.steps:
                raise ValueError(
                    f"train.steps ({self.steps}) and train.max_steps ({self.max_steps}) disagree; "
                    "train.steps is the older name of train.max_steps: set only max_steps"
                )
            self.max_steps, self.steps = self.steps, None
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
        from vtagml_core.train.balancing import BALANCERS, build_balancer

        if self.balancer not in BALANCERS:
            raise ValueError(f"train.balancer must be one of {', '.join(BALANCERS)}, got {self.balancer!r}")
        build_balancer(self.balancer, ("seg", "depth"), **dict(self.balancer_options))  # checks options
        return self


@dataclass
class KitConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "KitConfig":
        parse_tasks(self.model.tasks)
        self.train.validate()
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.data.batch_size}")
        if self.data.size <= 0:
            raise ValueError(f"data.size must be a positive integer, got {self.data.size}")
        if self.data.size != self.model.backbone.img_size:
            raise ValueError(
                f"data.size ({self.data.size}) differs from model.backbone.img_size "
                f"({self.model.backbone.img_size}); the backbone is built for one image size: "
                "set both to the same multiple of the backbone's patch grid"
            )
        return self


def preset_path(preset: str) -> Path:
    """Config file of a preset; unknown presets raise listing the valid ones."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return CONFIG_DIR / PRESETS[preset]


def load_kit_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    preset: str | None = None) -> KitConfig:
    """Load a :class:`KitConfig` from a file or a preset, then apply ``key=value`` overrides."""
    if path is None and preset is not None:
        path = preset_path(preset)
    return load_config(KitConfig, path, overrides).validate()
