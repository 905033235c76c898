"""AutoTaskFormer's cell space search, as a **random-search stand-in** (not the paper's method).

The paper (Liu et al., "AutoTaskFormer: Searching Vision Transformers for Multi-task Learning", Eq. 6-7, App. B.4-B.5) trains a one-shot
elastic supernet and searches the widths and depths of the union skeleton's cells with an
evolutionary algorithm. :func:`random_width_search` samples a few width/depth configurations
of the branches of a fixed skeleton (:meth:`~.autotaskformer.AutoTaskFormer.skeleton`), trains
each briefly and keeps the best; everything it returns carries :data:`RANDOM_SEARCH_LABEL`.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import torch
from torch import Tensor

from vtagml_core.model.params import count_parameters

from .autotaskformer import AutoTaskFormer

#: Label attached to everything :func:`random_width_search` returns.
RANDOM_SEARCH_LABEL: str = "random-search stand-in, not the paper's one-shot elastic supernet"


@dataclass
class WidthSearchResult:
    """What :func:`random_width_search` found. ``label`` says it is the stand-in.

    ``candidates``: one dict per sampled configuration: ``widths``, ``depths`` (per exit, None
    for unused exits), ``trainable_params``, ``within_budget``, ``score`` (held-out total loss
    after the short training; None when over budget). ``best``: the winning candidate;
    ``model``: its network, trained for the search's few steps only.
    """

    label: str
    skeleton: dict[str, int]
    candidates: list[dict] = field(default_factory=list)
    best: dict | None = None
    model: AutoTaskFormer | None = None


def random_width_search(
    model: AutoTaskFormer,
    batches: Iterable[dict],
    loss_fn: Callable[[dict[str, Tensor], dict], tuple[Tensor, dict[str, Tensor]]],
    candidates: int = 4,
    steps: int = 2,
    budget: int | None = None,
    width_choices: tuple[int, ...] = (32, 48, 64),
    depth_choices: tuple[int, ...] = (1, 2),
    lr: float = 1e-3,
    seed: int = 0,
) -> WidthSearchResult:
    """Pick branch widths/depths for ``model``'s skeleton: **random-search stand-in, not the
    paper's one-shot elastic supernet** (AutoTaskFormer's cell search, Eq. 6-7, App. B.4-B.5).

    Samples ``candidates`` configurations (a width and a depth per used exit), skips those whose
    trainable parameters exceed ``budget``, trains each of the others for ``steps`` Adam steps
    on the same batches (fresh weights, the same backbone), scores it by the total loss on one
    more held-out batch, and returns the lowest score. Few steps rank configurations only
    roughly; train the winner fully afterwards.

    Args:
        model: a supernet (its skeleton is taken by argmax) or a derived network.
        batches: iterator of batches following the data contract; ``steps + 1`` are drawn.
        loss_fn: ``(outputs, batch) -> (total, per_task)``, e.g. :class:`MultiTaskLoss`.
        budget: maximum trainable parameters; None = no limit.

    Raises:
        ValueError: too few batches, or no candidate fits the budget.
    """
    if candidates < 1 or steps < 0:
        raise ValueError(f"need candidates >= 1 and steps >= 0, got {candidates}, {steps}")
    skeleton = model.skeleton()
    used = sorted(set(skeleton.values()))
    it = iter(batches)
    drawn = [b for _, b in zip(range(steps + 1), it)]
    if len(drawn) < steps + 1:
        raise ValueError(f"random_width_search needs {steps + 1} batches ({steps} to train, 1 to "
                         f"score), the iterator gave {len(drawn)}")
    device = next(model.parameters()).device
    frozen = model.backbone.frozen
    with torch.no_grad():  # a frozen backbone gives the same features to every candidate
        feats = [model.encode(b["image"]) if frozen else None for b in drawn]
    rng = random.Random(seed)
    result = WidthSearchResult(label=RANDOM_SEARCH_LABEL, skeleton=skeleton)
    best_model = None
    for c in range(candidates):
        widths = [rng.choice(width_choices) if s in used else None for s in range(model.num_exits)]
        depths = [rng.choice(depth_choices) if s in used else None for s in range(model.num_exits)]
        cfg = replace(model.family_config, exits=skeleton,
                      branch_widths=[w or model.family_config.width for w in widths],
                      branch_depths=[d if d is not None else model.family_config.depth for d in depths])
        torch.manual_seed(seed + c)
        # a frozen backbone is shared by every candidate; a fine-tuned one is copied
        backbone = model.backbone if frozen else copy.deepcopy(model.backbone)
        cand = AutoTaskFormer(model.config, cfg, backbone=backbone).to(device)
        params = count_parameters(cand)[1]
        row = {"label": RANDOM_SEARCH_LABEL, "widths": widths, "depths": depths,
               "trainable_params": params, "within_budget": budget is None or params <= budget,
               "score": None}
        result.candidates.append(row)
        if not row["within_budget"]:
            continue
        opt = torch.optim.Adam([p for p in cand.parameters() if p.requires_grad], lr=lr)
        cand.train()
        for batch, f in zip(drawn[:steps], feats[:steps]):
            total, _ = loss_fn(cand(batch["image"], features=f), batch)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        cand.eval()
        with torch.no_grad():
            row["score"] = float(loss_fn(cand(drawn[-1]["image"], features=feats[-1]), drawn[-1])[0])
        if result.best is None or row["score"] < result.best["score"]:
            result.best, best_model = row, cand
    if result.best is None:
        smallest = min(r["trainable_params"] for r in result.candidates)
        raise ValueError(f"no candidate fits the budget of {budget:,} trainable parameters (smallest "
                         f"sampled: {smallest:,}); raise the budget or add smaller width_choices")
    result.model = best_model
    return result


__all__ = ["RANDOM_SEARCH_LABEL", "WidthSearchResult", "random_width_search"]
