"""The demo's handlers, free of Gradio so that tests and benchmarks call them directly.

Every handler catches what can go wrong with user input (unreadable or oversized files,
unknown checkpoints, out-of-range controls) and returns a message for the page instead of
raising: the app keeps serving whatever one request sent. Unexpected failures are logged with
their traceback and reported as an internal error, also without raising.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import plotly.graph_objects as go

from vtagml_core.predict import Prediction, letterbox_box, load_image_with_notes
from vtagml_core.tasks import TASK_TITLES, TASKS
from vtagml_core.viz.affinity import affinity_heatmap, affinity_history_figure
from vtagml_core.viz.attention import attention_layers, attention_map, attention_overlay, query_token

from .checkpoints import (CheckpointCatalog, CheckpointStatus, PredictorCache, default_roots,
                          display_path, public_message, read_training_info, resolve)
from .figures import fit_affinity_layout
from .panels import (arrays_file, caution, depth_panel, legend_html, trained_on, training_card,
                     write_png)

log = logging.getLogger("vtagml.demo")

#: Order of the /predict outputs: input, the four task images, legend, arrays file, status.
PREDICT_OUTPUTS: tuple[str, ...] = ("input", "seg", "depth", "normals", "edges", "legend",
                                    "arrays", "status")
#: Where the "Train a quick checkpoint" button writes, below the first checkpoint root.
QUICK_RUN_NAME: str = "quick"
#: Per-request output folders on disk: at most this many and this many bytes in all (oldest
#: deleted first), but never the newest REQUEST_DIRS_MIN (requests whose files Gradio may still
#: be copying into its cache: more than the app's concurrency).
REQUEST_DIRS_KEPT: int = 32
REQUEST_DIRS_MAX_BYTES: int = 64 * 2**20
REQUEST_DIRS_MIN: int = 8
#: Prefix of the demo's temporary folders (removed at exit).
WORK_DIR_PREFIX: str = "vtagml_demo_"
#: Seconds a stopped training process gets to exit after SIGTERM.
TERMINATE_TIMEOUT_S: int = 30
#: Lines of training output shown while it runs.
TRAIN_LOG_LINES: int = 6

NO_FILE_MESSAGE = "Upload an image (PNG, JPEG, ...) or pick one of the examples."

#: What the handlers receive as the image: a file path (tests, scripts) or the uploaded
#: file's bytes (the app's upload component), None when nothing was uploaded.
Upload = Union[str, Path, bytes, None]


def _no_file(file: Upload) -> bool:
    """Nothing uploaded (empty bytes are an upload: the loader says they are empty)."""
    return file is None or (isinstance(file, (str, Path)) and not str(file))


def _error(message: str) -> str:
    return f"**Error:** {message}"


def _folder_bytes(folder: Path) -> int:
    """Total size of the files in ``folder`` (0 when it is gone)."""
    try:
        return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    except OSError:
        return 0


class DemoService:
    """State and handlers of one demo app.

    Files: per-request outputs go to ``work_dir/request_NNNNNN/`` (bounded by
    :data:`REQUEST_DIRS_KEPT` folders and :data:`REQUEST_DIRS_MAX_BYTES`); :meth:`close`
    removes them (the whole ``work_dir`` when the service made it), and is registered with
    ``atexit``, so a stopped server (Ctrl-C, SIGTERM: see :func:`demo_app.app.main`) leaves
    nothing behind.

    Args:
        roots: checkpoint roots to list (default :func:`.checkpoints.default_roots`).
        work_dir: where per-request files (the ``.npz`` arrays) are written; default a
            fresh temporary folder ``vtagml_demo_*``.
    """

    def __init__(self, roots: list[Path] | None = None, work_dir: Path | None = None) -> None:
        self.roots = [Path(r) for r in (roots if roots is not None else default_roots())]
        self.cache = PredictorCache()
        self.catalog = CheckpointCatalog(self.roots, self.cache)
        self._owns_work_dir = not work_dir
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX))
        self._train_lock = threading.Lock()
        self._counter = 0
        self._counter_lock = threading.Lock()
        self._requests: list[Path] = []  # request folders still on disk, oldest first
        atexit.register(self.close)

    def close(self) -> None:
        """Remove this service's files: its ``work_dir`` if it made it, else its request folders."""
        with self._counter_lock:
            requests, self._requests = self._requests, []
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        else:
            for folder in requests:
                shutil.rmtree(folder, ignore_errors=True)

    def public(self, text: str) -> str:
        """A message without the server's absolute paths (checkpoint roots, work folder)."""
        text = public_message(text, self.roots)
        return text.replace(str(self.work_dir), display_path(self.work_dir))

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[CheckpointStatus]:
        """The checkpoints found now (a fresh scan): usable ones newest first, then broken ones."""
        return self.catalog.scan()

    def checkpoint_choices(self) -> list[str]:
        """Labels of the checkpoints found now, in :meth:`checkpoints` order."""
        return [entry.label for entry in self.checkpoints()]

    def checkpoint_options(self) -> list[tuple[str, str]]:
        """``(shown, label)`` pairs for the checkpoint menu; broken ones say so."""
        return [(f"{e.label} (broken)" if e.broken else e.label, e.label) for e in self.checkpoints()]

    def default_checkpoint(self) -> str | None:
        """The newest checkpoint that loads (it is loaded now); None when none does."""
        return self.catalog.default()

    def broken_message(self) -> str:
        """Markdown listing the broken checkpoints and why; empty when there are none."""
        broken = [e for e in self.checkpoints() if e.broken]
        if not broken:
            return ""
        return "\n".join(["**Broken checkpoints** (never preselected):"]
                         + [f"- `{e.label}`: {e.problem}" for e in broken])

    def no_checkpoint_message(self) -> str:
        where = ", ".join(f"`{display_path(r)}`" for r in self.roots)
        return (f"No trained checkpoint was found under {where}. Use **Train a quick "
                "checkpoint** below (a few minutes on a CPU), or run `make reproduce` in a "
                "terminal (it writes `runs/reproduce/model`), then press the refresh button.")

    def predictor(self, checkpoint: str | None):
        """The cached :class:`~vtagml_core.predict.Predictor` of a listed checkpoint label
        (empty: the default); raises ValueError naming the reason when it does not load."""
        return self.catalog.load(checkpoint)[1]

    def training_card(self, checkpoint: str | None) -> str:
        """Markdown: what the checkpoint was trained on, its validation metrics, a caution."""
        try:
            label, predictor = self.catalog.load(checkpoint)
            _, folder = resolve(label, self.roots)
            return training_card(label, read_training_info(folder), predictor.class_names)
        except (ValueError, FileNotFoundError) as err:
            return _error(self.public(str(err)))

    def warm_up(self) -> str:
        """Load the default checkpoint and run one prediction, so the first request is fast."""
        label = self.default_checkpoint()
        if label is None:
            return "no checkpoint to warm up"
        pred = self.predictor(label)
        pred.predict(np.zeros((pred.input_size, pred.input_size, 3), dtype=np.uint8))
        return f"warmed up {label}"

    # ------------------------------------------------------------------ predictions
    def run_prediction(self, file: Upload, checkpoint: str | None) -> tuple[Prediction, list[str], str]:
        """Load ``file`` (a path or the uploaded bytes) and predict with ``checkpoint``; raises
        ValueError for the user."""
        if _no_file(file):
            raise ValueError(NO_FILE_MESSAGE)
        loaded = load_image_with_notes(file)
        label, predictor = self.catalog.load(checkpoint)
        return predictor.predict(loaded.rgb), loaded.notes, label

    def _request_dir(self) -> Path:
        """A new folder name for one request's files (see :meth:`_prune`)."""
        with self._counter_lock:
            self._counter += 1
            folder = self.work_dir / f"request_{self._counter:06d}"
            self._requests.append(folder)
        return folder

    def _prune(self) -> None:
        """Delete old request folders, oldest first, once a request has written its files.

        Gradio copies the returned files into its own cache when the handler returns, so old
        request folders are no longer needed: beyond the newest :data:`REQUEST_DIRS_MIN` they
        are deleted while there are more than :data:`REQUEST_DIRS_KEPT` or they hold more than
        :data:`REQUEST_DIRS_MAX_BYTES`.
        """
        with self._counter_lock:
            sizes = [_folder_bytes(f) for f in self._requests]
            doomed = []
            while len(self._requests) > REQUEST_DIRS_MIN and (
                    len(self._requests) > REQUEST_DIRS_KEPT or sum(sizes) > REQUEST_DIRS_MAX_BYTES):
                doomed.append(self._requests.pop(0))
                sizes.pop(0)
        for old in doomed:
            shutil.rmtree(old, ignore_errors=True)

    def _training_line(self, label: str) -> str:
        """One status line: what the checkpoint was trained on, and the out-of-domain caution."""
        _, folder = resolve(label, self.roots)
        info = read_training_info(folder)
        classes = len(self.predictor(label).class_names)
        return f"Trained on {trained_on(info)}. {caution(info, classes)}"

    def predict(self, file: Upload, checkpoint: str | None = None) -> tuple[Any, ...]:
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
            self._prune()
            missing = [t for t in TASKS if t not in pred.tasks]
            t = pred.timings
            status = [f"Checkpoint `{label}`: model forward {t['forward']:.0f} ms, "
                      f"{t['total']:.0f} ms in all (image seen by the model at "
                      f"{pred.box.width}x{pred.box.height})."]
            status += [f"Note: {n}." for n in notes]
            if missing:
                status.append("This checkpoint has no " + ", ".join(TASK_TITLES[m] for m in missing)
                              + " head.")
            status.append(self._training_line(label))
            return (files["input"], files.get("seg"), files.get("depth"), files.get("normals"),
                    files.get("edges"), legend_html(pred.legend) if pred.seg is not None else "",
                    str(npz), "\n\n".join(line for line in status if line))
        except (ValueError, FileNotFoundError) as err:
            return (None, None, None, None, None, "", None, _error(self.public(str(err))))
        except Exception as err:  # keep serving; the log has the traceback
            log.exception("prediction failed")
            return (None, None, None, None, None, "", None, _error(self.public(
                f"internal error ({type(err).__name__}: {err}); see the server log")))

    # ------------------------------------------------------------------ affinities
    def affinity(self, checkpoint: str | None) -> tuple[go.Figure | None, go.Figure | None, str]:
        """TROA's omega of a checkpoint as a heatmap, its history with a step slider, a note."""
        try:
            label, predictor = self.catalog.load(checkpoint)
            model = predictor.model
            if getattr(getattr(model, "adapter", None), "troa", None) is None:
                raise ValueError(f"the model of {label} has no TROA affinity matrix")
            troa = model.adapter.troa
            updates = int(troa.num_updates)
            heat = affinity_heatmap(model.omega, model.tasks)
            fit_affinity_layout(heat, "TROA task affinity omega", f"{label}, {updates} updates")
            steps, mats = troa.history_tensor()
            history = affinity_history_figure(steps, mats, model.tasks) if len(steps) >= 2 else None
            if history is not None:
                fit_affinity_layout(history, "omega over training", label, slider=True)
            note = [f"Row t is target task t's distribution over inductive tasks n (paper Sec. "
                    f"3.2.1, Algorithm 1); {updates} TROA updates, {len(steps)} snapshots recorded."]
            if not troa.enabled:
                note.append("TROA was off for this checkpoint (ablation or learned task "
                            "embeddings): omega stays uniform.")
            if history is None:
                note.append("No affinity history to animate (fewer than two snapshots).")
            return heat, history, " ".join(note)
        except (ValueError, FileNotFoundError) as err:
            return None, None, _error(self.public(str(err)))
        except Exception as err:
            log.exception("affinity view failed")
            return None, None, _error(self.public(f"internal error ({type(err).__name__}: {err})"))

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

    def attention(self, file: Upload, checkpoint: str | None, task: str, layer: int, head: int,
                  x: float, y: float) -> tuple[np.ndarray | None, str]:
        """TAA attention of the token under ``(x, y)`` (fractions of the image) as an overlay."""
        try:
            if _no_file(file):
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
            return None, _error(self.public(str(err)))
        except Exception as err:
            log.exception("attention view failed")
            return None, _error(self.public(f"internal error ({type(err).__name__}: {err})"))

    # ------------------------------------------------------------------ training
    def train_command(self) -> list[str]:
        """The quick-preset training command, run in a subprocess (the CLI sits above the demo)."""
        out = self.roots[0] / QUICK_RUN_NAME
        return [sys.executable, "-m", "vtagml_core", "train", "--preset", "quick", "--out", str(out)]

    def train_quick(self) -> Iterator[str]:
        """Run the quick-preset training in a subprocess, yielding progress messages.

        Closing the generator (Gradio does when the page goes away) terminates the run.
        """
        command = self.train_command()
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


__all__ = ["DemoService", "PREDICT_OUTPUTS"]
