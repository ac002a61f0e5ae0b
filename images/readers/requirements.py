"""Requirement files found by their conventional names (``requirements*.txt``, ``requirements/*.txt``)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from images.readers.collector import Collector
from images.readers.common import EXCLUDED_WORDS, name_tier, name_tokens, name_words

#: Requirement files so named (besides plain ``requirements.txt``) hold the project's runtime needs.
_MAIN_REQUIREMENT_WORDS = frozenset({"base", "main", "common", "core", "default", "install", "runtime"})
_REQUIREMENT_FILE_WORDS = frozenset({"requirements", "requirement", "reqs", "req"})


def _requirement_file_candidates(root: Path) -> list[str]:
    """Requirement files by their conventional names, ``.in`` ones only without a ``.txt`` twin."""
    found: list[str] = []
    pattern = re.compile(r"(?:requirements.*|.*[-_]requirements)\.(?:txt|in)", re.IGNORECASE)
    places = [("", pattern), ("requirements", re.compile(r".*\.(?:txt|in)", re.IGNORECASE))]
    places += [(d, re.compile(r"requirements.*\.(?:txt|in)", re.IGNORECASE)) for d in ("tests", "test")]
    for folder, name_re in places:
        directory = root / folder
        if not directory.is_dir():
            continue
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not entry.is_file() or not name_re.fullmatch(entry.name):
                continue
            if entry.suffix.lower() == ".in" and entry.with_suffix(".txt").is_file():
                continue
            found.append(entry.relative_to(root).as_posix())
    return found


def _requirement_file_role(rel: str) -> str | None:
    """What a discovered requirement file is for: "main", "test", or None (docs, lint, unrecognized)."""
    path = PurePosixPath(rel)
    tokens = [t for t in name_tokens(path.stem) if t not in _REQUIREMENT_FILE_WORDS]
    words = name_words(path.stem)
    if words & EXCLUDED_WORDS:
        return None
    if path.parts[0] in ("tests", "test") or name_tier(path.stem) is not None:
        return "test"
    if all(token in _MAIN_REQUIREMENT_WORDS for token in tokens):
        return "main"
    return None


def read(c: Collector) -> None:
    chosen: list[tuple[bool, str]] = []
    declined: list[str] = []
    for rel in _requirement_file_candidates(c.root):
        role = _requirement_file_role(rel)
        if role is None:
            declined.append(rel)
        elif not c.self_only(rel):
            chosen.append((role != "main", rel))
    chosen.sort()
    for _, rel in chosen:
        c.requirement_files.append(rel)
    if chosen:
        c.note(f"requirement files {', '.join(rel for _, rel in chosen)}: found by name")
    if declined:
        c.note(f"requirement files {', '.join(declined)} not installed (not for tests or runtime)")
