"""When things happen in training: the learning-rate schedule and the data order of each epoch.

**Learning rate** (docs/method.md, "Training": Adam with warm-up then cosine decay). The
multiplier of the peak rate ``lr`` after ``s`` optimizer steps is::

    s < W:       (s + 1) / W                                            (linear warm-up)
    s >= W:      r + (1 - r) * (1 + cos(pi * p)) / 2,  p = min(1, (s - W) / (S - W))

with ``W = warmup_steps``, ``S = total_steps`` and ``r = min_lr_ratio``: the first step already
moves (multiplier 1/W, not 0), the W-th step runs at the peak, and after the last step (s = S)
the rate is exactly ``r * lr``. :class:`WarmupCosine` is that function and
:func:`build_scheduler` wraps it in ``torch.optim.lr_scheduler.LambdaLR``, whose
``state_dict()`` stores only numbers, so it fits a ``weights_only`` training state.

**Data order.** Epoch e visits the training set in the permutation drawn from a generator
seeded with :func:`epoch_seed` ``(seed, e)``. Nothing about the order is carried from one
epoch to the next, so a run resumed in the middle of epoch e rebuilds exactly the same
permutation and skips the batches it already did (:class:`EpochBatchSampler`, ``start_batch``).
Under DistributedDataParallel with K processes, rank r takes every K-th index of the same
permutation (``perm[r::K]``, the rule of ``torch.utils.data.DistributedSampler``); then the
K per-rank batches of step s together hold exactly ``perm[s*b*K : (s+1)*b*K]``, the batch s of
a single-process run with batch ``b*K``. Incomplete global batches at the end of an epoch are
dropped (every step sees a full global batch).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Sampler

#: Multiplier between the run seed and the epoch index in :func:`epoch_seed` (a prime larger
#: than any realistic number of epochs, so (seed, epoch) pairs never collide).
EPOCH_SEED_STRIDE: int = 1_000_003


class WarmupCosine:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_lr_ratio``.

    Args:
        warmup_steps: W >= 0 (0: start at the peak).
        total_steps: S >= 1, the number of optimizer steps of the whole run.
        min_lr_ratio: r in [0, 1], the multiplier reached after the last step.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        """Multiplier of the peak lr for the optimizer step that follows ``step`` done steps."""
        w, total, r = self.warmup_steps, self.total_steps, self.min_lr_ratio
        if step < w:
            return (step + 1) / w
        span = max(1, total - w)
        progress = min(1.0, (step - w) / span)
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float) -> LambdaLR:
    """``LambdaLR`` over :class:`WarmupCosine`; call ``.step()`` once after every optimizer step."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s permutation: a pure function of (run seed, epoch)."""
    return int(seed) * EPOCH_SEED_STRIDE + int(epoch)


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch ``epoch``: ``(num_samples,)`` int64, the same in every process."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=gen)


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Full global batches of ``batch_size * world_size`` samples in one epoch (rest dropped).

    Raises:
        ValueError: the split is smaller than one global batch.
    """
    global_batch = batch_size * world_size
    steps = num_samples // global_batch
    if steps < 1:
        raise ValueError(
            f"the training split has {num_samples} samples, fewer than one global batch of "
            f"{global_batch} ({world_size} process(es) x data.batch_size={batch_size}); lower "
            "data.batch_size or use more training scenes (data.train_count for the synthetic "
            "benchmark; a real dataset's train split decides its own)"
        )
    return steps


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices of one epoch for one process, optionally skipping the first ones.

    Pass it as ``DataLoader(dataset, batch_sampler=...)``.

    Args:
        num_samples: size of the training set.
        batch_size: samples per batch in this process.
        seed, epoch: select the permutation (:func:`epoch_permutation`).
        rank, world_size: this process's shard (``perm[rank::world_size]``).
        start_batch: skip this many batches (resume inside an epoch).
        shuffle: False visits ``0, 1, 2, ...`` (still sharded and batched the same way).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0,
                 shuffle: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.num_batches = steps_per_epoch(num_samples, batch_size, world_size)
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch must be in [0, {self.num_batches}], got {start_batch}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch

    def _shard(self) -> list[int]:
        if self.shuffle:
            order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        else:
            order = torch.arange(self.num_samples)
        used = order[: self.num_batches * self.batch_size * self.world_size]
        return used[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        shard, b = self._shard(), self.batch_size
        for i in range(self.start_batch, self.num_batches):
            yield shard[i * b : (i + 1) * b]

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


class ShardSampler(Sampler[int]):
    """Evaluation order: every index once, rank r taking ``r, r+K, r+2K, ...`` (no padding).

    Unlike ``DistributedSampler`` it never repeats samples to even out the shards, so metric
    sums all-reduced over the K processes cover the split exactly once.
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
