"""The decoder's light full-resolution image path (docs/benchmark.md; used by :mod:`.decoder`).

After the stride-4 stage the Swin decoder reaches ``H x W`` by patch expanding alone; edges barely
beat predicting zeros that way, so a light image branch (:class:`ImageSkip`, two 3x3 convs) is
concatenated with the decoder output and fused with one conv (:func:`make_image_fuse`). With
``share_image_skip`` one :class:`ImageSkip` serves every task's decoder
(:class:`~vtagml_core.model.heads.MultiTaskDecoder` builds it); each decoder keeps its own fusion.
"""
from __future__ import annotations

from torch import Tensor, nn

#: Kernel size of the convolutions of the full-resolution image path.
IMAGE_CONV_KERNEL: int = 3
#: Channels of an RGB image.
RGB_CHANNELS: int = 3


class ImageSkip(nn.Module):
    """Light full-resolution image features: two 3x3 convs, ``(B,3,H,W) -> (B,C_img,H,W)``."""

    def __init__(self, in_chans: int, channels: int) -> None:
        super().__init__()
        pad = IMAGE_CONV_KERNEL // 2
        self.net = nn.Sequential(
            nn.Conv2d(in_chans, channels, IMAGE_CONV_KERNEL, padding=pad),
            nn.GELU(),
            nn.Conv2d(channels, channels, IMAGE_CONV_KERNEL, padding=pad),
            nn.GELU(),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


def make_image_fuse(channels: int, image_channels: int, kernel: int) -> nn.Sequential:
    """The conv (odd ``kernel``) + GELU fusing ``concat(decoder output, image features)`` back to
    ``channels``: ``(B, channels + image_channels, H, W) -> (B, channels, H, W)``."""
    return nn.Sequential(
        nn.Conv2d(channels + image_channels, channels, kernel, padding=kernel // 2),
        nn.GELU(),
    )


def _check_nchw(name: str, x: Tensor | None, want: tuple[int, ...], why: str) -> None:
    """Raise ValueError naming ``name`` when ``x`` is missing or not of shape ``want``."""
    if x is None or tuple(x.shape) != want:
        got = None if x is None else tuple(x.shape)
        raise ValueError(f"{name}: expected shape {want} ({why}), got {got}")


__all__ = ["IMAGE_CONV_KERNEL", "RGB_CHANNELS", "ImageSkip", "make_image_fuse"]
