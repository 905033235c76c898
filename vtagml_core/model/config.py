"""What defines a VTAGML network: :class:`ModelConfig` (its own module, so that the model
files, the checkpoint format and the hub loader can all read it without importing each other)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .adapter import AdapterConfig
from .backbone import BackboneConfig
from .decoder import DecoderConfig


@dataclass
class ModelConfig:
    """Everything that defines a VTAGML network.

    Attributes:
        tasks: task set, paper spelling (``"S-D-N-E"``) or names (``"seg,depth"``).
        num_classes: segmentation classes; ``None`` = the synthetic benchmark's class table.
        backbone, adapter, decoder: the three parts (see their modules).
    """

    tasks: str = "S-D-N-E"
    num_classes: int | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def resolved_num_classes(self) -> int:
        if self.num_classes is not None:
            if self.num_classes < 1:
                raise ValueError(f"model.num_classes must be positive, got {self.num_classes}")
            return self.num_classes
        from vtagml_core.data.classes import NUM_CLASSES

        return NUM_CLASSES


__all__ = ["ModelConfig"]
