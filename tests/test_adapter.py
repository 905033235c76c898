"""Adapter layer (Fig. 3), chained stack (Sec. 3.1) and the per-task gradient trick for TROA."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vtagml_core.model.adapter import AdapterConfig, AdapterLayer, VisionAdapter

# The tiny Swin V2 at 128 px: four stage-3 taps and two stage-4 taps.
TINY_CH = [128] * 4 + [256] * 2
TINY_GRID = [(8, 8)] * 4 + [(4, 4)] * 2
TINY_HEADS = [4] * 4 + [8] * 2
# An even smaller stack for numerical checks: one tap per stage.
SMALL_CH, SMALL_GRID, SMALL_HEADS = [16, 32], [(4, 4), (2, 2)], [2, 4]


def _ln(channels):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.1)
            for c in channels]


def _taps(channels, grids, batch=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *hw, c, generator=g).requires_grad_(requires_grad)
            for c, hw in zip(channels, grids)]


def _small(num_tasks=3, **cfg):
    torch.manual_seed(0)
    return VisionAdapter(AdapterConfig(**cfg), SMALL_CH, SMALL_GRID, SMALL_HEADS, _ln(SMALL_CH),
                         num_tasks)


def _randomise_film(model):
    """Move the zero-initialised FiLM maps so that task conditioning has an effect."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "film" in name:
                p.normal_(std=0.3)


def test_tiny_swin_taps_give_per_task_outputs():
    model = VisionAdapter(AdapterConfig(), TINY_CH, TINY_GRID, TINY_HEADS, _ln(TINY_CH), 3)
    outs = model(_taps(TINY_CH, TINY_GRID))
    assert [tuple(o.shape) for o in outs] == [(3, 2, 8, 8, 128)] * 4 + [(3, 2, 4, 4, 256)] * 2
    assert model.stage_ends == [3, 5]
    assert model.troa.omega.shape == (3, 3)
    assert "troa.omega" in model.state_dict()  # checkpoints carry the affinities


def test_gradients_reach_adapter_weights_but_not_the_taps():
    model = _small()
    _randomise_film(model)
    taps = _taps(SMALL_CH, SMALL_GRID, requires_grad=True)
    sum(o.square().mean() for o in model(taps)).backward()
    assert all(t.grad is None for t in taps)  # frozen backbone: taps are detached
    layer = model.layers[0]
    for p in (layer.taa.qkv.weight, layer.taa.bias_fn.A, layer.taa.bias_fn.film.weight,
              layer.tsn.weight, layer.tsn.film_scale.weight, layer.ffn[0].weight,
              model.skips[0].reduction.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_per_task_gradients_equal_separate_autograd_per_task():
    """One backward of sum_t lambda_t L_t gives lambda_t * dL_t/dtheta for every t."""
    T = 3
    model = _small(T, taa_logits="dot")
    _randomise_film(model)
    omega = torch.softmax(torch.randn(T, T, generator=torch.Generator().manual_seed(1)), dim=1)
    taps = _taps(SMALL_CH, SMALL_GRID, seed=2)
    heads = torch.randn(T, SMALL_CH[-1], 5, generator=torch.Generator().manual_seed(3))
    target = torch.randn(T, 2, *SMALL_GRID[-1], 5, generator=torch.Generator().manual_seed(4))
    lambdas = torch.tensor([1.0, 0.5, 2.0])

    def task_losses(outs):  # per-task linear head on the deepest output, MSE per task
        pred = torch.einsum("tbhwc,tck->tbhwk", outs[-1], heads)
        return (pred - target).square().mean(dim=(1, 2, 3, 4))

    losses = task_losses(model(taps, omega, track_task_grads=True))
    (lambdas * losses).sum().backward()
    tracked = model.task_gradients()

    # Reference: all streams read one shared theta; differentiate each L_t separately.
    theta = [t.clone().requires_grad_(True) for t in taps]
    streams = [th.unsqueeze(0).expand(T, *th.shape) for th in theta]
    ref_losses = task_losses(model.run_layers(streams, omega))
    for t in range(T):
        grads = torch.autograd.grad(ref_losses[t], theta, retain_graph=True)
        expected = torch.cat([g.reshape(-1) for g in grads])
        assert torch.allclose(tracked[t], lambdas[t] * expected, rtol=1e-4, atol=1e-7)
    assert tracked.shape == (T, sum(t.numel() for t in taps))
    assert not torch.allclose(tracked[0], tracked[2])  # the streams really are task-specific


def test_task_gradients_need_a_tracked_forward_and_a_backward():
    model = _small()
    with pytest.raises(RuntimeError, match="track_task_grads=True"):
        model.task_gradients()
    model(_taps(SMALL_CH, SMALL_GRID), track_task_grads=True)
    with pytest.raises(RuntimeError, match="backward"):
        model.task_gradients()


def test_update_affinity_moves_omega_only_with_troa_on():
    for troa_on in (True, False):
        model = _small(troa=troa_on)
        _randomise_film(model)
        outs = model(_taps(SMALL_CH, SMALL_GRID), track_task_grads=True)
        weights = torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1, 1, 1)
        (outs[-1] * weights).sum().backward()
        sim = model.update_affinity()
        if troa_on:
            assert sim.shape == (3, 3) and sim[0, 1] < 0
            assert not torch.allclose(model.troa.omega, torch.full((3, 3), 1 / 3))
            assert torch.allclose(model.troa.omega.sum(1), torch.ones(3))
        else:
            assert sim is None
            assert torch.equal(model.troa.omega, torch.full((3, 3), 1 / 3))


def test_taa_off_removes_the_bias_and_omega_no_longer_matters():
    om1 = torch.softmax(torch.randn(3, 3), dim=1)
    om2 = torch.softmax(torch.randn(3, 3), dim=1)
    taps = _taps(SMALL_CH, SMALL_GRID)
    off = _small(taa_bias="none")
    assert all(layer.taa.bias_fn is None for layer in off.layers)
    assert not any("bias_fn" in name for name, _ in off.named_parameters())
    _randomise_film(off)
    for a, b in zip(off(taps, om1), off(taps, om2)):
        assert torch.equal(a, b)
    on = _small(taa_bias="film")
    _randomise_film(on)
    assert not torch.allclose(on(taps, om1)[-1], on(taps, om2)[-1], atol=1e-4)


def test_tsn_off_makes_the_norm_a_plain_layer_norm_of_the_ffn_residual():
    cfg = dict(dim=16, num_heads=2, grid=(4, 4), num_tasks=3)
    w, b = _ln([16])[0]
    torch.manual_seed(0)
    on = AdapterLayer(**cfg, ln_weight=w, ln_bias=b)
    torch.manual_seed(0)
    off = AdapterLayer(**cfg, ln_weight=w, ln_bias=b, tsn_enabled=False)
    x, cond = torch.randn(3, 2, 16, 16), torch.softmax(torch.randn(3, 3), dim=1)
    parts = off.parts(x, cond)
    # TSN off: the tapped block's fixed LayerNorm of omega~_t = a_t + FFN(LN(a_t)).
    assert torch.allclose(parts.out, F.layer_norm(parts.omega_tilde, (16,), w, b, 1e-5), atol=1e-6)
    assert list(off.tsn.parameters()) == []
    # Everything but the norm is identical: same a_t and omega~_t with TSN on.
    on_parts = on.parts(x, cond)
    assert torch.allclose(on_parts.a, parts.a) and torch.allclose(on_parts.omega_tilde,
                                                                   parts.omega_tilde)


def test_tsn_off_keeps_the_ffn_it_gets_gradients_and_changes_the_output():
    """The TSN ablation removes the task scaling only: the FFN still acts on the output."""
    w, b = _ln([16])[0]
    torch.manual_seed(0)
    off = AdapterLayer(16, 2, (4, 4), 3, w, b, tsn_enabled=False)
    x, cond = torch.randn(3, 2, 16, 16), torch.softmax(torch.randn(3, 3), dim=1)
    out = off(x, cond)
    out.square().mean().backward()
    for p in off.ffn.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    with torch.no_grad():
        off.ffn[2].weight.add_(0.1 * torch.randn_like(off.ffn[2].weight))
    assert not torch.allclose(off(x, cond), out, atol=1e-4)


def test_adapter_layer_dataflow_matches_fig3():
    w, b = _ln([16])[0]
    layer = AdapterLayer(16, 2, (4, 4), 3, w, b)
    x, cond = torch.randn(3, 2, 16, 16), torch.softmax(torch.randn(3, 3), dim=1)
    parts = layer.parts(x, cond)
    a = x + layer.taa(layer.norm_attn(x), cond)
    omega_tilde = a + layer.ffn(layer.norm_ffn(a))
    assert torch.allclose(parts.a, a) and torch.allclose(parts.omega_tilde, omega_tilde)
    assert torch.allclose(parts.out, layer.tsn(a, omega_tilde))
    assert torch.equal(layer(x, cond), parts.out)
    assert layer.ffn[0].out_features == 4  # bottleneck: 16 * 0.25


def test_two_taps_only_placement_ablation():
    ch, grid, heads = TINY_CH[3:5], TINY_GRID[3:5], TINY_HEADS[3:5]
    model = VisionAdapter(AdapterConfig(), ch, grid, heads, _ln(ch), 2)
    outs = model(_taps(ch, grid))
    assert [tuple(o.shape) for o in outs] == [(2, 2, 8, 8, 128), (2, 2, 4, 4, 256)]
    assert model.stage_ends == [0, 1] and len(model.skips) == 1


def test_embedding_affinity_source_reproduces_the_official_variant():
    model = _small(affinity_source="embedding", taa_bias="embedding", window_size=2)
    assert not model.troa.enabled and model.task_embedding.weight.shape == (3, 64)
    taps = _taps(SMALL_CH, SMALL_GRID)
    outs = model(taps, task_ids=[2, 0])
    assert outs[0].shape == (2, 2, 4, 4, 16)
    _randomise_film(model)
    outs = model(taps)
    assert not torch.allclose(outs[-1][0], outs[-1][1], atol=1e-4)  # tasks differ
    with pytest.raises(ValueError, match="task_ids, not omega"):
        model(taps, omega=torch.full((3, 3), 1 / 3))


def test_disabled_adapters_pass_the_taps_through_per_task():
    model = _small(enabled=False)
    assert len(model.layers) == 0 and not model.troa.enabled
    taps = _taps(SMALL_CH, SMALL_GRID)
    outs = model(taps)
    for o, t in zip(outs, taps):
        assert o.shape == (3, *t.shape) and torch.equal(o[1], t)


def test_stack_reports_bad_taps_and_config():
    model = _small()
    bad = _taps(SMALL_CH, SMALL_GRID)
    bad[0] = bad[0].permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match="NHWC"):
        model(bad)
    with pytest.raises(ValueError, match="affinity_source"):
        _small(affinity_source="learned")
    with pytest.raises(ValueError, match="halve"):
        VisionAdapter(AdapterConfig(), [16, 16], [(4, 4), (3, 3)], [2, 2], _ln([16, 16]), 2)
    assert dataclasses.asdict(AdapterConfig())["sign"] == 1.0
