"""The demo's pieces: image loading policy, predictor, attention maps, checkpoints, handlers, API.

The browser test is in ``test_demo_browser.py``. Models here are the tiny Swin V2 at 64 px.
"""
from __future__ import annotations

import io
import json
import socket
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demo_app.checkpoints import find_checkpoints, load_checkpoint, resolve
from demo_app.service import PREDICT_OUTPUTS, DemoService
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_model
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.predict import (
    DISPLAY_MAX_SIDE,
    MAX_UPLOAD_BYTES,
    letterbox_box,
    load_image,
    load_image_with_notes,
)
from vtagml_core.tasks import TASKS
from vtagml_core.train.losses import MultiTaskLoss
from vtagml_core.train.step import train_step
from vtagml_core.viz.attention import attention_layers, attention_map, layer_input, query_token

SIZE = 64
LABEL = "ckpts/tiny"


# ----------------------------------------------------------------------------- image files
def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def _noise(h: int = 48, w: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes]) -> bytes:
    """A PNG written chunk by chunk (for sizes and bit depths Pillow cannot write cheaply)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    idat = b"".join(z.compress(b"\x00" + row) for row in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _huge_png() -> bytes:
    """A genuine 10000x10000 grayscale PNG of ~100 KB (all rows zero, streamed to zlib)."""
    side = 10_000
    z = zlib.compressobj(1)
    zero_row = b"\x00" * (side + 1)
    idat = b"".join(z.compress(zero_row) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gif_frames() -> bytes:
    frames = [Image.new("RGB", (16, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


#: Files the loader must refuse, with a phrase the message must contain.
BAD_FILES = {
    "not_an_image.png": (lambda: b"hello, this is text and not a picture\n" * 20, "not an image"),
    "empty.png": (lambda: b"", "empty"),
    "truncated.png": (lambda: _png(_noise())[:-3000], "truncated or corrupt"),
    "truncated.jpg": (lambda: _jpeg(_noise())[: len(_jpeg(_noise())) // 2], "truncated or corrupt"),
    "huge.png": (_huge_png, "10000x10000"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_loader_refuses_bad_files_with_a_clear_message(tmp_path, name):
    make, phrase = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ValueError, match=phrase):
        load_image(path)


def test_loader_caps_the_file_size_before_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png(_noise()))
    with pytest.raises(ValueError, match="MB limit"):
        load_image(path, max_bytes=100)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    rows = [values[0].astype(">u2").tobytes()]
    out = load_image_with_notes(_raw_png(4, 1, 16, 0, rows))
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(out.rgb[0, :, 0], [0, 1, 128, 255])
    assert any("16-bit" in n for n in out.notes)


def test_sixteen_bit_rgb_png_reads_as_eight_bit_rgb():
    row = np.array([65535, 0, 0, 0, 65535, 0], dtype=">u2").tobytes()
    rgb = load_image(_raw_png(2, 1, 16, 2, [row]))
    np.testing.assert_array_equal(rgb[0], [[255, 0, 0], [0, 255, 0]])


def test_grayscale_palette_and_cmyk_become_rgb():
    gray = load_image(_png(Image.new("L", (5, 3), 77)))
    assert gray.shape == (3, 5, 3) and (gray == 77).all()
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (load_image(_png(pal)) == [10, 200, 30]).all()
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    red = load_image(_jpeg(cmyk))
    assert red.shape == (4, 4, 3) and red[..., 0].min() > 200 and red[..., 1:].max() < 60


def test_transparency_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)   # opaque blue stays blue
    rgba[1, 1] = (255, 0, 0, 0)     # fully transparent becomes white
    out = load_image_with_notes(_png(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out.rgb[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(out.rgb[1, 1], [255, 255, 255])
    assert any("white" in n for n in out.notes)
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([9, 9, 9] * 256)
    assert (load_image(_png(pal, transparency=0)) == 255).all()


def test_animated_gif_uses_the_first_frame_and_says_so():
    out = load_image_with_notes(_gif_frames())
    assert out.rgb.shape == (12, 16, 3)
    assert out.rgb[..., 0].min() > 240 and out.rgb[..., 1:].max() < 15
    assert any("frame 1 of 3" in n for n in out.notes)


def test_arrays_and_pil_images_are_accepted():
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 1] = 200
    rgba[0, 0, 3] = 255
    out = load_image(rgba)
    np.testing.assert_array_equal(out[0, 0], [0, 200, 0])
    np.testing.assert_array_equal(out[1, 1], [255, 255, 255])
    assert load_image(Image.new("L", (2, 2), 5)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((4, 4, 3), dtype=np.float32))


def test_tiny_and_large_images_are_resized_sensibly():
    assert load_image(_png(Image.new("RGB", (1, 1), (1, 2, 3)))).shape == (1, 1, 3)
    out = load_image_with_notes(_png(_noise(50, 300)), max_side=100)
    assert out.rgb.shape == (17, 100, 3) and "downscaled" in out.notes[0]


def test_exif_orientation_is_applied():
    im = _noise(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).shape == (20, 10, 3)


# ----------------------------------------------------------------------------- model fixtures
@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Serve with one torch thread, as the demo does on a 2-core machine (``default_threads``).

    Measured on the busy 2-core CI machine: the 64 px model's forward takes ~0.25 s with one
    thread and 3-13 s with two threads competing with other processes.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory) -> Path:
    """``<root>/ckpts/tiny``: a 64 px S-D-N-E model after one training step (TROA moved)."""
    torch.manual_seed(0)
    model = VTAGML(ModelConfig(tasks="S-D-N-E", backbone=BackboneConfig(img_size=SIZE)))
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(1, 3, SIZE, SIZE, generator=g),
             "seg": torch.randint(0, model.num_classes, (1, SIZE, SIZE), generator=g),
             "depth": torch.rand(1, 1, SIZE, SIZE, generator=g) + 0.5,
             "normals": torch.nn.functional.normalize(torch.randn(1, 3, SIZE, SIZE, generator=g), dim=1),
             "edges": torch.rand(1, 1, SIZE, SIZE, generator=g),
             "valid": torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    train_step(model, batch, MultiTaskLoss(model.tasks), opt)
    root = tmp_path_factory.mktemp("demo") / "ckpts"
    save_model(model.eval(), root / "tiny")
    return root


@pytest.fixture(scope="module")
def service(ckpt_root, tmp_path_factory) -> DemoService:
    return DemoService([ckpt_root], work_dir=tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def model(service):
    return service.predictor(LABEL).model


# ----------------------------------------------------------------------------- predictor
def test_predictor_outputs_every_task_at_display_size(service):
    predictor = service.predictor(LABEL)
    rgb = np.asarray(_noise(480, 640))
    pred = predictor.predict(rgb)
    assert pred.box == letterbox_box(480, 640, SIZE) == pred.box.__class__(8, 0, 48, 64)
    assert pred.image.shape == (288, 384, 3)  # longer side DISPLAY_MAX_SIDE
    for img in pred.task_images().values():
        assert img.shape == (288, 384, 3) and img.dtype == np.uint8
    assert pred.seg.min() >= 0 and pred.seg.max() < predictor.model.num_classes
    assert pred.depth.min() >= 0 and pred.depth_range == (pred.depth.min(), pred.depth.max())
    np.testing.assert_allclose(np.linalg.norm(pred.normals, axis=-1), 1.0, atol=1e-4)
    assert 0.0 <= pred.edges.min() and pred.edges.max() <= 1.0
    assert sum(e.fraction for e in pred.legend) == pytest.approx(1.0)
    assert set(pred.timings) == {"preprocess", "forward", "postprocess", "total"}


def test_square_image_at_model_size_gives_the_model_argmax(service):
    """No letterbox, no resize: the prediction is exactly the model's own output."""
    predictor = service.predictor(LABEL)
    rgb = np.asarray(_noise(SIZE, SIZE, seed=3))
    predictor.display_max_side = SIZE
    try:
        pred = predictor.predict(rgb)
    finally:
        predictor.display_max_side = DISPLAY_MAX_SIDE
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        raw = predictor.model(x)
    np.testing.assert_array_equal(pred.seg, raw["seg"][0].argmax(0).numpy())
    np.testing.assert_allclose(pred.edges, torch.sigmoid(raw["edges"][0, 0]).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- attention
def test_attention_map_is_a_distribution_over_the_layer_grid(model):
    x = torch.rand(1, 3, SIZE, SIZE)
    for info in attention_layers(model):
        attn = attention_map(model, x, "depth", info.index, info.num_heads - 1,
                             query_token(info.grid, 0.3, 0.9))
        assert attn.shape == info.grid
        assert attn.min() >= 0 and float(attn.sum()) == pytest.approx(1.0, abs=1e-5)


def test_layer_input_reproduces_the_adapter_stack(model):
    """The re-run chain feeds layer l exactly what the adapter stack feeds it."""
    with torch.no_grad():
        taps = model.encode(torch.rand(1, 3, SIZE, SIZE)).taps
        outs = model.adapter(taps)
        t = model.tasks.index("normals")
        for layer in range(len(model.adapter.layers)):
            tokens, cond = layer_input(model, taps, "normals", layer)
            got = model.adapter.layers[layer](tokens, cond)
            torch.testing.assert_close(got.reshape(outs[layer][t:t + 1].shape), outs[layer][t:t + 1])


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "albedo"}, "not one of the model's tasks"),
    ({"layer": 99}, "layer must be in"),
    ({"head": 99}, "head must be in"),
    ({"query": (50, 0)}, "outside layer"),
])
def test_attention_map_bad_arguments_are_named(model, kwargs, message):
    args = {"task": "seg", "layer": 0, "head": 0, "query": (0, 0), **kwargs}
    with pytest.raises(ValueError, match=message):
        attention_map(model, torch.rand(1, 3, SIZE, SIZE), **args)


# ----------------------------------------------------------------------------- checkpoints
def test_listing_only_offers_complete_safetensors_folders(tmp_path):
    def make(rel: str, *files: str) -> None:
        folder = tmp_path / rel
        folder.mkdir(parents=True)
        for f in files:
            (folder / f).write_bytes(b"x")

    make("a/good", WEIGHTS_FILE, CONFIG_FILE)
    make("a/only_config", CONFIG_FILE)
    make("a/only_weights", WEIGHTS_FILE)
    make("a/pickled", "model.pt", CONFIG_FILE)
    make("a/run/best", WEIGHTS_FILE, CONFIG_FILE)             # depth 2: listed
    make("a/x/y/too_deep", WEIGHTS_FILE, CONFIG_FILE)         # depth 3: not listed
    make("a/.hidden", WEIGHTS_FILE, CONFIG_FILE)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "good")
    listing = find_checkpoints([tmp_path / "a", tmp_path / "missing_root"])
    assert list(listing) == ["a/good", "a/run/best"]


def test_labels_resolve_only_through_the_listing(ckpt_root):
    assert resolve(None, [ckpt_root]) == (LABEL, ckpt_root / "tiny")
    for label in ("../../etc/passwd", "/etc", "ckpts/other"):
        with pytest.raises(ValueError, match="unknown checkpoint"):
            resolve(label, [ckpt_root])
    with pytest.raises(ValueError, match="no trained checkpoint"):
        resolve(None, [ckpt_root / "nothing_here"])


def test_pickle_only_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "model.pt")
    (folder / CONFIG_FILE).write_text(json.dumps({"model": {}}))
    with pytest.raises(ValueError, match=r"pickle files \(model\.pt\)"):
        load_checkpoint(folder)
    assert find_checkpoints([tmp_path]) == {}


# ----------------------------------------------------------------------------- handlers
SENSIBLE_FILES = {
    "gray.png": lambda: _png(Image.new("L", (30, 20), 90)),
    "rgba.png": lambda: _png(Image.new("RGBA", (30, 20), (0, 100, 200, 128))),
    "palette.png": lambda: _png(_noise(20, 30).convert("P")),
    "sixteen.png": lambda: _raw_png(3, 2, 16, 0, [b"\x12\x34" * 3] * 2),
    "animated.gif": _gif_frames,
    "one_pixel.png": lambda: _png(Image.new("RGB", (1, 1), (200, 10, 10))),
}


def test_handler_reports_errors_and_keeps_serving(service, tmp_path):
    for name, (make, phrase) in BAD_FILES.items():
        path = tmp_path / name
        path.write_bytes(make())
        out = dict(zip(PREDICT_OUTPUTS, service.predict(str(path), LABEL)))
        assert out["status"].startswith("**Error:**") and phrase in out["status"], name
        assert all(out[t] is None for t in TASKS)
    for bad_label in ("../secrets", None):
        out = dict(zip(PREDICT_OUTPUTS, service.predict(None, bad_label)))
        assert out["status"].startswith("**Error:**")
    out = dict(zip(PREDICT_OUTPUTS, service.predict(str(tmp_path / "x.png"), "../secrets")))
    assert "**Error:**" in out["status"]
    good = tmp_path / "good.png"
    good.write_bytes(_png(_noise()))
    out = dict(zip(PREDICT_OUTPUTS, service.predict(str(good), LABEL)))
    assert "Error" not in out["status"] and all(out[t] is not None for t in TASKS)


@pytest.mark.parametrize("name", sorted(SENSIBLE_FILES))
def test_handler_gives_every_task_for_odd_but_valid_images(service, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(SENSIBLE_FILES[name]())
    out = dict(zip(PREDICT_OUTPUTS, service.predict(str(path), LABEL)))
    assert "Error" not in out["status"], out["status"]
    with Image.open(out["input"]) as im:
        size = im.size
    for t in TASKS:
        with Image.open(out[t]) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.height == size[1]
    arrays = np.load(out["arrays"], allow_pickle=False)
    assert set(arrays.files) == {*TASKS, "image"}
    assert arrays["seg"].shape == (size[1], size[0])


def test_affinity_view_shows_the_checkpoint_omega(service, model):
    heat, history, note = service.affinity(LABEL)
    np.testing.assert_allclose(np.asarray(heat.data[0].z), model.omega.numpy(), atol=1e-6)
    assert history is not None and len(history.frames) == 2  # initial + one TROA update
    assert "1 TROA updates" in note
    assert service.affinity("nope")[2].startswith("**Error:**")


def test_attention_handler_overlays_the_image_and_clamps_controls(service, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png(_noise(48, 64)))
    overlay, caption = service.attention(str(path), LABEL, "edges", 99, 99, 0.2, 0.8)
    assert overlay.shape == (288, 384, 3)
    assert "adapter layer 5" in caption and "head 15 of 16" in caption
    assert service.attention(None, LABEL, "seg", 0, 0, 0.5, 0.5)[1].startswith("**Error:**")


def test_train_button_runs_the_quick_train_command(service, monkeypatch):
    cmd = service.train_command()
    assert cmd[1:5] == ["-m", "vtagml_core", "train", "--preset"]
    assert cmd[cmd.index("--preset") + 1] == "quick"
    assert cmd[cmd.index("--out") + 1] == str(service.roots[0] / "quick")


def test_train_button_streams_progress_and_reports_the_exit(service, monkeypatch):
    script = "import sys; print('epoch 1'); print('loss 0.5\\rloss 0.4'); sys.exit({code})"
    monkeypatch.setattr(service, "train_command", lambda: [sys.executable, "-c", script.format(code=0)])
    messages = list(service.train_quick())
    assert "loss 0.4" in messages[-2] and "loss 0.5" in messages[-2]
    assert messages[-1].startswith("Training finished")
    monkeypatch.setattr(service, "train_command", lambda: [sys.executable, "-c", script.format(code=3)])
    assert "exit code 3" in list(service.train_quick())[-1]


def test_cli_demo_defaults_are_local_and_unshared():
    from vtagml_core.cli import build_parser

    args = build_parser(["demo"]).parse_args(["demo"])
    assert args.host == "127.0.0.1" and args.share is False and args.checkpoints is None


# ----------------------------------------------------------------------------- API
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gradio_client_gets_the_four_task_outputs(service, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    from demo_app.app import build_app, launch_app

    demo = build_app(service=service, example_dir=tmp_path / "examples")
    url = launch_app(demo, port=_free_port(), block=False, quiet=True)
    try:
        assert url.startswith("http://127.0.0.1:")
        client = Client(url, verbose=False)
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image at all")
        out = dict(zip(PREDICT_OUTPUTS, client.predict(handle_file(str(bad)), api_name="/predict")))
        assert "not an image" in out["status"]
        good = tmp_path / "good.png"
        good.write_bytes(_png(_noise(48, 64)))
        out = dict(zip(PREDICT_OUTPUTS, client.predict(handle_file(str(good)), api_name="/predict")))
        assert "Error" not in out["status"]
        for t in TASKS:
            with Image.open(out[t]) as im:
                assert im.format == "PNG" and im.width > 0 and im.height > 0
        arrays = np.load(out["arrays"], allow_pickle=False)
        assert arrays["normals"].shape == (288, 384, 3)
        # The server refuses uploads over the cap (the client checks too, before sending).
        big = tmp_path / "big.png"
        big.write_bytes(b"\x89PNG" + bytes(MAX_UPLOAD_BYTES))
        with big.open("rb") as f:
            reply = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", f)}, timeout=60)
        assert reply.status_code == 413
        with pytest.raises(ValueError, match="maximum file size"):
            client.predict(handle_file(str(big)), api_name="/predict")
    finally:
        demo.close()
