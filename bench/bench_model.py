"""Speed of the assembled VTAGML model on a CPU: inference latency and TROA's training cost.

Two figures, side by side in one run (no asserts; targets are printed next to the numbers):

1. **Inference latency** of the tiny configuration (the kit's tiny Swin V2 at 128 px, six
   adapter layers, per-task decoders for S-D-N-E): batch 1, eval mode, ``torch.no_grad``,
   median over ``--runs`` forwards after warm-up. Target: under 100 ms on a 2-core CPU.
2. **Training step with TROA on vs off** (paper Sec. 3.2.1: TROA must be cheap): forward
   (keeping per-task gradients when TROA is on), :class:`MultiTaskLoss` on random targets that
   follow the data contract, backward, ``update_affinity()`` (TROA's mirror-descent step),
   Adam step; batch ``--batch`` at 128 px. Both models start from the same weights (built from
   one seed; TROA owns no learned weight) and see the same batch; the steps are interleaved
   (on, off, off, on, ...) so that machine noise hits both. Target: ratio on/off <= 1.3.

The machine may be shared: the load average is printed with the numbers; re-run if they look
noisy. Each figure is given as wall-clock time and as CPU time of this process
(``time.process_time``, summed over its threads). With ``--threads 1`` the CPU time is what the
work costs on one idle core even when other processes take turns on the cores, so it is the
figure to compare on a busy machine; with several threads it also counts threads spinning while
they wait for each other.

Usage: ``python bench/bench_model.py [--threads N] [--batch 8] [--runs 30] [--reps 7]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from vtagml_core.train.config import load_kit_config
from vtagml_core.model.vtagml import VTAGML
from vtagml_core.tasks import IGNORE_INDEX
from vtagml_core.train.losses import MultiTaskLoss, check_finite

#: Image side of the tiny configuration (the kit's default ``BackboneConfig.img_size``).
IMG_SIZE = 128
#: Task set of the benchmarked model (the paper's largest, Sec. 4).
TASKS = "S-D-N-E"
#: Segmentation classes of the benchmarked model (any fixed number; it only sizes one head).
NUM_CLASSES = 10
#: Seed of the model weights and of the random batch.
SEED = 0
#: Adam learning rate of the timed training steps (small: the weights barely move).
LEARNING_RATE = 1e-4
#: Targets printed next to the measurements.
LATENCY_TARGET_MS = 100.0
TROA_RATIO_TARGET = 1.3
#: Random-target contract: fraction of valid pixels, of ignored seg pixels, depth range.
VALID_FRACTION = 0.8
IGNORED_FRACTION = 0.1
DEPTH_RANGE = (0.5, 10.0)
#: Percentiles printed with the latency median.
LOW_PERCENTILE, HIGH_PERCENTILE = 10, 90


def build_model(troa: bool) -> VTAGML:
    """The quick preset's model (configs/tiny-cpu.yaml); the same seed gives the same weights
    with TROA on or off."""
    torch.manual_seed(SEED)
    cfg = load_kit_config(preset="quick").model
    cfg.tasks, cfg.num_classes, cfg.adapter.troa = TASKS, NUM_CLASSES, troa
    return VTAGML(cfg)


def random_batch(batch: int, tasks: tuple[str, ...]) -> dict:
    """A collated batch following the kit's data contract (images in [0, 1], labels per task)."""
    g = torch.Generator().manual_seed(SEED)
    shape = (batch, 1, IMG_SIZE, IMG_SIZE)
    valid = torch.rand(shape, generator=g) < VALID_FRACTION
    out = {"image": torch.rand(batch, 3, IMG_SIZE, IMG_SIZE, generator=g), "valid": valid}
    if "seg" in tasks:
        seg = torch.randint(0, NUM_CLASSES, (batch, IMG_SIZE, IMG_SIZE), generator=g)
        ignored = torch.rand(seg.shape, generator=g) < IGNORED_FRACTION
        out["seg"] = seg.masked_fill(ignored, IGNORE_INDEX)
    if "depth" in tasks:
        lo, hi = DEPTH_RANGE
        out["depth"] = (lo + (hi - lo) * torch.rand(shape, generator=g)) * valid
    if "normals" in tasks:
        normals = F.normalize(torch.randn(batch, 3, IMG_SIZE, IMG_SIZE, generator=g), dim=1)
        out["normals"] = normals * valid
    if "edges" in tasks:
        out["edges"] = torch.rand(shape, generator=g)
    return out


def train_step(model: VTAGML, criterion: MultiTaskLoss, optimiser: torch.optim.Optimizer,
               batch: dict) -> None:
    """forward -> losses -> check_finite -> backward -> TROA update -> Adam step."""
    optimiser.zero_grad(set_to_none=True)
    outputs = model(batch["image"], track_task_grads=model.tracks_task_grads)
    total, losses = criterion(outputs, batch)
    check_finite(losses)
    total.backward()
    model.update_affinity()  # None (and no work) when TROA is off
    optimiser.step()


class Timings:
    """Wall-clock and process-CPU seconds of repeated calls."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, fn, *args) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)

    def median_ms(self) -> tuple[float, float]:
        return statistics.median(self.wall) * 1e3, statistics.median(self.cpu) * 1e3


def measure_latency(runs: int, warmup: int) -> Timings:
    """Batch-1 eval forwards of the tiny model, ``runs`` timed after ``warmup`` untimed."""
    model = build_model(troa=True).eval()
    image = torch.rand(1, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(SEED))
    timings = Timings()
    with torch.no_grad():
        for _ in range(warmup):
            model(image)
        for _ in range(runs):
            timings.time(model, image)
    return timings


def measure_troa_cost(batch_size: int, reps: int, warmup: int) -> dict[str, Timings]:
    """Training steps with TROA on and off, interleaved, ``reps`` timed steps each."""
    models = {"troa_on": build_model(troa=True), "troa_off": build_model(troa=False)}
    models["troa_off"].load_state_dict(models["troa_on"].state_dict())  # same start weights
    batch = random_batch(batch_size, models["troa_on"].tasks)
    setups = {}
    for mode, model in models.items():
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        setups[mode] = (model, MultiTaskLoss(model.tasks), torch.optim.Adam(params, lr=LEARNING_RATE))
    timings = {mode: Timings() for mode in models}
    order = list(models)
    for rep in range(warmup + reps):
        for mode in (order if rep % 2 == 0 else order[::-1]):  # ABBA: cancels slow drift
            if rep < warmup:
                train_step(*setups[mode], batch)
            else:
                timings[mode].time(train_step, *setups[mode], batch)
    return timings


def percentile(values: list[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q / 100))


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=cores,
                        help=f"torch CPU threads (default: all {cores} cores)")
    parser.add_argument("--batch", type=int, default=8, help="training-step batch size")
    parser.add_argument("--runs", type=int, default=30, help="timed inference forwards")
    parser.add_argument("--reps", type=int, default=7, help="timed training steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"VTAGML tiny config: swinv2_tiny_cpu at {IMG_SIZE}px, tasks {TASKS}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()} of {cores} cores, "
          f"load average before {os.getloadavg()[0]:.2f}")
    if not args.skip_latency:
        lat = measure_latency(args.runs, args.warmup)
        wall, cpu = lat.median_ms()
        ms = [t * 1e3 for t in lat.wall]
        print(f"[1] inference B=1 eval no_grad ({args.runs} runs): median wall {wall:7.1f} ms "
              f"(p{LOW_PERCENTILE} {percentile(ms, LOW_PERCENTILE):.1f}, "
              f"p{HIGH_PERCENTILE} {percentile(ms, HIGH_PERCENTILE):.1f}), median CPU {cpu:7.1f} ms"
              f"  target < {LATENCY_TARGET_MS:.0f} ms wall: "
              f"{'met' if wall < LATENCY_TARGET_MS else 'MISSED'}")
    if not args.skip_train:
        timings = measure_troa_cost(args.batch, args.reps, args.warmup)
        med = {mode: t.median_ms() for mode, t in timings.items()}
        print(f"[2] training step B={args.batch} at {IMG_SIZE}px (median of {args.reps}, "
              f"interleaved):")
        for mode, t in timings.items():
            print(f"      {mode:9s} wall {med[mode][0]:8.1f} ms/step (min {min(t.wall) * 1e3:.1f}, "
                  f"max {max(t.wall) * 1e3:.1f})   CPU {med[mode][1]:8.1f} ms/step")
        ratio_wall = med["troa_on"][0] / med["troa_off"][0]
        ratio_cpu = med["troa_on"][1] / med["troa_off"][1]
        print(f"      TROA on/off ratio: wall {ratio_wall:.3f}, CPU {ratio_cpu:.3f}  "
              f"target <= {TROA_RATIO_TARGET}: "
              f"{'met' if max(ratio_wall, ratio_cpu) <= TROA_RATIO_TARGET else 'MISSED'}")
    print(f"load average after {os.getloadavg()[0]:.2f} (above the thread count means a busy "
          f"machine: re-run for clean numbers)")


if __name__ == "__main__":
    main()
