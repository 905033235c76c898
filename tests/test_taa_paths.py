"""TAA's two computations of Eq. 2 agree, and attention maps come from the forward itself.

``TaskAdaptedAttention.forward`` writes Eq. 2 out step by step (the readable path) and, by
default, computes it with one fused ``F.scaled_dot_product_attention`` call; recording attention
(``keep_attention`` / ``record_attention``) runs the readable path.
"""
from __future__ import annotations

import copy

import pytest
import torch

from vtagml_core.model.adapter import AdapterConfig, VisionAdapter
from vtagml_core.model.taa import FilmWeights, TaskAdaptedAttention, record_attention
from vtagml_core.model.taa_official import WindowBlockBias

T, B, C, HEADS, N = 3, 2, 16, 4, 3
GRID = (4, 4)
L = GRID[0] * GRID[1]
#: float32 agreement of the two paths (different summation order only).
ATOL: float = 1e-5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _omega(seed: int = 0) -> torch.Tensor:
    return torch.softmax(torch.randn(T, N, generator=_gen(seed)), dim=1)


def _taa(logits: str, bias: str, fused: bool = True) -> TaskAdaptedAttention:
    torch.manual_seed(0)
    taa = TaskAdaptedAttention(C, HEADS, GRID, N, logits=logits, bias=bias, window_size=2,
                               fused=fused)
    with torch.no_grad():  # move every weight off its init so the bias really matters
        for p in taa.parameters():
            p.add_(torch.randn(p.shape, generator=_gen(p.numel())) * 0.3)
    return taa


def _run(taa: TaskAdaptedAttention, x: torch.Tensor, om: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = taa(x, om)
    out.mul(torch.randn(out.shape, generator=_gen(9))).sum().backward()
    grads = {n: p.grad.clone() for n, p in taa.named_parameters()}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("logits", ["dot", "cosine"])
@pytest.mark.parametrize("bias", ["film", "embedding", "none"])
def test_fused_and_readable_paths_agree_with_gradients(logits, bias):
    fused = _taa(logits, bias, fused=True)
    readable = copy.deepcopy(fused)
    readable.fused = False
    x, om = torch.randn(T, B, L, C, generator=_gen(1)), _omega()
    out_f, gx_f, g_f = _run(fused, x, om)
    out_r, gx_r, g_r = _run(readable, x, om)
    assert out_f.dtype == torch.float32
    torch.testing.assert_close(out_r, out_f, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(gx_r, gx_f, atol=ATOL, rtol=1e-4)
    assert g_f.keys() == g_r.keys()
    for name in g_f:
        torch.testing.assert_close(g_r[name], g_f[name], atol=ATOL, rtol=1e-4, msg=name)
    if bias != "none":  # the gradient reaches the bias parameters on both paths
        assert g_r["bias_fn.A"].abs().sum() > 0


def test_readable_forward_is_eq2_step_by_step_with_the_public_pieces():
    taa = _taa("cosine", "film")
    x, om = torch.randn(T, B, L, C, generator=_gen(2)), _omega(1)
    with torch.no_grad():
        q, k, v = taa.heads(x)                                     # (T, B, H, L, d)
        logits = taa.attention_logits(q, k)                        # (T, B, H, L, L)
        attn = (logits + taa.film_bias(om)[:, None, None]).softmax(dim=-1)
        mine = taa.proj(taa.merge_heads(attn @ v))                 # (T, B, L, C)
        torch.testing.assert_close(mine, taa(x, om), atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(attn, taa.attention_weights(x, om))


def test_keep_attention_takes_the_readable_path_and_keeps_the_maps():
    taa = _taa("dot", "film")
    x, om = torch.randn(T, B, L, C, generator=_gen(3)), _omega()
    assert taa.fused and not taa.keep_attention and taa.last_attention is None
    taa(x, om)
    assert taa.last_attention is None          # fused path: no map materialised
    taa.keep_attention = True
    out = taa(x, om)
    maps = taa.last_attention
    assert maps.shape == (T, B, HEADS, L, L) and not maps.requires_grad
    torch.testing.assert_close(maps.sum(-1), torch.ones(T, B, HEADS, L))
    taa.keep_attention = False
    torch.testing.assert_close(taa(x, om), out, atol=ATOL, rtol=1e-4)


def _adapter(**cfg) -> VisionAdapter:
    torch.manual_seed(0)
    ch, grids, heads = [16, 16, 32], [(4, 4), (4, 4), (2, 2)], [2, 2, 4]
    ln = [(torch.ones(c), torch.zeros(c)) for c in ch]
    model = VisionAdapter(AdapterConfig(**cfg), ch, grids, heads, ln, N)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "film" in name:
                p.normal_(std=0.3, generator=_gen(len(name)))
    return model


def _taps() -> list[torch.Tensor]:
    g = _gen(4)
    return [torch.randn(B, 4, 4, 16, generator=g), torch.randn(B, 4, 4, 16, generator=g),
            torch.randn(B, 2, 2, 32, generator=g)]


def test_record_attention_collects_one_map_per_layer_and_restores_the_flags():
    model, taps = _adapter(), _taps()
    with torch.no_grad():
        plain_outs = model(taps)
        with record_attention(model) as record:
            assert all(layer.taa.keep_attention for layer in model.layers)
            outs = model(taps)
    assert len(record) == len(model.layers) == 3
    assert [tuple(m.shape) for m in record.maps] == [(N, B, 2, 16, 16)] * 2 + [(N, B, 4, 4, 4)]
    for a, b in zip(outs, plain_outs):  # recording changes the path, not the numbers
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-4)
    assert not any(layer.taa.keep_attention for layer in model.layers)
    assert all(layer.taa.last_attention is None for layer in model.layers)
    # the maps are the ones layer 0 computes on its own input: the tap, once per stream
    layer0 = model.layers[0]
    x0 = taps[0].reshape(1, B, L, 16).expand(N, B, L, 16)
    expected = layer0.taa.attention_weights(layer0.norm_attn(x0), model.condition())
    torch.testing.assert_close(record.maps[0], expected)


def test_record_attention_without_a_forward_says_what_to_do():
    model = _adapter()
    with record_attention(model) as record:
        pass
    with pytest.raises(RuntimeError, match="run the model's forward inside"):
        _ = record.maps


def test_taa_fused_config_reaches_every_layer():
    assert AdapterConfig().taa_fused is True
    assert all(layer.taa.fused for layer in _adapter().layers)
    model = _adapter(taa_fused=False)
    assert not any(layer.taa.fused for layer in model.layers)
    fused = _adapter()
    with torch.no_grad():
        for a, b in zip(model(_taps()), fused(_taps())):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-4)


def test_film_accessors_and_their_errors():
    taa = _taa("cosine", "film")
    weights = taa.film_weights()
    assert isinstance(weights, FilmWeights)
    assert weights.A.shape == (L, L) and weights.weight.shape == (2 * L * L, N)
    assert weights.A is taa.bias_fn.A  # the parameters themselves, not copies
    gamma, beta = taa.film_modulation(_omega())
    torch.testing.assert_close(taa.film_bias(_omega()), weights.A * (1 + gamma) + beta)
    for bias in ("embedding", "none"):
        other = _taa("dot", bias)
        with pytest.raises(ValueError, match="only for bias='film'"):
            other.film_weights()
    assert torch.equal(_taa("dot", "none").film_bias(_omega()), torch.zeros(T, L, L))
    with pytest.raises(ValueError, match="logits='cosine'"):
        _taa("dot", "film").temperature()


def test_official_variant_lives_in_its_own_module():
    taa = _taa("dot", "embedding")
    assert isinstance(taa.bias_fn, WindowBlockBias)
    assert type(taa.bias_fn).__module__ == "vtagml_core.model.taa_official"
