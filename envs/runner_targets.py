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
    if runner == "pytest":
        return Targets(list(files))
    holding = {file_of_test(test_command, test) for test in known}
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
