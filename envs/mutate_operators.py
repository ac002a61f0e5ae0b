"""The mutation operators: CWM's five families (functions, arguments, variables, statements,
operators), each split into named operators. An operator yields the candidate edits that plant one bug
in one function; :data:`OPERATORS` and :data:`GENERATORS` register them by name.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import combinations
from types import MappingProxyType

from envs.mutate_edits import Candidate, Source, remove_items, remove_statements, skip, snippet, token_between
from envs.mutate_functions import (
    FunctionNode,
    blocks,
    has_docstring,
    is_noop,
    local_names,
    own_nodes,
    variable_reads,
)

# --- operators: functions --------------------------------------------------------------------------


def _function_body_removed(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """The body becomes ``pass``; a docstring stays (it is a valid body by itself)."""
    keep = 1 if has_docstring(func) else 0
    if all(is_noop(statement) for statement in func.body[keep:]):
        return
    edits = remove_statements(src, func.body, keep, len(func.body) - 1)
    if edits:
        yield Candidate(
            tuple(edits), "body after the docstring removed" if keep else "body replaced by `pass`"
        )


def _statements_removed(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """One statement or a run of 2-3 consecutive ones removed from a block of at least 2.

    Docstrings and runs of no-op statements are left alone: removing them is no bug.
    """
    for owner, block in blocks(func, own_nodes(func)):
        if len(block) < 2:
            continue
        for first in range(1 if has_docstring(owner) else 0, len(block)):
            for last in range(first, min(first + 3, len(block))):
                if all(is_noop(statement) for statement in block[first : last + 1]):
                    continue
                edits = remove_statements(src, block, first, last)
                if edits:
                    first_line = src.line_of(src.statement_start(block[first]))
                    last_line = block[last].end_lineno
                    lines = (
                        f"line {first_line}" if first_line == last_line else f"lines {first_line}-{last_line}"
                    )
                    count = "statement" if first == last else f"{last - first + 1} statements"
                    yield Candidate(tuple(edits), f"{count} at {lines} removed")


# --- operators: arguments --------------------------------------------------------------------------


def _signature_items(src: Source, func: FunctionNode) -> list[tuple[int, int, ast.arg | None]]:
    """The parameter list's items in source order: (start, end, parameter), or ``None`` for ``/`` and ``*``.

    A parameter's span covers its ``*``/``**`` prefix, annotation and default.
    """
    text, args = src.text, func.args
    type_params = getattr(func, "type_params", None)  # Python 3.12+: `def f[T](...)`
    boundary = text.index("(", src.end(type_params[-1]) if type_params else src.start(func)) + 1
    items: list[tuple[int, int, ast.arg | None]] = []

    def sign(symbol: str) -> int:
        """The offset of ``symbol``, the next item after ``boundary`` (past one separating comma)."""
        pos = skip(text, boundary)
        pos = skip(text, pos + 1) if text.startswith(",", pos) else pos
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


def _parameter_removed(src: Source, func: FunctionNode) -> Iterator[Candidate]:
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
            edits = remove_items(src, spans, first, last)
        yield Candidate(tuple(edits), f"parameter `{snippet(src.text[start:end])}` removed")


def _call_arguments_swapped(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """Two positional arguments of a call (not ``*iterables``) swapped, when their texts differ."""
    for node, _ in own_nodes(func):
        if not isinstance(node, ast.Call):
            continue
        positional = [arg for arg in node.args if not isinstance(arg, ast.Starred)]
        for left, right in combinations(positional, 2):
            left_text, right_text = src.segment(left), src.segment(right)
            if left_text != right_text:
                yield Candidate(
                    (
                        (src.start(left), src.end(left), right_text),
                        (src.start(right), src.end(right), left_text),
                    ),
                    f"arguments `{snippet(left_text)}` and `{snippet(right_text)}` of the call at line "
                    f"{node.lineno} swapped",
                )


# --- operators: variables --------------------------------------------------------------------------


def _variables_swapped(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """Every read of two local variables swapped (``return a - b`` becomes ``return b - a``).

    Only reads change: swapping the bindings too would be a consistent renaming, hence no bug.
    Parameters count as locals; ``self`` and ``cls`` do not (swapping them only breaks attribute access).
    """
    nodes = own_nodes(func)
    local = local_names(func, nodes) - {"self", "cls"}
    reads: dict[str, list[ast.Name]] = {name: [] for name in local}
    for node in variable_reads(nodes):
        if node.id in local:
            reads[node.id].append(node)
    # A name with a read whose recorded position does not hold the name cannot be edited safely.
    names = sorted(name for name, found in reads.items() if all(src.segment(node) == name for node in found))
    for first, second in combinations(names, 2):
        edits = [(src.start(node), src.end(node), second) for node in reads[first]]
        edits += [(src.start(node), src.end(node), first) for node in reads[second]]
        if edits:
            yield Candidate(tuple(edits), f"reads of `{first}` and `{second}` swapped ({len(edits)} in all)")


# --- operators: statements -------------------------------------------------------------------------


def _bound_name(alias: ast.alias) -> str:
    """The name an import binds: ``import a.b`` binds ``a``."""
    return alias.asname or alias.name.split(".")[0]


def _import_removed(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """An import whose name the function reads removed: a module-level one, or one in the function.

    An import of several names loses only the name read (each such name is a candidate). A module-level
    import is skipped when the function rebinds its name (then the function never reads it), an import
    in the function when a module-level import binds the same name (the function would read that one).
    """
    nodes = own_nodes(func)
    read = {name.id for name in variable_reads(nodes)}
    module_imports = [
        index
        for index, statement in enumerate(src.tree.body)
        if isinstance(statement, ast.Import | ast.ImportFrom)
    ]
    inner_imports = [
        (block, index)
        for _, block in blocks(func, nodes)
        for index, statement in enumerate(block)
        if isinstance(statement, ast.Import | ast.ImportFrom)
    ]
    module_bound = {
        _bound_name(alias) for index in module_imports for alias in _imported(src.tree.body[index])
    }
    inner_bound = {_bound_name(alias) for block, index in inner_imports for alias in _imported(block[index])}
    rebound = local_names(func, nodes) | inner_bound
    module = [(src.tree.body, index, read - rebound) for index in module_imports]
    inner = [(block, index, read - module_bound) for block, index in inner_imports]
    for block, index, used in module + inner:
        statement, aliases = block[index], _imported(block[index])
        for position, alias in enumerate(aliases):
            if _bound_name(alias) not in used:
                continue
            if len(aliases) == 1:
                edits = remove_statements(src, block, index, index)
                description = f"`{snippet(src.segment(statement))}` at line {statement.lineno} removed"
            else:
                spans = [(src.start(name), src.end(name)) for name in aliases]
                edits = remove_items(src, spans, position, position)
                description = f"`{src.segment(alias)}` removed from the import at line {statement.lineno}"
            if edits:
                yield Candidate(tuple(edits), description)


def _imported(statement: ast.stmt) -> list[ast.alias]:
    assert isinstance(statement, ast.Import | ast.ImportFrom)
    return statement.names


def _return_value_removed(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """``return X`` becomes a bare ``return``: control flow stays, the value is lost (unless it was None)."""
    for node, _ in own_nodes(func):
        if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
            start = src.start(node) + len("return")
            yield Candidate(
                ((start, src.end(node), ""),),
                f"`return {snippet(src.segment(node.value))}` at line {node.lineno} became a bare `return`",
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
    src: Source, left: ast.AST, right: ast.AST, token: str, replacements: Sequence[str]
) -> Iterator[Candidate]:
    """``token`` between two operands replaced by each of ``replacements``."""
    found = token_between(src.text, src.end(left), src.start(right))
    if found is None or found[2] != token:
        return
    start, end, _ = found
    for replacement in replacements:
        yield Candidate(
            ((start, end, replacement),),
            f"`{token}` replaced by `{replacement}` at line {src.line_of(start)}",
        )


def _binary_operator_replaced(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """An arithmetic, bitwise or shift operator replaced, in an expression or an augmented assignment."""
    for node, _ in own_nodes(func):
        if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINARY:
            token, replacements = _BINARY[type(node.op)]
            if isinstance(node, ast.BinOp):
                yield from _replaced(src, node.left, node.right, token, replacements)
            else:
                augmented = [replacement + "=" for replacement in replacements]
                yield from _replaced(src, node.target, node.value, token + "=", augmented)


def _unary_operator_removed(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """``not x``, ``-x`` or ``~x`` becomes ``x``."""
    text = src.text
    for node, _ in own_nodes(func):
        if not (isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY):
            continue
        found = token_between(text, src.start(node), src.start(node.operand))
        token = _UNARY[type(node.op)]
        if found is None or found[2] != token:
            continue
        start, stop, _ = found
        while text[stop].isspace():
            stop += 1
        # `return-x` must become `return x`, not `returnx`.
        glued = start > 0 and _identifier_char(text[start - 1]) and _identifier_char(text[stop])
        yield Candidate(((start, stop, " " if glued else ""),), f"`{token}` removed at line {node.lineno}")


def _identifier_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _boolean_operator_replaced(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """One ``and`` of a boolean expression becomes ``or``, or one ``or`` becomes ``and``."""
    for node, _ in own_nodes(func):
        if isinstance(node, ast.BoolOp):
            token, replacement = _BOOLEAN[type(node.op)]
            for left, right in zip(node.values, node.values[1:], strict=False):
                yield from _replaced(src, left, right, token, [replacement])


def _comparison_operator_replaced(src: Source, func: FunctionNode) -> Iterator[Candidate]:
    """A comparison operator replaced by its off-by-one or negated (``<``/``<=``, ``in``/``not in``)."""
    for node, _ in own_nodes(func):
        if isinstance(node, ast.Compare):
            for left, op, right in zip(
                [node.left, *node.comparators], node.ops, node.comparators, strict=False
            ):
                token, replacement = _COMPARISON[type(op)]
                yield from _replaced(src, left, right, token, [replacement])


# --- the registry ----------------------------------------------------------------------------------

_Generator = Callable[[Source, FunctionNode], Iterator[Candidate]]

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
GENERATORS: dict[str, _Generator] = {name: generate for name, (_, generate) in _REGISTRY.items()}
"""Operator name -> the function yielding its candidate edits for one function."""

OPERATORS: Mapping[str, str] = MappingProxyType({name: family for name, (family, _) in _REGISTRY.items()})
"""Operator name -> CWM family, in a stable order (the order of :func:`envs.mutate.mutants`' results)."""
