"""The trainer: epochs of training steps, validation, checkpoints and exact resume.

One object runs a whole training (docs/method.md, "Training": Adam on the adapters,
decoders and heads, warm-up then cosine learning rate; section 8: atomic safetensors/JSON
files, JSON-lines metrics, ``torchrun`` for several GPUs, bf16 autocast on CUDA)::

    result = Trainer(load_kit_config(preset="quick"), Path("runs/train/demo")).fit()
    result.best_metrics["seg"]["mIoU"]

Every step follows the order :mod:`vtagml_core.train.step` documents: forward (per-task
gradients tracked for TROA) -> losses -> stop if any is NaN/inf -> backward -> TROA update of
omega -> optimizer step -> scheduler step. After every epoch the model is evaluated on the
validation split and checkpointed. Files in ``out_dir``:

=================  ====================================================================
``config.json``    the resolved :class:`~vtagml_core.train.config.KitConfig`, method, loss tasks
``log.jsonl``      one record per step and per epoch (:mod:`vtagml_core.train.logging`)
``last/``          model after the latest checkpoint (safetensors + JSON config)
``best/``          model of the best validation epoch (rule: :func:`.results.selection_score`)
``state.pt``       everything needed to resume exactly (:mod:`vtagml_core.train.state`)
``results.json``   best/last metrics, training seconds per epoch, parameter report
=================  ====================================================================

**Resume.** With ``resume=True`` the trainer reloads ``state.pt`` (weights, Adam moments, lr
schedule, random generators, counters, TROA's omega and history), rebuilds the current
epoch's data order (and a real training split's augmentations, :mod:`vtagml_core.data.augment`)
from ``(seed, epoch)`` and skips the batches already done, so a run killed
at any moment finishes with exactly the numbers of an uninterrupted run on CPU. A state is
saved every ``train.save_every_steps`` steps and at every epoch end.

**Subsets of tasks in the loss** (zero-shot task transfer, paper Sec. 4.2, Table 3): ``loss_tasks``
names the labelled tasks; the model keeps all its heads, only those tasks enter the loss.
TROA's update compares every task's gradient with every other's, so it needs all tasks'
gradients: with only some tasks in the loss the TROA update is skipped (omega keeps what it
learned before, e.g. on the source domain) and the per-task streams are not tracked.

**Extension points.** Subclasses (the UDA setting adds adversarial terms) override
:meth:`Trainer.training_step` or :meth:`Trainer.compute_losses`. Methods with their own loss
terms define ``extra_losses(outputs, batch) -> {name: tensor}`` (added to the total) and/or
``weight_losses(per_task) -> total`` (replaces the lambda-weighted sum), as in
:mod:`vtagml_core.baselines.common`.

**Where the rest lives.** The setup before the first step (config, data, loss, balancer):
:mod:`.run_setup`, with what each loss balancer may not be combined with. How a step's losses
become the total and its gradients (``compute_losses``, Algorithm 1's weighted objective, the
balancer's backward): :mod:`.objective`. The batches a run reads: :mod:`.batches`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vtagml_core.config import to_dict
from vtagml_core.metrics.multitask import MultiTaskMetrics
from vtagml_core.train.config import KitConfig
from vtagml_core.baselines.factory import load_model
from vtagml_core.model.checkpoint import save_model
from vtagml_core.runtime import seed_everything
from vtagml_core.tasks import parse_tasks

from .batches import RunBatches
from .distributed import (average_over_ranks, barrier, init_distributed, reduce_metrics, shutdown,
                          troa_update, wrap_model)
from .logging import LOG_FILE, JsonlLogger, truncate_log, write_json
from .objective import StepObjective
from .results import FitResult, selection_score
from .schedule import build_scheduler, steps_per_epoch
from .run_lock import RunLock
from .run_setup import (build_datasets, build_run_balancer, build_task_loss, feature_cache_allowed,
                        open_real_data, prepare_run_config)
from .state import (BEST_DIR, LAST_DIR, RESULTS_FILE, RUN_CONFIG_FILE, STATE_FILE, Progress, apply_state,
                    collect_state, open_run_folder, run_folder_errors, save_training_state,
                    restore_rng_state)
from .step import move_batch, train_step

__all__ = ["BEST_DIR", "LAST_DIR", "RESULTS_FILE", "RUN_CONFIG_FILE", "STATE_FILE", "FitResult",
           "Trainer", "selection_score"]

#: Key of the balancer's weights and running statistics inside ``state.pt``.
BALANCER_STATE_KEY: str = "balancer"

class Trainer(RunBatches, StepObjective):
    """Train one method on one training set, validating and checkpointing every epoch.

    Args:
        cfg: the kit config (data, model, train).
        out_dir: run folder (created; see the module docstring for its files).
        method: a name of :data:`vtagml_core.baselines.registry.METHODS`.
        train_set, val_set: datasets following the kit's data contract; default: the
            ``train``/``val`` splits of ``cfg.data.domain`` from the synthetic benchmark.
        loss_tasks: tasks whose labels enter the loss (default: all the model's tasks).
        init_from: a saved model folder to start from (e.g. the source-domain model).
        resume: continue the run saved in ``out_dir`` (see the module docstring).
        log: where warnings about the run folder go (a fallback state, a lock taken over).
        backbone_store: a run store's ``backbones/`` folder: the saved models keep the frozen
            backbone there once (content-addressed) instead of a copy per folder
            (:func:`vtagml_core.model.checkpoint.save_model`); None: self-contained folders.

    Raises:
        CheckpointError: resuming with no readable training state, or starting a new run in a
            folder that already holds one (both name the file and advice that works).
        RunFolderBusy: another live process holds the run folder (names its PID).
        RunFolderError: (from :meth:`fit` too) the run folder cannot be written: names the path
            and what to do; everything saved before is intact and ``resume`` continues it.
    """

    def __init__(self, cfg: KitConfig, out_dir: str | Path, method: str = "vtagml",
                 train_set: Dataset | None = None, val_set: Dataset | None = None,
                 loss_tasks: str | Iterable[str] | None = None, init_from: str | Path | None = None,
                 resume: bool = False, log: Callable[[str], None] = print,
                 backbone_store: str | Path | None = None) -> None:
        from vtagml_core.baselines.registry import build_model

        # Fitted to the data, backbone weights resolved (:func:`.run_setup.prepare_run_config`).
        self.cfg = cfg = prepare_run_config(cfg, init_from, log)
        self.out_dir, self.method, self.log = Path(out_dir), method, log
        self.backbone_store = backbone_store
        self.ctx = init_distributed(cfg.train.device)
        self.device = self.ctx.device
        seed_everything(cfg.train.seed)
        if init_from is not None:
            model = load_model(init_from, config=cfg.model, method=method)
        else:
            model = build_model(method, cfg.model)
        self.model = model.to(self.device)
        self.tasks: tuple[str, ...] = tuple(model.tasks)
        self.loss_tasks = parse_tasks(loss_tasks) if loss_tasks is not None else self.tasks
        if not set(self.loss_tasks) <= set(self.tasks):
            raise ValueError(f"loss_tasks {self.loss_tasks} must be among the model's tasks {self.tasks}")
        all_tasks = set(self.loss_tasks) == set(self.tasks)
        self.track_troa = bool(model.tracks_task_grads) and all_tasks
        if not cfg.data.is_synthetic:
            train_set, val_set = open_real_data(cfg.data, train_set, val_set, self.loss_tasks,
                                                self.tasks)
        # One writer per run folder, for the whole run (released when fit() ends).
        self.lock = RunLock(self.out_dir, log).acquire() if self.ctx.is_main else None
        try:
            with run_folder_errors(self.out_dir):
                self._open_run(resume, train_set, val_set, all_tasks)
        except BaseException:
            self.release_lock()
            raise

    def _open_run(self, resume: bool, train_set: Dataset | None, val_set: Dataset | None,
                  all_tasks: bool) -> None:
        """Claim or check the run folder, build data, loss, optimizer; restore a resumed state."""
        cfg, model = self.cfg, self.model
        # Fails fast, before any data is rendered or cached; never deletes or overwrites anything.
        state = open_run_folder(self.out_dir, self._run_config(), resume, self.ctx.is_main, self.log)
        self.resumed_state: dict | None = state
        if self.ctx.is_main and not resume:
            (self.out_dir / LOG_FILE).write_text("")  # only a run without checkpoints had one
        self.train_set, self.val_set = build_datasets(
            cfg.data, self.ctx, self.ctx.is_main and cfg.train.progress, train_set, val_set,
            self.loss_tasks, self.tasks)
        self.eval_tasks = tuple(t for t in self.tasks if t in getattr(self.val_set, "tasks", self.tasks))
        self.loss_fn = build_task_loss(cfg.train, self.loss_tasks, self.train_set,
                                       model.num_classes).to(self.device)
        self.balancer = build_run_balancer(cfg.train, self.loss_tasks, model, self.method,
                                           self.ctx.distributed).to(self.device)
        self.use_feature_cache = feature_cache_allowed(cfg.train, model, self.train_set, self.val_set)
        self.train_data, self.val_data = self._cached(self.train_set), self._cached(self.val_set)
        tc = cfg.train
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        # Learned loss weights (uncertainty's s_t) train with the model, by the same Adam.
        self.optimizer = torch.optim.Adam([*self.trainable, *self.balancer.parameters()], lr=tc.lr)
        self.steps_per_epoch = steps_per_epoch(len(self.train_set), cfg.data.batch_size,
                                               self.ctx.world_size)
        full = tc.epochs * self.steps_per_epoch
        self.total_steps = min(full, tc.max_steps) if tc.max_steps else full
        self.scheduler = build_scheduler(self.optimizer, tc.warmup_steps, self.total_steps,
                                         tc.min_lr_ratio)
        self.ddp_model = wrap_model(model, self.ctx, find_unused_parameters=not all_tasks)
        self.logger = JsonlLogger(self.out_dir / LOG_FILE, enabled=self.ctx.is_main)
        # Counters, best score and history (restored on resume): :class:`.state.Progress`.
        self.progress = Progress()
        self._rng_to_restore: dict | None = None
        if state is not None:
            self._rng_to_restore = apply_state(state, self.out_dir / STATE_FILE, model,
                                               self.optimizer, self.scheduler, self.progress,
                                               self.ctx.world_size)
            if BALANCER_STATE_KEY in state:
                self.balancer.load_state_dict(state[BALANCER_STATE_KEY])
            if self.ctx.is_main:
                truncate_log(self.out_dir / LOG_FILE, self.progress.global_step, self.progress.epoch)
        barrier(self.ctx)

    # ------------------------------------------------------------------ one step
    def training_step(self, batch: dict) -> dict[str, Any]:
        """Forward, losses, NaN/inf guard, backward, TROA update, optimizer step.

        Returns ``{"loss": float, "losses": {name: float}, "similarity": (N, N) or None}``,
        losses averaged over processes.

        Raises:
            FloatingPointError: a loss is NaN/inf (names it) before any weight changed.
        """
        batch = move_batch(batch, self.device)
        result = train_step(self.model, batch, self.compute_losses, self.optimizer,
                            forward=self.ddp_model, features=self.features(batch),
                            track_task_grads=self.track_troa, autocast=self.autocast(),
                            mean_over_ranks=lambda v: average_over_ranks(v, self.ctx),
                            backward=self._backward,
                            update_affinity=lambda model: troa_update(model, self.ctx))
        return {"loss": result.loss, "losses": result.task_losses, "similarity": result.similarity}

    def _guarded_step(self, batch: dict) -> dict[str, Any]:
        try:
            return self.training_step(batch)
        except torch.cuda.OutOfMemoryError as err:
            raise torch.cuda.OutOfMemoryError(self._oom_message("a training step")) from err

    def _oom_message(self, where: str) -> str:
        b = self.cfg.data.batch_size
        return (f"out of GPU memory in {where} at batch size {b} per process "
                f"(data.batch_size={b}); lower it, e.g. --set data.batch_size={max(1, b // 2)}, "
                "or train at a smaller image size")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, loader: Iterable[dict] | None = None) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` over ``loader`` (default: the validation split).

        Under DDP each rank scores its shard and the metric sums are all-reduced, so every rank
        returns the metrics of the whole split.
        """
        loader = self.val_loader() if loader is None else loader
        metrics = MultiTaskMetrics(self.eval_tasks, self.model.num_classes,
                                   edge_max_dist=self.cfg.data.info().edge_max_dist)
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in loader:
                batch = move_batch(batch, self.device)
                with self.autocast():
                    outputs = self.model(batch["image"], features=self.features(batch))
                metrics.update({t: v.float() for t, v in outputs.items()}, batch)
        except torch.cuda.OutOfMemoryError as err:
            raise torch.cuda.OutOfMemoryError(self._oom_message("evaluation")) from err
        finally:
            self.model.train(was_training)
        reduce_metrics(metrics, self.ctx)
        return metrics.compute()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> FitResult:
        """Train to ``train.epochs`` (or ``train.max_steps``), return the best and last metrics."""
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        self.resumed_state = None  # subclasses read their parts in __init__; free the copy
        show = self.ctx.is_main and self.cfg.train.progress
        self.model.train()
        try:
            with run_folder_errors(self.out_dir):
                while (self.progress.epoch < self.cfg.train.epochs
                       and self.progress.global_step < self.total_steps):
                    self._train_epoch(show)
                    self._end_epoch()
                result = self._finish()
        finally:
            self.release_lock()
        shutdown(self.ctx)
        return result

    def release_lock(self) -> None:
        """Give the run folder back (fit() does it when it ends, however it ends)."""
        if self.lock is not None:
            self.lock.release()

    def _train_epoch(self, show: bool) -> None:
        tc, epoch = self.cfg.train, self.progress.epoch
        loader = self.train_loader(epoch, self.progress.batch_in_epoch)
        bar = tqdm(total=self.steps_per_epoch, initial=self.progress.batch_in_epoch, disable=not show,
                   desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False)
        started = time.perf_counter() - self.progress.epoch_seconds_so_far
        for batch in loader:
            t0 = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]
            out = self._guarded_step(batch)
            self.scheduler.step()
            self.progress.global_step += 1
            self.progress.batch_in_epoch += 1
            self.progress.epoch_seconds_so_far = time.perf_counter() - started
            self.progress.epoch_loss_sum += out["loss"]
            record = {"kind": "step", "step": self.progress.global_step, "epoch": epoch + 1, "lr": lr,
                      "loss": out["loss"], "losses": out["losses"],
                      "seconds": time.perf_counter() - t0}
            if out["similarity"] is not None:  # TROA's gradient cosine of this step, (N, N)
                record["similarity"] = out["similarity"].tolist()
            self.logger.log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{out['loss']:.4f}")
            done = self.progress.global_step >= self.total_steps
            if done:
                break
            if (tc.save_every_steps and self.progress.global_step % tc.save_every_steps == 0
                    and self.progress.batch_in_epoch < self.steps_per_epoch):
                self.save_checkpoint()
        bar.close()

    def _end_epoch(self) -> None:
        t0 = time.perf_counter()
        val = self.evaluate()
        if self.progress.reference is None:
            self.progress.reference = val
        score = selection_score(val, self.progress.reference)
        improved = score > self.progress.best_score
        steps_done = self.progress.global_step - self.progress.epoch * self.steps_per_epoch
        record = {"kind": "epoch", "epoch": self.progress.epoch + 1, "step": self.progress.global_step,
                  "train_loss": self.progress.epoch_loss_sum / max(1, steps_done),
                  "val": val, "score": score, "best": improved,
                  "epoch_seconds": self.progress.epoch_seconds_so_far,
                  "val_seconds": time.perf_counter() - t0}
        self.logger.log(record)
        self.progress.history.append(record)
        if improved:
            self.progress.best_score, self.progress.best_epoch = score, self.progress.epoch + 1
            self._save_model(BEST_DIR, {"score": score, "val": val})
        self.balancer.end_epoch()
        self.progress.start_epoch()
        self.save_checkpoint()

    # ------------------------------------------------------------------ files
    def _save_model(self, name: str, meta: dict | None = None) -> None:
        if self.ctx.is_main:
            save_model(self.model, self.out_dir / name,
                       meta={"method": self.method, "epochs_done": self.progress.epoch,
                             "step": self.progress.global_step, **(meta or {})},
                       backbone_store=self.backbone_store)

    def save_checkpoint(self) -> None:
        """Write ``last/`` and then ``state.pt``, each atomically (rank 0 only).

        ``state.pt`` carries the weights too (:mod:`vtagml_core.train.state`), so a kill
        between the two writes still resumes from a consistent state; the state it replaces is
        kept as ``state.prev.pt``. Subclasses add their own parts through :meth:`extra_state`.
        """
        if self.ctx.is_main:
            self._save_model(LAST_DIR)
            state = collect_state(self.model, self.optimizer, self.scheduler, self.progress,
                                  self.ctx.world_size, self._run_config())
            state.update(self.extra_state())
            save_training_state(state, self.out_dir)

    def extra_state(self) -> dict[str, Any]:
        """What ``state.pt`` holds beyond the model, optimizer and progress: the balancer."""
        return {BALANCER_STATE_KEY: self.balancer.state_dict()}

    def _run_config(self) -> dict[str, Any]:
        return {"method": self.method, "loss_tasks": list(self.loss_tasks),
                "world_size": self.ctx.world_size, "config": to_dict(self.cfg)}

    def _finish(self) -> FitResult:
        """Write results.json (rank 0) and return the :class:`FitResult`."""
        best = next((r for r in self.progress.history if r["epoch"] == self.progress.best_epoch), None)
        last = self.progress.history[-1] if self.progress.history else None
        full = [r["epoch_seconds"] for r in self.progress.history
                if r["step"] == r["epoch"] * self.steps_per_epoch]
        if self.ctx.is_main:
            if not (self.out_dir / LAST_DIR).is_dir():  # set aside on resume: the state rebuilds it
                self._save_model(LAST_DIR)
            write_json(self.out_dir / RESULTS_FILE, {
                "method": self.method, "tasks": list(self.tasks), "loss_tasks": list(self.loss_tasks),
                "where": self.describe(),
                "best": {"epoch": self.progress.best_epoch, "score": self.progress.best_score,
                         "metrics": best["val"] if best else {}},
                "last": {"epoch": self.progress.epoch, "metrics": last["val"] if last else {}},
                "steps": self.progress.global_step, "epochs": self.progress.epoch,
                "train_seconds": sum(r["epoch_seconds"] for r in self.progress.history),
                "seconds_per_epoch": sum(full) / len(full) if full else None,
                "world_size": self.ctx.world_size, "device": str(self.device),
                "feature_cache": self.use_feature_cache,
                "parameters": self.model.parameter_report()})
        return FitResult(self.model, best["val"] if best else {}, last["val"] if last else {},
                         self.out_dir, list(self.progress.history))

    def describe(self) -> str:
        """Where the validation numbers come from: dataset, split size, resolution, backbone and
        its weights (``random init`` said plainly), seed and method."""
        bb = self.cfg.model.backbone
        name = getattr(self.val_set, "name", type(self.val_set).__name__)
        return (f"{name} val split ({len(self.val_set)} images), {self.cfg.data.size}x"
                f"{self.cfg.data.size}, backbone {bb.name} ({bb.describe_weights()}), seed "
                f"{self.cfg.train.seed}, method {self.method}")
