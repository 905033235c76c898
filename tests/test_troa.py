"""TROA (paper Sec. 3.2.1, Algorithm 1): gradient similarity, mirror descent, the module."""
from __future__ import annotations

import math

import pytest
import torch

from vtagml_core.model.troa import (
    OMEGA_FLOOR,
    TROA,
    affinity_loss_weights,
    affinity_weighted_objective,
    gradient_cosine_similarity,
    mirror_descent_update,
    row_entropy,
    uniform_affinity,
)


def test_cosine_similarity_known_answer():
    grads = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([
        [1.0, 0.0, r, -1.0],
        [0.0, 1.0, r, 0.0],
        [r, r, 1.0, -r],
        [-1.0, 0.0, -r, 1.0],
    ])
    sim = gradient_cosine_similarity(grads)
    assert torch.allclose(sim, expected, atol=1e-6)
    assert torch.equal(sim, sim.T)


def test_cosine_similarity_zero_gradient_is_neutral():
    grads = torch.tensor([[1.0, 2.0], [0.0, 0.0], [2.0, -1.0]])
    sim = gradient_cosine_similarity(grads)
    assert torch.equal(sim[1], torch.zeros(3)) and torch.equal(sim[:, 1], torch.zeros(3))
    assert sim[0, 0] == 1.0 and sim[2, 2] == 1.0
    assert torch.isfinite(sim).all()
    # ... so the update leaves the zero-gradient task's row exactly where it was.
    omega = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    new = mirror_descent_update(omega, sim, kappa=1.0, sign=1.0)
    assert torch.allclose(new[1], omega[1], atol=1e-7)


def test_cosine_similarity_rejects_unflattened_gradients():
    with pytest.raises(ValueError, match="flatten"):
        gradient_cosine_similarity(torch.randn(2, 3, 4))


def test_mirror_descent_two_task_closed_form():
    sim = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    up = mirror_descent_update(uniform_affinity(2), sim, kappa=1.0, sign=1.0)
    down = mirror_descent_update(uniform_affinity(2), sim, kappa=1.0, sign=-1.0)
    # omega[t, t] = e^{s} / (e^{s} + e^{-s}) = sigmoid(2 s)
    assert up[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-6)
    assert down[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-6)


def test_mirror_descent_equals_naive_formula():
    torch.manual_seed(0)
    omega = torch.softmax(torch.randn(4, 4), dim=1)
    sim = gradient_cosine_similarity(torch.randn(4, 10))
    for sign in (1.0, -1.0):
        naive = omega * torch.exp(sign * 0.7 * sim)
        naive = naive / naive.sum(dim=1, keepdim=True)
        assert torch.allclose(mirror_descent_update(omega, sim, 0.7, sign), naive, atol=1e-6)


def test_mirror_descent_rejects_bad_arguments():
    omega, sim = uniform_affinity(3), torch.eye(3)
    with pytest.raises(ValueError, match="sign"):
        mirror_descent_update(omega, sim, 1.0, 0.5)
    with pytest.raises(ValueError, match="kappa"):
        mirror_descent_update(omega, sim, 0.0, 1.0)
    with pytest.raises(ValueError, match="square"):
        mirror_descent_update(omega, torch.eye(2), 1.0, 1.0)


def test_identical_task_gradients_keep_rows_uniform_and_equal():
    troa = TROA(2)
    g = torch.randn(1, 50)
    for _ in range(20):
        sim = troa.update(torch.cat([g, 3.0 * g]))  # same direction, different scale
    assert torch.allclose(sim, torch.ones(2, 2))
    assert torch.allclose(troa.omega, torch.full((2, 2), 0.5))
    assert torch.equal(troa.omega[0], troa.omega[1])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_opposed_gradients_move_rows_towards_or_away_from_self(sign):
    troa = TROA(2, sign=sign)
    g = torch.randn(1, 30)
    diag = []
    for _ in range(3):
        troa.update(torch.cat([g, -g]))
        diag.append(troa.omega.diagonal().clone())
    if sign > 0:  # the kit's default: strongest affinity with itself (paper Fig. 4)
        assert (diag[-1] > 0.5).all() and (diag[-1] > diag[0]).all()
    else:  # the printed Algorithm 1
        assert (diag[-1] < 0.5).all() and (diag[-1] < diag[0]).all()


def test_three_tasks_give_an_asymmetric_matrix():
    grads = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    troa = TROA(3)
    troa.update(grads)
    sim = gradient_cosine_similarity(grads)
    expected = torch.softmax(sim, dim=1)  # one step from uniform: omega[t] ∝ exp(sim[t])
    assert torch.allclose(troa.omega, expected, atol=1e-6)
    assert not torch.allclose(troa.omega, troa.omega.T, atol=1e-3)
    assert troa.omega[0, 1] > troa.omega[1, 0]  # same similarity, different row context


def test_rows_stay_distributions_over_long_aggressive_runs():
    torch.manual_seed(1)
    troa = TROA(4, kappa=25.0)
    for _ in range(300):
        troa.update(torch.randn(4, 16))
        assert (troa.omega > 0).all()
        assert torch.allclose(troa.omega.sum(dim=1), torch.ones(4), atol=1e-6)
    assert troa.omega.min() >= OMEGA_FLOOR * 0.5
    assert (row_entropy(troa.omega) <= math.log(4) + 1e-6).all()


def test_disabled_troa_stays_uniform_and_records_nothing():
    troa = TROA(3, enabled=False)
    sim = troa.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert sim[0, 1] == 0.0  # the similarity is still measured
    assert torch.equal(troa.omega, uniform_affinity(3))
    assert troa.history == [] and int(troa.num_updates) == 0


def test_history_records_steps_and_thins_when_full():
    troa = TROA(2, history_every=2, history_max=4)
    for _ in range(6):
        troa.update(torch.randn(2, 8))
    steps, mats = troa.history_tensor()
    assert steps.tolist() == [0, 2, 4, 6]
    assert mats.shape == (4, 2, 2) and torch.equal(mats[-1], troa.omega)
    assert torch.equal(mats[0], uniform_affinity(2))
    for _ in range(2):
        troa.update(torch.randn(2, 8))
    steps, _ = troa.history_tensor()
    assert steps.tolist() == [0, 4, 8]  # thinned to every 4 steps, still spans the run


def test_checkpoint_and_history_resume():
    torch.manual_seed(2)
    troa = TROA(3)
    for _ in range(5):
        troa.update(torch.randn(3, 12))
    state = troa.state_dict()
    assert set(state) == {"omega", "num_updates"}
    resumed = TROA(3)
    resumed.load_state_dict(state)
    resumed.load_history(*troa.history_tensor())
    assert torch.equal(resumed.omega, troa.omega) and int(resumed.num_updates) == 5
    g = torch.randn(3, 12)
    troa.update(g)
    resumed.update(g)
    assert torch.equal(resumed.omega, troa.omega)
    assert torch.equal(resumed.history_tensor()[0], troa.history_tensor()[0])
    with pytest.raises(ValueError, match="mats"):
        resumed.load_history(torch.arange(2), torch.zeros(2, 2, 2))


def test_update_rejects_wrong_number_of_tasks():
    with pytest.raises(ValueError, match="one row per task"):
        TROA(3).update(torch.randn(2, 5))
    with pytest.raises(ValueError, match="sign"):
        TROA(3, sign=2.0)


def test_affinity_loss_weights_are_column_means():
    omega = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    w = affinity_loss_weights(omega)
    assert torch.allclose(w, torch.tensor([1.1, 0.9, 1.0]) / 3)
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose((w * losses).sum(), (omega @ losses).mean())


# --------------------------------------------------------------------------- troa_every
# Algorithm 1 alternates "a few steps of Adam" with one omega update (troa.py docstring).


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_k_steps_equals_one_update_with_the_mean_similarity(sign):
    torch.manual_seed(3)
    k, n = 4, 3
    grads = [torch.randn(n, 20) for _ in range(2 * k)]
    sims = [gradient_cosine_similarity(g) for g in grads]
    troa = TROA(n, kappa=0.7, sign=sign, every=k)
    start = troa.omega.clone()
    for i, g in enumerate(grads[:k]):
        returned = troa.update(g)
        assert torch.equal(returned, sims[i])  # the step's own similarity, for the log
        if i < k - 1:
            assert torch.equal(troa.omega, start) and int(troa.num_updates) == 0
    mean = torch.stack(sims[:k]).double().mean(dim=0)
    expected = mirror_descent_update(start, mean, 0.7, sign)
    assert torch.allclose(troa.omega, expected, atol=1e-7, rtol=0)
    assert int(troa.num_updates) == 1 and troa.steps_seen == k
    for g in grads[k:]:
        troa.update(g)
    mean2 = torch.stack(sims[k:]).double().mean(dim=0)
    assert torch.allclose(troa.omega, mirror_descent_update(expected, mean2, 0.7, sign), atol=1e-7)
    steps, _ = troa.history_tensor()
    assert steps.tolist() == [0, k, 2 * k]  # history labelled in steps, not updates


def test_every_one_is_the_per_step_update_and_keeps_the_state_dict():
    torch.manual_seed(4)
    a, b = TROA(3), TROA(3, every=1)
    for _ in range(5):
        g = torch.randn(3, 9)
        a.update(g)
        b.update(g)
    assert torch.equal(a.omega, b.omega)
    assert set(TROA(3, every=1).state_dict()) == {"omega", "num_updates"}
    assert set(TROA(3, every=2).state_dict()) == {"omega", "num_updates", "sim_sum", "pending"}
    with pytest.raises(ValueError, match="troa_every"):
        TROA(3, every=0)


def test_every_window_resumes_exactly_from_the_state_dict():
    torch.manual_seed(5)
    grads = [torch.randn(3, 12) for _ in range(7)]
    ref = TROA(3, every=3)
    for g in grads:
        ref.update(g)
    first = TROA(3, every=3)
    for g in grads[:4]:  # stop in the middle of the second window
        first.update(g)
    resumed = TROA(3, every=3)
    resumed.load_state_dict(first.state_dict())
    resumed.load_history(*first.history_tensor())
    assert int(resumed.pending) == 1
    for g in grads[4:]:
        resumed.update(g)
    assert torch.equal(resumed.omega, ref.omega) and torch.equal(resumed.sim_sum, ref.sim_sum)
    assert torch.equal(resumed.history_tensor()[0], ref.history_tensor()[0])


def test_observe_replays_logged_similarities_exactly():
    torch.manual_seed(6)
    live, replay = TROA(3, kappa=0.3, every=2), TROA(3, kappa=0.3, every=2)
    for _ in range(6):
        sim = live.update(torch.randn(3, 8))
        replay.observe(torch.tensor(sim.tolist()))  # as read back from log.jsonl
    assert torch.equal(live.omega, replay.omega)


def test_troa_every_reaches_the_model_and_its_state_is_in_the_training_state():
    from vtagml_core.model.adapter import AdapterConfig
    from vtagml_core.model.backbone import BackboneConfig
    from vtagml_core.model.vtagml import VTAGML, ModelConfig
    from vtagml_core.train.state import mutable_model_state

    model = VTAGML(ModelConfig(tasks="S-D", num_classes=3, backbone=BackboneConfig(img_size=64),
                               adapter=AdapterConfig(troa_every=4)))
    assert model.adapter.troa.every == 4
    state = mutable_model_state(model)
    assert {"adapter.troa.sim_sum", "adapter.troa.pending", "adapter.troa.omega"} <= set(state)
    with pytest.raises(ValueError, match="troa_every"):
        AdapterConfig(troa_every=0).validate()


# --------------------------------------------------------------------------- weighted objective


def test_affinity_weighted_objective_known_value():
    omega = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    # L[t, n]: task n's loss on stream t.
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], requires_grad=True)
    value = affinity_weighted_objective(omega, losses)
    by_hand = (0.7 * 1 + 0.2 * 2 + 0.1 * 3) + (0.3 * 4 + 0.6 * 5 + 0.1 * 6) + (0.1 * 7 + 0.1 * 8 + 0.8 * 9)
    assert value.item() == pytest.approx(by_hand)
    value.backward()
    assert torch.allclose(losses.grad, omega)  # d/dL[t, n] = omega[t, n]; omega gets no gradient
    # omega = identity: the default objective sum_t L[t, t].
    assert affinity_weighted_objective(torch.eye(3), losses).item() == pytest.approx(15.0)
    with pytest.raises(ValueError, match="same shape"):
        affinity_weighted_objective(omega, losses[:, :2])


def _tiny_model(**adapter):
    from vtagml_core.model.adapter import AdapterConfig
    from vtagml_core.model.backbone import BackboneConfig
    from vtagml_core.model.decoder import DecoderConfig
    from vtagml_core.model.vtagml import VTAGML, ModelConfig

    torch.manual_seed(0)
    model = VTAGML(ModelConfig(tasks="S-D-E", num_classes=3, backbone=BackboneConfig(img_size=64),
                               adapter=AdapterConfig(**adapter),
                               decoder=DecoderConfig(embed_dims=[32, 16, 16, 8], depth_per_stage=1)))
    with torch.no_grad():  # move the zero-initialised FiLM maps so that omega_t matters
        for name, p in model.named_parameters():
            if "film" in name:
                p.normal_(std=0.3)
        model.adapter.troa.omega.copy_(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]))
    return model


def _tiny_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(2, 3, 64, 64, generator=g),
            "seg": torch.randint(0, 3, (2, 64, 64), generator=g),
            "depth": 1.0 + torch.rand(2, 1, 64, 64, generator=g),
            "valid": torch.ones(2, 1, 64, 64, dtype=torch.bool),
            "edges": torch.rand(2, 1, 64, 64, generator=g)}


def test_weighted_objective_decodes_every_stream_with_every_decoder():
    from vtagml_core.model.vtagml import STREAM_OUTPUTS
    from vtagml_core.train.losses import MultiTaskLoss

    model = _tiny_model(weighted_objective=True).train()
    batch = _tiny_batch()
    feats = model.encode(batch["image"])
    out = model(batch["image"], features=feats, track_task_grads=True)
    streams = out[STREAM_OUTPUTS]
    tasks = model.tasks
    assert len(streams) == len(tasks)
    for t, target in enumerate(tasks):
        # Reference: every stream conditioned on omega_t, read by every decoder.
        outs = model.adapter(feats.taps, task_ids=[t] * len(tasks))
        ref = model.decoder(model._decoder_inputs(outs, feats, range(len(tasks))), batch["image"])
        for task in tasks:
            assert torch.allclose(streams[t][task], ref[task], atol=1e-5)
        assert streams[t][target] is out[target]  # the diagonal is the model's own output
    # Eval mode (and the default objective) give the plain outputs, equal to the diagonal.
    plain = model.eval()(batch["image"], features=feats)
    assert STREAM_OUTPUTS not in plain
    for task in tasks:
        assert torch.allclose(plain[task], out[task], atol=1e-5)

    # The objective: sum_t sum_n omega[t, n] lambda_n L_n(stream t -> decoder n).
    loss = MultiTaskLoss(tasks, {"depth": 0.5})
    L = torch.stack([torch.stack([loss.weights[n] * loss.per_task(s, batch)[n] for n in tasks])
                     for s in streams])
    expected = sum(float(model.omega[t, n]) * float(L[t, n].detach()) for t in range(3) for n in range(3))
    assert affinity_weighted_objective(model.omega, L).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_objective_keeps_troa_gradients_those_of_the_default_objective():
    """TROA still sees lambda_t * grad L_t (own stream, own decoder), not the weighted mixture."""
    from vtagml_core.model.vtagml import STREAM_OUTPUTS
    from vtagml_core.train.losses import MultiTaskLoss

    batch = _tiny_batch(seed=2)
    loss = MultiTaskLoss(("seg", "depth", "edges"))
    default = _tiny_model().train()
    total, _ = loss(default(batch["image"], track_task_grads=True), batch)
    total.backward()
    expected = default.adapter.task_gradients()

    weighted = _tiny_model(weighted_objective=True).train()
    out = weighted(batch["image"], track_task_grads=True)
    L = torch.stack([torch.stack(list(loss.per_task(s, batch).values())) for s in out[STREAM_OUTPUTS]])
    affinity_weighted_objective(weighted.omega, L).backward()
    got = weighted.adapter.task_gradients()
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-9)
    assert weighted.update_affinity() is not None  # the tracked streams are in task order


def test_weighted_objective_needs_troa_omega():
    from vtagml_core.model.adapter import AdapterConfig

    with pytest.raises(ValueError, match="weighted_objective"):
        AdapterConfig(weighted_objective=True, affinity_source="embedding").validate()
    off = _tiny_model(weighted_objective=True, troa=False)
    assert not off.weighted_objective  # uniform omega: the weighted objective is the default one


def test_trainer_trains_on_the_weighted_objective(tmp_path, monkeypatch):
    from vtagml_core.train.config import load_kit_config
    from vtagml_core.train.logging import LOG_FILE, read_log
    from vtagml_core.train.trainer import Trainer

    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "cache"))
    tiny = ["data.size=64", "model.backbone.img_size=64", "model.tasks=S-D-E",
            "model.decoder.embed_dims=[32,16,16,8]", "model.decoder.depth_per_stage=1",
            "data.train_count=8", "data.val_count=4", "data.batch_size=4", "train.epochs=1",
            "train.warmup_steps=1", "train.save_every_steps=0", "train.progress=false",
            "train.device=cpu", "model.adapter.weighted_objective=true"]
    trainer = Trainer(load_kit_config(preset="quick", overrides=tiny), tmp_path / "run", log=lambda _: None)
    trainer.fit()
    steps = read_log(tmp_path / "run" / LOG_FILE, "step")
    # Step 1: omega uniform, every stream the same function, so the weighted objective
    # (1/N) sum_t sum_n L_n(t -> n) is the plain sum of the task losses.
    assert steps[0]["loss"] == pytest.approx(sum(steps[0]["losses"].values()), rel=1e-5)
    # Step 2: omega has moved; the objective weights every stream's losses by its row.
    assert steps[1]["loss"] != pytest.approx(sum(steps[1]["losses"].values()), rel=1e-5)
    assert "similarity" in steps[1] and int(trainer.model.adapter.troa.num_updates) == 2
    with pytest.raises(ValueError, match="train.balancer=equal"):
        Trainer(load_kit_config(preset="quick", overrides=tiny + ["train.balancer=dwa"]),
                tmp_path / "dwa", log=lambda _: None)
    # A trainer that hands the objective another batch size (the UDA trainer splits the
    # model's outputs) is told to switch the objective off.
    model = trainer.model.train()
    batch = next(iter(trainer.train_loader(0)))
    out = model(batch["image"])
    with pytest.raises(ValueError, match="weighted_objective=false"):
        trainer.affinity_objective(out["streams"], {**batch, "image": batch["image"][:2]})
