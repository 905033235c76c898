"""Example images for the demo: one scene rendered from each synthetic domain at start-up.

The built-in benchmark (docs/benchmark.md) renders a scene in about 0.1 s, so the app ships
no image files: it renders :data:`EXAMPLE_SEED` of every domain into a temporary folder.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from vtagml_core.data.synthetic.domains import list_domains
from vtagml_core.data.synthetic.render import render_scene

#: Scene seed of the examples (any fixed seed; 7 gives a varied scene in every domain).
EXAMPLE_SEED: int = 7
#: Example size (height, width): 4:3, like a photo, so the letterbox is visible in the demo.
EXAMPLE_SIZE: tuple[int, int] = (240, 320)
#: Sub-folder of the demo's work folder the app renders the examples into.
EXAMPLES_FOLDER: str = "examples"


def render_examples(folder: Path | None = None, seed: int = EXAMPLE_SEED,
                    size: tuple[int, int] = EXAMPLE_SIZE) -> list[Path]:
    """Render one scene per domain as ``<folder>/<domain>.png``; returns the paths.

    Without ``folder``, a temporary ``vtagml_examples_*`` folder that is removed at exit.
    """
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="vtagml_examples_"))
        atexit.register(shutil.rmtree, folder, True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for domain in list_domains():
        path = folder / f"{domain}.png"
        if not path.is_file():
            Image.fromarray(render_scene(domain, seed, size)["image"]).save(path)
        paths.append(path)
    return paths
