"""The baseline's test runs: the script each run executes, what it reported, and how runs combine.

:func:`run_baseline` runs an image's suite a few times through a callable the builder supplies (one
fresh container with no network per run) and returns the merged :class:`~images.baseline.Baseline`
and the :class:`~images.baseline.Verdict`. With pytest, each run:

- bounds every test (:mod:`images.forager_test_timeout`, injected for the run only) and the run's time:
  once three quarters of :attr:`RunSettings.limit` are spent, no new test file starts, and the report
  holds whole files; such a baseline is ``partial`` rather than a ``timeout``. So is one whose run
  pytest stopped with an internal error before every collected test ran: it keeps the files finished;
- runs with pytest-xdist (``-n WORKERS --dist loadfile``) when the image has it and the engine has
  more than one core. When tests fail in the parallel run, the next run is serial; if some of them
  pass there, xdist breaks the suite and every run is serial from then on;
- records each test's duration from the JUnit report.

A ``unittest`` or ``script`` runner (:mod:`images.runners`) runs verbosely and is read by
:func:`images.unittest_output.parse_verbose`; a run killed at its time limit keeps the modules it
finished (partial).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import ForagerError
from images.baseline import (
    Baseline,
    Outcome,
    Verdict,
    collection_errors,
    judge,
    junit_durations,
    merge_runs,
    parse_junit,
    runner_crash,
    unit_of,
)
from images.runners import Runner, runner_of
from images.unittest_output import completed_modules, parse_verbose

JUNIT_PATH = "/tmp/forager-junit.xml"
COLLECTED_PATH = "/tmp/forager-collected.json"
ONLY_PATH = "/tmp/forager-only-files.txt"
#: Where the per-test timeout plugin is written in a test container (never in the image).
_PLUGIN_DIR = "/tmp/forager-plugins"
#: The plugin's source; read, never imported into the image (Forager itself does not need pytest).
_PLUGIN_SOURCE = Path(__file__).with_name("forager_test_timeout.py")
#: The plugin's settings and the reason it prints when it stops a run (the plugin imports pytest, so
#: they are repeated here; a test checks that they agree).
TIMEOUT_ENV = "FORAGER_TEST_TIMEOUT"
BUDGET_ENV = "FORAGER_TEST_BUDGET"
COLLECTED_ENV = "FORAGER_COLLECTED"
STARTED_ENV = "FORAGER_TEST_STARTED"
ONLY_ENV = "FORAGER_ONLY_FILES"
BUDGET_SPENT = "forager: time budget spent"
#: The share of a run's time limit after which no new test file starts.
BUDGET_SHARE = 0.75
#: pytest's exit code when it stopped on an error of its own or of a plugin.
_INTERNAL_ERROR = 3
_XDIST_NOTE = "forager: running with pytest-xdist"


@dataclass(frozen=True)
class RunSettings:
    """How the baseline runs the suite."""

    limit: float
    """Seconds one run may take; the last quarter is kept for the files already started."""
    per_test_timeout: float = 0.0
    """Seconds for one pytest test's setup, call and teardown; 0 for no limit."""
    workers: int = 1
    """pytest-xdist workers when the image has xdist; 1 for serial runs."""
    runs: int = 2
    min_pass_ratio: float = 0.8


@dataclass(frozen=True)
class Execution:
    """What one run's container gave back."""

    exit_code: int
    output: str
    files: Mapping[str, bytes]
    """The contents of the requested files the run wrote (absent when it wrote none)."""


#: Runs a shell script in a fresh test container: (script, run number, files to bring back) -> result.
Execute = Callable[[str, int, tuple[str, ...]], Execution]


@dataclass
class _Run:
    exit_code: int
    output: str
    outcomes: dict[str, Outcome] | None
    durations: dict[str, float] = field(default_factory=dict)
    timed_out: bool = False
    partial: bool = False
    stopped_by: str = "the time budget"
    """What cut a partial run short."""
    parallel: bool = False
    collection_errors: int = 0

    def failing(self) -> set[str]:
        return {test for test, outcome in (self.outcomes or {}).items() if outcome in ("failed", "error")}


@dataclass(frozen=True)
class BaselineRuns:
    """The baseline, the verdict, and one line per run for the build log."""

    baseline: Baseline | None
    verdict: Verdict
    notes: tuple[str, ...]


def run_baseline(
    test_command: str,
    settings: RunSettings,
    execute: Execute,
    log: Callable[[str, str], None],
) -> BaselineRuns:
    """Run the suite :attr:`RunSettings.runs` times and judge it; see the module docstring.

    ``log(title, output)`` gets each run's output. Never raises for what the suite does.

    Raises:
        ValueError: ``settings.runs`` is less than 1.
    """
    if settings.runs < 1:
        raise ValueError(f"the baseline needs at least one test run, not {settings.runs}")
    runner = runner_of(test_command)
    serial_only = runner != "pytest" or settings.workers < 2
    runs: list[_Run] = []
    notes: list[str] = []
    last: _Run | None = None
    number = 0
    while len(runs) < settings.runs and number < 2 * settings.runs:
        number += 1
        # After a parallel run with failures, a serial one tells whether xdist made them fail.
        parallel = not serial_only and not (runs and runs[-1].parallel and runs[-1].failing())
        # Once the budget cut a run short, later runs run the files it finished, and can finish them too.
        only = sorted({unit_of(test) for test in runs[0].outcomes or {}}) if runs and runs[0].partial else []
        workers = settings.workers if parallel else 1
        run = _run_once(test_command, runner, settings, workers, execute, number, only)
        mode = (", parallel" if run.parallel else "") + (", partial" if run.partial else "")
        log(f"test run {number}: exit {run.exit_code}{mode}", run.output)
        if run.timed_out or run.outcomes is None:
            if runs:
                # A later run that reports nothing (killed at its limit on a loaded machine) does not undo
                # the runs that finished; only flakiness goes unchecked by it.
                notes.append(f"test run {number} reported no outcome: the baseline keeps the runs before it")
            else:
                last = run
            break
        last = run
        if runs and runs[-1].parallel and not run.parallel:
            only_parallel = sorted(runs[-1].failing() - run.failing())
            if only_parallel:
                notes.append(
                    f"pytest-xdist breaks the suite ({len(only_parallel)} tests fail only in parallel, "
                    f"e.g. {only_parallel[0]}): the baseline runs serially"
                )
                serial_only = True
                runs = [kept for kept in runs if not kept.parallel]
        runs.append(run)
    if any(run.parallel for run in runs):
        notes.append(f"ran with pytest-xdist, {settings.workers} workers")
    partial = any(run.partial for run in runs)
    baseline = (
        merge_runs([r.outcomes or {} for r in runs], [r.durations for r in runs], partial=partial)
        if runs
        else None
    )
    assert last is not None  # the loop ran at least once
    verdict = judge(
        baseline,
        exit_code=last.exit_code if runner == "pytest" else None,
        timed_out=last.timed_out,
        collection_errors=last.collection_errors,
        crash=runner_crash(last.output),
        min_pass_ratio=settings.min_pass_ratio,
    )
    if baseline is not None and partial:
        units = len({unit_of(test) for test in baseline.outcomes})
        files = "1 test file" if units == 1 else f"{units} test files"
        stopped_by = next(run.stopped_by for run in runs if run.partial)
        note = f"partial baseline: {files} ({baseline.total} tests) ran before {stopped_by} stopped the run"
        notes.append(note)
        verdict = replace(verdict, reason=f"{verdict.reason}; {note}")
    return BaselineRuns(baseline, verdict, tuple(notes))


def _run_once(
    test_command: str,
    runner: Runner,
    settings: RunSettings,
    workers: int,
    execute: Execute,
    number: int,
    only: Sequence[str] = (),
) -> _Run:
    if runner != "pytest":
        execution = execute(verbose_script(test_command, settings.limit), number, ())
        timed_out = execution.exit_code in (124, 137)
        parsed = parse_verbose(execution.output)
        if timed_out and parsed.outcomes:
            parsed = completed_modules(parsed)
        return _Run(
            execution.exit_code,
            execution.output,
            parsed.outcomes if parsed.outcomes or not timed_out else None,
            timed_out=timed_out and not parsed.outcomes,
            partial=timed_out and bool(parsed.outcomes),
            collection_errors=len(parsed.import_errors),
        )
    script = pytest_script(test_command, settings, workers, only)
    execution = execute(script, number, (JUNIT_PATH, COLLECTED_PATH))
    run = _Run(
        execution.exit_code,
        execution.output,
        None,
        timed_out=execution.exit_code in (124, 137),
        parallel=_XDIST_NOTE in execution.output,
        collection_errors=len(collection_errors(execution.output)),
    )
    report = execution.files.get(JUNIT_PATH)
    if report is None:
        return run
    try:
        run.outcomes, run.durations = parse_junit(report), junit_durations(report)
    except ForagerError:
        return run
    run.timed_out = run.timed_out and not run.outcomes
    collected = _counts(execution.files.get(COLLECTED_PATH))
    if BUDGET_SPENT in execution.output:
        run.partial = True
        run.outcomes = whole_files(run.outcomes, collected)
    elif execution.exit_code == _INTERNAL_ERROR and len(run.outcomes) < sum(collected.values()):
        # pytest died mid-suite (a plugin, or pytest failing to format a traceback): the tests it never
        # ran are not in the report, and the files it finished are all the baseline can vouch for.
        run.partial, run.stopped_by = True, "an internal error of pytest (INTERNALERROR)"
        run.outcomes = whole_files(run.outcomes, collected)
    return run


def pytest_script(test_command: str, settings: RunSettings, workers: int, only: Sequence[str] = ()) -> str:
    """The shell script of one pytest run: the plugin written, its limits set, xdist when available;
    ``only`` these test files when given."""
    limit = int(settings.limit)
    plugin = _PLUGIN_SOURCE.read_text()
    select = ""
    if only:
        select = f"printf '%s\\n' {shlex.join(only)} > {ONLY_PATH}\nexport {ONLY_ENV}={ONLY_PATH}\n"
    xdist = ""
    if workers > 1:
        xdist = (
            f"if python -c 'import xdist' >/dev/null 2>&1; then XDIST='-n {workers} --dist loadfile'; "
            f"echo '{_XDIST_NOTE}, {workers} workers'; fi\n"
        )
    return (
        f"mkdir -p {_PLUGIN_DIR} && cat > {_PLUGIN_DIR}/forager_test_timeout.py <<'FORAGER_EOF'\n"
        f"{plugin}FORAGER_EOF\n"
        f"XDIST=''\n{xdist}{select}"
        f"PYTHONPATH={_PLUGIN_DIR}${{PYTHONPATH:+:$PYTHONPATH}} "
        f"{TIMEOUT_ENV}={settings.per_test_timeout:g} {BUDGET_ENV}={settings.limit * BUDGET_SHARE:g} "
        f"{COLLECTED_ENV}={COLLECTED_PATH} {STARTED_ENV}=$(date +%s) "
        f"timeout -k 10 {limit} {test_command} -o junit_family=xunit1 --junitxml={JUNIT_PATH}"
        " -q -rN --color=no -p forager_test_timeout $XDIST"
    )


def verbose_script(test_command: str, limit: float) -> str:
    """The shell script of one unittest or script run: its verbose output on one stream."""
    return f"timeout -k 10 {int(limit)} {test_command} 2>&1"


def whole_files(outcomes: Mapping[str, Outcome], collected: Mapping[str, int]) -> dict[str, Outcome]:
    """The outcomes of the files whose every collected test was reported (a run stopped by its budget
    under xdist ends the other workers mid-file). Without collection counts, every file counts as whole:
    a serial run stops at a file boundary."""
    if not collected:
        return dict(outcomes)
    reported: dict[str, int] = {}
    for test in outcomes:
        reported[unit_of(test)] = reported.get(unit_of(test), 0) + 1
    whole = {file for file, count in reported.items() if count >= collected.get(file, 0)}
    return {test: outcome for test, outcome in outcomes.items() if unit_of(test) in whole}


def _counts(data: bytes | None) -> dict[str, int]:
    try:
        counts = json.loads(data or b"{}")
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}
