"""Choosing the CPython (and so the base image) of a project from what its files declare; no Docker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from images.base import BASES, DEFAULT_BASE
from images.detect import detect
from images.python_choice import UnsupportedPython, choose_base, choose_for, read_needs
from tests.cli import forager
from tests.repos import python_project, write

BULLSEYE, BOOKWORM, TRIXIE = "forager/base:bullseye", "forager/base:bookworm", "forager/base:trixie"


def _pyproject(requires: str | None = None, classifiers: tuple[str, ...] = ()) -> str:
    lines = ["[project]", 'name = "proj"', 'version = "1.0"']
    if requires is not None:
        lines.append(f'requires-python = "{requires}"')
    if classifiers:
        listed = ", ".join(f'"Programming Language :: Python :: {line}"' for line in classifiers)
        lines.append(f'classifiers = ["Programming Language :: Python :: 3 :: Only", {listed}]')
    return "\n".join(lines) + "\n"


def _choose(root: Path, files: dict[str, str], python: str | None = None):
    write(root, files)
    return choose_for(root, detect(root).requires_python, python=python)


def test_the_bases_are_bullseye_39_bookworm_311_and_trixie_313() -> None:
    assert [(base.tag, base.python) for base in BASES] == [
        ("forager/base:bullseye", "3.9"), (BOOKWORM, "3.11"), (TRIXIE, "3.13"),
    ]  # fmt: skip
    assert DEFAULT_BASE.tag == BOOKWORM


def test_a_project_that_says_nothing_gets_the_default(tmp_path: Path) -> None:
    choice = _choose(tmp_path, {"proj.py": "X = 1\n"})
    assert choice.base.tag == BOOKWORM
    assert choice.evidence[-1] == "Python 3.11 (forager/base:bookworm): the default"


@pytest.mark.parametrize(
    ("requires", "tag"),
    [
        (">=3.12", TRIXIE),
        (">=3.12.1,<4", TRIXIE),
        ("~=3.13", TRIXIE),
        (">=3.8", BOOKWORM),
        (">=3.8,<3.12", BOOKWORM),
        ("==3.11.*", BOOKWORM),
        (">=2.7,!=3.0.*,!=3.1.*", BOOKWORM),
        ("!=3.11.*", BULLSEYE),  # nothing tested: the oldest allowed
        ("<3.11", BULLSEYE),
        (">=3.6,<3.10", BULLSEYE),
    ],
)
def test_requires_python_limits_the_choice(tmp_path: Path, requires: str, tag: str) -> None:
    choice = _choose(tmp_path, {"pyproject.toml": _pyproject(requires)})
    assert choice.base.tag == tag
    if tag != BOOKWORM:
        assert f"Requires-Python {requires}" in choice.evidence[-1]


def test_poetry_caret_constraint_is_read_as_requires_python(tmp_path: Path) -> None:
    poetry = '[tool.poetry]\nname = "proj"\nversion = "1.0"\n\n[tool.poetry.dependencies]\npython = "^3.12"\n'
    assert _choose(tmp_path, {"pyproject.toml": poetry}).base.tag == TRIXIE


@pytest.mark.parametrize("requires", ["<3.9", ">=3.6,<3.9", ">=3.14", "==3.12.*"])
def test_a_requirement_no_base_meets_is_unsupported_python(tmp_path: Path, requires: str) -> None:
    with pytest.raises(UnsupportedPython) as caught:
        _choose(tmp_path, {"pyproject.toml": _pyproject(requires)})
    message = str(caught.value)
    assert f"requires Python {requires}" in message
    assert "3.9 (forager/base:bullseye), 3.11 (forager/base:bookworm), 3.13 (forager/base:trixie)" in message
    assert "--python" in message


def test_an_invalid_requires_python_is_ignored_with_evidence(tmp_path: Path) -> None:
    choice = _choose(
        tmp_path, {"setup.cfg": "[metadata]\nname = proj\n\n[options]\npython_requires = >=3.x\n"}
    )
    assert choice.base.tag == BOOKWORM
    assert "Requires-Python '>=3.x' is not a valid specifier: ignored" in choice.evidence


@pytest.mark.parametrize(
    ("classifiers", "tag"),
    [
        (("3.12", "3.13"), TRIXIE),
        (("3.12",), TRIXIE),  # below the oldest tested line weighs more than above the newest
        (("3.6", "3.7", "3.8", "3.9"), BULLSEYE),
        (("3.6", "3.7", "3.8"), BULLSEYE),  # an old commit: the closest line
        (("3.10",), BOOKWORM),
        (("3.9", "3.10", "3.11", "3.12", "3.13"), BOOKWORM),  # both tested: the default
        (("3.13", "3.14"), TRIXIE),
    ],
)
def test_classifiers_pick_the_closest_tested_line(tmp_path: Path, classifiers: tuple, tag: str) -> None:
    choice = _choose(tmp_path, {"pyproject.toml": _pyproject(">=3.6", classifiers)})
    assert choice.base.tag == tag
    assert f"tested on Python {', '.join(classifiers)}: pyproject.toml classifiers" in choice.evidence


def test_setup_py_classifiers_count(tmp_path: Path) -> None:
    setup = (
        "from setuptools import setup\n\nsetup(name='proj', classifiers=[\n"
        "    'Programming Language :: Python :: 3.12',\n    'Programming Language :: Python :: 3.13',\n])\n"
    )
    assert _choose(tmp_path, {"setup.py": setup}).base.tag == TRIXIE


WORKFLOW = """name: tests
on: [push]
jobs:
  test:
    strategy:
      matrix:
        python-version: {versions}
        include:
          - python-version: pypy3.9
    runs-on: ubuntu-latest
    steps:
      - uses: actions/setup-python@v5
        with:
          python-version: ${{{{ matrix.python-version }}}}
      - run: pytest
"""


@pytest.mark.parametrize(
    ("versions", "tested", "tag"),
    [
        ('["3.12", "3.13"]', ("3.12", "3.13"), TRIXIE),
        # Unquoted, YAML would read 3.10 as the float 3.1: the reader keeps it as written.
        ("[3.8, 3.9, 3.10]", ("3.8", "3.9", "3.10"), BULLSEYE),
        ('["3.13-dev"]', ("3.13",), TRIXIE),
    ],
)
def test_the_ci_matrix_counts_as_tested_lines(tmp_path: Path, versions: str, tested: tuple, tag: str) -> None:
    files = {
        "pyproject.toml": _pyproject(),
        ".github/workflows/tests.yml": WORKFLOW.format(versions=versions),
    }
    write(tmp_path, files)
    needs = read_needs(tmp_path, None)
    assert needs.tested == tested, "pypy and ${{ matrix... }} are not CPython lines"
    assert _choose(tmp_path, {}).base.tag == tag


def test_travis_tox_and_python_version_files_count(tmp_path: Path) -> None:
    write(tmp_path, {".travis.yml": "language: python\npython:\n  - '3.5'\n  - 3.6\n"})
    assert read_needs(tmp_path, None).tested == ("3.5", "3.6")
    write(tmp_path, {"tox.ini": "[tox]\nenvlist = py37, py38, pypy3, lint\n", ".python-version": "3.12.4\n"})
    assert read_needs(tmp_path, None).tested == ("3.5", "3.6", "3.7", "3.8", "3.12")


def test_code_importing_a_removed_module_gets_the_python_that_still_has_it(tmp_path: Path) -> None:
    files = {
        "pyproject.toml": _pyproject(">=3.8", ("3.12", "3.13")),
        "src/proj/loader.py": "import os\nimport imp\n\n\ndef load(p):\n    return imp.new_module(p)\n",
    }
    choice = _choose(tmp_path, files)
    assert choice.base.tag == BOOKWORM
    assert "imports imp (removed in Python 3.12): src/proj/loader.py:2" in choice.evidence
    assert "the code imports imp" in choice.evidence[-1]


def test_guarded_imports_of_removed_modules_do_not_count(tmp_path: Path) -> None:
    files = {
        "pyproject.toml": _pyproject(">=3.8", ("3.12", "3.13")),
        "src/proj/compat.py": "try:\n    import imp\nexcept ImportError:\n    imp = None\n"
        "import sys\nif sys.version_info < (3, 12):\n    from distutils.version import LooseVersion\n",
        # setup.py's distutils comes from setuptools in the build environment.
        "setup.py": "from distutils.core import setup\nsetup()\n",
        "docs/conf.py": "import imp\n",
    }
    assert _choose(tmp_path, files).base.tag == TRIXIE


def test_a_module_removed_in_313_keeps_a_312_only_project_off_trixie_unless_required(tmp_path: Path) -> None:
    tests = "import cgi\n\n\ndef test_escape():\n    assert cgi.parse_header('a; b=c')[0] == 'a'\n"
    tested_on_new = {**python_project(tests=tests), "pyproject.toml": _pyproject(">=3.8", ("3.12", "3.13"))}
    assert _choose(tmp_path / "a", tested_on_new).base.tag == BOOKWORM
    # Requires-Python wins over the imports: the project says 3.11 is not enough.
    files = {**python_project(tests=tests), "pyproject.toml": _pyproject(">=3.12")}
    choice = _choose(tmp_path / "b", files)
    assert choice.base.tag == TRIXIE
    assert "every allowed Python lacks a module the code imports: choosing by the rest" in choice.evidence


def test_python_option_overrides_everything_but_must_name_a_base(tmp_path: Path) -> None:
    choice = _choose(tmp_path, {"pyproject.toml": _pyproject("<3.11")}, python="3.13")
    assert choice.base.tag == TRIXIE
    assert choice.evidence[-1] == "Python 3.13: asked for (--python 3.13)"
    assert _choose(tmp_path, {}, python="3.11").base.tag == BOOKWORM
    assert _choose(tmp_path, {}, python="3.9").base.tag == BULLSEYE
    with pytest.raises(UnsupportedPython, match=r"--python 3\.10: Forager's bases give Python 3\.9 "):
        _choose(tmp_path, {}, python="3.10")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["images", "build", "--python", "3.10", "."], "Forager's bases give Python 3.9, 3.11, 3.13"),
        (["images", "base", "--python", "2.7"], "Forager's bases give Python 3.9, 3.11, 3.13"),
        (["images", "build", "--python", "3.13", "--base", "x:y", "."], "pass --base or --python"),
    ],
)
def test_the_cli_refuses_a_python_no_base_gives(tmp_path: Path, args: list[str], message: str) -> None:
    done = forager(*args, home=tmp_path)
    assert done.returncode == 2
    assert message in " ".join(done.stderr.replace("│", " ").split()), done.stderr  # rich wraps in a box


def test_a_commit_naming_no_python_gets_the_line_of_its_date_when_older_than_the_default(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"pyproject.toml": _pyproject(">=3.5")})
    choice = choose_base(read_needs(tmp_path, ">=3.5", datetime(2020, 4, 28, tzinfo=UTC)))
    assert choice.base.tag == BULLSEYE
    assert "tested on Python 3.8: nothing names one, the newest line on the commit's date (2020-04-28)" in (
        choice.evidence
    )
    # Older than 3.5 or than Python 3 itself: still the oldest base, not the default.
    for year in (2014, 2005):
        assert choose_base(read_needs(tmp_path, None, datetime(year, 1, 1, tzinfo=UTC))).base.tag == BULLSEYE
    # Once the default's line is out, a commit that says nothing gets the default, as before.
    assert choose_base(read_needs(tmp_path, ">=3.5", datetime(2023, 1, 1, tzinfo=UTC))).base.tag == BOOKWORM
    # What the project says wins over its date.
    write(tmp_path, {"pyproject.toml": _pyproject(">=3.5", ("3.10", "3.11"))})
    assert choose_base(read_needs(tmp_path, ">=3.5", datetime(2020, 4, 28, tzinfo=UTC))).base.tag == BOOKWORM
