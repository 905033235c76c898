"""Model files, the training step, the kit config and the end-to-end reproduce command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vtagml_core.train.config import load_kit_config
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.baselines.factory import load_model
from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_model
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.step import train_step

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def _cfg(tasks: str = "S-D") -> ModelConfig:
    return ModelConfig(tasks=tasks, backbone=BackboneConfig(img_size=SIZE))


def _batch(B: int = 2, K: int = 12) -> dict:
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(B, 3, SIZE, SIZE, generator=g), dim=1)
    return {"image": torch.rand(B, 3, SIZE, SIZE, generator=g),
            "seg": torch.randint(0, K, (B, SIZE, SIZE), generator=g),
            "depth": torch.rand(B, 1, SIZE, SIZE, generator=g) * 5 + 0.5,
            "normals": normals, "edges": torch.rand(B, 1, SIZE, SIZE, generator=g),
            "valid": torch.ones(B, 1, SIZE, SIZE, dtype=torch.bool)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = VTAGML(_cfg())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(2):
        train_step(model, _batch(), MultiTaskLoss(model.tasks), opt)
    folder = save_model(model, tmp_path_factory.mktemp("ckpt") / "m")
    return model, folder


def test_save_load_roundtrip_keeps_weights_omega_and_history(trained):
    model, folder = trained
    loaded = load_model(folder)
    assert loaded.tasks == model.tasks
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not torch.allclose(loaded.omega, torch.full_like(loaded.omega, 0.5))
    s1, m1 = model.adapter.troa.history_tensor()
    s2, m2 = loaded.adapter.troa.history_tensor()
    assert torch.equal(s1, s2) and torch.allclose(m1, m2)
    model.eval(), loaded.eval()
    x = _batch()["image"]
    with torch.no_grad():
        assert torch.allclose(model(x)["seg"], loaded(x)["seg"])


def test_load_refuses_another_task_set_naming_the_difference(trained):
    _, folder = trained
    with pytest.raises(ValueError, match="tasks: checkpoint 'S-D' vs config 'S-D-N'"):
        load_model(folder, _cfg("S-D-N"))


def test_load_refuses_mismatched_shapes_naming_the_key(trained, tmp_path):
    _, folder = trained
    data = json.loads((folder / CONFIG_FILE).read_text())
    data["model"]["num_classes"] = 5
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG_FILE).write_text(json.dumps(data))
    (bad / WEIGHTS_FILE).write_bytes((folder / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ValueError, match=r"shape: decoder\.heads\.seg"):
        load_model(bad)


def test_truncated_checkpoint_is_refused(trained, tmp_path):
    _, folder = trained
    bad = tmp_path / "trunc"
    bad.mkdir()
    (bad / CONFIG_FILE).write_text((folder / CONFIG_FILE).read_text())
    raw = (folder / WEIGHTS_FILE).read_bytes()
    (bad / WEIGHTS_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_model(bad)


def test_nan_loss_stops_before_any_weight_changes():
    torch.manual_seed(0)
    model = VTAGML(_cfg())
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = _batch()
    batch["depth"][0, 0, 3, 3] = float("inf")  # a corrupt label at a valid pixel
    with pytest.raises(FloatingPointError, match="depth"):
        train_step(model, batch, MultiTaskLoss(model.tasks), opt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_kit_config_checks_sizes_and_presets():
    with pytest.raises(ValueError, match="data.size .100. differs"):
        load_kit_config(preset="quick", overrides=["data.size=100"])
    with pytest.raises(ValueError, match="valid presets: paper, paper-nyud, paper-taskonomy, quick, "
                                         "quick_v1, smoke"):
        load_kit_config(preset="fast")
    with pytest.raises(ValueError, match="multiples of 64"):
        VTAGML(ModelConfig(backbone=BackboneConfig(img_size=100)))
    assert load_kit_config(preset="paper").model.backbone.name == "swinv2_base_window8_256"


def test_reproduce_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    env = {"VTAGML_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "vtagml_core", "reproduce", "--out", str(out),
           "--set", f"data.size={SIZE}", "--set", f"model.backbone.img_size={SIZE}",
           "--set", "data.train_count=8", "--set", "data.val_count=4", "--set", "data.test_count=4",
           "--set", "data.pretext_count=4", "--set", "data.batch_size=4", "--set", "train.max_steps=2"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    report = (out / "report.md").read_text()
    for needed in ("Synthetic benchmark", "comic", "backbone (frozen)",
                   "VTAGML after 2 steps", "trivial predictors", "TROA affinity"):
        assert needed in report
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results["VTAGML after 2 steps"]) == {"seg", "depth", "normals", "edges"}
    assert (out / "model" / WEIGHTS_FILE).is_file()
    loaded = load_model(out / "model")
    assert torch.allclose(loaded.omega.sum(1), torch.ones(4))
