"""Real image builds of generated fixture projects, one per behaviour and per failure class."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from images.builder import BuildCancelled, BuildOptions, ImageBuilder
from images.engine import BUILD_CONTAINER_PREFIX
from images.proxy import NetworkSettings
from images.sources import parse_source
from storage import ImageStatus, Store
from tests.repos import commit, make_repo, python_project, write

pytestmark = pytest.mark.docker


@pytest.fixture
def builder(docker_client, tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'forager.db'}")
    options = BuildOptions(network=NetworkSettings.from_environment(), test_timeout=120, timeout=600)
    built = ImageBuilder(docker_client, store, tmp_path / "home", options)
    yield built
    leftovers = [
        c for c in docker_client.containers.list(all=True) if c.name.startswith(BUILD_CONTAINER_PREFIX)
    ]
    for container in leftovers:
        container.remove(force=True)
    for image in store.list_images():
        if image.docker_id:
            docker_client.images.remove(image.tag, force=True)
    store.close()
    assert not leftovers, "a build leaked containers"


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

    labels = docker_client.images.get(result.tag).labels
    assert labels["forager.commit"] == old and labels["forager.test-command"] == record.test_command
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


def test_unittest_suite_in_a_flat_layout(builder: ImageBuilder, tmp_path):
    write(
        tmp_path / "flat",
        {
            "setup.py": "from setuptools import setup\n\nsetup(name='flat', py_modules=['flat'])\n",
            "flat.py": "def double(x):\n    return 2 * x\n",
            "test_flat.py": "import unittest\nimport flat\n\n\nclass T(unittest.TestCase):\n"
            "    def test_double(self):\n        self.assertEqual(flat.double(2), 4)\n",
        },
    )
    result = builder.build(parse_source(str(tmp_path / "flat")))
    assert result.status == ImageStatus.READY, result.reason
    assert builder.store.get_image(result.tag).baseline == {"test_flat.py::T::test_double": "passed"}


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


def test_engine_failure_mid_build_is_a_docker_error(builder: ImageBuilder, docker_client, tmp_path):
    slow_setup = "import time\ntime.sleep(120)\nfrom setuptools import setup\nsetup()\n"
    write(tmp_path / "proj", {**python_project(), "setup.py": slow_setup})
    killer = threading.Thread(target=_kill_build_container, args=(docker_client, "proj"))
    killer.start()
    result = builder.build(parse_source(str(tmp_path / "proj")))
    killer.join()
    assert (result.status, result.failure_class) == (ImageStatus.FAILED, "docker_error"), result.reason


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
    assert not [
        c for c in docker_client.containers.list(all=True) if c.name.startswith(BUILD_CONTAINER_PREFIX)
    ]


def _wait_for_build_container(client, name: str):
    """The build container of ``name``, once its (slow) install step runs: a kill then lands mid-build."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for container in client.containers.list(filters={"name": f"{BUILD_CONTAINER_PREFIX}{name}-"}):
            processes = container.top(ps_args="-eo pid,args")["Processes"] or []
            if any("uv pip install" in " ".join(process) for process in processes):
                return container
        time.sleep(0.2)
    raise AssertionError("the build container never started its install step")


def _kill_build_container(client, name: str) -> None:
    _wait_for_build_container(client, name).remove(force=True)
