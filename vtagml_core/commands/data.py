"""``python -m vtagml_core data {domains,render,stats,grid}``: the synthetic benchmark.

Examples::

    python -m vtagml_core data domains
    python -m vtagml_core data render --domain indoor --split train --count 512 --size 128
    python -m vtagml_core data stats  --domain indoor --split train --count 512 --size 128
    python -m vtagml_core data grid   --domain comic --out runs/comic_grid.html
    python -m vtagml_core data render --domain indoor_shift --severity 0.4   # graded shift
    python -m vtagml_core data render --domain indoor_shift --severity-level 2
    python -m vtagml_core data render --domain indoor_shift@appearance=0.4,camera=1

``--severity S`` / ``--severity-level K`` turn a shift target into ``<target>@S``
(``vtagml_core/data/synthetic/shift.py``; levels 1..5 are S = 0.2 .. 1.0).
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
        p.add_argument("--domain", default="indoor",
                       help="domain name (see `data domains`), or a shifted one: indoor_shift@0.4")
        graded = p.add_mutually_exclusive_group()
        graded.add_argument("--severity", default=None, metavar="S",
                            help="shift the target --domain from its source by S in [0, 1] "
                                 "(every factor)")
        graded.add_argument("--severity-level", type=int, default=None, metavar="K",
                            help="named severity level K in 1..5 (S = 0.2 K)")
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


def domain_name(domain: str, severity: str | None = None, level: int | None = None) -> str:
    """The domain a command addresses: ``domain``, or ``domain@severity`` / at a level.

    Raises:
        ValueError: a severity given twice (in the name and as an option), a bad value, or a
            domain that is no shift target.
    """
    from vtagml_core.data.synthetic.catalog import check_domain_name
    from vtagml_core.data.synthetic.domains import SHIFT_MARKER
    from vtagml_core.data.synthetic.shift import Severity, shifted_name

    if severity is None and level is None:
        return check_domain_name(domain)
    if SHIFT_MARKER in domain:
        raise ValueError(f"--domain {domain} already names a severity; drop --severity / "
                         "--severity-level, or give the plain target domain")
    if level is not None:
        return shifted_name(domain, Severity.from_level(level))
    return check_domain_name(f"{domain}{SHIFT_MARKER}{severity}")


def run(args: argparse.Namespace) -> int:
    from vtagml_core.data.cache import ensure_split, split_statistics
    from vtagml_core.data.synthetic.domains import DOMAINS, SHIFT_SOURCES

    if args.action == "domains":
        width = max(len(n) for n in DOMAINS)
        for name, spec in DOMAINS.items():
            source = f" (shift of {SHIFT_SOURCES[name]}: {name}@0..1)" if name in SHIFT_SOURCES else ""
            print(f"{name:<{width}}  {spec.description}{source}")
        return 0
    args.domain = domain_name(args.domain, args.severity, args.severity_level)
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
