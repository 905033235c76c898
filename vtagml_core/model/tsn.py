"""TSN: Task-Scaled Normalization (paper Sec. 3.2.3, Eq. 4).

Eq. 4, for task t:

    ``TSN_t = (a_t - mu) / sigma * gammahat_t(omega~_t) + beta_t(omega~_t)``,
    ``gammahat_t(omega~_t) = gamma' * gamma_t(omega~_t) + beta'``,

with ``a_t`` the activation after the attention residual, ``omega~_t`` the output of the
FFN residual (Fig. 3), mu, sigma the LayerNorm statistics of ``a_t`` over channels, and
``gamma'``, ``beta'`` the backbone LayerNorm's weight and bias, trained here (the paper's
point 1: LayerNorm keeps them fixed, TSN trains them).

**Form implemented** (Eq. 4 is ambiguous about where beta' enters):

    ``TSN_t = (a_t - mu) / sigma * gamma' * (1 + g(omega~_t)) + beta' + b(omega~_t)``,

where ``g, b`` are FiLM maps (one linear layer ``C -> C`` each, applied per token),
zero-initialised. Reading: the scale ``gammahat`` is gamma' modulated by the task (residual
FiLM, as in TAA), and beta' stays where a LayerNorm puts it, in the shift, next to the task
shift ``beta_t``. Why: with zero FiLM output this *is* the backbone LayerNorm (Eq. 4 with
``gamma_t = 1, beta_t = 0`` only reduces to a LayerNorm if beta' leaves the scale), and a
bias inside a scale has no LayerNorm counterpart.

The official code (IVRL/VTAGML ``TaskScaledNorm``) instead builds the LayerNorm *weight* as
``(1 + gamma(e_t)) * w + beta(e_t)`` from a task embedding ``e_t`` (one FiLM per task, not
per token) and keeps the LayerNorm bias as is; it also equals the LayerNorm at init. The two
differ in what the FiLM shift moves (the scale there, the output here) and in the
conditioning (per task there, per token ``omega~_t`` here, as Eq. 4 writes it).

``enabled=False`` (TSN-off ablation) is the plain backbone LayerNorm, weight and bias fixed
as the paper describes LayerNorm ("kept fixed"), and ``omega~`` is ignored. The adapter layer
then feeds it the FFN residual ``omega~_t`` instead of ``a_t``
(:meth:`vtagml_core.model.adapter_layer.AdapterLayer.parts`): with TSN the FFN acts through the
modulation, without TSN it must reach the output directly, or the ablation would also remove
the FFN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: LayerNorm epsilon of timm's Swin V2 blocks (nn.LayerNorm default).
LAYER_NORM_EPS: float = 1e-5


class TaskScaledNorm(nn.Module):
    """Task-Scaled Normalization of ``a_t`` conditioned on ``omega~_t`` (Eq. 4), per stream.

    Args:
        dim: channels C.
        init_weight: ``(C,)`` backbone LayerNorm weight (gamma'), copied, then trained.
        init_bias: ``(C,)`` backbone LayerNorm bias (beta'), copied, then trained.
        eps: LayerNorm epsilon.
        enabled: False gives a plain, fixed LayerNorm with ``init_weight``/``init_bias`` of
            its first argument (the adapter layer passes ``omega~_t`` there, see the module
            docstring).
    """

    def __init__(
        self,
        dim: int,
        init_weight: Tensor,
        init_bias: Tensor,
        eps: float = LAYER_NORM_EPS,
        enabled: bool = True,
    ) -> None:
        super().__init__()
        if tuple(init_weight.shape) != (dim,) or tuple(init_bias.shape) != (dim,):
            raise ValueError(
                f"init_weight and init_bias must be ({dim},) like the backbone LayerNorm of a "
                f"{dim}-channel block, got {tuple(init_weight.shape)} and "
                f"{tuple(init_bias.shape)}"
            )
        self.dim, self.eps, self.enabled = dim, eps, enabled
        weight = init_weight.detach().clone().float()
        bias = init_bias.detach().clone().float()
        if enabled:
            self.weight = nn.Parameter(weight)  # gamma'
            self.bias = nn.Parameter(bias)      # beta'
            self.film_scale = nn.Linear(dim, dim)  # g(.)
            self.film_shift = nn.Linear(dim, dim)  # b(.)
            for layer in (self.film_scale, self.film_shift):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, a: Tensor, omega_tilde: Tensor | None) -> Tensor:
        """Normalise ``a`` and modulate it by the task signal.

        Args:
            a: ``(T, B, L, C)`` activation after the attention residual (a_t).
            omega_tilde: ``(T, B, L, C)`` output of the FFN residual (omega~_t); may be None
                only when disabled.

        Returns:
            ``(T, B, L, C)``.
        """
        if a.shape[-1] != self.dim:
            raise ValueError(f"a must end with C={self.dim} channels, got {tuple(a.shape)}")
        if not self.enabled:
            return F.layer_norm(a, (self.dim,), self.weight, self.bias, self.eps)
        if omega_tilde is None or omega_tilde.shape != a.shape:
            got = None if omega_tilde is None else tuple(omega_tilde.shape)
            raise ValueError(
                f"omega_tilde must have the shape of a {tuple(a.shape)}, got {got}: pass the "
                "FFN residual output of the same adapter layer"
            )
        normed = F.layer_norm(a, (self.dim,), None, None, self.eps)
        scale = self.weight * (1.0 + self.film_scale(omega_tilde))
        shift = self.bias + self.film_shift(omega_tilde)
        return normed * scale + shift

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, enabled={self.enabled}"


def layer_norm_params(norm: nn.LayerNorm) -> tuple[Tensor, Tensor]:
    """``(weight, bias)`` copies of a LayerNorm, ones/zeros if it has no affine part."""
    c = norm.normalized_shape[-1]
    weight = norm.weight.detach().clone() if norm.weight is not None else torch.ones(c)
    bias = norm.bias.detach().clone() if norm.bias is not None else torch.zeros(c)
    return weight, bias
