"""The demo's handlers, free of Gradio so that tests and benchmarks call them directly.

Every handler catches what can go wrong with user input (unreadable or oversized files,
unknown checkpoints, out-of-range controls) and returns a message for the page instead of
raising: the app keeps serving whatever one request sent. Unexpected failures are logged with
their traceback and reported as an internal error, also without raising.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import plotly.graph_objects as go

from vtagml_core.predict import Prediction, letterbox_box, load_image_with_notes
from vtagml_core.tasks import TASK_TITLES, TASKS
from vtagml_core.viz.affinity import affinity_heatmap, affinity_history_figure
from vtagml_core.viz.attention import attention_layers, attention_map, attention_overlay, query_token

from .checkpoints import PredictorCache, default_roots, find_checkpoints, resolve
from .panels import arrays_file, depth_panel, legend_html, write_png

log = logging.getLogger("vtagml.demo")

#: Order of the /predict outputs: input, the four task images, legend, arrays file, status.
PREDICT_OUTPUTS: tuple[str, ...] = ("input", "seg", "depth", "normals", "edges", "legend",
                                    "arrays", "status")
#: Where the "Train a quick checkpoint" button writes, below the first checkpoint root.
QUICK_RUN_NAME: str = "quick"
#: Heatmap cell text: the affinity with three decimals.
AFFINITY_TEXT: str = "%{z:.3f}"
#: Height and bottom margin (px) of the history figure, whose step slider sits below the axis.
HISTORY_HEIGHT_PX: int = 560
HISTORY_MARGIN_PX: int = 150
#: Per-request output folders kept on disk (older ones are deleted as new requests come).
REQUEST_DIRS_KEPT: int = 64
#: Seconds a stopped training process gets to exit after SIGTERM.
TERMINATE_TIMEOUT_S: int = 30
#: Lines of training output shown while it runs.
TRAIN_LOG_LINES: int = 6

NO_FILE_MESSAGE = "Upload an image (PNG, JPEG, ...) or pick one of the examples."


def _error(message: str) -> str:
    return f"**Error:** {message}"


class DemoService:
    """State and handlers of one demo app.

    Args:
        roots: checkpoint roots to list (default :func:`.checkpoints.default_roots`).
        work_dir: where per-request files (the ``.npz`` arrays) are written; default a
            fresh temporary folder.
    """

    def __init__(self, roots: list[Path] | None = None, work_dir: Path | None = None) -> None:
        self.roots = [Path(r) for r in (roots if roots is not None else default_roots())]
        self.cache = PredictorCache()
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="vtagml_demo_"))
        self._train_lock = threading.Lock()
        self._counter = 0
        self._counter_lock = threading.Lock()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_choices(self) -> list[str]:
        """Labels of the checkpoints found now, shipped ones first."""
        return list(find_checkpoints(self.roots))

    def default_checkpoint(self) -> str | None:
        choices = self.checkpoint_choices()
        return choices[0] if choices else None

    def no_checkpoint_message(self) -> str:
        where = ", ".join(f"`{r}`" for r in self.roots)
        return (f"No trained checkpoint was found under {where}. Use **Train a quick "
                "checkpoint** below (a few minutes on a CPU), or run `make reproduce` in a "
                "terminal (it writes `runs/reproduce/model`), then press the refresh button.")

    def predictor(self, checkpoint: str | None):
        """The cached :class:`~vtagml_core.predict.Predictor` of a listed checkpoint label."""
        _, folder = resolve(checkpoint, self.roots)
        return self.cache.get(folder)

    def warm_up(self) -> str:
        """Load the default checkpoint and run one prediction, so the first request is fast."""
        label = self.default_checkpoint()
        if label is None:
            return "no checkpoint to warm up"
        pred = self.predictor(label)
        pred.predict(np.zeros((pred.input_size, pred.input_size, 3), dtype=np.uint8))
        return f"warmed up {label}"

    # ------------------------------------------------------------------ predictions
    def run_prediction(self, file: str | None, checkpoint: str | None) -> tuple[Prediction, list[str], str]:
        """Load ``file`` and predict with ``checkpoint``; raises ValueError for the user."""
        if not file:
            raise ValueError(NO_FILE_MESSAGE)
        loaded = load_image_with_notes(file)
        label, _ = resolve(checkpoint, self.roots)
        return self.predictor(label).predict(loaded.rgb), loaded.notes, label

    def _request_dir(self) -> Path:
        """A new folder name for one request's files; the folder made KEPT requests ago goes.

        Gradio copies the returned files into its own cache when the handler returns, so old
        request folders are no longer needed.
        """
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        shutil.rmtree(self.work_dir / f"request_{n - REQUEST_DIRS_KEPT:06d}", ignore_errors=True)
        return self.work_dir / f"request_{n:06d}"

    def predict(self, file: str | None, checkpoint: str | None = None) -> tuple[Any, ...]:
        """The /predict handler: outputs in :data:`PREDICT_OUTPUTS` order.

        Images are PNG file paths (one folder per request under ``work_dir``), ``None`` for a
        task the checkpoint lacks; on an error every output is empty and the status says what
        went wrong.
        """
        try:
            pred, notes, label = self.run_prediction(file, checkpoint)
            images = dict(pred.task_images())
            if "depth" in images:
                images["depth"] = depth_panel(pred)
            folder = self._request_dir()
            npz = arrays_file(pred, folder)
            files = {name: write_png(folder / f"{name}.png", rgb)
                     for name, rgb in {"input": pred.image, **images}.items()}
            missing = [t for t in TASKS if t not in pred.tasks]
            t = pred.timings
            status = [f"Checkpoint `{label}`: model forward {t['forward']:.0f} ms, "
                      f"{t['total']:.0f} ms in all (image seen by the model at "
                      f"{pred.box.width}x{pred.box.height})."]
            status += [f"Note: {n}." for n in notes]
            if missing:
                status.append("This checkpoint has no " + ", ".join(TASK_TITLES[m] for m in missing)
                              + " head.")
            return (files["input"], files.get("seg"), files.get("depth"), files.get("normals"),
                    files.get("edges"), legend_html(pred.legend) if pred.seg is not None else "",
                    str(npz), "\n\n".join(status))
        except (ValueError, FileNotFoundError) as err:
            return (None, None, None, None, None, "", None, _error(str(err)))
        except Exception as err:  # keep serving; the log has the traceback
            log.exception("prediction failed")
            return (None, None, None, None, None, "", None,
                    _error(f"internal error ({type(err).__name__}: {err}); see the server log"))

    # ------------------------------------------------------------------ affinities
    def affinity(self, checkpoint: str | None) -> tuple[go.Figure | None, go.Figure | None, str]:
        """TROA's omega of a checkpoint as a heatmap, its history with a step slider, a note."""
        try:
            label, _ = resolve(checkpoint, self.roots)
            model = self.predictor(label).model
            if getattr(getattr(model, "adapter", None), "troa", None) is None:
                raise ValueError(f"the model of {label} has no TROA affinity matrix")
            troa = model.adapter.troa
            updates = int(troa.num_updates)
            heat = affinity_heatmap(model.omega, model.tasks,
                                    title=f"TROA task affinity omega ({label}, {updates} updates)")
            steps, mats = troa.history_tensor()
            history = affinity_history_figure(steps, mats, model.tasks) if len(steps) >= 2 else None
            for fig in (heat, history):  # 3 decimals (float32 text would print ~15 digits)
                if fig is not None:
                    fig.update_traces(texttemplate=AFFINITY_TEXT, selector=dict(type="heatmap"))
            if history is not None:  # room for the step slider below the task names
                history.update_layout(height=HISTORY_HEIGHT_PX, margin=dict(b=HISTORY_MARGIN_PX))
            note = [f"Row t is target task t's distribution over inductive tasks n (paper Sec. "
                    f"3.2.1, Algorithm 1); {updates} TROA updates, {len(steps)} snapshots recorded."]
            if not troa.enabled:
                note.append("TROA was off for this checkpoint (ablation or learned task "
                            "embeddings): omega stays uniform.")
            if history is None:
                note.append("No affinity history to animate (fewer than two snapshots).")
            return heat, history, " ".join(note)
        except (ValueError, FileNotFoundError) as err:
            return None, None, _error(str(err))
        except Exception as err:
            log.exception("affinity view failed")
            return None, None, _error(f"internal error ({type(err).__name__}: {err})")

    # ------------------------------------------------------------------ attention
    def attention_controls(self, checkpoint: str | None) -> dict[str, Any]:
        """Tasks, number of layers and the largest head count of a checkpoint's adapters."""
        model = self.predictor(checkpoint).model
        layers = attention_layers(model)
        return {"tasks": list(model.tasks), "layers": len(layers),
                "heads": max((info.num_heads for info in layers), default=1)}

    def heads_at(self, checkpoint: str | None, layer: int) -> int:
        """Number of attention heads of adapter ``layer`` (clamped to the layers there are)."""
        layers = attention_layers(self.predictor(checkpoint).model)
        return layers[min(max(int(layer), 0), len(layers) - 1)].num_heads if layers else 1

    def attention(self, file: str | None, checkpoint: str | None, task: str, layer: int, head: int,
                  x: float, y: float) -> tuple[np.ndarray | None, str]:
        """TAA attention of the token under ``(x, y)`` (fractions of the image) as an overlay."""
        try:
            if not file:
                raise ValueError(NO_FILE_MESSAGE)
            rgb = load_image_with_notes(file).rgb
            predictor = self.predictor(checkpoint)
            model = predictor.model
            layers = attention_layers(model)
            if not layers:
                raise ValueError("this checkpoint has no adapter layers, so no TAA attention")
            layer = min(max(int(layer), 0), len(layers) - 1)
            info = layers[layer]
            head = min(max(int(head), 0), info.num_heads - 1)
            task = task if task in model.tasks else model.tasks[0]
            S = predictor.input_size
            box = letterbox_box(rgb.shape[0], rgb.shape[1], S)
            # (x, y) on the image -> fraction of the letterboxed S x S model input.
            qy = (box.top + float(y) * (box.height - 1)) / S
            qx = (box.left + float(x) * (box.width - 1)) / S
            token = query_token(info.grid, min(qy, 1.0), min(qx, 1.0))
            inputs, _ = predictor.to_input(rgb)
            with predictor.lock:
                attn = attention_map(model, inputs, task, layer, head, token)
            h, w = info.grid
            full = attn.repeat_interleave(S // h, 0).repeat_interleave(S // w, 1)
            crop = full[box.top:box.top + box.height, box.left:box.left + box.width]
            inside = float(crop.sum() / full.sum())  # share of the attention on the image
            display = predictor.display_image(rgb)
            overlay = attention_overlay(display, crop.numpy(), (float(y), float(x)))
            caption = (f"{TASK_TITLES[task]} stream, adapter layer {layer} (backbone stage "
                       f"{info.tap[0] + 1} block {info.tap[1] + 1}, {h}x{w} tokens), head {head}"
                       f" of {info.num_heads}, query token (row {token[0]}, col {token[1]}). "
                       f"Largest weight {float(attn.max()):.3f} (uniform would be "
                       f"{1 / (h * w):.3f}); {100 * inside:.0f}% of the attention falls on the "
                       "image (the rest on the letterbox padding).")
            return overlay, caption
        except (ValueError, FileNotFoundError) as err:
            return None, _error(str(err))
        except Exception as err:
            log.exception("attention view failed")
            return None, _error(f"internal error ({type(err).__name__}: {err})")

    # ------------------------------------------------------------------ training
    def train_command(self) -> list[str] | None:
        """The quick-training command if the kit has a ``train`` command, else None."""
        from vtagml_core.cli import COMMANDS

        if "train" not in COMMANDS:
            return None
        out = self.roots[0] / QUICK_RUN_NAME
        return [sys.executable, "-m", "vtagml_core", "train", "--preset", "quick", "--out", str(out)]

    def train_quick(self) -> Iterator[str]:
        """Run the quick-preset training in a subprocess, yielding progress messages.

        Closing the generator (Gradio does when the page goes away) terminates the run.
        """
        command = self.train_command()
        if command is None:
            yield ("This version of the kit has no `train` command yet. Run `make reproduce` "
                   "in a terminal (it trains the quick preset and writes `runs/reproduce/model`), "
                   "then press the refresh button next to the checkpoint list.")
            return
        if not self._train_lock.acquire(blocking=False):
            yield "A training run is already in progress; wait for it to finish."
            return
        try:
            yield f"Starting: `{' '.join(command[1:])}` ..."
            start, lines = time.time(), []
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, cwd=str(Path(__file__).resolve().parents[1]))
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:  # tqdm redraws with \r: keep the latest state only
                    lines += [part.strip() for part in raw.split("\r") if part.strip()]
                    lines = lines[-TRAIN_LOG_LINES:]
                    yield (f"Training ({time.time() - start:.0f} s) ...\n\n```\n"
                           + "\n".join(lines) + "\n```")
                proc.wait()
            finally:  # the page went away (generator closed): stop the run, do not orphan it
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=TERMINATE_TIMEOUT_S)
                if proc.stdout is not None:
                    proc.stdout.close()
            if proc.returncode != 0:
                yield (f"Training failed (exit code {proc.returncode}):\n\n```\n"
                       + "\n".join(lines) + "\n```")
            else:
                yield (f"Training finished in {time.time() - start:.0f} s. Press the refresh "
                       "button to list the new checkpoint.")
        finally:
            self._train_lock.release()


def blank_figure(message: str) -> go.Figure:
    """An empty plotly figure showing ``message`` (for views with nothing to plot)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, height=200)
    return fig


__all__ = ["DemoService", "PREDICT_OUTPUTS", "blank_figure"]
