"""The vision transformer adapter: one adapter layer (Fig. 3) and the chained stack (Sec. 3.1-3.2).

Per-task streams, shared weights: every tensor inside the adapters carries a leading task axis,
``(T, B, L, C)`` (T task streams, B images, L = h*w tokens, C channels), and every adapter
weight is shared by the streams. Task t enters only through its conditioning vector: its row
``omega_t`` of TROA's affinity matrix (paper), or a learned task embedding (official code,
``affinity_source="embedding"``). The streams are computed batched, never task by task.

Adapter layer (Fig. 3, Eq. 2-4)::

    x --LN--> TAA(., omega_t) --(+x)--> a_t --LN--> FFN(down, GELU, up) --(+a_t)--> omega~_t
    out_t = TSN_t(a_t, omega~_t)

TSN normalises ``a_t`` and is modulated by ``omega~_t`` (Eq. 4 and its text: "a_t ... is the
task-specific activation obtained from the residual connection, and omega~_t is the summed
output of the feed-forward network with the residual connection"). The output therefore does
not add the FFN residual again: the FFN acts through the modulation, as Eq. 4 is written. A
consequence worth knowing: TSN's FiLM maps start at zero, so on the very first step the FFN
receives no gradient; it does from the second step on, once the FiLM weights have moved.
With TSN off (``tsn=False``) the output is the fixed LayerNorm of ``omega~_t`` instead, so that the
ablation keeps the FFN (:meth:`.adapter_layer.AdapterLayer.parts`).

Where the kit departs from the paper's words (docs/method.md, "Deviations from the paper's
text"): task t is conditioned on the *row* ``omega[t]`` (the text says "the t-th column"); the
attention uses the backbone's heads at each tap (8/16 tiny, 16/32 Swin-B V2; the paper's 24/48
do not divide the channels); the FiLM of Eq. 3 is a plain linear map of ``omega_t``, which, as
``omega_t`` sums to 1, is an affinity-weighted average of N learned per-task vectors (the paper's
"weighted averaging"); with kappa = 1 and sign +1 omega collapses to (nearly) the identity within
about ten steps.

Stack (Sec. 3.1): one adapter layer per backbone tap (Swin: the last four blocks of stage 3
and both blocks of stage 4), chained by skip connections: layer l reads
``tap_l + skip(out_{l-1})``. Inside a stage the skip is the identity. At a stage change (the
grid halves, the channels change) it is a learned 2x2 patch merging (concatenate each 2x2
neighbourhood, LayerNorm, linear to the new width), like the official code, which keeps a
running adapter stream and patch-merges it between stages.

Cheap per-task gradients for TROA (Algorithm 1 needs ``grad_theta L_t`` for every t; theta is
the adapters' shared input, the backbone taps): with ``track_task_grads=True`` every stream t
reads its *own* leaf copy ``theta_t`` of each tap. Stream t feeds only task t's decoder, so
the one ordinary backward of ``sum_t lambda_t L_t`` leaves ``lambda_t * dL_t/dtheta`` in
``theta_t.grad`` for all t at once: no extra backward pass per task. The factor lambda_t > 0
does not change a cosine similarity, so it is not divided out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from .adapter_layer import AdapterLayer, SkipTransition
from .taa import BIAS_MODES, LOGIT_MODES
from .troa import TROA

AFFINITY_SOURCES: tuple[str, ...] = ("troa", "embedding")


@dataclass
class AdapterConfig:
    """Options of the adapter stack; each ablation of the paper is one field.

    Attributes:
        enabled: False = no adapter layers; the stack returns the taps (per task stream).
        mlp_ratio: FFN bottleneck width as a fraction of C (hidden = max(1, int(C * ratio))).
        num_heads: heads of every layer; None = the backbone's heads at that tap.
        taa_logits: ``"cosine"`` (Swin V2) or ``"dot"`` (Eq. 1).
        taa_bias: ``"film"`` (paper), ``"embedding"`` (official block-diagonal) or ``"none"``
            (TAA off).
        window_size: window side for ``taa_bias="embedding"``.
        affinity_source: ``"troa"`` (omega rows condition the adapters) or ``"embedding"``
            (official code: a learned task embedding; TROA not used).
        embed_dim: task-embedding length for ``affinity_source="embedding"``.
        num_heads: the paper states M = 24 (stage 3) and 48 (stage 4) heads, which do not divide
            Swin-B's 512 and 1024 channels; None keeps the backbone's own heads (8/16 for the
            tiny backbone, 16/32 for Swin-B V2, 32 channels per head; docs/method.md, entry 10).
        tsn: Task-Scaled Normalization on. Off (ablation): the FFN residual ``omega~_t`` goes
            through the tapped block's fixed LayerNorm (TSN's own starting point), so the FFN
            still shapes the output and only the task scaling is removed.
        troa: TROA updates on (off = omega stays uniform).
        kappa, sign: TROA mirror-descent step and sign (see :mod:`.troa`).
        troa_every: update omega once every this many optimizer steps, from the mean similarity
            of those steps (Algorithm 1's "a few steps of Adam" between updates); 1 = every step.
        weighted_objective: train on Algorithm 1's weighted objective
            ``sum_t sum_n omega[t, n] lambda_n L_n(decoder_n(stream_t))`` instead of
            ``sum_t lambda_t L_t`` (see :mod:`.troa`; N x N decoder passes per training step).
            Needs TROA's omega (``affinity_source="troa"``); with TROA off it changes nothing.
        a_init_std: std of the random init of TAA's A.
        qkv_bias: bias in TAA's q/k/v projection.
        taa_fused: TAA computes Eq. 2 with one fused ``scaled_dot_product_attention`` call
            (faster; same numbers as the readable path up to rounding). False = always the
            readable path. Recording attention maps (:func:`.taa.record_attention`) switches
            to the readable path for the recorded forward either way.
        history_every, history_max: TROA history recording (see :class:`.troa.TROA`).
    """

    enabled: bool = True
    mlp_ratio: float = 0.25
    num_heads: int | None = None
    taa_logits: str = "cosine"
    taa_bias: str = "film"
    window_size: int = 8
    affinity_source: str = "troa"
    embed_dim: int = 64
    tsn: bool = True
    troa: bool = True
    kappa: float = 1.0
    sign: float = 1.0
    troa_every: int = 1
    weighted_objective: bool = False
    a_init_std: float = 0.02
    qkv_bias: bool = True
    taa_fused: bool = True
    history_every: int = 1
    history_max: int = 10_000

    def validate(self) -> None:
        """Raise ValueError naming the bad field and its allowed values."""
        if self.taa_logits not in LOGIT_MODES:
            raise ValueError(f"taa_logits must be one of {LOGIT_MODES}, got {self.taa_logits!r}")
        if self.taa_bias not in BIAS_MODES:
            raise ValueError(f"taa_bias must be one of {BIAS_MODES}, got {self.taa_bias!r}")
        if self.affinity_source not in AFFINITY_SOURCES:
            raise ValueError(
                f"affinity_source must be one of {AFFINITY_SOURCES}, got "
                f"{self.affinity_source!r}"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.embed_dim < 1 or self.window_size < 1:
            raise ValueError("embed_dim and window_size must be >= 1")
        if self.troa_every < 1:
            raise ValueError(
                f"troa_every must be >= 1 optimizer steps between omega updates, got "
                f"{self.troa_every}; 1 updates omega every step")
        if self.weighted_objective and (self.affinity_source != "troa" or not self.enabled):
            raise ValueError(
                "weighted_objective weights each stream's losses by TROA's omega, which needs "
                "model.adapter.enabled=true and affinity_source='troa' (got enabled="
                f"{self.enabled}, affinity_source={self.affinity_source!r}); set "
                "model.adapter.weighted_objective=false")


class VisionAdapter(nn.Module):
    """The chain of adapter layers over the backbone taps, for T task streams.

    Args:
        config: :class:`AdapterConfig`.
        tap_channels: C_l per tap, e.g. ``[128] * 4 + [256] * 2``.
        tap_grids: (h_l, w_l) per tap, e.g. ``[(8, 8)] * 4 + [(4, 4)] * 2``.
        tap_heads: backbone heads per tap (used when ``config.num_heads`` is None).
        ln_params: ``(weight, bias)`` of the tapped block's LayerNorm per tap (TSN init).
        num_tasks: N.
    """

    def __init__(
        self,
        config: AdapterConfig,
        tap_channels: Sequence[int],
        tap_grids: Sequence[tuple[int, int]],
        tap_heads: Sequence[int],
        ln_params: Sequence[tuple[Tensor, Tensor]],
        num_tasks: int,
    ) -> None:
        super().__init__()
        config.validate()
        n_taps = len(tap_channels)
        if n_taps == 0 or not (len(tap_grids) == len(tap_heads) == len(ln_params) == n_taps):
            raise ValueError(
                f"tap_channels, tap_grids, tap_heads and ln_params need one entry per tap, got "
                f"{n_taps}, {len(tap_grids)}, {len(tap_heads)}, {len(ln_params)}"
            )
        self.config, self.num_tasks = config, num_tasks
        self.tap_channels = [int(c) for c in tap_channels]
        self.tap_grids = [(int(g[0]), int(g[1])) for g in tap_grids]
        use_embedding = config.affinity_source == "embedding"
        self.troa = TROA(
            num_tasks, config.kappa, config.sign,
            enabled=config.troa and not use_embedding and config.enabled,
            history_every=config.history_every, history_max=config.history_max,
            every=config.troa_every,
        )
        self.task_embedding = nn.Embedding(num_tasks, config.embed_dim) if use_embedding else None
        cond_dim = config.embed_dim if use_embedding else num_tasks
        self.layers = nn.ModuleList()
        self.skips = nn.ModuleList()
        if config.enabled:
            for i, (c, g, h, (w, b)) in enumerate(
                zip(self.tap_channels, self.tap_grids, tap_heads, ln_params)
            ):
                self.layers.append(AdapterLayer(
                    c, config.num_heads or h, g, num_tasks, w, b, mlp_ratio=config.mlp_ratio,
                    taa_logits=config.taa_logits, taa_bias=config.taa_bias,
                    window_size=config.window_size, a_init_std=config.a_init_std,
                    qkv_bias=config.qkv_bias, cond_dim=cond_dim, tsn_enabled=config.tsn,
                    taa_fused=config.taa_fused,
                ))
                if i > 0:
                    self.skips.append(SkipTransition(
                        self.tap_channels[i - 1], self.tap_grids[i - 1], c, g))
        self._leaves: list[Tensor] | None = None
        self._tracked_ids: list[int] | None = None
        self._leaf_weights: Tensor | None = None

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last layer of each stage (where the grid or width changes next)."""
        shapes = list(zip(self.tap_grids, self.tap_channels))
        last = len(shapes) - 1
        return [i for i in range(len(shapes)) if i == last or shapes[i] != shapes[i + 1]]

    def condition(self, omega: Tensor | None = None, task_ids: Tensor | None = None) -> Tensor:
        """Conditioning rows ``(T, cond_dim)``: omega rows, or task embeddings.

        ``omega=None`` takes ``self.troa.omega[task_ids]`` (all N tasks in order when
        ``task_ids`` is None). With ``affinity_source="embedding"`` the rows are
        ``task_embedding(task_ids)`` and ``omega`` must be None.
        """
        device = self.troa.omega.device
        if task_ids is None:
            task_ids = torch.arange(self.num_tasks, device=device)
        task_ids = torch.as_tensor(task_ids, device=device).long().reshape(-1)
        if self.task_embedding is not None:
            if omega is not None:
                raise ValueError(
                    "affinity_source='embedding' conditions on learned task embeddings; pass "
                    "task_ids, not omega (or use affinity_source='troa')"
                )
            return self.task_embedding(task_ids)
        if omega is None:
            return self.troa.omega[task_ids]
        if omega.dim() != 2 or omega.shape[1] != self.num_tasks:
            raise ValueError(
                f"omega must be (T, {self.num_tasks}) affinity rows, got {tuple(omega.shape)}")
        return omega

    def _stream_inputs(self, taps: Sequence[Tensor], T: int, track: bool,
                       tracked: int | None = None) -> list[Tensor]:
        """Broadcast each shared tap ``(B, h, w, C)`` to T streams ``(T, B, h, w, C)``.

        The backbone is frozen, so taps are detached. With ``track`` every stream gets its own
        leaf copy (see the module docstring); otherwise a zero-copy expanded view. ``tracked = k``
        gives leaf copies to the first k streams only (the weighted objective's extra streams,
        which TROA does not read, stay views).
        """
        if len(taps) != len(self.tap_channels):
            raise ValueError(f"expected {len(self.tap_channels)} taps, got {len(taps)}")
        k = T if tracked is None else tracked
        if track and not 0 < k <= T:
            raise ValueError(f"tracked must be between 1 and the {T} streams, got {tracked}")
        streams, leaves = [], []
        for i, tap in enumerate(taps):
            want = (*self.tap_grids[i], self.tap_channels[i])
            if tap.dim() != 4 or tuple(tap.shape[1:]) != want:
                raise ValueError(
                    f"tap {i} must be NHWC (B, {want[0]}, {want[1]}, {want[2]}), got "
                    f"{tuple(tap.shape)}; permute NCHW features with .permute(0, 2, 3, 1)"
                )
            shared = tap.detach().unsqueeze(0).expand(T, *tap.shape)
            if not track:
                streams.append(shared)
                continue
            leaf = shared[:k].clone().requires_grad_(True)       # theta_t, one per tracked stream
            leaves.append(leaf)
            streams.append(leaf if k == T else torch.cat([leaf, shared[k:]]))
        self._leaves = leaves if track else None
        return streams

    def _remember_ids(self, task_ids: Tensor | None, track: bool, tracked: int | None = None) -> None:
        """Note which tasks the tracked streams were, so TROA can check their order."""
        if not track:
            self._tracked_ids = None
        elif task_ids is None:
            self._tracked_ids = list(range(self.num_tasks))
        else:
            self._tracked_ids = task_ids.reshape(-1).tolist()[:tracked]

    def run_layers(self, streams: Sequence[Tensor], cond: Tensor) -> list[Tensor]:
        """Chain the adapter layers over per-stream taps ``(T, B, h, w, C)`` with ``cond``.

        Returns one ``(T, B, h_l, w_l, C_l)`` output per layer (the streams themselves when
        the adapters are disabled).
        """
        if not self.layers:
            return list(streams)
        outputs: list[Tensor] = []
        for i, (layer, x) in enumerate(zip(self.layers, streams)):
            if i > 0:
                x = x + self.skips[i - 1](outputs[-1])
            T, B, h, w, C = x.shape
            outputs.append(layer(x.reshape(T, B, h * w, C), cond).view(T, B, h, w, C))
        return outputs

    def forward(
        self,
        taps: Sequence[Tensor],
        omega: Tensor | None = None,
        track_task_grads: bool = False,
        task_ids: Tensor | Sequence[int] | None = None,
        tracked: int | None = None,
        leaf_weights: Tensor | None = None,
    ) -> list[Tensor]:
        """Adapter outputs for every task stream.

        Args:
            taps: shared backbone taps, each ``(B, h_l, w_l, C_l)``.
            omega: ``(T, N)`` affinity rows; None = TROA's current rows for ``task_ids``.
            track_task_grads: keep per-task leaf copies of the taps so that, after the
                backward, :meth:`task_gradients` returns every task's gradient.
            task_ids: which tasks the T streams are (default: all N in order).
            tracked: with ``track_task_grads``, only the first ``tracked`` streams get leaf
                copies (default: all T). The weighted objective runs 2N streams and tracks the
                first N (:class:`~vtagml_core.model.vtagml.VTAGML`).
            leaf_weights: ``(tracked,)`` positive weight with which each tracked stream's own
                loss enters the objective (``omega[t, t]`` under the weighted objective);
                :meth:`task_gradients` divides it out, so that a tiny weight cannot push a
                gradient under the zero threshold of the cosine. Default: none (the
                lambda_t of the default objective stay in, as before).

        Returns:
            One ``(T, B, h_l, w_l, C_l)`` tensor per layer; the decoder reads
            ``outputs[i] for i in self.stage_ends``.
        """
        ids = None if task_ids is None else torch.as_tensor(task_ids)
        cond = self.condition(omega, ids)
        streams = self._stream_inputs(taps, cond.shape[0], track_task_grads, tracked)
        self._remember_ids(ids, track_task_grads, tracked)
        self._leaf_weights = None if not track_task_grads or leaf_weights is None else (
            leaf_weights.detach().reshape(-1, 1).clone())
        return self.run_layers(streams, cond)

    def task_gradients(self) -> Tensor:
        """``(T, D)`` per-task gradients w.r.t. the taps, concatenated over all taps.

        Row t is ``lambda_t * dL_t / dtheta`` flattened (D = sum over taps of B*h*w*C), divided
        by the forward's ``leaf_weights`` when it had them. T = the tracked streams.

        Raises:
            RuntimeError: without a ``track_task_grads=True`` forward followed by backward.
        """
        if self._leaves is None:
            raise RuntimeError(
                "no per-task leaves: run forward(..., track_task_grads=True) before asking for "
                "task gradients"
            )
        if any(leaf.grad is None for leaf in self._leaves):
            raise RuntimeError(
                "per-task gradients are not there yet: call loss.backward() on the total loss "
                "after forward(..., track_task_grads=True) and before task_gradients()"
            )
        T = self._leaves[0].shape[0]
        grads = torch.cat([leaf.grad.reshape(T, -1) for leaf in self._leaves], dim=1)
        if self._leaf_weights is not None:
            grads = grads / self._leaf_weights.to(grads)   # omega[t, t] lambda_t g_t -> lambda_t g_t
        return grads

    def update_affinity(self) -> Tensor | None:
        """TROA step from the tracked gradients; returns ``sim (N, N)``, None if TROA is off."""
        if not self.troa.enabled:
            return None
        grads = self.task_gradients()
        if grads.shape[0] != self.num_tasks or self._tracked_ids != list(range(self.num_tasks)):
            raise RuntimeError(
                f"TROA needs all {self.num_tasks} task streams in task order, the last "
                f"tracked forward had tasks {self._tracked_ids}; call forward with task_ids=None"
            )
        return self.troa.update(grads)
