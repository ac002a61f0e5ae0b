"""Which CPython a repository's image gets, among the lines Forager's base images give.

A project says which Pythons it runs on in several places, none complete: ``Requires-Python`` (a hard
limit, when declared, but often missing or stale), trove classifiers and the CI's test matrix (the lines
its authors actually tested), a ``.python-version`` file, and its code, which may import standard-library
modules a later Python removed (``imp``, ``distutils``, ``cgi``...). :func:`read_needs` gathers these
from files only (nothing runs) and :func:`choose_base` picks a base: among the bases ``Requires-Python``
allows, those the code's imports still run on, then the line closest to the tested ones, bookworm's 3.11
(:data:`images.base.DEFAULT_BASE`) on a tie. A requirement no base meets is :class:`UnsupportedPython`,
whose message names what the project needs and what Forager has.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from core.errors import ForagerError
from images.base import BASES, DEFAULT_BASE, DebianBase, base_for_python
from images.readers.common import read_text

#: Standard-library modules removed from CPython, and the release line that removed them (PEP 594, PEP 632,
#: and the ``imp``/``asyncore`` removals of 3.12). Code importing one runs only on an older line.
REMOVED_MODULES = {
    **dict.fromkeys(["asynchat", "asyncore", "distutils", "imp", "smtpd"], "3.12"),
    **dict.fromkeys(
        [
            "aifc",
            "audioop",
            "cgi",
            "cgitb",
            "chunk",
            "crypt",
            "imghdr",
            "lib2to3",
            "mailcap",
            "msilib",
            "nis",
            "nntplib",
            "ossaudiodev",
            "pipes",
            "sndhdr",
            "spwd",
            "sunau",
            "telnetlib",
            "uu",
            "xdrlib",
        ],
        "3.13",
    ),
}
_IMPORT_RE = re.compile(
    r"^[ \t]*(?:import|from)[ \t]+(" + "|".join(sorted(REMOVED_MODULES)) + r")\b", re.MULTILINE
)
_CLASSIFIER_RE = re.compile(r"Programming Language :: Python :: (3\.\d+)\b")
#: A CPython line as a CI matrix or ``.python-version`` writes it: ``3.9``, ``"3.12-dev"``, ``3.13.0``,
#: ``cpython-3.10``, ``python3.11`` (not ``pypy3.9``, ``3.x`` or ``${{ matrix.python }}``).
_LINE_RE = re.compile(r"^(?:cpython-?|python-?|py)?(3)\.(\d+)(?:[.\-a-z0-9]*)$", re.IGNORECASE)
#: CI keys whose values name the Python a job runs (GitHub's setup-python, Travis, matrices).
_CI_PYTHON_KEYS = frozenset({"python-version", "python-versions", "python_version", "python", "py", "pyver"})
_TOX_ENV_RE = re.compile(r"\bpy3(\d{1,2})\b")
#: Folders never scanned for imports: version control, environments, vendored and generated code.
_SKIPPED_DIRS = frozenset(
    [
        ".git",
        ".hg",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "env",
        "node_modules",
        "site-packages",
        "build",
        "dist",
        "_vendor",
        "vendor",
        "vendored",
        "third_party",
        "extern",
        "docs",
        "doc",
    ]
)
#: A bound on the files scanned, so that a huge repository costs seconds at most.
_MAX_SCANNED_FILES = 5000
_METADATA_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "PKG-INFO")


class UnsupportedPython(ForagerError):
    """The project needs a Python none of Forager's bases gives (or ``--python`` names none)."""


@dataclass(frozen=True)
class RemovedImport:
    """An unguarded import of a module a later Python removed."""

    module: str
    removed_in: str
    where: str
    """``path:line``."""


@dataclass(frozen=True)
class PythonNeeds:
    """What a project says about the Pythons it runs on."""

    requires_python: SpecifierSet | None
    """The declared ``Requires-Python``; None when absent or not a valid specifier."""
    requires_python_text: str | None
    tested: tuple[str, ...]
    """``MAJOR.MINOR`` lines from classifiers, CI matrices, tox environments and ``.python-version``."""
    removed_imports: tuple[RemovedImport, ...]
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class PythonChoice:
    """The base an image is built on, and why."""

    base: DebianBase
    evidence: tuple[str, ...]


def read_needs(root: Path, requires_python: str | None, committed_at: datetime | None = None) -> PythonNeeds:
    """What the project at ``root`` says about its Pythons; ``requires_python`` as detection read it.

    A commit that names no tested line, made before the default base's Python came out, counts as
    tested on the newest line of its date: its code and the releases of its date were written for that.
    """
    evidence: list[str] = []
    spec = None
    if requires_python:
        try:
            spec = SpecifierSet(requires_python)
        except InvalidSpecifier:
            evidence.append(f"Requires-Python {requires_python!r} is not a valid specifier: ignored")
    tested: dict[str, str] = {}
    for rel in _METADATA_FILES:
        for line in _CLASSIFIER_RE.findall(read_text(root / rel)):
            tested.setdefault(line, f"{rel} classifiers")
    for line, where in _ci_lines(root):
        tested.setdefault(line, where)
    for minor in _TOX_ENV_RE.findall(read_text(root / "tox.ini")):
        tested.setdefault(f"3.{minor}", "tox.ini environments")
    for word in read_text(root / ".python-version").split():
        if match := _LINE_RE.match(word):
            tested.setdefault(f"3.{match[2]}", ".python-version")
    if not tested and committed_at is not None and (line := _line_of(committed_at)) is not None:
        tested[line] = f"nothing names one, the newest line on the commit's date ({committed_at:%Y-%m-%d})"
    if tested:
        by_source: dict[str, list[str]] = {}
        for line, where in tested.items():
            by_source.setdefault(where, []).append(line)
        evidence += [
            f"tested on Python {', '.join(sorted(lines, key=_key))}: {w}" for w, lines in by_source.items()
        ]
    removed = tuple(_removed_imports(root))
    for found in removed[:5]:
        evidence.append(f"imports {found.module} (removed in Python {found.removed_in}): {found.where}")
    return PythonNeeds(spec, requires_python, tuple(sorted(tested, key=_key)), removed, tuple(evidence))


def choose_base(
    needs: PythonNeeds, *, python: str | None = None, bases: tuple[DebianBase, ...] = BASES
) -> PythonChoice:
    """The base whose Python suits ``needs`` best; ``python`` (``3.13``) overrides the choice.

    Raises :class:`UnsupportedPython` when ``Requires-Python`` excludes every base, or ``python`` names
    a line no base gives.
    """
    have = ", ".join(f"{base.python} ({base.tag})" for base in bases)
    evidence = list(needs.evidence)
    if python is not None:
        if (base := base_for_python(python)) in bases:
            return PythonChoice(base, (*evidence, f"Python {base.python}: asked for (--python {python})"))
        raise UnsupportedPython(f"--python {python}: Forager's bases give Python {have}; name one of those")
    allowed = [
        b
        for b in bases
        if needs.requires_python is None or needs.requires_python.contains(b.python_version, prereleases=True)
    ]
    if not allowed:
        raise UnsupportedPython(
            f"the project requires Python {needs.requires_python_text} and Forager's bases give Python "
            f"{have}: build with --python LINE to try one anyway, or --base an image with a Python it allows"
        )
    runnable = [b for b in allowed if not _blocking(needs, b)]
    if not runnable:
        evidence.append("every allowed Python lacks a module the code imports: choosing by the rest")
        runnable = allowed
    chosen = min(
        runnable, key=lambda b: (_distance(b.python, needs.tested), b != DEFAULT_BASE, _key(b.python))
    )
    return PythonChoice(
        chosen,
        (*evidence, f"Python {chosen.python} ({chosen.tag}): {_why(needs, bases, allowed, runnable)}"),
    )


def choose_for(
    root: Path,
    requires_python: str | None,
    *,
    python: str | None = None,
    committed_at: datetime | None = None,
) -> PythonChoice:
    """:func:`choose_base` over :func:`read_needs` of the checkout at ``root``."""
    return choose_base(read_needs(root, requires_python, committed_at), python=python)


#: When each CPython line came out.
RELEASED = {
    "3.0": date(2008, 12, 3), "3.1": date(2009, 6, 27), "3.2": date(2011, 2, 20), "3.3": date(2012, 9, 29),
    "3.4": date(2014, 3, 16), "3.5": date(2015, 9, 13), "3.6": date(2016, 12, 23), "3.7": date(2018, 6, 27),
    "3.8": date(2019, 10, 14), "3.9": date(2020, 10, 5), "3.10": date(2021, 10, 4),
    "3.11": date(2022, 10, 24),
}  # fmt: skip


def _line_of(moment: datetime) -> str | None:
    """The newest CPython line out at ``moment``, if older than the default base's (None otherwise)."""
    out = [line for line, released in RELEASED.items() if released <= moment.date()]
    line = max(out, key=_key, default="3.0")  # older still: the oldest line there is
    return line if _key(line) < _key(DEFAULT_BASE.python) else None


def _why(
    needs: PythonNeeds, bases: tuple[DebianBase, ...], allowed: list[DebianBase], runnable: list[DebianBase]
) -> str:
    reasons = []
    if len(allowed) < len(bases):
        reasons.append(f"Requires-Python {needs.requires_python_text}")
    if len(runnable) < len(allowed):
        lacking = [base for base in allowed if base not in runnable]
        modules = {found.module for found in needs.removed_imports for base in lacking if _lacks(base, found)}
        reasons.append(f"the code imports {', '.join(sorted(modules))}")
    if needs.tested and len(runnable) > 1:
        reasons.append(f"closest to the tested {', '.join(needs.tested)}")
    return "; ".join(reasons) or "the default"


def _blocking(needs: PythonNeeds, base: DebianBase) -> bool:
    """Whether the code imports a module ``base``'s Python no longer has."""
    return any(_lacks(base, found) for found in needs.removed_imports)


def _lacks(base: DebianBase, found: RemovedImport) -> bool:
    return _key(base.python) >= _key(found.removed_in)


def _distance(line: str, tested: tuple[str, ...]) -> float:
    """How far ``line`` is from the tested lines: 0 within their range. Below the oldest tested line
    counts half a release more than above the newest: code written for a newer minimum may use its
    syntax, while newer Pythons mostly only remove what :data:`REMOVED_MODULES` lists."""
    if not tested:
        return 0
    minor, low, high = _key(line)[1], _key(tested[0])[1], _key(tested[-1])[1]
    if minor < low:
        return low - minor + 0.5
    return max(0, minor - high)


def _key(line: str) -> tuple[int, int]:
    major, minor = line.split(".")[:2]
    return int(major), int(minor)


def _ci_lines(root: Path) -> Iterator[tuple[str, str]]:
    """(``MAJOR.MINOR``, file) for each CPython line a CI configuration runs on."""
    workflows = root / ".github" / "workflows"
    files = sorted(workflows.glob("*.y*ml")) if workflows.is_dir() else []
    files += [
        root / rel for rel in (".travis.yml", ".gitlab-ci.yml", ".circleci/config.yml", "azure-pipelines.yml")
    ]
    for path in files:
        text = read_text(path)
        if not text:
            continue
        try:
            # BaseLoader: every scalar stays a string, as written ("3.10" is not the float 3.1).
            doc = yaml.load(text, Loader=yaml.BaseLoader)
        except yaml.YAMLError:
            continue
        rel = path.relative_to(root).as_posix()
        for value in _python_values(doc):
            if match := _LINE_RE.match(value.strip()):
                yield f"3.{int(match[2])}", f"{rel} matrix"


def _python_values(node: object) -> Iterator[str]:
    """The strings under every key that names a Python version, anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key).lower() in _CI_PYTHON_KEYS:
                yield from (v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
            else:
                yield from _python_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _python_values(item)


def _removed_imports(root: Path) -> Iterator[RemovedImport]:
    """Imports of :data:`REMOVED_MODULES` that run unconditionally: not inside ``try`` (a fallback) nor
    under ``if`` (a version check). A file that does not parse counts by its unindented imports."""
    for path in _python_files(root):
        text = read_text(path)
        if not _IMPORT_RE.search(text):
            continue
        rel = path.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            for match in _IMPORT_RE.finditer(text):
                if not match[0][0].isspace():
                    line = text.count("\n", 0, match.start()) + 1
                    yield RemovedImport(match[1], REMOVED_MODULES[match[1]], f"{rel}:{line}")
            continue
        for node, line in _unguarded_imports(tree.body):
            yield RemovedImport(node, REMOVED_MODULES[node], f"{rel}:{line}")


def _unguarded_imports(body: list[ast.stmt]) -> Iterator[tuple[str, int]]:
    for node in body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With)):
            # A function's or class's imports run when it is used, which the tests usually do.
            yield from _unguarded_imports(node.body)
            continue
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in REMOVED_MODULES:
                yield top, node.lineno


def _python_files(root: Path) -> Iterator[Path]:
    count = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            # setup.py runs in a build environment with setuptools, whose own copy of distutils it gets.
            if name.endswith(".py") and name != "setup.py":
                count += 1
                if count > _MAX_SCANNED_FILES:
                    return
                yield Path(folder) / name
