"""Real datasets by config: ``data.dataset`` / ``data.root`` reach the readers through the one
dataset builder, the dataset decides classes and tasks, bad trees stop a run before anything is
written, and ``train`` + ``evaluate`` run end to end through the CLI on tiny trees in the
NYUD-v2 (MTI-Net), Taskonomy (omnidata) and Cityscapes layouts (tests/fixtures_real.py)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fixtures_real import make_cityscapes_tree, make_nyud_tree, make_taskonomy_tree
from vtagml_core.cli import main
from vtagml_core.config import to_dict
from vtagml_core.data.config import DataConfig, build_dataset, dataset_info
from vtagml_core.data.readers.nyud import NYUD_CLASS_NAMES
from vtagml_core.experiments.evaluate import evaluate_checkpoint
from vtagml_core.experiments.runs import key_config
from vtagml_core.metrics.multitask import MultiTaskMetrics
from vtagml_core.tasks import IGNORE_INDEX
from vtagml_core.train.config import KitConfig, load_kit_config

#: NYUD fixture images are 48 x 64: not the smoke preset's 64 x 64 input, so the native
#: resolution differs from the model's in both directions.
NYUD_HW = (48, 64)
TASKONOMY_BUILDINGS = ("allensville", "beechwood", "collierville")


def _train(root: Path, out: Path, dataset: str, *extra: str) -> int:
    return main(["train", "--preset", "smoke", "--set", f"data.dataset={dataset}", "--set", f"data.root={root}",
                 "--set", "train.max_steps=2", "--set", "train.progress=false", *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def nyud(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "NYUD_MT"
    make_nyud_tree(root, n_train=4, n_val=2, size=NYUD_HW)
    return root


@pytest.fixture(scope="module")
def nyud_run(nyud, tmp_path_factory) -> Path:
    """A 2-step smoke run on the NYUD tree, trained through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "nyud"
    assert _train(nyud, out, "nyud") == 0
    return out


def test_synthetic_configs_and_run_keys_do_not_change():
    """The new keys are absent from a synthetic config's saved form (so run keys of existing
    runs stay what they were), yet can be set and shown."""
    cfg = load_kit_config(preset="smoke")
    saved = to_dict(cfg)
    assert not {"dataset", "root", "split_file"} & set(saved["data"])
    assert "dataset" not in key_config(cfg, 0)["data"] and cfg.model.num_classes is None
    assert to_dict(cfg, complete=True)["data"]["dataset"] == "synthetic"
    real = load_kit_config(preset="smoke", overrides=["data.dataset=nyud", "data.root=/x"])
    assert to_dict(real)["data"]["dataset"] == "nyud" and key_config(real, 0) != key_config(cfg, 0)


def test_classes_tasks_and_ignore_index_come_from_the_dataset():
    assert dataset_info("nyud").num_classes == len(NYUD_CLASS_NAMES) == 40
    assert dataset_info("cityscapes").tasks == ("seg", "depth") and dataset_info("cityscapes").num_classes == 19
    assert dataset_info("taskonomy").num_classes == 17 and dataset_info("nyud").ignore_index == IGNORE_INDEX
    cfg = load_kit_config(preset="smoke", overrides=["data.dataset=nyud", "data.root=/x"])
    assert cfg.model.fit_to_data(cfg.data).num_classes == 40
    city = load_kit_config(preset="smoke", overrides=["data.dataset=cityscapes", "data.root=/x"])
    with pytest.raises(ValueError, match=r"no labels for normals, edges; it has seg, depth.*model.tasks=seg,depth"):
        city.model.fit_to_data(city.data)
    wrong = load_kit_config(preset="smoke", overrides=["data.dataset=nyud", "data.root=/x", "model.num_classes=12"])
    with pytest.raises(ValueError, match="model.num_classes=12 but data.dataset=nyud has 40 classes"):
        wrong.model.fit_to_data(wrong.data)
    with pytest.raises(ValueError, match="not one of"):
        load_kit_config(preset="smoke", overrides=["data.dataset=kitti"])


def test_build_dataset_reads_the_real_tree_at_the_configured_size(nyud):
    data = DataConfig(dataset="nyud", root=str(nyud), size=64)
    train = build_dataset(data, "train", "S-D")
    assert len(train) == 4 and train.name == "nyud"
    sample = train[0]
    assert sample["image"].shape == (3, 64, 64) and sample["seg"].shape == (64, 64)
    native = build_dataset(data, "val", "S-D-N-E", native_size=True)[0]
    assert native["seg"].shape == NYUD_HW and native["depth"].shape == (1, *NYUD_HW)
    with pytest.raises(ValueError, match="count=3 picks scenes of the synthetic benchmark"):
        build_dataset(data, "train", "S", count=3)


def test_bad_trees_get_clear_messages(tmp_path, nyud):
    def error(**kw) -> str:
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            build_dataset(DataConfig(**kw), "train", "S-D")
        return str(info.value)

    assert "--set data.root=" in error(dataset="nyud")
    assert "is not a folder" in error(dataset="nyud", root=str(tmp_path / "absent"))
    city = tmp_path / "city"
    make_cityscapes_tree(city, split="train", n_per_city=1)
    assert "looks like a cityscapes tree: set data.dataset=cityscapes" in error(dataset="nyud", root=str(city))
    (tmp_path / "empty").mkdir()
    assert "matches none of the layouts" in error(dataset="taskonomy", root=str(tmp_path / "empty"))
    assert "data.root is set but data.dataset is synthetic" in error(root=str(nyud))
    assert "drop data.split_file" in error(dataset="nyud", root=str(nyud), split_file="s.csv")


def test_a_broken_tree_stops_training_before_the_run_folder_is_written(tmp_path, nyud, capsys):
    broken = tmp_path / "NYUD_MT"
    shutil.copytree(nyud, broken)
    (broken / "gt_sets" / "train.txt").write_text("0000\n9999\n")   # 9999 has no files
    out = tmp_path / "run"
    assert _train(broken, out, "nyud") == 2
    err = capsys.readouterr().err
    assert str(broken / "images" / "9999.jpg") in err and "Re-download" in err
    assert not out.exists()
    city = tmp_path / "cityscapes"
    make_cityscapes_tree(city, split="train", n_per_city=1)
    assert _train(city, out, "cityscapes") == 2        # the smoke preset asks for S-D-N-E
    assert "has seg, depth" in capsys.readouterr().err and not out.exists()


def test_nyud_train_and_evaluate_through_the_cli(nyud, nyud_run, capsys):
    config = (nyud_run / "config.json").read_text()
    assert '"dataset": "nyud"' in config and '"num_classes": 40' in config
    capsys.readouterr()
    assert main(["evaluate", "--run", str(nyud_run), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert f"dataset: nyud at {nyud}, split val (2 images)" in out
    assert "model input 64x64, metrics at the labels' native resolution" in out
    assert "weights: random init" in out
    for task, metric in (("seg", "mIoU"), ("depth", "rmse"), ("normals", "mean"), ("edges", "odsF")):
        assert re.search(rf"\| {task} \| .*\*\*{metric}", out), out
    assert main(["evaluate", "--run", str(nyud_run), "--set", "model.tasks=S"]) == 2
    assert "data.* and train.device overrides only" in capsys.readouterr().err


def test_native_evaluation_resizes_predictions_to_the_labels(nyud, nyud_run):
    """The command's numbers equal an independent computation: the image resized to the model's
    input, every prediction upsampled to the 48 x 64 label; labels untouched; edges matched at
    NYUD's distance."""
    result = evaluate_checkpoint(nyud_run, split="val")
    from vtagml_core.baselines.factory import load_model

    model = load_model(nyud_run / "best").eval()
    data = DataConfig(dataset="nyud", root=str(nyud), size=64)
    # Edges matched within NYUD's published distance, 0.011 of each label's diagonal.
    reference = MultiTaskMetrics("S-D-N-E", 40, edge_max_dist=dataset_info("nyud").edge_max_dist)
    with torch.no_grad():
        for batch in DataLoader(build_dataset(data, "val", "S-D-N-E", native_size=True), batch_size=1):
            assert batch["seg"].shape[-2:] == NYUD_HW
            image = F.interpolate(batch["image"], size=(64, 64), mode="bilinear", align_corners=False,
                                  antialias=True).clamp(0, 1)
            outputs = {t: F.interpolate(v, size=NYUD_HW, mode="bilinear", align_corners=False)
                       for t, v in model(image).items()}
            reference.update(outputs, batch)
    expected = reference.compute()
    for task, values in expected.items():
        for name, value in values.items():
            assert result.metrics[task][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, name)
    resized = evaluate_checkpoint(nyud_run, split="val", native=False)
    assert resized.label_resolution == "64x64" and resized.metrics != result.metrics


def test_taskonomy_train_and_evaluate_through_the_cli(tmp_path, nyud, capsys):
    root = tmp_path / "omnidata"
    make_taskonomy_tree(root, buildings=TASKONOMY_BUILDINGS, points_per_building=2)
    (root / "train_val_test_tiny.csv").write_text(
        "id,train,val,test\nallensville,1,0,0\nbeechwood,1,0,0\ncollierville,0,1,0\n")
    out = tmp_path / "run"
    assert _train(root, out, "taskonomy") == 2
    assert "data.split_file=" in capsys.readouterr().err and not out.exists()
    assert _train(root, out, "taskonomy", "--set", "data.split_file=train_val_test_tiny.csv") == 0
    assert '"num_classes": 17' in (out / "config.json").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out / "last"), "--split", "val", "--set", "data.dataset=taskonomy",
                 "--set", f"data.root={root}", "--set", "data.split_file=train_val_test_tiny.csv"]) == 0
    text = capsys.readouterr().out
    assert "dataset: taskonomy" in text and "split val (2 images)" in text and "| normals |" in text
    # The same model on another dataset: 17 classes are not NYUD's 40, so seg is left out.
    assert main(["evaluate", "--run", str(out), "--set", "data.dataset=nyud", "--set", f"data.root={nyud}",
                 "--tasks", "D-N-E"]) == 0
    text = capsys.readouterr().out
    assert f"dataset: nyud at {nyud}, split val (2 images)" in text and "not scored: seg" in text


def test_cityscapes_train_and_evaluate_through_the_cli(tmp_path, capsys):
    root = tmp_path / "cityscapes"
    make_cityscapes_tree(root, split="train", n_per_city=2, size=(32, 64))
    make_cityscapes_tree(root, split="val", n_per_city=1, size=(32, 64))
    out = tmp_path / "run"
    assert _train(root, out, "cityscapes", "--set", "model.tasks=S-D") == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--split", "val"]) == 0
    text = capsys.readouterr().out
    assert "dataset: cityscapes" in text and "| seg |" in text and "| depth |" in text
    assert main(["evaluate", "--run", str(out), "--tasks", "S-N"]) == 2
    assert "no labels for normals; it has seg, depth" in capsys.readouterr().err


def test_a_synthetic_model_refuses_another_datasets_classes(nyud, tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["train", "--preset", "smoke", "--set", "train.max_steps=1", "--set", "train.progress=false",
                 "--set", "model.tasks=S-D", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--set", "data.dataset=nyud", "--set", f"data.root={nyud}"]) == 2
    assert "segments 12 classes but data.dataset=nyud has 40" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(out), "--set", "data.dataset=nyud", "--set", f"data.root={nyud}",
                 "--tasks", "D"]) == 0
    text = capsys.readouterr().out
    assert "dataset: nyud" in text and "| depth |" in text and "not scored: seg" in text


def test_kit_config_has_the_new_keys():
    assert {"dataset", "root", "split_file"} <= set(to_dict(KitConfig(), complete=True)["data"])
