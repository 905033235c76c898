"""Look at a dataset: a grid of samples with their labels for the paper's four tasks.

:func:`sample_grid` draws one row per sample and one column per available modality (image,
segmentation, depth, surface normals, edges: the tasks of VTAGML Sec. 4). It works for any
dataset obeying the kit's sample contract -- the real-dataset readers and the synthetic
benchmark alike -- using only ``dataset[i]``, ``len(dataset)``, ``dataset.tasks``,
``dataset.class_names``, ``dataset.class_colors`` and ``dataset.name``.

The colouring helpers (:func:`colorize_seg`, :func:`normals_to_rgb`, :func:`depth_to_rgb`,
:func:`edges_to_rgb`, :func:`image_to_rgb`) are plain numpy and return ``(H, W, 3)`` uint8
images, so the demo app and prediction grids reuse them for model outputs too.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from PIL import Image

from vtagml_core.tasks import IGNORE_INDEX, TASK_TITLES, TASKS

#: Colour of pixels without a label (ignored segmentation, invalid depth / normals).
INVALID_RGB: tuple[int, int, int] = (0, 0, 0)

#: Plotly colour scale of the depth heat maps; :data:`DEPTH_COLOR_TABLE` is the same scale as
#: an (M, 3) uint8 table for :func:`depth_to_rgb`.
DEPTH_COLORSCALE: str = "Viridis"
DEPTH_COLOR_TABLE: np.ndarray = np.array(
    [plotly.colors.hex_to_rgb(c) for c in plotly.colors.sequential.Viridis], dtype=np.uint8
)

#: Pixel size of one grid cell (the figure is rows x cols cells plus margins).
CELL_PX: int = 200
#: Extra figure height for the title, the class legend below the grid and margins.
FIGURE_EXTRA_HEIGHT_PX: int = 160
#: Extra figure width for the depth colour bars on the right.
FIGURE_EXTRA_WIDTH_PX: int = 120
#: Largest spacing between subplot rows / columns, as a fraction of the figure.
MAX_SUBPLOT_SPACING: float = 0.04

#: Column titles: the image, then the kit's task titles.
COLUMN_TITLES: dict[str, str] = {"image": "Image", **TASK_TITLES}


def _as_numpy(x: Any) -> np.ndarray:
    """Tensor (any device) or array-like -> numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_hw(x: Any, what: str) -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` -> ``(H, W)``."""
    a = _as_numpy(x)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what} must be (H, W) or (1, H, W), got shape {a.shape}")
    return a


def _as_hwc(x: Any, what: str) -> np.ndarray:
    """``(3, H, W)`` or ``(H, W, 3)`` -> ``(H, W, 3)``; a ``(3, H, 3)`` array counts as (3, H, W)."""
    a = _as_numpy(x)
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[2]):
        raise ValueError(f"{what} must be (3, H, W) or (H, W, 3), got shape {a.shape}")
    return np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a


def colorize_seg(seg: Any, colors: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Colour a class-id map.

    Args:
        seg: ``(H, W)`` (or ``(1, H, W)``) integer class ids.
        colors: ``(K, 3)`` uint8 colour table, row k = colour of class k.
        ignore_index: label of unlabelled pixels.

    Returns:
        ``(H, W, 3)`` uint8; ``ignore_index`` and ids outside ``[0, K)`` are black.
    """
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"colors must be a (K, 3) table, got shape {colors.shape}")
    ids = _as_hw(seg, "seg").astype(np.int64)
    known = (ids >= 0) & (ids < len(colors)) & (ids != ignore_index)
    out = np.zeros((*ids.shape, 3), dtype=np.uint8)
    out[:] = INVALID_RGB
    out[known] = colors[ids[known]].astype(np.uint8)
    return out


def normals_to_rgb(normals: Any, valid: Any | None = None) -> np.ndarray:
    """Show unit normals as colours: rgb = (n + 1) / 2 * 255, black where invalid.

    Args:
        normals: ``(3, H, W)`` or ``(H, W, 3)`` vectors with components in [-1, 1].
        valid: optional ``(H, W)`` / ``(1, H, W)`` bool mask; pixels whose vector is all zero
            count as invalid as well.
    """
    n = _as_hwc(normals, "normals").astype(np.float32)
    ok = np.any(n != 0, axis=2)
    if valid is not None:
        ok &= _as_hw(valid, "valid").astype(bool)
    rgb = np.clip(np.rint((n + 1.0) * 0.5 * 255.0), 0, 255).astype(np.uint8)
    rgb[~ok] = INVALID_RGB
    return rgb


def depth_to_rgb(depth: Any, valid: Any | None = None, vmax: float | None = None, vmin: float = 0.0) -> np.ndarray:
    """Colour a depth map with the viridis scale (``vmin`` -> dark purple, ``vmax`` -> yellow).

    Args:
        depth: ``(H, W)`` or ``(1, H, W)`` depth.
        valid: optional bool mask; also invalid are pixels with depth <= 0 or not finite.
        vmax: depth mapped to the top of the scale; default the largest valid depth.
        vmin: depth mapped to the bottom of the scale.

    Returns:
        ``(H, W, 3)`` uint8, black where invalid.
    """
    d = _as_hw(depth, "depth").astype(np.float64)
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= _as_hw(valid, "valid").astype(bool)
    if vmax is None:
        vmax = float(d[ok].max()) if ok.any() else vmin + 1.0
    span = max(float(vmax) - float(vmin), np.finfo(np.float32).eps)
    t = np.clip((np.where(ok, d, vmin) - vmin) / span, 0.0, 1.0)
    # Piecewise-linear interpolation in the colour table.
    pos = t * (len(DEPTH_COLOR_TABLE) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(DEPTH_COLOR_TABLE) - 1)
    frac = (pos - lo)[..., None]
    table = DEPTH_COLOR_TABLE.astype(np.float64)
    rgb = np.rint(table[lo] * (1.0 - frac) + table[hi] * frac).astype(np.uint8)
    rgb[~ok] = INVALID_RGB
    return rgb


def edges_to_rgb(edges: Any) -> np.ndarray:
    """``(H, W)`` / ``(1, H, W)`` edge strength in [0, 1] -> grey ``(H, W, 3)`` uint8."""
    e = np.clip(_as_hw(edges, "edges").astype(np.float32), 0.0, 1.0)
    grey = np.rint(e * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def image_to_rgb(image: Any) -> np.ndarray:
    """Contract image ``(3, H, W)`` float in [0, 1] (or ``(H, W, 3)``, or uint8) -> uint8 RGB."""
    img = _as_hwc(image, "image")
    if img.dtype == np.uint8:
        return img
    return np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _png_data_uri(rgb: np.ndarray) -> str:
    """Encode an ``(H, W, 3)`` uint8 image as a PNG data URI (compact in the figure JSON)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_trace(rgb: np.ndarray, name: str) -> go.Image:
    return go.Image(source=_png_data_uri(rgb), name=name, hoverinfo="skip")


def _class_name(dataset: Any, k: int) -> str:
    names = list(getattr(dataset, "class_names", []))
    return names[k] if 0 <= k < len(names) else f"class {k}"


def sample_grid(
    dataset: Any,
    indices: Sequence[int] | None = None,
    n: int = 4,
    title: str | None = None,
) -> go.Figure:
    """A plotly figure with one row per sample and one column per modality.

    Columns: the image, then segmentation (class colours of ``dataset.class_colors``, with a
    legend of the classes present in the shown samples), depth (viridis heat map with a colour
    bar per row, invalid pixels blank), normals as RGB ((n + 1) / 2, black where invalid) and
    edges (grey) -- only for the tasks of ``dataset.tasks`` that the samples carry (an
    unlabelled dataset shows images only).

    Args:
        dataset: any dataset obeying the kit's sample contract.
        indices: which samples to show; default the first ``n``.
        n: number of samples when ``indices`` is None.
        title: figure title; default names the dataset, the indices and the resolution.

    Raises:
        ValueError: for ``n < 1`` or an empty ``indices``; IndexError for an index out of range.
    """
    size = len(dataset)
    if indices is None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        indices = list(range(min(n, size)))
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no samples to show: the dataset is empty or indices is empty")
    bad = [i for i in indices if not -size <= i < size]
    if bad:
        raise IndexError(f"indices {bad} out of range for dataset {getattr(dataset, 'name', '?')!r} of {size} samples")
    samples = [dataset[i] for i in indices]
    tasks = [t for t in TASKS if t in tuple(getattr(dataset, "tasks", ())) and all(t in s for s in samples)]
    columns = ["image", *tasks]
    rows = len(samples)

    titles = []
    for r, sample in enumerate(samples):
        for c in columns:
            if c == "image":
                titles.append(f"{COLUMN_TITLES['image']}: {sample['name']}" if r == 0 else str(sample["name"]))
            else:
                titles.append(COLUMN_TITLES[c] if r == 0 else "")
    fig = make_subplots(
        rows=rows, cols=len(columns), subplot_titles=titles,
        horizontal_spacing=min(MAX_SUBPLOT_SPACING, 0.5 / len(columns)),
        vertical_spacing=min(MAX_SUBPLOT_SPACING * 1.5, 0.5 / rows),
    )

    colors = np.asarray(getattr(dataset, "class_colors", np.zeros((0, 3), dtype=np.uint8)))
    present: set[int] = set()
    for r, sample in enumerate(samples, start=1):
        valid = sample.get("valid")
        for c, col in enumerate(columns, start=1):
            if col == "image":
                fig.add_trace(_image_trace(image_to_rgb(sample["image"]), f"image {sample['name']}"), r, c)
            elif col == "seg":
                seg = _as_hw(sample["seg"], "seg").astype(np.int64)
                present.update(int(k) for k in np.unique(seg) if 0 <= k < len(colors) and k != IGNORE_INDEX)
                fig.add_trace(_image_trace(colorize_seg(seg, colors), f"seg {sample['name']}"), r, c)
            elif col == "normals":
                fig.add_trace(_image_trace(normals_to_rgb(sample["normals"], valid), f"normals {sample['name']}"), r, c)
            elif col == "edges":
                fig.add_trace(_image_trace(edges_to_rgb(sample["edges"]), f"edges {sample['name']}"), r, c)
            else:  # depth: a heat map so the colour bar reads off metres
                depth = _as_hw(sample["depth"], "depth").astype(np.float32)
                ok = np.isfinite(depth) & (depth > 0)
                if valid is not None:
                    ok &= _as_hw(valid, "valid").astype(bool)
                z = np.where(ok, depth, np.nan)
                ydom = fig.get_subplot(r, c).yaxis.domain
                fig.add_trace(
                    go.Heatmap(
                        z=z, colorscale=DEPTH_COLORSCALE, zmin=0.0,
                        zmax=float(np.nanmax(z)) if ok.any() else 1.0,
                        name=f"depth {sample['name']}",
                        hovertemplate="x %{x}, y %{y}: depth %{z:.2f}<extra></extra>",
                        colorbar=dict(
                            title=dict(text="depth"), len=(ydom[1] - ydom[0]) * 0.9,
                            y=(ydom[0] + ydom[1]) / 2, yanchor="middle", thickness=12,
                        ),
                    ),
                    r, c,
                )
            # Square pixels, row 0 at the top, in every cell (heat maps do not do this by themselves).
            xaxis = fig.get_subplot(r, c).xaxis
            fig.update_yaxes(autorange="reversed", scaleanchor=xaxis.plotly_name.replace("axis", ""),
                             constrain="domain", row=r, col=c)
            fig.update_xaxes(constrain="domain", row=r, col=c)

    if "seg" in columns:
        seg_col = columns.index("seg") + 1
        for k in sorted(present):
            rgb = tuple(int(v) for v in colors[k])
            fig.add_trace(
                go.Scatter(
                    x=[None], y=[None], mode="markers", name=_class_name(dataset, k), showlegend=True,
                    marker=dict(symbol="square", size=12, color=f"rgb{rgb}"), hoverinfo="skip",
                ),
                1, seg_col,
            )

    height, width = _as_hwc(samples[0]["image"], "image").shape[:2]
    if title is None:
        title = f"{getattr(dataset, 'name', 'dataset')}: samples {indices} ({height}x{width})"
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_layout(
        title=dict(text=title),
        height=CELL_PX * rows + FIGURE_EXTRA_HEIGHT_PX,
        width=CELL_PX * len(columns) + FIGURE_EXTRA_WIDTH_PX,
        legend=dict(orientation="h", yanchor="top", y=-0.02, xanchor="left", x=0.0, title=dict(text="classes ")),
        margin=dict(l=20, r=20, t=80, b=20),
        plot_bgcolor="white",
    )
    return fig
