"""The baselines built from VTAGML's own parts (paper Sec. 4; docs/settings.md, "The methods").

Every method here is VTAGML's network with one or two switches changed, so it trains through the
same trainer, saves through the same checkpoint format and is measured by the same evaluation.
Each method is a pair: a *config transformation* (``ModelConfig -> ModelConfig``, applied to a
copy, idempotent) and a model class. The transformed ("effective") config is what the model
stores as ``model.config`` and what a checkpoint records, so one kit config serves every method.

=============  ==========  ========  ======  ==============  ===================================
method         backbone    adapters  TROA    decoders        paper
=============  ==========  ========  ======  ==============  ===================================
vtagml         frozen      yes       yes     as configured   the method (Sec. 3)
single_task    frozen      yes       n/a     as configured   the references of delta_m
                                                             (docs/settings.md, delta_m)
vanilla_mtl    frozen      no        no      per task        frozen-feature lower bound
finetune_mtl   trained     no        no      per task        "Vanilla MTL Swin [30]" (Tables
                                                             3 and 6: every weight trained)
=============  ==========  ========  ======  ==============  ===================================

**single_task.** VTAGML built for exactly one task: the same frozen backbone, adapter stack and
decoder. TROA is trivial for one task: omega is the 1 x 1 matrix [[1]] (a row is a distribution
over one task), the only gradient similarity is cos(g, g) = 1, and the mirror-descent step
``omega * exp(kappa * 1) / normaliser`` gives [[1]] again. The transformation therefore turns
TROA off (``adapter.troa=False``): omega stays at its uniform start, which *is* [[1]], and the
trainer skips the per-task gradient tracking that would change nothing. TAA still adds its
bias ``A * gamma(omega) + beta(omega)`` with omega = [1], so the attention is the same as in a
one-task VTAGML with TROA on. :func:`single_task_configs` gives the per-task configs a setting
trains to get the single-task references of delta_m. (The paper's "1-task Swin [30]" rows of
Tables 4-5 are fine-tuned Swins; the kit's single-task model keeps VTAGML's frozen backbone and
adapters, so that delta_m measures what sharing the adapters across tasks brings.)

**vanilla_mtl.** Frozen backbone, no adapters, one decoder (and head) per task. With the adapter
stack off, every decoder reads the frozen backbone's stage maps at strides 32, 16, 8, 4
(:class:`~vtagml_core.model.vtagml.VTAGML` does this wiring when ``adapter.enabled`` is False).
The adapter options do not apply, so the effective config carries the default
:class:`~vtagml_core.model.adapter.AdapterConfig` with ``enabled=False, troa=False``.

**finetune_mtl.** The same adapter-free network with the backbone trained too
(``backbone.frozen=False``): its parameters require grad, ``train()`` reaches it and its forward
keeps the graph. Features of a trainable backbone change every step, so precomputed (cached)
features are refused while training.

Decoders are per task for vanilla_mtl and finetune_mtl, as docs/settings.md, "The methods" defines them
(``decoder.shared`` is reset to False); vtagml and single_task keep the decoder as configured.
"""
from __future__ import annotations

import copy
from dataclasses import replace

from torch import Tensor, nn

from vtagml_core.model.adapter import AdapterConfig
from vtagml_core.model.backbone import BackboneOutput
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.tasks import parse_tasks, task_set_name

#: Parameter-report row of a backbone that trains (VTAGML's own row says "backbone (frozen)").
TRAINED_BACKBONE_ROW: str = "backbone (fine-tuned)"
#: Parameter-report row of a frozen backbone (the same name VTAGML.components uses).
FROZEN_BACKBONE_ROW: str = "backbone (frozen)"


def _require_frozen(config: ModelConfig, method: str) -> None:
    if not config.backbone.frozen:
        raise ValueError(
            f"method {method!r} keeps the backbone frozen (paper Sec. 3.1), but the config has "
            f"model.backbone.frozen=false; a trained backbone without adapters is the "
            f"'finetune_mtl' baseline. Set model.backbone.frozen=true or pick finetune_mtl."
        )


# ----------------------------------------------------------------- config transformations
def vtagml_config(config: ModelConfig) -> ModelConfig:
    """VTAGML as configured (a copy); refuses a trainable backbone."""
    _require_frozen(config, "vtagml")
    return copy.deepcopy(config)


def single_task_config(config: ModelConfig) -> ModelConfig:
    """One-task VTAGML: ``config.tasks`` must name exactly one task; TROA off (trivial, see above).

    Raises:
        ValueError: zero or several tasks (names :func:`single_task_configs`), or a trainable
            backbone.
    """
    tasks = parse_tasks(config.tasks)
    if len(tasks) != 1:
        raise ValueError(
            f"method 'single_task' builds a model for exactly one task, but model.tasks is "
            f"{config.tasks!r} ({len(tasks)} tasks: {', '.join(tasks)}); train one model per task "
            f"with single_task_configs(model_cfg), or set model.tasks to one of {', '.join(tasks)}"
        )
    _require_frozen(config, "single_task")
    out = copy.deepcopy(config)
    out.tasks = task_set_name(tasks)
    out.adapter.troa = False
    return out


def single_task_configs(config: ModelConfig) -> dict[str, ModelConfig]:
    """``{task: effective single-task config}`` for every task of ``config`` (canonical order).

    These are the reference models of delta_m (docs/settings.md, delta_m): the same backbone, adapters
    and decoder as ``config``, one task each.
    """
    return {t: single_task_config(replace(config, tasks=t)) for t in parse_tasks(config.tasks)}


def vanilla_mtl_config(config: ModelConfig) -> ModelConfig:
    """Frozen backbone, no adapters, per-task decoders (a copy of ``config`` so transformed)."""
    out = copy.deepcopy(config)
    out.backbone.frozen = True
    out.adapter = AdapterConfig(enabled=False, troa=False)
    out.decoder.shared = False
    return out


def finetune_mtl_config(config: ModelConfig) -> ModelConfig:
    """Trained backbone, no adapters, per-task decoders (a copy of ``config`` so transformed)."""
    out = vanilla_mtl_config(config)
    out.backbone.frozen = False
    return out


# ----------------------------------------------------------------- models
class SingleTaskVTAGML(VTAGML):
    """VTAGML for one task (see the module docstring). ``task`` names it."""

    def __init__(self, config: ModelConfig) -> None:
        if len(parse_tasks(config.tasks)) != 1 or config.adapter.troa:
            raise ValueError(
                "SingleTaskVTAGML needs a config from single_task_config(...) (one task, TROA "
                f"off); got tasks={config.tasks!r}, adapter.troa={config.adapter.troa}"
            )
        super().__init__(config)

    @property
    def task(self) -> str:
        return self.tasks[0]


class AdapterFreeMTL(VTAGML):
    """Backbone -> per-task decoders -> heads, no adapter layers (vanilla_mtl, finetune_mtl).

    Every decoder reads the backbone's stage maps ``(B, h_s, w_s, C_s)`` at strides 32 (input),
    16, 8 and 4 (skips). Whether the backbone trains is ``config.backbone.frozen``.
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.adapter.enabled or config.decoder.shared:
            raise ValueError(
                "AdapterFreeMTL needs a config from vanilla_mtl_config(...) or "
                "finetune_mtl_config(...) (adapter.enabled=false, decoder.shared=false); got "
                f"adapter.enabled={config.adapter.enabled}, decoder.shared={config.decoder.shared}"
            )
        super().__init__(config)

    def forward(
        self,
        images: Tensor,
        features: BackboneOutput | None = None,
        track_task_grads: bool = False,
    ) -> dict[str, Tensor]:
        """Raw per-task outputs ``{task: (B, K_t, H, W)}`` for ``images (B, 3, H, W)`` in [0, 1].

        Raises:
            ValueError: precomputed ``features`` while a trainable backbone is training (they
                would carry no gradient to the backbone and be stale after the first step).
        """
        if features is not None and self.training and not self.backbone.frozen:
            raise ValueError(
                "this model trains its backbone (backbone.frozen=false), so it must compute its "
                "features from the images while training; do not pass cached features (turn "
                "the feature cache off for finetune_mtl)"
            )
        return super().forward(images, features, track_task_grads)

    def components(self) -> dict[str, nn.Module]:
        """Named parts for the parameter report (Table 6); no adapter row (there are none)."""
        row = FROZEN_BACKBONE_ROW if self.backbone.frozen else TRAINED_BACKBONE_ROW
        parts: dict[str, nn.Module] = {row: self.backbone}
        for key, dec in self.decoder.decoders.items():
            parts[f"decoder[{key}]"] = dec
        parts["heads"] = self.decoder.heads
        return parts
