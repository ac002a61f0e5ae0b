"""Mining and the real grader agree on a genuine fix whose test file trips up grading by test ids.

The fix allows a timestamp of 0 (``if not ts`` rejected it). Its regression test is parametrized with
the clock (``[0, time.time()]``: the second id changes every run), and the test file it extends holds a
test that passes only after another one ran. Validation used to run the file once after the fix and
take the clock's id for a fixed test, and the grader, running the chosen ids alone, FAIL_TO_PASS first,
found no such id and broke the order-dependent test: "gold patch unresolved, unmodified start
unresolved", and a genuine fix was thrown away.

A later fix lands its regression test in the commit after it: the two make one task (a pair) whose
test stays out of the start state, and the two parents share one install (the second is a layer).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import git
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
NEGATIVE_TEST = """\
import pytest

from calc.stamp import parse


def test_negative():
    with pytest.raises(ValueError):
        parse(-1)
"""
CLOCK_TEST = """

import time

import pytest


@pytest.mark.parametrize("ts", [0, time.time()])
def test_timestamp(ts):
    assert parse(ts) == int(ts)
"""


@dataclass(frozen=True)
class Mined:
    report: MineReport
    store: Store
    fix: str
    """The fix whose test file trips up grading by ids."""
    pair: tuple[str, str]
    """A later fix and the commit after it that brings its test."""
    history: git.Repo


@pytest.fixture(scope="module")
def mined(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mined]:
    root = tmp_path_factory.mktemp("mine-grader") / "stamps"
    # The salt keeps commit ids, hence image tags, apart from a parallel worker's.
    files = {**python_project(), "src/calc/stamp.py": BROKEN, "tests/test_stamp.py": REGISTRY_TESTS}
    files[".salt"] = uuid.uuid4().hex
    repo = make_repo(root, files)
    fixed = BROKEN.replace("if not ts:", "if ts is None:")
    fix = commit(
        repo,
        {"src/calc/stamp.py": fixed, "tests/test_stamp.py": REGISTRY_TESTS + CLOCK_TEST},
        "Allow a timestamp of 0 in deserialized fields",
    )
    # A fix whose regression test lands in the next commit: one candidate (a pair) with the fix's message.
    rejected = "    if int(ts) < 0:\n        raise ValueError(ts)\n    return int(ts)"
    negative = fixed.replace("    return int(ts)", rejected)
    pair = (
        commit(repo, {"src/calc/stamp.py": negative}, "Reject negative timestamps"),
        commit(repo, {"tests/test_stamp_negative.py": NEGATIVE_TEST}, "Test negative timestamps"),
    )
    store = Store(f"sqlite:///{root.parent / 'forager.db'}")
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    builder = ImageBuilder(docker_client, store, root.parent / "home", options)
    try:
        backend = DockerBackend(docker_client)
        report = mine(builder, backend, store, parse_source(str(root)), max_tasks=2, test_timeout=120)
        yield Mined(report, store, fix, pair, repo)
    finally:
        for image in store.list_images():
            if image.docker_id:
                docker_client.images.remove(image.tag, force=True)
        store.close()


@pytest.mark.docker
def test_a_genuine_fix_whose_tests_trip_up_id_grading_becomes_a_task(mined: Mined, docker_client) -> None:
    report, store = mined.report, mined.store
    assert report.skipped == []
    task = store.get_task(f"stamps.{mined.fix[:12]}")
    assert task.meta["commit"] == mined.fix and task.status == TaskStatus.VERIFIED
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



@pytest.mark.docker
def test_a_fix_and_its_later_test_become_one_task_whose_test_stays_hidden(
    mined: Mined, docker_client
) -> None:
    fix, test = mined.pair
    assert mined.report.made == [f"stamps.{test[:12]}", f"stamps.{mined.fix[:12]}"]
    # Two parents whose installs are planned alike: one install, one layer.
    assert (mined.report.built, mined.report.layered, mined.report.builds_per_task) == (1, 1, 0.5)
    task = mined.store.get_task(f"stamps.{test[:12]}")
    assert task.status == TaskStatus.VERIFIED
    assert (task.meta["shape"], task.meta["commits"]) == ("pair", [fix, test])
    assert task.problem_statement == "Reject negative timestamps"
    assert task.fail_to_pass == ["tests/test_stamp_negative.py::test_negative"]
    image = mined.store.get_image(task.image_id)
    assert image.repository.commit == mined.fix, "the start is the fix's parent"
    inside = docker_client.containers.run(
        image.tag,
        ["sh", "-c", "git log --all --format=%H; test -e tests/test_stamp_negative.py || echo withheld"],
        remove=True,
        network_mode="none",
    ).decode().split()
    assert inside == [*(c.hexsha for c in mined.history.iter_commits(mined.fix)), "withheld"]
