"""TAA (paper Eq. 1-3) and TSN (Eq. 4)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vtagml_core.model.taa import LOGIT_SCALE_MAX, TaskAdaptedAttention
from vtagml_core.model.taa_official import window_order
from vtagml_core.model.tsn import TaskScaledNorm

T, B, C, HEADS, N = 3, 2, 16, 4, 3
GRID = (4, 4)
L = GRID[0] * GRID[1]


def _omega(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(T, N, generator=g), dim=1)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(T, B, L, C, generator=torch.Generator().manual_seed(seed))


def _plain_attention(taa: TaskAdaptedAttention, x: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Reference multi-head attention from the module's own weights, no task bias."""
    d = C // HEADS
    qkv = F.linear(x, taa.qkv.weight, taa.qkv.bias).view(T, B, L, 3, HEADS, d)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (T, B, H, L, d)
    if cosine:
        scale = taa.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale
        out = logits.softmax(-1) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, Eq. 1
    out = out.permute(0, 1, 3, 2, 4).reshape(T, B, L, C)
    return F.linear(out, taa.proj.weight, taa.proj.bias)


@pytest.mark.parametrize("bias", ["none", "film"])
def test_dot_attention_with_zero_bias_is_plain_attention(bias):
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, logits="dot", bias=bias)
    if bias == "film":
        with torch.no_grad():
            taa.film_weights().A.zero_()  # FiLM starts at zero, so A' = A = 0
    x = _x()
    assert torch.allclose(taa(x, _omega()), _plain_attention(taa, x, cosine=False), atol=1e-5)


def test_cosine_attention_with_zero_bias_matches_hand_computation():
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, logits="cosine", bias="none")
    with torch.no_grad():  # one head above the clamp: its temperature must stop at 100
        taa.logit_scale.copy_(torch.tensor([math.log(10), 0.0, 2.0, 9.0]).view(HEADS, 1, 1))
    x = _x(1)
    assert torch.allclose(taa(x, _omega()), _plain_attention(taa, x, cosine=True), atol=1e-5)
    assert torch.allclose(taa.logit_scale.detach().view(-1)[0], torch.tensor(math.log(10)))


def test_film_bias_starts_at_a_then_depends_on_omega():
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, logits="cosine", bias="film")
    om1, om2 = _omega(1), _omega(2)
    bias = taa.film_bias(om1)
    assert bias.shape == (T, L, L)
    assert torch.allclose(bias, taa.film_weights().A.expand(T, L, L))  # zero FiLM: A' = A (Eq. 3)
    x = _x()
    assert torch.allclose(taa(x, om1), taa(x, om2))
    with torch.no_grad():
        torch.nn.init.normal_(taa.film_weights().weight, std=0.5)
    A, W, b = taa.film_weights()
    gamma, beta = (om1 @ W.T + b).view(T, 2, L, L).unbind(1)
    got_gamma, got_beta = taa.film_modulation(om1)
    assert torch.allclose(got_gamma, gamma, atol=1e-6) and torch.allclose(got_beta, beta, atol=1e-6)
    assert torch.allclose(taa.film_bias(om1), A * (1 + gamma) + beta, atol=1e-6)
    assert not torch.allclose(taa(x, om1), taa(x, om2), atol=1e-4)


def test_attention_weights_are_the_maps_forward_uses():
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, logits="dot", bias="film")
    with torch.no_grad():
        torch.nn.init.normal_(taa.film_weights().weight, std=0.5)
    x, om = _x(), _omega()
    attn = taa.attention_weights(x, om)
    assert attn.shape == (T, B, HEADS, L, L)
    assert torch.allclose(attn.sum(-1), torch.ones(T, B, HEADS, L), atol=1e-5)
    v = F.linear(x, taa.qkv.weight, taa.qkv.bias).view(T, B, L, 3, HEADS, C // HEADS)[:, :, :, 2]
    out = (attn @ v.transpose(2, 3)).transpose(2, 3).reshape(T, B, L, C)
    assert torch.allclose(taa(x, om), taa.proj(out), atol=1e-5)


def test_embedding_bias_is_block_diagonal_over_windows():
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, bias="embedding", window_size=2)
    with torch.no_grad():
        torch.nn.init.normal_(taa.bias_fn.A)
    bias = taa.film_bias(_omega())
    assert bias.shape == (T, L, L)
    rows, cols = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    win = lambda r: (r // GRID[1] // 2) * (GRID[1] // 2) + (r % GRID[1]) // 2  # noqa: E731
    same_window = win(rows) == win(cols)
    assert torch.equal(bias[:, ~same_window], torch.zeros_like(bias[:, ~same_window]))
    assert (bias[:, same_window] != 0).all()
    # token (0,0) shares a window with (1,1), not with (0,2)
    assert same_window[0, 1 * GRID[1] + 1] and not same_window[0, 2]


def test_window_order_is_a_permutation_grouping_windows():
    p = window_order((4, 4), 2)
    assert sorted(p.tolist()) == list(range(16))
    assert p[:2].tolist() == [0, 1] and p[4:6].tolist() == [2, 3]  # first window: 0,1,4,5


def test_task_indices_are_one_hot_affinity_rows():
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, bias="film")
    with torch.no_grad():
        torch.nn.init.normal_(taa.film_weights().weight)
    ids = torch.tensor([2, 0, 1])
    x = _x()
    assert torch.allclose(taa(x, ids), taa(x, F.one_hot(ids, N).float()))


def test_taa_reports_bad_configuration_and_input():
    with pytest.raises(ValueError, match="divide"):
        TaskAdaptedAttention(C, 5, GRID, N)
    with pytest.raises(ValueError, match="bias must be one of"):
        TaskAdaptedAttention(C, HEADS, GRID, N, bias="window")
    with pytest.raises(ValueError, match="window_size"):
        TaskAdaptedAttention(C, HEADS, (6, 6), N, bias="embedding", window_size=4)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N)
    with pytest.raises(ValueError, match="raster order"):
        taa(torch.randn(T, B, L + 1, C), _omega())
    with pytest.raises(ValueError, match="one row per task stream"):
        taa(_x(), torch.rand(T, N + 1))


def _ln_init(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g) * 0.1


def test_tsn_at_init_is_the_backbone_layer_norm():
    w, b = _ln_init()
    tsn = TaskScaledNorm(C, w, b)
    a = _x(3) * 3 + 1
    ref = F.layer_norm(a, (C,), w, b, 1e-5)
    for seed in (4, 5):
        assert torch.allclose(tsn(a, _x(seed)), ref, atol=1e-6)


def test_tsn_modulation_follows_eq4_and_depends_on_omega_tilde():
    w, b = _ln_init()
    tsn = TaskScaledNorm(C, w, b)
    with torch.no_grad():
        for layer in (tsn.film_scale, tsn.film_shift):
            torch.nn.init.normal_(layer.weight, std=0.1)
            torch.nn.init.normal_(layer.bias, std=0.1)
    a, om = _x(3), _x(4)
    normed = F.layer_norm(a, (C,), eps=1e-5)
    expected = normed * w * (1 + tsn.film_scale(om)) + b + tsn.film_shift(om)
    assert torch.allclose(tsn(a, om), expected, atol=1e-6)
    assert not torch.allclose(tsn(a, om), F.layer_norm(a, (C,), w, b), atol=1e-3)
    assert not torch.allclose(tsn(a, om), tsn(a, _x(5)), atol=1e-3)


def test_tsn_trains_gamma_prime_and_beta_prime():
    w, b = _ln_init()
    tsn = TaskScaledNorm(C, w, b)
    tsn(_x(3), _x(4)).pow(2).sum().backward()
    assert tsn.weight.grad.abs().sum() > 0 and tsn.bias.grad.abs().sum() > 0
    assert tsn.film_scale.weight.grad.abs().sum() > 0  # FiLM learns from step one
    w_before = w.clone()
    with torch.no_grad():
        tsn.weight.add_(1.0)  # training TSN must never write into the frozen backbone's norm
    assert torch.equal(w, w_before)


def test_tsn_disabled_is_a_fixed_layer_norm():
    w, b = _ln_init()
    tsn = TaskScaledNorm(C, w, b, enabled=False)
    assert list(tsn.parameters()) == []
    a = _x(3)
    assert torch.allclose(tsn(a, None), F.layer_norm(a, (C,), w, b, 1e-5), atol=1e-7)
    assert torch.equal(tsn(a, _x(4)), tsn(a, _x(5)))  # omega~ ignored


def test_tsn_reports_bad_shapes():
    w, b = _ln_init()
    with pytest.raises(ValueError, match="backbone LayerNorm"):
        TaskScaledNorm(C + 1, w, b)
    with pytest.raises(ValueError, match="FFN residual"):
        TaskScaledNorm(C, w, b)(_x(), None)
