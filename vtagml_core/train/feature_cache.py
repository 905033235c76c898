"""Frozen-backbone feature cache: compute the backbone's taps once per image, reuse every epoch.

VTAGML never trains its encoder (paper Sec. 3.1: the pretrained vision transformer is frozen;
only adapters, decoders and heads learn). With no augmentation touching the image, the backbone
maps a training image to the same taps and stage maps in every epoch, so running it again each
epoch is wasted work. :class:`CachedFeatureDataset` runs it once over the whole dataset, keeps
the outputs in memory, and hands them out with each sample; the model then skips the encoder::

    ds = CachedFeatureDataset(SyntheticDataset("indoor", "train", count=512), model.backbone)
    for batch in DataLoader(ds, batch_size=8, shuffle=True):
        outputs = model(batch["image"], features=features_from_batch(batch))

**When to use it.** Only when the image a step sees is exactly the image the cache saw:
no random crops, flips or colour jitter (those change the image, hence its features, every
epoch). The trainer turns the cache on by default in that case (config ``train.feature_cache``).

**Exactness.** Features are stored as they come out of the backbone (float32 on the CPU, no
compression), so a step with the cache computes the same numbers as a step without it. The
one caveat is the floating-point kernels themselves: a CPU matrix multiply may pick another
blocking for another batch size and round the last bit differently (on the 2-core dev machine
batches of 4 to 32 images gave bit-identical taps, a batch of 1 differed by ~2e-6). Computing
the cache with ``batch_size`` equal to the training batch size and iterating in the same order
gives bit-identical results by construction (the tests check exactly that).

**Construction is eager**: all features are computed in ``__init__`` (batched, ``no_grad``),
so the first epoch costs the same as the others and DataLoader workers (forked) share the
finished tensors instead of each recomputing them. Before the full pass, one image is encoded
to measure the per-image footprint; a cache larger than ``max_bytes`` is refused up front.

**Memory.** Per image, the tiny CPU backbone at 128 px stores ~0.34 MB (taps at strides 16 and
32, stage maps at 4, 8, 16, 32; a tap that *is* a stage output, like the last block of Swin's
stages 3 and 4, is stored once). 512 training images take ~175 MB. Swin-B V2 at 256 px needs
~6 MB per image: the default cap stops a paper-scale dataset from exhausting host memory.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vtagml_core.model.backbone import BackboneOutput, FrozenBackbone

log = logging.getLogger(__name__)

#: Batch key under which cached features travel: ``{"taps": [...], "stages": [...]}``.
FEATURES_KEY: str = "features"
#: Default refusal threshold for the cache's memory footprint (bytes): 4 GiB.
DEFAULT_MAX_BYTES: int = 4 * 2**30
#: Images encoded per backbone call while filling the cache.
DEFAULT_BATCH_SIZE: int = 32
#: Bytes in a mebibyte, for messages.
MIB: int = 2**20


def _alias_map(taps: Sequence[Tensor], stages: Sequence[Tensor]) -> list[int | None]:
    """For each tap, the index of the stage map it *is* (same storage and shape), else None.

    Swin's walk hands out the last block of a stage both as a tap and as that stage's output
    (one tensor); storing it twice would double the biggest entries for nothing.
    """
    out: list[int | None] = []
    for tap in taps:
        match = next((s for s, st in enumerate(stages)
                      if st.data_ptr() == tap.data_ptr() and st.shape == tap.shape
                      and st.stride() == tap.stride()), None)
        out.append(match)
    return out


class CachedFeatureDataset(Dataset):
    """A contract dataset whose samples also carry the frozen backbone's features.

    Args:
        dataset: any dataset following the kit's sample contract (needs ``"image"``
            ``(3, H, W)`` float32 in [0, 1]); its samples are returned unchanged plus features.
        backbone: the frozen encoder whose outputs are cached (``model.backbone``).
        device: where the backbone runs while filling the cache (the cache itself is CPU).
        batch_size: images per backbone call while filling the cache.
        progress: show a progress bar while filling.
        max_bytes: refuse (ValueError) if the cache would need more host memory than this.

    ``__getitem__(i)`` returns ``dataset[i]`` plus ``"features": {"taps": [(h_l, w_l, C_l) ...],
    "stages": [(h_s, w_s, C_s) ...]}`` (channels-last, one sample, no batch dimension), which
    torch's ``default_collate`` stacks into ``(B, h, w, C)``; :func:`features_from_batch` turns
    that back into a :class:`BackboneOutput`.
    """

    def __init__(self, dataset: Dataset, backbone: FrozenBackbone, device: torch.device | str = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(backbone, FrozenBackbone):
            raise TypeError(
                f"CachedFeatureDataset caches a FrozenBackbone (model.backbone), got "
                f"{type(backbone).__name__}: a backbone that trains gives new features every step"
            )
        if not backbone.frozen:
            raise ValueError(
                "the backbone is trainable (backbone.frozen=false): its features change every "
                "step, so they cannot be cached; disable the cache (train.feature_cache=false)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.tasks = getattr(dataset, "tasks", ())
        self.class_names = getattr(dataset, "class_names", [])
        self.class_colors = getattr(dataset, "class_colors", None)
        self.name = getattr(dataset, "name", type(dataset).__name__)
        self.max_bytes = int(max_bytes)
        n = len(dataset)
        if n == 0:
            raise ValueError("CachedFeatureDataset: the wrapped dataset is empty")
        device = torch.device(device)
        backbone_device = next(iter(backbone.buffers())).device
        if backbone_device != device:
            raise ValueError(
                f"backbone is on {backbone_device} but device={device}; move the model first "
                f"(model.to(device)) or pass device={str(backbone_device)!r}"
            )

        probe = backbone(dataset[0]["image"][None].to(device))
        self._aliases = _alias_map(probe.taps, probe.stages)
        stored = list(probe.stages) + [t for t, a in zip(probe.taps, self._aliases) if a is None]
        per_image = sum(t[0].numel() * t.element_size() for t in stored)
        total = per_image * n
        if total > self.max_bytes:
            raise ValueError(
                f"the feature cache for {n} images would take {total / MIB:.0f} MiB "
                f"({per_image / MIB:.2f} MiB per image), over the cap of {self.max_bytes / MIB:.0f} "
                f"MiB: lower data.train_count, or disable the cache (train.feature_cache=false), "
                f"or raise the cap (max_bytes) if the host has the memory"
            )
        # One preallocated (N, h, w, C) float32 tensor per stage map and per distinct tap.
        self._stages = [torch.empty((n, *s.shape[1:]), dtype=torch.float32) for s in probe.stages]
        self._taps = [None if a is not None else torch.empty((n, *t.shape[1:]), dtype=torch.float32)
                      for t, a in zip(probe.taps, self._aliases)]
        self._fill(backbone, device, batch_size, progress)
        self.nbytes: int = sum(t.numel() * t.element_size()
                               for t in self._stages + [t for t in self._taps if t is not None])
        log.info("feature cache: %d images, %.1f MiB", n, self.nbytes / MIB)

    def _fill(self, backbone: FrozenBackbone, device: torch.device, batch_size: int,
              progress: bool) -> None:
        n = len(self.dataset)
        bar = tqdm(total=n, desc=f"caching backbone features ({self.name})", unit="img",
                   disable=not progress)
        with torch.no_grad():
            for start in range(0, n, batch_size):
                idx = range(start, min(start + batch_size, n))
                images = torch.stack([self.dataset[i]["image"] for i in idx]).to(device)
                out = backbone(images)
                for dst, src in zip(self._stages, out.stages):
                    dst[idx.start:idx.stop] = src.float().cpu()
                for dst, src in zip(self._taps, out.taps):
                    if dst is not None:
                        dst[idx.start:idx.stop] = src.float().cpu()
                bar.update(len(idx))
        bar.close()

    def __len__(self) -> int:
        return len(self.dataset)

    def features(self, i: int) -> BackboneOutput:
        """Cached features of sample ``i``: channels-last maps without batch dimension."""
        stages = [s[i] for s in self._stages]
        taps = [stages[a] if a is not None else t[i] for t, a in zip(self._taps, self._aliases)]
        return BackboneOutput(taps=taps, stages=stages)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.dataset[i])
        if FEATURES_KEY in sample:
            raise ValueError(f"the wrapped dataset already returns a {FEATURES_KEY!r} key; "
                             "do not wrap a CachedFeatureDataset twice")
        feats = self.features(i)
        sample[FEATURES_KEY] = {"taps": feats.taps, "stages": feats.stages}
        return sample

    def __repr__(self) -> str:
        return (f"CachedFeatureDataset({self.name!r}, {len(self)} images, "
                f"{self.nbytes / MIB:.1f} MiB)")


def features_from_batch(batch: dict, device: torch.device | str | None = None) -> BackboneOutput | None:
    """The cached :class:`BackboneOutput` of a collated batch, or None when it carries none.

    Args:
        batch: a collated batch; cached features sit under ``batch["features"]`` as
            ``{"taps": [(B, h, w, C) ...], "stages": [(B, h, w, C) ...]}``.
        device: move the maps there (a plain ``move_batch`` does not look inside the
            nested ``"features"`` dict); ``None`` leaves them where they are.
    """
    feats = batch.get(FEATURES_KEY)
    if feats is None:
        return None
    if not isinstance(feats, dict) or set(feats) != {"taps", "stages"}:
        raise ValueError(
            f"batch[{FEATURES_KEY!r}] must be a dict with keys 'taps' and 'stages' (as collated "
            f"from CachedFeatureDataset), got {type(feats).__name__}"
            + (f" with keys {sorted(feats)}" if isinstance(feats, dict) else "")
        )

    def move(ts: list[Tensor]) -> list[Tensor]:
        return [t.to(device, non_blocking=True) for t in ts] if device is not None else list(ts)

    return BackboneOutput(taps=move(feats["taps"]), stages=move(feats["stages"]))
