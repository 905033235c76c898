"""``python -m vtagml_core runs``: the run store: list, show, export, import, remove.

Examples::

    python -m vtagml_core runs list
    python -m vtagml_core runs show vtagml-3f2a                  # a name or its prefix
    python -m vtagml_core runs export --out quick-runs.tar.gz     # every finished run
    python -m vtagml_core runs export --out vt.tar.gz --method vtagml --seed 0
    python -m vtagml_core runs export --out class.tar.gz --current  # only runs this kit reuses
    python -m vtagml_core runs import quick-runs.tar.gz           # verified, all or nothing
    python -m vtagml_core runs remove vtagml-3f2a
    python -m vtagml_core runs remove --stale                    # runs this kit never reuses

The store is ``--store``, else ``$VTAGML_RUNS``, else ``~/.cache/vtagml/runs``
(:mod:`vtagml_core.experiments.runs`; listing: :mod:`vtagml_core.experiments.store_catalog`;
archives: :mod:`vtagml_core.experiments.store_archive`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_store_argument, store_from_args


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="run names or prefixes (default: every finished run)")
    parser.add_argument("--method", default=None, help="only runs of this method")
    parser.add_argument("--seed", type=int, default=None, help="only runs of this seed")
    status = parser.add_mutually_exclusive_group()
    status.add_argument("--current", dest="stale", action="store_false", default=None,
                        help="only runs this kit would reuse (not stale)")
    status.add_argument("--stale", dest="stale", action="store_true",
                        help="only stale runs: trained by another kit version, method revision, "
                        "renderer or backbone, so never asked for again (`runs list` says why)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="every run: name, method, tasks, preset, seed, metrics, size, date, "
                   "and whether this kit still reuses it")
    show = sub.add_parser("show", help="one run: its key, config, results and files")
    show.add_argument("name", help="run name or a prefix of it")
    export = sub.add_parser("export", help="selected runs into one archive with SHA-256 manifest")
    export.add_argument("--out", type=Path, required=True, help="archive file (.tar.gz)")
    _selection(export)
    imp = sub.add_parser("import", help="runs from an archive (hashes verified, all or nothing)")
    imp.add_argument("archive", type=Path)
    remove = sub.add_parser("remove", help="delete runs from the store")
    _selection(remove)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from vtagml_core.experiments import store_archive as sa
    from vtagml_core.experiments import store_catalog as sc

    store = store_from_args(args)
    if args.action == "list":
        runs = sc.list_runs(store)
        print(f"run store {store}: {len(runs)} run(s)")
        if runs:
            print("| run | method | tasks | preset | seed | best val metrics | size | date | reused |")
            print("|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            print(f"| {r.name} | {r.method} | {r.tasks} | {', '.join(r.presets) or '-'} | {r.seed} | "
                  f"{r.metrics} | {_mb(r.size_bytes)} | {r.date} | "
                  f"{'stale: ' + '; '.join(r.stale) if r.stale else 'yes'} |")
        stale = [r for r in runs if r.stale]
        if stale:
            print(f"{len(stale)} stale run(s), {_mb(sum(r.size_bytes for r in stale))}: this kit never "
                  "asks for them again; `runs remove --stale` deletes them, `runs export --current` "
                  "leaves them out")
        return 0
    if args.action == "show":
        folder = sc.select_runs(store, [args.name])[0]
        summary = sc.summarize_run(folder)
        print(f"{folder}\n{summary.method}, tasks {summary.tasks}, seed {summary.seed}, "
              f"{_mb(summary.size_bytes)}, {summary.date}\nbest: {summary.metrics}")
        info = folder / "run_key.json"
        if info.is_file():
            print(json.dumps(json.loads(info.read_text()), indent=2))
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            print(f"  {path.relative_to(folder)}  {_mb(path.stat().st_size)}")
        return 0
    if args.action == "export":
        runs = sc.select_runs(store, args.names, args.method, args.seed, args.stale)
        manifest = sa.export_runs(runs, args.out)
        print(f"exported {len(runs)} run(s), {len(manifest['files'])} files, into {args.out} "
              f"({_mb(args.out.stat().st_size)})")
        return 0
    if args.action == "import":
        names = sa.import_runs(args.archive, store)
        print(f"imported {len(names)} run(s) into {store}: {', '.join(names) or '(all were there)'}")
        return 0
    if not args.names and args.method is None and args.seed is None and args.stale is None:
        print("runs remove: name the runs (or prefixes), or select them with --method, --seed, "
              "--stale; nothing removed")
        return 2
    runs = sc.select_runs(store, args.names, args.method, args.seed, args.stale)
    sc.remove_runs(runs)
    print(f"removed {len(runs)} run(s): {', '.join(r.name for r in runs)}")
    return 0
