"""Test outcomes from real pytest JUnit reports, flakiness across runs, and the readiness verdict.

The reports and terminal output are produced by running this interpreter's pytest on small projects
written into a temporary folder, so the parser is checked against what pytest really writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import images
from images.baseline import (
    Baseline,
    BaselineError,
    collection_errors,
    judge,
    log_tail,
    merge_runs,
    parse_junit,
)
from tests.repos import run_pytest, write

SUITE = {
    "tests/__init__.py": "",
    "tests/base_mixin.py": """
        class Mixin:
            def test_inherited(self):
                pass
    """,
    "tests/test_inherit.py": """
        from tests.base_mixin import Mixin

        class TestChild(Mixin):
            pass
    """,
    "tests/test_x.py": """
        import unittest
        import pytest

        from tests.base_mixin import Mixin

        def test_plain():
            pass

        def test_fail():
            assert 1 == 2

        @pytest.mark.parametrize("v", ["a.b", "c::d", "e/f[g]"])
        def test_param(v):
            pass

        @pytest.mark.xfail
        def test_xfail():
            assert 0

        @pytest.mark.xfail
        def test_xpass():
            pass

        @pytest.mark.xfail(strict=True)
        def test_xpass_strict():
            pass

        @pytest.mark.skip(reason="optional")
        def test_skip():
            pass

        @pytest.fixture
        def broken():
            raise RuntimeError("setup")

        def test_setup_error(broken):
            pass

        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown")

        def test_teardown_error(bad_teardown):
            pass

        def test_fail_then_teardown_error(bad_teardown):
            assert 0

        class TestOuter:
            def test_a(self):
                pass

            class TestInner:
                @pytest.mark.parametrize("n", [1, 2])
                def test_b(self, n):
                    pass

        class TestUnit(unittest.TestCase):
            def test_ok(self):
                pass

            def test_bad(self):
                self.assertEqual(1, 2)

            @unittest.skip("not here")
            def test_skipped(self):
                pass

        # Collected whatever its name, being a TestCase: only ``file`` tells the class from a module.
        class lowercase_case(unittest.TestCase):
            def test_it(self):
                pass

        # Its test is reported with the mixin's file: the module comes from the other tests' files.
        class lowercase_child(Mixin, unittest.TestCase):
            pass
    """,
    "sub/test_y.py": """
        def test_y():
            pass
    """,
}

EXPECTED = {
    "sub/test_y.py::test_y": "passed",
    "tests/test_inherit.py::TestChild::test_inherited": "passed",
    "tests/test_x.py::test_plain": "passed",
    "tests/test_x.py::test_fail": "failed",
    "tests/test_x.py::test_param[a.b]": "passed",
    "tests/test_x.py::test_param[c::d]": "passed",
    "tests/test_x.py::test_param[e/f[g]]": "passed",
    "tests/test_x.py::test_xfail": "skipped",
    "tests/test_x.py::test_xpass": "passed",
    "tests/test_x.py::test_xpass_strict": "failed",
    "tests/test_x.py::test_skip": "skipped",
    "tests/test_x.py::test_setup_error": "error",
    "tests/test_x.py::test_teardown_error": "error",
    "tests/test_x.py::test_fail_then_teardown_error": "error",
    "tests/test_x.py::TestOuter::test_a": "passed",
    "tests/test_x.py::TestOuter::TestInner::test_b[1]": "passed",
    "tests/test_x.py::TestOuter::TestInner::test_b[2]": "passed",
    "tests/test_x.py::TestUnit::test_ok": "passed",
    "tests/test_x.py::TestUnit::test_bad": "failed",
    "tests/test_x.py::TestUnit::test_skipped": "skipped",
    "tests/test_x.py::lowercase_case::test_it": "passed",
    "tests/test_x.py::lowercase_child::test_inherited": "passed",
}


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return write(root, {"pytest.ini": "[pytest]\n", **files})


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("suite"), SUITE)


@pytest.fixture(scope="module")
def xunit1(suite: Path) -> bytes:
    run_pytest(suite, "--junitxml=xunit1.xml", "-o", "junit_family=xunit1")
    return (suite / "xunit1.xml").read_bytes()


@pytest.fixture(scope="module")
def xunit2(suite: Path) -> str:
    run_pytest(suite, "--junitxml=xunit2.xml", "-o", "junit_family=xunit2")
    return (suite / "xunit2.xml").read_text()


@pytest.fixture(scope="module")
def broken_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = {
        "tests/test_ok.py": "def test_ok():\n    pass\n",
        "tests/test_missing.py": "import notinstalled_module\n\ndef test_never():\n    pass\n",
        "tests/test_skipped_module.py": (
            "import pytest\npytest.skip('no GPU', allow_module_level=True)\n\ndef test_gpu():\n    pass\n"
        ),
        "tests/test_errors.py": (
            "import pytest\n\n@pytest.fixture\ndef broken():\n    raise RuntimeError('x')\n\n"
            "def test_setup(broken):\n    pass\n"
        ),
    }
    return write_project(tmp_path_factory.mktemp("broken"), files)


# -- parse_junit ----------------------------------------------------------------------------------------


def test_xunit1_report_gives_pytest_node_ids_and_outcomes(xunit1: bytes) -> None:
    assert parse_junit(xunit1) == EXPECTED


def test_ids_match_the_ones_pytest_collects(suite: Path, xunit1: bytes) -> None:
    collected = run_pytest(suite, "--collect-only", "-q").stdout.splitlines()
    assert set(parse_junit(xunit1)) == {line for line in collected if "::" in line}


def test_xunit2_report_without_file_attributes_gives_the_same_ids(xunit2: str) -> None:
    assert "file=" not in xunit2
    # Without ``file`` a class is told from a module by its capital letter, so lowercase classes are
    # out of reach there.
    capitalised = {test: outcome for test, outcome in EXPECTED.items() if "lowercase" not in test}
    parsed = parse_junit(xunit2)
    assert {test: outcome for test, outcome in parsed.items() if "lowercase" not in test} == capitalised
    assert len(parsed) == len(EXPECTED)


def test_collection_failures_and_module_skips_are_not_tests(broken_suite: Path) -> None:
    run_pytest(
        broken_suite, "--junitxml=report.xml", "-o", "junit_family=xunit1", "--continue-on-collection-errors"
    )
    report = (broken_suite / "report.xml").read_text()
    assert 'message="collection failure"' in report and 'message="collection skipped"' in report
    assert parse_junit(report) == {
        "tests/test_ok.py::test_ok": "passed",
        "tests/test_errors.py::test_setup": "error",
    }


def test_multiple_suites_and_a_bare_testsuite_root() -> None:
    wrapped = """<?xml version="1.0" encoding="utf-8"?>
    <testsuites>
      <testsuite name="a"><testcase classname="pkg.test_a" name="test_one" file="pkg/test_a.py"/></testsuite>
      <testsuite name="b">
        <testcase classname="pkg.test_b.TestB" name="test_two" file="pkg/test_b.py">
          <failure message="boom">trace</failure>
        </testcase>
      </testsuite>
    </testsuites>"""
    bare = '<testsuite><testcase classname="test_c" name="test_three"><skipped/></testcase></testsuite>'
    assert parse_junit(wrapped) == {
        "pkg/test_a.py::test_one": "passed",
        "pkg/test_b.py::TestB::test_two": "failed",
    }
    assert parse_junit(bare) == {"test_c.py::test_three": "skipped"}


def test_a_test_reported_twice_keeps_its_worst_outcome() -> None:
    def case(child: str) -> str:
        return f'<testcase classname="test_m" name="test_d" file="test_m.py">{child}</testcase>'

    def report(*children: str) -> str:
        return "<testsuites><testsuite>" + "".join(case(c) for c in children) + "</testsuite></testsuites>"

    assert parse_junit(report("<failure/>", "")) == {"test_m.py::test_d": "failed"}
    assert parse_junit(report("", "<error/>", "<failure/>")) == {"test_m.py::test_d": "error"}
    assert parse_junit(report("<skipped/>", "")) == {"test_m.py::test_d": "skipped"}
    # One element with both a result and a teardown error: the error wins.
    assert parse_junit(report("<failure/><error/>")) == {"test_m.py::test_d": "error"}


def test_truncated_report_is_a_clear_error(xunit1: bytes) -> None:
    with pytest.raises(BaselineError, match="malformed or truncated"):
        parse_junit(xunit1[: len(xunit1) // 2])


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ("", "empty"),
        ("<html><body/></html>", "not a JUnit XML report"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><testsuites/>', "DTD"),
    ],
)
def test_reports_that_are_not_pytest_reports_are_rejected(report: str, message: str) -> None:
    with pytest.raises(BaselineError, match=message):
        parse_junit(report)


# -- merge_runs and Baseline ----------------------------------------------------------------------------


def test_merge_marks_changed_and_missing_tests_flaky() -> None:
    first = {"t::a": "passed", "t::b": "failed", "t::c": "passed", "t::d": "skipped"}
    second = {"t::a": "passed", "t::b": "passed", "t::d": "skipped", "t::e": "error"}
    baseline = merge_runs([first, second])
    assert baseline.flaky == {"t::b", "t::c", "t::e"}
    assert baseline.outcomes == {
        "t::a": "passed",
        "t::b": "failed",
        "t::c": "passed",
        "t::d": "skipped",
        "t::e": "error",
    }
    counts = (baseline.passed, baseline.failed, baseline.errors, baseline.skipped, baseline.total)
    assert counts == (2, 1, 1, 1, 5)
    assert baseline.stable("passed") == ["t::a"]
    assert baseline.stable("failed") == []
    assert baseline.stable("skipped") == ["t::d"]


def test_single_run_has_no_flaky_tests_and_stable_ids_are_sorted() -> None:
    baseline = merge_runs([{"t::z": "passed", "t::a": "passed", "t::m": "failed"}])
    assert baseline.flaky == frozenset()
    assert baseline.stable("passed") == ["t::a", "t::z"]


def test_merge_needs_a_run() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        merge_runs([])


def test_json_round_trip() -> None:
    baseline = merge_runs(
        [{"t::b": "passed", "t::a": "error"}, {"t::b": "failed", "t::a": "error"}],
        [{"t::b": 0.5, "t::a": 2.0}, {"t::b": 1.25}],
    )
    data = baseline.to_json()
    assert data == {
        "outcomes": {"t::a": "error", "t::b": "passed"},
        "flaky": ["t::b"],
        "durations": {"t::a": 2.0, "t::b": 1.25},
        "partial": False,
    }
    assert Baseline.from_json(data) == baseline
    # Baselines stored before durations existed still read.
    assert Baseline.from_json({"outcomes": {"t::a": "error"}, "flaky": []}).durations == {}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"outcomes": []},
        {"outcomes": {"t::a": "exploded"}, "flaky": []},
        {"outcomes": {}, "flaky": 3},
        {"outcomes": {}, "flaky": [], "durations": {"t::a": "slow"}},
    ],
)
def test_invalid_stored_baselines_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(BaselineError):
        Baseline.from_json(data)


# -- judge ----------------------------------------------------------------------------------------------


def outcomes(passed: int = 0, failed: int = 0, error: int = 0, skipped: int = 0) -> Baseline:
    counts = {"passed": passed, "failed": failed, "error": error, "skipped": skipped}
    return Baseline({f"t.py::{kind}_{i}": kind for kind, n in counts.items() for i in range(n)})


def test_timeout_wins_over_everything() -> None:
    verdict = judge(outcomes(passed=10), exit_code=0, timed_out=True)
    assert (verdict.ready, verdict.failure_class) == (False, "timeout")


@pytest.mark.parametrize(
    ("baseline", "exit_code"), [(None, 5), (outcomes(), 5), (None, 1), (outcomes(), 0), (None, None)]
)
def test_nothing_collected_is_no_tests(baseline: Baseline | None, exit_code: int | None) -> None:
    verdict = judge(baseline, exit_code=exit_code, timed_out=False)
    assert (verdict.ready, verdict.failure_class) == (False, "no_tests")


@pytest.mark.parametrize(("exit_code", "words"), [(2, "interrupted"), (3, "internal error"), (4, "plugin")])
def test_pytest_stopping_before_any_test_is_a_collection_error(exit_code: int, words: str) -> None:
    verdict = judge(outcomes(), exit_code=exit_code, timed_out=False)
    assert verdict.failure_class == "collection_error"
    assert words in verdict.reason


def test_import_errors_with_nothing_passing_are_a_collection_error() -> None:
    verdict = judge(outcomes(failed=3), exit_code=1, timed_out=False, collection_errors=2)
    assert verdict.failure_class == "collection_error"
    assert "2 test files failed to import" in verdict.reason


def test_import_errors_beside_passing_tests_are_judged_by_the_ratio() -> None:
    verdict = judge(outcomes(passed=9, failed=1), exit_code=1, timed_out=False, collection_errors=1)
    assert verdict.ready


def test_no_passing_test_is_tests_failing() -> None:
    verdict = judge(outcomes(failed=3, error=1), exit_code=1, timed_out=False)
    assert verdict.failure_class == "tests_failing"
    assert "3 failed, 1 errors" in verdict.reason
    everything_skipped = judge(outcomes(skipped=4), exit_code=0, timed_out=False)
    assert everything_skipped.failure_class == "tests_failing"
    assert "all 4 tests were skipped" in everything_skipped.reason


def test_low_pass_ratio_is_tests_failing_with_the_numbers() -> None:
    verdict = judge(outcomes(passed=12, failed=20, error=8), exit_code=1, timed_out=False)
    assert verdict == type(verdict)(False, "tests_failing", "12 of 40 tests pass (30% < 80%)")


def test_skipped_tests_do_not_count_against_the_ratio() -> None:
    verdict = judge(outcomes(passed=8, failed=2, skipped=30), exit_code=1, timed_out=False)
    assert verdict.ready and verdict.failure_class is None
    assert verdict.reason == "8 of 10 tests pass (80% ≥ 80%; 30 skipped)"


def test_ratio_just_under_the_threshold_is_not_rounded_up() -> None:
    verdict = judge(outcomes(passed=799, failed=201), exit_code=1, timed_out=False)
    assert verdict.failure_class == "tests_failing"
    assert "(79% < 80%)" in verdict.reason
    assert judge(outcomes(passed=3, failed=1), exit_code=1, timed_out=False, min_pass_ratio=0.5).ready


def test_min_pass_ratio_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="min_pass_ratio"):
        judge(outcomes(passed=1), exit_code=0, timed_out=False, min_pass_ratio=80)


# -- log_tail and collection_errors ---------------------------------------------------------------------


def test_log_tail_keeps_the_last_lines_and_characters() -> None:
    log = "\n".join(f"line {i}" for i in range(100)) + "\n\n\n"
    assert log_tail(log, lines=3) == "line 97\nline 98\nline 99"
    assert log_tail(log, lines=3, max_chars=10) == "98\nline 99"
    assert log_tail("short") == "short"


def test_log_tail_shows_progress_bars_as_a_terminal_does() -> None:
    log = "Downloading\n 10%\r 55%\r100% done\r\nInstalled\r\n"
    assert log_tail(log) == "Downloading\n100% done\nInstalled"


def test_log_tail_needs_positive_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        log_tail("x", lines=0)


def test_collection_errors_from_real_pytest_output(broken_suite: Path) -> None:
    default = run_pytest(broken_suite)
    assert default.returncode == 2
    assert "ERROR tests/test_missing.py" in default.stdout
    assert collection_errors(default.stdout) == ["tests/test_missing.py"]
    # As the builder runs pytest: no summary section, only the "ERROR collecting" headers.
    quiet = run_pytest(broken_suite, "-q", "-rN", "--continue-on-collection-errors")
    assert "short test summary info" not in quiet.stdout
    assert collection_errors(quiet.stdout) == ["tests/test_missing.py"]


def test_collection_errors_ignore_test_errors_and_colour_codes() -> None:
    output = (
        "\x1b[31m_____ ERROR collecting tests/test_a.py _____\x1b[0m\n"
        "E   ModuleNotFoundError: No module named 'x'\n"
        "=========================== short test summary info ============================\n"
        "\x1b[31mERROR\x1b[0m tests/test_a.py - ModuleNotFoundError: No module named 'x'\n"
        "ERROR tests/test_b.py\n"
        "ERROR tests/test_c.py::test_setup - RuntimeError: x\n"
        "!!!!!!!!!!!!!!!!!!!! Interrupted: 2 errors during collection !!!!!!!!!!!!!!!!!!!!\n"
        "ERROR tests/not_in_summary.py\n"
    )
    assert collection_errors(output) == ["tests/test_a.py", "tests/test_b.py"]


# --- per-test timeouts --------------------------------------------------------------------------------

HANGING_SUITE = """\
import time


def test_fast():
    assert True


def test_hangs():
    try:
        time.sleep(600)
    except Exception:  # a broad except in the test must not swallow the timeout
        pass


def test_after_the_hang():
    assert True
"""


def _run_with_test_timeout(
    root: Path, limit: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(Path(images.__file__).parent)
    env["FORAGER_TEST_TIMEOUT"] = limit
    junit = root / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "forager_test_timeout",
         "-o", "junit_family=xunit1", f"--junitxml={junit}", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, parse_junit(junit.read_bytes()) if junit.is_file() else {}


def test_a_hanging_test_costs_that_test_and_the_suite_goes_on(tmp_path: Path) -> None:
    write(tmp_path, {"pytest.ini": "[pytest]\n", "tests/test_h.py": HANGING_SUITE})
    started = time.monotonic()
    done, outcomes = _run_with_test_timeout(tmp_path, "2")
    assert time.monotonic() - started < 60, done.stdout
    assert outcomes == {
        "tests/test_h.py::test_fast": "passed",
        "tests/test_h.py::test_hangs": "failed",
        "tests/test_h.py::test_after_the_hang": "passed",
    }, done.stdout + done.stderr
    assert "ran longer than 2 s (FORAGER_TEST_TIMEOUT)" in done.stdout


def test_without_a_limit_the_plugin_does_nothing(tmp_path: Path) -> None:
    write(tmp_path, {"pytest.ini": "[pytest]\n", "tests/test_q.py": "def test_q():\n    pass\n"})
    done, outcomes = _run_with_test_timeout(tmp_path, "")
    assert done.returncode == 0 and outcomes == {"tests/test_q.py::test_q": "passed"}, done.stdout
