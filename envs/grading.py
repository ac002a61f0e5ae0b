"""Grading a submitted patch by the task's tests, SWE-bench style: one function for tasks, episodes and CLI.

:func:`grade` takes an environment in the task's start state (working tree clean at the start commit)
and, through the runtime protocol only:

1. applies the patch, trying ``git apply --binary``, then ``git apply --binary --3way``, then
   ``patch -p1 --fuzz=3`` (an empty patch applies trivially: that grades the unmodified start);
2. puts the test files back to the start commit's version, so that no patch passes by editing the tests,
   and applies the task's test patch (issue-fix tasks);
3. runs exactly the FAIL_TO_PASS and PASS_TO_PASS tests with the image's runner: pytest, reading
   outcomes from its JUnit report, or unittest and a project's own unittest script (Django's
   ``tests/runtests.py``), reading their verbose output (:mod:`images.runners`); a test the run does
   not report is ``missing``;
4. decides the status with :func:`classify`, a pure function.

Infrastructure failures (a timeout, an out-of-memory kill, a dead container, a test setup that cannot
be made) give the status ``error`` and say which in ``infra_error``: they are not the patch's fault.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from typing import Any, Literal

from core.errors import ForagerError
from envs.runtime import EnvironmentDied, Observation, Runtime
from envs.swebench import InstanceError, files_touched
from images.baseline import BaselineError, log_tail, parse_junit
from images.runners import file_of_test, id_command, runner_of
from images.unittest_output import parse_verbose

Status = Literal["resolved", "partial", "unresolved", "error"]
#: A test's outcome in a graded run: pytest's, or ``missing`` when the report does not have the test.
TestOutcome = Literal["passed", "failed", "error", "skipped", "missing"]
#: How the patch applied; ``empty`` when there was nothing to apply.
AppliedWith = Literal["git apply", "git apply --3way", "patch --fuzz", "empty"]
#: Why a grade is ``error``: the test run ran out of time, was killed by the out-of-memory killer, was
#: killed otherwise (exit 137 or a vanished shell, with no OOM kill counted), the environment died, or the
#: test files could not be restored or the test patch did not apply (a broken task).
InfraError = Literal["timeout", "oom", "killed", "environment_died", "test_setup"]

#: Where grading keeps its files in the environment; emptied at the start of every grade.
WORKSPACE = "/tmp/forager-grade"
_PATCH = f"{WORKSPACE}/patch.diff"
_TEST_PATCH = f"{WORKSPACE}/test.diff"
_JUNIT = f"{WORKSPACE}/junit.xml"

#: The fallback chain: each attempt's label, command, and whether a failure can leave changes behind
#: (a failed 3-way merge leaves conflict markers). ``patch`` gets a dry run first because it is not
#: atomic (it writes the hunks that fit and rejects the others); ``--forward`` keeps it from reversing a
#: patch that looks already applied, which ``--batch`` alone would do.
_APPLY_ATTEMPTS: tuple[tuple[AppliedWith, str, bool], ...] = (
    ("git apply", f"git apply --binary {_PATCH}", False),
    ("git apply --3way", f"git apply --binary --3way {_PATCH}", True),
    (
        "patch --fuzz",
        f"patch -p1 --fuzz=3 --batch --forward --dry-run -i {_PATCH} && "
        f"patch -p1 --fuzz=3 --batch --forward --no-backup-if-mismatch --reject-file=- -i {_PATCH}",
        True,
    ),
)

#: The out-of-memory kills of the environment's memory cgroup so far (cgroup v2, then v1).
_OOM_KILLS = (
    "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null"
    " | sed -n 's/^oom_kill //p'"
)

#: Pytest options whose value may be the next word; any other word not starting with ``-`` after the
#: pytest command is a test path. Long options of plugins are recognised only as ``--option=value``.
_VALUE_OPTIONS = frozenset({
    "-k", "-m", "-p", "-c", "-o", "-W", "-r", "-n", "--maxfail", "--deselect", "--ignore", "--ignore-glob",
    "--confcutdir", "--basetemp", "--rootdir", "--junitxml", "--junit-xml", "--junit-prefix", "--tb",
    "--show-capture", "--capture", "--durations", "--durations-min", "--import-mode", "--log-level",
    "--log-format", "--log-date-format", "--log-cli-level", "--log-cli-format", "--log-cli-date-format",
    "--log-file", "--log-file-level", "--log-file-format", "--log-file-date-format", "--log-file-mode",
    "--override-ini", "--config-file", "--assert", "--color", "--code-highlight", "--doctest-glob",
    "--doctest-report", "--verbosity", "--numprocesses", "--dist", "--timeout",
})  # fmt: skip
_SHELL_PUNCTUATION = "();<>|&"
#: What grading adds to the image's test command: a JUnit report that names every test's file, and a
#: terse terminal log.
_REPORT_OPTIONS = f"-o junit_family=xunit1 --junitxml={_JUNIT} -q -rN --color=no"
#: Test files by pytest's default ``python_files`` patterns, plus conftest.py.
_TEST_FILE_PATTERNS = ("test_*.py", "*_test.py", "conftest.py")
_TEST_DIRS = frozenset({"tests", "test"})


class GradingError(ForagerError):
    """A test specification grading cannot use."""


@dataclass(frozen=True)
class TestSpec:
    """What to run to grade a task's patches; taken from the task and its image.

    ``test_files`` are put back to the start commit's version before the tests run (deleted when the
    start commit lacks them). Left empty, it is :func:`default_test_files`; give it explicitly to add
    files (a conftest, test data) to the default.
    """

    __test__ = False  # not a pytest test class, whatever its name

    test_command: str
    """The image's pytest command, e.g. ``python -m pytest -p no:cacheprovider tests``; its options are
    kept, its test paths replaced by the test ids (see :func:`pytest_command`)."""
    fail_to_pass: tuple[str, ...]
    """Pytest node ids that fail at the start and must pass."""
    pass_to_pass: tuple[str, ...]
    """Pytest node ids that pass at the start and must keep passing."""
    test_patch: str = ""
    """Applied after the test files are restored (issue-fix tasks); "" for none."""
    test_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Task rows hold lists; a frozen spec holds tuples.
        object.__setattr__(self, "fail_to_pass", tuple(self.fail_to_pass))
        object.__setattr__(self, "pass_to_pass", tuple(self.pass_to_pass))
        if not self.fail_to_pass and not self.pass_to_pass:
            raise GradingError(
                "a test spec needs FAIL_TO_PASS or PASS_TO_PASS tests: there is nothing to run"
            )
        if runner_of(self.test_command) == "pytest":
            pytest_base(self.test_command)
        if not self.test_files:
            try:
                files = default_test_files(
                    self.fail_to_pass, self.pass_to_pass, self.test_patch, test_command=self.test_command
                )
            except InstanceError as exc:
                raise GradingError(f"the test patch cannot be read: {exc}") from exc
            object.__setattr__(self, "test_files", files)
        else:
            object.__setattr__(self, "test_files", tuple(self.test_files))


@dataclass(frozen=True)
class Grade:
    """The verdict on one patch.

    ``fail_to_pass`` and ``pass_to_pass`` map every test id to its outcome when the tests ran, and are
    empty when they did not (the patch did not apply, the test setup failed, the environment died first).
    """

    status: Status
    resolved: bool
    fail_to_pass: dict[str, TestOutcome]
    pass_to_pass: dict[str, TestOutcome]
    applied_with: AppliedWith | None
    """How the patch applied, None when nothing in the chain applied it."""
    infra_error: InfraError | None
    """Set exactly when ``status`` is ``error``."""
    exit_code: int | None
    """Pytest's exit code; None when it did not run or did not finish."""
    log_tail: str
    """The end of the grading log: the commands that failed and pytest's output."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def classify(
    fail_to_pass: Mapping[str, str], pass_to_pass: Mapping[str, str]
) -> Literal["resolved", "partial", "unresolved"]:
    """The status of a run from its FAIL_TO_PASS and PASS_TO_PASS outcomes.

    SWE-bench's rule (``swebench.harness.grading.get_resolution_status``): with the F2P and P2P pass
    ratios, FULL when both are 1, PARTIAL when P2P is 1 and 0 < F2P < 1, otherwise NO; only FULL counts
    as resolved. So here:

    - ``resolved``: every F2P and every P2P test passed;
    - ``partial``: every P2P test passed, and some but not all F2P tests passed;
    - ``unresolved``: anything else (a P2P test broke, or no F2P test passed).

    An empty list passes, as SWE-bench counts a ratio over no tests as 1. Only ``passed`` passes. That
    is stricter than SWE-bench in one respect: SWE-bench leaves a skipped test out of both ratios (and
    counts an xfail as passed), so F2P tests that all skip would resolve the task there; here
    ``skipped`` (which includes xfail in pytest's JUnit report) counts as not passing, like ``failed``,
    ``error`` and ``missing``.
    """
    p2p_pass = all(outcome == "passed" for outcome in pass_to_pass.values())
    f2p_passed = sum(1 for outcome in fail_to_pass.values() if outcome == "passed")
    if p2p_pass and f2p_passed == len(fail_to_pass):
        return "resolved"
    if p2p_pass and f2p_passed > 0:
        return "partial"
    return "unresolved"


def default_test_files(
    fail_to_pass: Iterable[str], pass_to_pass: Iterable[str], test_patch: str = "", *, test_command: str = ""
) -> tuple[str, ...]:
    """The files grading restores by default: the test files of the test ids, and all the test patch touches.

    A test id's file counts only when it looks like a test file (``test_*.py``, ``*_test.py``,
    ``conftest.py``, or anything under a ``tests`` or ``test`` directory): a doctest's id names the
    source module that holds it (``src/calc/__init__.py::calc.add``), and restoring that would undo the
    fix. Give such files (and test files of unusual names) in :attr:`TestSpec.test_files` explicitly.
    With a unittest or script ``test_command``, ids are labels, whose module is the file
    (:func:`images.runners.file_of_test`).

    Raises:
        InstanceError: ``test_patch`` is not a unified diff.
    """
    files: dict[str, None] = {}
    for test_id in (*fail_to_pass, *pass_to_pass):
        path = file_of_test(test_command, test_id) if test_command else test_id.split("::", 1)[0]
        if path and is_test_path(path):
            files[path] = None
    for path in files_touched(test_patch):
        files[path] = None
    return tuple(files)


def is_test_path(path: str) -> bool:
    """Whether a repository path looks like a test file; see :func:`default_test_files`."""
    *directories, name = path.split("/")
    return any(fnmatch(name, pattern) for pattern in _TEST_FILE_PATTERNS) or bool(
        _TEST_DIRS.intersection(directories)
    )


def pytest_base(test_command: str) -> list[str]:
    """The words of a pytest test command without its test paths: what runs test ids instead.

    Everything up to ``pytest`` (``python -m pytest``, a path to a ``pytest`` script, variable
    assignments) is kept; after it, options are kept with their values and other words, the test paths,
    are dropped. ``--rootdir=.`` and the like must stay: test ids are relative to the rootdir.

    Raises:
        GradingError: the command does not run pytest, or holds shell operators grading cannot keep.
    """
    # Shell punctuation as tokens of its own, so that "cd src;pytest" shows its ";".
    lexer = shlex.shlex(test_command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as exc:
        raise GradingError(f"test command {test_command!r} cannot be split into words: {exc}") from exc
    operators = sorted({word for word in words if not word.strip(_SHELL_PUNCTUATION)})
    if operators:
        raise GradingError(
            f"test command {test_command!r} has shell operators {operators}: grading runs one pytest "
            "command; put the setup into the image"
        )
    # "pytest", "python -m pytest", ".venv/bin/pytest": the first word naming pytest.
    start = next(
        (index + 1 for index, word in enumerate(words) if posixpath.basename(word) in ("pytest", "py.test")),
        None,
    )
    if start is None:
        raise GradingError(f"test command {test_command!r} does not run pytest: grading needs pytest")
    kept = words[:start]
    takes_value = False
    for word in words[start:]:
        if takes_value or word.startswith("-"):
            kept.append(word)
            takes_value = not takes_value and word in _VALUE_OPTIONS
    return kept


def pytest_command(test_command: str, arguments: Sequence[str]) -> str:
    """The shell command that runs ``arguments`` (test ids or files) with the test command's options.

    Each argument is quoted, so ids with spaces, brackets or quotes reach pytest intact.
    """
    return f"{shlex.join(pytest_base(test_command))} {_REPORT_OPTIONS} {shlex.join(arguments)}"


def grade(runtime: Runtime, patch: str, spec: TestSpec, *, timeout: float = 900) -> Grade:
    """Apply ``patch`` in ``runtime`` and grade it by ``spec``'s tests; see the module docstring.

    ``runtime`` must be in the task's start state; grading changes its working tree (the patch, the
    restored tests, the test patch), so grade in an environment that is not used afterwards, or reset it.
    ``timeout`` is the seconds the test run may take. Never raises for the environment's failures: a
    dead environment gives status ``error`` with ``infra_error="environment_died"``.
    """
    log = _Log()
    try:
        return _grade(runtime, patch, spec, timeout, log)
    except EnvironmentDied as exc:
        log.add("the environment died", str(exc))
        return _error("environment_died", log)


def _grade(runtime: Runtime, patch: str, spec: TestSpec, timeout: float, log: _Log) -> Grade:
    # A refreshed index: `git apply --3way` works on the index, and one whose stat data is stale (a
    # repository copied into the image) makes it refuse unchanged files as "does not match index".
    _shell(runtime, f"rm -rf {WORKSPACE}; git update-index -q --refresh >/dev/null")
    applied_with = _apply_patch(runtime, patch, log)
    if applied_with is None:
        return Grade("unresolved", False, {}, {}, None, None, None, log.tail())
    restored = _shell(runtime, _restore_script(spec.test_files))
    if restored.exit_code != 0:
        log.add(f"restore the test files {list(spec.test_files)}", restored.output)
        return _error("test_setup", log, applied_with)
    if spec.test_patch.strip():
        applied = git_apply(runtime, spec.test_patch, _TEST_PATCH)
        if applied.exit_code != 0:
            log.add("apply the test patch", applied.output)
            return _error("test_setup", log, applied_with)
    outcomes, observation, infra_error = _run_tests(runtime, spec, timeout, log)
    f2p = {test: outcomes.get(test, "missing") for test in spec.fail_to_pass}
    p2p = {test: outcomes.get(test, "missing") for test in spec.pass_to_pass}
    status: Status = "error" if infra_error else classify(f2p, p2p)
    return Grade(
        status=status,
        resolved=status == "resolved",
        fail_to_pass=f2p,
        pass_to_pass=p2p,
        applied_with=applied_with,
        infra_error=infra_error,
        exit_code=observation.exit_code,
        log_tail=log.tail(),
    )


def _apply_patch(runtime: Runtime, patch: str, log: _Log) -> AppliedWith | None:
    """Apply the patch by the first method of the chain that works; None when none does."""
    if not patch.strip():
        return "empty"
    try:
        touched = files_touched(patch)
    except InstanceError as exc:
        log.add("read the patch", str(exc))
        return None
    runtime.write_file(_PATCH, _patch_bytes(patch))
    for label, command, leaves_changes in _APPLY_ATTEMPTS:
        attempt = _shell(runtime, command)
        if attempt.exit_code == 0:
            return label
        log.add(command, attempt.output)
        if leaves_changes:  # the next attempt starts from the start state again
            undone = _shell(runtime, _restore_script(touched))
            if undone.exit_code != 0:
                log.add("undo the failed attempt", undone.output)
                return None
    return None


def _run_tests(
    runtime: Runtime, spec: TestSpec, timeout: float, log: _Log
) -> tuple[dict[str, str], Observation, InfraError | None]:
    """Run the spec's tests: (outcomes by id, the last run's observation, the infrastructure failure)."""
    oom_kills = _oom_kills(runtime)
    outcomes, observation = run_tests(
        runtime, spec.test_command, [*spec.fail_to_pass, *spec.pass_to_pass], timeout, log
    )
    return outcomes, observation, _infra_error(runtime, observation, oom_kills)


def run_tests(
    runtime: Runtime, test_command: str, tests: Sequence[str], timeout: float, log: _Log | None = None
) -> tuple[dict[str, str], Observation]:
    """Run exactly ``tests`` (pytest node ids, or unittest labels for a unittest or script runner) with
    the image's test command: (outcomes by id, observation).

    An id the run does not report is absent from the outcomes; callers count it as missing.
    """
    log = log or _Log()
    if runner_of(test_command) != "pytest":
        # unittest runs the labels it can import and reports the others as errors: no fallback needed.
        observation = _shell(runtime, f"{id_command(test_command, tests)} 2>&1", timeout)
        log.add(f"run {len(tests)} tests", observation.output)
        return dict(parse_verbose(observation.output).outcomes), observation
    _shell(runtime, f"rm -f {_JUNIT}")  # a report left by an earlier run must not be read as this one's
    observation = _shell(runtime, pytest_command(test_command, tests), timeout)
    log.add(f"run {len(tests)} tests", observation.output)
    outcomes = _report(runtime)
    remaining = timeout - observation.duration
    if not outcomes and observation.exit_code in (2, 4) and remaining > 0:
        # Pytest runs nothing at all when one id is not found (exit 4) or one test module fails to import
        # (exit 2). Run the tests' files instead, past collection errors, and pick the ids' outcomes: a
        # test that is really gone stays missing, and the others get their real outcome.
        files = list(dict.fromkeys(test.split("::", 1)[0] for test in tests))
        observation = _shell(runtime, _files_command(test_command, files), remaining)
        log.add(f"run the {len(files)} test files instead", observation.output)
        outcomes = _report(runtime)
    return outcomes, observation


def _files_command(test_command: str, files: Sequence[str]) -> str:
    # Only the files that exist: pytest stops at a path that does not (exit 4).
    candidates = " ".join(shlex.quote(path) for path in files)
    run = pytest_command(test_command, ["--continue-on-collection-errors"])
    return (
        f'set --; for f in {candidates}; do [ -e "$f" ] && set -- "$@" "$f"; done; [ $# -gt 0 ] && {run} "$@"'
    )


def _infra_error(
    runtime: Runtime, observation: Observation, oom_kills_before: int | None
) -> InfraError | None:
    if observation.timed_out:
        return "timeout"
    # 137 is a SIGKILL; no exit code without a timeout means the shell itself was killed.
    if observation.exit_code not in (137, None):
        return None
    after = _oom_kills(runtime)
    if oom_kills_before is not None and after is not None and after > oom_kills_before:
        return "oom"
    return "killed"


def _oom_kills(runtime: Runtime) -> int | None:
    """The environment's OOM kill count, or None when its cgroup does not show it."""
    output = runtime.run(_OOM_KILLS).output.split()
    return int(output[0]) if output and output[0].isdigit() else None


def _report(runtime: Runtime) -> dict[str, str]:
    """Outcomes from the JUnit report; none when pytest wrote none or a broken one."""
    try:
        return dict(parse_junit(runtime.read_file(_JUNIT)))
    except (FileNotFoundError, BaselineError):
        return {}


def _restore_script(paths: Iterable[str]) -> str:
    """A script putting each path back to its HEAD version, or deleting it when HEAD lacks it."""
    steps = []
    for path in paths:
        quoted = shlex.quote(path)
        # Literal pathspecs: a test file named with [ ] or * is not a pattern.
        steps.append(
            f"if git cat-file -e HEAD:{quoted} 2>/dev/null; "
            f"then git --literal-pathspecs checkout -q HEAD -- {quoted} || exit 1; "
            f"else rm -f -- {quoted} || exit 1; fi"
        )
    return "\n".join(steps) or "true"


def git_apply(runtime: Runtime, patch: str, path: str) -> Observation:
    """Write ``patch`` to ``path`` in ``runtime`` and ``git apply`` it to the repository, nothing else."""
    runtime.write_file(path, _patch_bytes(patch))
    return _shell(runtime, f"git apply --binary {shlex.quote(path)}")


def _shell(runtime: Runtime, script: str, timeout: float | None = None) -> Observation:
    """Run ``script`` in the repository, in a subshell so that the environment's shell stays where it was."""
    return runtime.run(f"(cd {shlex.quote(runtime.workdir)} && {{\n{script}\n}})", timeout)


def _patch_bytes(patch: str) -> bytes:
    # git apply rejects a patch whose last line lacks its newline as corrupt.
    text = patch if patch.endswith("\n") else patch + "\n"
    return text.encode("utf-8", errors="surrogateescape")


def _error(infra_error: InfraError, log: _Log, applied_with: AppliedWith | None = None) -> Grade:
    return Grade("error", False, {}, {}, applied_with, infra_error, None, log.tail())


class _Log:
    """What went wrong while grading, for the grade's ``log_tail``."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, step: str, output: str) -> None:
        self.parts.append(f"$ {step}\n{output.rstrip()}")

    def tail(self) -> str:
        return log_tail("\n".join(self.parts))
