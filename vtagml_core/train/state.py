"""The training state for exact resume: one atomic ``state.pt`` (docs/layout.md).

``state.pt`` holds everything that changes while training, so that a resumed run continues as
if it had never stopped:

- ``model``: every weight and buffer that can change (the frozen backbone is left out: it is
  rebuilt from the config and never moves); TROA's ``omega`` and update counter are buffers,
  so they are in here, and TROA's history is stored next to them (``troa_history``);
- ``optimizer`` and ``scheduler`` state dicts (Adam moments, step counts, current lr);
- ``rng``: the torch (CPU and CUDA), numpy and python generator states, as tensors. The data
  order needs no generator state: each epoch's permutation is a function of (seed, epoch)
  (:mod:`vtagml_core.train.schedule`);
- counters (``epoch``, ``batch_in_epoch``, ``global_step``), the best validation score so
  far, the reference metrics of the selection rule and the per-epoch history, as plain
  numbers, strings, lists and dicts.

The model weights are stored here although ``last/`` holds them too: ``state.pt`` is written in
one atomic rename, so it can never pair the weights of one step with the optimizer state of
another, whatever moment a run is killed at.

The files (names, atomic writes, checked reads, :class:`CheckpointError`) live in
:mod:`.state_files`; claiming or checking a run folder before anything is trained
(:func:`open_run_folder`, :class:`RunFolderError`) in :mod:`.run_folder`. Both are re-exported
here.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vtagml_core.model.checkpoint import frozen_backbone_keys

from .run_folder import (  # noqa: F401  (re-exported: the run folder's checks, from their module)
    RESUME_MAY_DIFFER, RunFolderError, check_same_run_config, config_differences,
    load_resume_state, open_run_folder, refuse_existing_run, remove_orphan_temporaries,
    run_folder_errors)
from .state_files import (  # noqa: F401  (re-exported: the state's files, from their module)
    BEST_DIR, LAST_DIR, MODEL_FOLDER_FILES, PREVIOUS_STATE_FILE, RESULTS_FILE, RUN_CONFIG_FILE,
    STATE_FILE, STATE_VERSION, TEMP_PATTERN, CheckpointError, _advice, atomic_torch_save,
    atomic_write_text, check_model_folder, load_training_state, save_training_state)

# --------------------------------------------------------------------------- model entries


def backbone_frozen(model: nn.Module) -> bool:
    """Whether ``model.backbone`` never trains (its ``frozen`` flag, else no parameter needs grad)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return False
    flag = getattr(backbone, "frozen", None)
    if flag is not None:
        return bool(flag)
    return not any(p.requires_grad for p in backbone.parameters())


def mutable_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict without the frozen backbone (CPU copies).

    Only what cannot change is left out: a trainable tensor inside the backbone (a LoRA
    factor, a per-task norm) stays in, whatever its prefix.
    """
    frozen = frozen_backbone_keys(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_mutable_model_state(model: nn.Module, tensors: dict[str, Tensor], source: Path) -> None:
    """Inverse of :func:`mutable_model_state`; anything else missing or extra is an error."""
    result = model.load_state_dict(tensors, strict=False)
    frozen = frozen_backbone_keys(model)
    missing = [k for k in result.missing_keys if k not in frozen]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source} does not fit this model (missing {missing[:8]}, unexpected "
            f"{list(result.unexpected_keys)[:8]}): it was made by another model config. "
            f"{_advice(source)}")


# --------------------------------------------------------------------------- random generators


def capture_rng_state() -> dict[str, Tensor]:
    """Every global random generator's state as tensors (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    if kind != "MT19937":
        raise RuntimeError(f"unexpected numpy generator {kind!r}; only MT19937 is saved")
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if py_gauss is None else py_gauss],
                                     dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Tensor]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_meta"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos,
                         has_gauss, float(state["numpy_gauss"])))
    py = state["python"].tolist()
    gauss = float(state["python_gauss"][0])
    random.setstate((py[0], tuple(py[1:]), None if np.isnan(gauss) else gauss))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)


# --------------------------------------------------------------------------- the trainer's state


def troa_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{module path: TROA}`` inside ``model`` (their histories are not buffers: saved apart)."""
    from vtagml_core.model.troa import TROA

    return {path: m for path, m in model.named_modules() if isinstance(m, TROA)}


@dataclass
class Progress:
    """Where a run stands: counters, the best validation score so far and the epoch history.

    The trainer owns one and advances it; :func:`collect_state` / :func:`apply_state` store it
    in ``state.pt`` through :meth:`state_dict` / :meth:`load_state_dict` (plain numbers and a
    JSON string, so ``torch.load(weights_only=True)`` reads it back).

    Attributes:
        epoch: epochs fully done.
        batch_in_epoch: batches done in the current epoch.
        global_step: optimizer steps done.
        epoch_seconds_so_far, epoch_loss_sum: the current epoch's training time and loss sum.
        best_score, best_epoch: the selection rule's best validation score and its epoch.
        reference: the first validation metrics (the selection rule's reference).
        history: one record per finished epoch.
    """

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    epoch_seconds_so_far: float = 0.0
    epoch_loss_sum: float = 0.0
    best_score: float = -math.inf
    best_epoch: int = 0
    reference: dict | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def start_epoch(self) -> None:
        """The counters of a new epoch (after the previous one ended)."""
        self.epoch += 1
        self.batch_in_epoch, self.epoch_seconds_so_far, self.epoch_loss_sum = 0, 0.0, 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"counters": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                             "global_step": self.global_step, "best_epoch": self.best_epoch},
                "floats": {"best_score": self.best_score,
                           "epoch_seconds_so_far": self.epoch_seconds_so_far,
                           "epoch_loss_sum": self.epoch_loss_sum},
                "json": json.dumps({"reference": self.reference, "history": self.history})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        counters, floats = state["counters"], state["floats"]
        self.epoch, self.batch_in_epoch = counters["epoch"], counters["batch_in_epoch"]
        self.global_step, self.best_epoch = counters["global_step"], counters["best_epoch"]
        self.best_score = floats["best_score"]
        self.epoch_seconds_so_far = floats["epoch_seconds_so_far"]
        self.epoch_loss_sum = floats["epoch_loss_sum"]
        extra = json.loads(state["json"])
        self.reference, self.history = extra["reference"], extra["history"]


def collect_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                  progress: Progress, world_size: int, run_config: dict | None = None) -> dict:
    """Everything a run needs to resume exactly (module docstring)."""
    histories = {}
    for path, troa in troa_modules(model).items():
        steps, mats = troa.history_tensor()
        histories[path] = {"steps": steps, "mats": mats}
    saved = progress.state_dict()
    saved["counters"]["world_size"] = world_size
    return {
        "version": STATE_VERSION,
        "model": mutable_model_state(model),
        "troa_history": histories,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        **saved,
        # A copy of config.json, so a run whose config.json was lost can still resume.
        **({"run_config": json.dumps(run_config, indent=2) + "\n"} if run_config is not None else {}),
    }


def apply_state(state: dict, source: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, progress: Progress, world_size: int) -> dict[str, Tensor]:
    """Inverse of :func:`collect_state`; returns the random generators' states, which the
    caller restores when training starts (so nothing between now and then draws from them)."""
    counters = state["counters"]
    if counters["world_size"] != world_size:
        raise CheckpointError(
            f"{source} was saved by a run of {counters['world_size']} process(es), this one has "
            f"{world_size}: resume with the same number of processes (the data order and global "
            "batch depend on it)")
    load_mutable_model_state(model, state["model"], source)
    troas = troa_modules(model)
    for path, hist in state["troa_history"].items():
        if path in troas and hist["steps"].numel():
            troas[path].load_history(hist["steps"], hist["mats"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress.load_state_dict(state)
    return state["rng"]
