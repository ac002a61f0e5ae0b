"""A real build of a 2019 commit on Python 3.11: the pytest of its date cannot even import there.

The fixture's single commit is dated May 2019 and asks for an unpinned ``pytest``. Resolved as of that
date, pytest 4.4 and py 1.8 die at import on 3.11 (py's lazy module has no ``__spec__``, then pytest's
assertion rewriting builds an AST 3.10 rejects). The builder steps them forward to releases that run
on 3.11, and the recipe says so.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

import git
import pytest

from images.builder import ImageBuilder
from images.sources import parse_source
from storage import ImageStatus
from tests.repos import write

pytestmark = pytest.mark.docker

COMMITTED = "2019-05-01T12:00:00+00:00"

CALC = """\
def add(a, b):
    return a + b
"""

TESTS = """\
from calc import add


def test_add():
    assert add(2, 3) == 5


def test_add_negative():
    assert add(-2, 1) == -1
"""


def old_repository(root: Path) -> Path:
    """A one-commit repository committed (and authored) in May 2019; salted so that parallel workers
    never share a commit id or an image tag."""
    files = {
        "calc.py": CALC + f"\n# {uuid.uuid4().hex}\n",
        "test_calc.py": TESTS,
        "requirements-test.txt": "pytest\n",
    }
    write(root, files)
    repo = git.Repo.init(root, initial_branch="main")
    repo.git.add("--all")
    dated = {**os.environ, "GIT_AUTHOR_DATE": COMMITTED, "GIT_COMMITTER_DATE": COMMITTED}
    with repo.git.custom_environment(**dated):
        repo.git.commit("-q", "-m", "Initial commit", "--author", "Old Author <old@example.invalid>")
    return root


def test_a_2019_commit_steps_its_test_tools_forward_to_releases_that_run_on_311(
    builder: ImageBuilder, tmp_path: Path
) -> None:
    source = old_repository(tmp_path / "oldcalc")
    # Naming no Python, a 2019 commit would get 3.9, the line closest to its date's: 3.11 is asked for.
    builder.options = replace(builder.options, python="3.11")

    result = builder.build(parse_source(str(source)))

    log = result.log_path.read_text() if result.log_path else ""
    assert "resolving as of 2019-05-02" in log, "the build resolves as of the commit's date"
    assert result.status == ImageStatus.READY, f"{result.failure_class}: {result.reason}"
    assert (result.tests_passed, result.tests_total) == (2, 2)
    recipe = builder.store.get_image(result.tag).recipe
    forward = [step for step in recipe["steps"] if "predates Python 3.11" in step["why"]]
    assert forward, [step["why"] for step in recipe["steps"]]
    assert any("pytest==" in step["run"] for step in forward), [step["run"] for step in forward]
    assert all("--exclude-newer" in step["run"] for step in forward)
