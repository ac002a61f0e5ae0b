"""Candidate issue fixes in a repository's history: pure git analysis over a local clone, no environment.

A **candidate** is a change that fixes code and brings the tests that show it, split into what a task
needs: the **gold patch** (every non-test file, docs included: it is the reference fix), the **test
patch** (every file :func:`envs.grading.is_test_path` calls a test file) and a problem statement.
Walking the first-parent history newest first, three shapes are found:

- ``commit``: one commit changing a non-test ``.py`` file and a test file (a test module, or a data file
  a data-driven suite turns into a test: black's ``tests/data/cases/x.py``);
- ``merge``: a GitHub pull-request merge, diffed against its first parent (the pull request's title and
  body are the statement): ``Merge pull request #N from ...``, or, with GitHub's "pull request title"
  merge message, a merge titled ``Title (#N)``; a squash merge is an ordinary commit whose title ends in
  ``(#N)``, which the statement drops;
- ``pair``: a commit changing code but no test, followed within :data:`PAIR_WINDOW` first-parent commits
  by one changing tests but no code, whose tests name a module the first changed (the fix landed first,
  its regression test right after); the commits between may change neither ``.py`` files nor tests.

Statements are cleaned of what gives the fix away (:func:`clean_statement`): diff hunks, and code
quoting lines the gold patch adds.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

import git

from envs.grading import is_test_path

#: A gold patch larger than this is a feature or a refactoring, not a fix an agent can be graded on.
MAX_GOLD_LINES = 2000
MAX_GOLD_FILES = 20
#: How many first-parent commits after a code-only fix its test-only follow-up may come.
PAIR_WINDOW = 3

#: GitHub's merge commit message: ``Merge pull request #N from OWNER/BRANCH``, a blank line, then the
#: pull request's title and body.
_PULL_REQUEST = re.compile(r"\AMerge pull request #\d+ from \S+[ \t]*\n[ \t]*\n(?P<text>.*)\Z", re.DOTALL)
#: GitHub's squash merge: the pull request's title with its number appended, ``Fix parsing (#123)``.
_SQUASH_TITLE = re.compile(r"\s*\(#\d+\)\s*$")
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
#: Tool updates bots make: a linter's new rules rewrite code and tests alike, and fix no behaviour
#: ("[pre-commit.ci] pre-commit autoupdate", "[pre-commit.ci] auto fixes from pre-commit.com hooks").
_BOT_UPDATE = re.compile(r"^\[pre-commit\.ci\]|^pre-commit autoupdate\b", re.IGNORECASE)
#: Trailers that name people (and their e-mail addresses), never the problem: left out of statements.
_IDENTITY_TRAILER = re.compile(
    r"^(?:signed-off-by|co-authored-by|reviewed-by|acked-by|tested-by|reported-by|suggested-by|helped-by"
    r"|cc|change-id):.*\n?",
    re.IGNORECASE | re.MULTILINE,
)
#: A fenced code block of a Markdown message (a pull request body), with its info string.
_FENCE = re.compile(
    r"^(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$\n?", re.DOTALL | re.MULTILINE
)
#: An inline code span.
_SPAN = re.compile(r"(?<!`)`(?P<code>[^`\n]+)`(?!`)")
#: Lines of a diff: a hunk header or a file header.
_DIFF_LINE = re.compile(r"^(?:@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@|diff --git |--- a/|\+\+\+ b/)", re.M)
#: A diff pasted into a message without a fence: from its first line to the next blank line.
_BARE_HUNK = re.compile(r"^(?:diff --git |@@ -\d).*?(?:\n[ \t]*\n|\Z)", re.DOTALL | re.MULTILINE)
#: What replaces code that gives the fix away.
ELIDED = "(code from the fix left out)"
#: Added lines shorter than this (``return x``, ``pass``, ``)``) are too common to give the fix away.
_MIN_QUOTED = 12
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

Shape = Literal["commit", "merge", "pair"]


@dataclass(frozen=True)
class Candidate:
    """A change that fixed code and brought tests, split into what a task needs."""

    sha: str
    """The commit whose tree holds the fix and its tests (for a pair, the test commit)."""
    parent: str
    """The task's start commit, whose image the task runs in: the first parent of the (first) commit."""
    message: str
    """The problem statement: see :func:`problem_statement` and :func:`clean_statement`."""
    title: str
    """The statement's first line."""
    gold_patch: str
    """``git diff --binary`` from the parent of every changed non-test file."""
    test_patch: str
    """``git diff --binary`` from the parent of every changed test file (data and conftest included)."""
    test_files: tuple[str, ...]
    """The test files the change adds or changes (other than ``conftest.py`` and ``__init__.py``, present
    at the end): modules, and data a suite reads; validation runs the tests they make
    (:func:`envs.runner_targets.targets_of_files`)."""
    shape: Shape = "commit"
    commits: tuple[str, ...] = ()
    """Every commit the change spans, oldest first."""


def candidate_commits(
    repo: git.Repo,
    *,
    max_commits: int,
    rev: str = "HEAD",
    since: str | None = None,
    until: str | None = None,
) -> list[Candidate]:
    """The candidates among the last ``max_commits`` first-parent commits up to ``rev``, newest first.

    ``since`` and ``until`` narrow the walk: each is a date (``2021-06-30``, ISO 8601, compared with the
    commit date) or a ref. A ref ``until`` replaces ``rev``; a ref ``since`` ends the walk before that
    commit (``since..rev``). A change is a candidate (see the module doc for its shapes) unless:

    - it starts at a root commit (no parent to start from);
    - it is a merge whose message is not GitHub's pull-request shape: "Merge branch 'x'" states no
      problem (a merge's own commits are not walked: first-parent history sees only the merge);
    - its message says it is a revert, a version bump or a bot's tool update (see :func:`is_chore`);
    - its gold patch changes more than :data:`MAX_GOLD_LINES` lines or :data:`MAX_GOLD_FILES` files
      (a binary file counts as a file and no lines).
    """
    newest_first = list(_walk(repo, max_commits, rev, since, until))
    found: list[Candidate] = []
    for index, commit in enumerate(newest_first):
        candidate = _candidate(repo, commit)
        if candidate is None and _changes_code_only(repo, commit):
            # The commits after this one, oldest first: where its tests may have landed.
            later = newest_first[max(0, index - PAIR_WINDOW) : index][::-1]
            candidate = _pair(repo, commit, later)
        if candidate is not None:
            found.append(candidate)
    return found


def _walk(
    repo: git.Repo, max_commits: int, rev: str, since: str | None, until: str | None
) -> Iterator[git.Commit]:
    options: dict[str, str] = {}
    since_moment, until_moment = _moment(since, end_of_day=False), _moment(until, end_of_day=True)
    if until is not None and until_moment is None:
        rev = until
    if since is not None and since_moment is None:
        rev = f"{since}..{rev}"
    if since_moment is not None:
        options["since"] = since_moment
    if until_moment is not None:
        options["until"] = until_moment
    yield from repo.iter_commits(rev, first_parent=True, max_count=max_commits, **options)


def _moment(text: str | None, *, end_of_day: bool) -> str | None:
    """``text`` as a moment git understands, when it is a date; None for a ref (or nothing).

    A bare date means the start of that day (UTC), or its last second with ``end_of_day``."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if len(text) == 10 and end_of_day:
        moment = datetime.combine(date.fromisoformat(text), time(23, 59, 59))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def problem_statement(message: str, *, merge: bool) -> str | None:
    """The problem statement a commit message gives, or None when it gives none.

    A GitHub pull-request merge gives the pull request's title and body, whether its message is GitHub's
    ``Merge pull request #N from ...`` or the pull request's own title, ``Title (#N)``; any other merge
    (``Merge branch 'stable'``) gives none. A plain commit gives its subject and body; a squash merge's
    title loses its ``(#N)``. Identity trailers are dropped either way.
    """
    if merge:
        match = _PULL_REQUEST.match(message.strip())
        if match is not None:
            message = match["text"]
        elif not _SQUASH_TITLE.search(message.strip().partition("\n")[0]):
            return None
    statement = _IDENTITY_TRAILER.sub("", message).strip()
    if not statement:
        return None
    title, newline, body = statement.partition("\n")
    return _SQUASH_TITLE.sub("", title) + newline + body


def is_chore(statement: str) -> bool:
    """Whether a problem statement belongs to a revert, a version bump or a bot's tool update rather than
    a fix."""
    title = statement.splitlines()[0].strip()
    return bool(
        _REVERT_TITLE.match(title)
        or _REVERT_BODY.search(statement)
        or _VERSION_BUMP.match(title)
        or _BOT_UPDATE.match(title)
    )


def clean_statement(statement: str, gold_patch: str) -> str:
    """``statement`` without what hands the agent the fix.

    A fenced code block holding a diff, or quoting a line the gold patch adds, becomes :data:`ELIDED`;
    so does an inline code span quoting such a line (added lines shorter than 12 characters are too
    common to count). Code that shows the problem (a traceback, a call that fails) stays.
    """
    added = _added_lines(gold_patch)

    def gives_away(code: str) -> bool:
        lines = {_normal(line) for line in code.splitlines()}
        return bool(_DIFF_LINE.search(code)) or bool(lines & added)

    def fence(match: re.Match[str]) -> str:
        return f"{ELIDED}\n" if gives_away(match["body"]) else match[0]

    statement = _FENCE.sub(fence, statement)
    statement = _SPAN.sub(lambda match: ELIDED if gives_away(match["code"]) else match[0], statement)
    # Unfenced hunks (a message that pastes a diff as it is): from the hunk to the next blank line.
    statement = _BARE_HUNK.sub(f"{ELIDED}\n\n", statement)
    return statement.strip()


def _added_lines(patch: str) -> set[str]:
    """The lines ``patch`` adds that it does not also remove (moved lines give nothing away)."""
    lines = patch.splitlines()
    removed = {_normal(line[1:]) for line in lines if line.startswith("-") and not line.startswith("---")}
    added = {_normal(line[1:]) for line in lines if line.startswith("+") and not line.startswith("+++")}
    return {text for text in added - removed if len(text) >= _MIN_QUOTED}


def _normal(line: str) -> str:
    return " ".join(line.split())


def _candidate(repo: git.Repo, commit: git.Commit) -> Candidate | None:
    if not commit.parents:
        return None
    merge = len(commit.parents) > 1
    statement = problem_statement(str(commit.message), merge=merge)
    if statement is None or is_chore(statement):
        return None
    shape: Shape = "merge" if merge else "commit"
    return _split(repo, commit.parents[0].hexsha, commit, statement, shape, (commit,))


def _split(
    repo: git.Repo,
    parent: str,
    end: git.Commit,
    statement: str,
    shape: Shape,
    commits: tuple[git.Commit, ...],
) -> Candidate | None:
    """The candidate of the change from ``parent`` to ``end``, or None when it is not one."""
    changes = _numstat(repo, parent, end.hexsha)
    tests = [path for path in changes if is_test_path(path)]
    gold = [path for path in changes if not is_test_path(path)]
    modules = tuple(path for path in tests if _is_test_file(path) and _exists(end, path))
    if not modules or not any(path.endswith(".py") for path in gold):
        return None
    if len(gold) > MAX_GOLD_FILES or sum(changes[path] for path in gold) > MAX_GOLD_LINES:
        return None
    gold_patch = _diff(repo, parent, end.hexsha, gold)
    message = clean_statement(statement, gold_patch)
    return Candidate(
        sha=end.hexsha,
        parent=parent,
        message=message,
        title=message.splitlines()[0].strip(),
        gold_patch=gold_patch,
        test_patch=_diff(repo, parent, end.hexsha, tests),
        test_files=modules,
        shape=shape,
        commits=tuple(commit.hexsha for commit in commits),
    )


def _changes_code_only(repo: git.Repo, commit: git.Commit) -> bool:
    if len(commit.parents) != 1:
        return False
    changed = _numstat(repo, commit.parents[0].hexsha, commit.hexsha)
    return any(path.endswith(".py") and not is_test_path(path) for path in changed) and not any(
        is_test_path(path) for path in changed
    )


def _pair(repo: git.Repo, fix: git.Commit, later: list[git.Commit]) -> Candidate | None:
    """The fix ``fix`` with the first of ``later`` that brings its tests, or None; see the module doc."""
    statement = problem_statement(str(fix.message), merge=False)
    if statement is None or is_chore(statement):
        return None
    code = _numstat(repo, fix.parents[0].hexsha, fix.hexsha)
    names = {posixpath.splitext(posixpath.basename(path))[0] for path in code if path.endswith(".py")}
    names |= {posixpath.basename(posixpath.dirname(path)) for path in code if path.endswith("/__init__.py")}
    names.discard("__init__")
    between: list[git.Commit] = []
    for commit in later:
        if len(commit.parents) != 1:
            return None
        changed = _numstat(repo, commit.parents[0].hexsha, commit.hexsha)
        if any(not is_test_path(path) and path.endswith(".py") for path in changed):
            return None  # more code: the fix is no longer alone in the gold patch
        tests = [path for path in changed if is_test_path(path)]
        if tests:
            if not _tests_name(repo, commit, tests, names):
                return None
            return _split(repo, fix.parents[0].hexsha, commit, statement, "pair", (fix, *between, commit))
        between.append(commit)
    return None


def _tests_name(repo: git.Repo, commit: git.Commit, tests: list[str], names: set[str]) -> bool:
    """Whether the test files' paths or the lines the commit adds to them name one of ``names``."""
    words = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b") if names else None
    if words is None:
        return False
    if any(words.search(path) for path in tests):
        return True
    patch = _diff(repo, commit.parents[0].hexsha, commit.hexsha, tests)
    return any(line.startswith("+") and words.search(line) for line in patch.splitlines())


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


def _is_test_file(path: str) -> bool:
    return posixpath.basename(path) not in ("conftest.py", "__init__.py")


def _exists(commit: git.Commit, path: str) -> bool:
    try:
        commit.tree / path
    except KeyError:
        return False
    return True
