"""Display pieces of the demo: the depth colour bar, the class legend, the arrays file, what
the checkpoint was trained on (with its validation metrics and an out-of-domain caution) and
the colour key of the normals.

They work on a :class:`vtagml_core.predict.Prediction` and return plain uint8 images,
HTML strings or file paths, so the same outputs reach the browser and ``gradio_client``.
"""
from __future__ import annotations

import atexit
import html
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vtagml_core.metrics.multitask import METRIC_DIRECTIONS, PRIMARY_METRICS
from vtagml_core.predict import LegendEntry, Prediction
from vtagml_core.tasks import TASK_TITLES
from vtagml_core.viz.samples import depth_to_rgb, normals_to_rgb

from .checkpoints import TrainingInfo

#: Colour bar geometry beside the depth image, in pixels: gap and bar width.
BAR_GAP_PX: int = 8
BAR_WIDTH_PX: int = 24
#: Tick labels on the colour bar (evenly spaced from vmax at the top to vmin at the bottom).
BAR_TICKS: int = 5
#: Smallest font size of the tick labels (Pillow's built-in font: no file, no network) ...
LABEL_FONT_PX: int = 13
#: ... which grows to image height / this, so the labels stay readable when scaled down.
LABEL_FONT_FRACTION: int = 16
#: Characters the label column has room for ("123.45").
LABEL_CHARS: int = 7
#: Background of the bar column (matches a light page).
PANEL_BACKGROUND: tuple[int, int, int] = (255, 255, 255)
LABEL_RGB: tuple[int, int, int] = (30, 30, 30)
#: zlib level of the output PNGs: 1 encodes a 384x288 panel ~3x faster than Pillow's default
#: 6 for files ~5% larger.
PNG_COMPRESS_LEVEL: int = 1
#: Classes listed in the legend (most frequent first); the rest are summed up in one line.
LEGEND_MAX_CLASSES: int = 12
#: Normals colour key: surface orientations (unit normals in the camera frame: x right,
#: y down, z forward, as the synthetic renderer writes them) and what they look like.
NORMALS_KEY: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("facing the camera", (0.0, 0.0, -1.0)),
    ("facing up (floor, table top)", (0.0, -1.0, 0.0)),
    ("facing down (ceiling)", (0.0, 1.0, 0.0)),
    ("facing right (a wall on the left)", (1.0, 0.0, 0.0)),
    ("facing left (a wall on the right)", (-1.0, 0.0, 0.0)),
)
#: Caution shown with every prediction, by what the checkpoint was trained on.
CAUTION_SYNTHETIC: str = ("Trained only on the kit's synthetic `{name}` scenes: on photos unlike "
                          "them (a circuit board, a face, a product shot) every pixel still gets "
                          "one of its {classes} classes and a depth; read such outputs as guesses.")
CAUTION_REAL: str = ("Trained on the `{name}` dataset: images of other kinds of scenes are out of "
                     "its domain; read such outputs as guesses.")
CAUTION_UNKNOWN: str = ("No training record was found next to this checkpoint: unless you know it "
                        "saw images like yours, read its outputs as guesses.")


def depth_panel(pred: Prediction) -> np.ndarray:
    """The colourised depth with a vertical colour bar and its range on the right."""
    if pred.depth_rgb is None:
        raise ValueError("this prediction has no depth (the model was trained without it)")
    rgb = pred.depth_rgb
    H, W = rgb.shape[:2]
    vmin, vmax = pred.depth_range
    ramp = np.linspace(vmax, vmin, H, dtype=np.float64)[:, None].repeat(BAR_WIDTH_PX, axis=1)
    eps = np.finfo(np.float32).eps
    bar = depth_to_rgb(ramp - vmin + eps, vmax=vmax - vmin + eps)
    size = max(LABEL_FONT_PX, H // LABEL_FONT_FRACTION)  # readable when the page shrinks it
    label_width = LABEL_CHARS * size * 3 // 5
    canvas = Image.new("RGB", (W + BAR_GAP_PX + BAR_WIDTH_PX + label_width, H), PANEL_BACKGROUND)
    canvas.paste(Image.fromarray(rgb), (0, 0))
    canvas.paste(Image.fromarray(bar), (W + BAR_GAP_PX, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=size)
    x = W + BAR_GAP_PX + BAR_WIDTH_PX + 4
    for i in range(BAR_TICKS):
        frac = i / (BAR_TICKS - 1)
        value = vmax - frac * (vmax - vmin)
        y = min(max(frac * (H - 1) - size / 2, 0), H - size - 1)
        draw.text((x, y), f"{value:.2f}", fill=LABEL_RGB, font=font)
    return np.asarray(canvas)


def _percent(fraction: float) -> str:
    return "<0.1%" if 0 < fraction < 0.001 else f"{100 * fraction:.1f}%"


def legend_html(legend: list[LegendEntry], max_classes: int = LEGEND_MAX_CLASSES) -> str:
    """Coloured swatches with class names and pixel shares, most frequent first."""
    if not legend:
        return "<p>No segmentation output.</p>"
    items = []
    for e in legend[:max_classes]:
        colour = "#%02x%02x%02x" % e.color
        items.append(
            f'<span class="vt-legend-item"><span class="vt-swatch" style="background:{colour}">'
            f"</span>{html.escape(e.name)} {_percent(e.fraction)}</span>"
        )
    rest = sum(e.fraction for e in legend[max_classes:])
    if rest > 0:
        items.append(f'<span class="vt-legend-item">other classes {_percent(rest)}</span>')
    return '<div class="vt-legend"><b>Classes:</b> ' + " ".join(items) + "</div>"


def legend_text(legend: list[LegendEntry]) -> str:
    """The legend as plain text, one class per line (for notebooks and logs)."""
    return "\n".join(f"{e.class_id:3d} {e.name:12s} rgb{e.color} {100 * e.fraction:5.1f}%"
                     for e in legend)


def write_png(path: Path, rgb: np.ndarray) -> str:
    """Save ``(H, W, 3)`` uint8 as a PNG with fast compression; returns the path as a string.

    The handler writes its own files (one folder per request) rather than handing arrays to
    Gradio: Gradio stores arrays under a hash of their content without an atomic write, so
    two concurrent requests with identical outputs could serve a half-written file; files
    it copies atomically.
    """
    Image.fromarray(rgb).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return str(path)


def arrays_file(pred: Prediction, folder: Path | None = None) -> Path:
    """Write the prediction's arrays to an ``.npz`` (load with ``np.load(path)``; no pickle).

    Keys: the model's tasks (``seg`` int16 ids, ``depth`` (H, W), ``normals`` (H, W, 3),
    ``edges`` (H, W), float32) and ``image`` (the input at the same size, uint8).
    """
    arrays = {k: (v.astype(np.int16) if k == "seg" else v) for k, v in pred.arrays().items()}
    arrays["image"] = pred.image
    if folder is None:  # a temporary folder, removed at exit
        folder = Path(tempfile.mkdtemp(prefix="vtagml_pred_"))
        atexit.register(shutil.rmtree, folder, True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prediction.npz"
    np.savez(path, **arrays)
    return path


def trained_on(info: TrainingInfo) -> str:
    """"synthetic domain `indoor` (...)", "real dataset `nyud`" or "not recorded"."""
    if not info.dataset:
        return "not recorded (no run files next to the checkpoint)"
    if info.synthetic:
        extra = f"; {info.details}" if info.details else ""
        return f"synthetic domain `{info.dataset}` (the kit's procedural renderer{extra})"
    return f"real dataset `{info.dataset}`"


def caution(info: TrainingInfo, num_classes: int) -> str:
    """The one-line out-of-domain caution for a checkpoint."""
    if not info.dataset:
        return CAUTION_UNKNOWN
    template = CAUTION_SYNTHETIC if info.synthetic else CAUTION_REAL
    return template.format(name=info.dataset, classes=num_classes)


def metrics_text(metrics: dict[str, dict[str, float]]) -> str:
    """Each task's headline validation metric, with the direction that is better."""
    parts = []
    for task, values in metrics.items():
        name = PRIMARY_METRICS.get(task)
        if not isinstance(values, dict) or name not in values:
            continue
        better = "lower" if METRIC_DIRECTIONS.get(name, False) else "higher"
        parts.append(f"{TASK_TITLES.get(task, task)} {name} {float(values[name]):.3f} "
                     f"({better} is better)")
    return " · ".join(parts)


def training_card(label: str, info: TrainingInfo, class_names: list[str]) -> str:
    """Markdown next to the predictions: training data, validation metrics, caution."""
    lines = [f"**About this checkpoint** (`{label}`)", "",
             f"- Trained on: {trained_on(info)}."]
    scores = metrics_text(info.metrics)
    if scores:
        where = f" ({html.escape(info.metrics_where)})" if info.metrics_where else ""
        lines.append(f"- Validation{where}: {scores}.")
    else:
        lines.append("- Validation metrics: not recorded next to the checkpoint.")
    lines.append(f"- Classes it knows ({len(class_names)}): {', '.join(class_names)}.")
    lines.append(f"- **Caution:** {caution(info, len(class_names))}")
    return "\n".join(lines)


def normals_key_html() -> str:
    """The normals colour key: a swatch per surface orientation, and the mapping."""
    vectors = np.array([v for _, v in NORMALS_KEY], dtype=np.float32)[None]
    colours = normals_to_rgb(vectors)[0]
    items = [f'<span class="vt-legend-item"><span class="vt-swatch" style="background:'
             f'#{r:02x}{g:02x}{b:02x}"></span>{html.escape(name)}</span>'
             for (name, _), (r, g, b) in zip(NORMALS_KEY, colours)]
    return ('<div class="vt-legend"><b>Normals colours:</b> ' + " ".join(items)
            + "<br><small>RGB = (n + 1) / 2 of the unit surface normal in the camera frame "
            "(x right, y down, z forward).</small></div>")
