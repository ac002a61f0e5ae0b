"""What runs a repository's test file with an image's runner: the inverse of
:func:`images.runners.file_of_test`, for validating a mined fix by the files its commit touched.

Pytest takes the file's path. ``python -m unittest`` and a project's own unittest script (Django's
``tests/runtests.py``) take a dotted module label instead, and report every test under a label that
starts with it, as the baseline's ids do: ``tests/test_calc.py`` is ``tests.test_calc`` for unittest
(labels are relative to the working directory, the repository's root), and ``tests/basic/tests.py``
is ``basic.tests`` for ``python tests/runtests.py`` (relative to the script's directory).
"""

from __future__ import annotations

import keyword
import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from itertools import pairwise

from images.runners import file_of_test, runner_of

#: The file pattern unittest's discovery and Django's test runner use when given none.
DEFAULT_PATTERN = "test*.py"


@dataclass(frozen=True)
class Targets:
    """The touched test files as the runner's arguments, and the files it cannot run, with why."""

    arguments: list[str] = field(default_factory=list)
    unnamed: dict[str, str] = field(default_factory=dict)
    """Path -> why the runner cannot run it by name."""


def targets_of_files(test_command: str, files: Sequence[str], known: Iterable[str] = ()) -> Targets:
    """The arguments that run ``files`` (repository paths of test modules) with ``test_command``.

    ``known`` are test ids the image's baseline has: a file holding one of them is a test module of
    the runner whatever its name. Otherwise, for unittest and a script, only a file its discovery
    would collect counts (unittest's ``-p`` pattern, :data:`DEFAULT_PATTERN` by default): a helper
    module under ``tests/`` defines no test of its own, and a script such as Django's given a label
    it cannot load fails the whole run.
    """
    runner = runner_of(test_command)
    holding = {file_of_test(test_command, test) for test in known}
    if runner == "pytest":
        return _pytest_targets(files, holding)
    base, pattern = _label_root(test_command)
    targets = Targets()
    for path in files:
        if path not in holding and not fnmatch(posixpath.basename(path), pattern):
            targets.unnamed[path] = f"not a test module the {runner} runner collects (pattern {pattern})"
        elif (why := _not_a_label(path, base)) is not None:
            targets.unnamed[path] = why
        else:
            targets.arguments.append(posixpath.relpath(path, base or ".")[: -len(".py")].replace("/", "."))
    return targets


def _pytest_targets(files: Sequence[str], holding: set[str]) -> Targets:
    """Pytest's arguments for ``files``: test modules (and modules beside them) by path; data files of a
    data-driven suite (black's ``tests/data/cases/x.py``, which ``tests/test_format.py`` turns into
    ``test_simple_format[x]``) by the nearest folder above them holding tests of the baseline (``holding``
    are the files that do), narrowed with ``-k`` to the tests whose ids name the touched files."""
    # A module beside test modules is theirs to import (tests/helpers.py); pytest is given it as it is.
    beside = {posixpath.dirname(path) for path in holding}
    modules = [p for p in files if p in holding or _pytest_module(p) or posixpath.dirname(p) in beside]
    data = [path for path in files if path not in modules]
    if not data:
        return Targets(list(files))
    targets = Targets(list(modules))
    folders: list[str] = []
    for path in data:
        folder = next((f for f in _parents(path) if any(test.startswith(f + "/") for test in holding)), None)
        stem = posixpath.splitext(posixpath.basename(path))[0]
        if folder is None or not re.fullmatch(r"[\w.+-]+", stem) or keyword.iskeyword(stem):
            targets.unnamed[path] = "a data file, and no test of the baseline lives in a folder above it"
        elif folder not in folders:
            folders.append(folder)
    if not folders:
        return targets
    # -k matches module names too, so the touched test modules keep all their tests.
    names = [posixpath.splitext(posixpath.basename(path))[0] for path in files if path not in targets.unnamed]
    targets.arguments.extend([*folders, "-k", " or ".join(dict.fromkeys(names))])
    return targets


def _pytest_module(path: str) -> bool:
    """Whether pytest's default ``python_files`` (``test_*.py``, ``*_test.py``) collects ``path``."""
    name = posixpath.basename(path)
    return name == "conftest.py" or fnmatch(name, "test_*.py") or fnmatch(name, "*_test.py")


def _parents(path: str) -> list[str]:
    """The folders above ``path``, nearest first (``a/b/c.py``: ``a/b``, ``a``)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _label_root(test_command: str) -> tuple[str, str]:
    """(the directory labels are relative to, ``""`` for the root; the discovery file pattern)."""
    words = shlex.split(test_command)
    if runner_of(test_command) == "script":
        script = next((word for word in words if word.endswith(".py")), "")
        return posixpath.dirname(posixpath.normpath(script)), DEFAULT_PATTERN
    pattern = DEFAULT_PATTERN
    for option, value in pairwise(words):
        if option in ("-p", "--pattern"):
            pattern = value
    return "", pattern


def _not_a_label(path: str, base: str) -> str | None:
    """Why ``path`` has no module label relative to ``base``, or None when it has one."""
    if base and not path.startswith(base + "/"):
        return f"outside {base}/, the directory the test script's labels are relative to"
    if not path.endswith(".py"):
        return "not a Python module"
    parts = posixpath.relpath(path, base or ".")[: -len(".py")].split("/")
    bad = [part for part in parts if not part.isidentifier() or keyword.iskeyword(part)]
    if bad:
        return f"{bad[0]!r} is not a Python identifier, so the module has no importable label"
    return None
