"""Task heads and the per-task (or shared) decoders in front of them (paper Sec. 3.3).

"The decoded feature representations are passed into the linear task-specific heads, such that
the task head outputs an H x W x K map" (Sec. 3.3, "Task Heads and Training"). K comes from
:func:`vtagml_core.tasks.task_channels`: the class count for seg, 1 for depth and edges, 3 for
normals. Heads return raw outputs (logits for seg and edges, unnormalised normals); losses and
metrics decide what to do with them.

The paper's text uses "task-specific decoders with the same architecture but different parameter
values" (also the official code), while its Fig. 2 draws one shared decoder with separate heads.
:class:`MultiTaskDecoder` does the first by default and the second with
``DecoderConfig(shared=True)``; the heads are per task in both.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from vtagml_core.model.decoder import (
    ImageSkip,
    DEFAULT_DEEP_STRIDE,
    RGB_CHANNELS,
    DecoderConfig,
    SwinDecoder,
)
from vtagml_core.tasks import parse_tasks, task_channels

#: Key of the single decoder in :attr:`MultiTaskDecoder.decoders` when ``cfg.shared`` is on.
SHARED_KEY: str = "shared"

#: A task's decoder inputs: the deepest adapter output and the skips, deep to shallow.
DecoderInputs = tuple[Tensor, list[Tensor]]


class TaskHead(nn.Module):
    """Linear task head: a 1x1 convolution, ``(B, C, H, W) -> (B, K, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"TaskHead needs positive channel counts, got in={in_channels}, out={out_channels}"
            )
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    @property
    def out_channels(self) -> int:
        return self.proj.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def build_heads(tasks: str | Iterable[str], in_channels: int, num_classes: int) -> nn.ModuleDict:
    """One :class:`TaskHead` per task, keyed by canonical task name, K from ``task_channels``."""
    return nn.ModuleDict(
        {t: TaskHead(in_channels, task_channels(t, num_classes)) for t in parse_tasks(tasks)}
    )


class MultiTaskDecoder(nn.Module):
    """Decoders and heads of all tasks: ``{task: (deep, skips)}, image -> {task: (B, K, H, W)}``.

    Args:
        tasks: task set, e.g. ``"S-D-N-E"`` or ``("seg", "depth")``.
        cfg: decoder architecture; ``cfg.shared`` picks one decoder for all tasks.
        in_channels: channels of the deepest adapter output (decoder input).
        skip_channels: channels of the skips, deep to shallow (see :class:`SwinDecoder`).
        img_size: image size ``H`` or ``(H, W)``.
        num_classes: segmentation classes (K of the seg head).
        deep_stride: stride of the decoder input (32 for Swin).
        in_chans: image channels for the full-resolution path.

    Attributes:
        decoders: ``nn.ModuleDict`` keyed by task, or by :data:`SHARED_KEY` in shared mode.
        heads: ``nn.ModuleDict`` of :class:`TaskHead` keyed by task.
    """

    def __init__(
        self,
        tasks: str | Iterable[str],
        cfg: DecoderConfig,
        in_channels: int,
        skip_channels: list[int],
        img_size: int | tuple[int, int],
        num_classes: int,
        deep_stride: int = DEFAULT_DEEP_STRIDE,
        in_chans: int = RGB_CHANNELS,
    ) -> None:
        super().__init__()
        self.tasks = parse_tasks(tasks)
        self.cfg = cfg

        def make() -> SwinDecoder:
            return SwinDecoder(cfg, in_channels, skip_channels, img_size, deep_stride, in_chans)

        keys = (SHARED_KEY,) if cfg.shared else self.tasks
        self.decoders = nn.ModuleDict({k: make() for k in keys})
        #: The one image path of all tasks (``cfg.share_image_skip``), else None.
        self.image_skip: ImageSkip | None = (
            ImageSkip(in_chans, cfg.image_skip_channels)
            if cfg.share_image_skip and cfg.image_skip_channels > 0 else None)
        out = next(iter(self.decoders.values())).out_channels
        self.heads = build_heads(self.tasks, out, num_classes)

    def decoder_for(self, task: str) -> SwinDecoder:
        """The decoder that serves ``task`` (the same object for every task in shared mode)."""
        if task not in self.tasks:
            raise KeyError(f"task {task!r} is not in this model's task set {self.tasks}")
        return self.decoders[SHARED_KEY if self.cfg.shared else task]

    def forward(
        self, per_task_inputs: dict[str, DecoderInputs], image: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Decode every task given and apply its head.

        Args:
            per_task_inputs: ``{task: (deep (B,h0,w0,C_in), [skip (B,h,w,C_s), ...])}`` for any
                subset of this model's tasks.
            image: ``(B, 3, H, W)``, needed when the full-resolution image path is on.

        Returns:
            ``{task: raw output (B, K_task, H, W)}`` in canonical task order.

        Raises:
            KeyError: for a task this model was not built for.
        """
        unknown = [t for t in per_task_inputs if t not in self.tasks]
        if unknown:
            raise KeyError(f"no decoder for task(s) {unknown}; this model has {self.tasks}")
        order = [t for t in self.tasks if t in per_task_inputs]
        img_feats = None
        if self.image_skip is not None:
            if image is None:
                raise ValueError("image: the shared full-resolution image path is on "
                                 "(share_image_skip); pass the (B, 3, H, W) image")
            img_feats = self.image_skip(image)  # (B, C_img, H, W), once for all tasks
        if self.cfg.shared and len(order) > 1 and _stackable([per_task_inputs[t] for t in order]):
            feats = self._shared_batched(order, per_task_inputs, image, img_feats)
        else:
            feats = {
                t: self.decoder_for(t)(per_task_inputs[t][0], per_task_inputs[t][1], image,
                                       img_feats)
                for t in order
            }
        return {t: self.heads[t](feats[t]) for t in order}

    def _shared_batched(
        self, order: list[str], inputs: dict[str, DecoderInputs], image: Tensor | None,
        img_feats: Tensor | None,
    ) -> dict[str, Tensor]:
        """Shared mode: stack the tasks along the batch and run the one decoder once.

        ``N`` tasks of batch ``B`` become one batch of ``N * B`` (task-major), which is cheaper
        than ``N`` small forwards; the result is split back per task.
        """
        n, b = len(order), inputs[order[0]][0].shape[0]
        deep = torch.cat([inputs[t][0] for t in order], dim=0)
        skips = [torch.cat([inputs[t][1][i] for t in order], dim=0)
                 for i in range(len(inputs[order[0]][1]))]
        def repeat(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.repeat(n, *([1] * (x.dim() - 1)))

        out = self.decoders[SHARED_KEY](deep, skips, repeat(image), repeat(img_feats))
        return dict(zip(order, out.split(b, dim=0)))


def _stackable(inputs: list[DecoderInputs]) -> bool:
    """True when every task's inputs have the same shapes (so they can share one batch)."""
    first_deep, first_skips = inputs[0]
    for deep, skips in inputs[1:]:
        if deep.shape != first_deep.shape or len(skips) != len(first_skips):
            return False
        if any(a.shape != c.shape for a, c in zip(skips, first_skips)):
            return False
    return True
