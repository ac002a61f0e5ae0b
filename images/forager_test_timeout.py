"""A pytest plugin that fails one test that runs too long, so that the rest of the suite still runs.

The baseline loads it into the image's own pytest (``-p forager_test_timeout`` with this file on
``PYTHONPATH``) without installing anything into the project's environment; it therefore imports
nothing but pytest and the standard library, and works with pytest 6 to 9.

``FORAGER_TEST_TIMEOUT`` (seconds) bounds each test's setup, call and teardown with ``SIGALRM``,
as pytest-timeout's signal method does: a test blocked in ``time.sleep``, a socket or a lock is
interrupted and reported failed. A project that uses pytest-timeout itself keeps it; the limit is
only handed to pytest-timeout when the project set none. Without ``SIGALRM`` (not on Linux) or
outside the main thread the plugin does nothing, and the run's own time limit still applies.

``FORAGER_TEST_BUDGET`` (seconds) is the run's time budget: once it is spent, the run stops after the
test that ends a file, as if interrupted, so that the report holds whole files only. Pytest still writes
its report, and prints the reason, which starts with :data:`BUDGET_SPENT`. Under pytest-xdist each
worker stops so (with ``--dist loadfile`` a file stays on one worker), but stopping one worker ends the
others wherever they are: ``FORAGER_COLLECTED`` names a file where the plugin writes how many tests each
file has (``{"tests/test_x.py": 3}``), so that a reader can tell the files the report has whole.
``FORAGER_ONLY_FILES`` names a file listing test files, one a line: the tests of other files are
deselected (the later runs of a baseline whose first run the budget cut short run the files it finished).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

ENV = "FORAGER_TEST_TIMEOUT"
BUDGET_ENV = "FORAGER_TEST_BUDGET"
BUDGET_SPENT = "forager: time budget spent"
COLLECTED_ENV = "FORAGER_COLLECTED"
ONLY_ENV = "FORAGER_ONLY_FILES"
STARTED_ENV = "FORAGER_TEST_STARTED"


def _started() -> float:
    """When the run started (``FORAGER_TEST_STARTED``, seconds since the epoch, set by the shell that
    starts pytest, so that xdist's workers count the time their start took), else when pytest loaded
    this plugin."""
    try:
        return float(os.environ[STARTED_ENV])
    except (KeyError, ValueError):
        return _LOADED


_LOADED = time.time()


class TestTimeout(BaseException):
    """Raised in the test that ran past the limit; a BaseException so ``except Exception`` in the
    test cannot swallow it."""

    __test__ = False  # not a test class, whatever pytest's python_classes say


def _limit(name: str = ENV) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "0")))
    except ValueError:
        return 0.0


def _file(item: pytest.Item) -> str:
    return str(getattr(item, "path", None) or item.fspath)  # pytest < 7 has only fspath


def _stop_if_budget_spent(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    budget = _limit(BUDGET_ENV)
    if not budget or nextitem is None or _file(nextitem) == _file(item):
        return
    if time.time() - _started() > budget:
        item.session.shouldstop = f"{BUDGET_SPENT} ({budget:g} s), stopping after {item.nodeid}"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    limit = _limit()
    if limit and config.pluginmanager.hasplugin("timeout") and not config.getoption("timeout", None):
        config.option.timeout = limit


@pytest.hookimpl(trylast=True)  # after -k, -m and the project's own hooks deselected what they do
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    only = os.environ.get(ONLY_ENV)
    if only:
        with open(only) as stream:
            keep = {line for line in stream.read().splitlines() if line}
        dropped = [item for item in items if item.nodeid.split("::", 1)[0] not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if item.nodeid.split("::", 1)[0] in keep]
    path = os.environ.get(COLLECTED_ENV)
    if not path:
        return
    counts: dict[str, int] = {}
    for item in items:
        file = item.nodeid.split("::", 1)[0]
        counts[file] = counts.get(file, 0) + 1
    # Every xdist worker collects the same tests: whichever writes last writes the same counts.
    with open(f"{path}.{os.getpid()}", "w") as stream:
        json.dump(counts, stream)
    os.replace(f"{path}.{os.getpid()}", path)


def _uses_own_timeout(item: pytest.Item) -> bool:
    return item.config.pluginmanager.hasplugin("timeout")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    limit = _limit()
    if not limit or _uses_own_timeout(item) or threading.current_thread() is not threading.main_thread():
        yield
        _stop_if_budget_spent(item, nextitem)
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
    _stop_if_budget_spent(item, nextitem)
