"""What a setting runs with: the kit config, the setting options, seeds, the runs root, the log.

Settings are configured in two files of the same preset name, each with its own fields:

- the **kit config** (:class:`~vtagml_core.train.config.KitConfig`): the preset's
  ``configs/presets/<preset>.yaml`` (or ``--config``) plus ``--set key=value`` overrides: data
  sizes, model, training. The settings never change it on their own;
- the **settings config** (:class:`SettingsConfig`, ``configs/settings/<preset>.yaml``):
  which task sets, methods and domains each setting uses, the adversarial options of UDA,
  the timing budget of the efficiency table and the comparison's seeds.

:func:`build_context` resolves both into a :class:`SettingContext`; every setting module
(:mod:`.mtl`, :mod:`.zero_shot`, :mod:`.uda`, :mod:`.novel_domain`, :mod:`.efficiency`,
:mod:`.robustness`) takes
one and returns its results document (:func:`setting_document`), which :func:`write_setting`
saves as ``<root>/setting_results/<setting>.json`` and ``.md``.

**Backbone.** Like the paper's frozen ImageNet Swin (Sec. 3.1), every setting needs a
pretrained frozen backbone. Without internet, ``SettingsConfig.pretrained_backbone`` (on in the
quick preset) resolves ``model.backbone.weights`` to the kit's pretext-pretrained backbone
(:func:`vtagml_core.train.pretrain.ensure_pretrained_backbone`: pretrained once at
:data:`~vtagml_core.train.pretrain.PRETRAIN_SEED`, then reused by every run and seed). Its file's SHA-256 is part of every
run key (:mod:`.common`).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from vtagml_core import __version__
from vtagml_core.config import apply_overrides, load_config
from vtagml_core.config import CONFIG_DIR
from vtagml_core.train.config import KitConfig, load_kit_config
from vtagml_core.tasks import parse_tasks
from vtagml_core.train.adversarial import AdversarialConfig
from vtagml_core.model.backbone_weights import PRETEXT_WEIGHTS
from vtagml_core.train.pretrain import PRETRAIN_SEED, resolve_backbone_weights

from vtagml_core.experiments.evaluate import evaluate_run
from vtagml_core.experiments.runs import (RESULTS_SUBDIR, RunRecord, RunSpec, default_store, run_dir,
                                         train_or_reuse, with_changes)
from vtagml_core.experiments.seeds import parse_seeds

#: The settings this package implements, in table order (paper Tables 2-6).
SETTINGS: tuple[str, ...] = ("mtl", "zeroshot", "uda", "novel", "efficiency", "robustness")
#: Folder of the per-preset settings configs.
SETTINGS_CONFIG_DIR: Path = CONFIG_DIR / "settings"


@dataclass
class SettingsConfig:
    """Options of the evaluation settings (paper Sec. 4; ``docs/settings.md``).

    Attributes:
        source: training domain of every source-domain model (MTL, novel domains, robustness,
            and the transfer settings unless they name their own).
        zero_shot_source, uda_source: the source domain of zero-shot transfer and of UDA when
            it is not ``source`` (``None``): e.g. ``street`` with a ``street_shift`` target, the
            street family's own pair (paper: Vkitti2 -> Cityscapes), while the novel-domain
            table keeps ``indoor`` -> shifted indoor (Taskonomy -> NYUD-v2).
        methods: methods compared in every table (the plain-multitask baseline included).
        task_sets: MTL task sets (Table 2).
        zero_shot_target: target domain of zero-shot task transfer (Table 3).
        zero_shot_task_sets: task sets of Table 3; the *last* task of each is never labelled
            on the target (S-D: depth, S-D-N: normals).
        finetune_epochs: epochs of the zero-shot fine-tuning on the target (it starts from the
            trained source model; None = ``train.epochs``).
        uda_target, uda_tasks: target domain and task set of UDA (Table 4).
        uda_epochs: epochs of adversarial adaptation. ``None`` trains the adapted model from
            scratch for ``train.epochs`` (AdaptSegNet's recipe); a number starts it from the
            source-only model and adapts for that many epochs (a warm start, cheaper on a CPU).
        novel_domains: domains the source models are tested on without fine-tuning (Table 5).
        novel_tasks: task set of Table 5.
        remote_domains: novel domains that are the *remote case* (paper: photos -> comics): the
            novel table reports them like the others, the headroom check computes their r but
            does not hold it to the band (issue 15: the near target carries the band, the comic
            domain stays the remote case).
        efficiency_tasks, efficiency_methods: Table 6 (``single_task`` = one model per task,
            summed).
        efficiency_steps, efficiency_warmup_steps: timed / untimed training steps per method.
        robustness_targets: shift targets of the robustness curves; each must have
            ``source`` as its shift source (``SHIFT_SOURCES``). ``None``: every target of the
            source (``indoor``: ``indoor_shift``, ``comic``).
        robustness_levels: severity levels of the curves (``SEVERITY_LEVELS``; level 0 = the
            target's test scenes at s = 0, i.e. in the source's look); the corruption error sums
            over the levels above 0.
        robustness_tasks: task set of the robustness curves.
        robustness_baseline: the corruption errors' baseline, ``single_task`` or one of
            ``methods``.
        pretrained_backbone: resolve ``model.backbone.weights`` to the kit's pretext-pretrained
            backbone when the config names none (module docstring).
        compare_seeds: training seeds of the method comparison (notebook 10): its seed spread
            needs two or more.
        adversarial: UDA's discriminators and loss weights.
    """

    source: str = "indoor"
    methods: list[str] = field(default_factory=lambda: ["vtagml", "vanilla_mtl"])
    task_sets: list[str] = field(default_factory=lambda: ["S-D", "S-D-N", "S-D-N-E"])
    zero_shot_source: str | None = None
    zero_shot_target: str = "indoor_shift"
    zero_shot_task_sets: list[str] = field(default_factory=lambda: ["S-D", "S-D-N"])
    finetune_epochs: int | None = None
    uda_source: str | None = None
    uda_target: str = "indoor_shift"
    uda_epochs: int | None = None
    uda_tasks: str = "S-D"
    novel_domains: list[str] = field(default_factory=lambda: ["indoor_shift", "street", "comic"])
    novel_tasks: str = "S-D"
    remote_domains: list[str] = field(default_factory=lambda: ["comic"])
    efficiency_tasks: str = "S-D-N-E"
    efficiency_methods: list[str] = field(
        default_factory=lambda: ["vtagml", "vanilla_mtl", "finetune_mtl", "single_task"])
    robustness_targets: list[str] | None = None
    robustness_levels: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    robustness_tasks: str = "S-D"
    robustness_baseline: str = "single_task"
    efficiency_steps: int = 6
    efficiency_warmup_steps: int = 2
    pretrained_backbone: bool = True
    compare_seeds: int = 1
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def validate(self) -> "SettingsConfig":
        from vtagml_core.baselines.registry import method_names
        from vtagml_core.data.synthetic.catalog import check_domain_name

        try:  # one spelling per domain, graded shifts included (indoor_shift@0.4): run keys agree
            self.source, self.zero_shot_target, self.uda_target = (
                check_domain_name(d) for d in (self.source, self.zero_shot_target, self.uda_target))
            self.zero_shot_source, self.uda_source = (
                None if d is None else check_domain_name(d) for d in (self.zero_shot_source, self.uda_source))
            self.novel_domains = [check_domain_name(d) for d in self.novel_domains]
            self.remote_domains = [check_domain_name(d) for d in self.remote_domains]
        except ValueError as err:
            raise ValueError(f"settings config: {err}") from None
        bad = [m for m in [*self.methods, *self.efficiency_methods] if m not in method_names()]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; methods: {', '.join(method_names())}")
        for spec in [*self.task_sets, *self.zero_shot_task_sets, self.uda_tasks, self.novel_tasks,
                     self.efficiency_tasks, self.robustness_tasks]:
            parse_tasks(spec)
        for spec in self.zero_shot_task_sets:
            if len(parse_tasks(spec)) < 2:
                raise ValueError(f"zero-shot task set {spec!r} needs >= 2 tasks (labelled + zero-shot)")
        for name in ("finetune_epochs", "uda_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null (= train.epochs), got {value}")
        if self.compare_seeds < 1:
            raise ValueError(f"compare_seeds must be >= 1, got {self.compare_seeds}")
        if self.efficiency_steps < 1 or self.efficiency_warmup_steps < 0:
            raise ValueError("efficiency_steps must be >= 1 and efficiency_warmup_steps >= 0, got "
                             f"{self.efficiency_steps} and {self.efficiency_warmup_steps}")
        self._validate_robustness()
        self.adversarial.validate()
        return self

    def source_for(self, setting: str) -> str:
        """The source domain of ``setting`` (``zeroshot``, ``uda``; every other setting:
        ``source``)."""
        own = {"zeroshot": self.zero_shot_source, "uda": self.uda_source}.get(setting)
        return own or self.source

    def shift_targets(self) -> list[str]:
        """The robustness curves' targets: ``robustness_targets``, or every shift target whose
        source is ``source`` (``SHIFT_SOURCES``)."""
        from vtagml_core.data.synthetic.domains import SHIFT_SOURCES

        if self.robustness_targets is not None:
            return list(self.robustness_targets)
        return [t for t, src in SHIFT_SOURCES.items() if src == self.source]

    def _validate_robustness(self) -> None:
        from vtagml_core.data.synthetic.domains import SHIFT_SOURCES
        from vtagml_core.data.synthetic.shift import SEVERITY_LEVELS

        for target in self.shift_targets():
            if target not in SHIFT_SOURCES:
                raise ValueError(f"robustness target {target!r} is not a shift target; shift targets "
                                 "(with their source): " + ", ".join(
                                     f"{t} (<- {s})" for t, s in SHIFT_SOURCES.items()))
            if SHIFT_SOURCES[target] != self.source:
                fits = [t for t, s in SHIFT_SOURCES.items() if s == self.source]
                raise ValueError(f"robustness target {target!r} shifts from {SHIFT_SOURCES[target]!r}, "
                                 f"but the source models are trained on {self.source!r}: pick targets "
                                 f"of {self.source!r} ({', '.join(fits) or 'none'}) or set "
                                 "robustness_targets=null")
        valid = [0, *SEVERITY_LEVELS]
        levels = self.robustness_levels
        if (any(isinstance(v, bool) or v not in valid for v in levels) or len(set(levels)) != len(levels)
                or not any(v > 0 for v in levels)):
            raise ValueError(f"robustness_levels must be distinct levels of {valid} (0 = no shift), "
                             f"at least one above 0 for the corruption error; got {levels}")
        self.robustness_levels = sorted(levels)
        if self.robustness_baseline not in ("single_task", *self.methods):
            raise ValueError(f"robustness_baseline must be single_task or one of methods {self.methods}, "
                             f"got {self.robustness_baseline!r}")


def settings_config_path(preset: str) -> Path:
    """``configs/settings/<preset>.yaml`` (may not exist: then the defaults apply)."""
    return SETTINGS_CONFIG_DIR / f"{preset}.yaml"


def load_settings_config(path: str | Path | None = None, overrides: list[str] | None = None,
                         preset: str | None = None) -> SettingsConfig:
    """The settings config from a file, the preset's file, or the defaults; plus overrides."""
    if path is None and preset is not None and settings_config_path(preset).is_file():
        path = settings_config_path(preset)
    return load_config(SettingsConfig, path, overrides).validate()


@dataclass
class SettingContext:
    """Everything one setting run needs (built by :func:`build_context`).

    Attributes:
        cfg: the resolved base kit config (pretrained backbone filled in).
        settings: the settings options.
        preset: ``"quick"`` or ``"paper"`` (or ``"custom"`` with ``--config``).
        seeds: training seeds; every cell is mean/std over them.
        root: where the settings' results documents go (``<root>/setting_results/``).
        store: the run store the trained runs live in (:func:`~vtagml_core.experiments.runs.default_store`).
        log: where progress lines go.
        records: every run used so far (role, folder, reused or trained, seconds).
    """

    cfg: KitConfig
    settings: SettingsConfig
    preset: str
    seeds: list[int]
    root: Path
    store: Path
    log: Callable[[str], None] = print
    records: list[dict[str, Any]] = field(default_factory=list)
    _done: dict[str, RunRecord] = field(default_factory=dict, repr=False)

    def config(self, tasks: str, domain: str | None = None, seed: int = 0,
               epochs: int | None = None) -> KitConfig:
        """The kit config of one run: task set, training domain (default: source), seed, and
        epochs (default: the kit config's ``train.epochs``)."""
        return with_changes(self.cfg, tasks=tasks, domain=domain or self.settings.source, seed=seed,
                            epochs=epochs)

    def train(self, spec: RunSpec) -> RunRecord:
        """:func:`~vtagml_core.experiments.runs.train_or_reuse` in the store, remembering what it cost.

        A run already used in this context is returned as is (its model stays loaded).
        """
        if spec.preset is None:
            spec.preset = self.preset
        key = str(run_dir(self.store, spec))
        reused_here = key in self._done
        if not reused_here:
            self._done[key] = train_or_reuse(spec, self.store, self.log)
        record = self._done[key]
        if all(r["dir"] != key for r in self.records):
            fresh = record.trained_now and not reused_here
            self.records.append({"role": spec.role, "seed": spec.seed, "dir": key, "reused": not fresh,
                                 "seconds": round(record.seconds, 2) if fresh else 0.0})
        return record

    def release_models(self) -> None:
        """Drop the models loaded for evaluation (the runs stay known)."""
        for record in self._done.values():
            record.release()

    def evaluate(self, record: RunRecord, domain: str, split: str = "test",
                 tasks: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
        return evaluate_run(record, self.cfg, domain, split, tasks)

    def backbone_description(self) -> str:
        bb = self.cfg.model.backbone
        state = "frozen" if bb.frozen else "fine-tuned"
        if bb.random_init:
            return (f"{bb.name} (RANDOM init, {state}: numbers say little (no pretrained weights "
                    "configured))")
        return f"{bb.name} ({bb.describe_weights()}, {state})"

    def where(self, domain: str, split: str = "test") -> dict[str, Any]:
        """The provenance of a number: dataset (and the renderer's version), split, resolution,
        backbone, seeds."""
        d = self.cfg.data
        count = {"train": d.train_count, "val": d.val_count, "test": d.test_count}[split]
        stamp = d.generator_stamp()  # empty for real data
        return {"dataset": f"synthetic/{domain}", "split": f"{split} ({count} scenes)",
                **({"generator": stamp["data_generator"]} if stamp else {}),
                "resolution": f"{d.size}x{d.size}", "backbone": self.backbone_description(),
                "seeds": list(self.seeds)}


def resolve_backbone(cfg: KitConfig, settings: SettingsConfig, log: Callable[[str], None] = print
                     ) -> KitConfig:
    """With ``settings.pretrained_backbone`` and no weights configured, the kit's pretext-pretrained
    backbone (``model.backbone.weights: pretext``, resolved to its file); an explicit
    ``weights: random`` or file, or timm's ``pretrained``, is kept as configured."""
    bb = cfg.model.backbone
    if settings.pretrained_backbone and not bb.pretrained and bb.weights is None:
        cfg = copy.deepcopy(cfg)
        cfg.model.backbone.weights = PRETEXT_WEIGHTS
    return resolve_backbone_weights(cfg, log)


def build_context(preset: str = "quick", config: str | Path | None = None,
                  overrides: list[str] | None = None, seeds: str | list[int] = "0",
                  root: str | Path = "runs", settings_path: str | Path | None = None,
                  settings_overrides: list[str] | None = None, methods: list[str] | None = None,
                  log: Callable[[str], None] = print, store: str | Path | None = None) -> SettingContext:
    """Resolve presets, settings config, overrides and the backbone into a :class:`SettingContext`.

    Order: the preset's file (or ``config``) <- ``overrides`` (``--set``).
    ``methods`` (``--methods``) replaces ``settings.methods``. ``store``: the run store
    (default: :func:`~vtagml_core.experiments.runs.default_store`); ``root``: the results.
    """
    settings = load_settings_config(settings_path, settings_overrides, preset=preset)
    if methods:
        settings = apply_overrides(settings, [f"methods={json.dumps(list(methods))}"]).validate()
    cfg = load_kit_config(config, overrides, preset=None if config else preset)
    cfg = resolve_backbone(cfg, settings, log)
    return SettingContext(cfg, settings, preset if config is None else "custom", parse_seeds(seeds),
                          Path(root), Path(store) if store is not None else default_store(), log)


# --------------------------------------------------------------------------- documents


def column(key: str, label: str, metric: str | None = None, *, group: str = "", task: str = "",
           lower_is_better: bool | None = None, zero_shot: bool = False) -> dict[str, Any]:
    """A table column: ``metric`` picks the number format (:mod:`vtagml_core.experiments.tables`)."""
    return {"key": key, "label": label, "metric": metric or key, "group": group, "task": task,
            "lower_is_better": lower_is_better, "zero_shot": zero_shot}


def row(label: str, cells: dict[str, dict], *, kind: str = "method", method: str = "",
        note: str = "") -> dict[str, Any]:
    """A table row; ``kind``: ``method`` (ranked, bold best), ``reference`` or ``trivial``."""
    return {"label": label, "method": method, "kind": kind, "cells": cells, "note": note}


def setting_document(ctx: SettingContext, setting: str, title: str, where: dict[str, Any],
                     columns: list[dict], rows: list[dict], notes: list[str], started: float,
                     **extra: Any) -> dict[str, Any]:
    """The results JSON of one setting (also what :mod:`vtagml_core.experiments.tables` renders)."""
    return {"setting": setting, "title": title, "preset": ctx.preset, "kit_version": __version__,
            "where": where, "columns": columns, "rows": rows, "notes": notes,
            "runs": list(ctx.records), "wall_seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}


def write_setting(ctx: SettingContext, doc: dict[str, Any],
                  markdown: Callable[[dict[str, Any]], str] | None = None) -> tuple[Path, Path]:
    """Write ``<root>/setting_results/<setting>.json`` and ``.md``; returns both paths.

    ``markdown`` formats the document (default: the settings' tables; the comparison passes
    its own).
    """
    from vtagml_core.experiments.tables import setting_markdown

    out = ctx.root / RESULTS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / f"{doc['setting']}.json", out / f"{doc['setting']}.md"
    js.write_text(json.dumps(doc, indent=2) + "\n")
    md.write_text((markdown or setting_markdown)(doc) + "\n")
    return js, md


__all__ = ["PRETRAIN_SEED", "SETTINGS", "SettingContext", "SettingsConfig", "build_context", "column",
           "load_settings_config", "resolve_backbone", "row", "setting_document", "write_setting"]
