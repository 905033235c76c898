"""TAA: Task-Adapted Attention (paper Sec. 3.2.2, Eq. 1-3, Fig. 5-6).

Plain self-attention (Eq. 1) is ``SA(q, k, v) = softmax(q k^T / sqrt(c)) v``. TAA adds a
task-dependent bias to the attention logits (Eq. 2):

    ``TAA(q, k, v, omega_t) = softmax(A'(omega_t) + q k^T / sqrt(c)) v``,

where the N-vector ``omega_t`` (task t's row of TROA's affinity matrix) is mapped by FiLM to
``hw x hw`` matrices that modulate a learnable ``hw x hw`` matrix A (Eq. 3). The attention is
global: every token of the ``h x w`` map attends to every other. All weights are shared by
the tasks; task t enters only through ``omega_t``. One bias ``A'(omega_t)`` is shared by all
heads (as in the official code; the paper repeats "the process" per head without saying
whether A is per head).

:meth:`TaskAdaptedAttention.forward` is Eq. 2 written out, one line per step::

    logits = attention_logits(q, k)           # q k^T / sqrt(d)  (or Swin V2's scaled cosine)
    logits = logits + A'(omega_t)             # Eq. 2, inside the softmax
    attn   = softmax(logits)                  # over the keys
    out    = attn @ v                         # then the output projection

Training runs the same computation fused (``fused=True``, the default): the logit scaling is
folded into q and the bias goes to ``F.scaled_dot_product_attention`` as its additive
``attn_mask``, which never materialises the ``(L, L)`` attention in Python. Whenever an
attention map is asked for (``keep_attention=True``, :func:`record_attention`,
:meth:`TaskAdaptedAttention.attention_weights`) the readable path runs; both paths give the
same output and gradients (``tests/test_taa_paths.py``).

Three bias variants (``bias=``):

* ``"film"`` (paper): :class:`FilmBias`, a full ``(L, L)`` bias, ``L = h * w``.
* ``"embedding"`` (official code, IVRL/VTAGML ``TAA`` module):
  :class:`~vtagml_core.model.taa_official.WindowBlockBias`, a block-diagonal bias with one
  block per window of the token grid, zero elsewhere.
* ``"none"``: plain multi-head attention, the TAA-off ablation (no bias parameters exist).

Two logit variants (``logits=``): ``"dot"`` is Eq. 1, ``q k^T / sqrt(d)``; ``"cosine"`` is
Swin V2's scaled cosine attention ``cos(q, k) * exp(min(logit_scale, log 100))`` with a
learnable per-head ``logit_scale`` initialised to ``log 10``, the form the paper's Swin V2
backbone uses; the TAA bias is added to those logits before the softmax.

The kit's reading of Eq. 1-3 and its choices against the paper and the official code are in
``docs/method.md`` (TAA section).

Shapes: T task streams, B images, L = h*w tokens, C channels, H heads, d = C / H.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .taa_official import WindowBlockBias

#: Swin V2 initialises the per-head logit scale of cosine attention to log(10) ...
LOGIT_SCALE_INIT: float = math.log(10.0)
#: ... and clamps it at log(1 / 0.01) = log(100) so the temperature cannot blow up.
LOGIT_SCALE_MAX: float = math.log(100.0)

LOGIT_MODES: tuple[str, ...] = ("cosine", "dot")
BIAS_MODES: tuple[str, ...] = ("film", "embedding", "none")


class FilmWeights(NamedTuple):
    """The learnable pieces of Eq. 3 (``bias="film"``), as the notebook-03 exercise takes them.

    Attributes:
        A: ``(L, L)`` the randomly initialised matrix A.
        weight: ``(2*L*L, cond_dim)`` FiLM's linear map; rows ``[:L*L]`` give gamma, the rest beta.
        bias: ``(2*L*L,)`` FiLM's offset.
    """

    A: Tensor
    weight: Tensor
    bias: Tensor


class FilmBias(nn.Module):
    """The paper's TAA bias ``A'(omega_t)`` (Eq. 3), a full ``(L, L)`` matrix per task.

    ``A'(omega_t) = A * (1 + gamma(omega_t)) + beta(omega_t)``, with gamma, beta = a linear
    map ``cond_dim -> L*L`` each (FiLM, Fig. 6), zero-initialised.

    Choices, against Eq. 3's literal ``A * gamma(omega_t) + beta(omega_t)``:

    * Residual FiLM ``(1 + gamma)`` (as the official code): zero FiLM output is the identity
      modulation, so ``A' = A`` at init. It is the literal form with gamma's bias started at 1;
      the literal form with a zero-initialised gamma would start at ``A' = 0`` and give A no
      gradient until gamma moves.
    * A random (normal, std ``a_init_std``) as the paper says ("randomly-initialized learnable
      matrix A"); the official code starts A at zeros. Small random A gives the attention a
      learnable positional prior from the first step without disturbing it much.
    """

    def __init__(self, num_tokens: int, cond_dim: int, a_init_std: float = 0.02) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.A = nn.Parameter(torch.randn(num_tokens, num_tokens) * a_init_std)
        self.film = nn.Linear(cond_dim, 2 * num_tokens * num_tokens)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def modulation(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM (Fig. 6): ``cond (T, cond_dim) -> gamma, beta``, each ``(T, L, L)``."""
        L = self.num_tokens
        gamma, beta = self.film(cond).view(-1, 2, L, L).unbind(dim=1)
        return gamma, beta

    def forward(self, cond: Tensor) -> Tensor:
        """``cond (T, cond_dim) -> A' (T, L, L)``."""
        gamma, beta = self.modulation(cond)                 # each (T, L, L)
        return self.A * (1.0 + gamma) + beta                # Eq. 3, residual FiLM

    def weights(self) -> FilmWeights:
        """``A``, FiLM's weight and bias (the tensors themselves, not copies)."""
        return FilmWeights(self.A, self.film.weight, self.film.bias)

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, A=({self.num_tokens}, {self.num_tokens})"


class TaskAdaptedAttention(nn.Module):
    """Global multi-head attention with a task-conditioned logit bias (Eq. 2), per task stream.

    Args:
        dim: channels C.
        num_heads: heads H (must divide C).
        grid: token grid ``(h, w)``; the bias is ``(h*w, h*w)``.
        num_tasks: N, the length of an affinity row omega_t.
        qkv_bias: bias in the q/k/v projection.
        logits: ``"cosine"`` (Swin V2 scaled cosine) or ``"dot"`` (Eq. 1).
        bias: ``"film"`` (paper), ``"embedding"`` (official code's block-diagonal window bias)
            or ``"none"`` (TAA off).
        window_size: window side for ``bias="embedding"`` (required there).
        a_init_std: std of the random init of A for ``bias="film"``.
        cond_dim: length of the conditioning vector; ``num_tasks`` (an omega row) by default,
            the task-embedding size when the stack uses learned embeddings.
        fused: compute the attention with ``F.scaled_dot_product_attention`` (faster; the
            default for training). False = always the readable path. Either way the readable
            path runs while ``keep_attention`` is set.

    Attributes:
        keep_attention: when True, :meth:`forward` takes the readable path and stores its
            softmax maps ``(T, B, H, L, L)`` (detached) in ``last_attention``. Usually set for
            a whole model by :func:`record_attention`.
        last_attention: the maps of the last forward run with ``keep_attention`` on, or None.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: tuple[int, int],
        num_tasks: int,
        qkv_bias: bool = True,
        logits: str = "cosine",
        bias: str = "film",
        window_size: int | None = None,
        a_init_std: float = 0.02,
        cond_dim: int | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if logits not in LOGIT_MODES:
            raise ValueError(f"logits must be one of {LOGIT_MODES}, got {logits!r}")
        if bias not in BIAS_MODES:
            raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
        if dim % num_heads:
            raise ValueError(
                f"num_heads {num_heads} must divide the channels {dim} (head dim = C / heads)"
            )
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_tokens = self.grid[0] * self.grid[1]
        self.num_tasks = num_tasks
        self.cond_dim = num_tasks if cond_dim is None else cond_dim
        self.logits_mode, self.bias_mode = logits, bias
        self.fused = fused
        self.keep_attention = False
        self.last_attention: Tensor | None = None
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if logits == "cosine":
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), LOGIT_SCALE_INIT))
        self.bias_fn: nn.Module | None
        if bias == "film":
            self.bias_fn = FilmBias(self.num_tokens, self.cond_dim, a_init_std)
        elif bias == "embedding":
            if window_size is None:
                raise ValueError("bias='embedding' needs window_size (the block side in tokens)")
            self.bias_fn = WindowBlockBias(self.grid, window_size, self.cond_dim)
        else:
            self.bias_fn = None

    # -- inputs --------------------------------------------------------------------------
    def _condition(self, cond: Tensor, T: int) -> Tensor:
        """Accept omega rows ``(T, cond_dim)`` or task indices ``(T,)`` (one-hot omega)."""
        if cond.dtype in (torch.int32, torch.int64):
            if cond.dim() != 1 or self.cond_dim != self.num_tasks:
                raise ValueError(
                    "task indices must be a 1-D (T,) tensor and need cond_dim == num_tasks; "
                    "pass float conditioning vectors (T, cond_dim) otherwise"
                )
            cond = F.one_hot(cond, self.num_tasks).float()
        if cond.dim() != 2 or cond.shape != (T, self.cond_dim):
            raise ValueError(
                f"conditioning must be ({T}, {self.cond_dim}): one row per task stream, got "
                f"{tuple(cond.shape)}"
            )
        return cond

    def _check_x(self, x: Tensor) -> tuple[int, int]:
        if x.dim() != 4 or x.shape[2] != self.num_tokens or x.shape[3] != self.dim:
            raise ValueError(
                f"x must be (T, B, L={self.num_tokens}, C={self.dim}) for grid {self.grid}, got "
                f"{tuple(x.shape)}; flatten the (h, w) token grid in raster order"
            )
        return x.shape[0], x.shape[1]

    def _film(self) -> FilmBias:
        if self.bias_mode != "film":
            raise ValueError(
                f"this TAA has bias={self.bias_mode!r}; gamma, beta and A of Eq. 3 exist only "
                f"for bias='film' (use film_bias(omega) for the bias matrix of any variant)"
            )
        return cast(FilmBias, self.bias_fn)

    # -- the pieces of Eq. 1-3 -----------------------------------------------------------
    def film_bias(self, cond: Tensor) -> Tensor:
        """``A'(omega_t)`` for each stream, ``(T, L, L)`` (Eq. 3; zeros for ``bias="none"``).

        ``cond``: ``(T, N)`` omega rows, ``(T, cond_dim)`` embeddings or ``(T,)`` task indices.
        """
        T = cond.shape[0]
        cond = self._condition(cond, T)
        if self.bias_fn is None:
            return cond.new_zeros(T, self.num_tokens, self.num_tokens)
        return self.bias_fn(cond)

    def film_modulation(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM's ``gamma(omega_t), beta(omega_t)``, each ``(T, L, L)`` (Eq. 3, ``bias="film"``)."""
        return self._film().modulation(self._condition(cond, cond.shape[0]))

    def film_weights(self) -> FilmWeights:
        """``A``, FiLM's weight ``(2*L*L, cond_dim)`` and bias ``(2*L*L,)`` (``bias="film"``)."""
        return self._film().weights()

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v of every head, each ``(T, B, H, L, d)``, from ``x (T, B, L, C)``."""
        T, B = self._check_x(x)
        qkv = self.qkv(x).view(T, B, self.num_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)   # each (T, B, H, L, d)
        return q, k, v

    def temperature(self) -> Tensor:
        """Swin V2's per-head temperature ``exp(min(logit_scale, log 100))``, ``(H, 1, 1)``."""
        if self.logits_mode != "cosine":
            raise ValueError(
                "only logits='cosine' has a learned temperature; 'dot' divides by sqrt(d)")
        return torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()

    def attention_logits(self, q: Tensor, k: Tensor) -> Tensor:
        """Logits before the bias, ``(T, B, H, L, L)`` from q, k ``(T, B, H, L, d)``."""
        if self.logits_mode == "dot":
            return q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # Eq. 1: q k^T / sqrt(d)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        return q @ k.transpose(-2, -1) * self.temperature()            # Swin V2: cos(q, k) * tau

    def merge_heads(self, out: Tensor) -> Tensor:
        """``(T, B, H, L, d) -> (T, B, L, C)``: the heads side by side, before the projection."""
        T, B = out.shape[:2]
        return out.transpose(2, 3).reshape(T, B, self.num_tokens, self.dim)

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``softmax(A'(omega_t) + logits(q, k)) v`` then the output projection (Eq. 2).

        Args:
            x: ``(T, B, L, C)``, already layer-normalised tokens of each task stream.
            cond: ``(T, N)`` omega rows (or ``(T, cond_dim)`` embeddings, or ``(T,)`` task
                indices, see :meth:`film_bias`).

        Returns:
            ``(T, B, L, C)``.
        """
        T = self._check_x(x)[0]
        cond = self._condition(cond, T)
        q, k, v = self.heads(x)                     # each (T, B, H, L, d)
        if self.fused and not self.keep_attention:
            return self.proj(self.merge_heads(self._fused_attention(q, k, v, cond)))
        logits = self.attention_logits(q, k)        # (T, B, H, L, L) q k^T / sqrt(d), Eq. 1
        bias = self.film_bias(cond)[:, None, None]  # (T, 1, 1, L, L) A'(omega_t), Eq. 3
        logits = logits + bias.to(logits.dtype)     # Eq. 2: A'(omega_t) + logits
        attn = logits.softmax(dim=-1)               # Eq. 2: softmax over the keys
        if self.keep_attention:
            self.last_attention = attn.detach()
        out = attn @ v                              # (T, B, H, L, d) Eq. 2: softmax(...) v
        return self.proj(self.merge_heads(out))     # (T, B, L, C) output projection

    def _fused_attention(self, q: Tensor, k: Tensor, v: Tensor, cond: Tensor) -> Tensor:
        """The same ``softmax(A' + logits) v``, ``(T, B, H, L, d)``, by one fused SDPA call.

        The logit scaling is folded into q (``scale=1``) so that ``q @ k^T`` inside SDPA
        equals :meth:`attention_logits`; the bias is SDPA's additive ``attn_mask`` (no mask at
        all for ``bias="none"``).
        """
        T, B = q.shape[:2]
        if self.logits_mode == "dot":
            q = q * self.head_dim ** -0.5
        else:
            q, k = F.normalize(q, dim=-1) * self.temperature(), F.normalize(k, dim=-1)
        merge = (T, B * self.num_heads, self.num_tokens, self.head_dim)
        mask = None
        if self.bias_fn is not None:
            mask = self.bias_fn(cond).unsqueeze(1).to(q.dtype)   # (T, 1, L, L)
        out = F.scaled_dot_product_attention(
            q.reshape(merge), k.reshape(merge), v.reshape(merge), attn_mask=mask, scale=1.0
        )
        return out.view(T, B, self.num_heads, self.num_tokens, self.head_dim)

    def attention_weights(self, x: Tensor, cond: Tensor) -> Tensor:
        """The softmax maps ``(T, B, H, L, L)`` of Eq. 2 that :meth:`forward` uses (detached).

        Runs the forward once with ``keep_attention`` on (see :func:`record_attention`).
        """
        with record_attention(self) as record:
            self(x, cond)
        return record.maps[0]

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.num_heads}, grid={self.grid}, "
            f"logits={self.logits_mode}, bias={self.bias_mode}, cond_dim={self.cond_dim}, "
            f"fused={self.fused}"
        )


class AttentionRecord:
    """The attention maps kept by the TAA modules of a model, in ``model.modules()`` order.

    For a VTAGML model (or its :class:`~vtagml_core.model.adapter.VisionAdapter`) that is
    adapter-layer order: ``record.maps[l]`` is layer l's ``(T, B, H, L_l, L_l)``.
    """

    def __init__(self, modules: list[TaskAdaptedAttention]) -> None:
        self.modules = modules
        self._kept: list[Tensor] | None = None

    @property
    def maps(self) -> list[Tensor]:
        """One ``(T, B, H, L, L)`` map per TAA module, from the last forward in the block."""
        maps = self._kept if self._kept is not None else [m.last_attention for m in self.modules]
        missing = [i for i, m in enumerate(maps) if m is None]
        if missing:
            raise RuntimeError(
                f"TAA layers {missing} kept no attention: run the model's forward inside "
                f"`with record_attention(model) as record:` before reading record.maps"
            )
        return maps

    def __len__(self) -> int:
        return len(self.modules)


@contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Keep the attention maps of every TAA module in ``model`` while the block runs.

    Sets ``keep_attention`` on each :class:`TaskAdaptedAttention` (so they take the readable
    path) and restores the previous settings and maps on exit; ``record.maps`` stays readable
    after the block::

        with record_attention(model.adapter) as record:
            model.adapter(taps)
        maps = record.maps                 # one (T, B, H, L, L) per adapter layer
    """
    modules = [m for m in model.modules() if isinstance(m, TaskAdaptedAttention)]
    saved = [(m.keep_attention, m.last_attention) for m in modules]
    record = AttentionRecord(modules)
    for m in modules:
        m.keep_attention, m.last_attention = True, None
    try:
        yield record
    finally:
        record._kept = [m.last_attention for m in modules]
        for m, (keep, last) in zip(modules, saved):
            m.keep_attention, m.last_attention = keep, last


__all__ = ["BIAS_MODES", "LOGIT_MODES", "LOGIT_SCALE_INIT", "LOGIT_SCALE_MAX", "AttentionRecord",
           "FilmBias", "FilmWeights", "TaskAdaptedAttention", "record_attention"]
