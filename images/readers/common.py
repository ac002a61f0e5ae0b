"""Words and small parsers every reader shares: names, tiers, requirement specifiers, TOML tables."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

# Names of extras, dependency groups, requirement files, CI jobs and tox/nox environments are matched
# by their words: "test-extras" and "requirements_dev" are test-ish, "docs-dev" is not.
_TEST_WORDS = frozenset({"test", "tests", "testing", "unittest", "unittests", "pytest"})
_DEV_WORDS = frozenset({"dev", "devel", "develop", "development"})
_CI_WORDS = frozenset({"ci", "check", "checks"})
#: Words naming things the tests do not need; they win over test-ish words ("test-docs" is docs).
EXCLUDED_WORDS = frozenset(
    {
        "doc",
        "docs",
        "documentation",
        "sphinx",
        "lint",
        "linting",
        "linter",
        "linters",
        "style",
        "format",
        "typing",
        "types",
        "type",
        "typecheck",
        "mypy",
        "pyright",
        "benchmark",
        "benchmarks",
        "bench",
        "release",
        "publish",
        "deploy",
        "pre-commit",
        "precommit",
    }
)
#: An argument ending so names a file to install, not a requirement (``dist/pkg-1.0.tar.gz``).
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")


def normalize_name(name: str) -> str:
    """The PEP 503 normalized form of a distribution (or extra) name."""
    return canonicalize_name(name)


def name_tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def name_words(name: str) -> frozenset[str]:
    """The words of a name, plus adjacent pairs joined by "-" (so "pre_commit" has "pre-commit")."""
    tokens = name_tokens(name)
    return frozenset(tokens) | {f"{a}-{b}" for a, b in pairwise(tokens)}


def name_tier(name: str) -> int | None:
    """0 for test words, 1 for dev words, 2 for CI words, None when excluded or none of these."""
    words = name_words(name)
    if words & EXCLUDED_WORDS:
        return None
    for tier, vocabulary in enumerate((_TEST_WORDS, _DEV_WORDS, _CI_WORDS)):
        if words & vocabulary:
            return tier
    return None


def parse_requirement(spec: str) -> Requirement | None:
    """``spec`` as a PEP 508 requirement, or None for paths, archives, URLs without a name and shell words."""
    spec = spec.strip()
    if not spec or spec.lower().endswith(_ARCHIVE_SUFFIXES):
        return None
    try:
        return Requirement(spec)
    except InvalidRequirement:
        return None


def requirement_key(spec: str) -> tuple[str, str] | None:
    """(normalized name, canonical marker): requirements differing only in markers are kept apart."""
    requirement = parse_requirement(spec)
    if requirement is None:
        return None
    return canonicalize_name(requirement.name), str(requirement.marker or "")


def without_version(spec: str) -> str:
    """The specifier without its version constraint or URL; extras and markers are kept."""
    requirement = parse_requirement(spec)
    if requirement is None:
        return spec
    requirement.specifier = SpecifierSet()
    requirement.url = None
    return str(requirement)


def relative_path(rel: str) -> str | None:
    """``rel`` as a normalized POSIX path inside the root, or None when it leaves it or is absolute."""
    path = PurePosixPath(os.path.normpath(rel.replace("\\", "/")).replace("\\", "/"))
    if path.is_absolute() or not path.parts or path.parts[0] == "..":
        return None
    return path.as_posix()


def toml_table(doc: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    """The nested table at ``keys``, or {} when absent or not a table."""
    node: Any = doc
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, dict) else {}


def str_list(value: object) -> list[str]:
    """The strings of a list value (a lone string counts as a list of one)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def poetry_constraint(text: str) -> str:
    """A Poetry version constraint as a PEP 440 specifier (caret and tilde keep only their lower bound)."""
    text = text.strip()
    # An alternative ("^1 || ^2") has no single PEP 440 form; leaving it open lets pip choose.
    if not text or text == "*" or "||" in text:
        return ""
    parts = [p.replace(" ", "") for p in re.split(r"\s*,\s*|\s+(?=[<>=!~^])", text) if p.strip()]
    specifiers = []
    for part in parts:
        if part.startswith("^") or (part.startswith("~") and not part.startswith("~=")):
            specifiers.append(">=" + part[1:])
        elif part.startswith("=") and not part.startswith("=="):
            specifiers.append("=" + part)
        elif part[0] in "<>=!~":
            specifiers.append(part)
        else:
            specifiers.append("==" + part)
    return ",".join(specifiers)


def read_text(path: Path) -> str:
    """A checkout's file as text ("" if it is missing or unreadable): readers guess from what is there,
    and a file they cannot read is one they do not have."""
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return ""


def read_toml(path: Path) -> dict[str, Any]:
    """A checkout's TOML file as a table ({} if it is missing, unreadable or not TOML)."""
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError:
        return {}
