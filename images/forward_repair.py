"""Installed releases older than the interpreter: how their errors read, and which release to step to.

Resolving as of an old commit's date installs the pytest, plugins and libraries its authors had; on
a newer CPython than they ran, some of them die at import: a standard-library name the interpreter no
longer has (``from collections import Sequence``, ``inspect.getargspec``, ``import imp``), an import
system that asks lazy modules for ``__spec__``, an AST that needs fields it did not need before.
Stepping back cannot help; the fix is the oldest release of that distribution that runs on this
interpreter. :func:`interpreter_change` reads such an error line and :func:`choose_release` picks that
release from the package index (PEP 691 JSON: versions, upload times, ``Requires-Python``):

- the oldest final release, newer than the installed one, first uploaded on or after the day the
  interpreter's line came out (its maintainers had that Python to test on), whose ``Requires-Python``
  admits the interpreter;
- when no such release exists (the project stopped releasing), its newest release that admits it.

:func:`forward_step` turns the choice into a recipe step that installs it with its dependencies
resolved as of its own upload date, and says why.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from images.pypi import PackageIndexError, project_page
from images.python_choice import REMOVED_MODULES
from images.recipe import RecipeStep

#: The day each CPython line's first final release (``3.x.0``) came out.
PYTHON_RELEASED: Mapping[str, date] = {
    "3.6": date(2016, 12, 23),
    "3.7": date(2018, 6, 27),
    "3.8": date(2019, 10, 14),
    "3.9": date(2020, 10, 5),
    "3.10": date(2021, 10, 4),
    "3.11": date(2022, 10, 24),
    "3.12": date(2023, 10, 2),
    "3.13": date(2024, 10, 7),
    "3.14": date(2025, 10, 7),
}

#: Submodules removed from the standard library that :data:`REMOVED_MODULES` (top-level names) misses.
_REMOVED_SUBMODULES = frozenset({"typing.io", "typing.re"})

#: An error that a newer interpreter explains, one alternative per kind of change. ``E   `` and
#: ``INTERNALERROR>`` are pytest's prefixes; the rest is Python's own wording (3.10 and later may add
#: "Did you mean: ...?").
ERROR = re.compile(
    r"^(?:E\s+|INTERNALERROR>\s*)?(?:"
    r"ImportError: cannot import name '(?P<name>\w+)' from '(?P<module>[\w.]+)' \((?P<path>[^)]*)\)"
    r"|AttributeError: module '(?P<attr_module>[\w.]+)' has no attribute '(?P<attribute>\w+)'"
    r"|ModuleNotFoundError: No module named '(?P<removed>[\w.]+)'"
    r"|AttributeError: (?P<dunder>__spec__|__loader__)$"
    r"|AttributeError: '\w+' object has no attribute '(?P<finder>find_spec|exec_module|find_module)'"
    r"|TypeError: required field \"(?P<field>\w+)\" missing from (?P<node>\w+)"
    r")",
    re.MULTILINE,
)


def interpreter_change(match: re.Match[str]) -> str | None:
    """What changed in the interpreter, for a match of :data:`ERROR`, or None when the error is not one
    a newer interpreter explains (a name a third-party module lacks, a module never in the standard
    library)."""
    if match["name"]:
        # The module's file tells the standard library from an installed package of the same name.
        installed = re.search(r"site-packages|dist-packages", match["path"])
        in_stdlib = _is_stdlib(match["module"]) and not installed
        return f"{match['module']}.{match['name']} is gone from the standard library" if in_stdlib else None
    if match["attr_module"]:
        if not _is_stdlib(match["attr_module"]):
            return None
        return f"{match['attr_module']}.{match['attribute']} is gone from the standard library"
    if match["removed"]:
        module = match["removed"]
        if module in _REMOVED_SUBMODULES or module.split(".")[0] in REMOVED_MODULES:
            return f"the standard library no longer has {module}"
        return None
    if match["dunder"] or match["finder"]:
        return "the import system asks modules and finders for what this release does not provide"
    return f"the AST needs {match['node']}.{match['field']}, which this release does not set"


def _is_stdlib(module: str) -> bool:
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top in REMOVED_MODULES


@dataclass(frozen=True)
class Release:
    """One release of a distribution on the index."""

    version: Version
    uploaded: datetime | None
    """When its first file was uploaded (PEP 700); None when the index does not say."""
    requires_python: str | None


def releases(page: Mapping[str, object], name: str) -> list[Release]:
    """The final, not wholly yanked releases of ``name`` on a PEP 691 project page, oldest first."""
    project = canonicalize_name(name)
    uploaded: dict[Version, datetime | None] = {}
    requires: dict[Version, str | None] = {}
    files = page.get("files")
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict) or entry.get("yanked"):
            continue
        version = _version_of(str(entry.get("filename", "")), project)
        if version is None or version.is_prerelease or version.is_devrelease:
            continue
        moment = _moment(entry.get("upload-time"))
        known = uploaded.get(version)
        uploaded[version] = moment if known is None or (moment is not None and moment < known) else known
        requires.setdefault(version, entry.get("requires-python") or None)
    return [Release(version, uploaded[version], requires[version]) for version in sorted(uploaded)]


def choose_release(candidates: Sequence[Release], installed: str, python: str) -> Release | None:
    """The release to step forward to from ``installed`` on CPython ``python`` (``3.11`` or
    ``3.11.2``); see the module docstring. None when no newer release admits the interpreter."""
    line = ".".join(python.split(".")[:2])
    newer = [r for r in candidates if r.version > Version(installed) and _admits(r.requires_python, python)]
    released = PYTHON_RELEASED.get(line)
    if released is not None:
        after = [r for r in newer if r.uploaded is not None and r.uploaded.date() >= released]
        if after:
            return after[0]
    return newer[-1] if newer else None


def forward_step(
    distribution: str,
    installed: str | None,
    python: str,
    why: str,
    *,
    index_url: str,
    ca_bundle: Path | None = None,
    margin: timedelta = timedelta(days=1),
) -> RecipeStep | str:
    """The step that installs the release of ``distribution`` to step forward to, or a sentence saying
    why there is none. Its dependencies resolve as of its upload date plus ``margin``, as they would
    have for its first users; ``why`` is the error line that called for it."""
    if installed is None:
        return f"{distribution} is not installed: nothing to step forward"
    if not re.fullmatch(r"3\.\d+(?:\.\d+)?", python):
        return f"cannot step {distribution} forward: the interpreter's version is unknown ({python!r})"
    try:
        page = project_page(distribution, index_url, ca_bundle)
    except PackageIndexError as exc:
        return f"cannot step {distribution} forward: {exc}"
    if page is None:
        return f"cannot step {distribution} forward: the index at {index_url} gives no JSON page (PEP 691)"
    chosen = choose_release(releases(page, distribution), installed, python)
    if chosen is None:
        return f"{distribution} has no release newer than {installed} that runs on Python {python}"
    line = ".".join(python.split(".")[:2])
    requirement = shlex.quote(f"{distribution}=={chosen.version}")
    released = PYTHON_RELEASED.get(line)
    first_after = chosen.uploaded is not None and released is not None and chosen.uploaded.date() >= released
    because = f"its first release after Python {line} came out" if first_after else "its newest release"
    error = ERROR.search(why)
    change = interpreter_change(error) if error else None
    quoted = re.sub(r"^(?:E\s+|INTERNALERROR>\s*)", "", why)  # pytest's prefixes say nothing here
    cause = f"{change}; " if change else ""
    text = (
        f"repair: {quoted} ({cause}{distribution} {installed} predates Python {line}: "
        f"stepping forward to {chosen.version}, {because})"
    )
    if chosen.uploaded is None:
        return RecipeStep(f"env -u UV_EXCLUDE_NEWER uv pip install {requirement}", text)
    moment = (chosen.uploaded + margin).astimezone(UTC)
    return RecipeStep(f"uv pip install --exclude-newer {moment:%Y-%m-%dT%H:%M:%SZ} {requirement}", text)


def _admits(requires_python: str | None, python: str) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True  # a malformed declaration (old uploads have some) says nothing reliable


def _version_of(filename: str, project: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
        else:
            name, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return version if name == project else None


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
