"""Static images next to interactive plotly figures in notebook outputs (issue 18).

A plotly figure in a notebook output is, by default, only plotly JSON
(``application/vnd.plotly.v1+json``): JupyterLab draws it, but ``jupyter nbconvert --to html``,
GitHub's notebook viewer and a markdown report show nothing, since none of them runs plotly.js
on saved outputs. The renderer registered here, :data:`RENDERER_NAME`, puts **both** into every
figure's output:

* ``application/vnd.plotly.v1+json``: the interactive figure (JupyterLab, the runner's HTML
  report);
* ``image/png``: the same figure drawn by kaleido in a headless Chromium, which nbconvert, GitHub
  and ``report.md`` show.

Use it where a notebook is executed without a live frontend (papermill, nbval, the runner)::

    from vtagml_core.viz.static import use_static_renderer
    use_static_renderer()          # plotly.io.renderers.default = "vtagml_static"

kaleido (>= 1.0) drives a Chromium it finds on the ``PATH``, or the one ``$BROWSER_PATH`` names;
:func:`ensure_browser_path` points it at Debian's ``/usr/bin/chromium`` when nothing else is set.
One browser process is started on the first image and reused (about 0.2 s per figure after a
start of about 2 s); it is stopped when the Python process exits. Where no image can be made (no
Chromium, no kaleido) the output keeps its interactive part, and one warning says what to
install.
"""
from __future__ import annotations

import atexit
import base64
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from plotly.io._base_renderers import PlotlyRenderer

#: Name of the renderer in :data:`plotly.io.renderers`.
RENDERER_NAME: str = "vtagml_static"
#: Format of the static image (PNG: shown by nbconvert, GitHub and markdown alike).
IMAGE_FORMAT: str = "png"
#: Device pixels per figure pixel of the image (1: the figure's own size).
IMAGE_SCALE: float = 1.0
#: Mime type of the plotly JSON part.
PLOTLY_MIME: str = "application/vnd.plotly.v1+json"
#: Environment variable through which kaleido's browser driver (choreographer) finds Chromium.
BROWSER_ENV: str = "BROWSER_PATH"
#: Browsers tried, in order, when neither ``$BROWSER_PATH`` nor the ``PATH`` names one.
BROWSER_CANDIDATES: tuple[str, ...] = ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                                       "/usr/bin/google-chrome")
#: Executable names kaleido looks for on the ``PATH``.
BROWSER_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "chrome")
#: What to do when no image can be made.
INSTALL_HINT: str = ("install kaleido (pip install -e .) and Chromium (apt-get install chromium), or set "
                     f"${BROWSER_ENV} to a Chrome or Chromium executable")

_state: dict[str, Any] = {"server": False, "warned": False}


def ensure_browser_path() -> str | None:
    """The browser kaleido will use: ``$BROWSER_PATH``, else one on the ``PATH``, else the first
    of :data:`BROWSER_CANDIDATES` that exists (then exported as ``$BROWSER_PATH``); None if none."""
    if os.environ.get(BROWSER_ENV):
        return os.environ[BROWSER_ENV]
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    for candidate in BROWSER_CANDIDATES:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            os.environ[BROWSER_ENV] = candidate
            return candidate
    return None


def _start_server() -> None:
    """Start kaleido's persistent browser once per process (stopped at exit)."""
    if _state["server"]:
        return
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)
    _state["server"] = True


def figure_image(fig: Any, fmt: str = IMAGE_FORMAT, scale: float = IMAGE_SCALE) -> bytes | None:
    """The figure (a ``go.Figure`` or its dict) as image bytes, or None (with one warning naming
    what to install) when no image can be made here."""
    import plotly.io as pio

    try:
        if ensure_browser_path() is None:
            raise RuntimeError("no Chrome or Chromium found")
        _start_server()
        with warnings.catch_warnings():
            # plotly passes its export options even to a running server, which ignores them.
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            return pio.to_image(fig, format=fmt, scale=scale)
    except Exception as err:  # noqa: BLE001 -- a display hook must never break the cell it draws
        if not _state["warned"]:
            warnings.warn(f"static figure images are off ({type(err).__name__}: {err}); {INSTALL_HINT}",
                          RuntimeWarning, stacklevel=2)
            _state["warned"] = True
        return None


class StaticAndInteractiveRenderer(PlotlyRenderer):
    """plotly's mimetype renderer plus a static image of the same figure (module docstring)."""

    def __init__(self, fmt: str = IMAGE_FORMAT, scale: float = IMAGE_SCALE, config: dict | None = None):
        super().__init__(config=config)
        self.fmt, self.scale = fmt, scale

    def to_mimebundle(self, fig_dict: dict) -> dict[str, Any]:
        bundle = super().to_mimebundle(fig_dict)
        image = figure_image(bundle[PLOTLY_MIME], self.fmt, self.scale)
        if image is not None:
            bundle[f"image/{self.fmt}"] = base64.b64encode(image).decode("ascii")
        return bundle


def use_static_renderer(fmt: str = IMAGE_FORMAT, scale: float = IMAGE_SCALE) -> str:
    """Register :class:`StaticAndInteractiveRenderer` as :data:`RENDERER_NAME` and make it
    plotly's default renderer; returns its name."""
    import plotly.io as pio

    pio.renderers[RENDERER_NAME] = StaticAndInteractiveRenderer(fmt, scale)
    pio.renderers.default = RENDERER_NAME
    return RENDERER_NAME


__all__ = ["BROWSER_CANDIDATES", "IMAGE_FORMAT", "IMAGE_SCALE", "RENDERER_NAME", "StaticAndInteractiveRenderer",
           "ensure_browser_path", "figure_image", "use_static_renderer"]
