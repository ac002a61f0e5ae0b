"""Synthetic bugs for mutate-fix tasks: CWM's five operator families, each split into named operators.

Everything here is a pure function over source text. A mutation is a set of precise span edits computed
from the ``ast`` positions of the original module, so formatting and comments outside the edited spans
survive byte for byte and a mutant's diff shows only the bug. Every operator edits only the target
function (its signature or body; never its decorators), except ``import_removed``, which may remove a
module-level import the function uses.

``ast`` columns are UTF-8 byte offsets within a line; :class:`_Source` turns them into string offsets,
so lines with non-ASCII text are edited correctly.
"""

from __future__ import annotations

import ast
import difflib
import random
import re
import warnings
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from types import MappingProxyType

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef

# The line breaks the Python tokenizer recognises; str.splitlines would also split on \x0c, \u2028 and
# others, which may sit inside string literals and would shift every later AST line number.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
        for qualname, node in _definitions(tree)
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
    src = _Source(source, tree)
    baseline = ast.dump(tree)
    seen = {source}
    found: list[Mutant] = []
    for qualname, func in _definitions(tree):
        if targets is not None and qualname not in targets:
            continue
        for name in chosen:
            candidates = list(_GENERATORS[name](src, func))
            rng.shuffle(candidates)
            taken = 0
            for candidate in candidates:
                if taken >= per_function:
                    break
                mutated = _apply(source, candidate.edits)
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


# --- source positions and edits ----------------------------------------------------------------------

_Edit = tuple[int, int, str]
"""Replace ``text[start:end]`` with a string; offsets are string indices into the original source."""


@dataclass(frozen=True)
class _Candidate:
    edits: tuple[_Edit, ...]
    description: str


class _Source:
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

    def lines_of(self, edits: Sequence[_Edit]) -> frozenset[int]:
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


def _apply(text: str, edits: Sequence[_Edit]) -> str:
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _skip(text: str, pos: int) -> int:
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


def _token_between(text: str, start: int, end: int) -> tuple[int, int, str] | None:
    """The operator between two operands: ``text[start:end]`` less blanks, parentheses and comments.

    Returns its span and its text with inner blanks normalised (``"not in"``, ``"is not"``).
    """
    first = last = None
    pos = _skip(text, start)
    while pos < end:
        if text[pos] not in "()":
            first = pos if first is None else first
            last = pos + 1
        pos = _skip(text, pos + 1)
    if first is None or last is None:
        return None
    return first, last, " ".join(text[first:last].split())


def _snippet(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _remove_statements(src: _Source, block: Sequence[ast.stmt], first: int, last: int) -> list[_Edit] | None:
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


def _remove_items(src: _Source, items: Sequence[tuple[int, int]], first: int, last: int) -> list[_Edit]:
    """Edits removing ``items[first:last + 1]`` from a comma-separated list (parameters, imported names).

    Items on lines of their own lose those lines; otherwise the items go with one separating comma. A
    trailing comma after the last item is kept when an item remains before it.
    """
    text = src.text
    start, end = items[first][0], items[last][1]
    after = _skip(text, end)
    has_comma = text.startswith(",", after)
    group_end = after + 1 if has_comma else end
    previous_comma = _skip(text, items[first - 1][1]) if first > 0 else None
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


# --- the function and its code ------------------------------------------------------------------------


def _definitions(tree: ast.Module) -> list[tuple[str, _FunctionNode]]:
    """``(qualname, node)`` for every function definition, each before those nested in it."""
    found: list[tuple[str, _FunctionNode]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((prefix + child.name, child))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

_Scoped = list[tuple[ast.AST, frozenset[str]]]
"""A function's own nodes, each with the names a lambda or comprehension around it rebinds."""


def _own_nodes(func: _FunctionNode) -> _Scoped:
    """The nodes of ``func``'s body, without nested function definitions.

    Nested functions are targets of their own. Variable annotations are skipped: in a function body they
    are never evaluated, so mutating them is no bug.
    """
    found: _Scoped = []

    def visit(node: ast.AST, shadowed: frozenset[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        found.append((node, shadowed))
        if isinstance(node, ast.Lambda):
            visit(node.args, shadowed)
            visit(node.body, shadowed | {arg.arg for arg in _parameters(node.args)})
        elif isinstance(node, _COMPREHENSIONS):
            inner = shadowed | {
                name.id
                for gen in node.generators
                for name in ast.walk(gen.target)
                if isinstance(name, ast.Name)
            }
            outermost = node.generators[0].iter  # the only part evaluated in the enclosing scope
            for child in ast.iter_child_nodes(node):
                parts = ast.iter_child_nodes(child) if isinstance(child, ast.comprehension) else [child]
                for part in parts:
                    visit(part, shadowed if part is outermost else inner)
        elif isinstance(node, ast.AnnAssign):
            visit(node.target, shadowed)
            if node.value is not None:
                visit(node.value, shadowed)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, shadowed)

    for statement in func.body:
        visit(statement, frozenset())
    return found


def _parameters(args: ast.arguments) -> list[ast.arg]:
    """All parameters in source order."""
    star = [args.vararg] if args.vararg else []
    double_star = [args.kwarg] if args.kwarg else []
    return [*args.posonlyargs, *args.args, *star, *args.kwonlyargs, *double_star]


def _local_names(func: _FunctionNode, nodes: _Scoped) -> set[str]:
    """Names bound in ``func`` itself: parameters, assignment targets, ``except ... as`` names.

    Names declared ``global``/``nonlocal`` are not local; comprehension and lambda variables belong to
    their own scopes (a walrus inside a comprehension binds in the function, and counts).
    """
    names = {arg.arg for arg in _parameters(func.args)}
    declared: set[str] = set()
    for node, shadowed in nodes:
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and node.id not in shadowed:
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            declared.update(node.names)
    return names - declared


def _reads(nodes: _Scoped) -> list[ast.Name]:
    """Reads of the function's own variables (and of globals), not of lambda or comprehension variables."""
    return [
        node
        for node, shadowed in nodes
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in shadowed
    ]


def _blocks(func: _FunctionNode, nodes: _Scoped) -> Iterator[tuple[ast.AST, list[ast.stmt]]]:
    """Every statement list in ``func`` (bodies, ``else``/``finally``, handlers, cases) with its owner."""
    for owner in [func, *(node for node, _ in nodes)]:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(owner, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield owner, block


def _has_docstring(owner: ast.AST) -> bool:
    return (
        isinstance(owner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and isinstance(owner.body[0], ast.Expr)
        and isinstance(owner.body[0].value, ast.Constant)
        and isinstance(owner.body[0].value.value, str)
    )


def _is_noop(statement: ast.stmt) -> bool:
    """``pass``, ``...`` or a bare string: removing it changes no behaviour."""
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
    )


# --- operators: functions --------------------------------------------------------------------------


def _function_body_removed(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """The body becomes ``pass``; a docstring stays (it is a valid body by itself)."""
    keep = 1 if _has_docstring(func) else 0
    if all(_is_noop(statement) for statement in func.body[keep:]):
        return
    edits = _remove_statements(src, func.body, keep, len(func.body) - 1)
    if edits:
        yield _Candidate(
            tuple(edits), "body after the docstring removed" if keep else "body replaced by `pass`"
        )


def _statements_removed(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """One statement or a run of 2-3 consecutive ones removed from a block of at least 2.

    Docstrings and runs of no-op statements are left alone: removing them is no bug.
    """
    for owner, block in _blocks(func, _own_nodes(func)):
        if len(block) < 2:
            continue
        for first in range(1 if _has_docstring(owner) else 0, len(block)):
            for last in range(first, min(first + 3, len(block))):
                if all(_is_noop(statement) for statement in block[first : last + 1]):
                    continue
                edits = _remove_statements(src, block, first, last)
                if edits:
                    first_line = src.line_of(src.statement_start(block[first]))
                    last_line = block[last].end_lineno
                    lines = (
                        f"line {first_line}" if first_line == last_line else f"lines {first_line}-{last_line}"
                    )
                    count = "statement" if first == last else f"{last - first + 1} statements"
                    yield _Candidate(tuple(edits), f"{count} at {lines} removed")


# --- operators: arguments --------------------------------------------------------------------------


def _signature_items(src: _Source, func: _FunctionNode) -> list[tuple[int, int, ast.arg | None]]:
    """The parameter list's items in source order: (start, end, parameter), or ``None`` for ``/`` and ``*``.

    A parameter's span covers its ``*``/``**`` prefix, annotation and default.
    """
    text, args = src.text, func.args
    type_params = getattr(func, "type_params", None)  # Python 3.12+: `def f[T](...)`
    boundary = text.index("(", src.end(type_params[-1]) if type_params else src.start(func)) + 1
    items: list[tuple[int, int, ast.arg | None]] = []

    def sign(symbol: str) -> int:
        """The offset of ``symbol``, the next item after ``boundary`` (past one separating comma)."""
        pos = _skip(text, boundary)
        pos = _skip(text, pos + 1) if text.startswith(",", pos) else pos
        assert text.startswith(symbol, pos), f"expected {symbol!r} at offset {pos}"
        return pos

    def add(start: int, end: int, param: ast.arg | None) -> None:
        nonlocal boundary
        items.append((start, end, param))
        boundary = end

    positional = [*args.posonlyargs, *args.args]
    no_default = len(positional) - len(args.defaults)
    for index, param in enumerate(positional):
        value = args.defaults[index - no_default] if index >= no_default else param
        add(src.start(param), src.end(value), param)
        if index == len(args.posonlyargs) - 1:
            slash = sign("/")
            add(slash, slash + 1, None)
    if args.vararg:
        add(sign("*"), src.end(args.vararg), args.vararg)
    elif args.kwonlyargs:
        star = sign("*")
        add(star, star + 1, None)
    for param, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        add(src.start(param), src.end(default or param), param)
    if args.kwarg:
        add(sign("**"), src.end(args.kwarg), args.kwarg)
    return items


def _parameter_removed(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """One parameter (not ``self``/``cls``) removed from the signature, which stays valid.

    Removing the only positional-only or keyword-only parameter takes its ``/`` or ``*`` marker along;
    ``*args`` before keyword-only parameters becomes a bare ``*``, which keeps them keyword-only.
    """
    args = func.args
    items = _signature_items(src, func)
    spans = [(start, end) for start, end, _ in items]
    for index, (start, end, param) in enumerate(items):
        if param is None or param.arg in ("self", "cls"):
            continue
        if param is args.vararg and args.kwonlyargs:
            edits = [(start, end, "*")]
        else:
            # A lone positional-only or keyword-only parameter takes its `/` (after) or `*` (before) along.
            first = index - 1 if args.kwonlyargs == [param] and not args.vararg else index
            last = index + 1 if args.posonlyargs == [param] else index
            edits = _remove_items(src, spans, first, last)
        yield _Candidate(tuple(edits), f"parameter `{_snippet(src.text[start:end])}` removed")


def _call_arguments_swapped(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """Two positional arguments of a call (not ``*iterables``) swapped, when their texts differ."""
    for node, _ in _own_nodes(func):
        if not isinstance(node, ast.Call):
            continue
        positional = [arg for arg in node.args if not isinstance(arg, ast.Starred)]
        for left, right in combinations(positional, 2):
            left_text, right_text = src.segment(left), src.segment(right)
            if left_text != right_text:
                yield _Candidate(
                    (
                        (src.start(left), src.end(left), right_text),
                        (src.start(right), src.end(right), left_text),
                    ),
                    f"arguments `{_snippet(left_text)}` and `{_snippet(right_text)}` of the call at line "
                    f"{node.lineno} swapped",
                )


# --- operators: variables --------------------------------------------------------------------------


def _variables_swapped(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """Every read of two local variables swapped (``return a - b`` becomes ``return b - a``).

    Only reads change: swapping the bindings too would be a consistent renaming, hence no bug.
    Parameters count as locals; ``self`` and ``cls`` do not (swapping them only breaks attribute access).
    """
    nodes = _own_nodes(func)
    local = _local_names(func, nodes) - {"self", "cls"}
    reads: dict[str, list[ast.Name]] = {name: [] for name in local}
    for node in _reads(nodes):
        if node.id in local:
            reads[node.id].append(node)
    # A name with a read whose recorded position does not hold the name cannot be edited safely.
    names = sorted(name for name, found in reads.items() if all(src.segment(node) == name for node in found))
    for first, second in combinations(names, 2):
        edits = [(src.start(node), src.end(node), second) for node in reads[first]]
        edits += [(src.start(node), src.end(node), first) for node in reads[second]]
        if edits:
            yield _Candidate(tuple(edits), f"reads of `{first}` and `{second}` swapped ({len(edits)} in all)")


# --- operators: statements -------------------------------------------------------------------------


def _bound_name(alias: ast.alias) -> str:
    """The name an import binds: ``import a.b`` binds ``a``."""
    return alias.asname or alias.name.split(".")[0]


def _import_removed(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """An import whose name the function reads removed: a module-level one, or one in the function.

    An import of several names loses only the name read (each such name is a candidate). A module-level
    import is skipped when the function rebinds its name (then the function never reads it), an import
    in the function when a module-level import binds the same name (the function would read that one).
    """
    nodes = _own_nodes(func)
    read = {name.id for name in _reads(nodes)}
    module_imports = [
        index
        for index, statement in enumerate(src.tree.body)
        if isinstance(statement, ast.Import | ast.ImportFrom)
    ]
    inner_imports = [
        (block, index)
        for _, block in _blocks(func, nodes)
        for index, statement in enumerate(block)
        if isinstance(statement, ast.Import | ast.ImportFrom)
    ]
    module_bound = {
        _bound_name(alias) for index in module_imports for alias in _imported(src.tree.body[index])
    }
    inner_bound = {_bound_name(alias) for block, index in inner_imports for alias in _imported(block[index])}
    rebound = _local_names(func, nodes) | inner_bound
    module = [(src.tree.body, index, read - rebound) for index in module_imports]
    inner = [(block, index, read - module_bound) for block, index in inner_imports]
    for block, index, used in module + inner:
        statement, aliases = block[index], _imported(block[index])
        for position, alias in enumerate(aliases):
            if _bound_name(alias) not in used:
                continue
            if len(aliases) == 1:
                edits = _remove_statements(src, block, index, index)
                description = f"`{_snippet(src.segment(statement))}` at line {statement.lineno} removed"
            else:
                spans = [(src.start(name), src.end(name)) for name in aliases]
                edits = _remove_items(src, spans, position, position)
                description = f"`{src.segment(alias)}` removed from the import at line {statement.lineno}"
            if edits:
                yield _Candidate(tuple(edits), description)


def _imported(statement: ast.stmt) -> list[ast.alias]:
    assert isinstance(statement, ast.Import | ast.ImportFrom)
    return statement.names


def _return_value_removed(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """``return X`` becomes a bare ``return``: control flow stays, the value is lost (unless it was None)."""
    for node, _ in _own_nodes(func):
        if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
            start = src.start(node) + len("return")
            yield _Candidate(
                ((start, src.end(node), ""),),
                f"`return {_snippet(src.segment(node.value))}` at line {node.lineno} became a bare `return`",
            )


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


# --- operators: operators --------------------------------------------------------------------------

# AST operator -> (its token, the tokens it may become)
_BINARY: dict[type[ast.operator], tuple[str, tuple[str, ...]]] = {
    ast.Add: ("+", ("-",)),
    ast.Sub: ("-", ("+",)),
    ast.Mult: ("*", ("/",)),
    ast.Div: ("/", ("*", "//")),
    ast.FloorDiv: ("//", ("/",)),
    ast.Mod: ("%", ("//",)),
    ast.Pow: ("**", ("*",)),
    ast.BitAnd: ("&", ("|",)),
    ast.BitOr: ("|", ("&",)),
    ast.LShift: ("<<", (">>",)),
    ast.RShift: (">>", ("<<",)),
}
_COMPARISON: dict[type[ast.cmpop], tuple[str, str]] = {
    ast.Lt: ("<", "<="),
    ast.LtE: ("<=", "<"),
    ast.Gt: (">", ">="),
    ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
    ast.In: ("in", "not in"),
    ast.NotIn: ("not in", "in"),
    ast.Is: ("is", "is not"),
    ast.IsNot: ("is not", "is"),
}
_BOOLEAN: dict[type[ast.boolop], tuple[str, str]] = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
_UNARY: dict[type[ast.unaryop], str] = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}


def _replaced(
    src: _Source, left: ast.AST, right: ast.AST, token: str, replacements: Sequence[str]
) -> Iterator[_Candidate]:
    """``token`` between two operands replaced by each of ``replacements``."""
    found = _token_between(src.text, src.end(left), src.start(right))
    if found is None or found[2] != token:
        return
    start, end, _ = found
    for replacement in replacements:
        yield _Candidate(
            ((start, end, replacement),),
            f"`{token}` replaced by `{replacement}` at line {src.line_of(start)}",
        )


def _binary_operator_replaced(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """An arithmetic, bitwise or shift operator replaced, in an expression or an augmented assignment."""
    for node, _ in _own_nodes(func):
        if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINARY:
            token, replacements = _BINARY[type(node.op)]
            if isinstance(node, ast.BinOp):
                yield from _replaced(src, node.left, node.right, token, replacements)
            else:
                augmented = [replacement + "=" for replacement in replacements]
                yield from _replaced(src, node.target, node.value, token + "=", augmented)


def _unary_operator_removed(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """``not x``, ``-x`` or ``~x`` becomes ``x``."""
    text = src.text
    for node, _ in _own_nodes(func):
        if not (isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY):
            continue
        found = _token_between(text, src.start(node), src.start(node.operand))
        token = _UNARY[type(node.op)]
        if found is None or found[2] != token:
            continue
        start, stop, _ = found
        while text[stop].isspace():
            stop += 1
        # `return-x` must become `return x`, not `returnx`.
        glued = start > 0 and _identifier_char(text[start - 1]) and _identifier_char(text[stop])
        yield _Candidate(((start, stop, " " if glued else ""),), f"`{token}` removed at line {node.lineno}")


def _identifier_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _boolean_operator_replaced(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """One ``and`` of a boolean expression becomes ``or``, or one ``or`` becomes ``and``."""
    for node, _ in _own_nodes(func):
        if isinstance(node, ast.BoolOp):
            token, replacement = _BOOLEAN[type(node.op)]
            for left, right in zip(node.values, node.values[1:], strict=False):
                yield from _replaced(src, left, right, token, [replacement])


def _comparison_operator_replaced(src: _Source, func: _FunctionNode) -> Iterator[_Candidate]:
    """A comparison operator replaced by its off-by-one or negated (``<``/``<=``, ``in``/``not in``)."""
    for node, _ in _own_nodes(func):
        if isinstance(node, ast.Compare):
            for left, op, right in zip(
                [node.left, *node.comparators], node.ops, node.comparators, strict=False
            ):
                token, replacement = _COMPARISON[type(op)]
                yield from _replaced(src, left, right, token, [replacement])


# --- the registry ----------------------------------------------------------------------------------

_Generator = Callable[[_Source, _FunctionNode], Iterator[_Candidate]]

_REGISTRY: dict[str, tuple[str, _Generator]] = {
    "function_body_removed": ("functions", _function_body_removed),
    "statements_removed": ("functions", _statements_removed),
    "parameter_removed": ("arguments", _parameter_removed),
    "call_arguments_swapped": ("arguments", _call_arguments_swapped),
    "variables_swapped": ("variables", _variables_swapped),
    "import_removed": ("statements", _import_removed),
    "return_value_removed": ("statements", _return_value_removed),
    "binary_operator_replaced": ("operators", _binary_operator_replaced),
    "unary_operator_removed": ("operators", _unary_operator_removed),
    "boolean_operator_replaced": ("operators", _boolean_operator_replaced),
    "comparison_operator_replaced": ("operators", _comparison_operator_replaced),
}
_GENERATORS: dict[str, _Generator] = {name: generate for name, (_, generate) in _REGISTRY.items()}

OPERATORS: Mapping[str, str] = MappingProxyType({name: family for name, (family, _) in _REGISTRY.items()})
"""Operator name -> CWM family, in a stable order (the order of :func:`mutants`' results)."""
