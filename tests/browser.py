"""Shared helpers of the browser tests: Debian's chromium driven headless by Playwright.

Chromium comes from the system (``make test`` installs Debian's ``chromium`` package when it
is missing); Playwright's own browser download is never used. Without chromium a browser test
fails and says how to get it (:func:`require_chromium`) -- it does not skip.
"""
from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Seconds to wait for a server to answer.
READY_TIMEOUT_S = 60


def require_chromium() -> None:
    """Fail (not skip) with the install hint when the system chromium is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium "
                    "for this test (or `apt-get install chromium` as root)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = READY_TIMEOUT_S, alive=lambda: True) -> None:
    """Poll ``url`` until it answers 200; ``alive()`` False (a crashed server) stops early."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline or not alive():
                raise
        time.sleep(0.2)


def launch(playwright, profile: Path, width: int = 1500, height: int = 1100):
    """A persistent headless chromium context on the system browser."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height})
