"""Do the task affinities mean something? Three affinity measures against a ground truth.

TROA's omega is read as "how much task n helps task t" (paper Sec. 3.2.1, Fig. 4). This module
asks whether it, or anything cheaper or more direct, predicts which tasks actually help each
other when trained together (project issue 17). Four pieces:

(a) **TROA** (from a run's ``log.jsonl``: the trainer logs the ``(N, N)`` gradient cosine of
    every step): ``omega`` replayed exactly through :meth:`vtagml_core.model.troa.TROA.observe`
    with the run's kappa, sign and ``troa_every``, and the **time-averaged gradient cosine**
    ``mean_i sim_i``, which is what omega would rank by without normalisation and floor.
(b) **Lookahead affinity** (Fifty et al., NeurIPS 2021): how much one step on task n's loss
    over the shared adapters lowers task t's loss, measured during the all-task training run
    and averaged over training (:mod:`.affinity_lookahead`, which says which step is taken).
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

Where the pieces live: (b) in :mod:`.affinity_lookahead`; the document as markdown and its
files in :mod:`.affinity_report`; (a), (c), (d) and the measurement itself here. All are
re-exported here.
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
from torch import Tensor

from vtagml_core.config import apply_overrides
from vtagml_core.experiments.runs import RunRecord, RunSpec
from vtagml_core.experiments.seeds import summarize
from vtagml_core.experiments.affinity_lookahead import (  # noqa: F401  (LOSS_EPS re-exported)
    DEFAULT_LOOKAHEAD_EVERY, DEFAULT_LOOKAHEAD_STEP, LOOKAHEAD_KIND, LOOKAHEAD_STEPS, LOSS_EPS,
    LookaheadTrainer, logged_lookahead, lookahead_affinity, shared_parameters)
from vtagml_core.experiments.affinity_report import affinity_markdown, matrix_markdown, write_affinity
from vtagml_core.experiments.settings.context import SettingContext, column, row, setting_document
from vtagml_core.metrics.delta_m import delta_m, delta_m_terms
from vtagml_core.metrics.multitask import PRIMARY_METRICS
from vtagml_core.model.adapter import AdapterConfig
from vtagml_core.model.troa import TROA
from vtagml_core.tasks import parse_tasks, task_set_name
from vtagml_core.train.logging import LOG_FILE, read_log

#: Name of the results document (``<root>/setting_results/affinity.json``, ``.md``, ``.html``).
AFFINITY_SETTING: str = "affinity"
#: Default task set of the measurement.
DEFAULT_TASKS: str = "S-D-N-E"
#: Method of the pair models (the ground truth's "trained together").
DEFAULT_PAIR_METHOD: str = "vtagml"
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
        lookahead_step: ``"adam"`` or ``"sgd"`` (:mod:`.affinity_lookahead`).
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




__all__ = ["AFFINITY_SETTING", "AffinityOptions", "COSINE", "DEFAULT_TASKS", "DEFAULT_VARIANT",
           "LOOKAHEAD", "LOOKAHEAD_KIND", "LOOKAHEAD_STEPS", "LookaheadTrainer", "OMEGA", "TROA_VARIANTS",
           "affinity_markdown", "ground_truth", "logged_lookahead", "logged_similarities",
           "lookahead_affinity", "lookahead_spec", "matrix_markdown", "measure_seed", "off_diagonal",
           "pair_gain", "rank_agreement", "replay_omega", "run_affinity", "shared_parameters",
           "troa_affinities", "variant_spec", "write_affinity"]
