"""Synthetic bugs for mutate-fix tasks: CWM's five operator families, each split into named operators.

Everything here is a pure function over source text. A mutation is a set of precise span edits computed
from the ``ast`` positions of the original module, so formatting and comments outside the edited spans
survive byte for byte and a mutant's diff shows only the bug. Every operator edits only the target
function (its signature or body; never its decorators), except ``import_removed``, which may remove a
module-level import the function uses.

This module holds the public API: :func:`functions`, :func:`mutants`, :func:`unified_diff` and the
records they return. The operators and their registry live in :mod:`envs.mutate_operators`, the span
edits in :mod:`envs.mutate_edits`, what the operators read of a function in :mod:`envs.mutate_functions`.
"""

from __future__ import annotations

import ast
import difflib
import random
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass

from envs.mutate_edits import Source, apply_edits
from envs.mutate_functions import definitions
from envs.mutate_operators import GENERATORS, OPERATORS

# OPERATORS too: its keys are what ``mutants(operators=...)`` takes.
__all__ = ["OPERATORS", "FunctionSpan", "Mutant", "functions", "mutants", "unified_diff"]


@dataclass(frozen=True)
class FunctionSpan:
    """Where one function definition sits in a module (1-based, inclusive line numbers)."""

    qualname: str
    """Dotted path through enclosing classes and functions: ``"Class.method"``, ``"outer.inner"``, ``"f"``."""
    start: int
    """The line of ``def`` (or ``async def``); decorators are not part of the span."""
    end: int
    """The last line of the body."""
    body_start: int
    """The line of the body's first statement (the docstring, if there is one)."""


@dataclass(frozen=True)
class Mutant:
    """One injected bug: a whole file before and after."""

    operator: str
    """A key of :data:`OPERATORS`, e.g. ``"comparison_operator_replaced"``."""
    family: str
    """The CWM family: ``functions``, ``arguments``, ``variables``, ``statements`` or ``operators``."""
    path: str
    """The file's relative POSIX path, as given to :func:`mutants`."""
    function: str
    """The qualname of the mutated function."""
    function_start: int
    """The line of its ``def``: which definition, when several share the qualname (a property's
    getter and setter)."""
    line: int
    """The first changed line (1-based, in ``original``)."""
    changed_lines: frozenset[int]
    """Every line of ``original`` the change touches (an insertion: the line it lands in)."""
    original: str
    mutated: str
    description: str
    """What was done, e.g. ``"`<` replaced by `<=` at line 12"``: task metadata, never shown to the agent."""


def functions(source: str) -> list[FunctionSpan]:
    """Every ``def`` and ``async def`` in ``source``, nested ones included, in source order.

    Returns ``[]`` when ``source`` does not parse.
    """
    tree = _parse(source)
    if tree is None:
        return []
    return [
        FunctionSpan(qualname, node.lineno, node.end_lineno or node.lineno, node.body[0].lineno)
        for qualname, node in definitions(tree)
    ]


def mutants(
    path: str,
    source: str,
    *,
    targets: Collection[str] | None = None,
    operators: Collection[str] | None = None,
    rng: random.Random,
    per_function: int = 3,
) -> list[Mutant]:
    """Mutants of ``source``: for each target function, up to ``per_function`` per operator.

    ``targets`` are qualnames (``None``: every function; definitions sharing a qualname, such as a
    property's getter and setter, are all targets). ``operators`` are keys of :data:`OPERATORS`
    (``None``: all). For each (function, operator) the candidates are shuffled with ``rng`` and taken in
    that order, skipping any whose result does not compile, whose AST equals the original's (a
    formatting-only change), or whose text an earlier mutant already produced; so a seeded ``rng`` gives
    the same mutants every time. Results are ordered by function, then by operator in
    :data:`OPERATORS` order. Unparsable ``source`` yields ``[]``.
    """
    if isinstance(targets, str) or isinstance(operators, str):
        raise TypeError("targets and operators are collections of names, not a single string")
    unknown = set(operators or ()) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown mutation operators {sorted(unknown)}; known: {', '.join(OPERATORS)}")
    chosen = list(OPERATORS) if operators is None else [name for name in OPERATORS if name in operators]
    tree = _parse(source)
    if tree is None:
        return []
    src = Source(source, tree)
    baseline = ast.dump(tree)
    seen = {source}
    found: list[Mutant] = []
    for qualname, func in definitions(tree):
        if targets is not None and qualname not in targets:
            continue
        for name in chosen:
            candidates = list(GENERATORS[name](src, func))
            rng.shuffle(candidates)
            taken = 0
            for candidate in candidates:
                if taken >= per_function:
                    break
                mutated = apply_edits(source, candidate.edits)
                if mutated in seen or not _changes_code(path, mutated, baseline):
                    continue
                seen.add(mutated)
                taken += 1
                found.append(
                    Mutant(
                        operator=name,
                        family=OPERATORS[name],
                        path=path,
                        function=qualname,
                        function_start=func.lineno,
                        line=min(lines := src.lines_of(candidate.edits)),
                        changed_lines=lines,
                        original=source,
                        mutated=mutated,
                        description=candidate.description,
                    )
                )
    return found


def unified_diff(path: str, before: str, after: str) -> str:
    """A git-style patch turning ``before`` into ``after`` for the file at ``path``; ``""`` if they are equal.

    The patch has ``diff --git``, ``---`` and ``+++`` headers and 3 lines of context, so ``git apply``
    (and ``git apply -R``) accept it; a last line without a newline gets git's
    ``\\ No newline at end of file`` marker. Lines split on ``\\n`` only, as git splits them.
    """
    if before == after:
        return ""
    header = [f"diff --git a/{path} b/{path}\n", f"--- a/{path}\n", f"+++ b/{path}\n"]
    body = []
    # The first two lines difflib yields are its own ---/+++ headers, replaced by git's above.
    for line in list(difflib.unified_diff(_git_lines(before), _git_lines(after)))[2:]:
        body.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(header + body)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes in the source
        return None


def _changes_code(path: str, mutated: str, baseline: str) -> bool:
    """Whether ``mutated`` compiles and differs from the original beyond formatting.

    Compiling, not just parsing, also rejects what only the compiler checks (e.g. a ``nonlocal`` whose
    binding was removed): a module that cannot be imported is a trivial bug, not a task.
    """
    tree = _parse(mutated)
    if tree is None or ast.dump(tree) == baseline:
        return False
    try:
        with warnings.catch_warnings():
            # e.g. a SyntaxWarning for `is` with a literal, which the original has too
            warnings.simplefilter("ignore")
            compile(tree, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def _git_lines(text: str) -> list[str]:
    """``text`` split after each ``\\n`` only, as git splits it (the last line may lack its newline)."""
    return re.findall(r"[^\n]*\n|[^\n]+", text)
