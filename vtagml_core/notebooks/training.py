"""The short training run that the mechanism lessons (02 TROA, 03 TAA, 04 TSN) share.

TROA's affinity matrix, TAA's task-dependent bias and TSN's task scales only become
interesting once the model has trained: at initialisation omega is uniform and the FiLM maps
output zero, so every task looks the same. :func:`lesson_model` trains the preset's VTAGML
model for ``lesson.steps`` optimizer steps on the ``indoor`` domain with the kit's one trainer
(:class:`vtagml_core.train.trainer.Trainer`, whose every step is
:func:`vtagml_core.train.step.train_step`'s order: forward, losses, NaN guard, backward, TROA
update, optimizer step). The run is keyed and stored like every other run of the kit
(:func:`vtagml_core.experiments.runs.train_or_reuse` in the kit's run store), so notebook 02
trains it, 03 and 04 reuse it, and a rerun (or a class with an imported store) trains nothing.

Its ``log.jsonl`` records every step's losses and TROA's gradient cosine similarity; the
lessons read them back as a :class:`TrainingRecord`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtagml_core.baselines.factory import load_model
from vtagml_core.experiments.runs import RunRecord, RunSpec, default_store, train_or_reuse
from vtagml_core.train.logging import LOG_FILE, read_log
from vtagml_core.train.state import LAST_DIR

from .params import NotebookParams

#: Task set and domain of the lesson model (all four tasks of the paper's Fig. 4).
LESSON_TASKS: str = "S-D-N-E"
LESSON_DOMAIN: str = "indoor"
#: The run's role in the run store's records.
LESSON_ROLE: str = "lesson model"


@dataclass
class TrainingRecord:
    """What the lesson run measured, step by step (read from its ``log.jsonl``).

    Attributes:
        tasks: task order of the rows/columns of ``sims``.
        batch_size: images per step.
        seconds: wall time of the training steps.
        losses: one dict per step: ``{"total": ..., task: ...}``.
        sims: ``(S, N, N)`` TROA gradient cosine similarity of every step (Algorithm 1).
    """

    tasks: tuple[str, ...]
    batch_size: int
    seconds: float
    losses: list[dict[str, float]]
    sims: Tensor

    @property
    def steps(self) -> int:
        return len(self.losses)

    @classmethod
    def from_log(cls, records: list[dict], tasks: tuple[str, ...], batch_size: int) -> "TrainingRecord":
        """The step records of a trainer's ``log.jsonl``."""
        steps = [r for r in records if r.get("kind") == "step"]
        n = len(tasks)
        sims = [torch.tensor(r["similarity"], dtype=torch.float32) if "similarity" in r
                else torch.full((n, n), float("nan")) for r in steps]
        return cls(tuple(tasks), batch_size, float(sum(r["seconds"] for r in steps)),
                   [{"total": r["loss"], **r["losses"]} for r in steps],
                   torch.stack(sims) if sims else torch.zeros(0, n, n))


def lesson_spec(P: NotebookParams, tasks: str = LESSON_TASKS, domain: str = LESSON_DOMAIN) -> RunSpec:
    """The lesson run: the preset's config for ``tasks`` on ``domain``, ``lesson.steps`` steps.

    Enough epochs are allowed for ``lesson.steps`` optimizer steps; ``train.max_steps`` stops
    the run there (validation and checkpoints as in any run).
    """
    cfg = P.kit_config([f"model.tasks={tasks}", f"data.domain={domain}"])
    per_epoch = max(1, cfg.data.train_count // cfg.data.batch_size)
    cfg.train.max_steps = cfg.lesson.steps
    cfg.train.epochs = math.ceil(cfg.lesson.steps / per_epoch)
    return RunSpec(LESSON_ROLE, cfg.validate(), "vtagml", preset=P.preset)


def lesson_model(P: NotebookParams, tasks: str = LESSON_TASKS, domain: str = LESSON_DOMAIN,
                 log=print):
    """The preset's VTAGML model after the lesson run, and that run's record.

    Trained once per config key in the run store and reused afterwards (it says which).

    Returns:
        ``(model in eval mode on P.device, TrainingRecord)``.
    """
    spec = lesson_spec(P, tasks, domain)
    record: RunRecord = train_or_reuse(spec, default_store(), log)
    # The model after the last step (not the best epoch's): the lessons show what training did.
    model = load_model(record.dir / LAST_DIR, map_location=P.device).eval()
    steps = TrainingRecord.from_log(read_log(record.dir / LOG_FILE), tuple(model.tasks),
                                    spec.cfg.data.batch_size)
    return model, steps


__all__ = ["LESSON_DOMAIN", "LESSON_TASKS", "TrainingRecord", "lesson_model", "lesson_spec"]
