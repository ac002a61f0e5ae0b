"""Mutate-fix task generation: inject bugs where the tests can see them, keep the ones they catch.

For one ready image: measure once which tests cover which lines; target the functions whose covering
tests all pass in the baseline (flaky ones never count); generate mutants with the named operators;
validate each by running **only the tests that execute the mutated lines** (those that now fail are
FAIL_TO_PASS), then, with the other stable tests of the same test files (PASS_TO_PASS), the whole set
together as grading will: failing where it should with the bug, passing without it. A candidate needs
at least one of each; a mutant of lines no test executes is not a candidate at all. Validation runs in
one environment, the file put back after each candidate, so a task costs its tests and nothing else;
the run without the bug depends only on the test files, so candidates sharing them share it.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import itertools
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from envs.backend import Backend
from envs.coverage import Coverage, measure
from envs.grading import is_test_path, run_tests
from envs.mutate import OPERATORS, FunctionSpan, Mutant, functions, mutants, unified_diff
from envs.runtime import Runtime
from images.baseline import Baseline
from storage import Image, Store, Task, TaskKind, TaskStatus

#: The shortest validation timeout: starting the interpreter and importing the project can take this.
MIN_VALIDATION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MutateOptions:
    """How many tasks to make and how."""

    max_tasks: int = 10
    operators: tuple[str, ...] | None = None
    """Operator names (keys of ``envs.mutate.OPERATORS``); None for all."""
    per_function: int = 1
    """Candidates per (function, operator)."""
    max_candidates: int | None = None
    """Candidates to try at most; default ten per task asked for."""
    seed: int = 0
    test_timeout: float = 600.0
    """Seconds for one validation run at most; see :func:`validation_timeout`."""


@dataclass
class OperatorStats:
    """What one operator yielded on one image."""

    candidates: int = 0
    validated: int = 0
    seconds: list[float] = field(default_factory=list)
    """Validation time of each validated task."""
    executions: list[int] = field(default_factory=list)
    """Test executions of each validated task."""
    all_executions: int = 0
    """Test executions of every candidate, the rejected ones included."""


@dataclass(frozen=True)
class MutateReport:
    """The outcome for one image."""

    image: str
    tasks: list[Task]
    stats: dict[str, OperatorStats]
    suite_size: int
    """Stable tests of the image: what validating with the full suite would run per candidate."""


def generate(
    backend: Backend,
    store: Store,
    image: Image,
    options: MutateOptions,
    *,
    cache_dir: Path,
    progress: Progress = no_progress,
) -> MutateReport:
    """Generate, validate and store up to ``options.max_tasks`` mutate-fix tasks for ``image``.

    Each validated task is stored at once, so an interrupted run keeps what it validated.
    """
    if options.operators:
        unknown = sorted(set(options.operators) - set(OPERATORS))
        if unknown:
            raise ForagerError(f"unknown operators {unknown}: choose from {', '.join(OPERATORS)}")
    baseline = Baseline.from_json(
        {"outcomes": image.baseline, "flaky": image.flaky, "durations": image.durations or {}}
    )
    passing = frozenset(baseline.stable("passed"))
    if not image.test_command or not passing:
        raise ForagerError(f"image {image.tag} has no stable passing test to build tasks on")
    subject = image.repository.name
    rng = random.Random(options.seed)
    stats = {name: OperatorStats() for name in options.operators or OPERATORS}
    tasks: list[Task] = []
    rejected = _load_rejected(cache_dir)
    unbroken = _UnbrokenRuns()
    with backend.start(image.tag, episode=f"mutate-{image.id}") as env:
        progress(ProgressEvent(subject, "coverage", "measuring which tests cover which lines"))
        coverage = cached_coverage(env, image, cache_dir)
        if not any(path.endswith(".py") and not is_test_path(path) for path in coverage.lines):
            raise ForagerError(
                f"the tests of {image.tag} execute no file of the repository but themselves, so no bug "
                "injected there can make one fail. If they import the project, they import an installed "
                "copy, not the checkout: rebuild the image (`forager images build --rebuild SOURCE`), "
                "which installs the checkout editable"
            )
        progress(ProgressEvent(subject, "mutants", "generating"))
        candidates = _candidates(env, coverage, passing, baseline.durations, options, rng)
        timeout = validation_timeout(coverage, options.test_timeout)
        limit = options.max_candidates or 10 * options.max_tasks
        for tried, (mutant, covering) in enumerate(candidates[:limit], 1):
            if len(tasks) >= options.max_tasks:
                break
            name = instance_id(image, mutant)
            if (existing := store.get_task(name)) is not None:
                tasks.append(existing)  # validated by an earlier run: resuming costs nothing
                continue
            if name in rejected:
                continue
            progress(
                ProgressEvent(subject, "validate", f"{len(tasks)} tasks, candidate {tried}", tried, limit)
            )
            stats[mutant.operator].candidates += 1
            started = time.monotonic()
            fail_to_pass, pass_to_pass, executions = _validate(
                env, image.test_command, mutant, covering, passing, unbroken, timeout
            )
            stats[mutant.operator].all_executions += executions
            if not fail_to_pass:
                rejected.add(name)
                _save_rejected(cache_dir, rejected)
                continue
            seconds = time.monotonic() - started
            task = _task(image, mutant, fail_to_pass, pass_to_pass, executions, seconds)
            (stored,) = store.add_tasks([task])
            tasks.append(stored)
            stats[mutant.operator].validated += 1
            stats[mutant.operator].seconds.append(seconds)
            stats[mutant.operator].executions.append(executions)
    progress(ProgressEvent(subject, "done", f"{len(tasks)} tasks"))
    return MutateReport(image.tag, tasks, stats, len(passing))


def validation_timeout(coverage: Coverage, limit: float) -> float:
    """Seconds for one validation run: a few times the whole suite's, so a mutant that loops forever
    (a removed ``break``, a flipped loop condition) costs a minute, not ``limit``.

    A validation run is a part of the suite, without coverage's overhead.
    """
    return min(limit, max(MIN_VALIDATION_TIMEOUT_S, 3 * coverage.seconds))


def problem_statement(function: str, path: str, failing: Collection[str]) -> str:
    """What the agent is told: the function that changed and the tests that fail, never the change."""
    shown = sorted(failing)[:10]
    more = f"\n(and {len(failing) - len(shown)} more)" if len(failing) > len(shown) else ""
    tests = "\n".join(f"- {test}" for test in shown)
    return (
        f"A bug was introduced into `{function}` in `{path}`. These tests fail because of it:\n\n"
        f"{tests}{more}\n\n"
        "Find the bug and fix the implementation so that these tests pass again and the rest of the test "
        "suite keeps passing. Do not change the tests."
    )


def cached_coverage(env: Runtime, image: Image, cache_dir: Path) -> Coverage:
    """The image's coverage, measured on first use and kept next to the image's other artifacts."""
    path = cache_dir / "coverage.json.gz"
    if path.is_file():
        with gzip.open(path, "rt") as kept:
            return Coverage.from_json(json.load(kept))
    coverage = measure(env, image.test_command or "")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with gzip.open(partial, "wt") as kept:
        json.dump(coverage.to_json(), kept)
    partial.replace(path)  # an interrupted write leaves no cache that cannot be read
    return coverage


def _load_rejected(cache_dir: Path) -> set[str]:
    """Candidates an earlier run found the tests do not catch: not worth validating again."""
    path = cache_dir / "rejected.json"
    return set(json.loads(path.read_text())) if path.is_file() else set()


def _save_rejected(cache_dir: Path, rejected: set[str]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / "rejected.json.part"
    partial.write_text(json.dumps(sorted(rejected)))
    partial.replace(cache_dir / "rejected.json")


def _candidates(
    env: Runtime,
    coverage: Coverage,
    passing: frozenset[str],
    durations: Mapping[str, float],
    options: MutateOptions,
    rng: random.Random,
) -> list[tuple[Mutant, frozenset[str]]]:
    """Mutants of the functions the stable tests verify, with the tests executing each, cheapest first."""
    found: list[tuple[Mutant, frozenset[str]]] = []
    for path in sorted(coverage.lines):
        if is_test_path(path) or not path.endswith(".py"):
            continue
        try:
            source = env.read_file(path).decode("utf-8")
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
            continue
        found += file_candidates(path, source, coverage, passing, options, rng)
    rng.shuffle(found)  # the seeded tie-break below
    return cheapest_first(found, passing, durations)


def file_candidates(
    path: str,
    source: str,
    coverage: Coverage,
    passing: frozenset[str],
    options: MutateOptions,
    rng: random.Random,
) -> list[tuple[Mutant, frozenset[str]]]:
    """The mutants of ``source`` (the file at ``path``) worth validating, with the tests executing each.

    A function is a target when tests execute its body and every one of them passes in the baseline:
    a mutant's failures are then its own.
    """
    spans: dict[tuple[str, int], FunctionSpan] = {}
    for span in functions(source):
        covering = coverage.tests_covering(path, span.body_start, span.end)
        if covering and covering <= passing:
            spans[span.qualname, span.start] = span
    if not spans:
        return []
    found: list[tuple[Mutant, frozenset[str]]] = []
    for mutant in mutants(
        path,
        source,
        targets={qualname for qualname, _ in spans},
        operators=options.operators,
        rng=rng,
        per_function=options.per_function,
    ):
        # A definition sharing a target's qualname (a property's setter) is no target itself.
        span = spans.get((mutant.function, mutant.function_start))
        if span is not None and (executing := executing_tests(coverage, mutant, span)):
            found.append((mutant, executing))
    return found


def cheapest_first(
    candidates: list[tuple[Mutant, frozenset[str]]],
    passing: frozenset[str],
    durations: Mapping[str, float] | None = None,
) -> list[tuple[Mutant, frozenset[str]]]:
    """``candidates`` (mutant, the tests executing it) in the order to validate them.

    Validating a candidate runs the tests executing it, then every stable test of their files; its
    cost is what those tests take. A test takes the seconds its baseline ``durations`` measured; one
    not measured takes the median of the measured ``passing`` tests, and when none was measured every
    test costs the same, so the cost is the number of test executions. Cheap candidates validate
    fastest and make tasks that grade fastest and whose failing tests point somewhere. Functions take
    turns, cheapest first, so that the first tasks come from as many functions as possible; a
    function's own candidates go cheapest first. Equal costs keep the given order.
    """
    durations = durations or {}
    measured = [durations[test] for test in passing if test in durations]
    unmeasured = statistics.median(measured) if measured else 1.0

    def seconds(test: str) -> float:
        return durations.get(test, unmeasured) if measured else 1.0

    file_seconds: dict[str, float] = defaultdict(float)
    for test in passing:
        file_seconds[test.split("::", 1)[0]] += seconds(test)

    def cost(candidate: tuple[Mutant, frozenset[str]]) -> float:
        files = {test.split("::", 1)[0] for test in candidate[1]}
        # Rounded so that equal costs summed in another order stay equal (and keep the given order).
        return round(sum(map(seconds, candidate[1])) + sum(file_seconds[file] for file in files), 6)

    by_function: dict[tuple[str, str], list[tuple[Mutant, frozenset[str]]]] = defaultdict(list)
    for candidate in sorted(candidates, key=cost):
        by_function[candidate[0].path, candidate[0].function].append(candidate)
    turns = itertools.zip_longest(*by_function.values())  # dicts keep insertion order: cheapest first
    return [candidate for turn in turns for candidate in turn if candidate is not None]


def executing_tests(coverage: Coverage, mutant: Mutant, span: FunctionSpan) -> frozenset[str]:
    """The tests that execute what ``mutant`` changed in the function at ``span``: none can fail otherwise.

    A change to the signature, or to an import the function reads, can be noticed by every test that
    runs the function, so those are all of its tests.
    """
    statement_lines = _statement_lines(mutant.original)
    body = {
        statement_lines.get(line, line)
        for line in mutant.changed_lines
        if span.body_start <= line <= span.end
    }
    if not body:
        return coverage.tests_covering(mutant.path, span.body_start, span.end)
    return frozenset().union(*(coverage.tests_covering(mutant.path, line, line) for line in body))


@functools.lru_cache(maxsize=4)  # the mutants of one file come one after another
def _statement_lines(source: str) -> dict[int, int]:
    """Each line of ``source`` mapped to the first line of the innermost statement holding it.

    Coverage records a statement at its first line only, so a change to the second line of a call
    that spans three is executed by the tests that executed the first.
    """
    starts: dict[int, int] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt) and node.end_lineno is not None:
            for line in range(node.lineno, node.end_lineno + 1):
                starts[line] = max(starts.get(line, 0), node.lineno)
    return starts


class _UnbrokenRuns:
    """The outcome of running a set of tests on the unmutated code, run once per set.

    Every candidate whose failing tests sit in the same test files validates the same set without its
    bug, and the code is then the same, so one run answers them all.
    """

    def __init__(self) -> None:
        self._outcomes: dict[tuple[str, ...], bool] = {}

    def all_pass(
        self, env: Runtime, test_command: str, tests: list[str], timeout: float
    ) -> tuple[bool, int]:
        """(whether every test passed, test executions this call ran)."""
        key = tuple(sorted(tests))
        if key in self._outcomes:
            return self._outcomes[key], 0
        outcomes, _ = run_tests(env, test_command, list(key), timeout)
        self._outcomes[key] = all(outcomes.get(test) == "passed" for test in key)
        return self._outcomes[key], len(key)


def _validate(
    env: Runtime,
    test_command: str,
    mutant: Mutant,
    covering: frozenset[str],
    passing: frozenset[str],
    unbroken: _UnbrokenRuns,
    timeout: float,
) -> tuple[list[str], list[str], int]:
    """(FAIL_TO_PASS, PASS_TO_PASS, test executions); both lists empty when the tests miss ``mutant``.

    The tests executing the mutated lines find the candidates for FAIL_TO_PASS. The final sets are then
    checked the way grading runs them, all in one pytest run: with the bug, FAIL_TO_PASS fails and
    PASS_TO_PASS passes; without it, both pass. Tests that share state can behave differently together
    than apart (six's test_lazy does), and a task must grade the same way it was validated.
    """
    env.write_file(mutant.path, mutant.mutated.encode())
    try:
        first, _ = run_tests(env, test_command, sorted(covering), timeout)
        executions = len(covering)
        fail_to_pass = sorted(test for test in covering if first.get(test) != "passed")
        if not fail_to_pass:
            return [], [], executions
        files = {test.split("::", 1)[0] for test in fail_to_pass}
        pass_to_pass = sorted(t for t in passing if t.split("::", 1)[0] in files and t not in fail_to_pass)
        if not pass_to_pass:
            return [], [], executions
        together = [*fail_to_pass, *pass_to_pass]
        buggy, _ = run_tests(env, test_command, together, timeout)
        executions += len(together)
        if any(buggy.get(t) == "passed" for t in fail_to_pass) or any(
            buggy.get(t) != "passed" for t in pass_to_pass
        ):
            return [], [], executions
    finally:
        env.write_file(mutant.path, mutant.original.encode())
    fixed, ran = unbroken.all_pass(env, test_command, together, timeout)
    executions += ran
    if not fixed:
        return [], [], executions
    return fail_to_pass, pass_to_pass, executions


def instance_id(image: Image, mutant: Mutant) -> str:
    """A stable name: the same mutant of the same image always gets the same id."""
    digest = hashlib.sha256(f"{mutant.path}\n{mutant.mutated}".encode()).hexdigest()[:8]
    return f"{image.repository.name}.{(image.repository.commit or '')[:12]}.{mutant.operator}.{digest}"


def _task(
    image: Image,
    mutant: Mutant,
    fail_to_pass: list[str],
    pass_to_pass: list[str],
    executions: int,
    seconds: float,
) -> Task:
    return Task(
        instance_id=instance_id(image, mutant),
        kind=TaskKind.MUTATE_FIX,
        image_id=image.id,
        status=TaskStatus.VERIFIED,
        setup_patch=unified_diff(mutant.path, mutant.original, mutant.mutated),
        gold_patch=unified_diff(mutant.path, mutant.mutated, mutant.original),
        test_patch="",
        problem_statement=problem_statement(mutant.function, mutant.path, fail_to_pass),
        fail_to_pass=fail_to_pass,
        pass_to_pass=pass_to_pass,
        meta={
            "operator": mutant.operator,
            "family": mutant.family,
            "file": mutant.path,
            "function": mutant.function,
            "line": mutant.line,
            "description": mutant.description,
            "test_executions": executions,
            "validation_seconds": round(seconds, 3),
        },
    )
