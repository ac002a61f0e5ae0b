"""Grading: the SWE-bench status rules (pure), the test command, and real grades in Docker."""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from envs.docker_runtime import DockerRuntime, Limits
from envs.grading import (
    Grade,
    GradingError,
    TestSpec,
    classify,
    default_test_files,
    grade,
    pytest_base,
    pytest_command,
)
from images.base import BASE_IMAGE
from images.build_container import tar_directory
from images.proxy import NetworkSettings
from images.recipe import IMAGE_ENV, REPO_DIR
from tests.repos import commit, make_repo

TEST_COMMAND = "python -m pytest -p no:cacheprovider tests"

# -- pure -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f2p", "p2p", "status"),
    [
        ({"a": "passed", "b": "passed"}, {"c": "passed"}, "resolved"),
        ({"a": "passed", "b": "failed"}, {"c": "passed"}, "partial"),
        ({"a": "passed", "b": "missing"}, {}, "partial"),
        ({"a": "failed", "b": "error"}, {"c": "passed"}, "unresolved"),
        ({"a": "passed", "b": "passed"}, {"c": "failed"}, "unresolved"),
        ({"a": "passed", "b": "failed"}, {"c": "missing"}, "unresolved"),
        ({"a": "skipped"}, {"c": "passed"}, "unresolved"),
        ({"a": "passed"}, {"c": "skipped"}, "unresolved"),
        ({}, {"c": "passed"}, "resolved"),
        ({}, {"c": "error"}, "unresolved"),
        ({"a": "passed"}, {}, "resolved"),
    ],
    ids=[
        "all-pass",
        "some-f2p",
        "some-f2p-other-missing",
        "no-f2p",
        "p2p-broke",
        "p2p-missing",
        "f2p-skipped",
        "p2p-skipped",
        "no-f2p-tests",
        "no-f2p-tests-p2p-broke",
        "no-p2p-tests",
    ],
)
def test_classify_follows_swebench_full_partial_no(f2p: dict, p2p: dict, status: str) -> None:
    assert classify(f2p, p2p) == status


@pytest.mark.parametrize(
    ("command", "base"),
    [
        (TEST_COMMAND, "python -m pytest -p no:cacheprovider"),
        (
            "python -m pytest -p no:cacheprovider --rootdir=. tests src",
            "python -m pytest -p no:cacheprovider --rootdir=.",
        ),
        ("pytest tests/test_a.py -k 'not slow' -x tests/test_b.py", "pytest -k 'not slow' -x"),
        (
            "PYTHONPATH=src /venv/bin/pytest -o addopts= 'my tests'",
            "PYTHONPATH=src /venv/bin/pytest -o addopts=",
        ),
        ("python -m pytest", "python -m pytest"),
    ],
)
def test_pytest_base_keeps_options_and_drops_test_paths(command: str, base: str) -> None:
    assert pytest_base(command) == shlex.split(base)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("./runtests.py --verbosity 2", "does not run pytest"),
        ("cd src && python -m pytest", "shell operators"),
        ("cd src;python -m pytest", "shell operators"),
        ("python -m pytest tests > log", "shell operators"),
        ("python -m pytest 'unbalanced", "cannot be split"),
    ],
)
def test_pytest_base_refuses_what_it_cannot_run(command: str, message: str) -> None:
    with pytest.raises(GradingError, match=message):
        pytest_base(command)


def test_pytest_command_quotes_ids_and_asks_for_a_junit_report() -> None:
    command = pytest_command(TEST_COMMAND, ["tests/test_a.py::test_x[a b]", "tests/test_a.py::test_y['q']"])
    assert command.startswith("python -m pytest -p no:cacheprovider -o junit_family=xunit1 --junitxml=")
    assert command.endswith(" 'tests/test_a.py::test_x[a b]' 'tests/test_a.py::test_y['\"'\"'q'\"'\"']'")
    assert " tests " not in command and not command.endswith(" tests")


def test_default_test_files_are_test_modules_and_test_patch_files_not_doctest_modules() -> None:
    patch = "--- /dev/null\n+++ b/tests/data/input.txt\n@@ -0,0 +1 @@\n+data\n"
    files = default_test_files(
        ["tests/test_calc.py::test_add", "tests/test_calc.py::TestX::test_y[1]", "pkg/util_test.py::test_u"],
        ["src/calc/__init__.py::calc.add", "test/helpers.py::test_h", "conftest.py::test_c"],
        patch,
    )
    assert files == (
        "tests/test_calc.py",
        "pkg/util_test.py",
        "test/helpers.py",
        "conftest.py",
        "tests/data/input.txt",
    )


def test_spec_derives_test_files_takes_lists_and_refuses_nonsense() -> None:
    spec = TestSpec(TEST_COMMAND, ["tests/test_a.py::test_x"], [])  # type: ignore[arg-type]
    assert spec.fail_to_pass == ("tests/test_a.py::test_x",) and spec.test_files == ("tests/test_a.py",)
    explicit = TestSpec(TEST_COMMAND, ("tests/test_a.py::test_x",), (), test_files=("tests/conftest.py",))
    assert explicit.test_files == ("tests/conftest.py",)
    with pytest.raises(GradingError, match="nothing to run"):
        TestSpec(TEST_COMMAND, (), ())
    with pytest.raises(GradingError, match="does not run pytest"):
        TestSpec("tox -e py311", ("tests/test_a.py::test_x",), ())
    with pytest.raises(GradingError, match="test patch cannot be read"):
        TestSpec(TEST_COMMAND, ("t.py::t",), (), test_patch="--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n-a\n+b\n")


def test_grade_to_json_is_json() -> None:
    graded = Grade("partial", False, {"a": "passed", "b": "missing"}, {}, "git apply", None, 1, "log")
    data = json.loads(json.dumps(graded.to_json()))
    assert data == {
        "status": "partial",
        "resolved": False,
        "fail_to_pass": {"a": "passed", "b": "missing"},
        "pass_to_pass": {},
        "applied_with": "git apply",
        "infra_error": None,
        "exit_code": 1,
        "log_tail": "log",
    }


# -- in Docker --------------------------------------------------------------------------------------------

#: Of this test process alone: xdist workers and other test runs share the engine (and remove theirs).
IMAGE = f"forager-test/grading:{uuid.uuid4().hex[:8]}"

# The fixture repository's history: OLD, then START (the task's start state, with two bugs). START
# rewrites the docstring of `mul`, two lines above its bug: a patch written against OLD no longer
# applies as it is, but merges cleanly (3-way) or applies with fuzz (the docstring is its first
# context line).
OLD_CALC = '''\
"""Small arithmetic helpers."""


def add(a, b):
    return a + b


def mul(a, b):
    """The product of a and b."""
    product = a * b
    return product + 1


def div(a, b):
    """The true quotient of a and b."""
    quotient = a // b
    return quotient
'''
START_CALC = OLD_CALC.replace('"""The product of a and b."""', '"""Multiply a by b."""')
FIXED = {"return product + 1": "return product", "quotient = a // b": "quotient = a / b"}
TESTS = """\
from calc import add, div, mul


def test_add():
    assert add(2, 3) == 5


def test_mul():
    assert mul(2, 3) == 6


def test_div():
    assert div(7, 2) == 3.5
"""
INFRA_TESTS = """\
import os
import signal
import time


def test_sleeps():
    time.sleep(120)


def test_eats_memory():
    hog = bytearray(2 * 1024**3)
    assert hog


def test_kills_itself():
    os.kill(os.getpid(), signal.SIGKILL)
"""
F2P = ("tests/test_calc.py::test_mul", "tests/test_calc.py::test_div")
P2P = ("tests/test_calc.py::test_add",)
NEW_TEST_PATCH = """\
diff --git a/tests/test_new.py b/tests/test_new.py
new file mode 100644
--- /dev/null
+++ b/tests/test_new.py
@@ -0,0 +1,5 @@
+from calc import sub
+
+
+def test_sub():
+    assert sub(5, 3) == 2
"""


def fix(text: str, *bugs: str) -> str:
    for bug in bugs:
        text = text.replace(bug, FIXED[bug])
    return text


class Fixture:
    """The repository on the host, to write patches with git as a developer would."""

    def __init__(self, root: Path) -> None:
        self.repo = make_repo(root, {".gitignore": "__pycache__/\n", "calc.py": OLD_CALC}, "Old")
        self.old = self.repo.head.commit.hexsha
        commit(
            self.repo,
            {"calc.py": START_CALC, "tests/test_calc.py": TESTS, "tests/test_infra.py": INFRA_TESTS},
            "Start",
        )
        self.root = root

    def patch(self, files: dict[str, str], base: str = "HEAD") -> str:
        """The diff from ``base`` to ``files`` written over the start state (which is then restored)."""
        for path, text in files.items():
            (self.root / path).write_text(text)
        self.repo.git.add("--intent-to-add", "--all")
        try:
            return self.repo.git.diff(base, "--", *files) + "\n"
        finally:
            self.repo.git.reset("-q")
            self.repo.git.checkout("-q", "HEAD", "--", ".")
            self.repo.git.clean("-fdq")


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("grading") / "repo")


@pytest.fixture(scope="module")
def grading_image(docker_client: docker.DockerClient, fixture_repo: Fixture) -> Iterator[str]:
    """The base image with a venv holding pytest on PATH and the fixture repository at /repo."""
    network = NetworkSettings.from_environment()
    container = docker_client.containers.run(
        BASE_IMAGE,
        ["sleep", "infinity"],
        detach=True,
        network_mode="host",  # pip needs the index; episodes run with no network
        environment=IMAGE_ENV,
        **network.container_options(),
    )
    try:
        done = container.exec_run(
            ["sh", "-c", "python3 -m venv /venv && /venv/bin/pip install -q pytest"],
            environment=network.environment(),
        )
        assert done.exit_code == 0, done.output.decode(errors="replace")
        container.put_archive("/", tar_directory(fixture_repo.root, REPO_DIR.strip("/")))
        container.commit(*IMAGE.split(":"), conf={"WorkingDir": REPO_DIR})
    finally:
        container.remove(force=True)
    yield IMAGE
    docker_client.images.remove(IMAGE, force=True)


@pytest.fixture
def env(docker_client: docker.DockerClient, grading_image: str) -> Iterator[DockerRuntime]:
    runtime = DockerRuntime.start(docker_client, grading_image)
    yield runtime
    runtime.close()


def spec(**changes: object) -> TestSpec:
    fields: dict = {"test_command": TEST_COMMAND, "fail_to_pass": F2P, "pass_to_pass": P2P, **changes}
    return TestSpec(**fields)


@pytest.mark.docker
def test_gold_patch_resolves(env: DockerRuntime, fixture_repo: Fixture) -> None:
    gold = fixture_repo.patch({"calc.py": fix(START_CALC, *FIXED)})
    graded = grade(env, gold, spec())
    assert graded.status == "resolved" and graded.resolved, graded.log_tail
    assert graded.applied_with == "git apply" and graded.infra_error is None and graded.exit_code == 0
    assert graded.fail_to_pass == dict.fromkeys(F2P, "passed")
    assert graded.pass_to_pass == dict.fromkeys(P2P, "passed")
    assert "3 passed" in graded.log_tail
    assert json.loads(json.dumps(graded.to_json()))["status"] == "resolved"


@pytest.mark.docker
def test_empty_patch_grades_the_buggy_start_as_unresolved(env: DockerRuntime) -> None:
    graded = grade(env, "", spec())
    assert graded.status == "unresolved" and not graded.resolved
    assert graded.applied_with == "empty" and graded.exit_code == 1
    assert graded.fail_to_pass == dict.fromkeys(F2P, "failed")
    assert graded.pass_to_pass == dict.fromkeys(P2P, "passed")


@pytest.mark.docker
def test_a_patch_that_edits_the_tests_to_pass_is_still_unresolved(
    env: DockerRuntime, fixture_repo: Fixture
) -> None:
    cheat = fixture_repo.patch(
        {"tests/test_calc.py": TESTS.replace("== 6", "== 7").replace("== 3.5", "== 3")}
    )
    graded = grade(env, cheat, spec())
    assert graded.applied_with == "git apply", "the patch itself applies"
    assert graded.status == "unresolved" and graded.fail_to_pass == dict.fromkeys(F2P, "failed")
    assert env.read_file("tests/test_calc.py").decode() == TESTS, "the test file is back to the start's"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("keep_index", "applied_with"), [(True, "git apply --3way"), (False, "patch --fuzz")]
)
def test_a_patch_written_against_older_code_applies_by_fallback(
    env: DockerRuntime, fixture_repo: Fixture, keep_index: bool, applied_with: str
) -> None:
    stale = fixture_repo.patch({"calc.py": fix(OLD_CALC, *FIXED)}, base=fixture_repo.old)
    assert '"""The product of a and b."""' in stale, "the patch has the old context"
    if not keep_index:
        # Without blob ids git cannot merge three ways: only fuzz is left.
        stale = "".join(line for line in stale.splitlines(keepends=True) if not line.startswith("index "))
    graded = grade(env, stale, spec())
    assert graded.applied_with == applied_with, graded.log_tail
    assert graded.status == "resolved", graded.log_tail
    calc = env.read_file("calc.py").decode()
    assert calc == fix(START_CALC, *FIXED), "the start's docstring is kept, both bugs fixed"


@pytest.mark.docker
def test_a_patch_that_applies_nowhere_is_unresolved_and_leaves_no_conflict(
    env: DockerRuntime, fixture_repo: Fixture
) -> None:
    # It rewrites the very line the start changed: a 3-way merge conflicts, and fuzz cannot help.
    clashing = fixture_repo.patch(
        {"calc.py": OLD_CALC.replace('"""The product of a and b."""', '"""a times b."""')},
        base=fixture_repo.old,
    )
    graded = grade(env, clashing, spec())
    assert graded.status == "unresolved" and graded.applied_with is None
    assert graded.fail_to_pass == {} and graded.pass_to_pass == {} and graded.exit_code is None
    assert "--3way" in graded.log_tail and "patch -p1" in graded.log_tail
    assert env.run("git status --porcelain").output == "", "the failed 3-way merge was undone"
    assert env.read_file("calc.py").decode() == START_CALC


@pytest.mark.docker
def test_a_partial_fix_is_partial(env: DockerRuntime, fixture_repo: Fixture) -> None:
    half = fixture_repo.patch({"calc.py": fix(START_CALC, "return product + 1")})
    graded = grade(env, half, spec())
    assert graded.status == "partial" and not graded.resolved
    assert graded.fail_to_pass == {F2P[0]: "passed", F2P[1]: "failed"}


@pytest.mark.docker
def test_a_test_id_that_is_not_found_is_missing_and_the_others_still_run(
    env: DockerRuntime, fixture_repo: Fixture
) -> None:
    gold = fixture_repo.patch({"calc.py": fix(START_CALC, *FIXED)})
    graded = grade(env, gold, spec(fail_to_pass=(*F2P, "tests/test_calc.py::test_gone")))
    assert graded.fail_to_pass == {**dict.fromkeys(F2P, "passed"), "tests/test_calc.py::test_gone": "missing"}
    assert graded.pass_to_pass == dict.fromkeys(P2P, "passed")
    assert graded.status == "partial"


@pytest.mark.docker
def test_a_test_patch_adds_a_test_file_that_runs(env: DockerRuntime, fixture_repo: Fixture) -> None:
    gold = fixture_repo.patch({"calc.py": START_CALC + "\n\ndef sub(a, b):\n    return a - b\n"})
    issue = spec(fail_to_pass=("tests/test_new.py::test_sub",), test_patch=NEW_TEST_PATCH)
    assert issue.test_files == ("tests/test_new.py", "tests/test_calc.py")
    graded = grade(env, gold, issue)
    assert graded.status == "resolved", graded.log_tail
    assert graded.fail_to_pass == {"tests/test_new.py::test_sub": "passed"}


@pytest.mark.docker
def test_a_test_file_the_patch_adds_in_place_of_the_test_patchs_is_replaced(
    env: DockerRuntime, fixture_repo: Fixture
) -> None:
    cheat = fixture_repo.patch({"tests/test_new.py": "def test_sub():\n    pass\n"})
    graded = grade(env, cheat, spec(fail_to_pass=("tests/test_new.py::test_sub",), test_patch=NEW_TEST_PATCH))
    assert graded.applied_with == "git apply"
    assert graded.status == "unresolved", graded.log_tail
    # `from calc import sub` fails to import: the other tests still get their outcomes.
    assert graded.fail_to_pass == {"tests/test_new.py::test_sub": "missing"}
    assert graded.pass_to_pass == dict.fromkeys(P2P, "passed")


@pytest.mark.docker
def test_a_test_patch_that_does_not_apply_is_an_error(env: DockerRuntime) -> None:
    broken = NEW_TEST_PATCH.replace("new file mode 100644\n--- /dev/null", "--- a/tests/test_new.py").replace(
        "@@ -0,0 +1,5 @@", "@@ -1,1 +1,5 @@\n-nothing here"
    )
    graded = grade(env, "", spec(test_patch=broken))
    assert graded.status == "error" and graded.infra_error == "test_setup" and not graded.resolved
    assert "apply the test patch" in graded.log_tail


@pytest.mark.docker
def test_a_test_run_past_its_timeout_is_an_infrastructure_error(env: DockerRuntime) -> None:
    graded = grade(env, "", spec(pass_to_pass=("tests/test_infra.py::test_sleeps",)), timeout=3)
    assert graded.status == "error" and graded.infra_error == "timeout" and not graded.resolved
    assert graded.exit_code is None
    assert "time.sleep" not in env.run("ps -eo args").output


@pytest.mark.docker
def test_a_killed_test_run_is_an_infrastructure_error(env: DockerRuntime) -> None:
    graded = grade(env, "", spec(pass_to_pass=("tests/test_infra.py::test_kills_itself",)))
    assert graded.status == "error" and graded.infra_error == "killed" and graded.exit_code == 137


@pytest.mark.docker
def test_running_out_of_memory_is_an_infrastructure_error(docker_client, grading_image: str) -> None:
    with DockerRuntime.start(docker_client, grading_image, limits=Limits(memory="256m")) as small:
        graded = grade(small, "", spec(pass_to_pass=("tests/test_infra.py::test_eats_memory",)))
    assert graded.status == "error" and graded.infra_error == "oom", graded.log_tail


@pytest.mark.docker
def test_a_killed_container_gives_a_grade_not_an_exception(env: DockerRuntime, docker_client) -> None:
    # Killed and gone before grading starts: killed mid-run, the engine may still report the container
    # running when its shell's stream ends, and the runtime then raises its internal error instead of
    # EnvironmentDied (a race in DockerRuntime._died, not in grading).
    container = docker_client.containers.get(env.container.id)
    container.kill()
    container.wait(timeout=30)
    graded = grade(env, "", spec())
    assert graded.status == "error" and graded.infra_error == "environment_died" and not graded.resolved
    assert graded.fail_to_pass == {} and graded.applied_with is None
    assert "the environment died" in graded.log_tail and "stopped" in graded.log_tail
