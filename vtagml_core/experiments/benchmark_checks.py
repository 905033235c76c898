"""Checks of the benchmark itself (project issue 15, item 2): can colour alone tell the classes?

A benchmark whose classes are known by colour alone tests a per-pixel colour lookup, not
shapes, sizes, placement and context. :func:`colour_only_miou` measures what a **colour-only
classifier** reaches: a per-pixel classifier that sees one pixel's RGB and nothing else,
fitted on a train split and scored on another split with the kit's own segmentation metric
(:class:`~vtagml_core.metrics.dense.SegMetrics`). :func:`colour_check` puts it next to the quick
VTAGML S-D-N-E model's source val mIoU; the issue asks for a ratio of at most
:data:`COLOUR_ONLY_MAX_RATIO`.

**The classifier** (:class:`ColourHistogramClassifier`) is a histogram Bayes classifier: RGB
quantised to :data:`COLOUR_LEVELS` levels per channel (4,096 colour cells), the pixel count of
every (class, cell) pair over the train split, and per cell the class of the largest count,
i.e. the maximum a-posteriori class ``argmax_c P(c) P(cell | c)`` (cells never seen in training
take the majority class). It is exact, deterministic and fast (one ``bincount``), has no
hyper-parameters to tune beyond the quantisation, and is the best any per-pixel colour rule
can do on the train split at that quantisation, so its val score bounds what colour alone
carries (up to the quantisation and to train/val differences). scikit-learn is not a
dependency of the kit, and a k-NN or a small MLP would only approximate this rule.

:func:`render_arrays` and :func:`palette_overlap_sweep` render splits in memory (no cache) for
the palette-overlap measurement (:attr:`~vtagml_core.data.synthetic.specs.AppearanceSpec.palette_overlap`).
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vtagml_core.data.classes import NUM_CLASSES
from vtagml_core.metrics.dense import SegMetrics
from vtagml_core.tasks import IGNORE_INDEX

#: Quantisation levels per RGB channel of the colour-only classifier (16: bins of 16 values,
#: 4,096 colour cells; fine enough to separate palette colours, coarse enough that a 128 px
#: train split fills the cells it uses).
COLOUR_LEVELS: int = 16
#: Largest colour-only / model mIoU ratio the issue accepts ("at most half").
COLOUR_ONLY_MAX_RATIO: float = 0.5
#: Scenes per chunk when fitting and scoring (bounds memory: 64 scenes at 128 px = 3 MB RGB).
CHUNK_SCENES: int = 64
#: Largest value of a uint8 channel plus one.
_CHANNEL_VALUES: int = 256


def colour_cells(images: np.ndarray, levels: int = COLOUR_LEVELS) -> np.ndarray:
    """Colour cell id per pixel: ``(..., 3)`` uint8 RGB -> ``(...)`` int64 in [0, levels**3)."""
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"colour_cells needs uint8 RGB images (..., 3), got {images.dtype} "
                         f"{images.shape}; pass the cached split's 'image' array")
    q = images.astype(np.int64) * levels // _CHANNEL_VALUES
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


@dataclass(frozen=True)
class ColourHistogramClassifier:
    """Per-pixel colour-only classifier: one class per quantised RGB cell.

    Attributes:
        counts: ``(K, levels**3)`` int64 train pixels per (class, colour cell).
        lookup: ``(levels**3,)`` int64 class per colour cell (argmax of ``counts``; the
            majority class where a cell holds no train pixel; ties to the lower class id).
        levels: quantisation levels per channel.
    """

    counts: np.ndarray
    lookup: np.ndarray
    levels: int

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class ids ``(...)`` int64 for uint8 RGB ``images`` ``(..., 3)``."""
        return self.lookup[colour_cells(images, self.levels)]


def fit_colour_classifier(images: np.ndarray, seg: np.ndarray, num_classes: int = NUM_CLASSES,
                          levels: int = COLOUR_LEVELS,
                          ignore_index: int = IGNORE_INDEX) -> ColourHistogramClassifier:
    """Fit :class:`ColourHistogramClassifier` on ``images`` ``(N, H, W, 3)`` uint8 and their
    labels ``seg`` ``(N, H, W)`` (class ids; ``ignore_index`` pixels skipped)."""
    if images.shape[:-1] != seg.shape:
        raise ValueError(f"images {images.shape} and seg {seg.shape} must cover the same pixels")
    cells = levels ** 3
    counts = np.zeros(num_classes * cells, np.int64)
    for i in range(0, len(seg), CHUNK_SCENES):
        labels = np.asarray(seg[i:i + CHUNK_SCENES]).astype(np.int64).ravel()
        colour = colour_cells(np.asarray(images[i:i + CHUNK_SCENES])).ravel()
        keep = labels != ignore_index
        if keep.any() and labels[keep].max() >= num_classes:
            raise ValueError(f"seg holds class id {labels[keep].max()} >= num_classes={num_classes}")
        counts += np.bincount(labels[keep] * cells + colour[keep], minlength=num_classes * cells)
    counts = counts.reshape(num_classes, cells)
    if counts.sum() == 0:
        raise ValueError("no labelled pixel to fit the colour-only classifier on")
    lookup = counts.argmax(axis=0)
    lookup[counts.sum(axis=0) == 0] = int(counts.sum(axis=1).argmax())
    return ColourHistogramClassifier(counts, lookup.astype(np.int64), levels)


def score_seg(classifier: ColourHistogramClassifier, images: np.ndarray, seg: np.ndarray,
              num_classes: int = NUM_CLASSES) -> dict[str, Any]:
    """The kit's seg metrics of ``classifier`` on ``images`` / ``seg``: ``{"mIoU",
    "pixel_acc", "per_class_iou"}`` (fractions; per-class NaN for classes absent from both)."""
    metric = SegMetrics(num_classes)
    for i in range(0, len(seg), CHUNK_SCENES):
        pred = classifier.predict(np.asarray(images[i:i + CHUNK_SCENES]))
        target = np.asarray(seg[i:i + CHUNK_SCENES]).astype(np.int64)
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    return {**metric.compute(), "per_class_iou": metric.per_class_iou()}


def colour_only_miou(train: tuple[np.ndarray, np.ndarray], evaluate: tuple[np.ndarray, np.ndarray],
                     num_classes: int = NUM_CLASSES, levels: int = COLOUR_LEVELS) -> dict[str, Any]:
    """Fit the colour-only classifier on ``train = (images, seg)`` and score it on ``evaluate``.

    Returns:
        :func:`score_seg`'s dict plus ``levels`` and the pixel counts ``train_pixels``,
        ``eval_pixels``.
    """
    clf = fit_colour_classifier(*train, num_classes=num_classes, levels=levels)
    return {**score_seg(clf, *evaluate, num_classes=num_classes), "levels": levels,
            "train_pixels": int(train[1].size), "eval_pixels": int(evaluate[1].size)}


# --------------------------------------------------------------------------- the check command
def split_arrays(ctx, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, H, W, 3) uint8, seg (N, H, W) uint8)`` of the source domain's ``split``,
    the cached split the settings' models train and select on (rendered if absent)."""
    from vtagml_core.data.config import build_dataset

    ds = build_dataset(ctx.cfg.data, split, ("seg",), domain=ctx.settings.source,
                       progress=ctx.cfg.train.progress)
    if not hasattr(ds, "arrays"):
        raise ValueError(f"the colour-only check reads the synthetic benchmark's cached splits; "
                         f"data.dataset={ctx.cfg.data.dataset} has none (use data.dataset=synthetic)")
    return ds.arrays["image"], ds.arrays["seg"]


def colour_check(ctx, tasks: str | None = None) -> dict[str, Any]:
    """Colour-only mIoU vs the VTAGML source model's val mIoU (issue 15, item 2).

    The colour-only classifier is fitted on the source train split and scored on the source val
    split; the model is the MTL setting's VTAGML run of ``tasks`` (default: the last task set,
    S-D-N-E), trained or reused per seed through the settings context, and its val mIoU is that
    of its best epoch (as the MTL quality check reads it).
    """
    from vtagml_core.experiments.seeds import summarize
    from vtagml_core.experiments.settings.mtl import train_source

    tasks = tasks or ctx.settings.task_sets[-1]
    num_classes = ctx.cfg.model.num_classes or NUM_CLASSES
    colour = colour_only_miou(split_arrays(ctx, "train"), split_arrays(ctx, "val"), num_classes)
    model = summarize([train_source(ctx, tasks, "vtagml", s).val_metrics["seg"]["mIoU"]
                       for s in ctx.seeds])
    ratio = colour["mIoU"] / model["mean"] if model["mean"] > 0 else float("inf")
    d = ctx.cfg.data
    return {"check": "colour_only", "tasks": tasks, "colour_only": colour, "model": model,
            "ratio": ratio, "max_ratio": COLOUR_ONLY_MAX_RATIO, "passes": ratio <= COLOUR_ONLY_MAX_RATIO,
            "where": ctx.where(ctx.settings.source, "val"),
            "fitted_on": f"synthetic/{ctx.settings.source} train ({d.train_count} scenes)"}


def colour_check_markdown(doc: dict[str, Any]) -> str:
    """The check as a labelled markdown table plus its verdict line."""
    from vtagml_core.experiments.formatting import format_cell, format_value, generator_text, markdown_table

    w, c = doc["where"], doc["colour_only"]
    generator = f", {generator_text(w)}" if generator_text(w) else ""
    data = f"{w['dataset']} {w['split']}, {w['resolution']}{generator}"
    body = [[f"colour-only (RGB histogram Bayes, {c['levels']} levels/channel), fitted on "
             f"{doc['fitted_on']}", data, "none (one pixel's RGB)", "- (deterministic)",
             format_value(c["mIoU"], "mIoU")],
            [f"VTAGML {doc['tasks']} on the source (best epoch)", data, w["backbone"],
             ",".join(map(str, w["seeds"])), format_cell(doc["model"], "mIoU")]]
    table = markdown_table(["classifier", "data", "backbone weights", "seeds", "mIoU %"], body,
                           ["l", "l", "l", "l", "r"])
    verdict = "meets" if doc["passes"] else "DOES NOT meet"
    return (f"{table}\n\nratio colour-only / VTAGML = {doc['ratio']:.3f}: {verdict} 'at most "
            f"{doc['max_ratio']:g}' (project issue 15, item 2).")


# --------------------------------------------------------------------------- palette overlap
@contextmanager
def served_domain(spec) -> Iterator[None]:
    """Serve ``spec`` under its (plain) domain name in this process while the block runs.

    For in-process measurements only (:func:`render_arrays` with ``workers=1``): rendering
    processes and the data cache never see the change, and the named spec is restored after.
    """
    from vtagml_core.data.synthetic import domains

    if spec.name not in domains.DOMAINS:
        raise ValueError(f"{spec.name!r} is not a plain domain; serve a variant of one of "
                         f"{', '.join(domains.DOMAINS)}")
    saved = domains.DOMAINS[spec.name]
    domains.DOMAINS[spec.name] = spec
    try:
        yield
    finally:
        domains.DOMAINS[spec.name] = saved


def render_arrays(domain: str, split: str, count: int, size: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scenes ``0 .. count-1`` of ``(domain, split)`` (the cache's scene seeds), rendered in
    memory: ``(images (N, size, size, 3) uint8, seg (N, size, size) uint8)``."""
    from vtagml_core.data.cache import scene_seeds
    from vtagml_core.data.synthetic.render import render_scene

    scenes = [render_scene(domain, s, size) for s in scene_seeds(domain, split, count, seed)]
    return np.stack([s["image"] for s in scenes]), np.stack([s["seg"] for s in scenes])


def spec_with(spec, dotted: str, value: str):
    """``spec`` (a frozen domain spec) with the field at ``dotted`` (e.g.
    ``lighting.elevation_deg``) set from ``value``: comma-separated numbers for a range or colour
    field, one number otherwise.

    Raises:
        ValueError: no such field, or a value of the wrong shape (the message names both).
    """
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(spec) or head not in {f.name for f in dataclasses.fields(spec)}:
        raise ValueError(f"no spec field {dotted!r} in {type(spec).__name__}; fields: "
                         f"{', '.join(f.name for f in dataclasses.fields(spec))}")
    current = getattr(spec, head)
    if rest:
        return dataclasses.replace(spec, **{head: spec_with(current, rest, value)})
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"{dotted}={value!r}: give numbers, comma-separated for a range") from None
    if isinstance(current, tuple) != (len(numbers) > 1) or (
            isinstance(current, tuple) and len(current) != len(numbers)):
        raise ValueError(f"{dotted}={value!r}: the field holds {current!r}; give a value of that shape")
    cast = type(current[0]) if isinstance(current, tuple) else type(current)
    new = tuple(cast(v) for v in numbers) if isinstance(current, tuple) else cast(numbers[0])
    return dataclasses.replace(spec, **{head: new})


def palette_overlap_sweep(overlaps: Sequence[float], domain: str = "indoor", train_count: int = 256,
                          val_count: int = 64, size: int = 128, seed: int = 0,
                          changes: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Colour-only mIoU of ``domain`` (train -> val) with its palette overlap set to each value,
    after the spec ``changes`` ``(dotted field, value)`` (:func:`spec_with`; e.g. a wider range of
    light elevations: shading then says less about a surface's orientation).

    Returns one dict per overlap: ``overlap`` and :func:`colour_only_miou`'s result.
    """
    from vtagml_core.data.synthetic.domains import _validate, plain_domain

    base = plain_domain(domain)
    for dotted, value in changes:
        base = spec_with(base, dotted, value)
    out = []
    for p in overlaps:
        spec = dataclasses.replace(base, appearance=dataclasses.replace(base.appearance,
                                                                        palette_overlap=float(p)))
        _validate(spec)
        with served_domain(spec):
            train = render_arrays(domain, "train", train_count, size, seed)
            val = render_arrays(domain, "val", val_count, size, seed)
        out.append({"overlap": float(p), **colour_only_miou(train, val)})
    return out


__all__ = ["COLOUR_LEVELS", "COLOUR_ONLY_MAX_RATIO", "ColourHistogramClassifier", "colour_cells",
           "colour_check", "colour_check_markdown", "colour_only_miou", "fit_colour_classifier",
           "palette_overlap_sweep", "render_arrays", "score_seg", "served_domain", "spec_with",
           "split_arrays"]
