"""Layers for real: one commit's image made from another's by checking it out and running the install
steps again (a changed C source compiled, a new dependency installed), a failed layer falling back to a
full build, and a failed build standing for the commits planned like it."""

from __future__ import annotations

import pytest

from images.builder import ImageBuilder
from images.layers import Environments
from images.sources import parse_source
from storage import ImageStatus
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

    newer = 'version = "0.2.0"\ndependencies = ["six"]'
    pyproject = FILES["pyproject.toml"].replace('version = "0.1.0"', newer)
    with repo.git.custom_environment(GIT_COMMITTER_DATE="2025-01-01T00:00:00+0000"):
        changes = {"src/layered/_native.c": C_MODULE.format(version="0.2"), "pyproject.toml": pyproject}
        second = commit(repo, changes, "0.2")
    made, layered = environments.image_for(second)
    assert (made.status, made.commit, layered) == (ImageStatus.READY, second, True), made.reason
    assert "-layer-" in made.tag and made.log_path is not None and made.log_path.is_file()
    # Committed a year before its base (history rewritten, a backport): it resolves as of the base's date.
    assert "instead, the base's date" in made.log_path.read_text()
    shown = inside(
        builder,
        made.tag,
        "python -c 'import layered, six; print(layered.version())' && git log --all --format=%H"
        " && git status --porcelain",
    )
    assert shown.split() == ["0.2", second, first]
    labels = builder.client.images.get(made.tag).attrs["Config"]["Labels"]
    assert (labels["forager.commit"], labels["forager.layer-of"]) == (second, base.tag)

    # C that no longer compiles makes no layer: the full build says why, and the plan keeps its image.
    broken = commit(repo, {"src/layered/_native.c": "this is not C\n"}, "Break the extension")
    failed, layered = environments.image_for(broken)
    assert (failed.status, layered) == (ImageStatus.FAILED, False)
    assert failed.failure_class in ("native_build_failed", "install_failed")
    assert environments.failed_alike(broken) is None


def test_a_failed_build_stands_for_the_commits_planned_like_it(builder: ImageBuilder, tmp_path) -> None:
    files = {**FILES, "tests/test_version.py": "import not_a_module_anywhere\n\n\ndef test_x():\n    pass\n"}
    repo = make_repo(tmp_path / "failing", files)
    first = repo.head.commit.hexsha
    environments = Environments(builder, parse_source(repo.working_dir), repo)
    failed, _ = environments.image_for(first)
    assert failed.status == ImageStatus.FAILED
    second = commit(repo, {"src/layered/__init__.py": "from layered._native import version  # \n"}, "Later")
    assert environments.failed_alike(second) == failed
    # Planned otherwise (on another Python), it is not ruled out.
    python = FILES["pyproject.toml"].replace("[project]", '[project]\nrequires-python = ">=3.12"')
    other = commit(repo, {"pyproject.toml": python}, "Python 3.12 or later")
    assert environments.failed_alike(other) is None
