"""TROA (paper Sec. 3.2.1, Algorithm 1): gradient similarity, mirror descent, the module."""
from __future__ import annotations

import math

import pytest
import torch

from vtagml_core.model.troa import (
    OMEGA_FLOOR,
    TROA,
    affinity_loss_weights,
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
