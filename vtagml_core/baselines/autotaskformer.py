"""AutoTaskFormer (Liu et al., 2023), reduced, as a kit baseline: per-task skeleton search.

Paper: Liu et al., "AutoTaskFormer: Searching Vision Transformers for Multi-task Learning". The paper searches (1) a **skeleton** per
task, i.e. at which layer of a shared Swin encoder-decoder the task's head attaches, relaxed
with Gumbel-softmax during supernet training (Sec. 3.4, Eq. 4-5), then fixed by argmax and
merged into the union of all tasks' skeletons ("Skeleton Space Search"); and (2) the widths and
depths of the cells of that union with a one-shot elastic supernet and evolutionary search
("Cell Space Search", Eq. 6-7, App. B.4-B.5).

The kit's reduced version, on a frozen (or fine-tuned) backbone:

=================================  ==========================================================
paper                               here
=================================  ==========================================================
skeleton space (Sec. 3.3, Fig. 5)   single-scale skeletons whose exit is one of the backbone's
                                    four stage maps (strides 4, 8, 16, 32); each exit has a
                                    light branch (:class:`ExitBranch`: LayerNorm, linear, Swin
                                    V2 blocks, linear, upsampling to stride 4) shared by every
                                    task that exits there, and each task has one head
Eq. 4 Gumbel-softmax relaxation     per task, learnable logits over the exits;
                                    ``F.gumbel_softmax(logits, tau, hard=False)`` in training,
                                    ``tau`` annealed from ``tau_start`` (paper: 5) towards
                                    ``tau_end`` over ``anneal_steps`` training forwards
                                    (:meth:`AutoTaskFormer.temperature_at`), or fixed with
                                    :meth:`AutoTaskFormer.set_temperature`
Eq. 5 weighted loss                 the task's head reads the Gumbel-weighted sum of the exit
                                    features ``sum_s u'_{s,k} f_s`` (see below)
skeleton search: argmax + union     :meth:`AutoTaskFormer.skeleton` and
                                    :meth:`AutoTaskFormer.derive` (a new network holding only
                                    the used branches, weights inherited)
cell space search (one-shot         :func:`~.autotaskformer_search.random_width_search`: a
elastic supernet + evolution)       **random-search stand-in, not the paper's one-shot elastic
                                    supernet** (see there)
=================================  ==========================================================

What the kit simplified, and why:

* Eq. 5 weights the *losses* of every (exit, task) pair, ``sum_s u'_{s,k} L_{s,k}``, which needs
  one head evaluation and one loss per exit and task. The kit's trainer computes one loss per
  task from one prediction, so here the relaxation sits on the *features* the head reads
  (DARTS-style mixing). As the temperature falls ``u'`` becomes one-hot and both coincide.
* In eval mode (and in a derived network) the choice is discrete: each task uses its argmax
  exit, the paper's inference rule.
* Skeletons are single exits on the frozen backbone's stages, not paths through a searchable
  encoder-decoder: with a frozen backbone only the part after the exit can be searched.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import SwinTransformerV2Block
from torch import Tensor, nn

from vtagml_core.model.backbone import BackboneOutput, FrozenBackbone
from vtagml_core.model.params import count_parameters
from vtagml_core.model.vtagml import ModelConfig

from .common import (
    FullResHeads,
    PeerModel,
    default_width,
    head_input_size,
    heads_for,
    init_linear_,
    nhwc_to_nchw,
    resize,
)

@dataclass
class AutoTaskFormerConfig:
    """AutoTaskFormer's own settings (the rest comes from :class:`ModelConfig`).

    Attributes:
        width: default channels of every exit branch; None = ``default_width(backbone)``
            (64 for the tiny Swin V2, 256 for Swin-B).
        depth: default Swin V2 blocks per exit branch (0: projection only).
        head_dim: channels of every branch's output (what the task heads read); None = as
            ``width``'s default.
        window_size, mlp_ratio: of the branches' Swin V2 blocks.
        tau_start, tau_end, anneal_steps: Gumbel-softmax temperature schedule, exponential
            from ``tau_start`` to ``tau_end`` over ``anneal_steps`` training forward passes
            (paper: from 5 "gradually" to 0; set ``anneal_steps`` to the run's step count).
        exits: a fixed skeleton ``{task: exit index}`` (a derived network); None = search.
        branch_widths, branch_depths: per exit (4 entries) overrides of ``width``/``depth``,
            as chosen by :func:`random_width_search`; None = the defaults.
    """

    width: int | None = None
    depth: int = 2
    head_dim: int | None = None
    window_size: int = 8
    mlp_ratio: float = 4.0
    tau_start: float = 5.0
    tau_end: float = 0.1
    anneal_steps: int = 64
    exits: dict[str, int] | None = None
    branch_widths: list[int] | None = None
    branch_depths: list[int] | None = None

    def resolved(self, backbone: FrozenBackbone) -> "AutoTaskFormerConfig":
        """A copy with the None widths filled in from the backbone."""
        width = default_width(backbone)
        return replace(self, width=self.width if self.width is not None else width,
                       head_dim=self.head_dim if self.head_dim is not None else width)

    def validate(self, num_exits: int) -> None:
        """Raise ValueError naming the field when a (resolved) setting is out of range."""
        for name in ("width", "head_dim", "window_size", "anneal_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"AutoTaskFormerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise ValueError(f"AutoTaskFormerConfig.depth must be >= 0, got {self.depth}")
        if not 0 < self.tau_end <= self.tau_start:
            raise ValueError(f"temperatures must satisfy 0 < tau_end <= tau_start, got "
                             f"tau_start={self.tau_start}, tau_end={self.tau_end}")
        for name in ("branch_widths", "branch_depths"):
            values = getattr(self, name)
            if values is not None and len(values) != num_exits:
                raise ValueError(f"AutoTaskFormerConfig.{name} needs one entry per exit "
                                 f"({num_exits}), got {values}")
        if self.exits is not None:
            bad = {t: s for t, s in self.exits.items() if not 0 <= int(s) < num_exits}
            if bad:
                raise ValueError(f"AutoTaskFormerConfig.exits: {bad} not in 0..{num_exits - 1}")

    def exit_width(self, s: int) -> int:
        return self.branch_widths[s] if self.branch_widths is not None else self.width

    def exit_depth(self, s: int) -> int:
        return self.branch_depths[s] if self.branch_depths is not None else self.depth


class ExitBranch(nn.Module):
    """The light branch after one exit: ``(B, h, w, C_s)`` -> ``(B, head_dim, H/4, W/4)``.

    LayerNorm and linear ``C_s -> width``, ``depth`` Swin V2 blocks (regular then shifted
    windows) on the exit's grid, linear ``width -> head_dim``, bilinear upsampling to stride 4.
    """

    def __init__(self, in_channels: int, grid: tuple[int, int], out_size: tuple[int, int],
                 width: int, depth: int, head_dim: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.out_size = out_size
        self.proj = nn.Sequential(nn.LayerNorm(in_channels), nn.Linear(in_channels, width))
        self.blocks = nn.Sequential(*(
            SwinTransformerV2Block(dim=width, input_resolution=grid, num_heads=heads_for(width),
                                   window_size=window_size,
                                   shift_size=0 if j % 2 == 0 else window_size // 2,
                                   mlp_ratio=mlp_ratio)
            for j in range(depth)
        ))
        self.out = nn.Linear(width, head_dim)
        init_linear_(self)

    def forward(self, x: Tensor) -> Tensor:
        return resize(nhwc_to_nchw(self.out(self.blocks(self.proj(x)))), self.out_size)


class ExitChoice(nn.Module):
    """Per-task distribution over exits (Eq. 4): learnable logits ``log pi (T, S)``.

    :meth:`sample` draws the relaxed one-hot ``u'`` with Gumbel noise at temperature ``tau``;
    :meth:`argmax` gives the discrete choice U used for inference and for the derived network.
    Logits start at zero: every exit equally likely.
    """

    def __init__(self, num_tasks: int, num_exits: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_tasks, num_exits))

    def sample(self, tau: float) -> Tensor:
        """``u' (T, S)``, rows sum to 1, differentiable w.r.t. the logits."""
        return F.gumbel_softmax(self.logits, tau=tau, hard=False, dim=-1)

    def probabilities(self) -> Tensor:
        """``pi = softmax(logits)``, ``(T, S)``, no gradient."""
        return torch.softmax(self.logits.detach(), dim=-1)

    def argmax(self) -> list[int]:
        return [int(i) for i in self.logits.detach().argmax(dim=-1)]


class AutoTaskFormer(PeerModel):
    """AutoTaskFormer (reduced) with VTAGML's interface; see the module docstring.

    A *supernet* (``family.exits is None``) holds a branch per exit and learnable exit logits
    per task; :meth:`derive` turns it into a network with a fixed skeleton that holds only the
    branches some task uses.

    Args:
        config: the shared :class:`ModelConfig` (tasks, classes, backbone).
        family: AutoTaskFormer's settings; default ``config.autotaskformer`` when the model
            config has such a field, else :class:`AutoTaskFormerConfig()`.
        backbone: an already built backbone to use (see :class:`PeerModel`).

    Attributes:
        branches: ``nn.ModuleDict`` exit index (as str) -> :class:`ExitBranch`.
        exit_choice: :class:`ExitChoice` (supernet only; None in a derived network).
        search_step: training forward passes so far (drives the temperature schedule).
        heads: per-task :class:`FullResHeads`.
    """

    method = "autotaskformer"

    def __init__(self, config: ModelConfig, family: AutoTaskFormerConfig | None = None,
                 backbone: FrozenBackbone | None = None) -> None:
        super().__init__(config, backbone)
        cfg = family if family is not None else getattr(config, "autotaskformer", None) or AutoTaskFormerConfig()
        cfg = cfg.resolved(self.backbone)
        strides, channels = self.backbone.stage_strides, self.backbone.stage_channels
        self.num_exits = len(strides)
        cfg.validate(self.num_exits)
        self.family_config = cfg
        self.exit_strides = list(strides)
        if cfg.exits is not None:
            missing = [t for t in self.tasks if t not in cfg.exits]
            if missing:
                raise ValueError(f"AutoTaskFormerConfig.exits has no exit for task(s) {missing}")
            self.fixed_exits: dict[str, int] | None = {t: int(cfg.exits[t]) for t in self.tasks}
            used = sorted(set(self.fixed_exits.values()))
        else:
            self.fixed_exits = None
            used = list(range(self.num_exits))
        out_size = head_input_size(self.img_size)
        self.branches = nn.ModuleDict({
            str(s): ExitBranch(channels[s], (self.img_size // strides[s], self.img_size // strides[s]),
                               out_size, cfg.exit_width(s), cfg.exit_depth(s), cfg.head_dim,
                               cfg.window_size, cfg.mlp_ratio)
            for s in used
        })
        self.exit_choice = ExitChoice(len(self.tasks), self.num_exits) if self.fixed_exits is None else None
        self.register_buffer("search_step", torch.zeros((), dtype=torch.long))
        self._manual_tau: float | None = None
        self.heads = FullResHeads(self.tasks, cfg.head_dim, self.num_classes)

    # ------------------------------------------------------------------ temperature
    def temperature_at(self, step: int) -> float:
        """Exponential annealing ``tau_start * (tau_end / tau_start) ** min(1, step / anneal_steps)``."""
        cfg = self.family_config
        frac = min(1.0, max(0, step) / cfg.anneal_steps)
        return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** frac

    @property
    def temperature(self) -> float:
        """The temperature of the next training forward (manual value if one was set)."""
        return self._manual_tau if self._manual_tau is not None else self.temperature_at(int(self.search_step))

    def set_temperature(self, tau: float | None) -> None:
        """Fix the Gumbel-softmax temperature to ``tau`` (> 0); ``None`` returns to the schedule."""
        if tau is not None and tau <= 0:
            raise ValueError(f"Gumbel-softmax temperature must be > 0, got {tau}")
        self._manual_tau = tau

    # ------------------------------------------------------------------ skeleton
    @property
    def is_supernet(self) -> bool:
        return self.fixed_exits is None

    def sample_exit_weights(self, tau: float | None = None) -> Tensor:
        """One Gumbel-softmax sample ``u' (T, S)`` (Eq. 4); rows sum to 1; differentiable."""
        if self.exit_choice is None:
            raise RuntimeError("a derived AutoTaskFormer has a fixed skeleton; nothing to sample")
        return self.exit_choice.sample(self.temperature if tau is None else tau)

    def exit_probabilities(self) -> dict[str, list[float]]:
        """``softmax(logits)`` per task (the distribution pi of Eq. 4), for reports."""
        if self.exit_choice is None:
            return {t: [float(s == e) for s in range(self.num_exits)] for t, e in self.skeleton().items()}
        return {t: [float(p) for p in row] for t, row in zip(self.tasks, self.exit_choice.probabilities())}

    def skeleton(self) -> dict[str, int]:
        """Chosen exit per task: the fixed one, or the argmax of the logits (skeleton search)."""
        if self.fixed_exits is not None:
            return dict(self.fixed_exits)
        return dict(zip(self.tasks, self.exit_choice.argmax()))

    def skeleton_report(self) -> dict[str, dict]:
        """Per task: exit index, stride, trainable parameters of its branch and of its head.

        A branch shared by several tasks is counted in each of their rows; the union's total is
        :meth:`parameter_report`'s.
        """
        report = {}
        for task, s in self.skeleton().items():
            branch = self.branches[str(s)]
            head = [self.heads.coarse[task], self.heads.fine[task]]
            report[task] = {
                "exit": s,
                "stride": self.exit_strides[s],
                "branch_params": count_parameters(branch)[1],
                "head_params": sum(count_parameters(m)[1] for m in head),
            }
        return report

    def derive(self) -> "AutoTaskFormer":
        """Skeleton search (argmax, then union): a network with only the used branches.

        Branch, head and backbone weights are inherited from this model; the result's forward
        equals this model's eval-mode forward.
        """
        cfg = replace(self.family_config, exits=self.skeleton())
        derived = AutoTaskFormer(self.config, cfg, backbone=copy.deepcopy(self.backbone))
        own = self.state_dict()
        wanted = derived.state_dict()
        derived.load_state_dict({k: own[k] for k in wanted})
        return derived.to(next(self.parameters()).device)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, features: BackboneOutput | None = None,
                track_task_grads: bool = False) -> dict[str, Tensor]:
        """``images (B, 3, H, W)`` -> ``{task: (B, K_t, H, W)}``; ``track_task_grads`` is ignored.

        Supernet in training mode: every exit branch runs and each task's head reads the
        Gumbel-weighted sum of their outputs; one training forward advances ``search_step``.
        Otherwise: each task reads its chosen exit only.
        """
        feats = self._features(images, features)
        if self.is_supernet and self.training:
            weights = self.sample_exit_weights()                                  # (T, S)
            with torch.no_grad():
                self.search_step += 1
            outs = torch.stack([self.branches[str(s)](feats.stages[s]) for s in range(self.num_exits)])
            head_in = {t: torch.einsum("s,sbchw->bchw", weights[i], outs) for i, t in enumerate(self.tasks)}
        else:
            chosen = self.skeleton()
            outs = {s: self.branches[str(s)](feats.stages[s]) for s in sorted(set(chosen.values()))}
            head_in = {t: outs[s] for t, s in chosen.items()}
        return self.heads(head_in, images)

    def components(self) -> dict[str, nn.Module]:
        parts: dict[str, nn.Module] = {self.backbone_label(): self.backbone}
        for s, branch in self.branches.items():
            parts[f"exit branch {s} (stride {self.exit_strides[int(s)]})"] = branch
        parts["heads"] = self.heads
        if self.exit_choice is not None:  # the architecture logits train too
            parts["exit logits"] = self.exit_choice
        return parts
