"""The Gradio app: per-task predictions, TROA affinities and TAA attention of a VTAGML model.

Start it with ``make demo`` or ``python -m vtagml_core demo`` (options: ``--host``, ``--port``,
``--share``, ``--checkpoints``, ``--threads``). Three views, one uploaded image:

* **Predictions** -- the input and the four dense tasks of the paper (Sec. 4) side by side:
  segmentation over the image with a class legend, depth with a colour bar, surface normals
  as RGB, edges; a task selector chooses which panels show.
* **Task affinities** -- TROA's affinity matrix omega of the checkpoint (Sec. 3.2.1, Fig. 4)
  as an annotated heatmap, and its evolution over training with a step slider.
* **TAA attention** -- where one token of one task stream attends in a chosen adapter layer
  and head (Sec. 3.2.2, Eq. 2); click the input image to move the query.

Security defaults: the server binds to 127.0.0.1 unless ``host`` says otherwise, ``share`` is
off unless asked, uploads are capped at :data:`vtagml_core.predict.MAX_UPLOAD_BYTES` (Gradio's
``max_file_size``, and again by the image loader), checkpoints come only from listed folders
and load as safetensors + JSON. The prediction handler is an API endpoint::

    from gradio_client import Client, handle_file
    outputs = Client("http://127.0.0.1:7860/").predict(handle_file("photo.jpg"), api_name="/predict")
    # outputs: input, seg, depth, normals, edges (PNG paths), legend HTML, arrays .npz, status
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import numpy as np

from vtagml_core.predict import MAX_UPLOAD_BYTES
from vtagml_core.tasks import TASK_TITLES, TASKS

from .checkpoints import default_roots
from .examples import EXAMPLES_FOLDER, render_examples
from .panels import normals_key_html
from .figures import blank_figure
from .service import DemoService

log = logging.getLogger("vtagml.demo")

DEFAULT_HOST: str = "127.0.0.1"
DEFAULT_PORT: int = 7860
#: Requests served at once (model forwards are serialised by the predictor's lock; decoding
#: and PNG encoding of another request overlap with them).
CONCURRENCY: int = 2
#: Requests waiting in the queue before new ones are turned away.
QUEUE_SIZE: int = 64
#: Gradio's cache of this app's files (uploads, copies of the outputs): every 5 minutes the
#: files older than 10 minutes are deleted (clients fetch outputs right after the answer), and
#: all of them when the server stops (Gradio's ``delete_cache``).
CACHE_SWEEP_S: tuple[int, int] = (300, 600)
#: Signals that stop the server like Ctrl-C does, so its temporary files are removed on exit.
#: SIGINT (Ctrl-C) is set too: a process started in the background by a non-interactive shell
#: (``cmd &``, ``nohup``) inherits SIGINT as *ignored*, and Python then never raises
#: KeyboardInterrupt for it (measured: such a server kept running after SIGINT).
STOP_SIGNALS: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGHUP")
#: Attention slider limits when no checkpoint loads at start (the quick preset's adapters:
#: 6 layers, at most 16 heads); with a checkpoint they come from its model's layers.
FALLBACK_LAYERS: int = 6
FALLBACK_HEADS: int = 16
#: Height (px) of each output image on the page.
IMAGE_HEIGHT_PX: int = 280
#: Height (px) of the attention view.
ATTENTION_HEIGHT_PX: int = 420
#: Short panel titles (the long task titles do not fit above an image).
PANEL_TITLES: dict[str, str] = {"seg": "Segmentation", "depth": "Depth (colour bar: scene units)",
                                "normals": "Surface normals", "edges": "Edges"}

INTRO = """# VTAGML: vision transformer adapters for generalizable multitask learning
Upload an image (or pick an example rendered from the kit's synthetic domains) to see what a
multitask adapter model predicts for each task, how the tasks lean on each other (TROA's
affinity matrix) and where a task's attention looks (TAA). Runs offline on a CPU."""

CSS = """
.vt-legend {line-height: 1.9;}
.vt-legend-item {margin-right: 12px; white-space: nowrap;}
.vt-swatch {display: inline-block; width: 13px; height: 13px; margin-right: 4px;
            border: 1px solid #444; vertical-align: middle;}
"""


def _theme() -> gr.themes.Base:
    """Gradio's default look with system fonts (the default ones come from Google Fonts)."""
    return gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def _image(label: str, elem_id: str) -> gr.Image:
    return gr.Image(label=label, type="numpy", format="png", interactive=False,
                    height=IMAGE_HEIGHT_PX, elem_id=elem_id, min_width=200)


def _attention_limits(service: DemoService, label: str | None) -> tuple[int, int]:
    """(adapter layers, largest head count) of a checkpoint's model, for the sliders' limits."""
    if label is None:
        return FALLBACK_LAYERS, FALLBACK_HEADS
    try:
        c = service.attention_controls(label)
    except (ValueError, FileNotFoundError):
        return FALLBACK_LAYERS, FALLBACK_HEADS
    return max(c["layers"], 1), max(c["heads"], 1)


def build_app(checkpoint_root: Path | Sequence[Path] | None = None,
              example_dir: Path | None = None, service: DemoService | None = None) -> gr.Blocks:
    """The demo as a :class:`gr.Blocks` (not launched; see :func:`launch_app`).

    The checkpoint menu preselects the newest checkpoint that loads (broken ones are listed
    as such, with the reason below the menu); the attention sliders' limits come from that
    model's adapter layers.

    Args:
        checkpoint_root: folder(s) whose sub-folders are listed as checkpoints; default
            ``demo_app/checkpoints/`` and ``runs/``.
        example_dir: where to render the example images (default: ``examples/`` in the
            service's work folder, removed with it).
        service: the handlers (built from ``checkpoint_root`` when not given).
    """
    if service is None:
        roots = (default_roots() if checkpoint_root is None else
                 [Path(checkpoint_root)] if isinstance(checkpoint_root, (str, Path))
                 else [Path(r) for r in checkpoint_root])
        service = DemoService(roots)
    examples = render_examples(example_dir if example_dir is not None
                               else service.work_dir / EXAMPLES_FOLDER)
    choices = service.checkpoint_options()
    default = service.default_checkpoint()
    limits = _attention_limits(service, default)
    task_choices = [(TASK_TITLES[t], t) for t in TASKS]

    with gr.Blocks(title="VTAGML demo", analytics_enabled=False, delete_cache=CACHE_SWEEP_S) as demo:
        gr.Markdown(INTRO)
        no_ckpt = gr.Markdown(service.no_checkpoint_message(), visible=not choices)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                # No file_types filter: every upload reaches load_image, which judges the
                # content (not the extension) and explains what is wrong with a bad file.
                # type="binary": with "filepath", Gradio 6 leaves an empty temporary file in
                # its cache for every request, which nothing ever removes.
                file = gr.File(label="Image (PNG, JPEG, GIF, BMP, TIFF, WebP; max "
                               f"{MAX_UPLOAD_BYTES // 2**20} MB)", type="binary", elem_id="vt-upload")
                with gr.Row():
                    # Custom values: the handlers check every label against a fresh listing,
                    # so API clients may name checkpoints written after the server started.
                    ckpt = gr.Dropdown(choices=choices, value=default, allow_custom_value=True,
                                       label="Checkpoint", elem_id="vt-checkpoint", scale=4)
                    refresh = gr.Button("Refresh", scale=1, min_width=70, size="sm")
                broken = gr.Markdown(service.broken_message(), elem_id="vt-broken")
                run = gr.Button("Predict", variant="primary", elem_id="vt-predict")
                status = gr.Markdown(label="Status", show_label=False, elem_id="vt-status")
                gr.Examples(examples=[[str(p)] for p in examples], inputs=[file],
                            label="Examples: one scene per synthetic domain")
                with gr.Accordion("Train a quick checkpoint", open=not choices):
                    gr.Markdown("Trains the quick preset (tiny Swin V2, 128 px) on the synthetic "
                                "benchmark in a background process: a few minutes on a CPU.")
                    train = gr.Button("Train a quick checkpoint")
                    train_status = gr.Markdown()
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Predictions"):
                        show = gr.CheckboxGroup(choices=task_choices, value=list(TASKS),
                                                label="Tasks to show", elem_id="vt-tasks")
                        # Two rows of three: input, seg, depth / normals, edges, legend + arrays.
                        outs: dict[str, gr.Image] = {}
                        with gr.Row(equal_height=True):
                            inp = _image("Input", "vt-out-input")
                            for t in TASKS[:2]:
                                outs[t] = _image(PANEL_TITLES[t], f"vt-out-{t}")
                        with gr.Row(equal_height=True):
                            for t in TASKS[2:]:
                                outs[t] = _image(PANEL_TITLES[t], f"vt-out-{t}")
                            with gr.Column(min_width=200):
                                legend = gr.HTML(label="Class legend", show_label=False,
                                                 elem_id="vt-legend")
                                gr.HTML(normals_key_html(), elem_id="vt-normals-key")
                                arrays = gr.File(label="Arrays (.npz)", interactive=False)
                        card = gr.Markdown(service.training_card(default) if default else "",
                                           elem_id="vt-card")
                    with gr.Tab("Task affinities"):
                        aff_note = gr.Markdown()
                        with gr.Row():
                            heat = gr.Plot(label="omega now")
                            hist = gr.Plot(label="omega over training")
                    with gr.Tab("TAA attention"):
                        gr.Markdown("Choose a task stream, adapter layer and head; move the query "
                                    "with the sliders or by clicking the input image on the "
                                    "Predictions tab. Colours: attention weight of every token "
                                    "(yellow = most), red circle: the query token.")
                        with gr.Row():
                            att_task = gr.Dropdown(choices=task_choices, value=TASKS[0], label="Task stream")
                            att_layer = gr.Slider(0, limits[0] - 1, value=0, step=1, label="Adapter layer")
                            att_head = gr.Slider(0, limits[1] - 1, value=0, step=1, label="Head")
                        with gr.Row():
                            att_x = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Query x (fraction of width)")
                            att_y = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Query y (fraction of height)")
                        att_img = gr.Image(label="Attention of the query token", type="numpy",
                                           format="png", interactive=False, height=ATTENTION_HEIGHT_PX)
                        att_caption = gr.Markdown(label="Attention caption", show_label=False)

        predict_outputs = [inp, *outs.values(), legend, arrays, status]
        attention_inputs = [file, ckpt, att_task, att_layer, att_head, att_x, att_y]

        def controls(label: str | None) -> tuple[Any, ...]:
            try:
                c = service.attention_controls(label)
            except (ValueError, FileNotFoundError):
                return gr.update(), gr.update(), gr.update()
            # The API checks slider values against the components' own limits: widen them to
            # any checkpoint used since the start (the handler clamps per layer).
            att_layer.maximum = max(att_layer.maximum, c["layers"] - 1)
            att_head.maximum = max(att_head.maximum, c["heads"] - 1)
            return (gr.update(choices=[(TASK_TITLES[t], t) for t in c["tasks"]], value=c["tasks"][0]),
                    gr.update(maximum=max(c["layers"] - 1, 0)), gr.update(maximum=max(c["heads"] - 1, 0)))

        def head_range(label: str | None, layer: int, head: int) -> Any:
            try:
                heads = service.heads_at(label, layer)
            except (ValueError, FileNotFoundError):
                return gr.update()
            return gr.update(maximum=heads - 1, value=min(int(head), heads - 1))

        def affinity(label: str | None) -> tuple[Any, ...]:
            heat_fig, hist_fig, note = service.affinity(label)
            return (heat_fig or blank_figure("no affinity matrix"),
                    hist_fig or blank_figure("no history recorded"), note,
                    service.training_card(label) if label else "")

        def relist(current: str | None = None) -> tuple[Any, ...]:
            """Rescan: the menu (keeping a usable choice, else the default), notes."""
            options = service.checkpoint_options()
            usable = [label for shown, label in options if shown == label]
            value = current if current in usable else service.default_checkpoint()
            return (gr.update(choices=options, value=value), gr.update(visible=not options),
                    service.broken_message())

        def select_query(image: np.ndarray | None, evt: gr.SelectData) -> tuple[float, float]:
            if image is None or evt.index is None:
                return gr.update(), gr.update()
            h, w = image.shape[:2]
            return (round(min(max(evt.index[0] / max(w - 1, 1), 0.0), 1.0), 2),
                    round(min(max(evt.index[1] / max(h - 1, 1), 0.0), 1.0), 2))

        # Public API endpoints first, so they keep their plain names (/predict, /attention).
        gr.on([att_task.change, att_layer.release, att_head.release, att_x.release, att_y.release],
              service.attention, attention_inputs, [att_img, att_caption], api_name="attention",
              concurrency_id="model")
        att_layer.release(head_range, [ckpt, att_layer, att_head], [att_head], api_visibility="private")
        run.click(service.predict, [file, ckpt], predict_outputs, api_name="predict",
                  concurrency_id="model").then(service.attention, attention_inputs, [att_img, att_caption],
                                               api_visibility="private", concurrency_id="model")
        # An upload, a chosen example or a cleared file: predict right away (no button press).
        file.change(service.predict, [file, ckpt], predict_outputs, api_visibility="private",
                    concurrency_id="model", trigger_mode="always_last").then(
            service.attention, attention_inputs, [att_img, att_caption], api_visibility="private",
            concurrency_id="model")
        inp.select(select_query, [inp], [att_x, att_y], api_visibility="private").then(
            service.attention, attention_inputs, [att_img, att_caption], api_visibility="private",
            concurrency_id="model")
        show.change(lambda shown: [gr.update(visible=t in shown) for t in TASKS], [show],
                    list(outs.values()), api_visibility="private", queue=False)
        ckpt.change(affinity, [ckpt], [heat, hist, aff_note, card], api_visibility="private").then(
            controls, [ckpt], [att_task, att_layer, att_head], api_visibility="private")
        refresh.click(relist, [ckpt], [ckpt, no_ckpt, broken], api_visibility="private")
        train.click(service.train_quick, None, train_status, api_visibility="private",
                    concurrency_limit=1, concurrency_id="train").then(
            relist, [ckpt], [ckpt, no_ckpt, broken], api_visibility="private")
        # Each page load rescans, so a reload shows checkpoints written since the start.
        demo.load(relist, [ckpt], [ckpt, no_ckpt, broken], api_visibility="private").then(
            affinity, [ckpt], [heat, hist, aff_note, card], api_visibility="private").then(
            controls, [ckpt], [att_task, att_layer, att_head], api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch_app(demo: gr.Blocks, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
               share: bool = False, block: bool = True, quiet: bool = False) -> str:
    """Launch with the kit's settings (upload cap, no SSR, local fonts); returns the local URL.

    With ``block=False`` it returns once the server answers; stop it with ``demo.close()``.
    """
    if share:
        log.warning("share=True: Gradio opens a public tunnel (needs internet); anyone with the "
                    "link can use this app")
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share,
                            max_file_size=MAX_UPLOAD_BYTES, prevent_thread_lock=True,
                            ssr_mode=False, quiet=quiet, show_error=False, theme=_theme(),
                            css=CSS, footer_links=["api"])
    if block:
        demo.block_thread()
    return url


def default_threads() -> int:
    """Half the CPU cores (at least 1) for torch: the other half serve HTTP and encode images.

    Measured on a busy 2-core machine: the tiny model's forward took ~0.47 s with 1 thread and
    1.4-7 s with 2 threads competing with other processes (OpenMP threads wait on each other).
    """
    return max(1, (os.cpu_count() or 2) // 2)


def main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
         checkpoint_root: Path | None = None, threads: int | None = None,
         auto_train: bool = True) -> None:
    """Build, launch (blocking) and warm up the app; see the module docstring.

    With no checkpoint to show and ``auto_train``, the first start trains one in the quick
    preset in the background (issue: "the first start trains one in the quick preset with a
    progress message"), printing its progress here and in the app's training panel.
    """
    start = time.perf_counter()
    from vtagml_core.runtime import THREADS_ENV, configure_threads

    if threads is None and not os.environ.get(THREADS_ENV):
        threads = default_threads()
    configure_threads(threads)  # --threads, else $VTAGML_THREADS, else half the cores
    roots = default_roots() if checkpoint_root is None else [Path(checkpoint_root)]
    service = DemoService(roots)
    _stop_on_signals()
    try:
        demo = build_app(service=service)
        if host != DEFAULT_HOST:
            print(f"warning: serving on {host}, reachable from other machines on that interface")
        url = launch_app(demo, host, port, share, block=False)
        print(f"VTAGML demo ready at {url} ({time.perf_counter() - start:.1f} s after start)",
              flush=True)
        if not service.checkpoint_choices():
            if auto_train:
                print("No trained checkpoint yet: training one in the quick preset now (first "
                      "start only; a few minutes on a CPU). The app serves meanwhile; press the "
                      "refresh button next to the checkpoint list when training has finished.",
                      flush=True)
                threading.Thread(target=_auto_train, args=(service,), daemon=True).start()
            else:
                print(service.no_checkpoint_message(), flush=True)
        threading.Thread(target=_warm_up, args=(service,), daemon=True).start()
        demo.block_thread()  # returns on Ctrl-C or a STOP_SIGNALS signal, server closed
        demo.close()  # Gradio's shutdown deletes its cached files of this app (delete_cache)
    finally:
        service.close()  # the demo's own temporary folder (also registered with atexit)


def _stop_on_signals() -> None:
    """Turn :data:`STOP_SIGNALS` into KeyboardInterrupt, which stops the server like Ctrl-C
    (without this, SIGTERM kills the process before any clean-up runs)."""
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for name in STOP_SIGNALS:
        if hasattr(signal, name):  # SIGHUP does not exist on Windows
            signal.signal(getattr(signal, name), stop)


def _auto_train(service: DemoService) -> None:
    """Consume :meth:`DemoService.train_quick`, printing each progress message's last line."""
    last = ""
    for message in service.train_quick():
        line = message.strip().splitlines()[-1] if message.strip() else ""
        if line and line != last and not line.startswith("```"):
            print(f"[quick training] {line}", flush=True)
            last = line
    print("[quick training] done: refresh the checkpoint list in the app.", flush=True)


def _warm_up(service: DemoService) -> None:
    try:
        log.info(service.warm_up())
    except Exception:  # a broken checkpoint is reported when it is chosen; keep serving
        log.exception("warm-up failed")
