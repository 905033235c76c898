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

Three bias variants (``bias=``):

* ``"film"`` (paper): :class:`FilmBias`, a full ``(L, L)`` bias, ``L = h * w``.
* ``"embedding"`` (official code, IVRL/VTAGML ``TAA`` module): :class:`WindowBlockBias`, a
  block-diagonal bias with one block per window of the token grid, zero elsewhere.
* ``"none"``: plain multi-head attention, the TAA-off ablation (no bias parameters exist).

Two logit variants (``logits=``): ``"dot"`` is Eq. 1, ``q k^T / sqrt(c)``; ``"cosine"`` is
Swin V2's scaled cosine attention ``cos(q, k) * exp(min(logit_scale, log 100))`` with a
learnable per-head ``logit_scale`` initialised to ``log 10``, the form the paper's Swin V2
backbone uses; the TAA bias is added to those logits before the softmax.

Shapes: T task streams, B images, L = h*w tokens, C channels, H heads, d = C / H.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Swin V2 initialises the per-head logit scale of cosine attention to log(10) ...
LOGIT_SCALE_INIT: float = math.log(10.0)
#: ... and clamps it at log(1 / 0.01) = log(100) so the temperature cannot blow up.
LOGIT_SCALE_MAX: float = math.log(100.0)

LOGIT_MODES: tuple[str, ...] = ("cosine", "dot")
BIAS_MODES: tuple[str, ...] = ("film", "embedding", "none")


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

    def forward(self, cond: Tensor) -> Tensor:
        """``cond (T, cond_dim) -> A' (T, L, L)``."""
        L = self.num_tokens
        gamma, beta = self.film(cond).view(-1, 2, L, L).unbind(dim=1)
        return self.A * (1.0 + gamma) + beta

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, A=({self.num_tokens}, {self.num_tokens})"


def window_order(grid: tuple[int, int], window: int) -> Tensor:
    """Position of each raster-order token in window order, ``(L,)`` long.

    Window order lists the tokens of window (0, 0) first (raster order inside the window),
    then window (0, 1), and so on, as Swin's ``window_partition`` does.
    """
    h, w = grid
    i = torch.arange(h).view(h, 1).expand(h, w)
    j = torch.arange(w).view(1, w).expand(h, w)
    win = (i // window) * (w // window) + (j // window)
    inside = (i % window) * window + (j % window)
    return (win * window * window + inside).reshape(-1)


class WindowBlockBias(nn.Module):
    """The official code's TAA bias: block-diagonal over windows, zero elsewhere.

    What IVRL/VTAGML's ``TAA`` module computes (inside each Swin window of ``n`` tokens, with
    a learned task embedding ``e_t`` in place of omega): a matrix ``A`` of shape ``(n, s)``
    (zeros at init) is FiLM-modulated column-wise, ``(1 + gamma(e_t)) * A + beta(e_t)`` with
    ``gamma, beta in R^s`` broadcast over the rows (``nn.Linear`` with default weight init and
    zero bias), then its rows are cut into ``n / s`` slabs of shape ``(s, s)`` placed on the
    diagonal with ``torch.block_diag``; every other token pair gets bias 0 (not -inf: the
    attention still sees them, only without a task bias).

    Here the attention is global over the ``h x w`` map (paper), so the blocks are the
    ``window x window`` windows of the map (``s = window**2`` tokens each, ``h*w / s`` blocks),
    with the same parametrisation (A zeros ``(L, s)``, column-wise FiLM, default-initialised
    FiLM weights), then mapped back to raster token order. A window larger than the grid is
    clamped to it (Swin's rule for small maps), giving one block: a full bias.
    """

    def __init__(self, grid: tuple[int, int], window_size: int, cond_dim: int) -> None:
        super().__init__()
        h, w = grid
        window = min(window_size, h, w)
        if window < 1 or h % window or w % window:
            raise ValueError(
                f"window_size {window_size} must divide the token grid {h}x{w} for the "
                f"block-diagonal TAA bias; pick a divisor of both (e.g. {math.gcd(h, w)})"
            )
        self.grid = (h, w)
        self.window = window
        self.block = window * window
        self.num_windows = (h * w) // self.block
        self.A = nn.Parameter(torch.zeros(h * w, self.block))
        self.film = nn.Linear(cond_dim, 2 * self.block)
        nn.init.zeros_(self.film.bias)
        self.register_buffer("raster_to_window", window_order(grid, window), persistent=False)
        self.register_buffer("eye_windows", torch.eye(self.num_windows), persistent=False)

    def forward(self, cond: Tensor) -> Tensor:
        """``cond (T, cond_dim) -> bias (T, L, L)``, raster token order, zero off-block."""
        T, s, nw = cond.shape[0], self.block, self.num_windows
        gamma, beta = self.film(cond).view(T, 2, 1, 1, s).unbind(dim=1)
        blocks = (1.0 + gamma) * self.A.view(nw, s, s) + beta          # (T, nW, s, s)
        full = torch.einsum("tnij,nm->tnimj", blocks, self.eye_windows)  # zeros off-block
        full = full.reshape(T, nw * s, nw * s)                          # window order
        p = self.raster_to_window
        return full[:, p][:, :, p]                                      # raster order

    def extra_repr(self) -> str:
        return f"grid={self.grid}, window={self.window}, blocks={self.num_windows}x{self.block}"


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

    # -- pieces --------------------------------------------------------------------------
    def bias_matrix(self, cond: Tensor) -> Tensor:
        """``A'(omega_t)`` for each stream, ``(T, L, L)`` (zeros for ``bias="none"``)."""
        T = cond.shape[0]
        cond = self._condition(cond, T)
        if self.bias_fn is None:
            return cond.new_zeros(T, self.num_tokens, self.num_tokens)
        return self.bias_fn(cond)

    def _scaled_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as ``(T, B, H, L, d)`` with the logit scaling folded into q.

        ``q @ k^T`` then equals Eq. 1's ``q k^T / sqrt(d)`` (dot) or Swin V2's
        ``cos(q, k) * exp(min(logit_scale, log 100))`` (cosine).
        """
        T, B = x.shape[:2]
        qkv = self.qkv(x).view(T, B, self.num_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        if self.logits_mode == "dot":
            return q * self.head_dim ** -0.5, k, v
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (H, 1, 1)
        return F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1), v

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``softmax(A'(omega_t) + logits(q, k)) v`` then the output projection.

        Args:
            x: ``(T, B, L, C)``, already layer-normalised tokens of each task stream.
            cond: ``(T, N)`` omega rows (or ``(T, cond_dim)`` embeddings, or ``(T,)`` task
                indices, see :meth:`_condition`).

        Returns:
            ``(T, B, L, C)``.
        """
        T, B = self._check_x(x)
        q, k, v = self._scaled_qkv(x)
        merge = (T, B * self.num_heads, self.num_tokens, self.head_dim)
        mask = None
        if self.bias_fn is not None:
            mask = self.bias_fn(self._condition(cond, T)).unsqueeze(1).to(q.dtype)  # (T,1,L,L)
        out = F.scaled_dot_product_attention(
            q.reshape(merge), k.reshape(merge), v.reshape(merge), attn_mask=mask, scale=1.0
        )
        out = out.view(T, B, self.num_heads, self.num_tokens, self.head_dim)
        return self.proj(out.permute(0, 1, 3, 2, 4).reshape(T, B, self.num_tokens, self.dim))

    def attention_weights(self, x: Tensor, cond: Tensor) -> Tensor:
        """The softmax attention maps ``(T, B, H, L, L)``, for visualisation."""
        self._check_x(x)
        q, k, _ = self._scaled_qkv(x)
        logits = q @ k.transpose(-2, -1)
        logits = logits + self.bias_matrix(cond)[:, None, None].to(q.dtype)
        return logits.softmax(dim=-1)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.num_heads}, grid={self.grid}, "
            f"logits={self.logits_mode}, bias={self.bias_mode}, cond_dim={self.cond_dim}"
        )
