"""Makefiles read, never run: which recipe lines a ``make TARGET`` would run.

:mod:`images.readers.ci_steps` replays a CI's ``make cython`` only when every line the target runs
(its prerequisites' first) is safe offline; this module finds those lines. Variables are not
expanded and pattern rules are not matched: a target is found by its literal name.
"""

from __future__ import annotations

import re
from pathlib import Path

_NAMES = ("GNUmakefile", "makefile", "Makefile")
#: A rule's first line: targets, one or two colons (not ``:=``), prerequisites.
_RULE = re.compile(r"^([^\s:=#][^:=#]*?)\s*::?(?!=)\s*([^;#]*)")


def recipe_lines(folder: Path, targets: list[str]) -> list[str] | None:
    """The recipe lines ``make TARGETS`` runs in ``folder`` (its first target when none is named),
    prerequisites first, ``@``/``-``/``+`` prefixes dropped; None when the folder has no Makefile."""
    rules = _rules(folder)
    if rules is None:
        return None
    lines: list[str] = []
    seen: set[str] = set()

    def visit(target: str) -> None:
        if target in seen or target not in rules:
            return
        seen.add(target)
        prerequisites, recipe = rules[target]
        for prerequisite in prerequisites:
            visit(prerequisite)
        lines.extend(recipe)

    for target in targets or list(rules)[:1]:
        visit(target)
    return lines


def _rules(folder: Path) -> dict[str, tuple[list[str], list[str]]] | None:
    """target → (prerequisites, recipe lines) of the folder's Makefile, or None when it has none."""
    path = next((folder / name for name in _NAMES if (folder / name).is_file()), None)
    if path is None:
        return None
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current: list[list[str]] = []
    text = re.sub(r"\\\n", " ", path.read_text(errors="replace"))
    for line in text.splitlines():
        if line.startswith("\t"):
            for recipe in current:
                recipe.append(line.strip().lstrip("@-+").strip())
            continue
        match = _RULE.match(line)
        if match and not line.lstrip().startswith((".PHONY", "export ")):
            current = []
            for target in match[1].split():
                prerequisites, recipe = rules.setdefault(target, ([], []))
                prerequisites.extend(match[2].split())
                current.append(recipe)
        elif line.strip() and not line.startswith("#"):
            current = []
    return rules
