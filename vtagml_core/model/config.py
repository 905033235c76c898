"""What defines a VTAGML network: :class:`ModelConfig` (its own module, so that the model
files, the checkpoint format and the hub loader can all read it without importing each other)."""
from __future__ import annotations

from dataclasses import dataclass, field

from vtagml_core.data.config import DataConfig

from .adapter import AdapterConfig
from .backbone import BackboneConfig
from .decoder import DecoderConfig


#: Linear layers LoRA can adapt in a Swin V2 (``reduction``: the patch merging, MTLoRA+); where
#: each one sits is :data:`vtagml_core.baselines.mtlora.BLOCK_TARGETS`.
LORA_TARGETS: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2", "reduction")


@dataclass
class MTLoRAConfig:
    """The ``mtlora`` method's own settings, ``model.mtlora.*`` (other methods ignore them;
    :mod:`vtagml_core.baselines.mtlora`).

    Attributes:
        rank: r of every task-agnostic LoRA (TA-LoRA).
        alpha: its scale is ``alpha / rank`` (Hu et al. Sec. 4.1); 32 / 8 = 4, MTLoRA's scale.
        task_rank: r of every task-specific LoRA (TS-LoRA), one per task and adapted layer.
        task_alpha: its scale is ``task_alpha / task_rank``; 16 / 4 = 4.
        targets: which linear layers get LoRA: any of ``qkv``, ``proj`` (the attention's
            projections, the default), ``fc1``, ``fc2`` (the MLP; MTLoRA's released configs
            adapt them too) and ``reduction`` (patch merging, MTLoRA+).
        task_specific_stages: stages (0-based) whose last block splits into task streams (TS-LoRA);
            None = every stage (the paper's multi-scale design); ``[]`` = TA-LoRA only (plain LoRA
            with per-task decoders).
    """

    rank: int = 8
    alpha: float = 32.0
    task_rank: int = 4
    task_alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])
    task_specific_stages: list[int] | None = None

    def validate(self) -> None:
        """Raise ValueError naming the field when a setting is out of range."""
        for name in ("rank", "task_rank"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"MTLoRAConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("alpha", "task_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MTLoRAConfig.{name} must be > 0, got {getattr(self, name)!r}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"MTLoRAConfig.targets must be distinct names from {list(LORA_TARGETS)}, "
                             f"at least one; got {self.targets!r}")

    def stages(self, num_stages: int) -> list[int]:
        """The task-specific stages for a backbone of ``num_stages`` stages (sorted, checked)."""
        stages = list(range(num_stages)) if self.task_specific_stages is None else self.task_specific_stages
        bad = [s for s in stages if not 0 <= s < num_stages]
        if bad or len(set(stages)) != len(stages):
            raise ValueError(f"MTLoRAConfig.task_specific_stages must be distinct stages in 0-{num_stages - 1} "
                             f"(this backbone has {num_stages}); got {self.task_specific_stages!r}")
        return sorted(stages)


@dataclass
class ModelConfig:
    """Everything that defines a VTAGML network.

    Attributes:
        tasks: task set, paper spelling (``"S-D-N-E"``) or names (``"seg,depth"``).
        num_classes: segmentation classes; ``None`` = the synthetic benchmark's class table.
        backbone, adapter, decoder: the three parts (see their modules).
        mtlora: options of the ``mtlora`` method (rank, alpha, targets, task-specific stages);
            ``--set model.mtlora.rank=16`` reaches them. Other methods ignore them.
    """

    tasks: str = "S-D-N-E"
    num_classes: int | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    mtlora: MTLoRAConfig = field(default_factory=MTLoRAConfig)

    def fit_to_data(self, data: DataConfig) -> "ModelConfig":
        """Make this config follow ``data``'s dataset; returns ``self`` (changed in place).

        ``num_classes`` left unset becomes the real dataset's class count, and an explicit value
        must equal it (synthetic keeps whatever is set, ``None`` by default, so its saved configs
        and run keys do not change). Every task of :attr:`tasks` must be one the dataset has labels for.

        Raises:
            ValueError: a task the dataset lacks (naming what it has), or a ``num_classes``
                other than the dataset's (saying which override to drop).
        """
        data.check_tasks(self.tasks)
        if data.is_synthetic:
            return self
        info = data.info()
        if self.num_classes is None:
            self.num_classes = info.num_classes
        elif self.num_classes != info.num_classes:
            raise ValueError(
                f"model.num_classes={self.num_classes} but data.dataset={data.dataset} has "
                f"{info.num_classes} classes; drop the model.num_classes override (it follows the dataset)")
        return self

    def resolved_num_classes(self) -> int:
        """The seg head's width: :attr:`num_classes`, else the synthetic benchmark's class count
        (:meth:`fit_to_data` fills it in for a real dataset)."""
        if self.num_classes is not None:
            if self.num_classes < 1:
                raise ValueError(f"model.num_classes must be positive, got {self.num_classes}")
            return self.num_classes
        from vtagml_core.data.classes import NUM_CLASSES

        return NUM_CLASSES


__all__ = ["LORA_TARGETS", "MTLoRAConfig", "ModelConfig"]
