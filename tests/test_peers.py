"""The peer systems as model families (docs/settings.md, The methods): MTFormer, DeMTG, AutoTaskFormer (reduced).

Checked on the kit's tiny Swin V2 at 64 px:

- every family builds for S-D-N-E with VTAGML's interface, gives ``(B, K_t, H, W)`` outputs,
  and a training step (MultiTaskLoss + ``extra_losses`` [+ ``weight_losses``], backward, Adam)
  changes its trainable parts while the frozen backbone stays bit-identical;
- MTFormer (Sec. 3.2, Eq. 3): in task i's cross-task attention, task k gives the query and key
  (its attention map) and task i the value; the cross-task contrastive loss (Eq. 4-6) prefers
  aligned task views of one image; the uncertainty weighting (Eq. 7) trains its ``s_t``;
- DeMTG (Sec. 3.4, Eq. 8-10): the task-interaction attention mixes tasks, never images; the
  deformable convolution's offsets (Eq. 4) learn;
- AutoTaskFormer (Sec. 3.4, Eq. 4): Gumbel samples become one-hot as the temperature falls;
  ``derive()`` keeps exactly the argmax exits (union of branches, fewer parameters) and
  reproduces the supernet's inference; the width search is the labelled random stand-in.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vtagml_core.baselines.autotaskformer import AutoTaskFormer, AutoTaskFormerConfig
from vtagml_core.baselines.autotaskformer_search import RANDOM_SEARCH_LABEL, random_width_search
from vtagml_core.baselines.common import FullResHeads, pooled_grid
from vtagml_core.baselines.demtg import DeMTG, DeMTGConfig, DeformableMixer, TaskInteraction
from vtagml_core.baselines.mtformer import (
    CrossTaskBlock,
    MTFormer,
    MTFormerConfig,
    UncertaintyWeighting,
    cross_task_contrastive_loss,
)
from vtagml_core.baselines.peers import PEER_BUILDERS, PEER_CONFIGS
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.model.params import TOTAL_ROW, count_parameters
from vtagml_core.model.vtagml import ModelConfig
from vtagml_core.tasks import IGNORE_INDEX, parse_tasks, task_channels
from vtagml_core.train.losses import MultiTaskLoss

#: Smallest image side the tiny Swin V2 accepts.
IMG = 64
NUM_CLASSES = 5
TASKS = "S-D-N-E"
BATCH = 2


def _cfg(tasks: str = TASKS) -> ModelConfig:
    return ModelConfig(tasks=tasks, num_classes=NUM_CLASSES, backbone=BackboneConfig(img_size=IMG))


def _batch(b: int = BATCH, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, NUM_CLASSES, (b, IMG, IMG), generator=g)
    seg[:, :4] = IGNORE_INDEX
    return {"image": torch.rand(b, 3, IMG, IMG, generator=g), "seg": seg,
            "depth": torch.rand(b, 1, IMG, IMG, generator=g) * 5 + 0.5,
            "normals": F.normalize(torch.randn(b, 3, IMG, IMG, generator=g), dim=1),
            "edges": torch.rand(b, 1, IMG, IMG, generator=g),
            "valid": torch.ones(b, 1, IMG, IMG, dtype=torch.bool)}


def _total_loss(model, outputs: dict, batch: dict, loss_fn: MultiTaskLoss) -> torch.Tensor:
    """What the trainer does: the task losses (or the model's own weighting) plus extra terms."""
    total, per_task = loss_fn(outputs, batch)
    if hasattr(model, "weight_losses"):
        total = model.weight_losses(per_task)
    return total + sum(model.extra_losses(outputs, batch).values())


@pytest.fixture(scope="module", params=sorted(PEER_BUILDERS))
def family(request):
    torch.manual_seed(0)
    return request.param, PEER_BUILDERS[request.param](_cfg())


# --------------------------------------------------------------------------- every family


def test_family_has_vtagml_interface_and_output_shapes(family):
    name, model = family
    assert model.method == name and model.tasks == parse_tasks(TASKS)
    assert model.num_classes == NUM_CLASSES and model.config.tasks == TASKS
    assert model.tracks_task_grads is False and model.update_affinity() is None
    assert isinstance(PEER_CONFIGS[name](), type(model.family_config))
    model.eval()
    with torch.no_grad():
        images = _batch()["image"]
        out = model(images)
        again = model(images, features=model.encode(images))  # a feature cache gives the same
    assert list(out) == list(model.tasks)
    for t in model.tasks:
        assert out[t].shape == (BATCH, task_channels(t, NUM_CLASSES), IMG, IMG), t
        assert torch.allclose(out[t], again[t], atol=1e-6), t
    rows = model.parameter_report()
    assert rows[-1]["component"] == TOTAL_ROW
    assert (rows[-1]["total"], rows[-1]["trainable"]) == count_parameters(model)
    assert rows[0]["trainable"] == 0  # the frozen backbone


def test_training_step_trains_every_part_and_leaves_backbone_untouched(family):
    name, model = family
    model.train()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = _batch()
    loss = _total_loss(model, model(batch["image"]), batch, MultiTaskLoss(model.tasks))
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k
    assert all(p.grad is None for p in model.backbone.parameters())
    changed = {k for k, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[k])}
    assert len(changed) > 0.5 * len(trainable), f"{name}: only {len(changed)}/{len(trainable)} changed"
    for part_name, part in model.components().items():
        names = {n for n, p in part.named_parameters() if p.requires_grad}
        if names:  # every trainable part learns something in one step
            prefix = next(k for k, m in model.named_modules() if m is part)
            assert any(f"{prefix}.{n}" in changed for n in names), f"{name}: {part_name} did not change"


def test_fine_tuned_backbone_trains_when_config_says_not_frozen():
    cfg = ModelConfig(tasks="S-D", num_classes=NUM_CLASSES, backbone=BackboneConfig(img_size=IMG, frozen=False))
    model = MTFormer(cfg)
    assert model.backbone.frozen is False
    assert model.parameter_report()[0]["component"] == "backbone (fine-tuned)"
    model.train()
    batch = _batch()
    _total_loss(model, model(batch["image"]), batch, MultiTaskLoss(model.tasks)).backward()
    trainable = [(n, p) for n, p in model.backbone.named_parameters() if p.requires_grad]
    total, n_trainable = count_parameters(model.backbone)
    assert n_trainable > 0.9 * total  # all but timm's unused closing norm
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"backbone parameters without gradient: {missing[:5]}"
    assert sum(float(p.grad.abs().sum()) for _, p in trainable) > 0


@pytest.mark.parametrize("name, bad, match", [
    ("mtformer", MTFormerConfig(dim=30, num_heads=4), "num_heads=4 must be >= 1 and divide the width 30"),
    ("demtg", DeMTGConfig(deform_kernel=4), "deform_kernel must be odd"),
    ("autotaskformer", AutoTaskFormerConfig(tau_start=0.1, tau_end=1.0), "0 < tau_end <= tau_start"),
])
def test_bad_family_settings_raise_naming_the_field(name, bad, match):
    with pytest.raises(ValueError, match=match):
        PEER_BUILDERS[name](_cfg("S-D"), bad)


# --------------------------------------------------------------------------- MTFormer


def _cross_block(n: int = 4, dim: int = 12, heads: int = 2) -> CrossTaskBlock:
    torch.manual_seed(0)
    return CrossTaskBlock(n, dim, heads, mlp_ratio=2.0).eval()


def test_cross_task_attention_query_key_from_task_k_value_from_task_i():
    """Eq. 3, ``A_k = MSA(F_k, F_k, F_i)``: task k reaches task i only through q and k."""
    block, i, k = _cross_block(), 0, 2
    torch.manual_seed(1)
    feats = [torch.randn(3, 10, 12) for _ in range(4)]
    with torch.no_grad():
        base = block(feats)
        perturbed = list(feats)
        perturbed[k] = feats[k] + torch.randn_like(feats[k])
        assert not torch.allclose(block(perturbed)[i], base[i], atol=1e-5)  # task k does reach task i
        # (1) task k's values are never used by task i: re-drawing its value projection
        # changes task k's own output but not task i's.
        block.value[k].weight.normal_()
        block.value[k].bias.normal_()
        after_v = block(feats)
        assert torch.equal(after_v[i], base[i])
        assert not torch.allclose(after_v[k], base[k], atol=1e-5)
        # (2) with task k's query/key projections zeroed its attention map is uniform, and then
        # nothing about task k's features reaches task i: q and k were the only path.
        block.query[k].weight.zero_(), block.query[k].bias.zero_()
        block.key[k].weight.zero_(), block.key[k].bias.zero_()
        assert torch.allclose(block(perturbed)[i], block(feats)[i], atol=1e-6)
        # (3) the term that task k contributes to task i is exactly P_k V_i: task k's attention
        # map applied to task i's values (read at the input of M_k for target i).
        seen = []
        hook = block.maps[i][k].register_forward_hook(lambda m, args, out: seen.append(args[0]))
        block(perturbed)
        hook.remove()
        normed = [norm(x) for norm, x in zip(block.norm1, perturbed)]
        p_k = block.attention_maps(normed)[k]                             # (B, h, L, L)

        def term(values_of: int) -> torch.Tensor:
            v = block._heads(block.value[values_of](normed[values_of]))   # (B, h, L, d)
            return (p_k @ v).transpose(1, 2).reshape(3, 10, 12)

        assert torch.allclose(seen[0], term(i), atol=1e-6)
        assert not torch.allclose(seen[0], term(k), atol=1e-3)


def test_cross_task_block_maps_other_tasks_to_c_over_n_minus_1_channels():
    block = _cross_block(n=4, dim=12)
    assert block.cross_dim == 12 // 3
    for i in range(4):
        outs = [block.maps[i][k].out_features for k in range(4)]
        assert outs[i] == 12 and all(outs[k] == 4 for k in range(4) if k != i)
        assert block.fuse[i].fc1.in_features == 12 + 3 * 4
    single = CrossTaskBlock(1, 12, 2, 2.0)  # one task: plain self-attention, no cross terms
    assert single.fuse[0].fc1.in_features == 12


def test_contrastive_loss_prefers_two_tasks_of_the_same_image():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    aligned = {"seg": z, "depth": z + 0.05 * torch.randn(8, 16), "normals": z + 0.05 * torch.randn(8, 16)}
    perm = torch.roll(torch.arange(8), 1)
    shuffled = {"seg": z, "depth": aligned["depth"][perm], "normals": aligned["normals"][perm.flip(0)]}
    low, high = cross_task_contrastive_loss(aligned), cross_task_contrastive_loss(shuffled)
    assert low < high
    # 3 task pairs, both directions; identical views (cos 1) and orthogonal images (cos 0):
    # each of the 6 terms is -log(e^1 / (e^1 + 7 e^0)).
    eye = torch.eye(8)
    exact = cross_task_contrastive_loss({"seg": eye, "depth": eye, "normals": eye})
    assert exact == pytest.approx(6 * -math.log(math.e / (math.e + 7)), rel=1e-5)
    with pytest.raises(ValueError, match="two or more tasks"):
        cross_task_contrastive_loss({"seg": z})


def test_mtformer_extra_losses_use_the_last_forward_and_uncertainty_weights_train():
    torch.manual_seed(0)
    model = MTFormer(_cfg("S-D"))
    with pytest.raises(RuntimeError, match="call the model on the batch first"):
        model.extra_losses({}, {})
    batch = _batch()
    out = model(batch["image"])
    assert set(model._last_branch_feats) == {"seg", "depth"}
    assert model._last_branch_feats["seg"].shape == (BATCH, model.family_config.dim)
    extra = model.extra_losses(out, batch)
    assert set(extra) == {"contrast"} and extra["contrast"].requires_grad
    per_task = {"seg": torch.tensor(2.0), "depth": torch.tensor(0.5)}
    unc = UncertaintyWeighting(("seg", "depth"))
    with torch.no_grad():
        unc.log_vars.copy_(torch.tensor([0.3, -0.2]))
    total = unc(per_task)
    expected = sum(math.exp(-s) * float(per_task[t]) + s for t, s in zip(("seg", "depth"), (0.3, -0.2)))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    # d/ds [exp(-s) L + s] = 1 - exp(-s) L
    assert torch.allclose(unc.log_vars.grad, 1 - torch.exp(-unc.log_vars.detach()) * torch.tensor([2.0, 0.5]))
    model.weight_losses(per_task).backward()
    assert model.uncertainty.log_vars.grad is not None and model.uncertainty.log_vars.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="normals"):
        model.weight_losses({"normals": torch.tensor(1.0)})


# --------------------------------------------------------------------------- DeMTG


def test_task_interaction_mixes_tasks_of_one_image_never_images_of_a_batch():
    torch.manual_seed(0)
    block = TaskInteraction(dim=16, num_heads=2).eval()
    tokens = torch.randn(3, 4, 9, 16)  # (B, T, N, C)
    with torch.no_grad():
        base = block(tokens)
        other_image = tokens.clone()
        other_image[1] += torch.randn(4, 9, 16)          # change image 1, every task
        out = block(other_image)
        assert torch.allclose(out[0], base[0], atol=1e-6) and torch.allclose(out[2], base[2], atol=1e-6)
        assert not torch.allclose(out[1], base[1], atol=1e-4)
        other_task = tokens.clone()
        other_task[0, 2] += torch.randn(9, 16)           # change task 2 of image 0 only
        out = block(other_task)
        assert not torch.allclose(out[0, 0], base[0, 0], atol=1e-4)  # task 0 of image 0 reads it
        assert torch.allclose(out[1:], base[1:], atol=1e-6)


def test_deformable_offsets_receive_gradients_and_move_the_samples():
    torch.manual_seed(0)
    mixer = DeformableMixer(in_channels=24, cfg=DeMTGConfig(dim=16, mixer_depth=1))
    x = torch.randn(2, 24, 8, 8)
    mixer(x).square().mean().backward()
    offset = mixer.layers[0][1].offset
    assert offset.weight.grad is not None and offset.weight.grad.abs().sum() > 0
    assert offset.bias.grad.abs().sum() > 0
    mixer.eval()
    with torch.no_grad():
        before = mixer(x)
        offset.bias.fill_(0.5)  # shift every sampling point by half a pixel
        assert not torch.allclose(mixer(x), before, atol=1e-4)


def test_demtg_attention_grid_is_pooled_to_the_configured_size():
    assert pooled_grid((32, 32), 16) == (16, 16) and pooled_grid((8, 8), 16) == (8, 8)
    model = DeMTG(_cfg("S-D"), DeMTGConfig(max_tokens_side=4))
    assert model.grid == (4, 4) and model.gating.spatial.in_channels == 16
    with torch.no_grad():
        assert model.eval()(_batch()["image"])["depth"].shape == (BATCH, 1, IMG, IMG)


# --------------------------------------------------------------------------- AutoTaskFormer


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return AutoTaskFormer(_cfg())


def test_gumbel_exit_choice_becomes_one_hot_as_temperature_falls(supernet):
    model = supernet
    torch.manual_seed(0)
    with torch.no_grad():
        model.exit_choice.logits.normal_()

    def mean_max(tau: float) -> float:
        return torch.stack([model.sample_exit_weights(tau).max(dim=-1).values for _ in range(200)]).mean().item()

    hot, warm, cold = mean_max(5.0), mean_max(1.0), mean_max(0.01)
    assert hot < warm < cold and cold > 0.99 and hot < 0.6
    w = model.sample_exit_weights(0.5)
    assert torch.allclose(w.sum(-1), torch.ones(len(model.tasks)))
    w[:, 0].sum().backward()
    assert model.exit_choice.logits.grad.abs().sum() > 0
    # the schedule anneals from tau_start to tau_end, and a manual value overrides it
    cfg = model.family_config
    assert model.temperature_at(0) == pytest.approx(cfg.tau_start)
    assert model.temperature_at(cfg.anneal_steps) == pytest.approx(cfg.tau_end)
    taus = [model.temperature_at(s) for s in range(0, cfg.anneal_steps + 1, 10)]
    assert all(a > b for a, b in zip(taus, taus[1:]))
    model.set_temperature(0.3)
    assert model.temperature == 0.3
    with pytest.raises(ValueError, match="must be > 0"):
        model.set_temperature(0.0)
    model.set_temperature(None)
    assert model.temperature == model.temperature_at(int(model.search_step))


def test_training_forward_advances_the_schedule(supernet):
    supernet.train()
    step, start = int(supernet.search_step), supernet.temperature
    supernet(_batch()["image"])
    assert int(supernet.search_step) == step + 1 and supernet.temperature < start
    supernet.eval()  # eval forwards use the argmax exits and leave the schedule alone
    with torch.no_grad():
        supernet(_batch()["image"])
    assert int(supernet.search_step) == step + 1


def test_derive_keeps_the_argmax_exits_and_only_their_branches(supernet):
    wanted = {"seg": 3, "depth": 3, "normals": 1, "edges": 0}
    with torch.no_grad():
        supernet.exit_choice.logits.zero_()
        for row, t in enumerate(supernet.tasks):
            supernet.exit_choice.logits[row, wanted[t]] = 2.0
    assert supernet.skeleton() == wanted
    derived = supernet.derive()
    assert derived.skeleton() == wanted and derived.exit_choice is None
    assert sorted(derived.branches) == ["0", "1", "3"]  # union; exit 2 unused, removed
    n_super, n_derived = count_parameters(supernet)[1], count_parameters(derived)[1]
    assert n_derived < n_super
    assert n_super - n_derived == count_parameters(supernet.branches["2"])[1] + supernet.exit_choice.logits.numel()
    report = derived.skeleton_report()
    assert {t: r["exit"] for t, r in report.items()} == wanted
    assert report["seg"]["stride"] == 32 and report["edges"]["stride"] == 4
    assert report["normals"]["branch_params"] == count_parameters(derived.branches["1"])[1]
    images = _batch()["image"]
    supernet.eval(), derived.eval()
    with torch.no_grad():
        a, b = supernet(images), derived(images)
    assert all(torch.equal(a[t], b[t]) for t in supernet.tasks)  # inherited weights, same exits
    with pytest.raises(RuntimeError, match="fixed skeleton"):
        derived.sample_exit_weights()


def test_random_width_search_is_labelled_and_respects_the_budget():
    torch.manual_seed(0)
    model = AutoTaskFormer(_cfg("S-D"), AutoTaskFormerConfig(exits={"seg": 3, "depth": 3}))
    batches = (_batch(seed=s) for s in itertools.count())
    loss = MultiTaskLoss(model.tasks)
    small = AutoTaskFormer(_cfg("S-D"), AutoTaskFormerConfig(exits={"seg": 3, "depth": 3}, width=32, depth=1),
                           backbone=model.backbone)
    budget = count_parameters(small)[1]
    result = random_width_search(model, batches, loss, candidates=3, steps=1, budget=budget,
                                 width_choices=(32, 64), depth_choices=(1,), seed=3)
    assert result.label == RANDOM_SEARCH_LABEL and "stand-in" in result.label
    assert result.skeleton == {"seg": 3, "depth": 3}
    for row in result.candidates:
        assert row["within_budget"] == (row["trainable_params"] <= budget)
        assert (row["score"] is None) != row["within_budget"]
        assert row["widths"][:3] == [None, None, None]  # only the used exit is searched
    assert result.best["within_budget"] and result.best["score"] == min(
        r["score"] for r in result.candidates if r["score"] is not None)
    assert count_parameters(result.model)[1] <= budget
    with pytest.raises(ValueError, match="no candidate fits the budget"):
        random_width_search(model, batches, loss, candidates=2, steps=0, budget=10)


def test_head_norms_keep_edge_logits_bounded_when_features_blow_up():
    """FullResHeads normalise their input and hidden layer: a 1000x larger input map (what the
    quick preset's MTFormer produced before the norms) gives the same logits, so the sigmoid of
    the edge head cannot saturate and the L1 edge loss keeps its gradient."""
    torch.manual_seed(0)
    heads = FullResHeads(("edges",), in_channels=8, num_classes=3).eval()
    feats, image = torch.randn(2, 8, 4, 4), torch.rand(2, 3, 16, 16)
    small = heads({"edges": feats}, image)["edges"]
    large = heads({"edges": 1000 * feats}, image)["edges"]
    torch.testing.assert_close(large, small, atol=1e-3, rtol=1e-3)
    plain = FullResHeads(("edges",), in_channels=8, num_classes=3, norm=False).eval()
    assert not torch.allclose(plain({"edges": 1000 * feats}, image)["edges"],
                              plain({"edges": feats}, image)["edges"], atol=1e-1)
