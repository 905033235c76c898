"""The demo under faults and hostile input (reliability issue, items 4, 5, 7 and 8).

* 4: a broken checkpoint folder is never the default; it is listed as broken, with the reason.
* 5: per-request files stay bounded while serving and are gone after Ctrl-C / SIGTERM.
* 7: the page says what the checkpoint was trained on, its validation metrics, a caution,
  and the normals colour key.
* 8: API output names, the attention head limit, relative paths in errors, the affinity
  figures' layout, checkpoints written after the server started.

Models are the tiny Swin V2 at 64 px, as in ``test_demo.py``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import demo_app.figures as figures_module
import demo_app.service as service_module
from demo_app.panels import normals_key_html
from demo_app.service import PREDICT_OUTPUTS, DemoService
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_model
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.tasks import TASKS

from browser import free_port, wait_ready

SIZE = 64
#: Seconds a stopped demo server gets to exit.
STOP_TIMEOUT_S = 60
#: Validation metrics written into the fake run folder.
VAL_METRICS = {"seg": {"mIoU": 0.523, "pixel_acc": 0.8}, "depth": {"rmse": 0.311},
               "normals": {"mean": 31.5}, "edges": {"odsF": 0.42}}


def _model(tasks: str = "S-D-N-E") -> VTAGML:
    torch.manual_seed(0)
    return VTAGML(ModelConfig(tasks=tasks, backbone=BackboneConfig(img_size=SIZE)))


def _age(folder: Path, seconds_ago: float) -> None:
    """Set the modification time of a checkpoint's files (which one is "newest")."""
    stamp = time.time() - seconds_ago
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        os.utime(folder / name, (stamp, stamp))


def _run_folder(root: Path, where: str, data: dict | None) -> Path:
    """A trainer-like run folder ``root/run`` with ``best/``, results.json and config.json."""
    run = root / "run"
    save_model(_model(), run / "best", meta={"epochs_done": 3, "val": VAL_METRICS})
    (run / "results.json").write_text(json.dumps({
        "where": where, "best": {"epoch": 3, "metrics": VAL_METRICS}, "last": {"epoch": 4}}))
    if data is not None:
        (run / "config.json").write_text(json.dumps({"method": "vtagml", "config": {"data": data}}))
    return run / "best"


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    """``ckpts/a_bad`` (garbage files, alphabetically first), ``ckpts/b_misfit`` (a valid
    config with weights that do not fit it: newest), ``ckpts/good`` (loads) and
    ``ckpts/old_good`` (loads, older)."""
    root = tmp_path_factory.mktemp("reliability") / "ckpts"
    bad = root / "a_bad"
    bad.mkdir(parents=True)
    (bad / CONFIG_FILE).write_text("{ this is not json")
    (bad / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    save_model(_model(), root / "good")
    save_model(_model(), root / "old_good")
    save_model(_model("S-D"), root / "b_misfit")
    (root / "b_misfit" / CONFIG_FILE).write_text((root / "good" / CONFIG_FILE).read_text())
    _age(root / "old_good", 300)
    _age(root / "a_bad", 200)
    _age(root / "good", 100)
    return root


@pytest.fixture()
def service(roots, tmp_path) -> DemoService:
    torch.set_num_threads(1)
    return DemoService([roots], work_dir=tmp_path / "work")


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- 4: broken checkpoints
def test_default_is_the_newest_checkpoint_that_loads(service):
    assert service.default_checkpoint() == "ckpts/good"  # b_misfit is newer but does not load
    options = dict((label, shown) for shown, label in service.checkpoint_options())
    assert options["ckpts/a_bad"] == "ckpts/a_bad (broken)"
    assert options["ckpts/b_misfit"] == "ckpts/b_misfit (broken)"
    assert options["ckpts/good"] == "ckpts/good" and options["ckpts/old_good"] == "ckpts/old_good"
    # Usable ones first, newest first; the broken ones after them.
    assert service.checkpoint_choices()[:2] == ["ckpts/good", "ckpts/old_good"]


def test_broken_checkpoints_are_listed_with_the_reason(service, roots):
    service.default_checkpoint()
    message = service.broken_message()
    assert "`ckpts/a_bad`: config.json is not valid JSON" in message
    assert "`ckpts/b_misfit`:" in message and "does not fit" in message
    assert str(roots) not in message


def test_default_prediction_works_beside_a_broken_folder(service, tmp_path, roots):
    out = dict(zip(PREDICT_OUTPUTS, service.predict(str(_image(tmp_path)), None)))
    assert "Error" not in out["status"] and "`ckpts/good`" in out["status"]
    out = dict(zip(PREDICT_OUTPUTS, service.predict(str(_image(tmp_path)), "ckpts/a_bad")))
    assert out["status"].startswith("**Error:** checkpoint ckpts/a_bad is broken: config.json")
    assert str(roots.parent) not in out["status"]  # no server path in the message


def test_a_repaired_checkpoint_is_judged_again(service, roots, tmp_path):
    broken = roots / "c_repaired"
    broken.mkdir()
    (broken / CONFIG_FILE).write_text("[]")
    (broken / WEIGHTS_FILE).write_bytes(b"junk")
    assert "ckpts/c_repaired (broken)" in dict(service.checkpoint_options())
    save_model(_model(), broken)
    try:
        assert "ckpts/c_repaired" in dict(service.checkpoint_options())
        assert service.default_checkpoint() == "ckpts/c_repaired"  # now the newest that loads
    finally:
        _age(broken, 400)


# ----------------------------------------------------------------------------- 5: temporary files
def test_request_folders_stay_bounded_by_count_and_size(service, tmp_path, monkeypatch):
    monkeypatch.setattr(service_module, "REQUEST_DIRS_MIN", 2)
    monkeypatch.setattr(service_module, "REQUEST_DIRS_KEPT", 4)
    image = str(_image(tmp_path))
    for _ in range(6):
        service.predict(image, "ckpts/good")
    folders = sorted(service.work_dir.glob("request_*"))
    assert [f.name for f in folders] == [f"request_{n:06d}" for n in range(3, 7)]
    one = sum(f.stat().st_size for f in folders[-1].iterdir())
    monkeypatch.setattr(service_module, "REQUEST_DIRS_MAX_BYTES", 2 * one + one // 2)
    service.predict(image, "ckpts/good")
    assert len(list(service.work_dir.glob("request_*"))) == 2  # the size bound, not the count
    service.close()
    assert not list(service.work_dir.glob("request_*"))


def test_a_service_removes_the_temporary_folder_it_made(roots):
    own = DemoService([roots])
    assert own.work_dir.name.startswith("vtagml_demo_") and own.work_dir.is_dir()
    own.close()
    assert not own.work_dir.exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_server_leaves_no_temporary_files(roots, tmp_path, stop):
    from gradio_client import Client, handle_file

    tmp, cache = tmp_path / "tmp", tmp_path / "gradio"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(cache)}
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-m", "vtagml_core", "demo", "--port", str(port),
                               "--checkpoints", str(roots), "--threads", "1", "--no-auto-train"],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/", alive=lambda: server.poll() is None)
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(_image(tmp_path))), api_name="/predict")
        assert "Error" not in out[-1]
        assert list(tmp.glob("vtagml_demo_*")) and any(p.is_file() for p in cache.rglob("*"))
    finally:
        server.send_signal(stop)
        log = server.communicate(timeout=STOP_TIMEOUT_S)[0].decode(errors="replace")
    assert not list(tmp.glob("vtagml_*")), log
    assert not [p for p in cache.rglob("*") if p.is_file()], log


# ----------------------------------------------------------------------------- 7: what the model knows
@pytest.mark.parametrize("where, data, trained, caution", [
    ("indoor val split (128 images), 64x64, backbone swinv2_tiny_cpu, method vtagml",
     {"domain": "indoor", "train_count": 512, "size": 64},
     "synthetic domain `indoor` (the kit's procedural renderer; 512 scenes at 64 px)",
     "Trained only on the kit's synthetic `indoor` scenes"),
    ("nyud val split (654 images), 64x64, backbone swinv2_tiny_cpu, method vtagml", None,
     "real dataset `nyud`", "Trained on the `nyud` dataset"),
    ("indoor_shift@0.4 val split (128 images), 64x64, backbone swinv2_tiny_cpu, method vtagml",
     {"domain": "indoor_shift@0.4", "train_count": 512, "size": 64},
     "synthetic domain `indoor_shift@0.4` (the kit's procedural renderer; 512 scenes at 64 px)",
     "Trained only on the kit's synthetic `indoor_shift@0.4` scenes"),
])
def test_card_says_what_the_checkpoint_was_trained_on(tmp_path, where, data, trained, caution):
    _run_folder(tmp_path / "ckpts", where, data)
    svc = DemoService([tmp_path / "ckpts"], work_dir=tmp_path / "work")
    card = svc.training_card("ckpts/run/best")
    assert f"Trained on: {trained}." in card
    assert "Semantic segmentation mIoU 0.523 (higher is better)" in card
    assert "Depth rmse 0.311 (lower is better)" in card and "best epoch 3" in card
    assert f"**Caution:** {caution}" in card
    status = dict(zip(PREDICT_OUTPUTS, svc.predict(str(_image(tmp_path)), "ckpts/run/best")))["status"]
    assert f"Trained on {trained}. {caution}" in status


def test_card_without_run_files_says_nothing_is_recorded(service):
    card = service.training_card("ckpts/good")
    assert "Trained on: not recorded" in card and "Validation metrics: not recorded" in card
    assert "**Caution:** No training record was found" in card


def test_normals_key_matches_the_normals_colours():
    key = normals_key_html()
    assert '#808000"></span>facing the camera' in key      # n = (0, 0, -1)
    assert '#800080"></span>facing up (floor' in key        # n = (0, -1, 0): y points down
    assert "x right, y down, z forward" in key


# ----------------------------------------------------------------------------- 8: affinity layout
def test_affinity_figures_fit_their_column(tmp_path):
    model = _model()
    omega = model.omega.detach().clone()
    model.adapter.troa.load_history(torch.tensor([0, 10]), torch.stack([omega, omega]))
    save_model(model, tmp_path / "ckpts" / "hist")
    svc = DemoService([tmp_path / "ckpts"], work_dir=tmp_path / "work")
    heat, history, _ = svc.affinity("ckpts/hist")
    for fig in (heat, history):
        assert fig.layout.width is None and fig.layout.autosize  # follows the column
        assert "<br><sup>ckpts/hist" in fig.layout.title.text        # two short title lines
        assert fig.layout.margin.t == figures_module.TITLE_MARGIN_PX
        assert "Semantic<br>segmentation" in fig.layout.xaxis.ticktext and fig.layout.xaxis.tickangle == 0
    slider = history.layout.sliders[0]
    # The slider starts below the task names and the axis title, inside the bottom margin.
    assert slider.pad.t == figures_module.AXIS_ROOM_PX and slider.yanchor == "top"
    assert history.layout.margin.b == figures_module.AXIS_ROOM_PX + figures_module.SLIDER_ROOM_PX
    assert all("<br><sup>ckpts/hist, step" in f.layout.title.text for f in history.frames)


# ----------------------------------------------------------------------------- 8: the API
def test_api_names_head_limit_and_late_checkpoints(roots, tmp_path):
    from gradio_client import Client, handle_file

    from demo_app.app import build_app, launch_app

    root = tmp_path / "ckpts"
    save_model(_model(), root / "first")
    svc = DemoService([root], work_dir=tmp_path / "work")
    demo = build_app(service=svc, example_dir=tmp_path / "examples")
    url = launch_app(demo, port=free_port(), block=False, quiet=True)
    try:
        client = Client(url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        names = [r["label"] for r in api["/predict"]["returns"]]
        assert not [n for n in names if n.startswith("value_")], names
        assert "Status" in names and "Class legend" in names
        assert not [r["label"] for r in api["/attention"]["returns"] if r["label"].startswith("value_")]
        image = handle_file(str(_image(tmp_path)))
        # The deepest adapter layer has 16 heads: head 15 is accepted (the limit was 7).
        _, caption = client.predict(image, "ckpts/first", "edges", 5, 15, 0.5, 0.5,
                                    api_name="/attention")
        assert "head 15 of 16" in caption
        # A checkpoint written after the start is accepted by name.
        save_model(_model(), root / "later")
        out = dict(zip(PREDICT_OUTPUTS, client.predict(image, "ckpts/later", api_name="/predict")))
        assert "Error" not in out["status"] and "`ckpts/later`" in out["status"]
        assert all(out[t] is not None for t in TASKS)
    finally:
        demo.close()
