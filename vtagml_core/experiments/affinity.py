"""Do the task affinities mean something? Three affinity measures against a ground truth.

TROA's omega is read as "how much task n helps task t" (paper Sec. 3.2.1, Fig. 4). This module
asks whether it, or anything cheaper or more direct, predicts which tasks actually help each
other when trained together (project issue 17). Four pieces:

(a) **TROA** (from a run's ``log.jsonl``: the trainer logs the ``(N, N)`` gradient cosine of
    every step): ``omega`` replayed exactly through :meth:`vtagml_core.model.troa.TROA.observe`
    with the run's kappa, sign and ``troa_every``, and the **time-averaged gradient cosine**
    ``mean_i sim_i``, which is what omega would rank by without normalisation and floor.
(b) **Lookahead affinity** (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
    Learning", NeurIPS 2021): one SGD step on task n's loss over the *shared* parameters (the
    adapters), and how much task t's loss on the same batch drops,

        ``Z[t, n] = 1 - L_t(theta_s - lr * grad_{theta_s} L_n) / L_t(theta_s)``,

    measured every ``lookahead_every`` steps during the all-task training run
    (:class:`LookaheadTrainer`) and averaged over training. The weights are restored after each
    lookahead and the optimizer is never called, so the run's numbers are those of a plain run.
    **The step.** Fifty et al. write a plain SGD step at the training learning rate. The kit trains
    with Adam, whose steps are normalised by the running gradient RMS; an SGD step of Adam's
    learning rate on the raw gradient is then so small that the losses move by less than float32
    resolves (measured, quick preset: |Z| ~ 1e-6, mostly exact zeros). So the default lookahead
    step is the Adam-shaped one, ``theta_s - lr * grad L_n / (sqrt(v_hat) + eps)`` with the
    optimizer's current second moments ``v_hat`` (read, never written), i.e. the step the
    optimizer would take if task n's gradient were the whole update (without momentum);
    ``lookahead_step="sgd"`` is the formula as printed.
(c) **Ground truth**: the gain of training task t together with task n over training t alone,
    in percent of the single-task model's primary metric (the delta_m term of task t, positive =
    better together), for every ordered pair: one pair model per unordered pair (it gives both
    directions) and one single-task model per task, all with the same recipe, trained or reused
    through :func:`vtagml_core.experiments.runs.train_or_reuse` like every other run.
(d) **Rank agreement**: Spearman's rho (:func:`scipy.stats.spearmanr`) between each measure and
    the ground truth over the ``N (N - 1)`` ordered pairs, per seed, then mean and spread over
    seeds.

**Convention.** Every matrix here is indexed ``[target t, source n]``, like omega's rows: row t
is the task that is helped (or hurt), column n the task that helps. The diagonal never enters
the agreement. The cosine is symmetric; omega, Z and the ground truth are not.

**Variants.** The same run store serves the comparison of TROA settings
(:data:`TROA_VARIANTS`: smaller kappa, the printed sign, ``troa_every``, the weighted
objective): each variant is one more all-task run per seed, whose omega and cosine enter the
agreement table and whose test metrics (delta_m against the same single-task models) enter a
quality table.

Cost in trained models, for N tasks and S seeds: ``S * (N + N (N - 1) / 2 + 1 + V)`` (single-task,
pairs, the all-task lookahead run, V variants); single-task and pair models are shared with the
MTL setting (same keys), so a store that already holds them trains only the rest.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from vtagml_core.config import apply_overrides
from vtagml_core.experiments.runs import RunRecord, RunSpec
from vtagml_core.experiments.seeds import summarize
from vtagml_core.experiments.settings.context import (SettingContext, column, row, setting_document,
                                                      write_setting)
from vtagml_core.metrics.delta_m import delta_m, delta_m_terms
from vtagml_core.metrics.multitask import PRIMARY_METRICS
from vtagml_core.model.adapter import AdapterConfig
from vtagml_core.model.troa import TROA
from vtagml_core.tasks import TASK_TITLES, parse_tasks, task_set_name
from vtagml_core.train.logging import LOG_FILE, read_log
from vtagml_core.train.step import move_batch
from vtagml_core.train.trainer import Trainer

#: Name of the results document (``<root>/setting_results/affinity.json``, ``.md``, ``.html``).
AFFINITY_SETTING: str = "affinity"
#: ``kind`` of the lookahead records in a run's ``log.jsonl``.
LOOKAHEAD_KIND: str = "lookahead"
#: Default task set of the measurement.
DEFAULT_TASKS: str = "S-D-N-E"
#: Default optimizer steps between two lookahead measurements (the quick preset trains 640).
DEFAULT_LOOKAHEAD_EVERY: int = 10
#: Lookahead steps: Adam-shaped (default, see the module docstring) or Fifty et al.'s plain SGD.
LOOKAHEAD_STEPS: tuple[str, ...] = ("adam", "sgd")
DEFAULT_LOOKAHEAD_STEP: str = "adam"
#: Method of the pair models (the ground truth's "trained together").
DEFAULT_PAIR_METHOD: str = "vtagml"
#: Loss below which a task's lookahead ratio is not defined (a batch without a valid pixel).
LOSS_EPS: float = 1e-12
#: Names of the measures (row labels of the agreement table).
OMEGA, COSINE, LOOKAHEAD = "TROA omega", "gradient cosine (time-averaged)", "lookahead Z (Fifty et al.)"
#: The default TROA setting's label in the tables.
DEFAULT_VARIANT: str = "default"
#: TROA settings compared by ``--variants all`` (issue 17): each is one more all-task run per seed.
TROA_VARIANTS: dict[str, tuple[str, ...]] = {
    "kappa 0.1": ("model.adapter.kappa=0.1",),
    "kappa 0.01": ("model.adapter.kappa=0.01",),
    "sign -1 (printed)": ("model.adapter.sign=-1",),
    "every 4": ("model.adapter.troa_every=4",),
    "every 16": ("model.adapter.troa_every=16",),
    "weighted objective": ("model.adapter.weighted_objective=true",),
}


# --------------------------------------------------------------------------- matrices


def off_diagonal(matrix: Tensor) -> Tensor:
    """The ``N (N - 1)`` off-diagonal entries of ``(N, N)``, row by row (ordered pairs t != n)."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square (N, N) matrix, got {tuple(matrix.shape)}")
    n = matrix.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=matrix.device)
    return matrix[keep]


def rank_agreement(affinity: Tensor, truth: Tensor) -> float:
    """Spearman's rho between two ``(N, N)`` matrices over their off-diagonal entries.

    NaN when either has no spread over those entries (all ties: no ranking to compare), e.g. an
    omega whose off-diagonal entries all sit at the floor.
    """
    from scipy.stats import spearmanr

    a = off_diagonal(affinity.double().cpu()).numpy()
    b = off_diagonal(truth.double().cpu()).numpy()
    if a.size < 2 or a.max() == a.min() or b.max() == b.min():
        return math.nan
    return float(spearmanr(a, b)[0])


# --------------------------------------------------------------------------- (a) TROA from a log


def logged_similarities(log_path: str | Path) -> Tensor:
    """``(S, N, N)`` gradient cosine of every logged step (float64); ``(0, 0, 0)`` if none."""
    sims = [r["similarity"] for r in read_log(log_path, "step") if "similarity" in r]
    if not sims:
        return torch.zeros(0, 0, 0, dtype=torch.float64)
    return torch.tensor(sims, dtype=torch.float64)


def replay_omega(sims: Tensor, kappa: float = 1.0, sign: float = 1.0, every: int = 1) -> Tensor:
    """TROA's omega after the logged similarities ``(S, N, N)``: the same update, replayed.

    The logged numbers are those TROA used (the trainer logs the step's ``sim`` as returned by
    :meth:`TROA.update`), so this is the run's omega, whatever ``every`` was.
    """
    if sims.dim() != 3 or sims.shape[1] != sims.shape[2] or sims.shape[0] == 0:
        raise ValueError(f"need logged similarities (S >= 1, N, N), got {tuple(sims.shape)}: train "
                         "with TROA on (the trainer logs a 'similarity' per step)")
    troa = TROA(sims.shape[1], kappa=kappa, sign=sign, every=every)
    for sim in sims:
        troa.observe(sim.float())
    return troa.omega.double()


def troa_affinities(run_dir: str | Path, adapter: AdapterConfig) -> dict[str, Tensor]:
    """``{OMEGA: omega, COSINE: mean similarity}`` of a run, both ``(N, N)``, from its log."""
    sims = logged_similarities(Path(run_dir) / LOG_FILE)
    omega = replay_omega(sims, adapter.kappa, adapter.sign, adapter.troa_every)
    return {OMEGA: omega, COSINE: sims.mean(dim=0)}


# --------------------------------------------------------------------------- (b) lookahead


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters every task shares: VTAGML's adapter stack.

    Raises:
        ValueError: the model has no trainable adapter (nothing shared to look ahead on).
    """
    adapter = getattr(model, "adapter", None)
    params = [p for p in adapter.parameters() if p.requires_grad] if adapter is not None else []
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable shared adapter; the lookahead "
                         "affinity needs shared parameters (pass params=... explicitly)")
    return params


def lookahead_affinity(model: nn.Module, batch: dict, loss_fn: Callable[[dict, dict], tuple],
                       lr: float, *, tasks: Sequence[str] | None = None,
                       params: Sequence[nn.Parameter] | None = None, features: Any = None,
                       precondition: Sequence[Tensor] | None = None) -> Tensor:
    """Fifty et al.'s lookahead affinity on one batch: ``Z[t, n]``, ``(N, N)`` float64.

    ``Z[t, n] = 1 - L_t(theta_s - lr * grad_{theta_s} L_n / d) / L_t(theta_s)``: positive when one
    step on task n's loss, over the shared parameters ``theta_s`` only, lowers task t's loss.
    ``d = 1`` is the SGD step of the paper; ``precondition`` gives a per-parameter ``d`` (e.g.
    Adam's ``sqrt(v_hat) + eps``, see the module docstring).

    Args:
        model: called as ``model(batch["image"], features=features)`` (``features`` only when
            given); the forward must not draw random numbers (VTAGML's does not).
        batch: the batch, on the model's device.
        loss_fn: ``(outputs, batch) -> (total, {task: L_task})`` (a trainer's compute_losses).
        lr: the lookahead step size (Fifty et al.: the training learning rate).
        tasks: the tasks, in the matrix order (default ``model.tasks``).
        params: the shared parameters (default :func:`shared_parameters`).
        precondition: one positive tensor per parameter (its shape), dividing the gradient;
            None = plain SGD.

    Every parameter is restored bit for bit before returning (also on an error); no ``.grad``
    and no optimizer state is touched (gradients come from :func:`torch.autograd.grad`).
    """
    tasks = list(tasks if tasks is not None else model.tasks)
    params = list(params if params is not None else shared_parameters(model))
    divisors: list[Tensor | None] = [None] * len(params) if precondition is None else list(precondition)
    if len(divisors) != len(params):
        raise ValueError(f"precondition needs one tensor per shared parameter ({len(params)}), "
                         f"got {len(divisors)}")

    def losses() -> dict[str, Tensor]:
        out = model(batch["image"]) if features is None else model(batch["image"], features=features)
        return loss_fn(out, batch)[1]

    before = losses()
    base = torch.stack([before[t].detach().double() for t in tasks])           # L_t(theta), (N,)
    grads = [torch.autograd.grad(before[n], params, retain_graph=True, allow_unused=True)
             for n in tasks]                                                   # grad L_n per n
    del before
    saved = [p.detach().clone() for p in params]
    z = torch.zeros(len(tasks), len(tasks), dtype=torch.float64)
    try:
        for j, grad in enumerate(grads):
            with torch.no_grad():
                for p, g, d in zip(params, grad, divisors):
                    if g is not None:
                        p.sub_(lr * (g if d is None else g / d))               # theta_s - lr grad L_n / d
                after = losses()
                moved = torch.stack([after[t].detach().double() for t in tasks])   # L_t(theta')
            ok = base.abs() > LOSS_EPS
            z[:, j] = torch.where(ok, 1.0 - moved / base.clamp_min(LOSS_EPS), torch.zeros_like(base)).cpu()
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return z


class LookaheadTrainer(Trainer):
    """The trainer, plus the lookahead affinity every ``lookahead_every`` steps (module docstring).

    Before optimizer step i (0-based) with ``i % lookahead_every == 0`` it measures
    :func:`lookahead_affinity` on that step's batch at the current weights and logs
    ``{"kind": "lookahead", "step": i + 1, "lr": ..., "lookahead": Z}``; then the step runs as
    usual. The measurement restores every weight, reads (never writes) the optimizer's state and
    draws no random number, so losses, omega and checkpoints are those of the plain trainer, and
    resume is exact (a resumed step measures again; the log keeps records up to the saved step).

    Args:
        lookahead_every: steps between measurements (>= 1).
        lookahead_lr: lookahead step size; None = the learning rate of the step (a step whose
            learning rate is 0 is not measured).
        lookahead_step: ``"adam"`` (default: divided by Adam's current ``sqrt(v_hat) + eps``;
            the first step, before Adam has any statistics, is not measured) or ``"sgd"``.
        (the rest as :class:`~vtagml_core.train.trainer.Trainer`)
    """

    def __init__(self, *args: Any, lookahead_every: int = DEFAULT_LOOKAHEAD_EVERY,
                 lookahead_lr: float | None = None, lookahead_step: str = DEFAULT_LOOKAHEAD_STEP,
                 **kwargs: Any) -> None:
        if lookahead_every < 1:
            raise ValueError(f"lookahead_every must be >= 1 steps, got {lookahead_every}")
        if lookahead_lr is not None and not lookahead_lr > 0:
            raise ValueError(f"lookahead_lr must be > 0 (or None: the training lr), got {lookahead_lr}")
        if lookahead_step not in LOOKAHEAD_STEPS:
            raise ValueError(f"lookahead_step must be one of {LOOKAHEAD_STEPS}, got {lookahead_step!r}")
        self.lookahead_every, self.lookahead_lr = int(lookahead_every), lookahead_lr
        self.lookahead_step = lookahead_step
        super().__init__(*args, **kwargs)

    def adam_denominators(self, params: Sequence[nn.Parameter]) -> list[Tensor] | None:
        """Adam's ``sqrt(v_hat) + eps`` of each parameter, read from the optimizer; None before
        its first step (no second moments yet)."""
        group = self.optimizer.param_groups[0]
        beta2, eps = group["betas"][1], group["eps"]
        out = []
        for p in params:
            state = self.optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                return None
            bias = 1.0 - beta2 ** float(state["step"])                  # Adam's bias correction
            out.append((state["exp_avg_sq"] / bias).sqrt() + eps)       # sqrt(v_hat) + eps
        return out

    def training_step(self, batch: dict) -> dict[str, Any]:
        step = self.progress.global_step
        batch = move_batch(batch, self.device)
        lr = self.lookahead_lr if self.lookahead_lr is not None else self.scheduler.get_last_lr()[0]
        if step % self.lookahead_every == 0 and lr > 0:
            params = shared_parameters(self.model)
            denominators = self.adam_denominators(params) if self.lookahead_step == "adam" else None
            if self.lookahead_step == "sgd" or denominators is not None:
                with self.autocast():
                    z = lookahead_affinity(self.model, batch, self.compute_losses, lr, tasks=self.tasks,
                                           params=params, features=self.features(batch),
                                           precondition=denominators)
                self.logger.log({"kind": LOOKAHEAD_KIND, "step": step + 1, "lr": lr,
                                 "lookahead": z.tolist()})
        return super().training_step(batch)


def logged_lookahead(log_path: str | Path) -> Tensor:
    """``(R, N, N)`` lookahead matrices of a :class:`LookaheadTrainer` run's log (float64)."""
    mats = [r["lookahead"] for r in read_log(log_path, LOOKAHEAD_KIND)]
    if not mats:
        raise ValueError(f"{log_path} has no lookahead records: the run was not trained by "
                         "LookaheadTrainer (run the affinity command, it trains its own run)")
    return torch.tensor(mats, dtype=torch.float64)


# --------------------------------------------------------------------------- (c) ground truth


def pair_gain(pair: dict[str, dict[str, float]], single: dict[str, dict[str, float]], task: str) -> float:
    """Gain (%) of ``task`` in a model trained with another task over its single-task model.

    The delta_m term of ``task``'s primary metric: ``(-1)^l (M_pair - M_single) / M_single * 100``.
    """
    metric = PRIMARY_METRICS[task]
    (term,) = delta_m_terms(pair, single, {task: [metric]})
    return term.term


def ground_truth(pairs: dict[tuple[str, str], dict[str, dict[str, float]]],
                 single: dict[str, dict[str, float]], tasks: Sequence[str]) -> Tensor:
    """``G[t, n]`` (%) from the pair models' metrics (keyed by the unordered pair) ``(N, N)``.

    The diagonal is 0 (training t "with itself" is the single-task model).
    """
    g = torch.zeros(len(tasks), len(tasks), dtype=torch.float64)
    for (i, t), (j, n) in itertools.permutations(enumerate(tasks), 2):
        metrics = pairs[tuple(sorted((t, n), key=list(tasks).index))]
        g[i, j] = pair_gain(metrics, single, t)
    return g


# --------------------------------------------------------------------------- (d) the measurement


@dataclass
class AffinityOptions:
    """What :func:`run_affinity` measures.

    Attributes:
        tasks: the task set (N tasks: N single-task, N(N-1)/2 pair models per seed).
        lookahead_every: steps between lookahead measurements in the all-task run.
        lookahead_lr: lookahead step size; None = the training learning rate of the step.
        lookahead_step: ``"adam"`` or ``"sgd"`` (module docstring).
        pair_method: the method of the pair models (and of the all-task runs' comparison).
        variants: ``{label: overrides}`` of extra all-task runs (TROA settings, e.g.
            :data:`TROA_VARIANTS`); the default run is always there.
        split: where the ground truth and the quality table are scored.
    """

    tasks: str = DEFAULT_TASKS
    lookahead_every: int = DEFAULT_LOOKAHEAD_EVERY
    lookahead_lr: float | None = None
    lookahead_step: str = DEFAULT_LOOKAHEAD_STEP
    pair_method: str = DEFAULT_PAIR_METHOD
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    split: str = "test"

    def validate(self) -> "AffinityOptions":
        if len(parse_tasks(self.tasks)) < 3:
            raise ValueError(f"the affinity measurement needs >= 3 tasks (rank agreement over "
                             f"N (N - 1) >= 6 ordered pairs), got {self.tasks!r}; e.g. S-D-N-E")
        if self.lookahead_every < 1:
            raise ValueError(f"lookahead_every must be >= 1, got {self.lookahead_every}")
        if self.lookahead_step not in LOOKAHEAD_STEPS:
            raise ValueError(f"lookahead_step must be one of {LOOKAHEAD_STEPS}, got {self.lookahead_step!r}")
        if DEFAULT_VARIANT in self.variants:
            raise ValueError(f"{DEFAULT_VARIANT!r} names the default run; give the variant another label")
        return self


def lookahead_spec(ctx: SettingContext, opts: AffinityOptions, seed: int) -> RunSpec:
    """The all-task VTAGML run with lookahead measurements (its own key: ``extra``)."""
    cfg = ctx.config(opts.tasks, seed=seed)
    extra = {"lookahead_every": opts.lookahead_every, "lookahead_lr": opts.lookahead_lr,
             "lookahead_step": opts.lookahead_step}
    factory = functools.partial(LookaheadTrainer, lookahead_every=opts.lookahead_every,
                                lookahead_lr=opts.lookahead_lr, lookahead_step=opts.lookahead_step)
    return RunSpec(f"affinity: vtagml {opts.tasks} with lookahead", cfg, "vtagml", extra=extra,
                   trainer_factory=factory)


def variant_spec(ctx: SettingContext, opts: AffinityOptions, label: str, seed: int) -> RunSpec:
    """An all-task VTAGML run with the variant's overrides (keyed like any run)."""
    cfg = apply_overrides(copy.deepcopy(ctx.config(opts.tasks, seed=seed)), list(opts.variants[label]))
    return RunSpec(f"affinity: vtagml {opts.tasks}, {label}", cfg.validate(), "vtagml")


def _single(ctx: SettingContext, task: str, seed: int) -> RunRecord:
    # The MTL setting's single-task reference (same spec, so the same key: shared).
    return ctx.train(RunSpec(f"single-task {task}", ctx.config(task, seed=seed), "single_task"))


def _pair(ctx: SettingContext, pair: tuple[str, str], method: str, seed: int) -> RunRecord:
    # The MTL setting's source model of that task set (same spec, so the same key: shared).
    spec = task_set_name(pair)
    return ctx.train(RunSpec(f"{method} {spec} on {ctx.settings.source}", ctx.config(spec, seed=seed), method))


def measure_seed(ctx: SettingContext, opts: AffinityOptions, seed: int) -> dict[str, Any]:
    """Everything of one seed: ground truth, every measure, rho, and the all-task runs' metrics."""
    tasks, src = parse_tasks(opts.tasks), ctx.settings.source
    single = {t: ctx.evaluate(_single(ctx, t, seed), src, opts.split)[t] for t in tasks}
    pairs = {p: ctx.evaluate(_pair(ctx, p, opts.pair_method, seed), src, opts.split)
             for p in itertools.combinations(tasks, 2)}
    truth = ground_truth(pairs, single, tasks)
    runs = {DEFAULT_VARIANT: (ctx.train(lookahead_spec(ctx, opts, seed)), ctx.config(opts.tasks, seed=seed))}
    for label in opts.variants:
        spec = variant_spec(ctx, opts, label, seed)
        runs[label] = (ctx.train(spec), spec.cfg)
    measures: dict[str, Tensor] = {}
    quality: dict[str, dict[str, Any]] = {}
    for label, (record, cfg) in runs.items():
        for name, matrix in troa_affinities(record.dir, cfg.model.adapter).items():
            measures[f"{name} [{label}]"] = matrix
        metrics = ctx.evaluate(record, src, opts.split)
        quality[label] = {"metrics": {t: metrics[t][PRIMARY_METRICS[t]] for t in tasks},
                          "delta_m": delta_m(metrics, single), "run": str(record.dir)}
    lookahead = logged_lookahead(runs[DEFAULT_VARIANT][0].dir / LOG_FILE)
    measures[LOOKAHEAD] = lookahead.mean(dim=0)
    ctx.release_models()
    return {"seed": seed, "truth": truth.tolist(),
            "measures": {k: v.tolist() for k, v in measures.items()},
            "rho": {k: _finite_or_none(rank_agreement(v, truth)) for k, v in measures.items()},
            "lookahead_records": int(lookahead.shape[0]), "quality": quality,
            "single": {t: single[t][PRIMARY_METRICS[t]] for t in tasks}}


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _stat(values: Iterable[float | None]) -> dict[str, Any] | None:
    vals = [v for v in values if v is not None]
    return summarize(vals) if vals else None


def mean_matrix(per_seed: list[dict[str, Any]], key: Callable[[dict], list]) -> list[list[float]]:
    """Seed mean of a matrix stored in each seed's record."""
    return torch.tensor([key(s) for s in per_seed], dtype=torch.float64).mean(dim=0).tolist()


def run_affinity(ctx: SettingContext, opts: AffinityOptions) -> dict[str, Any]:
    """Train (or reuse) every run of the measurement, for every seed, and build its document.

    The document has the settings' shape (:func:`setting_document`); ``columns``/``rows`` are the
    agreement table, ``quality`` the all-task runs' table, ``per_seed`` every number.
    """
    from vtagml_core.experiments.settings.mtl import TASK_LABELS, arrow
    from vtagml_core.metrics.multitask import METRIC_DIRECTIONS

    opts.validate()
    started = time.perf_counter()
    tasks = parse_tasks(opts.tasks)
    ctx.records = []
    per_seed = [measure_seed(ctx, opts, seed) for seed in ctx.seeds]
    names = list(per_seed[0]["rho"])
    rows = []
    for name in names:
        rhos = [s["rho"][name] for s in per_seed]
        stat = _stat(rhos)
        missing = sum(r is None for r in rhos)
        rows.append(row(name, {"rho": stat} if stat is not None else {}, method=name,
                        note=f"{missing} seed(s) without a ranking (ties)" if missing else ""))
    columns = [column("rho", "Spearman ρ vs ground truth↑", "rho", lower_is_better=False)]
    labels = [DEFAULT_VARIANT, *opts.variants]
    q_columns = [column(t, f"{TASK_LABELS[t]}{arrow(PRIMARY_METRICS[t])}", PRIMARY_METRICS[t], task=t,
                        lower_is_better=METRIC_DIRECTIONS[PRIMARY_METRICS[t]]) for t in tasks]
    q_columns.append(column("delta_m", "Δm% vs single-task↑", "delta_m", lower_is_better=False))
    q_rows = []
    for label in labels:
        q = [s["quality"][label] for s in per_seed]
        cells = {t: summarize([x["metrics"][t] for x in q]) for t in tasks}
        cells["delta_m"] = summarize([x["delta_m"] for x in q])
        overrides = "; ".join(opts.variants.get(label, ())) or "the preset's TROA settings"
        q_rows.append(row(f"VTAGML {opts.tasks}, {label}", cells, method=label, note=overrides))
    n = len(tasks)
    notes = [
        f"Ground truth: for every ordered pair (t, n), the gain (%) of task t's primary metric in the "
        f"{opts.pair_method} model of the pair over task t's single-task model, on the {opts.split} "
        f"split; {n} single-task and {n * (n - 1) // 2} pair models per seed.",
        "Measures, all indexed [target t, source n]: TROA's omega (replayed from the run's logged "
        "similarities), the time-averaged gradient cosine, and Fifty et al.'s lookahead Z (one "
        f"{'Adam-shaped' if opts.lookahead_step == 'adam' else 'SGD'} step on the shared adapters, "
        f"every {opts.lookahead_every} steps, averaged).",
        f"Spearman ρ over the {n * (n - 1)} ordered pairs, per seed; cells are mean ± std over seeds. "
        "ρ = 1: the measure orders the pairs as the ground truth does; 0: no relation.",
        "A TROA omega collapsed to the identity ranks its off-diagonal entries by tiny numbers (or "
        "ties at the floor: no ranking).",
    ]
    doc = setting_document(ctx, AFFINITY_SETTING, "Task affinity vs ground truth",
                           ctx.where(ctx.settings.source, opts.split), columns, rows, notes, started,
                           tasks=list(tasks), options={"tasks": opts.tasks,
                                                       "lookahead_every": opts.lookahead_every,
                                                       "lookahead_lr": opts.lookahead_lr,
                                                       "lookahead_step": opts.lookahead_step,
                                                       "pair_method": opts.pair_method,
                                                       "variants": {k: list(v) for k, v in opts.variants.items()},
                                                       "split": opts.split},
                           quality={"columns": q_columns, "rows": q_rows},
                           per_seed=per_seed,
                           mean_truth=mean_matrix(per_seed, lambda s: s["truth"]),
                           mean_measures={k: mean_matrix(per_seed, lambda s, k=k: s["measures"][k])
                                          for k in names})
    return doc


def matrix_markdown(matrix: list[list[float]], tasks: Sequence[str], caption: str, digits: int = 3) -> str:
    """A ``[target t, source n]`` matrix as a markdown table (rows targets, columns sources),
    ``digits`` significant digits (lookahead values are small)."""
    from vtagml_core.experiments.tables import markdown_table

    names = [TASK_TITLES.get(t, t) for t in tasks]
    body = [[f"**{names[i]}**", *[("—" if i == j else f"{v:.{digits}g}") for j, v in enumerate(r)]]
            for i, r in enumerate(matrix)]
    return f"{caption}\n\n" + markdown_table(["target \\ source", *names], body)


def affinity_markdown(doc: dict[str, Any]) -> str:
    """The document as markdown: agreement table, quality table, ground truth and measure matrices."""
    from vtagml_core.experiments.tables import measured_section

    lines = measured_section(doc, doc["title"])
    quality = {**doc, **doc["quality"], "notes": [
        "The all-task runs whose omega and cosine are measured above; delta_m against the same "
        "single-task models.", *[f"{r['label']}: {r['note']}" for r in doc["quality"]["rows"]]]}
    lines += [""] + measured_section(quality, "TROA settings: the all-task runs")[:-2]
    tasks = doc["tasks"]
    lines += ["", "### The matrices (mean over seeds)", "",
              matrix_markdown(doc["mean_truth"], tasks, "Ground truth: gain (%) of target t trained "
                                                      "with source n over t alone")]
    for name, matrix in doc["mean_measures"].items():
        lines += ["", matrix_markdown(matrix, tasks, name)]
    return "\n".join(lines)


def write_affinity(ctx: SettingContext, doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<root>/setting_results/affinity.json`` and ``.md``; returns both paths.

    The figure (:func:`vtagml_core.viz.affinity_agreement.agreement_figure`) is written by the
    command, next to them (``affinity.html``): viz sits above this layer.
    """
    return write_setting(ctx, doc, affinity_markdown)


__all__ = ["AFFINITY_SETTING", "AffinityOptions", "COSINE", "DEFAULT_TASKS", "DEFAULT_VARIANT",
           "LOOKAHEAD", "LOOKAHEAD_KIND", "LOOKAHEAD_STEPS", "LookaheadTrainer", "OMEGA", "TROA_VARIANTS",
           "affinity_markdown", "ground_truth", "logged_lookahead", "logged_similarities",
           "lookahead_affinity", "lookahead_spec", "matrix_markdown", "measure_seed", "off_diagonal",
           "pair_gain", "rank_agreement", "replay_omega", "run_affinity", "shared_parameters",
           "troa_affinities", "variant_spec", "write_affinity"]
