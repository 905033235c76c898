"""The demo in a real browser: headless Debian chromium driven by Playwright (issue 6, item 5).

Launches the app on 127.0.0.1 (a free port, in a thread of this process) with a freshly saved
64 px checkpoint, uploads a PNG, presses Predict and waits until the four task images are
shown with real pixels; writes a full-page screenshot under the test's ``tmp_path``.

Chromium comes from the system (``make test`` installs Debian's ``chromium`` package when it
is missing); Playwright's own browser download is never used. Without chromium the test
fails and says how to get it -- it does not skip.
"""
from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from vtagml_core.data.synthetic.render import render_scene
from vtagml_core.model.backbone import BackboneConfig
from vtagml_core.model.checkpoint import save_model
from vtagml_core.model.vtagml import VTAGML, ModelConfig
from vtagml_core.tasks import TASKS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Seconds to wait for the server to answer, and for the page's outputs.
READY_TIMEOUT_S = 60
OUTPUT_TIMEOUT_MS = 60_000
SIZE = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.fixture()
def demo_url(tmp_path):
    from demo_app.app import build_app, launch_app

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the demo serves on a 2-core machine (default_threads)
    torch.manual_seed(0)
    model = VTAGML(ModelConfig(tasks="S-D-N-E", backbone=BackboneConfig(img_size=SIZE)))
    save_model(model, tmp_path / "ckpts" / "tiny")
    demo = build_app(tmp_path / "ckpts", example_dir=tmp_path / "examples")
    url = launch_app(demo, host="127.0.0.1", port=_free_port(), block=False, quiet=True)
    try:
        _wait_ready(url)
        yield url
    finally:
        demo.close()
        torch.set_num_threads(before)


def test_upload_and_predict_in_headless_chromium(demo_url, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium "
                    "for this test (or `apt-get install chromium` as root)")
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "upload.png"
    Image.fromarray(render_scene("street", 3, (180, 240))["image"]).save(upload)
    shot = tmp_path / "demo_screenshot.png"
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1500, "height": 1100})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(demo_url, wait_until="domcontentloaded")
            page.locator("#vt-upload input[type=file]").set_input_files(str(upload))
            page.get_by_text("upload.png").first.wait_for(timeout=OUTPUT_TIMEOUT_MS)
            page.locator("#vt-predict").click()
            for task in TASKS:
                img = page.locator(f"#vt-out-{task} img").first
                img.wait_for(state="visible", timeout=OUTPUT_TIMEOUT_MS)
                page.wait_for_function(
                    "el => el.complete && el.naturalWidth > 0", arg=img.element_handle(),
                    timeout=OUTPUT_TIMEOUT_MS)
                assert img.get_attribute("src"), f"{task}: empty image source"
                assert img.evaluate("el => el.naturalWidth") > 0, f"{task}: image has no pixels"
            status = page.locator("#vt-status").inner_text()
            assert "Error" not in status and "forward" in status, status
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    print(f"demo screenshot: {shot}")
    assert shot.stat().st_size > 0
