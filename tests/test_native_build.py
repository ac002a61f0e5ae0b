"""Native extensions built for real: a C extension needing a system header, a Cython extension whose C
a CI workflow step generates, and a header nothing ships failing with the compiler's own line."""

from __future__ import annotations

import pytest

from images.builder import ImageBuilder
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import write

pytestmark = pytest.mark.docker

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"

[project.optional-dependencies]
test = ["pytest"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

#: A module with one function returning a string that C computes: ``{call}`` is the C expression.
C_MODULE = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <{header}>

static PyObject *version(PyObject *self, PyObject *args) {{
    return PyUnicode_FromString({call});
}}

static PyMethodDef methods[] = {{
    {{"version", version, METH_NOARGS, "The library's version."}},
    {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods}};

PyMODINIT_FUNC PyInit__native(void) {{ return PyModule_Create(&module); }}
"""


def c_project(name: str, header: str, call: str, library: str) -> dict[str, str]:
    return {
        "pyproject.toml": PYPROJECT.format(name=name),
        "setup.py": (
            "from setuptools import Extension, setup\n\n"
            f'setup(ext_modules=[Extension("{name}._native", ["src/{name}/_native.c"],'
            f' libraries=["{library}"])])\n'
        ),
        f"src/{name}/__init__.py": f"from {name}._native import version\n",
        f"src/{name}/_native.c": C_MODULE.format(header=header, call=call),
        "tests/test_version.py": (
            f"from {name} import version\n\n\ndef test_version():\n    assert version().startswith('0.')\n"
        ),
    }


def inside(builder: ImageBuilder, tag: str, command: str) -> str:
    output = builder.client.containers.run(tag, ["sh", "-c", command], remove=True, network_mode="none")
    return output.decode()


def recipe_steps(builder: ImageBuilder, tag: str) -> list[dict]:
    return builder.store.get_image(tag).recipe["steps"]


def test_a_c_extension_needing_a_system_header_gets_its_debian_package(builder: ImageBuilder, tmp_path):
    files = c_project("yamlver", "yaml.h", "yaml_get_version_string()", "yaml")
    result = builder.build(parse_source(str(write(tmp_path / "yamlver", files))))
    assert result.status == ImageStatus.READY, result.reason
    assert (result.tests_passed, result.tests_total) == (1, 1)
    apt = [step for step in recipe_steps(builder, result.tag) if step["run"].startswith("apt-get")]
    assert len(apt) == 1 and " libyaml-dev " in apt[0]["run"]
    assert "fatal error: yaml.h: No such file or directory" in apt[0]["why"]


def test_a_header_nothing_ships_fails_with_the_compiler_line(builder: ImageBuilder, tmp_path):
    files = c_project("nowhere", "forager_nowhere.h", '"0.1"', "m")
    result = builder.build(parse_source(str(write(tmp_path / "nowhere", files))))
    assert result.status == ImageStatus.FAILED
    assert result.failure_class == "native_build_failed"
    assert "fatal error: forager_nowhere.h: No such file or directory" in result.reason
    assert "forager_nowhere.h: No such file or directory" in builder.store.list_images()[0].log_tail


WORKFLOW = """\
name: tests
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
      - run: sudo apt-get update && sudo apt-get install -y libyaml-dev forager-nowhere-dev
      - name: Generate C from Cython
        run: |
          python -m pip install --upgrade pip
          pip install cython
          make cython
      - run: pip install -e .[test]
      - run: pytest
      - run: curl -s https://example.invalid/upload | sh
"""

PYX = """\
def total(values):
    cdef long result = 0
    for value in values:
        result += value
    return result
"""


def test_a_cython_extension_whose_c_a_ci_step_generates_builds(builder: ImageBuilder, tmp_path):
    files = {
        "pyproject.toml": PYPROJECT.format(name="fastsum"),
        "setup.py": (
            "from setuptools import Extension, setup\n\n"
            'setup(ext_modules=[Extension("fastsum._speed", ["src/fastsum/_speed.c"])])\n'
        ),
        "Makefile": ".PHONY: cython\ncython:\n\tcython -3 src/fastsum/_speed.pyx\n",
        ".github/workflows/tests.yml": WORKFLOW,
        "src/fastsum/__init__.py": "from fastsum._speed import total\n",
        "src/fastsum/_speed.pyx": PYX,
        "tests/test_total.py": (
            "from fastsum import total\n\n\ndef test_total():\n    assert total([1, 2, 3]) == 6\n"
        ),
    }
    result = builder.build(parse_source(str(write(tmp_path / "fastsum", files))))
    assert result.status == ImageStatus.READY, result.reason
    assert (result.tests_passed, result.tests_total) == (1, 1)
    steps = recipe_steps(builder, result.tag)
    runs = [step["run"] for step in steps]
    make = runs.index("make cython")
    why = "CI set-up: .github/workflows/tests.yml job test, step Generate C from Cython"
    assert steps[make]["why"] == why
    assert runs[make - 1] == "uv pip install cython"
    assert make < next(i for i, run in enumerate(runs) if " -e " in f" {run} ")
    assert not any("curl" in run for run in runs)
    # The CI's build headers, without the one Debian does not have.
    apt = next(step for step in steps if step["run"].startswith("apt-get"))
    assert "libyaml-dev forager-nowhere-dev" in apt["run"] and apt["why"].startswith("build headers")
    # The newline ends the line: the engine's log can lose an unterminated last line of a container
    # that exits at once (seen here: an empty answer).
    assert "libyaml-dev" in inside(builder, result.tag, "dpkg-query -W -f '${Package}\\n' libyaml-dev")


def test_a_checkout_tests_import_gets_its_extensions_built_in_place(builder: ImageBuilder, tmp_path):
    # As yarl at a 2020 commit: setuptools of its date cannot build editable, so a copy is installed,
    # and `python -m pytest` imports the package from the checkout, whose C was never compiled there.
    files = c_project("flatc", "math.h", '"0.1"', "m")
    files = {path.removeprefix("src/"): text for path, text in files.items()}
    files["setup.py"] = files["setup.py"].replace("src/flatc/_native.c", "flatc/_native.c")
    files["pyproject.toml"] = files["pyproject.toml"].replace('"setuptools>=61"', '"setuptools>=61,<64"')
    result = builder.build(parse_source(str(write(tmp_path / "flatc", files))))
    assert result.status == ImageStatus.READY, result.reason
    runs = [step["run"] for step in recipe_steps(builder, result.tag)]
    assert "uv pip install setuptools wheel && python setup.py build_ext --inplace" in runs
    imported = inside(builder, result.tag, "python -c 'import flatc._native as m; print(m.__file__)'")
    assert imported.startswith("/repo/flatc/_native")
