"""Cost of TROA in a training step: TROA on versus off, side by side in one run.

A full training step of the adapter stack on tiny-size random taps (the tiny Swin V2 at
128 px: four (B, 8, 8, 128) stage-3 taps and two (B, 4, 4, 256) stage-4 taps), with a
stand-in decoder (a per-task linear head on the last adapter output of each stage, MSE
losses): forward, backward, Adam step. TROA on adds the per-task leaf copies of the taps,
the cosine similarity of the per-task gradients and the mirror-descent update. The target is
a ratio on/off <= 1.3. For comparison, "naive" gets the same per-task gradients with one
extra ``autograd.grad`` pass per task (what the leaf-copy trick avoids).

Usage: ``python bench/bench_troa.py [--batch 8] [--tasks 4] [--reps 15] [--threads 1]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from vtagml_core.model.adapter import AdapterConfig, VisionAdapter

TAP_CHANNELS = [128] * 4 + [256] * 2
TAP_GRIDS = [(8, 8)] * 4 + [(4, 4)] * 2
TAP_HEADS = [4] * 4 + [8] * 2
HEAD_OUT = 8          # output channels of the stand-in per-task heads
LEARNING_RATE = 1e-4


def build(tasks: int, device: torch.device) -> tuple[VisionAdapter, torch.Tensor, list]:
    ln = [(torch.ones(c), torch.zeros(c)) for c in TAP_CHANNELS]
    model = VisionAdapter(AdapterConfig(), TAP_CHANNELS, TAP_GRIDS, TAP_HEADS, ln, tasks)
    model = model.to(device)
    heads = [torch.nn.Parameter(torch.randn(tasks, TAP_CHANNELS[i], HEAD_OUT, device=device)
                                * 0.02) for i in model.stage_ends]
    return model, heads, torch.optim.Adam([*model.parameters(), *heads], lr=LEARNING_RATE)


def task_losses(model: VisionAdapter, outs: list, heads: list, targets: list) -> torch.Tensor:
    """``(T,)`` per-task MSE of per-task linear heads on each stage's last adapter output."""
    total = 0
    for i, w, y in zip(model.stage_ends, heads, targets):
        pred = torch.einsum("tbhwc,tck->tbhwk", outs[i], w)
        total = total + (pred - y).square().mean(dim=(1, 2, 3, 4))
    return total


def step(mode: str, model, heads, opt, taps, targets) -> None:
    opt.zero_grad(set_to_none=True)
    if mode == "naive":
        T = model.num_tasks
        theta = [t.detach().clone().requires_grad_(True) for t in taps]
        streams = [th.unsqueeze(0).expand(T, *th.shape) for th in theta]
        losses = task_losses(model, model.run_layers(streams, model.condition()), heads, targets)
        grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            losses[t], theta, retain_graph=True)]) for t in range(T)]
        losses.sum().backward()
        model.troa.update(torch.stack(grads))
    else:
        on = mode == "troa_on"
        outs = model(taps, track_task_grads=on)
        task_losses(model, outs, heads, targets).sum().backward()
        if on:
            model.update_affinity()
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0 = torch default); use 1 on a busy shared machine")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive comparison")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, heads, opt = build(args.tasks, device)
    taps = [torch.randn(args.batch, *g, c, device=device)
            for g, c in zip(TAP_GRIDS, TAP_CHANNELS)]
    targets = [torch.randn(args.tasks, args.batch, *TAP_GRIDS[i], HEAD_OUT, device=device)
               for i in model.stage_ends]
    modes = ["troa_off", "troa_on"] + ([] if args.no_naive else ["naive"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(args.warmup + args.reps):
        order = modes if rep % 2 == 0 else modes[::-1]  # alternate to cancel drift
        for mode in order:
            sync()
            t0 = time.perf_counter()
            step(mode, model, heads, opt, taps, targets)
            sync()
            if rep >= args.warmup:
                times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"device={device} threads={torch.get_num_threads()} B={args.batch} T={args.tasks} "
          f"taps={len(TAP_CHANNELS)} reps={args.reps} (median after {args.warmup} warm-up)")
    for m in modes:
        print(f"  {m:9s} {med[m] * 1e3:9.2f} ms/step   ratio to off {med[m] / med['troa_off']:.3f}")
    ratio = med["troa_on"] / med["troa_off"]
    print(f"TROA on/off step-time ratio: {ratio:.3f} (target <= 1.3)")


if __name__ == "__main__":
    main()
