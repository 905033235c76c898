"""The quality floor (vtagml_core.metrics.floor): known verdicts, edges of each bar, and the
floor check on a real (smoke-size) run of the quick recipe's architecture."""
from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from vtagml_core.data.config import build_dataset
from vtagml_core.metrics.floor import QualityFloor, check_floor, floor_met
from vtagml_core.metrics.trivial import evaluate_trivial
from vtagml_core.tasks import parse_tasks
from vtagml_core.train.config import load_kit_config
from vtagml_core.train.trainer import Trainer

TRIVIAL = {"seg": {"mIoU": 0.05}, "depth": {"rmse": 2.0}, "normals": {"mean": 40.0},
           "edges": {"odsF": 0.30}}


def model_metrics(miou=0.55, rmse=1.2, mean=15.0, odsf=0.45):
    return {"seg": {"mIoU": miou}, "depth": {"rmse": rmse}, "normals": {"mean": mean},
            "edges": {"odsF": odsf}}


def test_a_model_above_every_bar_meets_the_floor():
    checks = check_floor(model_metrics(), TRIVIAL)
    assert [c.task for c in checks] == ["seg", "depth", "normals", "edges"]
    assert floor_met(checks)
    bars = {c.task: c.bar for c in checks}
    assert bars == pytest.approx({"seg": 0.50, "depth": 0.65 * 2.0, "normals": 0.5 * 40.0,
                                  "edges": 0.30})


@pytest.mark.parametrize("change, failing", [
    ({"miou": 0.499}, "seg"), ({"rmse": 1.31}, "depth"), ({"mean": 20.01}, "normals"),
    ({"odsf": 0.30}, "edges"),  # odsF must be strictly above the trivial predictor's
])
def test_each_bar_fails_alone(change, failing):
    checks = check_floor(model_metrics(**change), TRIVIAL)
    assert [c.task for c in checks if not c.passed] == [failing]
    assert not floor_met(checks)


def test_bars_are_inclusive_where_the_floor_says_at_least_or_at_most():
    checks = check_floor(model_metrics(miou=0.50, rmse=1.3, mean=20.0), TRIVIAL)
    assert floor_met(checks)
    assert "0.500 >= 0.500 yes" in checks[0].text()


def test_absent_tasks_are_not_checked_and_no_task_is_not_a_pass():
    checks = check_floor({"seg": {"mIoU": 0.6}, "depth": {"rmse": 1.0}}, TRIVIAL)
    assert [c.task for c in checks] == ["seg", "depth"] and floor_met(checks)
    assert not floor_met([])
    with pytest.raises(KeyError, match="trivial predictors"):
        check_floor({"depth": {"rmse": 1.0}}, {"seg": {"mIoU": 0.1}})
    assert not floor_met(check_floor(model_metrics(), TRIVIAL, QualityFloor(min_miou=0.6)))


def test_floor_check_runs_on_the_quick_recipe_at_smoke_size(tmp_path):
    """The quick preset's architecture and schedule (shared image path, its decoder and
    optimiser settings), shrunk to smoke size: the trainer's validation metrics and the trivial
    predictors on the same split give one verdict per task, and the untrained-size model is
    correctly judged below the 0.5 mIoU bar."""
    quick = load_kit_config(preset="quick")
    smoke = load_kit_config(preset="smoke")
    cfg = load_kit_config(preset="smoke", overrides=[
        f"model.decoder.share_image_skip={str(quick.model.decoder.share_image_skip).lower()}",
        f"model.decoder.image_fuse_kernel={quick.model.decoder.image_fuse_kernel}",
        f"train.lr={quick.train.lr}", "train.progress=false"])
    assert cfg.model.decoder.embed_dims == smoke.model.decoder.embed_dims
    result = Trainer(cfg, tmp_path / "run").fit()
    tasks, k = parse_tasks(cfg.model.tasks), cfg.model.resolved_num_classes()
    loaders = [DataLoader(build_dataset(cfg.data, s, tasks), batch_size=4) for s in ("train", "val")]
    trivial = evaluate_trivial(*loaders, tasks, k)
    checks = check_floor(result.best_metrics, trivial)
    assert [c.task for c in checks] == ["seg", "depth", "normals", "edges"]
    assert checks[0].value == result.best_metrics["seg"]["mIoU"] and not checks[0].passed
    assert not floor_met(checks)
