"""A model's predictions next to the labels, for a few images (paper Sec. 4, qualitative figures).

:func:`prediction_grid` draws one row per sample: the image, then for every task of the model
its label (when the dataset has it) and the prediction, coloured like the dataset's sample grid
(:mod:`vtagml_core.viz.samples`): segmentation in the class colours, depth in viridis with one
range per row shared by label and prediction (so the two are comparable), normals as RGB,
edges in grey. Raw head outputs become predictions with
:func:`vtagml_core.metrics.predictions.to_predictions` (argmax of the seg logits, depth clamped
to >= 0, unit normals, edge probabilities), the same reading the metrics use.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots

from vtagml_core.tasks import TASK_TITLES, TASKS

from .samples import colorize_seg, depth_to_rgb, edges_to_rgb, image_to_rgb, normals_to_rgb

#: Pixel size of one grid cell (at most: wide grids shrink their cells to fit the page).
CELL_PX: int = 170
#: Widest figure (pixels): about a notebook's output area, GitHub's viewer and a report page.
MAX_WIDTH_PX: int = 960
#: Extra height / width of the figure for the title and margins.
EXTRA_HEIGHT_PX, EXTRA_WIDTH_PX = 110, 40
#: Font size of the column titles; in grids whose cells had to shrink, titles use the short
#: task names of :data:`SHORT_TITLES` on two lines so that neighbours never overlap.
TITLE_FONT_PX: int = 12
SHORT_TITLES: dict[str, str] = {"seg": "Segmentation", "depth": "Depth", "normals": "Normals",
                                "edges": "Edges"}


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, device: str | torch.device = "cpu"
            ) -> dict[str, np.ndarray]:
    """Predictions of ``model`` for ``images`` ``(N, 3, H, W)``, as numpy arrays.

    Returns:
        ``{task: array}``: seg ``(N, H, W)`` class ids, depth ``(N, H, W)``, normals
        ``(N, 3, H, W)`` unit vectors, edges ``(N, H, W)`` probabilities.
    """
    from vtagml_core.metrics.predictions import to_predictions

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    try:
        raw = model(images.to(device))
    finally:
        model.train(was_training)
    out = {}
    for task, pred in to_predictions({t: r.float() for t, r in raw.items()}).items():
        pred = pred.argmax(dim=1) if task == "seg" else pred
        pred = pred[:, 0] if task in ("depth", "edges") else pred
        out[task] = pred.cpu().numpy()
    return out


def _png(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _render(task: str, value: Any, colors: np.ndarray, valid: Any, vmax: float | None) -> np.ndarray:
    if task == "seg":
        return colorize_seg(value, colors)
    if task == "depth":
        return depth_to_rgb(value, valid, vmax=vmax)
    if task == "normals":
        return normals_to_rgb(value, valid)
    return edges_to_rgb(value)


def prediction_grid(model: torch.nn.Module, dataset: Any, indices: Sequence[int] | None = None,
                    n: int = 3, tasks: Sequence[str] | None = None, device: str = "cpu",
                    title: str | None = None, highlight: Sequence[str] = ()) -> go.Figure:
    """Image, then label and prediction per task, one row per sample (module docstring).

    Args:
        model: a model with ``tasks`` and ``forward(images) -> {task: raw}``.
        dataset: any dataset of the kit's sample contract (labels optional).
        indices: samples to show; default the first ``n``.
        tasks: tasks to show (default: the model's, in the kit's order).
        device: where the model runs.
        title: figure title; default names the dataset and the resolution.
        highlight: tasks whose prediction column title gets a mark (e.g. the zero-shot task).

    Raises:
        ValueError: a task the model does not predict, or no samples.
    """
    model_tasks = tuple(getattr(model, "tasks", ()))
    requested = list(tasks) if tasks is not None else list(model_tasks)
    if not requested or any(t not in model_tasks for t in requested):
        raise ValueError(f"tasks {requested} must be among the model's tasks {list(model_tasks)}")
    tasks = [t for t in TASKS if t in requested]
    indices = list(range(min(n, len(dataset)))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise ValueError("no samples to show: the dataset is empty or indices is empty")
    samples = [dataset[i] for i in indices]
    preds = predict(model, torch.stack([s["image"] for s in samples]), device)
    labelled = [t for t in tasks if all(t in s for s in samples)]
    n_cols = 1 + len(tasks) + len(labelled)
    cell = min(CELL_PX, (MAX_WIDTH_PX - EXTRA_WIDTH_PX) // n_cols)
    narrow = cell < CELL_PX
    columns: list[tuple[str, str]] = [("image", "Image")]
    for t in tasks:
        name, sep = (SHORT_TITLES.get(t, TASK_TITLES[t]), "<br>") if narrow else (TASK_TITLES[t], " ")
        if t in labelled:
            columns.append((f"label:{t}", f"{name}{sep}label"))
        mark = f"{sep}(zero-shot)" if t in highlight else ""
        columns.append((f"pred:{t}", f"{name}{sep}prediction{mark}"))
    fig = make_subplots(rows=len(samples), cols=len(columns),
                        subplot_titles=[c[1] if r == 0 else "" for r in range(len(samples)) for c in columns],
                        horizontal_spacing=0.01, vertical_spacing=0.03)
    colors = np.asarray(getattr(dataset, "class_colors", np.zeros((0, 3), dtype=np.uint8)))
    for r, sample in enumerate(samples):
        valid = sample.get("valid")
        vmax = None
        if "depth" in tasks:
            ref = np.asarray(sample["depth"]) if "depth" in labelled else preds["depth"][r]
            vmax = float(np.nanmax(np.where(np.isfinite(ref), ref, 0.0))) or None
        for c, (key, _) in enumerate(columns, start=1):
            if key == "image":
                rgb = image_to_rgb(sample["image"])
            else:
                kind, task = key.split(":")
                value = sample[task] if kind == "label" else preds[task][r]
                rgb = _render(task, value, colors, valid if kind == "label" else None, vmax)
            fig.add_trace(go.Image(source=_png(rgb), name=f"{key} {sample['name']}", hoverinfo="skip"),
                          r + 1, c)
    h, w = image_to_rgb(samples[0]["image"]).shape[:2]
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_annotations(font_size=TITLE_FONT_PX)
    top = 70 + (TITLE_FONT_PX * 3 if narrow else 0)  # room for two-line column titles
    fig.update_layout(title=title or f"{getattr(dataset, 'name', 'dataset')}: predictions next to labels "
                                     f"({h}x{w})",
                      height=cell * len(samples) + EXTRA_HEIGHT_PX + (top - 70),
                      width=cell * len(columns) + EXTRA_WIDTH_PX,
                      margin={"l": 10, "r": 10, "t": top, "b": 10})
    return fig


__all__ = ["predict", "prediction_grid"]
