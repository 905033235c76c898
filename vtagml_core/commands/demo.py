"""``python -m vtagml_core demo``: start the Gradio demo (``demo_app/``, behind ``make demo``).

Binds to 127.0.0.1 unless ``--host`` says otherwise; ``--share`` (a public Gradio link, needs
internet) is off unless given. Checkpoints are listed from folders, never typed paths:
``--checkpoints DIR`` replaces the default roots (``demo_app/checkpoints/`` and ``runs/``).
Ctrl-C, SIGTERM and SIGHUP stop the server cleanly: its temporary files (the demo's
``vtagml_demo_*`` folder, Gradio's cached copies of this app's files) are removed.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

#: Where the demo listens by default (local only).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (needs internet; off by default)")
    parser.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                        help="folder whose sub-folders hold checkpoints (default: "
                             "demo_app/checkpoints and runs)")
    parser.add_argument("--no-auto-train", action="store_true",
                        help="do not train a quick checkpoint on first start when none exists")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: half the CPU cores, at least 1)")


def _make_demo_importable() -> None:
    """Put the repository root on ``sys.path`` when ``demo_app/`` sits next to the package.

    An editable install made before ``demo_app/__init__.py`` existed does not map it; running
    from another folder than the repository root would then not find it.
    """
    root = Path(__file__).resolve().parents[2]
    if importlib.util.find_spec("demo_app") is None and (root / "demo_app" / "app.py").is_file():
        sys.path.insert(0, str(root))


def run(args: argparse.Namespace) -> int:
    _make_demo_importable()
    if importlib.util.find_spec("demo_app") is None or importlib.util.find_spec("gradio") is None:
        raise ValueError("the demo needs the repository's demo_app/ folder and gradio: run it "
                         "from the repository root after `make setup` (pip install -e '.[demo]')")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.checkpoints is not None and not args.checkpoints.is_dir():
        raise ValueError(f"--checkpoints {args.checkpoints} is not a folder")
    from demo_app.app import main

    main(host=args.host, port=args.port, share=args.share, checkpoint_root=args.checkpoints,
         threads=args.threads, auto_train=not args.no_auto_train)
    return 0
