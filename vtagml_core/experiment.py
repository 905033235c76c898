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
    """A plain training run (the full trainer with schedules and resume is its own module).

    Attributes:
        steps: optimizer steps.
        lr: Adam learning rate.
        class_weight_power: segmentation CE weights ~ frequency^-power (0 disables; DESIGN.md
            section 5 measured 0.5 as essential on the synthetic classes).
        depth_loss, edge_loss: see :mod:`vtagml_core.train.losses`.
        task_weights: lambda_t per task (missing tasks: 1).
        seed: seeds torch for the model init and data order.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    """

    steps: int = 60
    lr: float = 2e-3
    class_weight_power: float = 0.5
    depth_loss: str = "l1"
    edge_loss: str = "l1"
    task_weights: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"


@dataclass
class KitConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "KitConfig":
        parse_tasks(self.model.tasks)
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
