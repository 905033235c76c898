"""TAA attention maps (paper Sec. 3.2.2, Eq. 2, Fig. 5-6): where one token of one task looks.

Task-Adapted Attention is global over an adapter layer's ``h x w`` token grid. For task t,
layer l, head h and a query token q, the row

    ``softmax(A'(omega_t) + logits(q, k))[q, :]``          (Eq. 2, inside the softmax)

is a distribution over the ``h*w`` key tokens: :func:`attention_map` returns it as an
``(h, w)`` map that sums to 1. It re-runs the adapter stack exactly as
:meth:`~vtagml_core.model.adapter.VisionAdapter.run_layers` does (per-stream taps, skip
connections between layers, TROA's omega row as the condition), for task t's stream only --
the streams never mix, so one stream is enough -- and at layer l calls
``layer.taa.attention_weights(layer.norm_attn(x), cond)`` instead of the layer itself.

:func:`attention_overlay` draws such a map over an image (the demo's "TAA attention" view).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from vtagml_core.viz.samples import depth_to_rgb

#: Opacity of the attention colours over the image in :func:`attention_overlay`.
ATTENTION_ALPHA: float = 0.65
#: Radius (pixels) and colour of the query marker drawn by :func:`attention_overlay`.
MARKER_RADIUS: int = 6
MARKER_RGB: tuple[int, int, int] = (255, 40, 40)


@dataclass(frozen=True)
class LayerInfo:
    """One adapter layer: its index, token grid ``(h, w)``, heads and the tapped block."""

    index: int
    grid: tuple[int, int]
    num_heads: int
    tap: tuple[int, int]


def attention_layers(model: torch.nn.Module) -> list[LayerInfo]:
    """The adapter layers of a VTAGML ``model``; empty when its adapters are disabled or it
    has none (a baseline without the vision adapter)."""
    adapter = getattr(model, "adapter", None)
    if adapter is None or not hasattr(adapter, "layers") or not hasattr(model, "backbone"):
        return []
    taps = model.backbone.tap_blocks
    return [LayerInfo(i, adapter.tap_grids[i], layer.taa.num_heads, tuple(taps[i]))
            for i, layer in enumerate(adapter.layers)]


def query_token(grid: tuple[int, int], y: float, x: float) -> tuple[int, int]:
    """Token ``(row, col)`` of the grid cell containing the point ``(y, x)`` in [0, 1]^2."""
    h, w = grid
    if not (0.0 <= y <= 1.0 and 0.0 <= x <= 1.0):
        raise ValueError(f"query location must be fractions in [0, 1], got y={y}, x={x}")
    return min(int(y * h), h - 1), min(int(x * w), w - 1)


def _check(model: torch.nn.Module, task: str, layer: int, head: int) -> tuple[int, LayerInfo]:
    layers = attention_layers(model)
    if not layers:
        raise ValueError("this model has no adapter layers (adapter.enabled=false): no TAA to show")
    if task not in model.tasks:
        raise ValueError(f"task {task!r} is not one of the model's tasks {model.tasks}")
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer must be in 0..{len(layers) - 1} (the model has {len(layers)} "
                         f"adapter layers), got {layer}")
    info = layers[layer]
    if not 0 <= head < info.num_heads:
        raise ValueError(f"head must be in 0..{info.num_heads - 1} for layer {layer}, got {head}")
    return model.tasks.index(task), info


def layer_input(model: torch.nn.Module, taps: list[Tensor], task: str, layer: int) -> tuple[Tensor, Tensor]:
    """Input tokens ``(1, B, L, C)`` of adapter ``layer`` for ``task``'s stream, and its condition.

    Follows :meth:`VisionAdapter.run_layers`: layer 0 reads its tap; layer i > 0 reads
    ``tap_i + skip(out_{i-1})``. The condition is ``(1, cond_dim)``: task t's omega row (or
    its learned embedding for ``affinity_source="embedding"``).
    """
    t, _ = _check(model, task, layer, 0)
    adapter = model.adapter
    cond = adapter.condition(task_ids=torch.tensor([t]))
    streams = adapter._stream_inputs(taps, 1, False)
    previous: Tensor | None = None
    for i in range(layer + 1):
        x = streams[i]
        if previous is not None:
            x = x + adapter.skips[i - 1](previous)
        T, B, h, w, C = x.shape
        tokens = x.reshape(T, B, h * w, C)
        if i == layer:
            return tokens, cond
        previous = adapter.layers[i](tokens, cond).view(T, B, h, w, C)
    raise AssertionError("unreachable: the loop returns at i == layer")


def attention_map(
    model: torch.nn.Module,
    images: Tensor,
    task: str,
    layer: int,
    head: int,
    query: tuple[int, int],
    taps: list[Tensor] | None = None,
) -> Tensor:
    """TAA attention of one query token, ``(h_l, w_l)``, summing to 1 over the keys.

    Args:
        model: a VTAGML model (eval mode recommended; no gradients are kept).
        images: ``(1, 3, S, S)`` in [0, 1] at the backbone's size (ignored if ``taps`` given).
        task: which task stream (its omega row conditions the bias ``A'(omega_t)``).
        layer: adapter layer index (see :func:`attention_layers`).
        head: attention head of that layer.
        query: ``(row, col)`` of the query token in the layer's grid (see :func:`query_token`).
        taps: precomputed backbone taps ``model.encode(images).taps``.

    Raises:
        ValueError: unknown task, layer/head/query out of range, or no adapters.
    """
    _, info = _check(model, task, layer, head)
    row, col = query
    h, w = info.grid
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query token {query} is outside layer {layer}'s {h}x{w} grid")
    with torch.inference_mode():
        if taps is None:
            if images.dim() != 4 or images.shape[0] != 1:
                raise ValueError(f"images must be one image (1, 3, S, S), got {tuple(images.shape)}")
            taps = model.encode(images).taps
        tokens, cond = layer_input(model, taps, task, layer)
        lay = model.adapter.layers[layer]
        weights = lay.taa.attention_weights(lay.norm_attn(tokens), cond)  # (1, B, H, L, L)
        return weights[0, 0, head, row * w + col].reshape(h, w).float().cpu()


def attention_overlay(image: np.ndarray, attn: Tensor | np.ndarray, query_yx: tuple[float, float],
                      alpha: float = ATTENTION_ALPHA) -> np.ndarray:
    """Draw an attention map over an image, with a marker at the query point.

    Args:
        image: ``(H, W, 3)`` uint8, the region the token grid covers.
        attn: ``(h, w)`` attention weights; shown with the viridis scale from 0 to its max,
            upsampled (nearest, so each token stays a visible square) to ``(H, W)``.
        query_yx: the query point as fractions ``(y, x)`` of the image height and width.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    a = torch.as_tensor(np.asarray(attn, dtype=np.float32))
    if a.dim() != 2 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need attn (h, w) and image (H, W, 3), got {tuple(a.shape)} and {image.shape}")
    H, W = image.shape[:2]
    up = F.interpolate(a[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
    peak = float(up.max()) if up.size else 1.0
    colours = depth_to_rgb(up + np.float32(1e-12), vmax=peak + 1e-12).astype(np.float32)
    blend = alpha * colours + (1.0 - alpha) * image.astype(np.float32)
    out = Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8))
    y, x = query_yx[0] * (H - 1), query_yx[1] * (W - 1)
    r = MARKER_RADIUS
    draw = ImageDraw.Draw(out)
    draw.ellipse((x - r, y - r, x + r, y + r), outline=MARKER_RGB, width=2)
    draw.line((x - 2 * r, y, x + 2 * r, y), fill=MARKER_RGB, width=1)
    draw.line((x, y - 2 * r, x, y + 2 * r), fill=MARKER_RGB, width=1)
    return np.asarray(out)


__all__ = ["LayerInfo", "attention_layers", "attention_map", "attention_overlay", "layer_input",
           "query_token"]
