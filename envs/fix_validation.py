"""Validating a candidate fix in an environment of its start commit: which tests it fixes and keeps.

One environment, three runs of the touched test modules: with the test patch alone, then twice with
the gold patch too. FAIL_TO_PASS: the tests passing in both runs after (under the same id: a test whose
id is made from the clock is not the same test twice) and not before; PASS_TO_PASS: those passing in
all three. See :func:`envs.mine.mine` for the rules on flaky and neighbouring tests.

The modules run with the image's runner, through :func:`envs.grading.run_tests` as the grader runs
them: pytest takes the files, ``python -m unittest`` and a project's unittest script (Django's
``tests/runtests.py``) their module labels (:mod:`envs.runner_targets`), so every id is one the grader
runs and the baseline has.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from envs.candidates import Candidate
from envs.grading import git_apply, run_tests
from envs.runner_targets import targets_of_files
from envs.runtime import Runtime
from images.baseline import Baseline
from images.runners import file_of_test, runner_of

#: Most tests taken from neighbouring test files when the touched ones give no PASS_TO_PASS test.
MAX_NEIGHBOURS = 100
#: What every reason about a test run's timeout says.
OUT_OF_TIME = "ran out of time"
#: Where validation keeps its patches in the environment.
_WORKSPACE = "/tmp/forager-mine"


@dataclass(frozen=True)
class Verdict:
    """The tests a validated candidate makes a task of."""

    fail_to_pass: list[str]
    pass_to_pass: list[str]
    pass_to_pass_from: str
    """``test_files``, ``neighbours`` or ``none``: where PASS_TO_PASS came from."""
    executions: int
    """Tests reported by the validation runs."""


def validate(
    env: Runtime, command: str, baseline: Baseline, candidate: Candidate, timeout: float
) -> Verdict | str:
    """Run the touched test modules with the test patch, then twice with the gold patch: the tests of
    the task, or why there are none (see :func:`envs.mine.mine`, step 3)."""
    files = list(candidate.test_files)
    targets = targets_of_files(command, files, baseline.outcomes)
    if not targets.arguments:
        path, why = next(iter(targets.unnamed.items()))
        return f"no touched test file can be run by the image's {runner_of(command)} runner: {path} is {why}"
    if not _apply(env, candidate.test_patch, "test"):
        return "the test patch does not apply to the parent commit's image"
    before, timed_out = _run(env, command, targets.arguments, timeout)
    if timed_out:
        return f"the touched test files {OUT_OF_TIME} ({timeout:.0f} s) before the fix"
    executions = len(before)
    neighbours: list[str] = []
    arguments = targets.arguments
    ran = arguments[: arguments.index("-k")] if "-k" in arguments else arguments
    if not _passing(before, baseline.flaky):
        # Beside the touched files, and in the folders run for data files (a data-driven suite's module).
        directories = {posixpath.dirname(path) for path in files} | (set(ran) - set(files))
        neighbours = [
            test
            for test in baseline.stable("passed")
            if (path := file_of_test(command, test))
            and path not in files
            and posixpath.dirname(path) in directories
        ][:MAX_NEIGHBOURS]
        if neighbours:
            outcomes, timed_out = _run(env, command, neighbours, timeout)
            if timed_out:
                return f"the neighbouring tests {OUT_OF_TIME} ({timeout:.0f} s) before the fix"
            before = {**before, **outcomes}
            executions += len(outcomes)
    if not _apply(env, candidate.gold_patch, "gold"):
        return "the gold patch does not apply after the test patch"
    # Twice: a test of the change is new to the baseline, which cannot say whether it is flaky or
    # whether its id is the same in every run; only what passes under the same id both times counts.
    fixed: set[str] | None = None
    for _ in range(2):
        after, timed_out = _run(env, command, targets.arguments, timeout)
        if neighbours and not timed_out:
            # A run of their own: a -k that picks a data-driven suite's tests would deselect them.
            outcomes, timed_out = _run(env, command, neighbours, timeout)
            after = {**after, **outcomes}
        if timed_out:
            return f"the tests {OUT_OF_TIME} ({timeout:.0f} s) after the fix"
        executions += len(after)
        passing = _passing(after, baseline.flaky)
        fixed = passing if fixed is None else fixed & passing
    assert fixed is not None
    fail_to_pass = sorted(fixed - _passing(before, baseline.flaky) - set(neighbours))
    if not fail_to_pass:
        return "no test fails before the fix and passes after it (twice, under the same id)"
    if runner_of(command) == "pytest" and not any(_under(test.split("::")[0], ran) for test in fail_to_pass):
        # Pytest names tests relative to its rootdir: a configuration file below the repository's root
        # moves it there, and the grader, which runs ids from the root, would find none of them.
        return (
            f"the test ids ({fail_to_pass[0]}) are not relative to the repository's root: a pytest "
            "configuration below it sets pytest's rootdir, and the grader could not run them"
        )
    pass_to_pass = sorted(fixed & _passing(before, baseline.flaky))
    origin = "none" if not pass_to_pass else "neighbours" if neighbours else "test_files"
    return Verdict(fail_to_pass, pass_to_pass, origin, executions)


def _under(path: str, targets: list[str]) -> bool:
    """Whether ``path`` is one of the files ``targets`` names or lies in one of its folders."""
    return any(path == target or path.startswith(target + "/") for target in targets)


def _passing(outcomes: Mapping[str, str], flaky: frozenset[str]) -> set[str]:
    return {test for test, outcome in outcomes.items() if outcome == "passed" and test not in flaky}


def _run(env: Runtime, command: str, tests: list[str], timeout: float) -> tuple[dict[str, str], bool]:
    """(outcomes, whether the run ran out of time) of ``tests``: test files or ids, the runner's labels."""
    outcomes, observation = run_tests(env, command, tests, timeout)
    return outcomes, observation.timed_out


def _apply(env: Runtime, patch: str, name: str) -> bool:
    """Apply ``patch`` to the environment's repository; False when ``git apply`` refuses it."""
    return git_apply(env, patch, f"{_WORKSPACE}/{name}.diff").exit_code == 0
