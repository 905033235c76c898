"""TAA attention maps (paper Sec. 3.2.2, Eq. 2, Fig. 5-6): where one token of one task looks.

Task-Adapted Attention is global over an adapter layer's ``h x w`` token grid. For task t,
layer l, head h and a query token q, the row

    ``softmax(A'(omega_t) + logits(q, k))[q, :]``          (Eq. 2, inside the softmax)

is a distribution over the ``h*w`` key tokens: :func:`attention_map` returns it as an
``(h, w)`` map that sums to 1. The maps come from the model itself: :func:`attention_maps`
runs the adapter stack's normal forward (:class:`~vtagml_core.model.adapter.VisionAdapter`)
inside :func:`~vtagml_core.model.taa.record_attention`, which makes every TAA layer keep the
softmax of its forward, and :func:`attention_map` picks task, layer, head and query from them.
:func:`layer_input` gives the tokens and condition one layer receives in that same forward.

:func:`attention_overlay` draws such a map over an image (the demo's "TAA attention" view).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from vtagml_core.model.taa import record_attention
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


def _task_ids(model: torch.nn.Module, tasks: Sequence[str] | None) -> Tensor | None:
    if tasks is None:
        return None
    unknown = [t for t in tasks if t not in model.tasks]
    if unknown:
        raise ValueError(f"tasks {unknown} are not among the model's tasks {model.tasks}")
    return torch.tensor([model.tasks.index(t) for t in tasks])


def attention_maps(model: torch.nn.Module, taps: list[Tensor],
                   tasks: Sequence[str] | None = None) -> list[Tensor]:
    """TAA's softmax maps of every adapter layer, one ``(T, B, H, L_l, L_l)`` per layer.

    One normal forward of ``model.adapter`` on ``taps`` (``model.encode(images).taps``) for the
    streams of ``tasks`` (all of the model's tasks, in order, by default), with
    :func:`~vtagml_core.model.taa.record_attention` on. Row ``q`` of ``maps[l][t, b, h]`` is
    Eq. 2's attention of query token ``q`` (raster order) over the keys.
    """
    if not attention_layers(model):
        raise ValueError("this model has no adapter layers (adapter.enabled=false): no TAA to show")
    ids = _task_ids(model, tasks)
    with record_attention(model.adapter) as record:
        model.adapter(taps, task_ids=ids)
    return record.maps


def layer_input(model: torch.nn.Module, taps: list[Tensor], task: str, layer: int) -> tuple[Tensor, Tensor]:
    """Input tokens ``(1, B, L, C)`` of adapter ``layer`` for ``task``'s stream, and its condition.

    Taken from the adapter stack's normal forward (a forward pre-hook on the layer): layer 0
    reads its tap; layer i > 0 reads ``tap_i + skip(out_{i-1})``. The condition is
    ``(1, cond_dim)``: task t's omega row (or its learned embedding for
    ``affinity_source="embedding"``).
    """
    t, _ = _check(model, task, layer, 0)
    seen: list[tuple[Tensor, Tensor]] = []

    def keep_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x, cond = (*args, *kwargs.values())[:2]
        seen.append((x, cond))

    handle = model.adapter.layers[layer].register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        model.adapter(taps, task_ids=torch.tensor([t]))
    finally:
        handle.remove()
    return seen[0]


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
        maps = attention_maps(model, taps, [task])[layer]    # (1, B, H, L, L)
        return maps[0, 0, head, row * w + col].reshape(h, w).float().cpu()


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


__all__ = ["LayerInfo", "attention_layers", "attention_map", "attention_maps", "attention_overlay",
           "layer_input", "query_token"]
