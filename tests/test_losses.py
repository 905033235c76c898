"""Losses (paper Sec. 3.3): each loss against a hand or independent computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vtagml_core.tasks import IGNORE_INDEX
from vtagml_core.train.class_weights import class_pixel_counts, class_weights_from_frequencies
from vtagml_core.train.losses import (
    DEPTH_LOSSES,
    EDGE_LOSSES,
    NORMALS_LOSSES,
    MultiTaskLoss,
    berhu_loss,
    check_finite,
    depth_l1_loss,
    edge_l1_loss,
    edge_weighted_bce_loss,
    normals_cosine_loss,
    normals_l1_loss,
    normals_unit_l1_loss,
    seg_loss,
)

B, K, H, W = 2, 5, 6, 7


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _batch(gen: torch.Generator) -> dict:
    seg = torch.randint(0, K, (B, H, W), generator=gen)
    seg[:, 0, :] = IGNORE_INDEX
    return {
        "seg": seg,
        "depth": torch.rand(B, 1, H, W, generator=gen) * 5 + 0.5,
        "normals": F.normalize(torch.randn(B, 3, H, W, generator=gen), dim=1),
        "edges": torch.rand(B, 1, H, W, generator=gen),
        "valid": torch.rand(B, 1, H, W, generator=gen) > 0.3,
    }


def _outputs(gen: torch.Generator) -> dict:
    return {
        "seg": torch.randn(B, K, H, W, generator=gen).requires_grad_(),
        "depth": torch.randn(B, 1, H, W, generator=gen).requires_grad_(),
        "normals": torch.randn(B, 3, H, W, generator=gen).requires_grad_(),
        "edges": torch.randn(B, 1, H, W, generator=gen).requires_grad_(),
    }


# ----------------------------------------------------------------------------- depth


@pytest.mark.parametrize("loss_fn", [depth_l1_loss, berhu_loss])
def test_depth_losses_ignore_invalid_pixels(gen, loss_fn):
    batch, out = _batch(gen), _outputs(gen)
    before = loss_fn(out["depth"], batch["depth"], batch["valid"])
    invalid = ~batch["valid"]
    pred2 = torch.where(invalid, torch.full_like(out["depth"], 1e6), out["depth"])
    target2 = torch.where(invalid, torch.full_like(batch["depth"], float("nan")), batch["depth"])
    after = loss_fn(pred2, target2, batch["valid"])
    assert torch.allclose(before, after)


def test_depth_l1_is_mean_abs_error_over_valid_pixels(gen):
    batch, out = _batch(gen), _outputs(gen)
    v = batch["valid"]
    expected = (out["depth"][v] - batch["depth"][v]).abs().mean()
    assert torch.allclose(depth_l1_loss(out["depth"], batch["depth"], v), expected)


def test_depth_zero_target_counts_as_invalid(gen):
    pred = torch.full((1, 1, 2, 2), 3.0)
    target = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]]])
    # Only the two pixels with depth > 0: |3-1|, |3-2| -> mean 1.5.
    assert depth_l1_loss(pred, target, torch.ones_like(target, dtype=torch.bool)).item() == pytest.approx(1.5)


@pytest.mark.parametrize("loss_fn", [depth_l1_loss, berhu_loss])
def test_depth_loss_without_valid_pixel_is_zero_with_grad(gen, loss_fn):
    out = _outputs(gen)
    target = torch.rand(B, 1, H, W, generator=gen) + 1
    loss = loss_fn(out["depth"], target, torch.zeros(B, 1, H, W, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(out["depth"].grad, torch.zeros_like(out["depth"]))


def test_berhu_l1_branch_below_c_and_quadratic_above():
    target = torch.ones(1, 1, 1, 3)
    pred = target + torch.tensor([0.1, 0.5, 1.0]).view(1, 1, 1, 3)
    # c = 0.2 * max residual = 0.2; r=0.1 <= c -> 0.1 (L1); r > c -> (r^2 + c^2) / (2c).
    c = 0.2
    expected = (0.1 + (0.5**2 + c**2) / (2 * c) + (1.0**2 + c**2) / (2 * c)) / 3
    assert berhu_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_berhu_branches_meet_at_c_and_match_l1_when_all_residuals_small():
    target = torch.ones(1, 1, 1, 4)
    residual = torch.tensor([0.2, 1.0, 0.05, 0.1]).view(1, 1, 1, 4)  # c = 0.2, one pixel at c
    pred = target + residual
    c = 0.2
    expected = (0.2 + (1.0 + c**2) / (2 * c) + 0.05 + 0.1) / 4
    assert berhu_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    # threshold_fraction 1 puts every residual on the L1 branch: berHu == L1.
    assert berhu_loss(pred, target, threshold_fraction=1.0).item() == pytest.approx(
        depth_l1_loss(pred, target).item(), rel=1e-6
    )


# ----------------------------------------------------------------------------- seg


def test_seg_loss_ignores_255_and_matches_cross_entropy_on_labelled_pixels(gen):
    batch, out = _batch(gen), _outputs(gen)
    labelled = batch["seg"] != IGNORE_INDEX
    logits_px = out["seg"].permute(0, 2, 3, 1)[labelled]  # (N, K)
    expected = F.cross_entropy(logits_px, batch["seg"][labelled])
    assert torch.allclose(seg_loss(out["seg"], batch["seg"]), expected, atol=1e-6)
    # Changing the logits where the label is 255 changes nothing.
    noisy = out["seg"].detach() + 100 * (~labelled).unsqueeze(1) * torch.randn(B, K, H, W, generator=gen)
    assert torch.allclose(seg_loss(noisy, batch["seg"]), expected, atol=1e-6)


def test_weighted_seg_loss_is_torch_weighted_mean(gen):
    batch, out = _batch(gen), _outputs(gen)
    weights = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.25])
    expected = F.cross_entropy(out["seg"], batch["seg"], weight=weights, ignore_index=IGNORE_INDEX)
    assert torch.allclose(seg_loss(out["seg"], batch["seg"], weights), expected, atol=1e-6)


def test_seg_loss_all_ignored_is_zero_not_nan(gen):
    out = _outputs(gen)
    target = torch.full((B, H, W), IGNORE_INDEX)
    for weights in (None, torch.ones(K)):
        loss = seg_loss(out["seg"], target, weights)
        assert loss.item() == 0.0 and loss.grad_fn is not None


def test_seg_loss_rejects_labels_outside_classes(gen):
    out = _outputs(gen)
    target = torch.zeros(B, H, W, dtype=torch.int64)
    target[0, 0, 0] = K + 2
    with pytest.raises(ValueError, match=r"labels \[7\] are outside \[0, 5\)"):
        seg_loss(out["seg"], target)


def test_class_weights_from_frequencies_hand_example():
    # freq^-0.5 = 0.1, 0.2, -, 0.5 ; mean over present = 0.8/3 ; absent class -> 1.
    w = class_weights_from_frequencies([100, 25, 0, 4])
    assert w.dtype == torch.float32
    assert torch.allclose(w, torch.tensor([0.375, 0.75, 1.0, 1.875]))
    assert torch.allclose(class_weights_from_frequencies([3.0, 1.0], power=0.0), torch.ones(2))


@pytest.mark.parametrize(
    "freq, message",
    [([1.0, -2.0], ">= 0"), ([0, 0], "all class frequencies are 0"), ([[1.0, 2.0]], "1-D")],
)
def test_class_weights_bad_input(freq, message):
    with pytest.raises(ValueError, match=message):
        class_weights_from_frequencies(freq)


def test_class_pixel_counts_skips_ignore():
    seg = torch.tensor([[0, 1, 1], [IGNORE_INDEX, 3, 1]])
    assert class_pixel_counts(seg, 4).tolist() == [1, 3, 0, 1]


# ----------------------------------------------------------------------------- normals / edges


def test_normals_cosine_loss_is_one_minus_cos_of_the_angle(gen):
    batch = _batch(gen)
    target, valid = batch["normals"], batch["valid"]
    # Along the target at any length: 0; the opposite direction: 2 (cos = -1).
    assert normals_cosine_loss(3.7 * target, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert normals_cosine_loss(-0.5 * target, target, valid).item() == pytest.approx(2.0, abs=1e-6)
    # A perpendicular prediction: cos = 0, loss 1.
    perpendicular = torch.cross(target, torch.randn(B, 3, H, W, generator=gen), dim=1)
    assert normals_cosine_loss(perpendicular, target, valid).item() == pytest.approx(1.0, abs=1e-5)
    raw = torch.randn(B, 3, H, W, generator=gen)
    cos = (F.normalize(raw, dim=1) * target).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    assert torch.allclose(normals_cosine_loss(raw, target, valid), (1 - cos)[valid].mean())


def test_normals_l1_losses_raw_and_unit(gen):
    batch = _batch(gen)
    target, valid = batch["normals"], batch["valid"]
    raw = torch.randn(B, 3, H, W, generator=gen)
    mask = valid.expand_as(raw)
    # "l1": the raw output itself must be the unit normal, so a longer vector costs.
    assert torch.allclose(normals_l1_loss(raw, target, valid), (raw - target).abs()[mask].mean())
    assert normals_l1_loss(2.0 * target, target, valid).item() > 0.1
    # "l1_unit": the prediction is normalised first, so any length along the target costs 0.
    assert normals_unit_l1_loss(3.7 * target, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    expected = (F.normalize(raw, dim=1) - target).abs()[mask].mean()
    assert torch.allclose(normals_unit_l1_loss(raw, target, valid), expected)


def test_multitask_loss_picks_the_normals_loss_by_name(gen):
    out, batch = _outputs(gen), _batch(gen)
    for name, fn in NORMALS_LOSSES.items():
        _, per_task = MultiTaskLoss("S-D-N", normals_loss=name)(out, batch)
        assert torch.allclose(per_task["normals"], fn(out["normals"], batch["normals"], batch["valid"]))
    _, default = MultiTaskLoss("S-D-N")(out, batch)
    assert torch.allclose(default["normals"], normals_cosine_loss(out["normals"], batch["normals"],
                                                                  batch["valid"]))


def test_edge_l1_is_mean_abs_of_sigmoid(gen):
    out, batch = _outputs(gen), _batch(gen)
    expected = (torch.sigmoid(out["edges"]) - batch["edges"]).abs().mean()
    assert torch.allclose(edge_l1_loss(out["edges"], batch["edges"]), expected)


def test_weighted_bce_weights_positives_by_negative_fraction():
    # One image, 4 pixels; labels 0.9 and 0.5 binarise to edges, 0.4 and 0 do not: beta = 2/4.
    # A second image with 1 edge pixel out of 4: beta = 3/4.
    target = torch.tensor([[[[0.9, 0.5], [0.4, 0.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[0.3, 1.0], [-2.0, 0.0]]]])
    p = torch.sigmoid(logits)
    positive = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])
    beta = torch.tensor([0.5, 0.75]).view(2, 1, 1, 1)
    per_pixel = -(beta * positive * torch.log(p) + (1 - beta) * (1 - positive) * torch.log(1 - p))
    assert edge_weighted_bce_loss(logits, target).item() == pytest.approx(per_pixel.mean().item(), rel=1e-5)


# ----------------------------------------------------------------------------- multitask


def test_multitask_total_is_weighted_sum_of_unweighted_task_losses(gen):
    batch, out = _batch(gen), _outputs(gen)
    lam = {"seg": 1.0, "depth": 0.5, "normals": 2.0, "edges": 0.0}
    loss = MultiTaskLoss("S-D-N-E", weights=lam, depth_loss="berhu", edge_loss="weighted_bce")
    total, per_task = loss(out, batch)
    assert torch.allclose(per_task["depth"], berhu_loss(out["depth"], batch["depth"], batch["valid"]))
    assert torch.allclose(per_task["edges"], edge_weighted_bce_loss(out["edges"], batch["edges"]))
    assert torch.allclose(total, sum(lam[t] * per_task[t] for t in per_task))
    assert per_task.keys() == loss.per_task(out, batch).keys()
    total.backward()
    assert out["edges"].grad is None or torch.all(out["edges"].grad == 0)  # lambda_edges = 0
    assert out["seg"].grad.abs().sum() > 0


def test_multitask_class_weights_buffer_is_used(gen):
    batch, out = _batch(gen), _outputs(gen)
    weights = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.25])
    loss = MultiTaskLoss(("seg",), class_weights=weights)
    assert "class_weights" in dict(loss.named_buffers())
    _, per_task = loss(out, batch)
    assert torch.allclose(per_task["seg"], seg_loss(out["seg"], batch["seg"], weights))


def test_unknown_loss_names_list_valid_ones():
    with pytest.raises(ValueError, match="unknown depth loss 'rotated'; valid: berhu, l1"):
        MultiTaskLoss("S-D", depth_loss="rotated")
    with pytest.raises(ValueError, match="valid: l1, weighted_bce"):
        MultiTaskLoss("S-D-N-E", edge_loss="bce")
    with pytest.raises(ValueError, match="unknown normals loss 'l2'; valid: cosine, l1, l1_unit"):
        MultiTaskLoss("S-D-N", normals_loss="l2")
    assert set(DEPTH_LOSSES) == {"l1", "berhu"} and set(EDGE_LOSSES) == {"l1", "weighted_bce"}


def test_multitask_loss_bad_config_and_missing_labels(gen):
    with pytest.raises(ValueError, match="not among tasks"):
        MultiTaskLoss("S-D", weights={"normals": 1.0})
    loss = MultiTaskLoss("S-D")
    batch = _batch(gen)
    del batch["depth"]
    with pytest.raises(ValueError, match="batch has no 'depth' labels"):
        loss(_outputs(gen), batch)


def test_check_finite_names_offending_tasks():
    check_finite({"seg": torch.tensor(1.0), "depth": torch.tensor(2.0)})  # finite: no error
    losses = {"seg": torch.tensor(1.0), "depth": torch.tensor(math.nan), "edges": torch.tensor(math.inf)}
    with pytest.raises(FloatingPointError) as info:
        check_finite(losses)
    message = str(info.value)
    assert "depth (nan)" in message and "edges (inf)" in message and "seg" not in message
    assert "before any weights were updated" in message


def test_shape_mismatch_error_says_what_to_do(gen):
    with pytest.raises(ValueError, match="F.interpolate"):
        depth_l1_loss(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 8, 8))
