"""Real builds of generated projects whose suites need another runner, pytest's arguments from tox, or
a time budget: per-test outcomes, grading by the same ids, partial baselines and durations."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from envs.docker_runtime import DockerRuntime
from envs.grading import TestSpec, grade
from images.builder import ImageBuilder
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import PYPROJECT, write

pytestmark = pytest.mark.docker

#: A project that does not use pytest: no pytest configuration, no conftest, no ``import pytest``.
PLAIN_PYPROJECT = PYPROJECT.split("[project.optional-dependencies]")[0].replace("{dependencies}", "")
PLAIN_PYPROJECT += "{extra}"
CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a {op} b\n"

#: Mimics Django's tests/runtests.py: settings in the environment, the test directory on sys.path,
#: labels relative to it, unittest's runner at the verbosity asked for.
RUNTESTS = """\
import argparse
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("MIMIC_SETTINGS_MODULE", "test_settings")

parser = argparse.ArgumentParser()
parser.add_argument("labels", nargs="*")
parser.add_argument("--verbosity", type=int, default=1)
args = parser.parse_args()
loader = unittest.TestLoader()
if args.labels:
    suite = loader.loadTestsFromNames(args.labels)
else:
    suite = loader.discover(HERE, pattern="tests.py", top_level_dir=HERE)
result = unittest.TextTestRunner(verbosity=args.verbosity).run(suite)
sys.exit(not result.wasSuccessful())
"""
BASIC_TESTS = """\
import os
import unittest

import calc


class ModelTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(os.environ["MIMIC_SETTINGS_MODULE"], "test_settings")
        self.assertEqual(calc.add(2, 3), 5)

    def test_add_zero(self):
        self.assertEqual(calc.add(2, 0), 2)

    def test_add_negative(self):
        self.assertEqual(calc.add(2, -3), -1)

    def test_add_commutes(self):
        self.assertEqual(calc.add(2, 3), calc.add(3, 2))

    def test_sub(self):
        self.assertEqual(calc.sub(5, 3), 2)
"""


def _image(builder: ImageBuilder, root: Path):
    result = builder.build(parse_source(str(root)))
    assert result.status == ImageStatus.READY, result.reason
    return result, builder.store.get_image(result.tag)


def _baseline_json(builder: ImageBuilder, tag: str) -> dict:
    folder = builder.home / "images" / tag.replace(":", "/").removeprefix("forager/")
    return json.loads((folder / "baseline.json").read_text())


def test_a_django_style_runtests_script_gives_per_test_outcomes_and_grades_fail_to_pass(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    root = write(
        tmp_path / "mimic",
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="calc", extra=""),
            "calc.py": CALC.format(op="+"),  # the bug: sub adds
            "tests/runtests.py": RUNTESTS,
            "tests/basic/__init__.py": "",
            "tests/basic/tests.py": BASIC_TESTS,
        },
    )
    result, record = _image(builder, root)
    assert record.test_command == "python tests/runtests.py --verbosity=2"
    assert record.baseline == {
        **{
            f"basic.tests.ModelTest.test_add{case}": "passed"
            for case in ("", "_zero", "_negative", "_commutes")
        },
        "basic.tests.ModelTest.test_sub": "failed",
    }
    spec = TestSpec(
        record.test_command,
        fail_to_pass=("basic.tests.ModelTest.test_sub",),
        pass_to_pass=("basic.tests.ModelTest.test_add",),
    )
    assert spec.test_files == ("tests/basic/tests.py",)
    gold = (
        "--- a/calc.py\n+++ b/calc.py\n@@ -3,4 +3,4 @@ def add(a, b):\n \n \n def sub(a, b):\n"
        "-    return a + b\n+    return a - b\n"
    )
    with DockerRuntime.start(builder.client, result.tag) as env:
        graded = grade(env, gold, spec, timeout=120)
    assert graded.status == "resolved", graded.log_tail
    assert graded.fail_to_pass == {"basic.tests.ModelTest.test_sub": "passed"}
    with DockerRuntime.start(builder.client, result.tag) as env:
        start = grade(env, "", spec, timeout=120)
    assert start.status == "unresolved" and start.fail_to_pass == {"basic.tests.ModelTest.test_sub": "failed"}


def test_a_unittest_suite_built_by_load_tests_runs_with_unittest(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    # pytest ignores load_tests: it would find no test here at all (test_calc.py defines no TestCase).
    load_tests = (
        "import unittest\n\nimport calc\n\n\n"
        "def load_tests(loader, tests, pattern):\n"
        "    suite = unittest.TestSuite()\n"
        "    for a, b in [(1, 2), (3, 4)]:\n"
        "        def check(self, a=a, b=b):\n"
        "            self.assertEqual(calc.add(a, b), a + b)\n"
        "        name = f'test_add_{a}_{b}'\n"
        "        case = type('AddTest', (unittest.TestCase,), {name: check})\n"
        "        suite.addTest(case(name))\n"
        "    return suite\n"
    )
    root = write(
        tmp_path / "loadtests",
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="calc", extra=""),
            "calc.py": CALC.format(op="-"),
            "tests/__init__.py": "",
            "tests/test_calc.py": load_tests,
        },
    )
    _, record = _image(builder, root)
    assert record.test_command == "python -m unittest discover -v -s tests -t ."
    assert record.baseline == {
        "tests.test_calc.AddTest.test_add_1_2": "passed",
        "tests.test_calc.AddTest.test_add_3_4": "passed",
    }


def test_tox_commands_give_the_pytest_arguments(builder: ImageBuilder, tmp_path: Path) -> None:
    tests = (
        "import pytest\n\nimport calc\n\n\ndef test_add():\n    assert calc.add(1, 2) == 3\n\n\n"
        "@pytest.mark.slow\ndef test_slow_and_broken():\n    assert False\n"
    )
    root = write(
        tmp_path / "toxproj",
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="calc", extra=""),
            "calc.py": CALC.format(op="-"),
            "tox.ini": "[tox]\nenvlist = py311\n\n[testenv]\ndeps = pytest\n"
            'commands = pytest {posargs} -m "not slow" --cov=calc tests\n\n'
            "[pytest]\nmarkers =\n    slow: slow tests\n",
            "tests/test_calc.py": tests,
        },
    )
    _, record = _image(builder, root)
    assert record.test_command == "python -m pytest -p no:cacheprovider -m 'not slow' tests"
    assert record.baseline == {"tests/test_calc.py::test_add": "passed"}


def test_a_suite_too_big_for_its_budget_keeps_the_files_it_completed_with_durations(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    # 30 files of 2 tests of 1 s, under pytest-xdist when the engine has two cores: 60 s of tests (30 s
    # on two workers) against a 32 s limit, whose last quarter only finishes the files already started.
    builder.options = replace(builder.options, test_timeout=32, per_test_timeout=10)
    files = {
        f"tests/test_part{n}.py": "import time\n\n\ndef test_a():\n    time.sleep(1)\n\n\n"
        "def test_b():\n    time.sleep(1)\n"
        for n in range(30)
    }
    extra = '[project.optional-dependencies]\ntest = ["pytest", "pytest-xdist"]\n'
    root = write(
        tmp_path / "big",
        {"pyproject.toml": PLAIN_PYPROJECT.format(name="big", extra=extra), "big.py": "", **files},
    )
    result, record = _image(builder, root)
    assert "partial baseline" in result.reason
    data = _baseline_json(builder, result.tag)
    assert data["partial"] is True
    completed = {test.split("::")[0] for test in record.baseline}
    assert 0 < len(completed) < 30, completed
    # Whole files only, every test passed, and each test's duration was measured.
    assert len(record.baseline) == 2 * len(completed)
    assert set(record.baseline.values()) == {"passed"}
    assert set(data["durations"]) == set(record.baseline)
    assert all(0.9 < seconds < 10 for seconds in data["durations"].values())


def test_tests_failing_only_under_xdist_make_the_baseline_serial(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    if int(builder.client.info().get("NCPU") or 1) < 2:
        pytest.skip("the engine has one core: the baseline never runs in parallel")
    tests = (
        "import os\n\n\ndef test_alone():\n    assert 'PYTEST_XDIST_WORKER' not in os.environ\n\n\n"
        "def test_anywhere():\n    pass\n"
    )
    extra = '[project.optional-dependencies]\ntest = ["pytest", "pytest-xdist"]\n'
    root = write(
        tmp_path / "serial",
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="serial", extra=extra),
            "serial.py": "",
            "tests/test_serial.py": tests,
            "tests/test_other.py": "def test_other():\n    pass\n",
        },
    )
    result, record = _image(builder, root)
    assert set(record.baseline.values()) == {"passed"} and not record.flaky, record.baseline
    assert "pytest-xdist breaks the suite" in result.log_path.read_text()
