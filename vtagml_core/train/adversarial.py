"""Output-level adversarial domain adaptation, one discriminator per task (paper Sec. 4.2, Table 4).

The paper adapts every model in its UDA table with "a simple multitask Domain Adaptation
solution based on output-level DA adversarial training [43]" (AdaptSegNet, Tsai et al., CVPR
2018). This module is that recipe for several tasks:

- **Discriminators.** For each task t a small fully-convolutional discriminator D_t
  (AdaptSegNet's: 4x4 convolutions of stride 2 with ``c, 2c, 4c, 8c`` channels and
  LeakyReLU(0.2), then a 4x4 convolution to one logit per patch) reads the task's output map,
  prepared by :func:`discriminator_input`: **softmax** of the segmentation logits (as in
  AdaptSegNet), **unit vectors** for normals (the head's raw vectors normalised, so D judges
  directions, not lengths), and the **raw** depth and edge outputs (depth in scene units, edge
  logits: the maps the losses see).
- **Generator (the multitask model).** Source batches are labelled, target batches unlabelled.
  Besides its supervised losses on the source batch the model minimises, per task,
  ``lambda_adv_t * BCE(D_t(target output), SOURCE_LABEL)``: it learns target outputs that the
  discriminator takes for source outputs (the discriminators' weights do not change here).
- **Discriminator step.** Then each D_t minimises ``BCE(D_t(source output), SOURCE_LABEL)/2 +
  BCE(D_t(target output), TARGET_LABEL)/2`` on the detached outputs, with its own Adam.

One training step runs **one forward of the source and target images together** (concatenated
along the batch; no layer of the kit mixes samples of a batch), so DDP sees a single forward per
backward. TROA's per-task gradients are those of each task's full objective: task t's
adversarial term reaches only task t's adapter stream, just like its supervised loss.

**Target order and reproducibility.** The target batch of optimizer step s is a pure function
of (seed, s): the target split is permuted once per pass (seed ``epoch_seed(seed, pass) +``
:data:`TARGET_SEED_OFFSET`) and step s takes the next batch. The discriminators are initialised
from their own seeded generator and their weights and Adam state are saved **inside**
``state.pt`` (one atomic file with the model's state), so a killed UDA run resumes exactly like
any other run (:mod:`vtagml_core.train.trainer`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from vtagml_core.config import to_dict
from vtagml_core.model.backbone import BackboneOutput
from vtagml_core.tasks import task_channels

from .distributed import average_over_ranks, troa_update
from .losses import check_finite
from .schedule import epoch_seed
from .step import move_batch
from .trainer import Trainer

#: Discriminator targets, AdaptSegNet's convention: 0 = source, 1 = target.
SOURCE_LABEL, TARGET_LABEL = 0.0, 1.0
#: Added to the per-pass seed of the target order (keeps it apart from the source order).
TARGET_SEED_OFFSET: int = 7919
#: Added to the run seed for the discriminators' initialisation.
DISC_SEED_OFFSET: int = 104729
#: Key of the adversarial part inside ``state.pt``.
STATE_KEY: str = "adversarial"


@dataclass
class AdversarialConfig:
    """UDA options (AdaptSegNet's values where it has them).

    Attributes:
        lambda_adv: weight of each task's adversarial term (AdaptSegNet single-level: 1e-3).
        task_lambdas: per-task overrides of ``lambda_adv``.
        disc_channels: width ``c`` of the first discriminator layer (AdaptSegNet: 64).
        disc_layers: stride-2 4x4 convolutions before the logit layer (AdaptSegNet: 4).
        disc_lr, disc_beta1, disc_beta2: the discriminators' Adam (AdaptSegNet: 1e-4, 0.9, 0.99).
        leaky_slope: LeakyReLU slope (AdaptSegNet: 0.2).
    """

    lambda_adv: float = 1e-3
    task_lambdas: dict[str, float] = field(default_factory=dict)
    disc_channels: int = 64
    disc_layers: int = 4
    disc_lr: float = 1e-4
    disc_beta1: float = 0.9
    disc_beta2: float = 0.99
    leaky_slope: float = 0.2

    def validate(self) -> "AdversarialConfig":
        if self.lambda_adv < 0 or any(v < 0 for v in self.task_lambdas.values()):
            raise ValueError(f"adversarial weights must be >= 0, got lambda_adv={self.lambda_adv}, "
                             f"task_lambdas={self.task_lambdas}")
        if self.disc_channels < 1 or self.disc_layers < 1 or self.disc_lr <= 0:
            raise ValueError("adversarial.disc_channels and disc_layers must be >= 1 and disc_lr > 0, "
                             f"got {self.disc_channels}, {self.disc_layers}, {self.disc_lr}")
        return self

    def weight(self, task: str) -> float:
        return float(self.task_lambdas.get(task, self.lambda_adv))


def discriminator_input(task: str, raw: Tensor) -> Tensor:
    """What D_t sees of a raw head output ``(B, K_t, H, W)`` (module docstring)."""
    if task == "seg":
        return raw.softmax(dim=1)
    if task == "normals":
        return F.normalize(raw, dim=1)
    return raw


class OutputDiscriminator(nn.Module):
    """AdaptSegNet's fully-convolutional discriminator: ``(B, K, H, W)`` -> logits ``(B, 1, h, w)``.

    ``layers`` 4x4 convolutions of stride 2 (channels ``c * 2**i``, LeakyReLU), then a 4x4
    stride-2 convolution to one logit per patch (``h = H / 2**(layers + 1)`` for H a multiple).
    """

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 4, slope: float = 0.2):
        super().__init__()
        mods: list[nn.Module] = []
        c_in = in_channels
        for i in range(layers):
            c_out = channels * 2 ** i
            mods += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(slope)]
            c_in = c_out
        mods.append(nn.Conv2d(c_in, 1, kernel_size=4, stride=2, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TaskDiscriminators(nn.Module):
    """One :class:`OutputDiscriminator` per task; ``forward({task: raw})`` -> ``{task: logits}``."""

    def __init__(self, tasks: tuple[str, ...], num_classes: int, cfg: AdversarialConfig):
        super().__init__()
        self.tasks = tuple(tasks)
        self.nets = nn.ModuleDict({
            t: OutputDiscriminator(task_channels(t, num_classes), cfg.disc_channels, cfg.disc_layers,
                                   cfg.leaky_slope) for t in self.tasks})

    def forward(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.nets[t](discriminator_input(t, outputs[t])) for t in self.tasks}


def _bce(logits: Tensor, label: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), label))


def generator_losses(discs: TaskDiscriminators, target_outputs: dict[str, Tensor],
                     cfg: AdversarialConfig) -> dict[str, Tensor]:
    """``{task: lambda_t * BCE(D_t(target output), SOURCE_LABEL)}``: fool the discriminators."""
    logits = discs(target_outputs)
    return {t: cfg.weight(t) * _bce(v, SOURCE_LABEL) for t, v in logits.items()}


def discriminator_losses(discs: TaskDiscriminators, source_outputs: dict[str, Tensor],
                         target_outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{task: (BCE(D_t(source), 0) + BCE(D_t(target), 1)) / 2}`` on detached outputs."""
    src = discs({t: v.detach() for t, v in source_outputs.items()})
    tgt = discs({t: v.detach() for t, v in target_outputs.items()})
    return {t: 0.5 * (_bce(src[t], SOURCE_LABEL) + _bce(tgt[t], TARGET_LABEL)) for t in discs.tasks}


def concat_features(a: BackboneOutput | None, b: BackboneOutput | None) -> BackboneOutput | None:
    """Cached features of two batches stacked along the batch (None when neither has any)."""
    if a is None or b is None:
        if a is not None or b is not None:
            raise ValueError("source and target batches must both carry cached features or neither")
        return None
    return BackboneOutput(taps=[torch.cat(p) for p in zip(a.taps, b.taps)],
                          stages=[torch.cat(p) for p in zip(a.stages, b.stages)])


class AdversarialTrainer(Trainer):
    """The kit's :class:`~vtagml_core.train.trainer.Trainer` plus output-level adversarial UDA.

    Args:
        cfg, out_dir, method, ...: as for :class:`Trainer` (the training set is the labelled
            source domain ``cfg.data.domain``).
        target_set: unlabelled target images (``SyntheticDataset(..., unlabelled=True)``), at
            least one global batch.
        adversarial: the UDA options.
    """

    def __init__(self, cfg, out_dir, *args: Any, target_set: Dataset,
                 adversarial: AdversarialConfig | None = None, **kwargs: Any) -> None:
        self.adv_cfg = (adversarial or AdversarialConfig()).validate()
        self.target_set = target_set  # read by _run_config during Trainer.__init__
        super().__init__(cfg, out_dir, *args, **kwargs)
        self.target_data = self._cached(target_set)
        self.target_batches = len(self.target_data) // (cfg.data.batch_size * self.ctx.world_size)
        if self.target_batches < 1:
            raise ValueError(f"the UDA target set has {len(self.target_data)} images, fewer than one "
                             f"global batch of {cfg.data.batch_size * self.ctx.world_size}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed + DISC_SEED_OFFSET)
            self.discriminators = TaskDiscriminators(self.tasks, self.model.num_classes, self.adv_cfg)
        self.discriminators.to(self.device)
        a = self.adv_cfg
        self.disc_optimizer = torch.optim.Adam(self.discriminators.parameters(), lr=a.disc_lr,
                                               betas=(a.disc_beta1, a.disc_beta2))
        if self.resumed_state is not None:  # resumed: the discriminators continue too
            state = self.resumed_state[STATE_KEY]
            self.discriminators.load_state_dict(state["discriminators"])
            self.disc_optimizer.load_state_dict(state["optimizer"])

    def _run_config(self) -> dict[str, Any]:
        target = self.target_set
        return {**super()._run_config(), "adversarial": to_dict(self.adv_cfg),
                "target": {"name": getattr(target, "name", type(target).__name__),
                           "count": len(target)}}

    def target_batch(self, step: int) -> dict:
        """The unlabelled target batch of optimizer step ``step`` (this process's shard)."""
        B, world = self.cfg.data.batch_size, self.ctx.world_size
        n_pass, i = divmod(step, self.target_batches)
        gen = torch.Generator().manual_seed(epoch_seed(self.cfg.train.seed, n_pass) + TARGET_SEED_OFFSET)
        order = torch.randperm(len(self.target_data), generator=gen)
        start = (i * world + self.ctx.rank) * B
        return default_collate([self.target_data[int(j)] for j in order[start:start + B]])

    def training_step(self, batch: dict) -> dict[str, Any]:
        """Supervised + adversarial generator step, then the discriminator step (module docstring)."""
        batch = move_batch(batch, self.device)
        target = move_batch(self.target_batch(self.progress.global_step), self.device)
        n = batch["image"].shape[0]
        images = torch.cat([batch["image"], target["image"]])
        features = concat_features(self.features(batch), self.features(target))
        with self.autocast():
            outputs = self.ddp_model(images, features=features, track_task_grads=self.track_troa)
            source_out = {t: o[:n] for t, o in outputs.items()}
            target_out = {t: o[n:] for t, o in outputs.items()}
            total, losses = self.compute_losses(source_out, batch)
            self.discriminators.requires_grad_(False)
            adv = generator_losses(self.discriminators, target_out, self.adv_cfg)
            self.discriminators.requires_grad_(True)
        for t, value in adv.items():
            total, losses[f"adv_{t}"] = total + value, value
        names = ["total", *losses]
        mean = average_over_ranks(torch.stack([total.detach().float(),
                                               *(v.detach().float() for v in losses.values())]), self.ctx)
        check_finite(dict(zip(names, mean)))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        sim = troa_update(self.model, self.ctx) if self.track_troa else None
        self.optimizer.step()
        disc = self._discriminator_step(source_out, target_out)
        values = mean.tolist()
        return {"loss": values[0], "losses": {**dict(zip(names[1:], values[1:])), **disc},
                "similarity": None if sim is None else sim.detach().cpu()}

    def _discriminator_step(self, source_out: dict[str, Tensor], target_out: dict[str, Tensor]) -> dict[str, float]:
        with self.autocast():
            losses = discriminator_losses(self.discriminators, source_out, target_out)
        names = [f"disc_{t}" for t in losses]
        mean = average_over_ranks(torch.stack([v.detach().float() for v in losses.values()]), self.ctx)
        check_finite(dict(zip(names, mean)))
        self.disc_optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        if self.ctx.distributed:  # the discriminators are not DDP-wrapped: average by hand
            for p in self.discriminators.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.ctx.world_size
        self.disc_optimizer.step()
        return dict(zip(names, mean.tolist()))

    def extra_state(self) -> dict[str, Any]:
        """The trainer's extra state plus the discriminators and their optimizer."""
        return {**super().extra_state(),
                STATE_KEY: {"discriminators": self.discriminators.state_dict(),
                            "optimizer": self.disc_optimizer.state_dict()}}


__all__ = ["AdversarialConfig", "AdversarialTrainer", "DISC_SEED_OFFSET", "OutputDiscriminator",
           "SOURCE_LABEL", "TARGET_LABEL", "TaskDiscriminators", "concat_features",
           "discriminator_input", "discriminator_losses", "generator_losses"]
