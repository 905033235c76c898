"""Notebook 02 in a real JupyterLab: move the step slider, see the affinity matrix change (issue 5).

The "Done when" of the notebooks issue asks that a reader who opens notebook 02 in JupyterLab
can move the slider and see the matrix change. This test does just that, in headless chromium
(:mod:`browser`): it starts ``jupyter lab`` on a copy of the notebook (the smoke preset through
``$VTAGML_NB_PRESET``, a fresh data cache, no ``$VTAGML_NB_HEADLESS``, so the kernel builds the
ipywidgets explorer), runs every cell, waits for the step slider, presses Home on its handle and
checks that the plotly heatmap under it was redrawn for the first step, with another matrix than
the last step's (near uniform at the start, peaked on the diagonal at the end). The copy trains :data:`LESSON_STEPS` steps, enough for a slider instead of a dropdown
(:data:`vtagml_core.notebooks.widgets.SLIDER_MIN_OPTIONS`). A screenshot of each state is left
under the test's ``tmp_path``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vtagml_core.notebooks.params import HEADLESS_ENV, OUTPUT_ENV, PRESET_ENV
from vtagml_core.nbtools.runner import parameters_cells
from vtagml_core.notebooks.widgets import SLIDER_MIN_OPTIONS

from browser import free_port, launch, require_chromium, wait_ready

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_troa.ipynb"
#: Training steps of the lesson run in the copy: more options than a dropdown takes.
LESSON_STEPS = SLIDER_MIN_OPTIONS + 4
TOKEN = "vtagml-lab-test"
#: Milliseconds to wait for JupyterLab's shell, for all cells to run, and for a redraw.
SHELL_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 600_000
REDRAW_TIMEOUT_MS = 60_000

#: The explorer: the ipywidgets box holding the slider, and the plotly figure inside it.
EXPLORER = ".widget-vbox:has(.widget-slider)"
FIGURE = f"{EXPLORER} .js-plotly-plot"
#: The figure's title and matrix, as plotly keeps them on its div.
#: (``_fullData`` holds the decoded matrix: plotly.py sends numpy arrays base64-encoded.)
READ_FIGURE = """el => ({title: (el.layout.title && el.layout.title.text) || '',
                         z: Array.from(el._fullData[0].z, row => Array.from(row))})"""


def _lesson_copy(folder: Path) -> Path:
    """Notebook 02 with ``overrides = ["lesson.steps=LESSON_STEPS"]`` in its parameters cell
    (no other change)."""
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    cell = nb.cells[parameters_cells(nb)[0]]
    lines = cell.source.splitlines()
    assert any(line.startswith("overrides = ") for line in lines), "notebook 02 lost its overrides"
    cell.source = "\n".join(f'overrides = ["lesson.steps={LESSON_STEPS}"]'
                            if line.startswith("overrides = ") else line for line in lines)
    path = folder / NOTEBOOK.name
    nbformat.write(nb, str(path))
    return path


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on a copy of notebook 02; yields the notebook's URL."""
    work = tmp_path / "lab"
    work.mkdir()
    _lesson_copy(work)
    settings = tmp_path / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "get notified about news?" toast
    env = {k: v for k, v in os.environ.items() if k != HEADLESS_ENV}
    env.update({PRESET_ENV: "smoke", OUTPUT_ENV: str(tmp_path / "out"),
                "VTAGML_CACHE": str(tmp_path / "cache"), "VTAGML_RUNS": str(tmp_path / "store"),
                "PYTHONPATH": str(ROOT),
                "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
                "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
                "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
                "JUPYTERLAB_SETTINGS_DIR": str(settings),
                # One thread: the kernel's torch must not oversubscribe a loaded 2-core machine.
                "OMP_NUM_THREADS": "1"})
    port = free_port()
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--allow-root", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}",
         "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/api/status?token={TOKEN}", alive=lambda: server.poll() is None)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={TOKEN}", tmp_path / "jupyter.log"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _step(title: str) -> int:
    """The step number of a title like ``TROA affinity, step 7``."""
    assert "step" in title, f"unexpected figure title {title!r}"
    return int(title.rsplit("step", 1)[1])


@pytest.mark.slow
def test_moving_the_slider_redraws_the_affinity_matrix(lab, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    url, server_log = lab
    with sync_playwright() as p:
        context = launch(p, tmp_path / "profile", width=1400, height=1000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(url, wait_until="domcontentloaded")
            # The shell is up and the notebook's kernel is idle, then every cell runs.
            page.wait_for_function(
                """() => { const app = window.jupyterapp;
                           const w = app && app.shell.currentWidget;
                           const k = w && w.sessionContext && w.sessionContext.session
                                     && w.sessionContext.session.kernel;
                           return !!k && k.status === 'idle'; }""", timeout=SHELL_TIMEOUT_MS)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            handle = page.locator(f"{EXPLORER} .noUi-handle").first
            try:
                handle.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
                page.locator(FIGURE).first.wait_for(state="visible", timeout=REDRAW_TIMEOUT_MS)
            except Exception:
                page.screenshot(path=str(tmp_path / "lab_failed.png"), full_page=True)
                raise AssertionError("the step slider or its figure never appeared; server log:\n"
                                     + server_log.read_text()[-4000:])
            figure = page.locator(FIGURE).first
            before = figure.evaluate(READ_FIGURE)
            page.screenshot(path=str(tmp_path / "lab_before.png"))
            # The explorer starts on the last recorded step; Home moves the slider to the first.
            handle.focus()
            handle.press("Home")
            page.wait_for_function(
                f"""t => {{ const el = document.querySelector({json.dumps(FIGURE)});
                           return !!el && !!el.layout && el.layout.title.text !== t; }}""",
                arg=before["title"], timeout=REDRAW_TIMEOUT_MS)
            after = page.locator(FIGURE).first.evaluate(READ_FIGURE)
            page.screenshot(path=str(tmp_path / "lab_after.png"))
        finally:
            context.close()

    assert _step(before["title"]) >= LESSON_STEPS - 1, before["title"]
    assert _step(after["title"]) <= 1, (before["title"], after["title"])
    n = len(before["z"])
    assert n == len(after["z"]) and n >= 2, "the heatmap is not an N x N task matrix"
    for rows in (before["z"], after["z"]):
        for row in rows:  # omega's rows are distributions over the tasks
            assert abs(sum(row) - 1.0) < 1e-4, row
    changed = max(abs(a - b) for ra, rb in zip(before["z"], after["z"]) for a, b in zip(ra, rb))
    assert changed > 0, "the slider moved but the matrix shown stayed the same"
