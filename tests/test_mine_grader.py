"""Mining and the real grader agree on a genuine fix whose test file trips up grading by test ids.

The fix allows a timestamp of 0 (``if not ts`` rejected it). Its regression test is parametrized with
the clock (``[0, time.time()]``: the second id changes every run), and the test file it extends holds a
test that passes only after another one ran. Validation used to run the file once after the fix and
take the clock's id for a fixed test, and the grader, running the chosen ids alone, FAIL_TO_PASS first,
found no such id and broke the order-dependent test: "gold patch unresolved, unmodified start
unresolved", and a genuine fix was thrown away.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from envs.docker_backend import DockerBackend
from envs.mine import MineReport, mine
from envs.tasks import verify
from images.builder import BuildOptions, ImageBuilder
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import Store, TaskStatus
from tests.repos import commit, make_repo, python_project

BROKEN = '''\
def parse(ts):
    """Seconds since the epoch, from a deserialized field."""
    if not ts:
        raise ValueError("no timestamp")
    return int(ts)
'''
REGISTRY_TESTS = """\
from calc.stamp import parse

SEEN = []


def test_b_registers():
    SEEN.append("point")


def test_a_finds_what_the_other_registered():
    assert SEEN == ["point"]


def test_parses_seconds():
    assert parse("12") == 12
"""
CLOCK_TEST = """

import time

import pytest


@pytest.mark.parametrize("ts", [0, time.time()])
def test_timestamp(ts):
    assert parse(ts) == int(ts)
"""


@pytest.fixture(scope="module")
def mined(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MineReport, Store, str]]:
    root = tmp_path_factory.mktemp("mine-grader") / "stamps"
    # The salt keeps commit ids, hence image tags, apart from a parallel worker's.
    files = {**python_project(), "src/calc/stamp.py": BROKEN, "tests/test_stamp.py": REGISTRY_TESTS}
    files[".salt"] = uuid.uuid4().hex
    repo = make_repo(root, files)
    fix = commit(
        repo,
        {
            "src/calc/stamp.py": BROKEN.replace("if not ts:", "if ts is None:"),
            "tests/test_stamp.py": REGISTRY_TESTS + CLOCK_TEST,
        },
        "Allow a timestamp of 0 in deserialized fields",
    )
    store = Store(f"sqlite:///{root.parent / 'forager.db'}")
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    builder = ImageBuilder(docker_client, store, root.parent / "home", options)
    try:
        backend = DockerBackend(docker_client)
        report = mine(builder, backend, store, parse_source(str(root)), max_tasks=1, test_timeout=120)
        yield report, store, fix
    finally:
        for image in store.list_images():
            if image.docker_id:
                docker_client.images.remove(image.tag, force=True)
        store.close()


@pytest.mark.docker
def test_a_genuine_fix_whose_tests_trip_up_id_grading_becomes_a_task(
    mined: tuple[MineReport, Store, str], docker_client
) -> None:
    report, store, fix = mined
    assert report.skipped == []
    (task,) = report.tasks
    assert task.meta["commit"] == fix and task.status == TaskStatus.VERIFIED
    # The clock's id never counts: it is not the same in the two runs after the fix.
    assert task.fail_to_pass == ["tests/test_stamp.py::test_timestamp[0]"]
    # The order-dependent test passed in the file but not when the grader ran it alone: dropped.
    assert task.meta["dropped"] == ["tests/test_stamp.py::test_a_finds_what_the_other_registered"]
    assert task.pass_to_pass == [
        "tests/test_stamp.py::test_b_registers",
        "tests/test_stamp.py::test_parses_seconds",
    ]
    # The real grader, once more, in fresh environments.
    verification = verify(DockerBackend(docker_client), task, store.get_image(task.image_id), timeout=120)
    assert (verification.gold.status, verification.start.status) == ("resolved", "unresolved")
    assert verification.start.fail_to_pass == {"tests/test_stamp.py::test_timestamp[0]": "failed"}

