"""Loss balancing (issue 7, item 4): each strategy's defining rule on a toy with a known answer,
the per-task backward that keeps TROA's inputs intact, and one trainer step with every balancer
on a tiny VTAGML (64 px) with TROA still updating omega."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Dataset

from vtagml_core.train.config import load_kit_config
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.train.balancing import (BALANCERS, CAGrad, DynamicWeightAverage, PCGrad,
                                         UncertaintyWeighting, build_balancer, cagrad_direction,
                                         gradnorm_weight_step, pcgrad_project, per_task_backward)
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.trainer import Trainer

SIZE = 64
TASKS = ("seg", "depth")


def _batch(B: int = 2, K: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(B, 3, SIZE, SIZE, generator=g),
            "seg": torch.randint(0, K, (B, SIZE, SIZE), generator=g),
            "depth": torch.rand(B, 1, SIZE, SIZE, generator=g) * 5 + 0.5,
            "valid": torch.ones(B, 1, SIZE, SIZE, dtype=torch.bool)}


# --------------------------------------------------------------------------- PCGrad


def test_pcgrad_projects_conflicting_gradients_to_the_known_result():
    # g1 . g2 = -1 < 0: g1 -> g1 - (-1/2) g2 = (0.5, 0.5); g2 -> g2 - (-1/1) g1 = (0, 1).
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(pcgrad_project(g), torch.tensor([0.5, 1.5]))
    # Each projected gradient is orthogonal to the other task's original gradient.
    p1 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    assert abs(float(p1 @ g[1])) < 1e-6


def test_pcgrad_leaves_agreeing_gradients_alone():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 1.0]])  # all dots >= 0
    torch.testing.assert_close(pcgrad_project(g), g.sum(dim=0))


def test_pcgrad_order_is_reproducible_per_step():
    a, b = PCGrad(("seg", "depth", "normals"), seed=3), PCGrad(("seg", "depth", "normals"), seed=3)
    assert a._order() == b._order()
    assert all(i not in others for i, others in enumerate(a._order()))


# --------------------------------------------------------------------------- CAGrad


def _ball_check(g: torch.Tensor, c: float) -> None:
    d, w = cagrad_direction(g, c, rescale=False)
    g0 = g.mean(dim=0)
    # Inside the c-ball around the average gradient (Liu et al. 2021, Eq. 4).
    assert float((d - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-4)
    assert abs(float(w.sum()) - 1.0) < 1e-5 and float(w.min()) >= 0
    # It maximises the worst task's inner product over the ball: no sampled point beats it.
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(20000, g.shape[1], generator=gen)
    u = u / u.norm(dim=1, keepdim=True) * torch.rand(20000, 1, generator=gen) ** (1 / g.shape[1])
    candidates = g0 + c * g0.norm() * u
    best_sampled = float((candidates @ g.T).min(dim=1).values.max())
    assert float((g @ d).min()) >= best_sampled - 1e-3


def test_cagrad_update_helps_every_task_within_its_ball():
    # Strongly conflicting toy: the average gradient g0 hurts task 2 (g0 . g2 < 0).
    g = torch.tensor([[4.0, 0.0], [-1.0, 0.5]])
    g0 = g.mean(dim=0)
    assert float(g0 @ g[1]) < 0
    # c = 0.8: the best worst-task value over the ball is still < 0 (brute force agrees);
    # c = 1.0: the ball reaches updates that conflict with no task, and CAGrad finds one.
    d, _ = cagrad_direction(g, 0.8, rescale=False)
    assert float((g @ d).min()) < 0
    _ball_check(g, 0.8)
    d, _ = cagrad_direction(g, 1.0, rescale=False)
    assert float((g @ d).min()) >= 0.0, "within its c-ball CAGrad finds a non-conflicting update"
    assert float((g @ d).min()) > float((g @ g0).min())  # the worst task gains over plain averaging
    _ball_check(g, 1.0)


def test_cagrad_is_the_optimum_of_its_ball_on_random_toys():
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _ball_check(torch.randn(3, 4, generator=gen), 0.5)


def test_cagrad_with_c_zero_is_the_average_and_rescale_divides():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    d0, _ = cagrad_direction(g, 0.0)
    torch.testing.assert_close(d0, g.mean(dim=0))
    d, _ = cagrad_direction(g, 0.5, rescale=False)
    dr, _ = cagrad_direction(g, 0.5, rescale=True)
    torch.testing.assert_close(dr, d / 1.25)


# --------------------------------------------------------------------------- loss weighting


def test_uncertainty_weights_are_exp_minus_s_and_total_adds_s():
    b = UncertaintyWeighting(TASKS)
    with torch.no_grad():
        b.log_vars.copy_(torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(b.weights(), torch.exp(-torch.tensor([0.5, -1.0])))
    losses = {"seg": torch.tensor(2.0), "depth": torch.tensor(3.0)}
    expected = math.exp(-0.5) * 2 + 0.5 + math.exp(1.0) * 3 - 1.0
    assert abs(float(b.combine(losses).detach()) - expected) < 1e-5
    # d total / d s_t = 1 - exp(-s_t) L_t: the optimum is s_t = log L_t (sigma^2 = the loss).
    b.combine(losses).backward()
    torch.testing.assert_close(b.log_vars.grad, 1 - torch.exp(-b.log_vars.detach()) * torch.tensor([2.0, 3.0]))


def test_dwa_weights_follow_epoch_loss_ratios_with_temperature():
    T = 2.0
    b = DynamicWeightAverage(TASKS, temperature=T)
    means = [(1.0, 1.0), (0.5, 0.9)]  # epoch means: seg halves, depth hardly moves
    for seg, depth in means:
        torch.testing.assert_close(b.weights(), torch.ones(2))  # warm-up: ones
        for scale in (0.9, 1.1):  # two steps averaging to the epoch mean
            b.combine({"seg": torch.tensor(seg * scale), "depth": torch.tensor(depth * scale)})
        b.end_epoch()
    r = torch.tensor([0.5 / 1.0, 0.9 / 1.0])
    expected = 2 * torch.exp(r / T) / torch.exp(r / T).sum()
    torch.testing.assert_close(b.weights(), expected.float())
    assert b.weights()[1] > b.weights()[0]  # the slower task gets more weight
    assert abs(float(b.weights().sum()) - 2.0) < 1e-5
    with torch.no_grad():  # evaluation-time calls record nothing
        b.combine({"seg": torch.tensor(9.0), "depth": torch.tensor(9.0)})
    assert int(b.loss_count) == 0


# --------------------------------------------------------------------------- GradNorm


def test_gradnorm_moves_weights_to_equalise_scaled_gradient_norms():
    w = torch.ones(2)
    norms = torch.tensor([10.0, 1.0])  # task 1's gradients are 10x larger
    same_rate = torch.tensor([0.5, 0.5])
    new = gradnorm_weight_step(w, norms, same_rate, alpha=1.5, lr=0.1)
    assert new[0] < 1 < new[1] and abs(float(new.sum()) - 2) < 1e-6
    # Iterated on the same toy, w_t n_t converges to a common value (equal training rates).
    # (|.| has a sign gradient: steps oscillate around the fixed point with amplitude ~ lr.)
    for lr in (0.01, 0.001):
        for _ in range(400):
            w = gradnorm_weight_step(w, norms, same_rate, alpha=1.5, lr=lr)
    G = w * norms
    assert abs(float(G[0] / G[1]) - 1.0) < 0.05
    # Equal norms, but task 2 trains slower (L/L0 larger): it gets the larger weight, and at the
    # fixed point G_t is proportional to r_t^alpha.
    w, ratios, alpha = torch.ones(2), torch.tensor([0.4, 0.8]), 1.0
    for lr in (0.01, 0.001):
        for _ in range(400):
            w = gradnorm_weight_step(w, torch.ones(2), ratios, alpha=alpha, lr=lr)
    assert w[1] > w[0]
    assert abs(float(w[1] / w[0]) - 2.0) < 0.05


# --------------------------------------------------------------------------- registry


def test_build_balancer_knows_every_strategy_and_rejects_bad_input():
    assert set(BALANCERS) == {"equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "cagrad"}
    assert isinstance(build_balancer("cagrad", TASKS, c=0.2), CAGrad)
    with pytest.raises(ValueError, match="unknown balancer 'mgda'.*valid"):
        build_balancer("mgda", TASKS)
    with pytest.raises(ValueError, match="no option.*temperature"):
        build_balancer("pcgrad", TASKS, temperature=2.0)
    with pytest.raises(ValueError, match="train.balancer must be one of"):
        load_kit_config(preset="quick", overrides=["train.balancer=nope"])
    with pytest.raises(ValueError, match="got no loss for"):
        build_balancer("equal", TASKS).combine({"seg": torch.tensor(1.0)})


# --------------------------------------------------------------------------- per-task backward


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = ModelConfig(tasks="S-D", backbone=BackboneConfig(img_size=SIZE))
    cfg.decoder.embed_dims, cfg.decoder.depth_per_stage = [32, 16, 16, 8], 1
    return VTAGML(cfg).train()


def _grads(model, leaves):
    return ([None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [leaf.grad.clone() for leaf in leaves])


def test_per_task_backward_leaves_troa_inputs_and_sums_as_total_backward(tiny_model):
    model, batch, loss_fn = tiny_model, _batch(), MultiTaskLoss("S-D")
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    total, _ = loss_fn(model(batch["image"], track_task_grads=True), batch)
    total.backward()
    ref_params, ref_leaves = _grads(model, model.adapter._leaves)

    model.zero_grad(set_to_none=True)
    _, per_task = loss_fn(model(batch["image"], track_task_grads=True), batch)
    info = build_balancer("equal", ("seg", "depth")).backward(per_task, params)
    assert info == {}
    got_params, got_leaves = _grads(model, model.adapter._leaves)
    for a, b in zip(ref_leaves, got_leaves):  # TROA sees exactly what total.backward() leaves
        torch.testing.assert_close(a, b)
    for a, b in zip(ref_params, got_params):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # Adapters are shared (both tasks reach them); each decoder is reached by one task only.
    grads = per_task_backward(list(loss_fn(model(batch["image"]), batch)[1].values()), params)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shared = {names[k] for k in grads.shared}
    assert any(n.startswith("adapter.") for n in shared)
    assert not any(n.startswith("decoder.decoders.") for n in shared)


# --------------------------------------------------------------------------- trainer


class _Toy(Dataset):
    """Random samples following the data contract (S-D), no rendering."""

    tasks = TASKS

    def __init__(self, count: int, seed: int) -> None:
        self.batch = _batch(count, seed=seed)

    def __len__(self) -> int:
        return self.batch["image"].shape[0]

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.batch.items()}


TINY = ["data.size=64", "model.backbone.img_size=64", "model.tasks=S-D",
        "model.decoder.embed_dims=[32,16,16,8]", "model.decoder.depth_per_stage=1",
        "data.batch_size=2", "train.warmup_steps=0", "train.progress=false", "train.device=cpu",
        "train.feature_cache=false", "train.class_weight_power=0"]


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_trainer_step_with_every_balancer_keeps_troa_updating(name, tmp_path):
    cfg = load_kit_config(preset="quick", overrides=[*TINY, f"train.balancer={name}"])
    trainer = Trainer(cfg, tmp_path / name, train_set=_Toy(4, 0), val_set=_Toy(2, 1))
    model = trainer.model.train()
    omega = model.omega.detach().clone()
    before = [p.detach().clone() for p in trainer.trainable]
    out = trainer.training_step(next(iter(trainer.train_loader(0))))
    assert math.isfinite(out["loss"]) and set(out["losses"]) == set(TASKS)
    assert out["similarity"] is not None and out["similarity"].shape == (2, 2)
    assert not torch.equal(model.omega, omega), "TROA must still update omega"
    assert all(leaf.grad is not None for leaf in model.adapter._leaves)
    # The optimizer stepped on exactly the parameters the balancer gave a non-zero gradient
    # (zero-initialised residual norms get none at the first step, under every balancer).
    moved = {k for k, (a, p) in enumerate(zip(before, trainer.trainable)) if not torch.equal(a, p.detach())}
    with_grad = {k for k, p in enumerate(trainer.trainable) if p.grad is not None and bool(p.grad.any())}
    assert moved == with_grad and len(moved) > len(before) // 2
    if name == "uncertainty":  # its s_t train with the model
        assert not torch.equal(trainer.balancer.log_vars.detach(), torch.zeros(2))
    if name == "gradnorm":
        assert not torch.equal(trainer.balancer.weights(), torch.ones(2))
