"""The shared part of the parameter-efficient multitask methods (``mtlora``, ``norm_only``).

Each trains a few parameters *inside* a frozen pretrained backbone (LoRA matrices, per-task
LayerNorms) and reads per-task stage maps into the same per-task decoders and heads as
``vtagml`` and ``vanilla_mtl``; :class:`PEFTMultiTask` is that common model with VTAGML's
interface (``encode``, ``forward``, ``parameter_report``), so the trainer, the settings and the
parameter table treat every method alike.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable

from torch import Tensor, nn

from vtagml_core.model.backbone import BackboneOutput, FrozenBackbone
from vtagml_core.model.config import ModelConfig
from vtagml_core.model.heads import MultiTaskDecoder
from vtagml_core.model.params import parameter_table
from vtagml_core.tasks import parse_tasks

from .common import WithoutTROA


def parameter_view(params: Iterable[nn.Parameter]) -> nn.Module:
    """A module holding existing parameters (no copies): one row of the parameter report."""
    return nn.ParameterList(list(params))


class PEFTMultiTask(WithoutTROA, nn.Module, ABC):
    """Base of the parameter-efficient methods (``mtlora``, ``norm_only``): VTAGML's interface.

    Pretrained weights frozen, a few trained parameters inside the backbone, and per task the
    decoder and head of ``vtagml`` / ``vanilla_mtl`` (:class:`MultiTaskDecoder`) reading that
    task's stage maps at strides 32 (input), 16, 8 and 4 (skips). Subclasses build
    ``self.backbone`` (``frozen`` False) and then call :meth:`_build_decoder`, and implement
    :meth:`task_stage_maps` and :meth:`components`.
    """

    method: str = ""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.adapter.enabled or config.decoder.shared or not config.backbone.frozen:
            raise ValueError(
                f"{type(self).__name__} needs its method's effective config (adapter.enabled=false, "
                f"decoder.shared=false, backbone.frozen=true); got adapter.enabled="
                f"{config.adapter.enabled}, decoder.shared={config.decoder.shared}, backbone.frozen="
                f"{config.backbone.frozen}. Build it with build_model('{self.method}', config)")
        self.config = config
        self.tasks: tuple[str, ...] = parse_tasks(config.tasks)
        self.num_classes = config.resolved_num_classes()

    def _build_decoder(self, base: FrozenBackbone) -> None:
        strides, channels = base.stage_strides, base.stage_channels
        self.decoder = MultiTaskDecoder(self.tasks, self.config.decoder, channels[-1], channels[-2::-1],
                                        self.config.backbone.img_size, self.num_classes,
                                        deep_stride=strides[-1])

    @abstractmethod
    def task_stage_maps(self, feats: BackboneOutput, batch: int) -> list[list[Tensor]]:
        """Per task (model order), its four stage maps ``(B, h_s, w_s, C_s)``, strides 4 to 32."""

    @abstractmethod
    def components(self) -> dict[str, nn.Module]:
        """Named parts for the parameter report (Table 6), frozen backbone first."""

    def forward(self, images: Tensor, features: BackboneOutput | None = None,
                track_task_grads: bool = False) -> dict[str, Tensor]:
        """Raw per-task outputs ``{task: (B, K_t, H, W)}`` for ``images (B, 3, H, W)`` in [0, 1].

        ``features``: this model's own :meth:`encode` output, only outside training (the features
        change with every step, so a cache of them is stale). ``track_task_grads`` is ignored.

        Raises:
            ValueError: ``features`` given while training.
        """
        if features is not None and self.training:
            raise ValueError(
                f"method {self.method!r} trains parameters inside the backbone, so it computes its "
                "features from the images in every training step; do not pass cached features "
                f"(turn the feature cache off for {self.method})")
        feats = features if features is not None else self.encode(images)
        inputs = {}
        for task, maps in zip(self.tasks, self.task_stage_maps(feats, images.shape[0])):
            inputs[task] = (maps[-1], maps[-2::-1])     # deep (stride 32), skips 16, 8, 4
        return self.decoder(inputs, images)

    def decoder_components(self) -> dict[str, nn.Module]:
        parts: dict[str, nn.Module] = {f"decoder[{k}]": d for k, d in self.decoder.decoders.items()}
        parts["heads"] = self.decoder.heads
        return parts

    def parameter_report(self) -> list[dict]:
        """Rows ``{component, total, trainable}`` plus a total row (paper Table 6 format)."""
        return parameter_table(self.components())


__all__ = ["PEFTMultiTask", "parameter_view"]
