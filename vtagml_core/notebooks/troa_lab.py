"""Small TROA experiments for notebook 02 (paper Sec. 3.2.1, Algorithm 1).

* A toy multitask problem with a 2-D shared parameter theta, so that every task gradient is
  an arrow in the plane and the cosine similarity of Algorithm 1 is the cosine of the angle
  between two arrows.
* :func:`replay_mirror_descent`: apply TROA's update rule
  (:func:`vtagml_core.model.troa.mirror_descent_update`) to a *recorded* sequence of
  similarity matrices with another step size or sign. In the real model omega feeds back into
  the attention (TAA), so a replay is a what-if for the update rule alone, with the gradients
  held fixed; it costs nothing and isolates the question "what does kappa / the sign do?".
* :func:`unrolled_affinity`: the closed form of many updates,
  ``omega[t] ∝ omega_0[t] * exp(sign * kappa * sum_i sim_i[t])``, which explains the collapse
  of each row onto its own task for ``sign = +1`` (``sim[t, t] = 1`` is the row maximum).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from vtagml_core.model.troa import mirror_descent_update, uniform_affinity

#: Names of the toy tasks.
TOY_TASKS: tuple[str, ...] = ("A", "B", "C", "D")
#: Direction (degrees) and length of each toy task's optimum c_n, seen from theta = 0:
#: A and B nearly agree, C is almost orthogonal to them, D points against A.
TOY_ANGLES_DEG: tuple[float, ...] = (0.0, 20.0, 100.0, 200.0)
TOY_LENGTHS: tuple[float, ...] = (1.0, 3.0, 0.5, 2.0)


def toy_centres() -> Tensor:
    """``(N, 2)`` optima c_n of the toy losses (lengths differ: cosines ignore magnitude)."""
    rad = torch.tensor(TOY_ANGLES_DEG, dtype=torch.float64) * math.pi / 180.0
    lengths = torch.tensor(TOY_LENGTHS, dtype=torch.float64)
    return torch.stack([rad.cos(), rad.sin()], dim=1) * lengths[:, None]


def toy_losses(theta: Tensor) -> Tensor:
    """``(N,)`` toy task losses ``L_n(theta) = 1/2 |theta - c_n|^2`` for a shared ``theta (2,)``.

    The gradient of L_n is ``theta - c_n``: an arrow pointing away from task n's optimum.
    """
    if theta.shape != (2,):
        raise ValueError(f"theta must be the shared 2-D parameter (2,), got {tuple(theta.shape)}")
    return 0.5 * ((theta[None, :] - toy_centres().to(theta.dtype)) ** 2).sum(dim=1)


def replay_mirror_descent(sims: Tensor, kappa: float = 1.0, sign: float = 1.0,
                          omega0: Tensor | None = None) -> Tensor:
    """Omega after each of the recorded steps, ``(S + 1, N, N)`` (index 0 = ``omega0``).

    Args:
        sims: ``(S, N, N)`` similarity matrices, one per step (e.g. a training record's).
        kappa, sign: the update's step size and sign (paper: 1 and, printed, -1).
        omega0: starting matrix; default uniform (Algorithm 1's initialisation).
    """
    if sims.dim() != 3 or sims.shape[1] != sims.shape[2]:
        raise ValueError(f"sims must be (S, N, N), got {tuple(sims.shape)}")
    omega = uniform_affinity(sims.shape[1]).double() if omega0 is None else omega0.double()
    out = [omega]
    for sim in sims.double():
        if torch.isnan(sim).any():
            raise ValueError("sims contain NaN: was TROA off during that run?")
        omega = mirror_descent_update(omega, sim, kappa, sign)
        out.append(omega)
    return torch.stack(out)


def unrolled_affinity(sims: Tensor, kappa: float = 1.0, sign: float = 1.0,
                      omega0: Tensor | None = None) -> Tensor:
    """Closed form of :func:`replay_mirror_descent`'s last matrix, ``(N, N)``.

    ``softmax_n(log omega0[t, n] + sign * kappa * sum_i sim_i[t, n])``: the per-step
    normalisers cancel, so S updates are one update with the summed similarities. (Equal to the
    replay up to the tiny floor the library keeps on entries.)
    """
    omega = uniform_affinity(sims.shape[1]).double() if omega0 is None else omega0.double()
    logits = omega.log() + float(sign) * kappa * sims.double().sum(dim=0)
    return torch.softmax(logits, dim=1)


def self_affinity(trajectory: Tensor) -> Tensor:
    """Mean diagonal ``mean_t omega[t, t]`` of every matrix of ``(S, N, N)`` -> ``(S,)``."""
    return torch.diagonal(trajectory, dim1=-2, dim2=-1).mean(dim=-1)


def steps_to_reach(curve: Tensor, threshold: float) -> int | None:
    """First index where ``curve >= threshold`` (None if never)."""
    hits = (curve >= threshold).nonzero()
    return int(hits[0]) if len(hits) else None


def asymmetry(omega: Tensor) -> float:
    """``max |omega - omega^T|``: 0 for a symmetric matrix."""
    return float((omega - omega.transpose(-2, -1)).abs().max())


__all__ = ["TOY_TASKS", "asymmetry", "replay_mirror_descent", "self_affinity", "steps_to_reach",
           "toy_centres", "toy_losses", "unrolled_affinity"]
