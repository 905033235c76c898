"""Run keying and reuse, seeds aggregation: what every evaluation setting shares (DESIGN.md sec. 4).

**Runs are keyed by what determines their numbers.** A training run's folder is
``<root>/runs/<method>-<key>``, ``key`` the first :data:`KEY_LENGTH` hex digits of the SHA-256 of
the canonical JSON (sorted keys) of::

    {"config": resolved KitConfig (train.seed = the seed; fields that cannot change the
               numbers left out: NON_KEY_FIELDS; the backbone weights file replaced by the
               SHA-256 of its bytes),
     "method": ..., "seed": ..., "loss_tasks": [...], "val_tasks": [...],
     "init_from": key of the run whose best model it starts from (or null),
     "extra": setting-specific inputs (e.g. the UDA target domain and adversarial config),
     "kit_version": vtagml_core.__version__,
     "method_revision": the method's code revision, only when it has one
                        (vtagml_core.baselines.registry.METHOD_REVISIONS)}

The setting that asks for a run (its *role*: "single-task seg", "UDA adapted", ...) is not part of
the key, so a model is trained once and serves every setting that needs it: the single-task
models of the MTL table are the references of delta_m, the "1-task" row of the novel-domain
table and so on. :func:`train_or_reuse` returns the finished run when ``results.json`` and
``best/`` are there, resumes a run folder that holds a ``state.pt`` (a killed run continues
exactly, see :mod:`vtagml_core.train.trainer`), and trains otherwise.

**Seeds.** Every table cell is a :func:`summarize` of the per-seed values: mean, sample standard
deviation (0 for one seed), min, max, n and the values themselves.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from vtagml_core import __version__
from vtagml_core.config import to_dict
from vtagml_core.experiment import KitConfig
from vtagml_core.tasks import parse_tasks
from vtagml_core.train.state import BEST_DIR, LAST_DIR, RESULTS_FILE, RESUME_MAY_DIFFER, STATE_FILE

#: Hex digits of the SHA-256 kept in a run folder's name.
KEY_LENGTH: int = 12
#: Sub-folders of a settings root: trained runs, and the per-setting results.
RUNS_SUBDIR, RESULTS_SUBDIR = "runs", "setting_results"
#: A run folder's record of its key payload and of the roles that used it.
RUN_INFO_FILE: str = "run_key.json"
#: Sub-folder of a run with cached evaluations on other splits/domains.
EVALS_SUBDIR: str = "evals"
#: Config fields left out of the run key: they cannot change a run's numbers. ``test_count``
#: and ``pretext_count`` are not used by training (the test split is only evaluated; the
#: pretext split only pretrains the backbone, whose weights enter the key by their hash).
NON_KEY_FIELDS: frozenset[str] = RESUME_MAY_DIFFER | frozenset(
    {"train.device", "data.test_count", "data.pretext_count"})
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
        from vtagml_core.model.checkpoint import load_model

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
    """

    role: str
    cfg: KitConfig
    method: str
    loss_tasks: tuple[str, ...] | None = None
    val_tasks: tuple[str, ...] | None = None
    init_from: RunRecord | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    trainer_factory: Callable[..., Any] | None = None

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
        revision = method_revision(self.method)
        if revision:   # only methods whose code changed carry one: other keys stay as they were
            payload["method_revision"] = revision
        return payload

    def key(self) -> str:
        text = json.dumps(self.key_payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def run_dir(root: str | Path, spec: RunSpec) -> Path:
    """``<root>/runs/<method>-<key>`` of ``spec`` (see the module docstring)."""
    return Path(root) / RUNS_SUBDIR / f"{spec.method}-{spec.key()}"


def is_complete(folder: Path) -> bool:
    """A finished run: ``results.json`` and ``best/`` are both there."""
    return (folder / RESULTS_FILE).is_file() and (folder / BEST_DIR).is_dir()


def _record_role(folder: Path, spec: RunSpec) -> None:
    path = folder / RUN_INFO_FILE
    info = json.loads(path.read_text()) if path.is_file() else {"key": spec.key(),
                                                              "payload": spec.key_payload(), "roles": []}
    if spec.role not in info["roles"]:
        info["roles"].append(spec.role)
        path.write_text(json.dumps(info, indent=2) + "\n")


def _datasets(spec: RunSpec) -> dict[str, Any]:
    """Validation set restricted to ``val_tasks`` (None: the trainer's default splits)."""
    if spec.val_tasks is None:
        return {}
    from vtagml_core.data.dataset import SyntheticDataset

    d = spec.cfg.data
    return {"val_set": SyntheticDataset(d.domain, "val", spec.val_tasks, d.val_count, size=d.size,
                                        seed=d.seed, root=Path(d.cache_root) if d.cache_root else None,
                                        progress=spec.cfg.train.progress)}


def train_or_reuse(spec: RunSpec, root: str | Path, log: Callable[[str], None] = print) -> RunRecord:
    """The finished run of ``spec`` under ``root``: reused, resumed or trained (module docstring).

    Raises:
        CheckpointError: the run folder holds checkpoints but no ``state.pt`` (it cannot be
            resumed; the message says to delete the folder).
    """
    from vtagml_core.train.state import CheckpointError
    from vtagml_core.train.trainer import Trainer

    folder = run_dir(root, spec)
    seconds, trained = 0.0, False
    if is_complete(folder):
        log(f"  reuse  {spec.role} (seed {spec.seed}): {folder}")
    else:
        resume = (folder / STATE_FILE).is_file()
        if not resume and ((folder / LAST_DIR).exists() or (folder / BEST_DIR).exists()):
            raise CheckpointError(f"{folder} holds model folders but no {STATE_FILE}, so it can be "
                                  "neither reused nor resumed; delete the folder and run again")
        log(f"  {'resume' if resume else 'train'} {spec.role} (seed {spec.seed}): {folder}")
        factory = spec.trainer_factory or Trainer
        t0 = time.perf_counter()
        trainer = factory(spec.cfg, folder, method=spec.method, loss_tasks=spec.loss_tasks,
                          init_from=spec.init_from.best_dir if spec.init_from else None,
                          resume=resume, **_datasets(spec))
        trainer.fit()
        seconds, trained = time.perf_counter() - t0, True
        log(f"         done in {seconds:.1f} s")
    _record_role(folder, spec)
    results = json.loads((folder / RESULTS_FILE).read_text())
    return RunRecord(spec.key(), folder, spec.method, spec.seed, spec.cfg.data.domain, results,
                     trained, seconds)


# --------------------------------------------------------------------------- evaluation


def eval_name(domain: str, split: str, count: int, size: int, data_seed: int,
              tasks: Sequence[str]) -> str:
    """File stem of a cached evaluation: which split of which domain, which tasks."""
    return f"{domain}-{split}-n{count}-{size}px-s{data_seed}-{'_'.join(tasks)}"


def evaluate_run(record: RunRecord, cfg: KitConfig, domain: str, split: str = "test",
                 tasks: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of ``record``'s best model on ``domain``'s ``split`` (cached in the run folder).

    The split's scene count is ``cfg.data.<split>_count``; size and data seed are ``cfg.data``'s.
    """
    from vtagml_core.data.dataset import SyntheticDataset
    from vtagml_core.eval.evaluate import evaluate
    from vtagml_core.train.distributed import resolve_device

    d = cfg.data
    counts = {"train": d.train_count, "val": d.val_count, "test": d.test_count}
    if split not in counts:
        raise ValueError(f"split must be one of {', '.join(counts)}, got {split!r}")
    tasks = parse_tasks(tasks) if tasks is not None else tuple(record.results["tasks"])
    path = record.dir / EVALS_SUBDIR / f"{eval_name(domain, split, counts[split], d.size, d.seed, tasks)}.json"
    if path.is_file():
        return json.loads(path.read_text())["metrics"]
    device = resolve_device(cfg.train.device)
    ds = SyntheticDataset(domain, split, tasks, counts[split], size=d.size, seed=d.seed,
                          root=Path(d.cache_root) if d.cache_root else None, progress=cfg.train.progress)
    loader = DataLoader(ds, batch_size=d.batch_size, generator=torch.Generator())
    model = record.model(device)
    metrics = evaluate(model, loader, tasks, model.num_classes, device)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"domain": domain, "split": split, "count": counts[split],
                                "size": d.size, "tasks": list(tasks), "metrics": metrics}, indent=2))
    return metrics


# --------------------------------------------------------------------------- seeds


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "min", "max", "n", "values"}`` of per-seed values (std: sample std, 0 for n=1).

    Raises:
        ValueError: no values.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize needs at least one value (one per seed)")
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": vals}


def aggregate_metrics(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """``{task: {metric: summarize(values over seeds)}}`` for the metrics every seed has."""
    if not per_seed:
        raise ValueError("aggregate_metrics needs the metrics of at least one seed")
    out: dict[str, dict[str, dict]] = {}
    for task, metrics in per_seed[0].items():
        for name in metrics:
            if all(name in m.get(task, {}) for m in per_seed):
                out.setdefault(task, {})[name] = summarize([m[task][name] for m in per_seed])
    return out


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """``"0,1,2"`` (or a list) -> ``[0, 1, 2]``; duplicates and negatives are refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip() != ""]
    except ValueError as err:
        raise ValueError(f"seeds must be comma-separated integers like 0,1,2, got {text!r}") from err
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers like 0,1,2, got {text!r}")
    return seeds


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


__all__ = ["EVALS_SUBDIR", "KEY_LENGTH", "NON_KEY_FIELDS", "RESULTS_SUBDIR", "RUNS_SUBDIR",
           "RunRecord", "RunSpec", "aggregate_metrics", "evaluate_run", "file_digest",
           "is_complete", "key_config", "parse_seeds", "run_dir", "summarize", "train_or_reuse",
           "with_changes"]
