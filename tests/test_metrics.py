"""Metrics, prediction post-processing and delta_m (paper Sec. 4) against independent answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.regression import MeanSquaredError

from vtagml_core.data.config import dataset_info
from vtagml_core.data.readers.nyud import NYUD_EDGE_MAX_DIST
from vtagml_core.metrics.delta_m import delta_m, delta_m_terms
from vtagml_core.metrics.edges import BSDS_MAX_DIST, DEFAULT_EDGE_TOLERANCE_PX
from vtagml_core.metrics.multitask import (
    METRIC_DIRECTIONS,
    PRIMARY_METRICS,
    DepthMetrics,
    EdgeMetrics,
    MultiTaskMetrics,
    NormalMetrics,
    SegMetrics,
)
from vtagml_core.metrics.predictions import to_prediction, to_predictions
from vtagml_core.tasks import IGNORE_INDEX

K = 6


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seg_batches(gen, n=3, b=2, h=8, w=9):
    out = []
    for _ in range(n):
        target = torch.randint(0, K - 1, (b, h, w), generator=gen)  # class K-1 never labelled
        target[torch.rand(b, h, w, generator=gen) < 0.2] = IGNORE_INDEX
        out.append((torch.randn(b, K, h, w, generator=gen), target))
    return out


# ----------------------------------------------------------------------------- predictions


def test_to_prediction_per_task():
    raw = torch.tensor([[[[-1.0, 2.0]]]])
    assert torch.equal(to_prediction("depth", raw), torch.tensor([[[[0.0, 2.0]]]]))
    assert torch.allclose(to_prediction("edges", raw), torch.sigmoid(raw))
    logits = torch.randn(2, K, 3, 3)
    assert torch.equal(to_prediction("seg", logits), logits)
    normals = torch.randn(2, 3, 3, 3)
    normals[0, :, 0, 0] = 0.0
    unit = to_prediction("normals", normals)
    length = unit.norm(dim=1)
    assert length[0, 0, 0] == 0.0  # zero vector stays 0, no NaN
    assert torch.allclose(length.flatten()[1:], torch.ones(17), atol=1e-6)
    assert set(to_predictions({"depth": raw, "edges": raw})) == {"depth", "edges"}


def test_to_prediction_bad_input():
    with pytest.raises(ValueError, match="3 channel"):
        to_prediction("normals", torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="unknown task 'albedo'"):
        to_prediction("albedo", torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        to_prediction("depth", torch.zeros(1, 2, 2))


# ----------------------------------------------------------------------------- segmentation


def test_seg_matches_torchmetrics_and_accumulates_over_batches():
    batches = _seg_batches(_gen(1))
    metric = SegMetrics(K)
    for logits, target in batches:
        metric.update(logits, target)
    preds = torch.cat([lg.argmax(1) for lg, _ in batches])
    targets = torch.cat([t for _, t in batches])
    jaccard = MulticlassJaccardIndex(K, average="macro", ignore_index=IGNORE_INDEX)
    accuracy = MulticlassAccuracy(K, average="micro", ignore_index=IGNORE_INDEX)
    result = metric.compute()
    assert result["mIoU"] == pytest.approx(float(jaccard(preds, targets)), abs=1e-6)
    assert result["pixel_acc"] == pytest.approx(float(accuracy(preds, targets)), abs=1e-6)
    # Label-id input gives the same confusion matrix as logits.
    by_ids = SegMetrics(K)
    by_ids.update(preds, targets)
    assert torch.equal(by_ids.accumulators()["confusion"], metric.accumulators()["confusion"])


def test_seg_known_answers():
    perfect = SegMetrics(4)
    target = torch.tensor([[[0, 1], [2, IGNORE_INDEX]]])
    perfect.update(target.clamp(max=3), target)
    assert perfect.compute() == {"mIoU": 1.0, "pixel_acc": 1.0}
    # Class 2 is only predicted on an ignored pixel, class 3 nowhere: both are excluded.
    m = SegMetrics(4)
    m.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, IGNORE_INDEX]))
    iou = m.per_class_iou()
    assert iou[:2] == [0.5, 0.5] and math.isnan(iou[2]) and math.isnan(iou[3])
    assert m.compute() == {"mIoU": 0.5, "pixel_acc": 2 / 3}


def test_seg_bad_input():
    m = SegMetrics(3)
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="F.interpolate"):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(RuntimeError, match="call update"):
        SegMetrics(3).compute()


# ----------------------------------------------------------------------------- depth


def _depth_reference(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Brute force over the concatenated split, the textbook formulas."""
    p, t = [], []
    for pv, tv, vv in zip(pred.ravel(), target.ravel(), valid.ravel()):
        if vv and tv > 0:
            p.append(float(pv))
            t.append(float(tv))
    p, t = np.array(p), np.array(t)
    ps = np.maximum(p, 1e-3)
    ratio = np.maximum(ps / t, t / ps)
    return {
        "rmse": math.sqrt(np.mean((p - t) ** 2)),
        "mae": np.mean(np.abs(p - t)),
        "abs_rel": np.mean(np.abs(p - t) / t),
        "sq_rel": np.mean((p - t) ** 2 / t),
        "rmse_log10": math.sqrt(np.mean((np.log10(ps) - np.log10(t)) ** 2)),
        "delta1": np.mean(ratio < 1.25),
        "delta2": np.mean(ratio < 1.25**2),
        "delta3": np.mean(ratio < 1.25**3),
    }


def test_depth_matches_brute_force_over_split_not_batch_average():
    gen = _gen(2)
    preds, targets, valids = [], [], []
    metric = DepthMetrics()
    for b in (1, 3, 2):  # uneven batches make per-batch averaging visibly wrong
        target = torch.rand(b, 1, 5, 6, generator=gen) * 4
        target[:, :, 0, :2] = 0.0  # missing depth
        pred = (target + 0.5 * torch.randn(b, 1, 5, 6, generator=gen)).clamp(min=0)
        valid = torch.rand(b, 1, 5, 6, generator=gen) > 0.4 * b / 3
        metric.update(pred, target, valid)
        preds.append(pred), targets.append(target), valids.append(valid)
    pred, target, valid = torch.cat(preds), torch.cat(targets), torch.cat(valids)
    expected = _depth_reference(pred.numpy(), target.numpy(), valid.numpy())
    result = metric.compute()
    assert result == pytest.approx(expected, rel=1e-6)
    mask = valid & (target > 0)
    rmse_tm = MeanSquaredError(squared=False)(pred[mask], target[mask])
    assert result["rmse"] == pytest.approx(float(rmse_tm), rel=1e-5)
    # The mean of per-batch RMSEs is a different number.
    per_batch = [math.sqrt(((p - t)[v & (t > 0)] ** 2).mean()) for p, t, v in zip(preds, targets, valids)]
    assert abs(np.mean(per_batch) - result["rmse"]) > 1e-4


def test_depth_known_answers():
    target = torch.rand(2, 1, 4, 4, generator=_gen(3)) + 1.0
    valid = torch.ones_like(target, dtype=torch.bool)
    perfect = DepthMetrics()
    perfect.update(target, target, valid)
    r = perfect.compute()
    assert r["rmse"] == 0.0 and r["abs_rel"] == 0.0 and r["delta1"] == 1.0
    shifted = DepthMetrics()
    shifted.update(target + 0.3, target, valid)
    assert shifted.compute()["rmse"] == pytest.approx(0.3, abs=1e-6)
    assert shifted.compute()["mae"] == pytest.approx(0.3, abs=1e-6)


# ----------------------------------------------------------------------------- normals


def _rotation_z(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _random_normals(gen, b=2, h=5, w=6) -> torch.Tensor:
    return F.normalize(torch.randn(b, 3, h, w, generator=gen), dim=1)


def test_normals_match_brute_force_over_split():
    gen = _gen(4)
    metric = NormalMetrics()
    angles = []
    for _ in range(3):
        target = _random_normals(gen)
        pred = 2.5 * target + 0.6 * torch.randn(target.shape, generator=gen)  # unnormalised
        valid = torch.rand(2, 1, 5, 6, generator=gen) > 0.3
        metric.update(pred, target, valid)
        p = pred.permute(0, 2, 3, 1).double().numpy()[valid[:, 0].numpy()]
        t = target.permute(0, 2, 3, 1).double().numpy()[valid[:, 0].numpy()]
        cos = np.sum(p * t, axis=1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    a = np.concatenate(angles)
    r = metric.compute()
    assert r["mean"] == pytest.approx(a.mean(), abs=1e-4)
    assert r["rmse"] == pytest.approx(math.sqrt(np.mean(a**2)), abs=1e-4)
    assert abs(r["median"] - np.median(a)) <= 0.01 + 1e-9  # histogram resolution
    for thr in (11.25, 22.5, 30):
        assert r[f"within_{thr:g}"] == pytest.approx(np.mean(a < thr))


def test_normals_known_answers():
    target = _random_normals(_gen(5))
    target[:, 2] = target[:, 2].abs()
    perfect = NormalMetrics()
    perfect.update(3.0 * target, target)
    r = perfect.compute()
    assert r["mean"] == pytest.approx(0.0, abs=1e-5) and r["median"] == pytest.approx(0.0, abs=1e-5)
    assert r["within_11.25"] == 1.0
    # Vectors in the x-y plane rotated by 30 degrees about z are 30 degrees off.
    planar = F.normalize(torch.cat([target[:, :2], torch.zeros_like(target[:, :1])], dim=1), dim=1)
    rotated = torch.einsum("ij,bjhw->bihw", _rotation_z(30.0), planar)
    m = NormalMetrics()
    m.update(rotated, planar)
    r = m.compute()
    assert r["mean"] == pytest.approx(30.0, abs=1e-4) and r["median"] == pytest.approx(30.0, abs=1e-4)
    assert r["within_22.5"] == 0.0


def test_normals_skip_zero_targets():
    target = _random_normals(_gen(6))
    pred = target.clone()
    target[:, :, 0, 0] = 0.0  # undefined normal
    pred[:, :, 0, 0] = -target[:, :, 1, 1]  # would be a large error if counted
    m = NormalMetrics()
    m.update(pred, target)
    assert m.compute()["mean"] == pytest.approx(0.0, abs=1e-5)


# ----------------------------------------------------------------------------- edges


def _edge_reference(pred: np.ndarray, target: np.ndarray, thresholds, r: int) -> float:
    """Brute force: explicit binarisation per threshold and explicit pixel distances."""
    counts = np.zeros((len(thresholds), 4))  # matched pred, pred, matched gt, gt
    for p_img, t_img in zip(pred, target):
        gt = np.argwhere(t_img >= 0.5)
        for i, thr in enumerate(thresholds):
            pr = np.argwhere(p_img >= thr)
            if len(pr) and len(gt):
                d = np.sqrt(((pr[:, None, :] - gt[None, :, :]) ** 2).sum(-1))
                counts[i] += [(d.min(1) <= r).sum(), len(pr), (d.min(0) <= r).sum(), len(gt)]
            else:
                counts[i] += [0, len(pr), 0, len(gt)]
    prec = counts[:, 0] / np.maximum(counts[:, 1], 1)
    rec = counts[:, 2] / np.maximum(counts[:, 3], 1)
    f = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0)
    return float(f.max())


@pytest.mark.parametrize("tolerance", [0, 1, 2])
def test_edges_match_brute_force_over_split(tolerance):
    gen = _gen(7)
    metric = EdgeMetrics(thresholds=9, tolerance_px=tolerance)
    preds, targets = [], []
    for _ in range(2):
        target = (torch.rand(2, 1, 10, 12, generator=gen) > 0.85).float()
        pred = (0.6 * target + 0.5 * torch.rand(2, 1, 10, 12, generator=gen)).clamp(0, 1)
        metric.update(pred, target)
        preds.append(pred[:, 0].double().numpy()), targets.append(target[:, 0].numpy())
    expected = _edge_reference(np.concatenate(preds), np.concatenate(targets), [k / 10 for k in range(1, 10)], tolerance)
    assert metric.compute()["odsF"] == pytest.approx(expected, abs=1e-9)


def test_edges_perfect_and_shift_tolerance():
    target = torch.zeros(1, 1, 16, 16)
    target[..., 8] = 1.0  # a vertical edge line
    perfect = EdgeMetrics()
    perfect.update(target.clone(), target)
    assert perfect.compute()["odsF"] == 1.0
    shifted = torch.roll(target, shifts=1, dims=-1)  # 1 px to the right
    for tolerance, expected in ((2, 1.0), (0, 0.0)):
        m = EdgeMetrics(tolerance_px=tolerance)
        m.update(shifted, target)
        assert m.compute()["odsF"] == expected


def test_edges_best_threshold_reported():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 3] = 1.0
    pred = 0.3 * torch.ones(1, 1, 8, 8)
    pred[..., 3] = 0.7  # any threshold in (0.3, 0.7] separates perfectly
    m = EdgeMetrics(thresholds=9, tolerance_px=0)
    m.update(pred, target)
    r = m.compute()
    assert r["odsF"] == 1.0 and r["ods_threshold"] == pytest.approx(0.4)


@pytest.mark.parametrize("max_dist", [0.05, 0.1, 0.2])
def test_edges_at_a_fraction_of_the_diagonal_match_brute_force(max_dist):
    """A fractional distance (e.g. 1.56 px on a 10 x 12 label) is the real Euclidean distance."""
    gen = _gen(11)
    metric = EdgeMetrics(thresholds=9, max_dist=max_dist)
    target = (torch.rand(2, 1, 10, 12, generator=gen) > 0.85).float()
    pred = (0.6 * target + 0.5 * torch.rand(2, 1, 10, 12, generator=gen)).clamp(0, 1)
    metric.update(pred, target)
    r = max_dist * math.hypot(10, 12)
    expected = _edge_reference(pred[:, 0].double().numpy(), target[:, 0].numpy(), [k / 10 for k in range(1, 10)], r)
    assert metric.compute()["odsF"] == pytest.approx(expected, abs=1e-9)


def _displaced_line_odsf(metric: EdgeMetrics, dy: int, dx: int, hw: tuple[int, int] = (480, 640)) -> float:
    """odsF of a single edge pixel predicted ``(dy, dx)`` pixels away from where it is."""
    target = torch.zeros(1, 1, *hw)
    target[..., 220, 300] = 1.0
    metric.update(torch.roll(target, shifts=(dy, dx), dims=(-2, -1)), target)
    return metric.compute()["odsF"]


def test_nyud_edges_match_within_0_011_of_the_label_diagonal():
    """NYUD-v2's published distance: 0.011 x 800 = 8.8 px on a 480 x 640 label (unrounded, as
    BSDS correspondPixels computes it): 8 px away still matches, 9 px does not, and the disk is
    Euclidean (6 px along both axes is 8.5 px away and matches; 7 and 7 is 9.9 px and does not)."""
    info = dataset_info("nyud")
    assert info.edge_max_dist == NYUD_EDGE_MAX_DIST == 0.011
    assert EdgeMetrics(max_dist=info.edge_max_dist).radius(480, 640) == pytest.approx(8.8)
    for (dy, dx), expected in (((0, 8), 1.0), ((0, 9), 0.0), ((6, 6), 1.0), ((7, 7), 0.0)):
        assert _displaced_line_odsf(EdgeMetrics(max_dist=info.edge_max_dist), dy, dx) == expected, (dy, dx)
    # The same fraction of a smaller label is fewer pixels (evaluation at the model's size).
    assert EdgeMetrics(max_dist=0.011).radius(240, 320) == pytest.approx(4.4)
    # Taskonomy has no convention of its own: the BSDS default.
    assert dataset_info("taskonomy").edge_max_dist == BSDS_MAX_DIST == 0.0075


def test_the_synthetic_benchmark_keeps_its_fixed_edge_distance():
    assert dataset_info("synthetic").edge_max_dist is None
    synthetic = MultiTaskMetrics("E", num_classes=K, edge_max_dist=dataset_info("synthetic").edge_max_dist)
    assert synthetic.metrics["edges"].radius(480, 640) == DEFAULT_EDGE_TOLERANCE_PX == 2
    assert _displaced_line_odsf(synthetic.metrics["edges"], 0, 3) == 0.0
    nyud = MultiTaskMetrics("E", num_classes=K, edge_max_dist=NYUD_EDGE_MAX_DIST)
    assert _displaced_line_odsf(nyud.metrics["edges"], 0, 3) == 1.0
    with pytest.raises(ValueError, match="either in pixels .* not both"):
        EdgeMetrics(tolerance_px=2, max_dist=0.011)
    with pytest.raises(ValueError, match="max_dist must be >= 0"):
        EdgeMetrics(max_dist=-0.1)


# ----------------------------------------------------------------------------- multitask, merge


def _mt_data(gen, b=2, h=8, w=8):
    raw = {
        "seg": torch.randn(b, K, h, w, generator=gen),
        "depth": torch.randn(b, 1, h, w, generator=gen) + 2,
        "normals": torch.randn(b, 3, h, w, generator=gen),
        "edges": torch.randn(b, 1, h, w, generator=gen),
    }
    batch = {
        "seg": torch.randint(0, K, (b, h, w), generator=gen),
        "depth": torch.rand(b, 1, h, w, generator=gen) * 3 + 0.5,
        "normals": _random_normals(gen, b, h, w),
        "edges": (torch.rand(b, 1, h, w, generator=gen) > 0.8).float(),
        "valid": torch.rand(b, 1, h, w, generator=gen) > 0.3,
    }
    return raw, batch


def test_multitask_dispatch_uses_predictions_and_valid_mask():
    raw, batch = _mt_data(_gen(8))
    mt = MultiTaskMetrics("S-D-N-E", num_classes=K)
    mt.update(raw, batch)
    seg, depth, normals, edges = SegMetrics(K), DepthMetrics(), NormalMetrics(), EdgeMetrics()
    seg.update(raw["seg"], batch["seg"])  # seg scores invalid-geometry pixels too
    depth.update(raw["depth"].clamp(min=0), batch["depth"], batch["valid"])
    normals.update(raw["normals"], batch["normals"], batch["valid"])
    edges.update(torch.sigmoid(raw["edges"]), batch["edges"])
    expected = {"seg": seg.compute(), "depth": depth.compute(), "normals": normals.compute(), "edges": edges.compute()}
    assert _close(mt.compute(), expected, rel=1e-6)  # normals: float32 normalisation first, tiny differences
    assert mt.primary() == {t: mt.compute()[t][PRIMARY_METRICS[t]] for t in expected}


def test_multitask_perfect_raw_outputs_give_known_answers():
    _, batch = _mt_data(_gen(9))
    raw = {
        "seg": 10.0 * F.one_hot(batch["seg"], K).permute(0, 3, 1, 2).float(),
        "depth": batch["depth"].clone(),
        "normals": 2.0 * batch["normals"],
        "edges": 20.0 * (2 * batch["edges"] - 1),
    }
    mt = MultiTaskMetrics("S-D-N-E", num_classes=K)
    mt.update(raw, batch)
    primary = mt.primary()
    assert primary["seg"] == 1.0 and primary["depth"] == 0.0 and primary["edges"] == 1.0
    assert primary["normals"] == pytest.approx(0.0, abs=1e-5)


def test_merge_and_summed_accumulators_equal_single_pass():
    gen = _gen(10)
    parts = [_mt_data(gen) for _ in range(3)]
    whole = MultiTaskMetrics("S-D-N-E", num_classes=K)
    shards = [MultiTaskMetrics("S-D-N-E", num_classes=K) for _ in parts]
    for (raw, batch), shard in zip(parts, shards):
        whole.update(raw, batch)
        shard.update(raw, batch)
    merged = MultiTaskMetrics("S-D-N-E", num_classes=K)
    for shard in shards:
        merged.merge(shard)
    assert _close(merged.compute(), whole.compute())
    # What a DDP all_reduce(SUM) does: add the accumulators of every process, load the sum.
    summed = shards[0].accumulators()
    for shard in shards[1:]:
        for k, v in shard.accumulators().items():
            summed[k] = summed[k] + v
    reduced = MultiTaskMetrics("S-D-N-E", num_classes=K)
    reduced.load_accumulators(summed)
    assert _close(reduced.compute(), whole.compute())
    restored = MultiTaskMetrics("S-D-N-E", num_classes=K)
    restored.load_state_dict(whole.state_dict())
    assert restored.compute() == whole.compute()
    with pytest.raises(ValueError, match="accumulators must have keys"):
        DepthMetrics().load_accumulators({"count": torch.tensor(1)})


def _close(a: dict, b: dict, rel: float = 1e-9) -> bool:
    """Nested {task: {metric: value}} dicts equal up to float rounding."""
    return a.keys() == b.keys() and all(a[t][k] == pytest.approx(b[t][k], rel=rel, abs=1e-12) for t in b for k in b[t])


def test_metric_names_and_directions_are_consistent():
    raw, batch = _mt_data(_gen(11))
    mt = MultiTaskMetrics("S-D-N-E", num_classes=K)
    mt.update(raw, batch)
    for task, values in mt.compute().items():
        assert PRIMARY_METRICS[task] in values
        assert set(values) - {"ods_threshold"} <= set(METRIC_DIRECTIONS)
    assert METRIC_DIRECTIONS["rmse"] and METRIC_DIRECTIONS["mean"]
    assert not METRIC_DIRECTIONS["mIoU"] and not METRIC_DIRECTIONS["odsF"]


# ----------------------------------------------------------------------------- delta_m


def test_delta_m_hand_example():
    mtl = {"seg": {"mIoU": 0.45}, "depth": {"rmse": 0.8}, "normals": {"mean": 20.0}}
    stl = {"seg": {"mIoU": 0.50}, "depth": {"rmse": 1.0}}
    # seg: +(0.45 - 0.5)/0.5 = -10 %; depth (lower better): -(0.8 - 1)/1 = +20 %; normals not shared.
    assert delta_m(mtl, stl) == pytest.approx(5.0)
    terms = delta_m_terms(mtl, stl)
    assert [(t.task, t.metric, round(t.term, 9), t.lower_is_better) for t in terms] == [
        ("seg", "mIoU", -10.0, False),
        ("depth", "rmse", 20.0, True),
    ]
    assert delta_m(mtl, stl, metrics={"depth": ["rmse"]}) == pytest.approx(20.0)


def test_delta_m_errors_name_the_problem():
    stl = {"seg": {"mIoU": 0.5}, "depth": {"rmse": 0.0}}
    mtl = {"seg": {"mIoU": 0.6}, "depth": {"rmse": 0.5}}
    with pytest.raises(ValueError, match="single-task depth/rmse is 0"):
        delta_m(mtl, stl)
    with pytest.raises(ValueError, match="no metric 'abs_rel'"):
        delta_m(mtl, stl, metrics={"depth": ["abs_rel"]})
    with pytest.raises(ValueError, match="no known direction"):
        delta_m(mtl, stl, metrics={"edges": ["ods_threshold"]})
    with pytest.raises(ValueError, match="no task is present in both"):
        delta_m({"seg": {"mIoU": 0.5}}, {"depth": {"rmse": 1.0}})
