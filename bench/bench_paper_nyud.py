"""Training steps of the `paper-nyud` preset (Swin-B V2 at 256 px, S-D-N-E, 40 classes) on a
generated NYUD-v2 tree: seconds per step, images per second and peak memory.

The tree is written by the same generator the reader tests use (``tests/fixtures_real.py``,
MTI-Net ``NYUD_MT`` layout, 480 x 640 images with random labels), so the numbers are the cost of
the computation, not of learning anything. The backbone is randomly initialised (the trainer
warns; timing does not depend on the weights).

* On a CPU (the default here): ``--steps 2`` of batch 2, as the issue asks; prints the wall time
  per step and the process's peak resident memory.
* With ``--device cuda``: ``--steps 200`` (say) of the preset's batch, bf16 autocast and SDPA
  as the trainer uses them on CUDA; prints images/s, peak CUDA memory and the projected minutes
  per epoch of NYUD's 795 training images next to the paper's Table 6 (8 min per epoch).

Usage: ``python bench/bench_paper_nyud.py [--device cpu|cuda] [--steps N] [--batch B]``
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures_real import make_nyud_tree  # noqa: E402  (the reader tests' tree generator)

from vtagml_core.train.config import load_kit_config  # noqa: E402
from vtagml_core.train.logging import LOG_FILE, read_log  # noqa: E402
from vtagml_core.train.trainer import Trainer  # noqa: E402

#: NYUD-v2's training images (MTI-Net split) and the paper's minutes per epoch (Table 6).
NYUD_TRAIN_IMAGES, PAPER_MIN_PER_EPOCH = 795, 8.0
#: Native NYUD image size (height, width).
NYUD_SIZE = (480, 640)
#: Steps whose time is left out (allocator and kernel warm-up).
WARMUP_STEPS = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, the preset's on CUDA")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here; run on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "NYUD_MT"
        preset = load_kit_config(preset="paper-nyud")
        batch = args.batch or (2 if args.device == "cpu" else preset.data.batch_size)
        n_train = batch * (args.steps + 1)
        make_nyud_tree(root, n_train=n_train, n_val=2, size=NYUD_SIZE)
        cfg = load_kit_config(preset="paper-nyud", overrides=[
            f"data.root={root}", f"data.batch_size={batch}", f"train.max_steps={args.steps}",
            "train.epochs=1", f"train.device={args.device}", "train.progress=false",
            "train.save_every_steps=0"])
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        Trainer(cfg, Path(tmp) / "run", log=lambda m: None).fit()
        wall = time.perf_counter() - started
        seconds = [r["seconds"] for r in read_log(Path(tmp) / "run" / LOG_FILE, "step")]
    timed = seconds[WARMUP_STEPS:] or seconds
    per_step = statistics.median(timed)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"paper-nyud: {cfg.model.backbone.name} at {cfg.data.size}px, tasks {cfg.model.tasks}, "
          f"{cfg.model.resolved_num_classes()} classes, batch {batch}, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; generated NYUD_MT "
          f"tree ({NYUD_SIZE[0]}x{NYUD_SIZE[1]} images), random backbone")
    print(f"steps {len(seconds)} (median of {len(timed)} after {WARMUP_STEPS} warm-up): "
          f"{per_step:.2f} s/step = {batch / per_step:.2f} images/s; whole run {wall:.1f} s "
          f"(model build, data, validation included); peak RSS {rss_gb:.2f} GB")
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        minutes = NYUD_TRAIN_IMAGES / (batch / per_step) / 60
        print(f"peak CUDA memory {peak:.2f} GB; projected {minutes:.1f} min per epoch of "
              f"{NYUD_TRAIN_IMAGES} images (paper, Table 6: {PAPER_MIN_PER_EPOCH:.0f} min)")


if __name__ == "__main__":
    main()
