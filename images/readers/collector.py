"""The plan as readers build it: :class:`Collector` keeps every decision and its evidence line."""

from __future__ import annotations

import ast
import configparser
import re
import tomllib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from images.readers.common import (
    EXCLUDED_WORDS,
    name_tier,
    name_words,
    normalize_name,
    parse_requirement,
    relative_path,
    requirement_key,
)

#: Extras so named install everything; taken only when nothing test-ish exists and they are small.
_BROAD_WORDS = frozenset({"all", "full"})
_BROAD_EXTRA_MAX_REQUIREMENTS = 10

#: A requirement-file line that installs only the project itself.
_SELF_LINE_RE = re.compile(r"(?:(?:-e|--editable)(?:\s+|=)?)?[\"']?\./?(?:\[(?P<extras>[^\]]*)\])?[\"']?")


@dataclass
class Extra:
    """An extra as one source mentions it."""

    name: str
    where: str
    size: int | None = None
    """How many requirements it lists; None when unknown or when it pulls in other extras of the project."""


@dataclass
class Found:
    """What installer arguments (a CI command, a nox ``session.install``, a tox ``deps`` line) ask for."""

    packages: list[str] = field(default_factory=list)
    requirement_files: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Collector:
    """The plan as it accumulates, with its evidence; first declaration wins throughout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.evidence: list[str] = []
        self.scalars: dict[str, str] = {}
        self.project_names: set[str] = set()
        self.declared_extras: dict[str, Extra] = {}
        self.declaring_sources: list[str] = []
        self.requested_extras: list[Extra] = []
        self.groups: list[str] = []
        self.requirement_files: list[str] = []
        #: (normalized name, normalized marker) → specifier, in the order first seen.
        self.packages: dict[tuple[str, str], str] = {}
        self.is_python = False
        self.installable = False
        self.test_paths: tuple[str, ...] = ()
        self.pytest_args: tuple[str, ...] = ()
        self.lock_file: str | None = None
        self.pins: list[str] = []
        self._toml: dict[str, dict[str, Any] | None] = {}
        self._ini: dict[str, configparser.ConfigParser | None] = {}

    def note(self, line: str) -> None:
        self.evidence.append(line)

    # Parsed files, each read once so that a malformed one is reported once.

    def text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read (reported)."""
        path = self.root / rel
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8-sig", errors="replace")
        except OSError as exc:
            self.note(f"{rel} skipped: unreadable ({exc.strerror or exc})")
            return None

    def toml(self, rel: str) -> dict[str, Any] | None:
        if rel not in self._toml:
            text = self.text(rel)
            doc = None
            if text is not None:
                try:
                    doc = tomllib.loads(text)
                except tomllib.TOMLDecodeError as exc:
                    self.note(f"{rel} skipped: malformed TOML ({exc})")
            self._toml[rel] = doc
        return self._toml[rel]

    def ini(self, rel: str) -> configparser.ConfigParser | None:
        if rel not in self._ini:
            text = self.text(rel)
            self._ini[rel] = None if text is None else self.parse_ini(text, rel)
        return self._ini[rel]

    def parse_ini(self, text: str, where: str) -> configparser.ConfigParser | None:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(text, source=where)
        except configparser.Error as exc:
            first_line = str(exc).splitlines()[0]
            self.note(f"{where} skipped: malformed INI ({first_line})")
            return None
        return parser

    # The plan's fields.

    def set_scalar(self, label: str, value: object, where: str) -> None:
        """Set ``label`` (``name``, ``version``, ...) unless an earlier source did; ignore non-strings."""
        if not isinstance(value, str) or not value.strip():
            return
        value = value.strip()
        if label == "name":
            self.project_names.add(normalize_name(value))
        if label not in self.scalars:
            self.scalars[label] = value
            self.note(f"{label} {value}: {where}")

    def declare_extras(self, extras: Iterable[Extra], where: str) -> None:
        self.declaring_sources.append(where)
        for extra in extras:
            self.declared_extras.setdefault(normalize_name(extra.name), extra)

    def request_extras(self, names: Iterable[str], where: str) -> None:
        self.requested_extras.extend(Extra(name.strip(), where) for name in names if name.strip())

    def add_group(self, name: str) -> None:
        if name not in self.groups:
            self.groups.append(name)

    def has_package(self, name: str) -> bool:
        """Whether some specifier for distribution ``name`` is listed already."""
        return any(listed == normalize_name(name) for listed, _ in self.packages)

    def add_packages(self, specs: Iterable[str], where: str) -> None:
        """Add requirement specifiers, dropping the project itself and ones already listed."""
        added: list[str] = []
        repeated: list[str] = []
        itself: list[str] = []
        for spec in specs:
            key = requirement_key(spec)
            if key is None:
                continue
            if key[0] in self.project_names:
                itself.append(spec)
            elif key in self.packages:
                repeated.append(spec)
            else:
                self.packages[key] = spec
                added.append(spec)
        notes = []
        if repeated:
            notes.append(f"already listed: {', '.join(repeated)}")
        if itself:
            notes.append(f"the project itself: {', '.join(itself)}")
        if added:
            self.note(f"packages {', '.join(added)}: {where}" + "".join(f"; {n}" for n in notes))
        elif notes:
            self.note(f"packages from {where}: {'; '.join(notes)}")

    def add_requirement_file(self, rel: str, where: str) -> None:
        """Add a requirement file named by a tool or CI command, if it exists and is worth installing."""
        path = relative_path(rel)
        if path is None or not (self.root / path).is_file():
            self.note(f"requirement file {rel} not found: {where}")
            return
        if path in self.requirement_files:
            return
        if name_words(PurePosixPath(path).stem) & EXCLUDED_WORDS:
            self.note(f"requirement file {path} not installed (not needed for tests): {where}")
            return
        if self.self_only(path):
            return
        self.requirement_files.append(path)
        self.note(f"requirement file {path}: {where}")

    def self_only(self, rel: str) -> bool:
        """Whether the requirement file installs nothing but the project; its extras are requested."""
        text = self.text(rel)
        if text is None:
            return True
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        matches = [_SELF_LINE_RE.fullmatch(line) for line in lines]
        if not all(matches):
            return False
        extras = [e for m in matches if m and m["extras"] for e in m["extras"].split(",")]
        if extras:
            self.request_extras(extras, f"{rel} (installs the project itself)")
        what = "only the project itself" if lines else "nothing"
        self.note(f"requirement file {rel} not installed: it lists {what}")
        return True

    def apply(self, found: Found, where: str) -> None:
        """Record what installer arguments found at ``where`` ask for."""
        self.add_packages(found.packages, where)
        for rel in found.requirement_files:
            self.add_requirement_file(rel, where)
        self.request_extras(found.extras, where)
        if found.skipped:
            self.note(f"skipped in {where}: {', '.join(found.skipped)}")

    def chosen_extras(self) -> tuple[str, ...]:
        """The extras to install, test-ish ones first; records the decision for each source."""
        chosen: dict[str, tuple[int, int, str]] = {}  # normalized name → (tier, order, display name)
        by_source: dict[str, list[str]] = {}
        for order, (key, extra) in enumerate(self.declared_extras.items()):
            tier = name_tier(extra.name)
            if tier is not None:
                chosen[key] = (tier, order, extra.name)
                by_source.setdefault(extra.where, []).append(extra.name)
        for order, extra in enumerate(self.requested_extras, start=len(self.declared_extras)):
            key = normalize_name(extra.name)
            declared = self.declared_extras.get(key)
            if name_words(extra.name) & EXCLUDED_WORDS:
                self.note(f"extra {extra.name} not installed (not needed for tests): {extra.where}")
            elif self.declared_extras and declared is None:
                self.note(f"extra {extra.name} not installed: not declared, though {extra.where} asks for it")
            else:
                name = declared.name if declared else extra.name
                tier = name_tier(name)
                chosen.setdefault(key, (3 if tier is None else tier, order, name))
                by_source.setdefault(extra.where, []).append(name)
        broad_notes = []
        broad_considered = set()
        if not chosen:
            for order, (key, extra) in enumerate(self.declared_extras.items()):
                if not name_words(extra.name) & _BROAD_WORDS or name_words(extra.name) & EXCLUDED_WORDS:
                    continue
                broad_considered.add(key)
                if extra.size is not None and extra.size <= _BROAD_EXTRA_MAX_REQUIREMENTS:
                    chosen[key] = (4, order, extra.name)
                    broad_notes.append(
                        f"extras {extra.name}: {extra.where} (no test extra, and it lists only "
                        f"{extra.size} requirements)"
                    )
                else:
                    broad_notes.append(
                        f"extra {extra.name} not installed: no test extra, but it is large or pulls in "
                        f"other extras: {extra.where}"
                    )
        for where in dict.fromkeys([*self.declaring_sources, *by_source]):
            if where in by_source:
                self.note(f"extras {', '.join(dict.fromkeys(by_source[where]))}: {where}")
            declined = [
                extra.name
                for key, extra in self.declared_extras.items()
                if extra.where == where and key not in chosen and key not in broad_considered
            ]
            if declined:
                self.note(f"extras {', '.join(declined)} not installed (not test-related): {where}")
        self.evidence.extend(broad_notes)
        return tuple(name for _, _, name in sorted(chosen.values()))


def declared_requirements(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split declared requirement strings into specifiers and skipped entries (with why)."""
    specs: list[str] = []
    skipped: list[str] = []
    for item in items:
        item = item.strip()
        if "{" in item or "$" in item:
            skipped.append(f"{item} (substitution)")
        elif parse_requirement(item) is None:
            skipped.append(f"{item} (not a requirement specifier)")
        else:
            specs.append(item)
    return specs, skipped


def add_declared(c: Collector, items: Iterable[str], where: str) -> None:
    specs, skipped = declared_requirements(items)
    c.add_packages(specs, where)
    if skipped:
        c.note(f"skipped in {where}: {', '.join(skipped)}")


def extra_size(requirements: list[str], project_names: set[str]) -> int | None:
    """How many requirements an extra lists; None when it also pulls in other extras of the project."""
    for spec in requirements:
        key = requirement_key(spec)
        if key is not None and key[0] in project_names:
            return None
    return len(requirements)


def select_named(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split group/environment names into test-related ones (test-ish first) and the rest."""
    ranked = []
    rest = []
    for order, name in enumerate(names):
        tier = name_tier(name)
        if tier is None:
            rest.append(name)
        else:
            ranked.append((tier, order, name))
    return [name for _, _, name in sorted(ranked)], rest


def parse_python(c: Collector, rel: str) -> ast.Module | None:
    """The syntax tree of a Python file, or None when it is absent or does not parse (reported)."""
    text = c.text(rel)
    if text is None:
        return None
    try:
        # Old setup.py files are full of invalid escapes; their warnings are not the user's concern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text, filename=rel)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        c.note(f"{rel} skipped: cannot be parsed ({exc.__class__.__name__}: {exc})")
        return None
