"""Per-test outcomes of an image's test suite, their flakiness, and whether the image is ready.

The builder runs pytest with ``--junitxml`` (``-o junit_family=xunit1``, so every ``<testcase>`` names
its file) a few times on the unmodified repository. :func:`parse_junit` turns each report into pytest
node ids and outcomes, :func:`merge_runs` agrees on one outcome per test and marks the tests whose
outcome changed as flaky, and :func:`judge` decides whether the image is usable. Tasks later draw their
FAIL_TO_PASS and PASS_TO_PASS lists from :meth:`Baseline.stable`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from core.errors import ForagerError

#: xfail counts as skipped and a non-strict xpass as passed, as pytest's JUnit report has them; a strict
#: xpass is reported as a failure.
Outcome = Literal["passed", "failed", "error", "skipped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

#: Which outcome wins when one test is reported twice (a failed call, then an error in teardown).
SEVERITY: Mapping[Outcome, int] = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
#: The result element of a ``<testcase>`` -> outcome, in order of precedence.
_RESULT_ELEMENTS: tuple[tuple[str, Outcome], ...] = (
    ("error", "error"),
    ("failure", "failed"),
    ("skipped", "skipped"),
)

#: Why an image is not ready. :func:`judge` tells five of them from the baseline run (``no_tests``,
#: ``collection_error``, ``test_runner_broken``, ``tests_failing``, ``timeout``); the builder reports the
#: others, and ``timeout`` for the build too.
FailureClass = Literal[
    "clone_failed",
    "not_python",
    "unsupported_python",
    "install_failed",
    "native_build_failed",
    "no_tests",
    "collection_error",
    "test_runner_broken",
    "tests_failing",
    "timeout",
    "docker_error",
]


class BaselineError(ForagerError):
    """A test report or a stored baseline cannot be read."""


def parse_junit(xml: str | bytes) -> dict[str, Outcome]:
    """Pytest node ids -> outcomes from a pytest JUnit XML report.

    Ids are rebuilt as pytest prints them (``tests/test_x.py::TestClass::test_y[param]``). Pytest writes
    ``classname`` as the module's dotted path followed by the classes, and ``file`` as the file that
    defines the test. The module is the longest prefix of ``classname`` that is the dotted path of a
    ``file`` in the report, and that file is the path; the rest of ``classname`` is the classes (nested
    ``A.B`` become ``A::B``); ``name`` is kept verbatim, parameter ids with dots, slashes or ``::``
    included. When no file fits (xunit2 reports have none; a test inherited from a class in another
    file names that file), the module is ``classname`` minus its trailing capitalised segments, which
    are taken as classes.

    A ``<testcase>`` with ``<error>`` is an error, even beside another result (teardown failed after the
    test ran), then ``<failure>`` is failed, ``<skipped>`` (xfail too) is skipped, and none is passed. A
    test reported twice keeps its worst outcome: error > failed > skipped > passed.

    Collection failures and module-level skips are reported as pseudo test cases with an empty
    ``classname``, and an internal error of pytest as ``pytest`` / ``internal``; they are not tests and
    are left out (see :func:`collection_errors`).

    Raises:
        BaselineError: the report is empty, malformed or truncated, or not a JUnit report.
    """
    root = _parse_xml(xml)
    cases = _test_cases(root)
    modules = _module_files(cases)
    outcomes: dict[str, Outcome] = {}
    for case in cases:
        test_id = _node_id(case.get("classname", ""), case.get("name", ""), modules)
        outcome = _outcome(case)
        previous = outcomes.get(test_id)
        if previous is None or SEVERITY[outcome] > SEVERITY[previous]:
            outcomes[test_id] = outcome
    return outcomes


def _test_cases(root: ET.Element) -> list[ET.Element]:
    """The report's test cases, without the pseudo ones of collection errors and internal errors."""
    return [
        case
        for case in root.iter("testcase")
        if case.get("classname") and (case.get("classname"), case.get("name")) != ("pytest", "internal")
    ]


def junit_durations(xml: str | bytes) -> dict[str, float]:
    """Pytest node ids -> seconds (setup, call and teardown together), from a JUnit report's ``time``.

    Ids are those of :func:`parse_junit`; a test case without a readable ``time`` is left out.

    Raises:
        BaselineError: as :func:`parse_junit`.
    """
    cases = _test_cases(_parse_xml(xml))
    modules = _module_files(cases)
    durations: dict[str, float] = {}
    for case in cases:
        try:
            seconds = float(case.get("time", ""))
        except ValueError:
            continue
        test_id = _node_id(case.get("classname", ""), case.get("name", ""), modules)
        durations[test_id] = round(durations.get(test_id, 0.0) + seconds, 3)
    return durations


def _module_files(cases: Sequence[ET.Element]) -> dict[str, str]:
    """Dotted module path -> file, from the tests whose ``file`` agrees with their ``classname``."""
    modules: dict[str, str] = {}
    for case in cases:
        file = case.get("file")
        if file and _is_within(case.get("classname", ""), _dotted(file)):
            modules[_dotted(file)] = file
    return modules


def _parse_xml(xml: str | bytes) -> ET.Element:
    text = xml.encode() if isinstance(xml, str) else xml
    if not text.strip():
        raise BaselineError("the JUnit XML report is empty: pytest probably crashed before writing it")
    # Pytest never writes a DTD; refusing one keeps a repository that forges its report from expanding
    # entities in the parser.
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise BaselineError("the JUnit XML report declares a DTD, which pytest never writes: not trusted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise BaselineError(
            f"the JUnit XML report is malformed or truncated (line {line}, column {column}): "
            "the test run was probably killed while writing it; run the tests again"
        ) from exc
    if root.tag not in ("testsuites", "testsuite"):
        raise BaselineError(f"not a JUnit XML report: the root element is <{root.tag}>, not <testsuites>")
    return root


def _outcome(case: ET.Element) -> Outcome:
    for tag, outcome in _RESULT_ELEMENTS:
        if case.find(tag) is not None:
            return outcome
    return "passed"


def _dotted(file: str) -> str:
    """A file path as pytest writes it into ``classname``: ``/`` -> ``.``, without ``.py``."""
    return re.sub(r"\.py$", "", file.replace("/", "."))


def _is_within(classname: str, module: str) -> bool:
    return classname == module or classname.startswith(module + ".")


def _node_id(classname: str, name: str, modules: Mapping[str, str]) -> str:
    """The node id of a test case from its ``classname`` and ``name`` and the report's module files."""
    parts = classname.split(".")
    # The longest known module that ``classname`` starts with; else all but the trailing capitalised
    # segments (at least one kept), which are taken as classes.
    end = next((end for end in range(len(parts), 0, -1) if ".".join(parts[:end]) in modules), 0)
    if end:
        path = modules[".".join(parts[:end])]
    else:
        end = len(parts)
        while end > 1 and parts[end - 1][:1].isupper():
            end -= 1
        path = "/".join(parts[:end]) + ".py"
    return "::".join([path, *parts[end:], name])


@dataclass(frozen=True)
class Baseline:
    """The outcome of every test of an image on its unmodified repository.

    ``outcomes`` has one outcome per test: the one all runs agreed on, or for a flaky test the first one
    reported. ``flaky`` holds the tests whose outcome differed between runs or that some run lacked;
    they count in the totals but never in :meth:`stable`.
    """

    outcomes: dict[str, Outcome]
    flaky: frozenset[str] = field(default_factory=frozenset)
    durations: dict[str, float] = field(default_factory=dict)
    """Seconds each test took (the longest of the runs that timed it); empty when the runner gives none."""
    partial: bool = False
    """The suite did not fit in the time budget: ``outcomes`` has the tests of the files (or modules)
    every run completed, and no others."""

    @property
    def passed(self) -> int:
        return self._count("passed")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def errors(self) -> int:
        return self._count("error")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def total(self) -> int:
        """Tests collected, whatever their outcome."""
        return len(self.outcomes)

    def _count(self, outcome: Outcome) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    def stable(self, outcome: Outcome) -> list[str]:
        """Sorted ids of the non-flaky tests with ``outcome``: candidates for FAIL_TO_PASS, PASS_TO_PASS."""
        return sorted(
            test for test, value in self.outcomes.items() if value == outcome and test not in self.flaky
        )

    def cheapest(self, tests: Iterable[str]) -> list[str]:
        """``tests`` from the fastest to the slowest; tests without a duration last, in the order given."""
        order = list(dict.fromkeys(tests))
        return sorted(order, key=lambda test: self.durations.get(test, float("inf")))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"outcomes": {id: outcome}, "flaky": [id, ...], "durations": {id: s},
        "partial": bool}``, sorted by id."""
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "flaky": sorted(self.flaky),
            "durations": dict(sorted(self.durations.items())),
            "partial": self.partial,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        """The inverse of :meth:`to_json`.

        Raises:
            BaselineError: ``data`` is not a stored baseline (wrong shape or an unknown outcome).
        """
        outcomes = data.get("outcomes") if isinstance(data, Mapping) else None
        flaky = data.get("flaky", []) if isinstance(data, Mapping) else None
        if not isinstance(outcomes, Mapping) or not isinstance(flaky, list):
            raise BaselineError("a stored baseline needs an 'outcomes' object and a 'flaky' list")
        unknown = sorted({str(value) for value in outcomes.values() if value not in OUTCOMES})
        if unknown:
            raise BaselineError(f"stored baseline has unknown outcomes {unknown}; expected one of {OUTCOMES}")
        # Baselines stored before durations and partial runs existed have neither.
        durations = data.get("durations") or {}
        if not isinstance(durations, Mapping) or not all(
            isinstance(value, int | float) for value in durations.values()
        ):
            raise BaselineError("a stored baseline's 'durations' must map test ids to seconds")
        return cls(
            outcomes=dict(outcomes),
            flaky=frozenset(flaky),
            durations={test: float(value) for test, value in durations.items()},
            partial=bool(data.get("partial", False)),
        )


def merge_runs(
    runs: Sequence[Mapping[str, Outcome]],
    durations: Sequence[Mapping[str, float]] = (),
    *,
    partial: bool = False,
) -> Baseline:
    """One baseline from several runs of the same suite (each from :func:`parse_junit`).

    A test is flaky when its outcome differs between runs or some run lacks it; its outcome is the one
    from the first run that has it. Pass only runs that finished: a crashed run makes every test flaky.
    A test's duration is the longest any run measured: what a later run of it should be ready to wait.

    ``partial`` runs stopped at a file boundary when the time budget was spent, each after a different
    number of files: only the files every run reported count, so that a file one run did not reach
    does not make its tests flaky (see :func:`unit_of`).

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("merge_runs needs at least one run")
    if partial:
        common = set.intersection(*({unit_of(test) for test in run} for run in runs))
        runs = [{test: out for test, out in run.items() if unit_of(test) in common} for run in runs]
    outcomes: dict[str, Outcome] = {}
    for run in runs:
        for test, outcome in run.items():
            outcomes.setdefault(test, outcome)
    flaky = frozenset(
        test for test, outcome in outcomes.items() if any(run.get(test) != outcome for run in runs)
    )
    longest: dict[str, float] = {}
    for timing in durations:
        for test, seconds in timing.items():
            if test in outcomes:
                longest[test] = max(seconds, longest.get(test, 0.0))
    return Baseline(outcomes=outcomes, flaky=flaky, durations=longest, partial=partial)


def unit_of(test_id: str) -> str:
    """The file of a pytest node id, or the dotted module of a unittest label (``pkg.test_m.Class.test``:
    what comes before its first capitalised part): what a run stopped by its time budget completes whole.
    """
    if "::" in test_id:
        return test_id.split("::", 1)[0]
    parts = test_id.split(".")
    end = next((index for index, part in enumerate(parts) if part[:1].isupper()), len(parts) - 1)
    return ".".join(parts[: max(1, end)])


@dataclass(frozen=True)
class Verdict:
    """Whether an image is ready for tasks and, if not, why in one sentence the user can act on."""

    ready: bool
    failure_class: FailureClass | None
    reason: str


#: Pytest exit codes that end a run before any test outcome: interrupted (collection errors), internal
#: error, usage error (an unknown option, often from a missing plugin).
_EXIT_REASONS: Mapping[int, str] = {
    2: "pytest was interrupted (exit code 2) before running any test, usually by errors collecting "
    "test files: see the collection errors in the log",
    3: "pytest hit an internal error (exit code 3) before running any test: see the traceback in the log",
    4: "pytest rejected its command line or configuration (exit code 4), often an option or setting of "
    "a plugin that is not installed: see the usage error in the log",
}


def judge(
    baseline: Baseline | None,
    *,
    exit_code: int | None,
    timed_out: bool,
    collection_errors: int = 0,
    crash: str | None = None,
    min_pass_ratio: float = 0.8,
) -> Verdict:
    """Decide whether the baseline run makes the image ready.

    ``baseline`` is None when pytest wrote no report; ``collection_errors`` is the number of test files
    that failed to import (:func:`collection_errors`); ``crash`` is the error line of the uncaught
    traceback the test command died with, if any (:func:`runner_crash`). The first rule that applies
    wins: a timeout; exit code 5 (nothing collected); exit code 2, 3 or 4 with no test outcome;
    collection errors with no test passing; a crash with no test outcome (``test_runner_broken``); no
    test at all; no test passing; a pass ratio below ``min_pass_ratio``. Otherwise the image is ready.

    The pass ratio is passed / (passed + failed + error). Skipped tests are left out of it because
    suites skip their optional integrations (a database, a GPU, a network service) by design; counting
    those as failures would reject images whose every runnable test passes.

    Raises:
        ValueError: ``min_pass_ratio`` is not within (0, 1].
    """
    if not 0 < min_pass_ratio <= 1:
        raise ValueError(f"min_pass_ratio must be within (0, 1], not {min_pass_ratio}")
    if timed_out:
        return Verdict(
            False, "timeout", "the test run did not finish within its time limit: raise the test timeout"
        )
    if exit_code == 5:
        return Verdict(
            False,
            "no_tests",
            "pytest collected no tests (exit code 5): check the test command and the test paths",
        )
    total = baseline.total if baseline is not None else 0
    passed = baseline.passed if baseline is not None else 0
    if total == 0 and exit_code in _EXIT_REASONS:
        return Verdict(False, "collection_error", _EXIT_REASONS[exit_code])
    if collection_errors and passed == 0:
        return Verdict(
            False,
            "collection_error",
            f"{_plural(collection_errors, 'test file')} failed to import and no test passed: "
            "install what they import",
        )
    if total == 0 and crash:
        return Verdict(
            False,
            "test_runner_broken",
            f"the test runner died before running any test: {crash} (see the traceback in the log)",
        )
    if baseline is None or total == 0:
        code = "" if exit_code is None else f" (exit code {exit_code})"
        return Verdict(False, "no_tests", f"pytest reported no tests{code}: check the test command")
    failing = baseline.failed + baseline.errors
    if passed == 0:
        if failing == 0:
            return Verdict(
                False,
                "tests_failing",
                f"all {_plural(total, 'test')} were skipped: their requirements are missing from the image",
            )
        return Verdict(
            False,
            "tests_failing",
            f"none of {_plural(failing, 'test')} passed ({baseline.failed} failed, {baseline.errors} "
            "errors): the environment is probably incomplete, see the failures in the log",
        )
    ran = passed + failing
    # Integer percent, rounded down, so that a ratio just under the threshold never prints as equal to it.
    summary = f"{passed} of {_plural(ran, 'test')} pass ({passed * 100 // ran}%"
    threshold = f"{min_pass_ratio:.0%}"
    skipped = f"; {baseline.skipped} skipped" if baseline.skipped else ""
    if passed / ran < min_pass_ratio:
        return Verdict(False, "tests_failing", f"{summary} < {threshold}{skipped})")
    return Verdict(True, None, f"{summary} ≥ {threshold}{skipped})")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def log_tail(text: str, lines: int = 40, max_chars: int = 4000) -> str:
    """The end of a log for a failure record: at most ``lines`` lines and ``max_chars`` characters.

    Each line is kept as a terminal shows it: progress bars redraw a line with carriage returns, and
    only the text after the last ``\\r`` remains. Trailing blank lines are dropped. When the character
    limit cuts a line, only its end is kept.

    Raises:
        ValueError: ``lines`` or ``max_chars`` is not positive.
    """
    if lines < 1 or max_chars < 1:
        raise ValueError(f"log_tail needs positive limits, not lines={lines}, max_chars={max_chars}")
    shown = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    while shown and not shown[-1].strip():
        shown.pop()
    return "\n".join(shown[-lines:])[-max_chars:]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: An uncaught exception's traceback as Python prints it, from the first column: pytest's own reports
#: indent or prefix theirs (``E   ``, ``INTERNALERROR>``).
_UNCAUGHT = re.compile(r"^Traceback \(most recent call last\):$", re.MULTILINE)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*$", re.MULTILINE)
_COLLECTING = re.compile(r"^_+ ERROR collecting (?P<path>.+?) _+$", re.MULTILINE)
_SUMMARY_START = re.compile(r"^=+ short test summary info =+$", re.MULTILINE)
#: The summary ends at pytest's closing line, a banner (``=== 1 error in 0.05s ===``, ``!!! Interrupted: ...
#: !!!``) or, under ``-q``, the bare counts (``1 failed, 2 passed in 0.05s``).
_SUMMARY_END = re.compile(
    r"^(?:=+ .* =+|!+ .* !+|\d+ \w+(?:, \d+ \w+)* in [\d.]+s\b.*|no tests ran in .*)$", re.MULTILINE
)
_SUMMARY_ERROR = re.compile(r"^ERROR (?P<path>.+?)(?: - .*)?$", re.MULTILINE)


def runner_crash(output: str, max_chars: int = 300) -> str | None:
    """The error line of the last uncaught traceback in a test run's output (``ImportError: cannot import
    name 'Sequence' from 'collections' (...)``), shortened to ``max_chars``; None when there is none."""
    text = _ANSI.sub("", output)
    tracebacks = list(_UNCAUGHT.finditer(text))
    if not tracebacks:
        return None
    line = _EXCEPTION_LINE.search(text, tracebacks[-1].end())
    return line[0].strip()[:max_chars] if line else None


def collection_errors(pytest_output: str) -> list[str]:
    """The test files that failed to import, from pytest's terminal output, in order of appearance.

    They come from the ``ERROR collecting path`` section headers and from the ``ERROR path - ...``
    lines of the ``short test summary info`` section (test ids with ``::`` there are errors of tests,
    not of collection). Colour codes are ignored.
    """
    text = _ANSI.sub("", pytest_output)
    paths = [match["path"] for match in _COLLECTING.finditer(text)]
    for start in _SUMMARY_START.finditer(text):
        end = _SUMMARY_END.search(text, start.end())
        section = text[start.end() : end.start() if end else len(text)]
        paths.extend(m["path"] for m in _SUMMARY_ERROR.finditer(section) if "::" not in m["path"])
    return list(dict.fromkeys(paths))
