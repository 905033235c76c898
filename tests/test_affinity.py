"""The affinity question (issue 17): TROA's omega and cosine from a log, Fifty et al.'s lookahead
affinity (checked against its closed form on quadratic losses), the pair-gain ground truth, the
rank agreement, and the ``affinity`` command end to end in the smoke preset."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vtagml_core.cli import main
from vtagml_core.experiments.affinity import (COSINE, LOOKAHEAD, OMEGA, LookaheadTrainer,
                                              ground_truth, logged_lookahead, logged_similarities,
                                              lookahead_affinity, off_diagonal, pair_gain,
                                              rank_agreement, replay_omega)
from vtagml_core.train.config import load_kit_config
from vtagml_core.train.logging import LOG_FILE, read_log
from vtagml_core.train.trainer import Trainer

#: Tiny training: 64 px, three tasks, 8 scenes at batch 4, one epoch = 2 optimizer steps.
TINY = ["data.size=64", "model.backbone.img_size=64", "model.tasks=S-D-E",
        "model.decoder.embed_dims=[32,16,16,8]", "model.decoder.depth_per_stage=1",
        "data.train_count=8", "data.val_count=4", "data.batch_size=4", "train.epochs=1",
        "train.warmup_steps=1", "train.save_every_steps=0", "train.progress=false",
        "train.device=cpu", "train.lr=0.002"]


# --------------------------------------------------------------------------- lookahead, closed form


class QuadraticTasks(nn.Module):
    """A linear model theta with one quadratic loss per task: L_i = 1/2 |A_i theta - b_i|^2."""

    def __init__(self, mats: list[torch.Tensor], targets: list[torch.Tensor]) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(mats[0].shape[1], dtype=torch.float64,
                                              generator=torch.Generator().manual_seed(0)))
        self.mats, self.targets = mats, targets
        self.tasks = tuple(f"task{i}" for i in range(len(mats)))

    def forward(self, image, features=None):
        return {t: a @ self.theta for t, a in zip(self.tasks, self.mats)}

    def loss_fn(self, outputs, batch):
        losses = {t: 0.5 * (outputs[t] - b).square().sum() for t, b in zip(self.tasks, self.targets)}
        return sum(losses.values()), losses


def _quadratic(n_tasks=3, dim=5, rows=4):
    g = torch.Generator().manual_seed(1)
    mats = [torch.randn(rows, dim, dtype=torch.float64, generator=g) for _ in range(n_tasks)]
    targets = [torch.randn(rows, dtype=torch.float64, generator=g) for _ in range(n_tasks)]
    return QuadraticTasks(mats, targets)


def test_lookahead_affinity_equals_its_closed_form_on_quadratic_losses():
    model, lr = _quadratic(), 0.05
    theta = model.theta.detach().clone()
    z = lookahead_affinity(model, {"image": None}, model.loss_fn, lr, params=[model.theta])
    # Closed form: g_i = A_i^T (A_i theta - b_i); theta' = theta - lr g_n;
    # Z[t, n] = 1 - L_t(theta') / L_t(theta).
    def loss(i, th):
        return 0.5 * float((model.mats[i] @ th - model.targets[i]).square().sum())

    grads = [a.T @ (a @ theta - b) for a, b in zip(model.mats, model.targets)]
    n = len(grads)
    expected = torch.tensor([[1.0 - loss(t, theta - lr * grads[s]) / loss(t, theta) for s in range(n)]
                             for t in range(n)], dtype=torch.float64)
    assert torch.allclose(z, expected, atol=1e-12)
    # ... and the second-order expansion, exact for a quadratic:
    # L_t(theta - lr g_n) = L_t - lr g_t.g_n + lr^2/2 |A_t g_n|^2.
    expansion = torch.tensor([[(lr * float(grads[t] @ grads[s])
                                - 0.5 * lr ** 2 * float((model.mats[t] @ grads[s]).square().sum()))
                               / loss(t, theta) for s in range(n)] for t in range(n)], dtype=torch.float64)
    assert torch.allclose(z, expansion, atol=1e-12)
    assert not torch.allclose(z, z.T)  # Z(n -> t) != Z(t -> n) in general
    # Nothing is left behind: weights bit-identical, no .grad written.
    assert torch.equal(model.theta.detach(), theta) and model.theta.grad is None


def test_preconditioned_lookahead_divides_the_step_per_parameter():
    model, lr = _quadratic(), 0.05
    theta = model.theta.detach().clone()
    d = torch.linspace(0.5, 2.0, theta.numel(), dtype=torch.float64)   # e.g. Adam's sqrt(v_hat) + eps
    z = lookahead_affinity(model, {"image": None}, model.loss_fn, lr, params=[model.theta],
                           precondition=[d])

    def loss(i, th):
        return 0.5 * float((model.mats[i] @ th - model.targets[i]).square().sum())

    grads = [a.T @ (a @ theta - b) for a, b in zip(model.mats, model.targets)]
    expected = torch.tensor([[1.0 - loss(t, theta - lr * grads[s] / d) / loss(t, theta) for s in range(3)]
                             for t in range(3)], dtype=torch.float64)
    assert torch.allclose(z, expected, atol=1e-12)
    assert torch.equal(model.theta.detach(), theta)
    with pytest.raises(ValueError, match="one tensor per shared parameter"):
        lookahead_affinity(model, {"image": None}, model.loss_fn, lr, params=[model.theta],
                           precondition=[d, d])


def test_lookahead_of_aligned_and_opposed_tasks_has_the_expected_signs():
    # Task 1 = task 0 scaled: a step on either helps both. Task 2 pulls the other way.
    a = torch.eye(3, dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    model = QuadraticTasks([a, 2 * a, a], [b, 2 * b, -b])
    with torch.no_grad():
        model.theta.zero_()
    z = lookahead_affinity(model, {"image": None}, model.loss_fn, 0.1, params=[model.theta])
    assert z[1, 0] > 0 and z[0, 1] > 0
    assert z[2, 0] < 0 and z[0, 2] < 0


# --------------------------------------------------------------------------- ground truth, rho


def test_pair_gain_is_the_signed_relative_change_of_the_primary_metric():
    single = {"seg": {"mIoU": 0.5}, "depth": {"rmse": 2.0}}
    pair = {"seg": {"mIoU": 0.55}, "depth": {"rmse": 2.2}}
    assert pair_gain(pair, single, "seg") == pytest.approx(10.0)     # higher is better
    assert pair_gain(pair, single, "depth") == pytest.approx(-10.0)  # lower is better
    tasks = ("seg", "depth", "edges")
    single["edges"] = {"odsF": 0.8}
    pairs = {("seg", "depth"): pair,
             ("seg", "edges"): {"seg": {"mIoU": 0.4}, "edges": {"odsF": 0.88}},
             ("depth", "edges"): {"depth": {"rmse": 1.0}, "edges": {"odsF": 0.8}}}
    g = ground_truth(pairs, single, tasks)
    # Row = target t, column = source n: G[t, n] = gain of t trained with n.
    assert g[0, 1] == pytest.approx(10.0) and g[1, 0] == pytest.approx(-10.0)
    assert g[0, 2] == pytest.approx(-20.0) and g[2, 0] == pytest.approx(10.0)
    assert g[1, 2] == pytest.approx(50.0) and g[2, 1] == pytest.approx(0.0)
    assert torch.equal(g.diagonal(), torch.zeros(3, dtype=torch.float64))


def test_rank_agreement_reads_off_diagonal_ranks_only():
    truth = torch.tensor([[9.0, 1.0, 2.0], [3.0, 9.0, 4.0], [5.0, 6.0, 9.0]])
    assert off_diagonal(truth).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    same_order = truth.exp() - 100 * torch.eye(3)  # monotone off the diagonal, other diagonal
    assert rank_agreement(same_order, truth) == pytest.approx(1.0)
    assert rank_agreement(-truth, truth) == pytest.approx(-1.0)
    assert math.isnan(rank_agreement(torch.eye(3), truth))  # all ties: no ranking


# --------------------------------------------------------------------------- in a training run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain run and a LookaheadTrainer run of the same config (module-scoped: trained once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTAGML_CACHE", str(tmp_path_factory.mktemp("cache")))
        root = tmp_path_factory.mktemp("runs")
        cfg = load_kit_config(preset="quick", overrides=TINY + ["model.adapter.troa_every=2"])
        plain = Trainer(cfg, root / "plain", log=lambda _: None)
        plain.fit()
        looked = LookaheadTrainer(cfg, root / "lookahead", lookahead_every=1, log=lambda _: None)
        looked.fit()
        yield plain, looked


def test_lookahead_measurements_leave_the_training_untouched(runs):
    plain, looked = runs
    a = read_log(plain.out_dir / LOG_FILE, "step")
    b = read_log(looked.out_dir / LOG_FILE, "step")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["similarity"] for r in a] == [r["similarity"] for r in b]
    assert torch.equal(plain.model.omega, looked.model.omega)
    for (name, p), q in zip(plain.model.named_parameters(), looked.model.parameters()):
        assert torch.equal(p, q), name
    z = logged_lookahead(looked.out_dir / LOG_FILE)
    assert z.shape[1:] == (3, 3) and torch.isfinite(z).all()
    records = read_log(looked.out_dir / LOG_FILE, "lookahead")
    # lookahead_every=1, Adam-shaped: every step once Adam has second moments (not step 1).
    assert [r["step"] for r in records] == [2] and records[0]["lr"] > 0


def test_omega_replayed_from_the_log_is_the_models(runs):
    plain, _ = runs
    sims = logged_similarities(plain.out_dir / LOG_FILE)
    assert sims.shape == (2, 3, 3)
    adapter = plain.cfg.model.adapter
    omega = replay_omega(sims, adapter.kappa, adapter.sign, adapter.troa_every)
    assert torch.equal(omega.float(), plain.model.omega)
    assert int(plain.model.adapter.troa.num_updates) == 1  # troa_every=2: one update in 2 steps


# --------------------------------------------------------------------------- the command


def test_affinity_command_runs_end_to_end_in_the_smoke_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VTAGML_CACHE", str(tmp_path / "cache"))
    args = ["affinity", "--preset", "smoke", "--tasks", "S-D-N", "--seeds", "0,1",
            "--runs", str(tmp_path), "--store", str(tmp_path / "store"), "--lookahead-every", "1",
            "--variant", "kappa 0.5:model.adapter.kappa=0.5", "--set", "train.progress=false"]
    assert main(args) == 0
    out = tmp_path / "setting_results"
    doc = json.loads((out / "affinity.json").read_text())
    assert (out / "affinity.md").read_text().startswith("### Task affinity vs ground truth")
    assert (out / "affinity.html").stat().st_size > 0
    assert [s["seed"] for s in doc["per_seed"]] == [0, 1]
    labels = [r["label"] for r in doc["rows"]]
    for name in (f"{OMEGA} [default]", f"{COSINE} [default]", LOOKAHEAD,
                 f"{OMEGA} [kappa 0.5]", f"{COSINE} [kappa 0.5]"):
        assert name in labels
    for seed in doc["per_seed"]:
        assert len(seed["truth"]) == 3 and seed["truth"][0][0] == 0.0
        for rho in seed["rho"].values():
            assert rho is None or -1.0 <= rho <= 1.0
    # Per seed: 3 single-task + 3 pair models + the lookahead run + one variant.
    assert len(doc["runs"]) == 2 * 8
    assert [r["label"].split(", ")[-1] for r in doc["quality"]["rows"]] == ["default", "kappa 0.5"]
    printed = capsys.readouterr().out
    assert "Spearman ρ" in printed and "total wall time" in printed
    # A second call reuses every run.
    assert main(args) == 0
    again = json.loads((out / "affinity.json").read_text())
    assert all(r["reused"] for r in again["runs"])


def test_unknown_variant_is_refused_with_the_list():
    from vtagml_core.commands.affinity import parse_variants

    with pytest.raises(ValueError, match="unknown variant 'nope'; variants: kappa 0.1"):
        parse_variants("nope", [])
    with pytest.raises(ValueError, match="LABEL:KEY=VALUE"):
        parse_variants("none", ["no colon"])
    assert parse_variants("every 4", ["k:model.adapter.kappa=0.2"]) == {
        "every 4": ("model.adapter.troa_every=4",), "k": ("model.adapter.kappa=0.2",)}
