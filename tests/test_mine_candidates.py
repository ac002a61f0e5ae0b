"""Candidate fixes beyond one commit that changes code and tests (pure git): pairs, squash merges,
statements cleaned of the fix, and walks narrowed by date or ref."""

from __future__ import annotations

import os
from pathlib import Path

import git
import pytest

from envs.candidates import ELIDED, PAIR_WINDOW, candidate_commits, clean_statement, problem_statement
from envs.swebench import files_touched
from tests.repos import commit, make_repo, python_project

PARSE = "def parse(ts):\n    if not ts:\n        raise ValueError('no timestamp')\n    return int(ts)\n"
FIXED = PARSE.replace("if not ts:", "if ts is None:")
TEST = "from calc.stamp import parse\n\n\ndef test_zero():\n    assert parse(0) == 0\n"


def _dated(repo: git.Repo, files: dict[str, str], message: str, when: str) -> str:
    os.environ["GIT_AUTHOR_DATE"] = os.environ["GIT_COMMITTER_DATE"] = when
    try:
        return commit(repo, files, message)
    finally:
        del os.environ["GIT_AUTHOR_DATE"], os.environ["GIT_COMMITTER_DATE"]


def test_a_fix_whose_test_lands_in_a_later_commit_is_one_candidate(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {**python_project(), "src/calc/stamp.py": PARSE})
    fix = commit(repo, {"src/calc/stamp.py": FIXED}, "Allow a timestamp of 0")
    docs = commit(repo, {"README.md": "Timestamps may be 0.\n"}, "Document timestamps")
    test = commit(repo, {"tests/test_stamp.py": TEST}, "Test a timestamp of 0")

    (pair,) = candidate_commits(repo, max_commits=10)

    assert (pair.shape, pair.sha, pair.commits) == ("pair", test, (fix, docs, test))
    assert pair.parent == repo.commit(fix).parents[0].hexsha
    assert pair.message == "Allow a timestamp of 0", "the fix's message, not the test's"
    assert files_touched(pair.gold_patch) == ["README.md", "src/calc/stamp.py"]
    assert files_touched(pair.test_patch) == ["tests/test_stamp.py"]
    assert pair.test_files == ("tests/test_stamp.py",)


def test_a_fix_is_not_paired_across_other_code_unrelated_tests_or_too_far(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {**python_project(), "src/calc/stamp.py": PARSE})
    # More code between the fix and its test: the gold patch would hold both changes.
    commit(repo, {"src/calc/stamp.py": FIXED}, "Allow a timestamp of 0")
    commit(repo, {"src/calc/other.py": "X = 1\n"}, "Add other")
    commit(repo, {"tests/test_stamp.py": TEST}, "Test a timestamp of 0")
    # A test that names nothing the fix changed.
    commit(repo, {"src/calc/neg.py": "def neg(a):\n    return -a\n"}, "Add neg")
    commit(repo, {"tests/test_misc.py": "def test_true():\n    assert True\n"}, "Test truth")
    # Too far: more commits between than the window allows.
    commit(repo, {"src/calc/neg.py": "def neg(a):\n    return 0 - a\n"}, "Negate by subtraction")
    for number in range(PAIR_WINDOW):
        commit(repo, {"docs/notes.md": f"{number}\n"}, f"Note {number}")
    test_neg = "from calc.neg import neg\n\n\ndef test_neg():\n    assert neg(1) == -1\n"
    commit(repo, {"tests/test_neg.py": test_neg}, "Test neg")

    assert candidate_commits(repo, max_commits=20) == []


def test_a_squash_merge_loses_its_pull_request_number() -> None:
    assert problem_statement("Allow a timestamp of 0 (#123)\n\n* fix\n* test\n", merge=False) == (
        "Allow a timestamp of 0\n\n* fix\n* test"
    )
    assert problem_statement("Support (#1) in names\n", merge=False) == "Support (#1) in names"


def test_statements_are_cleaned_of_the_fix() -> None:
    gold = (
        "--- a/src/calc/stamp.py\n+++ b/src/calc/stamp.py\n@@ -1,4 +1,4 @@\n def parse(ts):\n"
        "-    if not ts:\n+    if ts is None:\n         raise ValueError('no timestamp')\n"
    )
    statement = (
        "Allow a timestamp of 0\n\n"
        "`parse(0)` raised `ValueError`; the check is now `if ts is None:`.\n\n"
        "```python\n>>> parse(0)\nValueError: no timestamp\n```\n\n"
        "The change:\n\n```diff\n@@ -1 +1 @@\n-    if not ts:\n+    if ts is None:\n```\n\n"
        "```\nif ts is None:\n```\n\n"
        "@@ -2,1 +2,1 @@\n-    if not ts:\n+    if ts is None:\n\nThanks!"
    )
    assert clean_statement(statement, gold) == (
        "Allow a timestamp of 0\n\n"
        f"`parse(0)` raised `ValueError`; the check is now {ELIDED}.\n\n"
        "```python\n>>> parse(0)\nValueError: no timestamp\n```\n\n"
        f"The change:\n\n{ELIDED}\n\n{ELIDED}\n\n{ELIDED}\n\nThanks!"
    )


def test_candidate_statements_are_cleaned(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {**python_project(), "src/calc/stamp.py": PARSE})
    commit(
        repo,
        {"src/calc/stamp.py": FIXED, "tests/test_stamp.py": TEST},
        "Allow a timestamp of 0 (#7)\n\nUse `if ts is None:` instead.",
    )
    (candidate,) = candidate_commits(repo, max_commits=5)
    assert candidate.message == f"Allow a timestamp of 0\n\nUse {ELIDED} instead."
    assert candidate.title == "Allow a timestamp of 0"


@pytest.fixture
def dated(tmp_path: Path) -> tuple[git.Repo, list[str]]:
    repo = make_repo(tmp_path / "r", {**python_project(), "src/calc/stamp.py": PARSE})
    fixes = []
    for year in (2019, 2021, 2023):
        stamp = PARSE.replace("no timestamp", f"no timestamp ({year})")
        tests = TEST + f"\n\ndef test_{year}():\n    assert True\n"
        files = {"src/calc/stamp.py": stamp, "tests/test_stamp.py": tests}
        fixes.append(_dated(repo, files, f"Fix {year}", f"{year}-06-15T12:00:00+00:00"))
    repo.create_tag("v2021", fixes[1])
    return repo, fixes


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        ("2020-01-01", None, [2, 1]),
        (None, "2021-06-15", [1, 0]),
        ("2020-01-01", "2022-12-31", [1]),
        ("v2021", None, [2]),
        (None, "v2021", [1, 0]),
        ("2021-06-15T13:00:00+00:00", None, [2]),
    ],
)
def test_the_walk_is_narrowed_by_dates_and_refs(
    dated: tuple[git.Repo, list[str]], since: str | None, until: str | None, expected: list[int]
) -> None:
    repo, fixes = dated
    found = candidate_commits(repo, max_commits=50, since=since, until=until)
    assert [c.sha for c in found] == [fixes[index] for index in expected]


def test_an_unknown_ref_is_a_git_error(dated: tuple[git.Repo, list[str]]) -> None:
    repo, _ = dated
    with pytest.raises(git.GitCommandError):
        candidate_commits(repo, max_commits=50, since="no-such-ref")
