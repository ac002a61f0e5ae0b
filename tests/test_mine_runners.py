"""Mining histories whose tests run with ``python -m unittest`` or a project's own unittest script
(Django's ``tests/runtests.py``): the touched test modules run by their labels, as the grader runs them,
and the mined tasks grade resolved with the gold patch and unresolved as they start."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from envs.docker_backend import DockerBackend
from envs.mine import MineReport, mine
from envs.runner_targets import Targets, targets_of_files
from envs.tasks import verify
from images.builder import ImageBuilder
from images.sources import parse_source
from storage import TaskStatus
from tests.repos import commit, make_repo
from tests.test_runners_docker import PLAIN_PYPROJECT, RUNTESTS

UNITTEST = "python -m unittest discover -v -s tests -t ."
SCRIPT = "python tests/runtests.py --verbosity=2"


# -- the files' labels (pure) -----------------------------------------------------------------------------


PYTEST = "python -m pytest -p no:cacheprovider tests"


def test_pytest_runs_the_files_themselves() -> None:
    files = ["tests/test_calc.py", "tests/helpers.py", "tests/test-odd.py"]
    known = ["tests/test_other.py::test_x", "tests/test-odd.py::test_y"]
    assert targets_of_files(PYTEST, files, known) == Targets(files)


def test_data_files_of_a_data_driven_suite_run_the_tests_that_name_them() -> None:
    # black: tests/test_format.py parametrizes test_simple_format by the files of tests/data/cases.
    known = ["tests/test_format.py::test_simple_format[comments]", "tests/test_black.py::test_piping"]
    files = ["tests/data/cases/annotated_target.py", "tests/data/cases/comments.py", "tests/test_black.py"]
    targets = targets_of_files(PYTEST, files, known)
    assert targets == Targets(
        ["tests/test_black.py", "tests", "-k", "annotated_target or comments or test_black"]
    )
    # Data nothing of the baseline lives above (a new suite), or with a name -k cannot take.
    targets = targets_of_files(PYTEST, ["docs/example.py", "tests/data/two words.txt"], known)
    assert targets.arguments == [] and set(targets.unnamed) == {"docs/example.py", "tests/data/two words.txt"}


def test_unittest_runs_module_labels_relative_to_the_root() -> None:
    targets = targets_of_files(
        UNITTEST,
        ["tests/test_calc.py", "tests/sub/test_deep.py", "tests/helpers.py", "tests/test-odd.py"],
        known=["tests.test_loaded.AddTest.test_add_1_2"],
    )
    assert targets.arguments == ["tests.test_calc", "tests.sub.test_deep"]
    assert targets.unnamed == {
        "tests/helpers.py": "not a test module the unittest runner collects (pattern test*.py)",
        "tests/test-odd.py": "'test-odd' is not a Python identifier, so the module has no importable label",
    }
    # A file the baseline has tests of is the runner's, whatever its name; discover's own pattern counts.
    assert targets_of_files(UNITTEST, ["tests/checks.py"], ["tests.checks.T.test_a"]).arguments == [
        "tests.checks"
    ]
    custom = "python -m unittest discover -v -s tests -p '*_check.py' -t ."
    assert targets_of_files(custom, ["tests/calc_check.py", "tests/test_calc.py"]).arguments == [
        "tests.calc_check"
    ]


def test_a_script_runs_labels_relative_to_its_own_directory() -> None:
    files = ["tests/basic/tests.py", "tests/basic/models.py", "tests/runtests.py", "other/test_x.py"]
    targets = targets_of_files(SCRIPT, files)
    assert targets.arguments == ["basic.tests"]
    assert targets.unnamed == {
        "tests/basic/models.py": "not a test module the script runner collects (pattern test*.py)",
        "tests/runtests.py": "not a test module the script runner collects (pattern test*.py)",
        "other/test_x.py": "outside tests/, the directory the test script's labels are relative to",
    }
    assert targets_of_files("python runtests.py", ["tests/test_x.py"]).arguments == ["tests.test_x"]


# -- mining (Docker) --------------------------------------------------------------------------------------

CALC = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a + b\n"
FIXED_CALC = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"
#: pytest ignores ``load_tests``: this module makes the builder choose ``python -m unittest``.
LOADED_TESTS = """\
import unittest

import calc


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    for a, b in [(1, 2), (3, 4)]:
        def check(self, a=a, b=b):
            self.assertEqual(calc.add(a, b), a + b)
        name = f"test_add_{a}_{b}"
        suite.addTest(type("AddTest", (unittest.TestCase,), {name: check})(name))
    return suite
"""
CALC_TESTS = """\
import unittest

import calc


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(2, 3), 5)

    def test_add_zero(self):
        self.assertEqual(calc.add(2, 0), 2)
"""
TEST_MUL = "\n    def test_mul(self):\n        self.assertEqual(calc.mul(2, 3), 6)\n"
DJANGO_TESTS = """\
import unittest

import calc


class ModelTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(2, 3), 5)

    def test_add_commutes(self):
        self.assertEqual(calc.add(2, 3), calc.add(3, 2))
"""
#: A new module holding only the regression test: PASS_TO_PASS comes from its neighbours in tests/basic/.
DJANGO_TEST_MUL = (
    "import unittest\n\nimport calc\n\n\nclass MulTest(unittest.TestCase):\n"
    "    def test_mul(self):\n        self.assertEqual(calc.mul(2, 3), 6)\n"
)


def _mine(builder: ImageBuilder, root: Path) -> MineReport:
    return mine(
        builder,
        DockerBackend(builder.client),
        builder.store,
        parse_source(str(root)),
        max_tasks=5,
        test_timeout=120,
    )


def _verified(builder: ImageBuilder, report: MineReport, fix: str, test_command: str):
    """The task of ``fix``, checked with the real grader: the gold patch resolves it, the start does not."""
    task = builder.store.get_task(f"{Path(report.source).name}.{fix[:12]}")
    assert task is not None and task.status == TaskStatus.VERIFIED, report.skipped
    image = builder.store.get_image(task.image_id)
    assert image.test_command == test_command
    verification = verify(DockerBackend(builder.client), task, image, timeout=120)
    assert verification.ok, (verification.gold.log_tail, verification.start.log_tail)
    assert set(verification.start.fail_to_pass.values()) == {"failed"}
    return task


@pytest.mark.docker
def test_a_unittest_history_mines_a_task_by_module_labels(builder: ImageBuilder, tmp_path: Path) -> None:
    root = tmp_path / "unicalc"
    repo = make_repo(
        root,
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="calc", extra=""),
            "calc.py": CALC,
            "tests/__init__.py": "",
            "tests/test_loaded.py": LOADED_TESTS,
            "tests/test_calc.py": CALC_TESTS,
            ".salt": uuid.uuid4().hex,  # a commit (and image tag) of this test's own
        },
    )
    # The fix brings a helper module along with its regression test: the helper is no test module.
    fix = commit(
        repo,
        {
            "calc.py": FIXED_CALC,
            "tests/test_calc.py": CALC_TESTS + TEST_MUL,
            "tests/helpers.py": "SIX = 6\n",
        },
        "Fix mul returning the sum",
    )
    # A fix whose only test module unittest cannot import by name.
    odd = commit(
        repo,
        {"calc.py": FIXED_CALC + "\n\ndef neg(a):\n    return -a\n", "tests/test-neg.py": "import calc\n"},
        "Add neg",
    )

    report = _mine(builder, root)

    assert [skip.sha for skip in report.skipped] == [odd]
    assert report.skipped[0].reason == (
        "no touched test file can be run by the image's unittest runner: tests/test-neg.py is 'test-neg' "
        "is not a Python identifier, so the module has no importable label"
    )
    task = _verified(builder, report, fix, UNITTEST)
    assert task.fail_to_pass == ["tests.test_calc.CalcTest.test_mul"]
    assert task.pass_to_pass == [
        "tests.test_calc.CalcTest.test_add",
        "tests.test_calc.CalcTest.test_add_zero",
    ]
    assert task.meta["pass_to_pass_from"] == "test_files"


@pytest.mark.docker
def test_a_django_style_script_history_mines_a_task_by_its_labels(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    root = tmp_path / "djcalc"
    repo = make_repo(
        root,
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="calc", extra=""),
            "calc.py": CALC,
            "tests/runtests.py": RUNTESTS,
            "tests/basic/__init__.py": "",
            "tests/basic/tests.py": DJANGO_TESTS,
            ".salt": uuid.uuid4().hex,
        },
    )
    fix = commit(
        repo, {"calc.py": FIXED_CALC, "tests/basic/test_mul.py": DJANGO_TEST_MUL}, "Fix mul returning the sum"
    )

    report = _mine(builder, root)

    assert report.skipped == [] and report.made == [f"djcalc.{fix[:12]}"]
    task = _verified(builder, report, fix, SCRIPT)
    assert task.fail_to_pass == ["basic.test_mul.MulTest.test_mul"]
    assert task.pass_to_pass == ["basic.tests.ModelTest.test_add", "basic.tests.ModelTest.test_add_commutes"]
    assert task.meta["pass_to_pass_from"] == "neighbours"


#: A data-driven suite, as black's: each file of tests/data is a case of one parametrized test.
CASES_TEST = """\
from pathlib import Path

import pytest

from calc import evaluate

CASES = sorted(p.stem for p in (Path(__file__).parent / "data").glob("*.txt"))


@pytest.mark.parametrize("case", CASES)
def test_case(case):
    expression, expected = (Path(__file__).parent / "data" / f"{case}.txt").read_text().split("=")
    assert evaluate(expression) == int(expected)
"""
#: Adds and subtracts; multiplication is missing until the fix.
EVALUATE = "def evaluate(text):\n    return sum(int(term) for term in text.replace('-', '+-').split('+'))\n"
EVALUATE_FIXED = (
    "import math\n\n\ndef evaluate(text):\n    return sum(math.prod(int(f) for f in term.split('*'))"
    " for term in text.replace('-', '+-').split('+'))\n"
)


@pytest.mark.docker
def test_a_fix_whose_test_is_a_new_data_file_is_mined_by_the_test_that_reads_it(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    root = tmp_path / "cases"
    repo = make_repo(
        root,
        {
            "pyproject.toml": PLAIN_PYPROJECT.format(name="calc", extra=""),
            "calc.py": EVALUATE,
            "tests/test_cases.py": CASES_TEST,
            "tests/data/add.txt": "1+2=3",
            "tests/data/sub.txt": "5-2=3",
            ".salt": uuid.uuid4().hex,
        },
    )
    fix = commit(repo, {"calc.py": EVALUATE_FIXED, "tests/data/mul.txt": "2*3+1=7"}, "Support multiplication")

    report = _mine(builder, root)

    task = _verified(builder, report, fix, "python -m pytest -p no:cacheprovider tests")
    assert task.fail_to_pass == ["tests/test_cases.py::test_case[mul]"]
    # The other cases of the suite guard against a fix that breaks them.
    assert task.pass_to_pass == ["tests/test_cases.py::test_case[add]", "tests/test_cases.py::test_case[sub]"]
    assert task.meta["pass_to_pass_from"] == "neighbours"
