"""The paper's evaluation settings on the kit's synthetic benchmark (paper Sec. 4, Tables 2-6).

=============  ==========================================  =========  ==========================
setting        what                                        table      module
=============  ==========================================  =========  ==========================
``mtl``        joint training on S-D, S-D-N, S-D-N-E;       Table 2    :mod:`.mtl`
               delta_m vs single-task models
``zeroshot``   source with all labels -> target with only   Table 3    :mod:`.zero_shot`
               some; score the never-labelled task
``uda``        labelled source + unlabelled target,         Table 4    :mod:`.uda`
               output-level adversarial adaptation
``novel``      source models on unseen domains (incl.       Table 5    :mod:`.novel_domain`
               comics), no fine-tuning
``efficiency`` parameters, training time per epoch          Table 6    :mod:`.efficiency`
``robustness`` source models against graded shift severity; (none)     :mod:`.robustness`
               corruption error vs the single-task models
=============  ==========================================  =========  ==========================

Usage (what ``python -m vtagml_core settings mtl`` does)::

    ctx = build_context(preset="quick", seeds="0")
    doc = run_setting("mtl", ctx)          # trains or reuses the runs it needs
    write_setting(ctx, doc)                # runs/setting_results/mtl.json + mtl.md

Runs are shared between settings through their config key (:mod:`.common`): the whole quick
preset trains each distinct model once.
"""
from __future__ import annotations

from typing import Any, Callable

from vtagml_core.experiments.evaluate import evaluate_run
from vtagml_core.experiments.runs import RunRecord, RunSpec, run_dir, train_or_reuse
from vtagml_core.experiments.seeds import parse_seeds, summarize
from .context import SETTINGS, SettingContext, SettingsConfig, build_context, write_setting


def _runners() -> dict[str, Callable[[SettingContext], dict[str, Any]]]:
    from .efficiency import run_efficiency
    from .mtl import run_mtl
    from .novel_domain import run_novel
    from .robustness import run_robustness
    from .uda import run_uda
    from .zero_shot import run_zero_shot

    return {"mtl": run_mtl, "zeroshot": run_zero_shot, "uda": run_uda, "novel": run_novel,
            "efficiency": run_efficiency, "robustness": run_robustness}


def run_setting(name: str, ctx: SettingContext) -> dict[str, Any]:
    """Run one setting (training or reusing its models) and return its results document.

    Raises:
        ValueError: an unknown setting name (lists the valid ones).
    """
    runners = _runners()
    if name not in runners:
        raise ValueError(f"unknown setting {name!r}; settings: {', '.join(SETTINGS)}")
    ctx.records = []
    try:
        return runners[name](ctx)
    finally:
        ctx.release_models()


__all__ = ["RunRecord", "RunSpec", "SETTINGS", "SettingContext", "SettingsConfig", "build_context",
           "evaluate_run", "parse_seeds", "run_dir", "run_setting", "summarize", "train_or_reuse",
           "write_setting"]
