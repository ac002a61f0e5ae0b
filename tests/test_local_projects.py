"""Projects inside a checkout (flask's examples): found by the modules they provide, installed from their
folder when collection reports one missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.builder import ImageBuilder
from images.local_projects import local_modules
from images.repair import diagnose
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import python_project, write

SETUP = "from setuptools import setup\n\nsetup(name='{name}', packages=['{package}'])\n"


def test_local_modules_maps_each_module_to_the_shallowest_project_providing_it(tmp_path: Path) -> None:
    root = write(
        tmp_path / "repo",
        {
            **python_project(),
            "examples/javascript/setup.py": SETUP.format(name="js_example", package="js_example"),
            "examples/javascript/js_example/__init__.py": "",
            "examples/javascript/tests/conftest.py": "import js_example\n",
            "plugins/pytest_calc/pyproject.toml": "[project]\nname = 'pytest-calc'\n",
            "plugins/pytest_calc/src/pytest_calc.py": "",
            "plugins/pytest_calc/src/calc_fixtures/__init__.py": "",
            "a/b/c/deep/setup.py": SETUP.format(name="deep", package="deep"),
            "a/b/c/deep/deep/__init__.py": "",
            "docs/node_modules/x/setup.py": "",
            "docs/node_modules/x/hidden/__init__.py": "",
            # black's tests/data holds setup.py files its tests read; a sub-project's tests are its own.
            "tests/data/proj/setup.py": "",
            "tests/data/proj/a.py": "",
            "examples/javascript/tests/__init__.py": "",
        },
    )
    assert local_modules(root) == {
        "calc": ".",
        "js_example": "./examples/javascript",
        "calc_fixtures": "./plugins/pytest_calc",
        "pytest_calc": "./plugins/pytest_calc",
    }


def test_a_missing_module_a_local_project_provides_installs_its_folder() -> None:
    log = "E   ModuleNotFoundError: No module named 'js_example.views'\n"
    local = {"js_example": "./examples/javascript"}
    assert [(r.kind, r.value) for r in diagnose(log, local=local)] == [("install", "./examples/javascript")]
    assert [(r.kind, r.value) for r in diagnose(log)] == [("install", "js-example")]
    # The project's own compiled module, missing from the checkout: its extensions are built in place.
    compiled = "E   ModuleNotFoundError: No module named 'yarl._quoting_c'\n"
    assert [(r.kind, r.value) for r in diagnose(compiled, local={"yarl": "."})] == [("build_ext", "yarl")]
    assert diagnose("E   ModuleNotFoundError: No module named 'yarl'\n", local={"yarl": "."}) == []


@pytest.mark.docker
def test_examples_the_suite_collects_are_installed_from_the_checkout(builder: ImageBuilder, tmp_path) -> None:
    # As flask's tox.ini at a 2020 commit: `pytest tests examples`, each example a project of its own.
    files = {
        **python_project(),
        "tox.ini": "[testenv]\ndeps = examples/javascript\ncommands = pytest tests examples\n",
        "examples/javascript/setup.py": SETUP.format(name="js_example", package="js_example"),
        "examples/javascript/js_example/__init__.py": "def greet():\n    return 'hi'\n",
        "examples/javascript/tests/conftest.py": "import js_example  # noqa: F401\n",
        "examples/javascript/tests/test_js.py": "from js_example import greet\n\n\ndef test_greet():\n"
        "    assert greet() == 'hi'\n",
    }
    result = builder.build(parse_source(str(write(tmp_path / "proj", files))))
    assert result.status == ImageStatus.READY, result.reason
    record = builder.store.get_image(result.tag)
    assert "uv pip install -e ./examples/javascript" in [step["run"] for step in record.recipe["steps"]]
    assert record.baseline["examples/javascript/tests/test_js.py::test_greet"] == "passed"
