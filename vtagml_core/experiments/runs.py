"""The run store: trained runs, keyed by what determines their numbers; train or reuse.

**One store.** Every trained run of the kit lives in one folder, the run store: by default
``$VTAGML_RUNS``, else ``runs/`` under the kit's cache directory (``~/.cache/vtagml/runs``,
:func:`default_store`). The CLI (``train``, ``settings``, ``compare``, ``affinity``), ``make
reproduce``, the notebooks (headless or in JupyterLab) and the demo's checkpoint list all use
it, so a model trained by one is reused by the others: the same preset and seed resolve to the
same key wherever they come from (``tests/test_architecture.py``). ``python -m vtagml_core runs``
lists it (:mod:`vtagml_core.experiments.store_catalog`), exports and imports it
(:mod:`vtagml_core.experiments.store_archive`).

**Runs are keyed by what determines their numbers.** A training run's folder is
``<root>/runs/<method>-<key>``, ``key`` the first :data:`KEY_LENGTH` hex digits of the SHA-256 of
the canonical JSON (sorted keys) of::

    {"config": resolved KitConfig (train.seed = the seed; fields that cannot change the
               numbers left out: NON_KEY_FIELDS, and TASK_KEY_FIELDS of tasks the model does
               not have; the backbone weights file replaced by the SHA-256 of its bytes),
     "method": ..., "seed": ..., "loss_tasks": [...], "val_tasks": [...],
     "init_from": key of the run whose best model it starts from (or null),
     "extra": setting-specific inputs (e.g. the UDA target domain and adversarial config),
     "kit_version": vtagml_core.__version__,
     "data_generator": the synthetic renderer's version (data/cache.py GENERATOR_VERSION), only
                       from version 3 on (DataConfig.generator_stamp),
     "method_revision": the method's code revision, only when it has one
                        (vtagml_core.baselines.registry.METHOD_REVISIONS)}

The setting that asks for a run (its *role*: "single-task seg", "UDA adapted", ...) is not part of
the key, so a model is trained once and serves every setting that needs it: the single-task
models of the MTL table are the references of delta_m, the "1-task" row of the novel-domain
table and so on. :func:`train_or_reuse` returns the finished run when ``results.json`` and
``best/`` are there, resumes a run folder that holds a ``state.pt`` (a killed run continues
exactly, see :mod:`vtagml_core.train.trainer`), and trains otherwise.

Evaluating a run on another split lives in :mod:`vtagml_core.experiments.evaluate`, seed
statistics in :mod:`vtagml_core.experiments.seeds`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from vtagml_core import __version__
from vtagml_core.config import to_dict
from vtagml_core.train.config import KitConfig
from vtagml_core.data.config import build_dataset
from vtagml_core.model.checkpoint import BLOBS_DIR
from vtagml_core.tasks import parse_tasks
from vtagml_core.train.state import BEST_DIR, LAST_DIR, RESULTS_FILE, RESUME_MAY_DIFFER, STATE_FILE

#: Hex digits of the SHA-256 kept in a run folder's name.
KEY_LENGTH: int = 12
#: Sub-folders of a settings root: trained runs, and the per-setting results.
RESULTS_SUBDIR: str = "setting_results"
#: Environment variable naming the run store, and its folder under the cache root otherwise.
STORE_ENV, STORE_SUBDIR = "VTAGML_RUNS", "runs"
#: A run folder's record of its key payload and of the roles that used it.
RUN_INFO_FILE: str = "run_key.json"
#: Sub-folder of a run with cached evaluations on other splits/domains.
EVALS_SUBDIR: str = "evals"
#: Config fields left out of the run key: they cannot change a run's numbers. ``test_count``
#: and ``pretext_count`` are not used by training (the test split is only evaluated; the
#: pretext split only pretrains the backbone, whose weights enter the key by their hash).
NON_KEY_FIELDS: frozenset[str] = RESUME_MAY_DIFFER | frozenset(
    {"train.device", "data.test_count", "data.pretext_count"})
#: Config fields that only matter to one task, left out of the key of a model without that
#: task: a run without normals trains the same whatever ``train.normals_loss`` says. (Only the
#: fields added after runs existed are listed; ``depth_loss`` and ``edge_loss`` stay in every
#: key so that the runs stored before this rule keep theirs.)
TASK_KEY_FIELDS: dict[str, tuple[str, ...]] = {"normals": ("train.normals_loss",)}
#: Bytes read at a time while hashing a weights file.
_HASH_CHUNK: int = 1 << 20

_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (memoised by path, size and modification time)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: the run key hashes the backbone weights file, "
                                "so it must exist (pretrain it, or fix model.backbone.weights)")
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                h.update(chunk)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key, {})
    tree.pop(leaf, None)


def key_config(cfg: KitConfig, seed: int) -> dict:
    """The config part of the run key (see the module docstring)."""
    tree = to_dict(cfg)
    tree["train"]["seed"] = int(seed)
    for name in NON_KEY_FIELDS:
        _drop(tree, name)
    tasks = parse_tasks(cfg.model.tasks)
    for name in (n for task, names in TASK_KEY_FIELDS.items() if task not in tasks for n in names):
        _drop(tree, name)
    weights = tree["model"]["backbone"].get("weights")
    if weights:
        tree["model"]["backbone"]["weights"] = {"sha256": file_digest(weights)}
    return tree


@dataclass
class RunRecord:
    """A finished training run: where it is and what its ``results.json`` says.

    Attributes:
        key: the run key; ``dir`` is ``<root>/runs/<method>-<key>``.
        method, seed, domain: what was trained where.
        results: the trainer's ``results.json`` (best/last validation metrics, timings, params).
        trained_now: True when this call trained (or resumed) it, False when it was reused.
        seconds: wall time of the training in this call (0 when reused).
    """

    key: str
    dir: Path
    method: str
    seed: int
    domain: str
    results: dict
    trained_now: bool
    seconds: float
    _model: nn.Module | None = field(default=None, repr=False)

    @property
    def best_dir(self) -> Path:
        return self.dir / BEST_DIR

    @property
    def val_metrics(self) -> dict[str, dict[str, float]]:
        """Validation metrics of the best epoch (the model that every setting evaluates)."""
        return self.results["best"]["metrics"]

    def model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The best model, loaded once and kept (eval mode)."""
        from vtagml_core.baselines.factory import load_model

        if self._model is None:
            self._model = load_model(self.best_dir, map_location=device).eval()
        return self._model

    def release(self) -> None:
        """Forget the loaded model (frees its memory; :meth:`model` loads it again)."""
        self._model = None


@dataclass
class RunSpec:
    """One training run a setting needs.

    Attributes:
        role: what the setting calls it (for logs and the results JSON; not part of the key).
        cfg: the full kit config (``cfg.train.seed`` is the seed, ``cfg.data.domain`` the
            training domain).
        method: a registered method name.
        loss_tasks: labelled tasks of the training set (default: all the model's tasks).
        val_tasks: tasks scored on the validation split for model selection (default: all);
            settings that may not see a task's labels (zero-shot) restrict it.
        init_from: the run whose best model this one starts from.
        extra: further inputs that change the numbers (part of the key); a ``trainer_factory``
            must put all of its own inputs here.
        trainer_factory: builds the trainer (default :class:`~vtagml_core.train.trainer.Trainer`);
            called like it, e.g. the UDA setting's adversarial trainer.
        preset: the preset the config came from, recorded with the run for ``runs list`` (not
            part of the key: the config is).
    """

    role: str
    cfg: KitConfig
    method: str
    loss_tasks: tuple[str, ...] | None = None
    val_tasks: tuple[str, ...] | None = None
    init_from: RunRecord | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    trainer_factory: Callable[..., Any] | None = None
    preset: str | None = None

    @property
    def seed(self) -> int:
        return int(self.cfg.train.seed)

    def key_payload(self) -> dict:
        """Everything the run key hashes (module docstring)."""
        from vtagml_core.baselines.registry import method_revision

        tasks = parse_tasks(self.cfg.model.tasks)
        payload = {"config": key_config(self.cfg, self.seed), "method": self.method, "seed": self.seed,
                   "loss_tasks": list(self.loss_tasks or tasks), "val_tasks": list(self.val_tasks or tasks),
                   "init_from": self.init_from.key if self.init_from is not None else None,
                   "extra": json.loads(json.dumps(self.extra, sort_keys=True)),
                   "kit_version": __version__}
        payload.update(self.cfg.data.generator_stamp())  # a new renderer: new keys (none while v2)
        revision = method_revision(self.method)
        if revision:   # only methods whose code changed carry one: other keys stay as they were
            payload["method_revision"] = revision
        return payload

    def key(self) -> str:
        text = json.dumps(self.key_payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def default_store() -> Path:
    """The run store: ``$VTAGML_RUNS`` if set, else ``<cache root>/runs`` (module docstring)."""
    from vtagml_core.data.cache import default_cache_root

    env = os.environ.get(STORE_ENV)
    return Path(env).expanduser() if env else default_cache_root() / STORE_SUBDIR


def run_dir(store: str | Path, spec: RunSpec) -> Path:
    """``<store>/<method>-<key>`` of ``spec`` (see the module docstring)."""
    return Path(store) / f"{spec.method}-{spec.key()}"


def is_complete(folder: Path) -> bool:
    """A finished run: ``results.json`` and ``best/`` are both there."""
    return (folder / RESULTS_FILE).is_file() and (folder / BEST_DIR).is_dir()


def _record_role(folder: Path, spec: RunSpec) -> None:
    """Add the spec's role (and preset) to the run's ``run_key.json`` (key and payload first)."""
    path = folder / RUN_INFO_FILE
    info = json.loads(path.read_text()) if path.is_file() else {"key": spec.key(),
                                                              "payload": spec.key_payload(), "roles": []}
    changed = spec.role not in info["roles"]
    if changed:
        info["roles"].append(spec.role)
    if spec.preset and spec.preset not in info.setdefault("presets", []):
        info["presets"].append(spec.preset)
        changed = True
    if changed:
        path.write_text(json.dumps(info, indent=2) + "\n")


def _datasets(spec: RunSpec) -> dict[str, Any]:
    """Validation set restricted to ``val_tasks`` (None: the trainer's default splits)."""
    if spec.val_tasks is None:
        return {}
    return {"val_set": build_dataset(spec.cfg.data, "val", spec.val_tasks,
                                     progress=spec.cfg.train.progress)}


def train_or_reuse(spec: RunSpec, store: str | Path, log: Callable[[str], None] = print) -> RunRecord:
    """The finished run of ``spec`` in ``store``: reused, resumed or trained (module docstring).

    Says which: "found trained run <name>, reusing", or what it trains and about how long
    (the estimate: the run's optimizer steps at the seconds per step of the store's runs of the
    same method and image size, when there are any).

    Raises:
        CheckpointError: the run folder holds checkpoints but no ``state.pt`` (it cannot be
            resumed; the message says to delete the folder).
    """
    from vtagml_core.train.run_lock import RunLock
    from vtagml_core.train.state import CheckpointError
    from vtagml_core.train.trainer import Trainer

    folder = run_dir(store, spec)
    seconds, trained = 0.0, False
    # One writer per run: a second process that needs the same run waits for the first, then
    # reuses what it trained (RunLock is re-entrant, so the trainer takes it again inside).
    lock = RunLock(folder, log).acquire(wait=True)
    try:
        if is_complete(folder):
            log(f"  found trained run {folder.name} ({spec.role}, seed {spec.seed}), reusing")
        else:
            resume = (folder / STATE_FILE).is_file()
            if not resume and ((folder / LAST_DIR).exists() or (folder / BEST_DIR).exists()):
                raise CheckpointError(f"{folder} holds model folders but no {STATE_FILE}, so it can "
                                      "be neither reused nor resumed; delete the folder and run again")
            log(f"  {'resume' if resume else 'train'} {spec.role} (seed {spec.seed}): {folder}"
                f"{estimate_text(spec, store)}")
            factory = spec.trainer_factory or Trainer
            t0 = time.perf_counter()
            trainer = factory(spec.cfg, folder, method=spec.method, loss_tasks=spec.loss_tasks,
                              init_from=spec.init_from.best_dir if spec.init_from else None,
                              resume=resume, log=log, backbone_store=Path(store) / BLOBS_DIR,
                              **_datasets(spec))
            trainer.fit()
            seconds, trained = time.perf_counter() - t0, True
            log(f"         done in {seconds:.1f} s")
        _record_role(folder, spec)
    finally:
        lock.release()
    results = json.loads((folder / RESULTS_FILE).read_text())
    return RunRecord(spec.key(), folder, spec.method, spec.seed, spec.cfg.data.domain, results,
                     trained, seconds)


def with_changes(cfg: KitConfig, *, tasks: str | None = None, domain: str | None = None,
                 seed: int | None = None, epochs: int | None = None) -> KitConfig:
    """A validated copy of ``cfg`` with another task set, training domain, seed and/or epochs."""
    out = copy.deepcopy(cfg)
    if tasks is not None:
        out.model.tasks = tasks
    if domain is not None:
        out.data.domain = domain
    if seed is not None:
        out.train.seed = int(seed)
    if epochs is not None:
        out.train.epochs = int(epochs)
    return out.validate()


def run_steps(cfg: KitConfig) -> int:
    """Optimizer steps a run of ``cfg`` makes (one process): epochs x steps per epoch, capped."""
    per_epoch = max(1, cfg.data.train_count // cfg.data.batch_size)
    full = cfg.train.epochs * per_epoch
    return min(full, cfg.train.max_steps) if cfg.train.max_steps else full


def estimate_text(spec: RunSpec, store: str | Path) -> str:
    """``", about N min (M steps at S s/step, ...)"`` or ``""`` when nothing says how fast.

    The rate is the median seconds per optimizer step of the finished runs in ``store`` of the
    same method and image size (their ``results.json``): a measurement of this machine. Before
    there is any, it is the preset's ``train.reference_step_seconds`` (measured on the reference
    2-core CPU), said as such.
    """
    rates = []
    for results in Path(store).glob(f"{spec.method}-*/{RESULTS_FILE}"):
        try:
            data = json.loads(results.read_text())
            cfg = json.loads((results.parent / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            continue
        if data.get("steps") and cfg["data"]["size"] == spec.cfg.data.size:
            rates.append(data["train_seconds"] / data["steps"])
    steps = run_steps(spec.cfg)
    if rates:
        rate = sorted(rates)[len(rates) // 2]
        source = f"measured on {len(rates)} run(s) of this store"
    elif spec.cfg.train.reference_step_seconds:
        rate = spec.cfg.train.reference_step_seconds
        source = "the preset's rate on the reference 2-core CPU"
    else:
        return ""
    return f", about {steps * rate / 60:.1f} min ({steps} steps at {rate:.2f} s/step, {source})"


__all__ = ["KEY_LENGTH", "NON_KEY_FIELDS", "RESULTS_SUBDIR", "RUN_INFO_FILE", "STORE_ENV",
           "default_store", "estimate_text", "run_steps",
           "EVALS_SUBDIR", "RunRecord", "RunSpec", "file_digest", "is_complete", "key_config",
           "run_dir", "train_or_reuse", "with_changes"]
