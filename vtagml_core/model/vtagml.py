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

**Algorithm 1's weighted objective** (``adapter.weighted_objective``, off by default; the reading
is in :mod:`vtagml_core.model.troa`): a *training* forward then also decodes every adapter stream t
with every task's decoder n and returns those predictions under ``outputs[STREAM_OUTPUTS]``; the
trainer weights their losses by omega. To keep TROA's per-task gradients exact with one backward,
the adapters run 2N streams: N tracked ones, each read only by its own task's decoder (TROA reads
their gradients, as in the default objective), and N untracked copies for the cross terms
``decoder_n(stream_t)``, n != t.

Ablation switches (paper supplementary) are config fields: ``adapter.troa`` (TROA off: omega
stays uniform), ``adapter.taa_bias="none"`` (TAA off: plain attention), ``adapter.tsn`` (TSN
off: the backbone LayerNorm of the FFN residual), ``adapter.enabled`` (adapters off: decoders on frozen features),
and ``backbone.taps`` (number and placement of adapter layers).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from vtagml_core.tasks import parse_tasks

from .adapter import VisionAdapter
from .backbone import BackboneOutput, FrozenBackbone
from .config import ModelConfig
from .heads import MultiTaskDecoder
from .hub import HubMixin
from .params import parameter_table

#: Key of the per-stream predictions in a training forward with ``adapter.weighted_objective``:
#: ``outputs[STREAM_OUTPUTS][t][n]`` is task n's decoder on adapter stream t, ``(B, K_n, H, W)``
#: (a list over the target streams t of ``{task n: prediction}``; entry ``[t][task t]`` is
#: ``outputs[task t]`` itself).
STREAM_OUTPUTS: str = "streams"


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


class VTAGML(HubMixin, nn.Module):
    """Vision transformer adapters for generalizable multitask learning.

    ``VTAGML.from_pretrained(folder)`` / ``model.save_pretrained(folder)`` load and save it in the
    kit's model-folder format (:mod:`.hub`: a run's ``best/``, or a Hub repository id online).

    Args:
        config: :class:`ModelConfig`.

    Attributes:
        backbone: :class:`FrozenBackbone` (never trains).
        adapter: :class:`VisionAdapter` (holds TROA's affinity matrix as ``adapter.troa``).
        decoder: :class:`MultiTaskDecoder` (decoders and heads).
    """

    #: Registry name of this model class (written into saved checkpoints).
    method: str = "vtagml"

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

    @property
    def weighted_objective(self) -> bool:
        """Whether a training forward decodes every stream with every decoder (Algorithm 1's
        weighted objective). Only with TROA on: with a uniform omega every stream is the same
        function and the weighted objective equals the default one."""
        return self.config.adapter.weighted_objective and self.tracks_task_grads

    def encode(self, images: Tensor) -> BackboneOutput:
        """Frozen backbone features of ``images (B, 3, H, W)`` in [0, 1]."""
        return self.backbone(images)

    def forward(
        self,
        images: Tensor,
        features: BackboneOutput | None = None,
        track_task_grads: bool = False,
    ) -> dict[str, Any]:
        """Raw per-task outputs ``{task: (B, K_t, H, W)}`` for ``images (B, 3, H, W)``.

        Args:
            images: RGB in [0, 1]; also feeds the decoder's full-resolution path.
            features: precomputed backbone features of ``images`` (the frozen backbone gives
                the same ones every time, so a feature cache may supply them).
            track_task_grads: keep per-task gradients for :meth:`update_affinity` (training
                with TROA on).

        In training mode with :attr:`weighted_objective` the dict also holds
        ``outputs[STREAM_OUTPUTS]``, every stream through every decoder (module docstring).
        """
        feats = features if features is not None else self.encode(images)
        n_tasks = len(self.tasks)
        if not (self.training and self.weighted_objective):
            outs = self.adapter(feats.taps, track_task_grads=track_task_grads)
            return self.decoder(self._decoder_inputs(outs, feats, range(n_tasks)), images)
        # Algorithm 1's weighted objective: streams 0..N-1 are tracked (TROA reads them) and
        # each feeds only its own decoder; with tracking, streams N..2N-1 are untracked copies
        # (same rows omega_t) that feed the other decoders, so the tracked gradients stay
        # lambda_t * grad L_t. Without tracking one set of N streams serves all decoders.
        copies = n_tasks if track_task_grads else 0
        ids = list(range(n_tasks)) * (2 if copies else 1)
        outs = self.adapter(feats.taps, track_task_grads=track_task_grads, task_ids=ids,
                            tracked=n_tasks, leaf_weights=self.omega.diagonal())
        streams: list[dict[str, Tensor]] = []
        for t in range(n_tasks):
            reads = [t if n == t else t + copies for n in range(n_tasks)]  # decoder n <- stream
            streams.append(self.decoder(self._decoder_inputs(outs, feats, reads), images))
        outputs: dict[str, Any] = {task: streams[t][task] for t, task in enumerate(self.tasks)}
        outputs[STREAM_OUTPUTS] = streams
        return outputs

    def _decoder_inputs(self, outs: list[Tensor], feats: BackboneOutput,
                        reads: Sequence[int]) -> dict[str, tuple[Tensor, list[Tensor]]]:
        """Each task decoder's input: deep map and skips, from adapter stream ``reads[n]``."""
        per_stride: dict[int, Tensor] = {}
        for stride, i in self._adapter_at_stride.items():
            per_stride[stride] = outs[i]  # (T, B, h, w, C), one stream per task
        strides = self.backbone.stage_strides
        inputs = {}
        for t_idx, task in enumerate(self.tasks):
            s = reads[t_idx]
            maps = [per_stride[st][s] if st in per_stride else stage
                    for st, stage in zip(strides, feats.stages)]
            inputs[task] = (maps[-1], maps[-2::-1])
        return inputs

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
