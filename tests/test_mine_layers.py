"""Which commits may share one install: the environment a commit's build would plan (git and files only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.build_result import BuildOptions
from images.layers import Environment, commit_tree, plan_environment, release_version
from images.sources import parse_source
from tests.repos import PYPROJECT, commit, make_repo, python_project
from tests.test_builder import UV_LOCK

START = PYPROJECT.format(name="calc", dependencies="")
WORKFLOW = """\
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: pip install -e . hypothesis
      - run: pytest
"""


def environment_of(repo, sha: str, tmp_path: Path) -> Environment | None:
    tree = commit_tree(repo, sha, tmp_path / sha)
    when = repo.commit(sha).committed_datetime
    return plan_environment(tree, parse_source(repo.working_dir), sha, when, BuildOptions())


@pytest.mark.parametrize(
    ("files", "same"),
    [
        ({"src/calc/more.py": "X = 1\n"}, True),
        ({"tests/test_more.py": "def test_x():\n    pass\n"}, True),
        ({"README.md": "# calc\n", "docs/conf.py": "project = 'calc'\n"}, True),
        # A layer runs the install steps again: a new version, dependency or compiled source is installed.
        ({"pyproject.toml": START.replace('version = "0.1.0"', 'version = "0.2.0"')}, True),
        ({"pyproject.toml": START.replace("dependencies = []", 'dependencies = ["attrs>=22"]')}, True),
        ({"src/calc/_speedups.c": "int y;\n"}, True),
        ({"requirements-dev.txt": "pytest<9\n"}, True),
        ({".github/workflows/test.yml": "on: push\n"}, True),
        ({"uv.lock": UV_LOCK.replace("7.4.4", "7.4.3")}, True),
        # What the build would do differently.
        ({"pyproject.toml": START.replace('test = ["pytest"]', 'tests = ["pytest"]')}, False),
        ({"pyproject.toml": START.replace(">=3.8", ">=3.12")}, False),
        ({"requirements-test.txt": "pytest-mock\n"}, False),
        ({".github/workflows/test.yml": WORKFLOW}, False),
        ({"tox.ini": "[tox]\nenvlist = py\n[testenv]\ncommands = pytest tests/test_calc.py\n"}, False),
    ],
)  # fmt: skip
def test_commits_share_an_environment_when_their_builds_would_start_alike(
    tmp_path: Path, files: dict[str, str], same: bool
) -> None:
    start = {
        **python_project(),
        "src/calc/_speedups.c": "int x;\n",
        "requirements-dev.txt": "pytest\n",
        "uv.lock": UV_LOCK,
    }
    repo = make_repo(tmp_path / "r", start)
    before = repo.head.commit.hexsha
    after = commit(repo, files, "Change")
    first, second = environment_of(repo, before, tmp_path), environment_of(repo, after, tmp_path)
    assert first is not None and second is not None
    assert (first.key == second.key) is same


def test_the_lock_pins_are_the_commits_own(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {**python_project(), "uv.lock": UV_LOCK})
    before = repo.head.commit.hexsha
    after = commit(repo, {"uv.lock": UV_LOCK.replace("7.4.4", "7.4.3")}, "Bump pytest")
    pins = [environment_of(repo, sha, tmp_path).pins for sha in (before, after)]
    assert "pytest==7.4.4" in pins[0].run and "pytest==7.4.3" in pins[1].run


def test_a_commit_no_build_could_make_has_no_environment(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"README.md": "# notes\n"})
    assert environment_of(repo, repo.head.commit.hexsha, tmp_path) is None
    python4 = {**python_project(), "pyproject.toml": START.replace(">=3.8", ">=4")}
    python = commit(repo, python4, "Python 4 only")
    assert environment_of(repo, python, tmp_path) is None


def test_a_commits_files_are_those_of_a_checkout_export_ignore_or_not(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {**python_project(), ".gitattributes": "tests export-ignore\n"})
    tree = commit_tree(repo, repo.head.commit.hexsha, tmp_path / "tree")
    assert (tree / "tests/test_calc.py").is_file() and not (tree / ".git").exists()


def test_a_layer_gets_the_version_setuptools_scm_gives_from_the_tags(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", python_project())
    assert release_version(repo, "HEAD") is None, "no tag yet"
    repo.create_tag("v1.2.0")
    assert release_version(repo, "HEAD") == "1.2.0"
    for n in range(3):
        commit(repo, {f"src/calc/m{n}.py": "X = 1\n"}, f"Change {n}")
    assert release_version(repo, "HEAD") == "1.2.1.dev3"
    repo.create_tag("calc-2.0rc1")
    commit(repo, {"src/calc/m9.py": "X = 9\n"}, "After the candidate")
    assert release_version(repo, "HEAD") == "2.0rc2.dev1"
