"""The run-time policy (vtagml_core.runtime): $VTAGML_THREADS sets torch's CPU threads."""
from __future__ import annotations

import pytest
import torch

from vtagml_core.runtime import THREADS_ENV, configure_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_variable_sets_the_threads_and_an_argument_wins(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    assert configure_threads(2) == 2 and torch.get_num_threads() == 2


def test_without_the_variable_torch_keeps_its_default(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch.set_num_threads(1)
    assert configure_threads() == 1  # unchanged: nothing asked for another count


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_count_says_where_it_came_from(monkeypatch, bad):
    monkeypatch.setenv(THREADS_ENV, bad)
    with pytest.raises(ValueError, match=r"\$VTAGML_THREADS"):
        configure_threads()
