"""Benchmark of the synthetic benchmark generator (docs/benchmark.md).

Measures, in one run and on one machine:

1. rendering a split of ``--count`` scenes at ``--size`` with all labels into a temporary
   cache root (wall time, scenes/s, worker count); target: 2,000 scenes at 128x128 in under
   30 s on a 2-core CPU;
2. reading a batch of ``--batch`` scenes from that cache (SyntheticDataset + DataLoader)
   versus rendering the same scenes again in this process, side by side with their ratio;
   target: the cached read at least 10x faster.

The figures are printed, not asserted. Usage::

    python bench/bench_render.py                     # 2,000 scenes, 128x128, indoor
    python bench/bench_render.py --count 200 --size 64 --domain street
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vtagml_core.data.cache import GENERATOR_VERSION, ensure_split, load_split
from vtagml_core.data.dataset import SyntheticDataset
from vtagml_core.data.synthetic import list_domains, render_scene

#: Targets from the project brief (printed next to the measurements).
TARGET_RENDER_S_FOR_2000 = 30.0
TARGET_READ_SPEEDUP = 10.0
#: Repetitions of the batch timings (the median is reported).
REPEATS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="scenes to render (2000)")
    parser.add_argument("--size", type=int, default=128, help="square image size (128)")
    parser.add_argument("--domain", default="indoor",
                        choices=list_domains() + ["mixed"], help="domain (indoor)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="rendering processes (os.cpu_count())")
    parser.add_argument("--batch", type=int, default=32, help="batch size to compare (32)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"generator version {GENERATOR_VERSION}; domain {args.domain}; "
          f"{args.size}x{args.size}, all labels")
    with tempfile.TemporaryDirectory(prefix="vtagml-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        path = ensure_split(args.domain, "train", args.count, args.size, root=root,
                            workers=args.workers, progress=False)
        wall = time.perf_counter() - start
        mb = sum(f.stat().st_size for f in path.iterdir()) / 2 ** 20
        print(f"render {args.count} scenes with {args.workers} workers: {wall:.2f} s wall, "
              f"{args.count / wall:.1f} scenes/s, {1000 * wall / args.count:.2f} ms/scene "
              f"({mb:.0f} MiB on disk)")
        if args.count == 2000 and args.size == 128:
            print(f"  target: under {TARGET_RENDER_S_FOR_2000:.0f} s -> "
                  f"{'met' if wall < TARGET_RENDER_S_FOR_2000 else 'NOT met'}")

        batch = min(args.batch, args.count)
        dataset = SyntheticDataset(args.domain, "train", count=args.count, size=args.size,
                                   root=root, progress=False)
        loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
        read_times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            next(iter(loader))
            read_times.append(time.perf_counter() - start)
        seeds = load_split(path).manifest["scene_seeds"][:batch]
        render_times = []
        for _ in range(max(1, REPEATS // 2)):
            start = time.perf_counter()
            for s in seeds:
                render_scene(args.domain, s, args.size)
            render_times.append(time.perf_counter() - start)
        read, render = statistics.median(read_times), statistics.median(render_times)
        print(f"batch of {batch} (one process): cached read {1000 * read:.1f} ms | "
              f"render {1000 * render:.1f} ms | ratio {render / read:.1f}x "
              f"(target >= {TARGET_READ_SPEEDUP:.0f}x)")


if __name__ == "__main__":
    main()
