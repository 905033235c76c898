"""Offline backbone pretraining on the renderer's dense pretext split (docs/method.md, docs/benchmark.md).

The paper freezes an ImageNet-pretrained Swin-B V2 (Sec. 3.1). Without internet the kit makes its
own pretrained backbone: :func:`pretrain` trains :class:`~vtagml_core.model.pretext.PretextModel`
(the tiny Swin V2 + a light dense head) to predict per-pixel albedo and texture type on the
``pretext`` split of the virtual ``mixed`` domain, whose scenes are disjoint from every benchmark
split, and saves the backbone alone. Every later run loads it with ``BackboneConfig(weights=...)``
and freezes it. With internet, ``backbone.pretrained: true`` (timm's ImageNet weights) replaces it
by config alone.

Outputs of ``pretrain(cfg, out)``::

    <out>/backbone.safetensors   the timm model's state dict (loadable by BackboneConfig(weights=))
    <out>/pretrain.json          config, loss curve, held-out albedo L1 / texture accuracy before
                                 and after, the majority-texture baseline, seconds

**Default location ("weights: auto").** :func:`default_pretrained_path` names one file per
(backbone, image size, seed) under the kit cache, ``<cache>/backbones/<name>-<size>-s<seed>
.safetensors`` (+ ``.json`` record beside it); :func:`ensure_pretrained_backbone` returns it,
pretraining first when it is missing. The file name does not encode steps or scene counts; the
``.json`` record beside it does, and a record whose training recipe (steps, scenes, batch, lr)
differs from the one asked for, or whose pretext images came from another renderer version
(``data_generator``), is replaced by a new pretraining (an older kit's 200-step backbone is not
silently reused). A weights file with no record (placed by hand) is used as it is.

Measured (``python -m vtagml_core pretrain``, 2-core CPU): 200 steps of batch 16 took 49 s on an
idle machine, so the default 800 take about 3.5 minutes; held-out texture accuracy 0.19 -> 0.58 (majority class 0.33), albedo L1 0.181 ->
0.083. With 200 steps: 0.51 and 0.107; a VTAGML seg-only model on the frozen result reached
0.336 vs 0.311 val mIoU after one epoch, the same after three.

**Determinism.** The model init and the data order come from ``cfg.seed``; on the CPU two runs
with the same config and thread count produce identical weights.

**Evidence** that the pretraining helps is :func:`probe_segmentation`: a linear probe (one 1x1
conv over the frozen stage maps) trained for segmentation on a benchmark domain, run once on the
random-init backbone and once on the pretrained one with the same seed and steps.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

import copy

from vtagml_core import __version__
from vtagml_core.config import to_dict
from vtagml_core.data.cache import GENERATOR_VERSION, default_cache_root
from vtagml_core.data.config import UNSTAMPED_GENERATOR
from vtagml_core.data.dataset import PretextDataset, SyntheticDataset
from vtagml_core.data.synthetic.domains import TEXTURE_NAMES
from vtagml_core.metrics.dense import SegMetrics
from vtagml_core.model.backbone import BackboneConfig, FrozenBackbone
from vtagml_core.model.backbone_weights import PRETEXT_WEIGHTS
from vtagml_core.model.pretext import DEFAULT_HEAD_CHANNELS, PretextModel, pretext_losses
from vtagml_core.runtime import resolve_device
from vtagml_core.tasks import IGNORE_INDEX

from .config import KitConfig
from .feature_cache import CachedFeatureDataset, features_from_batch
from .schedule import build_scheduler

log = logging.getLogger(__name__)

WEIGHTS_NAME: str = "backbone.safetensors"
RECORD_NAME: str = "pretrain.json"
#: Sub-folder of the kit cache holding pretrained backbones.
BACKBONES_DIR: str = "backbones"
#: Probe defaults: Adam learning rate of the 1x1 conv and images per probe step.
PROBE_LR: float = 1e-2
PROBE_BATCH_SIZE: int = 16
#: Permissions of written files before the umask (as ``open()`` would create them).
FILE_MODE: int = 0o666


@dataclass
class PretrainConfig:
    """One pretraining run. The defaults (the ``quick`` preset) take about 3 minutes on 2 CPU cores.

    Measured with these defaults on the 2-core dev machine (1 torch thread, machine shared with
    other jobs): 185 s in all (159 s of training, the rest rendering 1088 scenes and evaluating);
    held-out texture accuracy 0.19 -> 0.50 (majority class 0.33), albedo L1 0.181 -> 0.107; then a
    300-step segmentation probe on ``indoor`` at 128 px: mIoU 0.276 (frozen random backbone) ->
    0.359 (frozen pretrained), pixel accuracy 0.747 -> 0.812. One seed: repeat before trusting.

    Attributes:
        backbone, img_size: the backbone to pretrain (:class:`BackboneConfig` ``name``/``img_size``).
        count: pretext scenes to train on; ``eval_count`` more (never trained on) are held out.
        seed: seeds the pretext split, the model init and the data order.
        steps, batch_size: optimizer steps of ``batch_size`` images.
        lr, warmup_steps, min_lr_ratio: Adam, linear warm-up then cosine decay to ``min_lr_ratio * lr``.
        albedo_weight, texture_weight: total loss = a * L1(albedo) + t * CE(texture).
        head_channels: width of the dense FPN head.
        log_every: record the mean training loss every this many steps.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        cache_root: root of the data cache (``None``: :func:`~vtagml_core.data.cache.default_cache_root`).
        progress: progress bars.
    """

    backbone: str = "swinv2_tiny_cpu"
    img_size: int = 128
    count: int = 1024
    eval_count: int = 64
    seed: int = 0
    steps: int = 800
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05
    albedo_weight: float = 1.0
    texture_weight: float = 1.0
    head_channels: int = DEFAULT_HEAD_CHANNELS
    log_every: int = 10
    device: str = "auto"
    cache_root: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("img_size", "count", "eval_count", "steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain.{name} must be a positive integer, got {getattr(self, name)}")
        if self.batch_size > self.count:
            raise ValueError(f"pretrain.batch_size ({self.batch_size}) exceeds pretrain.count "
                             f"({self.count}): render more scenes or use smaller batches")
        if self.lr <= 0:
            raise ValueError(f"pretrain.lr must be positive, got {self.lr}")

    def backbone_config(self, weights: str | None = None) -> BackboneConfig:
        return BackboneConfig(name=self.backbone, img_size=self.img_size, weights=weights)


@dataclass
class PretrainResult:
    """What :func:`pretrain` produced and measured (also written to ``pretrain.json``)."""

    weights: Path
    record: Path
    seconds: float
    eval_before: dict[str, float]
    eval_after: dict[str, float]
    majority_texture_accuracy: float
    losses: list[dict[str, float]] = field(default_factory=list)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into a temporary sibling of ``path``, then rename it onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE & ~_current_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@torch.no_grad()
def evaluate_pretext(model: PretextModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Held-out pretext quality: ``albedo_l1`` (mean absolute error per channel and pixel),
    ``texture_acc`` (pixel accuracy of the texture type) and ``texture_ce``."""
    was_training = model.training
    model.eval()
    abs_err = ce = correct = pixels = 0.0
    for batch in loader:
        images, albedo, texture = (batch[k].to(device) for k in ("image", "albedo", "texture"))
        pred_albedo, logits = model(images)
        abs_err += float((pred_albedo - albedo).abs().sum())
        ce += float(F.cross_entropy(logits, texture, reduction="sum"))
        correct += float((logits.argmax(1) == texture).sum())
        pixels += texture.numel()
    model.train(was_training)
    return {"albedo_l1": abs_err / (pixels * albedo.shape[1]), "texture_ce": ce / pixels,
            "texture_acc": correct / pixels}


def majority_texture_accuracy(dataset: Subset | PretextDataset) -> float:
    """Pixel accuracy of always predicting the most frequent texture type (the chance level)."""
    counts = torch.zeros(len(TEXTURE_NAMES), dtype=torch.int64)
    for i in range(len(dataset)):
        counts += torch.bincount(dataset[i]["texture"].flatten(), minlength=len(TEXTURE_NAMES))
    return float(counts.max() / counts.sum())


def pretrain(cfg: PretrainConfig, out: str | Path) -> PretrainResult:
    """Pretrain ``cfg.backbone`` on the dense pretext and save it under ``out`` (see module doc)."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    root = Path(cfg.cache_root) if cfg.cache_root else None
    data = PretextDataset(count=cfg.count + cfg.eval_count, size=cfg.img_size, seed=cfg.seed,
                          root=root, progress=cfg.progress)
    train_set = Subset(data, range(cfg.count))
    eval_set = Subset(data, range(cfg.count, cfg.count + cfg.eval_count))
    torch.manual_seed(cfg.seed)
    model = PretextModel(cfg.backbone_config(), cfg.head_channels).to(device)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    eval_loader = DataLoader(eval_set, batch_size=cfg.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)

    eval_before = evaluate_pretext(model, eval_loader, device)
    model.train()
    started = time.perf_counter()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
    losses: list[dict[str, float]] = []
    window: list[tuple[float, float, float]] = []
    bar = tqdm(range(1, cfg.steps + 1), desc="pretraining backbone", disable=not cfg.progress)
    for step in bar:
        batch = {k: v.to(device) for k, v in next(batches).items() if isinstance(v, Tensor)}
        albedo, logits = model(batch["image"])
        parts = pretext_losses(albedo, logits, batch)
        total = cfg.albedo_weight * parts["albedo"] + cfg.texture_weight * parts["texture"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"pretext loss became {float(total)} at step {step}; lower "
                                     f"pretrain.lr (now {cfg.lr})")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        window.append((float(total.detach()), float(parts["albedo"].detach()),
                       float(parts["texture"].detach())))
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = [sum(v) / len(window) for v in zip(*window)]
            losses.append({"step": step, "loss": mean[0], "albedo": mean[1], "texture": mean[2],
                           "lr": optimizer.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{mean[0]:.3f}")
            window = []
    train_seconds = time.perf_counter() - started
    eval_after = evaluate_pretext(model, eval_loader, device)
    majority = majority_texture_accuracy(eval_set)

    weights, record = out / WEIGHTS_NAME, out / RECORD_NAME
    meta = {"backbone": cfg.backbone, "img_size": str(cfg.img_size), "seed": str(cfg.seed),
            "kit_version": __version__}
    state = model.backbone_state_dict()
    atomic_write(weights, lambda p: save_file(state, str(p), metadata=meta))
    seconds = time.perf_counter() - t0  # everything: rendering, evaluations, saving
    summary = {"kit_version": __version__, "data_generator": GENERATOR_VERSION,
               "config": to_dict(cfg), "device": str(device),
               "texture_names": list(TEXTURE_NAMES), "eval_before": eval_before,
               "eval_after": eval_after, "majority_texture_accuracy": majority,
               "train_seconds": train_seconds, "seconds": seconds, "weights": WEIGHTS_NAME,
               "losses": losses}
    atomic_write(record, lambda p: p.write_text(json.dumps(summary, indent=2)))
    log.info("pretrained %s in %.0f s: texture acc %.3f (majority %.3f), albedo L1 %.4f",
             cfg.backbone, seconds, eval_after["texture_acc"], majority, eval_after["albedo_l1"])
    return PretrainResult(weights, record, seconds, eval_before, eval_after, majority, losses)


def default_pretrained_path(name: str, img_size: int, seed: int = 0) -> Path:
    """``<kit cache>/backbones/<name>-<img_size>-s<seed>.safetensors`` (``$VTAGML_CACHE`` honoured)."""
    return default_cache_root() / BACKBONES_DIR / f"{name}-{img_size}-s{seed}.safetensors"


def install_pretrained(cfg: PretrainConfig) -> tuple[Path, PretrainResult]:
    """Pretrain now and place the weights (and the ``.json`` record) at the default path."""
    target = default_pretrained_path(cfg.backbone, cfg.img_size, cfg.seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.stem}.tmp-"))
    try:
        result = pretrain(cfg, work)
        os.replace(result.record, target.with_suffix(".json"))
        os.replace(result.weights, target)  # last: the weights file marks a finished install
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, result


#: Fields of :class:`PretrainConfig` that define the pretraining recipe (hence the weights).
RECIPE_FIELDS: tuple[str, ...] = ("count", "steps", "batch_size", "lr", "warmup_steps",
                                  "min_lr_ratio", "albedo_weight", "texture_weight", "head_channels")


def _stale_record(record: Path, cfg: PretrainConfig) -> bool:
    """True when ``record`` exists and names another recipe than ``cfg`` (module docstring)."""
    if not record.is_file():
        return False
    try:
        data = json.loads(record.read_text())
        saved = data["config"]
    except (ValueError, KeyError, TypeError):
        return True  # unreadable record: pretrain again rather than trust the weights beside it
    wanted = to_dict(cfg)
    changed = [f for f in RECIPE_FIELDS if saved.get(f) != wanted[f]]
    if data.get("data_generator", UNSTAMPED_GENERATOR) != GENERATOR_VERSION:
        changed.append("data generator")  # its pretext images were rendered differently
    if changed:
        log.info("pretrained backbone at %s was made with another recipe (%s); pretraining again",
                 record.with_suffix(".safetensors"), ", ".join(changed))
    return bool(changed)


def ensure_pretrained_backbone(cfg: PretrainConfig, progress: bool = True) -> Path:
    """Path of the pretrained backbone for ``cfg`` at the default location, pretraining first
    when it is missing (a later run can then say ``weights: auto``)."""
    target = default_pretrained_path(cfg.backbone, cfg.img_size, cfg.seed)
    if target.is_file() and not _stale_record(target.with_suffix(".json"), cfg):
        return target
    log.info("no pretrained %s at %s: pretraining it (%d steps)", cfg.backbone, target, cfg.steps)
    cfg = PretrainConfig(**{**to_dict(cfg), "progress": progress})
    return install_pretrained(cfg)[0]


#: Seed of the pretext pretraining that makes the shared frozen backbone (one for all seeds).
PRETRAIN_SEED: int = 0


def resolve_backbone_weights(cfg: KitConfig, log: Callable[[str], None] = print) -> KitConfig:
    """``cfg`` with ``model.backbone.weights: pretext`` replaced by the file (a copy; else ``cfg``).

    The file is the kit's pretext-pretrained backbone for the config's backbone name and size
    (seed :data:`PRETRAIN_SEED`, the preset's ``data.pretext_count`` scenes), pretrained here
    first when the cache has none. The run store keys a run by that file's hash, so resolve
    before computing a key.
    """
    bb = cfg.model.backbone
    if bb.weights != PRETEXT_WEIGHTS:
        return cfg
    target = default_pretrained_path(bb.name, bb.img_size, PRETRAIN_SEED)
    if not target.is_file():
        log(f"pretraining the frozen backbone once ({bb.name}, {bb.img_size}px) -> {target}")
    pre = PretrainConfig(backbone=bb.name, img_size=bb.img_size, count=cfg.data.pretext_count,
                         seed=PRETRAIN_SEED, device=cfg.train.device,
                         cache_root=cfg.data.cache_root, progress=cfg.train.progress)
    out = copy.deepcopy(cfg)
    out.model.backbone.weights = str(ensure_pretrained_backbone(pre, progress=cfg.train.progress))
    return out


def probe_segmentation(backbone_cfg: BackboneConfig, domain: str = "indoor", count: int = 64,
                       val_count: int = 32, steps: int = 50, seed: int = 0,
                       lr: float = PROBE_LR, batch_size: int = PROBE_BATCH_SIZE,
                       root: Path | None = None, device: str = "cpu",
                       progress: bool = False) -> dict[str, float]:
    """Linear probe for segmentation on frozen stage maps; returns val ``{"mIoU", "pixel_acc"}``.

    All four stage maps ``(B, h_s, w_s, C_s)`` are resized to the stride-4 grid and concatenated,
    a single 1x1 conv maps them to class logits, which are upsampled to full resolution; only
    that conv trains (Adam, cross-entropy ignoring :data:`~vtagml_core.tasks.IGNORE_INDEX`).
    Features come from :class:`CachedFeatureDataset`, so each image is encoded once.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    backbone = FrozenBackbone(backbone_cfg).to(dev)
    kw = dict(tasks=("seg",), size=backbone_cfg.img_size, seed=seed, root=root, progress=progress)
    train = CachedFeatureDataset(SyntheticDataset(domain, "train", count=count, **kw), backbone,
                                 device=dev, progress=progress)
    val = CachedFeatureDataset(SyntheticDataset(domain, "val", count=val_count, **kw), backbone,
                               device=dev, progress=progress)
    num_classes = len(train.class_names)
    probe = nn.Conv2d(sum(backbone.stage_channels), num_classes, kernel_size=1).to(dev)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)

    def logits_of(batch: dict) -> Tensor:
        stages = features_from_batch(batch, dev).stages
        grid = stages[0].shape[1:3]
        x = torch.cat([F.interpolate(s.permute(0, 3, 1, 2), size=grid, mode="bilinear",
                                     align_corners=False) for s in stages], dim=1)
        return F.interpolate(probe(x), size=batch["seg"].shape[-2:], mode="bilinear",
                             align_corners=False)

    loader = DataLoader(train, batch_size=min(batch_size, count), shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    for _ in range(steps):
        batch = next(batches)
        loss = F.cross_entropy(logits_of(batch), batch["seg"].to(dev), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    metrics = SegMetrics(num_classes)
    with torch.no_grad():
        for batch in DataLoader(val, batch_size=batch_size):
            metrics.update(logits_of(batch).cpu(), batch["seg"])
    return metrics.compute()
