"""Checkers of the course exercises in notebooks 02-04 (TROA, TAA, TSN).

Each checker takes the student's function, runs it next to the library's implementation on
random inputs of several shapes and seeds (see :mod:`.harness`) and returns a
:class:`~.harness.CheckResult` that says ``PASS``, or what is wrong and a hint.

=========================  ==========================================  ====================
checker                    the student writes                           reference
=========================  ==========================================  ====================
check_cosine_similarity    ``f(grads (N, D)) -> sim (N, N)``             Algorithm 1, cossim
check_mirror_descent       ``f(omega, sim, kappa, sign) -> omega'``      Algorithm 1, update
check_film_bias            ``f(omega (T, N), A, W, b) -> A' (T, L, L)``  Eq. 3 (FiLM bias)
check_tsn                  ``f(a, omega~, gamma', beta', g, b, eps)``    Eq. 4 (TSN)
=========================  ==========================================  ====================

An exercise cell decorates the student's function with :func:`exercise` and the exercise's
name from :data:`EXERCISES` (``@exercise("film_bias")``): while the function still raises
``NotImplementedError`` the notebook goes on with the reference (and says so).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtagml_core.model.taa import FilmBias
from vtagml_core.model.troa import gradient_cosine_similarity, mirror_descent_update
from vtagml_core.model.tsn import LAYER_NORM_EPS, TaskScaledNorm

from .harness import Case, CheckResult, Exercise, Mistake, check_function, reference_fallback
from .setting_checkers import SETTING_EXERCISES
from .transfer_checkers import TRANSFER_EXERCISES

#: Row sums of an affinity matrix must be 1 within this.
ROW_SUM_TOL: float = 1e-4
#: Scale of the small activations in the TSN cases, where eps inside/outside the root matters.
SMALL_ACTIVATION: float = 1e-3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------- cosine similarity
def _cosine_cases() -> list[Case]:
    cases = []
    for seed, (n, d) in enumerate([(2, 5), (4, 32), (3, 1000)]):
        grads = torch.randn(n, d, generator=_gen(seed)) * torch.tensor([10.0 ** k for k in range(n)])[:, None]
        cases.append(Case((grads,), f"grads of shape ({n}, {d}) with norms 1 to 1e{n - 1}, seed {seed}"))
    zero = torch.randn(4, 16, generator=_gen(7))
    zero[2] = 0.0
    cases.append(Case((zero,), "grads (4, 16) where task 2's gradient is all zero"))
    return cases


def check_cosine_similarity(student: Callable[[Tensor], Tensor]) -> CheckResult:
    """Check ``student(grads (N, D)) -> (N, N)`` against Algorithm 1's gradient similarity."""
    ref = gradient_cosine_similarity

    def one_sided(g: Tensor) -> Tensor:
        return (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ g.T

    def diag_one(g: Tensor) -> Tensor:
        return ref(g).fill_diagonal_(1.0)

    mistakes = [
        Mistake("you returned the raw dot products g_t . g_n", lambda g: g @ g.T,
                "divide by both norms: cos = <g_t, g_n> / (|g_t| |g_n|)"),
        Mistake("you divided by one norm only", one_sided,
                "normalise both gradients: each row by its own norm, before the product"),
        Mistake("you returned 1 - cos (a distance), not the similarity", lambda g: 1 - ref(g),
                "Algorithm 1 uses the cosine similarity itself"),
        Mistake("a task with an all-zero gradient got similarity 1 with itself", diag_one,
                "convention: a zero gradient carries no signal, so its similarity is 0 with every "
                "task, itself included (then TROA leaves that row unchanged)"),
    ]
    return check_function(student, ref, _cosine_cases(), "gradient cosine similarity", mistakes,
                          shape_hint="the result is (N, N), one row and column per task: use "
                                     "grads @ grads.T, not grads.T @ grads")


# ----------------------------------------------------------------------- mirror descent
def _random_affinity(n: int, g: torch.Generator) -> Tensor:
    return torch.softmax(torch.randn(n, n, generator=g), dim=1)


def _random_similarity(n: int, g: torch.Generator) -> Tensor:
    s = torch.rand(n, n, generator=g) * 2 - 1
    s = (s + s.T) / 2
    return s.fill_diagonal_(1.0)


def _mirror_cases() -> list[Case]:
    cases = []
    for seed, (n, kappa, sign) in enumerate([(4, 1.0, 1.0), (3, 1.0, -1.0), (4, 0.5, 1.0),
                                             (6, 2.0, -1.0), (2, 0.25, 1.0)]):
        g = _gen(100 + seed)
        cases.append(Case((_random_affinity(n, g), _random_similarity(n, g), kappa, sign),
                          f"N={n}, kappa={kappa}, sign={sign:+.0f}, seed {100 + seed}"))
    return cases


def _rows_sum_to_one(out: Tensor, case: Case) -> str | None:
    sums = out.double().sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=ROW_SUM_TOL):
        return f"rows of omega must sum to 1 but sum to {[round(float(s), 4) for s in sums]}"
    return None


def check_mirror_descent(student: Callable[[Tensor, Tensor, float, float], Tensor]) -> CheckResult:
    """Check ``student(omega, sim, kappa, sign) -> new omega`` (Algorithm 1, last line)."""
    ref = mirror_descent_update

    def unnormalised(o, s, k, sign):
        return o * torch.exp(sign * k * s)

    mistakes = [
        Mistake("the sign is the wrong way round (or ignored)", lambda o, s, k, sign: ref(o, s, k, -sign),
                "multiply the similarities by `sign * kappa` inside the exp"),
        Mistake("rows are not normalised", unnormalised,
                "divide each row by its own sum so that it is a distribution again"),
        Mistake("you normalised the columns instead of the rows",
                lambda o, s, k, sign: unnormalised(o, s, k, sign) / unnormalised(o, s, k, sign).sum(0, keepdim=True),
                "sum over the last axis: `.sum(dim=1, keepdim=True)`"),
        Mistake("you normalised by the sum of the whole matrix",
                lambda o, s, k, sign: unnormalised(o, s, k, sign) / unnormalised(o, s, k, sign).sum(),
                "each row t is its own distribution: normalise row by row"),
        Mistake("the previous omega is missing (softmax of the similarities alone)",
                lambda o, s, k, sign: torch.softmax(sign * k * s, dim=1),
                "mirror descent multiplies the old row: omega[t] * exp(sign * kappa * sim[t])"),
        Mistake("kappa is ignored", lambda o, s, k, sign: ref(o, s, 1.0, sign),
                "the step size kappa multiplies the similarities inside the exp"),
    ]
    return check_function(student, ref, _mirror_cases(), "mirror-descent row update", mistakes,
                          shape_hint="omega keeps its (N, N) shape", extra_checks=[_rows_sum_to_one])


# ----------------------------------------------------------------------- FiLM bias (Eq. 3)
def _film_cases() -> list[Case]:
    cases = []
    for seed, (t, n, tokens) in enumerate([(1, 2, 4), (4, 4, 9), (3, 4, 16)]):
        g = _gen(200 + seed)
        omega = torch.softmax(torch.randn(t, n, generator=g), dim=1)
        A = torch.randn(tokens, tokens, generator=g)
        W = torch.randn(2 * tokens * tokens, n, generator=g) * 0.5
        b = torch.randn(2 * tokens * tokens, generator=g) * 0.5
        cases.append(Case((omega, A, W, b), f"T={t} tasks, N={n}, L={tokens} tokens, seed {200 + seed}"))
    return cases


def _film_reference(omega: Tensor, A: Tensor, W: Tensor, b: Tensor) -> Tensor:
    film = FilmBias(A.shape[0], omega.shape[1]).to(device=omega.device, dtype=omega.dtype)
    with torch.no_grad():
        film.A.copy_(A)
        film.film.weight.copy_(W)
        film.film.bias.copy_(b)
        return film(omega)


def _gamma_beta(omega: Tensor, A: Tensor, W: Tensor, b: Tensor, with_bias: bool = True):
    L = A.shape[0]
    out = omega @ W.T + (b if with_bias else 0.0)
    gamma, beta = out.view(-1, 2, L, L).unbind(dim=1)
    return gamma, beta


def check_film_bias(student: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> CheckResult:
    """Check ``student(omega (T, N), A (L, L), W (2L^2, N), b (2L^2,)) -> A' (T, L, L)`` (Eq. 3).

    The FiLM layer is ``gb = omega @ W.T + b`` viewed as ``(T, 2, L, L)``: ``gamma = gb[:, 0]``,
    ``beta = gb[:, 1]``; the kit's bias is ``A * (1 + gamma) + beta``.
    """
    def literal(o, A, W, b):
        gamma, beta = _gamma_beta(o, A, W, b)
        return A * gamma + beta

    def swapped(o, A, W, b):
        gamma, beta = _gamma_beta(o, A, W, b)
        return A * (1 + beta) + gamma

    def no_beta(o, A, W, b):
        gamma, _ = _gamma_beta(o, A, W, b)
        return A * (1 + gamma)

    def no_film_bias(o, A, W, b):
        gamma, beta = _gamma_beta(o, A, W, b, with_bias=False)
        return A * (1 + gamma) + beta

    def matmul(o, A, W, b):
        gamma, beta = _gamma_beta(o, A, W, b)
        return A @ (1 + gamma) + beta

    mistakes = [
        Mistake("you used Eq. 3 literally, A * gamma + beta", literal,
                "the kit uses residual FiLM, A * (1 + gamma) + beta, so that A' = A when the FiLM "
                "output is zero (see the TAA docstring for why)"),
        Mistake("gamma and beta are swapped", swapped,
                "after .view(T, 2, L, L), index 0 is gamma (the scale) and index 1 is beta"),
        Mistake("the shift beta is missing", no_beta, "add beta(omega_t) after scaling A"),
        Mistake("the FiLM layer's bias b is missing", no_film_bias,
                "FiLM is an affine map: omega @ W.T + b"),
        Mistake("A is matrix-multiplied with the scale", matmul,
                "FiLM scales element-wise: A * (1 + gamma), not A @ (1 + gamma)"),
    ]
    return check_function(student, _film_reference, _film_cases(), "FiLM bias A'(omega_t)",
                          mistakes, shape_hint="one (L, L) bias per task: (T, L, L)")


# ----------------------------------------------------------------------- TSN (Eq. 4)
def _tsn_cases() -> list[Case]:
    cases = []
    shapes = [(1, 1, 4, 8, 1.0), (2, 3, 5, 16, 1.0), (4, 2, 16, 32, 1.0), (2, 2, 6, 8, SMALL_ACTIVATION)]
    for seed, (t, b, tokens, c, scale) in enumerate(shapes):
        g = _gen(300 + seed)
        a = (torch.randn(t, b, tokens, c, generator=g) + 0.5) * scale
        omega_tilde = torch.randn(t, b, tokens, c, generator=g)
        gamma_p = 1.0 + 0.3 * torch.randn(c, generator=g)
        beta_p = 0.3 * torch.randn(c, generator=g)
        film_scale, film_shift = nn.Linear(c, c), nn.Linear(c, c)
        with torch.no_grad():
            for layer in (film_scale, film_shift):
                layer.weight.copy_(0.2 * torch.randn(c, c, generator=g))
                layer.bias.copy_(0.2 * torch.randn(c, generator=g))
        label = f"a of shape ({t}, {b}, {tokens}, {c}), activations of scale {scale:g}, seed {300 + seed}"
        cases.append(Case((a, omega_tilde, gamma_p, beta_p, film_scale, film_shift, LAYER_NORM_EPS),
                          label))
    return cases


def _tsn_reference(a, omega_tilde, gamma_p, beta_p, film_scale, film_shift, eps):
    tsn = TaskScaledNorm(a.shape[-1], gamma_p, beta_p, eps=eps).to(device=a.device, dtype=a.dtype)
    tsn.film_scale.load_state_dict(film_scale.state_dict())
    tsn.film_shift.load_state_dict(film_shift.state_dict())
    with torch.no_grad():
        return tsn(a, omega_tilde)


def _tsn_variant(normed: str = "ln", scale: str = "residual", shift: str = "both",
                 cond: str = "omega"):
    """A TSN computed with one deliberate change (for the mistakes list)."""
    def compute(a, omega_tilde, gamma_p, beta_p, film_scale, film_shift, eps):
        with torch.no_grad():
            if normed == "ln":
                x = F.layer_norm(a, (a.shape[-1],), eps=eps)
            elif normed == "unbiased":
                x = (a - a.mean(-1, keepdim=True)) / torch.sqrt(a.var(-1, keepdim=True) + eps)
            elif normed == "eps_outside":
                x = (a - a.mean(-1, keepdim=True)) / (a.var(-1, keepdim=True, unbiased=False).sqrt() + eps)
            elif normed == "tokens":
                x = (a - a.mean(-2, keepdim=True)) / torch.sqrt(a.var(-2, keepdim=True, unbiased=False) + eps)
            else:  # "none"
                x = a
            c = omega_tilde if cond == "omega" else a
            g, b = film_scale(c), film_shift(c)
            s = {"residual": gamma_p * (1 + g), "plain": gamma_p * g,
                 "beta_inside": gamma_p * (1 + g) + beta_p}[scale]
            t = {"both": beta_p + b, "no_beta_p": b, "no_task": beta_p,
                 "task_only": b}[shift]
            return x * s + t
    return compute


def check_tsn(student: Callable[..., Tensor]) -> CheckResult:
    """Check ``student(a, omega_tilde, gamma_p, beta_p, film_scale, film_shift, eps)`` (Eq. 4).

    The kit's TSN: ``(a - mu) / sqrt(var + eps) * gamma' * (1 + g(omega~)) + beta' + b(omega~)``,
    with mu and the biased variance over the channels (last axis) as in LayerNorm, and
    ``g = film_scale``, ``b = film_shift`` (callables on ``omega~``).
    """
    mistakes = [
        Mistake("you used the unbiased variance (torch.var's default)", _tsn_variant(normed="unbiased"),
                "LayerNorm uses the biased variance: a.var(-1, keepdim=True, unbiased=False)"),
        Mistake("eps is outside the square root", _tsn_variant(normed="eps_outside"),
                "divide by sqrt(var + eps), as LayerNorm does"),
        Mistake("you normalised over the tokens instead of the channels", _tsn_variant(normed="tokens"),
                "mu and sigma are taken over the channels, the last axis (dim=-1)"),
        Mistake("the activation is not normalised", _tsn_variant(normed="none"),
                "first (a - mu) / sigma, then the task scale and shift"),
        Mistake("the scale lacks the residual 1 + g", _tsn_variant(scale="plain"),
                "the kit's scale is gamma' * (1 + g(omega~)), so TSN starts as the LayerNorm"),
        Mistake("beta' is inside the scale (Eq. 4 read literally)", _tsn_variant(scale="beta_inside"),
                "the kit keeps beta' in the shift, where a LayerNorm has it: "
                "scale gamma' * (1 + g), shift beta' + b"),
        Mistake("beta' (the LayerNorm bias) is missing from the shift", _tsn_variant(shift="no_beta_p"),
                "the shift is beta' + b(omega~)"),
        Mistake("the task shift b(omega~) is missing", _tsn_variant(shift="no_task"),
                "the shift is beta' + b(omega~)"),
        Mistake("the FiLM maps were applied to a instead of omega~", _tsn_variant(cond="a"),
                "g and b modulate by the FFN residual output omega~_t (Eq. 4)"),
    ]
    return check_function(student, _tsn_reference, _tsn_cases(), "task-scaled normalization",
                          mistakes, shape_hint="TSN keeps the shape of a: (T, B, L, C)")


# ----------------------------------------------------------------------- the exercises
#: Every exercise by the name an exercise cell gives :func:`exercise`.
EXERCISES: dict[str, Exercise] = {
    "cosine_similarity": Exercise(check_cosine_similarity, gradient_cosine_similarity,
                                  "gradient cosine similarity", _cosine_cases),
    "mirror_descent": Exercise(check_mirror_descent, mirror_descent_update,
                               "mirror-descent row update", _mirror_cases),
    "film_bias": Exercise(check_film_bias, _film_reference, "FiLM bias A'(omega_t)", _film_cases),
    "tsn": Exercise(check_tsn, _tsn_reference, "task-scaled normalization", _tsn_cases),
    **SETTING_EXERCISES,  # notebooks 05, 07, 09, 10
    **TRANSFER_EXERCISES,  # notebooks 06, 08
}


def exercise(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator of an exercise function: fall back to the reference while it is unsolved.

    ``@exercise("film_bias")`` above ``def my_film_bias(...)`` keeps the student's function
    (the checker judges it), but while it raises ``NotImplementedError`` the call returns the
    library's answer and prints once "using the reference solution: your answer is missing",
    so the cells after the exercise still run.

    Raises:
        KeyError: ``name`` is not an exercise (the message lists them).
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise named {name!r}; exercises: {', '.join(EXERCISES)}")
    ex = EXERCISES[name]

    def decorate(student: Callable[..., Any]) -> Callable[..., Any]:
        return reference_fallback(student, ex.reference, ex.title)

    return decorate


__all__ = ["EXERCISES", "Exercise", "check_cosine_similarity", "check_film_bias",
           "check_mirror_descent", "check_tsn", "exercise"]
