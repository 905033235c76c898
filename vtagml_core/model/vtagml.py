"""The full VTAGML model (paper Sec. 3, Fig. 2): frozen backbone -> adapters -> decoders -> heads.

Data flow of one forward pass (docs/method.md)::

    images (B, 3, H, W)
      -> FrozenBackbone: taps [(B, h_l, w_l, C_l)] and stage maps at strides 4, 8, 16, 32
      -> VisionAdapter: per task stream t, conditioned on omega_t (TROA row), one output
         (T, B, h_l, w_l, C_l) per adapter layer (Sec. 3.1-3.2)
      -> per stride, the decoder reads the *last adapter layer at that stride* when there is
         one, else the frozen backbone's stage map (Sec. 3.3: "the deepest adapter output is the
         decoder input; the stage-3 adapter output joins at 1/16; backbone stage-2 and stage-1
         features join at 1/8 and 1/4")
      -> MultiTaskDecoder: per-task Swin decoders (or one shared) and linear heads
      -> {task: raw output (B, K_t, H, W)}

After the backward of the total loss, :meth:`VTAGML.update_affinity` runs TROA's mirror-descent
step (Algorithm 1) from the per-task gradients that the same backward left on the adapters'
per-task inputs (see :mod:`vtagml_core.model.adapter`).

Ablation switches (paper supplementary) are config fields: ``adapter.troa`` (TROA off: omega
stays uniform), ``adapter.taa_bias="none"`` (TAA off: plain attention), ``adapter.tsn`` (TSN
off: the backbone LayerNorm), ``adapter.enabled`` (adapters off: decoders on frozen features),
and ``backbone.taps`` (number and placement of adapter layers).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vtagml_core.tasks import parse_tasks

from .adapter import AdapterConfig, VisionAdapter
from .backbone import BackboneConfig, BackboneOutput, FrozenBackbone
from .decoder import DecoderConfig
from .heads import MultiTaskDecoder
from .params import parameter_table


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


def tsn_init_params(norm: nn.LayerNorm) -> tuple[Tensor, Tensor]:
    """TSN's gamma', beta' start from the tapped block's LayerNorm (Eq. 4, Sec. 3.2.3).

    timm initialises Swin V2's residual post-norms with weight 0 (``init_respostnorm``), so a
    Swin V2 that was never trained has all-zero LayerNorm weights at the taps. Starting TSN
    from those would make every adapter output a constant and stop all gradient through the
    adapters' inputs (TROA would see zero gradients). For such an untrained backbone the kit
    starts TSN from the identity LayerNorm (weight 1, bias 0) instead; any trained backbone
    (timm's ImageNet weights, the kit's pretext-pretrained one) is used as the paper says.
    """
    weight, bias = norm.weight.detach().clone(), norm.bias.detach().clone()
    if not weight.abs().gt(0).any():
        weight, bias = torch.ones_like(weight), torch.zeros_like(bias)
    return weight, bias


class VTAGML(nn.Module):
    """Vision transformer adapters for generalizable multitask learning.

    Args:
        config: :class:`ModelConfig`.

    Attributes:
        backbone: :class:`FrozenBackbone` (never trains).
        adapter: :class:`VisionAdapter` (holds TROA's affinity matrix as ``adapter.troa``).
        decoder: :class:`MultiTaskDecoder` (decoders and heads).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else ModelConfig()
        self.tasks = parse_tasks(config.tasks)
        self.num_classes = config.resolved_num_classes()
        self.backbone = FrozenBackbone(config.backbone)
        bb = self.backbone
        img = config.backbone.img_size
        grids = [(img // s, img // s) for s in bb.tap_strides]
        ln_params = [tsn_init_params(n) for n in bb.norm_layers_at_taps()]
        self.adapter = VisionAdapter(config.adapter, bb.tap_channels, grids,
                                     bb.num_heads_at_taps(), ln_params, len(self.tasks))
        # Which adapter layer feeds the decoder at each stride: the last one at that stride.
        self._adapter_at_stride = {bb.tap_strides[i]: i for i in self.adapter.stage_ends}
        if not config.adapter.enabled:
            self._adapter_at_stride = {}
        strides, channels = bb.stage_strides, bb.stage_channels
        deep_channels = self._channels_at(strides[-1], channels[-1])
        skip_channels = [self._channels_at(s, c) for s, c in zip(strides[-2::-1], channels[-2::-1])]
        self.decoder = MultiTaskDecoder(self.tasks, config.decoder, deep_channels, skip_channels,
                                        img, self.num_classes, deep_stride=strides[-1])

    def _channels_at(self, stride: int, stage_channels: int) -> int:
        i = self._adapter_at_stride.get(stride)
        return self.adapter.tap_channels[i] if i is not None else stage_channels

    # ------------------------------------------------------------------ forward
    @property
    def omega(self) -> Tensor:
        """TROA's current task-affinity matrix ``(N, N)``, rows are distributions."""
        return self.adapter.troa.omega

    @property
    def tracks_task_grads(self) -> bool:
        """Whether a training forward must keep per-task gradients for TROA."""
        return self.config.adapter.enabled and self.adapter.troa.enabled

    def encode(self, images: Tensor) -> BackboneOutput:
        """Frozen backbone features of ``images (B, 3, H, W)`` in [0, 1]."""
        return self.backbone(images)

    def forward(
        self,
        images: Tensor,
        features: BackboneOutput | None = None,
        track_task_grads: bool = False,
    ) -> dict[str, Tensor]:
        """Raw per-task outputs ``{task: (B, K_t, H, W)}`` for ``images (B, 3, H, W)``.

        Args:
            images: RGB in [0, 1]; also feeds the decoder's full-resolution path.
            features: precomputed backbone features of ``images`` (the frozen backbone gives
                the same ones every time, so a feature cache may supply them).
            track_task_grads: keep per-task gradients for :meth:`update_affinity` (training
                with TROA on).
        """
        feats = features if features is not None else self.encode(images)
        outs = self.adapter(feats.taps, track_task_grads=track_task_grads)
        per_stride: dict[int, Tensor] = {}
        for stride, i in self._adapter_at_stride.items():
            per_stride[stride] = outs[i]  # (T, B, h, w, C), one stream per task
        strides = self.backbone.stage_strides
        inputs = {}
        for t_idx, task in enumerate(self.tasks):
            maps = [per_stride[s][t_idx] if s in per_stride else stage
                    for s, stage in zip(strides, feats.stages)]
            inputs[task] = (maps[-1], maps[-2::-1])
        return self.decoder(inputs, images)

    def update_affinity(self) -> Tensor | None:
        """TROA step (Algorithm 1) after ``loss.backward()``; returns ``sim (N, N)`` or None."""
        if not self.tracks_task_grads:
            return None
        return self.adapter.update_affinity()

    # ------------------------------------------------------------------ reporting
    def components(self) -> dict[str, nn.Module]:
        """Named parts for the parameter report (Table 6)."""
        parts: dict[str, nn.Module] = {"backbone (frozen)": self.backbone,
                                       "adapters": self.adapter}
        for key, dec in self.decoder.decoders.items():
            parts[f"decoder[{key}]"] = dec
        parts["heads"] = self.decoder.heads
        return parts

    def parameter_report(self) -> list[dict]:
        """Rows ``{component, total, trainable}`` plus a total row."""
        return parameter_table(self.components())
