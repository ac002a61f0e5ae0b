"""Issue-fix tasks mined from a repository's history, R2E-Gym style: past fixes that came with tests.

Two halves, kept apart:

- :func:`candidate_commits` is pure git-history analysis over a local clone. Walking the first-parent
  history newest first, a commit is a candidate when its diff against its (first) parent changes at
  least one non-test ``.py`` file and at least one test module. The diff splits into the **gold patch**
  (every non-test file, docs included: it is the reference fix) and the **test patch** (every file
  :func:`envs.grading.is_test_path` calls a test file); the commit message is the problem statement.
- :func:`mine` turns candidates into verified tasks: it builds the image of each candidate's parent, runs
  the touched test modules with the test patch alone and again with the gold patch, keeps the tests that
  flip to passing (FAIL_TO_PASS) and those that pass throughout (PASS_TO_PASS), then grades the task
  with the real grader in fresh environments before storing it.

A mined task starts at the parent commit **with the new tests withheld**: they come with the test patch
at grading time, as in SWE-bench, so the agent sees the problem statement but not the regression test.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import git

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress
from envs.backend import Backend
from envs.grading import git_apply, is_test_path, run_tests
from envs.runtime import Runtime
from envs.tasks import verify
from images.baseline import Baseline
from images.builder import BuildResult, ImageBuilder
from images.sources import SourceSpec, fetch, parse_source
from storage import ImageStatus, Store, Task, TaskKind, TaskStatus

#: A gold patch larger than this is a feature or a refactoring, not a fix an agent can be graded on.
MAX_GOLD_LINES = 2000
MAX_GOLD_FILES = 20
#: Most tests taken from neighbouring test files when the touched ones give no PASS_TO_PASS test.
MAX_NEIGHBOURS = 100

#: GitHub's merge commit message: ``Merge pull request #N from OWNER/BRANCH``, a blank line, then the
#: pull request's title and body.
_PULL_REQUEST = re.compile(r"\AMerge pull request #\d+ from \S+[ \t]*\n[ \t]*\n(?P<text>.*)\Z", re.DOTALL)
#: Reverts (git's ``Revert "..."`` and, since git 2.43, ``Reapply "..."``) undo or redo another commit:
#: their message describes that commit, not a problem, and the other commit is mined on its own.
_REVERT_TITLE = re.compile(r"^(?:revert|reapply)\b", re.IGNORECASE)
_REVERT_BODY = re.compile(r"^This reverts commit [0-9a-f]{7,40}", re.MULTILINE)
#: Release chores, by their title: "Bump version to 1.2", "Bump foo from 1.0 to 1.1", "Release 1.2",
#: "Version 1.2", "Prepare the 1.2 release", "v1.2.3". Their test changes check a version, not a
#: behaviour. "Release the lock ..." is a fix: "release" counts only before a version number.
_VERSION_BUMP = re.compile(
    r"^(?:bump(?:ed|s)?\b|(?:release|version)\s+v?\d|prepare\b.*\brelease\b|v?\d+(?:\.\d+)+\s*$)",
    re.IGNORECASE,
)
#: Trailers that name people (and their e-mail addresses), never the problem: left out of statements.
_IDENTITY_TRAILER = re.compile(
    r"^(?:signed-off-by|co-authored-by|reviewed-by|acked-by|tested-by|reported-by|suggested-by|helped-by"
    r"|cc|change-id):.*\n?",
    re.IGNORECASE | re.MULTILINE,
)
#: Options that make ``git diff`` print a patch ``git apply`` takes whatever the user's configuration
#: says (``diff.noprefix``, ``color.diff``, external diff drivers, textconv filters). ``--no-renames``
#: keeps the split by path exact: a rename from a source file to a test file becomes a deletion in one
#: patch and an addition in the other rather than a rename neither patch could apply alone.
_DIFF_OPTIONS = (
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
#: Paths are given to git as they are, never as patterns: a file named ``test_[x].py`` is one file.
_LITERAL_PATHS = {"GIT_LITERAL_PATHSPECS": "1"}
#: Where validation keeps its patches in the environment.
_WORKSPACE = "/tmp/forager-mine"


class MineError(ForagerError):
    """A source that has no history to mine."""


@dataclass(frozen=True)
class Candidate:
    """A commit that changed both code and tests, split into what a task needs."""

    sha: str
    parent: str
    """The first parent: the task's start commit, whose image the task runs in."""
    message: str
    """The problem statement: the commit's subject and body, or a pull request's title and body for a
    GitHub merge, without identity trailers (``Signed-off-by`` ...)."""
    title: str
    """The statement's first line."""
    gold_patch: str
    """``git diff --binary`` from the parent of every changed non-test file."""
    test_patch: str
    """``git diff --binary`` from the parent of every changed test file (data and conftest included)."""
    test_files: tuple[str, ...]
    """The test modules the commit adds or changes (``.py`` test files other than ``conftest.py`` and
    ``__init__.py``, present at the commit): what validation runs."""


@dataclass(frozen=True)
class Skipped:
    """A candidate that did not become a task, and why."""

    sha: str
    reason: str


@dataclass(frozen=True)
class MineReport:
    """The outcome of mining one source."""

    source: str
    tasks: list[Task]
    """Every task of the walked history that is stored now: validated by this run or by an earlier one."""
    candidates: int
    """Candidates found in the walked history."""
    tried: int
    """Candidates this run validated (those already stored cost nothing and do not count)."""
    skipped: list[Skipped]
    builds: list[BuildResult]
    """The image builds this run asked for, cached ones included (``BuildResult.cached``)."""


def candidate_commits(repo: git.Repo, *, max_commits: int, rev: str = "HEAD") -> list[Candidate]:
    """The candidates among the last ``max_commits`` first-parent commits up to ``rev``, newest first.

    A commit is a candidate when, against its first parent, it changes a non-test ``.py`` file and a
    test module (see :attr:`Candidate.test_files`), and none of these holds:

    - it is a root commit (no parent to start from);
    - it is a merge whose message is not GitHub's pull-request shape: "Merge branch 'x'" states no
      problem (a merge's own commits are not walked: first-parent history sees only the merge);
    - its message says it is a revert or a version bump (see ``_REVERT_TITLE``, ``_REVERT_BODY`` and
      ``_VERSION_BUMP``; for a pull request the title is checked);
    - its gold patch changes more than :data:`MAX_GOLD_LINES` lines or :data:`MAX_GOLD_FILES` files
      (a binary file counts as a file and no lines).
    """
    found = []
    for commit in repo.iter_commits(rev, first_parent=True, max_count=max_commits):
        candidate = _candidate(repo, commit)
        if candidate is not None:
            found.append(candidate)
    return found


def problem_statement(message: str, *, merge: bool) -> str | None:
    """The problem statement a commit message gives, or None when it gives none.

    A GitHub pull-request merge gives the pull request's title and body; any other merge gives none.
    A plain commit gives its subject and body. Identity trailers are dropped either way.
    """
    if merge:
        match = _PULL_REQUEST.match(message.strip())
        if match is None:
            return None
        message = match["text"]
    statement = _IDENTITY_TRAILER.sub("", message).strip()
    return statement or None


def is_chore(statement: str) -> bool:
    """Whether a problem statement belongs to a revert or a version bump rather than a fix."""
    title = statement.splitlines()[0].strip()
    return bool(_REVERT_TITLE.match(title) or _REVERT_BODY.search(statement) or _VERSION_BUMP.match(title))


def _candidate(repo: git.Repo, commit: git.Commit) -> Candidate | None:
    if not commit.parents:
        return None
    statement = problem_statement(str(commit.message), merge=len(commit.parents) > 1)
    if statement is None or is_chore(statement):
        return None
    parent = commit.parents[0].hexsha
    changes = _numstat(repo, parent, commit.hexsha)
    tests = [path for path in changes if is_test_path(path)]
    gold = [path for path in changes if not is_test_path(path)]
    modules = tuple(path for path in tests if _is_test_module(path) and _exists(commit, path))
    if not modules or not any(path.endswith(".py") for path in gold):
        return None
    if len(gold) > MAX_GOLD_FILES or sum(changes[path] for path in gold) > MAX_GOLD_LINES:
        return None
    return Candidate(
        sha=commit.hexsha,
        parent=parent,
        message=statement,
        title=statement.splitlines()[0].strip(),
        gold_patch=_diff(repo, parent, commit.hexsha, gold),
        test_patch=_diff(repo, parent, commit.hexsha, tests),
        test_files=modules,
    )


def _numstat(repo: git.Repo, parent: str, sha: str) -> dict[str, int]:
    """Changed path -> lines added plus removed (0 for a binary file), in git's order."""
    output = repo.git.diff("--numstat", "-z", *_DIFF_OPTIONS, parent, sha, strip_newline_in_stdout=False)
    changes: dict[str, int] = {}
    # With -z (and no renames) each entry is "ADDED\tREMOVED\tPATH\0"; a binary file shows "-\t-".
    for entry in output.split("\0"):
        if entry:
            added, removed, path = entry.split("\t", 2)
            changes[path] = sum(int(count) for count in (added, removed) if count.isdigit())
    return changes


def _diff(repo: git.Repo, parent: str, sha: str, paths: list[str]) -> str:
    # The patch exactly as git prints it: GitPython would otherwise drop its final newline.
    return repo.git.diff(
        "--binary",
        *_DIFF_OPTIONS,
        parent,
        sha,
        "--",
        *paths,
        env=_LITERAL_PATHS,
        strip_newline_in_stdout=False,
    )


def _is_test_module(path: str) -> bool:
    return path.endswith(".py") and posixpath.basename(path) not in ("conftest.py", "__init__.py")


def _exists(commit: git.Commit, path: str) -> bool:
    try:
        commit.tree / path
    except KeyError:
        return False
    return True


def mine(
    builder: ImageBuilder,
    backend: Backend,
    store: Store,
    spec: SourceSpec,
    *,
    max_tasks: int,
    max_commits: int = 200,
    test_timeout: float = 600,
    progress: Progress = no_progress,
) -> MineReport:
    """Mine up to ``max_tasks`` verified issue-fix tasks from the history of ``spec``; see the module doc.

    ``spec`` is a git URL or a local git repository; its ref (default: HEAD) is where the walk of
    ``max_commits`` commits starts. ``store`` must be the builder's store: tasks point at its images;
    environments run on ``backend``.
    For each candidate, newest first:

    1. the instance id ``NAME.SHA12`` already stored: the task counts, nothing is done (a run resumes);
    2. the image of ``SOURCE@PARENT`` is built, or reused when the builder has it; a failed build skips;
    3. in one environment: the test patch is applied and the touched test modules are run as files
       (every test of a file is reported, the new ones included, in one pytest run), then the gold patch
       is applied and they run again. FAIL_TO_PASS: the tests that pass now and did not (failed, error,
       missing) before. PASS_TO_PASS: those that passed both times. Tests the image's baseline calls
       flaky count in neither. When no test of the touched modules passed before the fix (they hold only
       new tests, or cannot be imported without it), PASS_TO_PASS comes from up to
       :data:`MAX_NEIGHBOURS` stable passing baseline tests of other test files in the same directories,
       run in both states too; when still none, PASS_TO_PASS is empty, and ``meta["pass_to_pass_from"]``
       says which of ``test_files``, ``neighbours`` and ``none`` it is. No FAIL_TO_PASS test skips;
    4. the task is graded with :func:`envs.tasks.verify` in fresh environments: the gold patch must
       resolve it and the unmodified start must be unresolved, or the candidate is skipped;
    5. the task is stored ``verified`` at once, so an interrupted run keeps what it validated.

    Skipped candidates are tried again by the next run (a failed build may have been a network failure).

    Raises:
        MineError: ``spec`` is a PyPI release (an sdist has no history) or a folder that is not a git
            repository.
        SourceError: the source cannot be cloned.
    """
    _check_has_history(spec)
    progress(ProgressEvent(spec.name, "history", f"walking up to {max_commits} commits"))
    candidates = _list_candidates(builder.home, spec, max_commits)
    tasks: list[Task] = []
    skipped: list[Skipped] = []
    builds: list[BuildResult] = []
    tried = 0
    for number, candidate in enumerate(candidates, 1):
        if len(tasks) >= max_tasks:
            break
        if (existing := store.get_task(instance_id(spec, candidate))) is not None:
            tasks.append(existing)
            continue
        tried += 1
        progress(
            ProgressEvent(
                spec.name, "validate", f"{len(tasks)} tasks, {candidate.sha[:12]}", number, len(candidates)
            )
        )
        outcome = _mine_one(builder, backend, store, spec, candidate, test_timeout, builds)
        if isinstance(outcome, str):
            skipped.append(Skipped(candidate.sha, outcome))
            continue
        (stored,) = store.add_tasks([outcome])
        tasks.append(stored)
    progress(ProgressEvent(spec.name, "done", f"{len(tasks)} tasks from {len(candidates)} candidates"))
    return MineReport(spec.text, tasks, len(candidates), tried, skipped, builds)


def instance_id(spec: SourceSpec, candidate: Candidate) -> str:
    """``NAME.SHA12``: the same commit of the same source always gets the same id."""
    return f"{spec.name}.{candidate.sha[:12]}"


def _check_has_history(spec: SourceSpec) -> None:
    if spec.kind == "pypi":
        raise MineError(
            f"{spec.text}: a PyPI sdist has no history to mine; give the project's git URL or a local clone"
        )
    if spec.kind == "local":
        try:
            git.Repo(spec.location).close()
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise MineError(
                f"{spec.text} is not a git repository, so it has no history to mine; give a clone"
            ) from exc


def _list_candidates(home: Path, spec: SourceSpec, max_commits: int) -> list[Candidate]:
    """Clone ``spec`` into a scratch folder just long enough to read its history."""
    scratch = home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="mine-") as tmp:
        # Only git sources get here, so the package index settings are never used.
        checkout = fetch(spec, Path(tmp) / "src", sdist_cache=home / "cache" / "sdists", index_url="")
        with git.Repo(checkout.path) as repo:
            return candidate_commits(repo, max_commits=max_commits, rev=checkout.commit)


def _mine_one(
    builder: ImageBuilder,
    backend: Backend,
    store: Store,
    spec: SourceSpec,
    candidate: Candidate,
    test_timeout: float,
    builds: list[BuildResult],
) -> Task | str:
    """The verified task ``candidate`` makes, or why it makes none."""
    built = builder.build(parse_source(f"{spec.location}@{candidate.parent}"))
    builds.append(built)
    image = store.get_image(built.tag) if built.tag else None
    if built.status != ImageStatus.READY or image is None or not image.test_command:
        return f"the image of the parent commit failed to build ({built.failure_class}): {built.reason}"
    baseline = Baseline.from_json({"outcomes": image.baseline, "flaky": image.flaky})
    with backend.start(image.tag, episode=f"mine-{candidate.sha[:12]}") as env:
        verdict = _validate(env, image.test_command, baseline, candidate, test_timeout)
    if isinstance(verdict, str):
        return verdict
    task = Task(
        instance_id=instance_id(spec, candidate),
        kind=TaskKind.ISSUE_FIX,
        image_id=image.id,
        status=TaskStatus.VERIFIED,
        setup_patch="",
        gold_patch=candidate.gold_patch,
        test_patch=candidate.test_patch,
        problem_statement=candidate.message,
        fail_to_pass=verdict.fail_to_pass,
        pass_to_pass=verdict.pass_to_pass,
        meta={
            "commit": candidate.sha,
            "parent": candidate.parent,
            "source": spec.location,
            "title": candidate.title,
            "pass_to_pass_from": verdict.pass_to_pass_from,
        },
    )
    verification = verify(backend, task, image, timeout=test_timeout)
    if not verification.ok:
        return (
            f"the real grader disagrees: gold patch {verification.gold.status}, "
            f"unmodified start {verification.start.status}"
        )
    # Both validation runs, then both grades (each runs every FAIL_TO_PASS and PASS_TO_PASS test).
    graded = 2 * (len(verdict.fail_to_pass) + len(verdict.pass_to_pass))
    task.meta = {**task.meta, "test_executions": verdict.executions + graded}
    return task


@dataclass(frozen=True)
class _Verdict:
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    pass_to_pass_from: str
    """``test_files``, ``neighbours`` or ``none``: see :func:`mine`."""
    executions: int
    """Tests reported by the validation runs."""


def _validate(
    env: Runtime, command: str, baseline: Baseline, candidate: Candidate, timeout: float
) -> _Verdict | str:
    """Run the touched test modules with the test patch, then with the gold patch too; see :func:`mine`."""
    if not _apply(env, candidate.test_patch, "test"):
        return "the test patch does not apply to the parent commit's image"
    files = list(candidate.test_files)
    before, timed_out = _run(env, command, files, timeout)
    if timed_out:
        return f"the touched test files ran out of time ({timeout:.0f} s) before the fix"
    executions = len(before)
    neighbours: list[str] = []
    if not _passing(before, baseline.flaky):
        directories = {posixpath.dirname(path) for path in files}
        neighbours = [
            test
            for test in baseline.stable("passed")
            if (path := test.split("::", 1)[0]) not in files and posixpath.dirname(path) in directories
        ][:MAX_NEIGHBOURS]
        if neighbours:
            outcomes, timed_out = _run(env, command, neighbours, timeout)
            if timed_out:
                return f"the neighbouring tests ran out of time ({timeout:.0f} s) before the fix"
            before = {**before, **outcomes}
            executions += len(outcomes)
    if not _apply(env, candidate.gold_patch, "gold"):
        return "the gold patch does not apply after the test patch"
    after, timed_out = _run(env, command, files + neighbours, timeout)
    if timed_out:
        return f"the tests ran out of time ({timeout:.0f} s) after the fix"
    executions += len(after)
    fixed = _passing(after, baseline.flaky)
    fail_to_pass = sorted(fixed - _passing(before, baseline.flaky) - set(neighbours))
    if not fail_to_pass:
        return "no test fails before the fix and passes after it"
    pass_to_pass = sorted(fixed & _passing(before, baseline.flaky))
    origin = "none" if not pass_to_pass else "neighbours" if neighbours else "test_files"
    return _Verdict(fail_to_pass, pass_to_pass, origin, executions)


def _passing(outcomes: Mapping[str, str], flaky: frozenset[str]) -> set[str]:
    return {test for test, outcome in outcomes.items() if outcome == "passed" and test not in flaky}


def _run(env: Runtime, command: str, tests: list[str], timeout: float) -> tuple[dict[str, str], bool]:
    """(outcomes, whether the run ran out of time) of ``tests``, test files or node ids."""
    outcomes, observation = run_tests(env, command, tests, timeout)
    return outcomes, observation.timed_out


def _apply(env: Runtime, patch: str, name: str) -> bool:
    """Apply ``patch`` to the environment's repository; False when ``git apply`` refuses it."""
    return git_apply(env, patch, f"{_WORKSPACE}/{name}.diff").exit_code == 0
