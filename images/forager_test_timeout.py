"""A pytest plugin that fails one test that runs too long, so that the rest of the suite still runs.

The baseline loads it into the image's own pytest (``-p forager_test_timeout`` with this file on
``PYTHONPATH``) without installing anything into the project's environment; it therefore imports
nothing but pytest and the standard library, and works with pytest 6 to 9.

``FORAGER_TEST_TIMEOUT`` (seconds) bounds each test's setup, call and teardown with ``SIGALRM``,
as pytest-timeout's signal method does: a test blocked in ``time.sleep``, a socket or a lock is
interrupted and reported failed. A project that uses pytest-timeout itself keeps it; the limit is
only handed to pytest-timeout when the project set none. Without ``SIGALRM`` (not on Linux) or
outside the main thread the plugin does nothing, and the run's own time limit still applies.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

ENV = "FORAGER_TEST_TIMEOUT"


class TestTimeout(BaseException):
    """Raised in the test that ran past the limit; a BaseException so ``except Exception`` in the
    test cannot swallow it."""

    __test__ = False  # not a test class, whatever pytest's python_classes say


def _limit() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV, "0")))
    except ValueError:
        return 0.0


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    limit = _limit()
    if limit and config.pluginmanager.hasplugin("timeout") and not config.getoption("timeout", None):
        config.option.timeout = limit


def _uses_own_timeout(item: pytest.Item) -> bool:
    return item.config.pluginmanager.hasplugin("timeout")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    limit = _limit()
    if not limit or _uses_own_timeout(item) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TestTimeout(f"{item.nodeid} ran longer than {limit:g} s ({ENV})")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
