"""The suite runs on every core (pytest-xdist, ``-n auto`` in pyproject.toml): most tests start
caviar in a subprocess and spend their time importing and training on one core.

A test that measures wall time against a budget is marked ``exclusive`` and runs with nothing
beside it: every test holds a shared lock on one file while it runs (its fixtures' setup and
teardown included), an exclusive test holds it alone. A second file is a turnstile, so that
tests arriving while an exclusive one waits queue behind it instead of starving it. Without
xdist nothing is locked.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "exclusive: runs with no other test beside it (it measures wall time)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    base = os.path.join(tempfile.gettempdir(), f"caviar-tests-{run}")
    exclusive = item.get_closest_marker("exclusive") is not None
    with open(base + ".turnstile", "a") as turnstile, open(base + ".lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def kernels_at_every_size(monkeypatch):
    """caviar's compiled kernels run on arrays of any size in this test (``kernels.MIN_SIZE``
    and ``kernels.LOGITS_MIN_SIZE`` at 1), so that small test arrays reach them."""
    from caviar import kernels

    monkeypatch.setattr(kernels, "MIN_SIZE", 1)
    monkeypatch.setattr(kernels, "LOGITS_MIN_SIZE", 1)
