"""Which commits may share one install: the dependency digest of a commit (pure git)."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.layers import dependency_digest
from tests.repos import commit, make_repo, python_project


@pytest.mark.parametrize(
    ("files", "same"),
    [
        ({"src/calc/more.py": "X = 1\n"}, True),
        ({"tests/test_more.py": "def test_x():\n    pass\n"}, True),
        ({"README.md": "# calc\n", "docs/conf.py": "project = 'calc'\n"}, True),
        ({"pyproject.toml": "[project]\nname = 'calc'\nversion = '0.2.0'\n"}, False),
        ({"requirements-dev.txt": "pytest<8\n"}, False),
        ({"requirements/test.in": "pytest\n"}, False),
        ({"ci/constraints.txt": "attrs==23.1.0\n"}, False),
        ({".github/workflows/test.yml": "on: push\n"}, False),
        ({"src/calc/_speedups.c": "int x;\n"}, False),
        ({"src/calc/fast.pyx": "cdef int x\n"}, False),
        ({"uv.lock": "version = 1\n"}, False),
    ],
)
def test_only_what_the_install_reads_changes_the_digest(
    tmp_path: Path, files: dict[str, str], same: bool
) -> None:
    repo = make_repo(tmp_path / "r", python_project())
    before = repo.head.commit.hexsha
    after = commit(repo, files, "Change")
    assert (dependency_digest(repo, before) == dependency_digest(repo, after)) is same
