"""Span edits over a module's source text, for the mutation operators of :mod:`envs.mutate_operators`.

An edit replaces a span of the original text, so formatting and comments outside it survive byte for
byte. ``ast`` columns are UTF-8 byte offsets within a line; :class:`Source` turns them into string
offsets, so lines with non-ASCII text are edited correctly.
"""

from __future__ import annotations

import ast
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

# The line breaks the Python tokenizer recognises; str.splitlines would also split on \x0c, \u2028 and
# others, which may sit inside string literals and would shift every later AST line number.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

Edit = tuple[int, int, str]
"""Replace ``text[start:end]`` with a string; offsets are string indices into the original source."""


@dataclass(frozen=True)
class Candidate:
    """One mutation an operator proposes: its span edits, and what they do in words (task metadata)."""

    edits: tuple[Edit, ...]
    description: str


class Source:
    """A module's text and AST, converting AST positions (UTF-8 byte columns) to string offsets."""

    def __init__(self, text: str, tree: ast.Module) -> None:
        self.text = text
        self.tree = tree
        self._line_starts = [0, *(match.end() for match in _LINE_BREAK.finditer(text))]

    def offset(self, lineno: int, col: int) -> int:
        start = self._line_starts[lineno - 1]
        # ``col`` bytes are at most ``col`` characters, so this prefix holds the whole column.
        prefix = self.text[start : start + col]
        return start + (col if prefix.isascii() else len(prefix.encode()[:col].decode()))

    def start(self, node: ast.AST) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def segment(self, node: ast.AST) -> str:
        return self.text[self.start(node) : self.end(node)]

    def statement_start(self, node: ast.stmt) -> int:
        """Where ``node`` starts, including its decorators: removing a definition must remove them too."""
        decorators = getattr(node, "decorator_list", None)
        if not decorators:
            return self.start(node)
        at = self.start(decorators[0]) - 1
        while self.text[at] != "@":  # blanks or a parenthesis may sit between ``@`` and the expression
            at -= 1
        return at

    def line_of(self, offset: int) -> int:
        return bisect_right(self._line_starts, offset)

    def lines_of(self, edits: Sequence[Edit]) -> frozenset[int]:
        """The lines ``edits`` replace or delete text in; an insertion counts the line it lands in."""
        return frozenset(
            line
            for start, end, _ in edits
            for line in range(self.line_of(start), self.line_of(max(start, end - 1)) + 1)
        )

    def line_start(self, offset: int) -> int:
        return self._line_starts[self.line_of(offset) - 1]

    def next_line_start(self, offset: int) -> int:
        """The start of the line after the one holding ``offset`` (the end of the text on the last line)."""
        index = self.line_of(offset)
        return self._line_starts[index] if index < len(self._line_starts) else len(self.text)

    def blank_before(self, offset: int) -> bool:
        """Whether only blanks precede ``offset`` on its line."""
        return not self.text[self.line_start(offset) : offset].strip()

    def blank_after(self, offset: int) -> bool:
        """Whether only blanks and a comment follow ``offset`` on its line."""
        rest = self.text[offset : self.next_line_start(offset)].strip()
        return not rest or rest.startswith("#")


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def skip(text: str, pos: int) -> int:
    """The first offset at or after ``pos`` that is not a blank, a line continuation or a comment."""
    while pos < len(text):
        if text[pos] == "#":
            match = _LINE_BREAK.search(text, pos)
            pos = match.start() if match else len(text)
        elif text[pos].isspace() or text[pos] == "\\":
            pos += 1
        else:
            break
    return pos


def token_between(text: str, start: int, end: int) -> tuple[int, int, str] | None:
    """The operator between two operands: ``text[start:end]`` less blanks, parentheses and comments.

    Returns its span and its text with inner blanks normalised (``"not in"``, ``"is not"``).
    """
    first = last = None
    pos = skip(text, start)
    while pos < end:
        if text[pos] not in "()":
            first = pos if first is None else first
            last = pos + 1
        pos = skip(text, pos + 1)
    if first is None or last is None:
        return None
    return first, last, " ".join(text[first:last].split())


def snippet(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def remove_statements(src: Source, block: Sequence[ast.stmt], first: int, last: int) -> list[Edit] | None:
    """Edits removing ``block[first:last + 1]``, leaving ``pass`` if the block would be empty.

    Statements that sit on lines of their own lose those whole lines (with their trailing comment).
    A whole block sharing a line with its header (``def f(): return 1``) is replaced in place. Other
    statements sharing a line (``a; b``) give ``None``: they are not worth the edge cases.
    """
    start, end = src.statement_start(block[first]), src.end(block[last])
    emptied = first == 0 and last == len(block) - 1
    if src.blank_before(start) and src.blank_after(end):
        line, stop = src.line_start(start), src.next_line_start(end)
        if not emptied:
            return [(line, stop, "")]
        line_break = _LINE_BREAK.search(src.text, end)
        return [(line, stop, src.text[line:start] + "pass" + (line_break.group() if line_break else ""))]
    return [(start, end, "pass")] if emptied else None


def remove_items(src: Source, items: Sequence[tuple[int, int]], first: int, last: int) -> list[Edit]:
    """Edits removing ``items[first:last + 1]`` from a comma-separated list (parameters, imported names).

    Items on lines of their own lose those lines; otherwise the items go with one separating comma. A
    trailing comma after the last item is kept when an item remains before it.
    """
    text = src.text
    start, end = items[first][0], items[last][1]
    after = skip(text, end)
    has_comma = text.startswith(",", after)
    group_end = after + 1 if has_comma else end
    previous_comma = skip(text, items[first - 1][1]) if first > 0 else None
    if src.blank_before(start) and src.blank_after(group_end):
        edits = [(src.line_start(start), src.next_line_start(group_end), "")]
        if last == len(items) - 1 and not has_comma and previous_comma is not None:
            edits.append((previous_comma, previous_comma + 1, ""))  # the new last item takes no comma
        return edits
    if last + 1 < len(items):
        if previous_comma is not None and src.blank_after(group_end):
            # `a, b,` ending a line becomes `a,`, not `a, ` with a trailing blank
            return [(previous_comma + 1, group_end, "")]
        stop = after + 1
        while stop < len(text) and text[stop] in " \t":
            stop += 1
        return [(start, stop, "")]
    if previous_comma is not None:
        return [(previous_comma, end, "")]
    return [(start, group_end, "")]
