"""Lock files: the exact versions the project's authors resolved, as constraints for every install step.

Read in this order, the first one present wins: ``uv.lock``, ``poetry.lock``, ``pdm.lock``,
``pylock.toml`` (PEP 751), ``Pipfile.lock``, ``pylock.NAME.toml`` (a test-ish NAME first), then
pinned ``constraints*.txt`` files and pinned requirement files (``pip-compile`` output). Only versions
from a package index become pins: the project itself, and git, path and URL sources, are left to the
rest of the plan. The pins constrain what the plan installs (the project with its test extras and
groups, test tools) rather than installing the whole lock, so a lock's platform-specific or unrelated
groups never break a build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from images.readers.collector import Collector
from images.readers.common import name_tier, parse_requirement

#: (file, what it is) in precedence order; the first one present is followed.
LOCK_FILES = (
    ("uv.lock", "uv"),
    ("poetry.lock", "poetry"),
    ("pdm.lock", "pdm"),
    ("pylock.toml", "pylock"),
    ("Pipfile.lock", "pipfile"),
)
#: A pinned file has at least this many ``==`` pins and nothing unpinned: smaller ones are not locks.
_MIN_PINNED = 3
_CONSTRAINT_FILE = re.compile(r"(?:requirements/)?(?:constraints?|.*[-_]constraints?)\.txt", re.IGNORECASE)


def read(c: Collector) -> None:
    # PEP 751 also names locks for one purpose ``pylock.NAME.toml``: a test-ish one, else the first.
    named = sorted(path.name for path in c.root.glob("pylock.*.toml") if path.is_file())
    named.sort(key=lambda rel: name_tier(rel.removeprefix("pylock.").removesuffix(".toml")) is None)
    for rel, kind in [*LOCK_FILES, *((rel, "pylock") for rel in named)]:
        if not (c.root / rel).is_file():
            continue
        entries = _lock_entries(c, rel, kind)
        if entries is None:
            continue
        if _follow(c, rel, entries):
            return
    for rel in [*_constraint_files(c), *c.requirement_files]:
        text = c.text(rel)
        pins = _pinned_lines(text or "")
        if pins is not None and _follow(c, rel, pins, pinned_file=True):
            return
    c.note("lock file: none found; versions are resolved, not pinned")


def _follow(c: Collector, rel: str, entries: Iterable[tuple[str, str]], *, pinned_file: bool = False) -> bool:
    """Record ``entries`` ((name, version) pairs) as the plan's pins; False when none is usable."""
    versions: dict[str, set[str]] = {}
    for name, version in entries:
        key = canonicalize_name(name)
        if key in c.project_names:
            continue
        try:
            versions.setdefault(key, set()).add(str(Version(version)))
        except InvalidVersion:
            continue
    # A lock resolved for several platforms or Pythons may hold two versions of one name: no single pin.
    ambiguous = sorted(name for name, found in versions.items() if len(found) > 1)
    pins = [f"{name}=={next(iter(found))}" for name, found in sorted(versions.items()) if len(found) == 1]
    if not pins:
        c.note(f"lock file {rel} skipped: it pins no version from a package index")
        return False
    c.lock_file = rel
    c.pins = pins
    kind = "pinned requirements" if pinned_file else "lock file"
    line = f"{kind} {rel}: {len(pins)} versions pinned for every install step"
    if ambiguous:
        line += f" (not pinned, several versions locked: {', '.join(ambiguous)})"
    c.note(line)
    return True


def _lock_entries(c: Collector, rel: str, kind: str) -> list[tuple[str, str]] | None:
    if kind == "pipfile":
        text = c.text(rel)
        try:
            doc = json.loads(text or "")
        except json.JSONDecodeError as exc:
            c.note(f"{rel} skipped: malformed JSON ({exc})")
            return None
        return _pipfile_entries(doc if isinstance(doc, dict) else {})
    doc = c.toml(rel)
    if doc is None:
        return None
    packages = doc.get("packages" if kind == "pylock" else "package")
    if not isinstance(packages, list):
        return []
    entries = []
    for package in packages:
        if not isinstance(package, dict) or not _from_index(package, kind):
            continue
        name, version = package.get("name"), package.get("version")
        if isinstance(name, str) and isinstance(version, str):
            entries.append((name, version))
    return entries


def _from_index(package: dict[str, Any], kind: str) -> bool:
    """Whether a locked package came from a package index (not git, a path, a URL or the project)."""
    if kind == "uv":
        source = package.get("source")
        return isinstance(source, dict) and "registry" in source
    if kind == "poetry":
        source = package.get("source")
        return not isinstance(source, dict) or source.get("type") in (None, "legacy")
    if kind == "pdm":
        return not any(key in package for key in ("git", "path", "url", "editable"))
    # pylock.toml: a package from an index lists wheels or an sdist; others name a vcs, directory or archive.
    return not any(key in package for key in ("vcs", "directory", "archive"))


def _pipfile_entries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    entries = []
    for section in ("default", "develop"):
        packages = doc.get(section)
        for name, info in (packages if isinstance(packages, dict) else {}).items():
            version = info.get("version") if isinstance(info, dict) else None
            if isinstance(version, str) and version.startswith("=="):
                entries.append((name, version[2:]))
    return entries


def _constraint_files(c: Collector) -> list[str]:
    found = []
    for folder in ("", "requirements"):
        directory = c.root / folder
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                rel = entry.relative_to(c.root).as_posix()
                if entry.is_file() and _CONSTRAINT_FILE.fullmatch(rel):
                    found.append(rel)
    return found


def _pinned_lines(text: str) -> list[tuple[str, str]] | None:
    """The (name, version) pins of a requirement file in which every requirement is ``==``-pinned."""
    pins = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip().rstrip("\\").strip()
        if not line or line.startswith("--hash") or line.startswith("-"):
            continue
        requirement = parse_requirement(line)
        if requirement is None or requirement.url:
            return None
        exact = [s.version for s in requirement.specifier if s.operator in ("==", "===")]
        if not exact or "*" in exact[0]:
            return None
        pins.append((requirement.name, exact[0]))
    return pins if len(pins) >= _MIN_PINNED else None
