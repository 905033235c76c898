"""The batches a training run reads, and the precision they are computed in: :class:`RunBatches`.

A mixin of :class:`~vtagml_core.train.trainer.Trainer` (it reads the trainer's ``cfg``, ``ctx``,
``device``, ``model``, ``use_feature_cache``, ``train_data`` and ``val_data``): the datasets
wrapped with the frozen backbone's precomputed features (:mod:`.feature_cache`), epoch ``e``'s
training batches for this process from any batch on (the exact-resume data order,
:mod:`.schedule`), the validation batches sharded over ranks, and bf16 autocast on CUDA.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vtagml_core.data.augment import AugmentedDataset
from vtagml_core.train.config import KitConfig

from .distributed import DistContext
from .feature_cache import CachedFeatureDataset, features_from_batch
from .schedule import EpochBatchSampler, ShardSampler, epoch_seed


class RunBatches:
    """Datasets, loaders and autocast of a run (mixed into the trainer)."""

    # What the trainer sets up and this mixin reads (annotations only).
    cfg: KitConfig
    ctx: DistContext
    device: torch.device
    model: nn.Module
    use_feature_cache: bool
    train_data: Dataset
    val_data: Dataset

    def _cached(self, dataset: Dataset) -> Dataset:
        if not self.use_feature_cache:
            return dataset
        return CachedFeatureDataset(dataset, self.model.backbone, self.device,
                                    self.cfg.train.feature_batch_size,
                                    progress=self.ctx.is_main and self.cfg.train.progress)

    def features(self, batch: dict):
        """Precomputed backbone features of a batch (``BackboneOutput``, on the device) or None."""
        return features_from_batch(batch, self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (``train.amp``), nothing on CPU (fp32)."""
        if self.device.type == "cuda" and self.cfg.train.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_loader(self, epoch: int, start_batch: int = 0) -> DataLoader:
        """Epoch ``epoch``'s batches for this process, from batch ``start_batch`` on."""
        sampler = EpochBatchSampler(len(self.train_data), self.cfg.data.batch_size,
                                    self.cfg.train.seed, epoch, self.ctx.rank,
                                    self.ctx.world_size, start_batch)
        seed = epoch_seed(self.cfg.train.seed, epoch)
        if isinstance(self.train_data, AugmentedDataset):
            # Set before the loader copies the dataset into its workers: the epoch's draws.
            self.train_data.set_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(self.train_data, batch_sampler=sampler, generator=gen,
                          num_workers=self.cfg.data.num_workers)

    def val_loader(self, dataset: Dataset | None = None) -> DataLoader:
        """Evaluation batches of ``dataset`` (default: the validation set), sharded over ranks."""
        ds = self.val_data if dataset is None else dataset
        return DataLoader(ds, batch_size=self.cfg.data.batch_size, generator=torch.Generator(),
                          sampler=ShardSampler(len(ds), self.ctx.rank, self.ctx.world_size),
                          num_workers=self.cfg.data.num_workers)


__all__ = ["RunBatches"]
