"""TAA inspection for notebook 03 (paper Sec. 3.2.2, Eq. 1-3).

For one adapter layer, one task t, one head and one query token, Eq. 2 gives the attention
row ``softmax(A'(omega_t)[q] + logits(q, k))``. :func:`attention_pair` returns it together
with the *plain* attention of Eq. 1, ``softmax(logits(q, k))``, and the bias row
``A'(omega_t)[q]``, all as ``(h, w)`` maps over the key tokens.

The plain row is recovered from the adapted one without a second forward: softmax is
invariant to adding a constant to all logits, so
``softmax(log p_TAA - A'[q]) = softmax(logits + A'[q] - logsumexp - A'[q]) = softmax(logits)``.
Subtracting the bias in log space undoes exactly what TAA added.

Every map here is the one the model computes: :func:`vtagml_core.viz.attention.attention_maps`
runs the adapter stack's forward with :func:`vtagml_core.model.taa.record_attention` on; the
bias comes from the public :meth:`~vtagml_core.model.taa.TaskAdaptedAttention.film_bias`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtagml_core.viz.attention import attention_layers, attention_maps

#: Probabilities are clamped at this before the log (a zero would give -inf).
PROB_FLOOR: float = 1e-30


@dataclass
class AttentionPair:
    """One query's attention rows as ``(h, w)`` maps over the key tokens.

    Attributes:
        plain: Eq. 1, ``softmax(q k^T / sqrt(c))`` (Swin V2: scaled cosine logits).
        adapted: Eq. 2, TAA with the bias ``A'(omega_t)``.
        bias: the bias row ``A'(omega_t)[q]`` (Eq. 3).
        query: ``(row, col)`` of the query token; grid: ``(h, w)``.
    """

    plain: Tensor
    adapted: Tensor
    bias: Tensor
    query: tuple[int, int]
    grid: tuple[int, int]


def plain_from_adapted(adapted: Tensor, bias: Tensor) -> Tensor:
    """Eq. 1's attention from Eq. 2's: ``softmax(log adapted - bias)`` over the last axis."""
    logp = adapted.double().clamp_min(PROB_FLOOR).log()
    return torch.softmax(logp - bias.double(), dim=-1).to(adapted.dtype)


@torch.no_grad()
def attention_pair(model, taps: list[Tensor], task: str, layer: int, head: int,
                   query: tuple[int, int]) -> AttentionPair:
    """Plain vs task-adapted attention of one query token of the first image of ``taps``.

    Args:
        model: a VTAGML model with adapters (its TROA omega conditions the bias).
        taps: ``model.encode(images).taps``.
        task, layer, head: which stream, adapter layer and head.
        query: ``(row, col)`` in the layer's token grid.

    Raises:
        ValueError: unknown task, layer, head, or a query outside the grid.
    """
    layers = attention_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer must be in 0..{len(layers) - 1}, got {layer}")
    info = layers[layer]
    h, w = info.grid
    row, col = query
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query token {query} is outside layer {layer}'s {h}x{w} grid")
    if not 0 <= head < info.num_heads:
        raise ValueError(f"head must be in 0..{info.num_heads - 1} for layer {layer}, got {head}")
    taa = model.adapter.layers[layer].taa
    adapted = attention_maps(model, taps, [task])[layer][0, 0, head]                # (L, L)
    cond = model.adapter.condition(task_ids=torch.tensor([model.tasks.index(task)]))  # (1, N)
    bias = taa.film_bias(cond)[0].to(adapted.dtype)                                 # (L, L)
    q = row * w + col
    plain = plain_from_adapted(adapted[q], bias[q])
    return AttentionPair(plain.reshape(h, w).cpu(), adapted[q].reshape(h, w).cpu(),
                         bias[q].reshape(h, w).cpu(), (row, col), (h, w))


@torch.no_grad()
def film_biases(model, layer: int) -> Tensor:
    """``A'(omega_t)`` of every task at adapter ``layer``, ``(N, L, L)`` (Eq. 3)."""
    cond = model.adapter.condition()      # (N, N) omega rows (or (N, E) task embeddings)
    return model.adapter.layers[layer].taa.film_bias(cond).detach().cpu()


@torch.no_grad()
def attention_shift(model, taps: list[Tensor], layer: int) -> Tensor:
    """How far TAA moves attention from Eq. 1, per task: ``(N,)`` mean total variation.

    For every task, image, head and query token of adapter ``layer``, the total variation
    ``1/2 sum_k |p_TAA[k] - p_plain[k]|`` between the adapted and the plain attention row,
    averaged (0 = the bias changes nothing, 1 = disjoint attention).
    """
    adapted = attention_maps(model, taps)[layer]                       # (N, B, H, L, L)
    bias = model.adapter.layers[layer].taa.film_bias(model.adapter.condition())  # (N, L, L)
    plain = plain_from_adapted(adapted, bias[:, None, None].to(adapted.dtype))
    tv = 0.5 * (adapted.double() - plain.double()).abs().sum(dim=-1)  # (N, B, H, L)
    return tv.mean(dim=(1, 2, 3)).float().cpu()


def bias_spread(biases: Tensor) -> float:
    """How much the tasks' biases differ: ``max |A'_t - mean_t A'_t|`` (0 = task-blind)."""
    return float((biases - biases.mean(dim=0, keepdim=True)).abs().max())


def total_variation(p: Tensor, q: Tensor) -> float:
    """``1/2 sum |p - q|`` between two distributions (0 = same, 1 = disjoint)."""
    return 0.5 * float((p.double() - q.double()).abs().sum())


__all__ = ["AttentionPair", "attention_pair", "attention_shift", "bias_spread", "film_biases",
           "plain_from_adapted", "total_variation"]
