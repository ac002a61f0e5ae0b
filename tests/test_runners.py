"""Runners other than pytest: choosing one from a checkout, their commands, reading their verbose output.

The output parsers are checked against the output of the real ``unittest`` runner on generated suites.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import images.forager_test_timeout as plugin
from envs.grading import pytest_base
from images import suite_runs
from images.baseline import merge_runs
from images.runners import choose_test_command, file_of_test, id_command, runner_of
from images.suite_runs import whole_files
from images.unittest_output import VerboseRun, completed_modules, parse_verbose
from tests.repos import run_pytest, write

PYTEST = "python -m pytest -p no:cacheprovider tests"

UNITTEST_SUITE = {
    "tests/__init__.py": "",
    "tests/test_calc.py": (
        "import unittest\n\n\n"
        "class CalcTest(unittest.TestCase):\n"
        "    def test_ok(self):\n        print('noise from the test')\n        self.assertEqual(1 + 1, 2)\n\n"
        "    def test_doc(self):\n        '''A docstring goes on a line of its own.'''\n\n"
        "    def test_fail(self):\n        self.assertEqual(1, 2)\n\n"
        "    def test_error(self):\n        raise RuntimeError('boom')\n\n"
        "    @unittest.skip('not today')\n    def test_skip(self):\n        pass\n\n"
        "    @unittest.expectedFailure\n    def test_xfail(self):\n        self.assertEqual(1, 2)\n\n"
        "    @unittest.expectedFailure\n    def test_xpass(self):\n        pass\n"
    ),
    "tests/test_broken.py": "import forager_no_such_module\n",
    "tests/test_fixture.py": (
        "import unittest\n\n\nclass Broken(unittest.TestCase):\n"
        "    @classmethod\n    def setUpClass(cls):\n        raise RuntimeError('no')\n\n"
        "    def test_never(self):\n        pass\n"
    ),
}


@pytest.fixture(scope="module")
def unittest_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = write(tmp_path_factory.mktemp("unittest"), UNITTEST_SUITE)
    run = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-v", "-s", "tests", "-t", "."],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stderr + run.stdout  # as a container's log has them: both streams


def test_the_real_runners_verbose_output_gives_labels_and_outcomes(unittest_output: str) -> None:
    run = parse_verbose(unittest_output)
    assert run.outcomes == {
        "tests.test_calc.CalcTest.test_ok": "passed",
        "tests.test_calc.CalcTest.test_doc": "passed",
        "tests.test_calc.CalcTest.test_fail": "failed",
        "tests.test_calc.CalcTest.test_error": "error",
        "tests.test_calc.CalcTest.test_skip": "skipped",
        "tests.test_calc.CalcTest.test_xfail": "skipped",
        "tests.test_calc.CalcTest.test_xpass": "failed",
    }
    assert run.import_errors == ["tests.test_broken"]
    assert run.unfinished is None


def test_older_pythons_lines_and_output_between_a_test_and_its_result() -> None:
    output = (
        "test_a (pkg.tests.ModelTest) ... ok\n"
        "test_b (pkg.tests.ModelTest) ... printed by the test\n"
        "ok\n"
        "test_c (pkg.tests.ModelTest)\nChecks c. ... skipped 'no db'\n"
        "test_d (pkg.tests.ModelTest) ... FAIL\n"
        "test_d (pkg.tests.ModelTest) ... ERROR\n"  # reported twice: the worse outcome stays
        "test_e (pkg.other.OtherTest) ... "
    )
    run = parse_verbose(output)
    assert run.outcomes == {
        "pkg.tests.ModelTest.test_a": "passed",
        "pkg.tests.ModelTest.test_b": "passed",
        "pkg.tests.ModelTest.test_c": "skipped",
        "pkg.tests.ModelTest.test_d": "error",
    }
    assert run.unfinished == "pkg.other.OtherTest.test_e"
    # Killed in pkg.other: pkg.tests finished; killed between tests: the last module may not have.
    assert completed_modules(run).outcomes == run.outcomes
    between = VerboseRun(dict(run.outcomes), [], None)
    assert completed_modules(between).outcomes == {}


def test_runner_of_a_test_command() -> None:
    assert runner_of(PYTEST) == "pytest"
    assert runner_of("python -m unittest discover -v -s tests -t .") == "unittest"
    assert runner_of("FOO=1 python3 -m unittest -v") == "unittest"
    assert runner_of("python tests/runtests.py --verbosity=2") == "script"
    assert runner_of("./runtests.py -v") == "script"
    # Anything else must be a pytest command, which grading then checks (and refuses tox's).
    assert runner_of("tox -e py311") == "pytest"
    assert runner_of("python x.py && rm -rf /") == "pytest"


def test_commands_that_run_ids_and_the_files_of_ids() -> None:
    unittest_command = "python -m unittest discover -v -s tests -t . -p 'test*.py'"
    assert id_command(unittest_command, ["tests.test_a.T.test_x", "tests.test_b.U.test_y"]) == (
        "python -m unittest -v tests.test_a.T.test_x tests.test_b.U.test_y"
    )
    script = "python tests/runtests.py --verbosity=2"
    assert id_command(script, ["basic.tests.ModelTest.test_x"]) == f"{script} basic.tests.ModelTest.test_x"
    assert file_of_test(unittest_command, "tests.test_a.T.test_x") == "tests/test_a.py"
    assert file_of_test(script, "basic.tests.ModelTest.test_x") == "tests/basic/tests.py"
    assert file_of_test(PYTEST, "tests/test_a.py::T::test_x") == "tests/test_a.py"
    assert file_of_test(script, "lowercase_only") is None


def _mimic_runtests(root: Path) -> None:
    write(
        root,
        {"tests/runtests.py": "import argparse\nimport unittest\n\nparser.add_argument('--verbosity')\n"},
    )


def test_a_projects_own_unittest_script_is_its_runner(tmp_path: Path) -> None:
    _mimic_runtests(tmp_path)
    command, why = choose_test_command(tmp_path, PYTEST, ("tests",))
    assert command == "python tests/runtests.py --verbosity=2" and "tests/runtests.py" in why
    # One taking no verbosity option prints no line per test; one that calls pytest, or a project
    # configuring pytest, keeps pytest.
    write(tmp_path, {"tests/runtests.py": "import sys\nimport unittest\nunittest.main(argv=sys.argv)\n"})
    assert choose_test_command(tmp_path, PYTEST, ("tests",))[0] == PYTEST
    write(tmp_path, {"tests/runtests.py": "import pytest\nimport unittest\npytest.main()\n"})
    assert choose_test_command(tmp_path, PYTEST, ("tests",))[0] == PYTEST
    _mimic_runtests(tmp_path)
    write(tmp_path, {"pytest.ini": "[pytest]\n"})
    assert choose_test_command(tmp_path, PYTEST, ("tests",))[0] == PYTEST


def test_unittest_runs_suites_that_build_their_tests_with_load_tests(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"tests/__init__.py": "", "tests/test_a.py": "import unittest\n\nclass T(unittest.TestCase):\n"},
    )
    assert choose_test_command(tmp_path, PYTEST, ("tests",))[0] == PYTEST, "pytest runs plain TestCases"
    write(tmp_path, {"tests/test_a.py": "import unittest\n\ndef load_tests(loader, tests, pattern):\n"})
    command, why = choose_test_command(tmp_path, PYTEST, ("tests",))
    assert command == "python -m unittest discover -v -s tests -t ." and "load_tests" in why
    # Labels need the start directory to be a package under the root.
    (tmp_path / "tests/__init__.py").unlink()
    assert choose_test_command(tmp_path, PYTEST, ("tests",))[0] == PYTEST


@pytest.mark.parametrize(
    ("files", "command"),
    [
        (
            {
                "tox.ini": "[tox]\nenvlist = py311\n[testenv]\ndeps = pytest\ncommands =\n"
                "    pytest {posargs} --strict-markers -x -p no:randomly --cov=calc -n auto \\\n"
                "        --maxfail=2 tests/unit\n"
            },
            "python -m pytest -p no:cacheprovider --strict-markers -p no:randomly tests/unit",
        ),
        (
            {"tox.ini": "[testenv:py]\ncommands = coverage run -m pytest {posargs:tests} -W error\n"},
            "python -m pytest -p no:cacheprovider tests -W error",
        ),
        (
            {  # dateutil's: the default names the root, quoted
                "tox.ini": '[testenv]\ncommands = python -m pytest {posargs: "{toxinidir}/tests" '
                '--cov-config="{toxinidir}/tox.ini" --cov=dateutil}\n'
            },
            "python -m pytest -p no:cacheprovider ./tests",
        ),
        (
            {  # black's: factor conditions inside a continued command
                "tox.ini": "[testenv]\ncommands =\n    pip install -e .[d]\n"
                "    pytest tests --run-optional no_jupyter \\\n        !ci: --numprocesses auto \\\n"
                "        ci: --ci-only \\\n        --cov {posargs}\n"
            },
            # An option of black's conftest: its value is joined on, for grading cannot tell it from a path.
            "python -m pytest -p no:cacheprovider tests --run-optional=no_jupyter",
        ),
        (
            {"tox.ini": "[testenv]\ncommands =\n    {py38,py39}: pytest --strict-markers tests\n"},
            "python -m pytest -p no:cacheprovider --strict-markers tests",
        ),
        (
            {
                "noxfile.py": "import nox\n\n@nox.session\ndef docs(session):\n"
                "    session.run('pytest', '--doctest-glob=*.rst')\n\n"
                "@nox.session\ndef tests(session):\n    session.install('.')\n"
                "    session.run('pytest', '-m', 'not slow', *session.posargs)\n"
            },
            "python -m pytest -p no:cacheprovider -m 'not slow' tests",
        ),
    ],
    ids=[
        "tox-ini",
        "tox-posargs-default",
        "tox-posargs-default-naming-the-root",
        "tox-factors",
        "tox-python-factors",
        "nox",
    ],
)
def test_the_pytest_arguments_of_tox_and_nox_commands(tmp_path: Path, files: dict, command: str) -> None:
    write(tmp_path, {"tests/unit/test_a.py": "def test_a():\n    pass\n", **files})
    chosen, why = choose_test_command(tmp_path, PYTEST, ("tests",))
    assert chosen == command, why
    # Grading runs test ids with the command's options: every option keeps its value.
    assert pytest_base(chosen) == [word for word in shlex.split(chosen) if not _is_a_test_path(word)]


def _is_a_test_path(word: str) -> bool:
    return word in ("tests", "tests/unit", "./tests")


# -- suite runs -----------------------------------------------------------------------------------------


def test_the_plugins_settings_agree_with_the_suite_runs() -> None:
    names = ("ENV", "BUDGET_ENV", "COLLECTED_ENV", "STARTED_ENV", "ONLY_ENV", "BUDGET_SPENT")
    assert [getattr(plugin, name) for name in names] == [
        suite_runs.TIMEOUT_ENV,
        suite_runs.BUDGET_ENV,
        suite_runs.COLLECTED_ENV,
        suite_runs.STARTED_ENV,
        suite_runs.ONLY_ENV,
        suite_runs.BUDGET_SPENT,
    ]


def test_whole_files_drops_a_file_a_stopped_worker_left_half_done() -> None:
    outcomes = {"a.py::x": "passed", "a.py::y": "failed", "b.py::x": "passed"}
    assert whole_files(outcomes, {"a.py": 2, "b.py": 3, "c.py": 1}) == {
        "a.py::x": "passed",
        "a.py::y": "failed",
    }
    assert whole_files(outcomes, {}) == outcomes


def test_partial_runs_merge_over_the_files_every_run_completed() -> None:
    first = {"a.py::x": "passed", "b.py::x": "passed", "c.py::x": "passed"}
    second = {"a.py::x": "passed", "b.py::x": "failed"}
    baseline = merge_runs([first, second], [{"a.py::x": 0.5}, {"a.py::x": 0.7, "b.py::x": 2.0}], partial=True)
    assert baseline.outcomes == {"a.py::x": "passed", "b.py::x": "passed"} and baseline.flaky == {"b.py::x"}
    assert baseline.partial and baseline.durations == {"a.py::x": 0.7, "b.py::x": 2.0}
    assert baseline.cheapest(["b.py::x", "z.py::q", "a.py::x"]) == ["a.py::x", "b.py::x", "z.py::q"]
    # unittest labels complete by module.
    labels = merge_runs([{"t.m.C.a": "passed", "t.n.C.a": "passed"}, {"t.m.C.b": "passed"}], partial=True)
    assert labels.outcomes == {"t.m.C.a": "passed", "t.m.C.b": "passed"}


def _junit(**outcomes: str) -> bytes:
    """A pytest JUnit report of tests in tests/test_a.py, each ``name=outcome`` taking 1.5 s."""
    elements = {"passed": "", "failed": "<failure/>"}
    cases = "".join(
        f'<testcase classname="tests.test_a" name="{name}" file="tests/test_a.py" time="1.5">'
        f"{elements[outcome]}</testcase>"
        for name, outcome in outcomes.items()
    )
    return f"<testsuites><testsuite>{cases}</testsuite></testsuites>".encode()


class _Engine:
    """Plays the test containers' part: hands out the given executions in turn, records the scripts."""

    def __init__(self, *executions: suite_runs.Execution) -> None:
        self.executions = list(executions)
        self.scripts: list[str] = []

    def __call__(self, script: str, number: int, paths: tuple[str, ...]) -> suite_runs.Execution:
        self.scripts.append(script)
        return self.executions.pop(0)


def _pytest_run(exit_code: int, output: str = "", **outcomes: str) -> suite_runs.Execution:
    return suite_runs.Execution(
        exit_code, output, {suite_runs.JUNIT_PATH: _junit(**outcomes)} if outcomes else {}
    )


def test_tests_failing_only_in_parallel_make_every_later_run_serial() -> None:
    parallel = f"{suite_runs._XDIST_NOTE}, 2 workers\n"
    engine = _Engine(
        _pytest_run(1, parallel, test_x="passed", test_alone="failed"),
        _pytest_run(0, "", test_x="passed", test_alone="passed"),
        _pytest_run(0, "", test_x="passed", test_alone="passed"),
    )
    settings = suite_runs.RunSettings(limit=100, workers=2)
    result = suite_runs.run_baseline(PYTEST, settings, engine, lambda title, output: None)
    assert result.baseline is not None and result.verdict.ready
    assert result.baseline.outcomes == {
        "tests/test_a.py::test_x": "passed",
        "tests/test_a.py::test_alone": "passed",
    }
    assert result.baseline.durations == {"tests/test_a.py::test_x": 1.5, "tests/test_a.py::test_alone": 1.5}
    assert "pytest-xdist breaks the suite" in result.notes[0]
    assert "XDIST='-n 2" in engine.scripts[0] and "XDIST='-n" not in engine.scripts[1] + engine.scripts[2]
    assert "FORAGER_TEST_BUDGET=75 " in engine.scripts[0], "three quarters of the run's limit"


def test_a_later_run_killed_at_its_limit_keeps_the_runs_before_it() -> None:
    engine = _Engine(_pytest_run(0, "", test_x="passed"), suite_runs.Execution(124, "", {}))
    result = suite_runs.run_baseline(PYTEST, suite_runs.RunSettings(limit=100), engine, lambda t, o: None)
    assert result.verdict.ready and result.baseline is not None
    assert "test run 2 reported no outcome" in result.notes[0]
    # Killed in the first run, with nothing reported: a timeout.
    engine = _Engine(suite_runs.Execution(124, "", {}))
    result = suite_runs.run_baseline(PYTEST, suite_runs.RunSettings(limit=100), engine, lambda t, o: None)
    assert result.verdict.failure_class == "timeout"


def test_a_unittest_run_killed_at_its_limit_keeps_its_finished_modules() -> None:
    output = "test_a (t.m.C.test_a) ... ok\ntest_b (t.m.C.test_b) ... ok\ntest_c (t.n.C.test_c) ... "
    engine = _Engine(suite_runs.Execution(124, output, {}), suite_runs.Execution(124, output, {}))
    command = "python -m unittest discover -v -s t -t ."
    result = suite_runs.run_baseline(command, suite_runs.RunSettings(limit=100), engine, lambda t, o: None)
    assert result.baseline is not None and result.baseline.partial and result.verdict.ready
    assert result.baseline.outcomes == {"t.m.C.test_a": "passed", "t.m.C.test_b": "passed"}
    assert "partial baseline: 1 test file (2 tests) ran before the time budget stopped the run" in (
        result.verdict.reason
    )


#: A conftest whose hook fails in pytest's own machinery once two tests ran, as pytest's traceback
#: formatting did for httpx at a 2019 commit on Python 3.9 (IndexError, 31% into the suite).
INTERNAL_ERROR_CONFTEST = """
ran = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        ran.append(report.nodeid)
        if len(ran) == 2:
            raise IndexError("list index out of range")
"""


def test_a_run_pytest_stopped_with_an_internal_error_keeps_the_files_it_finished(tmp_path: Path) -> None:
    two = "def test_x():\n    pass\n\n\ndef test_y():\n    pass\n"
    root = write(
        tmp_path / "proj",
        {
            "conftest.py": INTERNAL_ERROR_CONFTEST,
            "tests/test_a.py": two,
            "tests/test_b.py": two + "\ndef test_z(): pass\n",
        },
    )
    real = run_pytest(root, "tests", "-p", "no:randomly", f"--junitxml={tmp_path / 'junit.xml'}")
    assert real.returncode == 3 and "INTERNALERROR> IndexError" in real.stdout + real.stderr
    report = (tmp_path / "junit.xml").read_bytes()
    assert b'classname="pytest" name="internal"' in report, "pytest reports its own error as a test case"
    collected = json.dumps({"tests/test_a.py": 2, "tests/test_b.py": 3}).encode()
    runs = [
        suite_runs.Execution(
            3, real.stdout, {suite_runs.JUNIT_PATH: report, suite_runs.COLLECTED_PATH: collected}
        )
        for _ in range(3)
    ]
    settings = suite_runs.RunSettings(limit=100)
    result = suite_runs.run_baseline(PYTEST, settings, _Engine(*runs), lambda t, o: None)
    assert result.baseline is not None and result.baseline.partial and result.verdict.ready
    assert "1 test file (2 tests) ran before an internal error of pytest" in result.notes[-1]
    assert result.baseline.outcomes == {
        "tests/test_a.py::test_x": "passed",
        "tests/test_a.py::test_y": "passed",
    }
    # Every collected test reported, then an internal error at the end of the session: nothing is missing.
    whole = {suite_runs.COLLECTED_PATH: json.dumps({"tests/test_a.py": 2}).encode()}
    ended = [_pytest_run(3, real.stdout, test_x="passed", test_y="passed") for _ in range(3)]
    for run in ended:
        run.files.update(whole)
    result = suite_runs.run_baseline(PYTEST, settings, _Engine(*ended), lambda t, o: None)
    assert result.baseline is not None and not result.baseline.partial


def test_after_a_run_cut_short_by_the_budget_later_runs_run_the_files_it_finished() -> None:
    spent = f"! Interrupted: {suite_runs.BUDGET_SPENT} (75 s), stopping after tests/test_a.py::test_y !\n"
    engine = _Engine(
        _pytest_run(2, spent, test_x="passed", test_y="passed"), _pytest_run(0, "", test_x="passed")
    )
    result = suite_runs.run_baseline(PYTEST, suite_runs.RunSettings(limit=100), engine, lambda t, o: None)
    assert "export FORAGER_ONLY_FILES" not in engine.scripts[0]
    assert "printf '%s\\n' tests/test_a.py > /tmp/forager-only-files.txt" in engine.scripts[1]
    assert result.baseline is not None and result.baseline.partial and result.verdict.ready
    assert result.baseline.flaky == {"tests/test_a.py::test_y"}, "the second run lacked it"
