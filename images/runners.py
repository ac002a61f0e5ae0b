"""Which program runs a project's tests, and the command that runs some of them by id.

Three runners, told apart by the test command alone, so that an image's recorded test command says
how its tests run and how to grade them:

- ``pytest``: any command running pytest. Ids are pytest node ids. Most unittest suites run here too,
  and get per-test ids, timeouts, durations and coverage for free.
- ``unittest``: ``python -m unittest`` (``discover -v ...``), for a suite pytest cannot collect
  faithfully: a test module's ``load_tests`` protocol builds the suite, which pytest ignores. Ids are
  unittest labels, ``tests.test_calc.CalcTest.test_add``.
- ``script``: the project's own script calling unittest's runner with labels, as Django's
  ``tests/runtests.py``. Ids are the labels the script accepts, printed by its verbose output.

:func:`choose_test_command` picks the command from the checkout; the readers of tox's and nox's
commands give the arguments the project passes to pytest.
"""

from __future__ import annotations

import ast
import configparser
import posixpath
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from images.readers.common import EXCLUDED_WORDS, name_words, read_text

Runner = Literal["pytest", "unittest", "script"]
_SHELL_OPERATORS = "();<>|&"

#: Where projects keep a test script of their own (Django's is ``tests/runtests.py``).
RUNTESTS_SCRIPTS = ("tests/runtests.py", "runtests.py")
#: What a script calling unittest's runner (not pytest's) mentions.
_UNITTEST_RUNNER = re.compile(r"\b(unittest|DiscoverRunner|get_runner|TextTestRunner)\b")
_USES_PYTEST = re.compile(r"^\s*(import pytest|from pytest\b|from _pytest\b)|\bpytest\.main\(", re.MULTILINE)
_LOAD_TESTS = re.compile(r"^def load_tests\(", re.MULTILINE)
_PYTEST_CONFIGS = (("pytest.ini", None), ("pytest.toml", None), ("tox.ini", "[pytest]"))
_PYTEST_CONFIGS += (("setup.cfg", "[tool:pytest]"), ("pyproject.toml", "[tool.pytest"))
#: Pytest options of the project's tox/nox commands that Forager sets itself, that need what a baseline
#: does not have (a coverage or HTML report, xdist's worker count, a cache), or that stop a run before
#: every test ran, with how many values follow.
_DROPPED_OPTIONS = {"-n": 1, "--numprocesses": 1, "--dist": 1, "--junitxml": 1, "--junit-xml": 1}
_DROPPED_OPTIONS |= {"--basetemp": 1, "--html": 1, "--cov-report": 1, "--cov-config": 1}
_DROPPED_OPTIONS |= {"--cov-fail-under": 1, "--maxfail": 1}
_DROPPED_OPTIONS |= dict.fromkeys(("-x", "--exitfirst", "--lf", "--last-failed", "--ff", "--failed-first"), 0)
_DROPPED_OPTIONS |= dict.fromkeys(("--sw", "--stepwise", "--pdb", "-f", "--looponfail"), 0)
_DROPPED_PREFIXES = ("--cov", "--junitxml=", "--junit-xml=", "--numprocesses=", "--dist=", "--html=")
_DROPPED_PREFIXES += ("--maxfail=",)


def runner_of(test_command: str) -> Runner:
    """The runner of a test command: ``unittest`` for ``python -m unittest``, ``script`` for a Python
    script (``python tests/runtests.py ...``, ``./runtests.py ...``) and ``pytest`` for anything else,
    which a pytest command then has to be."""
    try:
        words = shlex.split(test_command)
    except ValueError:
        return "pytest"
    words = [word for word in words if not re.fullmatch(r"\w+=.*", word)][:3]  # variable assignments
    if any(set(word) & set(_SHELL_OPERATORS) for word in words) or not words:
        return "pytest"
    python = re.fullmatch(r"python[\d.]*", posixpath.basename(words[0])) is not None
    if python and words[1:2] == ["-m"]:
        return "unittest" if words[2:3] == ["unittest"] else "pytest"
    if words[0].endswith(".py") or (python and words[1:2] and words[1].endswith(".py")):
        return "script"
    return "pytest"


def id_command(test_command: str, test_ids: Sequence[str]) -> str:
    """The command that runs exactly ``test_ids`` with a ``unittest`` or ``script`` test command.

    ``python -m unittest discover -v -s tests -t .`` becomes ``python -m unittest -v ID...``
    (labels are relative to the top-level directory, the working directory); a script gets the labels
    after its own arguments.
    """
    words = shlex.split(test_command)
    if runner_of(test_command) == "unittest" and "discover" in words:
        start = words.index("discover")
        kept, rest, skip = words[:start], words[start + 1 :], False
        for word in rest:  # discover's own options and their values go; -v, -f, -b... stay
            if skip:
                skip = False
            elif word in ("-s", "--start-directory", "-p", "--pattern", "-t", "--top-level-directory"):
                skip = True
            elif word.startswith("-"):
                kept.append(word)
        words = kept
    return shlex.join([*words, *test_ids])


def file_of_test(test_command: str, test_id: str) -> str | None:
    """The repository file that defines the test ``test_id`` runs, or None when it cannot be told.

    A pytest id names it; a unittest label's module (its parts before the class) is a path relative
    to the working directory, or for a script, to the script's directory (Django's labels are
    relative to ``tests/``).
    """
    runner = runner_of(test_command)
    if runner == "pytest" or "::" in test_id:
        return test_id.split("::", 1)[0]
    parts = test_id.split(".")
    end = next((index for index, part in enumerate(parts) if part[:1].isupper()), 0)
    if end == 0:
        return None
    module = "/".join(parts[:end]) + ".py"
    if runner == "script":
        script = next((w for w in shlex.split(test_command) if w.endswith(".py")), "")
        return posixpath.normpath(posixpath.join(posixpath.dirname(script), module))
    return module


def choose_test_command(root: Path, pytest_command: str, test_paths: Sequence[str]) -> tuple[str, str]:
    """The test command for the checkout at ``root`` and one line saying why.

    ``pytest_command`` is the command the install plan made (pytest, its arguments, ``test_paths``).
    In order, when the project does not use pytest: a unittest-runner script of its own
    (:data:`RUNTESTS_SCRIPTS`) taking Django's ``--verbosity``, then ``python -m unittest discover``
    when a test module defines ``load_tests``; then the pytest arguments of the project's tox or nox
    commands; else ``pytest_command``.
    """
    if not _uses_pytest(root):
        for script in RUNTESTS_SCRIPTS:
            text = read_text(root / script)
            # Only a script taking Django's --verbosity is asked for a line per test; pytest runs the
            # TestCases of any other.
            if _UNITTEST_RUNNER.search(text) and re.search(r"""["']--verbosity["']""", text):
                why = f"runner: {script}, the project's own unittest runner (the project does not use pytest)"
                return f"python {script} --verbosity=2", why
        loaders = [p for p in _test_modules(root, test_paths) if _LOAD_TESTS.search(read_text(p))]
        start = test_paths[0] if test_paths else "."
        # Labels are relative to the root only when the start directory is a package under it.
        if loaders and (start == "." or (root / start / "__init__.py").is_file()):
            why = (
                f"runner: python -m unittest: {loaders[0].relative_to(root)} builds its tests with "
                "load_tests, which pytest ignores"
            )
            return f"python -m unittest discover -v -s {shlex.quote(start)} -t .", why
    for where, args in (("tox.ini", tox_pytest_args(root)), ("noxfile.py", nox_pytest_args(root))):
        if args is None:
            continue
        kept = project_pytest_args(root, args)
        paths = [] if any(_is_path(root, word) for word in kept) else list(test_paths)
        base = [word for word in shlex.split(pytest_command) if word not in test_paths]
        command = shlex.join([*base, *kept, *paths])
        return command, f"runner: pytest with the arguments of {where}'s test command ({shlex.join(args)})"
    return pytest_command, "runner: pytest"


def project_pytest_args(root: Path, args: Sequence[str]) -> list[str]:
    """``args`` without what the baseline sets itself or cannot have (:data:`_DROPPED_OPTIONS`) and
    without words that still hold a tox substitution (``{envtmpdir}``).

    A long option followed by a word that is no path of the checkout takes it as its value, written
    ``--option=value``: black's ``--run-optional no_jupyter`` is an option its conftest adds, and whoever
    runs test ids with the command's options (grading) cannot otherwise tell its value from a test path.
    """
    kept: list[str] = []
    skip = 0
    for word in args:
        if skip:
            skip -= 1
        elif word in _DROPPED_OPTIONS:
            skip = _DROPPED_OPTIONS[word]
        elif word.startswith(_DROPPED_PREFIXES) or "{" in word:
            continue
        elif kept and _bare_long_option(kept[-1]) and not word.startswith("-") and not _is_path(root, word):
            kept[-1] = f"{kept[-1]}={word}"
        else:
            kept.append(word)
    return kept


def _bare_long_option(word: str) -> bool:
    return word.startswith("--") and len(word) > 2 and "=" not in word


#: A tox factor condition before a line: ``!ci: --numprocesses auto``, ``py38,py39: ...``, ``py-cov: ...``.
_FACTOR_CONDITION = re.compile(
    r"^\s*\{?(?P<factors>!?[A-Za-z][\w.]*(?:[,-]!?[A-Za-z][\w.]*)*)\}?:\s+(?P<rest>.*)$"
)
#: Factors naming a Python (``py``, ``py3``, ``py311``, ``pypy3``): one of them is the environment's.
_PYTHON_FACTOR = re.compile(r"^(?:py|pypy)\d*$")


def _unconditioned(line: str) -> str | None:
    """A ``commands`` line without its factor condition, or None when the condition leaves it out.

    Forager runs the tests as a plain environment would: one with no factor but its Python, so a
    negated factor (``!ci:``) and a Python's (``py3:``, ``{py38,py39}:``) hold and another (``ci:``)
    does not.
    """
    match = _FACTOR_CONDITION.match(line)
    if match is None:
        return line

    def holds(factor: str) -> bool:
        return factor.startswith("!") or _PYTHON_FACTOR.match(factor) is not None

    alternatives = match["factors"].split(",")
    if any(all(holds(factor) for factor in alternative.split("-")) for alternative in alternatives):
        return match["rest"]
    return None


#: ``{posargs:DEFAULT}``, whose default may hold substitutions of its own (``{envtmpdir}``).
_POSARGS_DEFAULT = re.compile(r"\{posargs:((?:[^{}]|\{[^{}]*\})*)\}")


def tox_pytest_args(root: Path) -> list[str] | None:
    """The arguments after ``pytest`` in the first test environment's ``commands`` of ``tox.ini``
    (``[testenv]``, then ``testenv:py*`` and ``testenv:test*``), or None when none runs pytest.

    ``{posargs}`` goes, ``{posargs:tests}`` keeps its default, ``{toxinidir}`` is the root.
    """
    cfg = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        cfg.read_string(read_text(root / "tox.ini"))
    except configparser.Error:
        return None
    sections = [s for s in cfg.sections() if s == "testenv" or s.startswith(("testenv:py", "testenv:test"))]
    for section in sections:
        if cfg.has_option(section, "changedir"):
            continue  # its arguments are relative to another directory
        lines = cfg.get(section, "commands", fallback="").splitlines()
        commands = "\n".join(line for line in map(_unconditioned, lines) if line is not None)
        # A backslash at the end of a line continues the command on the next.
        for line in commands.replace("\\\n", " ").splitlines():
            # The root first: a posargs default may name it, ``{posargs: "{toxinidir}/tests"}``.
            line = re.sub(r"\{(toxinidir|tox_root)\}/?", "./", line)
            line = _POSARGS_DEFAULT.sub(r"\1", line).replace("{posargs}", "")
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if (args := _after_pytest(words)) is not None:
                return args
    return None


def nox_pytest_args(root: Path) -> list[str] | None:
    """The literal arguments of the first ``session.run("pytest", ...)`` (or ``"python", "-m",
    "pytest"``) in a test session of ``noxfile.py``, or None. ``*session.posargs`` and other
    non-literal arguments are left out."""
    try:
        tree = ast.parse(read_text(root / "noxfile.py"))
    except (SyntaxError, ValueError):
        return None
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef) or name_words(function.name) & EXCLUDED_WORDS:
            continue
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "run":
                words = [
                    a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                ]
                if (args := _after_pytest(words)) is not None:
                    return args
    return None


def _after_pytest(words: Sequence[str]) -> list[str] | None:
    for index, word in enumerate(words):
        if posixpath.basename(word) in ("pytest", "py.test"):
            return list(words[index + 1 :])
    return None


def _uses_pytest(root: Path) -> bool:
    """A pytest configuration, a ``conftest.py`` or a test module importing pytest."""
    for name, marker in _PYTEST_CONFIGS:
        path = root / name
        if path.is_file() and (marker is None or marker in read_text(path)):
            return True
    if any(root.glob("conftest.py")) or any(root.glob("tests/**/conftest.py")):
        return True
    return any(_USES_PYTEST.search(read_text(path)) for path in _test_modules(root, ()))


def _test_modules(root: Path, test_paths: Sequence[str]) -> list[Path]:
    bases = [root / path for path in test_paths] or [root / "tests", root / "test"]
    found = []
    for base in bases:
        if base.is_dir():
            found += [p for p in sorted(base.rglob("*.py")) if p.name != "conftest.py"]
    return found


def _is_path(root: Path, word: str) -> bool:
    return not word.startswith("-") and (root / word.split("::", 1)[0]).exists()
