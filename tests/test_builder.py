"""Real image builds of generated fixture projects, one per behaviour and per failure class."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from docker.errors import APIError

from envs.docker_runtime import DockerRuntime
from images.base import MINBASE_IMAGE
from images.build_result import BuildCancelled
from images.builder import BuildOptions, ImageBuilder
from images.engine import BUILD_CONTAINER_PREFIX, OWNER_LABEL, owner_labels
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import CALC_TESTS, commit, make_repo, python_project, write

pytestmark = pytest.mark.docker


def _build_containers(client, *, ours: bool = False) -> list:
    """Build containers on the engine; ``ours``: only this process's (other runs share the engine)."""
    filters = {"label": "=".join(next(iter(owner_labels().items())))} if ours else {}
    return [
        c
        for c in client.containers.list(all=True, filters=filters, ignore_removed=True)
        if c.name.startswith(BUILD_CONTAINER_PREFIX)
    ]


def run_in(client, tag: str, script: str) -> str:
    return client.containers.run(tag, ["sh", "-c", script], remove=True, network_mode="none").decode()


def test_ready_image_with_baseline_recipe_and_sanitized_history(
    builder: ImageBuilder, docker_client, tmp_path
):
    repo = make_repo(tmp_path / "calc", python_project())
    old = repo.head.commit.hexsha
    repo.create_tag("v0.1")
    future = commit(repo, {"src/calc/future.py": "SECRET = 1\n"}, "The future")
    repo.git.branch("feature", future)

    result = builder.build(parse_source(f"{tmp_path}/calc@{old}"))

    assert result.status == ImageStatus.READY, result.reason
    assert (result.commit, result.tests_passed, result.tests_total) == (old, 4, 5)
    assert result.tag.startswith(f"forager/calc:{old[:12]}-")
    record = builder.store.get_image(result.tag)
    assert record.baseline["tests/test_calc.py::test_add_commutes[2--2]"] == "passed"
    assert record.baseline["tests/test_calc.py::test_skipped"] == "skipped"
    assert record.test_command == "python -m pytest -p no:cacheprovider tests"
    assert any("-e '.[test]'" in step["run"] for step in record.recipe["steps"])

    config = docker_client.images.get(result.tag).attrs["Config"]
    assert config["Labels"]["forager.commit"] == old
    assert config["Labels"]["forager.test-command"] == record.test_command
    assert (config["WorkingDir"], config["Cmd"], config["Volumes"]) == ("/repo", ["bash"], None)
    assert "VIRTUAL_ENV=/venv" in config["Env"] and not any(
        "PIP_CERT" in e or "PROXY" in e for e in config["Env"]
    )
    artifacts = tmp_path / "home" / "images" / result.tag.removeprefix("forager/").replace(":", "/")
    assert "uv pip install -e '.[test]'" in (artifacts / "Dockerfile").read_text()
    assert json.loads((artifacts / "baseline.json").read_text())["outcomes"] == record.baseline

    def inside(script: str) -> str:
        return run_in(docker_client, result.tag, script)

    assert inside("git log --all --format=%H").split() == [old], "only the commit and its ancestors remain"
    assert inside("git for-each-ref --format='%(refname)'").split() == ["refs/heads/main"]
    assert inside("git remote; git reflog") == ""
    assert "fatal" in inside(f"git cat-file -t {future} 2>&1 || true"), "the future commit's objects are gone"
    assert inside("git status --porcelain") == "", "installing left the working tree dirty"
    assert inside("ls -A /root/.cache") == "", "the package cache was baked into the image"

    again = builder.build(parse_source(f"{tmp_path}/calc@{old}"))
    assert again.cached and again.tag == result.tag


def test_missing_test_dependency_is_repaired(builder: ImageBuilder, tmp_path):
    tests = "import yaml\n\n\ndef test_yaml():\n    assert yaml.safe_load('a: 1') == {'a': 1}\n"
    write(tmp_path / "proj", python_project(tests=tests))
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert result.status == ImageStatus.READY, result.reason
    steps = builder.store.get_image(result.tag).recipe["steps"]
    assert any(step["run"] == "uv pip install PyYAML" for step in steps)
    # A folder becomes a one-commit repository checked out on a branch: sanitizing must keep it.
    history = run_in(builder.client, result.tag, "git log --format=%H; git status --porcelain; ls -A /tmp")
    assert history.split() == [result.commit]


def test_a_released_copy_installed_over_the_project_is_replaced_by_the_checkout(
    builder: ImageBuilder, tmp_path
):
    # As jinja2's pinned requirements/dev.txt does: a requirement reinstalls the project from elsewhere.
    released = {
        f"released/{path}": text for path, text in python_project().items() if path != "tests/test_calc.py"
    }
    files = {**python_project(), **released, "requirements-dev.txt": "./released\n"}
    write(tmp_path / "proj", files)
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert result.status == ImageStatus.READY, result.reason
    steps = builder.store.get_image(result.tag).recipe["steps"]
    assert steps[-1]["run"] == "uv pip install --no-deps -e '.[test]'"
    imported = run_in(builder.client, result.tag, "python -c 'import calc; print(calc.__file__)'")
    assert imported.strip() == "/repo/src/calc/__init__.py", "tests must import the checkout"


def test_requirement_files_installing_the_project_editable_follow_when_editable_builds_fail(
    builder: ImageBuilder, tmp_path
):
    # As yarl at a 2020 commit: setuptools of its date cannot build editable (PEP 660 came in 64), and
    # requirements/ci.txt installs "-e ." and includes test.txt, which does too.
    pyproject = python_project()["pyproject.toml"].replace('"setuptools>=61"', '"setuptools>=61,<64"')
    files = {
        **python_project(),
        "pyproject.toml": pyproject,
        "requirements/ci.txt": "-r test.txt\n-e .\n",
        "requirements/test.txt": "-e .\npytest\n",
    }
    result = builder.build(parse_source(str(write(tmp_path / "proj", files))))
    assert result.status == ImageStatus.READY, result.reason
    runs = [step["run"] for step in builder.store.get_image(result.tag).recipe["steps"]]
    assert any(run.startswith("rm -rf requirements.forager-not-editable && cp -r ") for run in runs)
    left = run_in(builder.client, result.tag, "ls; git status --porcelain")
    assert "forager-not-editable" not in left and "requirements" in left


def test_unittest_suite_in_a_flat_layout_with_unusual_file_names(builder: ImageBuilder, tmp_path):
    write(
        tmp_path / "flat",
        {
            "setup.py": "from setuptools import setup\n\nsetup(name='flat', py_modules=['flat'])\n",
            "flat.py": "def double(x):\n    return 2 * x\n",
            # pytest's default pattern (test_*.py) misses this file: the builder names it explicitly.
            "tests/checks.py": "import unittest\nimport flat\n\n\nclass T(unittest.TestCase):\n"
            "    def test_double(self):\n        self.assertEqual(flat.double(2), 4)\n",
        },
    )
    result = builder.build(parse_source(str(tmp_path / "flat")))
    assert result.status == ImageStatus.READY, result.reason
    record = builder.store.get_image(result.tag)
    assert record.baseline == {"tests/checks.py::T::test_double": "passed"}
    assert record.test_command.endswith(" tests/checks.py")


FAILING_TESTS = "def test_one():\n    assert False\n\n\ndef test_two():\n    assert 1 == 2\n"
SLOW_TESTS = "import time\n\n\ndef test_slow():\n    time.sleep(600)\n"
BROKEN_IMPORT = "import forager_no_such_module_anywhere\n\n\ndef test_x():\n    pass\n"


@pytest.mark.parametrize(
    ("files", "failure_class"),
    [
        ({"README.md": "# notes\n", "run.sh": "echo hi\n"}, "not_python"),
        (
            {**python_project(), "setup.py": "raise SystemExit('this project cannot be installed')\n"},
            "install_failed",
        ),
        ({k: v for k, v in python_project().items() if not k.startswith("tests/")}, "no_tests"),
        (python_project(tests=BROKEN_IMPORT), "collection_error"),
        (python_project(tests=FAILING_TESTS), "tests_failing"),
        (python_project(tests=SLOW_TESTS), "timeout"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_failure_classes(builder: ImageBuilder, tmp_path, files: dict[str, str], failure_class: str):
    if failure_class == "timeout":
        builder.options = BuildOptions(network=builder.options.network, test_timeout=5, timeout=600)
    write(tmp_path / "proj", files)
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert (result.status, result.failure_class) == (ImageStatus.FAILED, failure_class), result.reason
    (record,) = builder.store.list_images()
    assert record.status == ImageStatus.FAILED and record.failure_class == failure_class
    assert record.log_tail and Path(record.log_path).is_file()


def test_clone_failure_is_recorded(builder: ImageBuilder, tmp_path):
    result = builder.build(parse_source(f"file://{tmp_path}/nowhere"))
    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "clone_failed")
    assert "fatal:" in result.reason
    assert builder.store.list_images()[0].failure_class == "clone_failed"


def test_a_missing_base_image_is_a_recorded_failure_not_a_traceback(builder: ImageBuilder, tmp_path):
    missing = f"forager/no-such-base-{uuid.uuid4().hex[:8]}:1"
    builder.options = BuildOptions(network=builder.options.network, base_image=missing)
    write(tmp_path / "proj", python_project())
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "docker_error")
    assert f"base image {missing} is missing" in result.reason
    assert builder.store.list_images()[0].failure_class == "docker_error"


def test_engine_failure_mid_build_is_a_docker_error(builder: ImageBuilder, docker_client, tmp_path):
    slow_setup = "import time\ntime.sleep(120)\nfrom setuptools import setup\nsetup()\n"
    write(tmp_path / "proj", {**python_project(), "setup.py": slow_setup})
    killer = threading.Thread(target=_kill_build_container, args=(docker_client, "proj"))
    killer.start()
    result = builder.build(parse_source(str(tmp_path / "proj")))
    killer.join()
    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "docker_error"), result.reason


def test_an_engine_error_after_the_base_is_chosen_is_recorded_on_that_base(builder: ImageBuilder, tmp_path):
    # The engine refuses the build container: it cannot mount a CA bundle that is not there.
    network = NetworkSettings(ca_bundle=tmp_path / "gone.pem")
    builder.options = BuildOptions(network=network, python="3.13")
    write(tmp_path / "proj", python_project())
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "docker_error"), result.reason
    assert builder.store.list_images()[0].base_image == "forager/base:trixie"


def test_cancel_leaves_no_container_and_no_record(builder: ImageBuilder, docker_client, tmp_path):
    slow_setup = "import time\ntime.sleep(120)\nfrom setuptools import setup\nsetup()\n"
    write(tmp_path / "proj", {**python_project(), "setup.py": slow_setup})
    cancel = threading.Thread(
        target=lambda: (_wait_for_build_container(docker_client, "proj"), builder.kill_all())
    )
    cancel.start()
    with pytest.raises(BuildCancelled):
        builder.build(parse_source(str(tmp_path / "proj")))
    cancel.join()
    assert builder.store.list_images() == []
    assert not [c for c in _build_containers(docker_client, ours=True) if "-proj-" in c.name]


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_the_cli_leaves_no_container_and_no_record(docker_client, tmp_path, signal_number):
    slow_setup = "import time\ntime.sleep(120)\nfrom setuptools import setup\nsetup()\n"
    write(tmp_path / "slowproj", {**python_project(), "setup.py": slow_setup})
    command = [sys.executable, "-m", "forager", "--home", str(tmp_path / "home"), "images", "build"]
    # Started as a shell without job control starts `forager ... &`: ignoring SIGINT, which the CLI undoes.
    process = subprocess.Popen(
        [*command, str(tmp_path / "slowproj")],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        _wait_for_build_container(docker_client, "slowproj", process.pid)
        process.send_signal(signal_number)
        assert process.wait(timeout=60) != 0
    finally:
        process.kill()
    assert "Traceback" not in process.stderr.read()
    assert not [c for c in _build_containers(docker_client) if _made_by(c, process.pid)]
    listed = subprocess.run([*command[:-2], "images", "list", "--json"], capture_output=True, text=True)
    assert json.loads(listed.stdout) == []


def _made_by(container, pid: int) -> bool:
    return (container.labels or {}).get(OWNER_LABEL, "").startswith(f"{socket.gethostname()}:{pid}:")


def _wait_for_build_container(client, name: str, pid: int | None = None):
    """The build container of ``name`` that process ``pid`` (this one by default) made, once its (slow)
    install step runs: a kill then lands mid-build. Other tests build projects of the same name.

    Getting there takes seconds on an idle machine and minutes on a loaded one (parallel test workers).
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        named = {"name": f"{BUILD_CONTAINER_PREFIX}{name}-"}
        for container in client.containers.list(filters=named, ignore_removed=True):
            if not _made_by(container, os.getpid() if pid is None else pid):
                continue
            try:
                processes = container.top(ps_args="-eo pid,args")["Processes"] or []
            except APIError:  # it stopped since the listing
                continue
            if any("uv pip install" in " ".join(process) for process in processes):
                return container
        time.sleep(0.2)
    raise AssertionError("the build container never started its install step")


def _kill_build_container(client, name: str) -> None:
    _wait_for_build_container(client, name).remove(force=True)


def test_tests_that_collect_run_when_one_file_cannot(builder: ImageBuilder, tmp_path):
    write(tmp_path / "proj", {**python_project(), "tests/test_broken.py": BROKEN_IMPORT})
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert result.status == ImageStatus.READY, result.reason
    assert result.tests_passed == 4
    assert builder.store.get_image(result.tag).test_command.endswith(" --continue-on-collection-errors")


#: Of this test process alone: xdist workers and other test runs share the engine (and remove theirs).
FOREIGN_BASE = f"forager-test/foreign-base:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def foreign_base(docker_client):
    """A base that is not Forager's: Debian with Python and venv only (no git, uv, procps, patch)."""
    container = docker_client.containers.run(
        MINBASE_IMAGE,
        [
            "sh",
            "-c",
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv",
        ],
        detach=True,
        network_mode="host",
    )
    try:
        assert container.wait(timeout=300)["StatusCode"] == 0, container.logs()[-500:]
        container.commit(*FOREIGN_BASE.split(":"), changes=['CMD ["bash"]'])
    finally:
        container.remove(force=True)
    yield FOREIGN_BASE
    docker_client.images.remove(FOREIGN_BASE, force=True)


def test_a_foreign_base_gets_the_tools_it_lacks(builder: ImageBuilder, docker_client, foreign_base, tmp_path):
    builder.options = replace(builder.options, base_image=foreign_base)
    write(tmp_path / "proj", python_project())
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert result.status == ImageStatus.READY, result.reason
    whys = [step["why"] for step in builder.store.get_image(result.tag).recipe["steps"]]
    assert whys[:3] == [
        "the base image lacks git, pgrep, patch",
        "a virtual environment of its own for the project",
        "the base image has no uv",
    ]
    with DockerRuntime.start(docker_client, result.tag) as env:  # the runtime's timeout kill needs pgrep
        assert env.run("sleep 100", timeout=1).timed_out
        assert env.run("echo alive").output == "alive\n"


# --- faithful dependencies: lock files, the commit's date, releases stepped back ----------------------

#: A conftest that needs a pytest older than 9 (which removed this warning class).
OLD_PYTEST_CONFTEST = "from pytest import PytestRemovedIn8Warning\n\nassert PytestRemovedIn8Warning\n"
OLD_DATE = "2023-06-01T00:00:00+0000"
UV_LOCK = """\
version = 1
requires-python = ">=3.8"

[[package]]
name = "calc"
version = "0.1.0"
source = { editable = "." }

[[package]]
name = "pytest"
version = "7.4.4"
source = { registry = "https://example.invalid/simple" }
"""


def _pytest_version(client, tag: str) -> str:
    return run_in(client, tag, "python -c 'import pytest; print(pytest.__version__)'").strip()


def _old_repo(root: Path, files: dict[str, str]):
    """A repository whose one commit was made on :data:`OLD_DATE`."""
    repo = make_repo(root, files)
    with repo.git.custom_environment(GIT_AUTHOR_DATE=OLD_DATE, GIT_COMMITTER_DATE=OLD_DATE):
        repo.git.commit("-q", "--amend", "--reset-author", "-m", "An old commit")
    return repo


def test_a_lock_file_pins_the_old_pytest_the_conftest_needs(builder: ImageBuilder, docker_client, tmp_path):
    make_repo(
        tmp_path / "locked", {**python_project(), "conftest.py": OLD_PYTEST_CONFTEST, "uv.lock": UV_LOCK}
    )
    result = builder.build(parse_source(str(tmp_path / "locked")))
    assert result.status == ImageStatus.READY, result.reason
    recipe = builder.store.get_image(result.tag).recipe
    assert recipe["lock_file"] == "uv.lock"
    assert recipe["install_env"]["UV_CONSTRAINT"] == "/opt/forager/constraints.txt"
    assert _pytest_version(docker_client, result.tag) == "7.4.4"
    assert "UV_CONSTRAINT" not in " ".join(docker_client.images.get(result.tag).attrs["Config"]["Env"])


def test_an_old_commit_gets_the_releases_of_its_date(builder: ImageBuilder, docker_client, tmp_path):
    _old_repo(tmp_path / "old", {**python_project(), "conftest.py": OLD_PYTEST_CONFTEST})
    result = builder.build(parse_source(str(tmp_path / "old")))
    assert result.status == ImageStatus.READY, result.reason
    recipe = builder.store.get_image(result.tag).recipe
    assert recipe["install_env"] == {"UV_EXCLUDE_NEWER": "2023-06-02T00:00:00Z"}
    assert _pytest_version(docker_client, result.tag) == "7.3.1", "pytest's newest release on 2023-06-02"
    assert "resolving as of 2023-06-02 00:00 UTC" in Path(result.log_path).read_text()


def test_a_commit_older_than_setuptools_40_8_resolves_as_of_its_release(builder: ImageBuilder, tmp_path):
    setup_py = "from setuptools import setup\n\nsetup(name='calc', version='1.0', package_dir={'': 'src'}, "
    setup_py += "packages=['calc'])\n"
    files = {**python_project(), "setup.py": setup_py}
    del files["pyproject.toml"]
    repo = make_repo(tmp_path / "ancient", files)
    when = "2017-06-01T00:00:00+0000"
    with repo.git.custom_environment(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when):
        repo.git.commit("-q", "--amend", "--reset-author", "-m", "A commit from 2017")
    # Naming no Python, a 2017 commit would get bullseye's 3.9, whose base may not exist yet: 3.11.
    builder.options = replace(builder.options, python="3.11")

    result = builder.build(parse_source(str(tmp_path / "ancient")))

    assert result.status == ImageStatus.READY, result.reason
    assert "resolving as of 2019-02-06, not the commit's date" in Path(result.log_path).read_text()
    recipe = builder.store.get_image(result.tag).recipe
    assert recipe["install_env"] == {"UV_EXCLUDE_NEWER": "2019-02-06T00:00:00Z"}


def test_a_pytest_too_new_for_the_conftest_is_stepped_back(builder: ImageBuilder, docker_client, tmp_path):
    builder.options = replace(builder.options, resolve_newest=True)
    _old_repo(tmp_path / "old", {**python_project(), "conftest.py": OLD_PYTEST_CONFTEST})
    result = builder.build(parse_source(str(tmp_path / "old")))
    assert result.status == ImageStatus.READY, result.reason
    recipe = builder.store.get_image(result.tag).recipe
    assert recipe["install_env"] == {}
    (step,) = [step for step in recipe["steps"] if "--exclude-newer" in step["run"]]
    assert step["run"].startswith("uv pip install --exclude-newer 2023-06-02T00:00:00Z 'pytest<")
    assert "cannot import name 'PytestRemovedIn8Warning'" in step["why"]
    assert _pytest_version(docker_client, result.tag) == "7.3.1"


def test_one_hanging_test_costs_that_test_not_the_image(builder: ImageBuilder, tmp_path):
    # As a WSGI toolkit's suite hung on one test at 75%: the baseline keeps every other test's outcome.
    builder.options = replace(builder.options, per_test_timeout=5, test_timeout=300)
    hang = "\n\ndef test_hangs():\n    import time\n    time.sleep(600)\n"
    tests = CALC_TESTS + "\n\ndef test_more():\n    assert add(1, 2) == 3\n" + hang
    write(tmp_path / "proj", python_project(tests=tests))
    started = time.monotonic()
    result = builder.build(parse_source(str(tmp_path / "proj")))
    assert result.status == ImageStatus.READY, result.reason
    assert time.monotonic() - started < 240
    baseline = builder.store.get_image(result.tag).baseline
    assert baseline["tests/test_calc.py::test_hangs"] == "failed"
    assert baseline["tests/test_calc.py::test_more"] == "passed" and result.tests_passed == 5
