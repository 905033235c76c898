"""Test-session settings: the tests never touch the user's run store.

The kit's run store defaults to ``~/.cache/vtagml/runs`` (:mod:`vtagml_core.experiments.runs`);
unless a test names its own (``VTAGML_RUNS`` in a subprocess's environment, ``store=`` in
Python), every run the suite trains lands in one temporary store of this session.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_SESSION_STORE = tempfile.mkdtemp(prefix="vtagml-test-store-")
os.environ["VTAGML_RUNS"] = _SESSION_STORE


@pytest.fixture(scope="session", autouse=True)
def _remove_session_store():
    yield
    shutil.rmtree(_SESSION_STORE, ignore_errors=True)
