"""Distributed data parallel training: the same trainer under ``torchrun`` (docs/layout.md).

``torchrun --nproc_per_node=K -m vtagml_core train ...`` starts K processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`init_distributed` reads them and
joins the process group (``gloo`` on CPU, ``nccl`` on CUDA, one GPU per process). Without those
variables everything here degrades to a single process and no process group.

What each piece does under K processes:

- **Data**: every rank builds the same per-epoch permutation and takes every K-th index
  (:class:`vtagml_core.train.schedule.EpochBatchSampler`); the global batch of a step is
  ``K * data.batch_size``. Evaluation shards the split without padding and all-reduces the
  metric sums (:func:`reduce_metrics`), so every rank reports the metrics of the whole split.
- **Model**: wrapped in ``DistributedDataParallel``, which averages parameter gradients over
  ranks during ``backward()``. Buffers are not re-broadcast before every forward
  (``forward_sync_buffers=False``; ``broadcast_buffers=False`` in older torch): they (the
  frozen backbone's tables, TROA's omega) are identical on every rank by construction (same
  seed; omega is updated from all-reduced statistics, below), so re-broadcasting them every
  step would only cost time. ``find_unused_parameters`` is only switched on when some task heads take no part
  in the loss (fine-tuning with a subset of tasks labelled), because it costs an extra graph
  traversal every step.
- **TROA** (paper Sec. 3.2.1, Algorithm 1): task t's gradient with respect to the shared
  representation theta (the adapters' input taps) is per sample, so over the global batch it
  is the concatenation of every rank's part (each scaled by the same 1/K, which a cosine
  ignores). Dot products of concatenations are sums of per-rank dot products, so
  :func:`troa_update` all-reduces the ``(N, N)`` Gram matrix ``G = g g^T`` of the per-task
  gradients (N^2 numbers instead of the gradients themselves), and every rank runs the same
  mirror-descent step from the same cosines: omega stays identical everywhere.
- **Files**: only rank 0 writes logs and checkpoints (``DistContext.is_main``).

Single-process and K-process runs of the same global batch agree up to float summation order
when every task loss is a plain mean over samples with equal pixel counts per sample (here:
segmentation without class weights and without ignored pixels, edges). Losses normalised by
a count that differs between images (depth and normals over valid pixels, class-weighted
cross-entropy) are means over each rank's own pixels, then averaged over ranks, which is
not the mean over the global batch's pixels: the usual DDP behaviour.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vtagml_core.metrics.multitask import MultiTaskMetrics
from vtagml_core.model.troa import GRAD_NORM_EPS
from vtagml_core.runtime import resolve_device

#: Environment variables torchrun sets in every process.
ENV_RANK, ENV_LOCAL_RANK, ENV_WORLD_SIZE = "RANK", "LOCAL_RANK", "WORLD_SIZE"


@dataclass
class DistContext:
    """Where this process stands: rank, world size, device; single process when world_size == 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, shows progress bars and writes files."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment, or run as one process.

    An already initialised default process group (e.g. set up by a test with
    ``torch.multiprocessing.spawn``) is used as it is and left for its owner to destroy.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = int(os.environ.get(ENV_LOCAL_RANK, rank))
        owns = False
    else:
        world = int(os.environ.get(ENV_WORLD_SIZE, "1"))
        rank = int(os.environ.get(ENV_RANK, "0"))
        local = int(os.environ.get(ENV_LOCAL_RANK, "0"))
        owns = world > 1
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        if local >= torch.cuda.device_count():
            raise ValueError(f"process {rank} needs GPU {local} but only "
                             f"{torch.cuda.device_count()} are visible; start at most that many "
                             "processes per node (--nproc_per_node)")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return DistContext(rank, world, local, dev, owns)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Barrier, then leave the process group if :func:`init_distributed` created it."""
    if ctx.distributed:
        dist.barrier()
        if ctx.owns_group:
            dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, find_unused_parameters: bool) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # Newer torch names the switch forward_sync_buffers (broadcast_buffers is deprecated there).
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
               else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=ids,
                                   find_unused_parameters=find_unused_parameters, **no_sync)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def average_over_ranks(values: Tensor, ctx: DistContext) -> Tensor:
    """Mean of a tensor over ranks (e.g. the step's losses for the log); identity for one process."""
    if not ctx.distributed:
        return values
    out = values.detach().to(ctx.device, torch.float64).clone()
    dist.all_reduce(out)
    return out / ctx.world_size


def reduce_metrics(metrics: MultiTaskMetrics, ctx: DistContext) -> None:
    """Sum every metric accumulator over ranks, in place (see :mod:`vtagml_core.metrics.base`)."""
    if not ctx.distributed:
        return
    acc = {k: v.to(ctx.device) for k, v in metrics.accumulators().items()}
    for value in acc.values():
        dist.all_reduce(value)
    metrics.load_accumulators(acc)


def gram_factor(gram: Tensor) -> Tensor:
    """Rows ``R (N, N)`` with ``R R^T = gram``: stand-ins for gradients with that Gram matrix.

    From the eigendecomposition ``gram = V diag(l) V^T``: ``R = V diag(sqrt(l))`` (tiny negative
    eigenvalues from rounding are clamped to 0). A task whose squared gradient norm
    ``gram[t, t]`` is below ``GRAD_NORM_EPS**2`` gets an exactly zero row, so TROA's zero-gradient
    convention (:func:`vtagml_core.model.troa.gradient_cosine_similarity`) still applies.
    """
    gram = gram.double()
    gram = 0.5 * (gram + gram.T)
    eigvals, eigvecs = torch.linalg.eigh(gram)
    rows = eigvecs * eigvals.clamp_min(0.0).sqrt()
    zero = torch.diagonal(gram) < GRAD_NORM_EPS**2
    rows[zero] = 0.0
    return rows


def troa_update(model: nn.Module, ctx: DistContext) -> Tensor | None:
    """TROA step after ``backward()``, identical on every rank; returns ``sim (N, N)`` or None.

    One process: the model's own :meth:`update_affinity`. K processes: all-reduce the Gram
    matrix of the per-task gradients and update omega from it (module docstring).
    """
    if not ctx.distributed:
        return model.update_affinity()
    adapter = getattr(model, "adapter", None)
    if adapter is None or not hasattr(adapter, "task_gradients") or not hasattr(adapter, "troa"):
        raise RuntimeError(
            f"{type(model).__name__} tracks per-task gradients but has no VTAGML-style adapter "
            "(adapter.task_gradients, adapter.troa); distributed TROA needs both")
    if not adapter.troa.enabled:
        return None
    grads = adapter.task_gradients().double()
    gram = grads @ grads.T
    dist.all_reduce(gram)
    return adapter.troa.update(gram_factor(gram))
