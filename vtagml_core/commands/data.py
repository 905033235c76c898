"""``python -m vtagml_core data {domains,render,stats,grid}``: the synthetic benchmark.

Examples::

    python -m vtagml_core data domains
    python -m vtagml_core data render --domain indoor --split train --count 512 --size 128
    python -m vtagml_core data stats  --domain indoor --split train --count 512 --size 128
    python -m vtagml_core data grid   --domain comic --out runs/comic_grid.html
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_COUNT = 256
DEFAULT_SIZE = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("domains", help="list the synthetic domains with a description")
    for name, help_text in (
        ("render", "render a split to the on-disk cache (reused when already there)"),
        ("stats", "statistics of a rendered split (renders it first if needed)"),
        ("grid", "write a plotly sample grid (image and its labels) as HTML"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--domain", default="indoor", help="domain name (see `data domains`)")
        p.add_argument("--split", default="train", help="train, val, test or pretext")
        p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="number of scenes")
        p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
        p.add_argument("--seed", type=int, default=0, help="base seed of the split")
        p.add_argument("--root", type=Path, default=None,
                       help="cache root (default: $VTAGML_CACHE or ~/.cache/vtagml)")
        p.add_argument("--workers", type=int, default=None, help="render processes")
        if name == "grid":
            p.add_argument("--n", type=int, default=4, help="samples in the grid")
            p.add_argument("--out", type=Path, required=True, help="output .html file")


def run(args: argparse.Namespace) -> int:
    from vtagml_core.data.cache import ensure_split, split_statistics
    from vtagml_core.data.synthetic.domains import DOMAINS

    if args.action == "domains":
        width = max(len(n) for n in DOMAINS)
        for name, spec in DOMAINS.items():
            print(f"{name:<{width}}  {spec.description}")
        return 0
    path = ensure_split(args.domain, args.split, args.count, args.size, seed=args.seed,
                        root=args.root, workers=args.workers)
    if args.action == "render":
        print(f"rendered split at {path}")
    elif args.action == "stats":
        print(json.dumps(split_statistics(path), indent=2))
    elif args.action == "grid":
        from vtagml_core.data.dataset import SyntheticDataset
        from vtagml_core.viz.samples import sample_grid

        ds = SyntheticDataset(args.domain, args.split, count=args.count, size=args.size,
                              seed=args.seed, root=args.root)
        fig = sample_grid(ds, n=args.n, title=f"synthetic/{args.domain} {args.split} "
                                               f"{args.size}x{args.size}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(str(args.out), include_plotlyjs=True)
        print(f"wrote {args.out}")
    return 0
