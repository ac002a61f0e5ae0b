"""Layers for real: one commit's image made from another's by checking it out and running the install
steps again (a changed C source compiled, a new dependency installed), a failed layer falling back to a
full build, and a failed build standing for the commits planned like it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from images.builder import ImageBuilder
from images.reuse import Environments
from images.sources import parse_source
from storage import Image, ImageStatus
from tests.repos import commit, make_repo
from tests.test_native_build import PYPROJECT

pytestmark = pytest.mark.docker

C_MODULE = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *version(PyObject *self, PyObject *args) {{ return PyUnicode_FromString("{version}"); }}

static PyMethodDef methods[] = {{{{"version", version, METH_NOARGS, "The version C knows."}}, {{NULL}}}};

static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods}};

PyMODINIT_FUNC PyInit__native(void) {{ return PyModule_Create(&module); }}
"""

FILES = {
    "pyproject.toml": PYPROJECT.format(name="layered"),
    "setup.py": (
        "from setuptools import Extension, setup\n\n"
        'setup(ext_modules=[Extension("layered._native", ["src/layered/_native.c"])])\n'
    ),
    "src/layered/__init__.py": "from layered._native import version\n",
    "src/layered/_native.c": C_MODULE.format(version="0.1"),
    "tests/test_version.py": "from layered import version\n\n\ndef test_version():\n    assert version()\n",
    "requirements-dev.txt": "pytest\n",
}


def inside(builder: ImageBuilder, tag: str, command: str) -> str:
    output = builder.client.containers.run(tag, ["sh", "-c", command], remove=True, network_mode="none")
    return output.decode()


def test_a_layer_compiles_the_commits_extension_and_installs_its_new_dependency(
    builder: ImageBuilder, tmp_path
) -> None:
    repo = make_repo(tmp_path / "layered", FILES)
    first = repo.head.commit.hexsha
    environments = Environments(builder, parse_source(repo.working_dir), repo)
    base, layered = environments.image_for(first)
    assert (base.status, layered) == (ImageStatus.READY, False), base.reason
    steps = builder.store.get_image(base.tag).recipe["steps"]
    assert not [step for step in steps if "the project again" in step["why"]], "nothing replaced it"

    # Only a C source and a requirements file change: uv's cached build of the project would be reused,
    # for its metadata files are the same. Committed 100 days before its base: a backport, say.
    changes = {
        "src/layered/_native.c": C_MODULE.format(version="0.2"),
        "requirements-dev.txt": "pytest\nsix\n",
    }
    second = commit_dated(repo, changes, "0.2", days_before=100)
    made, layered = environments.image_for(second)
    assert (made.status, made.commit, layered) == (ImageStatus.READY, second, True), made.reason
    assert "-layer-" in made.tag and made.log_path is not None and made.log_path.is_file()
    assert "instead, the base's date" in made.log_path.read_text(), "it resolves as of the base's date"
    shown = inside(
        builder,
        made.tag,
        "python -c 'import layered, six; print(layered.version())' && git log --all --format=%H"
        " && git status --porcelain",
    )
    assert shown.split() == ["0.2", second, first]
    labels = builder.client.images.get(made.tag).attrs["Config"]["Labels"]
    assert (labels["forager.commit"], labels["forager.layer-of"]) == (second, base.tag)

    # A new run takes a commit's own image before any layer, the newest when it has several (a later
    # builder planned it otherwise: here, the same image under a second tag and record).
    record = builder.store.get_image(base.tag)
    newer_tag = f"{base.tag}-newer"
    builder.client.images.get(base.tag).tag(*newer_tag.split(":"))
    fields = ("repository_id", "docker_id", "status", "base_image", "recipe", "recipe_hash", "test_command")
    builder.store.save_image(Image(tag=newer_tag, **{name: getattr(record, name) for name in fields}))
    again, layered = Environments(builder, parse_source(repo.working_dir), repo).image_for(first)
    assert (again.tag, again.cached, layered) == (newer_tag, True, False)

    # More than a year from the base: its packages are not the commit's authors'; a build of its own.
    far = commit_dated(repo, {"src/layered/extra.py": "X = 1\n"}, "Far", days_before=400)
    built, layered = environments.image_for(far)
    assert (built.status, layered, "-layer-" in (built.tag or "")) == (ImageStatus.READY, False, False)

    # C that no longer compiles makes no layer: the full build says why, and the plan keeps its image.
    broken = commit(repo, {"src/layered/_native.c": "this is not C\n"}, "Break the extension")
    failed, layered = environments.image_for(broken)
    assert (failed.status, layered) == (ImageStatus.FAILED, False)
    assert failed.failure_class in ("native_build_failed", "install_failed")
    assert environments.failed_alike(broken) is None


def commit_dated(repo, files: dict[str, str], message: str, *, days_before: int) -> str:
    """A commit of ``files`` dated ``days_before`` days before the repository's first commit."""
    first = next(repo.iter_commits(max_count=1, reverse=True)).committed_datetime
    when = (first - timedelta(days=days_before)).isoformat()
    with repo.git.custom_environment(GIT_COMMITTER_DATE=when, GIT_AUTHOR_DATE=when):
        return commit(repo, files, message)


def test_a_failed_install_stands_for_the_commits_planned_like_it(builder: ImageBuilder, tmp_path) -> None:
    files = dict(FILES)
    files["pyproject.toml"] = FILES["pyproject.toml"].replace(
        "[project]\n", '[project]\ndependencies = ["forager-no-such-dist-0"]\n'
    )
    repo = make_repo(tmp_path / "failing", files)
    environments = Environments(builder, parse_source(repo.working_dir), repo)
    failed, _ = environments.image_for(repo.head.commit.hexsha)
    assert (failed.status, failed.failure_class) == (ImageStatus.FAILED, "install_failed"), failed.reason
    second = commit(repo, {"src/layered/__init__.py": "from layered._native import version  # \n"}, "Later")
    assert environments.failed_alike(second) == failed
    # Planned otherwise (on another Python), it is not ruled out.
    python = files["pyproject.toml"].replace("[project]", '[project]\nrequires-python = ">=3.12"')
    other = commit(repo, {"pyproject.toml": python}, "Python 3.12 or later")
    assert environments.failed_alike(other) is None


def test_failing_tests_stand_for_the_commits_planned_alike_once_two_builds_failed_them(
    builder: ImageBuilder, tmp_path
) -> None:
    failing = "from layered import version\n\n\ndef test_version():\n    assert version() == 'never'\n"
    repo = make_repo(tmp_path / "failing", {**FILES, "tests/test_version.py": failing})
    environments = Environments(builder, parse_source(repo.working_dir), repo)
    first, _ = environments.image_for(repo.head.commit.hexsha)
    assert (first.status, first.failure_class) == (ImageStatus.FAILED, "tests_failing"), first.reason
    # One commit's failing tests may be that commit's own: the next is still built.
    second = commit(repo, {"src/layered/extra.py": "X = 1\n"}, "Later")
    assert environments.failed_alike(second) is None
    again, _ = environments.image_for(second)
    assert again.failure_class == "tests_failing"
    third = commit(repo, {"src/layered/extra.py": "X = 2\n"}, "Later still")
    assert environments.failed_alike(third) == again
